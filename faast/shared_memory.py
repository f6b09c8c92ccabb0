"""System shared memory regions registered by clients (Triton's system_shared_memory extension).

A client creates a POSIX shared memory object (shm_open key, e.g. "/input_data"), registers a
window of it under a name, and then passes tensors by (region, offset, byte size) instead of
bytes on the wire. Every access is bounds checked against the registered window.
"""

import mmap
import os
import threading
from dataclasses import dataclass

from .errors import InvalidArgument, NotFound

SHM_DIR = "/dev/shm"


def region_from_parameters(params):
    """(region, offset, byte_size) from a tensor's shared_memory_* parameters, or None."""
    if "shared_memory_region" not in params:
        return None
    return (params["shared_memory_region"], int(params.get("shared_memory_offset", 0)),
            int(params.get("shared_memory_byte_size", 0)))


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    memory: mmap.mmap


class SharedMemoryManager:
    def __init__(self):
        self._regions = {}
        self._lock = threading.Lock()

    def register(self, name, key, offset, byte_size):
        with self._lock:
            if name in self._regions:
                raise InvalidArgument(f"shared memory region '{name}' already in manager")
            path = os.path.join(SHM_DIR, key.lstrip("/"))
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as error:
                raise InvalidArgument(f"Unable to open shared memory region: '{key}': {error.strerror}") from None
            try:
                size = os.fstat(fd).st_size
                if offset + byte_size > size or byte_size == 0:
                    raise InvalidArgument(f"failed to register shared memory region '{name}': offset {offset} + "
                                          f"byte size {byte_size} exceeds the {size} bytes of '{key}'")
                memory = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self._regions[name] = Region(name, key, offset, byte_size, memory)

    def unregister(self, name=""):
        """Unregister `name`, or every region when name is empty."""
        with self._lock:
            names = [name] if name else list(self._regions)
            for region_name in names:
                region = self._regions.pop(region_name, None)
                if region is not None:
                    region.memory.close()

    def status(self, name=""):
        with self._lock:
            if name and name not in self._regions:
                raise NotFound(f"Unable to find system shared memory region: '{name}'")
            return [r for n, r in self._regions.items() if not name or n == name]

    def _window(self, name, offset, byte_size):
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find shared memory region: '{name}'")
        if offset < 0 or offset > region.byte_size:
            raise InvalidArgument(f"Invalid offset for shared memory region: '{name}'")
        if byte_size < 0 or offset + byte_size > region.byte_size:
            raise InvalidArgument(f"Invalid offset + byte size for shared memory region: '{name}'")
        return region, region.offset + offset

    def read(self, name, offset, byte_size):
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            return region.memory[start:start + byte_size]

    def write(self, name, offset, byte_size, data):
        with self._lock:
            region, start = self._window(name, offset, byte_size)
            region.memory[start:start + len(data)] = data
