"""Exact pending maps: integer arithmetic not computed yet, with bounds proving what holds it exactly.

Between two casts hls4ml's arithmetic is exact, so consecutive exact layers stay one `Linear` until
the cast, and that cast is one step. Its bounds decide the step's dtype (float32 below 2^23,
float64 below 2^52, int64 to 2^62) or that no dtype is exact (`Unsupported`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from faast.contract.errors import DeviceError
from faast.contract.fixed import FLOAT_EXACT, INT_EXACT, SINGLE_EXACT, FixedType

from .. import fastpath

SCRATCH_ELEMENTS = 1 << 20  # the largest step output kept for reuse (Scratch)

Window = tuple[Any, Any, Any]  # ((height, width), (stride_height, stride_width), ((top, bottom), (left, right)))
Tensors = dict[str, np.ndarray]  # a step's named tensors of mantissas


class Unsupported(DeviceError):
    """The kernel has a layer, type or template the emulator cannot reproduce bit for bit."""


@dataclass(frozen=True)
class Linear:
    """An exact integer map of computed tensors, not computed yet: mantissas at `fraction` equal
    `(source @ matrix) * scale + addend + offset`, each part optional (`addend` another Linear at
    the same fraction, without offset). Bounds are per feature (the last axis); `source_bound`
    bounds |source| and decides float32, float64 or int64. With `window` ((height, width), stride,
    pads) the source image is read as convolution windows (im2col, zero padded), so a padding, the
    windows and the product are one step."""

    source: str
    fraction: int
    low: np.ndarray
    high: np.ndarray
    source_bound: np.ndarray
    matrix: np.ndarray | None = None
    scale: np.ndarray | float | None = None
    offset: np.ndarray | float = 0.0
    window: Window | None = None
    addend: Linear | None = None

    @classmethod
    def of(cls, source, fraction, low, high):
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        return cls(source, fraction, low, high, np.maximum(np.abs(low), np.abs(high)))

    @property
    def is_identity(self):
        return self.is_arithmetic_free and self.window is None

    @property
    def is_arithmetic_free(self):
        return self.matrix is None and self.scale is None and self.addend is None and np.all(self.offset == 0)

    @property
    def padding(self):
        """The pads when this is just its source image zero padded, else None."""
        if self.window and self.window[:2] == ((1, 1), (1, 1)) and self.is_arithmetic_free:
            return self.window[2]
        return None

    def shifted(self, bits):
        """The same values with `bits` more fraction bits (mantissas × 2^bits, exact)."""
        if bits == 0:
            return self
        factor = 2.0**bits
        return replace(
            self,
            fraction=self.fraction + bits,
            low=self.low * factor,
            high=self.high * factor,
            scale=factor if self.scale is None else self.scale * factor,
            offset=self.offset * factor,
            addend=None if self.addend is None else self.addend.shifted(bits),
        )

    def times_matrix(self, weights, weight_fraction):
        """(this) @ weights: the exact products and sums of a dense layer (without an addend)."""
        if self.addend is not None:
            raise ValueError("a sum of two tensors is materialized before a matrix product")
        low, high = _interval_matmul(self.low, self.high, weights)
        scale = np.broadcast_to(1.0 if self.scale is None else self.scale, self.low.shape)
        matrix = scale[:, None] * weights if self.matrix is None else (self.matrix * scale) @ weights
        return replace(
            self,
            fraction=self.fraction + weight_fraction,
            low=low,
            high=high,
            matrix=matrix,
            scale=None,
            offset=np.broadcast_to(self.offset, self.low.shape) @ weights,
        )

    def times(self, factors, factor_fraction):
        """(this) * factors per feature: exact elementwise products."""
        candidates = np.stack([self.low * factors, self.high * factors])
        return replace(
            self,
            fraction=self.fraction + factor_fraction,
            low=candidates.min(0),
            high=candidates.max(0),
            scale=factors if self.scale is None else self.scale * factors,
            offset=self.offset * factors,
            addend=None if self.addend is None else self.addend.times(factors, factor_fraction),
        )

    def plus(self, values, value_fraction):
        """(this) + values (mantissas at `value_fraction`), exact: at the finer of the two fractions."""
        this = self.shifted(max(0, value_fraction - self.fraction))
        values = values * 2.0 ** (this.fraction - value_fraction)
        return replace(this, low=this.low + values, high=this.high + values, offset=this.offset + values)

    def plus_map(self, other, sign=1):
        """(this) + sign · other, both at this fraction and without addends: one step when computed."""
        assert self.fraction == other.fraction and self.addend is None and other.addend is None
        if sign < 0:
            other = other.times(-1.0, 0)
        low, high = self.low + other.low, self.high + other.high
        return replace(self, low=low, high=high, offset=self.offset + other.offset, addend=replace(other, offset=0.0))

    def product_bound(self):
        """Per feature, a bound on |source @ matrix| and its partial sums."""
        return self.source_bound if self.matrix is None else self.source_bound @ np.abs(self.matrix)

    def terms(self):
        """Per feature, a bound on every partial sum before the offset."""
        terms = self.product_bound() * np.abs(1.0 if self.scale is None else self.scale)
        return terms if self.addend is None else terms + self.addend.terms()

    def exact_bound(self):
        """A bound on every partial sum the computation makes, in mantissas."""
        return float(np.max(self.terms() + np.abs(self.offset)))

    def compiled(
        self, fixed: FixedType | None = None, relu: bool = False, single: bool = True
    ) -> Callable[[Tensors], np.ndarray]:
        """A function tensors → a new array of these mantissas or, given `fixed`, of their C++
        assignment to that type (after a ReLU if `relu`): at most a matrix product per source, then
        one exact pass of fastpath.Requantize. float32 where values stay below 2^23 (if `single`),
        float64 below 2^52; beyond, int64 in numpy."""
        bound, features = self.exact_bound(), len(self.low)
        prescale = 2.0 ** (fixed.fraction - self.fraction) if fixed else 1.0
        if bound * max(prescale, 1.0) >= FLOAT_EXACT:
            return self._compiled_int64(fixed, relu)
        result_bound = bound if fixed is None else max(-fixed.lowest, fixed.highest)
        result_dtype = np.float32 if single and result_bound < SINGLE_EXACT else np.float64
        products = [self._product(single)] + ([] if self.addend is None else [self.addend._product(single)])
        finish = fastpath.Requantize(
            features, self.offset, prescale, self.scale, relu, fixed, None if self.addend is None else self.addend.scale
        )
        scratch = Scratch()

        def compute(tensors):
            values, fresh = products[0](tensors)
            addend = products[1](tensors)[0] if len(products) > 1 else None
            if addend is not None and addend.dtype != values.dtype:  # the sum in float64, exact
                values, addend, fresh = values.astype(np.float64), addend.astype(np.float64), True
            return finish(
                values,
                values if fresh and values.dtype == result_dtype else scratch(values.shape, result_dtype),
                addend,
            )

        return compute

    def _product(self, single):
        """A function tensors → (source @ matrix, whether that is a new array): float32 where its every
        partial sum stays below 2^23 (if `single`), else float64; the source itself without a matrix."""
        dtype = np.float32 if single and np.max(self.product_bound()) < SINGLE_EXACT else np.float64
        if self.matrix is not None and self.window is not None and _few_channels(self):
            convolve, source = fastpath.Convolve(self.matrix, *self.window), self.source
            return lambda tensors: (convolve(tensors[source], dtype), True)
        read = self._reader(dtype)
        if self.matrix is None:
            return lambda tensors: (read(tensors), self.window is not None)
        matrix, scratch = self.matrix.astype(dtype), Scratch()

        def product(tensors):
            values = read(tensors).astype(dtype, copy=False)
            return np.matmul(values, matrix, out=scratch(values.shape[:-1] + matrix.shape[1:], dtype)), True

        return product

    def _reader(self, dtype):
        """A function tensors → the source values (through the windows, in `dtype` where exact)."""
        source, window = self.source, self.window
        if window is None:
            return lambda tensors: tensors[source]
        bound = np.max(self.source_bound)
        if bound >= FLOAT_EXACT:
            raise Unsupported(f"values up to 2^{np.log2(bound):.0f} are beyond the compiled windows' 2^52")
        dtype = np.float32 if dtype == np.float32 and bound < SINGLE_EXACT else np.float64
        return lambda tensors: fastpath.windows(tensors[source], *window, dtype)

    def _compiled_int64(self, fixed, relu):
        """compiled() beyond float64's exact range: int64 in numpy, to 2^62."""
        widened = 2.0 ** max(fixed.fraction - self.fraction, 0) if fixed else 1.0
        if self.exact_bound() * widened >= INT_EXACT:
            raise Unsupported(f"values up to 2^{np.log2(self.exact_bound() * widened):.0f} need more than 62 bits")
        parts = [self] + ([] if self.addend is None else [self.addend])
        fraction, offset = self.fraction, np.asarray(self.offset).astype(np.int64)

        def part(linear):
            read = linear._reader(np.float64)
            matrix = None if linear.matrix is None else linear.matrix.astype(np.int64)
            scale = np.asarray(1.0 if linear.scale is None else linear.scale).astype(np.int64)

            def value(tensors):
                values = read(tensors).astype(np.int64)
                return (values if matrix is None else values @ matrix) * scale

            return value

        evaluators = [part(linear) for linear in parts]

        def compute(tensors):
            result = sum(evaluate(tensors) for evaluate in evaluators) + offset
            if fixed is None:
                return result
            if relu:
                np.maximum(result, 0, out=result)
            return fixed.requantize(result, fraction)

        return compute


class Scratch:
    """One step's output arrays, reused from chunk to chunk of a run (a compute unit runs its own
    program): fresh arrays of a few hundred kB each cost page faults that rival the arithmetic.
    Arrays beyond SCRATCH_ELEMENTS are allocated afresh, so memory stays bounded."""

    def __init__(self):
        self.arrays = {}

    def __call__(self, shape, dtype):
        key = (shape, dtype)
        array = self.arrays.get(key)
        if array is None:
            array = np.empty(shape, dtype)
            if array.size <= SCRATCH_ELEMENTS:
                self.arrays[key] = array
        return array


def _few_channels(patches):
    """Whether a convolution is computed directly rather than as windows times a matrix: with few
    input channels and filters (a stem) the windows' product is slower (bench/emulator.py)."""
    (height, width), _, _ = patches.window
    channels, filters = len(patches.matrix) // (height * width), patches.matrix.shape[1]
    return channels < 8 and filters <= 32 and np.max(patches.source_bound) < FLOAT_EXACT


def _interval_matmul(low, high, weights):
    positive, negative = np.maximum(weights, 0), np.minimum(weights, 0)
    return low @ positive + high @ negative, high @ positive + low @ negative
