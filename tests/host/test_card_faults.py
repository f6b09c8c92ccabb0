"""Card faults through the drivers, on the recording stand-in of pyxrt and on PYNQ itself over a
stand-in of XRT's library (no hardware): a compute unit that hangs leaves the rotation and its rows
are retried once elsewhere; a card that vanishes takes its units out and the device keeps serving
on the others, or reports why it cannot; a card that comes back is reopened. Every call answers
exactly once, with the C simulation's bits."""

import gc
import json
import logging
import shutil
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import ROOT, Server, axlf, recording_pyxrt, standin_libxrt
from support.cards import U250_SHELL, facile_rows, fake_xclbin
from tritonclient.utils import InferenceServerException

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice
from faast.host.pynq_driver import PynqDevice
from faast.host.xrt_driver import XrtComputeUnit, XrtDevice, run_timeout_ms

TIMEOUT_MS = 1000  # the stand-in card runs the C simulation: ~0.1 ms a row, a few hundred rows a run


@pytest.fixture
def version_dir(version_dir):
    fake_xclbin(version_dir)
    return version_dir


@pytest.fixture
def standins(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", recording_pyxrt.module())
    standin_libxrt.real_pynq()
    monkeypatch.setattr("faast.host.xrt_driver.KERNEL_TIMEOUT_MS", TIMEOUT_MS)  # both drivers' bound


@pytest.fixture
def expected(version_dir):
    """The C simulation's answers for a batch, bit for bit."""
    csim = CsimDevice(KernelDescription.read(version_dir))
    yield lambda rows: csim.run(rows).view(np.uint32)
    csim.close()


def _starts(calls):
    return [call for call in calls if call[0] == "start"]


def test_a_hung_unit_leaves_the_rotation_and_its_rows_are_retried_once(version_dir, standins, expected, caplog):
    caplog.set_level(logging.INFO, logger="faast.host")
    recording_pyxrt.install([{"name": U250_SHELL, "hang": {"facile_top_2"}}])
    device = XrtDevice(KernelDescription.read(version_dir))
    rows = facile_rows(2000)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    starts = _starts(recording_pyxrt.CALLS)
    assert len(starts) == 5  # 4 executions of 500 rows, and one retry of the hung one's rows
    assert [s[2] for s in starts].count("facile_top:{facile_top_2}") == 1
    bound = round(run_timeout_ms(500))  # the timeout scales with the run's rows
    assert bound > TIMEOUT_MS
    assert device.out_of_rotation() == [
        ("card0/facile_top_2", f"kernel card0/facile_top_2 did not complete within {bound} ms")
    ]
    assert "compute unit card0/facile_top_2 taken out of rotation: kernel card0/facile_top_2 did not" in caplog.text
    assert device.health() == (
        True,
        f"3 of 4 compute units in rotation (card0/facile_top_2: kernel card0/facile_top_2 did not complete "
        f"within {bound} ms)",
    )

    recording_pyxrt.CALLS.clear()
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert "facile_top:{facile_top_2}" not in [s[2] for s in _starts(recording_pyxrt.CALLS)]
    assert device.recover() == []  # a unit that hung on a present card stays out: XRT cannot reset it
    device.close()


def test_the_standin_recycles_a_dropped_runs_command_as_xrt_does(version_dir, standins):
    """Why a driver must hold a run it gave up on: XRT gives a dropped run's command buffer back to its
    cache while the card still owns the command, and the late completion lands on the next run."""
    recording_pyxrt.install([{"name": U250_SHELL, "slow": {"facile_top_1": [0.6, 0.6]}}])
    pyxrt = sys.modules["pyxrt"]
    card = pyxrt.device(0)
    uuid = card.load_xclbin(str(version_dir / "facile.xclbin"))
    kernel = pyxrt.kernel(card, uuid, "facile_top:{facile_top_1}", pyxrt.kernel.shared)
    inputs, outputs = (
        [pyxrt.bo(card, 4096, pyxrt.bo.normal, kernel.group_id(arg)) for _ in range(2)] for arg in (0, 1)
    )
    first = kernel(inputs[0], outputs[0], 10)
    del first  # what the old driver did after its timeout
    gc.collect()
    second = kernel(inputs[1], outputs[1], 10)
    deadline = time.monotonic() + 5
    while second.state() != pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ("done", "facile_top:{facile_top_1}", id(inputs[1])) not in recording_pyxrt.CALLS  # COMPLETED early
    assert ("command released while on the card", "facile_top:{facile_top_1}") in recording_pyxrt.CALLS


def test_a_slow_unit_keeps_its_run_until_xrt_completes_it_then_comes_back(version_dir, standins, expected):
    slow_s = 1.5 * run_timeout_ms(500) / 1000
    recording_pyxrt.install([{"name": U250_SHELL, "slow": {"facile_top_2": [slow_s]}}])
    device = XrtDevice(KernelDescription.read(version_dir))
    rows = facile_rows(2000, seed=11)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))  # its rows retried elsewhere
    assert [name for name, _ in device.out_of_rotation()] == ["card0/facile_top_2"]
    gc.collect()
    assert device.recover() == []  # the card still runs the command: the unit stays out, its run held
    deadline = time.monotonic() + 10 * slow_s
    while not (recovered := device.recover()):
        assert time.monotonic() < deadline, "the slow unit never came back"
        time.sleep(0.05)
    assert recovered == ["card0/facile_top_2"]
    assert not [call for call in recording_pyxrt.CALLS if call[0] == "command released while on the card"]

    recording_pyxrt.CALLS.clear()
    rows = facile_rows(2000, seed=12)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert "facile_top:{facile_top_2}" in [s[2] for s in _starts(recording_pyxrt.CALLS)]
    assert device.health() == (True, "4 of 4 compute units in rotation")
    device.close()


