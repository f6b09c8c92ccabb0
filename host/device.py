"""The device runtime: one interface for every way of executing a built kernel.

A `Device` owns compute units (CUs) — kernel instances on one or more cards, or C-simulation
workers — each with a pool of two buffer sets, so the host packs the next execution while the CU
runs the current one. A batch is split into executions (spread over the CUs, at most
`rows_per_execution` rows each), dealt round robin over the CUs, and reassembled in order.
Drivers provide only what is vendor-specific: opening CUs, allocating buffers, and one blocking
execute (sync in, start, wait, sync out).

A compute unit whose execution faults (times out, errors, its card is gone) is taken out of
rotation and that execution is retried once on another unit, so the request still gets exactly one
answer; the device stays usable while one unit works (`health`).
"""

import collections
import importlib
import itertools
import json
import logging
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from .fastpath import MemoryVanished
from .packing import BufferLayout, UnreadableBlock

log = logging.getLogger("faast.host")
Rows = np.ndarray | list[np.ndarray]
Outputs = np.ndarray | list[np.ndarray]
Destinations = list[np.ndarray | None] | None
BUFFERS_PER_CU = 2  # double buffering
MIN_ROWS_PER_EXECUTION = 256  # below this, one CU is faster than several


class DeviceError(RuntimeError):
    """The device cannot be opened or a kernel execution failed; the message says why."""


class ComputeUnitFault(DeviceError):
    """One compute unit failed (timed out, errored, or its card vanished): it leaves the rotation."""


class BlockVanished(Exception):
    """Block `block` of a run lay in a client's shared memory (its rows, or where its outputs go), and
    the client truncated it under the access. The run answers nothing; its other blocks can run again
    without this one. Not a DeviceError: the device is fine, one request's memory is gone."""

    access = "accessed"

    def __init__(self, block: int):
        super().__init__(f"the memory of block {block} was truncated while it was {self.access}")
        self.block = block


class InputVanished(BlockVanished):
    """The block's rows could not be read."""

    access = "read"


class OutputVanished(BlockVanished):
    """The block's outputs could not be written."""

    access = "written"


@dataclass(frozen=True)
class KernelDescription:
    """kernel.json, written by `faast build`: tensors, per-layer types, buffer layout, CUs.

    `input_size` and `output_size` count every tensor of their side: a row holds the elements of
    each input (output) tensor side by side, in kernel.json's order (host/packing.py)."""

    folder: Path
    name: str
    top: str
    input_size: int
    output_size: int
    layout: BufferLayout
    raw: dict

    @classmethod
    def read(cls, folder):
        folder = Path(folder)
        path = folder / "kernel.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeviceError(f"{path} is missing: build the kernel with `faast build`") from None
        return cls(
            folder,
            raw["name"],
            raw["kernel"],
            sum(tensor["size"] for tensor in raw["inputs"]),
            sum(tensor["size"] for tensor in raw["outputs"]),
            BufferLayout.from_description(raw["buffers"]),
            raw,
        )

    def xclbins(self):
        return sorted([*self.folder.glob("*.xclbin"), *self.folder.glob("*.awsxclbin")])

    def xclbin(self):
        """The image a hardware driver loads; a clear error when the Vitis build has not made one."""
        xclbins = self.xclbins()
        if not xclbins:
            raise DeviceError(f"no xclbin in {self.folder}: build one with `make` in its vitis/ folder")
        return xclbins[0]


