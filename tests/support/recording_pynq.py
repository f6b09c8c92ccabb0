"""RECORDING STAND-IN for PYNQ 3.0.1 (`pynq`) on Alveo — not PYNQ, and no hardware is involved.

`module()` is what tests put in sys.modules["pynq"]. Everything it offers exists in the real
`pynq==3.0.1` with the same signature (tests/host/test_vendor_surface.py reads the real package,
installed by the test extra, and compares); anything else raises AttributeError. It behaves as PYNQ
does on a card: memories are named as PYNQ sanitizes them (DDR[0] → DDR0), an IP's `start` returns an
ErtWaitHandle whose `done` turns true only once events are pumped by `wait()`, and buffer syncs (of
slices too) copy between separate host and device memory, so a missing sync gives wrong answers.
Kernel runs execute the C-simulation build of the same kernel top. Calls are recorded in CALLS.

Cards are configured with `install(cards)`: dicts {"name": shell, "present": bool, "hang": set of IP
names that never complete}. Fake xclbins are the JSON files described in recording_pyxrt, with
optional "banks" (the memory each CU's ports connect to, default DDR[i]).
"""

import collections
import json
import re
import threading
import types
from pathlib import Path

import numpy as np

from .recording_pyxrt import load_kernel

CALLS: list[tuple] = []
CARDS: list[dict] = []


def install(cards):
    CALLS.clear()
    CARDS[:] = [{"present": True, "hang": set(), **card} for card in cards]


class _Strict:
    """Refuses any attribute the class does not define, as a real PYNQ object would lack it."""

    def __getattr__(self, name):
        raise AttributeError(f"the pynq stand-in's {type(self).__name__} has no attribute {name!r}")


XrtArgument = collections.namedtuple("XrtArgument", ["name", "index", "type", "mem"])


class PynqBuffer(np.ndarray):
    """Host memory of a device buffer; slices sync only their own bytes, as PYNQ's do (offset, nbytes)."""

    def __array_finalize__(self, obj):
        if isinstance(obj, PynqBuffer) and getattr(obj, "_device_memory", None) is not None:
            self._device_memory = obj._device_memory
            self.offset = obj.offset + (self.__array_interface__["data"][0] - obj.__array_interface__["data"][0])
            self._card = obj._card
        else:
            self._device_memory = None

    def flush(self):
        CALLS.append(("flush", id(self._device_memory), self.offset, self.nbytes))
        if not self._card["present"]:
            raise RuntimeError("Sync to device failed: -19")
        self._device_memory[self.offset : self.offset + self.nbytes] = self.view(np.uint8).reshape(-1)

    def invalidate(self):
        CALLS.append(("invalidate", id(self._device_memory), self.offset, self.nbytes))
        if not self._card["present"]:
            raise RuntimeError("Sync from device failed: -19")
        self.view(np.uint8).reshape(-1)[:] = self._device_memory[self.offset : self.offset + self.nbytes]

    def sync_to_device(self):
        self.flush()

    def sync_from_device(self):
        self.invalidate()


class XrtMemory(_Strict):
    def __init__(self, card, name):
        self._card = card
        self._name = name

    def allocate(self, shape, dtype, **kwargs):
        CALLS.append(("allocate", self._card["name"], self._name, shape))
        buffer = np.zeros(shape, dtype).view(PynqBuffer)
        buffer._device_memory = np.zeros(buffer.nbytes, np.uint8)
        buffer.offset = 0
        buffer._card = self._card
        return buffer


class ErtWaitHandle(_Strict):
    """`done` turns true only when device events are pumped, as PYNQ's does (wait → _handle_events)."""

    def __init__(self, run):
        self._run = run
        self._finished = False

    @property
    def done(self):
        return self._finished

    def wait(self):
        CALLS.append(("wait",))
        while not self._finished:
            self._run.wait()  # a hung CU never completes: wait() never returns, as on a card
            self._finished = True

    async def wait_async(self):
        raise NotImplementedError("the pynq stand-in does not model wait_async")


class _Run:
    def __init__(self, action):
        self._done = threading.Event()
        self._action = action
        if action is not None:
            threading.Thread(target=self._execute, daemon=True).start()

    def _execute(self):
        self._action()
        self._done.set()

    def wait(self):
        self._done.wait()


