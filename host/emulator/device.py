"""The emulator as a faast Device (host/device.py's DRIVER for `device: "emulator"`): a compute unit
per CPU core, each with its own Program, so that the host's packing, pools and batching are the
same as for a card."""

import os

import numpy as np

from ..device import ComputeUnit, Device, DeviceBuffer, KernelDescription
from ..packing import TensorLanes
from .program import Program, load_program


class EmulatorComputeUnit(ComputeUnit):
    """One CPU core running the program on the packed buffers, exactly as the card reads and writes them."""

    def __init__(self, program: Program, lanes_in: TensorLanes, lanes_out: TensorLanes, index: int):
        self.program = program
        self.lanes_in, self.lanes_out = lanes_in, lanes_out
        self.name = f"emulator{index}"

    def allocate(self, nbytes):
        return DeviceBuffer(np.zeros(nbytes, np.uint8))

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        lanes_in, lanes_out = self.lanes_in, self.lanes_out
        bits = inputs.host.view(lanes_in.lane_dtype)[: rows * lanes_in.elements_per_row]
        if lanes_in.type.width == lanes_in.lane_bits:  # the lanes are the mantissas (signed: reinterpreted)
            mantissas = bits.view(bits.dtype.str.replace("u", "i")) if lanes_in.type.signed else bits
        else:
            mantissas = lanes_in.type.from_bits(bits)
        mantissas = mantissas.reshape(rows, lanes_in.elements_per_row)
        result = self.program.run(mantissas)
        out = outputs.host[:out_bytes].view(lanes_out.lane_dtype)
        mask = (1 << lanes_out.type.width) - 1
        out[: result.size] = (result.reshape(-1) & mask).astype(lanes_out.lane_dtype)
        out[result.size :] = 0


class EmulatorDevice(Device):
    kind = "emulator"

    def __init__(self, kernel: KernelDescription, compute_units: int | None = None):
        layout = kernel.layout
        count = compute_units or os.cpu_count() or 1
        # A program per compute unit: its steps reuse their output arrays (Scratch).
        super().__init__(
            kernel, [EmulatorComputeUnit(load_program(kernel), layout.input, layout.output, i) for i in range(count)]
        )

    @staticmethod
    def available():
        return True, "the emulator needs no card"


DRIVER = EmulatorDevice
