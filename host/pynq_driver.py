"""PYNQ device: Alveo cards and AWS F1 through PYNQ 3.0.1, the last release that drives them.

Each `<top>_N` IP of the downloaded overlay is one compute unit; its buffers are XRT buffer objects
in the memory the CU's ports connect to, which PYNQ names without brackets (DDR[0] → overlay.DDR0),
and only the bytes a run uses are synced.

What PYNQ leaves to its caller, the driver does:
- PYNQ's XrtDevice takes asyncio's current event loop in its constructor, and caches an empty card
  list when that raises (a thread without a loop on Python 3.10+): the cards are enumerated in a
  thread of their own that has one (`cards`), which no one runs, so completing a run's future from
  any thread is safe.
- XrtDevice's event handling is not thread-safe (`_handle_events` rebuilds `active_bos` while
  `execute_bo` appends to it; the exec-buffer cache is a plain list): every start and every event
  pump of a card runs under that card's lock, and a run is waited for by pumping with no timeout
  and sleeping in between, as the XRT driver polls, so no thread is left blocked inside PYNQ.
- An ErtWaitHandle's wait() returns for a run that ended in ERROR or ABORT as for one that
  completed; the driver reads the outcome PYNQ stored in the handle's future.
A unit whose card refused a call or whose run failed is reopened by `recovered` (the overlay
downloaded again, which reopens the CU contexts); one that hung stays out, as with the XRT driver.
Untested on hardware here: the tests run PYNQ 3.0.1 itself over a stand-in of XRT's C library
(tests/support/standin_libxrt.py).
"""

import asyncio
import re
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from faast.contract.errors import ComputeUnitFault, DeviceError

from .compute_unit import ComputeUnit, DeviceBuffer
from .device import Device
from .vendor import board, import_vendor
from .xrt_driver import POLL_S, run_timeout_ms

UNSAFE_IN_MEMORY_NAME = re.compile("[^A-Za-z0-9_]")  # what PYNQ strips from a memory's name


INSTALL_HINT = "device 'pynq' needs PYNQ 3.0.1 (pip install pynq==3.0.1 'pycparser<3') and XRT"


def _pynq():
    return import_vendor("pynq", INSTALL_HINT)


def cards(pynq):
    """pynq.Device.devices, first read in a thread given its own event loop (see the module's doc)."""
    found: list = []

    def enumerate_cards():
        asyncio.set_event_loop(asyncio.new_event_loop())  # kept by each XrtDevice for its futures
        try:
            found.append(pynq.Device.devices)
        except BaseException as error:  # noqa: BLE001 — re-raised in the caller's thread
            found.append(error)

    thread = threading.Thread(target=enumerate_cards, name="pynq-enumerate")
    thread.start()
    thread.join()
    if isinstance(found[0], BaseException):
        raise found[0]
    return found[0]


def memory_attribute(name):
    """The overlay attribute PYNQ gives memory `name` (DDR[0] → DDR0, bank1 → bank1)."""
    return UNSAFE_IN_MEMORY_NAME.sub("", name)


class PynqCard:
    """One card: its PYNQ device, the xclbin it runs, and the lock its starts and event pumps share."""

    def __init__(self, pynq, index, device, xclbin):
        self.pynq = pynq
        self.index = index
        self.device = device
        self.xclbin = xclbin
        self.lock = threading.Lock()
        self.overlay = self.download()

    def download(self):
        try:
            return self.pynq.Overlay(str(self.xclbin), device=self.device)
        except Exception as error:  # PYNQ raises plain exceptions for a wrong or broken xclbin
            raise DeviceError(
                f"cannot load {self.xclbin.name} on card {self.index} ({self.device.name}): {error}"
            ) from None


@dataclass
class BufferObject:
    """An XRT buffer object as DefaultIP.start takes it: the device address its argument carries."""

    bo: int
    device_address: int
    mapping: object  # the buffer mapped into this process (ctypes), freed once nothing refers to it
    address: int


