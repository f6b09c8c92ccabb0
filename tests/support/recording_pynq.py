"""RECORDING STAND-IN for PYNQ 3.0.1 (`pynq`) — not PYNQ, and no hardware is involved.

Implements the part of pynq that faast's pynq driver calls (Device.devices, Overlay, IP start,
allocate, buffer syncs), records every call in CALLS, and executes kernel runs with the C-simulation
build of the same kernel top on separate device-side memory, so a missing sync gives wrong answers.
Fake xclbins are the JSON files described in recording_pyxrt.
"""

import collections
import json
from pathlib import Path

import numpy as np

from .recording_pyxrt import load_kernel

CALLS = []
XrtArgument = collections.namedtuple("XrtArgument", ["name", "index", "type", "mem"])


class _Card:
    def __init__(self, name, hang=False):
        self.name = name
        self.hang = hang


class Device:
    devices = []


def install(cards):
    CALLS.clear()
    Device.devices = [_Card(**card) for card in cards]


class PynqBuffer(np.ndarray):
    def sync_to_device(self):
        CALLS.append(("sync_to_device", id(self)))
        self.device_memory[:] = self

    def sync_from_device(self):
        CALLS.append(("sync_from_device", id(self)))
        self[:] = self.device_memory


def allocate(shape, dtype, target=None):
    CALLS.append(("allocate", shape, target))
    buffer = np.zeros(shape, dtype).view(PynqBuffer)
    buffer.device_memory = np.zeros(shape, dtype)
    return buffer


class _Handle:
    def __init__(self, done):
        self.done = done


class _Ip:
    def __init__(self, overlay, name, bank):
        self.overlay = overlay
        self.name = name
        self.args = {"in": XrtArgument("in", 1, "word_t*", bank), "out": XrtArgument("out", 2, "word_t*", bank)}

    def start(self, inputs, outputs, rows):
        CALLS.append(("start", self.overlay.card.name, self.name, id(inputs), id(outputs), rows))
        if self.overlay.card.hang:
            return _Handle(False)
        self.overlay.top(inputs.device_memory.ctypes.data, outputs.device_memory.ctypes.data, rows)
        return _Handle(True)


class Overlay:
    def __init__(self, path, device=None):
        CALLS.append(("Overlay", Path(path).name, device.name))
        spec = json.loads(Path(path).read_text())
        if spec["platform"].split("_")[1] not in device.name:
            raise RuntimeError(f"xclbin for {spec['platform']} does not match the shell of {device.name}")
        self.card = device
        self.top = load_kernel(spec)
        self.ip_dict = {cu: {} for cu in spec["cus"]}
        for i, cu in enumerate(spec["cus"]):
            setattr(self, cu, _Ip(self, cu, f"bank{i}"))
            setattr(self, f"bank{i}", f"memory bank{i} of {device.name}")
