"""The emulator device: a built kernel's fixed-point arithmetic, exactly, vectorized over the batch.

It runs the layers `faast build` described in kernel.json, with the weights the C simulation loads
(weights.npz), on integer mantissas: every tensor has its hls4ml C++ type, and a value changes only
where the C++ code assigns it to a narrower type (quantization, then overflow). Between those casts
all arithmetic is exact, so consecutive exact layers (Dense or Conv2D, BatchNormalization, Add)
stay one pending integer map (`Linear`) until the cast, which is one step: BLAS matrix products
(float32 while every partial sum provably stays below 2^23, float64 below 2^52), then one compiled
pass (fastpath.Requantize) that scales, adds, rounds and saturates; int64 in numpy to 2^62. Where
C++ loses bits inside a layer (products truncated into a narrow accumulator, a saturating
accumulator) the emulator follows the C loops. A layer or type it cannot reproduce exactly raises
`Unsupported` when the device opens, so `device: auto` falls back to the C simulation instead of
approximating."""

import os
from dataclasses import dataclass, replace

import numpy as np

from . import fastpath
from .device import ComputeUnit, Device, DeviceBuffer, DeviceError
from .fixed import FLOAT_EXACT, INT_EXACT, SINGLE_EXACT, FixedType
from .packing import TensorLanes

STEP_ELEMENTS = 32768  # input values computed together, so a layer's intermediates stay in the CPU cache
STEP_ROWS = 16  # but at least this many rows: an image network's ~50 steps each cost ~10 µs of Python
SCRATCH_ELEMENTS = 1 << 20  # the largest step output kept for reuse (Scratch)


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
    matrix: np.ndarray = None
    scale: np.ndarray = None
    offset: np.ndarray = 0.0
    window: tuple = None
    addend: "Linear" = None

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

    def compiled(self, fixed=None, relu=False, single=True):
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

        parts = [part(linear) for linear in parts]

        def compute(tensors):
            result = sum(p(tensors) for p in parts) + offset
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


def _wide(mantissas):
    """float32 mantissas as float64 before arithmetic that may leave float32's exact range."""
    return mantissas.astype(np.float64) if mantissas.dtype == np.float32 else mantissas


def _divide(mantissas, count):
    """ap_fixed divided by an int (or an exact quotient converted to a C int): the mantissa's
    integer division, truncated toward zero."""
    quotient = np.abs(mantissas) // count
    return np.where(mantissas < 0, -quotient, quotient)


def _top_bits(fixed, mantissas, table_size):
    """The table address hls4ml slices from a value: the top log2(table_size) bits of its pattern."""
    bits = mantissas & ((1 << fixed.width) - 1)
    return bits >> (fixed.width - (table_size.bit_length() - 1))


def _interval_matmul(low, high, weights):
    positive, negative = np.maximum(weights, 0), np.minimum(weights, 0)
    return low @ positive + high @ negative, high @ positive + low @ negative


