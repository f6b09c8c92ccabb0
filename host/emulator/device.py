"""The emulator as a faast Device (host/device.py's DRIVER for `device: "emulator"`): a compute unit
per CPU core, each with its own Program, or all with one compiled network pass where it covers every
step (compiled.py), so that the host's packing, pools and batching are the same as for a card."""

import logging

import numpy as np

from faast.contract.kernel import KernelDescription
from faast.contract.layout import TensorLanes

from .. import packing
from ..compute_unit import ComputeUnit, DeviceBuffer, cores_of_this_process
from ..device import Device
from ..planning import MIN_ROWS_PER_EXECUTION
from .compiled import NetworkPass, NotCovered
from .loader import load_program
from .program import Program

log = logging.getLogger("faast.host")


class EmulatorComputeUnit(ComputeUnit):
    """One CPU core running the program on the packed buffers, exactly as the card reads and writes them."""

    def __init__(self, program: Program | NetworkPass, lanes_in: TensorLanes, lanes_out: TensorLanes, index: int):
        self.program = program
        self.lanes_in, self.lanes_out = lanes_in, lanes_out
        self.name = f"emulator{index}"
        self._result = np.empty((0, lanes_out.elements_per_row), np.int64)  # the pass's output, reused

    def allocate(self, nbytes):
        return DeviceBuffer(np.zeros(nbytes, np.uint8))

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        lanes_in, lanes_out = self.lanes_in, self.lanes_out
        single = lanes_in.segments[0].type if len(lanes_in.segments) == 1 else None
        if single is not None and single.width == lanes_in.lane_bits:  # the lanes are the mantissas
            bits = inputs.host.view(lanes_in.lane_dtype)[: rows * lanes_in.elements_per_row]
            mantissas = (bits.view(bits.dtype.str.replace("u", "i")) if single.signed else bits).reshape(rows, -1)
        else:
            mantissas = packing.mantissas(lanes_in, inputs.host, rows)
        if isinstance(self.program, NetworkPass):  # one run at a time on a unit: its result array is reused
            if len(self._result) < rows:
                self._result = np.empty((rows, lanes_out.elements_per_row), np.int64)
            result = self.program.run(mantissas, self._result[:rows])
        else:
            result = self.program.run(mantissas)
        out = outputs.host[:out_bytes].view(lanes_out.lane_dtype)
        grid = out[: result.size].reshape(result.shape)
        for segment in lanes_out.segments:
            columns = result[:, segment.columns]
            np.bitwise_and(columns, (1 << segment.type.width) - 1, out=columns)
            grid[:, segment.columns] = columns  # the low lane bits: the masked bit pattern
        out[result.size :] = 0


class EmulatorDevice(Device):
    kind = "emulator"

    def __init__(self, kernel: KernelDescription, compute_units: int | None = None, compiled_pass: bool = True):
        """compiled_pass=False: the emulator's steps even where the pass covers them (for benchmarks)."""
        layout = kernel.layout
        count = compute_units or cores_of_this_process()
        program = load_program(kernel)
        network: NetworkPass | None = None
        why = "not asked for"
        if compiled_pass:
            try:
                network = NetworkPass(program)
            except NotCovered as uncovered:
                why = str(uncovered)
        programs: list[Program | NetworkPass]
        if network is not None:  # one pass for every compute unit: each run has its own scratch
            programs = [network] * count
            log.info("emulator for '%s': the compiled network pass runs every step", kernel.name)
        else:  # a program per compute unit: its steps reuse their output arrays (Scratch)
            programs = [program, *(load_program(kernel) for _ in range(count - 1))]
            log.info("emulator for '%s': the emulator's steps (the compiled network pass: %s)", kernel.name, why)
        units = [EmulatorComputeUnit(p, layout.input, layout.output, i) for i, p in enumerate(programs)]
        super().__init__(kernel, units)
        if network is not None:  # a few hundred rows through the pass take tens of microseconds
            self.inline_rows = MIN_ROWS_PER_EXECUTION

    @staticmethod
    def available():
        return True, "the emulator needs no card"


DRIVER = EmulatorDevice