class PynqComputeUnit(ComputeUnit):
    overlapping_runs = 2  # ERT queues the next start behind the running one, as with the XRT driver

    def __init__(self, card, ip_name):
        self.card = card
        self.ip_name = ip_name
        self.name = f"card{card.index}/{ip_name}"
        self.lost = False  # the card refused a call or a run failed: worth reopening
        self.open(card.overlay)

    def open(self, overlay):
        self.ip = getattr(overlay, self.ip_name)
        self.bank = getattr(overlay, memory_attribute(self.ip.args["inputs"].mem))

    def recovered(self):
        if not self.lost:
            return False  # a hung run stays queued on the CU: PYNQ offers no way to reset it
        try:
            overlay = self.card.download()
        except DeviceError:
            return False
        self.open(overlay)
        self.lost = False
        return True

    def allocate(self, nbytes):
        """A buffer object in the CU's bank, through XrtDevice's own calls (what pynq.allocate does, less
        its PynqBuffer, which numpy 2 refuses: ndarray.device became read-only)."""
        device = self.card.device
        bo = device.allocate_bo(nbytes, self.bank.idx, 0)
        mapping = device.map_bo(bo)
        host = np.frombuffer(mapping, np.uint8)  # its views keep `mapping` alive, as the handle does
        handle = BufferObject(bo, device.get_device_address(bo), mapping, host.ctypes.data)
        weakref.finalize(mapping, self.card.pynq.pl_server.xrt_device._free_bo, device, bo, handle.address, nbytes)
        return DeviceBuffer(host, handle)

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        card = self.card
        device = card.device
        try:
            device.flush(inputs.handle.bo, 0, inputs.handle.address, in_bytes)
            with card.lock:
                handle = self.ip.start(inputs.handle, outputs.handle, rows)
        except RuntimeError as error:  # PYNQ raises when XRT refuses the buffer or the start
            self.lost = True
            raise ComputeUnitFault(f"kernel {self.name} could not start: {error}") from None
        timeout_ms = run_timeout_ms(rows)
        deadline = time.monotonic() + timeout_ms / 1000
        while not handle.done:
            if time.monotonic() > deadline:
                raise ComputeUnitFault(f"kernel {self.name} did not complete within {round(timeout_ms)} ms")
            time.sleep(POLL_S)
            with card.lock:
                device._handle_events(0)  # completes every finished run of the card, not only this one
        failure = handle._future.exception()  # PYNQ's "Execution failed: <ERT state>"
        if failure is not None:
            self.lost = True
            raise ComputeUnitFault(f"kernel {self.name} failed: {failure}")
        try:
            device.invalidate(outputs.handle.bo, 0, outputs.handle.address, out_bytes)
        except RuntimeError as error:
            self.lost = True
            raise ComputeUnitFault(f"kernel {self.name}: reading outputs failed: {error}") from None


class PynqDevice(Device):
    kind = "pynq"

    def __init__(self, kernel):
        pynq = _pynq()
        found = cards(pynq)
        if not found:
            raise DeviceError("device 'pynq' found no Alveo card")
        platform = kernel.platforms
        compute_units = []
        for index, device in enumerate(found):
            if board(device.name) not in platform:
                raise DeviceError(f"card {index} is {device.name}, which no faast platform targets")
            card = PynqCard(pynq, index, device, kernel.xclbin(aws_f1=board(device.name) == "aws-f1"))
            for name in sorted(n for n in card.overlay.ip_dict if n.startswith(f"{kernel.top}_")):
                compute_units.append(PynqComputeUnit(card, name))
        super().__init__(kernel, compute_units)

    @staticmethod
    def available():
        try:
            pynq = _pynq()
        except DeviceError as error:
            return False, str(error)
        count = len(cards(pynq))
        return count > 0, f"PYNQ lists {count} card(s)"


DRIVER = PynqDevice
