"""A built kernel's emulator program: kernel.json's layers and weights.npz, through the layer handlers."""

import numpy as np

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription

from .exact import Unsupported
from .layers import HANDLERS
from .program import Program


def load_program(kernel: KernelDescription) -> Program:
    """The emulator program of a built kernel; `Unsupported` when it cannot be exact."""
    if not kernel.layers or kernel.folder is None:
        raise Unsupported(f"kernel.json of '{kernel.name}' describes no layers (an imported hls4ml project)")
    path = kernel.folder / "weights.npz"
    if not path.exists():
        raise DeviceError(f"{path} is missing: rebuild the model with `faast build`")
    with np.load(path) as archive:
        weights = {name: values.astype(np.int64) for name, values in archive.items()}  # stored narrow
    return Program(kernel.layers, weights, kernel.inputs, kernel.outputs, HANDLERS)
