"""The FPGA path without an FPGA: the generated Vitis project, the kernel top the C simulation
compiles, and the xrt driver's choreography against a RECORDING STAND-IN of pyxrt
(tests/support/recording_pyxrt.py); the pynq driver runs on PYNQ itself in test_pynq_vendor.py. No
hardware result is claimed anywhere."""

import importlib
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import Server, recording_pyxrt, standin_libxrt
from support.cards import U250_PLATFORM, U250_SHELL, facile_rows, fake_xclbin
from tritonclient.utils import InferenceServerException

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice
from faast.host.drivers import open_device
from faast.host.xrt_driver import XrtDevice


@pytest.fixture
def standin_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", recording_pyxrt.module())
    standin_libxrt.real_pynq()


def test_vitis_makefile_lists_compile_link_and_afi_steps(model_repository):
    vitis = model_repository / "facile" / "1" / "vitis"
    u250 = subprocess.run(["make", "-n", "TARGET_BOARD=u250"], cwd=vitis, capture_output=True, text=True, check=True)
    assert f"v++ -c -t hw --platform {U250_PLATFORM}" in u250.stdout and "-k facile_top" in u250.stdout
    assert "v++ -l -t hw" in u250.stdout and "--config connectivity.u250.cfg" in u250.stdout
    assert "cp build_u250/facile.xclbin ../facile.xclbin" in u250.stdout
    f1 = subprocess.run(["make", "-n", "TARGET_BOARD=aws-f1"], cwd=vitis, capture_output=True, text=True, check=True)
    assert "--platform xilinx_aws-vu9p-f1_shell-v04261818_201920_3" in f1.stdout
    assert "v++ -c" in f1.stdout and "v++ -l" in f1.stdout
    assert "./aws_f1.sh check xilinx_aws-vu9p-f1_shell-v04261818_201920_3" in f1.stdout  # before v++
    assert f1.stdout.index("aws_f1.sh check") < f1.stdout.index("v++ -c")
    assert "./aws_f1.sh afi build_aws-f1 facile" in f1.stdout
    connectivity = (vitis / "connectivity.u250.cfg").read_text()
    assert "nk=facile_top:4:facile_top_1.facile_top_2.facile_top_3.facile_top_4" in connectivity
    assert {f"sp=facile_top_{i}.inputs:DDR[{i - 1}]" for i in range(1, 5)} <= set(connectivity.splitlines())
    assert "slr=facile_top_4:SLR3" in connectivity


def test_kernel_top_compiles_as_cpp_against_the_generated_firmware(model_repository):
    version = model_repository / "facile" / "1"
    top = (version / "vitis" / "kernel_top.cpp").read_text()
    assert 'extern "C" void facile_top(const word_t *inputs, word_t *outputs, int rows)' in top
    assert "#pragma HLS DATAFLOW" in top and "m_axi port=in" in top
    subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-w", "-Ihls4ml", "-Ihls4ml/firmware/ap_types", "vitis/kernel_top.cpp"],
        cwd=version,
        check=True,
    )
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", "csim.so"], cwd=version, capture_output=True, text=True, check=True
    ).stdout
    assert " T facile_top" in symbols  # the C simulation is that kernel top


def test_kernel_description_has_the_buffer_layout(model_repository):
    kernel = json.loads((model_repository / "facile" / "1" / "kernel.json").read_text())
    buffers = kernel["buffers"]
    assert buffers["word_bits"] == 512 and buffers["rows_per_execution"] == 16384
    assert buffers["input"] == {
        "lane_bits": 16,
        "lanes_per_word": 32,
        "elements_per_row": 15,
        "tensors": [
            {
                "name": kernel["inputs"][0]["name"],
                "type": "ap_fixed<16,9,TRN,WRAP>",
                "bits": 16,
                "offset": 0,
                "size": 15,
            }
        ],
    }
    assert buffers["output"]["tensors"][0]["bits"] == 24 and buffers["output"]["lane_bits"] == 32
    assert kernel["compute_units"] == {"u250": 4, "aws-f1": 2}


