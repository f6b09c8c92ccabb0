"""Child process for the tests: hls4ml's own per-layer trace of a kernel folder's model.

Usage: hls4ml_trace.py KERNEL_DIR WORK_DIR INPUTS.npy TRACE.npz
"""

import sys

import numpy as np

from faast.kernels.convert import hls_config
from faast.kernels.spec import KernelSpec
from faast.kernels.toolchain import hls4ml

kernel_dir, work_dir, x_path, trace_path = sys.argv[1:]
spec = KernelSpec.read(kernel_dir)
model = spec.model()
config = hls_config(spec, model)
for layer in config["LayerName"].values():
    layer["Trace"] = True
settings = spec.hls4ml
graph = hls4ml.converters.convert_from_keras_model(
    model,
    hls_config=config,
    output_dir=work_dir,
    project_name=spec.name,
    backend=settings["backend"],
    io_type=settings["io_type"],
    part=settings["part"],
)
graph.compile()
_, trace = graph.trace(np.load(x_path))
np.savez(trace_path, **{name: np.asarray(values) for name, values in trace.items()})
