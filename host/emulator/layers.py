"""The layer handlers: each turns one kernel.json layer into pending exact maps and steps of a Program.

HANDLERS names every hls4ml layer class the emulator runs, aliases included, so the supported layers
are a table (the README lists the same classes, and a test holds both to it); a class missing here
makes the kernel `Unsupported`. A handler raises `Unsupported` for what it cannot reproduce exactly;
a KeyError or ValueError (a missing attribute, an unknown type) becomes `Unsupported` in Program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from faast.contract.fixed import INT_EXACT, Overflow, Quantization
from faast.contract.kernel import Layer

from .exact import Linear, Unsupported

if TYPE_CHECKING:
    from .program import Program


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


def input_layer(program: Program, layer: Layer):
    tensor, kernel_type = program.input_tensor(layer.variables[0])
    (fixed,) = program.types(layer, "result_t")
    if fixed != kernel_type:
        raise Unsupported(f"input layer type {fixed} differs from the input tensor's {kernel_type}")
    shape = layer.integers("input_shape")
    program.input_shapes[tensor] = tuple(shape)
    program.pending[layer.outputs[0]] = Linear.of(
        tensor, fixed.fraction, np.full(shape[-1:], fixed.lowest), np.full(shape[-1:], fixed.highest)
    )


def dense(program: Program, layer: Layer):
    weights = program.weight(layer, "weight")
    if layer.flag("_weights_transposed", False):  # the Resource strategy stores them [n_out, n_in]
        weights = weights.T
    value = program.source(layer)
    if value.addend is not None:
        value = program.materialized(value, layer.name + ".sum")
    if len(value.low) != len(weights):  # io_parallel drops Flatten: the dense layer reads the image
        value = _flattened(program, value, layer.name + ".flat", len(weights) // len(value.low))
    _multiply_accumulate(program, layer, value, weights)


def _multiply_accumulate(program: Program, layer: Layer, value, weights):
    """A dense layer's arithmetic (also each output pixel of a convolution): products cast to
    accum_t, accum_t(bias) plus their sum, cast to result_t."""
    accum, result, weight_type, bias_type = program.types(layer, "accum_t", "result_t", "weight_t", "bias_t")
    if layer.templates.get("product") != "mult":
        raise Unsupported(f"product '{layer.templates.get('product')}' is not supported")
    weights = weights.astype(np.float64)
    if "bias" in layer.weights:
        bias = accum.requantize(program.weight(layer, "bias"), bias_type.fraction).astype(np.float64)
    else:
        bias = np.zeros(weights.shape[1])
    product_fraction = value.fraction + weight_type.fraction
    to_accum = 2.0 ** (accum.fraction - product_fraction)
    magnitude = np.maximum(np.abs(value.low), np.abs(value.high))
    biggest_product = np.max(magnitude) * np.max(np.abs(weights)) * to_accum
    biggest_partial_sum = np.max(np.abs(bias) + magnitude @ np.abs(weights) * to_accum)
    name = layer.outputs[0]
    if accum.fraction >= product_fraction and accum.holds(-biggest_product, biggest_product):
        summed = value.times_matrix(weights, weight_type.fraction).shifted(accum.fraction - product_fraction)
        summed = summed.plus(bias, accum.fraction)
        if not accum.holds(-biggest_partial_sum, biggest_partial_sum):
            if accum.overflow is not Overflow.WRAP:
                return _dense_in_loop_order(program, layer, value, weights, bias, accum, result)
            program.cast(summed, accum, name + ".accum")
            summed = program.pending[name + ".accum"]
        program.cast(summed, result, name)
    else:
        _dense_in_loop_order(program, layer, value, weights, bias, accum, result)


def _dense_in_loop_order(program: Program, layer: Layer, value, weights, bias, accum, result):
    """Products cast one by one into accum_t, then summed as dense_latency's loops do."""
    name = layer.outputs[0]
    if accum.overflow is not Overflow.WRAP and layer.templates.get("kernel") != "DenseLatency":
        raise Unsupported("saturating accumulators are emulated only in DenseLatency's summation order")
    source = program.materialized(value, name + ".in")
    weights = weights.astype(np.int64)
    bias = bias.astype(np.int64)
    product_fraction = source.fraction + layer.type("weight_t").fraction

    def dense(tensors):
        x = tensors[source.source].astype(np.int64)
        products = accum.requantize(x[..., :, None] * weights, product_fraction)
        if accum.overflow is Overflow.WRAP:
            total = accum.saturate(bias + products.sum(axis=-2))
        else:
            total = np.broadcast_to(bias, products.shape[:-2] + bias.shape)
            for i in range(products.shape[-2]):
                total = accum.saturate(total + products[..., i, :])
        tensors[name + ".accum"] = total

    if np.max(source.source_bound) * np.max(np.abs(weights)) >= INT_EXACT:
        raise Unsupported("products need more than 62 bits")
    program.steps.append(dense)
    full = np.full(weights.shape[1], 1.0)
    program.cast(Linear.of(name + ".accum", accum.fraction, full * accum.lowest, full * accum.highest), result, name)


