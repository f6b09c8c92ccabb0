"""System shared memory regions registered by clients (Triton's system_shared_memory extension).

A client creates a POSIX shared memory object (shm_open key, e.g. "/input_data"), registers a
window of it under a name, and then passes tensors by (region, offset, byte size) instead of
bytes on the wire.

What a client can reach is exactly what shm_open can: a key names one object in /dev/shm (one
leading '/', no other '/'), opened without following links, and only a regular file is accepted
(a FIFO or device there could block or misbehave). A region costs no file descriptor: the object is
mapped at registration and its descriptor closed at once, as Triton does, so however many regions
clients register, the server's descriptors stay for its connections. Its identity (device and inode)
is kept instead.

Every access is bounds checked against the registered window, and the file's size is checked again
before each access: /dev/shm/<key> is looked up (without following links) and, when it is still the
object that was mapped, a client that shrank it gets an error instead of an access past its end. The
check is a courtesy, not the safety: the object may have been unlinked (the mapping keeps it, and a
client holding a descriptor can still shrink it) or shrink between the check and the access, and an
access to the mapping past the object's end raises SIGBUS, which would end the server. So nothing
touches the mapping unguarded:

- copies in and out of the mapping go through the kernel (process_vm_readv/process_vm_writev on this
  process), which answers memory that is gone with EFAULT, never SIGBUS: the copy comes up short and
  the request fails;
- an input the kernel packs straight from the client's memory (`read(..., in_place=True)`) and an
  output it unpacks straight into it (`destination`) are handed out as `ClientMemory`
  (faast.contract.memory), which only the compiled passes' guard (host/fastpath.cpp) reads or writes,
  turning the fault into an error for that one request. Other outputs are copied from the answer array.
"""

import ctypes
import errno
import mmap
import os
import stat
import threading
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .contract.errors import AlreadyExists, Internal, InvalidArgument, NotFound
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


def _shm_path(key):
    """The path of the POSIX shm object `key`, or Internal with Triton's wording (Triton answers an
    unusable key the same way, whatever the reason)."""
    name = key[1:] if key.startswith("/") else ""
    if not name or "/" in name or "\0" in name or name in (".", "..") or len(name.encode()) > NAME_MAX:
        raise Internal(f"Unable to open shared memory region: '{key}'")
    return os.path.join(SHM_DIR, name)


