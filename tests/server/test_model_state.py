"""The per-version lifecycle record of ModelRepository (Triton's UNKNOWN / LOADING / READY /
UNLOADING / UNAVAILABLE with a reason), and the repository index, readiness and get() reading it.

In process and without a kernel build: models that fail to load fail cheaply (no kernel.json, a
config.pbtxt that does not parse), and a model that loads is a stand-in ServedModel whose load and
close can be held on an event, so the LOADING and UNLOADING states can be seen while they last."""

import asyncio
import shutil
from types import SimpleNamespace

import pytest

from faast.contract.errors import Internal, NotFound
from faast.dataplane import DataPlane
from faast.model import ServedModel
from faast.repository import UNLOADED, WHOLE_MODEL, ModelRepository, ModelState, VersionState
from faast.shared_memory import SharedMemoryManager
from faast.trace_log import TraceSettings, parse_trace_config

LIMIT_S = 5.0  # waits that should end at once: reaching it means the test failed
CONFIG = """name: "{name}"
max_batch_size: 4
input {{ name: "input" data_type: TYPE_FP32 dims: 15 }}
output {{ name: "output" data_type: TYPE_FP32 dims: 1 }}
"""
READY, LOADING, UNLOADING = (
    VersionState(ModelState.READY),
    VersionState(ModelState.LOADING),
    VersionState(ModelState.UNLOADING),
)


def _model(repository, name, versions=("1",), extra=""):
    """A model folder: config.pbtxt and empty version folders (no kernel.json: a real load fails)."""
    folder = repository / name
    for version in versions:
        (folder / version).mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name) + extra)
    return folder


class FakeDevice:
    kind = "fake"

    def __init__(self):
        self.healthy = (True, "2 of 2 compute units in rotation")

    def health(self):
        return self.healthy


class Loads:
    """Stands in for ServedModel.load: a model of a FakeDevice, after `gate` opens when one is set;
    raises `failure` when one is set. Closing waits for `closing` when one is set."""

    def __init__(self):
        self.gate: asyncio.Event | None = None
        self.closing: asyncio.Event | None = None
        self.failure: Exception | None = None
        self.devices: dict[str, FakeDevice] = {}

    async def load(self, model_dir, version, config):
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        device = self.devices[version] = FakeDevice()

        async def close():
            if self.closing is not None:
                await self.closing.wait()

        return SimpleNamespace(name=config.name, version=version, device=device, config=config, close=close)


@pytest.fixture
def loads(monkeypatch):
    stand_in = Loads()
    monkeypatch.setattr(ServedModel, "load", classmethod(lambda cls, *args: stand_in.load(*args)))
    return stand_in


async def _until(condition):
    deadline = asyncio.get_running_loop().time() + LIMIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the state never came"
        await asyncio.sleep(0.005)


def _message(repository, name, version=""):
    with pytest.raises(NotFound) as caught:
        repository.get(name, version)
    return str(caught.value)


def test_a_load_marks_its_versions_loading_then_ready(tmp_path, loads):
    _model(tmp_path, "m", ("1", "2"), "version_policy { all { } }")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit")
        assert await repository.start() == []
        assert repository.states("m") == {}
        assert repository.index() == [("m", "", "", "")]  # a name alone: never loaded
        loads.gate = asyncio.Event()
        loading = asyncio.ensure_future(repository.load("m"))
        await _until(lambda: repository.states("m"))
        assert repository.states("m") == {"1": LOADING, "2": LOADING}
        assert repository.index() == [("m", "1", "LOADING", ""), ("m", "2", "LOADING", "")]
        assert repository.index(ready_only=True) == []
        assert not repository.is_ready("m") and not repository.is_ready("m", "1")
        assert not repository.all_ready()  # as Triton's strict readiness: a model still loading
        assert _message(repository, "m") == "Request for unknown model: 'm' is not found"
        loads.gate.set()
        await loading
        assert repository.states("m") == {"1": READY, "2": READY}
        assert repository.index() == [("m", "1", "READY", ""), ("m", "2", "READY", "")]
        assert repository.index(ready_only=True) == repository.index()
        assert repository.is_ready("m") and repository.is_ready("m", "1") and repository.is_ready("m", "2")
        assert not repository.is_ready("m", "3")
        assert repository.all_ready()
        assert repository.get("m").version == "2"
        await repository.close()

    asyncio.run(main())


