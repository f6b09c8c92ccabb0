// The host's compiled inner loops (host/native.cpp binds them; setup.py compiles this file once per
// instruction set, see native.cpp). numpy would pass over a layer's output once per operation (add the
// offset, scale, round, saturate); these loops do it in one pass, cut convolution windows with
// their zero padding in one copy, convolve directly where windows are wasteful, and pack inputs and
// unpack outputs. Packing may read, and unpacking write, a client's shared memory in place, under a
// guard (native.cpp) that survives the client truncating it mid-access.
//
// Exactness: every value is an integer mantissa held exactly in a float or double, and the callers
// guarantee every intermediate stays below 2^52 (2^23 for float), so products, sums and power-of-two
// scalings here are exact in any order, and rounding happens only where ap_fixed rounds.
//
// Compiled per ISA: everything here has internal linkage (the anonymous namespace) but the `loops`
// table, under faast::FAAST_ISA; nothing from the standard library but C functions (no std template
// may be instantiated here: see native.cpp).

#include <cmath>
#include <cstdint>
#include <cstring>

#include "native.h"

#include "engine.h"  // opens faast::FAAST_ISA's anonymous namespace; closed at the end of this file

// Rounds v[0..count) to integers by an ap_fixed quantization mode.
void quantize(double* v, int64_t count, int mode) {
    switch (mode) {
        case TRN: for (int64_t i = 0; i < count; ++i) v[i] = std::floor(v[i]); return;
        case TRN_ZERO: for (int64_t i = 0; i < count; ++i) v[i] = std::trunc(v[i]); return;
        case RND_CONV: for (int64_t i = 0; i < count; ++i) v[i] = std::nearbyint(v[i]); return;  // ties to even
        default: break;
    }
    for (int64_t i = 0; i < count; ++i) {  // floor and rest are exact at any magnitude
        double floor = std::floor(v[i]), rest = v[i] - floor;
        bool up = mode == RND ? rest >= 0.5
                : mode == RND_ZERO ? (rest > 0.5) | ((rest == 0.5) & (v[i] < 0))
                : mode == RND_INF ? (rest > 0.5) | ((rest == 0.5) & (v[i] >= 0))
                : rest > 0.5;  // RND_MIN_INF
        v[i] = floor + up;
    }
}

// Integers v[0..count) into [low, high] by an ap_fixed overflow mode (SAT_SYM's low set by the caller).
void overflow(double* v, int64_t count, int mode, double low, double high) {
    switch (mode) {
        case WRAP: {
            double span = high - low + 1, inverse = 1 / span;  // powers of two: exact
            for (int64_t i = 0; i < count; ++i) v[i] -= span * std::floor((v[i] - low) * inverse);
            return;
        }
        case SAT_ZERO:
            for (int64_t i = 0; i < count; ++i) v[i] = (v[i] < low) | (v[i] > high) ? 0.0 : v[i];
            return;
        default:  // SAT, SAT_SYM
            for (int64_t i = 0; i < count; ++i) v[i] = smaller(larger(v[i], low), high);
    }
}

// One pass over `count` values for the modes hls4ml uses most: scale, add, round, saturate or wrap
// without leaving registers.
template <int QUANTIZATION, int OVERFLOW, typename In, typename Out>
void requantize_fused(const In* in, const double* m, const In* in2, const double* m2, const double* o, Out* out,
                      int64_t count, double prescale, double low, double high, int relu) {
    const double span = high - low + 1, inverse = 1 / span;  // powers of two: exact
    for (int64_t i = 0; i < count; ++i) {
        double v = static_cast<double>(in[i]) * m[i] + o[i];
        if (in2) v += static_cast<double>(in2[i]) * m2[i];
        v *= prescale;
        if (relu) v = larger(v, 0.0);
        v = QUANTIZATION == TRN ? std::floor(v) : QUANTIZATION == RND_CONV ? std::nearbyint(v) : std::trunc(v);
        if (OVERFLOW == WRAP) v -= span * std::floor((v - low) * inverse);
        else v = smaller(larger(v, low), high);
        out[i] = static_cast<Out>(v);
    }
}

