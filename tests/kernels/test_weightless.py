"""A network of weightless layers only (activations: hls4ml writes no weights file for them) builds,
loads on the C simulation and answers as hls4ml's own predict() of the same project does; a built
kernel whose weight file went missing fails its load with the reason instead of ending the server."""

import shutil
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import BIN, PYTHON, Server, hls4ml_predict

from faast.contract.kernel import KernelDescription

pytestmark = pytest.mark.slow  # TensorFlow, hls4ml, two C-simulation compiles

WEIGHTLESS = """
import sys
from faast.kernels.toolchain import tf_keras

x = tf_keras.layers.Input((8,), name="x")
y = tf_keras.layers.Activation("sigmoid", name="squash")(tf_keras.layers.ReLU(name="relu")(x))
tf_keras.Model(x, y).save(sys.argv[1])
"""


@pytest.fixture(scope="module")
def weightless(tmp_path_factory):
    """The model's repository (built by `faast build`, its device set to the C simulation)."""
    folder = tmp_path_factory.mktemp("weightless")
    subprocess.run([*PYTHON, "-c", WEIGHTLESS, folder / "weightless.h5"], check=True)
    repository = folder / "repository"
    subprocess.run([BIN / "faast", "build", folder / "weightless.h5", "--out", repository], check=True, cwd=folder)
    config = repository / "weightless" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "auto"', 'string_value: "csim"'))
    return repository


def test_a_weightless_network_serves_hls4ml_s_predict_on_the_c_simulation(weightless, tmp_path):
    version = weightless / "weightless" / "1"
    assert KernelDescription.read(version).weight_files == ()  # hls4ml wrote none: none are needed
    rng = np.random.default_rng(31)
    rows = np.concatenate([rng.uniform(-40, 40, (500, 8)), rng.normal(0, 2, (500, 8))]).astype(np.float32)
    expected = hls4ml_predict(version / "hls4ml", rows, tmp_path)
    server = Server(weightless, tmp_path / "serve.log")
    try:
        tensor = grpcclient.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        served = server.client.infer("weightless", [tensor]).as_numpy("squash")
        index = {m.name: m for m in server.client.get_model_repository_index().models}
    finally:
        server.stop()
    assert index["weightless"].state == "READY"
    assert "device auto" not in (tmp_path / "serve.log").read_text()  # csim, as configured
    assert np.array_equal(served.view(np.uint32), expected.reshape(served.shape).view(np.uint32))


def test_a_missing_weight_file_fails_the_load_with_its_name(model_repository, tmp_path):
    """FACILE's firmware reads its weights at the first call and exit()s on a missing file: the load
    must refuse first, naming the file, and the server go on."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile")
    config = repository / "facile" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "auto"', 'string_value: "csim"'))
    missing = sorted(KernelDescription.read(repository / "facile" / "1").weight_files)[0]
    (repository / "facile" / "1" / "hls4ml" / "firmware" / "weights" / missing).unlink()
    server = Server(repository, tmp_path / "serve.log", expect_ready=False)
    try:
        index = {m.name: m for m in server.client.get_model_repository_index().models}
        assert server.client.is_server_live()
    finally:
        server.stop()
    assert index["facile"].state == "UNAVAILABLE"
    assert "kernel weights missing in" in index["facile"].reason and missing in index["facile"].reason
