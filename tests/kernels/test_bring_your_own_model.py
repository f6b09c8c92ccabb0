"""Bring your own model (issue 15): what an hls4ml user already has — a QKeras model saved whole, as json +
weights or named by an hls4ml YAML, an hls4ml project, an HGQ2 (Keras 3) or QONNX model, a two-input two-output
model, QKeras's other quantizers — built by `faast build`, served by a real `faast serve` and asked by the real
tritonclient; every served value equals, bit for bit, hls4ml's own compile() + predict() of the same source on
inputs that reach every edge. And the user's mistakes end `faast build` with one clear line, leaving the model
repository as it was.

The models, and hls4ml's answers, come from child processes (tests/kernels/byo/): TensorFlow stays out of here.
hls4ml's answers are computed in the background while `faast build` runs.
"""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from google.protobuf import text_format
from support import BIN, PYTHON, Server
from tritonclient.grpc import model_config_pb2 as mc

from faast.contract.fixed import FixedType

pytestmark = pytest.mark.slow  # builds with hls4ml, compiles C simulations, runs hls4ml's own predict()

BYO = Path(__file__).resolve().parent / "byo"
QKERAS_CHILD, KERAS3_CHILD = BYO / "qkeras_models.py", BYO / "keras3_models.py"
CHILD_ENV = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
KERAS3_ENV = {k: v for k, v in CHILD_ENV.items() if k != "TF_USE_LEGACY_KERAS"}  # HGQ2 needs real Keras 3
ROWS_PER_TYPE = 700

# The inputs of each model hls4ml is asked about, with their columns and the fixed-point type the kernel reads
# them as (hls4ml's default ap_fixed<16,6>, or the precision the source sets: the YAML's, the project's, HGQ2's
# and QONNX's input quantizers). The three qmlp builds share one set of rows reaching the edges of all three.
QMLP_TYPES = ("ap_fixed<16,6>", "ap_fixed<10,4>", "ap_fixed<12,5>")
INPUTS = {
    "multi_io": {"jets": (8, "ap_fixed<16,6>"), "leptons": (4, "ap_fixed<16,6>")},
    "quantizers": {"x": (6, "ap_fixed<16,6>")},
    "hgq2": {"hits": (12, "ap_fixed<9,3>")},
    "qonnx": {"pixels": (6, "ap_fixed<8,4>")},
}
QMLP_KEYS = ("qkeras", "config", "yaml", "project")
# name in the repository -> (the source in the models folder, files its `faast build` names by flag; None: built
# without --name, as the project's own)
BUILDS = {
    "qkeras_h5": ("qmlp.h5", {}),
    "qkeras_savedmodel": ("qmlp_savedmodel", {}),
    "qkeras_json": ("qmlp.json", {"--weights": "qmlp_weights.h5"}),
    "qkeras_config": ("qmlp.h5", {"--hls4ml-config": "qmlp_overrides.json"}),
    "qkeras_input": ("qmlp_input.h5", {}),
    "qkeras_yaml": ("qmlp.yml", {}),
    "byo_project": ("byo_project", None),
    "multi_io": ("multi_io.h5", {}),
    "quantizers": ("quantizers.h5", {}),
    "hgq2": ("hgq2.keras", {}),
    "qonnx": ("qonnx.onnx", {}),
}


