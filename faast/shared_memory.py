"""System shared memory regions registered by clients (Triton's system_shared_memory extension).

A client creates a POSIX shared memory object (shm_open key, e.g. "/input_data"), registers a
window of it under a name, and then passes tensors by (region, offset, byte size) instead of
bytes on the wire.

What a client can reach is exactly what shm_open can: a key names one object in /dev/shm (one
leading '/', no other '/'), opened without following links, and only a regular file is accepted
(a FIFO or device there could block or misbehave). Every access is bounds checked against the
registered window, and the file's size is checked again before each access (fstat), so a client
that shrinks its own file gets an error instead of killing the server.

A file can still shrink between that check and the access. Copies (pread, pwrite) then only come
up short. An input the kernel packs straight from the client's memory (`read(..., in_place=True)`)
and an output it unpacks straight into it (`destination`) lie in the region's mapping, where an
access past the new end raises SIGBUS. They are handed out as `ClientMemory` (faast.contract.memory),
which only the compiled passes' guard (host/fastpath.cpp) reads or writes, turning the fault into an
error for that one request. Other outputs are written with pwrite, from the answer array.
"""

import mmap
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .contract.errors import Internal, InvalidArgument, NotFound
from .contract.memory import ClientMemory

SHM_DIR = "/dev/shm"
NAME_MAX = 255  # longest file name, hence longest shm object name
IN_PLACE_ALIGNMENT = 8  # a window the kernel reads or writes in place starts at a multiple of this


def _parameter(params, key, kind, name):
    value = params.get(key, kind())
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "string_param" if kind is str else "int64_param"
        raise InvalidArgument(f"invalid value type for '{key}' parameter for tensor '{name}', expected {expected}.")
    return value


class SharedMemoryWindow(NamedTuple):
    """Where a tensor lies in a registered region (checked against it when read or written)."""

    region: str
    offset: int
    byte_size: int


def region_from_parameters(params: dict[str, Any], name: str) -> SharedMemoryWindow | None:
    """The window named by tensor `name`'s shared_memory_* parameters, or None without them."""
    if "shared_memory_region" not in params:
        return None
    return SharedMemoryWindow(
        _parameter(params, "shared_memory_region", str, name),
        _parameter(params, "shared_memory_offset", int, name),
        _parameter(params, "shared_memory_byte_size", int, name),
    )


def _open_shm_object(key):
    """A read-write fd on the POSIX shm object `key`, opened as shm_open opens it, or Internal with
    Triton's wording (Triton answers an unusable key the same way, whatever the reason)."""
    refused = Internal(f"Unable to open shared memory region: '{key}'")
    name = key[1:] if key.startswith("/") else ""
    if not name or "/" in name or "\0" in name or name in (".", "..") or len(name.encode()) > NAME_MAX:
        raise refused
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        raise refused from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refused
    return fd


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    mapping: mmap.mmap  # from the object's start; views handed out keep it mapped


class SharedMemoryManager:
    """The registered regions; safe to use from the event loop and worker threads."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if offset < 0 or byte_size < 0:
            raise InvalidArgument(
                f"failed to register shared memory region '{name}': offset and byte size must not be negative"
            )
        if "\0" in name:
            raise InvalidArgument("shared memory region names must not contain NUL")
        with self._lock:
            if name in self._regions:
                raise InvalidArgument(f"shared memory region '{name}' already in manager")
            fd = _open_shm_object(key)
            size = os.fstat(fd).st_size
            if byte_size == 0 or offset + byte_size > size:
                os.close(fd)
                # Triton's words: mmap's refusal of an empty window, and its own size check.
                why = "unable to process address spaceInvalid argument" if byte_size == 0 else "invalid args"
                raise InvalidArgument(f"failed to register shared memory region '{name}': {why}")
            try:
                mapping = mmap.mmap(fd, offset + byte_size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            except (OSError, OverflowError, ValueError) as error:
                os.close(fd)
                raise InvalidArgument(f"failed to register shared memory region '{name}': {error}") from None
            self._regions[name] = Region(name, key, offset, byte_size, fd, mapping)

    def unregister(self, name: str = "") -> None:
        """Unregister `name`, or every region when name is empty."""
        with self._lock:
            names = [name] if name else list(self._regions)
            for region_name in names:
                region = self._regions.pop(region_name, None)
                if region is not None:
                    os.close(region.fd)

    def status(self, name: str = "") -> list[Region]:
        with self._lock:
            if name and name not in self._regions:
                raise NotFound(f"Unable to find system shared memory region: '{name}'")
            return [r for n, r in self._regions.items() if not name or n == name]

    def _window(self, name, offset, byte_size):
        """The region and the file position of [offset, offset + byte_size) in it, checked against the
        registration and against the file as it is now."""
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find shared memory region: '{name}'")
        if offset < 0 or offset > region.byte_size:
            raise InvalidArgument(f"Invalid offset for shared memory region: '{name}'")
        if byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgument(f"Invalid offset + byte size for shared memory region: '{name}'")
        start = region.offset + offset
        if os.fstat(region.fd).st_size < start + byte_size:
            raise InvalidArgument(
                f"shared memory region '{name}' is smaller than when it was registered: its "
                f"object '{region.key}' was truncated"
            )
        return region, start

    def read(self, name: str, offset: int, byte_size: int, in_place: bool = False) -> bytes | ClientMemory:
        """The window's bytes, copied; with `in_place`, the client's memory itself (read-only) when the
        window starts 8-byte aligned (else a copy), which only the packing guard reads."""
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            if in_place and start % IN_PLACE_ALIGNMENT == 0:
                return ClientMemory(memoryview(region.mapping)[start : start + byte_size].toreadonly())
            data = os.pread(region.fd, byte_size, start)
        if len(data) != byte_size:
            raise InvalidArgument(f"shared memory region '{name}' was truncated while it was read")
        return data

    def destination(self, name: str, offset: int, byte_size: int) -> ClientMemory | None:
        """The window in the client's memory, writable, when it starts 8-byte aligned, else None (write
        the output instead); only the unpacking guard writes it."""
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            if start % IN_PLACE_ALIGNMENT:
                return None
            return ClientMemory(memoryview(region.mapping)[start : start + byte_size])

    def write(self, name: str, offset: int, byte_size: int, data: np.ndarray) -> None:
        """Write the C-contiguous array `data`, from where it lies, into the window."""
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            written = os.pwrite(region.fd, data.data, start)
        if written != data.nbytes:
            raise InvalidArgument(f"shared memory region '{name}' was truncated while it was written")
