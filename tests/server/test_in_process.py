"""The dataplane, the model repository and the served model in this process, on a fake device.

No `faast build`, no hls4ml or TensorFlow, no server process: each test writes a model repository by
hand (tests/support/fake_device.py: a kernel.json and a config.pbtxt naming the fake device kind),
opens it with the real ModelRepository, whose ServedModels open the real Device subclass through the
real open_device, and sends InferRequests to the real DataPlane in its own event loop (asyncio.run),
through the real dynamic batcher or direct scheduler. The fake kernel answers scale * x + offset on
the packed fixed-point lanes, so every answer is checked exactly. Errors are faast.contract.errors' typed
errors with Triton's wording, as the end-to-end tests (test_errors.py, test_facile_serving.py,
test_workers.py) see them on the wire.
"""

import asyncio

import numpy as np
import pytest
from support.fake_device import (
    fake_answers,
    in_process,
    representable_rows,
    serving,
    write_fake_model,
)

from faast.contract.errors import Internal, InvalidArgument, NotFound, Unavailable
from faast.dataplane import InferRequest, InputTensor, RequestedOutput

WIDTH = 4  # values per row of the fake models
PREFIX = "[request id: <id_unknown>] "
NOTE = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension"


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """The fake driver registered, and no child process started: that is the point of these tests."""
    with in_process(monkeypatch):
        yield


@pytest.fixture
def repository(tmp_path):
    """A repository holding "batched" (dynamic batching) and "direct" (the direct scheduler)."""
    write_fake_model(tmp_path, "batched", batching="max_queue_delay_microseconds: 100000")
    write_fake_model(tmp_path, "direct", batching=None, scale=3, offset=-2)
    return tmp_path


def request(rows, model="batched", datatype="FP32", shape=None, data=None, **fields):
    """An InferRequest of `rows` as the converters make one: the input's raw bytes."""
    rows = np.ascontiguousarray(rows)
    tensor = InputTensor(
        "input",
        datatype,
        tuple(rows.shape) if shape is None else shape,
        rows.tobytes() if data is None else data,
    )
    return InferRequest(model_name=model, inputs=[tensor], **fields)


def output(response):
    (answer,) = response.outputs
    assert answer.name == "output" and answer.datatype == "FP32"
    assert answer.data is not None and answer.shape == answer.data.shape
    return answer.data


async def statistics(dataplane, model):
    (stats,) = (await dataplane.model_statistics(model)).model_stats
    return stats


def test_the_batcher_merges_concurrent_requests_and_answers_each_its_own(repository):
    async def run():
        async with serving(repository) as dataplane:
            rows = representable_rows(8, WIDTH)
            # Eight one-row requests at once fill the kernel's 8-row execution: one execution.
            responses = await asyncio.gather(*(dataplane.infer(request(rows[i : i + 1], id=str(i))) for i in range(8)))
            for i, response in enumerate(responses):
                assert (response.model_name, response.model_version, response.id) == ("batched", "1", str(i))
                np.testing.assert_array_equal(output(response), fake_answers(rows[i : i + 1]))
            stats = await statistics(dataplane, "batched")
            assert (stats.inference_count, stats.execution_count) == (8, 1)
            assert (stats.inference_stats.success.count, stats.inference_stats.fail.count) == (8, 0)
            assert [(batch.batch_size, batch.compute_infer.count) for batch in stats.batch_stats] == [(8, 1)]

    asyncio.run(run())


def test_the_direct_scheduler_splits_a_request_over_executions_and_compute_units(repository):
    async def run():
        async with serving(repository) as dataplane:
            rows = representable_rows(20, WIDTH, seed=1)
            response = await dataplane.infer(request(rows, "direct"))
            np.testing.assert_array_equal(output(response), fake_answers(rows, scale=3, offset=-2))
            device = dataplane.repository.get("direct").device
            assert device.usage()[:2] == (3, 20)  # 8 + 8 + 4 rows: the kernel takes 8 at a time
            assert all(unit.executions for unit in device.compute_units)  # spread over both units
            one = await dataplane.infer(request(rows[:1], "direct", outputs=[RequestedOutput("output")]))
            np.testing.assert_array_equal(output(one), fake_answers(rows[:1], scale=3, offset=-2))
            stats = await statistics(dataplane, "direct")
            assert (stats.inference_count, stats.execution_count) == (21, 2)  # one execution per request
            assert stats.inference_stats.success.count == 2

    asyncio.run(run())


def test_readiness_metadata_and_the_repository_index(repository):
    async def run():
        async with serving(repository) as dataplane:
            assert dataplane.server_ready()
            assert dataplane.model_ready("batched") and dataplane.model_ready("direct", "1")
            assert not dataplane.model_ready("direct", "2") and not dataplane.model_ready("nope")
            assert dataplane.repository.index() == [("batched", "1", "READY", ""), ("direct", "1", "READY", "")]
            metadata = dataplane.model_metadata("batched")
            assert (metadata.name, list(metadata.versions), metadata.platform) == ("batched", ["1"], "faast")
            assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("input", "FP32", [-1, WIDTH])]
            assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [("output", "FP32", [-1, WIDTH])]
            assert dataplane.model_config("direct").max_batch_size == 64
            dataplane.ready = False
            assert not dataplane.server_ready()
            with pytest.raises(Unavailable, match="^Server not ready$"):
                await dataplane.infer(request(representable_rows(1, WIDTH)))

    asyncio.run(run())