def import_vendor(module, hint):
    """A vendor's Python API (pyxrt, pynq), imported only when a hardware driver is used."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DeviceError(hint) from None


def board(name):
    """The board a platform or shell name is for: xclbins name platforms, XRT names cards by shell."""
    name = name.lower()
    if "u250" in name:
        return "u250"
    if "aws" in name or "vu9p" in name:
        return "aws-f1"
    return name


@dataclass
class DeviceBuffer:
    host: np.ndarray  # uint8 view the host packs into / unpacks from
    handle: object = None  # the driver's own buffer object


class ComputeUnit(ABC):
    name: str
    # Runs that may be under way on this unit at once. A card's CU queues a second run in its command
    # queue while the first computes, so two let one run's transfers overlap the other's compute.
    overlapping_runs = 1

    @abstractmethod
    def allocate(self, nbytes) -> DeviceBuffer:
        """A buffer of `nbytes` in this CU's memory bank."""

    @abstractmethod
    def execute(self, inputs: DeviceBuffer, outputs: DeviceBuffer, rows, in_bytes, out_bytes):
        """Sync `in_bytes` of inputs to the device, run the kernel on `rows`, wait, sync outputs back.
        Raises ComputeUnitFault when this unit (or its card) fails rather than the request."""

    def recovered(self) -> bool:
        """Whether a unit taken out of rotation works again (its card is back); drivers override it."""
        return False


@dataclass
class _Execution:
    """One execution's share of a run: `rows` rows from row `start` on, as pieces of the run's blocks
    (piece i: rows [offsets[i], offsets[i] + len(pieces[i])) of block owners[i]), packed where they lie."""

    start: int
    rows: int
    pieces: list[np.ndarray]
    owners: list[int]
    offsets: list[int]


@dataclass(frozen=True)
class _Target:
    """Where output rows [first, first + len(out)) of an execution are unpacked: `out`, rows of block
    `owner`'s outputs (a client's shared memory when that block has a destination)."""

    first: int
    out: np.ndarray
    owner: int


@dataclass(frozen=True)
class _Outputs:
    """Where a run's outputs go: each block's array (its destination, or its rows of one result array
    for the others); `whole`, that result array when no block has a destination (an execution's rows
    are then its rows)."""

    blocks: list[np.ndarray]
    whole: np.ndarray | None

    def targets(self, execution: _Execution) -> list[_Target]:
        """Where an execution's output rows are unpacked: all at once without destinations, else piece
        by piece into their blocks' arrays."""
        if self.whole is not None:
            return [_Target(0, self.whole[execution.start : execution.start + execution.rows], execution.owners[0])]
        targets, first = [], 0
        for piece, owner, offset in zip(execution.pieces, execution.owners, execution.offsets, strict=True):
            targets.append(_Target(first, self.blocks[owner][offset : offset + len(piece)], owner))
            first += len(piece)
        return targets


def _executions(blocks: list[np.ndarray], step: int):
    """The run's blocks cut into executions of `step` rows (the last one shorter), in order."""
    pieces: list[np.ndarray] = []
    owners: list[int] = []
    offsets: list[int] = []
    start = filled = 0
    for owner, block in enumerate(blocks):
        at = 0
        while at < len(block):
            take = min(step - filled, len(block) - at)
            pieces.append(block[at : at + take])
            owners.append(owner)
            offsets.append(at)
            at += take
            filled += take
            if filled == step:
                yield _Execution(start, filled, pieces, owners, offsets)
                start, filled, pieces, owners, offsets = start + filled, 0, [], [], []
    if filled:
        yield _Execution(start, filled, pieces, owners, offsets)


@dataclass
class Timings:
    """Where a run's time went, for statistics: host packing, kernel, host unpacking (ns)."""

    pack_ns: int = 0
    unpack_ns: int = 0
    executions: int = 0