def batch_normalization(program: Program, layer: Layer):
    result, scale_type, bias_type = program.types(layer, "result_t", "scale_t", "bias_t")
    if layer.templates.get("product") != "mult":
        raise Unsupported(f"batch normalization product '{layer.templates.get('product')}' is not supported")
    scale = program.weight(layer, "scale").astype(np.float64)
    bias = program.weight(layer, "bias").astype(np.float64)
    value = program.source(layer).times(scale, scale_type.fraction).plus(bias, bias_type.fraction)
    program.cast(value, result, layer.outputs[0])


def activation(program: Program, layer: Layer):
    (result,) = program.types(layer, "result_t")
    activation = layer.text("activation").lower()
    if activation == "sigmoid":
        return _sigmoid(program, layer, result)
    if activation not in ("relu", "linear"):
        raise Unsupported(f"activation '{activation}' is not supported")
    program.cast(program.source(layer), result, layer.outputs[0], relu=activation == "relu")


def _sigmoid(program: Program, layer: Layer, result):
    """hls4ml's table sigmoid: index = int(x * table_size / 16) + table_size / 2 (the ap_fixed
    product and quotient are exact or truncate toward zero, as the int conversion does), clamped."""
    (table_type,) = program.types(layer, "table_t")
    table = program.weights[f"{layer.name}.table"]
    size = len(table)
    source = program.materialized(program.source(layer), layer.name + ".in")
    fraction = source.fraction
    numerator, denominator = size << max(-fraction, 0), 16 << max(fraction, 0)
    if (
        np.max(source.source_bound) * numerator >= INT_EXACT
        or np.max(source.source_bound) * size / 16 * 2.0**-fraction >= 2**31
    ):
        raise Unsupported("sigmoid inputs this large overflow the C int of the table index")
    name = layer.name + ".looked_up"

    def sigmoid(tensors):
        x = tensors[source.source].astype(np.int64)
        index = np.clip(_divide(x * numerator, denominator) + 8 * size // 16, 0, size - 1)
        tensors[name] = table[index]

    program.steps.append(sigmoid)
    full = np.full(len(source.low), 1.0)
    program.cast(
        Linear.of(name, table_type.fraction, full * np.min(table), full * np.max(table)),
        result,
        layer.outputs[0],
    )


def conv2d(program: Program, layer: Layer):
    """Each output pixel is a dense layer over its window (im2col), with the same arithmetic."""
    weights = program.weight(layer, "weight")
    if layer.flag("_weights_transposed", False):  # Resource strategy: [filters, height, width, channels]
        weights = weights.transpose(1, 2, 3, 0)
    height, width, channels, filters = weights.shape
    stride = (layer.integer("stride_height"), layer.integer("stride_width"))
    pads: tuple[tuple[int, int], ...] = (
        (layer.integer("pad_top", 0), layer.integer("pad_bottom", 0)),
        (layer.integer("pad_left", 0), layer.integer("pad_right", 0)),
    )
    value = program.source(layer)
    if value.padding:  # a ZeroPadding2D before: its pads join the convolution's
        pads = tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, value.padding, strict=True))
        value = replace(value, window=None)
    source = program.materialized(value, layer.name + ".image")
    low, high = np.minimum(source.low, 0), np.maximum(source.high, 0)  # zero padding
    patches = replace(
        Linear.of(source.source, source.fraction, np.tile(low, height * width), np.tile(high, height * width)),
        window=((height, width), stride, pads),
    )
    _multiply_accumulate(program, layer, patches, weights.reshape(-1, filters))


