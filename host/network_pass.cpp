// The compiled whole-network pass (host/emulator/compiled.py prepares it, host/native.cpp binds it;
// setup.py compiles this file once per instruction set, see native.cpp). A dense network's emulator
// steps run here block by block: BLOCK rows go through every step while their tensors stay in the L1
// cache, vectorized across the rows.
//
// Exactness: the steps are the emulator's own (a matrix product, a scale and an offset, assigned to an
// ap_fixed type), and compiled.py proves the bounds this code relies on: sums of products of 16-bit
// pairs stay below 2^31 (int32), every other value below 2^62 (int64), and an op marked `floating`
// stays below 2^52 once scaled, so that float64 holds every value and its rounding exactly. Rounding
// and overflow follow faast/contract/fixed.py mode for mode.
//
// Compiled per ISA: everything here has internal linkage (the anonymous namespace) but the
// `network_pass` table, under faast::FAAST_ISA; nothing from the standard library but C functions (no
// std template may be instantiated here: see native.cpp). native.cpp builds the network's steps.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "native.h"

#if defined(__AVX512BW__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "engine.h"  // opens faast::FAAST_ISA's anonymous namespace; closed at the end of this file

inline void fill(int64_t* begin, int64_t* end, int64_t value) {
    for (; begin != end; ++begin) *begin = value;
}

// ---- assignment to an ap_fixed type, in int64 (as faast/contract/fixed.py's integer arithmetic) ------------

// `value` with `shift` fraction bits dropped by a quantization mode (DROPS: shift > 0), or with -shift
// more (exact: compiled.py bounds the product).
template <int Q, bool DROPS>
inline int64_t quantized(int64_t value, int64_t shift) {
    if (!DROPS) return value * (int64_t(1) << -shift);
    int64_t floor = value >> shift, rest = value & ((int64_t(1) << shift) - 1), half = int64_t(1) << (shift - 1);
    int64_t negative = value < 0, above = rest > half, tie = rest == half;
    switch (Q) {
        case TRN: return floor;
        case TRN_ZERO: return floor + ((rest != 0) & negative);
        case RND: return floor + (rest >= half);
        case RND_ZERO: return floor + (above | (tie & negative));
        case RND_INF: return floor + (above | (tie & !negative));
        case RND_MIN_INF: return floor + above;
        default: return floor + (above | (tie & floor & 1));  // RND_CONV
    }
}

// An integer into [low, high] by an overflow mode (SAT_SYM is SAT: compiled.py sets its low).
template <int O, typename T>
inline T overflowed(T value, T low, T high, T mask) {
    switch (O) {
        case WRAP: return ((value - low) & mask) + low;
        case SAT_ZERO: return value < low || value > high ? 0 : value;
        default: return smaller(larger(value, low), high);
    }
}

// ---- the same in float64, for ops whose every value float64 holds exactly -------------------------

// An exact value (a multiple of 2^-shift below 2^52) rounded to an integer by a quantization mode.
template <int Q>
inline double rounded(double x) {
    switch (Q) {
        case TRN: return std::floor(x);
        case TRN_ZERO: return std::trunc(x);
        case RND: return std::floor(x + 0.5);
        case RND_ZERO: return x < 0 ? std::floor(x + 0.5) : std::ceil(x - 0.5);
        case RND_INF: return x < 0 ? std::ceil(x - 0.5) : std::floor(x + 0.5);
        case RND_MIN_INF: return std::ceil(x - 0.5);
        default: return std::nearbyint(x);  // RND_CONV: ties to even
    }
}

template <int O>
inline double overflowed_float(double value, double low, double high, double span) {
    switch (O) {
        case WRAP: return value - span * std::floor((value - low) * (1 / span));  // span: a power of two
        case SAT_ZERO: return value < low || value > high ? 0.0 : value;
        default: return smaller(larger(value, low), high);
    }
}

