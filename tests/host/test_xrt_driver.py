"""The XRT driver against the recording pyxrt stand-in of each recorded XRT release (no hardware): the
API it opens a compute unit with, the memory bank of each buffer, and the image it loads on an Alveo
card and on F1. Every answer is checked bit for bit against the C simulation."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from support import BIN, ROOT, recording_pyxrt
from support.cards import F1_SHELL, U250_PLATFORM, U250_SHELL, facile_rows, fake_xclbin

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice
from faast.host.xrt_driver import XrtDevice, run_timeout_ms

F1_PLATFORM = "xilinx_aws-vu9p-f1_shell-v04261818_201920_3"
STANDIN_SITE = ROOT / "tests" / "support" / "standin_site"


@pytest.fixture
def expected(version_dir):
    csim = CsimDevice(KernelDescription.read(version_dir))
    yield lambda rows: csim.run(rows).view(np.uint32)
    csim.close()


def _standin(monkeypatch, revision=None):
    pyxrt = recording_pyxrt.module(revision)
    monkeypatch.setitem(sys.modules, "pyxrt", pyxrt)
    return pyxrt


def _calls(kind):
    return [call for call in recording_pyxrt.CALLS if call[0] == kind]


def test_the_outputs_buffer_is_in_the_bank_of_the_outputs_argument(version_dir, monkeypatch, expected):
    fake_xclbin(version_dir)
    spec = json.loads((version_dir / "facile.xclbin").read_text())
    spec["groups"] = {cu: [i, 4 + i] for i, cu in enumerate(spec["cus"])}  # outputs in a bank of their own
    (version_dir / "facile.xclbin").write_text(json.dumps(spec))
    _standin(monkeypatch)
    recording_pyxrt.install([{"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    assert sorted({call[3] for call in _calls("bo")}) == list(range(8))
    rows = facile_rows(3000, seed=2)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert not _calls("copy to connected bank")  # XRT ran on no copy: every buffer is where its argument is
    device.close()


def test_a_release_with_hw_context_opens_units_through_it(version_dir, monkeypatch, expected):
    fake_xclbin(version_dir)
    _standin(monkeypatch, "master")
    recording_pyxrt.install([{"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    assert ("register_xclbin", 0, "facile.xclbin") in recording_pyxrt.CALLS
    assert ("kernel", 0, "facile_top:{facile_top_1}") in recording_pyxrt.CALLS  # kernel(hw_context, name)
    assert len(_calls("hw_context")) == 4
    assert not _calls("load_xclbin")  # deprecated at master
    assert all(len(call) == 3 for call in _calls("kernel"))  # never kernel(device, uuid, name, mode)
    rows = facile_rows(2000, seed=4)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    device.close()


@pytest.mark.parametrize("revision", ["202120.2.12.427", "202210.2.13.466"])
def test_a_release_without_hw_context_loads_the_xclbin(version_dir, monkeypatch, expected, revision):
    fake_xclbin(version_dir)
    pyxrt = _standin(monkeypatch, revision)
    recording_pyxrt.install([{"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    assert _calls("load_xclbin") and not _calls("hw_context")
    assert ("kernel", 0, "facile_top:{facile_top_1}", pyxrt.kernel.shared) in recording_pyxrt.CALLS
    rows = facile_rows(1000, seed=5)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    device.close()


def test_an_alveo_card_loads_the_xclbin_and_f1_the_awsxclbin_beside_it(version_dir, monkeypatch):
    fake_xclbin(version_dir)  # facile.xclbin, for the U250
    fake_xclbin(version_dir, platform=F1_PLATFORM, cus=2, name="facile.awsxclbin")  # sorts first
    kernel = KernelDescription.read(version_dir)
    assert [path.name for path in kernel.xclbins()] == ["facile.awsxclbin", "facile.xclbin"]
    _standin(monkeypatch)

    recording_pyxrt.install([{"name": U250_SHELL}])
    XrtDevice(kernel).close()
    assert {call[2] for call in _calls("load_xclbin")} == {"facile.xclbin"}

    recording_pyxrt.install([{"name": F1_SHELL}])
    device = XrtDevice(kernel)
    assert {call[2] for call in _calls("load_xclbin")} == {"facile.awsxclbin"}
    assert [cu.name for cu in device.compute_units] == ["card0/facile_top_1", "card0/facile_top_2"]
    device.close()

    (version_dir / "facile.awsxclbin").unlink()
    fake_xclbin(version_dir, platform=F1_PLATFORM, cus=2)  # an F1 build whose AFI was never made
    with pytest.raises(DeviceError, match="F1 loads the AFI's .awsxclbin: build it with `make TARGET_BOARD=aws-f1`"):
        XrtDevice(kernel)


def test_the_timeout_grows_with_the_rows_of_the_run(version_dir, monkeypatch):
    fake_xclbin(version_dir)
    _standin(monkeypatch)
    monkeypatch.setattr("faast.host.xrt_driver.KERNEL_TIMEOUT_MS", 50)
    monkeypatch.setattr("faast.host.xrt_driver.KERNEL_TIMEOUT_PER_ROW_US", 100)
    assert run_timeout_ms(16384) > run_timeout_ms(1000) > run_timeout_ms(10)
    recording_pyxrt.install([{"name": U250_SHELL, "hang": {f"facile_top_{i}" for i in range(1, 5)}}])
    device = XrtDevice(KernelDescription.read(version_dir))
    with pytest.raises(DeviceError, match="did not complete within") as failure:
        device.run(facile_rows(1000))
    first_rows = _calls("start")[0][5]
    assert f"did not complete within {round(50 + first_rows * 0.1)} ms" in str(failure.value)
    device.close()


def test_faast_devices_places_a_version_on_the_image_its_cards_load(model_repository, version_dir, tmp_path):
    fake_xclbin(version_dir)
    fake_xclbin(version_dir, platform=F1_PLATFORM, cus=2, name="facile.awsxclbin")
    repository = version_dir.parents[1]
    shutil.copy(model_repository / "facile" / "config.pbtxt", repository / "facile")
    outputs = {}
    for board, shell in (("u250", U250_SHELL), ("aws-f1", F1_SHELL)):
        (tmp_path / "cards.json").write_text(json.dumps([{"name": shell}]))
        environment = {
            **os.environ,
            "FAAST_STANDIN_CARDS": str(tmp_path / "cards.json"),
            "PYTHONPATH": str(STANDIN_SITE),
        }
        result = subprocess.run(
            [BIN / "faast", "devices", repository], capture_output=True, text=True, env=environment, check=True
        )
        outputs[board] = result.stdout
    assert f"  facile/1 -> xrt: facile.xclbin is built for {U250_PLATFORM} (u250), as card0" in outputs["u250"]
    assert f"  facile/1 -> xrt: facile.awsxclbin is built for {F1_PLATFORM} (aws-f1), as card0" in outputs["aws-f1"]
