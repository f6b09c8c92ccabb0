"""numpy-facing wrappers of faast.host._native, faast's compiled extension (host/native.cpp: the host's
compiled loops and the whole-network pass, built by setup.py at install).

The emulator's take float32, float64 or int64 mantissas and write float32 or float64 ones; the
caller proves every value exact in them (host/emulator/exact.py's bounds). `Network` runs a whole
dense network (host/emulator/compiled.py proves its bounds). `wrapped_bits` packs inputs and
`float_from_bits` unpacks outputs; both survive a client's shared memory shrinking under them
(MemoryVanished instead of the SIGBUS that would end the process). The extension loads on first use:
a faast installed without it still imports, and preparing a compiled call says how to build it (a
DeviceError) instead of every import failing. It runs the fastest engine the CPU supports (`isa()`;
FAAST_ISA=baseline|avx2|avx512 forces one of `isas()`).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, NoReturn

import numpy as np

from faast.contract.errors import DeviceError, MemoryVanished
from faast.contract.fixed import FixedType, Overflow
from faast.contract.memory import ClientMemory

_MODULE = "faast.host._native"


@functools.cache
def _native() -> Any:
    """The extension, imported once; a DeviceError naming the fix when it is missing or cannot be loaded
    (not cached: a reinstall is picked up), or naming the choices when FAAST_ISA asks for a path this
    CPU lacks."""
    try:
        return importlib.import_module(_MODULE)
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and error.name == _MODULE:
            _missing(f"faast's compiled extension {_MODULE} is missing")
        if str(error).startswith("FAAST_ISA="):
            _fail(str(error))
        _missing(f"faast's compiled extension {_MODULE} cannot be loaded ({error})")


def _fail(problem: str) -> NoReturn:
    raise DeviceError(problem) from None


def _missing(problem: str) -> NoReturn:
    _fail(f"{problem}: reinstall faast with `pip install .`, which builds it with a C++ compiler")


def isa() -> str:
    """The engine the compiled code runs: baseline, avx2 or avx512 (FAAST_ISA forces one)."""
    return _native().isa()


def isas() -> list[str]:
    """The engines this CPU runs, from the baseline up: what FAAST_ISA may name."""
    return _native().isas()


def op_fields() -> tuple[str, ...]:
    """network_pass's Op, field by field: the columns of Network's ops."""
    return _native().OP_FIELDS


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
        # A missing extension fails where the emulator prepares its steps (device open), not mid-run.
        self._requantize = _native().requantize
        self.features = features
        # Parameters as arrays once: the emulator calls this for every step of every chunk, where
        # microseconds of argument handling add up.
        self.offset, self.scale, self.addend_scale = (
            None if p is None else _per_feature(p, features) for p in (offset, scale, addend_scale)
        )
        self.mode = [prescale, -1, 0, 0.0, 0.0, bool(relu)]  # prescale, quantization, overflow, low, high, relu
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
        self._requantize(values, self.scale, addend, self.addend_scale, out, self.offset, *self.mode)
        return out


class Network:
    """A network compiled for network_pass.cpp from host/emulator/compiled.py's description: ops (int64
    [ops, op_fields()]), tensors (int64 [tensors, 2]: layout, features) and the constants the ops index."""

    def __init__(self, ops: np.ndarray, tensors: np.ndarray, constants: np.ndarray):
        self.network = _native().Network(*(np.ascontiguousarray(a, np.int64) for a in (ops, tensors, constants)))

    def __call__(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """rows (int16 or int64 mantissas [n, inputs], C-contiguous) → out (int64 [n, outputs], C-contiguous)."""
        if rows.dtype not in (np.int16, np.int64) or not rows.flags.c_contiguous or rows.ndim != 2:
            raise ValueError("the network reads C-contiguous int16 or int64 rows")
        if out.dtype != np.int64 or not out.flags.c_contiguous or out.ndim != 2 or len(out) != len(rows):
            raise ValueError("the network writes C-contiguous int64 rows, one per input row")
        self.network.run(rows, out)
        return out


def _per_feature(parameter, count):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(parameter, np.float64), (count,)))


def wrapped_bits(values: np.ndarray | ClientMemory, fixed: FixedType, out: np.ndarray) -> np.ndarray:
    """Floats (float32 or float64) → `out` (unsigned lanes of at least fixed.width bits): the bit
    patterns of a wrapping type of up to 62 bits, as C++ assignment gives (FixedType.to_bits). A
    client's memory (or C-contiguous values) is read where it lies, under the guard: MemoryVanished if
    it goes."""
    values = _guarded(values)
    wrapping = fixed.overflow is Overflow.WRAP and fixed.width <= 62
    if not wrapping or out.shape != values.shape or not out.flags.c_contiguous:
        raise ValueError("wrapped_bits packs a wrapping type of up to 62 bits into lanes of the values' shape")
    vanished = _native().wrapped_bits(values, out, 2.0**fixed.fraction, fixed.quantization.value, fixed.width)
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
    vanished = _native().float_from_bits(bits, out, 2.0**-fixed.fraction, fixed.width, fixed.signed)
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
        self._convolve = _native().convolve
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
        self._convolve(image, self.weights, out, *self.size, *self.stride)
        return out


def windows(image: np.ndarray, size, stride, pads, dtype) -> np.ndarray:
    """image [n, h, w, c] → [n, out_h, out_w, size_h * size_w * c] in `dtype`: each output pixel's
    window (rows, then columns, then channels), zeros in the padding."""
    image = np.ascontiguousarray(image)
    n, out_h, out_w = _output_size(image, size, stride, pads)
    out = np.empty((n, out_h, out_w, size[0] * size[1] * image.shape[3]), dtype)
    _native().windows(image, out, *size, *stride, pads[0][0], pads[1][0])
    return out
