from faast.kernels.toolchain import qkeras
from faast.kernels.toolchain import tf_keras as keras


def build_model():
    q = dict(kernel_quantizer=qkeras.quantized_bits(8, 0, alpha=1), bias_quantizer=qkeras.quantized_bits(8, 3, alpha=1))
    x = inputs = keras.Input((8, 8, 2), name="image")
    x = qkeras.QConv2D(4, 3, padding="same", name="conv1", **q)(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = qkeras.QActivation("quantized_relu(8,3)", name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    y = qkeras.QConv2D(4, 3, padding="same", name="conv2", **q)(x)
    y = qkeras.QActivation("quantized_relu(8,3)", name="relu2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.AveragePooling2D(2, name="pool2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = qkeras.QDense(3, name="dense", **q)(x)
    x = keras.layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inputs, x)
