// The host's compiled inner loops (host/fastpath.py loads them with ctypes; setup.py builds this
// file with g++ at install). numpy would pass over a layer's output once per operation (add the
// offset, scale, round, saturate); these loops do it in one pass, cut convolution windows with
// their zero padding in one copy, convolve directly where windows are wasteful, and pack inputs and
// unpack outputs. Packing may read, and unpacking write, a client's shared memory in place, under a
// guard (below) that survives the client truncating it mid-access.
//
// Exactness: every value is an integer mantissa held exactly in a float or double, and the callers
// guarantee every intermediate stays below 2^52 (2^23 for float), so products, sums and power-of-two
// scalings here are exact in any order, and rounding happens only where ap_fixed rounds.

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// ap_fixed quantization modes, in host/modes.py's QUANTIZATION order.
enum Quantization { TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV };
// ap_fixed overflow modes, in host/modes.py's OVERFLOW order.
enum Overflow { WRAP, SAT, SAT_ZERO, SAT_SYM };

constexpr int64_t CHUNK = 2048;  // values per pass: the passes below stay in the L1 cache and vectorize

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
            for (int64_t i = 0; i < count; ++i) v[i] = std::min(std::max(v[i], low), high);
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
        if (relu) v = std::max(v, 0.0);
        v = QUANTIZATION == TRN ? std::floor(v) : QUANTIZATION == RND_CONV ? std::nearbyint(v) : std::trunc(v);
        if (OVERFLOW == WRAP) v -= span * std::floor((v - low) * inverse);
        else v = std::min(std::max(v, low), high);
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
void requantize(const In* src, const double* scale, const In* addend, const double* addend_scale, Out* dst,
                int64_t rows, int64_t columns, const double* offset, double prescale, int quantization,
                int overflow_mode, double low, double high, int relu) {
    int64_t chunk = std::max<int64_t>(1, CHUNK / columns) * columns;
    std::vector<double> tiled_offset(chunk), tiled_scale(chunk, 1.0), tiled_addend_scale(chunk, 1.0), v(chunk);
    for (int64_t i = 0; i < chunk; i += columns) {
        std::copy(offset, offset + columns, tiled_offset.begin() + i);
        if (scale) std::copy(scale, scale + columns, tiled_scale.begin() + i);
        if (addend_scale) std::copy(addend_scale, addend_scale + columns, tiled_addend_scale.begin() + i);
    }
    const double *o = tiled_offset.data(), *m = tiled_scale.data(), *m2 = tiled_addend_scale.data();
    double* x = v.data();
    for (int64_t start = 0, total = rows * columns; start < total; start += chunk) {
        int64_t count = std::min(chunk, total - start);
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
            for (int64_t i = 0; i < count; ++i) x[i] = std::max(x[i], 0.0);
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
void windows(const In* image, Out* out, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw,
             int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow) {
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
void convolve(const In* image, const double* weights, Out* out, int64_t n, int64_t h, int64_t w, int64_t c,
              int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t oh, int64_t ow, int64_t filters) {
    constexpr int PIXELS = 4;
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
void wrapped_bits(const In* values, Lane* out, int64_t n, double scale, int quantization, int width) {
    const uint64_t mask = (uint64_t(1) << width) - 1;
    double x[CHUNK];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t count = std::min(CHUNK, n - start);
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
void float_from_bits(const Lane* lanes, float* out, int64_t n, double scale, int width, bool is_signed) {
    const int shift = 64 - width;
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t bits = static_cast<uint64_t>(lanes[i]) << shift;
        const int64_t mantissa = is_signed ? static_cast<int64_t>(bits) >> shift : static_cast<int64_t>(bits >> shift);
        out[i] = static_cast<float>(static_cast<double>(mantissa) * scale);
    }
}

// A client can shrink the shared memory object the host maps while a request reads or writes it; the
// next access past its new end raises SIGBUS, which would kill the server. Guarded work runs with this
// thread's jump point set, and the handler jumps back to it: the work reports failure instead.
// Guarded work must not take locks or allocate (it may stop anywhere). SA_NODEFER keeps SIGBUS
// unblocked after the jump, so sigsetjmp need not save the mask (a system call per call). The jump
// point is volatile and fenced: the compiler must neither drop setting it (nothing it can see reads
// it before it is cleared) nor move the work's accesses out from between setting and clearing it.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf* volatile guard_point = nullptr;
struct sigaction unguarded_action;  // whoever handled SIGBUS before (Python's faulthandler, the default)
bool guard_installed = false;

void on_bus_error(int, siginfo_t*, void*) {
    if (guard_point) siglongjmp(*guard_point, 1);
    // Not a guarded access: restore the previous disposition; the access runs again and faults into it.
    sigaction(SIGBUS, &unguarded_action, nullptr);
}

template <typename Work>
int guarded(Work work) {
    sigjmp_buf point;
    if (sigsetjmp(point, 0)) {
        guard_point = nullptr;
        return 1;
    }
    guard_point = &point;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    work();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    guard_point = nullptr;
    return 0;
}

}  // namespace

extern "C" {

// Installs the SIGBUS handler guarded work relies on (once per process); 0 on success.
int guard_install() {
    if (guard_installed) return 0;
    struct sigaction action = {};
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &unguarded_action) != 0) return -1;
    guard_installed = true;
    return 0;
}

#define REQUANTIZE(NAME, IN, OUT)                                                                           \
    void NAME(const IN* src, const double* scale, const IN* addend, const double* addend_scale, OUT* dst,    \
              int64_t rows, int64_t columns, const double* offset, double prescale, int quantization,         \
              int overflow_mode, double low, double high, int relu) {                                         \
        requantize(src, scale, addend, addend_scale, dst, rows, columns, offset, prescale, quantization,      \
                   overflow_mode, low, high, relu);                                                           \
    }
#define WINDOWS(NAME, IN, OUT)                                                                              \
    void NAME(const IN* image, OUT* out, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh, int64_t kw, \
              int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t oh, int64_t ow) { \
        windows(image, out, n, h, w, c, kh, kw, stride_h, stride_w, pad_top, pad_left, oh, ow);              \
    }
#define CONVOLVE(NAME, IN, OUT)                                                                             \
    void NAME(const IN* image, const double* weights, OUT* out, int64_t n, int64_t h, int64_t w, int64_t c,  \
              int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t oh, int64_t ow,             \
              int64_t filters) {                                                                             \
        convolve(image, weights, out, n, h, w, c, kh, kw, stride_h, stride_w, oh, ow, filters);               \
    }
#define BOTH(IN_CODE, IN)                                       \
    REQUANTIZE(requantize_##IN_CODE##_f32, IN, float)           \
    REQUANTIZE(requantize_##IN_CODE##_f64, IN, double)          \
    WINDOWS(windows_##IN_CODE##_f32, IN, float)                 \
    WINDOWS(windows_##IN_CODE##_f64, IN, double)                \
    CONVOLVE(convolve_##IN_CODE##_f32, IN, float)               \
    CONVOLVE(convolve_##IN_CODE##_f64, IN, double)
BOTH(f32, float)
BOTH(f64, double)
BOTH(i64, int64_t)

// Guarded (the values may lie in a client's shared memory): 1 when their mapping shrank under the read,
// `out` then partly written; else 0.
#define WRAPPED_BITS(IN_CODE, IN, LANE_CODE, LANE)                                                          \
    int wrapped_bits_##IN_CODE##_##LANE_CODE(const IN* values, LANE* out, int64_t n, double scale,           \
                                             int quantization, int width) {                               \
        return guarded([&] { wrapped_bits(values, out, n, scale, quantization, width); });                 \
    }
#define WRAPPED_BITS_LANES(IN_CODE, IN)                                                                     \
    WRAPPED_BITS(IN_CODE, IN, u8, uint8_t)                                                                  \
    WRAPPED_BITS(IN_CODE, IN, u16, uint16_t)                                                                \
    WRAPPED_BITS(IN_CODE, IN, u32, uint32_t)                                                                \
    WRAPPED_BITS(IN_CODE, IN, u64, uint64_t)
WRAPPED_BITS_LANES(f32, float)
WRAPPED_BITS_LANES(f64, double)

// Guarded (`out` may lie in a client's shared memory): 1 when its mapping shrank under the write, `out`
// then partly written; else 0.
#define FLOAT_FROM_BITS(LANE_CODE, LANE)                                                                    \
    int float_from_bits_##LANE_CODE##_f32(const LANE* lanes, float* out, int64_t n, double scale, int width,  \
                                          int is_signed) {                                                 \
        return guarded([&] { float_from_bits(lanes, out, n, scale, width, is_signed != 0); });             \
    }
FLOAT_FROM_BITS(u8, uint8_t)
FLOAT_FROM_BITS(u16, uint16_t)
FLOAT_FROM_BITS(u32, uint32_t)
FLOAT_FROM_BITS(u64, uint64_t)

}  // extern "C"
