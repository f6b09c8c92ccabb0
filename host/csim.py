"""C simulation device: the hls4ml kernel compiled for the CPU (csim.so from `faast build`).

Bit-accurate to the FPGA kernel's fixed-point arithmetic. ctypes releases the GIL during the call,
so batches are split across the machine's cores and run in parallel threads.
"""

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .device import Device, DeviceError, register

_FLOATS = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
MIN_ROWS_PER_THREAD = 256


@register("csim")
class CsimDevice(Device):
    def __init__(self, kernel):
        super().__init__(kernel)
        library = kernel.folder / "csim.so"
        try:
            self._lib = ctypes.CDLL(str(library))
        except OSError as error:
            raise DeviceError(f"cannot load the C simulation library {library}: {error}") from None
        self._run = self._lib.faast_csim_run
        self._run.argtypes = [_FLOATS, _FLOATS, ctypes.c_long, ctypes.c_long, ctypes.c_long]
        self._run.restype = None
        self._threads = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix=f"csim-{kernel.name}")
        # The generated kernel loads its weights on the first call; make that call before any threads.
        self.run(np.zeros((1, kernel.input_size), np.float32))

    def _run_chunk(self, rows):
        out = np.empty((len(rows), self.kernel.output_size), np.float32)
        self._run(rows, out, len(rows), self.kernel.input_size, self.kernel.output_size)
        return out

    def run(self, rows):
        rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, self.kernel.input_size)
        chunks = min(self._threads, max(1, len(rows) // MIN_ROWS_PER_THREAD))
        if chunks == 1:
            return self._run_chunk(rows)
        parts = [np.ascontiguousarray(part) for part in np.array_split(rows, chunks)]
        return np.concatenate(list(self._pool.map(self._run_chunk, parts)))

    def close(self):
        self._pool.shutdown()
