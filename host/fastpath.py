"""numpy-facing wrappers of fastpath.cpp and network_pass.cpp, the host's compiled loops (built by
setup.py at install into one library).

The emulator's take float32, float64 or int64 mantissas and write float32 or float64 ones; the
caller proves every value exact in them (host/emulator/exact.py's bounds). `Network` runs a whole
dense network (host/emulator/compiled.py proves its bounds). `wrapped_bits` packs inputs and
`float_from_bits` unpacks outputs; both survive a client's shared memory shrinking under them
(MemoryVanished instead of the SIGBUS that would end the process). The library loads on first use:
a faast installed without it still imports, and preparing a compiled call says how to build it (a
DeviceError) instead of every import failing with an OSError.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from faast.contract.errors import DeviceError, MemoryVanished
from faast.contract.fixed import FixedType, Overflow
from faast.contract.memory import ClientMemory

_LIBRARY_PATH = Path(__file__).with_name("libfastpath.so")
_CODES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.int64): "i64",
    np.dtype(np.uint8): "u8",
    np.dtype(np.uint16): "u16",
    np.dtype(np.uint32): "u32",
    np.dtype(np.uint64): "u64",
}
_INT, _DOUBLE, _POINTER = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p


@functools.cache
def _library() -> ctypes.CDLL:
    """libfastpath.so with its functions' signatures, loaded once; a DeviceError naming the fix when
    it is missing or cannot be loaded (not cached: a reinstall is picked up)."""
    if not _LIBRARY_PATH.exists():
        _missing(f"faast's compiled loops {_LIBRARY_PATH} are missing")
    try:
        library = ctypes.CDLL(str(_LIBRARY_PATH))
    except OSError as error:
        _missing(f"faast's compiled loops {_LIBRARY_PATH} cannot be loaded ({error})")
    for source in ("f32", "f64", "i64"):
        for out in ("f32", "f64"):
            getattr(library, f"requantize_{source}_{out}").argtypes = [
                _POINTER,
                _POINTER,
                _POINTER,
                _POINTER,
                _POINTER,
                _INT,
                _INT,
                _POINTER,
                _DOUBLE,
                ctypes.c_int,
                ctypes.c_int,
                _DOUBLE,
                _DOUBLE,
                ctypes.c_int,
            ]
            getattr(library, f"windows_{source}_{out}").argtypes = [_POINTER, _POINTER] + [_INT] * 12
            getattr(library, f"convolve_{source}_{out}").argtypes = [_POINTER, _POINTER, _POINTER] + [_INT] * 11
    for source in ("f32", "f64"):
        for lane in ("u8", "u16", "u32", "u64"):
            function = getattr(library, f"wrapped_bits_{source}_{lane}")
            function.argtypes = [_POINTER, _POINTER, _INT, _DOUBLE, ctypes.c_int, ctypes.c_int]
            function.restype = ctypes.c_int
    for lane in ("u8", "u16", "u32", "u64"):
        function = getattr(library, f"float_from_bits_{lane}_f32")
        function.argtypes = [_POINTER, _POINTER, _INT, _DOUBLE, ctypes.c_int, ctypes.c_int]
        function.restype = ctypes.c_int
    if library.guard_install() != 0:
        _missing(f"faast's compiled loops {_LIBRARY_PATH} could not install their SIGBUS guard")
    library.network_create.argtypes = [_POINTER, _INT, _POINTER, _INT, _POINTER]
    library.network_create.restype = _POINTER
    library.network_destroy.argtypes = [_POINTER]
    for rows in ("i16", "i64"):
        getattr(library, f"network_run_{rows}").argtypes = [_POINTER, _POINTER, _INT, _INT, _POINTER, _INT]
    return library


def _missing(problem: str) -> NoReturn:
    raise DeviceError(
        f"{problem}: reinstall faast with `pip install .`, which builds libfastpath.so with g++"
    ) from None


_FUNCTIONS: dict[tuple[str, np.dtype, np.dtype], Callable[..., Any]] = {}


def _function(name: str, source: np.ndarray, out: np.ndarray) -> Callable[..., Any]:
    key = (name, source.dtype, out.dtype)
    if key not in _FUNCTIONS:
        _FUNCTIONS[key] = getattr(_library(), f"{name}_{_CODES[source.dtype]}_{_CODES[out.dtype]}")
    return _FUNCTIONS[key]


class Requantize:
    """(values, addend) → relu?((values * scale + addend * addend_scale + offset) * prescale), assigned
    to `fixed` as C++ does (kept exact without one), over `features` values per row (the last axis;
    scales and offset per feature; no addend: 0). Prepared once per emulator step."""

    def __init__(
        self,
        features: int,
        offset,
        prescale: float = 1.0,
        scale=None,
        relu: bool = False,
        fixed: FixedType | None = None,
        addend_scale=None,
    ):
        _library()  # a missing library fails where the emulator prepares its steps (device open), not mid-run
        self.features = features
        # Parameters as C pointers once (the arrays kept alive here): the emulator calls this for
        # every step of every chunk, where microseconds of argument handling add up.
        self.offset, self.scale, self.addend_scale = (
            None if p is None else _per_feature(p, features) for p in (offset, scale, addend_scale)
        )
        self.pointers = [None if p is None else p.ctypes.data for p in (self.scale, self.addend_scale, self.offset)]
        self.mode = [prescale, -1, 0, 0.0, 0.0, int(relu)]  # prescale, quantization, overflow, low, high, relu
        if fixed is not None:
            low = -fixed.highest if fixed.overflow is Overflow.SAT_SYM and fixed.signed else fixed.lowest
            self.mode[1:5] = fixed.quantization.value, fixed.overflow.value, low, fixed.highest

    def __call__(self, values: np.ndarray, out: np.ndarray, addend: np.ndarray | None = None) -> np.ndarray:
        """Writes `out` (C-contiguous, values' shape; may be values itself) and returns it; an addend
        has values' shape and dtype."""
        if not values.flags.c_contiguous:
            values = np.ascontiguousarray(values)
        if not out.flags.c_contiguous or values.shape[-1] != self.features or out.shape != values.shape:
            raise ValueError(f"requantize maps arrays of {self.features} features to C-contiguous ones of their shape")
        if addend is not None:
            if addend.shape != values.shape or addend.dtype != values.dtype:
                raise ValueError("the addend must have the values' shape and dtype")
            addend = np.ascontiguousarray(addend)
        scale, addend_scale, offset = self.pointers
        _function("requantize", values, out)(
            values.ctypes.data,
            scale,
            None if addend is None else addend.ctypes.data,
            addend_scale,
            out.ctypes.data,
            values.size // self.features,
            self.features,
            offset,
            *self.mode,
        )
        return out


class Network:
    """A network compiled for network_pass.cpp from host/emulator/compiled.py's description: ops (int64
    [ops, OP_FIELDS]), tensors (int64 [tensors, 2]: layout, features) and the constants the ops index."""

    def __init__(self, ops: np.ndarray, tensors: np.ndarray, constants: np.ndarray):
        library = _library()
        arrays = [np.ascontiguousarray(a, np.int64) for a in (ops, tensors, constants)]
        self._destroy = library.network_destroy  # kept: __del__ may run while the module is torn down
        self._run = {np.dtype(np.int16): library.network_run_i16, np.dtype(np.int64): library.network_run_i64}
        self.handle = library.network_create(
            arrays[0].ctypes.data, len(ops), arrays[1].ctypes.data, len(tensors), arrays[2].ctypes.data
        )

    def __call__(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """rows (int16 or int64 mantissas [n, inputs], C-contiguous) → out (int64 [n, outputs], C-contiguous)."""
        if rows.dtype not in self._run or not rows.flags.c_contiguous or rows.ndim != 2:
            raise ValueError("the network reads C-contiguous int16 or int64 rows")
        if out.dtype != np.int64 or not out.flags.c_contiguous or out.ndim != 2 or len(out) != len(rows):
            raise ValueError("the network writes C-contiguous int64 rows, one per input row")
        self._run[rows.dtype](self.handle, rows.ctypes.data, len(rows), rows.shape[1], out.ctypes.data, out.shape[1])
        return out

    def __del__(self):
        if getattr(self, "handle", None):
            self._destroy(self.handle)


def _per_feature(parameter, count):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(parameter, np.float64), (count,)))


