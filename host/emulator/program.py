"""The emulator program: kernel.json's layers and weights.npz compiled into steps, and running them.

Compiling keeps a pending exact map (`Linear`) per tensor and appends a step only where C++ changes
bits (a cast) or leaves exact arithmetic; running feeds chunks of rows through the steps, small
enough that a layer's intermediates stay in the CPU cache.
"""

from collections.abc import Callable

import numpy as np

from ..device import DeviceError, KernelDescription
from ..fixed import FixedType
from .exact import Linear, Tensors, Unsupported
from .layers import HANDLERS

STEP_ELEMENTS = 32768  # input values computed together, so a layer's intermediates stay in the CPU cache
STEP_ROWS = 16  # but at least this many rows: an image network's ~50 steps each cost ~10 µs of Python


class Program:
    """kernel.json's layers → steps over named tensors of mantissas; run() executes them. The layer
    handlers (layers.HANDLERS) build it through types, weight, source, cast and materialized."""

    input_shape: tuple[int, ...]  # set by the Input layer's handler

    def __init__(
        self, layers: list[dict], weights: dict[str, np.ndarray], input_type: FixedType, output_type: FixedType
    ):
        self.steps: list[Callable[[Tensors], None]] = []
        self.weights = weights
        self.pending: dict[str, Linear] = {}  # tensor name → Linear
        self.input_type = input_type
        for layer in layers:
            handler = HANDLERS.get(layer["class"])
            if handler is None:
                raise Unsupported(f"layer '{layer['name']}' ({layer['class']}) is not supported by the emulator")
            try:
                handler(self, layer)
            except (KeyError, ValueError) as error:
                raise Unsupported(f"layer '{layer['name']}' ({layer['class']}): {error}") from None
        final = self.pending[layers[-1]["outputs"][0]]
        self.output = self.materialized(final.shifted(output_type.fraction - final.fraction), "output").source

    # -- building ---------------------------------------------------------------------------------

    def types(self, layer: dict, *names: str) -> list[FixedType]:
        return [FixedType.parse(layer["types"][name]) for name in names]

    def weight(self, layer: dict, key: str) -> np.ndarray:
        return self.weights[layer["weights"][key]]

    def source(self, layer: dict) -> Linear:
        """The pending map of the layer's (first) input."""
        return self.pending[layer["inputs"][0]]

    def cast(self, value: Linear, fixed: FixedType, name: str, relu: bool = False) -> None:
        """Assign `value` to type `fixed` as tensor `name`: free when no bit can change, else a step."""
        low = np.maximum(value.low, 0) if relu else value.low
        if fixed.fraction >= value.fraction and not (relu and np.any(value.low < 0)):
            moved = value.shifted(fixed.fraction - value.fraction)
            if fixed.holds(np.min(moved.low), np.max(moved.high)):
                self.pending[name] = moved
                return
        compute = value.compiled(fixed, relu)
        self.steps.append(lambda tensors: tensors.__setitem__(name, compute(tensors)))
        shift = value.fraction - fixed.fraction
        factor = 2.0 ** -max(shift, 0) * 2.0 ** max(-shift, 0)
        low, high = np.floor(low * factor), np.ceil(value.high * factor)
        if fixed.overflow == "WRAP" and not fixed.holds(np.min(low), np.max(high)):
            low, high = np.full_like(low, fixed.lowest), np.full_like(high, fixed.highest)
        self.pending[name] = Linear.of(
            name, fixed.fraction, np.clip(low, fixed.lowest, fixed.highest), np.clip(high, fixed.lowest, fixed.highest)
        )

    def materialized(self, value: Linear, name: str) -> Linear:
        """`value` as a computed tensor (a step when it is still a pending map)."""
        if value.is_identity:
            return value
        compute = value.compiled()  # Unsupported beyond 62 bits
        self.steps.append(lambda tensors: tensors.__setitem__(name + ".exact", compute(tensors)))
        return Linear.of(name + ".exact", value.fraction, value.low, value.high)

    # -- running ----------------------------------------------------------------------------------

    def _input_tensor(self, mantissas):
        """Input mantissas as the steps read them: float64 when exact (BLAS-ready)."""
        exact = np.float64 if self.input_type.width <= 52 else np.int64
        return mantissas.astype(exact).reshape(-1, *self.input_shape)

    def trace(self, mantissas: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Each named tensor's values (float64 [n, ...]) for the inputs, for per-layer comparisons."""
        tensors = {"input": self._input_tensor(mantissas)}
        for step in self.steps:
            step(tensors)
        return {
            name: self.pending[name].compiled(single=False)(tensors) * 2.0 ** -self.pending[name].fraction
            for name in names
        }

    def run(self, mantissas: np.ndarray) -> np.ndarray:
        """Input mantissas (integers [n, inputs]) → output mantissas (int64 [n, outputs])."""
        outputs = []
        rows_per_step = max(STEP_ROWS, STEP_ELEMENTS // int(np.prod(self.input_shape)))
        for start in range(0, len(mantissas), rows_per_step):
            tensors = {"input": self._input_tensor(mantissas[start : start + rows_per_step])}
            for step in self.steps:
                step(tensors)
            outputs.append(tensors[self.output].reshape(len(tensors["input"]), -1).astype(np.int64))
        return np.concatenate(outputs) if outputs else np.empty((0, 0), np.int64)


def load_program(kernel: KernelDescription) -> Program:
    """The emulator program of a built kernel; `Unsupported` when it cannot be exact."""
    path = kernel.folder / "weights.npz"
    if not path.exists():
        raise DeviceError(f"{path} is missing: rebuild the model with `faast build`")
    with np.load(path) as archive:
        weights = {name: values.astype(np.int64) for name, values in archive.items()}  # stored narrow
    layout = kernel.layout
    return Program(kernel.raw["layers"], weights, layout.input.type, layout.output.type)
