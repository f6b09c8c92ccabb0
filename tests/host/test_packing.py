"""Host packing of rows with several tensors: each tensor's elements at their offset, in their own
fixed-point type, one lane each (tests/host/test_fpga_path.py covers the one-tensor kernels)."""

import mmap
import os

import numpy as np
import pytest

from faast.contract.errors import MemoryVanished
from faast.contract.fixed import FixedType
from faast.contract.layout import TensorLanes
from faast.contract.memory import ClientMemory
from faast.host import packing
from faast.host.packing import UnreadableBlock

TWO_TENSORS = {
    "lane_bits": 32,
    "lanes_per_word": 16,
    "elements_per_row": 5,
    "tensors": [
        {"name": "a", "type": "ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "bits": 8, "offset": 0, "size": 2},
        {"name": "b", "type": "ap_ufixed<20,12>", "bits": 20, "offset": 2, "size": 3},
    ],
}


def _tensor(fixed, size):
    return {"name": "y", "type": fixed, "offset": 0, "size": size}


def test_each_segment_packs_in_its_own_type_and_comes_back():
    lanes = TensorLanes.from_json(TWO_TENSORS)
    a, b = (FixedType.parse(t["type"]) for t in TWO_TENSORS["tensors"])
    rng = np.random.default_rng(7)
    rows = np.hstack([rng.normal(0, 6, (37, 2)), rng.uniform(-10, 5000, (37, 3))]).astype(np.float32)
    rows[0] = [np.nan, -np.inf, np.inf, -0.0, 1e30]
    buffer = np.zeros(lanes.nbytes(len(rows)), np.uint8)
    used = packing.pack(lanes, [rows], buffer)
    assert used == -(-37 * 5 // 16) * 64
    grid = buffer.view("<u4")[: 37 * 5].reshape(37, 5)
    assert np.array_equal(grid[:, :2], a.to_bits(rows[:, :2]))  # segment a: its own type's bit patterns
    assert np.array_equal(grid[:, 2:], b.to_bits(rows[:, 2:]))
    assert not buffer.view("<u4")[37 * 5 :].any()  # the rest of the last word is zero
    mantissas = packing.mantissas(lanes, buffer, len(rows))
    assert np.array_equal(mantissas[:, :2], a.from_bits(a.to_bits(rows[:, :2])))
    assert np.array_equal(mantissas[:, 2:], b.from_bits(b.to_bits(rows[:, 2:])))
    unpacked = packing.unpack(lanes, buffer, len(rows))
    assert unpacked.dtype == np.float32  # 20 bits fit float32 exactly
    assert np.array_equal(unpacked[:, :2], (mantissas[:, :2] / 2.0**a.fraction).astype(np.float32))
    assert np.array_equal(unpacked[:, 2:], (mantissas[:, 2:] / 2.0**b.fraction).astype(np.float32))
    into = np.full((40, 5), -1.0, np.float32)
    assert packing.unpack(lanes, buffer, len(rows), out=into[3:]) is not None
    assert np.array_equal(into[3:], unpacked) and (into[:3] == -1).all()  # written in place, nothing else


def test_blocks_pack_as_their_concatenation():
    lanes = TensorLanes.from_json(TWO_TENSORS)
    rng = np.random.default_rng(8)
    blocks = [rng.normal(0, 40, (n, 5)).astype(np.float32) for n in (1, 6, 0, 13)]
    apart, together = (np.zeros(lanes.nbytes(20), np.uint8) for _ in range(2))
    assert packing.pack(lanes, blocks, apart) == packing.pack(lanes, [np.concatenate(blocks)], together)
    assert np.array_equal(apart, together)


def test_integer_rows_are_bit_patterns_masked_to_each_segment():
    lanes = TensorLanes.from_json(TWO_TENSORS)
    rows = np.array([[-1, 0x1FF, -1, 0xFFFFF, 0x123456]], np.int64)
    buffer = np.zeros(lanes.nbytes(1), np.uint8)
    packing.pack(lanes, [rows], buffer)
    assert buffer.view("<u4")[:5].tolist() == [0xFF, 0xFF, 0xFFFFF, 0xFFFFF, 0x23456]


def test_wide_outputs_unpack_as_float64():
    wide = dict(TWO_TENSORS, tensors=[dict(TWO_TENSORS["tensors"][0], type="ap_fixed<32,8>", bits=32)])
    wide["elements_per_row"] = 2
    lanes = TensorLanes.from_json(wide)
    buffer = np.zeros(lanes.nbytes(1), np.uint8)
    buffer.view("<u4")[:2] = [0x7FFFFFFF, 0x80000001]
    values = packing.unpack(lanes, buffer, 1)
    assert values.dtype == np.float64
    assert values.tolist() == [[(2**31 - 1) / 2**24, (1 - 2**31) / 2**24]]


def test_a_block_truncated_under_the_read_is_named_and_the_process_lives(tmp_path):
    """A block that views a client's shared memory: the client truncating it makes the pack name that
    block (the guard in fastpath.cpp catches the SIGBUS), and packing works on afterwards."""
    lanes = TensorLanes.from_json(
        {
            "lane_bits": 16,
            "lanes_per_word": 32,
            "elements_per_row": 15,
            "tensors": [{"name": "x", "type": "fixed<16,9,TRN,WRAP,0>", "offset": 0, "size": 15}],
        }
    )
    assert lanes.packs_in_place
    path = f"/dev/shm/faast_test_packing_{os.getpid()}"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        size = 4096 * 15 * 4  # 4096 rows of 15 floats
        os.ftruncate(descriptor, size)
        # Not closed here: the views (and the traceback below) keep it mapped; it goes with them.
        shared = ClientMemory(
            np.frombuffer(mmap.mmap(descriptor, size, prot=mmap.PROT_READ), np.float32).reshape(-1, 15)
        )
        good = np.arange(15 * 3, dtype=np.float32).reshape(3, 15)
        buffer = np.zeros(lanes.nbytes(len(shared) + 3), np.uint8)
        packing.pack(lanes, [good, shared], buffer)  # whole: packed in place
        os.ftruncate(descriptor, 4096)  # the client shrinks its object under the next read
        with pytest.raises(UnreadableBlock) as caught:
            packing.pack(lanes, [good, shared], buffer)
        assert caught.value.index == 1
        reference = np.zeros(lanes.nbytes(3), np.uint8)
        packing.pack(lanes, [good], buffer)
        packing.pack(lanes, [good], reference)
        assert np.array_equal(buffer[: len(reference)], reference)
    finally:
        os.close(descriptor)
        os.unlink(path)


@pytest.mark.parametrize(
    "fixed, lane_bits",
    [
        ("fixed<16,6,TRN,WRAP,0>", 16),
        ("ufixed<12,4,TRN,WRAP,0>", 16),
        ("fixed<24,10,TRN,WRAP,0>", 32),
        ("fixed<7,2,TRN,WRAP,0>", 8),
    ],
)
def test_one_tensor_unpacks_with_the_compiled_pass_as_the_type_converts(fixed, lane_bits):
    """Outputs of one float32 tensor unpack with fastpath.float_from_bits (which may write a client's
    shared memory): equal to FixedType's own conversion, high lane bits ignored, from any first row."""
    lanes = TensorLanes.from_json(
        {
            "lane_bits": lane_bits,
            "lanes_per_word": 512 // lane_bits,
            "elements_per_row": 3,
            "tensors": [{"name": "y", "type": fixed, "offset": 0, "size": 3}],
        }
    )
    assert lanes.unpacks_in_place and lanes.float_dtype == np.float32
    rows = 41
    buffer = np.random.default_rng(5).integers(0, 256, lanes.nbytes(rows), dtype=np.uint8)  # junk high bits too
    grid = buffer.view(lanes.lane_dtype)[: rows * 3].reshape(rows, 3)
    expected = lanes.type.to_float(lanes.type.from_bits(grid), out=np.empty((rows, 3), np.float32))
    assert np.array_equal(packing.unpack(lanes, buffer, rows), expected)
    into = np.full((rows + 4, 3), -1.0, np.float32)
    packing.unpack(lanes, buffer, 9, out=into[2:11], first=30)
    assert np.array_equal(into[2:11], expected[30:39])
    assert (into[:2] == -1).all() and (into[11:] == -1).all()


def test_an_output_mapping_truncated_under_the_unpack_is_reported_and_survived():
    """Unpacking straight into a client's shared memory that shrinks under the write raises
    MemoryVanished instead of SIGBUS (pytest's faulthandler is on: a fault would end this process)."""
    lanes = TensorLanes.from_json(
        {
            "lane_bits": 16,
            "lanes_per_word": 32,
            "elements_per_row": 1,
            "tensors": [{"name": "y", "type": "fixed<16,6,TRN,WRAP,0>", "offset": 0, "size": 1}],
        }
    )
    rows = 16000
    buffer = np.random.default_rng(3).integers(0, 256, lanes.nbytes(rows), dtype=np.uint8)
    path = f"/dev/shm/faast_test_unpacking_{os.getpid()}"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(descriptor, rows * 4)
        shared = ClientMemory(np.frombuffer(mmap.mmap(descriptor, rows * 4), np.float32).reshape(rows, 1))
        packing.unpack(lanes, buffer, rows, out=shared)
        assert np.array_equal(np.fromfile(path, np.float32).reshape(rows, 1), packing.unpack(lanes, buffer, rows))
        os.ftruncate(descriptor, 4096)  # the client shrinks its object under the next write
        with pytest.raises(MemoryVanished):
            packing.unpack(lanes, buffer, rows, out=shared)
        assert np.array_equal(
            packing.unpack(lanes, buffer, 5), packing.unpack(lanes, buffer, rows)[:5]
        )  # unpacking goes on
    finally:
        os.close(descriptor)
        os.unlink(path)