template <typename In, typename Out>
bool try_fused(const In* in, const double* m, const In* in2, const double* m2, const double* o, Out* out,
               int64_t count, double prescale, int quantization, int overflow_mode, double low, double high,
               int relu) {
#define FUSED(Q, O) requantize_fused<Q, O>(in, m, in2, m2, o, out, count, prescale, low, high, relu)
    bool wrap = overflow_mode == WRAP, clip = overflow_mode == SAT || overflow_mode == SAT_SYM;
    if (quantization == TRN && wrap) FUSED(TRN, WRAP);
    else if (quantization == TRN && clip) FUSED(TRN, SAT);
    else if (quantization == RND_CONV && wrap) FUSED(RND_CONV, WRAP);
    else if (quantization == RND_CONV && clip) FUSED(RND_CONV, SAT);
    else if (quantization == TRN_ZERO && wrap) FUSED(TRN_ZERO, WRAP);
    else if (quantization == TRN_ZERO && clip) FUSED(TRN_ZERO, SAT);
    else return false;
    return true;
#undef FUSED
}

// dst[r][c] = relu?((src[r][c] * scale[c] + addend[r][c] * addend_scale[c] + offset[c]) * prescale), assigned
// to an ap_fixed type (quantization < 0: kept exact). Scales may be null (1), addend too (0). Chunks of
// whole rows: one fused pass for the common modes, else one pass per operation.
template <typename In, typename Out>
void requantize(const void* source, const double* scale, const void* addend_values, const double* addend_scale,
                void* destination, int64_t rows, int64_t columns, const double* offset, double prescale,
                int quantization, int overflow_mode, double low, double high, int relu, double* scratch) {
    const In *src = static_cast<const In*>(source), *addend = static_cast<const In*>(addend_values);
    Out* dst = static_cast<Out*>(destination);
    int64_t chunk = larger<int64_t>(1, CHUNK / columns) * columns;
    double *o = scratch, *m = scratch + chunk, *m2 = scratch + 2 * chunk, *x = scratch + 3 * chunk;
    for (int64_t i = 0; i < chunk; ++i) {
        o[i] = offset[i % columns];
        m[i] = scale ? scale[i % columns] : 1.0;
        m2[i] = addend_scale ? addend_scale[i % columns] : 1.0;
    }
    for (int64_t start = 0, total = rows * columns; start < total; start += chunk) {
        int64_t count = smaller(chunk, total - start);
        const In* in = src + start;
        const In* in2 = addend ? addend + start : nullptr;
        if (quantization >= 0 && try_fused(in, m, in2, m2, o, dst + start, count, prescale, quantization,
                                           overflow_mode, low, high, relu))
            continue;
        for (int64_t i = 0; i < count; ++i) x[i] = static_cast<double>(in[i]) * m[i] + o[i];
        if (addend) {
            for (int64_t i = 0; i < count; ++i) x[i] += static_cast<double>(in2[i]) * m2[i];
        }
        for (int64_t i = 0; i < count; ++i) x[i] *= prescale;
        if (relu)
            for (int64_t i = 0; i < count; ++i) x[i] = larger(x[i], 0.0);
        if (quantization >= 0) {
            quantize(x, count, quantization);
            overflow(x, count, overflow_mode, low, high);
        }
        Out* out = dst + start;
        for (int64_t i = 0; i < count; ++i) out[i] = static_cast<Out>(x[i]);
    }
}

// image [n][h][w][c] → windows [n][oh][ow][kh][kw][c]: each output pixel's receptive field, zeros
// where it reaches into the padding (the im2col layout the emulator multiplies by a weight matrix).
template <typename In, typename Out>
void windows(const void* source, void* destination, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
             int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow) {
    const In* image = static_cast<const In*>(source);
    Out* out = static_cast<Out*>(destination);
    for (int64_t i = 0; i < n; ++i) {
        const In* picture = image + i * h * w * c;
        for (int64_t y = 0; y < oh; ++y) {
            for (int64_t x = 0; x < ow; ++x) {
                for (int64_t dy = 0; dy < kh; ++dy) {
                    int64_t row = y * stride_h + dy - pad_top;
                    for (int64_t dx = 0; dx < kw; ++dx, out += c) {
                        int64_t column = x * stride_w + dx - pad_left;
                        if (row < 0 || row >= h || column < 0 || column >= w) {
                            for (int64_t k = 0; k < c; ++k) out[k] = 0;
                        } else {
                            const In* pixel = picture + (row * w + column) * c;
                            for (int64_t k = 0; k < c; ++k) out[k] = static_cast<Out>(pixel[k]);
                        }
                    }
                }
            }
        }
    }
}

