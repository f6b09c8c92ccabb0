"""--model-control-mode=poll as Triton's: a change to any file of a model reloads it, the version that
serves keeps serving until the new one loaded, a load that failed is tried again once its files change
(a version folder copied in file by file ends up served), and meanwhile the repository index says why
and readiness follows the record.

In process on the fake device (tests/support/fake_device.py), calling ModelRepository.poll() where
the server's loop would, so every poll is one step of the test; then once end to end, through a real
`faast serve --model-control-mode poll` and the FACILE model."""

import asyncio
import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest
from support import Server, infer
from support.fake_device import (
    FakeDevice,
    fake_answers,
    in_process,
    representable_rows,
    serving,
    write_fake_model,
    write_kernel,
)

from faast.dataplane import InferRequest, InputTensor
from faast.repository import ModelState, VersionState, _stamp

WIDTH = 4
LIMIT_S = 10.0  # waits that should end at once: reaching it means the test failed
READY = VersionState(ModelState.READY)


@pytest.fixture
def no_processes(monkeypatch):
    """The fake driver registered, and no child process started: that is the point of these tests."""
    with in_process(monkeypatch):
        yield


@pytest.fixture
def attempts(caplog):
    """How many loads of a version the repository began so far: attempts()["m:2"]."""
    caplog.set_level(logging.INFO, logger="faast.repository")

    def count():
        counts: dict[str, int] = {}
        for record in caplog.records:
            if record.name == "faast.repository" and record.getMessage().startswith("loading: "):
                key = record.getMessage()[len("loading: ") :]
                counts[key] = counts.get(key, 0) + 1
        return counts

    return count


async def answers(dataplane, rows, model="m", version=""):
    """What model `model` (at `version`) answers for `rows`, and which version answered."""
    tensor = InputTensor("input", "FP32", tuple(rows.shape), np.ascontiguousarray(rows).tobytes())
    response = await dataplane.infer(InferRequest(model_name=model, model_version=version, inputs=[tensor]))
    (output,) = response.outputs
    return response.model_version, output.data


def staged_version(tmp_path, name="m", **kernel):
    """A complete version folder of the fake kernel written aside, to be copied in file by file."""
    staging = tmp_path / "staging"
    write_kernel(staging, name, WIDTH, **kernel)
    return staging


def copy_in(staging, target, filename):
    """One file of a staged version folder copied into place the way `cp -p` does: its mtime kept,
    older than anything the repository saw before, so only a stamp of every file notices it."""
    target.mkdir(exist_ok=True)
    shutil.copy2(staging / filename, target / filename)


def test_a_version_folder_copied_in_file_by_file_is_served_once_complete(tmp_path, no_processes, attempts):
    """The probe of issue 33: version 2 appears with only some of its files; its load fails, the index
    says why and version 1 serves, ready; the poll after the last file arrived serves version 2."""
    model = write_fake_model(tmp_path, "m", width=WIDTH)
    staging = staged_version(tmp_path, scale=5, offset=0)
    rows = representable_rows(3, WIDTH)

    async def main():
        async with serving(tmp_path, "poll") as dataplane:
            repository = dataplane.repository
            copy_in(staging, model / "2", "fake.json")  # the first file of two
            await repository.poll()
            missing = f"{model}/2/kernel.json is missing: build the kernel with `faast build`"
            assert repository.index() == [("m", "1", "READY", ""), ("m", "2", "UNAVAILABLE", missing)]
            assert repository.index(ready_only=True) == [("m", "1", "READY", "")]
            assert dataplane.model_ready("m") and dataplane.model_ready("m", "1")
            assert not dataplane.model_ready("m", "2")
            assert not dataplane.server_ready()  # Triton's strict readiness: a version failed to load
            version, answer = await answers(dataplane, rows)
            assert version == "1"
            np.testing.assert_array_equal(answer, fake_answers(rows))

            await repository.poll()  # nothing changed: not tried again, as Triton leaves it
            assert attempts()["m:2"] == 1
            assert repository.index()[1] == ("m", "2", "UNAVAILABLE", missing)

            copy_in(staging, model / "2", "kernel.json")  # the last file, with an older mtime
            await repository.poll()
            assert attempts()["m:2"] == 2
            assert repository.index() == [("m", "2", "READY", "")]
            assert dataplane.model_ready("m", "2") and not dataplane.model_ready("m", "1")
            assert dataplane.server_ready()
            version, answer = await answers(dataplane, rows)
            assert version == "2"
            np.testing.assert_array_equal(answer, fake_answers(rows, scale=5, offset=0))

    asyncio.run(main())


