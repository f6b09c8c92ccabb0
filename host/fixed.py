"""Fixed-point types as hls4ml writes them ("fixed<16,9,TRN,WRAP,0>") and their bit patterns.

Shared by the build (buffer layout) and the host runtime (packing); numpy only.
"""

import re
from dataclasses import dataclass

import numpy as np

_TYPE = re.compile(r"^(?:ap_)?(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+))?\s*(?:,\s*(\w+))?\s*(?:,\s*(\w+))?[^>]*>$")


@dataclass(frozen=True)
class FixedType:
    width: int
    integer: int
    signed: bool
    quantization: str = "TRN"
    overflow: str = "WRAP"

    @classmethod
    def parse(cls, text):
        match = _TYPE.match(text.replace("AP_", ""))
        if not match:
            raise ValueError(f"not a fixed-point type: {text!r}")
        unsigned, kind, width, integer, quantization, overflow = match.groups()
        width = int(width)
        integer = width if kind == "int" else int(integer)
        return cls(width, integer, not unsigned, quantization or "TRN", overflow or "WRAP")

    @property
    def fraction(self):
        return self.width - self.integer

    def __str__(self):
        prefix = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{prefix}<{self.width},{self.integer},{self.quantization},{self.overflow}>"

    def to_bits(self, values):
        """Floats → the type's bit patterns (uint64), as assigning a float to it does in C++.

        Supported for TRN/WRAP types (hls4ml's default for inputs): floor to the LSB, then keep the
        low `width` bits. NaN and ±inf become 0, as the C++ conversion gives.
        """
        if (self.quantization, self.overflow) != ("TRN", "WRAP"):
            raise ValueError(f"host conversion supports TRN/WRAP input types, not {self}")
        scaled = np.floor(np.asarray(values, np.float64) * 2.0**self.fraction)  # exact for float32 inputs
        with np.errstate(invalid="ignore"):
            bits = np.fmod(scaled, 2.0**self.width)  # exact, keeps the sign; NaN for non-finite
        bits = np.where(bits < 0, bits + 2.0**self.width, bits)
        bits = np.where(np.isfinite(scaled), bits, 0.0)
        return bits.astype(np.uint64)

    def from_bits(self, bits):
        """Bit patterns (any unsigned ints, extra high bits ignored) → float32, as the C++ cast gives."""
        value = np.asarray(bits, np.uint64) & np.uint64((1 << self.width) - 1)
        value = value.astype(np.int64)
        if self.signed:
            value -= (value >> (self.width - 1) & 1) << self.width
        return (value.astype(np.float64) * 2.0**-self.fraction).astype(np.float32)


def lane_bits(width):
    """The narrowest power-of-two lane (8..64 bits) that holds a value of `width` bits."""
    for bits in (8, 16, 32, 64):
        if width <= bits:
            return bits
    raise ValueError(f"fixed-point values wider than 64 bits ({width}) cannot be packed")
