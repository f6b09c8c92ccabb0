"""Fixtures shared by the suite: a FACILE model repository built for real with hls4ml, and real
`faast serve` processes on free loopback ports."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# -P: never import the source tree from the working directory; always the installed package.
PYTHON = [sys.executable, "-P"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory):
    """`faast build kernels/facile` into a fresh repository, once per session."""
    repo = tmp_path_factory.mktemp("repository")
    subprocess.run([BIN / "faast", "build", ROOT / "kernels" / "facile", "--out", repo], check=True, cwd=repo)
    return repo


class Server:
    """A real `faast serve` process; waits until it is live (and ready, unless told otherwise)."""

    def __init__(self, repository, log_path, *options, expect_ready=True):
        self.port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                BIN / "faast",
                "serve",
                "--model-repository",
                repository,
                "--grpc-port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                "--metrics-port",
                str(self.metrics_port),
                "--host",
                "127.0.0.1",
                *options,
            ],
            stdout=open(log_path, "w"),
            stderr=subprocess.STDOUT,
            cwd=repository,
        )
        self.client = grpcclient.InferenceServerClient(self.url)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"faast serve exited: {Path(log_path).read_text()}")
            try:
                if self.client.is_server_live() and (self.client.is_server_ready() or not expect_ready):
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def stop(self):
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(model_repository, tmp_path_factory):
    running = Server(model_repository, tmp_path_factory.mktemp("logs") / "serve.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def facile_inputs():
    """Held-out synthetic HCAL channels (features, true energy) from the kernel's own generator."""
    sys.path.insert(0, str(ROOT / "kernels" / "facile"))
    try:
        import data
    finally:
        sys.path.pop(0)
    return data.generate(57334, seed=2024)


def hls4ml_predict(project_dir, rows, workdir):
    """hls4ml's own predict() on an existing project, in a child process (TensorFlow stays out of here)."""
    x_path, y_path = Path(workdir) / "x.npy", Path(workdir) / "y.npy"
    np.save(x_path, np.ascontiguousarray(rows, dtype=np.float32))
    subprocess.run(
        [*PYTHON, ROOT / "tests" / "hls4ml_predict.py", project_dir, x_path, y_path],
        check=True,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return np.load(y_path)
