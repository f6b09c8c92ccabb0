"""The PYNQ driver on PYNQ 3.0.1 itself: its Overlay, xclbin parser, DefaultIP and `_create_call`,
ErtWaitHandle and XrtDevice run as shipped, on a real axlf xclbin describing faast's build
(tests/support/axlf.py); only XRT's C library below them is stood in, its cards computing with the
emulator (tests/support/standin_libxrt.py). Answers are checked against hls4ml's C simulation. No
hardware result is claimed."""

import asyncio
import importlib
import logging
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import axlf, recording_pyxrt, standin_libxrt
from support.cards import F1_SHELL, U250_SHELL, facile_rows

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice
from faast.host.drivers import open_device
from faast.host.pynq_driver import PynqDevice, cards

COMPLETED, ERROR, ABORT = 4, 5, 6  # ERT states, as PYNQ's ert.ert_cmd_state numbers them


@pytest.fixture
def version_dir(version_dir):
    axlf.write(version_dir)
    return version_dir


@pytest.fixture
def pynq(monkeypatch):
    """The real pynq over the stand-in library; pyxrt lists no card, so `auto` looks at PYNQ."""
    monkeypatch.setitem(sys.modules, "pyxrt", recording_pyxrt.module())
    monkeypatch.setattr("faast.host.xrt_driver.KERNEL_TIMEOUT_MS", 2000)  # a few hundred emulated rows: ms
    recording_pyxrt.install([])
    yield standin_libxrt.real_pynq()
    standin_libxrt.install([])


@pytest.fixture
def expected(version_dir):
    """hls4ml's C simulation of the same version, bit for bit."""
    csim = CsimDevice(KernelDescription.read(version_dir))
    yield lambda rows: csim.run(rows).view(np.uint32)
    csim.close()


def test_pynq_reads_the_xclbin_as_faast_built_it(version_dir, pynq):
    standin_libxrt.install([{"name": U250_SHELL}])
    (card,) = cards(pynq)  # as the driver lists them: in a thread with an event loop
    overlay = pynq.Overlay(str(version_dir / "facile.xclbin"), device=card)
    connectivity = (version_dir / "vitis" / "connectivity.u250.cfg").read_text()
    banks = dict(re.findall(r"^sp=(\w+)\.inputs:(\S+)$", connectivity, re.M))
    assert sorted(overlay.ip_dict) == sorted(banks) == [f"facile_top_{i}" for i in range(1, 5)]
    assert sorted(overlay.mem_dict) == sorted(set(banks.values()))
    for name, bank in banks.items():
        ip = getattr(overlay, name)
        assert list(ip.signature.parameters) == ["inputs", "outputs", "rows"]
        assert [(a.name, a.mem) for a in ip.args.values()] == [("inputs", bank), ("outputs", bank), ("rows", None)]


def test_facile_runs_through_pynq_on_two_cards(version_dir, pynq, expected):
    standin_libxrt.install([{"name": U250_SHELL}, {"name": U250_SHELL}])
    device = PynqDevice(KernelDescription.read(version_dir))
    assert [cu.name for cu in device.compute_units] == [f"card{c}/facile_top_{i}" for c in (0, 1) for i in range(1, 5)]
    for rows in (facile_rows(1, seed=1), facile_rows(40000, seed=2)):
        assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert {(card, cu) for card, cu, _ in standin_libxrt.COMMANDS} == {
        (c, f"facile_top_{i}") for c in (0, 1) for i in range(1, 5)
    }
    assert device.health() == (True, "8 of 8 compute units in rotation")
    device.close()


def test_failed_runs_are_faults_and_their_units_come_back(version_dir, pynq, expected, caplog):
    caplog.set_level(logging.INFO, logger="faast.host")
    standin_libxrt.install([{"name": U250_SHELL, "fail": {"facile_top_1": [ERROR], "facile_top_3": [ABORT]}}])
    device = PynqDevice(KernelDescription.read(version_dir))
    rows = facile_rows(4000, seed=3)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))  # retried, never stale
    assert device.out_of_rotation() == [
        ("card0/facile_top_1", f"kernel card0/facile_top_1 failed: Execution failed: {ERROR}"),
        ("card0/facile_top_3", f"kernel card0/facile_top_3 failed: Execution failed: {ABORT}"),
    ]
    assert "retrying 1000 rows of 'facile' on card0/facile_top_" in caplog.text
    assert device.recover() == ["card0/facile_top_1", "card0/facile_top_3"]
    assert device.health() == (True, "4 of 4 compute units in rotation")
    standin_libxrt.COMMANDS.clear()
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert sorted(standin_libxrt.COMMANDS) == [(0, f"facile_top_{i}", COMPLETED) for i in range(1, 5)]
    device.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # PYNQ completing a run twice