class Program:
    """kernel.json's layers → steps over named tensors of mantissas; run() executes them."""

    def __init__(self, layers, weights, input_type, output_type):
        self.steps = []
        self.weights = weights
        self.pending = {}  # tensor name → Linear
        self.input_type = input_type
        for layer in layers:
            handler = getattr(self, "_" + layer["class"].lower(), None)
            if handler is None:
                raise Unsupported(f"layer '{layer['name']}' ({layer['class']}) is not supported by the emulator")
            try:
                handler(layer)
            except (KeyError, ValueError) as error:
                raise Unsupported(f"layer '{layer['name']}' ({layer['class']}): {error}") from None
        final = self.pending[layers[-1]["outputs"][0]]
        self.output = self._materialized(final.shifted(output_type.fraction - final.fraction), "output").source

    # -- building ---------------------------------------------------------------------------------

    def _types(self, layer, *names):
        return [FixedType.parse(layer["types"][name]) for name in names]

    def _weight(self, layer, key):
        return self.weights[layer["weights"][key]]

    def _source(self, layer):
        return self.pending[layer["inputs"][0]]

    def _cast(self, value, fixed, name, relu=False):
        """Assign `value` to type `fixed` as tensor `name`: free when no bit can change, else a step."""
        low = np.maximum(value.low, 0) if relu else value.low
        if fixed.fraction >= value.fraction and not (relu and np.any(value.low < 0)):
            moved = value.shifted(fixed.fraction - value.fraction)
            if fixed.holds(np.min(moved.low), np.max(moved.high)):
                self.pending[name] = moved
                return
        compute = value.compiled(fixed, relu)
        self.steps.append(lambda tensors: tensors.__setitem__(name, compute(tensors)))
        shift = value.fraction - fixed.fraction
        factor = 2.0 ** -max(shift, 0) * 2.0 ** max(-shift, 0)
        low, high = np.floor(low * factor), np.ceil(value.high * factor)
        if fixed.overflow == "WRAP" and not fixed.holds(np.min(low), np.max(high)):
            low, high = np.full_like(low, fixed.lowest), np.full_like(high, fixed.highest)
        self.pending[name] = Linear.of(
            name, fixed.fraction, np.clip(low, fixed.lowest, fixed.highest), np.clip(high, fixed.lowest, fixed.highest)
        )

    def _input(self, layer):
        (fixed,) = self._types(layer, "result_t")
        if fixed != self.input_type:
            raise Unsupported(f"input layer type {fixed} differs from the input tensor's {self.input_type}")
        shape = layer["attributes"]["input_shape"]
        self.input_shape = tuple(shape)
        self.pending[layer["outputs"][0]] = Linear.of(
            "input", fixed.fraction, np.full(shape[-1:], fixed.lowest), np.full(shape[-1:], fixed.highest)
        )

    def _dense(self, layer):
        weights = self._weight(layer, "weight")
        if layer["attributes"].get("_weights_transposed"):  # the Resource strategy stores them [n_out, n_in]
            weights = weights.T
        value = self._source(layer)
        if value.addend is not None:
            value = self._materialized(value, layer["name"] + ".sum")
        if len(value.low) != len(weights):  # io_parallel drops Flatten: the dense layer reads the image
            value = self._flattened(value, layer["name"] + ".flat", len(weights) // len(value.low))
        self._multiply_accumulate(layer, value, weights)

    def _multiply_accumulate(self, layer, value, weights):
        """A dense layer's arithmetic (also each output pixel of a convolution): products cast to
        accum_t, accum_t(bias) plus their sum, cast to result_t."""
        accum, result, weight_type, bias_type = self._types(layer, "accum_t", "result_t", "weight_t", "bias_t")
        if layer["templates"].get("product") != "mult":
            raise Unsupported(f"product '{layer['templates'].get('product')}' is not supported")
        weights = weights.astype(np.float64)
        if "bias" in layer["weights"]:
            bias = accum.requantize(self._weight(layer, "bias"), bias_type.fraction).astype(np.float64)
        else:
            bias = np.zeros(weights.shape[1])
        product_fraction = value.fraction + weight_type.fraction
        to_accum = 2.0 ** (accum.fraction - product_fraction)
        magnitude = np.maximum(np.abs(value.low), np.abs(value.high))
        biggest_product = np.max(magnitude) * np.max(np.abs(weights)) * to_accum
        biggest_partial_sum = np.max(np.abs(bias) + magnitude @ np.abs(weights) * to_accum)
        name = layer["outputs"][0]
        if accum.fraction >= product_fraction and accum.holds(-biggest_product, biggest_product):
            summed = value.times_matrix(weights, weight_type.fraction).shifted(accum.fraction - product_fraction)
            summed = summed.plus(bias, accum.fraction)
            if not accum.holds(-biggest_partial_sum, biggest_partial_sum):
                if accum.overflow != "WRAP":
                    return self._dense_in_loop_order(layer, value, weights, bias, accum, result)
                self._cast(summed, accum, name + ".accum")
                summed = self.pending[name + ".accum"]
            self._cast(summed, result, name)
        else:
            self._dense_in_loop_order(layer, value, weights, bias, accum, result)

    def _dense_in_loop_order(self, layer, value, weights, bias, accum, result):
        """Products cast one by one into accum_t, then summed as dense_latency's loops do."""
        name = layer["outputs"][0]
        if accum.overflow != "WRAP" and layer["templates"].get("kernel") != "DenseLatency":
            raise Unsupported("saturating accumulators are emulated only in DenseLatency's summation order")
        source = self._materialized(value, name + ".in")
        weights = weights.astype(np.int64)
        bias = bias.astype(np.int64)
        product_fraction = source.fraction + FixedType.parse(layer["types"]["weight_t"]).fraction

        def dense(tensors):
            x = tensors[source.source].astype(np.int64)
            products = accum.requantize(x[..., :, None] * weights, product_fraction)
            if accum.overflow == "WRAP":
                total = accum.saturate(bias + products.sum(axis=-2))
            else:
                total = np.broadcast_to(bias, products.shape[:-2] + bias.shape)
                for i in range(products.shape[-2]):
                    total = accum.saturate(total + products[..., i, :])
            tensors[name + ".accum"] = total

        if np.max(source.source_bound) * np.max(np.abs(weights)) >= INT_EXACT:
            raise Unsupported("products need more than 62 bits")
        self.steps.append(dense)
        full = np.full(weights.shape[1], 1.0)
        self._cast(Linear.of(name + ".accum", accum.fraction, full * accum.lowest, full * accum.highest), result, name)

    def _materialized(self, value, name):
        """`value` as a computed tensor (a step when it is still a pending map)."""
        if value.is_identity:
            return value
        compute = value.compiled()  # Unsupported beyond 62 bits
        self.steps.append(lambda tensors: tensors.__setitem__(name + ".exact", compute(tensors)))
        return Linear.of(name + ".exact", value.fraction, value.low, value.high)

    def _batchnormalization(self, layer):
        result, scale_type, bias_type = self._types(layer, "result_t", "scale_t", "bias_t")
        if layer["templates"].get("product") != "mult":
            raise Unsupported(f"batch normalization product '{layer['templates'].get('product')}' is not supported")
        scale = self._weight(layer, "scale").astype(np.float64)
        bias = self._weight(layer, "bias").astype(np.float64)
        value = self._source(layer).times(scale, scale_type.fraction).plus(bias, bias_type.fraction)
        self._cast(value, result, layer["outputs"][0])

    def _activation(self, layer):
        (result,) = self._types(layer, "result_t")
        activation = layer["attributes"]["activation"].lower()
        if activation == "sigmoid":
            return self._sigmoid(layer, result)
        if activation not in ("relu", "linear"):
            raise Unsupported(f"activation '{activation}' is not supported")
        self._cast(self._source(layer), result, layer["outputs"][0], relu=activation == "relu")

    def _sigmoid(self, layer, result):
        """hls4ml's table sigmoid: index = int(x * table_size / 16) + table_size / 2 (the ap_fixed
        product and quotient are exact or truncate toward zero, as the int conversion does), clamped."""
        (table_type,) = self._types(layer, "table_t")
        table = self.weights[f"{layer['name']}.table"]
        size = len(table)
        source = self._materialized(self._source(layer), layer["name"] + ".in")
        fraction = source.fraction
        numerator, denominator = size << max(-fraction, 0), 16 << max(fraction, 0)
        if (
            np.max(source.source_bound) * numerator >= INT_EXACT
            or np.max(source.source_bound) * size / 16 * 2.0**-fraction >= 2**31
        ):
            raise Unsupported("sigmoid inputs this large overflow the C int of the table index")
        name = layer["name"] + ".looked_up"

        def sigmoid(tensors):
            x = tensors[source.source].astype(np.int64)
            index = np.clip(_divide(x * numerator, denominator) + 8 * size // 16, 0, size - 1)
            tensors[name] = table[index]

        self.steps.append(sigmoid)
        full = np.full(len(source.low), 1.0)
        self._cast(
            Linear.of(name, table_type.fraction, full * np.min(table), full * np.max(table)),
            result,
            layer["outputs"][0],
        )

    def _conv2d(self, layer):
        """Each output pixel is a dense layer over its window (im2col), with the same arithmetic."""
        attributes = layer["attributes"]
        weights = self._weight(layer, "weight")
        if attributes.get("_weights_transposed"):  # Resource strategy: [filters, height, width, channels]
            weights = weights.transpose(1, 2, 3, 0)
        height, width, channels, filters = weights.shape
        stride = (attributes["stride_height"], attributes["stride_width"])
        pads = (
            (attributes.get("pad_top", 0), attributes.get("pad_bottom", 0)),
            (attributes.get("pad_left", 0), attributes.get("pad_right", 0)),
        )
        value = self._source(layer)
        if value.padding:  # a ZeroPadding2D before: its pads join the convolution's
            pads = tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, value.padding, strict=True))
            value = replace(value, window=None)
        source = self._materialized(value, layer["name"] + ".image")
        low, high = np.minimum(source.low, 0), np.maximum(source.high, 0)  # zero padding
        patches = replace(
            Linear.of(source.source, source.fraction, np.tile(low, height * width), np.tile(high, height * width)),
            window=((height, width), stride, pads),
        )
        self._multiply_accumulate(layer, patches, weights.reshape(-1, filters))

    _pointwiseconv2d = _conv2d  # hls4ml's class for 1×1 convolutions: the same arithmetic

    def _zeropadding2d(self, layer):
        attributes = layer["attributes"]
        pads = ((attributes["pad_top"], attributes["pad_bottom"]), (attributes["pad_left"], attributes["pad_right"]))
        source = self._materialized(self._source(layer), layer["name"] + ".image")
        # 1×1 windows of the padded image are its pixels: computed where used, or joined to a convolution's
        padded = replace(
            Linear.of(source.source, source.fraction, np.minimum(source.low, 0), np.maximum(source.high, 0)),
            window=((1, 1), (1, 1), pads),
        )
        self._cast(padded, *self._types(layer, "result_t"), layer["outputs"][0])

    def _pooling2d(self, layer):
        attributes = layer["attributes"]
        accum, result = self._types(layer, "accum_t", "result_t")
        size = (attributes["pool_height"], attributes["pool_width"])
        stride = (attributes["stride_height"], attributes["stride_width"])
        if size != stride or any(attributes.get(f"pad_{side}", 0) for side in ("top", "bottom", "left", "right")):
            raise Unsupported("pooling is emulated for pool size = stride without padding")
        streamed = attributes.get("implementation") == "linebuffer"  # io_stream casts each value to accum_t first
        source = self._materialized(self._source(layer), layer["name"] + ".image")
        name = layer["name"] + ".pooled"
        average = attributes["pool_op"] == "Average"
        count = size[0] * size[1]
        self._check_sum(accum, source, count, average)

        def pool(tensors):
            image = _wide(tensors[source.source])
            n, h, w, c = image.shape
            oh, ow = h // size[0], w // size[1]
            blocks = image[:, : oh * size[0], : ow * size[1]].reshape(n, oh, size[0], ow, size[1], c)
            if average or streamed:
                blocks = accum.requantize(blocks, source.fraction)
            if average:
                tensors[name] = _divide(accum.saturate(blocks.sum(axis=(2, 4))), count)
            elif streamed:
                tensors[name] = blocks.max(axis=(2, 4))
            else:  # the maximum of the inputs, then cast to accum_t
                tensors[name] = accum.requantize(blocks.max(axis=(2, 4)), source.fraction)

        if average and not streamed and accum.fraction < source.fraction and accum.quantization != "TRN":
            raise Unsupported(f"io_parallel average pooling rounds each partial sum into {accum}")
        self.steps.append(pool)
        self._cast_whole_range(name, accum.fraction, source, accum, result, layer)

    def _globalpooling2d(self, layer):
        attributes = layer["attributes"]
        accum, result = self._types(layer, "accum_t", "result_t")
        source = self._materialized(self._source(layer), layer["name"] + ".image")
        name = layer["name"] + ".pooled"
        average = attributes["pool_op"] == "Average"
        if not average:
            raise Unsupported("global max pooling is not supported")  # its initial value is hls::numeric_limits'
        count = attributes["in_height"] * attributes["in_width"]
        self._check_sum(accum, source, count, average)

        def pool(tensors):
            values = accum.requantize(_wide(tensors[source.source]), source.fraction)
            tensors[name] = _divide(accum.saturate(values.sum(axis=(1, 2))), count)

        self.steps.append(pool)
        self._cast_whole_range(name, accum.fraction, source, accum, result, layer)

    def _check_sum(self, accum, source, count, average):
        """Sums in accum_t are emulated when they wrap (any order gives the same bits) or cannot overflow."""
        if not average or accum.overflow == "WRAP":
            return
        scale = 2.0 ** (accum.fraction - source.fraction)
        if not accum.holds(count * np.min(source.low) * scale - 1, count * np.max(source.high) * scale + 1):
            raise Unsupported(f"a saturating {accum} sum that may overflow depends on the summation order")

    def _cast_whole_range(self, name, fraction, source, accum, result, layer):
        scale = 2.0 ** (fraction - source.fraction)
        low = np.maximum(np.floor(source.low * scale), accum.lowest)
        high = np.minimum(np.ceil(source.high * scale), accum.highest)
        if accum.overflow == "WRAP" and not accum.holds(np.min(source.low) * scale, np.max(source.high) * scale):
            low, high = np.full_like(low, accum.lowest), np.full_like(high, accum.highest)
        self._cast(Linear.of(name, fraction, low, high), result, layer["outputs"][0])

    def _merge(self, layer):
        op = layer["attributes"]["op"]
        if op not in ("add", "subtract"):
            raise Unsupported(f"merge '{op}' is not supported")
        first, second = (self.pending[name] for name in layer["inputs"])
        fraction = max(first.fraction, second.fraction)
        first, second = first.shifted(fraction - first.fraction), second.shifted(fraction - second.fraction)
        # Each side stays a pending map (a convolution and its BatchNormalization): both products and
        # the sum are one step where the sum is cast.
        a = first if first.addend is None else self._materialized(first, layer["name"] + ".a")
        b = second if second.addend is None else self._materialized(second, layer["name"] + ".b")
        total = a.plus_map(b, 1 if op == "add" else -1)
        self._cast(total, *self._types(layer, "result_t"), layer["outputs"][0])

    def _clone(self, layer):
        (result,) = self._types(layer, "result_t")
        for output in layer["outputs"]:
            self._cast(self._source(layer), result, output)

    def _reshape(self, layer):
        value = self._source(layer)
        size = int(np.prod(layer["attributes"].get("target_shape", [len(value.low)])))
        flat = self._flattened(value, layer["name"] + ".flat", size // len(value.low))
        self._cast(flat, *self._types(layer, "result_t"), layer["outputs"][0])

    def _flattened(self, value, name, pixels):
        """`value` (an image) as rows of pixels × channels."""
        source = self._materialized(value, name + ".image")
        self.steps.append(
            lambda tensors: tensors.__setitem__(name, tensors[source.source].reshape(len(tensors[source.source]), -1))
        )
        return Linear.of(name, source.fraction, np.tile(source.low, pixels), np.tile(source.high, pixels))

    _flatten = _reshape

    def _softmax(self, layer):
        """hls4ml's table softmaxes from the firmware's own tables: 'stable' looks up exp(x - max),
        'latency' exp(x) (its table addressed by x's own bits); then 1/sum, and the products."""
        implementation = layer["attributes"].get("implementation")
        if implementation == "legacy":
            return self._softmax_legacy(layer)
        if implementation not in ("stable", "latency"):
            raise Unsupported(f"softmax implementation '{implementation}' is not supported")
        exp_type, accum, inv_in, inv_type, result = self._types(
            layer, "exp_table_t", "accum_t", "inv_inp_t", "inv_table_t", "result_t"
        )
        (address,) = self._types(layer, "inp_norm_t" if implementation == "stable" else "input_t")
        exp_table = self.weights[f"{layer['name']}.exp_table"]
        inv_table = self.weights[f"{layer['name']}.inv_table"]
        source = self._materialized(self._source(layer), layer["name"] + ".in")
        if implementation == "latency" and source.fraction != address.fraction:
            raise Unsupported(f"softmax input at 2^-{source.fraction}, not its type {address}'s LSB")
        entries = len(source.low)
        # The adder tree's order does not matter when the sum wraps, cannot overflow, or saturates
        # a sum of non-negative terms (once at the top, it stays there).
        order_free = accum.overflow == "WRAP" or (accum.overflow in ("SAT", "SAT_SYM") and np.min(exp_table) >= 0)
        if (
            not order_free
            and entries * np.max(np.abs(exp_table)) * 2.0 ** (accum.fraction - exp_type.fraction) >= accum.highest
        ):
            raise Unsupported(f"the softmax sum may overflow {accum}: its rounding then depends on the adder tree")
        name = layer["name"] + ".product"

        def softmax(tensors):
            x = tensors[source.source].astype(np.int64)
            if implementation == "stable":
                x = address.requantize(x.max(axis=-1, keepdims=True) - x, source.fraction)
            exps = accum.requantize(exp_table[_top_bits(address, x, len(exp_table))], exp_type.fraction)
            total = inv_in.requantize(accum.saturate(exps.sum(axis=-1, keepdims=True)), accum.fraction)
            tensors[name] = exps * inv_table[_top_bits(inv_in, total, len(inv_table))]

        self.steps.append(softmax)
        fraction = accum.fraction + inv_type.fraction
        full = np.full(entries, 1.0)
        bound = float(accum.highest) * max(abs(inv_type.lowest), inv_type.highest)
        self._cast(Linear.of(name, fraction, -bound * full, bound * full), result, layer["outputs"][0])

    def _softmax_legacy(self, layer):
        """hls4ml's 'legacy' softmax: for each output, 1 + Σ exp(x_j - x_i) from a table addressed
        by int((x_j - x_i) · size / 16) + size / 2 (ap_fixed arithmetic, then C int: truncated toward
        zero), clamped, summed in table_t; its inverse from a table addressed by int(sum · size / 64)."""
        table_type, result = self._types(layer, "table_t", "result_t")
        exp_table = self.weights[f"{layer['name']}.exp_table"]
        inv_table = self.weights[f"{layer['name']}.inv_table"]
        source = self._materialized(self._source(layer), layer["name"] + ".in")
        entries, fraction = len(source.low), source.fraction
        if not (table_type.overflow == "WRAP" or table_type.overflow in ("SAT", "SAT_SYM") and np.min(exp_table) >= 0):
            raise Unsupported(f"a {table_type} sum depends on its order")
        biggest = 2 * np.max(source.source_bound) * len(exp_table) * 2.0 ** max(-fraction, 0)
        if biggest >= INT_EXACT or biggest * 2.0 ** -max(fraction, 0) / 16 >= 2**31:
            raise Unsupported("softmax inputs this large overflow the C int of the table index")
        if table_type.fraction < 0:
            raise Unsupported(f"table type {table_type} without fraction bits")
        one = int(table_type.quantize(1.0))
        name = layer["name"] + ".inverse"

        def softmax(tensors):
            x = tensors[source.source].astype(np.int64)
            difference = (x[..., None, :] - x[..., :, None]) * (len(exp_table) << max(-fraction, 0))
            address = _divide(difference, 16 << max(fraction, 0)) + 8 * len(exp_table) // 16
            terms = exp_table[np.clip(address, 0, len(exp_table) - 1)]
            terms[..., np.arange(entries), np.arange(entries)] = one
            total = table_type.saturate(terms.sum(axis=-1))  # order-free: checked above
            address = _divide(total * len(inv_table), 64 << table_type.fraction)
            tensors[name] = inv_table[np.clip(address, 0, len(inv_table) - 1)]

        self.steps.append(softmax)
        full = np.full(entries, 1.0)
        self._cast(
            Linear.of(name, table_type.fraction, full * np.min(inv_table), full * np.max(inv_table)),
            result,
            layer["outputs"][0],
        )

    # -- running ----------------------------------------------------------------------------------

    def _input_tensor(self, mantissas):
        """Input mantissas as the steps read them: float64 when exact (BLAS-ready)."""
        exact = np.float64 if self.input_type.width <= 52 else np.int64
        return mantissas.astype(exact).reshape(-1, *self.input_shape)

    def trace(self, mantissas, names):
        """Each named tensor's values (float64 [n, ...]) for the inputs, for per-layer comparisons."""
        tensors = {"input": self._input_tensor(mantissas)}
        for step in self.steps:
            step(tensors)
        return {
            name: self.pending[name].compiled(single=False)(tensors) * 2.0 ** -self.pending[name].fraction
            for name in names
        }

    def run(self, mantissas):
        """Input mantissas (integers [n, inputs]) → output mantissas (int64 [n, outputs])."""
        outputs = []
        rows_per_step = max(STEP_ROWS, STEP_ELEMENTS // int(np.prod(self.input_shape)))
        for start in range(0, len(mantissas), rows_per_step):
            tensors = {"input": self._input_tensor(mantissas[start : start + rows_per_step])}
            for step in self.steps:
                step(tensors)
            outputs.append(tensors[self.output].reshape(len(tensors["input"]), -1).astype(np.int64))
        return np.concatenate(outputs) if outputs else np.empty((0, 0), np.int64)


class EmulatorComputeUnit(ComputeUnit):
    """One CPU core running the program on the packed buffers, exactly as the card reads and writes them."""

    def __init__(self, program, lanes_in: TensorLanes, lanes_out: TensorLanes, index):
        self.program = program
        self.lanes_in, self.lanes_out = lanes_in, lanes_out
        self.name = f"emulator{index}"

    def allocate(self, nbytes):
        return DeviceBuffer(np.zeros(nbytes, np.uint8))

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        lanes_in, lanes_out = self.lanes_in, self.lanes_out
        bits = inputs.host.view(lanes_in.lane_dtype)[: rows * lanes_in.elements_per_row]
        if lanes_in.type.width == lanes_in.lane_bits:  # the lanes are the mantissas (signed: reinterpreted)
            mantissas = bits.view(bits.dtype.str.replace("u", "i")) if lanes_in.type.signed else bits
        else:
            mantissas = lanes_in.type.from_bits(bits)
        mantissas = mantissas.reshape(rows, lanes_in.elements_per_row)
        result = self.program.run(mantissas)
        out = outputs.host[:out_bytes].view(lanes_out.lane_dtype)
        mask = (1 << lanes_out.type.width) - 1
        out[: result.size] = (result.reshape(-1) & mask).astype(lanes_out.lane_dtype)
        out[result.size :] = 0


class EmulatorDevice(Device):
    kind = "emulator"

    def __init__(self, kernel, compute_units=None):
        layout = kernel.layout
        count = compute_units or os.cpu_count() or 1
        # A program per compute unit: its steps reuse their output arrays (Scratch).
        super().__init__(
            kernel, [EmulatorComputeUnit(load_program(kernel), layout.input, layout.output, i) for i in range(count)]
        )

    @staticmethod
    def available():
        return True, "the emulator needs no card"


def load_program(kernel):
    """The emulator program of a built kernel; `Unsupported` when it cannot be exact."""
    path = kernel.folder / "weights.npz"
    if not path.exists():
        raise DeviceError(f"{path} is missing: rebuild the model with `faast build`")
    with np.load(path) as archive:
        weights = {name: values.astype(np.int64) for name, values in archive.items()}  # stored narrow
    layout = kernel.layout
    return Program(kernel.raw["layers"], weights, layout.input.type, layout.output.type)


DRIVER = EmulatorDevice
