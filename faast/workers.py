"""Several faast processes on one set of ports (`faast serve --workers N`): how every core serves.

One Python process turns at most about one core into served requests, however much of the kernel
runs without the GIL: transports, decoding, batching and packing hold it. With --workers N a
supervisor starts N worker processes. Each is a whole faast (transports, dataplane, schedulers and
its own device, with its share of the cores) and binds the same gRPC, HTTP and metrics ports with
SO_REUSEPORT, so the kernel spreads client connections over them. What must look like one server is
kept so by peer calls over Unix sockets in a folder only this user can enter:

- a control call (model load and unload, shared-memory registration, trace and log settings) is
  applied where it arrived and then replayed on every other worker before it is answered;
- statistics and /metrics are gathered from every worker and summed.

The supervisor forwards SIGINT and SIGTERM to the workers, which finish their in-flight requests
within --exit-timeout-secs (a worker still running past it and a margin is killed); if
one worker ends on its own (a port it cannot bind, a crash), the supervisor stops the others and
exits with that worker's status, so whatever restarts tritonserver restarts faast whole.
"""

import asyncio
import inspect
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .contract.errors import Unavailable

log = logging.getLogger("faast.workers")

# The environment a worker runs in: its index, how many workers there are, and the peers' folder.
INDEX, COUNT, FOLDER = "FAAST_WORKER_INDEX", "FAAST_WORKERS", "FAAST_WORKER_DIR"
PEER_PATIENCE_S = 120.0  # a peer still loading its models may take this long to answer
_FRAME = struct.Struct("!I")
KILL_MARGIN_S = 0.25  # past a worker's own hard exit, before the supervisor kills it


def supervise(argv: list[str], count: int, stop_within_s: float = 31.0) -> int:
    """Run `count` workers of `faast serve argv` until SIGINT or SIGTERM (forwarded to them) or until
    one of them ends on its own; returns the exit status for the supervisor. A worker still running
    `stop_within_s` after the signal (the exit timeout and its margin: each worker ends itself by
    then) is killed, so the server as a whole stops in time."""
    folder = tempfile.mkdtemp(prefix="faast-workers-")  # mode 0700: only this user reaches the peers
    workers = [  # -P: the installed faast, never a source tree in the working directory
        subprocess.Popen(
            [sys.executable, "-P", "-m", "faast.cli", "serve", *argv],
            env=os.environ | {INDEX: str(index), COUNT: str(count), FOLDER: folder},
        )
        for index in range(count)
    ]
    stopping: list[int] = []  # the signal being forwarded, once one arrived
    kill_at = [float("inf")]  # when workers still running get SIGKILL

    def forward(signum, _frame):
        if not stopping:
            kill_at[0] = time.monotonic() + stop_within_s + KILL_MARGIN_S
        stopping.append(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    status = None
    while any(worker.poll() is None for worker in workers):
        ended = [worker.returncode for worker in workers if worker.returncode is not None]
        if ended and status is None and not stopping:
            status = ended[0] or 1  # a worker that ends unasked ends the server
            log.error("a worker process ended with status %s: stopping the others", ended[0])
            forward(signal.SIGTERM, None)
        if time.monotonic() > kill_at[0]:
            for worker in workers:
                if worker.poll() is None:
                    log.error("worker process %d still running past the exit timeout: killed", worker.pid)
                    worker.kill()
            kill_at[0] = float("inf")
        time.sleep(0.05)
    for path in Path(folder).iterdir():
        path.unlink()
    os.rmdir(folder)
    if status is None:
        status = max((worker.returncode for worker in workers), default=0)
    return status if status > 0 else 1 if status < 0 else 0


class Peers:
    """This worker's link to the other workers: it answers their calls with its own operations and
    calls theirs. Calls are pickled over Unix sockets: the peers are this server's own processes."""

    def __init__(self, index: int, count: int, folder: str):
        self.index, self.count, self.folder = index, count, Path(folder)
        self._server: asyncio.AbstractServer | None = None
        self._operations: dict[str, Callable[..., Any]] = {}

    @classmethod
    def of_this_process(cls) -> "Peers | None":
        """The peers of a worker the supervisor started; None for a lone faast."""
        if INDEX not in os.environ:
            return None
        return cls(int(os.environ[INDEX]), int(os.environ[COUNT]), os.environ[FOLDER])

    def _socket(self, index: int) -> str:
        return str(self.folder / f"worker-{index}.sock")

    async def serve(self, operations: dict[str, Callable[..., Any]]) -> None:
        """Answer the other workers' calls with `operations` (name → a function or coroutine
        function of this worker that applies or reads its local state only)."""
        self._operations = operations
        self._server = await asyncio.start_unix_server(self._answer, path=self._socket(self.index))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            operation, args = pickle.loads(await _read_frame(reader))
            try:
                value = self._operations[operation](*args)
                if inspect.isawaitable(value):
                    value = await value
                reply = (True, value)
            except Exception as error:
                reply = (False, f"{type(error).__name__}: {error}")
            writer.write(_frame(pickle.dumps(reply)))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the caller went away
        finally:
            writer.close()

    async def _call(self, index: int, operation: str, args: tuple) -> Any:
        """`operation(*args)` on worker `index`; waits for a worker still starting to listen."""
        deadline = time.monotonic() + PEER_PATIENCE_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._socket(index))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise Unavailable(f"faast worker {index} does not answer") from None
                await asyncio.sleep(0.05)
        try:
            writer.write(_frame(pickle.dumps((operation, args))))
            await writer.drain()
            ok, value = pickle.loads(await _read_frame(reader))
        finally:
            writer.close()
        if not ok:
            raise RuntimeError(value)
        return value

    async def gather(self, operation: str, *args: Any) -> list:
        """The values of `operation(*args)` on every other worker that answered it; a worker that
        failed is logged and left out."""
        others = [index for index in range(self.count) if index != self.index]
        results = await asyncio.gather(*(self._call(i, operation, args) for i in others), return_exceptions=True)
        values = []
        for index, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("worker %d could not answer %s: %s", index, operation, result)
            else:
                values.append(result)
        return values

    async def replay(self, operation: str, *args: Any) -> None:
        """Apply `operation(*args)`, already applied here, on every other worker, and wait for all."""
        await self.gather(operation, *args)


async def replay(peers: Peers | None, operation: str, *args: Any) -> None:
    """Replay a control call applied here on the other workers, if there are any."""
    if peers is not None:
        await peers.replay(operation, *args)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return await reader.readexactly(length)