def _open_shm_object(path, key):
    """A read-write fd on the shm object at `path`, opened as shm_open opens it, and its status."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        raise Internal(f"Unable to open shared memory region: '{key}'") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise Internal(f"Unable to open shared memory region: '{key}'")
    return fd, status


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value
_COPIES = {}
for _name in ("process_vm_readv", "process_vm_writev"):
    _function = getattr(_libc, _name)
    _function.restype = ctypes.c_ssize_t
    _function.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    _COPIES[_name] = _function


def _guarded_copy(function: str, local: int, remote: int, byte_size: int) -> int:
    """Copy `byte_size` bytes between this process's `local` and `remote` addresses through the kernel
    (process_vm_readv: remote to local; process_vm_writev: local to remote), which answers memory
    that is gone (a truncated object's pages) with EFAULT instead of SIGBUS. Returns the bytes
    copied, fewer when the memory went; any other failure is a server fault."""
    if byte_size == 0:
        return 0
    local_iov, remote_iov = _IoVec(local, byte_size), _IoVec(remote, byte_size)
    copied = _COPIES[function](os.getpid(), ctypes.byref(local_iov), 1, ctypes.byref(remote_iov), 1, 0)
    if copied < 0:
        code = ctypes.get_errno()
        if code != errno.EFAULT:
            raise OSError(code, f"{function} of a shared memory region failed: {os.strerror(code)}")
        return 0
    return copied


class Mapping:
    """The first `length` bytes of a shm object, mapped shared and read-write, holding no descriptor
    (Python's mmap keeps a duplicate of the one it maps: a descriptor per region). It is unmapped
    once the mapping and every view of it are gone."""

    def __init__(self, fd: int, length: int):
        address = _libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if address is None or address == MAP_FAILED:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self.address: int = address
        self._memory = (ctypes.c_char * length).from_address(address)
        weakref.finalize(self._memory, _libc.munmap, address, length)  # views keep _memory alive

    def view(self, start: int, byte_size: int) -> memoryview:
        """Bytes [start, start + byte_size) where they lie: only guarded code may touch them."""
        return memoryview(self._memory).cast("B")[start : start + byte_size]


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    path: str  # /dev/shm/<key>, looked up before each access to check the object's size
    identity: tuple[int, int]  # (st_dev, st_ino) of the object that was mapped
    mapping: Mapping  # from the object's start


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
                raise AlreadyExists(f"shared memory region '{name}' already in manager")
            if any(region.key == key for region in self._regions.values()):
                # Triton reuses the descriptor of the key's first registration, which it closed
                # already, and fails to stat it: a key is registered under one name at a time.
                raise Internal(f"Invalid shared memory region: '{key}'")
            path = _shm_path(key)
            fd, status = _open_shm_object(path, key)
            try:
                if byte_size == 0 or offset + byte_size > status.st_size:
                    # Triton's words: mmap's refusal of an empty window, and its own size check.
                    why = "unable to process address spaceInvalid argument" if byte_size == 0 else "invalid args"
                    raise InvalidArgument(f"failed to register shared memory region '{name}': {why}")
                try:
                    mapping = Mapping(fd, offset + byte_size)
                except OSError as error:  # Triton's words
                    raise InvalidArgument(
                        f"failed to register shared memory region '{name}': unable to process address space"
                        f"{error.strerror}"
                    ) from None
            finally:
                os.close(fd)  # the mapping keeps the memory; a region holds no descriptor
            identity = (status.st_dev, status.st_ino)
            self._regions[name] = Region(name, key, offset, byte_size, path, identity, mapping)

    def unregister(self, name: str = "") -> None:
        """Unregister `name`, or every region when name is empty. A region's mapping goes once no
        request holds a view of it any more."""
        with self._lock:
            names = [name] if name else list(self._regions)
            for region_name in names:
                self._regions.pop(region_name, None)

    def status(self, name: str = "") -> list[Region]:
        with self._lock:
            if name and name not in self._regions:
                raise NotFound(f"Unable to find system shared memory region: '{name}'")
            return [r for n, r in self._regions.items() if not name or n == name]

    def check_window(self, name: str, offset: int, byte_size: int) -> None:
        """Refuse a window that is not in a registered region (an output's, when the request is
        parsed, as Triton does), with Triton's wording."""
        with self._lock:
            self._bounds(name, offset, byte_size)

    def _bounds(self, name, offset, byte_size):
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find shared memory region: '{name}'")
        if offset < 0 or offset >= region.byte_size:
            raise InvalidArgument(f"Invalid offset for shared memory region: '{name}'")
        if byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgument(f"Invalid offset + byte size for shared memory region: '{name}'")
        return region

    def _window(self, name, offset, byte_size):
        """The region and the object position of [offset, offset + byte_size) in it, checked against
        the registration and, while /dev/shm/<key> is still the object mapped, against its size now."""
        region = self._bounds(name, offset, byte_size)
        start = region.offset + offset
        try:
            now = os.stat(region.path, follow_symlinks=False)
        except OSError:  # unlinked: the mapping keeps the object, and only the guarded copies know its size
            return region, start
        if (now.st_dev, now.st_ino) == region.identity and now.st_size < start + byte_size:
            raise InvalidArgument(
                f"shared memory region '{name}' is smaller than when it was registered: its "
                f"object '{region.key}' was truncated"
            )
        return region, start

    def read(self, name: str, offset: int, byte_size: int, in_place: bool = False) -> memoryview | ClientMemory:
        """The window's bytes, copied; with `in_place`, the client's memory itself (read-only) when the
        window starts 8-byte aligned (else a copy), which only the packing guard reads."""
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            if in_place and start % IN_PLACE_ALIGNMENT == 0:
                return ClientMemory(region.mapping.view(start, byte_size).toreadonly())
            data = np.empty(byte_size, np.uint8)
            copied = _guarded_copy("process_vm_readv", data.ctypes.data, region.mapping.address + start, byte_size)
        if copied != byte_size:
            raise InvalidArgument(f"shared memory region '{name}' was truncated while it was read")
        return data.data.toreadonly()

    def destination(self, name: str, offset: int, byte_size: int) -> ClientMemory | None:
        """The window in the client's memory, writable, when it starts 8-byte aligned, else None (write
        the output instead); only the unpacking guard writes it."""
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            if start % IN_PLACE_ALIGNMENT:
                return None
            return ClientMemory(region.mapping.view(start, byte_size))

    def write(self, name: str, offset: int, byte_size: int, data: np.ndarray) -> None:
        """Write the C-contiguous array `data` (at most `byte_size` bytes), from where it lies, into the
        window."""
        if not data.flags.c_contiguous or data.nbytes > byte_size:
            raise ValueError("the data written must be C-contiguous and fit the window")
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            written = _guarded_copy("process_vm_writev", data.ctypes.data, region.mapping.address + start, data.nbytes)
        if written != data.nbytes:
            raise InvalidArgument(f"shared memory region '{name}' was truncated while it was written")
