"""libfastpath.so (host/fastpath.cpp, built by `pip install`) loads on first use: faast without it
still imports, and the first compiled step is a DeviceError that names the fix, not an OSError."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faast.contract.errors import DeviceError
from faast.contract.fixed import FixedType
from faast.host import fastpath

FIX = "reinstall faast with `pip install .`, which builds libfastpath.so with g++"


@pytest.fixture
def library_at(monkeypatch):
    """Points the loader at another file, with nothing loaded or looked up yet; the real library after."""

    def point(path):
        monkeypatch.setattr(fastpath, "_LIBRARY_PATH", path)
        monkeypatch.setattr(fastpath, "_FUNCTIONS", {})
        fastpath._library.cache_clear()

    yield point
    fastpath._library.cache_clear()  # before monkeypatch restores the path: the next use loads the real one


def test_missing_library_is_a_device_error_naming_the_fix(library_at, tmp_path):
    missing = tmp_path / "libfastpath.so"
    library_at(missing)
    for first_use in (
        lambda: fastpath.Requantize(4, 0.0),  # an emulator step, prepared when the device opens
        lambda: FixedType(16, 9, True).to_bits(np.zeros(3)),  # the host packing a wrapping input type
        lambda: fastpath.windows(np.zeros((1, 2, 2, 1)), (1, 1), (1, 1), ((0, 0), (0, 0)), np.float64),
    ):
        with pytest.raises(DeviceError) as error:
            first_use()
        assert str(error.value) == f"faast's compiled loops {missing} are missing: {FIX}"


def test_unloadable_library_is_a_device_error_naming_the_fix(library_at, tmp_path):
    broken = tmp_path / "libfastpath.so"
    broken.write_bytes(b"not a shared object")
    library_at(broken)
    with pytest.raises(DeviceError, match=r"cannot be loaded \(.+\): reinstall faast with `pip install \.`"):
        fastpath.Requantize(4, 0.0)


def test_a_failed_load_is_retried_and_the_library_then_works(library_at, tmp_path):
    real = fastpath._LIBRARY_PATH
    library_at(tmp_path / "libfastpath.so")
    with pytest.raises(DeviceError):
        fastpath.Requantize(4, 0.0)
    library_at(real)
    values = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert np.array_equal(fastpath.Requantize(4, 1.0)(values, np.empty_like(values)), values + 1)


def test_faast_imports_without_the_library(tmp_path):
    """The installed faast.host, copied without libfastpath.so: every module imports, the error comes at use."""
    installed = Path(fastpath.__file__).parent
    (tmp_path / "faast").mkdir()
    shutil.copy(installed.parent / "__init__.py", tmp_path / "faast" / "__init__.py")
    shutil.copytree(
        installed, tmp_path / "faast" / "host", ignore=shutil.ignore_patterns("libfastpath.so", "__pycache__")
    )
    script = (
        "import faast.host.emulator, faast.host.fastpath, faast.host.fixed, faast.host.packing\n"
        "from faast.host.device import DeviceError\n"
        f"assert faast.host.fastpath.__file__.startswith({str(tmp_path)!r})\n"
        "try:\n"
        "    faast.host.fastpath.Requantize(4, 0.0)\n"
        "except DeviceError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(FIX)
