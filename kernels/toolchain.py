"""The one place that imports TensorFlow, QKeras and hls4ml, in the order they need.

QKeras needs Keras 2, so TF_USE_LEGACY_KERAS must be set before TensorFlow loads; hls4ml 1.3 picks
its converter from `import keras` (Keras 3 here) and fails on tf_keras models unless `keras` *is*
tf_keras in its process. Only training and conversion child processes import this module.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_keras  # noqa: E402

sys.modules["keras"] = tf_keras

import hls4ml  # noqa: E402
import qkeras  # noqa: E402
import tensorflow  # noqa: E402

__all__ = ["hls4ml", "qkeras", "tensorflow", "tf_keras"]
