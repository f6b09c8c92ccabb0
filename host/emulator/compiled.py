"""The compiled whole-network pass: a dense network's emulator steps, run row block by row block in one
C++ pass (host/network_pass.cpp) instead of a numpy call per step per chunk.

It is compiled from the Program's own steps, so its semantics are the ones the emulator proved exact:
each cast (`CastStep`: a `Linear` — matrix, scale, offset — assigned to a FixedType with its rounding
and overflow, optionally after a ReLU) becomes one op in int64, its matrix product in int32 on pairs
of 16-bit values where every partial sum provably stays below 2^31; hls4ml's loop-order dense (products
cast one by one into a narrow accumulator) becomes one op too. A step it does not run (convolution
windows, a sum of two maps, tables, reshapes) raises `NotCovered`, and the emulator runs its steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faast.contract.fixed import FLOAT_EXACT, INT_EXACT, FixedType, Overflow
from faast.contract.kernel import Layer

from .. import fastpath
from .exact import Linear
from .program import CastStep, Program

# network_pass.cpp's enums (its Op's fields come from the extension: fastpath.op_fields()).
LOAD, CAST, LOOP_DENSE, STORE = range(4)
PAIRS16, WIDE64 = range(2)
EXACT = -1  # no quantization: the op's values are kept exact
PAIR_SUM_EXACT = 2.0**31  # int32 sums of 16-bit pair products
SELF_CHECK_ROWS = 4096  # rows on which a new pass must equal the emulator's steps


class NotCovered(Exception):
    """The program has a step the pass does not run; the message says which."""


@dataclass
class _Tensor:
    index: int
    layout: int
    features: int


class NetworkPass:
    """A Program's steps as one compiled pass; `run` has Program.run's contract. Safe to share between
    compute units: each call runs on its own scratch, without the GIL."""

    def __init__(self, program: Program):
        self.tensors: dict[str, _Tensor] = {}
        self.ops: list[dict[str, int]] = []
        self.constants: list[np.ndarray] = []
        self.constant_count = 0
        column = 0
        for i, (_, fixed, size) in enumerate(program.inputs):
            if len(program.input_shapes[f"input{i}"]) != 1:
                raise NotCovered(f"input {i} is not a vector")
            tensor = self._tensor(f"input{i}", size, fixed.lowest, fixed.highest)
            self._op(LOAD, destination=tensor.index, column=column)
            column += size
        for index, step in enumerate(program.steps):
            if isinstance(step, CastStep):
                self._cast(step)
                continue
            layer = program.step_layers[index]
            if layer.class_name != "Dense" or step.__qualname__ != "_dense_in_loop_order.<locals>.dense":
                raise NotCovered(f"layer '{layer.name}' ({layer.class_name}) has a step the pass does not run")
            self._loop_dense(program, layer)
        column = 0
        for name in program.outputs:
            tensor = self._source(name)
            self._op(STORE, source=tensor.index, column=column)
            column += tensor.features
        self.output_columns = column
        fields = fastpath.op_fields()
        if unknown := {name for op in self.ops for name in op} - set(fields):
            raise RuntimeError(f"network_pass.cpp's Op has no fields {sorted(unknown)}")
        self.network = fastpath.Network(
            np.array([[op.get(field, 0) for field in fields] for op in self.ops], np.int64),
            np.array([(t.layout, t.features) for t in self.tensors.values()], np.int64),
            np.concatenate(self.constants) if self.constants else np.zeros(1, np.int64),
        )
        self._check(program)

    def run(self, mantissas: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Input mantissas (integers [n, inputs]) → output mantissas (int64 [n, outputs]), into `out`
        (C-contiguous) when given: a compute unit reuses its own, as fresh memory for every run costs
        page faults, and unmapping it interrupts every other core running this process."""
        rows = mantissas.reshape(len(mantissas), -1)
        if rows.dtype != np.int16:
            rows = rows.astype(np.int64, copy=False)
        if out is None:
            out = np.empty((len(rows), self.output_columns), np.int64)
        self.network(np.ascontiguousarray(rows), out)
        return out

    # -- compiling ------------------------------------------------------------------------------

    def _tensor(self, name, features, low, high):
        """A new tensor of values in [low, high]: int16 pairs where they fit (the pair products' input)."""
        layout = PAIRS16 if -(2**15) <= low and high < 2**15 else WIDE64
        tensor = self.tensors[name] = _Tensor(len(self.tensors), layout, features)
        return tensor

    def _constant(self, values) -> int:
        """Where integer `values` start in the constants; NotCovered unless exact in int64."""
        values = np.asarray(values, np.float64).reshape(-1)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or np.max(np.abs(values)) >= INT_EXACT:
            raise NotCovered("a step's matrix, scale or offset is not an int64")
        self.constants.append(values.astype(np.int64))
        self.constant_count += len(values)
        return self.constant_count - len(values)

    def _op(self, kind, **fields):
        self.ops.append({"kind": kind, "quantization": EXACT} | fields)

    def _source(self, name):
        if name not in self.tensors:
            raise NotCovered(f"tensor '{name}' is not computed by the pass")
        return self.tensors[name]

    def _modes(self, fixed: FixedType | None):
        """An op's type fields: its rounding and overflow as faast/contract/fixed.py applies them."""
        if fixed is None:
            return {}
        if fixed.width > 62:
            raise NotCovered(f"{fixed} is wider than the pass's 62 bits")
        low = -fixed.highest if fixed.overflow is Overflow.SAT_SYM and fixed.signed else fixed.lowest
        return {
            "quantization": fixed.quantization.value,
            "overflow": fixed.overflow.value,
            "low": low,
            "high": fixed.highest,
            "width": fixed.width,
        }

    def _cast(self, step: CastStep):
        value, fixed = step.value, step.fixed
        if value.window is not None or value.addend is not None:
            raise NotCovered(f"step '{step.name}' reads convolution windows or sums two maps")
        source, outputs = self._source(value.source), len(value.low)
        shift = 0 if fixed is None else value.fraction - fixed.fraction
        products = np.max(value.product_bound())
        if products >= INT_EXACT or value.exact_bound() * 2.0 ** max(-shift, 0) >= INT_EXACT:
            raise NotCovered(f"step '{step.name}' has values beyond 2^62")
        fields = {"source": source.index, "inputs": source.features, "outputs": outputs, "shift": shift}
        # float64 where every value, scaled by 2^-shift, stays below 2^52, and so do the type's ends
        scaled = max(products, value.exact_bound() * 2.0 ** max(-shift, 0))
        fields["floating"] = int(scaled < FLOAT_EXACT and (fixed is None or fixed.width <= 52))
        if value.matrix is not None:
            fields["matrix"] = self._constant(value.matrix)
            small = np.max(np.abs(value.matrix)) < 2**15  # and never -2^15: no pair of them overflows int32
            fields["pairs"] = int(source.layout == PAIRS16 and small and products < PAIR_SUM_EXACT)
        else:
            fields["matrix"] = -1
        fields["scale"] = -1 if value.scale is None else self._constant(np.broadcast_to(value.scale, outputs))
        fields["offset"] = self._constant(np.broadcast_to(value.offset, outputs))
        if fixed is None:
            low, high = np.floor(np.min(value.low)), np.ceil(np.max(value.high))
        else:
            low, high = fixed.lowest, fixed.highest
        destination = self._tensor(step.name, outputs, low, high)
        self._op(CAST, destination=destination.index, relu=int(step.relu), **fields, **self._modes(fixed))

    def _loop_dense(self, program: Program, layer: Layer):
        """hls4ml's DenseLatency loop where accum_t is narrower than the products (the emulator's
        layers._dense_in_loop_order): each product cast into accum_t, added to accum_t(bias) in input
        order, overflowing at every addition. Read from the layer as that step reads it."""
        name = layer.outputs[0]
        accum, weight_type, bias_type = program.types(layer, "accum_t", "weight_t", "bias_t")
        weights = program.weight(layer, "weight")
        if layer.flag("_weights_transposed", False):
            weights = weights.T
        value: Linear = program.pending[layer.inputs[0]]
        if value.addend is not None or len(value.low) != len(weights):
            raise NotCovered(f"layer '{layer.name}' sums two maps or reads an image")
        source = self._source(value.source if value.is_identity else name + ".in.exact")
        if "bias" in layer.weights:
            bias = accum.requantize(program.weight(layer, "bias"), bias_type.fraction)
        else:
            bias = np.zeros(weights.shape[1], np.int64)
        shift = value.fraction + weight_type.fraction - accum.fraction
        biggest = np.max(value.source_bound) * np.max(np.abs(weights)) * 2.0 ** max(-shift, 0)
        if biggest >= INT_EXACT:
            raise NotCovered(f"layer '{layer.name}' has products beyond 2^62")
        destination = self._tensor(name + ".accum", weights.shape[1], accum.lowest, accum.highest)
        self._op(
            LOOP_DENSE,
            destination=destination.index,
            source=source.index,
            inputs=len(weights),
            outputs=weights.shape[1],
            matrix=self._constant(weights),
            scale=-1,
            offset=self._constant(bias),
            shift=shift,
            **self._modes(accum),
        )

    def _check(self, program: Program):
        """NotCovered unless the pass equals the program's steps on rows spread over the inputs' ranges
        (a guard against the pass and the emulator's layers drifting apart)."""
        rng = np.random.default_rng(0)
        ranges = [(fixed.lowest, fixed.highest + 1, (SELF_CHECK_ROWS, size)) for _, fixed, size in program.inputs]
        rows = np.hstack([rng.integers(*bounds) for bounds in ranges])
        differ = np.count_nonzero(self.run(rows) != program.run(rows))
        if differ:
            raise NotCovered(f"the pass differs from the emulator's steps on {differ} values of {SELF_CHECK_ROWS} rows")
