"""ResNet-50 for top tagging (as in the Brainwave / FaaST studies): bottleneck blocks 3-4-6-3 with
batch normalization and Add skips, global average pooling and a 2-class softmax, quantization-aware
with QKeras. `input_size` and `width` (a multiplier on every layer's filters) scale it: the full
network is 224×224×3 with width 1 (~23.6M parameters); the shipped, trained variant is smaller (see
kernel.toml [model]).

Two changes for hls4ml's io_stream implementation: the stem pools 2×2 with stride 2 (io_stream
pooling needs pool size = stride; Keras' ResNet-50 uses 3×3/2), and strided blocks put the stride in
their first 1×1 convolution (as Keras' ResNet-50 does), which needs no padding.

Imported only by the training and conversion processes (TensorFlow); never by the server.
"""

from qkeras import QActivation, QConv2D, QDense, quantized_bits
from tf_keras import layers, models

STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))  # blocks, bottleneck filters, first stride
WEIGHT_BITS = 8
ACTIVATION = "quantized_relu(8,4)"


def _conv(x, filters, size, stride, name):
    return QConv2D(
        filters,
        size,
        strides=stride,
        padding="same" if size > 1 else "valid",
        name=name,
        kernel_quantizer=quantized_bits(WEIGHT_BITS, 0, alpha=1),
        bias_quantizer=quantized_bits(WEIGHT_BITS, 3, alpha=1),
    )(x)


def _batch_norm(x, name):
    # A short training run: moving statistics that follow the batches closely (Keras' default 0.99
    # lags, and inference then disagrees with training).
    return layers.BatchNormalization(momentum=0.9, name=name)(x)


def _bottleneck(x, filters, stride, project, name):
    shortcut = x
    if project:
        shortcut = _conv(x, 4 * filters, 1, stride, f"{name}_proj")
        shortcut = _batch_norm(shortcut, f"{name}_proj_bn")
    y = _conv(x, filters, 1, stride, f"{name}_conv1")
    y = _batch_norm(y, f"{name}_bn1")
    y = QActivation(ACTIVATION, name=f"{name}_relu1")(y)
    y = _conv(y, filters, 3, 1, f"{name}_conv2")
    y = _batch_norm(y, f"{name}_bn2")
    y = QActivation(ACTIVATION, name=f"{name}_relu2")(y)
    y = _conv(y, 4 * filters, 1, 1, f"{name}_conv3")
    y = _batch_norm(y, f"{name}_bn3")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return QActivation(ACTIVATION, name=f"{name}_out")(y)


def build_model(input_size=224, width=1.0, classes=2):
    def filters(n):
        return max(1, int(round(n * width)))

    inputs = layers.Input(shape=(input_size, input_size, 3), name="image")
    x = _conv(inputs, filters(64), 7, 2, "stem_conv")
    x = _batch_norm(x, "stem_bn")
    x = QActivation(ACTIVATION, name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for stage, (blocks, bottleneck, stride) in enumerate(STAGES, start=2):
        for block in range(blocks):
            x = _bottleneck(x, filters(bottleneck), stride if block == 0 else 1, block == 0, f"s{stage}b{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = QDense(
        classes,
        name="logits",
        kernel_quantizer=quantized_bits(WEIGHT_BITS, 0, alpha=1),
        bias_quantizer=quantized_bits(WEIGHT_BITS, 3, alpha=1),
    )(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return models.Model(inputs, outputs, name="resnet50")
