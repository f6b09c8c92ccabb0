// What the module (host/native.cpp, built for the baseline CPU) and the engine sources compiled once
// per instruction set (host/fastpath.cpp, host/network_pass.cpp; setup.py builds each for every ISA
// this architecture has) share: plain types and tables of function pointers, nothing else. This
// header defines no function (inline, template or other): every ISA's object would otherwise carry its
// own copy of it under one name, and the linker could keep the AVX-512 one for everyone (see native.cpp).

#pragma once

#include <cstdint>

namespace faast {

// ap_fixed quantization and overflow modes, numbered as faast/contract/fixed.py's Quantization and
// Overflow values; EXACT: none (kept exact).
enum Quantization { EXACT = -1, TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV };
enum Overflow { WRAP, SAT, SAT_ZERO, SAT_SYM };

// ---- the element loops (fastpath.cpp) ------------------------------------------------------------

// Indices of the element types the loops take: values in, values out, and lanes of bit patterns.
enum Source { SOURCE_F32, SOURCE_F64, SOURCE_I64, SOURCES };
enum Destination { OUT_F32, OUT_F64, OUTS };
enum Lane { LANE_U8, LANE_U16, LANE_U32, LANE_U64, LANES_KINDS };

constexpr int64_t CHUNK = 2048;  // values per pass of the element loops: they stay in the L1 cache

// dst = relu?((src · scale + addend · addend_scale + offset) · prescale) assigned to an ap_fixed type;
// scratch: 4 · max(CHUNK, columns) doubles.
typedef void (*Requantize)(const void* src, const double* scale, const void* addend, const double* addend_scale,
                           void* dst, int64_t rows, int64_t columns, const double* offset, double prescale,
                           int quantization, int overflow_mode, double low, double high, int relu, double* scratch);
typedef void (*Windows)(const void* image, void* out, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kh,
                        int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t oh,
                        int64_t ow);
typedef void (*Convolve)(const void* image, const double* weights, void* out, int64_t n, int64_t h, int64_t w,
                         int64_t c, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t oh, int64_t ow,
                         int64_t filters);
typedef void (*WrappedBits)(const void* values, void* out, int64_t n, double scale, int quantization, int width);
typedef void (*FloatFromBits)(const void* lanes, float* out, int64_t n, double scale, int width, bool is_signed);

struct Loops {
    Requantize requantize[SOURCES][OUTS];
    Windows windows[SOURCES][OUTS];
    Convolve convolve[SOURCES][OUTS];
    WrappedBits wrapped_bits[2][LANES_KINDS];  // float32, float64 values
    FloatFromBits float_from_bits[LANES_KINDS];
};

// ---- the whole-network pass (network_pass.cpp) ---------------------------------------------------

constexpr int64_t BLOCK = 32;  // rows computed together: a multiple of every vector width

// What an op does, and how a block's tensor is stored: int16 pairs (features 2k and 2k + 1 of a row
// in one 32-bit lane, [feature pair][row], what the pair products read) or int64 [feature][row].
enum Kind { LOAD, CAST, LOOP_DENSE, STORE };
enum Layout { PAIRS16, WIDE64 };

// One op, field by field: the one list of its fields (the module hands it to host/emulator/compiled.py
// as OP_FIELDS). matrix, scale, offset: where the op's constants start (-1: none); column: of the rows
// (LOAD, STORE); pairs: the product runs on int16 pairs.
#define FAAST_OP_FIELDS(FIELD)                                                                                   \
    FIELD(kind) FIELD(destination) FIELD(source) FIELD(column) FIELD(inputs) FIELD(outputs) FIELD(matrix)        \
    FIELD(scale) FIELD(offset) FIELD(shift) FIELD(relu) FIELD(quantization) FIELD(overflow) FIELD(low) FIELD(high) \
    FIELD(width) FIELD(pairs) FIELD(floating)
#define FAAST_OP_FIELD(name) int64_t name;
struct Op {
    FAAST_OP_FIELDS(FAAST_OP_FIELD)
};
#undef FAAST_OP_FIELD

struct Tensor {
    int64_t layout, features, offset;  // offset: in bytes, into a block's scratch
};

struct Step;
// Sums (int32 or int64 [outputs][BLOCK]) of output j → its values (int64 [BLOCK]), assigned to the type.
typedef void (*Finish)(const void* sums, int64_t* out, const Step& step, int64_t j);
// total (int64 [BLOCK]) += inputs · weight, as a loop-order accumulator adds.
typedef void (*Accumulate)(int64_t* total, const int64_t* inputs, int64_t weight, const Step& step);

// An op with its constants, prepared once (native.cpp owns the arrays).
struct Step {
    Op op;                         // op.matrix: 1 where the op has a matrix
    const int64_t* matrix;         // [inputs][outputs]
    const int32_t* pair_weights;   // [outputs][input pairs]: the weights of inputs 2k and 2k + 1
    const int64_t *scale, *offset;  // per output (LOOP_DENSE: offset is the bias)
    const double *scaled, *shifted;  // floating: scale and offset × 2^-shift (exact)
    int64_t mask;                  // WRAP: 2^width - 1
    Finish finish;                 // chosen by the running ISA's prepare
    Accumulate accumulate;
};

struct Network {
    const Step* steps;
    int64_t step_count;
    const Tensor* tensors;
    int64_t scratch_bytes;  // a block's tensors, 64-byte aligned each
    int64_t widest;         // the most inputs or outputs of an op
    // A run's scratch, 64-byte aligned: the tensors, then the op's values (int64 [widest][BLOCK]), a
    // feature (int64 [BLOCK]) and the pair sums (int32 [widest][BLOCK]).
    int64_t run_bytes;
};

struct NetworkPass {
    void (*prepare)(Step& step);  // sets finish and accumulate
    // rows (int16 or int64 [count][in_columns]) → out (int64 [count][out_columns]) in `scratch` (run_bytes).
    void (*run_i16)(const Network& network, const int16_t* rows, int64_t count, int64_t in_columns, int64_t* out,
                    int64_t out_columns, char* scratch);
    void (*run_i64)(const Network& network, const int64_t* rows, int64_t count, int64_t in_columns, int64_t* out,
                    int64_t out_columns, char* scratch);
};

// Every ISA's engine: its loops and its network pass. Compiled per ISA under namespace faast::<isa>.
#define FAAST_DECLARE_ISA(isa)          \
    namespace isa {                     \
    extern const Loops loops;           \
    extern const NetworkPass network_pass; \
    }

}  // namespace faast