def wrapped_bits(values: np.ndarray | ClientMemory, fixed: FixedType, out: np.ndarray) -> np.ndarray:
    """Floats (float32 or float64) → `out` (unsigned lanes of at least fixed.width bits): the bit
    patterns of a wrapping type of up to 62 bits, as C++ assignment gives (FixedType.to_bits). A
    client's memory (or C-contiguous values) is read where it lies, under the guard: MemoryVanished if
    it goes."""
    values = _guarded(values)
    if (
        fixed.overflow is not Overflow.WRAP
        or fixed.width > 62
        or out.shape != values.shape
        or not out.flags.c_contiguous
    ):
        raise ValueError("wrapped_bits packs a wrapping type of up to 62 bits into lanes of the values' shape")
    vanished = _function("wrapped_bits", values, out)(
        values.ctypes.data,
        out.ctypes.data,
        values.size,
        2.0**fixed.fraction,
        fixed.quantization.value,
        fixed.width,
    )
    if vanished:
        raise MemoryVanished("the memory being packed was truncated under the read")
    return out


def float_from_bits(bits: np.ndarray, fixed: FixedType, into: np.ndarray | ClientMemory) -> None:
    """Bit patterns (unsigned lanes, extra high bits ignored) of a type of up to 24 bits → `into`
    (float32, as many values, in order), as FixedType.to_float(from_bits(bits)) gives. `into` (an
    array or a client's memory) is written where it lies, under the guard: MemoryVanished if it goes."""
    out = _guarded(into)
    if (
        fixed.width > 24
        or out.dtype != np.float32
        or out.size != bits.size
        or not (bits.flags.c_contiguous and out.flags.c_contiguous)
    ):
        raise ValueError("float_from_bits unpacks C-contiguous lanes of up to 24 bits into as many C-contiguous floats")
    vanished = _function("float_from_bits", bits, out)(
        bits.ctypes.data, out.ctypes.data, bits.size, 2.0**-fixed.fraction, fixed.width, int(fixed.signed)
    )
    if vanished:
        raise MemoryVanished("the memory being unpacked into was truncated under the write")


