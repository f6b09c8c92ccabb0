"""Scheduling requests onto a model's device: one execution per request, or Triton's dynamic batcher.

The dynamic batcher (config.pbtxt `dynamic_batching`) merges rows from many requests into one
kernel execution of up to the kernel's capacity, splits the outputs back exactly, and honours
preferred_batch_size, max_queue_delay_microseconds, priority levels, queue policies (size limit,
timeouts with REJECT or DELAY) and preserve_ordering. A request larger than the capacity runs on
its own; the device splits it across executions and compute units.
"""

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from faast.host.device import DeviceError, Timings

from .errors import Internal, Unavailable
from .protocol import model_config as mc
from .statistics import ModelStatistics


def _now():
    return time.perf_counter_ns()


def _unloading(model_name):
    return Unavailable(f"model '{model_name}' is being unloaded")


class DirectScheduler:
    """Every request is its own execution, as Triton runs a model without dynamic batching."""

    def __init__(self, model_name, device, stats):
        self.model_name = model_name
        self.device = device
        self.stats = stats
        self.pending = 0  # requests received and not yet answered
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, rows, parameters=None):
        if self._closing:
            raise _unloading(self.model_name)
        arrival = _now()
        self.pending += 1
        self._idle.clear()
        try:
            outputs, (input_ns, infer_ns, output_ns) = await _execute(self.device, rows)
        finally:
            self.pending -= 1
            if not self.pending:
                self._idle.set()
        self.stats.record_execution(len(rows), input_ns, infer_ns, output_ns)
        self.stats.record_success(len(rows), _now() - arrival, 0, input_ns, infer_ns, output_ns)
        return outputs

    async def close(self):
        """Refuse new requests and return once every accepted one is answered."""
        self._closing = True
        await self._idle.wait()


async def _execute(device, rows):
    """Run rows on the device from a worker thread; returns outputs and (input, infer, output) ns."""
    timings = Timings()
    start = _now()
    try:
        outputs = await asyncio.get_running_loop().run_in_executor(None, device.run, rows, timings)
    except DeviceError as error:
        raise Internal(f"device '{device.kind}' failed: {error}") from None
    wall = _now() - start
    return outputs, (timings.pack_ns, max(wall - timings.pack_ns - timings.unpack_ns, 0), timings.unpack_ns)


@dataclass
class _Queued:
    rows: np.ndarray
    future: asyncio.Future
    arrival: int
    deadline: int  # perf_counter ns, 0 for none
    reject_on_timeout: bool
    sequence: int
    outputs: np.ndarray = field(default=None)