class _BufferPool:
    """A CU with its buffer sets and its worker threads: at most BUFFERS_PER_CU executions in flight,
    and at most `overlapping_runs` of them running at once, on a worker or in a caller's thread."""

    def __init__(self, cu, layout):
        self.cu = cu
        self.layout = layout
        self.free: queue.Queue[tuple[DeviceBuffer, DeviceBuffer]] = queue.Queue()
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

    def _execute(self, inputs, outputs, rows, in_bytes, out_bytes):
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

    def start(self, execution, buffers, timings, inline=False):
        """Pack an `_Execution`'s pieces into `buffers` (taken from `free`) and queue the kernel run on
        this CU; `inline`: run it in this thread, for a call with nothing to overlap it with (a hand-off
        to the worker thread and back costs more than a small execution). InputVanished when a
        piece's memory went (the buffers are free again)."""
        inputs, outputs = buffers
        begin = time.perf_counter_ns()
        try:
            in_bytes = self.layout.input.pack(execution.pieces, inputs.host)
        except UnreadableBlock as unreadable:
            self.free.put(buffers)
            raise InputVanished(execution.owners[unreadable.index]) from None
        except BaseException:
            self.free.put(buffers)
            raise
        timings.pack_ns += time.perf_counter_ns() - begin
        timings.executions += 1
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

    def finish(self, run, buffers, timings, targets):
        """Wait for a run, unpack its outputs into their `_Target`s and give its buffers back.
        OutputVanished when a target was a client's shared memory that went under the write."""
        try:
            run.result()
            begin = time.perf_counter_ns()
            for target in targets:
                try:
                    self.layout.output.unpack(buffers[1].host, len(target.out), out=target.out, first=target.first)
                except MemoryVanished:
                    raise OutputVanished(target.owner) from None
            timings.unpack_ns += time.perf_counter_ns() - begin
        finally:
            self.free.put(buffers)

    def abandon(self, run, buffers):
        """Wait for a run whose outputs nobody wants (its call failed), then give its buffers back."""
        try:
            run.result()
        except Exception:
            pass
        finally:
            self.free.put(buffers)

    def allocate_buffers(self):
        """Fresh buffer sets: at start, and after the CU was reopened on a card that came back (the old
        ones died with it)."""
        while not self.free.empty():
            self.free.get_nowait()
        capacity = self.layout.rows_per_execution
        for _ in range(BUFFERS_PER_CU):
            self.free.put(
                (
                    self.cu.allocate(self.layout.input.nbytes(capacity)),
                    self.cu.allocate(self.layout.output.nbytes(capacity)),
                )
            )

    def close(self):
        self.worker.shutdown()


