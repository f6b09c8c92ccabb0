"""The device interface: what the server needs from anything that executes a built kernel.

A device is opened on a model-repository version folder (kernel.json + artefacts) and runs whole
batches: float32 rows in, float32 rows out, blocking, with the GIL released while the kernel works,
so the server calls it from a worker thread. Drivers register here by name (config.pbtxt
parameter "device").
"""

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DeviceError(RuntimeError):
    """The device cannot be opened or a kernel execution failed; the message says why."""


@dataclass(frozen=True)
class KernelDescription:
    """kernel.json, written by `faast build`: the kernel's tensors and per-layer fixed-point types."""

    folder: Path
    name: str
    input_size: int
    output_size: int
    raw: dict

    @classmethod
    def read(cls, folder):
        folder = Path(folder)
        path = folder / "kernel.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeviceError(f"{path} is missing: build the kernel with `faast build`") from None
        (tensor_in,), (tensor_out,) = raw["inputs"], raw["outputs"]
        return cls(folder, raw["name"], tensor_in["size"], tensor_out["size"], raw)


class Device(ABC):
    kind: str

    def __init__(self, kernel: KernelDescription):
        self.kernel = kernel

    @abstractmethod
    def run(self, rows: np.ndarray) -> np.ndarray:
        """Execute the kernel on float32 [n, input_size] rows; returns float32 [n, output_size]."""

    def close(self):
        """Release the device's resources."""


DRIVERS = {}


def register(kind):
    def decorate(cls):
        cls.kind = kind
        DRIVERS[kind] = cls
        return cls
    return decorate


def open_device(kind, folder) -> Device:
    """Open the driver `kind` on the kernel built into `folder`."""
    from . import csim  # noqa: F401  (registers the C simulation driver)

    if kind not in DRIVERS:
        raise DeviceError(f"unknown device '{kind}'; available: {', '.join(sorted(DRIVERS))}")
    return DRIVERS[kind](KernelDescription.read(folder))
