"""Shadow validation: a sampled fraction of a card's executions re-run on the bit-exact engine, off
the serving path, so a card that computes wrong while it serves (a marginal timing closure, a bad
bitstream, a failing memory bank) is caught by the server instead of by a physicist's analysis.

When a sampled execution finishes, its packed inputs and the card's packed outputs are copied; one
thread of this object runs the engine on the same packed inputs and compares the outputs' mantissas
row by row. A sample that arrives while that thread is still busy is skipped, never queued without
bound: checking never delays an answer. Mismatching rows are counted and logged with their inputs;
after DISAGREEMENTS_TO_FAIL checked executions in a row that disagreed, `verdict` says why the model
must not be ready.
"""

import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from faast.contract.kernel import KernelDescription

from . import packing
from .compute_unit import ComputeUnit

log = logging.getLogger("faast.host")
DISAGREEMENTS_TO_FAIL = 3
ROWS_LOGGED = 3  # mismatching rows logged with their inputs, per checked execution
_WAITING = 2  # samples waiting for the checking thread; more are skipped


@dataclass
class _Sample:
    unit: str  # the compute unit that ran it
    rows: int
    inputs: np.ndarray  # packed, as the card read them
    outputs: np.ndarray  # packed, as the card wrote them


class ShadowValidation:
    """Checks `fraction` (0 < fraction <= 1) of the executions offered to it against `engine`, a
    compute unit of the bit-exact engine for the same kernel (its own, used by no one else)."""

    def __init__(self, kernel: KernelDescription, fraction: float, engine: ComputeUnit):
        self.kernel = kernel
        self.fraction = fraction
        self._engine = engine
        capacity = kernel.layout.rows_per_execution
        self._buffers = (
            engine.allocate(kernel.layout.input.nbytes(capacity)),
            engine.allocate(kernel.layout.output.nbytes(capacity)),
        )
        self._credit = 0.0  # fraction accumulated since the last sample: every 1/fraction-th is checked
        self._lock = threading.Lock()
        self.checked_rows = 0
        self.mismatched_rows = 0
        self.skipped_executions = 0
        self._disagreeing = 0  # checked executions in a row that disagreed
        self._last_mismatch = ""
        self._samples: queue.Queue[_Sample | None] = queue.Queue(_WAITING)
        self._thread = threading.Thread(target=self._check_samples, name=f"shadow-{kernel.name}", daemon=True)
        self._thread.start()

    def offer(self, unit: str, rows: int, inputs: np.ndarray, outputs: np.ndarray) -> None:
        """An execution of `rows` rows that `unit` just finished, its packed input and output buffers
        (still the caller's: the ones sampled are copied before this returns)."""
        with self._lock:
            self._credit += self.fraction
            if self._credit < 1:
                return
            self._credit -= 1
        layout = self.kernel.layout
        sample = _Sample(
            unit, rows, inputs[: layout.input.nbytes(rows)].copy(), outputs[: layout.output.nbytes(rows)].copy()
        )
        try:
            self._samples.put_nowait(sample)
        except queue.Full:
            with self._lock:
                self.skipped_executions += 1

    def verdict(self) -> str | None:
        """Why the card must not serve (its recent checked executions kept disagreeing), or None."""
        with self._lock:
            if self._disagreeing < DISAGREEMENTS_TO_FAIL:
                return None
            return (
                f"shadow validation: {self._disagreeing} checked executions in a row differ from the bit-exact "
                f"engine (last: {self._last_mismatch})"
            )

    def _check_samples(self) -> None:
        while (sample := self._samples.get()) is not None:
            try:
                self._check(sample)
            except Exception:  # a broken check must not end the thread that logs the next one
                log.exception("shadow validation of '%s' could not check an execution", self.kernel.name)

    def _check(self, sample: _Sample) -> None:
        layout = self.kernel.layout
        inputs, outputs = self._buffers
        inputs.host[: sample.inputs.size] = sample.inputs
        self._engine.execute(inputs, outputs, sample.rows, sample.inputs.size, sample.outputs.size)
        card = packing.mantissas(layout.output, sample.outputs, sample.rows)
        engine = packing.mantissas(layout.output, outputs.host, sample.rows)
        (wrong,) = np.nonzero((card != engine).any(axis=1))
        with self._lock:
            self.checked_rows += sample.rows
            self.mismatched_rows += len(wrong)
            self._disagreeing = self._disagreeing + 1 if len(wrong) else 0
            if len(wrong):
                self._last_mismatch = f"{len(wrong)} of {sample.rows} rows on {sample.unit}"
        if not len(wrong):
            return
        values, card_values, engine_values = (
            np.asarray(packing.unpack(lanes, packed, sample.rows))
            for lanes, packed in (
                (layout.input, sample.inputs),
                (layout.output, sample.outputs),
                (layout.output, outputs.host),
            )
        )
        log.error(
            "shadow validation of '%s': %d of %d rows from %s differ from the bit-exact engine; %s",
            self.kernel.name,
            len(wrong),
            sample.rows,
            sample.unit,
            "; ".join(
                f"row {row}: inputs {values[row].tolist()} card {card_values[row].tolist()} "
                f"engine {engine_values[row].tolist()}"
                for row in wrong[:ROWS_LOGGED]
            ),
        )

    def close(self) -> None:
        """Finish the samples already taken, then stop the checking thread."""
        self._samples.put(None)
        self._thread.join()