def zero_padding2d(program: Program, layer: Layer):
    pads = (
        (layer.integer("pad_top"), layer.integer("pad_bottom")),
        (layer.integer("pad_left"), layer.integer("pad_right")),
    )
    source = program.materialized(program.source(layer), layer.name + ".image")
    # 1×1 windows of the padded image are its pixels: computed where used, or joined to a convolution's
    padded = replace(
        Linear.of(source.source, source.fraction, np.minimum(source.low, 0), np.maximum(source.high, 0)),
        window=((1, 1), (1, 1), pads),
    )
    (result,) = program.types(layer, "result_t")
    program.cast(padded, result, layer.outputs[0])


def pooling2d(program: Program, layer: Layer):
    accum, result = program.types(layer, "accum_t", "result_t")
    size = (layer.integer("pool_height"), layer.integer("pool_width"))
    stride = (layer.integer("stride_height"), layer.integer("stride_width"))
    if size != stride or any(layer.integer(f"pad_{side}", 0) for side in ("top", "bottom", "left", "right")):
        raise Unsupported("pooling is emulated for pool size = stride without padding")
    streamed = layer.text("implementation", None) == "linebuffer"  # io_stream casts each value to accum_t first
    source = program.materialized(program.source(layer), layer.name + ".image")
    name = layer.name + ".pooled"
    average = layer.text("pool_op") == "Average"
    count = size[0] * size[1]
    _check_sum(accum, source, count, average)

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

    if average and not streamed and accum.fraction < source.fraction and accum.quantization is not Quantization.TRN:
        raise Unsupported(f"io_parallel average pooling rounds each partial sum into {accum}")
    program.steps.append(pool)
    _cast_whole_range(program, name, accum.fraction, source, accum, result, layer)


def global_pooling2d(program: Program, layer: Layer):
    accum, result = program.types(layer, "accum_t", "result_t")
    source = program.materialized(program.source(layer), layer.name + ".image")
    name = layer.name + ".pooled"
    average = layer.text("pool_op") == "Average"
    if not average:
        raise Unsupported("global max pooling is not supported")  # its initial value is hls::numeric_limits'
    count = layer.integer("in_height") * layer.integer("in_width")
    _check_sum(accum, source, count, average)

    def pool(tensors):
        values = accum.requantize(_wide(tensors[source.source]), source.fraction)
        tensors[name] = _divide(accum.saturate(values.sum(axis=(1, 2))), count)

    program.steps.append(pool)
    _cast_whole_range(program, name, accum.fraction, source, accum, result, layer)


def _check_sum(accum, source, count, average):
    """Sums in accum_t are emulated when they wrap (any order gives the same bits) or cannot overflow."""
    if not average or accum.overflow is Overflow.WRAP:
        return
    scale = 2.0 ** (accum.fraction - source.fraction)
    if not accum.holds(count * np.min(source.low) * scale - 1, count * np.max(source.high) * scale + 1):
        raise Unsupported(f"a saturating {accum} sum that may overflow depends on the summation order")


def _cast_whole_range(program: Program, name, fraction, source, accum, result, layer):
    scale = 2.0 ** (fraction - source.fraction)
    low = np.maximum(np.floor(source.low * scale), accum.lowest)
    high = np.minimum(np.ceil(source.high * scale), accum.highest)
    if accum.overflow is Overflow.WRAP and not accum.holds(np.min(source.low) * scale, np.max(source.high) * scale):
        low, high = np.full_like(low, accum.lowest), np.full_like(high, accum.highest)
    program.cast(Linear.of(name, fraction, low, high), result, layer.outputs[0])


