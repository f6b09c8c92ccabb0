"""The one place that imports TensorFlow, QKeras and hls4ml, in the order they need.

QKeras needs Keras 2, so TF_USE_LEGACY_KERAS must be set before TensorFlow loads; hls4ml 1.3 picks
its converter from `import keras` (Keras 3 here) and fails on tf_keras models unless `keras` *is*
tf_keras in its process. Only training and conversion child processes import this module (Keras 3
models convert in a process of their own: kernels/convert_keras3.py).

hgq2 0.2.0 installs a Keras 3 "QKeras compatibility" package into QKeras's own folder: it replaces
qkeras/__init__.py and adds packages qkeras/quantizers/ and qkeras/qlayers/, which Python prefers to
QKeras's quantizers.py and qlayers.py. `_QKerasFinder` imports QKeras from its own files whichever
of the two was installed last.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What QKeras 0.9.0's qkeras/__init__.py exports: every name of these modules, and two classes.
_QKERAS_STAR_MODULES = (
    "b2t",
    "estimate",
    "qlayers",
    "quantizers",
    "qconvolutional",
    "qrecurrent",
    "qnormalization",
    "qoctave",
    "qpooling",
    "safe_eval",
)
_QKERAS_NAMED = {"qconv2d_batchnorm": "QConv2DBatchnorm", "qdepthwiseconv2d_batchnorm": "QDepthwiseConv2DBatchnorm"}


class _QKerasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`qkeras` as QKeras 0.9.0 defines it, and its quantizers/qlayers modules from their .py files."""

    def __init__(self):
        self.folder = importlib.machinery.PathFinder.find_spec("qkeras").submodule_search_locations[0]

    def find_spec(self, name, path=None, target=None):
        if name == "qkeras":
            return importlib.util.spec_from_loader(name, self, is_package=True)
        if name in ("qkeras.quantizers", "qkeras.qlayers"):
            return importlib.util.spec_from_file_location(name, os.path.join(self.folder, name[7:] + ".py"))
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = [self.folder]
        module.__version__ = "0.9.0"
        for leaf in _QKERAS_STAR_MODULES:
            source = importlib.import_module(f"qkeras.{leaf}")
            names = getattr(source, "__all__", [n for n in vars(source) if not n.startswith("_")])
            module.__dict__.update({n: getattr(source, n) for n in names})
        for leaf, name in _QKERAS_NAMED.items():
            setattr(module, name, getattr(importlib.import_module(f"qkeras.{leaf}"), name))


import tf_keras  # noqa: E402

sys.modules["keras"] = tf_keras
sys.meta_path.insert(0, _QKerasFinder())

import hls4ml  # noqa: E402
import numpy  # noqa: E402
import qkeras  # noqa: E402
import tensorflow  # noqa: E402

numpy.product = numpy.prod  # hls4ml 1.3 writes quantized_po2 weights with np.product, gone in numpy 2

__all__ = ["hls4ml", "qkeras", "tensorflow", "tf_keras"]
