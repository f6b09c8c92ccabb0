"""Fixed-point types as hls4ml writes them ("fixed<16,9,TRN,WRAP,0>") and their arithmetic.

A value of type <W,I> is an integer mantissa m meaning m·2^-(W-I). `requantize` is the C++
assignment between types (or from a double) with every ap_fixed quantization and overflow mode;
the build (weights, buffer layout), the host (packing) and the emulator share it, in numpy (the host
packs wrapping types with a compiled pass that gives the same bits: faast.host.fastpath.wrapped_bits).

Mantissas travel as float64 while they provably fit in 2^52 (exact, and BLAS can multiply them),
float32 below 2^23 where the emulator can prove it (half the memory, twice the BLAS speed), or as
int64 (exact up to 2^62).
"""

import enum
import re
from dataclasses import dataclass

import numpy as np

_TYPE = re.compile(
    r"^(?:ap_)?(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+))?\s*(?:,\s*(\w+))?\s*(?:,\s*(\w+))?"
    r"\s*(?:,\s*(\d+))?\s*>$"
)
FLOAT_EXACT = 2.0**52  # float64 mantissas below this are integers and sums of them are exact
SINGLE_EXACT = 2.0**23  # the same for float32, with room for WRAP's offset arithmetic
INT_EXACT = 2.0**62


class Quantization(enum.Enum):
    """ap_fixed's quantization modes; a member's value is its number in the compiled code."""

    TRN = 0
    TRN_ZERO = 1
    RND = 2
    RND_ZERO = 3
    RND_INF = 4
    RND_MIN_INF = 5
    RND_CONV = 6


class Overflow(enum.Enum):
    """ap_fixed's overflow modes; a member's value is its number in the compiled code."""

    WRAP = 0
    SAT = 1
    SAT_ZERO = 2
    SAT_SYM = 3

    @property
    def saturates(self) -> bool:
        return self in (Overflow.SAT, Overflow.SAT_SYM)


