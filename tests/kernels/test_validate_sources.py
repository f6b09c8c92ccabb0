"""`faast validate` of a model a user brings (issue 15): a QKeras model the test trains, saved whole as .h5 and
named by an hls4ml YAML, validated from an .npz of held-out inputs and truth, with no kernel folder and no data.py.

The model and its data come from a child process (TensorFlow stays out of the test process); both validations
run at once in the background, each awaited by its test.
"""

import json
import re
import subprocess
import textwrap

import numpy as np
import pytest
from support import BIN, PYTHON

from faast.contract.fixed import FixedType

# The child: a QKeras regression MLP (features -> energy) trained briefly on a smooth positive target, saved
# as a whole-model .h5; an hls4ml YAML naming that file, with precisions of its own; held-out inputs and truth.
MODEL_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import yaml

    from faast.kernels.toolchain import qkeras, tf_keras

    folder = Path(sys.argv[1])
    tf_keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)


    def sample(rows):
        x = rng.uniform(-2, 2, (rows, 8)).astype(np.float32)
        y = 3 + x[:, 0] ** 2 + 0.5 * np.sin(x[:, 1]) * x[:, 2] + 0.3 * x[:, 3]
        return x, y.astype(np.float32)


    def qdense(units, name):
        return qkeras.QDense(
            units,
            kernel_quantizer=qkeras.quantized_bits(10, 2, alpha=1),
            bias_quantizer=qkeras.quantized_bits(10, 4, alpha=1),
            name=name,
        )


    features = tf_keras.layers.Input((8,), name="features")
    h = qkeras.QActivation(qkeras.quantized_relu(10, 4), name="relu1")(qdense(24, "dense1")(features))
    h = qkeras.QActivation(qkeras.quantized_relu(10, 4), name="relu2")(qdense(12, "dense2")(h))
    model = tf_keras.Model(features, qdense(1, "energy")(h), name="energy_mlp")
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    model.fit(*sample(6000), epochs=40, batch_size=256, verbose=0)
    model.save(folder / "energy_mlp.h5")
    x, y = sample(4000)
    np.savez(folder / "held_out.npz", x=x, y=y)
    config = {
        "KerasH5": "energy_mlp.h5",
        "OutputDir": "energy_mlp_prj",
        "ProjectName": "energy_yaml",
        "Backend": "Vitis",
        "IOType": "io_parallel",
        "Part": "xcu250-figd2104-2L-e",
        "ClockPeriod": 4,
        "HLSConfig": {
            "Model": {"Precision": "ap_fixed<18,8>", "ReuseFactor": 1, "Strategy": "Latency"},
            "LayerName": {"energy": {"Precision": {"result": "ap_fixed<20,8,AP_RND,AP_SAT>"}}},
        },
    }
    (folder / "energy_mlp.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    """
)


