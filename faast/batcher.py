"""Triton's dynamic batcher (config.pbtxt `dynamic_batching`) as a `Scheduler`.

It merges rows from many requests into one kernel execution of up to the kernel's capacity, splits
the outputs back exactly, and honours preferred_batch_size, max_queue_delay_microseconds, priority
levels, queue policies (size limit, timeouts with REJECT or DELAY) and preserve_ordering. A request
larger than the capacity runs on its own; the device splits it across executions and compute units.
At most `device.max_in_flight` executions run at once: the device's own limit, so rows wait here,
where they can still be merged, rather than in front of busy compute units.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

from faast.host.device import Device

from .contract.errors import BlockVanished, Unavailable
from .contract.memory import ClientMemory, Rows
from .precise_timer import PreciseTimer
from .protocol import model_config as mc
from .scheduler import Completion, Scheduler, execute, now_ns, unloading
from .statistics import ModelStatistics


@dataclass(eq=False)  # compared by identity: queues find, and drop, this very request
class _Queued:
    rows: Rows
    into: ClientMemory | None  # where the device unpacks its outputs (the client's shared memory), if anywhere
    future: asyncio.Future
    arrival: int
    deadline: int  # perf_counter ns, 0 for none
    reject_on_timeout: bool
    sequence: int


class DynamicBatcher(Scheduler):
    def __init__(
        self,
        model_name: str,
        device: Device,
        stats: ModelStatistics,
        batching: mc.ModelDynamicBatching,
        capacity: int,
    ):
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
        self.queues: dict[int, list[_Queued]] = {level: [] for level in range(1, self.levels + 1)}
        self.sequence = 0
        self.released = 0
        self.done: dict[int, tuple[_Queued, Completion | None, BaseException | None]] = {}
        self.running = 0
        self.wakeup = asyncio.Event()
        self.timer = PreciseTimer(asyncio.get_running_loop(), self.wakeup.set)
        self._closing = False
        self._idle = asyncio.Event()
        self.in_flight = asyncio.Semaphore(device.max_in_flight)
        self.loop_task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def pending(self) -> int:
        return sum(len(waiting) for waiting in self.queues.values()) + self.running

    async def submit(
        self, rows: Rows, parameters: dict[str, Any] | None = None, into: ClientMemory | None = None
    ) -> Completion:
        if self._closing:
            raise unloading(self.model_name)
        parameters = parameters or {}
        level = parameters.get("priority", 0)  # an integer: the dataplane checked its type
        if not 1 <= level <= self.levels:  # 0 and levels the model lacks take the default, as in Triton
            level = self.default_level
        policy = self.policies[level]
        if policy.max_queue_size and len(self.queues[level]) >= policy.max_queue_size:
            raise Unavailable("Exceeds maximum queue size")
        timeout_us = policy.default_timeout_microseconds
        asked = parameters.get("timeout", 0)
        if policy.allow_timeout_override and asked > 0 and (not timeout_us or asked < timeout_us):
            timeout_us = asked  # a request may shorten the policy's timeout, never lengthen it (Triton)
        arrival = now_ns()
        request = _Queued(
            rows,
            into,
            asyncio.get_running_loop().create_future(),
            arrival,
            arrival + timeout_us * 1000 if timeout_us else 0,
            policy.timeout_action == mc.ModelQueuePolicy.REJECT,
            self.sequence,
        )
        self.sequence += 1
        self.queues[level].append(request)
        self.wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:  # the client gave up (gRPC cancel or deadline): never computed
            self._withdraw(level, request)
            raise

    def _withdraw(self, level: int, request: _Queued) -> None:
        """Drop a cancelled request from its queue; one already taken into a batch just goes unanswered."""
        if request in self.queues[level]:
            self.queues[level].remove(request)
            self._settle(request)  # with preserve_ordering, the requests after it are not held for it

    async def _loop(self) -> None:
        while True:
            await self.in_flight.acquire()  # a free slot first: meanwhile rows gather (and can leave) here
            while not (batch := self._take(now_ns())):
                self.wakeup.clear()
                oldest = min((q[0].arrival for q in self.queues.values() if q), default=None)
                if oldest is not None:
                    self.timer.arm(oldest + self.max_delay_ns)  # wake at the delay, to the microsecond
                await self.wakeup.wait()
            self.running += len(batch)  # counted from here: close() must not miss a batch not yet started
            asyncio.get_running_loop().create_task(self._run(batch))

    def _ordered(self, now: int) -> list[tuple[int, _Queued]]:
        """(level, request) in the order Triton serves them: by priority level, first come first
        served, a DELAY request past its timeout after every request of its level still in time.
        Requests past a REJECT timeout are answered "Request timeout expired" on the way."""
        order: list[tuple[int, _Queued]] = []
        for level in sorted(self.queues):
            waiting, delayed = [], []
            for request in self.queues[level]:
                late = request.deadline and now > request.deadline
                if late and request.reject_on_timeout:
                    self._settle(request, error=Unavailable("Request timeout expired"))
                elif late:
                    delayed.append(request)
                else:
                    waiting.append(request)
            self.queues[level] = waiting + delayed
            order += [(level, request) for request in self.queues[level]]
        return order

    def _take(self, now: int) -> list[_Queued]:
        """Requests for one execution if one should start now, as Triton's dynamic batcher decides:
        the largest preferred batch the queue forms, at once; without one, a batch that fills the
        capacity; and once the oldest request has waited max_queue_delay, whatever is queued (up to
        the capacity, a larger request alone). Empty: wait. Taken requests leave their queues."""
        order = self._ordered(now)
        if not order:
            return []
        batch: list[tuple[int, _Queued]] = []
        rows, best, full = 0, 0, False
        for level, request in order:
            if batch and rows + len(request.rows) > self.capacity:
                full = True
                break
            batch.append((level, request))
            rows += len(request.rows)
            if rows in self.preferred:
                best = len(batch)
        full = full or rows >= self.capacity
        expired = now >= min(request.arrival for _, request in order) + self.max_delay_ns
        if best and not expired:
            batch = batch[:best]
        elif not (full or expired):
            return []
        for level, request in batch:
            self.queues[level].remove(request)
        return [request for _, request in batch]

    async def _run(self, batch: list[_Queued]) -> None:
        """Run a batch's requests as one execution, their rows handed to the device as they came (never
        concatenated), and answer each with its own outputs. A request whose shared memory vanished
        under the access (its client truncated it) fails alone; the others run again without it."""
        start, taken = now_ns(), len(batch)
        try:
            while True:
                try:
                    outputs, (input_ns, infer_ns, output_ns) = await execute(
                        self.device, [request.rows for request in batch], [request.into for request in batch]
                    )
                    break
                except BlockVanished as vanished:
                    self._settle(batch.pop(vanished.block), error=vanished)
                    if not batch:
                        return
        except Exception as error:  # the dataplane records the failures
            for request in batch:
                self._settle(request, error=error)
            return
        finally:
            self.in_flight.release()
            self.running -= taken
            self._note_if_idle()
        self.stats.record_execution(sum(len(rows) for rows in outputs), input_ns, infer_ns, output_ns)
        for request, rows in zip(batch, outputs, strict=True):
            self._settle(request, Completion(rows, start - request.arrival, input_ns, infer_ns, output_ns))

    def _settle(self, request: _Queued, completion: Completion | None = None, error: BaseException | None = None):
        """Resolve a request; with preserve_ordering, only once every earlier request is resolved."""

        def resolve(item: _Queued, result: Completion | None, failure: BaseException | None) -> None:
            if item.future.done():
                return
            if failure is not None:
                item.future.set_exception(failure)
            else:
                item.future.set_result(result)

        if not self.preserve_ordering:
            resolve(request, completion, error)
        else:
            self.done[request.sequence] = (request, completion, error)
            while self.released in self.done:
                resolve(*self.done.pop(self.released))
                self.released += 1
        self._note_if_idle()

    def _note_if_idle(self) -> None:
        if self._closing and not self.pending and not self.done:
            self._idle.set()

    async def close(self) -> None:
        """Refuse new requests, run every queued and running one to its answer, then stop batching."""
        self._closing = True
        if self.pending or self.done:
            await self._idle.wait()
        self.loop_task.cancel()
        self.timer.close()
