"""Real `faast serve` processes on free loopback ports."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from .paths import BIN


def facile_with_config(model_repository, folder, old, new):
    """A repository in folder/repository holding a copy of model_repository's facile whose
    config.pbtxt has `old` (which must be there) replaced by `new`."""
    repository = Path(folder) / "repository"
    shutil.copytree(Path(model_repository) / "facile", repository / "facile")
    config = repository / "facile" / "config.pbtxt"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return repository


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
