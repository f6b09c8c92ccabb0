"""faast.host._native (host/native.cpp, built by `pip install`) loads on first use: faast without it still
imports, and the first compiled step is a DeviceError that names the fix, not an ImportError. It runs the
best engine the CPU supports, or the one FAAST_ISA names, and every engine computes the same bits."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faast.contract.errors import DeviceError
from faast.contract.fixed import FixedType
from faast.host import fastpath

FIX = "reinstall faast with `pip install .`, which builds it with a C++ compiler"
ENGINES = ("baseline", "avx2", "avx512")


@pytest.fixture
def module_named(monkeypatch):
    """Points the loader at another module name, with nothing loaded yet; the real extension after."""

    def point(name):
        monkeypatch.setattr(fastpath, "_MODULE", name)
        fastpath._native.cache_clear()

    yield point
    fastpath._native.cache_clear()  # before monkeypatch restores the name: the next use loads the real one


def test_missing_extension_is_a_device_error_naming_the_fix(module_named):
    module_named("faast.host._not_built")
    for first_use in (
        lambda: fastpath.Requantize(4, 0.0),  # an emulator step, prepared when the device opens
        lambda: fastpath.wrapped_bits(np.zeros(3), FixedType(16, 9, True), np.empty(3, np.uint16)),  # packing
        lambda: fastpath.windows(np.zeros((1, 2, 2, 1)), (1, 1), (1, 1), ((0, 0), (0, 0)), np.float64),
        lambda: fastpath.Network(np.zeros((0, 18)), np.zeros((0, 2)), np.zeros(1)),
    ):
        with pytest.raises(DeviceError) as error:
            first_use()
        assert str(error.value) == f"faast's compiled extension faast.host._not_built is missing: {FIX}"


def test_unloadable_extension_is_a_device_error_naming_the_fix(module_named, tmp_path, monkeypatch):
    (tmp_path / "broken_native.cpython-311-x86_64-linux-gnu.so").write_bytes(b"not a shared object")
    (tmp_path / "broken_native.so").write_bytes(b"not a shared object")
    monkeypatch.syspath_prepend(str(tmp_path))
    module_named("broken_native")
    with pytest.raises(DeviceError, match=r"cannot be loaded \(.+\): reinstall faast with `pip install \.`"):
        fastpath.Requantize(4, 0.0)


def test_a_failed_load_is_retried_and_the_extension_then_works(module_named):
    real = fastpath._MODULE
    module_named("faast.host._not_built")
    with pytest.raises(DeviceError):
        fastpath.Requantize(4, 0.0)
    module_named(real)
    values = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert np.array_equal(fastpath.Requantize(4, 1.0)(values, np.empty_like(values)), values + 1)


def test_faast_imports_without_the_extension(tmp_path):
    """The installed faast.host, copied without the extension: every module imports, the error comes at use."""
    installed = Path(fastpath.__file__).parent
    (tmp_path / "faast").mkdir()
    shutil.copy(installed.parent / "__init__.py", tmp_path / "faast" / "__init__.py")
    shutil.copytree(installed.parent / "contract", tmp_path / "faast" / "contract")
    shutil.copytree(installed, tmp_path / "faast" / "host", ignore=shutil.ignore_patterns("_native*", "__pycache__"))
    script = (
        "import faast.host.drivers, faast.host.emulator, faast.host.fastpath, faast.host.packing\n"
        "from faast.contract.errors import DeviceError\n"
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


def test_the_best_engine_the_cpu_supports_runs():
    supported = fastpath.isas()
    assert supported[0] == "baseline" and set(supported) <= set(ENGINES)
    assert [name for name in ENGINES if name in supported] == supported  # from the baseline up
    if "FAAST_ISA" not in os.environ:
        assert fastpath.isa() == supported[-1]


# A subprocess with FAAST_ISA set: FACILE's network pass (compiled from the kernel the session built, as
# tests/host/test_network_pass.py does) on its edge rows, through the device (packing, the pass,
# unpacking), and the element loops on their own. Prints the engine and the outputs as JSON.
ENGINE_RUN = """
import json, sys
import numpy as np
from faast.host import fastpath
from faast.host.drivers import open_device
from faast.host.emulator.compiled import NetworkPass

