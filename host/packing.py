"""Host packing, one code path for the C simulation, the emulator and cards: float rows → fixed-point
bit patterns in the lanes of a `TensorLanes` (faast.contract.layout says how they lie), and output
lanes → float rows. Wrapping input types and float32 outputs take the compiled, guarded passes
(fastpath.wrapped_bits, fastpath.float_from_bits); other types numpy.

Rows come in blocks (one per request a batch merged), packed one after another where they lie: a
batch is never concatenated first, and a block may be a client's shared memory (`ClientMemory`),
which only the guarded passes read. Output rows are unpacked straight into where they go, which may
be a client's shared memory too.
"""

import numpy as np

from faast.contract.errors import MemoryVanished
from faast.contract.fixed import FixedType, Overflow
from faast.contract.layout import TensorLanes
from faast.contract.memory import ClientMemory, Rows

from .fastpath import float_from_bits, wrapped_bits


class UnreadableBlock(Exception):
    """Block `index` of the rows being packed vanished under the read: the client's shared memory it
    lay in was truncated. Nothing of the other blocks is lost; the caller packs them again without it."""

    def __init__(self, index: int):
        super().__init__(f"block {index} of the rows was truncated while it was packed")
        self.index = index


def pack(lanes: TensorLanes, blocks: list[Rows], buffer: np.ndarray) -> int:
    """Write blocks of rows ([n_i, elements_per_row] each) one after another into `buffer` (uint8, at
    least nbytes(Σ n_i)); returns the bytes used. UnreadableBlock(i) when block i's memory vanished.
    Float rows are converted to each segment's bit patterns; integer rows already are bit patterns
    (a client that quantized itself, e.g. INT16 for ap_fixed<16,·>) and are masked to their width.
    A ClientMemory block only where the lanes pack in place."""
    used = lanes.nbytes(sum(len(block) for block in blocks))
    flat = buffer[:used].view(lanes.lane_dtype)
    at = 0
    for index, block in enumerate(blocks):
        size = len(block) * lanes.elements_per_row
        try:
            _pack_rows(lanes, block, flat[at : at + size])
        except MemoryVanished:
            raise UnreadableBlock(index) from None
        at += size
    flat[at:] = 0
    return used


def _pack_rows(lanes: TensorLanes, rows: Rows, out: np.ndarray) -> None:
    if isinstance(rows, ClientMemory):
        if not lanes.packs_in_place:
            raise TypeError("a client's memory is packed only by the guarded pass (TensorLanes.packs_in_place)")
        wrapped_bits(rows.reshape(-1), lanes.type, out)
        return
    if len(lanes.segments) == 1:  # the common case: one conversion over the whole flat block
        _pack_segment(lanes, lanes.segments[0].type, rows.reshape(-1), out)
        return
    grid = out.reshape(len(rows), lanes.elements_per_row)
    for segment in lanes.segments:
        grid[:, segment.columns] = _pack_segment(
            lanes, segment.type, rows[:, segment.columns], np.empty((len(rows), segment.size), lanes.lane_dtype)
        )


def _pack_segment(lanes: TensorLanes, fixed: FixedType, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.integer):
        out[...] = values.astype(lanes.lane_dtype) & lanes.lane_dtype.type((1 << fixed.width) - 1)
        return out
    if fixed.overflow is Overflow.WRAP and fixed.width <= 62:  # the compiled pass: to_bits's bits, faster
        return wrapped_bits(
            values if values.dtype in (np.float32, np.float64) else values.astype(np.float64), fixed, out
        )
    return fixed.to_bits(values, out=out)


def mantissas(lanes: TensorLanes, buffer: np.ndarray, rows: int) -> np.ndarray:
    """The packed rows' mantissas (int64 [rows, elements_per_row]), each segment sign-extended."""
    flat = buffer[: lanes.nbytes(rows)].view(lanes.lane_dtype)[: rows * lanes.elements_per_row]
    grid = flat.reshape(rows, lanes.elements_per_row)
    if len(lanes.segments) == 1:
        return lanes.segments[0].type.from_bits(grid)
    out = np.empty((rows, lanes.elements_per_row), np.int64)
    for segment in lanes.segments:
        out[:, segment.columns] = segment.type.from_bits(grid[:, segment.columns])
    return out


def unpack(
    lanes: TensorLanes, buffer: np.ndarray, rows: int, out: np.ndarray | ClientMemory | None = None, first: int = 0
) -> np.ndarray | ClientMemory:
    """Output rows [first, first + rows) of `buffer` as floats (float_dtype), each element converted
    from its segment's type; into `out` ([rows, elements_per_row] of float_dtype, C-contiguous: a
    slice of a batch's result, or a client's shared memory where the lanes unpack in place) when
    given. MemoryVanished when a client's memory went under the write."""
    elements = slice(first * lanes.elements_per_row, (first + rows) * lanes.elements_per_row)
    flat = buffer[: lanes.nbytes(first + rows)].view(lanes.lane_dtype)[elements]
    if lanes.unpacks_in_place:
        into = np.empty((rows, lanes.elements_per_row), np.float32) if out is None else out
        float_from_bits(flat, lanes.type, into)
        return into
    if isinstance(out, ClientMemory):
        raise TypeError("a client's memory is written only by the guarded pass (TensorLanes.unpacks_in_place)")
    if out is None:
        out = np.empty((rows, lanes.elements_per_row), lanes.float_dtype)
    grid = flat.reshape(rows, lanes.elements_per_row)
    for segment in lanes.segments:
        segment.type.to_float(segment.type.from_bits(grid[:, segment.columns]), out=out[:, segment.columns])
    return out
