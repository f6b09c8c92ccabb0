"""ResNet-50 top tagging end to end: the shipped trained variant built, served to a stock
tritonclient on the emulator and equal to the C simulation; validated, and equal to hls4ml's trace layer
by layer; the full-size network converted, served on the emulator and equal to its C simulation."""

import json
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import BIN, HLS4ML_TRACE, PYTHON, ROOT, Server
from support.kernel_top import assert_canonical_dataflow

from faast.host.drivers import open_device
from faast.kernels.spec import KernelSpec

KERNEL = ROOT / "kernels" / "resnet50"

# slow: builds ResNet-50 with hls4ml (both variants), compiles and runs its C simulation, validates
pytestmark = pytest.mark.slow


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


def test_resnet50_kernel_top_is_one_dataflow_region_holding_an_image_of_pixels(resnet_repository):
    """Feed, network and drain overlap in one DATAFLOW region; the feed can run a whole image ahead."""
    version = resnet_repository / "resnet50" / "1"
    ((height, width, _),) = [tensor["shape"] for tensor in json.loads((version / "kernel.json").read_text())["inputs"]]
    depths = assert_canonical_dataflow((version / "vitis" / "kernel_top.cpp").read_text())
    assert int(depths["in_pixels"]) == height * width


def test_resnet50_layers_equal_hls4ml_trace(resnet_repository, tmp_path):
    """Layer by layer (53 convolutions, their batch normalizations, ReLUs, Adds, pooling, softmax),
    the emulator's values equal hls4ml's own C simulation trace on a few jets; the Vitis kernel top
    (compiled as the C simulation device) answers its last layer's values."""
    images, _ = _jets(3, seed=8)
    np.save(tmp_path / "x.npy", images)
    subprocess.run(
        [
            *PYTHON,
            HLS4ML_TRACE,
            KERNEL,
            tmp_path / "trace_project",
            tmp_path / "x.npy",
            tmp_path / "trace.npz",
        ],
        check=True,
    )
    trace = dict(np.load(tmp_path / "trace.npz"))
    emulator = open_device("emulator", resnet_repository / "resnet50" / "1")
    try:
        layout, program = emulator.kernel.layout, emulator.compute_units[0].program
        names = [layer.name for layer in emulator.kernel.layers if layer.name in trace]
        values = program.trace(layout.input.type.from_bits(layout.input.type.to_bits(images)), names)
    finally:
        emulator.close()
    classes = {layer.class_name for layer in emulator.kernel.layers if layer.name in names}
    assert {
        "Conv2D",
        "BatchNormalization",
        "Activation",
        "Merge",
        "Pooling2D",
        "GlobalPooling2D",
        "Softmax",
    } <= classes and len(names) > 150
    for name in names:
        emulated = values[name].reshape(len(images), -1).astype(np.float32)
        traced = trace[name].reshape(len(images), -1)
        assert np.array_equal(emulated, traced), f"layer {name}: {np.count_nonzero(emulated != traced)} values differ"
    last = emulator.kernel.layers[-1].name
    csim = open_device("csim", resnet_repository / "resnet50" / "1")
    try:
        assert np.array_equal(csim.run(images), trace[last].reshape(len(images), -1))
    finally:
        csim.close()


def test_resnet50_validates(tmp_path):
    run = subprocess.run(
        [BIN / "faast", "validate", KERNEL, "--out", tmp_path / "report"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    physics = report["physics"]
    assert physics["kernel"]["auc"] >= physics["float"]["auc"] - 0.01 and physics["float"]["auc"] > 0.8
    assert report["kernel_outputs"]["device"] == "emulator" and report["kernel_outputs"]["csim_mismatches"] == 0


def test_full_size_resnet50_converts_and_is_served_equal_to_csim(tmp_path):
    repository = tmp_path / "repository"
    subprocess.run([BIN / "faast", "build", KERNEL, "--variant", "full", "--out", repository], check=True)
    version = repository / "resnet50_full" / "1"
    description = json.loads((version / "kernel.json").read_text())
    convolutions = [layer for layer in description["layers"] if layer["class"] in ("Conv2D", "PointwiseConv2D")]
    assert len(convolutions) == 53 and description["inputs"][0]["shape"] == [224, 224, 3]
    with np.load(version / "weights.npz") as weights:
        parameters = sum(weights[layer["weights"][key]].size for layer in convolutions for key in layer["weights"])
    assert parameters > 23_000_000
    # Untrained weights, so only the arithmetic is checked: served equals the emulator run here,
    # and the C simulation (~2 minutes per full-size image) on the first image.
    images = np.random.default_rng(5).uniform(0, 0.05, (2, 224, 224, 3)).astype(np.float32)
    server = Server(repository, tmp_path / "serve.log")
    try:
        tensor = grpcclient.InferInput("input", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        served = server.client.infer("resnet50_full", [tensor]).as_numpy("output")
    finally:
        server.stop()
    assert "device auto for 'resnet50_full': emulator" in (tmp_path / "serve.log").read_text()
    emulator, csim = open_device("emulator", version), open_device("csim", version)
    try:
        assert served.shape == (2, 2) and np.array_equal(served, emulator.run(images))
        assert np.array_equal(served[:1].view(np.uint32), csim.run(images[:1]).view(np.uint32))
    finally:
        emulator.close()
        csim.close()