emulator = open_device("emulator", sys.argv[1])
assert isinstance(emulator.compute_units[0].program, NetworkPass)
rows = np.load(sys.argv[2])
answer = {"isa": fastpath.isa(), "device": emulator.run(rows).tolist()}
emulator.close()
rng = np.random.default_rng(5)
values = rng.integers(-300, 300, (37, 19)).astype(np.float64)  # mantissas, exact as the callers prove
outs = {}
for quantization in range(7):
    for overflow in range(4):
        offset, scale = rng.integers(-9, 9, 19) / 2, rng.integers(-3, 4, 19)
        step = fastpath.Requantize(19, offset, 0.25, scale, quantization % 2 == 0)
        step.mode[1:5] = quantization, overflow, -512.0, 511.0
        outs[f"requantize {quantization} {overflow}"] = step(values, np.empty_like(values), values).tolist()
image = rng.integers(-8, 8, (2, 9, 11, 3)).astype(np.float64)
weights = rng.integers(-4, 4, (2 * 3 * 3, 5))
outs["convolve"] = fastpath.Convolve(weights, (2, 3), (1, 2), ((1, 0), (0, 2)))(image, np.float32).tolist()
answer["loops"] = outs
print(json.dumps(answer))
"""


def _engine_run(isa, version_dir, rows_file):
    return subprocess.run(
        [sys.executable, "-c", ENGINE_RUN, str(version_dir), str(rows_file)],
        cwd=rows_file.parent,  # not the checkout: its faast/ would shadow the installed package
        env=os.environ | {"FAAST_ISA": isa},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="module")
def engine_outputs(model_repository, facile_inputs, tmp_path_factory):
    """Each engine this CPU runs, by name: (its run, the rows it ran)."""
    version_dir = model_repository / "facile" / "1"
    features = facile_inputs[0]
    rng = np.random.default_rng(3)
    # The inputs' own rows, and rows over the input type's whole range and beyond it (wrapping, saturating).
    rows = np.vstack([features[:3000], rng.uniform(-1, 1, (3000, features.shape[1])) * np.abs(features).max() * 4])
    rows_file = tmp_path_factory.mktemp("engines") / "rows.npy"
    np.save(rows_file, rows.astype(np.float32))
    return {isa: _engine_run(isa, version_dir, rows_file) for isa in fastpath.isas()}


@pytest.mark.parametrize("isa", ENGINES)
def test_every_engine_computes_the_same_bits(isa, engine_outputs):
    if isa not in engine_outputs:
        pytest.skip(f"this CPU does not run {isa}")
    result = engine_outputs[isa]
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["isa"] == isa
    best = json.loads(engine_outputs[fastpath.isas()[-1]].stdout)
    assert np.array_equal(np.array(answer["device"]), np.array(best["device"]))
    assert len(np.unique(answer["device"])) > 100  # not a constant answer
    assert answer["loops"].keys() == best["loops"].keys()
    for name, outputs in answer["loops"].items():
        assert np.array_equal(np.array(outputs), np.array(best["loops"][name])), name


@pytest.mark.parametrize("isa", [*ENGINES, "avx9000"])
def test_an_engine_the_cpu_lacks_is_refused_naming_the_choices(isa, tmp_path):
    """FAAST_ISA naming a path this CPU cannot run (or none at all): the compiled calls are a DeviceError
    that names the ones it can; faast itself still imports."""
    if isa in fastpath.isas():
        pytest.skip(f"this CPU runs {isa}")
    script = (
        "from faast.host import fastpath\n"
        "from faast.contract.errors import DeviceError\n"
        "try:\n"
        "    fastpath.Requantize(4, 0.0)\n"
        "except DeviceError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=os.environ | {"FAAST_ISA": isa},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    runs = ", ".join(fastpath.isas())
    assert result.stdout.strip() == (
        f"FAAST_ISA={isa} is not a path this CPU runs (it runs {runs}; FAAST_ISA takes baseline, avx2 or avx512)"
    )