template <typename In, int Q, int O, bool DROPS>
void finish_int(const In* __restrict in, int64_t* __restrict out, int64_t scale, int64_t offset, const Step& step) {
    const int64_t shift = step.op.shift, low = step.op.low, high = step.op.high, mask = step.mask;
    const int64_t floor = step.op.relu ? 0 : INT64_MIN;
    for (int64_t r = 0; r < BLOCK; ++r) {
        int64_t value = larger(int64_t(in[r]) * scale + offset, floor);
        out[r] = Q == EXACT ? value : overflowed<O>(quantized<Q, DROPS>(value, shift), low, high, mask);
    }
}

// out = relu?(sums · scale + offset) assigned to the op's type (EXACT: kept as is): in float64 where
// compiled.py proved it exact (FLOATING), else in int64.
template <typename In, bool FLOATING, int Q, int O>
void finish(const void* sums, int64_t* out, const Step& step, int64_t j) {
    const In* in = static_cast<const In*>(sums) + j * BLOCK;
    if (!FLOATING) {
        if (step.op.shift > 0) finish_int<In, Q, O, true>(in, out, step.scale[j], step.offset[j], step);
        else finish_int<In, Q, O, false>(in, out, step.scale[j], step.offset[j], step);
        return;
    }
    const double scale = step.scaled[j], offset = step.shifted[j], floor = step.op.relu ? 0.0 : -INFINITY;
    const double low = double(step.op.low), high = double(step.op.high), span = double(step.mask) + 1;
    for (int64_t r = 0; r < BLOCK; ++r) {
        double value = larger(double(in[r]) * scale + offset, floor);
        if (Q != EXACT) value = overflowed_float<O>(rounded<Q>(value), low, high, span);
        out[r] = int64_t(value);
    }
}

template <int Q, int O, bool DROPS>
void accumulate_rows(int64_t* __restrict total, const int64_t* __restrict inputs, int64_t weight, const Step& step) {
    const int64_t shift = step.op.shift, low = step.op.low, high = step.op.high, mask = step.mask;
    for (int64_t r = 0; r < BLOCK; ++r) {
        int64_t product = overflowed<O>(quantized<Q, DROPS>(inputs[r] * weight, shift), low, high, mask);
        total[r] = overflowed<O>(total[r] + product, low, high, mask);
    }
}

// The product assigned to the accumulator's type, then added, the sum overflowing at every addition:
// hls4ml's DenseLatency loop (where the sum wraps, wrapping at the end gives the same).
template <int Q, int O>
void accumulate(int64_t* total, const int64_t* inputs, int64_t weight, const Step& step) {
    if (step.op.shift > 0) accumulate_rows<Q, O, true>(total, inputs, weight, step);
    else accumulate_rows<Q, O, false>(total, inputs, weight, step);
}

template <typename In, bool FLOATING, int Q>
Finish finish_for(int64_t overflow) {
    return overflow == WRAP       ? finish<In, FLOATING, Q, WRAP>
           : overflow == SAT_ZERO ? finish<In, FLOATING, Q, SAT_ZERO>
                                  : finish<In, FLOATING, Q, SAT>;
}

template <typename In, bool FLOATING>
Finish finish_for(int64_t quantization, int64_t overflow) {
    switch (quantization) {
        case TRN: return finish_for<In, FLOATING, TRN>(overflow);
        case TRN_ZERO: return finish_for<In, FLOATING, TRN_ZERO>(overflow);
        case RND: return finish_for<In, FLOATING, RND>(overflow);
        case RND_ZERO: return finish_for<In, FLOATING, RND_ZERO>(overflow);
        case RND_INF: return finish_for<In, FLOATING, RND_INF>(overflow);
        case RND_MIN_INF: return finish_for<In, FLOATING, RND_MIN_INF>(overflow);
        case RND_CONV: return finish_for<In, FLOATING, RND_CONV>(overflow);
        default: return finish<In, FLOATING, EXACT, WRAP>;
    }
}

template <int Q>
Accumulate accumulate_for(int64_t overflow) {
    return overflow == WRAP ? accumulate<Q, WRAP> : overflow == SAT_ZERO ? accumulate<Q, SAT_ZERO> : accumulate<Q, SAT>;
}

