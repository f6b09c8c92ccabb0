"""The emulator device against the C simulation of the same kernel: bit for bit, on inputs chosen to
reach every edge (LSB grid, wrapping and saturating values, ±0, huge values, inf, NaN)."""

import json
import shutil
import subprocess
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import BIN, HLS4ML_TRACE, PYTHON, ROOT

from faast.contract.fixed import FixedType
from faast.contract.memory import ClientMemory
from faast.host import fastpath
from faast.host.drivers import open_device

# A FACILE whose types lose bits everywhere hls4ml can lose them: products truncated into narrow
# accumulators that wrap or saturate, rounding and saturating casts in every mode.
NARROW_PRECISIONS = """
[hls4ml.precision.features]
result = "ap_fixed<16,9>"
[hls4ml.precision.dense1]
accum = "ap_fixed<16,6>"                       # narrower than the products: each is truncated, sums wrap
result = "ap_fixed<16,6>"
[hls4ml.precision.bn1]
scale = "ap_fixed<18,4>"
bias = "ap_fixed<18,8>"
result = "ap_fixed<12,4,AP_RND,AP_SAT>"
[hls4ml.precision.relu1]
result = "ap_ufixed<8,3,AP_RND_CONV,AP_SAT>"
[hls4ml.precision.dense2]
accum = "ap_fixed<14,5,AP_TRN,AP_SAT>"         # a saturating accumulator: C loop order matters
result = "ap_fixed<12,5,AP_RND_ZERO,AP_SAT_SYM>"
[hls4ml.precision.bn2]
result = "ap_fixed<10,3,AP_RND_INF,AP_SAT_ZERO>"
[hls4ml.precision.relu2]
result = "ap_ufixed<8,4,AP_RND_MIN_INF,AP_WRAP>"
[hls4ml.precision.dense3]
accum = "ap_fixed<18,8,AP_TRN_ZERO,AP_WRAP>"
result = "ap_fixed<16,6,AP_TRN_ZERO,AP_SAT>"
[hls4ml.precision.bn3]
result = "ap_fixed<12,6,AP_RND_CONV,AP_WRAP>"
[hls4ml.precision.energy]
result = "ap_fixed<24,12>"
[hls4ml.precision.energy_linear]
result = "ap_fixed<24,12>"

"""


SIGMOID_PRECISIONS = """
[hls4ml.precision.energy]
result = "ap_fixed<12,4>"
[hls4ml.precision.energy_linear]
result = "ap_fixed<12,4>"
[hls4ml.precision.probability]
result = "ap_ufixed<10,0,AP_RND,AP_SAT>"

"""


