"""FACILE (Krupa et al. 2021): 15 inputs, five Dense+BatchNorm+ReLU blocks of 30, 20, 10, 5 and 3
neurons, and one linear output, the channel energy. Quantization-aware: QKeras QDense weights and
quantized_relu activations, with the bit widths the hls4ml kernel uses (see kernel.toml).

Imported only by the training and conversion processes (TensorFlow); never by the server.
"""

from qkeras import QActivation, QDense, quantized_bits, quantized_relu
from tf_keras import layers, models

from . import data

HIDDEN = (30, 20, 10, 5, 3)


def build_model():
    inputs = layers.Input(shape=(data.N_FEATURES,), name="features")
    x = inputs
    for i, units in enumerate(HIDDEN, start=1):
        x = QDense(
            units,
            name=f"dense{i}",
            kernel_quantizer=quantized_bits(12 if i == 1 else 10, 1, alpha=1),
            bias_quantizer=quantized_bits(12, 6, alpha=1),
        )(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = QActivation(quantized_relu(10, 5), name=f"relu{i}")(x)
    outputs = QDense(
        1, name="energy", kernel_quantizer=quantized_bits(12, 4, alpha=1), bias_quantizer=quantized_bits(12, 6, alpha=1)
    )(x)
    return models.Model(inputs, outputs, name="facile")
