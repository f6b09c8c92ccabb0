"""The kernel's buffer layout: how rows of tensors lie in the words a kernel execution reads and
writes. `faast build` computes it (faast.kernels.vitis), kernel.json carries it, and the host packs
by it (faast.host.packing) as the kernel top unpacks by it.

A buffer carries one row per kernel input (or output) row: the elements of every tensor of that
side, in kernel.json's order, each tensor a `Segment` with its own fixed-point type. Elements are
packed row after row with no gaps, one per lane whatever their tensor (the lane is wide enough for
the widest type); lane k of word w holds element w·lanes + k. The words are little-endian, so a
flat array of lane-sized integers *is* the word buffer.
"""

from dataclasses import dataclass

import numpy as np

from .fixed import FixedType, Overflow

WORD_BITS = 512  # one AXI beat of the kernel's memory interface
WORD_BYTES = WORD_BITS // 8


def lane_bits(width: int) -> int:
    """The narrowest power-of-two lane (8..64 bits) that holds a value of `width` bits."""
    for bits in (8, 16, 32, 64):
        if width <= bits:
            return bits
    raise ValueError(f"fixed-point values wider than 64 bits ({width}) cannot be packed")


@dataclass(frozen=True)
class Segment:
    """One tensor's elements within a packed row: columns [offset, offset + size) of its type."""

    name: str
    type: FixedType
    offset: int
    size: int

    @property
    def columns(self) -> slice:
        return slice(self.offset, self.offset + self.size)


@dataclass(frozen=True)
class TensorLanes:
    """One side (inputs or outputs) of a kernel row in lanes."""

    segments: tuple[Segment, ...]
    lane_bits: int
    lanes_per_word: int
    elements_per_row: int

    @classmethod
    def of(cls, segments: list[tuple[str, FixedType, int]]) -> "TensorLanes":
        """The lanes of tensors (name, type, elements per row) side by side, in that order."""
        lane = max(lane_bits(fixed.width) for _, fixed, _ in segments)
        offsets = [sum(size for _, _, size in segments[:i]) for i in range(len(segments))]
        return cls(
            tuple(
                Segment(name, fixed, offset, size)
                for (name, fixed, size), offset in zip(segments, offsets, strict=True)
            ),
            lane,
            WORD_BITS // lane,
            sum(size for _, _, size in segments),
        )

    @classmethod
    def from_json(cls, entry: dict) -> "TensorLanes":
        segments = tuple(
            Segment(t["name"], FixedType.parse(t["type"]), t["offset"], t["size"]) for t in entry["tensors"]
        )
        return cls(segments, entry["lane_bits"], entry["lanes_per_word"], entry["elements_per_row"])

    def to_json(self) -> dict:
        return {
            "lane_bits": self.lane_bits,
            "lanes_per_word": self.lanes_per_word,
            "elements_per_row": self.elements_per_row,
            "tensors": [
                {"name": s.name, "type": str(s.type), "bits": s.type.width, "offset": s.offset, "size": s.size}
                for s in self.segments
            ],
        }

    @property
    def type(self) -> FixedType:
        """The fixed-point type of a side with a single tensor (every shipped kernel)."""
        (segment,) = self.segments
        return segment.type

    @property
    def lane_dtype(self) -> np.dtype:
        return np.dtype(f"<u{self.lane_bits // 8}")

    @property
    def float_dtype(self) -> np.dtype:
        """float32 when it holds every value of every segment exactly, else float64."""
        return np.dtype(np.float32 if all(s.type.width <= 24 for s in self.segments) else np.float64)

    def nbytes(self, rows: int) -> int:
        words = -(-rows * self.elements_per_row // self.lanes_per_word)
        return words * WORD_BYTES

    @property
    def packs_in_place(self) -> bool:
        """Whether float32 rows are packed straight from where they lie by the compiled, guarded pass
        (fastpath.wrapped_bits), so a block may be a client's memory. Other layouts read rows with
        numpy, which a truncated mapping would crash: those rows must be copies."""
        return len(self.segments) == 1 and self.type.overflow is Overflow.WRAP and self.type.width <= 62

    @property
    def unpacks_in_place(self) -> bool:
        """Whether output rows are unpacked by the compiled, guarded pass (fastpath.float_from_bits), so
        they may be written into a client's memory: one float32 tensor (types up to 24 bits)."""
        return len(self.segments) == 1 and self.type.width <= 24


@dataclass(frozen=True)
class BufferLayout:
    """Both sides of a kernel execution's buffers, and the most rows one execution takes."""

    rows_per_execution: int
    input: TensorLanes
    output: TensorLanes

    @classmethod
    def from_json(cls, buffers: dict) -> "BufferLayout":
        return cls(
            buffers["rows_per_execution"],
            TensorLanes.from_json(buffers["input"]),
            TensorLanes.from_json(buffers["output"]),
        )

    def to_json(self) -> dict:
        return {
            "word_bits": WORD_BITS,
            "rows_per_execution": self.rows_per_execution,
            "input": self.input.to_json(),
            "output": self.output.to_json(),
        }
