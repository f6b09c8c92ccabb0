"""numpy-facing wrappers of fastpath.cpp, the host's compiled loops (built by setup.py at install).

The emulator's take float32, float64 or int64 mantissas and write float32 or float64 ones; the
caller proves every value exact in them (host/emulator.py's bounds). `wrapped_bits` packs inputs.
"""

import ctypes
from pathlib import Path

import numpy as np

from .fixed import OVERFLOW, QUANTIZATION

_LIBRARY = ctypes.CDLL(str(Path(__file__).with_name("libfastpath.so")))
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
for _in in ("f32", "f64", "i64"):
    for _out in ("f32", "f64"):
        getattr(_LIBRARY, f"requantize_{_in}_{_out}").argtypes = [
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
        getattr(_LIBRARY, f"windows_{_in}_{_out}").argtypes = [_POINTER, _POINTER] + [_INT] * 12
        getattr(_LIBRARY, f"convolve_{_in}_{_out}").argtypes = [_POINTER, _POINTER, _POINTER] + [_INT] * 11
for _in in ("f32", "f64"):
    for _lane in ("u8", "u16", "u32", "u64"):
        getattr(_LIBRARY, f"wrapped_bits_{_in}_{_lane}").argtypes = [
            _POINTER,
            _POINTER,
            _INT,
            _DOUBLE,
            ctypes.c_int,
            ctypes.c_int,
        ]


_FUNCTIONS = {}


def _function(name, source, out):
    key = (name, source.dtype, out.dtype)
    if key not in _FUNCTIONS:
        _FUNCTIONS[key] = getattr(_LIBRARY, f"{name}_{_CODES[source.dtype]}_{_CODES[out.dtype]}")
    return _FUNCTIONS[key]


class Requantize:
    """(values, addend) → relu?((values * scale + addend * addend_scale + offset) * prescale), assigned
    to `fixed` as C++ does (kept exact without one), over `features` values per row (the last axis;
    scales and offset per feature; no addend: 0). Prepared once per emulator step."""

    def __init__(self, features, offset, prescale=1.0, scale=None, relu=False, fixed=None, addend_scale=None):
        self.features = features
        # Parameters as C pointers once (the arrays kept alive here): the emulator calls this for
        # every step of every chunk, where microseconds of argument handling add up.
        self.offset, self.scale, self.addend_scale = (
            None if p is None else _per_feature(p, features) for p in (offset, scale, addend_scale)
        )
        self.pointers = [None if p is None else p.ctypes.data for p in (self.scale, self.addend_scale, self.offset)]
        self.mode = [prescale, -1, 0, 0.0, 0.0, int(relu)]  # prescale, quantization, overflow, low, high, relu
        if fixed is not None:
            low = -fixed.highest if fixed.overflow == "SAT_SYM" and fixed.signed else fixed.lowest
            self.mode[1:5] = QUANTIZATION.index(fixed.quantization), OVERFLOW.index(fixed.overflow), low, fixed.highest

    def __call__(self, values, out, addend=None):
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


def _per_feature(parameter, count):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(parameter, np.float64), (count,)))


def wrapped_bits(values, fixed, out):
    """Floats (float32 or float64) → `out` (unsigned lanes of at least fixed.width bits): the bit
    patterns of a wrapping type of up to 62 bits, as C++ assignment gives (FixedType.to_bits)."""
    values = np.ascontiguousarray(values)
    if fixed.overflow != "WRAP" or fixed.width > 62 or out.shape != values.shape or not out.flags.c_contiguous:
        raise ValueError("wrapped_bits packs a wrapping type of up to 62 bits into lanes of the values' shape")
    _function("wrapped_bits", values, out)(
        values.ctypes.data,
        out.ctypes.data,
        values.size,
        2.0**fixed.fraction,
        QUANTIZATION.index(fixed.quantization),
        fixed.width,
    )
    return out


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

    def __init__(self, weights, size, stride, pads):
        self.filters = weights.shape[1]
        self.weights = np.zeros((len(weights), -(-self.filters // 8) * 8))  # 8-filter blocks
        self.weights[:, : self.filters] = weights
        self.size, self.stride, self.pads = size, stride, pads

    def __call__(self, image, dtype):
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


def windows(image, size, stride, pads, dtype):
    """image [n, h, w, c] → [n, out_h, out_w, size_h * size_w * c] in `dtype`: each output pixel's
    window (rows, then columns, then channels), zeros in the padding."""
    image = np.ascontiguousarray(image)
    n, out_h, out_w = _output_size(image, size, stride, pads)
    out = np.empty((n, out_h, out_w, size[0] * size[1] * image.shape[3]), dtype)
    _function("windows", image, out)(
        image.ctypes.data, out.ctypes.data, *image.shape, *size, *stride, pads[0][0], pads[1][0], out_h, out_w
    )
    return out
