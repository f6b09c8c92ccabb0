"""The schedulers (faast.batcher.DynamicBatcher, faast.scheduler.DirectScheduler) on a fake device.

No kernel, no server: a `FakeDevice` answers `rows * 2 + 1`, records every execution (its rows, in
start order), counts the executions running at once, and can hold an execution on a
`threading.Event` (it runs in a worker thread, as `execute` calls it) or fail it with a DeviceError.
Every test drives its own event loop with asyncio.run and synchronises on the device's records and
the batcher's `pending`, never on timing luck; sleeps are a few milliseconds, none longer than the
delay or timeout it tests. Expected behaviour is Triton's documented dynamic batching (model_config.proto,
docs/user_guide/batcher.md).
"""

import asyncio
import threading
import time

import numpy as np
import pytest

from faast.batcher import DynamicBatcher
from faast.contract.errors import DeviceError, Internal, Unavailable
from faast.host.buffer_pool import Timings
from faast.protocol import model_config as mc
from faast.scheduler import Completion, DirectScheduler
from faast.statistics import ModelStatistics

WIDTH = 3  # input values per row
LIMIT_S = 5.0  # a bound for waits that should end at once: reaching it means the test failed
LONG_DELAY_US = 30_000_000  # a max_queue_delay no test waits for
REJECT = mc.ModelQueuePolicy.REJECT
DELAY = mc.ModelQueuePolicy.DELAY


class FakeDevice:
    """What a scheduler needs of a `Device`: `kind`, `max_in_flight`, a blocking `run` and `run_small`."""

    kind = "fake"

    def __init__(self, max_in_flight=1):
        self.max_in_flight = max_in_flight
        self.inputs: list[np.ndarray] = []  # each execution's rows, in the order they started
        self.finished: list[int] = []  # execution indices, in the order they returned
        self.started_ns: list[int] = []
        self.active = 0
        self.max_active = 0
        self.failing: set[int] = set()  # execution indices that raise DeviceError
        self._gates: dict[int, threading.Event] = {}
        self._gate_all: threading.Event | None = None
        self._every_gate: list[threading.Event] = []
        self._lock = threading.Lock()

    @property
    def executions(self) -> list[int]:
        """Rows of each execution, in start order."""
        return [len(rows) for rows in self.inputs]

    def hold(self, *indices: int) -> threading.Event:
        """Executions `indices` (every execution when none) wait until the returned event is set."""
        gate = threading.Event()
        self._every_gate.append(gate)
        if indices:
            for index in indices:
                self._gates[index] = gate
        else:
            self._gate_all = gate
        return gate

    def release_all(self) -> None:
        for gate in self._every_gate:
            gate.set()

    def run_small(self, rows, timings=None, into=None) -> None:
        return None  # every run goes to a worker thread, where a test can hold it

    def run_blocks(self, blocks: list[np.ndarray], timings: Timings | None = None, into=None) -> list[np.ndarray]:
        """A batch's blocks → each block's outputs, as Device.run answers a list (no destinations here)."""
        assert all(out is None for out in into or []), "the fake device has no shared memory to unpack into"
        rows = np.concatenate(blocks)
        with self._lock:
            index = len(self.inputs)
            self.inputs.append(np.array(rows, copy=True))
            self.started_ns.append(time.perf_counter_ns())
            gate = self._gates.get(index, self._gate_all)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if gate is not None and not gate.wait(LIMIT_S):
                raise RuntimeError(f"execution {index} was held and never released")
            if timings is not None:
                timings.pack_ns += 1_000
                timings.unpack_ns += 1_000
            if index in self.failing:
                raise DeviceError(f"execution {index} failed")
            outputs = (np.asarray(rows, np.float32) * 2 + 1).astype(np.float32)
            return np.split(outputs, np.cumsum([len(block) for block in blocks])[:-1])
        finally:
            with self._lock:
                self.active -= 1
                self.finished.append(index)


_tags = iter(range(1, 1_000_000))