def edge_rows(columns, input_type, count, rng):
    """`count` rows for a kernel reading `input_type`: ordinary values inside its range; values on its LSB
    grid, half an LSB beside it and just inside the LSB; both ends of its range; values up to 4 and 100
    times beyond it (wrapping or saturating); and, scattered (one value in ten) and as whole rows, ±0, ±inf,
    NaN, ±3.4e38 and the range's ends."""
    lsb, top = 2.0**-input_type.fraction, 2.0 ** (input_type.integer - 1)
    part = count // 5
    ordinary = rng.uniform(-top, top, (part, columns))
    grid = rng.integers(-top / lsb, top / lsb, (part, columns)) * lsb
    grid += rng.choice([0.0, lsb / 2, -lsb / 2, lsb * 0.999, -1e-30], grid.shape)
    beyond = rng.uniform(-4 * top, 4 * top, (part, columns))
    far = rng.uniform(-100 * top, 100 * top, (part, columns))
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, top, -top, top - lsb, -top - lsb], np.float32
    )
    ends = rng.choice(special, (count - 4 * part - len(special), columns))
    rows = np.concatenate([ordinary, grid, beyond, far, ends, np.repeat(special[:, None], columns, axis=1)])
    rows = rows.astype(np.float32)
    scattered = rng.random(rows.shape) < 0.1
    rows[scattered] = rng.choice(special, np.count_nonzero(scattered))
    return rows


def assert_bit_equal(served, reference, what):
    assert served.dtype == reference.dtype and served.shape == reference.shape, (what, served.dtype, served.shape)
    unsigned = {4: np.uint32, 8: np.uint64}[served.itemsize]
    differ = np.flatnonzero(served.view(unsigned) != reference.view(unsigned))
    assert differ.size == 0, (
        f"{what}: {differ.size} of {served.size} values differ from hls4ml's predict(), first at flat indices "
        f"{differ[:5]}: served {served.ravel()[differ[:5]]}, hls4ml {reference.ravel()[differ[:5]]}"
    )


def _start(command, env, log):
    with open(log, "w") as out:  # the child holds its own copy of the file
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


class Background:
    """hls4ml's answers, computed by child processes started now and awaited when first read."""

    def __init__(self, commands, paths, logs):
        self.paths = paths
        self.logs = logs
        self.processes = [_start(command, env, log) for (command, env), log in zip(commands, logs, strict=True)]
        self.values = None

    def __getitem__(self, key):
        if self.values is None:
            for process, log in zip(self.processes, self.logs, strict=True):
                assert process.wait(timeout=600) == 0, f"hls4ml reference child failed:\n{log.read_text()[-4000:]}"
            self.values = {}
            for path in self.paths:
                self.values.update(np.load(path))
        return self.values[key]

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("byo")