typedef double Lanes __attribute__((vector_size(32)));  // 4 doubles: gcc's portable vector extension

// The sums of PIXELS horizontally adjacent output pixels for one 8-filter block, in registers: their
// independent chains hide the multiply-add latency and share each weight load.
template <int PIXELS, typename In, typename Out>
void convolve_pixels(const In* first, const double* taps, Out* out, int64_t w, int64_t c, int64_t kh, int64_t kw,
                     int64_t stride_w, int64_t padded, int64_t filters, int64_t valid) {
    Lanes sums[PIXELS][2] = {};
    for (int64_t dy = 0; dy < kh; ++dy) {
        for (int64_t dx = 0; dx < kw; ++dx) {
            const In* pixel = first + (dy * w + dx) * c;
            const double* tap = taps + (dy * kw + dx) * c * padded;
            for (int64_t k = 0; k < c; ++k, tap += padded) {
                Lanes low, high;
                std::memcpy(&low, tap, sizeof low);
                std::memcpy(&high, tap + 4, sizeof high);
                for (int p = 0; p < PIXELS; ++p) {
                    double value = static_cast<double>(pixel[p * stride_w * c + k]);
                    sums[p][0] += value * low;
                    sums[p][1] += value * high;
                }
            }
        }
    }
    for (int p = 0; p < PIXELS; ++p)
        for (int64_t j = 0; j < 8 && j < valid; ++j) out[p * filters + j] = static_cast<Out>(sums[p][j / 4][j % 4]);
}

// out[n][oh][ow][f] = Σ image[n][y·sh + dy][x·sw + dx][c] · weights[dy][dx][c][f] over an image already
// zero padded: a convolution without the window copy, for layers with few input channels and filters
// (a network's stem), where the matrix product of the windows is inefficient. weights has its filters
// padded to a multiple of 8 columns.
template <typename In, typename Out>
void convolve(const void* source, const double* weights, void* destination, int64_t n, int64_t h, int64_t w, int64_t c,
              int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t oh, int64_t ow, int64_t filters) {
    constexpr int PIXELS = 4;
    const In* image = static_cast<const In*>(source);
    Out* out = static_cast<Out*>(destination);
    const int64_t padded = (filters + 7) / 8 * 8;
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t y = 0; y < oh; ++y) {
            const In* row = image + (i * h + y * stride_h) * w * c;
            Out* line = out + (i * oh + y) * ow * filters;
            for (int64_t block = 0; block < padded; block += 8) {
                int64_t x = 0;
                for (; x + PIXELS <= ow; x += PIXELS)
                    convolve_pixels<PIXELS>(row + x * stride_w * c, weights + block, line + x * filters + block, w, c,
                                            kh, kw, stride_w, padded, filters, filters - block);
                for (; x < ow; ++x)
                    convolve_pixels<1>(row + x * stride_w * c, weights + block, line + x * filters + block, w, c, kh,
                                       kw, stride_w, padded, filters, filters - block);
            }
        }
    }
}

// The low 64 bits of the integer-valued double `x` in two's complement, read from its bits: exact for
// every |x| >= 2^62 (where a cast to int64 is undefined), and none for NaN and ±inf.
inline uint64_t low_bits_of_huge(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const int exponent = static_cast<int>((bits >> 52) & 0x7ff);
    const int shift = exponent - 1075;  // x = mantissa · 2^shift, shift >= 10 here
    if (exponent == 0x7ff || shift >= 64) return 0;
    const uint64_t magnitude = ((bits & ((uint64_t(1) << 52) - 1)) | (uint64_t(1) << 52)) << shift;
    return (bits >> 63) ? uint64_t(0) - magnitude : magnitude;
}

