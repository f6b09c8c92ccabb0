"""RECORDING STAND-IN for XRT's Python binding `pyxrt` — not XRT, and no hardware is involved.

Implements the part of pyxrt that faast's xrt driver calls, records every call in CALLS, and makes
the "card" do real work: a kernel run executes the C-simulation build of the same kernel top on the
stand-in's *device-side* memory. Host and device memory are separate arrays, so a driver that
forgets a sync gets wrong answers. Tests configure the cards with `install(cards)`.

A fake xclbin is a JSON file: {"platform", "kernel", "cus": [...], "library": csim.so, "weights": dir}.
"""

import ctypes
import json
from pathlib import Path

import numpy as np

CALLS = []
CARDS = []  # dicts: {"name": shell name, "hang": bool}


def install(cards):
    CALLS.clear()
    CARDS[:] = cards


def load_kernel(spec):
    """The fake card's kernel: the C-simulation library's top function, weights set."""
    library = ctypes.CDLL(spec["library"])
    library.faast_set_weights_dir(spec["weights"].encode())
    top = getattr(library, spec["kernel"])
    top.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return top


def enumerate_devices():
    return list(range(len(CARDS)))


class xclBOSyncDirection:
    XCL_BO_SYNC_BO_TO_DEVICE = "to_device"
    XCL_BO_SYNC_BO_FROM_DEVICE = "from_device"


class ert_cmd_state:
    ERT_CMD_STATE_COMPLETED = "completed"
    ERT_CMD_STATE_TIMEOUT = "timeout"


class xrt_info_device:
    name = "name"


class _XclbinCu:
    def __init__(self, name):
        self._name = name

    def get_name(self):
        return self._name


class _XclbinKernel:
    def __init__(self, name, cus):
        self._name = name
        self._cus = cus

    def get_name(self):
        return self._name

    def get_cus(self):
        return [_XclbinCu(f"{self._name}:{cu}") for cu in self._cus]


class xclbin:
    def __init__(self, path):
        self.path = path
        self.spec = json.loads(Path(path).read_text())

    def get_xsa_name(self):
        return self.spec["platform"]

    def get_kernels(self):
        return [_XclbinKernel(self.spec["kernel"], self.spec["cus"])]


class device:
    def __init__(self, index):
        CALLS.append(("device", index))
        self.index = index
        self.card = CARDS[index]
        self.image = None

    def get_info(self, key):
        return self.card[key]

    def load_xclbin(self, image):
        CALLS.append(("load_xclbin", self.index, Path(image.path).name))
        self.image = image
        return f"uuid-{self.index}"


class bo:
    normal = "normal"

    def __init__(self, dev, nbytes, flags, group):
        CALLS.append(("bo", dev.index, nbytes, group))
        self.host = np.zeros(nbytes, np.uint8)
        self.device_memory = np.zeros(nbytes, np.uint8)

    def map(self):
        return self.host

    def sync(self, direction, size, offset):
        CALLS.append(("sync", direction, id(self), size))
        if direction == xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE:
            self.device_memory[offset : offset + size] = self.host[offset : offset + size]
        else:
            self.host[offset : offset + size] = self.device_memory[offset : offset + size]


class _run:
    def __init__(self, state):
        self.state = state

    def wait(self, timeout_ms):
        CALLS.append(("wait", timeout_ms))
        return self.state


class kernel:
    class cu_access_mode:
        shared = "shared"

    def __init__(self, dev, uuid, name, mode):
        CALLS.append(("kernel", dev.index, name))
        self.device = dev
        self.name = name
        self.top = load_kernel(dev.image.spec)

    def group_id(self, argument):
        return int(self.name.rsplit("_", 1)[-1].rstrip("}")) - 1  # CU n's bank

    def __call__(self, inputs, outputs, rows):
        CALLS.append(("start", self.device.index, self.name, id(inputs), id(outputs), rows))
        if self.device.card.get("hang"):
            return _run(ert_cmd_state.ERT_CMD_STATE_TIMEOUT)
        self.top(inputs.device_memory.ctypes.data, outputs.device_memory.ctypes.data, rows)
        return _run(ert_cmd_state.ERT_CMD_STATE_COMPLETED)
