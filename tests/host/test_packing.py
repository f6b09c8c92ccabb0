"""Host packing of rows with several tensors: each tensor's elements at their offset, in their own
fixed-point type, one lane each (tests/host/test_fpga_path.py covers the one-tensor kernels)."""

import numpy as np

from faast.host.fixed import FixedType
from faast.host.packing import TensorLanes

TWO_TENSORS = {
    "lane_bits": 32,
    "lanes_per_word": 16,
    "elements_per_row": 5,
    "tensors": [
        {"name": "a", "type": "ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "bits": 8, "offset": 0, "size": 2},
        {"name": "b", "type": "ap_ufixed<20,12>", "bits": 20, "offset": 2, "size": 3},
    ],
}


def test_each_segment_packs_in_its_own_type_and_comes_back():
    lanes = TensorLanes.from_description(TWO_TENSORS)
    a, b = (FixedType.parse(t["type"]) for t in TWO_TENSORS["tensors"])
    rng = np.random.default_rng(7)
    rows = np.hstack([rng.normal(0, 6, (37, 2)), rng.uniform(-10, 5000, (37, 3))]).astype(np.float32)
    rows[0] = [np.nan, -np.inf, np.inf, -0.0, 1e30]
    buffer = np.zeros(lanes.nbytes(len(rows)), np.uint8)
    used = lanes.pack(rows, buffer)
    assert used == -(-37 * 5 // 16) * 64
    grid = buffer.view("<u4")[: 37 * 5].reshape(37, 5)
    assert np.array_equal(grid[:, :2], a.to_bits(rows[:, :2]))  # segment a: its own type's bit patterns
    assert np.array_equal(grid[:, 2:], b.to_bits(rows[:, 2:]))
    assert not buffer.view("<u4")[37 * 5 :].any()  # the rest of the last word is zero
    mantissas = lanes.mantissas(buffer, len(rows))
    assert np.array_equal(mantissas[:, :2], a.from_bits(a.to_bits(rows[:, :2])))
    assert np.array_equal(mantissas[:, 2:], b.from_bits(b.to_bits(rows[:, 2:])))
    unpacked = lanes.unpack(buffer, len(rows))
    assert unpacked.dtype == np.float32  # 20 bits fit float32 exactly
    assert np.array_equal(unpacked[:, :2], a.to_float(mantissas[:, :2]))
    assert np.array_equal(unpacked[:, 2:], b.to_float(mantissas[:, 2:]))


def test_integer_rows_are_bit_patterns_masked_to_each_segment():
    lanes = TensorLanes.from_description(TWO_TENSORS)
    rows = np.array([[-1, 0x1FF, -1, 0xFFFFF, 0x123456]], np.int64)
    buffer = np.zeros(lanes.nbytes(1), np.uint8)
    lanes.pack(rows, buffer)
    assert buffer.view("<u4")[:5].tolist() == [0xFF, 0xFF, 0xFFFFF, 0xFFFFF, 0x23456]


def test_wide_outputs_unpack_as_float64():
    wide = dict(TWO_TENSORS, tensors=[dict(TWO_TENSORS["tensors"][0], type="ap_fixed<32,8>", bits=32)])
    wide["elements_per_row"] = 2
    lanes = TensorLanes.from_description(wide)
    buffer = np.zeros(lanes.nbytes(1), np.uint8)
    buffer.view("<u4")[:2] = [0x7FFFFFFF, 0x80000001]
    values = lanes.unpack(buffer, 1)
    assert values.dtype == np.float64
    assert values.tolist() == [[(2**31 - 1) / 2**24, (1 - 2**31) / 2**24]]