// Floats → the bit patterns of a wrapping ap_fixed type of `width` <= 62 bits, as C++ assignment gives:
// value · 2^fraction (`scale`) rounded by the quantization mode, its low `width` bits (none for NaN
// and ±inf). The host packs every input with this.
template <typename In, typename Lane>
void wrapped_bits(const void* source, void* destination, int64_t n, double scale, int quantization, int width) {
    const In* values = static_cast<const In*>(source);
    Lane* out = static_cast<Lane*>(destination);
    const uint64_t mask = (uint64_t(1) << width) - 1;
    double x[CHUNK];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t count = smaller(CHUNK, n - start);
        int64_t huge = 0;  // counted, not or-ed: a sum vectorizes
        if (quantization == TRN) {  // the common mode, in one pass
            for (int64_t i = 0; i < count; ++i) {
                x[i] = std::floor(static_cast<double>(values[start + i]) * scale);
                huge += std::fabs(x[i]) < 0x1p62 ? 0 : 1;  // NaN too
            }
        } else {
            for (int64_t i = 0; i < count; ++i) x[i] = static_cast<double>(values[start + i]) * scale;
            quantize(x, count, quantization);
            for (int64_t i = 0; i < count; ++i) huge += std::fabs(x[i]) < 0x1p62 ? 0 : 1;
        }
        if (!huge) {
            for (int64_t i = 0; i < count; ++i)
                out[start + i] = static_cast<Lane>(static_cast<uint64_t>(static_cast<int64_t>(x[i])) & mask);
            continue;
        }
        for (int64_t i = 0; i < count; ++i) {
            uint64_t low = std::fabs(x[i]) < 0x1p62 ? static_cast<uint64_t>(static_cast<int64_t>(x[i]))
                                                    : low_bits_of_huge(x[i]);
            out[start + i] = static_cast<Lane>(low & mask);
        }
    }
}

// Bit patterns of an ap_fixed type of `width` bits (extra high lane bits ignored) → float32, as the C++
// cast gives: the mantissa, sign-extended for a signed type, times 2^-fraction (`scale`). Exact for
// width <= 24; the host unpacks every such output with this.
template <typename Lane>
void float_from_bits(const void* source, float* out, int64_t n, double scale, int width, bool is_signed) {
    const Lane* lanes = static_cast<const Lane*>(source);
    const int shift = 64 - width;
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t bits = static_cast<uint64_t>(lanes[i]) << shift;
        const int64_t mantissa = is_signed ? static_cast<int64_t>(bits) >> shift : static_cast<int64_t>(bits >> shift);
        out[i] = static_cast<float>(static_cast<double>(mantissa) * scale);
    }
}

}  // namespace

// The table native.cpp dispatches through, indexed as native.h's Source, Destination and Lane.
#define BY_OUT(LOOP, IN) {LOOP<IN, float>, LOOP<IN, double>}
#define BY_SOURCE(LOOP) {BY_OUT(LOOP, float), BY_OUT(LOOP, double), BY_OUT(LOOP, int64_t)}
#define BY_LANE(LOOP) {LOOP<uint8_t>, LOOP<uint16_t>, LOOP<uint32_t>, LOOP<uint64_t>}
#define BY_LANE_FROM(LOOP, IN) {LOOP<IN, uint8_t>, LOOP<IN, uint16_t>, LOOP<IN, uint32_t>, LOOP<IN, uint64_t>}
extern const Loops loops = {
    BY_SOURCE(requantize),
    BY_SOURCE(windows),
    BY_SOURCE(convolve),
    {BY_LANE_FROM(wrapped_bits, float), BY_LANE_FROM(wrapped_bits, double)},
    BY_LANE(float_from_bits),
};
#undef BY_OUT
#undef BY_SOURCE
#undef BY_LANE
#undef BY_LANE_FROM

}  // namespace FAAST_ISA
}  // namespace faast