def test_concurrent_runs_lose_and_double_no_completion(version_dir, pynq, expected):
    """Many callers start and pump one card's runs at once: every run completes exactly once (a lost
    one would time out and fault its unit; a doubled one raises in PYNQ and returns its exec buffer
    to the cache twice)."""
    standin_libxrt.install([{"name": U250_SHELL}])
    device = PynqDevice(KernelDescription.read(version_dir))
    batches = [facile_rows(20 + 37 * (i % 24), seed=i) for i in range(96)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads change hands between almost any two bytecodes: races show
    try:
        with ThreadPoolExecutor(8) as pool:
            served = list(pool.map(device.run, batches))
    finally:
        sys.setswitchinterval(switching)
    for got, rows in zip(served, batches, strict=True):
        assert np.array_equal(got.view(np.uint32), expected(rows))
    executions, rows_run, _ = device.usage()
    assert rows_run == sum(len(b) for b in batches) and device.out_of_rotation() == []
    assert len(standin_libxrt.COMMANDS) == executions  # each start finished once, none retried
    (card,) = pynq.Device.devices
    assert card.active_bos == []  # PYNQ waits on nothing it was not told about
    assert len({id(bo) for bo in card._bo_cache}) == len(card._bo_cache)  # each exec buffer returned once
    device.close()


def test_pynq_opens_from_a_thread_without_an_event_loop(version_dir, pynq, expected):
    standin_libxrt.install([{"name": U250_SHELL}])
    listed = []
    thread = threading.Thread(target=lambda: listed.append(_devices_or_error(pynq)))
    thread.start()
    thread.join()
    # PYNQ's own behaviour, read directly: XrtDevice wants an event loop, and the empty list stays.
    assert isinstance(listed[0], RuntimeError) and "no current event loop" in str(listed[0])
    assert pynq.Device.devices == []

    standin_libxrt.install([{"name": U250_SHELL}])

    async def serve():  # as faast serve opens a model's device: asyncio.to_thread off its loop
        device = await asyncio.to_thread(PynqDevice, KernelDescription.read(version_dir))
        rows = facile_rows(300, seed=4)
        return device, rows, await asyncio.to_thread(device.run, rows)

    device, rows, served = asyncio.run(serve())
    assert np.array_equal(served.view(np.uint32), expected(rows))
    device.close()


def _devices_or_error(pynq):
    try:
        return pynq.Device.devices
    except RuntimeError as error:
        return error


def test_auto_falls_back_when_pynq_raises(version_dir, pynq, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="faast.host")
    standin_libxrt.install([{"name": U250_SHELL}])
    device_info = standin_libxrt.LIBRARY.functions["xclGetDeviceInfo2"]
    monkeypatch.delitem(standin_libxrt.LIBRARY.functions, "xclGetDeviceInfo2")  # an XRT without it
    device = open_device("auto", version_dir)
    assert device.kind == "emulator"
    assert "pynq: AttributeError: libxrt_core.so (stand-in): undefined symbol: xclGetDeviceInfo2" in caplog.text
    device.close()

    monkeypatch.setitem(standin_libxrt.LIBRARY.functions, "xclGetDeviceInfo2", device_info)
    standin_libxrt.install([{"name": F1_SHELL}])  # listed, but an F1 cannot load a U250 xclbin
    device = open_device("auto", version_dir)
    assert device.kind == "emulator" and "pynq: DeviceError: cannot load facile.xclbin on card 0" in caplog.text
    device.close()

    real_import = importlib.import_module

    def import_module(name, *args):
        if name == "pynq":
            raise OSError("libxrt_core.so: cannot open shared object file")  # what ctypes raises in pynq
        return real_import(name, *args)

    monkeypatch.delitem(sys.modules, "pynq")
    monkeypatch.setattr("importlib.import_module", import_module)
    device = open_device("auto", version_dir)
    assert device.kind == "emulator"
    assert "importing pynq failed: OSError: libxrt_core.so: cannot open shared object file" in caplog.text
    device.close()


def test_pynq_driver_errors_are_clear(version_dir, pynq):
    standin_libxrt.install([])
    with pytest.raises(DeviceError, match="found no Alveo card"):
        PynqDevice(KernelDescription.read(version_dir))
    standin_libxrt.install([{"name": F1_SHELL}])
    with pytest.raises(DeviceError, match="cannot load facile.xclbin on card 0 .*Shell does not match"):
        PynqDevice(KernelDescription.read(version_dir))
