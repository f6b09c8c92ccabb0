"""host/fixed.py and the emulator's compiled cast (host/fastpath.py) against Xilinx's ap_fixed (the
headers hls4ml ships): every quantization and overflow mode, signed and unsigned, for assignments
between fixed-point types and from doubles."""

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from faast.contract.fixed import FixedType, Overflow, Quantization
from faast.host import fastpath
from faast.host.fastpath import Requantize

AP_TYPES = Path(importlib.util.find_spec("hls4ml").origin).parent / "templates" / "vivado" / "ap_types"
SOURCE = FixedType(20, 8, True)
TARGETS = [FixedType(6, 3, signed, q, o) for signed in (True, False) for q in Quantization for o in Overflow]
TARGETS += [
    FixedType(5, -1, True, Quantization.RND_CONV, Overflow.SAT),
    FixedType(7, 9, False, Quantization.RND, Overflow.SAT_SYM),
]


def _doubles():
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, -5e-324, 2.0**-1022, 3.999, -4.0, -4.0625]
    grid = np.arange(-600, 600) / 64  # the targets' LSB grids and half-LSB ties (.5 / 8 = 1/16)
    return np.concatenate([special, grid, np.random.default_rng(3).normal(0, 20, 500)])


@pytest.fixture(scope="module")
def cpp_results(tmp_path_factory):
    """Each target type's bit patterns for every source mantissa, then for every double, from C++."""
    folder = tmp_path_factory.mktemp("ap_fixed")
    mantissas = np.concatenate([np.arange(-(2**11), 2**11, 3), [SOURCE.lowest, SOURCE.highest, -1, 0, 1]])
    doubles = ", ".join(
        "std::numeric_limits<double>::quiet_NaN()"
        if np.isnan(d)
        else ("-" if d < 0 else "") + "std::numeric_limits<double>::infinity()"
        if np.isinf(d)
        else float(d).hex()
        for d in _doubles()
    )
    calls = "\n".join(f"    emit<{_cpp(t)}>();" for t in TARGETS)
    (folder / "convert.cpp").write_text(f"""
#include <cstdio>
#include <limits>
#include "ap_fixed.h"
typedef {_cpp(SOURCE)} source_t;
static const long long MANTISSAS[] = {{{", ".join(str(m) for m in mantissas)}}};
static const double DOUBLES[] = {{{doubles}}};
template <class T> void emit() {{
    for (long long m : MANTISSAS) {{
        source_t s;
        s.range({SOURCE.width - 1}, 0) = m;
        T t = s;
        std::printf("%llu\\n", (unsigned long long)t.range(T::width - 1, 0).to_uint64());
    }}
    for (double d : DOUBLES) {{
        T t = d;
        std::printf("%llu\\n", (unsigned long long)t.range(T::width - 1, 0).to_uint64());
    }}
}}
int main() {{
{calls}
}}
""")
    subprocess.run(
        ["g++", "-std=c++17", "-O1", "-w", f"-I{AP_TYPES}", "convert.cpp", "-o", "convert"], cwd=folder, check=True
    )
    output = subprocess.run([folder / "convert"], capture_output=True, text=True, check=True).stdout.split()
    bits = np.array(output, np.uint64).reshape(len(TARGETS), -1)
    return mantissas, {t: (row[: len(mantissas)], row[len(mantissas) :]) for t, row in zip(TARGETS, bits, strict=True)}


def _cpp(fixed):
    prefix = "ap_fixed" if fixed.signed else "ap_ufixed"
    return f"{prefix}<{fixed.width},{fixed.integer},AP_{fixed.quantization.name},AP_{fixed.overflow.name}>"


def _bits(fixed, mantissas):
    return (np.asarray(mantissas).astype(np.int64) & ((1 << fixed.width) - 1)).astype(np.uint64)


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_assignment_between_types_matches_ap_fixed(cpp_results, target):
    mantissas, expected = cpp_results
    for dtype in (np.int64, np.float64):  # the emulator's two exact representations
        result = target.requantize(mantissas.astype(dtype), SOURCE.fraction)
        assert result.dtype == dtype
        assert np.array_equal(_bits(target, result), expected[target][0]), f"{np.dtype(dtype).name} differs"


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_compiled_assignment_matches_ap_fixed(cpp_results, target):
    """The emulator's one-pass cast: from each exact representation into float32 and float64."""
    mantissas, expected = cpp_results
    cast = Requantize(1, 0.0, prescale=2.0 ** (target.fraction - SOURCE.fraction), fixed=target)
    for source in (np.int64, np.float32, np.float64):
        for result in (np.float32, np.float64):
            values = mantissas.astype(source)[:, None]
            out = cast(values, np.empty(values.shape, result))
            assert np.array_equal(_bits(target, out[:, 0]), expected[target][0]), (
                f"{source.__name__} → {result.__name__}"
            )


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_assignment_from_double_matches_ap_fixed(cpp_results, target):
    _, expected = cpp_results
    assert np.array_equal(target.to_bits(_doubles()), expected[target][1])
    lanes = target.to_bits(_doubles(), out=np.empty(len(_doubles()), np.uint8))  # the host packs into lanes
    assert np.array_equal(lanes, expected[target][1].astype(np.uint8))
    if target.overflow is Overflow.WRAP:  # the host packs wrapping types with the compiled pass instead
        compiled = fastpath.wrapped_bits(_doubles(), target, np.empty(len(_doubles()), np.uint64))
        assert np.array_equal(compiled, expected[target][1])
    with np.errstate(over="ignore"):
        singles = _doubles().astype(np.float32)  # what clients send: the same bits as their float64 values
    assert np.array_equal(target.to_bits(singles), target.to_bits(singles.astype(np.float64)))


def test_every_mode_is_exercised_with_differences():
    """The modes must disagree somewhere on these inputs, or the tests above would prove little."""
    values = _doubles()[np.isfinite(_doubles())]
    by_mode = {q: FixedType(6, 3, True, q, Overflow.SAT).to_bits(values).tobytes() for q in Quantization}
    assert len(set(by_mode.values())) == len(Quantization)
    by_overflow = {o: FixedType(6, 3, True, Quantization.TRN, o).to_bits(values).tobytes() for o in Overflow}
    assert len(set(by_overflow.values())) == len(Overflow)