@pytest.fixture(scope="module")
def validations(tmp_path_factory):
    """Both validations of the trained model, started together: (process, report folder, log) per source."""
    models = tmp_path_factory.mktemp("models")
    made = subprocess.run([*PYTHON, "-c", MODEL_CHILD, models], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    data = models / "held_out.npz"
    work = tmp_path_factory.mktemp("validate")
    sources = {
        "h5": (models / "energy_mlp.h5",),
        "yaml": (models / "energy_mlp.yml", "--name", "from_yaml"),
    }
    runs = {}
    for key, (source, *extra) in sources.items():
        out, log = work / key, work / f"{key}.log"
        with log.open("w") as printed:
            command = [BIN / "faast", "validate", source, "--out", out, "--data", data, "--task", "regression", *extra]
            process = subprocess.Popen(command, stdout=printed, stderr=subprocess.STDOUT, cwd=work)
        runs[key] = (process, out, log)
    yield runs
    for process, _, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def finished(validations, key):
    """The validation's report, once it has passed with its verdict line."""
    process, out, log = validations[key]
    returncode = process.wait(timeout=900)
    printed = log.read_text()
    assert returncode == 0, printed[-4000:]
    assert re.search(r"^PASS: (\d+) of \1 checks passed; report in ", printed, re.MULTILINE), printed[-4000:]
    for name in ("report.md", "report.html", "physics.png", "layers.png"):
        assert (out / name).stat().st_size > 1000, name
    return json.loads((out / "report.json").read_text()), out


def assert_qkeras_stages_compared(report):
    assert report["stages"] == ["float", "qkeras", "kernel"]
    assert report["float_model"] == "the QKeras model with quantizers removed"
    assert set(report["outputs"]) == {"qkeras vs float", "kernel vs float", "kernel vs qkeras"}
    assert report["kernel_outputs"] == {"device": "emulator", "csim_values": 4000, "csim_mismatches": 0}
    # The kernel computes what the QKeras model computes, to about its output's resolution.
    assert report["outputs"]["kernel vs qkeras"]["mean_rel"] < 0.01, report["outputs"]
    judged = [row for row in report["physics"] if row["enough_entries"]]
    assert len(judged) >= 3 and all(0.9 < row["kernel"]["response"] < 1.1 for row in judged), report["physics"]
    checks = {check["check"] for check in report["checks"]}
    assert "hls4ml trace follows QKeras in every layer" in checks and "emulator == C simulation, bit for bit" in checks
    assert all(check["passed"] for check in report["checks"])
    traced = [row["layer"] for row in report["layers"]]
    assert traced[:3] == ["features", "dense1", "relu1"] and "energy" in traced, traced
    assert report["first_divergence"] is None


@pytest.mark.slow  # trains a small QKeras model, builds it with hls4ml, traces its layers (C simulations)
def test_validate_a_qkeras_h5_model_from_an_npz(validations):
    report, out = finished(validations, "h5")
    assert report["source"]["kind"] == "keras" and report["kernel"] == "energy_mlp"
    assert report["task"] == "regression"
    assert_qkeras_stages_compared(report)
    assert (out / "repository" / "energy_mlp" / "config.pbtxt").is_file()


@pytest.mark.slow  # as above, through the YAML
def test_validate_the_same_model_through_an_hls4ml_yaml(validations):
    report, out = finished(validations, "yaml")
    assert report["source"]["kind"] == "hls4ml-yaml" and report["kernel"] == "from_yaml"
    assert_qkeras_stages_compared(report)
    # The kernel validated is the YAML's: its precisions, not hls4ml's defaults for the .h5.
    kernel = json.loads((out / "repository" / "from_yaml" / "1" / "kernel.json").read_text())
    assert kernel["project"] == "energy_yaml"
    energy = next(layer for layer in kernel["layers"] if layer["name"] == "energy")
    assert FixedType.parse(energy["types"]["result_t"]) == FixedType.parse("ap_fixed<20,8,AP_RND,AP_SAT>")
    ranges = {row["layer"]: row["type"] for row in report["layers"]}
    assert ranges["energy"] == str(FixedType.parse("ap_fixed<20,8,AP_RND,AP_SAT>")), ranges


def test_validate_says_what_it_needs_before_building(tmp_path):
    """A source without data.py needs --data, truth needs a task and a task needs truth: told at once, in one
    line, with nothing built."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")  # identified by its name: nothing reads it before these refusals
    np.savez(tmp_path / "inputs_only.npz", x=np.zeros((4, 3), np.float32))
    np.savez(tmp_path / "with_truth.npz", x=np.zeros((4, 3), np.float32), y=np.zeros(4, np.float32))
    cases = [
        ((), "model.onnx brings no data: give --data FILE.npz"),
        (("--data", tmp_path / "with_truth.npz"), "holds the truth y: say what it is with --task"),
        (("--data", tmp_path / "inputs_only.npz", "--task", "regression"), "--task regression needs the truth"),
    ]
    for extra, message in cases:
        run = subprocess.run(
            [BIN / "faast", "validate", model, "--out", tmp_path / "report", *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2, run.stdout + run.stderr
        assert run.stderr.startswith("error: ") and message in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "report").exists()