def merge(program: Program, layer: Layer):
    op = layer.text("op")
    if op not in ("add", "subtract"):
        raise Unsupported(f"merge '{op}' is not supported")
    first, second = (program.pending[name] for name in layer.inputs)
    fraction = max(first.fraction, second.fraction)
    first, second = first.shifted(fraction - first.fraction), second.shifted(fraction - second.fraction)
    # Each side stays a pending map (a convolution and its BatchNormalization): both products and
    # the sum are one step where the sum is cast.
    a = first if first.addend is None else program.materialized(first, layer.name + ".a")
    b = second if second.addend is None else program.materialized(second, layer.name + ".b")
    total = a.plus_map(b, 1 if op == "add" else -1)
    (result,) = program.types(layer, "result_t")
    program.cast(total, result, layer.outputs[0])


def concatenate(program: Program, layer: Layer):
    """hls4ml's concatenate: each input assigned element by element into result_t, side by side
    along the last axis (the emulator's bounds are per last-axis feature)."""
    (result,) = program.types(layer, "result_t")
    axis, rank = layer.integer("axis"), len(layer.shape)
    if axis != -1 and axis != rank:  # Keras' axis counts the batch dimension; kernel.json's shape does not
        raise Unsupported(f"concatenation along axis {axis} of a rank-{rank} tensor (only the last axis is emulated)")
    names = []
    for i, name in enumerate(layer.inputs):
        part = f"{layer.name}.part{i}"
        program.cast(program.pending[name], result, part)
        names.append(program.materialized(program.pending[part], part))
    out = layer.outputs[0]
    sources = [value.source for value in names]
    program.steps.append(lambda tensors: tensors.__setitem__(out, np.concatenate([tensors[s] for s in sources], -1)))
    program.pending[out] = Linear.of(
        out, result.fraction, np.concatenate([v.low for v in names]), np.concatenate([v.high for v in names])
    )


def clone(program: Program, layer: Layer):
    (result,) = program.types(layer, "result_t")
    for output in layer.outputs:
        program.cast(program.source(layer), result, output)


