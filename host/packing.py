"""Host packing, one code path for C simulation and cards: float rows → fixed-point bit patterns →
lanes of 512-bit words, and output words → float rows. Vectorized with numpy.

Elements are packed row after row with no gaps; lane k of word w holds element w·lanes + k. The
words are little-endian, so a flat array of lane-sized integers *is* the word buffer.
"""

from dataclasses import dataclass

import numpy as np

from .fixed import FixedType

WORD_BYTES = 64


@dataclass(frozen=True)
class TensorLanes:
    type: FixedType
    lane_bits: int
    lanes_per_word: int
    elements_per_row: int

    @classmethod
    def from_description(cls, entry):
        return cls(
            FixedType.parse(entry["type"]), entry["lane_bits"], entry["lanes_per_word"], entry["elements_per_row"]
        )

    @property
    def lane_dtype(self):
        return np.dtype(f"<u{self.lane_bits // 8}")

    def nbytes(self, rows):
        words = -(-rows * self.elements_per_row // self.lanes_per_word)
        return words * WORD_BYTES

    def pack(self, rows, buffer):
        """Write rows into `buffer` (uint8, at least nbytes(len(rows))); returns the bytes used.

        Float rows are converted to the type's bit patterns; integer rows already are bit patterns
        (a client that quantized itself, e.g. INT16 for ap_fixed<16,·>) and are copied as they are.
        """
        used = self.nbytes(len(rows))
        lanes = buffer[:used].view(self.lane_dtype)
        count = rows.size
        if np.issubdtype(rows.dtype, np.integer):
            mask = (1 << self.type.width) - 1
            lanes[:count] = rows.reshape(-1).astype(self.lane_dtype) & self.lane_dtype.type(mask)
        else:
            self.type.to_bits(rows.reshape(-1), out=lanes[:count])
        lanes[count:] = 0
        return used

    def unpack(self, buffer, rows):
        lanes = buffer[: self.nbytes(rows)].view(self.lane_dtype)[: rows * self.elements_per_row]
        return self.type.to_float(self.type.from_bits(lanes)).reshape(rows, self.elements_per_row)


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