@pytest.fixture(scope="module")
def models(workspace):
    """The models folder (see tests/kernels/byo/*.py): QKeras files and project, HGQ2 and QONNX files."""
    folder = workspace / "models"
    children = [
        subprocess.Popen([*PYTHON, child, "models", folder], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for child, env in ((QKERAS_CHILD, CHILD_ENV), (KERAS3_CHILD, KERAS3_ENV))
    ]
    for child in children:
        output = child.communicate(timeout=300)[0].decode(errors="replace")
        assert child.returncode == 0, output[-4000:]
    return folder


@pytest.fixture(scope="module")
def inputs(workspace):
    """Input rows per model and input name ("qkeras"/"yaml"/"project" share qmlp's)."""
    rng = np.random.default_rng(15)
    qmlp = np.concatenate([edge_rows(10, FixedType.parse(t), ROWS_PER_TYPE, rng) for t in QMLP_TYPES])
    rows = {key: {"features": qmlp} for key in QMLP_KEYS}
    for key, tensors in INPUTS.items():
        rows[key] = {
            name: edge_rows(columns, FixedType.parse(t), ROWS_PER_TYPE, rng) for name, (columns, t) in tensors.items()
        }
    np.savez(workspace / "inputs.npz", **{f"{key}/{name}": x for key, t in rows.items() for name, x in t.items()})
    return rows


@pytest.fixture(scope="module")
def references(workspace, models, inputs):
    """hls4ml's predict() per "<model>/<output>" (and "/double", "/type"), computed while the builds run."""
    answers = workspace / "hls4ml"
    answers.mkdir()
    qkeras_npz, keras3_npz = answers / "qkeras.npz", answers / "keras3.npz"
    background = Background(
        [
            ([*PYTHON, QKERAS_CHILD, "predict", models, workspace / "inputs.npz", qkeras_npz], CHILD_ENV),
            ([*PYTHON, KERAS3_CHILD, "predict", models, workspace / "inputs.npz", keras3_npz], KERAS3_ENV),
        ],
        [qkeras_npz, keras3_npz],
        [answers / "qkeras.log", answers / "keras3.log"],
    )
    yield background
    background.stop()


def faast_build(source, repository, *options, cwd):
    return subprocess.run(
        [BIN / "faast", "build", source, "--out", repository, *options],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def builds(workspace, models, references):
    """Every source built into one repository, two builds at a time, from a working directory that is not
    the models' folder (the YAML's relative paths resolve from its own folder). Returns the repository and
    name -> the finished `faast build`."""
    repository = workspace / "repository"
    elsewhere = workspace / "elsewhere"
    elsewhere.mkdir()

    def build(name):
        source, files = BUILDS[name]
        options = [] if files is None else ["--name", name]
        for flag, file in (files or {}).items():
            options += [flag, models / file]
        return faast_build(models / source, repository, *options, cwd=elsewhere)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return repository, dict(zip(BUILDS, pool.map(build, BUILDS), strict=True))


@pytest.fixture(scope="module")
def server(builds, workspace):
    """One `faast serve` for every model that built; explicit model control, so a test can load another."""
    repository, _ = builds
    running = Server(
        repository,
        workspace / "serve.log",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        expect_ready=False,
    )
    yield running
    running.stop()


def served_model(builds, server, name):
    """Asserts `name` built and loaded; returns the client."""
    _, done = builds
    build = done[name]
    assert build.returncode == 0, f"faast build of {name} failed:\n{build.stderr[-4000:]}"
    assert server.client.is_model_ready(name), f"{name} is not ready:\n{Path(server.log_path).read_text()[-4000:]}"
    return server.client


def infer(client, name, tensors, outputs=None):
    """One request: `tensors` is {input name: rows} (sent in that order); returns {output name: array} of
    what came back."""
    request = []
    for tensor_name, rows in tensors.items():
        tensor = grpcclient.InferInput(tensor_name, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        request.append(tensor)
    requested = None if outputs is None else [grpcclient.InferRequestedOutput(o) for o in outputs]
    result = client.infer(name, request, outputs=requested)
    returned = [o.name for o in result.get_response().outputs]
    return {o: result.as_numpy(o) for o in returned}


def metadata(client, name):
    meta = client.get_model_metadata(name, as_json=True)

    def tensors(side):
        return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[side]]

    return tensors("inputs"), tensors("outputs")


@pytest.mark.parametrize(
    "name, key",
    [
        ("qkeras_h5", "qkeras"),
        ("qkeras_savedmodel", "qkeras"),
        ("qkeras_json", "qkeras"),
        ("qkeras_config", "config"),
        ("qkeras_yaml", "yaml"),
    ],
)
def test_qkeras_sources_serve_hls4ml_predict(builds, server, inputs, references, name, key):
    """A whole-model .h5, a SavedModel folder and json + weights (hls4ml's default config by layer name), the .h5 with
    --hls4ml-config (layer settings merged over that config) and an hls4ml YAML (its own precisions, reuse
    factors and strategy): served == hls4ml's predict() of that very source and configuration."""
    client = served_model(builds, server, name)
    assert metadata(client, name) == ([("features", "FP32", [-1, 10])], [("scores", "FP32", [-1, 4])])
    served = infer(client, name, {"features": inputs[key]["features"]})
    assert list(served) == ["scores"]
    assert_bit_equal(served["scores"], references[f"{key}/scores"], name)
    assert len(np.unique(served["scores"], axis=0)) > 500  # not a constant answer


def test_an_input_named_input_keeps_its_name(builds, server, inputs, references):
    """hls4ml refuses a layer named `input`; faast renames it inside the project only: the served tensor
    keeps the model's name, and the kernel is qmlp's (the same weights), bit for bit."""
    client = served_model(builds, server, "qkeras_input")
    assert metadata(client, "qkeras_input") == ([("input", "FP32", [-1, 10])], [("scores", "FP32", [-1, 4])])
    served = infer(client, "qkeras_input", {"input": inputs["qkeras"]["features"]})
    assert_bit_equal(served["scores"], references["qkeras/scores"], "qkeras_input")


def test_yaml_precisions_are_honoured(builds, server, inputs, references):
    """The YAML's per-layer settings change hls4ml's answers, and the served ones with them."""
    rows = {"features": inputs["qkeras"]["features"]}
    assert not np.array_equal(references["qkeras/scores"], references["yaml/scores"])
    defaults = infer(served_model(builds, server, "qkeras_h5"), "qkeras_h5", rows)["scores"]
    yaml_served = infer(served_model(builds, server, "qkeras_yaml"), "qkeras_yaml", rows)["scores"]
    assert not np.array_equal(defaults, yaml_served)


def test_hls4ml_project_serves_its_own_predict(builds, server, inputs, references):
    """An hls4ml project written by hls4ml (its own precisions): imported as it is, served == its predict()."""
    client = served_model(builds, server, "byo_project")
    (model_input,), (model_output,) = metadata(client, "byo_project")
    assert model_input == ("features", "FP32", [-1, 10]) and model_output[1:] == ("FP32", [-1, 4])
    served = infer(client, "byo_project", {"features": inputs["project"]["features"]})
    assert_bit_equal(served[model_output[0]], references["project/scores"], "byo_project")
    assert not np.array_equal(references["project/scores"], references["qkeras/scores"])  # not reconverted


@pytest.mark.parametrize(
    "name, input_name, output_name, columns",
    [("hgq2", "hits", "hgq_scores", (12, 3)), ("qonnx", "pixels", "logits", (6, 3))],
)
def test_hgq2_and_qonnx_serve_hls4ml_predict(
    builds, server, inputs, references, name, input_name, output_name, columns
):
    """hls4ml 1.3 converts both here (keras-v3 frontend; QONNX after its documented clean-up)."""
    client = served_model(builds, server, name)
    assert metadata(client, name) == (
        [(input_name, "FP32", [-1, columns[0]])],
        [(output_name, "FP32", [-1, columns[1]])],
    )
    served = infer(client, name, {input_name: inputs[name][input_name]})
    assert_bit_equal(served[output_name], references[f"{name}/{output_name}"], name)
    assert len(np.unique(served[output_name], axis=0)) > 200


def test_multi_io_every_output_any_order(builds, server, inputs, references):
    """Two inputs, two heads: config and metadata list every tensor with its dims; inputs sent in reverse
    order; every output == hls4ml's predict(); an output requested alone comes back alone."""
    client = served_model(builds, server, "multi_io")
    assert metadata(client, "multi_io") == (
        [("jets", "FP32", [-1, 8]), ("leptons", "FP32", [-1, 4])],
        [("flavour", "FP32", [-1, 5]), ("energy", "FP32", [-1, 2])],
    )
    config = client.get_model_config("multi_io").config
    assert [(t.name, list(t.dims)) for t in config.input] == [("jets", [8]), ("leptons", [4])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("flavour", [5]), ("energy", [2])]
    rows = inputs["multi_io"]
    reversed_order = {"leptons": rows["leptons"], "jets": rows["jets"]}
    served = infer(client, "multi_io", reversed_order)
    assert sorted(served) == ["energy", "flavour"]
    for output in ("flavour", "energy"):
        assert_bit_equal(served[output], references[f"multi_io/{output}"], f"multi_io {output}")
    alone = infer(client, "multi_io", reversed_order, outputs=["energy"])
    assert list(alone) == ["energy"]
    assert_bit_equal(alone["energy"], references["multi_io/energy"], "multi_io energy requested alone")


def _smallest_integer_type(fixed):
    return next(t for t in ("INT8", "INT16", "INT32", "INT64") if int(t[3:]) >= fixed.width)


def test_multi_io_outputs_in_declared_types(builds, server, inputs, references):
    """config.pbtxt edited to declare flavour FP64 and energy as the narrowest integer type holding its
    fixed-point type, then loaded: FP64 carries hls4ml's values exactly, the integer its bit patterns."""
    served_model(builds, server, "multi_io")
    repository, _ = builds
    energy_type = FixedType.parse(str(references["multi_io/energy/type"]))
    integer_type = _smallest_integer_type(energy_type)
    typed = repository / "multi_io_typed"
    shutil.copytree(repository / "multi_io", typed)
    config = text_format.Parse((typed / "config.pbtxt").read_text(), mc.ModelConfig())
    config.name = "multi_io_typed"
    for output in config.output:
        output.data_type = mc.DataType.Value("TYPE_FP64" if output.name == "flavour" else f"TYPE_{integer_type}")
    (typed / "config.pbtxt").write_text(text_format.MessageToString(config))
    server.client.load_model("multi_io_typed")
    rows = inputs["multi_io"]
    served = infer(server.client, "multi_io_typed", {"jets": rows["jets"], "leptons": rows["leptons"]})
    assert_bit_equal(served["flavour"], references["multi_io/flavour/double"], "flavour as FP64")
    exact = references["multi_io/energy/double"] * 2.0**energy_type.fraction
    assert np.array_equal(exact, np.rint(exact))  # hls4ml's values are on the type's grid
    bits = exact.astype(np.int64).astype(np.dtype(integer_type.lower()))
    assert served["energy"].dtype == bits.dtype and np.array_equal(served["energy"], bits), "energy bit patterns"


def test_qkeras_quantizers_serve_hls4ml_predict(builds, server, inputs, references):
    """quantized_po2 weights, binary and ternary weights and activations, quantized_bits(alpha="auto_po2")."""
    client = served_model(builds, server, "quantizers")
    served = infer(client, "quantizers", {"x": inputs["quantizers"]["x"]})
    assert_bit_equal(served["alpha_dense"], references["quantizers/alpha_dense"], "quantizers")
    assert len(np.unique(served["alpha_dense"], axis=0)) > 20
    device = re.search(r"loaded model 'quantizers' version 1 on device '(\w+)'", Path(server.log_path).read_text())
    assert device, "the server logs the device it picked"
    print(f"quantizers served on device {device.group(1)}")


def listing(folder):
    """Every path under `folder` (hidden ones too) with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def missing_file_yaml(workspace, models):
    config = yaml.safe_load((models / "qmlp.yml").read_text())
    config["KerasJson"], config["KerasH5"] = "no_such_model.json", "no_such_weights.h5"
    path = workspace / "errors" / "missing.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing file", "no_such_model.json"),
        ("lambda layer", "Lambda"),
        ("bad tensor name", "bad name!"),
        ("existing model", "qkeras_h5"),
    ],
)
def test_user_errors_are_one_line_and_leave_the_repository_alone(
    builds, models, missing_file_yaml, workspace, case, expected
):
    repository, done = builds
    if case == "existing model":
        assert done["qkeras_h5"].returncode == 0, done["qkeras_h5"].stderr[-4000:]
    source, options = {
        "missing file": (missing_file_yaml, ["--name", "missing"]),
        "lambda layer": (models / "lambda.h5", ["--name", "with_lambda"]),
        "bad tensor name": (models / "qmlp.h5", ["--name", "bad_inputs", "--inputs", "bad name!"]),
        "existing model": (models / "qmlp.h5", ["--name", "qkeras_h5"]),
    }[case]
    before = listing(repository)
    build = faast_build(source, repository, *options, cwd=workspace / "elsewhere")
    assert build.returncode == 1, (build.returncode, build.stderr[-4000:])
    lines = build.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), build.stderr[-4000:]
    assert expected in lines[0]
    if case == "existing model":
        assert "--replace" in lines[0]
    assert listing(repository) == before
