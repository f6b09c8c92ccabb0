"""What a driver provides: compute units (CUs), each able to allocate buffers in its memory bank and
run the kernel once (sync in, start, wait, sync out). Everything else — planning, buffer pools,
failover — is the driver-independent `Device` (host/device.py)."""

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


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
    def allocate(self, nbytes: int) -> DeviceBuffer:
        """A buffer of `nbytes` in this CU's memory bank."""

    def allocate_outputs(self, nbytes: int) -> DeviceBuffer:
        """A buffer for the kernel's outputs; a driver whose outputs argument has a bank of its own
        (XRT's group_id) overrides it."""
        return self.allocate(nbytes)

    @abstractmethod
    def execute(self, inputs: DeviceBuffer, outputs: DeviceBuffer, rows: int, in_bytes: int, out_bytes: int) -> None:
        """Sync `in_bytes` of inputs to the device, run the kernel on `rows`, wait, sync outputs back.
        Raises ComputeUnitFault when this unit (or its card) fails rather than the request."""

    def recovered(self) -> bool:
        """Whether a unit taken out of rotation works again (its card is back); drivers override it."""
        return False


def cores_of_this_process() -> int:
    """The compute units the emulator and the C simulation run when config.pbtxt names no count: the
    machine's cores, shared out among `faast serve --workers` processes (which set FAAST_WORKERS)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("FAAST_WORKERS", "1")))
