"""A compute unit with its buffer sets and worker threads: the device's unit of rotation."""

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from faast.contract.errors import ComputeUnitFault, InputVanished, MemoryVanished, OutputVanished
from faast.contract.layout import BufferLayout

from . import packing
from .compute_unit import ComputeUnit, DeviceBuffer
from .planning import Execution, Target
from .shadow import ShadowValidation

log = logging.getLogger("faast.host")
BUFFERS_PER_CU = 2  # double buffering
Buffers = tuple[DeviceBuffer, DeviceBuffer]  # one execution's inputs and outputs


@dataclass
class Timings:
    """Where a run's time went, for statistics: host packing and unpacking (ns)."""

    pack_ns: int = 0
    unpack_ns: int = 0


class BufferPool:
    """A CU with its buffer sets and its worker threads: at most BUFFERS_PER_CU executions in flight,
    and at most `overlapping_runs` of them running at once, on a worker or in a caller's thread."""

    def __init__(self, cu: ComputeUnit, layout: BufferLayout):
        self.cu = cu
        self.layout = layout
        self.free: queue.Queue[Buffers] = queue.Queue()
        self.allocate_buffers()
        runs = min(cu.overlapping_runs, BUFFERS_PER_CU)
        self.worker = ThreadPoolExecutor(runs, thread_name_prefix=f"cu-{cu.name}")
        self._runs = threading.Semaphore(runs)
        self.executions = 0
        self.rows = 0
        self.busy_ns = 0  # time with at least one run under way (overlapping runs counted once)
        self._running = 0
        self._busy_since = 0
        self._count = threading.Lock()
        self.fault: str | None = None  # why this CU is out of rotation; None while it serves
        self.shadow: ShadowValidation | None = None  # offered each finished execution, when set

    def _execute(self, inputs: DeviceBuffer, outputs: DeviceBuffer, rows: int, in_bytes: int, out_bytes: int):
        if self.fault is not None:  # queued before the unit left the rotation: fail over without waiting
            raise ComputeUnitFault(f"compute unit {self.cu.name} is out of rotation: {self.fault}")
        with self._runs:
            with self._count:
                self._running += 1
                if self._running == 1:
                    self._busy_since = time.perf_counter_ns()
            try:
                self.cu.execute(inputs, outputs, rows, in_bytes, out_bytes)
            except ComputeUnitFault as fault:  # out at once, before this worker starts the next queued run
                self.fault = str(fault)
                log.warning("compute unit %s taken out of rotation: %s", self.cu.name, fault)
                raise
            finally:
                with self._count:
                    self._running -= 1
                    if not self._running:
                        self.busy_ns += time.perf_counter_ns() - self._busy_since
                    self.executions += 1
                    self.rows += rows

    def start(self, execution: Execution, buffers: Buffers, timings: Timings, inline: bool = False) -> Future:
        """Pack an `Execution`'s pieces into `buffers` (taken from `free`) and queue the kernel run on
        this CU; `inline`: run it in this thread, for a call with nothing to overlap it with (a hand-off
        to the worker thread and back costs more than a small execution). InputVanished when a
        piece's memory went (the buffers are free again)."""
        inputs, outputs = buffers
        begin = time.perf_counter_ns()
        try:
            in_bytes = packing.pack(self.layout.input, execution.pieces, inputs.host)
        except packing.UnreadableBlock as unreadable:
            self.free.put(buffers)
            raise InputVanished(execution.owners[unreadable.index]) from None
        except BaseException:
            self.free.put(buffers)
            raise
        timings.pack_ns += time.perf_counter_ns() - begin
        rows, out_bytes = execution.rows, self.layout.output.nbytes(execution.rows)
        if not inline:
            return self.worker.submit(self._execute, inputs, outputs, rows, in_bytes, out_bytes)
        run: Future = Future()
        try:
            self._execute(inputs, outputs, rows, in_bytes, out_bytes)
            run.set_result(None)
        except BaseException as error:  # as a worker's Future holds it
            run.set_exception(error)
        return run

    def finish(self, run: Future, buffers: Buffers, timings: Timings, targets: list[Target], rows: int) -> None:
        """Wait for a run of `rows` rows, unpack its outputs into their `Target`s and give its buffers
        back. OutputVanished when a target was a client's shared memory that went under the write."""
        try:
            run.result()
            if self.shadow is not None:
                self.shadow.offer(self.cu.name, rows, buffers[0].host, buffers[1].host)
            begin = time.perf_counter_ns()
            for target in targets:
                try:
                    packing.unpack(self.layout.output, buffers[1].host, len(target.out), target.out, target.first)
                except MemoryVanished:
                    raise OutputVanished(target.owner) from None
            timings.unpack_ns += time.perf_counter_ns() - begin
        finally:
            self.free.put(buffers)

    def abandon(self, run: Future, buffers: Buffers) -> None:
        """Wait for a run whose outputs nobody wants (its call failed), then give its buffers back."""
        try:
            run.result()
        except Exception:
            pass
        finally:
            self.free.put(buffers)

    def allocate_buffers(self) -> None:
        """Fresh buffer sets: at start, and after the CU was reopened on a card that came back (the old
        ones died with it)."""
        while not self.free.empty():
            self.free.get_nowait()
        capacity = self.layout.rows_per_execution
        for _ in range(BUFFERS_PER_CU):
            self.free.put(
                (
                    self.cu.allocate(self.layout.input.nbytes(capacity)),
                    self.cu.allocate_outputs(self.layout.output.nbytes(capacity)),
                )
            )

    def close(self) -> None:
        self.worker.shutdown()