class DynamicBatcher:
    def __init__(self, model_name, device, stats, batching, capacity):
        self.model_name = model_name
        self.device = device
        self.stats = stats
        self.capacity = capacity
        self.preferred = sorted(size for size in batching.preferred_batch_size if 0 < size <= capacity)
        self.max_delay_ns = batching.max_queue_delay_microseconds * 1000
        self.levels = max(int(batching.priority_levels), 1)
        self.default_level = int(batching.default_priority_level) or self.levels
        self.policies = {
            level: batching.priority_queue_policy.get(level, batching.default_queue_policy)
            for level in range(1, self.levels + 1)
        }
        self.preserve_ordering = batching.preserve_ordering
        self.queues = {level: [] for level in range(1, self.levels + 1)}
        self.queued_rows = 0
        self.sequence = 0
        self.released = 0
        self.done = {}
        self.running = 0
        self.wakeup = asyncio.Event()
        self._closing = False
        self._idle = asyncio.Event()
        self.in_flight = asyncio.Semaphore(max(2 * len(device.compute_units), 2))
        self.loop_task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def pending(self):
        """Requests waiting in the queues or running."""
        return sum(len(waiting) for waiting in self.queues.values()) + self.running

    async def submit(self, rows, parameters=None):
        if self._closing:
            raise _unloading(self.model_name)
        parameters = parameters or {}
        level = parameters.get("priority", 0)  # an integer: the dataplane checked its type
        if not 1 <= level <= self.levels:  # 0 and levels the model lacks take the default, as in Triton
            level = self.default_level
        policy = self.policies[level]
        if policy.max_queue_size and len(self.queues[level]) >= policy.max_queue_size:
            raise Unavailable("Exceeds maximum queue size")
        timeout_us = policy.default_timeout_microseconds
        if policy.allow_timeout_override and "timeout" in parameters:
            timeout_us = parameters["timeout"]
        arrival = _now()
        request = _Queued(
            rows,
            asyncio.get_running_loop().create_future(),
            arrival,
            arrival + timeout_us * 1000 if timeout_us else 0,
            policy.timeout_action == mc.ModelQueuePolicy.REJECT,
            self.sequence,
        )
        self.sequence += 1
        self.queues[level].append(request)
        self.queued_rows += len(rows)
        self.wakeup.set()
        return await request.future

    def _target(self):
        """Rows worth dispatching without waiting longer: a preferred size, else the capacity."""
        if self.preferred:
            return self.queued_rows >= self.preferred[-1] or self.queued_rows in self.preferred
        return self.queued_rows >= self.capacity

    async def _loop(self):
        while True:
            while not any(self.queues.values()):
                self.wakeup.clear()
                await self.wakeup.wait()
            oldest = min(q[0].arrival for q in self.queues.values() if q)
            while not self._target():
                left = (oldest + self.max_delay_ns - _now()) / 1e9
                if left <= 0:
                    break
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), left)
                except TimeoutError:
                    break
            await self.in_flight.acquire()
            batch = self._take()
            if batch:
                self.running += len(batch)  # counted from here: close() must not miss a batch not yet started
                asyncio.get_running_loop().create_task(self._run(batch))
            else:
                self.in_flight.release()

    def _take(self):
        """Requests for one execution: by priority, first come first served, up to the capacity."""
        now, batch, rows = _now(), [], 0
        limit = self.capacity
        if self.preferred and self.queued_rows < self.capacity:
            limit = max((size for size in self.preferred if size <= self.queued_rows), default=self.capacity)
        for level in sorted(self.queues):
            waiting = self.queues[level]
            while waiting:
                request = waiting[0]
                if request.deadline and now > request.deadline and request.reject_on_timeout:
                    waiting.pop(0)
                    self.queued_rows -= len(request.rows)
                    self._settle(request, error=Unavailable("Request timeout expired"))
                    continue
                if batch and rows + len(request.rows) > limit:
                    return batch
                waiting.pop(0)
                self.queued_rows -= len(request.rows)
                batch.append(request)
                rows += len(request.rows)
        return batch

    async def _run(self, batch):
        start = _now()
        try:
            rows = np.concatenate([request.rows for request in batch]) if len(batch) > 1 else batch[0].rows
            outputs, (input_ns, infer_ns, output_ns) = await _execute(self.device, rows)
        except Exception as error:  # the dataplane records the failures
            for request in batch:
                self._settle(request, error=error)
            return
        finally:
            self.in_flight.release()
            self.running -= len(batch)
            self._note_if_idle()
        self.stats.record_execution(len(rows), input_ns, infer_ns, output_ns)
        offset = 0
        for request in batch:
            count = len(request.rows)
            self.stats.record_success(
                count, _now() - request.arrival, start - request.arrival, input_ns, infer_ns, output_ns
            )
            self._settle(request, outputs=outputs[offset : offset + count])
            offset += count

    def _settle(self, request, outputs=None, error=None):
        """Resolve a request; with preserve_ordering, only once every earlier request is resolved."""

        def resolve(item, result, failure):
            if not item.future.done():
                item.future.set_exception(failure) if failure else item.future.set_result(result)

        if not self.preserve_ordering:
            resolve(request, outputs, error)
        else:
            self.done[request.sequence] = (request, outputs, error)
            while self.released in self.done:
                resolve(*self.done.pop(self.released))
                self.released += 1
        self._note_if_idle()

    def _note_if_idle(self):
        if self._closing and not self.pending and not self.done:
            self._idle.set()

    async def close(self):
        """Refuse new requests, run every queued and running one to its answer, then stop batching."""
        self._closing = True
        if self.pending or self.done:
            await self._idle.wait()
        self.loop_task.cancel()


def make_scheduler(config, device):
    """The scheduler config.pbtxt asks for, with fresh statistics."""
    stats = ModelStatistics()
    if config.HasField("dynamic_batching"):
        capacity = min(
            config.max_batch_size or device.kernel.layout.rows_per_execution, device.kernel.layout.rows_per_execution
        )
        return DynamicBatcher(config.name, device, stats, config.dynamic_batching, capacity)
    return DirectScheduler(config.name, device, stats)