Accumulate accumulate_for(int64_t quantization, int64_t overflow) {
    switch (quantization) {
        case TRN: return accumulate_for<TRN>(overflow);
        case TRN_ZERO: return accumulate_for<TRN_ZERO>(overflow);
        case RND: return accumulate_for<RND>(overflow);
        case RND_ZERO: return accumulate_for<RND_ZERO>(overflow);
        case RND_INF: return accumulate_for<RND_INF>(overflow);
        case RND_MIN_INF: return accumulate_for<RND_MIN_INF>(overflow);
        default: return accumulate_for<RND_CONV>(overflow);
    }
}

// ---- products of int16 pairs, summed in int32 --------------------------------------------------

#if defined(__AVX512BW__)
typedef __m512i Lanes;  // 16 int32
constexpr int64_t LANES = 16, OUTPUTS_TOGETHER = 4;
inline Lanes zero() { return _mm512_setzero_si512(); }
inline Lanes load(const int32_t* p) { return _mm512_loadu_si512(p); }
inline void store(int32_t* p, Lanes v) { _mm512_storeu_si512(p, v); }
inline Lanes multiply_add_pairs(Lanes sum, Lanes pairs, int32_t weights) {
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(sum, pairs, _mm512_set1_epi32(weights));
#else
    return _mm512_add_epi32(sum, _mm512_madd_epi16(pairs, _mm512_set1_epi32(weights)));
#endif
}
#elif defined(__AVX2__)
typedef __m256i Lanes;  // 8 int32
constexpr int64_t LANES = 8, OUTPUTS_TOGETHER = 2;  // 16 registers: 2 outputs × 4 vectors of sums
inline Lanes zero() { return _mm256_setzero_si256(); }
inline Lanes load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void store(int32_t* p, Lanes v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline Lanes multiply_add_pairs(Lanes sum, Lanes pairs, int32_t weights) {
    return _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi32(weights)));
}
#else
struct Lanes {
    int32_t v[4];
};
constexpr int64_t LANES = 4, OUTPUTS_TOGETHER = 2;
inline Lanes zero() { return Lanes{}; }
inline Lanes load(const int32_t* p) {
    Lanes l;
    std::memcpy(l.v, p, sizeof l.v);
    return l;
}
inline void store(int32_t* p, Lanes l) { std::memcpy(p, l.v, sizeof l.v); }
inline Lanes multiply_add_pairs(Lanes sum, Lanes pairs, int32_t weights) {
    int32_t low = int16_t(weights & 0xffff), high = int16_t(uint32_t(weights) >> 16);
    for (int i = 0; i < 4; ++i) {
        int32_t pair = pairs.v[i];
        int32_t a = int16_t(pair & 0xffff), b = int16_t(uint32_t(pair) >> 16);
        sum.v[i] = int32_t(uint32_t(sum.v[i]) + uint32_t(a * low + b * high));
    }
    return sum;
}
#endif
constexpr int64_t VECTORS = BLOCK / LANES;

// sums[first + j][r] = Σ_k pairs[k][r] · weights[first + j][k] (each a pair product) for J outputs:
// J × VECTORS independent sums hide the multiply-add latency and share each load of the inputs.
template <int J>
void pair_products(const uint32_t* pairs, const int32_t* weights, int64_t count, int64_t first, int32_t* sums) {
    Lanes total[J][VECTORS];
    for (int j = 0; j < J; ++j)
        for (int64_t v = 0; v < VECTORS; ++v) total[j][v] = zero();
    for (int64_t k = 0; k < count; ++k) {
        Lanes inputs[VECTORS];
        for (int64_t v = 0; v < VECTORS; ++v) inputs[v] = load(reinterpret_cast<const int32_t*>(pairs) + k * BLOCK + v * LANES);
        for (int j = 0; j < J; ++j) {
            int32_t w = weights[(first + j) * count + k];
            for (int64_t v = 0; v < VECTORS; ++v) total[j][v] = multiply_add_pairs(total[j][v], inputs[v], w);
        }
    }
    for (int j = 0; j < J; ++j)
        for (int64_t v = 0; v < VECTORS; ++v) store(sums + (first + j) * BLOCK + v * LANES, total[j][v]);
}

