"""The device: a built kernel on its compute units (CUs) — kernel instances on one or more cards, or
C-simulation or emulator workers — behind one interface for every way of executing it.

A batch is split into executions (host/planning.py: at most `rows_per_execution` rows each, spread
over the CUs), dealt round robin over the CUs, each with a pool of two buffer sets
(host/buffer_pool.py) so the host packs the next execution while the CU runs the current one, and
reassembled in order. Drivers provide only what is vendor-specific (host/compute_unit.py); the
registry that opens them by name is host/drivers.py.

A compute unit whose execution faults (times out, errors, its card is gone) is taken out of
rotation and that execution is retried once on another unit, so the request still gets exactly one
answer; the device stays usable while one unit works (`health`). A card's device may also `attach`
the bit-exact engine: to check a fraction of its executions (host/shadow.py), and to run its
executions while no unit is in rotation (failover).
"""

import collections
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from faast.contract.errors import ComputeUnitFault, DeviceError
from faast.contract.kernel import KernelDescription
from faast.contract.memory import ClientMemory, Rows

from .buffer_pool import BUFFERS_PER_CU, BufferPool, Buffers, Timings
from .compute_unit import ComputeUnit
from .planning import Execution, Outputs, execution_rows, executions
from .shadow import ShadowValidation

log = logging.getLogger("faast.host")
Destinations = list[ClientMemory | None] | None