def test_xrt_driver_choreography_on_recording_standin(version_dir, standin_modules):
    fake_xclbin(version_dir)
    recording_pyxrt.install([{"name": U250_SHELL}, {"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    assert [cu.name for cu in device.compute_units] == [f"card{c}/facile_top_{i}" for c in (0, 1) for i in (1, 2, 3, 4)]
    buffers = [call for call in recording_pyxrt.CALLS if call[0] == "bo"]
    assert len(buffers) == 8 * 2 * 2  # 8 CUs x two buffer sets x (inputs, outputs)
    assert {call[3] for call in buffers} == {0, 1, 2, 3}  # each CU's buffers in its own bank
    assert ("kernel", 0, "facile_top:{facile_top_1}", sys.modules["pyxrt"].kernel.shared) in recording_pyxrt.CALLS

    rows = facile_rows(40000)
    recording_pyxrt.CALLS.clear()
    served = device.run(rows)
    csim = CsimDevice(KernelDescription.read(version_dir))
    assert np.array_equal(served.view(np.uint32), csim.run(rows).view(np.uint32))
    starts = [call for call in recording_pyxrt.CALLS if call[0] == "start"]
    # Round robin: the batch is spread as one 5000-row execution on each of the 8 CUs (they run
    # concurrently, so the recorded order is not fixed).
    assert sorted((c[1], c[2], c[5]) for c in starts) == [
        (card, f"facile_top:{{facile_top_{i}}}", 5000) for card in (0, 1) for i in (1, 2, 3, 4)
    ]
    for start in starts:  # every run: inputs synced to the device before, outputs back after
        at = recording_pyxrt.CALLS.index(start)
        before, after = recording_pyxrt.CALLS[:at], recording_pyxrt.CALLS[at:]
        assert ("to_device", start[3]) in [(c[1], c[2]) for c in before if c[0] == "sync"]
        assert ("from_device", start[4]) in [(c[1], c[2]) for c in after if c[0] == "sync"]
    device.close()
    csim.close()


def test_xrt_transfers_overlap_the_compute_unit_running(version_dir, standin_modules):
    """One CU, two executions: the second one's inputs reach the card (and its start is queued)
    while the first still computes; the stand-in's CU runs its queued commands one at a time."""
    description = json.loads((version_dir / "kernel.json").read_text())
    description["compute_units"]["u250"] = 1
    (version_dir / "kernel.json").write_text(json.dumps(description))
    fake_xclbin(version_dir, cus=1)
    recording_pyxrt.install([{"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(version_dir))
    rows = facile_rows(2 * 16384, seed=4)  # two full executions (~0.5 s each on the stand-in's csim)
    recording_pyxrt.CALLS.clear()
    served = device.run(rows)
    csim = CsimDevice(KernelDescription.read(version_dir))
    assert np.array_equal(served.view(np.uint32), csim.run(rows).view(np.uint32))
    calls = [call for call in recording_pyxrt.CALLS if call[0] in ("sync", "start", "done")]
    first_start, second_start = [call for call in calls if call[0] == "start"]
    first_done = next(call for call in calls if call[0] == "done")
    second_upload = next(c for c in calls if c[:2] == ("sync", "to_device") and c[2] == second_start[3])
    assert calls.index(second_upload) < calls.index(first_done)  # transfer during the first run
    assert calls.index(second_start) < calls.index(first_done)  # queued behind it on the card
    _, _, busy_ns = device.usage()
    device.close()
    csim.close()
    assert busy_ns > 0


def test_driver_errors_are_clear(version_dir, standin_modules, monkeypatch):
    kernel = KernelDescription.read(version_dir)
    with pytest.raises(DeviceError, match="no xclbin in"):
        XrtDevice(kernel)
    fake_xclbin(version_dir)
    recording_pyxrt.install([])
    with pytest.raises(DeviceError, match="found no Alveo card"):
        XrtDevice(kernel)
    recording_pyxrt.install([{"name": "xilinx_aws-vu9p-f1_shell-v04261818_201920_3"}])
    with pytest.raises(DeviceError, match="is built for platform xilinx_u250"):
        XrtDevice(kernel)

    monkeypatch.setattr("faast.host.xrt_driver.KERNEL_TIMEOUT_MS", 50)
    recording_pyxrt.install([{"name": U250_SHELL, "hang": {f"facile_top_{i}" for i in range(1, 5)}}])
    device = XrtDevice(kernel)
    with pytest.raises(DeviceError, match="did not complete within 50 ms; the retry on card0/facile_top_2 failed"):
        device.run(facile_rows(10))
    with pytest.raises(DeviceError, match="did not complete"):  # buffers came back: it fails again, cleanly
        device.run(facile_rows(10))
    with pytest.raises(DeviceError, match="no compute unit of 'facile' is in rotation"):
        device.run(facile_rows(10))
    assert device.health()[0] is False
    device.close()

    monkeypatch.delitem(sys.modules, "pyxrt")
    monkeypatch.setattr("importlib.import_module", _refuse("pyxrt", importlib.import_module))
    with pytest.raises(DeviceError, match="needs XRT's Python binding pyxrt"):
        XrtDevice(kernel)


def _refuse(name, real):
    def import_module(module, *args):
        if module == name:
            raise ImportError(f"No module named '{name}'")
        return real(module, *args)

    return import_module


def test_auto_picks_hardware_only_with_a_card_and_an_xclbin(version_dir, standin_modules, caplog):
    caplog.set_level(logging.INFO, logger="faast.host")
    recording_pyxrt.install([{"name": U250_SHELL}])
    device = open_device("auto", version_dir)
    assert device.kind == "emulator" and "holds no xclbin" in caplog.text
    device.close()

    fake_xclbin(version_dir)
    device = open_device("auto", version_dir)
    assert device.kind == "xrt" and "XRT lists 1 card(s)" in caplog.text
    device.close()

    recording_pyxrt.install([])
    standin_libxrt.install([])
    device = open_device("auto", version_dir)
    assert device.kind == "emulator" and "no card is usable" in caplog.text
    device.close()

    layers = json.loads((version_dir / "kernel.json").read_text())
    layers["layers"][-1]["class"] = "Conv3D"  # a layer the emulator does not know
    (version_dir / "kernel.json").write_text(json.dumps(layers))
    device = open_device("auto", version_dir)
    assert device.kind == "csim"
    assert "the emulator cannot run this kernel: layer 'energy' (Conv3D) is not supported" in caplog.text
    device.close()


def test_server_stays_up_when_a_model_device_cannot_open(model_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    card_model = repository / "facile_card"
    shutil.copytree(repository / "facile", card_model)
    config = (card_model / "config.pbtxt").read_text()
    (card_model / "config.pbtxt").write_text(
        config.replace('name: "facile"', 'name: "facile_card"').replace('"auto"', '"xrt"')
    )
    server = Server(repository, tmp_path / "serve.log", expect_ready=False)
    try:
        client = server.client
        assert client.is_server_live() and not client.is_server_ready()  # strict readiness, as Triton
        assert client.is_model_ready("facile") and not client.is_model_ready("facile_card")
        tensor = grpcclient.InferInput("input", [3, 15], "FP32")
        tensor.set_data_from_numpy(facile_rows(3))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("facile_card", [tensor])
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        assert (
            "'facile_card' has no available versions (failed to load: device 'xrt' needs XRT" in caught.value.message()
        )
        assert client.infer("facile", [tensor]).as_numpy("output").shape == (3, 1)
    finally:
        server.stop()
    assert "failed to load model 'facile_card'" in (tmp_path / "serve.log").read_text()


@pytest.mark.slow  # 280,000 rows through the C simulation
def test_concurrent_runs_larger_than_the_buffer_pools_complete_in_order(version_dir):
    """More executions than buffer sets, from several threads at once: no deadlock, nothing mixed up."""
    from concurrent.futures import ThreadPoolExecutor

    from faast.host.buffer_pool import Timings

    device = CsimDevice(KernelDescription.read(version_dir))
    batches = [facile_rows(70000, seed=s) for s in range(2)]  # 70000 rows = 5 executions of 16384 or fewer
    expected = [np.concatenate([device.run(b[i : i + 5000]) for i in range(0, len(b), 5000)]) for b in batches]
    timings = [Timings() for _ in batches]
    executions = device.usage()[0]
    with ThreadPoolExecutor(2) as pool:
        served = list(pool.map(lambda rows, timing: device.run_blocks([rows], timing)[0], batches, timings))
    assert device.usage()[0] - executions == 10  # five each
    for got, want, timing in zip(served, expected, timings, strict=True):
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
        assert timing.pack_ns > 0 and timing.unpack_ns > 0
    device.close()