def rows_of(count: int) -> np.ndarray:
    """`count` rows of values no other call returns, so every output row says whose it is."""
    base = next(_tags) * 1_000
    return (base + np.arange(count * WIDTH, dtype=np.float32)).reshape(count, WIDTH)


def expected(rows: np.ndarray) -> np.ndarray:
    return rows * 2 + 1


def check_answer(completion: Completion, rows: np.ndarray) -> None:
    assert completion.outputs.dtype == np.float32
    np.testing.assert_array_equal(completion.outputs, expected(rows))


async def until(condition, what="condition") -> None:
    """Poll the event loop until `condition()` holds; fails the test after LIMIT_S."""
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.0005)


async def settle_loop(turns=20) -> None:
    """Let every callback already scheduled run (several event-loop turns, no wall-clock wait)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def submit(scheduler, rows, **parameters) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(scheduler.submit(rows, parameters or None))


def batching(**fields) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(**fields)


def run_batcher(device, config, capacity, body):
    """asyncio.run(body(batcher, stats)) with a batcher built in the loop and always closed after."""

    async def main():
        stats = ModelStatistics()
        batcher = DynamicBatcher("m", device, stats, config, capacity)
        try:
            return await asyncio.wait_for(body(batcher, stats), LIMIT_S)
        finally:
            device.release_all()
            await asyncio.wait_for(batcher.close(), LIMIT_S)
            assert batcher.pending == 0

    return asyncio.run(main())


async def running_first(batcher, device, rows=None, **parameters) -> tuple[asyncio.Task, np.ndarray]:
    """Occupy the device: a request whose execution (index 0) is held until the test releases it."""
    rows = rows_of(1) if rows is None else rows
    task = submit(batcher, rows, **parameters)
    await until(lambda: len(device.inputs) == 1, "the first execution to start")
    return task, rows


# preferred_batch_size and max_queue_delay_microseconds


def test_preferred_size_dispatches_at_once_without_waiting_the_delay():
    device = FakeDevice(max_in_flight=2)

    async def body(batcher, stats):
        requests = [rows_of(1) for _ in range(4)]
        tasks = [submit(batcher, rows) for rows in requests]
        # The delay is 30 s: finishing within LIMIT_S means the preferred size did not wait for it.
        answers = await asyncio.gather(*tasks)
        assert device.executions == [4]
        np.testing.assert_array_equal(device.inputs[0], np.concatenate(requests))
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)

    run_batcher(device, batching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=LONG_DELAY_US), 16, body)


def test_largest_preferred_size_dispatches_at_once():
    device = FakeDevice(max_in_flight=2)

    async def body(batcher, stats):
        requests = [rows_of(2) for _ in range(4)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        assert device.executions == [8]
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)

    run_batcher(device, batching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=LONG_DELAY_US), 16, body)


def test_lone_request_waits_the_queue_delay_then_runs():
    device = FakeDevice()
    delay_s = 0.020

    async def body(batcher, stats):
        rows = rows_of(1)
        before = time.perf_counter_ns()
        task = submit(batcher, rows)
        await asyncio.sleep(delay_s / 4)
        assert device.inputs == [], "a lone request ran before max_queue_delay expired"
        assert batcher.pending == 1
        check_answer(await task, rows)
        waited_s = (device.started_ns[0] - before) / 1e9
        assert delay_s * 0.95 <= waited_s < delay_s + 0.5, waited_s
        assert device.executions == [1]

    run_batcher(device, batching(max_queue_delay_microseconds=int(delay_s * 1e6)), 8, body)


def test_a_sub_millisecond_delay_is_honoured_to_well_under_a_millisecond():
    """asyncio rounds its own waits up to a whole millisecond; the batcher's wake-up does not. The
    median of 30 lone requests' queue times with a 200 us delay stays within 0.7 ms of the delay
    (about 1.2 ms with a millisecond timer), a bound loose enough for a noisy machine."""
    device = FakeDevice()
    delay_us = 200

    async def body(batcher, stats):
        waits = []
        for _ in range(30):
            completion = await submit(batcher, rows_of(1))
            waits.append(completion.queue_ns / 1000)
        assert min(waits) >= delay_us * 0.95, min(waits)  # never sent before the delay
        assert float(np.median(waits)) < delay_us + 700, sorted(waits)

    run_batcher(device, batching(max_queue_delay_microseconds=delay_us), 8, body)


def test_without_preferred_sizes_rows_up_to_capacity_merge_after_the_delay():
    device = FakeDevice()

    async def body(batcher, stats):
        requests = [rows_of(2), rows_of(3), rows_of(1)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        assert device.executions == [6]
        np.testing.assert_array_equal(device.inputs[0], np.concatenate(requests))
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)

    run_batcher(device, batching(max_queue_delay_microseconds=20_000), 8, body)


def test_reaching_capacity_dispatches_without_waiting_the_delay():
    device = FakeDevice()

    async def body(batcher, stats):
        requests = [rows_of(4), rows_of(4)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        assert device.executions == [8]
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)

    run_batcher(device, batching(max_queue_delay_microseconds=LONG_DELAY_US), 8, body)


def test_formable_preferred_batch_is_sent_at_once_when_rows_jump_past_it():
    device = FakeDevice()
    delay_s = 0.3

    async def body(batcher, stats):
        requests = [rows_of(1) for _ in range(5)]
        tasks = [submit(batcher, rows) for rows in requests]  # queued in one event-loop turn: 0 -> 5 rows
        try:
            await asyncio.wait_for(asyncio.shield(tasks[0]), delay_s / 3)
        except TimeoutError:
            pytest.fail(
                f"no execution within {delay_s / 3:.2f} s although 4 of the 5 queued rows form a preferred batch"
            )
        finally:
            await asyncio.gather(*tasks)
        assert device.executions[0] == 4

    config = batching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=int(delay_s * 1e6))
    run_batcher(device, config, 16, body)


def test_expired_delay_sends_the_batch_as_is_even_if_not_a_preferred_size():
    device = FakeDevice()

    async def body(batcher, stats):
        requests = [rows_of(3), rows_of(2)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)
        assert device.executions == [5]

    run_batcher(device, batching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=20_000), 16, body)


def test_full_queue_sends_the_largest_preferred_batch():
    device = FakeDevice(max_in_flight=1)

    async def body(batcher, stats):
        requests = [rows_of(1) for _ in range(20)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)
        assert device.executions == [8, 8, 4]

    run_batcher(device, batching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=LONG_DELAY_US), 16, body)


# capacity and splitting the outputs back


def test_requests_beyond_capacity_split_into_executions_of_at_most_capacity():
    device = FakeDevice(max_in_flight=1)  # one execution at a time: their order is the dispatch order

    async def body(batcher, stats):
        requests = [rows_of(3), rows_of(2), rows_of(1), rows_of(6), rows_of(4)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        # FIFO up to 4 rows: [3] (2 more would exceed), [2, 1], [6] alone (larger than the capacity), [4].
        assert device.executions == [3, 3, 6, 4]
        np.testing.assert_array_equal(device.inputs[1], np.concatenate(requests[1:3]))
        np.testing.assert_array_equal(device.inputs[2], requests[3])
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)

    run_batcher(device, batching(max_queue_delay_microseconds=LONG_DELAY_US), 4, body)


def test_outputs_split_back_exactly_to_each_request_in_order():
    device = FakeDevice()

    async def body(batcher, stats):
        requests = [rows_of(count) for count in (1, 5, 2, 4, 3)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in requests))
        assert device.executions == [15]
        for answer, rows in zip(answers, requests, strict=True):
            assert answer.outputs.shape == (len(rows), WIDTH)
            check_answer(answer, rows)

    run_batcher(device, batching(max_queue_delay_microseconds=LONG_DELAY_US), 15, body)


# priority levels


def test_higher_priority_request_goes_first_in_the_next_execution():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device, priority=2)
        low = [rows_of(1), rows_of(2)]
        high = rows_of(1)
        low_tasks = [submit(batcher, rows, priority=2) for rows in low]
        await settle_loop()
        high_task = submit(batcher, high, priority=1)
        await until(lambda: batcher.pending == 4, "three queued requests")
        gate.set()
        check_answer(await first, first_rows)
        check_answer(await high_task, high)
        for task, rows in zip(low_tasks, low, strict=True):
            check_answer(await task, rows)
        assert device.executions == [1, 4]
        np.testing.assert_array_equal(device.inputs[1], np.concatenate([high, *low]))

    run_batcher(device, batching(priority_levels=2, default_priority_level=2), 8, body)


@pytest.mark.parametrize(
    ("priority", "default_level", "goes_first"),
    [(7, 1, True), (0, 1, True), (3, 2, False), (0, 2, False)],
    ids=["out-of-range-default-1", "zero-default-1", "out-of-range-default-2", "zero-default-2"],
)
def test_priority_outside_the_levels_takes_the_default_level(priority, default_level, goes_first):
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)

    async def body(batcher, stats):
        await running_first(batcher, device, priority=1)
        level_two = rows_of(1)
        other = rows_of(1)
        tasks = [submit(batcher, level_two, priority=2)]
        await settle_loop()
        tasks.append(submit(batcher, other, priority=priority))
        await until(lambda: batcher.pending == 3, "two queued requests")
        gate.set()
        for task, rows in zip(tasks, (level_two, other), strict=True):
            check_answer(await task, rows)
        order = [other, level_two] if goes_first else [level_two, other]
        np.testing.assert_array_equal(device.inputs[1], np.concatenate(order))

    run_batcher(device, batching(priority_levels=2, default_priority_level=default_level), 8, body)


# queue policies: timeouts, REJECT and DELAY, max_queue_size


async def wait_past(start_ns: int, timeout_us: int) -> None:
    """Sleep until `timeout_us` has passed since `start_ns` (never much longer)."""
    while time.perf_counter_ns() - start_ns <= timeout_us * 1_000:
        await asyncio.sleep(timeout_us / 4e6)


def test_reject_timeout_refuses_a_request_that_waited_too_long():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    config = batching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=mc.ModelQueuePolicy(timeout_action=REJECT, default_timeout_microseconds=timeout_us),
        priority_queue_policy={1: mc.ModelQueuePolicy()},  # level 1: no timeout
    )

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device, priority=1)
        start = time.perf_counter_ns()
        late = submit(batcher, rows_of(1), priority=2)  # default level, default policy: 2 ms
        patient_rows = rows_of(1)
        patient = submit(batcher, patient_rows, priority=1)
        await wait_past(start, timeout_us)
        gate.set()
        with pytest.raises(Unavailable, match="^Request timeout expired$"):
            await late
        check_answer(await first, first_rows)
        check_answer(await patient, patient_rows)
        assert device.executions == [1, 1], "the timed-out request must not be executed"

    run_batcher(device, config, 8, body)


def test_timeout_override_shorter_than_the_default_wins():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    policy = mc.ModelQueuePolicy(
        timeout_action=REJECT, default_timeout_microseconds=LONG_DELAY_US, allow_timeout_override=True
    )

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device)
        start = time.perf_counter_ns()
        late = submit(batcher, rows_of(1), timeout=timeout_us)
        default_rows = rows_of(1)
        default = submit(batcher, default_rows)  # the default 30 s timeout
        await wait_past(start, timeout_us)
        gate.set()
        with pytest.raises(Unavailable, match="^Request timeout expired$"):
            await late
        check_answer(await first, first_rows)
        check_answer(await default, default_rows)
        assert device.executions == [1, 1]

    run_batcher(device, batching(default_queue_policy=policy), 8, body)


def test_timeout_parameter_is_ignored_without_allow_timeout_override():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    policy = mc.ModelQueuePolicy(timeout_action=REJECT, default_timeout_microseconds=LONG_DELAY_US)

    async def body(batcher, stats):
        await running_first(batcher, device)
        start = time.perf_counter_ns()
        rows = rows_of(1)
        request = submit(batcher, rows, timeout=timeout_us)
        await wait_past(start, timeout_us)
        gate.set()
        check_answer(await request, rows)

    run_batcher(device, batching(default_queue_policy=policy), 8, body)


def test_timeout_override_cannot_increase_the_default_timeout():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    config = batching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=mc.ModelQueuePolicy(
            timeout_action=REJECT, default_timeout_microseconds=timeout_us, allow_timeout_override=True
        ),
        priority_queue_policy={1: mc.ModelQueuePolicy()},
    )

    async def body(batcher, stats):
        await running_first(batcher, device, priority=1)
        start = time.perf_counter_ns()
        late = submit(batcher, rows_of(1), priority=2, timeout=LONG_DELAY_US)
        await wait_past(start, timeout_us)
        gate.set()
        with pytest.raises(Unavailable, match="^Request timeout expired$"):
            await late

    run_batcher(device, config, 8, body)


def test_delay_timeout_still_executes_and_answers_the_request():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    config = batching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=mc.ModelQueuePolicy(timeout_action=DELAY, default_timeout_microseconds=timeout_us),
        priority_queue_policy={1: mc.ModelQueuePolicy()},
    )

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device, priority=1)
        start = time.perf_counter_ns()
        rows = rows_of(2)
        delayed = submit(batcher, rows, priority=2)
        await wait_past(start, timeout_us)
        gate.set()
        check_answer(await delayed, rows)
        check_answer(await first, first_rows)
        assert device.executions == [1, 2]

    run_batcher(device, config, 8, body)


def test_delayed_request_goes_after_requests_that_have_not_timed_out():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    timeout_us = 2_000
    policy = mc.ModelQueuePolicy(
        timeout_action=DELAY, default_timeout_microseconds=LONG_DELAY_US, allow_timeout_override=True
    )

    async def body(batcher, stats):
        await running_first(batcher, device)
        start = time.perf_counter_ns()
        timed_out = rows_of(1)
        tasks = [submit(batcher, timed_out, timeout=timeout_us)]
        await wait_past(start, timeout_us)
        in_time = rows_of(1)
        tasks.append(submit(batcher, in_time))
        await until(lambda: batcher.pending == 3, "two queued requests")
        gate.set()
        await asyncio.gather(*tasks)
        # Capacity 1: each request is its own execution, in the order the batcher took them.
        np.testing.assert_array_equal(device.inputs[1], in_time)
        np.testing.assert_array_equal(device.inputs[2], timed_out)

    run_batcher(device, batching(default_queue_policy=policy), 1, body)


@pytest.mark.parametrize("preserve_ordering", [False, True])
def test_a_cancelled_request_leaves_the_queue_and_never_runs(preserve_ordering):
    """A gRPC cancel or deadline cancels the awaiting task: the request leaves the queue wherever it
    stands in it, the others run and are answered (in order, with preserve_ordering)."""
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device)
        queued = [rows_of(1), rows_of(2), rows_of(1)]
        tasks = [submit(batcher, rows) for rows in queued]
        await until(lambda: batcher.pending == 4, "three queued requests")
        tasks[1].cancel()
        await until(lambda: batcher.pending == 3, "the cancelled request to leave the queue")
        gate.set()
        check_answer(await first, first_rows)
        for index in (0, 2):
            check_answer(await tasks[index], queued[index])
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        assert device.executions == [1, 2]  # the two requests left, merged; never the cancelled one's 2 rows
        np.testing.assert_array_equal(device.inputs[1], np.concatenate([queued[0], queued[2]]))

    run_batcher(device, batching(preserve_ordering=preserve_ordering), 8, body)


def test_max_queue_size_refuses_the_request_beyond_it_at_once():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    policy = mc.ModelQueuePolicy(max_queue_size=2)

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device)  # running: no longer in the queue
        queued = [rows_of(1), rows_of(1)]
        tasks = [submit(batcher, rows) for rows in queued]
        await until(lambda: batcher.pending == 3, "two queued requests")
        with pytest.raises(Unavailable, match="^Exceeds maximum queue size$"):
            await batcher.submit(rows_of(1))  # refused while the device is still held
        assert batcher.pending == 3
        gate.set()
        check_answer(await first, first_rows)
        for task, rows in zip(tasks, queued, strict=True):
            check_answer(await task, rows)
        assert sum(device.executions) == 3

    run_batcher(device, batching(default_queue_policy=policy), 8, body)


def test_max_queue_size_applies_per_priority_level():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)
    config = batching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=mc.ModelQueuePolicy(max_queue_size=1),
        priority_queue_policy={1: mc.ModelQueuePolicy(max_queue_size=3)},
    )

    async def body(batcher, stats):
        await running_first(batcher, device, priority=1)
        level_two = submit(batcher, rows_of(1), priority=2)
        await settle_loop()
        with pytest.raises(Unavailable, match="^Exceeds maximum queue size$"):
            await batcher.submit(rows_of(1), {"priority": 2})
        level_one = [submit(batcher, rows_of(1), priority=1) for _ in range(3)]
        await until(lambda: batcher.pending == 5, "four queued requests")
        with pytest.raises(Unavailable, match="^Exceeds maximum queue size$"):
            await batcher.submit(rows_of(1), {"priority": 1})
        gate.set()
        await asyncio.gather(level_two, *level_one)

    run_batcher(device, config, 8, body)


# preserve_ordering


@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_ordering_releases_answers_in_submission_order(preserve):
    device = FakeDevice(max_in_flight=2)  # two compute units: executions can finish out of order
    gate = device.hold(0)

    async def body(batcher, stats):
        answered = []
        first_rows, second_rows = rows_of(1), rows_of(1)
        first = submit(batcher, first_rows)
        first.add_done_callback(lambda _: answered.append("first"))
        await until(lambda: len(device.inputs) == 1, "the first execution to start")
        second = submit(batcher, second_rows)
        second.add_done_callback(lambda _: answered.append("second"))
        await until(lambda: len(device.finished) == 1, "the second execution to return")
        await until(lambda: batcher.pending == 1, "the batcher to take the second execution's outputs")
        await settle_loop()
        assert device.finished == [1]
        if preserve:
            assert not second.done(), "the second answer was released before the first"
        else:
            assert answered == ["second"]
        gate.set()
        check_answer(await first, first_rows)
        check_answer(await second, second_rows)
        await settle_loop()  # the done-callbacks that record the order
        assert answered == (["first", "second"] if preserve else ["second", "first"])

    run_batcher(device, batching(preserve_ordering=preserve), 1, body)


def test_preserve_ordering_keeps_order_across_a_rejected_request():
    device = FakeDevice(max_in_flight=2)
    gate = device.hold(0)
    timeout_us = 2_000
    config = batching(
        preserve_ordering=True,
        priority_levels=2,
        default_priority_level=1,
        priority_queue_policy={
            2: mc.ModelQueuePolicy(timeout_action=REJECT, default_timeout_microseconds=timeout_us),
        },
    )

    async def body(batcher, stats):
        answered = []
        first_rows = rows_of(1)
        first = submit(batcher, first_rows)
        first.add_done_callback(lambda _: answered.append("first"))
        await until(lambda: len(device.inputs) == 1, "the first execution to start")
        # Hold the second compute unit too, so the level-2 request stays queued past its timeout.
        blocker_gate = device.hold(1)
        blocker_rows = rows_of(1)
        blocker = submit(batcher, blocker_rows)
        blocker.add_done_callback(lambda _: answered.append("blocker"))
        await until(lambda: len(device.inputs) == 2, "the second execution to start")
        start = time.perf_counter_ns()
        rejected = submit(batcher, rows_of(1), priority=2)
        rejected.add_done_callback(lambda _: answered.append("rejected"))
        await wait_past(start, timeout_us)
        blocker_gate.set()  # frees a slot: the batcher takes the queue and rejects the timed-out request
        await until(lambda: len(device.finished) == 1, "the second execution to return")
        await until(lambda: batcher.pending == 1, "the rejection")
        await settle_loop()
        assert answered == [], "answers were released before the first one"
        gate.set()
        check_answer(await first, first_rows)
        check_answer(await blocker, blocker_rows)
        with pytest.raises(Unavailable, match="^Request timeout expired$"):
            await rejected
        await settle_loop()  # the done-callbacks that record the order
        assert answered == ["first", "blocker", "rejected"]
        assert device.executions == [1, 1]

    run_batcher(device, config, 1, body)


# device failure, closing, the in-flight limit


def test_device_failure_fails_every_request_of_the_batch_then_serving_resumes():
    device = FakeDevice()
    device.failing.add(0)

    async def body(batcher, stats):
        requests = [rows_of(1), rows_of(2), rows_of(1)]
        results = await asyncio.gather(*(submit(batcher, rows) for rows in requests), return_exceptions=True)
        assert device.executions == [4]
        for result in results:
            assert isinstance(result, Internal), result
            assert str(result) == "device 'fake' failed: execution 0 failed"
        assert stats.execution_count == 0
        assert batcher.pending == 0
        again = [rows_of(2), rows_of(2)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in again))
        for answer, rows in zip(answers, again, strict=True):
            check_answer(answer, rows)
        assert device.executions == [4, 4]
        assert stats.execution_count == 1

    run_batcher(device, batching(max_queue_delay_microseconds=LONG_DELAY_US), 4, body)


def test_close_refuses_new_requests_and_answers_queued_and_running_ones_first():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)

    async def body(batcher, stats):
        first, first_rows = await running_first(batcher, device)
        queued = [rows_of(1), rows_of(2)]
        tasks = [first] + [submit(batcher, rows) for rows in queued]
        await until(lambda: batcher.pending == 3, "two queued requests")
        closing = asyncio.get_running_loop().create_task(batcher.close())
        await settle_loop()
        assert not closing.done(), "close() returned with requests queued and running"
        with pytest.raises(Unavailable, match="^model 'm' is being unloaded$"):
            await batcher.submit(rows_of(1))
        assert batcher.pending == 3
        gate.set()
        await asyncio.wait_for(closing, LIMIT_S)
        assert all(task.done() for task in tasks), "close() returned before every request had its answer"
        assert batcher.pending == 0
        for task, rows in zip(tasks, [first_rows, *queued], strict=True):
            check_answer(task.result(), rows)
        assert device.executions == [1, 3]

    run_batcher(device, batching(), 8, body)


def test_close_of_an_idle_batcher_returns_at_once_and_refuses_requests():
    async def main():
        batcher = DynamicBatcher("m", FakeDevice(), ModelStatistics(), batching(), 8)
        await asyncio.wait_for(batcher.close(), LIMIT_S)
        assert batcher.pending == 0
        with pytest.raises(Unavailable, match="^model 'm' is being unloaded$"):
            await batcher.submit(rows_of(1))
        await settle_loop()
        assert batcher.loop_task.cancelled()

    asyncio.run(main())


def test_never_more_executions_at_once_than_the_device_allows():
    device = FakeDevice(max_in_flight=2)
    gate = device.hold()

    async def body(batcher, stats):
        requests = [rows_of(1) for _ in range(6)]
        tasks = [submit(batcher, rows) for rows in requests]
        await until(lambda: device.active == 2, "two executions to run")
        await asyncio.sleep(0.01)  # time for a wrongly started third execution to show
        assert len(device.inputs) == 2
        assert batcher.pending == 6
        gate.set()
        for task, rows in zip(tasks, requests, strict=True):
            check_answer(await task, rows)
        assert device.max_active == 2
        assert device.executions == [1] * 6

    run_batcher(device, batching(), 1, body)


# statistics and completions


def test_statistics_record_each_execution_and_its_batch_size():
    device = FakeDevice()
    delay_s = 0.010

    async def body(batcher, stats):
        merged = [rows_of(2), rows_of(2)]
        answers = await asyncio.gather(*(submit(batcher, rows) for rows in merged))
        lone_rows = rows_of(1)
        lone = await submit(batcher, lone_rows)
        check_answer(lone, lone_rows)
        assert device.executions == [4, 1]
        assert stats.execution_count == 2
        assert sorted(stats.batches) == [1, 4]
        for size in (1, 4):
            assert stats.batches[size].compute_infer.count == 1
            assert stats.batches[size].compute_input.ns == 1_000
            assert stats.batches[size].compute_output.ns == 1_000
        proto = stats.to_proto("m", "1")
        assert proto.execution_count == 2
        assert [batch.batch_size for batch in proto.batch_stats] == [1, 4]
        # The lone request waited max_queue_delay in the queue; both merged ones ran in one execution.
        assert lone.queue_ns >= delay_s * 0.95 * 1e9
        assert answers[0].infer_ns == answers[1].infer_ns
        assert (lone.input_ns, lone.output_ns) == (1_000, 1_000)

    run_batcher(device, batching(max_queue_delay_microseconds=int(delay_s * 1e6)), 4, body)


def test_queue_time_counts_the_wait_for_a_busy_device():
    device = FakeDevice(max_in_flight=1)
    gate = device.hold(0)

    async def body(batcher, stats):
        first, _ = await running_first(batcher, device)
        rows = rows_of(1)
        waiting = submit(batcher, rows)
        await until(lambda: batcher.pending == 2, "a queued request")
        await asyncio.sleep(0.005)
        gate.set()
        completion = await waiting
        check_answer(completion, rows)
        assert completion.queue_ns >= 5_000_000
        assert (await first).queue_ns < completion.queue_ns

    run_batcher(device, batching(), 8, body)


# DirectScheduler


def test_direct_scheduler_runs_each_request_as_its_own_execution():
    device = FakeDevice(max_in_flight=1)

    async def main():
        stats = ModelStatistics()
        scheduler = DirectScheduler("m", device, stats)
        requests = [rows_of(2), rows_of(1), rows_of(3)]
        answers = await asyncio.gather(*(submit(scheduler, rows) for rows in requests))
        for answer, rows in zip(answers, requests, strict=True):
            check_answer(answer, rows)
            assert answer.queue_ns == 0
            assert (answer.input_ns, answer.output_ns) == (1_000, 1_000)
        assert sorted(device.executions) == [1, 2, 3]
        assert stats.execution_count == 3
        assert sorted(stats.batches) == [1, 2, 3]
        assert scheduler.pending == 0
        await scheduler.close()

    asyncio.run(main())


def test_direct_scheduler_device_failure_is_internal():
    device = FakeDevice()
    device.failing.add(0)

    async def main():
        stats = ModelStatistics()
        scheduler = DirectScheduler("m", device, stats)
        with pytest.raises(Internal, match="^device 'fake' failed: execution 0 failed$"):
            await scheduler.submit(rows_of(1))
        assert scheduler.pending == 0
        assert stats.execution_count == 0
        rows = rows_of(1)
        check_answer(await scheduler.submit(rows), rows)
        await scheduler.close()

    asyncio.run(main())


def test_direct_scheduler_close_waits_for_running_requests():
    device = FakeDevice(max_in_flight=2)
    gate = device.hold()

    async def main():
        scheduler = DirectScheduler("m", device, ModelStatistics())
        try:
            requests = [rows_of(1), rows_of(2)]
            tasks = [submit(scheduler, rows) for rows in requests]
            await until(lambda: device.active == 2, "both requests to run")
            assert scheduler.pending == 2
            closing = asyncio.get_running_loop().create_task(scheduler.close())
            await settle_loop()
            assert not closing.done(), "close() returned with requests running"
            with pytest.raises(Unavailable, match="^model 'm' is being unloaded$"):
                await scheduler.submit(rows_of(1))
            gate.set()
            await asyncio.wait_for(closing, LIMIT_S)
            assert all(task.done() for task in tasks)
            assert scheduler.pending == 0
            for task, rows in zip(tasks, requests, strict=True):
                check_answer(task.result(), rows)
        finally:
            device.release_all()
            await asyncio.wait_for(scheduler.close(), LIMIT_S)

    asyncio.run(main())
