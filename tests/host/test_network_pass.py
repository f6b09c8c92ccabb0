"""The compiled whole-network pass (host/emulator/compiled.py, host/network_pass.cpp) against the C
simulation of the same kernel, bit for bit, on the emulator tests' edge sets: FACILE and its narrow-type
variant (rounding, wrapping and saturating types everywhere, products cast into narrow accumulators), at
batch 1, odd sizes and above rows_per_execution, in its fast arithmetic and in plain int64; and a kernel
it does not cover runs on the emulator's steps."""

import importlib.util
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import BIN, ROOT

from faast.host.drivers import open_device
from faast.host.emulator import Program, compiled
from faast.host.emulator.compiled import NetworkPass


def _emulator_tests():
    """tests/host/test_emulator.py's helpers: the same kernel variants, the same edge sets."""
    spec = importlib.util.spec_from_file_location("emulator_tests", Path(__file__).with_name("test_emulator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EMULATOR_TESTS = _emulator_tests()
# One row; odd sizes within and across the pass's 32-row blocks; above rows_per_execution (16384).
SIZES = [1, 7, 45, 16384 + 4097]


@pytest.fixture(scope="module")
def narrow_repository(tmp_path_factory):
    """FACILE with test_emulator.py's narrow types, built once for this module."""
    work = tmp_path_factory.mktemp("narrow")
    kernel = work / "facile_narrow"
    shutil.copytree(ROOT / "kernels" / "facile", kernel)
    toml = (kernel / "kernel.toml").read_text().replace('name = "facile"', 'name = "facile_narrow"')
    shipped = toml[toml.index("[hls4ml.precision.") : toml.index("[validation]")]
    (kernel / "kernel.toml").write_text(toml.replace(shipped, EMULATOR_TESTS.NARROW_PRECISIONS))
    subprocess.run([BIN / "faast", "build", kernel, "--out", work / "repository"], check=True)
    return work / "repository"


@pytest.fixture(scope="module", params=["facile", "facile_narrow"])
def edge_set(request, model_repository, facile_inputs):
    """(the kernel's version folder, its edge set, the C simulation's outputs for it)."""
    name = request.param
    repository = model_repository if name == "facile" else request.getfixturevalue("narrow_repository")
    version_dir = repository / name / "1"
    csim = open_device("csim", version_dir)
    try:
        input_type = csim.kernel.layout.input.type
        inputs = EMULATOR_TESTS.edge_inputs(facile_inputs[0], input_type, max(SIZES), seed=21)
        return version_dir, inputs, csim.run(inputs)
    finally:
        csim.close()


@pytest.mark.parametrize("arithmetic", ["fast", "int64"])
def test_network_pass_equals_csim(edge_set, arithmetic, monkeypatch):
    """fast: int16 pair products and float64 requantization where the bounds allow; int64: every op
    in int64 (the pass's path for values beyond float64's exact range)."""
    if arithmetic == "int64":
        monkeypatch.setattr(compiled, "FLOAT_EXACT", 0.0)
        monkeypatch.setattr(compiled, "PAIR_SUM_EXACT", 0.0)
    version_dir, inputs, expected = edge_set
    emulator = open_device("emulator", version_dir)
    try:
        network = emulator.compute_units[0].program
        assert isinstance(network, NetworkPass), "the pass covers every step of a dense network"
        kinds = {(op["kind"], op.get("pairs", 0), op.get("floating", 0)) for op in network.ops}
        if arithmetic == "fast":
            assert (compiled.CAST, 1, 1) in kinds  # products on int16 pairs, requantized in float64
        else:
            assert all(pairs == floating == 0 for _, pairs, floating in kinds)
        for size in SIZES:
            EMULATOR_TESTS.assert_bit_equal(emulator.run(inputs[:size]), expected[:size])
    finally:
        emulator.close()
    assert len(np.unique(expected)) > 100  # not a constant answer


@pytest.mark.slow  # builds with hls4ml, compiles the C simulation
def test_uncovered_kernel_runs_on_the_emulator_steps(tmp_path, caplog):
    """The test CNN (convolutions, pooling, softmax) is beyond the pass: the device says so and runs the
    emulator's steps, still equal to the C simulation."""
    _, version_dir = EMULATOR_TESTS._cnn(tmp_path, "io_stream")
    with caplog.at_level(logging.INFO, logger="faast.host"):
        emulator = open_device("emulator", version_dir, compute_units=2)
    try:
        assert all(isinstance(unit.program, Program) for unit in emulator.compute_units)
        assert emulator.compute_units[0].program is not emulator.compute_units[1].program  # each its scratch
        assert "the emulator's steps (the compiled network pass: " in caplog.text
    finally:
        emulator.close()
    EMULATOR_TESTS.compare_devices(version_dir, EMULATOR_TESTS._images(200, seed=8))
