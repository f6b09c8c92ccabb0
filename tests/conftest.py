"""Fixtures shared by the suite: a FACILE model repository built for real with hls4ml, and real
`faast serve` processes on free loopback ports. Helpers (paths, Server, hls4ml in child processes,
recording stand-ins) are in the support package: `from support import Server`."""

import subprocess
import sys

import pytest

pytest.register_assert_rewrite("support")  # the helpers' asserts report like the tests' own

from support import BIN, ROOT, Server  # noqa: E402


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory):
    """`faast build kernels/facile` into a fresh repository, once per session."""
    repo = tmp_path_factory.mktemp("repository")
    subprocess.run([BIN / "faast", "build", ROOT / "kernels" / "facile", "--out", repo], check=True, cwd=repo)
    return repo


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