def test_concurrent_calls_each_get_exactly_one_answer_while_a_unit_hangs(version_dir, standins, expected):
    recording_pyxrt.install([{"name": U250_SHELL, "hang": {"facile_top_1"}}])
    device = XrtDevice(KernelDescription.read(version_dir))
    batches = [facile_rows(1000 + 250 * i, seed=i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(device.run, batches))
    assert len(answers) == len(batches)
    for batch, answer in zip(batches, answers, strict=True):
        assert np.array_equal(answer.view(np.uint32), expected(batch))
    hung = [s for s in _starts(recording_pyxrt.CALLS) if s[2] == "facile_top:{facile_top_1}"]
    # Taken out at its first timeout, never started again: the runs already queued on it (one more
    # than the first, with overlapping transfers) fail over with the first.
    assert len(hung) <= XrtComputeUnit.overlapping_runs
    device.close()


def test_a_vanished_card_leaves_the_others_serving_and_comes_back(version_dir, standins, expected, caplog):
    caplog.set_level(logging.INFO, logger="faast.host")
    recording_pyxrt.install([{"name": U250_SHELL}, {"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    rows = facile_rows(4000, seed=3)

    recording_pyxrt.CARDS[1]["present"] = False
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert [name for name, _ in device.out_of_rotation()] == [f"card1/facile_top_{i}" for i in range(1, 5)]
    assert all("device is gone" in why for _, why in device.out_of_rotation())
    assert device.health()[0] is True

    recording_pyxrt.CARDS[0]["present"] = False
    with pytest.raises(DeviceError, match="device is gone"):
        device.run(rows)
    ready, reason = device.health()
    assert not ready and reason.startswith("every compute unit is out of rotation (card0/facile_top_")
    with pytest.raises(DeviceError, match="no compute unit of 'facile' is in rotation"):
        device.run(rows)  # refused at once: nothing is started on a card that is gone
    assert device.recover() == []  # still gone

    for card in recording_pyxrt.CARDS:
        card["present"] = True
    recording_pyxrt.CALLS.clear()
    assert device.recover() == [f"card{c}/facile_top_{i}" for c in (0, 1) for i in range(1, 5)]
    assert [c[1:] for c in recording_pyxrt.CALLS if c[0] == "load_xclbin"].count((0, "facile.xclbin")) == 4
    assert len([c for c in recording_pyxrt.CALLS if c[0] == "bo"]) == 8 * 2 * 2  # fresh buffers on the new handles
    assert device.health() == (True, "8 of 8 compute units in rotation")
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert "compute unit card1/facile_top_4 of 'facile' back in rotation" in caplog.text
    device.close()


def test_pynq_a_hung_unit_is_given_up_on_and_its_rows_retried(version_dir, standins, expected):
    axlf.write(version_dir)  # PYNQ reads a real xclbin
    standin_libxrt.install([{"name": U250_SHELL, "hang": {"facile_top_1"}}])
    device = PynqDevice(KernelDescription.read(version_dir))
    rows = facile_rows(1000, seed=5)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert device.out_of_rotation() == [  # the bound of its 250 rows, as the XRT driver's
        ("card0/facile_top_1", f"kernel card0/facile_top_1 did not complete within {round(run_timeout_ms(250))} ms")
    ]
    finished = [cu for _, cu, _ in standin_libxrt.COMMANDS]  # 4 runs of 250 rows, the hung one's again
    assert len(finished) == 4 and "facile_top_1" not in finished
    assert device.recover() == []  # a hung run stays queued on its CU: no way back, as with XRT
    device.close()


def test_pynq_a_vanished_card_leaves_the_other_serving_and_comes_back(version_dir, standins, expected):
    axlf.write(version_dir)
    standin_libxrt.install([{"name": U250_SHELL}, {"name": U250_SHELL}])
    device = PynqDevice(KernelDescription.read(version_dir))
    standin_libxrt.CARDS[1]["present"] = False
    rows = facile_rows(2000, seed=6)
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert [name for name, _ in device.out_of_rotation()] == [f"card1/facile_top_{i}" for i in range(1, 5)]
    assert device.recover() == []  # still gone
    standin_libxrt.CARDS[1]["present"] = True
    assert device.recover() == [f"card1/facile_top_{i}" for i in range(1, 5)]
    standin_libxrt.COMMANDS.clear()
    assert np.array_equal(device.run(rows).view(np.uint32), expected(rows))
    assert {card for card, _, _ in standin_libxrt.COMMANDS} == {0, 1}
    device.close()


@pytest.mark.slow  # a real server; the hung unit costs the driver's own timeout (10 s and the rows')
def test_served_requests_each_get_exactly_one_reply_while_a_unit_hangs(model_repository, tmp_path, monkeypatch):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile")
    version = repository / "facile" / "1"
    fake_xclbin(version)
    (tmp_path / "cards.json").write_text(json.dumps([{"name": U250_SHELL, "hang": ["facile_top_3"]}]))
    monkeypatch.setenv("FAAST_STANDIN_CARDS", str(tmp_path / "cards.json"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests" / "support" / "standin_site"))
    server = Server(repository, tmp_path / "serve.log")
    batches = [facile_rows(200 + 50 * i, seed=i) for i in range(12)]

    def infer(rows):
        tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        with grpcclient.InferenceServerClient(server.url) as client:
            return client.infer("facile", [tensor]).as_numpy("output")

    try:
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(infer, batches))
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "device auto for 'facile': xrt" in log
    assert "compute unit card0/facile_top_3 taken out of rotation" in log
    csim = CsimDevice(KernelDescription.read(version))
    assert len(replies) == len(batches)
    for rows, reply in zip(batches, replies, strict=True):
        assert np.array_equal(reply.view(np.uint32), csim.run(rows).view(np.uint32))
    csim.close()


@pytest.mark.slow  # a real server on a stand-in card, and an emulator model beside it
def test_a_served_model_is_not_ready_while_its_card_is_gone_and_ready_once_it_is_back(
    model_repository, tmp_path, monkeypatch
):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile")
    fake_xclbin(repository / "facile" / "1")
    shutil.copytree(model_repository / "facile", repository / "cpu")
    config = repository / "cpu" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', 'name: "cpu"').replace('"auto"', '"emulator"'))
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps([{"name": U250_SHELL}]))
    monkeypatch.setenv("FAAST_STANDIN_CARDS", str(cards))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests" / "support" / "standin_site"))
    server = Server(repository, tmp_path / "serve.log")
    rows = facile_rows(300, seed=9)
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    client = server.client

    def until(condition, what):
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    try:
        expected = client.infer("facile", [tensor]).as_numpy("output")
        cards.write_text(json.dumps([{"name": U250_SHELL, "present": False}]))
        time.sleep(0.5)  # the stand-in follows the file
        errors = 0
        for _ in range(8):  # faults show on the units a request reaches; each request gets one reply
            try:
                reply = client.infer("facile", [tensor]).as_numpy("output")
                assert np.array_equal(reply.view(np.uint32), expected.view(np.uint32))
            except InferenceServerException as error:
                assert "device is gone" in str(error) or "in rotation" in str(error), error
                errors += 1
        assert errors
        until(lambda: not client.is_model_ready("facile"), "facile never became not ready")
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["facile"].state == "UNAVAILABLE" and "out of rotation" in index["facile"].reason
        assert client.is_model_ready("cpu") and not client.is_server_ready()
        assert np.array_equal(client.infer("cpu", [tensor]).as_numpy("output"), expected)  # others serve
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read()
        assert b'faast_compute_units_out_of_rotation{model="facile",version="1"} 4' in metrics

        cards.write_text(json.dumps([{"name": U250_SHELL, "present": True}]))
        until(lambda: client.is_model_ready("facile"), "facile never came back")
        assert client.is_server_ready()
        reply = client.infer("facile", [tensor]).as_numpy("output")
        assert np.array_equal(reply.view(np.uint32), expected.view(np.uint32))
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "compute unit card0/facile_top_1 of 'facile' back in rotation" in log
