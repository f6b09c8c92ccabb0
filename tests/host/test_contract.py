"""The kernel contract (faast.contract): one error table through the class hierarchy, kernel.json
typed and versioned, and a client's shared memory that nothing but the guarded code can read."""

import json
import subprocess
import sys

import numpy as np
import pytest

from faast.contract import errors
from faast.contract.errors import KernelFormatError
from faast.contract.kernel import FORMAT_VERSION, KernelDescription
from faast.contract.memory import ClientMemory
from faast.host import fastpath


def test_each_error_answers_through_its_class_hierarchy():
    class Refused(errors.Unavailable):  # a subclass no table names still answers as its parent
        pass

    assert (Refused.grpc_code, Refused.http_status, Refused.failure_reason) == ("UNAVAILABLE", 503, "REJECTED")
    assert (errors.InvalidArgument.grpc_code, errors.InvalidArgument.http_status) == ("INVALID_ARGUMENT", 400)
    assert (errors.NotFound.http_status, errors.Unimplemented.http_status, errors.Internal.http_status) == (
        404,
        501,
        500,
    )
    assert errors.ComputeUnitFault.failure_reason == "BACKEND" and issubclass(
        errors.ComputeUnitFault, errors.DeviceError
    )
    assert not issubclass(errors.DeviceError, errors.InferenceError)  # a device's failure is not a client's answer


def test_kernel_json_round_trips_typed(model_repository):
    folder = model_repository / "facile" / "1"
    description = KernelDescription.read(folder)
    assert json.loads((folder / "kernel.json").read_text())["format_version"] == FORMAT_VERSION
    assert description.input_size == 15 and description.output_size == 1
    dense = next(layer for layer in description.layers if layer.class_name == "Dense")
    assert dense.integer("n_in") == 15 and dense.text("strategy") == "latency"
    assert dense.type("accum_t").width > 16 and dense.templates["product"] == "mult"
    with pytest.raises(KernelFormatError, match="has no attribute stride_height"):
        dense.integer("stride_height")
    with pytest.raises(KernelFormatError, match="attribute n_in is 15"):
        dense.text("n_in")
    assert KernelDescription.from_json(description.to_json(), folder) == description


def test_another_format_version_is_refused_with_the_rebuild_command(tmp_path, model_repository):
    entry = json.loads((model_repository / "facile" / "1" / "kernel.json").read_text())
    (tmp_path / "kernel.json").write_text(json.dumps(entry | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(
        KernelFormatError, match=r"format version 2; this faast reads version 1.*faast build .*--replace"
    ):
        KernelDescription.read(tmp_path)
    del entry["format_version"]  # written before the version was: the same layout, read as version 1
    (tmp_path / "kernel.json").write_text(json.dumps(entry))
    assert KernelDescription.read(tmp_path).name == "facile"
    (tmp_path / "kernel.json").write_text(json.dumps({"format_version": 1, "name": "x"}))
    with pytest.raises(KernelFormatError, match="is not a kernel description"):
        KernelDescription.read(tmp_path)


def test_client_memory_is_refused_by_everything_but_the_guarded_functions():
    memory = ClientMemory(np.arange(8, dtype=np.float32).reshape(4, 2))
    for read in (np.asarray, np.sum, lambda m: np.concatenate([m]), list, lambda m: m[0]):
        with pytest.raises(TypeError, match="only by faast.host.fastpath's guarded functions"):
            read(memory)
    for read in (memoryview, bytes):  # no buffer protocol either
        with pytest.raises(TypeError):
            read(memory)
    rows = memory[1:3]  # cutting rows reads nothing
    assert isinstance(rows, ClientMemory) and rows.shape == (2, 2) and len(rows) == 2
    from faast.contract.fixed import FixedType

    lanes = fastpath.wrapped_bits(rows, FixedType.parse("ap_fixed<16,9>"), np.empty((2, 2), np.uint16))
    assert lanes.tolist() == [[2 * 128, 3 * 128], [4 * 128, 5 * 128]]


def test_mypy_refuses_client_memory_where_an_array_is_expected(tmp_path):
    """The type check: code that would hand a client's memory to numpy does not pass .ci/lint."""
    program = tmp_path / "misuse.py"
    program.write_text(
        "import numpy as np\n"
        "from faast.contract.memory import ClientMemory\n"
        "def total(rows: np.ndarray) -> float:\n"
        "    return float(rows.sum())\n"
        "total(ClientMemory(memoryview(b'1234')))\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--ignore-missing-imports", str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert checked.returncode == 1 and 'incompatible type "ClientMemory"; expected "ndarray' in checked.stdout, (
        checked.stdout
    )