def test_a_broken_file_of_the_serving_version_keeps_it_serving_until_fixed(tmp_path, no_processes, attempts):
    """kernel.json of the serving version truncated: the reload fails, the loaded version serves on,
    READY with the failure as its reason; fixed, the next poll serves the new files."""
    model = write_fake_model(tmp_path, "m", width=WIDTH)
    kernel = model / "1" / "kernel.json"
    rows = representable_rows(5, WIDTH, seed=1)

    async def main():
        async with serving(tmp_path, "poll") as dataplane:
            repository = dataplane.repository
            kernel.write_bytes(kernel.read_bytes()[:40])
            await repository.poll()
            assert attempts()["m:1"] == 2
            ((name, version, state, reason),) = repository.index()
            assert (name, version, state) == ("m", "1", "READY")
            assert reason.startswith("reload failed: ") and "kernel.json" in reason
            assert repository.states("m") == {"1": VersionState(ModelState.READY, reason)}
            assert dataplane.model_ready("m", "1") and dataplane.server_ready()  # what serves is sound
            np.testing.assert_array_equal((await answers(dataplane, rows))[1], fake_answers(rows))

            await repository.poll()  # unchanged since the failed attempt: left alone
            assert attempts()["m:1"] == 2

            write_kernel(model / "1", "m", WIDTH, scale=-1, offset=3)
            await repository.poll()
            assert attempts()["m:1"] == 3
            assert repository.index() == [("m", "1", "READY", "")]
            np.testing.assert_array_equal((await answers(dataplane, rows))[1], fake_answers(rows, -1, 3))

    asyncio.run(main())


def test_a_changed_data_file_reloads_the_version(tmp_path, no_processes, attempts):
    """Any file a version serves counts, not only kernel.json: the fake kernel's fake.json (as weights.npz
    is a real one's), and a file in a folder inside the version folder."""
    model = write_fake_model(tmp_path, "m", width=WIDTH)
    rows = representable_rows(2, WIDTH, seed=2)

    async def main():
        async with serving(tmp_path, "poll") as dataplane:
            repository = dataplane.repository
            await repository.poll()
            assert attempts() == {"m:1": 1}  # nothing changed since the start

            (model / "1" / "fake.json").write_text('{"scale": 4, "offset": -1}')
            await repository.poll()
            assert attempts() == {"m:1": 2}
            np.testing.assert_array_equal((await answers(dataplane, rows))[1], fake_answers(rows, 4, -1))

            (model / "1" / "extra").mkdir()
            await repository.poll()
            assert attempts() == {"m:1": 3}
            (model / "1" / "extra" / "notes.txt").write_text("deep")
            await repository.poll()
            assert attempts() == {"m:1": 4}
            assert repository.index() == [("m", "1", "READY", "")]

    asyncio.run(main())


def test_the_serving_version_stays_ready_while_the_new_one_loads(tmp_path, no_processes, monkeypatch):
    """Readiness is the record's throughout: version 1 READY and answering while version 2 is LOADING
    (its device held open in the loading thread), then version 2 alone."""
    model = write_fake_model(tmp_path, "m", width=WIDTH)
    gate = threading.Event()
    opening = threading.Event()
    original = FakeDevice.__init__

    def held(self, kernel, compute_units=None):
        if kernel.folder.name == "2":
            opening.set()
            assert gate.wait(LIMIT_S)
        original(self, kernel, compute_units)

    monkeypatch.setattr(FakeDevice, "__init__", held)
    rows = representable_rows(4, WIDTH, seed=3)

    async def main():
        async with serving(tmp_path, "poll") as dataplane:
            repository = dataplane.repository
            write_kernel(model / "2", "m", WIDTH, scale=7)
            polling = asyncio.ensure_future(repository.poll())
            assert await asyncio.to_thread(opening.wait, LIMIT_S)
            assert repository.index() == [("m", "1", "READY", ""), ("m", "2", "LOADING", "")]
            assert dataplane.model_ready("m") and not dataplane.model_ready("m", "2")
            version, answer = await answers(dataplane, rows)
            assert version == "1"
            np.testing.assert_array_equal(answer, fake_answers(rows))
            gate.set()
            await polling
            assert repository.index() == [("m", "2", "READY", "")]
            assert dataplane.model_ready("m") and dataplane.server_ready()
            np.testing.assert_array_equal((await answers(dataplane, rows))[1], fake_answers(rows, scale=7))

    asyncio.run(main())


