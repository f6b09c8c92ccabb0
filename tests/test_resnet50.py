"""ResNet-50 top tagging end to end: the shipped trained variant built, served to a stock
tritonclient on the emulator and equal to the C simulation; validated; the full-size network
converted and served on the emulator."""

import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from faast.host.device import open_device
from faast.kernels.spec import KernelSpec

from conftest import BIN, ROOT, Server

KERNEL = ROOT / "kernels" / "resnet50"


@pytest.fixture(scope="module")
def resnet_repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("resnet_repository")
    subprocess.run([BIN / "faast", "build", KERNEL, "--out", repository], check=True)
    return repository


def _jets(count, seed):
    return KernelSpec.read(KERNEL).load_entry("data")(count, seed=seed)


def test_resnet50_served_on_the_emulator_equals_csim(resnet_repository, tmp_path):
    images, labels = _jets(6, seed=31)
    server = Server(resnet_repository, tmp_path / "serve.log")
    try:
        outputs = []
        for batch in (images[:1], images[1:]):
            tensor = grpcclient.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            outputs.append(server.client.infer("resnet50", [tensor]).as_numpy("output"))
    finally:
        server.stop()
    served = np.concatenate(outputs)
    # hls4ml's table softmax: 1/sum comes from a coarse table, so probabilities may sum to ~1.1.
    assert served.shape == (6, 2) and np.all((served >= 0) & (served <= 1)) and np.all(served.sum(axis=1) < 1.2)
    assert np.count_nonzero(np.argmax(served, axis=1) == labels) >= 5
    assert "device auto for 'resnet50': emulator" in (tmp_path / "serve.log").read_text()
    csim = open_device("csim", resnet_repository / "resnet50" / "1")
    try:
        assert np.array_equal(served.view(np.uint32), csim.run(images).view(np.uint32))
    finally:
        csim.close()


def test_resnet50_validates(tmp_path):
    run = subprocess.run([BIN / "faast", "validate", KERNEL, "--out", tmp_path / "report"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    physics = report["physics"]
    assert physics["kernel"]["auc"] >= physics["float"]["auc"] - 0.01 and physics["float"]["auc"] > 0.8
    assert report["kernel_outputs"]["device"] == "emulator" and report["kernel_outputs"]["csim_mismatches"] == 0


def test_full_size_resnet50_converts_and_is_served(tmp_path):
    repository = tmp_path / "repository"
    subprocess.run([BIN / "faast", "build", KERNEL, "--variant", "full", "--out", repository], check=True)
    version = repository / "resnet50_full" / "1"
    description = json.loads((version / "kernel.json").read_text())
    convolutions = [layer for layer in description["layers"] if layer["class"] in ("Conv2D", "PointwiseConv2D")]
    assert len(convolutions) == 53 and description["inputs"][0]["shape"] == [224, 224, 3]
    with np.load(version / "weights.npz") as weights:
        parameters = sum(weights[layer["weights"][key]].size for layer in convolutions for key in layer["weights"])
    assert parameters > 23_000_000
    assert not (version / "csim.so").exists()
    # Untrained weights, so only the arithmetic is checked: served equals the emulator run here.
    images = np.random.default_rng(5).uniform(0, 0.05, (2, 224, 224, 3)).astype(np.float32)
    server = Server(repository, tmp_path / "serve.log")
    try:
        tensor = grpcclient.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        served = server.client.infer("resnet50_full", [tensor]).as_numpy("output")
    finally:
        server.stop()
    assert "device auto for 'resnet50_full': emulator" in (tmp_path / "serve.log").read_text()
    emulator = open_device("emulator", version)
    try:
        assert served.shape == (2, 2) and np.array_equal(served, emulator.run(images))
    finally:
        emulator.close()
