"""A wake-up at a precise moment for an asyncio loop.

asyncio's selector rounds every wait up to a whole millisecond (epoll_wait takes milliseconds), so a
dynamic batcher with a 100 µs max_queue_delay would hold a lone request about 1 ms. On Linux a
timerfd (nanosecond resolution, CLOCK_MONOTONIC, the clock of time.perf_counter_ns) becomes readable
at the moment asked and wakes the loop's epoll at once; elsewhere, loop.call_at is used.
"""

import asyncio
import ctypes
import os
import sys
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc():
    if not sys.platform.startswith("linux") or time.get_clock_info("perf_counter").implementation != (
        "clock_gettime(CLOCK_MONOTONIC)"
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "timerfd_create") else None
    except OSError:
        return None


_LIBC = _libc()


class PreciseTimer:
    """Calls `callback` on `loop` once perf_counter_ns() reaches the time of the last arm()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self.loop = loop
        self.callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        if _LIBC is not None:
            fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                loop.add_reader(fd, self._fired)

    def arm(self, when_ns: int) -> None:
        """Replace any earlier arming with one at `when_ns` (a perf_counter_ns time)."""
        if self._fd < 0:
            if self._handle is not None:
                self._handle.cancel()
            delay = max(when_ns - time.perf_counter_ns(), 0) / 1e9
            self._handle = self.loop.call_at(self.loop.time() + delay, self.callback)
            return
        when_ns = max(when_ns, 1)  # an all-zero time would disarm
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(when_ns // 1_000_000_000, when_ns % 1_000_000_000))
        if _LIBC.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiration count; reading it re-arms readability
        except BlockingIOError:  # re-armed for later between the wake-up and this read
            return
        self.callback()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