class Device:
    """A kernel on its compute units; drivers subclass it, name their `kind` and say whether they
    can run here (`available`)."""

    kind: str
    # Runs of at most this many rows are cheaper done by the caller than handed to a worker thread
    # (run_small): none by default, as a card's run waits on transfers and its kernel.
    inline_rows = 0

    def __init__(self, kernel: KernelDescription, compute_units):
        if not compute_units:
            raise DeviceError(f"device '{self.kind}' has no compute unit for kernel '{kernel.name}'")
        self.kernel = kernel
        self.compute_units = list(compute_units)
        self._pools = [_BufferPool(cu, kernel.layout) for cu in self.compute_units]
        self._next = itertools.cycle(self._pools)
        self._rotation = threading.Lock()
        self._calls = 0  # run() calls under way
        self._calls_lock = threading.Lock()

    def run_small(
        self, blocks: list[np.ndarray], timings: Timings | None = None, into: Destinations = None
    ) -> list[np.ndarray] | None:
        """run(blocks, timings, into) done now, in this thread, when the rows are at most `inline_rows`
        and no other call is under way (so it waits for no buffers and no unit); None otherwise: hand
        it to a worker thread. An event loop calls this: at batch 1, the hand-off and the wait for the
        GIL to come back cost more than the run."""
        if sum(len(block) for block in blocks) > self.inline_rows or self._calls:
            return None
        return self.run(blocks, timings, into)

    @overload
    def run(self, rows: np.ndarray, timings: Timings | None = None) -> np.ndarray: ...
    @overload
    def run(
        self, rows: list[np.ndarray], timings: Timings | None = None, into: Destinations = None
    ) -> list[np.ndarray]: ...
    def run(self, rows: Rows, timings: Timings | None = None, into: Destinations = None) -> Outputs:
        """float32 [n, input_size] (or the inputs' integer bit patterns) → [n, output_size], float32
        (float64 where an output type is wider than float32 holds exactly); blocking, safe from many
        threads.

        `rows` may be a list of such blocks (the requests a batch merged): they are packed where they
        lie, never concatenated, and the answer is a list of their outputs, one array per block.
        `into` (with a list) gives blocks a destination: an array of their outputs' shape and dtype,
        C-contiguous (a view of a client's shared memory), which the outputs are unpacked straight
        into and which stands for them in the answer; None for a block without one. Only a layout
        that unpacks_in_place writes destinations.
        InputVanished(i) when block i was a view of a client's shared memory that the client
        truncated under the read; OutputVanished(i) when block i's destination went under the write.

        Packing and unpacking happen in the calling thread while CUs run other executions (a call of
        one execution runs it in the calling thread too). A caller never waits for buffers while
        holding some of its own, so concurrent calls cannot deadlock on each other's buffer sets.
        """
        with self._calls_lock:
            self._calls += 1
        try:
            if isinstance(rows, np.ndarray):
                return self._run([rows], timings if timings is not None else Timings(), None)[0]
            return self._run(rows, timings if timings is not None else Timings(), into)
        finally:
            with self._calls_lock:
                self._calls -= 1

    def _run(self, rows: list[np.ndarray], timings: Timings, into: Destinations) -> list[np.ndarray]:
        blocks = [self._kernel_rows(block) for block in rows]
        outputs = self._outputs(blocks, into)
        total = sum(len(block) for block in blocks)
        # A call alone on the device spreads its rows over all CUs; with other calls under way, those
        # keep the other CUs busy, so a call takes executions as large as fit, and one that fits runs
        # in this thread: each hand-off to a CU's thread and back costs two wake-ups. Never beyond one
        # execution's capacity.
        spread = -(-total // len(self._pools)) if self._calls == 1 else total
        step = min(self.kernel.layout.rows_per_execution, max(MIN_ROWS_PER_EXECUTION, spread))
        pending: collections.deque[tuple[_BufferPool, Future, _Execution, tuple[DeviceBuffer, DeviceBuffer]]] = (
            collections.deque()
        )
        faults: list[tuple[ComputeUnitFault, _Execution]] = []
        try:
            for execution in _executions(blocks, step):
                pool = self._next_pool()
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

    def _outputs(self, blocks: list[np.ndarray], into: Destinations) -> _Outputs:
        layout = self.kernel.layout.output
        destined = into if into is not None else [None] * len(blocks)
        if len(destined) != len(blocks):
            raise ValueError("a run's destinations are one per block")
        if any(out is not None for out in destined) and not layout.unpacks_in_place:
            raise ValueError(f"kernel '{self.kernel.name}' does not unpack its outputs in place")
        undestined = sum(len(block) for block, out in zip(blocks, destined, strict=True) if out is None)
        result = np.empty((undestined, self.kernel.output_size), layout.float_dtype)
        outputs, at = [], 0
        for block, out in zip(blocks, destined, strict=True):
            if out is None:
                out, at = result[at : at + len(block)], at + len(block)
            elif out.shape != (len(block), self.kernel.output_size) or not out.flags.c_contiguous:
                raise ValueError("a destination holds its block's outputs, C-contiguous")
            outputs.append(out)
        return _Outputs(outputs, result if all(out is None for out in destined) else None)

    def _kernel_rows(self, block) -> np.ndarray:
        rows = np.asarray(block)
        if not np.issubdtype(rows.dtype, np.integer):
            rows = rows.astype(np.float32, copy=False)
        return rows.reshape(-1, self.kernel.input_size)

    def _next_pool(self):
        """The next compute unit in rotation, round robin."""
        with self._rotation:
            for _ in range(len(self._pools)):
                pool = next(self._next)
                if pool.fault is None:
                    return pool
        raise DeviceError(f"no compute unit of '{self.kernel.name}' is in rotation: {self.health()[1]}")

    def _finish(self, item, outputs, timings, faults):
        """Unpack an execution's outputs where they go; a ComputeUnitFault goes to `faults` for a retry."""
        pool, run, execution, buffers = item
        try:
            pool.finish(run, buffers, timings, outputs.targets(execution))
        except ComputeUnitFault as fault:
            faults.append((fault, execution))

    def _retry(self, fault, execution, outputs, timings):
        pool = self._next_pool()
        log.info("retrying %d rows of '%s' on %s after: %s", execution.rows, self.kernel.name, pool.cu.name, fault)
        buffers = pool.free.get()
        run = pool.start(execution, buffers, timings)
        try:
            pool.finish(run, buffers, timings, outputs.targets(execution))
        except ComputeUnitFault as second:
            raise DeviceError(f"{fault}; the retry on {pool.cu.name} failed too: {second}") from None

    def out_of_rotation(self) -> list[tuple[str, str]]:
        """(compute unit, why) for every unit taken out of rotation."""
        return [(pool.cu.name, pool.fault) for pool in self._pools if pool.fault is not None]

    def health(self) -> tuple[bool, str]:
        """(whether at least one compute unit serves, why): what the model's readiness should follow."""
        out = self.out_of_rotation()
        serving = len(self._pools) - len(out)
        reasons = "; ".join(f"{name}: {why}" for name, why in out)
        if serving:
            return True, f"{serving} of {len(self._pools)} compute units in rotation" + (f" ({reasons})" if out else "")
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


DRIVERS = {"csim": "csim", "emulator": "emulator", "xrt": "xrt_driver", "pynq": "pynq_driver"}
HARDWARE = ["xrt", "pynq"]


def _driver(kind):
    if kind not in DRIVERS:
        raise DeviceError(f"unknown device '{kind}'; choose auto, {', '.join(DRIVERS)}")
    return importlib.import_module(f"{__package__}.{DRIVERS[kind]}").DRIVER


def cores_of_this_process() -> int:
    """The compute units the emulator and the C simulation run when config.pbtxt names no count: the
    machine's cores, shared out among `faast serve --workers` processes (which set FAAST_WORKERS)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("FAAST_WORKERS", "1")))


def open_device(kind, folder, compute_units: int | None = None) -> Device:
    """Open device `kind` (auto, emulator, csim, xrt, pynq) on the kernel built into `folder`.

    auto prefers a card, then the emulator (exact, fast), then the C simulation (exact, slow), and
    logs why it chose what it chose. `compute_units` (config.pbtxt's instance_group count) is how
    many the emulator and the C simulation run, one per worker thread; None: cores_of_this_process(). A card
    has the compute units its xclbin was built with, whatever the count says.
    """
    kernel = KernelDescription.read(folder)
    if kind != "auto":
        return _make(kind, kernel, compute_units)
    reasons = []
    if kernel.xclbins():
        for hardware in HARDWARE:
            available, reason = _driver(hardware).available()
            if available:
                log.info("device auto for '%s': %s, because %s", kernel.name, hardware, reason)
                return _make(hardware, kernel, compute_units)
            reasons.append(f"{hardware}: {reason}")
    else:
        reasons.append(f"{folder} holds no xclbin")
    try:
        device = _make("emulator", kernel, compute_units)
    except DeviceError as error:
        log.info(
            "device auto for '%s': C simulation, because no card is usable (%s) and the emulator cannot "
            "run this kernel: %s",
            kernel.name,
            "; ".join(reasons),
            error,
        )
        return _make("csim", kernel, compute_units)
    log.info("device auto for '%s': emulator, because no card is usable (%s)", kernel.name, "; ".join(reasons))
    return device


def _make(kind, kernel, compute_units):
    if kind in HARDWARE:
        device = _driver(kind)(kernel)
        if compute_units is not None and compute_units != len(device.compute_units):
            log.warning(
                "kernel '%s': instance_group asks for %d compute units, the xclbin has %d: all %d serve",
                kernel.name,
                compute_units,
                len(device.compute_units),
                len(device.compute_units),
            )
        return device
    return _driver(kind)(kernel, compute_units)