def _guarded(memory: np.ndarray | ClientMemory) -> np.ndarray:
    """The array a guarded function accesses: a client's memory as it lies (contiguous, or refused:
    a copy would read it unguarded), the host's own arrays made contiguous."""
    if isinstance(memory, ClientMemory):
        array = memory.guarded_array()
        if not array.flags.c_contiguous:
            raise ValueError("a client's memory is accessed in place, contiguous")
        return array
    return np.ascontiguousarray(memory)


def _output_size(image, size, stride, pads):
    n, h, w, _ = image.shape
    return (
        n,
        (h + pads[0][0] + pads[0][1] - size[0]) // stride[0] + 1,
        (w + pads[1][0] + pads[1][1] - size[1]) // stride[1] + 1,
    )


class Convolve:
    """image [n, h, w, c] → [n, out_h, out_w, filters]: the exact sums of a convolution with integer
    weights [size_h · size_w · c, filters], computed in float64 without copying windows."""

    def __init__(self, weights: np.ndarray, size, stride, pads):
        _library()
        self.filters = weights.shape[1]
        self.weights = np.zeros((len(weights), -(-self.filters // 8) * 8))  # 8-filter blocks
        self.weights[:, : self.filters] = weights
        self.size, self.stride, self.pads = size, stride, pads

    def __call__(self, image: np.ndarray, dtype) -> np.ndarray:
        if any(p for pair in self.pads for p in pair):
            image = windows(image, (1, 1), (1, 1), self.pads, image.dtype if image.dtype != np.int64 else np.float64)
        image = np.ascontiguousarray(image)
        n, out_h, out_w = _output_size(image, self.size, self.stride, ((0, 0), (0, 0)))
        out = np.empty((n, out_h, out_w, self.filters), dtype)
        _function("convolve", image, out)(
            image.ctypes.data,
            self.weights.ctypes.data,
            out.ctypes.data,
            *image.shape,
            *self.size,
            *self.stride,
            out_h,
            out_w,
            self.filters,
        )
        return out


def windows(image: np.ndarray, size, stride, pads, dtype) -> np.ndarray:
    """image [n, h, w, c] → [n, out_h, out_w, size_h * size_w * c] in `dtype`: each output pixel's
    window (rows, then columns, then channels), zeros in the padding."""
    image = np.ascontiguousarray(image)
    n, out_h, out_w = _output_size(image, size, stride, pads)
    out = np.empty((n, out_h, out_w, size[0] * size[1] * image.shape[3]), dtype)
    _function("windows", image, out)(
        image.ctypes.data, out.ctypes.data, *image.shape, *size, *stride, pads[0][0], pads[1][0], out_h, out_w
    )
    return out
