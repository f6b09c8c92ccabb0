"""`faast train` runs quantization-aware training and writes the kernel folder's weights."""

import shutil
import subprocess

import h5py
import pytest
from support import BIN, ROOT


@pytest.mark.slow  # trains
def test_faast_train_writes_weights_with_progress(tmp_path):
    kernel = tmp_path / "facile"
    shutil.copytree(ROOT / "kernels" / "facile", kernel, ignore=shutil.ignore_patterns("__pycache__"))
    (kernel / "weights.h5").unlink()
    run = subprocess.run(
        [BIN / "faast", "train", kernel, "--epochs", "1", "--samples", "4000"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training: 100%" in run.stderr  # the tqdm progress bar ran to the end
    assert f"wrote {kernel / 'weights.h5'}" in run.stdout
    with h5py.File(kernel / "weights.h5") as weights:
        layers = set(weights.keys())
    assert {"dense1", "bn1", "dense5", "bn5", "energy"} <= layers