def test_a_reload_keeps_what_serves_ready_while_the_new_version_loads(tmp_path, loads):
    model = _model(tmp_path, "m")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit", startup_models=["m"])
        assert await repository.start() == []
        assert repository.states("m") == {"1": READY}
        (model / "2").mkdir()  # the default version_policy serves the newest: 2 replaces 1
        loads.gate = asyncio.Event()
        loading = asyncio.ensure_future(repository.load("m"))
        await _until(lambda: "2" in repository.states("m"))
        assert repository.states("m") == {"1": READY, "2": LOADING}
        assert repository.index() == [("m", "1", "READY", ""), ("m", "2", "LOADING", "")]
        assert repository.index(ready_only=True) == [("m", "1", "READY", "")]
        assert repository.get("m").version == "1"  # still serving
        assert repository.is_ready("m", "1") and not repository.is_ready("m", "2")
        loads.gate.set()
        await loading
        assert repository.states("m") == {"2": READY}
        assert repository.index() == [("m", "2", "READY", "")]
        await repository.close()

    asyncio.run(main())


def test_a_failed_load_is_recorded_on_the_model_with_its_reason(tmp_path):
    """No version serves after the failure: the record is the model's, the index's version-less row."""
    _model(tmp_path, "m")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit")
        await repository.start()
        with pytest.raises(Internal) as caught:
            await repository.load("m")
        reason = f"{tmp_path}/m/1/kernel.json is missing: build the kernel with `faast build`"
        assert str(caught.value) == f"load failed for model 'm': {reason}"
        assert repository.states("m") == {WHOLE_MODEL: VersionState(ModelState.UNAVAILABLE, reason)}
        assert repository.index() == [("m", "", "UNAVAILABLE", reason)]
        assert repository.index(ready_only=True) == []
        assert _message(repository, "m") == (
            f"Request for unknown model: 'm' has no available versions (failed to load: {reason})"
        )
        assert not repository.is_ready("m") and not repository.is_ready("m", "1")
        assert not repository.all_ready()

    asyncio.run(main())


def test_a_config_that_does_not_parse_fails_before_any_version_is_known(tmp_path, loads):
    _model(tmp_path, "good")
    (_model(tmp_path, "bad") / "config.pbtxt").write_text("this is { not a model configuration")

    async def main():
        repository = ModelRepository(tmp_path)  # mode none: every model at startup
        problems = await repository.start()
        assert len(problems) == 1 and "this" in problems[0]
        (state,) = repository.states("bad").values()
        assert repository.states("bad") == {WHOLE_MODEL: state}
        assert state.state is ModelState.UNAVAILABLE and state.reason == problems[0]
        assert repository.index() == [("bad", "", "UNAVAILABLE", problems[0]), ("good", "1", "READY", "")]
        assert repository.index(ready_only=True) == [("good", "1", "READY", "")]
        assert not repository.all_ready()  # a model failed to load
        await repository.close()

    asyncio.run(main())


def test_a_failed_reload_leaves_the_served_versions_ready(tmp_path, loads):
    model = _model(tmp_path, "m")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit", startup_models=["m"])
        assert await repository.start() == []
        (model / "2").mkdir()
        loads.failure = RuntimeError("no such kernel")
        with pytest.raises(Internal, match="^load failed for model 'm': no such kernel$"):
            await repository.load("m")
        assert repository.states("m") == {"1": READY}
        assert repository.index() == [("m", "1", "READY", "")]
        assert repository.all_ready() and repository.get("m").version == "1"
        await repository.close()

    asyncio.run(main())


def test_an_unload_marks_the_versions_unloading_then_the_model_unloaded(tmp_path, loads):
    _model(tmp_path, "m", ("1", "2"), "version_policy { all { } }")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit", startup_models=["m"])
        assert await repository.start() == []
        loads.closing = asyncio.Event()
        unloading = asyncio.ensure_future(repository.unload("m"))
        await _until(lambda: repository.states("m") == {"1": UNLOADING, "2": UNLOADING})
        assert repository.index() == [("m", "1", "UNLOADING", ""), ("m", "2", "UNLOADING", "")]
        assert repository.index(ready_only=True) == []
        assert not repository.is_ready("m") and not repository.all_ready()
        assert _message(repository, "m") == "Request for unknown model: 'm' is not found"  # takes no request
        loads.closing.set()
        await unloading
        assert repository.states("m") == {WHOLE_MODEL: UNLOADED}
        assert repository.index() == [("m", "", "UNAVAILABLE", "unloaded")]
        assert _message(repository, "m") == (
            "Request for unknown model: 'm' has no available versions (failed to load: unloaded)"
        )
        assert not repository.is_ready("m")
        assert repository.all_ready()  # a model a client unloaded does not count, as in Triton
        await repository.load("m")  # and loads again
        assert repository.states("m") == {"1": READY, "2": READY}

    asyncio.run(main())


