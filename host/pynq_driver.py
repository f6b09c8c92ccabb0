"""PYNQ device: Alveo cards and AWS F1 through PYNQ 3.0.1, the last release that drives them.

Each `<top>_N` IP of the downloaded overlay is one compute unit; buffers are pynq.allocate()'d in
the memory the CU's ports connect to, which PYNQ names without brackets (DDR[0] → overlay.DDR0).
A run's ErtWaitHandle completes only when its `wait()` pumps the device's events, so the driver
waits in a helper thread it can give up on; only the bytes a run uses are synced (PYNQ syncs a
slice's own range). Untested on hardware here: the tests drive this code against a recording
stand-in of pynq (tests/support/recording_pynq.py) whose surface is checked against pynq 3.0.1.
"""

import re
import threading

import numpy as np

from faast.contract.errors import ComputeUnitFault, DeviceError

from .compute_unit import ComputeUnit, DeviceBuffer
from .device import Device
from .vendor import board, import_vendor
from .xrt_driver import KERNEL_TIMEOUT_MS

UNSAFE_IN_MEMORY_NAME = re.compile("[^A-Za-z0-9_]")  # what PYNQ strips from a memory's name


def _pynq():
    return import_vendor("pynq", "device 'pynq' needs PYNQ 3.0.1 (pip install pynq==3.0.1) and XRT")


def memory_attribute(name):
    """The overlay attribute PYNQ gives memory `name` (DDR[0] → DDR0, bank1 → bank1)."""
    return UNSAFE_IN_MEMORY_NAME.sub("", name)


class PynqComputeUnit(ComputeUnit):
    def __init__(self, pynq, overlay, ip, name):
        self.pynq = pynq
        self.bank = getattr(overlay, memory_attribute(ip.args["inputs"].mem))
        self.ip = ip
        self.name = name

    def allocate(self, nbytes):
        buffer = self.pynq.allocate((nbytes,), np.uint8, target=self.bank)
        return DeviceBuffer(buffer.view(np.ndarray), buffer)

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        try:
            inputs.handle[:in_bytes].sync_to_device()
            handle = self.ip.start(inputs.handle, outputs.handle, rows)
        except RuntimeError as error:
            raise ComputeUnitFault(f"kernel {self.name} could not start: {error}") from None
        waiter = threading.Thread(target=handle.wait, name=f"wait-{self.name}", daemon=True)
        waiter.start()
        waiter.join(KERNEL_TIMEOUT_MS / 1000)
        if waiter.is_alive():  # the thread stays blocked in PYNQ; the CU leaves the rotation
            raise ComputeUnitFault(f"kernel {self.name} did not complete within {KERNEL_TIMEOUT_MS} ms")
        try:
            outputs.handle[:out_bytes].sync_from_device()
        except RuntimeError as error:
            raise ComputeUnitFault(f"kernel {self.name}: reading outputs failed: {error}") from None


class PynqDevice(Device):
    kind = "pynq"

    def __init__(self, kernel):
        pynq = _pynq()
        xclbin = kernel.xclbin()
        cards = pynq.Device.devices
        if not cards:
            raise DeviceError("device 'pynq' found no Alveo card")
        platform = kernel.platforms
        compute_units = []
        for index, card in enumerate(cards):
            if board(card.name) not in platform:
                raise DeviceError(f"card {index} is {card.name}, which no faast platform targets")
            try:
                overlay = pynq.Overlay(str(xclbin), device=card)
            except Exception as error:  # PYNQ raises plain exceptions for a wrong or broken xclbin
                raise DeviceError(f"cannot load {xclbin.name} on card {index} ({card.name}): {error}") from None
            for name in sorted(n for n in overlay.ip_dict if n.startswith(f"{kernel.top}_")):
                compute_units.append(PynqComputeUnit(pynq, overlay, getattr(overlay, name), f"card{index}/{name}"))
        super().__init__(kernel, compute_units)

    @staticmethod
    def available():
        try:
            pynq = _pynq()
        except DeviceError as error:
            return False, str(error)
        count = len(pynq.Device.devices)
        return count > 0, f"PYNQ lists {count} card(s)"


DRIVER = PynqDevice
