"""Host packing, one code path for C simulation and cards: float rows → fixed-point bit patterns →
lanes of 512-bit words, and output words → float rows. Vectorized with numpy.

A buffer carries one row per kernel input (or output) row: the elements of every tensor of that
side, in kernel.json's order, each tensor a `Segment` with its own fixed-point type. Elements are
packed row after row with no gaps, one per lane whatever their tensor (the lane is wide enough for
the widest type); lane k of word w holds element w·lanes + k. The words are little-endian, so a
flat array of lane-sized integers *is* the word buffer.

Rows come in blocks (one per request a batch merged), packed one after another where they lie: a
batch is never concatenated first, and a block may be a view of a client's shared memory. Output
rows are unpacked straight into where they go, which may be a client's shared memory too.
"""

from dataclasses import dataclass

import numpy as np

from .fastpath import MemoryVanished, float_from_bits
from .fixed import FixedType

WORD_BYTES = 64


class UnreadableBlock(Exception):
    """Block `index` of the rows being packed vanished under the read: the client's shared memory it
    lay in was truncated. Nothing of the other blocks is lost; the caller packs them again without it."""

    def __init__(self, index: int):
        super().__init__(f"block {index} of the rows was truncated while it was packed")
        self.index = index


@dataclass(frozen=True)
class Segment:
    """One tensor's elements within a packed row: columns [offset, offset + size) of its type."""

    type: FixedType
    offset: int
    size: int

    @property
    def columns(self):
        return slice(self.offset, self.offset + self.size)


@dataclass(frozen=True)
class TensorLanes:
    segments: tuple[Segment, ...]
    lane_bits: int
    lanes_per_word: int
    elements_per_row: int

    @classmethod
    def from_description(cls, entry):
        tensors = entry.get("tensors") or [{"type": entry["type"], "offset": 0, "size": entry["elements_per_row"]}]
        segments = tuple(Segment(FixedType.parse(t["type"]), t["offset"], t["size"]) for t in tensors)
        return cls(segments, entry["lane_bits"], entry["lanes_per_word"], entry["elements_per_row"])

    @property
    def type(self) -> FixedType:
        """The fixed-point type of a side with a single tensor (every shipped kernel)."""
        (segment,) = self.segments
        return segment.type

    @property
    def lane_dtype(self):
        return np.dtype(f"<u{self.lane_bits // 8}")

    @property
    def float_dtype(self):
        """float32 when it holds every value of every segment exactly, else float64."""
        return np.float32 if all(s.type.width <= 24 for s in self.segments) else np.float64

    def nbytes(self, rows):
        words = -(-rows * self.elements_per_row // self.lanes_per_word)
        return words * WORD_BYTES

    @property
    def packs_in_place(self) -> bool:
        """Whether float32 rows are packed straight from where they lie by the compiled, guarded pass
        (fastpath.wrapped_bits), so a block may be a view of a client's shared memory. Other layouts
        read rows with numpy, which a truncated mapping would crash: those rows must be copies."""
        return len(self.segments) == 1 and self.type.overflow == "WRAP" and self.type.width <= 62

    @property
    def unpacks_in_place(self) -> bool:
        """Whether output rows are unpacked by the compiled, guarded pass (fastpath.float_from_bits), so
        `unpack` may write into a client's shared memory: one float32 tensor (types up to 24 bits)."""
        return len(self.segments) == 1 and self.type.width <= 24

    def pack(self, blocks, buffer):
        """Write blocks of rows ([n_i, elements_per_row] each) one after another into `buffer` (uint8, at
        least nbytes(Σ n_i)); returns the bytes used. UnreadableBlock(i) when block i's memory vanished.

        Float rows are converted to each segment's bit patterns; integer rows already are bit patterns
        (a client that quantized itself, e.g. INT16 for ap_fixed<16,·>) and are masked to their width.
        """
        used = self.nbytes(sum(len(block) for block in blocks))
        lanes = buffer[:used].view(self.lane_dtype)
        at = 0
        for index, block in enumerate(blocks):
            try:
                self._pack_rows(block, lanes[at : at + block.size])
            except MemoryVanished:
                raise UnreadableBlock(index) from None
            at += block.size
        lanes[at:] = 0
        return used

    def _pack_rows(self, rows, lanes):
        if len(self.segments) == 1:  # the common case: one conversion over the whole flat block
            self._pack_segment(self.segments[0].type, rows.reshape(-1), lanes)
            return
        grid = lanes.reshape(len(rows), self.elements_per_row)
        for segment in self.segments:
            grid[:, segment.columns] = self._pack_segment(
                segment.type, rows[:, segment.columns], np.empty((len(rows), segment.size), self.lane_dtype)
            )

    def _pack_segment(self, fixed, values, out):
        if np.issubdtype(values.dtype, np.integer):
            out[...] = values.astype(self.lane_dtype) & self.lane_dtype.type((1 << fixed.width) - 1)
            return out
        return fixed.to_bits(values, out=out)

    def mantissas(self, buffer, rows):
        """The packed rows' mantissas (int64 [rows, elements_per_row]), each segment sign-extended."""
        lanes = buffer[: self.nbytes(rows)].view(self.lane_dtype)[: rows * self.elements_per_row]
        grid = lanes.reshape(rows, self.elements_per_row)
        if len(self.segments) == 1:
            return self.segments[0].type.from_bits(grid)
        out = np.empty((rows, self.elements_per_row), np.int64)
        for segment in self.segments:
            out[:, segment.columns] = segment.type.from_bits(grid[:, segment.columns])
        return out

    def unpack(self, buffer, rows, out=None, first=0):
        """Output rows [first, first + rows) of `buffer` as floats (float_dtype), each element converted
        from its segment's type; into `out` ([rows, elements_per_row] of float_dtype, C-contiguous: a
        slice of a batch's result, or a client's shared memory) when given. MemoryVanished when `out`
        was a client's memory that went under the write (only where unpacks_in_place)."""
        elements = slice(first * self.elements_per_row, (first + rows) * self.elements_per_row)
        lanes = buffer[: self.nbytes(first + rows)].view(self.lane_dtype)[elements]
        if out is None:
            out = np.empty((rows, self.elements_per_row), self.float_dtype)
        if self.unpacks_in_place:
            float_from_bits(lanes, self.type, out)
            return out
        grid = lanes.reshape(rows, self.elements_per_row)
        for segment in self.segments:
            segment.type.to_float(segment.type.from_bits(grid[:, segment.columns]), out=out[:, segment.columns])
        return out


@dataclass(frozen=True)
class BufferLayout:
    rows_per_execution: int
    input: TensorLanes
    output: TensorLanes

    @classmethod
    def from_description(cls, buffers):
        return cls(
            buffers["rows_per_execution"],
            TensorLanes.from_description(buffers["input"]),
            TensorLanes.from_description(buffers["output"]),
        )