// ---- the network ----------------------------------------------------------------------------------

// A block's scratch (native.h's Network::run_bytes): its tensors, and the sums and values of the op
// being computed.
struct Block {
    char* tensors;
    int64_t *values, *feature;
    int32_t* sums;

    Block(const Network& network, char* scratch)
        : tensors(scratch),
          values(reinterpret_cast<int64_t*>(scratch + network.scratch_bytes)),
          feature(values + network.widest * BLOCK),
          sums(reinterpret_cast<int32_t*>(feature + BLOCK)) {}

    int16_t* halves(const Tensor& t) const { return reinterpret_cast<int16_t*>(tensors + t.offset); }
    uint32_t* pairs(const Tensor& t) const { return reinterpret_cast<uint32_t*>(tensors + t.offset); }
    int64_t* wide(const Tensor& t) const { return reinterpret_cast<int64_t*>(tensors + t.offset); }

    // Feature i of a tensor as int64 [BLOCK].
    void read(const Tensor& t, int64_t i, int64_t* out) const {
        if (t.layout == WIDE64) {
            std::memcpy(out, wide(t) + i * BLOCK, BLOCK * sizeof(int64_t));
            return;
        }
        const int16_t* pair = halves(t) + (i / 2) * BLOCK * 2 + i % 2;
        for (int64_t r = 0; r < BLOCK; ++r) out[r] = pair[2 * r];
    }

    // Features i and i + 1 (second: null where there is none) of a tensor from int64 [BLOCK] each.
    void write(const Tensor& t, int64_t i, const int64_t* __restrict first, const int64_t* __restrict second) {
        if (t.layout == WIDE64) {
            std::memcpy(wide(t) + i * BLOCK, first, BLOCK * sizeof(int64_t));
            if (second) std::memcpy(wide(t) + (i + 1) * BLOCK, second, BLOCK * sizeof(int64_t));
            return;
        }
        uint32_t* out = pairs(t) + (i / 2) * BLOCK;
        if (second) {
            for (int64_t r = 0; r < BLOCK; ++r) out[r] = (uint32_t(first[r]) & 0xffff) | uint32_t(second[r]) << 16;
        } else {
            for (int64_t r = 0; r < BLOCK; ++r) out[r] = uint32_t(first[r]) & 0xffff;
        }
    }

    // `count` rows (the rest of the block zeros) into a tensor, from its columns of the input rows.
    template <typename In>
    void load_rows(const Tensor& t, const In* rows, int64_t columns, int64_t column, int64_t count) {
        if (t.layout == WIDE64) {
            int64_t* out = wide(t);
            for (int64_t r = 0; r < BLOCK; ++r)
                for (int64_t i = 0; i < t.features; ++i) out[i * BLOCK + r] = r < count ? rows[r * columns + column + i] : 0;
            return;
        }
        uint32_t* out = pairs(t);
        int64_t full = t.features / 2;
        for (int64_t r = 0; r < count; ++r) {
            const In* row = rows + r * columns + column;
            for (int64_t k = 0; k < full; ++k) {
                uint32_t pair;
                if (sizeof(In) == 2) {
                    std::memcpy(&pair, row + 2 * k, 4);  // the row's two int16 are the pair already
                } else {
                    pair = uint32_t(uint16_t(row[2 * k])) | uint32_t(uint16_t(row[2 * k + 1])) << 16;
                }
                out[k * BLOCK + r] = pair;
            }
            if (t.features % 2) out[full * BLOCK + r] = uint16_t(row[2 * full]);
        }
        for (int64_t k = 0; k < (t.features + 1) / 2; ++k)
            for (int64_t r = count; r < BLOCK; ++r) out[k * BLOCK + r] = 0;
    }