def test_a_device_without_a_compute_unit_makes_its_ready_version_unavailable(tmp_path, loads):
    """The record stays READY; readiness and the index read the device's health on top of it."""
    _model(tmp_path, "m", ("1", "2"), "version_policy { all { } }")

    async def main():
        repository = ModelRepository(tmp_path, startup_models=["m"])
        assert await repository.start() == []
        why = "0 of 2 compute units in rotation: card 0 is gone"
        loads.devices["1"].healthy = (False, why)
        assert repository.states("m") == {"1": READY, "2": READY}
        assert repository.state("m", "1") == VersionState(ModelState.UNAVAILABLE, why)
        assert repository.index() == [("m", "1", "UNAVAILABLE", why), ("m", "2", "READY", "")]
        assert not repository.is_ready("m", "1") and repository.is_ready("m", "2") and repository.is_ready("m")
        assert not repository.all_ready()
        loads.devices["2"].healthy = (False, why)
        assert not repository.is_ready("m")
        loads.devices["1"].healthy = loads.devices["2"].healthy = (True, "2 of 2 compute units in rotation")
        assert repository.is_ready("m", "1") and repository.all_ready()
        await repository.close()

    asyncio.run(main())


def test_a_model_gone_from_the_repository_is_forgotten_by_polling(tmp_path, loads):
    _model(tmp_path, "kept")
    _model(tmp_path, "gone")
    (_model(tmp_path, "broken") / "config.pbtxt").write_text("not a config")

    async def main():
        repository = ModelRepository(tmp_path, mode="poll")
        await repository.start()
        assert repository.states("gone") == {"1": READY}
        assert set(repository.states("broken")) == {WHOLE_MODEL}
        shutil.rmtree(tmp_path / "gone")
        shutil.rmtree(tmp_path / "broken")
        await repository.poll()
        assert repository.states("gone") == {} and repository.states("broken") == {}
        assert _message(repository, "gone") == "Request for unknown model: 'gone' is not found"
        assert _message(repository, "broken") == "Request for unknown model: 'broken' is not found"
        assert repository.index() == [("kept", "1", "READY", "")]
        assert repository.all_ready()
        await repository.close()

    asyncio.run(main())


def test_a_cancelled_load_leaves_the_record_as_it_was(tmp_path, loads):
    _model(tmp_path, "m")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit")
        await repository.start()
        loads.gate = asyncio.Event()
        loading = asyncio.ensure_future(repository.load("m"))
        await _until(lambda: repository.states("m") == {"1": LOADING})
        loading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loading
        assert repository.states("m") == {}
        assert repository.index() == [("m", "", "", "")]

    asyncio.run(main())


def test_the_dataplane_reads_readiness_from_the_record(tmp_path, loads):
    _model(tmp_path, "m")

    async def main():
        repository = ModelRepository(tmp_path, mode="explicit")
        await repository.start()
        dataplane = DataPlane(repository, SharedMemoryManager(), TraceSettings(parse_trace_config([])))
        dataplane.ready = True
        assert dataplane.server_ready() and not dataplane.model_ready("m")
        loads.gate = asyncio.Event()
        loading = asyncio.ensure_future(repository.load("m"))
        await _until(lambda: repository.states("m") == {"1": LOADING})
        assert not dataplane.server_ready() and not dataplane.model_ready("m")
        loads.gate.set()
        await loading
        assert dataplane.server_ready() and dataplane.model_ready("m") and dataplane.model_ready("m", "1")
        loads.devices["1"].healthy = (False, "0 of 1 compute units in rotation")
        assert not dataplane.server_ready() and not dataplane.model_ready("m")
        await repository.close()

    asyncio.run(main())
