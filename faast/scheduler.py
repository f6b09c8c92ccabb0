"""How a model's requests reach its device: the `Scheduler` contract, and the direct scheduler.

A scheduler takes validated kernel rows, runs them on the device (alone, or merged with other
requests' rows by the dynamic batcher in faast.batcher) and answers each request with its own
outputs and timings. The dataplane records every request's success or failure in the model's
statistics from those timings; a scheduler records only what it alone sees, the executions.
"""

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from faast.host.buffer_pool import Timings
from faast.host.device import Device

from .contract.errors import DeviceError, Internal, Unavailable
from .contract.memory import ClientMemory, Rows
from .statistics import ModelStatistics


def now_ns() -> int:
    return time.perf_counter_ns()


@dataclass(frozen=True)
class Completion:
    """One request's answer from its scheduler: its output rows (its destination itself, when it gave
    one) and where its time went (ns)."""

    outputs: np.ndarray | ClientMemory
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int


class Scheduler(ABC):
    """Runs a model's requests on its device; one scheduler per loaded model, on the event loop."""

    @abstractmethod
    async def submit(
        self, rows: Rows, parameters: dict[str, Any] | None = None, into: ClientMemory | None = None
    ) -> Completion:
        """Run `rows` (float32 or integer bit patterns, [n, input_size]) and return their outputs.

        `parameters` are the request's checked parameters (priority, timeout). `into`: where the device
        unpacks the outputs itself (a view of the client's shared memory; see Device.run). Raises
        InputVanished or OutputVanished when that request's shared memory went under the access,
        Unavailable when the scheduler is closing or its queue refuses the request, Internal when the
        device fails.
        Cancelling the awaiting task (the client cancelled, or its deadline passed) takes a request
        that is still queued out of the queue, so it is never computed.
        """

    @property
    @abstractmethod
    def pending(self) -> int:
        """Requests accepted and not yet answered (queued or running)."""

    @abstractmethod
    async def close(self) -> None:
        """Refuse new requests; return once every accepted request has its answer."""


def unloading(model_name: str) -> Unavailable:
    return Unavailable(f"model '{model_name}' is being unloaded")


async def execute(
    device: Device, blocks: list[Rows], into: list[ClientMemory | None]
) -> tuple[list[np.ndarray | ClientMemory], tuple[int, int, int]]:
    """Run requests' blocks of rows (with their destinations, None where they gave none) on the device
    from a worker thread, or on the event loop when the device says a run this small is cheaper there
    (Device.run_small); returns each block's outputs and (input, infer, output) ns. BlockVanished
    passes through: it is one request's fault, not the device's."""
    timings = Timings()
    start = now_ns()
    try:
        outputs = device.run_small(blocks, timings, into)
        if outputs is None:
            outputs = await asyncio.get_running_loop().run_in_executor(None, device.run_blocks, blocks, timings, into)
    except DeviceError as error:
        raise Internal(f"device '{device.kind}' failed: {error}") from None
    wall = now_ns() - start
    return outputs, (timings.pack_ns, max(wall - timings.pack_ns - timings.unpack_ns, 0), timings.unpack_ns)


class DirectScheduler(Scheduler):
    """Every request is its own execution, as Triton runs a model without dynamic batching."""

    def __init__(self, model_name: str, device: Device, stats: ModelStatistics):
        self.model_name = model_name
        self.device = device
        self.stats = stats
        self._pending = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(
        self, rows: Rows, parameters: dict[str, Any] | None = None, into: ClientMemory | None = None
    ) -> Completion:
        if self._closing:
            raise unloading(self.model_name)
        self._pending += 1
        self._idle.clear()
        try:
            (outputs,), (input_ns, infer_ns, output_ns) = await execute(self.device, [rows], [into])
        finally:
            self._pending -= 1
            if not self._pending:
                self._idle.set()
        self.stats.record_execution(len(rows), input_ns, infer_ns, output_ns)
        return Completion(outputs, 0, input_ns, infer_ns, output_ns)

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()
