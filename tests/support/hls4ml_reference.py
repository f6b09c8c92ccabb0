"""hls4ml's own answers, computed in child processes (TensorFlow and hls4ml stay out of the test process)."""

import os
import subprocess
from pathlib import Path

import numpy as np

from .paths import PYTHON

SCRIPTS = Path(__file__).resolve().parent / "scripts"
# Usage: HLS4ML_TRACE KERNEL_DIR WORK_DIR INPUTS.npy TRACE.npz (run with PYTHON).
HLS4ML_TRACE = SCRIPTS / "hls4ml_trace.py"


def hls4ml_predict(project_dir, rows, workdir):
    """hls4ml's own predict() on an existing project, in a child process (TensorFlow stays out of here)."""
    x_path, y_path = Path(workdir) / "x.npy", Path(workdir) / "y.npy"
    np.save(x_path, np.ascontiguousarray(rows, dtype=np.float32))
    subprocess.run(
        [*PYTHON, SCRIPTS / "hls4ml_predict.py", project_dir, x_path, y_path],
        check=True,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return np.load(y_path)
