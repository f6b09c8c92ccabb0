"""Helpers shared by the test packages; tests/ is on sys.path through pytest's `pythonpath` setting
(pyproject.toml), so test modules write `from support import Server`. Fixtures live in conftest.py.

- paths: ROOT (the repository), BIN (the installed `faast`), PYTHON (this interpreter, -P)
- server: Server (a real `faast serve` on free loopback ports), free_port, facile_with_config (a
  repository with one edit to facile's config.pbtxt)
- hls4ml_reference: hls4ml_predict and HLS4ML_TRACE, hls4ml's own answers from child processes (scripts/)
- inference: facile_input (a tritonclient InferInput of rows), infer (an infer call answered as the
  output array), infer_request (a raw ModelInferRequest), bits (float32 bit patterns), varint
  (protobuf's length encoding, for messages written by hand)
- recording_pyxrt: a RECORDING STAND-IN of pyxrt; standin_libxrt: a STAND-IN of XRT's C library
  under the real pynq, and axlf: the xclbins it loads (import them as submodules)
- fake_device: a fake Device kind for in-process tests, and the one place that writes kernel folders
  by hand and registers a driver (import it as a submodule)
"""

from .hls4ml_reference import HLS4ML_TRACE, hls4ml_predict
from .inference import bits, facile_input, infer, infer_request, varint
from .paths import BIN, PYTHON, ROOT
from .server import Server, facile_with_config, free_port

__all__ = [
    "BIN",
    "HLS4ML_TRACE",
    "PYTHON",
    "ROOT",
    "Server",
    "bits",
    "facile_input",
    "facile_with_config",
    "free_port",
    "hls4ml_predict",
    "infer",
    "infer_request",
    "varint",
]