def edge_inputs(typical, input_type, count, seed):
    """`count` rows: typical channels, channels ×10 and ×100 (saturating deeper layers), values on and
    half an LSB beside the input type's grid, both ends of its range and far beyond (wrapping), and
    one element in five of a quarter of the rows replaced by ±0, ±inf, NaN or a huge value."""
    rng = np.random.default_rng(seed)
    columns = typical.shape[1]
    lsb, top = 2.0**-input_type.fraction, 2.0 ** (input_type.integer - 1)
    parts = [typical[rng.integers(0, len(typical), count // 5)] * scale for scale in (1, 10, 100)]
    grid = rng.integers(-top / lsb, top / lsb, (count // 5, columns)) * lsb
    parts.append(grid + rng.choice([0.0, lsb / 2, -lsb / 2, lsb * 0.999, -1e-30], grid.shape))
    parts.append(rng.uniform(-4 * top, 4 * top, (count - 4 * (count // 5), columns)))
    rows = np.concatenate(parts).astype(np.float32)
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, top, -top, top - lsb, -top - lsb], np.float32
    )
    chosen = rng.random(rows.shape) < 0.05
    rows[chosen] = rng.choice(special, np.count_nonzero(chosen))
    return rows


def assert_bit_equal(emulated, simulated):
    assert emulated.shape == simulated.shape
    differ = np.count_nonzero(emulated.view(np.uint32) != simulated.view(np.uint32))
    assert differ == 0, f"{differ} of {emulated.size} outputs differ"


def compare_devices(version_dir, inputs):
    emulator, csim = open_device("emulator", version_dir), open_device("csim", version_dir)
    try:
        emulated = emulator.run(inputs)
        assert_bit_equal(emulated, csim.run(inputs))
        return emulated
    finally:
        emulator.close()
        csim.close()


def test_facile_emulator_equals_csim(model_repository, facile_inputs):
    version_dir = model_repository / "facile" / "1"
    input_type = open_device("emulator", version_dir).kernel.layout.input.type
    inputs = edge_inputs(facile_inputs[0], input_type, 24000, seed=11)
    outputs = compare_devices(version_dir, inputs)
    assert len(np.unique(outputs)) > 1000  # not a constant answer


@pytest.mark.slow  # builds with hls4ml, compiles the C simulation
def test_narrow_facile_emulator_equals_csim(tmp_path, facile_inputs):
    kernel = tmp_path / "facile_narrow"
    shutil.copytree(ROOT / "kernels" / "facile", kernel)
    toml = (kernel / "kernel.toml").read_text().replace('name = "facile"', 'name = "facile_narrow"')
    shipped = toml[toml.index("[hls4ml.precision.") : toml.index("[validation]")]
    (kernel / "kernel.toml").write_text(toml.replace(shipped, NARROW_PRECISIONS))
    subprocess.run([BIN / "faast", "build", kernel, "--out", tmp_path / "repository"], check=True)
    version_dir = tmp_path / "repository" / "facile_narrow" / "1"
    input_type = open_device("emulator", version_dir).kernel.layout.input.type
    outputs = compare_devices(version_dir, edge_inputs(facile_inputs[0], input_type, 24000, seed=12))
    assert len(np.unique(outputs)) > 100


@pytest.mark.slow  # builds with hls4ml, compiles the C simulation
def test_sigmoid_emulator_equals_csim(tmp_path, facile_inputs):
    """hls4ml's table sigmoid after FACILE's output, narrowed to wrap into [-8, 8): every table entry
    and both clamped ends are reached."""
    kernel = tmp_path / "facile_sigmoid"
    shutil.copytree(ROOT / "kernels" / "facile", kernel)
    model = (kernel / "model.py").read_text()
    end = '    return models.Model(inputs, outputs, name="facile")'
    (kernel / "model.py").write_text(
        model.replace(end, '    outputs = layers.Activation("sigmoid", name="probability")(outputs)\n' + end)
    )
    toml = (kernel / "kernel.toml").read_text().replace('name = "facile"', 'name = "facile_sigmoid"')
    output = toml[toml.index("[hls4ml.precision.energy]") : toml.index("[validation]")]
    (kernel / "kernel.toml").write_text(toml.replace(output, SIGMOID_PRECISIONS))
    subprocess.run([BIN / "faast", "build", kernel, "--out", tmp_path / "repository"], check=True)
    version_dir = tmp_path / "repository" / "facile_sigmoid" / "1"
    emulator = open_device("emulator", version_dir)
    assert "sigmoid" in [layer.text("activation", None) for layer in emulator.kernel.layers]
    input_type = emulator.kernel.layout.input.type
    emulator.close()
    outputs = compare_devices(version_dir, edge_inputs(facile_inputs[0], input_type, 24000, seed=13))
    assert len(np.unique(outputs)) > 200 and outputs.min() < 0.01 and outputs.max() > 0.99


@pytest.mark.parametrize("rows", [1, 16000])
def test_served_emulator_equals_csim(server, model_repository, facile_inputs, rows):
    client = server.client  # the session server serves FACILE with device auto: the emulator
    inputs = edge_inputs(facile_inputs[0], FixedType.parse("ap_fixed<16,9>"), max(rows, 5), seed=rows)[:rows]
    tensor = grpcclient.InferInput("input", list(inputs.shape), "FP32")
    tensor.set_data_from_numpy(inputs)
    served = client.infer("facile", [tensor]).as_numpy("output")
    csim = open_device("csim", model_repository / "facile" / "1")
    try:
        assert_bit_equal(served, csim.run(inputs))
    finally:
        csim.close()


def test_small_runs_happen_in_the_callers_thread_only_on_an_idle_device(model_repository, facile_inputs):
    """The event loop runs a batch of up to inline_rows itself (Device.run_small) when nothing else
    runs on the device; anything larger, or anything while another call is under way, is handed off."""
    emulator = open_device("emulator", model_repository / "facile" / "1", 1)
    try:
        rows = facile_inputs[0][: emulator.inline_rows + 1].astype(np.float32)
        assert emulator.inline_rows >= 64
        small = emulator.run_small([rows[:5], rows[5:40]])
        assert small is not None and np.array_equal(np.concatenate(small), emulator.run(rows[:40]))
        assert emulator.run_small([rows]) is None  # one row too many
        (unit,) = emulator.compute_units
        entered, release = threading.Event(), threading.Event()
        execute = unit.execute

        def held(*args):
            entered.set()
            release.wait(30)
            execute(*args)

        unit.execute = held
        busy = threading.Thread(target=emulator.run, args=(rows,))
        busy.start()
        assert entered.wait(30)
        assert emulator.run_small([rows[:1]]) is None  # a call is under way: not here, not now
        release.set()
        busy.join(30)
        unit.execute = execute
        assert emulator.run_small([rows[:1]]) is not None
    finally:
        emulator.close()


def test_outputs_unpack_straight_into_their_destinations(model_repository, facile_inputs):
    """Device.run_blocks with destinations (how a client's shared memory gets its outputs): the blocks that
    have one are answered by that very array, filled as the blocks' own run would, across executions
    on two compute units; the others get their rows of one result, as without destinations."""
    emulator = open_device("emulator", model_repository / "facile" / "1", 2)
    try:
        rows = facile_inputs[0][:3000].astype(np.float32)
        blocks = [rows[:700], rows[700:1700], rows[1700:]]  # two executions of 1500 rows: block 1 spans both
        expected = emulator.run(rows)
        memory = [np.full((1000, 1), np.nan, np.float32), np.full((1300, 1), np.nan, np.float32)]
        into = [None, *(ClientMemory(array) for array in memory)]
        outputs = emulator.run_blocks(blocks, into=into)
        assert outputs[1] is into[1] and outputs[2] is into[2]
        assert isinstance(outputs[0], np.ndarray)
        assert_bit_equal(np.concatenate([outputs[0], *memory]), expected)
        assert emulator.usage()[0] == 4  # two runs of two executions, each unit one per run
        with pytest.raises(ValueError, match="destination"):
            emulator.run_blocks(blocks, into=[None, ClientMemory(np.empty((999, 1), np.float32)), None])
    finally:
        emulator.close()


def _cnn(tmp_path, io_type, strategy="Latency", softmax="stable"):
    """The test CNN (tests/kernels/cnn: Conv2D, BN, ReLU, pooling, Add, global pooling, softmax) built for
    io_type, strategy (Resource stores the weights transposed) and softmax implementation."""
    kernel = tmp_path / f"cnn_{io_type}"
    shutil.copytree(ROOT / "tests" / "kernels" / "cnn", kernel)
    toml = (kernel / "kernel.toml").read_text().replace('io_type = "io_stream"', f'io_type = "{io_type}"')
    toml = toml.replace('strategy = "Latency"', f'strategy = "{strategy}"')
    (kernel / "kernel.toml").write_text(toml + f'\n[hls4ml.layer.softmax]\nImplementation = "{softmax}"\n')
    subprocess.run([BIN / "faast", "build", kernel, "--out", tmp_path / "repository"], check=True)
    return kernel, tmp_path / "repository" / "cnn" / "1"


def _images(count, seed):
    typical = np.random.default_rng(seed).normal(0, 4, (count, 8 * 8 * 2)).astype(np.float32)
    return edge_inputs(typical, FixedType.parse("ap_fixed<16,6>"), count, seed)


@pytest.mark.parametrize(
    "io_type, strategy, softmax",
    [
        ("io_stream", "Latency", "stable"),
        ("io_parallel", "Latency", "stable"),
        ("io_stream", "Resource", "stable"),
        ("io_parallel", "Latency", "latency"),
        ("io_parallel", "Latency", "legacy"),
    ],
)
@pytest.mark.slow  # builds with hls4ml, compiles the C simulation
def test_cnn_emulator_equals_csim(tmp_path, io_type, strategy, softmax):
    _, version_dir = _cnn(tmp_path, io_type, strategy, softmax)
    layers = json.loads((version_dir / "kernel.json").read_text())["layers"]
    assert [layer["attributes"]["implementation"] for layer in layers if layer["class"] == "Softmax"] == [softmax]
    outputs = compare_devices(version_dir, _images(3000, seed=5))
    assert len(np.unique(outputs, axis=0)) > 500


@pytest.mark.slow  # builds with hls4ml, compiles the C simulation
def test_cnn_layers_equal_hls4ml_trace(tmp_path):
    """Layer by layer, the emulator's values equal hls4ml's own C simulation trace."""
    kernel, version_dir = _cnn(tmp_path, "io_stream")
    images = _images(300, seed=6)
    np.save(tmp_path / "x.npy", images)
    subprocess.run(
        [
            *PYTHON,
            HLS4ML_TRACE,
            kernel,
            tmp_path / "trace_project",
            tmp_path / "x.npy",
            tmp_path / "trace.npz",
        ],
        check=True,
    )
    trace = dict(np.load(tmp_path / "trace.npz"))
    emulator = open_device("emulator", version_dir)
    layout = emulator.kernel.layout
    program = emulator.compute_units[0].program
    names = [layer.name for layer in emulator.kernel.layers if layer.name in trace]
    values = program.trace(layout.input.type.from_bits(layout.input.type.to_bits(images)), names)
    assert {"conv1", "bn1", "relu1", "pool1", "conv2", "add", "pool2", "gap", "dense", "softmax"} <= set(names)
    for name in names:
        emulated = values[name].reshape(len(images), -1).astype(np.float32)
        traced = trace[name].reshape(len(images), -1)
        assert np.array_equal(emulated, traced), f"layer {name}: {np.count_nonzero(emulated != traced)} values differ"
    emulator.close()
    csim = open_device("csim", version_dir)  # the Vitis kernel top answers the network's last layer
    assert np.array_equal(csim.run(images), trace["softmax"].reshape(len(images), -1))
    csim.close()


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_compiled_windows_and_convolution_equal_numpy(dtype):
    """The emulator's one-copy convolution windows and its direct convolution (filters not a multiple
    of its 8-filter blocks, widths not of its 4-pixel blocks): asymmetric padding, strides, every dtype."""
    rng = np.random.default_rng(7)
    image = rng.integers(-(2**20), 2**20, (3, 9, 7, 5)).astype(dtype)
    for size, stride, pads in [
        ((3, 3), (1, 1), ((1, 1), (1, 1))),
        ((7, 5), (2, 3), ((3, 2), (0, 4))),
        ((1, 1), (1, 1), ((2, 0), (1, 3))),
    ]:
        padded = np.pad(image, ((0, 0), *pads, (0, 0)))
        view = np.lib.stride_tricks.sliding_window_view(padded, size, axis=(1, 2))[:, :: stride[0], :: stride[1]]
        expected = view.transpose(0, 1, 2, 4, 5, 3).reshape(*view.shape[:3], -1)
        weights = rng.integers(-(2**7), 2**7, (expected.shape[-1], 11)).astype(np.float64)
        convolve = fastpath.Convolve(weights, size, stride, pads)
        for out in (np.float32, np.float64):
            windows = fastpath.windows(image, size, stride, pads, out)
            assert windows.dtype == out and np.array_equal(windows, expected.astype(out)), (size, stride, pads)
        sums = convolve(image, np.float64)
        assert np.array_equal(sums, expected.astype(np.float64) @ weights), (size, stride, pads)