class Device:
    """A kernel on its compute units; drivers subclass it, name their `kind` and say whether they
    can run here (`available`)."""

    kind: str
    # Runs of at most this many rows are cheaper done by the caller than handed to a worker thread
    # (run_small): none by default, as a card's run waits on transfers and its kernel.
    inline_rows = 0

    def __init__(self, kernel: KernelDescription, compute_units: Sequence[ComputeUnit]):
        if not compute_units:
            raise DeviceError(f"device '{self.kind}' has no compute unit for kernel '{kernel.name}'")
        self.kernel = kernel
        self.compute_units = list(compute_units)
        self._pools = [BufferPool(cu, kernel.layout) for cu in self.compute_units]
        self._next = itertools.cycle(self._pools)
        self._rotation = threading.Lock()
        self._calls = 0  # run() calls under way
        self._calls_lock = threading.Lock()
        self.shadow: ShadowValidation | None = None
        self.failover: Failover | None = None
        self._engines: list[Device] = []  # what attach() gave, closed with this device

    def attach(self, failover: "Device | None" = None, shadow: "Device | None" = None, fraction: float = 0.0) -> None:
        """Run executions on `failover`, the bit-exact engine of this kernel, while no compute unit is
        in rotation; check `fraction` of them against `shadow`, another such engine that nothing else
        uses (host/shadow.py). Both are closed with this device."""
        if failover is not None:
            self.failover = Failover(failover, self.kernel.name)
            self._engines.append(failover)
        if shadow is not None:
            self.shadow = ShadowValidation(self.kernel, fraction, shadow.compute_units[0])
            self._engines.append(shadow)
            for pool in self._pools:
                pool.shadow = self.shadow

    def run_small(
        self, blocks: list[Rows], timings: Timings | None = None, into: Destinations = None
    ) -> list[np.ndarray | ClientMemory] | None:
        """run_blocks(blocks, timings, into) done now, in this thread, when the rows are at most
        `inline_rows` and no other call is under way (so it waits for no buffers and no unit); None
        otherwise: hand it to a worker thread. An event loop calls this: at batch 1, the hand-off and
        the wait for the GIL to come back cost more than the run."""
        if sum(len(block) for block in blocks) > self.inline_rows or self._calls:
            return None
        return self.run_blocks(blocks, timings, into)

    def run(self, rows: np.ndarray) -> np.ndarray:
        """float32 [n, input_size] (or the inputs' integer bit patterns) → [n, output_size], float32
        (float64 where an output type is wider than float32 holds exactly): run_blocks of one block."""
        (outputs,) = self.run_blocks([rows])
        assert isinstance(outputs, np.ndarray), "a block without a destination is answered in an array"
        return outputs

    def run_blocks(
        self, blocks: list[Rows], timings: Timings | None = None, into: Destinations = None
    ) -> list[np.ndarray | ClientMemory]:
        """Blocks of rows (the requests a batch merged), each as `run` takes them → their outputs, one
        per block; blocking, safe from many threads. Blocks are packed where they lie, never
        concatenated; a block may be a client's memory where the layout packs in place.
        `into` gives blocks a destination: a client's memory of their outputs' shape, float32, which
        the outputs are unpacked straight into and which stands for them in the answer; None for a
        block without one. Only a layout that unpacks_in_place writes destinations.
        InputVanished(i) when block i was a client's memory that the client truncated under the read;
        OutputVanished(i) when block i's destination went under the write.

        Packing and unpacking happen in the calling thread while CUs run other executions (a call of
        one execution runs it in the calling thread too). A caller never waits for buffers while
        holding some of its own, so concurrent calls cannot deadlock on each other's buffer sets.
        """
        with self._calls_lock:
            self._calls += 1
        try:
            return self._run(blocks, timings if timings is not None else Timings(), into)
        finally:
            with self._calls_lock:
                self._calls -= 1

    def _run(self, rows: list[Rows], timings: Timings, into: Destinations) -> list[np.ndarray | ClientMemory]:
        blocks = [self._kernel_rows(block) for block in rows]
        layout = self.kernel.layout
        outputs = Outputs.of(
            blocks, into, self.kernel.output_size, layout.output.float_dtype, layout.output.unpacks_in_place
        )
        total = sum(len(block) for block in blocks)
        step = execution_rows(total, len(self._pools), self._calls, layout.rows_per_execution)
        pending: collections.deque[tuple[BufferPool, Future, Execution, Buffers]] = collections.deque()
        faults: list[tuple[ComputeUnitFault, Execution]] = []
        try:
            for execution in executions(blocks, step):
                pool = self._next_pool(execution.rows)
                while True:
                    try:
                        buffers = pool.free.get_nowait()
                        break
                    except queue.Empty:
                        if not pending:
                            buffers = pool.free.get()
                            break
                        self._finish(pending.popleft(), outputs, timings, faults)
                run = pool.start(execution, buffers, timings, inline=execution.rows == total)
                pending.append((pool, run, execution, buffers))
            while pending:
                self._finish(pending.popleft(), outputs, timings, faults)
        finally:
            for pool, run, _, buffers in pending:  # after an error: wait, then free the buffers
                pool.abandon(run, buffers)
        # Executions whose CU faulted run again now, when this call holds no buffers (so it cannot
        # deadlock on its own), each once, on a unit still in rotation.
        for fault, execution in faults:
            self._retry(fault, execution, outputs, timings)
        return outputs.blocks

    def _kernel_rows(self, block: Rows) -> Rows:
        """A block as kernel rows: a client's memory as it lies (only the guarded packing reads it),
        an array as float32 (or the integer bit patterns it holds), [n, input_size]."""
        if isinstance(block, ClientMemory):
            return block.reshape(-1, self.kernel.input_size)
        rows = np.asarray(block)
        if not np.issubdtype(rows.dtype, np.integer):
            rows = rows.astype(np.float32, copy=False)
        return rows.reshape(-1, self.kernel.input_size)

    def _next_pool(self, rows: int) -> BufferPool:
        """The next compute unit in rotation, round robin, for an execution of `rows` rows; with none
        in rotation, the failover engine's."""
        with self._rotation:
            for _ in range(len(self._pools)):
                pool = next(self._next)
                if pool.fault is None:
                    return pool
        if self.failover is not None:
            return self.failover.take(rows, lambda: _reasons(self.out_of_rotation()))
        raise DeviceError(f"no compute unit of '{self.kernel.name}' is in rotation: {self.health()[1]}")

    def _finish(self, item, outputs, timings, faults):
        """Unpack an execution's outputs where they go; a ComputeUnitFault goes to `faults` for a retry."""
        pool, run, execution, buffers = item
        try:
            pool.finish(run, buffers, timings, outputs.targets(execution), execution.rows)
        except ComputeUnitFault as fault:
            faults.append((fault, execution))

    def _retry(self, fault, execution, outputs, timings):
        """Run a faulted execution again on a unit in rotation: once, or, with a failover engine, until
        a unit or the engine completes it (each unit that faults leaves the rotation, so this ends)."""
        while True:
            pool = self._next_pool(execution.rows)
            log.info("retrying %d rows of '%s' on %s after: %s", execution.rows, self.kernel.name, pool.cu.name, fault)
            buffers = pool.free.get()
            run = pool.start(execution, buffers, timings)
            try:
                pool.finish(run, buffers, timings, outputs.targets(execution), execution.rows)
                return
            except ComputeUnitFault as second:
                if self.failover is None:
                    raise DeviceError(f"{fault}; the retry on {pool.cu.name} failed too: {second}") from None
                fault = second

    def out_of_rotation(self) -> list[tuple[str, str]]:
        """(compute unit, why) for every unit taken out of rotation."""
        return [(pool.cu.name, pool.fault) for pool in self._pools if pool.fault is not None]

    def health(self) -> tuple[bool, str]:
        """(whether the device serves, why): what the model's readiness should follow. It serves while
        at least one compute unit is in rotation, or the failover engine runs in their place, and
        shadow validation has no verdict against it."""
        verdict = self.shadow.verdict() if self.shadow is not None else None
        if verdict is not None:
            return False, verdict
        out = self.out_of_rotation()
        serving = len(self._pools) - len(out)
        reasons = _reasons(out)
        if serving:
            return True, f"{serving} of {len(self._pools)} compute units in rotation" + (f" ({reasons})" if out else "")
        if self.failover is not None:
            return True, f"every compute unit is out of rotation ({reasons}); the bit-exact engine serves (failover)"
        return False, f"every compute unit is out of rotation ({reasons})"

    def recover(self) -> list[str]:
        """Put back into rotation the units whose driver says they work again; returns their names."""
        recovered = []
        for pool in self._pools:
            if pool.fault is not None and pool.cu.recovered():
                pool.allocate_buffers()
                with self._rotation:
                    pool.fault = None
                log.info("compute unit %s of '%s' back in rotation", pool.cu.name, self.kernel.name)
                recovered.append(pool.cu.name)
        if recovered and self.failover is not None:
            self.failover.end()
        return recovered

    @property
    def max_in_flight(self) -> int:
        """Executions that can be under way at once: one per buffer set of every CU. A scheduler
        that keeps more waiting only queues them here, where they can no longer be merged."""
        return BUFFERS_PER_CU * len(self._pools)

    @staticmethod
    def available() -> tuple[bool, str]:
        """(whether this driver can run here, why), for `auto`'s choice; drivers override it."""
        raise NotImplementedError

    def usage(self):
        """(kernel executions, rows executed, kernel busy ns) summed over the compute units."""
        return (
            sum(p.executions for p in self._pools),
            sum(p.rows for p in self._pools),
            sum(p.busy_ns for p in self._pools),
        )

    def close(self):
        for pool in self._pools:
            pool.close()
        if self.shadow is not None:
            self.shadow.close()
        for engine in self._engines:
            engine.close()