@dataclass(frozen=True)
class FixedType:
    width: int
    integer: int
    signed: bool
    quantization: Quantization = Quantization.TRN
    overflow: Overflow = Overflow.WRAP

    @classmethod
    def parse(cls, text):
        match = _TYPE.match(text.replace("AP_", "").replace(" ", ""))
        if not match:
            raise ValueError(f"not a fixed-point type: {text!r}")
        unsigned, kind, width, integer, quantization, overflow, saturation_bits = match.groups()
        width = int(width)
        integer = width if kind == "int" else int(integer)
        try:
            modes = Quantization[quantization or "TRN"], Overflow[overflow or "WRAP"]
        except KeyError:
            raise ValueError(f"unknown quantization or overflow mode in {text!r}") from None
        if saturation_bits not in (None, "0"):
            raise ValueError(f"{text!r}: saturation bits (the N of ap_fixed<W,I,Q,O,N>) are not supported")
        return cls(width, integer, not unsigned, *modes)

    @property
    def fraction(self):
        return self.width - self.integer

    @property
    def lowest(self):
        """The smallest mantissa."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def highest(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def __str__(self):
        prefix = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{prefix}<{self.width},{self.integer},{self.quantization.name},{self.overflow.name}>"

    def holds(self, lowest, highest):
        """Whether mantissas in [lowest, highest] (at this type's fraction) need no overflow handling."""
        return self.lowest <= lowest and highest <= self.highest

    def requantize(self, mantissas, fraction):
        """Mantissas at `fraction` → this type's mantissas (same dtype), as C++ assignment does:
        quantize the dropped fraction bits by the quantization mode, then the overflow mode."""
        shift = fraction - self.fraction
        if shift > 0:
            mantissas = _round(mantissas, shift, self.quantization)
        elif shift < 0:
            mantissas = mantissas * mantissas.dtype.type(2**-shift)
        return self.saturate(mantissas)

    def quantize(self, values):
        """Floats → mantissas (float64), as assigning a double does: NaN and ±inf count as ±2^1024
        (the sign bit decides), so they wrap to 0 and saturate to an end of the range."""
        values = np.asarray(values, np.float64)
        finite = np.isfinite(values)
        huge = np.where(np.signbit(values), -(2.0**1023), 2.0**1023)
        scaled = np.where(finite, values, 0.0) * 2.0**self.fraction  # exact: a power-of-two scale
        mantissas = _round(scaled, 0, self.quantization)
        if self.overflow is Overflow.WRAP:
            # Beyond 2^(52+W) every kept bit is 0 (this also covers ±2^1024); below, wrap exactly.
            kept = np.abs(mantissas) < 2.0 ** (52 + self.width)
            mantissas = np.where(finite & kept, mantissas, 0.0)
            return self.saturate(mantissas)
        return self.saturate(np.where(finite, mantissas, huge))

    def saturate(self, mantissas):
        """Integral mantissas → this type's range by its overflow mode."""
        low, high = self.lowest, self.highest
        if self.overflow is Overflow.SAT_SYM and self.signed:
            low = -high
        if self.overflow.saturates:
            return np.clip(mantissas, low, high)
        return self._wrap_or_zero(mantissas, low, high)

    def _wrap_or_zero(self, mantissas, low, high):
        if self.overflow is Overflow.WRAP:
            if mantissas.dtype.kind == "f":
                span = 2.0**self.width
                base = mantissas - low if low else mantissas
                return mantissas - span * np.floor(base / span)
            mask = (1 << self.width) - 1
            return ((mantissas - low) & mask) + low
        return np.where((mantissas < low) | (mantissas > high), 0, mantissas).astype(mantissas.dtype)

    def to_bits(self, values, out=None):
        """Floats → the type's bit patterns (uint64, or into the unsigned lanes `out`), as assigning a
        float to it does in C++."""
        mantissas = self.quantize(values)
        bits = (mantissas + 2.0**self.width * (mantissas < 0)).astype(np.uint64)
        if out is None:
            return bits
        out[...] = bits
        return out

    def from_bits(self, bits):
        """Bit patterns (any unsigned ints, extra high bits ignored) → mantissas (int64)."""
        value = np.asarray(bits).astype(np.int64)
        if self.signed:  # shift the sign bit to the top and back: the arithmetic shift extends it
            value <<= 64 - self.width
            value >>= 64 - self.width
        elif self.width < 64:
            value &= (1 << self.width) - 1
        return value

    def to_float(self, mantissas, out):
        """Mantissas → floats in `out` (float32 or float64), as the C++ cast gives: the exact value in
        float64, rounded to nearest once."""
        return np.multiply(mantissas, 2.0**-self.fraction, out=out, dtype=np.float64, casting="unsafe")


def _round(mantissas, shift, mode: Quantization):
    """Drop `shift` fraction bits from integral mantissas by an ap_fixed quantization mode."""
    if mantissas.dtype.kind == "f":
        scaled = mantissas * 2.0**-shift if shift else mantissas  # exact
        if mode is Quantization.TRN:
            return np.floor(scaled)
        if mode is Quantization.RND_CONV:
            return np.rint(scaled)  # ties to even
        if mode is Quantization.TRN_ZERO:
            return np.trunc(scaled)
        floor = np.floor(scaled)
        rest, half = scaled - floor, 0.5
    else:
        floor = mantissas >> shift
        if mode is Quantization.TRN:
            return floor
        rest, half = mantissas & ((1 << shift) - 1), 1 << (shift - 1)
    negative = mantissas < 0
    if mode is Quantization.TRN_ZERO:
        up = (rest != 0) & negative
    elif mode is Quantization.RND:
        up = rest >= half
    elif mode is Quantization.RND_ZERO:
        up = (rest > half) | ((rest == half) & negative)
    elif mode is Quantization.RND_INF:
        up = (rest > half) | ((rest == half) & ~negative)
    elif mode is Quantization.RND_MIN_INF:
        up = rest > half
    else:  # RND_CONV (int64 mantissas)
        up = (rest > half) | ((rest == half) & (floor & 1 == 1))
    return floor + up
