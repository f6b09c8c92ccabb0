"""Giving the memory of a large request back to the system once it is answered.

A multi-GiB request arrives in many small transport buffers (gRPC slices, aiohttp chunks) that
are joined and then freed; glibc keeps those freed small chunks in its heaps, so without a trim
the process would stay gigabytes larger after every large request, accepted or rejected.
"""

import asyncio
import ctypes
import ctypes.util

LARGE_REQUEST_BYTES = 64 * 2**20  # below this the heap's growth is not worth a trim
_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_malloc_trim = getattr(_libc, "malloc_trim", None)  # glibc only; elsewhere nothing to do


def after_request(nbytes):
    """Call when a request of `nbytes` is answered: a large one's freed heap memory is returned to
    the system from a worker thread, off the serving path."""
    if nbytes >= LARGE_REQUEST_BYTES and _malloc_trim is not None:
        asyncio.get_running_loop().run_in_executor(None, _malloc_trim, 0)
