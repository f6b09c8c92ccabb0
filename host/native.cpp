// faast.host._native: faast's one compiled extension (pybind11; setup.py builds it with the package).
// host/fastpath.py calls it; every function is declared here once, and the binding reads its C++
// signature, so no table of argument types or dtype-coded names exists anywhere else.
//
// One binary for every x86-64, each CPU running its fastest path. The engine (fastpath.cpp's element
// loops, network_pass.cpp's whole-network pass: the code whose speed is its vector width) is compiled
// once per instruction set by setup.py, each object with its own flags and -DFAAST_ISA=<name>:
//   baseline  the architecture's baseline (x86-64: SSE2; elsewhere the portable code)
//   avx2      x86-64-v3: AVX2, FMA (and BMI2, LZCNT, MOVBE...)
//   avx512    x86-64-v4 (AVX-512 F/BW/CD/DQ/VL) + VNNI (the pair products' vpdpwssd)
// This file is compiled for the baseline only and picks one engine when the module loads: the best the
// CPU supports (__builtin_cpu_supports, which also checks the OS saves the vector registers), or the
// one FAAST_ISA=baseline|avx2|avx512 names, refused when the CPU lacks it. isa() says which runs.
//
// The hazard of compiling one program's code with several -m flags is the linker's: an inline function
// or template instantiation (std::min, a std::vector member...) used by two objects is emitted in each as
// a weak COMDAT symbol, and the linker keeps one copy — possibly the AVX-512 one, which the baseline code
// would then call on a CPU without AVX-512. So the engine sources put everything in an anonymous
// namespace inside faast::<isa> (internal linkage: never merged), export only their tables of function
// pointers (native.h), instantiate no std template and define no inline function in a shared header;
// setup.py checks each engine object defines no weak symbol and no global outside its namespace, and
// fails the build otherwise. Everything that allocates or touches Python lives here, in baseline code.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csetjmp>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "native.h"

namespace py = pybind11;