class DefaultIP(_Strict):
    def __init__(self, overlay, name, bank):
        self._overlay = overlay
        self._name = name
        self.args = {
            "inputs": XrtArgument("inputs", 1, "word_t const *", bank),
            "outputs": XrtArgument("outputs", 2, "word_t *", bank),
            "rows": XrtArgument("rows", 3, "int", None),
        }

    def start(self, *args, waitfor=(), **kwargs):
        inputs, outputs, rows = args
        card = self._overlay._card
        CALLS.append(("start", card["name"], self._name, id(inputs._device_memory), id(outputs._device_memory), rows))
        if not card["present"]:
            raise RuntimeError("Buffer submit failed: -19")
        if self._name in card["hang"]:
            return ErtWaitHandle(_Run(None))
        top = self._overlay._top
        addresses = (inputs._device_memory.ctypes.data, outputs._device_memory.ctypes.data)
        return ErtWaitHandle(_Run(lambda: top(*addresses, rows)))


class Overlay(_Strict):
    def __init__(self, bitfile_name, dtbo=None, download=True, ignore_version=False, device=None, gen_cache=False):
        CALLS.append(("Overlay", Path(bitfile_name).name, device.name))
        spec = json.loads(Path(bitfile_name).read_text())
        card = device._card
        if not card["present"]:
            raise RuntimeError("Failed to download overlay: device is gone")
        if spec["platform"].split("_")[1] not in device.name:
            raise RuntimeError(f"xclbin for {spec['platform']} does not match the shell of {device.name}")
        self._card = card
        self._top = load_kernel(spec)
        banks = spec.get("banks") or [f"DDR[{i}]" for i in range(len(spec["cus"]))]
        self.ip_dict = {cu: {"type": spec["kernel"]} for cu in spec["cus"]}
        self.mem_dict = {bank: {"used": 1} for bank in banks}
        self._items = {cu: DefaultIP(self, cu, bank) for cu, bank in zip(spec["cus"], banks, strict=True)}
        for bank in banks:  # PYNQ names memories without the brackets (overlay._complete_description)
            self._items[re.sub("[^A-Za-z0-9_]", "", bank)] = XrtMemory(card, bank)

    def __getattr__(self, name):
        items = self.__dict__.get("_items", {})
        if name in items:
            return items[name]
        raise AttributeError(f"Could not find IP or hierarchy {name} in overlay")


class XrtDevice(_Strict):
    def __init__(self, card):
        self._card = card
        self.name = card["name"]


class _DeviceMeta(type):
    """pynq's DeviceMeta: `Device.devices` is a property of the metaclass."""

    @property
    def devices(cls):
        return [XrtDevice(card) for card in CARDS if card["present"]]


class Device(_Strict, metaclass=_DeviceMeta):
    """pynq.Device: `devices` lists the cards XRT shows."""


def allocate(shape, dtype="u4", target=None, **kwargs):
    return target.allocate(shape, dtype, **kwargs)


def module():
    """A fresh `pynq` holding the stand-in's names; Device.devices follows the installed cards."""
    pynq = types.ModuleType("pynq", "RECORDING STAND-IN of pynq 3.0.1 (tests/support/recording_pynq.py)")
    pynq.Device = Device  # type: ignore[attr-defined]
    pynq.Overlay = Overlay  # type: ignore[attr-defined]
    pynq.allocate = allocate  # type: ignore[attr-defined]
    return pynq


# Where each stand-in name lives in the real package, for the surface test.
REAL_NAMES = {
    "pynq.Device": Device,
    "pynq.Overlay": Overlay,
    "pynq.allocate": allocate,
    "pynq.buffer.PynqBuffer": PynqBuffer,
    "pynq.pl_server.xrt_device.XrtMemory": XrtMemory,
    "pynq.pl_server.xrt_device.ErtWaitHandle": ErtWaitHandle,
    "pynq.pl_server.xrt_device.XrtDevice": XrtDevice,
    "pynq.overlay.DefaultIP": DefaultIP,
    "pynq.overlay.XrtArgument": XrtArgument,
}