def test_a_config_that_breaks_keeps_the_model_serving_with_the_reason(tmp_path, no_processes):
    """A failure before any version is known (config.pbtxt that does not parse): every serving version
    carries it; the config fixed, the model reloads."""
    model = write_fake_model(tmp_path, "m", width=WIDTH, versions=(1, 2))
    config = model / "config.pbtxt"
    text = config.read_text()

    async def main():
        async with serving(tmp_path, "poll") as dataplane:
            repository = dataplane.repository
            config.write_text(text + "this is { not a config\n")
            await repository.poll()
            rows = repository.index()
            assert [(name, version, state) for name, version, state, _ in rows] == [
                ("m", "1", "READY"),
                ("m", "2", "READY"),
            ]
            assert all(reason.startswith("reload failed: ") for *_, reason in rows)
            assert dataplane.model_ready("m", "1") and dataplane.server_ready()
            config.write_text(text)
            await repository.poll()
            assert repository.index() == [("m", "1", "READY", ""), ("m", "2", "READY", "")]

    asyncio.run(main())


def test_the_stamp_sees_every_file_and_survives_a_link_loop(tmp_path, no_processes):
    model = write_fake_model(tmp_path, "m", width=WIDTH)
    kernel = model / "1" / "kernel.json"
    before = _stamp(model)
    assert [entry[0] for entry in before] == ["1/", "1/fake.json", "1/kernel.json", "config.pbtxt"]
    info = kernel.stat()
    os.utime(kernel, ns=(info.st_atime_ns, info.st_mtime_ns - 10**9))  # put back older, same size
    assert _stamp(model) != before
    (model / "1" / "loop").symlink_to(model / "1")  # each folder is walked once
    assert ("1/loop/",) in _stamp(model)
    (model / "1" / "loop").unlink()
    (model / "1" / "dangling").symlink_to(tmp_path / "nowhere")
    assert ("1/dangling", None, None) in _stamp(model)


def _wait(condition, what, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _index(server):
    return [(m.name, m.version, m.state, m.reason) for m in server.client.get_model_repository_index().models]


def test_faast_serve_polls_a_version_copied_in_file_by_file(model_repository, facile_inputs, tmp_path):
    """End to end, the probe of issue 33: FACILE's version 2 copied in file by file under a real
    `faast serve --model-control-mode poll --repository-poll-secs 1`; the index says why meanwhile,
    version 1 serves; then version 2's kernel.json truncated and restored."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile")
    model = repository / "facile"
    server = Server(repository, tmp_path / "serve.log", "--model-control-mode", "poll", "--repository-poll-secs", "1")
    rows = facile_inputs[0][:16]
    try:
        expected = infer(server.client, rows)
        (model / "2").mkdir()
        shutil.copy2(model / "1" / "weights.npz", model / "2" / "weights.npz")
        missing = f"{model}/2/kernel.json is missing: build the kernel with `faast build`"
        _wait(lambda: ("facile", "2", "UNAVAILABLE", missing) in _index(server), "version 2's failure never shown")
        assert _index(server) == [("facile", "1", "READY", ""), ("facile", "2", "UNAVAILABLE", missing)]
        assert server.client.is_model_ready("facile") and server.client.is_model_ready("facile", "1")
        assert np.array_equal(infer(server.client, rows), expected)

        shutil.copy2(model / "1" / "kernel.json", model / "2" / "kernel.json")
        _wait(lambda: server.client.is_model_ready("facile", "2"), "version 2 was never served")
        assert _index(server) == [("facile", "2", "READY", "")]
        assert np.array_equal(infer(server.client, rows, model_version="2"), expected)  # the same kernel

        kernel = (model / "2" / "kernel.json").read_bytes()
        (model / "2" / "kernel.json").write_bytes(kernel[:100])
        _wait(lambda: _index(server)[0][3].startswith("reload failed: "), "the failed reload never shown")
        assert _index(server)[0][:3] == ("facile", "2", "READY")
        assert server.client.is_model_ready("facile", "2") and server.client.is_server_ready()
        assert np.array_equal(infer(server.client, rows), expected)

        (model / "2" / "kernel.json").write_bytes(kernel)
        _wait(lambda: _index(server) == [("facile", "2", "READY", "")], "the fixed version never reloaded")
        assert np.array_equal(infer(server.client, rows), expected)
    finally:
        server.stop()