namespace faast {

FAAST_DECLARE_ISA(baseline)
#if defined(__x86_64__)
FAAST_DECLARE_ISA(avx2)
FAAST_DECLARE_ISA(avx512)
#endif

namespace {

// ---- the engines, and the one that runs ----------------------------------------------------------

struct Engine {
    const char* name;
    const Loops* loops;
    const NetworkPass* network_pass;
    bool (*supported)();
};

#if defined(__x86_64__)
// What setup.py's flags let the compiler use: the x86-64 levels (gcc 12 on names them).
#if defined(__clang__) || __GNUC__ < 12
bool has_avx2() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
}
bool has_avx512() {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#else
bool has_avx2() { return __builtin_cpu_supports("x86-64-v3"); }
bool has_avx512() { return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512vnni"); }
#endif
#endif
bool always() { return true; }

// From the baseline up: the last one the CPU supports is the default.
const Engine ENGINES[] = {
    {"baseline", &baseline::loops, &baseline::network_pass, always},
#if defined(__x86_64__)
    {"avx2", &avx2::loops, &avx2::network_pass, has_avx2},
    {"avx512", &avx512::loops, &avx512::network_pass, has_avx512},
#endif
};

const Engine* engine = nullptr;  // set once, when the module loads

std::vector<std::string> supported_engines() {
    std::vector<std::string> names;
    for (const Engine& e : ENGINES)
        if (e.supported()) names.push_back(e.name);
    return names;
}

// The engine FAAST_ISA names (unset or empty: the best supported); a runtime_error naming the choices.
const Engine* choose_engine() {
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    const char* asked = std::getenv("FAAST_ISA");
    const Engine* best = nullptr;
    for (const Engine& e : ENGINES) {
        if (!e.supported()) continue;
        best = &e;
        if (asked && *asked && std::strcmp(asked, e.name) == 0) return &e;
    }
    if (!asked || !*asked) return best;
    std::string names;
    for (const std::string& name : supported_engines()) names += (names.empty() ? "" : ", ") + name;
    throw std::runtime_error(std::string("FAAST_ISA=") + asked + " is not a path this CPU runs (it runs " + names +
                             "; FAAST_ISA takes baseline, avx2 or avx512)");
}

// ---- the SIGBUS guard ------------------------------------------------------------------------------

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

// Installs the SIGBUS handler guarded work relies on (once per process); false when it cannot.
bool guard_install() {
    if (guard_installed) return true;
    struct sigaction action = {};
    action.sa_sigaction = on_bus_error;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &unguarded_action) != 0) return false;
    guard_installed = true;
    return true;
}

// True when the work's memory vanished under it (the work then stopped part way).
template <typename Work>
bool guarded(Work work) {
    sigjmp_buf point;
    if (sigsetjmp(point, 0)) {
        guard_point = nullptr;
        return true;
    }
    guard_point = &point;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    work();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    guard_point = nullptr;
    return false;
}

// ---- arrays -------------------------------------------------------------------------------------

// The index of an array's element type among `types` (native byte order), or a TypeError naming them.
template <size_t N>
int type_of(const py::array& a, const char* what, const char* const (&types)[N]) {
    const py::dtype dtype = a.dtype();
    const char byte_order = dtype.byteorder();
    std::string code = std::string(1, dtype.kind()) + std::to_string(8 * dtype.itemsize());
    bool native = byte_order != (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<');
    for (size_t i = 0; native && i < N; ++i)
        if (code == types[i]) return int(i);
    std::string names;
    for (const char* type : types) names += (names.empty() ? "" : ", ") + std::string(type);
    throw py::type_error(std::string(what) + " must be one of " + names + " (native byte order), not " +
                         std::string(py::str(dtype)));
}

constexpr const char* SOURCE_TYPES[] = {"f32", "f64", "i64"};  // native.h's Source
constexpr const char* OUT_TYPES[] = {"f32", "f64"};            // Destination
constexpr const char* LANE_TYPES[] = {"u8", "u16", "u32", "u64"};  // Lane

void require(bool condition, const char* message) {
    if (!condition) throw py::value_error(message);
}

bool contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

// A writable C-contiguous array's data.
void* output(py::array& a, const char* what) {
    if (!contiguous(a) || !a.writeable()) throw py::value_error(std::string(what) + " must be writable and C-contiguous");
    return a.mutable_data();
}

// A C-contiguous float64 array of `count` values (none: nullptr).
const double* parameters(const std::optional<py::array>& a, int64_t count, const char* what) {
    if (!a) return nullptr;
    if (!contiguous(*a) || a->dtype().kind() != 'f' || a->itemsize() != 8 || a->size() != count)
        throw py::value_error(std::string(what) + " must be C-contiguous float64, one per feature");
    return static_cast<const double*>(a->data());
}

// ---- the element loops ------------------------------------------------------------------------------

void requantize(const py::array& values, const std::optional<py::array>& scale, const std::optional<py::array>& addend,
                const std::optional<py::array>& addend_scale, py::array& out, const py::array& offset,
                double prescale, int quantization, int overflow_mode, double low, double high, bool relu) {
    const int64_t columns = offset.size();
    require(columns > 0 && contiguous(values) && values.size() % columns == 0 && out.size() == values.size(),
            "requantize maps C-contiguous values of whole rows to as many outputs");
    const int source = type_of(values, "values", SOURCE_TYPES), destination = type_of(out, "out", OUT_TYPES);
    const void* addend_data = nullptr;
    if (addend) {
        require(contiguous(*addend) && addend->size() == values.size() && addend->dtype().equal(values.dtype()),
                "the addend must be C-contiguous, with the values' size and dtype");
        addend_data = addend->data();
    }
    const double *scale_data = parameters(scale, columns, "scale"),
                 *addend_scale_data = parameters(addend_scale, columns, "addend_scale"),
                 *offset_data = parameters(offset, columns, "offset");
    void* out_data = output(out, "out");
    std::vector<double> scratch(4 * std::max(CHUNK, columns));
    py::gil_scoped_release release;
    engine->loops->requantize[source][destination](values.data(), scale_data, addend_data, addend_scale_data, out_data,
                                                   values.size() / columns, columns, offset_data, prescale,
                                                   quantization, overflow_mode, low, high, relu, scratch.data());
}

// image [n, h, w, c] → out [n, oh, ow, kh · kw · c]: each output pixel's window, zeros in the padding.
void windows(const py::array& image, py::array& out, int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w,
             int64_t pad_top, int64_t pad_left) {
    require(image.ndim() == 4 && out.ndim() == 4 && contiguous(image) && out.shape(0) == image.shape(0) &&
                out.shape(3) == kh * kw * image.shape(3),
            "windows cuts a C-contiguous image [n, h, w, c] into [n, out_h, out_w, size_h · size_w · c]");
    const int source = type_of(image, "image", SOURCE_TYPES), destination = type_of(out, "out", OUT_TYPES);
    void* out_data = output(out, "out");
    py::gil_scoped_release release;
    engine->loops->windows[source][destination](image.data(), out_data, image.shape(0), image.shape(1),
                                                image.shape(2), image.shape(3), kh, kw, stride_h, stride_w, pad_top,
                                                pad_left, out.shape(1), out.shape(2));
}

// image [n, h, w, c] (padded already) and weights (float64 [kh · kw · c, filters rounded up to 8]) →
// out [n, oh, ow, filters]: the convolution's exact sums.
void convolve(const py::array& image, const py::array& weights, py::array& out, int64_t kh, int64_t kw,
              int64_t stride_h, int64_t stride_w) {
    require(image.ndim() == 4 && out.ndim() == 4 && weights.ndim() == 2 && contiguous(image) && contiguous(weights) &&
                weights.dtype().kind() == 'f' && weights.itemsize() == 8 && out.shape(0) == image.shape(0) &&
                weights.shape(0) == kh * kw * image.shape(3) && weights.shape(1) == (out.shape(3) + 7) / 8 * 8,
            "convolve takes a C-contiguous image [n, h, w, c], float64 weights [size_h · size_w · c, filters in "
            "blocks of 8] and out [n, out_h, out_w, filters]");
    const int source = type_of(image, "image", SOURCE_TYPES), destination = type_of(out, "out", OUT_TYPES);
    void* out_data = output(out, "out");
    py::gil_scoped_release release;
    engine->loops->convolve[source][destination](image.data(), static_cast<const double*>(weights.data()), out_data,
                                                 image.shape(0), image.shape(1), image.shape(2), image.shape(3), kh,
                                                 kw, stride_h, stride_w, out.shape(1), out.shape(2), out.shape(3));
}

// Guarded (the values may lie in a client's shared memory): true when their mapping shrank under the
// read, `out` then partly written.
bool wrapped_bits(const py::array& values, py::array& out, double scale, int quantization, int width) {
    require(contiguous(values) && out.size() == values.size() && width <= 62,
            "wrapped_bits packs C-contiguous values into as many lanes of up to 62 bits");
    constexpr const char* VALUE_TYPES[] = {"f32", "f64"};
    const int source = type_of(values, "values", VALUE_TYPES), lane = type_of(out, "out", LANE_TYPES);
    void* out_data = output(out, "out");
    const WrappedBits loop = engine->loops->wrapped_bits[source][lane];
    const void* in = values.data();
    const int64_t n = values.size();
    py::gil_scoped_release release;
    return guarded([&] { loop(in, out_data, n, scale, quantization, width); });
}

// Guarded (`out` may lie in a client's shared memory): true when its mapping shrank under the write,
// `out` then partly written.
bool float_from_bits(const py::array& lanes, py::array& out, double scale, int width, bool is_signed) {
    require(contiguous(lanes) && out.size() == lanes.size() && width <= 24,
            "float_from_bits unpacks C-contiguous lanes of up to 24 bits into as many floats");
    constexpr const char* FLOAT_TYPES[] = {"f32"};
    const int lane = type_of(lanes, "lanes", LANE_TYPES);
    type_of(out, "out", FLOAT_TYPES);
    float* out_data = static_cast<float*>(output(out, "out"));
    const FloatFromBits loop = engine->loops->float_from_bits[lane];
    const void* in = lanes.data();
    const int64_t n = lanes.size();
    py::gil_scoped_release release;
    return guarded([&] { loop(in, out_data, n, scale, width, is_signed); });
}

// ---- the whole-network pass -------------------------------------------------------------------------

// A network from host/emulator/compiled.py's description, its steps prepared for the running engine.
class NetworkObject {
  public:
    // ops (int64 [ops, OP_FIELDS]), tensors (int64 [tensors, 2]: layout, features), and the constants
    // (int64) the ops index.
    NetworkObject(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& ops,
                  const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& tensors,
                  const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& constants) {
        constexpr int64_t FIELDS = sizeof(Op) / sizeof(int64_t);
        require(ops.ndim() == 2 && ops.shape(1) == FIELDS && tensors.ndim() == 2 && tensors.shape(1) == 2,
                "a network is ops [ops, OP_FIELDS] and tensors [tensors, 2] of int64");
        const int64_t* tensor_rows = tensors.data();
        for (int64_t t = 0; t < tensors.shape(0); ++t) {
            int64_t layout = tensor_rows[2 * t], features = tensor_rows[2 * t + 1];
            int64_t bytes = layout == PAIRS16 ? (features + 1) / 2 * BLOCK * 4 : features * BLOCK * 8;
            tensors_.push_back({layout, features, network_.scratch_bytes});
            network_.scratch_bytes += (bytes + 63) / 64 * 64;
        }
        network_.widest = 1;
        owned_.resize(ops.shape(0));
        for (int64_t i = 0; i < ops.shape(0); ++i) {
            Op op;
            std::memcpy(&op, ops.data() + i * FIELDS, sizeof op);
            steps_.push_back(prepare(op, constants.data(), owned_[i]));
            network_.widest = std::max({network_.widest, op.inputs, op.outputs});
        }
        network_.steps = steps_.data();
        network_.step_count = int64_t(steps_.size());
        network_.tensors = tensors_.data();
        int64_t bytes = network_.scratch_bytes + network_.widest * BLOCK * (8 + 4) + BLOCK * 8;
        network_.run_bytes = (bytes + 63) / 64 * 64;
    }

    // rows (int16 or int64 mantissas [n, inputs], C-contiguous) → out (int64 [n, outputs], C-contiguous).
    // Safe from several threads at once: each call has its own scratch.
    void run(const py::array& rows, py::array& out) const {
        constexpr const char* ROW_TYPES[] = {"i16", "i64"};
        require(rows.ndim() == 2 && contiguous(rows), "the network reads C-contiguous int16 or int64 rows");
        const int type = type_of(rows, "rows", ROW_TYPES);
        constexpr const char* OUT_TYPES_[] = {"i64"};
        require(out.ndim() == 2 && out.shape(0) == rows.shape(0), "the network writes one row per input row");
        type_of(out, "out", OUT_TYPES_);
        int64_t* out_data = static_cast<int64_t*>(output(out, "out"));
        const void* in = rows.data();
        const int64_t count = rows.shape(0), in_columns = rows.shape(1), out_columns = out.shape(1);
        py::gil_scoped_release release;
        std::unique_ptr<char, decltype(&std::free)> scratch(
            static_cast<char*>(std::aligned_alloc(64, size_t(network_.run_bytes))), std::free);
        if (!scratch) throw std::bad_alloc();
        if (type == 0)
            engine->network_pass->run_i16(network_, static_cast<const int16_t*>(in), count, in_columns, out_data,
                                          out_columns, scratch.get());
        else
            engine->network_pass->run_i64(network_, static_cast<const int64_t*>(in), count, in_columns, out_data,
                                          out_columns, scratch.get());
    }

  private:
    struct Owned {  // one step's constants
        std::vector<int64_t> matrix, scale, offset;
        std::vector<int32_t> pair_weights;
        std::vector<double> scaled, shifted;
    };

    static Step prepare(const Op& op, const int64_t* constants, Owned& owned) {
        auto constant = [&](int64_t at, int64_t count, int64_t missing) {
            return at < 0 ? std::vector<int64_t>(count, missing)
                          : std::vector<int64_t>(constants + at, constants + at + count);
        };
        if (op.kind == CAST || op.kind == LOOP_DENSE) {
            if (op.matrix >= 0) owned.matrix = constant(op.matrix, op.inputs * op.outputs, 0);
            owned.scale = constant(op.scale, op.outputs, 1);
            owned.offset = constant(op.offset, op.outputs, 0);
            double unit = std::ldexp(1.0, -int(op.shift));  // exact: a power of two
            for (int64_t j = 0; j < op.outputs; ++j) {
                owned.scaled.push_back(double(owned.scale[j]) * unit);
                owned.shifted.push_back(double(owned.offset[j]) * unit);
            }
        }
        if (op.pairs) {
            int64_t count = (op.inputs + 1) / 2;
            owned.pair_weights.assign(op.outputs * count, 0);
            for (int64_t j = 0; j < op.outputs; ++j)
                for (int64_t k = 0; k < count; ++k) {
                    int64_t low = owned.matrix[2 * k * op.outputs + j];
                    int64_t high = 2 * k + 1 < op.inputs ? owned.matrix[(2 * k + 1) * op.outputs + j] : 0;
                    owned.pair_weights[j * count + k] = int32_t(uint32_t(uint16_t(low)) | uint32_t(uint16_t(high)) << 16);
                }
        }
        Step step{op,
                  owned.matrix.data(),
                  owned.pair_weights.data(),
                  owned.scale.data(),
                  owned.offset.data(),
                  owned.scaled.data(),
                  owned.shifted.data(),
                  op.width ? (int64_t(1) << op.width) - 1 : 0,
                  nullptr,
                  nullptr};
        step.op.matrix = op.matrix >= 0;
        engine->network_pass->prepare(step);
        return step;
    }

    Network network_{};
    std::vector<Tensor> tensors_;
    std::vector<Step> steps_;
    std::vector<Owned> owned_;
};

#define FAAST_OP_FIELD_NAME(name) #name,
constexpr const char* OP_FIELD_NAMES[] = {FAAST_OP_FIELDS(FAAST_OP_FIELD_NAME)};
#undef FAAST_OP_FIELD_NAME
static_assert(sizeof(OP_FIELD_NAMES) / sizeof(OP_FIELD_NAMES[0]) == sizeof(Op) / sizeof(int64_t));

}  // namespace
}  // namespace faast

