"""The emulator program: kernel.json's layers compiled into steps by the layer handlers, and running them.

Compiling keeps a pending exact map (`Linear`) per tensor and appends a step only where C++ changes
bits (a cast) or leaves exact arithmetic; running feeds chunks of rows through the steps, small
enough that a layer's intermediates stay in the CPU cache.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from faast.contract.errors import KernelFormatError
from faast.contract.fixed import FixedType, Overflow
from faast.contract.kernel import Layer, Tensor

from .exact import Linear, Tensors, Unsupported

STEP_ELEMENTS = 32768  # input values computed together, so a layer's intermediates stay in the CPU cache
STEP_ROWS = 16  # but at least this many rows: an image network's ~50 steps each cost ~10 µs of Python


@dataclass(frozen=True)
class CastStep:
    """The step that computes `value` into tensor `name`, assigned to `fixed` (after a ReLU if `relu`)
    or exact without one; described, so that compiled.py can run a network of them in one pass."""

    value: Linear
    fixed: FixedType | None
    relu: bool
    name: str
    compute: Callable[[Tensors], np.ndarray]

    def __call__(self, tensors: Tensors) -> None:
        tensors[self.name] = self.compute(tensors)


class Program:
    """kernel.json's layers → steps over named tensors of mantissas; run() executes them. The layer
    handlers (layers.HANDLERS, passed in by load_program) build it through types, weight, source, cast and materialized.

    Kernel input i is tensor "input<i>" (its Input layer's handler sets its shape); run() takes the
    inputs' mantissas side by side, as the host packs them, and returns the outputs' side by side.
    """

    def __init__(
        self,
        layers: tuple[Layer, ...],
        weights: dict[str, np.ndarray],
        inputs: tuple[Tensor, ...],
        outputs: tuple[Tensor, ...],
        handlers: Mapping[str, Callable[["Program", Layer], None]],
    ):
        self.steps: list[Callable[[Tensors], None]] = []
        self.step_layers: list[Layer] = []  # the layer whose handler added each step (outputs' steps aside)
        self.weights = weights
        self.pending: dict[str, Linear] = {}  # tensor name → Linear
        self.inputs = [(tensor.name, tensor.fixed, tensor.size) for tensor in inputs]
        self.input_shapes: dict[str, tuple[int, ...]] = {}  # "input<i>" → shape, set by the Input layers
        for layer in layers:
            handler = handlers.get(layer.class_name)
            if handler is None:
                raise Unsupported(f"layer '{layer.name}' ({layer.class_name}) is not supported by the emulator")
            try:
                handler(self, layer)
                self.step_layers += [layer] * (len(self.steps) - len(self.step_layers))
            except (KeyError, ValueError, KernelFormatError) as error:
                raise Unsupported(f"layer '{layer.name}' ({layer.class_name}): {error}") from None
        produced = {
            variable: output
            for layer in layers
            for variable, output in zip(layer.variables, layer.outputs, strict=True)
        }
        self.outputs = []
        for i, tensor in enumerate(outputs):
            final = self.pending[produced[tensor.name]]
            fraction = tensor.fixed.fraction
            self.outputs.append(self.materialized(final.shifted(fraction - final.fraction), f"output{i}").source)

    def input_tensor(self, name: str) -> tuple[str, FixedType]:
        """The step tensor ("input<i>") and type of the kernel input an Input layer writes."""
        for i, (tensor, fixed, _) in enumerate(self.inputs):
            if tensor == name:
                return f"input{i}", fixed
        raise Unsupported(f"input layer '{name}' is none of the kernel's inputs")

    # -- building ---------------------------------------------------------------------------------

    def types(self, layer: Layer, *names: str) -> list[FixedType]:
        return [layer.type(name) for name in names]

    def weight(self, layer: Layer, key: str) -> np.ndarray:
        name = layer.weights[key]
        if name not in self.weights:  # the build keeps only fixed-point weights
            raise Unsupported(
                f"layer '{layer.name}' ({layer.class_name}): its {key} '{name}' is not fixed-point "
                "(e.g. quantized_po2 exponents or compressed weights)"
            )
        return self.weights[name]

    def source(self, layer: Layer) -> Linear:
        """The pending map of the layer's (first) input."""
        return self.pending[layer.inputs[0]]

    def cast(self, value: Linear, fixed: FixedType, name: str, relu: bool = False) -> None:
        """Assign `value` to type `fixed` as tensor `name`: free when no bit can change, else a step."""
        low = np.maximum(value.low, 0) if relu else value.low
        if fixed.fraction >= value.fraction and not (relu and np.any(value.low < 0)):
            moved = value.shifted(fixed.fraction - value.fraction)
            if fixed.holds(np.min(moved.low), np.max(moved.high)):
                self.pending[name] = moved
                return
        self.steps.append(CastStep(value, fixed, relu, name, value.compiled(fixed, relu)))
        shift = value.fraction - fixed.fraction
        factor = 2.0 ** -max(shift, 0) * 2.0 ** max(-shift, 0)
        low, high = np.floor(low * factor), np.ceil(value.high * factor)
        if fixed.overflow is Overflow.WRAP and not fixed.holds(np.min(low), np.max(high)):
            low, high = np.full_like(low, fixed.lowest), np.full_like(high, fixed.highest)
        self.pending[name] = Linear.of(
            name, fixed.fraction, np.clip(low, fixed.lowest, fixed.highest), np.clip(high, fixed.lowest, fixed.highest)
        )

    def materialized(self, value: Linear, name: str) -> Linear:
        """`value` as a computed tensor (a step when it is still a pending map)."""
        if value.is_identity:
            return value
        self.steps.append(CastStep(value, None, False, name + ".exact", value.compiled()))  # Unsupported beyond 62 bits
        return Linear.of(name + ".exact", value.fraction, value.low, value.high)

    # -- running --------------------------------------------------------------------------------

    def _input_tensors(self, mantissas):
        """The inputs' mantissas (side by side) as the steps read them: float64 when exact (BLAS-ready)."""
        tensors, offset = {}, 0
        for i, (_, fixed, size) in enumerate(self.inputs):
            exact = np.float64 if fixed.width <= 52 else np.int64
            part = mantissas[:, offset : offset + size] if len(self.inputs) > 1 else mantissas
            tensors[f"input{i}"] = part.astype(exact).reshape(-1, *self.input_shapes[f"input{i}"])
            offset += size
        return tensors

    def trace(self, mantissas: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Each named tensor's values (float64 [n, ...]) for the inputs, for per-layer comparisons."""
        tensors = self._input_tensors(mantissas.reshape(len(mantissas), -1))
        for step in self.steps:
            step(tensors)
        return {
            name: self.pending[name].compiled(single=False)(tensors) * 2.0 ** -self.pending[name].fraction
            for name in names
        }

    def run(self, mantissas: np.ndarray) -> np.ndarray:
        """Input mantissas (integers [n, inputs]) → output mantissas (int64 [n, outputs])."""
        results = []
        elements = sum(int(np.prod(shape)) for shape in self.input_shapes.values())
        rows_per_step = max(STEP_ROWS, STEP_ELEMENTS // elements)
        for start in range(0, len(mantissas), rows_per_step):
            chunk = mantissas[start : start + rows_per_step]
            tensors = self._input_tensors(chunk)
            for step in self.steps:
                step(tensors)
            outputs = [tensors[name].reshape(len(chunk), -1) for name in self.outputs]
            results.append(outputs[0].astype(np.int64) if len(outputs) == 1 else np.hstack(outputs).astype(np.int64))
        return np.concatenate(results) if results else np.empty((0, 0), np.int64)