def test_unload_and_reload_in_explicit_mode(repository):
    async def run():
        async with serving(repository, "explicit", ["batched"]) as dataplane:
            models = dataplane.repository
            rows = representable_rows(3, WIDTH, seed=2)
            assert models.index() == [("batched", "1", "READY", ""), ("direct", "", "", "")]
            np.testing.assert_array_equal(output(await dataplane.infer(request(rows))), fake_answers(rows))

            await models.unload("batched")
            assert not dataplane.model_ready("batched")
            assert dataplane.server_ready()  # a model unloaded on purpose does not make the server unready
            assert models.index() == [("batched", "", "UNAVAILABLE", "unloaded"), ("direct", "", "", "")]
            with pytest.raises(NotFound) as caught:
                await dataplane.infer(request(rows))
            assert str(caught.value) == (
                "Request for unknown model: 'batched' has no available versions (failed to load: unloaded)"
            )

            write_fake_model(repository, "batched", batching="max_queue_delay_microseconds: 100", offset=5)
            await models.load("batched")
            await models.load("direct")
            assert models.index() == [("batched", "1", "READY", ""), ("direct", "1", "READY", "")]
            np.testing.assert_array_equal(output(await dataplane.infer(request(rows))), fake_answers(rows, offset=5))
            stats = await statistics(dataplane, "batched")
            assert (stats.inference_count, stats.inference_stats.success.count) == (3, 1)  # the new load's only

            with pytest.raises(Internal, match="^failed to load 'nope', failed to poll from model repository$"):
                await models.load("nope")

    asyncio.run(run())


def test_bad_requests_get_typed_errors_in_tritons_wording(repository):
    rows = representable_rows(2, WIDTH)
    cases = [
        (request(rows, "nope"), NotFound, "Request for unknown model: 'nope' is not found"),
        (request(rows, model_version="7"), NotFound, "Request for unknown model: 'batched' version 7 is not found"),
        (
            request(rows, model_version="x"),
            InvalidArgument,
            "failed to get model version from specified version string 'x' (details: stol), "
            "version should be an integral value > 0",
        ),
        (
            request(np.zeros((2, WIDTH + 1), np.float32)),
            InvalidArgument,
            PREFIX + "unexpected shape for input 'input' for model 'batched'. "
            f"Expected [-1,{WIDTH}], got [2,{WIDTH + 1}]. {NOTE}",
        ),
        (
            request(rows.astype(np.float64), datatype="FP64"),
            InvalidArgument,
            PREFIX + "inference input 'input' data-type is 'FP64', but model 'batched' expects 'FP32'",
        ),
        (
            request(rows, shape=(3, WIDTH), id="r7"),
            InvalidArgument,
            "[request id: r7] input byte size mismatch for input 'input' for model 'batched'. Expected 48, got 32",
        ),
        (
            request(np.zeros((65, WIDTH), np.float32)),
            InvalidArgument,
            PREFIX + "inference request batch-size must be <= 64 for 'batched'",
        ),
        (
            request(rows, outputs=[RequestedOutput("nothing")]),
            InvalidArgument,
            "unexpected inference output 'nothing' for model 'batched'",
        ),
    ]

    async def run():
        async with serving(repository) as dataplane:
            for bad, error, message in cases:
                with pytest.raises(error) as caught:
                    await dataplane.infer(bad)
                assert str(caught.value).startswith(message), (str(caught.value), message)
            stats = await statistics(dataplane, "batched")
            # Every refusal by a loaded model version counts as its failure; the first three named none.
            assert (stats.inference_stats.success.count, stats.inference_stats.fail.count) == (0, len(cases) - 3)
            assert stats.execution_count == 0
            np.testing.assert_array_equal(output(await dataplane.infer(request(rows))), fake_answers(rows))

    asyncio.run(run())


def test_a_faulty_compute_unit_is_retried_elsewhere_and_all_faulty_makes_the_model_unready(repository):
    async def run():
        async with serving(repository) as dataplane:
            device = dataplane.repository.get("direct").device
            first, second = device.compute_units
            rows = representable_rows(4, WIDTH, seed=3)
            expected = fake_answers(rows, scale=3, offset=-2)

            first.fault = "card vanished"
            for _ in range(2):  # round robin: one of the two runs is handed to the faulty unit
                np.testing.assert_array_equal(output(await dataplane.infer(request(rows, "direct"))), expected)
            assert device.out_of_rotation() == [("fake0", "compute unit fake0 failed: card vanished")]
            assert (first.executions, second.executions) == (0, 2)
            assert dataplane.model_ready("direct") and dataplane.server_ready()
            assert dataplane.repository.index()[1] == ("direct", "1", "READY", "")

            second.fault = "card vanished too"
            with pytest.raises(Internal, match="^device 'fake' failed: ") as caught:
                await dataplane.infer(request(rows, "direct"))
            assert "no compute unit of 'direct' is in rotation" in str(caught.value)
            assert not dataplane.model_ready("direct") and not dataplane.server_ready()
            name, version, state, reason = dataplane.repository.index()[1]
            assert (name, version, state) == ("direct", "1", "UNAVAILABLE")
            assert reason.startswith("every compute unit is out of rotation (fake0: compute unit fake0 failed")
            assert dataplane.model_ready("batched")  # another model's device is not affected
            with pytest.raises(InvalidArgument, match="^requested model 'direct' is not available$"):
                await statistics(dataplane, "direct")  # as Triton answers for a model that is not ready

            first.fault = second.fault = None  # the card is back: the repository's watch puts the units back
            assert device.recover() == ["fake0", "fake1"]
            assert dataplane.model_ready("direct") and dataplane.server_ready()
            np.testing.assert_array_equal(output(await dataplane.infer(request(rows, "direct"))), expected)
            stats = await statistics(dataplane, "direct")
            assert (stats.inference_stats.success.count, stats.inference_stats.fail.count) == (3, 1)
            assert stats.inference_count == 3 * len(rows)

    asyncio.run(run())
