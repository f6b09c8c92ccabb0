"""The emulator device: a built kernel's fixed-point arithmetic, exactly, vectorized over the batch.

It runs the layers `faast build` described in kernel.json, with the weights the C simulation loads
(weights.npz), on integer mantissas: every tensor has its hls4ml C++ type, and a value changes only
where the C++ code assigns it to a narrower type (quantization, then overflow). Between those casts
all arithmetic is exact, so consecutive exact layers (Dense or Conv2D, BatchNormalization, Add)
stay one pending integer map (`Linear`) until the cast, which is one step: BLAS matrix products
(float32 while every partial sum provably stays below 2^23, float64 below 2^52), then one compiled
pass (fastpath.Requantize) that scales, adds, rounds and saturates; int64 in numpy to 2^62. Where
C++ loses bits inside a layer (products truncated into a narrow accumulator, a saturating
accumulator) the emulator follows the C loops. A layer or type it cannot reproduce exactly raises
`Unsupported` when the device opens, so `device: auto` falls back to the C simulation instead of
approximating.

- exact.py: `Linear` (a pending exact map and its bounds), `Scratch`, `Unsupported`;
- layers.py: the layer handlers and `HANDLERS`, the table of every hls4ml layer class it runs;
- program.py: `Program` (kernel.json's layers compiled into steps, and running them);
- loader.py: `load_program`, a built kernel's Program (its layers, weights.npz and the handlers);
- device.py: `EmulatorDevice` (`DRIVER`, what host/drivers.py opens) and its compute units.
"""

from .device import DRIVER, EmulatorComputeUnit, EmulatorDevice
from .exact import Linear, Scratch, Unsupported
from .layers import HANDLERS
from .loader import load_program
from .program import Program

__all__ = [
    "DRIVER",
    "HANDLERS",
    "EmulatorComputeUnit",
    "EmulatorDevice",
    "Linear",
    "Program",
    "Scratch",
    "Unsupported",
    "load_program",
]