def _reasons(out: list[tuple[str, str]]) -> str:
    """Why the units of `out` (out_of_rotation's list) left the rotation, in one line."""
    return "; ".join(f"{name}: {why}" for name, why in out)


class Failover:
    """The bit-exact engine running a card's executions while none of its compute units is in
    rotation: the model answers through an outage (bit-exactly, at the engine's speed) instead of
    failing, and goes back to the card when a unit recovers."""

    def __init__(self, engine: Device, kernel: str):
        self.engine = engine
        self.kernel = kernel
        self.rows = 0  # rows the engine ran in the card's place
        self.active = False  # whether executions currently go to the engine
        self._lock = threading.Lock()

    def take(self, rows: int, why: Callable[[], str]) -> BufferPool:
        """The engine's next compute unit, for an execution of `rows` rows that found no card unit;
        `why` (the units' faults) is asked for only when an outage begins, to log it."""
        with self._lock:
            self.rows += rows
            if not self.active:
                self.active = True
                log.warning(
                    "no compute unit of '%s' is in rotation (%s): its executions run on the bit-exact engine "
                    "(failover) until one comes back",
                    self.kernel,
                    why(),
                )
        return self.engine._next_pool(rows)

    def end(self) -> None:
        """A compute unit is back in rotation: executions go to the card again."""
        with self._lock:
            if self.active:
                self.active = False
                log.warning("a compute unit of '%s' is back in rotation: failover to the engine ended", self.kernel)
