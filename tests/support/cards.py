"""Stand-in cards for the hardware drivers' tests: fake xclbins the recording stand-in of pyxrt loads
(tests/support/recording_pyxrt.py; PYNQ reads real ones, tests/support/axlf.py), the shells and
platforms they name, and FACILE rows."""

import json

import numpy as np

from faast.contract.kernel import KernelDescription

U250_SHELL = "xilinx_u250_gen3x16_xdma_shell_4_1"
U250_PLATFORM = "xilinx_u250_gen3x16_xdma_4_1_202210_1"
F1_SHELL = "xilinx_aws-vu9p-f1_shell-v04261818_201920_3"


def fake_xclbin(version_dir, platform=U250_PLATFORM, cus=4, name="facile.xclbin"):
    """A JSON "xclbin" whose kernel runs the version's C-simulation library with its weights."""
    kernel = KernelDescription.read(version_dir)
    spec = {
        "platform": platform,
        "kernel": kernel.top,
        "cus": [f"{kernel.top}_{i}" for i in range(1, cus + 1)],
        "library": str(version_dir / "csim.so"),
        "weights": str(version_dir / "hls4ml/firmware/weights"),
    }
    (version_dir / name).write_text(json.dumps(spec))


def facile_rows(n, seed=0):
    """FACILE-like inputs: sparse channels of a broad energy spread."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 40, (n, 15)) * (rng.random((n, 15)) < 0.5)).astype(np.float32)
