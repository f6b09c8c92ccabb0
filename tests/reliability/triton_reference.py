"""A real NVIDIA Triton (the tritonserver 2.51 binary inside nvidia-pytriton 0.7.0) serving a stand-in
FACILE — a Python-backend model with FACILE's signature that answers zeros — so tests can ask Triton
itself how it answers a request instead of trusting anyone's memory of it. Parity with Triton is
about status codes and messages, not values.

The binary runs directly (not through pytriton's wrapper), in explicit model-control mode so the
repository RPCs can be probed. pytriton ships one Python-backend stub per Python version beside the
backend; ensure_triton_venv puts the venv's own next to libtriton_python.so, where the backend looks
for it. The stub embeds the venv's libpython (LD_LIBRARY_PATH: the interpreter's LIBDIR) and finds
the venv's numpy through the `python3` first on PATH, as pytriton arranges it.

Callers choose the fixture scope; stop the server with process.terminate() and process.wait().
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".venv-triton"

CONFIG = """name: "facile"
backend: "python"
max_batch_size: 65536
input [{ name: "input", data_type: TYPE_FP32, dims: [15] }]
output [{ name: "output", data_type: TYPE_FP32, dims: [1] }]
dynamic_batching {}
"""

MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "input").as_numpy().shape[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("output", np.zeros((rows, 1), np.float32))]))
        return responses
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_triton_venv():
    """Create the Triton venv if it is missing; returns (tritonserver dir, the interpreter's LIBDIR)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", VENV], check=True)
    where = subprocess.run(
        [
            python,
            "-c",
            "import pathlib, sys, sysconfig; print(sysconfig.get_config_var('LIBDIR'));"
            "print(f'{sys.version_info[0]}.{sys.version_info[1]}');"
            "print(pathlib.Path(sysconfig.get_paths()['purelib'], 'pytriton', 'tritonserver'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    libdir, version, server_dir = where[0], where[1], Path(where[2])
    stub = server_dir / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        subprocess.run([python, "-m", "pip", "install", "-q", "nvidia-pytriton==0.7.0", "numpy<2"], check=True)
        shutil.copy(server_dir / "python_backend_stubs" / version / stub.name, stub)
    return server_dir, libdir


def write_repository(directory):
    """The stand-in FACILE model repository."""
    (Path(directory) / "facile" / "1").mkdir(parents=True, exist_ok=True)
    (Path(directory) / "facile" / "config.pbtxt").write_text(CONFIG)
    (Path(directory) / "facile" / "1" / "model.py").write_text(MODEL)
    return Path(directory)


def start_triton(workdir, *options, metrics_port=None, timeout=120):
    """tritonserver on loopback serving the stand-in FACILE from workdir/repository, explicit mode with
    facile loaded, with tritonserver's `options` added (and metrics on `metrics_port`, else none);
    returns once facile is ready: (process, grpc_url, http_url). Its log: workdir/triton.log."""
    server_dir, libdir = ensure_triton_venv()
    repository = write_repository(Path(workdir) / "repository")
    grpc_port, http_port = _free_port(), _free_port()
    log = Path(workdir) / "triton.log"
    process = subprocess.Popen(
        [
            server_dir / "bin" / "tritonserver",
            "--model-repository",
            repository,
            "--model-control-mode",
            "explicit",
            "--load-model",
            "facile",
            "--backend-directory",
            server_dir / "backends",
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--http-address",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            *(["--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)] if metrics_port else []),
            *([] if metrics_port else ["--allow-metrics", "false"]),
            "--exit-timeout-secs",
            "5",
            *options,
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=os.environ | {"LD_LIBRARY_PATH": libdir, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"},
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/facile/ready", timeout=2):
                return process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}"
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"tritonserver not ready in {timeout} s: {log.read_text()[-3000:]}") from None
        time.sleep(0.3)
