"""deploy/Containerfile's runtime image, built by podman on a base that mmdebstrap makes from Debian
packages (deploy/container/base.sh), run by podman: health, metadata and one FACILE inference with
tritonclient, started as `tritonserver FLAGS` (as cmsTriton starts it) and through the entry point.

The toolchain stage (TensorFlow, hls4ml) is not rebuilt here: its two outputs are handed to the
runtime stage with --build-context, built from the same sources by the same steps on this machine (the
session's `faast build` of FACILE, `pip wheel` of the project). Containers run on this machine only
with runc and explicit ulimits (tests/support/podman.py says why)."""

import json
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import free_port
from support.podman import PODMAN, RUN_OPTIONS

# slow: a Debian root filesystem (cached after the first run), a wheel build, an image build
pytestmark = pytest.mark.slow


class Container:
    """podman run -d IMAGE ARGS... on the host's network, serving on free ports."""

    def __init__(self, image, *command, options=()):
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        ports = [
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
        ]
        run = subprocess.run(
            [*PODMAN, "run", "-d", *RUN_OPTIONS, *options, image, *command, *ports], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        self.id = run.stdout.strip()
        self.url = f"127.0.0.1:{self.grpc_port}"
        deadline = time.monotonic() + 90
        with grpcclient.InferenceServerClient(self.url) as client:
            while True:
                try:
                    if client.is_server_ready():
                        return
                except Exception:
                    state = self.inspect()["State"]
                    assert state["Running"], f"container exited {state['ExitCode']}: {self.logs()}"
                    assert time.monotonic() < deadline, self.logs()
                time.sleep(0.5)

    def inspect(self):
        return json.loads(subprocess.run([*PODMAN, "inspect", self.id], capture_output=True, check=True).stdout)[0]

    def logs(self):
        return subprocess.run([*PODMAN, "logs", self.id], capture_output=True, text=True).stdout[-3000:]

    def stop(self):
        """podman stop: SIGTERM, which faast answers by finishing its requests and exiting."""
        subprocess.run([*PODMAN, "stop", "--time", "30", self.id], check=True, capture_output=True)
        state = self.inspect()["State"]
        subprocess.run([*PODMAN, "rm", self.id], check=True, capture_output=True)
        return state["ExitCode"]


def test_the_runtime_image_is_non_root_has_a_healthcheck_and_no_toolchain(image):
    inspected = subprocess.run([*PODMAN, "image", "inspect", image], capture_output=True, check=True).stdout
    (description,) = json.loads(inspected)
    config = description["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["faast-entrypoint"] and config["Cmd"] == ["--model-repository=/models"]
    assert description["Healthcheck"]["Test"] == ["CMD", "faast-healthcheck"]  # podman shows it beside Config
    probe = (
        "import importlib.util as u, sys; "
        "print([m for m in ('tensorflow', 'keras', 'qkeras', 'hls4ml', 'faast', 'grpc') if u.find_spec(m)])"
    )
    run = subprocess.run(
        [*PODMAN, "run", "--rm", *RUN_OPTIONS, image, "python3", "-c", probe], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['faast', 'grpc']"
    tools = subprocess.run(
        [*PODMAN, "run", "--rm", *RUN_OPTIONS, image, "sh", "-c", "id -u; command -v g++ || echo no compiler"],
        capture_output=True,
        text=True,
    )
    assert tools.stdout.split() == ["10001", "no", "compiler"], tools.stdout + tools.stderr


def test_tritonserver_command_line_serves_facile_in_the_container(image, server, facile_inputs):
    features = facile_inputs[0][:128].astype(np.float32)
    tensor = grpcclient.InferInput("input", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    expected = server.client.infer("facile", [tensor]).as_numpy("output")  # faast from this checkout
    # read-only, as the Helm chart runs it (readOnlyRootFilesystem; podman mounts a tmpfs on /tmp)
    container = Container(
        image, "tritonserver", "--model-repository=/models", "--exit-timeout-secs=10", options=["--read-only"]
    )
    try:
        with grpcclient.InferenceServerClient(container.url) as client:
            assert client.is_server_live() and client.is_server_ready()
            metadata = client.get_model_metadata("facile", as_json=True)
            assert metadata["inputs"][0]["name"] == "input" and metadata["outputs"][0]["name"] == "output"
            answer = client.infer("facile", [tensor]).as_numpy("output")
        np.testing.assert_array_equal(answer, expected)
        http = httpclient.InferenceServerClient(f"127.0.0.1:{container.http_port}")
        try:
            assert http.is_server_ready() and http.is_model_ready("facile")
        finally:
            http.close()
        health = subprocess.run([*PODMAN, "healthcheck", "run", container.id], capture_output=True, text=True)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        exit_code = container.stop()
    assert exit_code == 0, container.logs()


def test_the_entry_point_takes_tritonserver_flags_alone(image):
    container = Container(image, "--model-repository=/models", "--id=faast-in-a-container")
    try:
        with grpcclient.InferenceServerClient(container.url) as client:
            assert client.is_model_ready("facile")
            assert client.get_server_metadata().name == "faast-in-a-container"  # the flags reached faast serve
    finally:
        assert container.stop() == 0