PYBIND11_MODULE(_native, m) {
    using namespace faast;
    m.doc() = "faast's compiled loops and whole-network pass (host/native.cpp); host/fastpath.py wraps them.";
    engine = choose_engine();  // a refused FAAST_ISA fails the import with its message
    if (!guard_install()) throw std::runtime_error("faast's compiled loops could not install their SIGBUS guard");

    m.def("isa", [] { return std::string(engine->name); }, "The engine that runs: baseline, avx2 or avx512.");
    m.def("isas", supported_engines, "The engines this CPU runs, from the baseline up (FAAST_ISA picks one).");
    py::tuple fields(std::size(OP_FIELD_NAMES));
    for (size_t i = 0; i < std::size(OP_FIELD_NAMES); ++i) fields[i] = py::str(OP_FIELD_NAMES[i]);
    m.attr("OP_FIELDS") = fields;

    m.def("requantize", requantize, py::arg("values"), py::arg("scale"), py::arg("addend"), py::arg("addend_scale"),
          py::arg("out"), py::arg("offset"), py::arg("prescale"), py::arg("quantization"), py::arg("overflow"),
          py::arg("low"), py::arg("high"), py::arg("relu"),
          "out = relu?((values · scale + addend · addend_scale + offset) · prescale), assigned to an ap_fixed type "
          "(quantization < 0: kept exact), over rows of len(offset) features; scale, addend, addend_scale may be "
          "None.");
    m.def("windows", windows, py::arg("image"), py::arg("out"), py::arg("size_h"), py::arg("size_w"),
          py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"),
          "image [n, h, w, c] → out [n, out_h, out_w, size_h · size_w · c]: each output pixel's window.");
    m.def("convolve", convolve, py::arg("image"), py::arg("weights"), py::arg("out"), py::arg("size_h"),
          py::arg("size_w"), py::arg("stride_h"), py::arg("stride_w"),
          "A convolution's exact sums over a padded image, without copying windows.");
    m.def("wrapped_bits", wrapped_bits, py::arg("values"), py::arg("out"), py::arg("scale"), py::arg("quantization"),
          py::arg("width"),
          "Floats → the bit patterns of a wrapping type, under the SIGBUS guard: True when the values' memory "
          "vanished.");
    m.def("float_from_bits", float_from_bits, py::arg("lanes"), py::arg("out"), py::arg("scale"), py::arg("width"),
          py::arg("signed"),
          "Bit patterns → float32, under the SIGBUS guard: True when out's memory vanished.");
    py::class_<NetworkObject>(m, "Network", "A dense network for the whole-network pass (host/emulator/compiled.py).")
        .def(py::init<const py::array_t<int64_t, py::array::c_style | py::array::forcecast>&,
                      const py::array_t<int64_t, py::array::c_style | py::array::forcecast>&,
                      const py::array_t<int64_t, py::array::c_style | py::array::forcecast>&>(),
             py::arg("ops"), py::arg("tensors"), py::arg("constants"))
        .def("run", &NetworkObject::run, py::arg("rows"), py::arg("out"));
}
