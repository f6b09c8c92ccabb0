"""Child process for the tests: hls4ml's own compile() + predict() on a written project.

Usage: hls4ml_predict.py PROJECT_DIR INPUTS.npy OUTPUTS.npy
"""

import sys

import numpy as np

from faast.kernels.toolchain import hls4ml

project_dir, x_path, y_path = sys.argv[1:]
graph = hls4ml.converters.link_existing_project(project_dir)
graph.compile()
x = np.load(x_path)
y = np.asarray(graph.predict(x), dtype=np.float32).reshape(len(x), -1)
np.save(y_path, y)