def reshape(program: Program, layer: Layer):
    value = program.source(layer)
    size = int(np.prod(layer.integers("target_shape", (len(value.low),))))
    flat = _flattened(program, value, layer.name + ".flat", size // len(value.low))
    (result,) = program.types(layer, "result_t")
    program.cast(flat, result, layer.outputs[0])


def _flattened(program: Program, value, name, pixels):
    """`value` (an image) as rows of pixels × channels."""
    source = program.materialized(value, name + ".image")
    program.steps.append(
        lambda tensors: tensors.__setitem__(name, tensors[source.source].reshape(len(tensors[source.source]), -1))
    )
    return Linear.of(name, source.fraction, np.tile(source.low, pixels), np.tile(source.high, pixels))


def softmax(program: Program, layer: Layer):
    """hls4ml's table softmaxes from the firmware's own tables: 'stable' looks up exp(x - max),
    'latency' exp(x) (its table addressed by x's own bits); then 1/sum, and the products."""
    implementation = layer.text("implementation", None)
    if implementation == "legacy":
        return _softmax_legacy(program, layer)
    if implementation not in ("stable", "latency"):
        raise Unsupported(f"softmax implementation '{implementation}' is not supported")
    exp_type, accum, inv_in, inv_type, result = program.types(
        layer, "exp_table_t", "accum_t", "inv_inp_t", "inv_table_t", "result_t"
    )
    (address,) = program.types(layer, "inp_norm_t" if implementation == "stable" else "input_t")
    exp_table = program.weights[f"{layer.name}.exp_table"]
    inv_table = program.weights[f"{layer.name}.inv_table"]
    source = program.materialized(program.source(layer), layer.name + ".in")
    if implementation == "latency" and source.fraction != address.fraction:
        raise Unsupported(f"softmax input at 2^-{source.fraction}, not its type {address}'s LSB")
    entries = len(source.low)
    # The adder tree's order does not matter when the sum wraps, cannot overflow, or saturates
    # a sum of non-negative terms (once at the top, it stays there).
    order_free = accum.overflow is Overflow.WRAP or (accum.overflow.saturates and np.min(exp_table) >= 0)
    if (
        not order_free
        and entries * np.max(np.abs(exp_table)) * 2.0 ** (accum.fraction - exp_type.fraction) >= accum.highest
    ):
        raise Unsupported(f"the softmax sum may overflow {accum}: its rounding then depends on the adder tree")
    name = layer.name + ".product"

    def softmax(tensors):
        x = tensors[source.source].astype(np.int64)
        if implementation == "stable":
            x = address.requantize(x.max(axis=-1, keepdims=True) - x, source.fraction)
        exps = accum.requantize(exp_table[_top_bits(address, x, len(exp_table))], exp_type.fraction)
        total = inv_in.requantize(accum.saturate(exps.sum(axis=-1, keepdims=True)), accum.fraction)
        tensors[name] = exps * inv_table[_top_bits(inv_in, total, len(inv_table))]

    program.steps.append(softmax)
    fraction = accum.fraction + inv_type.fraction
    full = np.full(entries, 1.0)
    bound = float(accum.highest) * max(abs(inv_type.lowest), inv_type.highest)
    program.cast(Linear.of(name, fraction, -bound * full, bound * full), result, layer.outputs[0])


def _softmax_legacy(program: Program, layer: Layer):
    """hls4ml's 'legacy' softmax: for each output, 1 + Σ exp(x_j - x_i) from a table addressed
    by int((x_j - x_i) · size / 16) + size / 2 (ap_fixed arithmetic, then C int: truncated toward
    zero), clamped, summed in table_t; its inverse from a table addressed by int(sum · size / 64)."""
    table_type, result = program.types(layer, "table_t", "result_t")
    exp_table = program.weights[f"{layer.name}.exp_table"]
    inv_table = program.weights[f"{layer.name}.inv_table"]
    source = program.materialized(program.source(layer), layer.name + ".in")
    entries, fraction = len(source.low), source.fraction
    if not (table_type.overflow is Overflow.WRAP or table_type.overflow.saturates and np.min(exp_table) >= 0):
        raise Unsupported(f"a {table_type} sum depends on its order")
    biggest = 2 * np.max(source.source_bound) * len(exp_table) * 2.0 ** max(-fraction, 0)
    if biggest >= INT_EXACT or biggest * 2.0 ** -max(fraction, 0) / 16 >= 2**31:
        raise Unsupported("softmax inputs this large overflow the C int of the table index")
    if table_type.fraction < 0:
        raise Unsupported(f"table type {table_type} without fraction bits")
    one = int(table_type.quantize(1.0))
    name = layer.name + ".inverse"

    def softmax(tensors):
        x = tensors[source.source].astype(np.int64)
        difference = (x[..., None, :] - x[..., :, None]) * (len(exp_table) << max(-fraction, 0))
        address = _divide(difference, 16 << max(fraction, 0)) + 8 * len(exp_table) // 16
        terms = exp_table[np.clip(address, 0, len(exp_table) - 1)]
        terms[..., np.arange(entries), np.arange(entries)] = one
        total = table_type.saturate(terms.sum(axis=-1))  # order-free: checked above
        address = _divide(total * len(inv_table), 64 << table_type.fraction)
        tensors[name] = inv_table[np.clip(address, 0, len(inv_table) - 1)]

    program.steps.append(softmax)
    full = np.full(entries, 1.0)
    program.cast(
        Linear.of(name, table_type.fraction, full * np.min(inv_table), full * np.max(inv_table)),
        result,
        layer.outputs[0],
    )


HANDLERS: dict[str, Callable[[Program, Layer], None]] = {  # hls4ml class name → handler
    "Activation": activation,
    "BatchNormalization": batch_normalization,
    "Clone": clone,
    "Concatenate": concatenate,
    "Conv2D": conv2d,
    "Dense": dense,
    "Flatten": reshape,  # a flattening reshape
    "GlobalPooling2D": global_pooling2d,
    "Input": input_layer,
    "Merge": merge,
    "PointwiseConv2D": conv2d,  # hls4ml's class for 1×1 convolutions: the same arithmetic
    "Pooling2D": pooling2d,
    "Reshape": reshape,
    "Softmax": softmax,
    "ZeroPadding2D": zero_padding2d,
}
