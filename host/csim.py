"""C simulation device: the Vitis kernel top and hls4ml firmware compiled for the CPU (csim.so).

Bit-accurate to the card: the same kernel top reads the same packed 512-bit words. Each CPU core
is one compute unit (io_parallel kernels); ctypes releases the GIL during the call, so they run in
parallel.
"""

import ctypes

import numpy as np

from faast.contract.errors import DeviceError

from .compute_unit import ComputeUnit, DeviceBuffer, cores_of_this_process
from .device import Device


class CsimComputeUnit(ComputeUnit):
    def __init__(self, top, index):
        self.top = top
        self.name = f"csim{index}"

    def allocate(self, nbytes):
        return DeviceBuffer(np.zeros(nbytes, np.uint8))

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        self.top(inputs.host.ctypes.data, outputs.host.ctypes.data, rows)


class CsimDevice(Device):
    kind = "csim"

    def __init__(self, kernel, compute_units=None):
        library = kernel.folder / "csim.so"
        weights = kernel.folder / "hls4ml" / "firmware" / "weights"
        # The firmware would exit() the whole process on a missing weights file. The build records
        # which it reads (none for a network of weightless layers); an older kernel.json, only that
        # there were some.
        if kernel.weight_files is None:
            missing = [] if any(weights.glob("*.txt")) else ["*.txt"]
        else:
            missing = [name for name in kernel.weight_files if not (weights / name).is_file()]
        if missing:
            raise DeviceError(
                f"kernel weights missing in {weights} ({', '.join(missing[:3])}): rebuild the model with `faast build`"
            )
        try:
            lib = ctypes.CDLL(str(library))
            top = getattr(lib, kernel.top)
        except (OSError, AttributeError) as error:
            raise DeviceError(f"cannot load kernel '{kernel.top}' from {library}: {error}") from None
        lib.faast_set_weights_dir(str(weights).encode())
        top.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        top.restype = None
        self._lib = lib
        # io_stream firmware keeps its line buffers and counters in static variables: one caller at a time.
        units = 1 if kernel.io_type == "io_stream" else compute_units or cores_of_this_process()
        super().__init__(kernel, [CsimComputeUnit(top, i) for i in range(units)])
        self.run(np.zeros((1, kernel.input_size), np.float32))  # loads the weights before concurrent calls

    @staticmethod
    def available():
        return True, "the C simulation needs no card"


DRIVER = CsimDevice