    void cast(const Network& network, const Step& step) {
        const Op& op = step.op;
        const Tensor &source = network.tensors[op.source], &destination = network.tensors[op.destination];
        const void* products = values;
        if (op.pairs) {
            const int32_t* weights = step.pair_weights;
            int64_t count = (op.inputs + 1) / 2, j = 0;
            for (; j + OUTPUTS_TOGETHER <= op.outputs; j += OUTPUTS_TOGETHER)
                pair_products<OUTPUTS_TOGETHER>(pairs(source), weights, count, j, sums);
            for (; j < op.outputs; ++j) pair_products<1>(pairs(source), weights, count, j, sums);
            products = sums;
        } else if (op.matrix) {
            fill(values, values + op.outputs * BLOCK, 0);
            for (int64_t i = 0; i < op.inputs; ++i) {
                read(source, i, feature);
                for (int64_t j = 0; j < op.outputs; ++j) {
                    int64_t w = step.matrix[i * op.outputs + j];
                    int64_t* __restrict total = values + j * BLOCK;
                    for (int64_t r = 0; r < BLOCK; ++r) total[r] += feature[r] * w;
                }
            }
        } else {
            for (int64_t j = 0; j < op.outputs; ++j) read(source, j, values + j * BLOCK);
        }
        int64_t assigned[2][BLOCK];
        for (int64_t j = 0; j < op.outputs; j += 2) {
            bool second = j + 1 < op.outputs;
            step.finish(products, assigned[0], step, j);
            if (second) step.finish(products, assigned[1], step, j + 1);
            write(destination, j, assigned[0], second ? assigned[1] : nullptr);
        }
    }

    void loop_dense(const Network& network, const Step& step) {
        const Op& op = step.op;
        const Tensor &source = network.tensors[op.source], &destination = network.tensors[op.destination];
        for (int64_t j = 0; j < op.outputs; ++j)
            fill(values + j * BLOCK, values + (j + 1) * BLOCK, step.offset[j]);
        for (int64_t i = 0; i < op.inputs; ++i) {
            read(source, i, feature);
            for (int64_t j = 0; j < op.outputs; ++j)
                step.accumulate(values + j * BLOCK, feature, step.matrix[i * op.outputs + j], step);
        }
        for (int64_t j = 0; j < op.outputs; j += 2)
            write(destination, j, values + j * BLOCK, j + 1 < op.outputs ? values + (j + 1) * BLOCK : nullptr);
    }
};

template <typename In>
void run(const Network& network, const In* rows, int64_t count, int64_t in_columns, int64_t* out,
         int64_t out_columns, char* scratch) {
    Block block(network, scratch);
    for (int64_t start = 0; start < count; start += BLOCK) {
        int64_t valid = smaller(BLOCK, count - start);
        for (int64_t s = 0; s < network.step_count; ++s) {
            const Step& step = network.steps[s];
            const Op& op = step.op;
            switch (op.kind) {
                case LOAD:
                    block.load_rows(network.tensors[op.destination], rows + start * in_columns, in_columns, op.column,
                                    valid);
                    break;
                case CAST: block.cast(network, step); break;
                case LOOP_DENSE: block.loop_dense(network, step); break;
                default: {  // STORE
                    const Tensor& t = network.tensors[op.source];
                    for (int64_t i = 0; i < t.features; ++i) {
                        block.read(t, i, block.feature);
                        for (int64_t r = 0; r < valid; ++r) out[(start + r) * out_columns + op.column + i] = block.feature[r];
                    }
                }
            }
        }
    }
}

// The op's finish and accumulate, for its modes and arithmetic.
void prepare(Step& step) {
    const Op& op = step.op;
    if (op.kind == CAST) {
        step.finish = op.pairs ? (op.floating ? finish_for<int32_t, true>(op.quantization, op.overflow)
                                              : finish_for<int32_t, false>(op.quantization, op.overflow))
                               : (op.floating ? finish_for<int64_t, true>(op.quantization, op.overflow)
                                              : finish_for<int64_t, false>(op.quantization, op.overflow));
    }
    if (op.kind == LOOP_DENSE) step.accumulate = accumulate_for(op.quantization, op.overflow);
}

}  // namespace

extern const NetworkPass network_pass = {prepare, run<int16_t>, run<int64_t>};

}  // namespace FAAST_ISA
}  // namespace faast
