"""Child process of tests/kernels/test_bring_your_own_model.py: the QKeras models a user brings, saved the
ways users save them, and hls4ml's own answers for them (TensorFlow and hls4ml stay out of the test process).

Usage (run with the tests' interpreter, -P):
  qkeras_models.py models FOLDER
      writes into FOLDER:
        qmlp.h5                   a QKeras MLP (features -> scores) saved whole
        qmlp_savedmodel/          the same model as a SavedModel folder
        qmlp.json, qmlp_weights.h5  the same model as architecture json + weights
        qmlp.yml                  an hls4ml YAML (KerasJson + KerasH5, paths relative to FOLDER) whose
                                  per-layer precisions, reuse factors and strategy are not hls4ml's defaults
        qmlp_overrides.json       the same per-layer settings as an HLSConfig mapping, for --hls4ml-config
        qmlp_input.h5             qmlp with its input layer named `input`, a name hls4ml reserves
        byo_project/              an hls4ml project of the same model with other precisions, written by hls4ml
        multi_io.h5               two inputs (jets, leptons) -> Concatenate -> shared QDense -> two heads
                                  (flavour: 5, energy: 2)
        quantizers.h5             quantized_po2, binary, ternary and quantized_bits(alpha="auto_po2") layers
        lambda.h5                 a Lambda layer, which hls4ml cannot convert
  qkeras_models.py predict FOLDER INPUTS.npz REFERENCES.npz
      hls4ml compile() + predict(), in projects written beside REFERENCES.npz, for each model as
      `faast build` is asked to build it: "qkeras" (qmlp.h5 with config_from_keras_model(granularity="name")),
      "config" (that configuration with qmlp_overrides.json merged over it), "yaml" (qmlp.yml as
      `hls4ml convert -c` reads it), "project" (byo_project's own predict), "multi_io"
      and "quantizers". INPUTS.npz holds "<model>/<input>" float32 rows; REFERENCES.npz gets
      "<model>/<output>" (float32 predict), "<model>/<output>/double" (predict on float64 inputs) and
      "<model>/<output>/type" (the output's hls4ml precision).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from faast.kernels.toolchain import hls4ml, qkeras, tf_keras

# The settings `faast build` gives a Keras model when no --hls4ml-config says otherwise.
BACKEND, IO_TYPE, PART, CLOCK_PERIOD = "Vitis", "io_parallel", "xcu250-figd2104-2L-e", 4

# hls4ml 1.3 calls np.product (removed in numpy 2) when it writes quantized_po2 weights.
if not hasattr(np, "product"):
    np.product = np.prod

layers = tf_keras.layers


def _randomized(model, seed):
    """Weights and biases drawn at random (biases are zero when built), so every path carries values."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _qdense(units, name, kernel_bits=8, kernel_integer=0):
    return qkeras.QDense(
        units,
        kernel_quantizer=qkeras.quantized_bits(kernel_bits, kernel_integer, alpha=1),
        bias_quantizer=qkeras.quantized_bits(8, 2, alpha=1),
        name=name,
    )


def qmlp(input_name="features"):
    features = layers.Input((10,), name=input_name)
    h = _qdense(16, "dense1")(features)
    h = qkeras.QActivation(qkeras.quantized_relu(8, 3), name="relu1")(h)
    h = _qdense(8, "dense2", kernel_bits=6)(h)
    h = qkeras.QActivation(qkeras.quantized_relu(6, 2), name="relu2")(h)
    scores = _qdense(4, "scores", kernel_integer=1)(h)
    return _randomized(tf_keras.Model(features, scores, name="qmlp"), seed=1)


def multi_io():
    jets, leptons = layers.Input((8,), name="jets"), layers.Input((4,), name="leptons")
    a = qkeras.QActivation(qkeras.quantized_relu(8, 3), name="jet_relu")(_qdense(6, "jet_dense")(jets))
    b = qkeras.QActivation(qkeras.quantized_relu(8, 3), name="lepton_relu")(_qdense(4, "lepton_dense")(leptons))
    merged = layers.Concatenate(name="merge")([a, b])
    shared = qkeras.QActivation(qkeras.quantized_relu(8, 3), name="shared_relu")(_qdense(12, "shared")(merged))
    flavour = qkeras.QActivation(qkeras.quantized_bits(10, 3, alpha=1), name="flavour")(
        _qdense(5, "flavour_dense")(shared)
    )
    energy = qkeras.QActivation(qkeras.quantized_bits(12, 5, alpha=1), name="energy")(
        _qdense(2, "energy_dense")(shared)
    )
    return _randomized(tf_keras.Model([jets, leptons], [flavour, energy], name="multi_io"), seed=2)


def quantizers():
    x = layers.Input((6,), name="x")
    bias = qkeras.quantized_bits(8, 3, alpha=1)
    h = qkeras.QDense(8, kernel_quantizer=qkeras.quantized_po2(4, 2), bias_quantizer=bias, name="po2_dense")(x)
    h = qkeras.QActivation(qkeras.binary(alpha=1), name="binary_act")(h)
    h = qkeras.QDense(8, kernel_quantizer=qkeras.ternary(alpha=1), bias_quantizer=bias, name="ternary_dense")(h)
    h = qkeras.QActivation(qkeras.ternary(alpha=1), name="ternary_act")(h)
    h = qkeras.QDense(6, kernel_quantizer=qkeras.binary(alpha=1), bias_quantizer=bias, name="binary_dense")(h)
    h = qkeras.QActivation(qkeras.quantized_relu(6, 2), name="relu")(h)
    out = qkeras.QDense(
        3, kernel_quantizer=qkeras.quantized_bits(6, 0, alpha="auto_po2"), bias_quantizer=bias, name="alpha_dense"
    )(h)
    return _randomized(tf_keras.Model(x, out, name="quantizers"), seed=3)


def lambda_model():
    x = layers.Input((4,), name="x")
    y = layers.Lambda(lambda t: t * 2.0, name="doubling")(layers.Dense(3, name="dense")(x))
    return tf_keras.Model(x, y, name="with_lambda")


# qmlp.yml's HLSConfig: narrow, saturating and rounding types, a truncating accumulator, reuse and Resource.
YAML_LAYERS = {
    "features": {"Precision": {"result": "ap_fixed<10,4>"}},
    "dense1": {"Precision": {"accum": "ap_fixed<14,5>", "result": "ap_fixed<12,4,AP_RND,AP_SAT>"}, "ReuseFactor": 2},
    "dense2": {"Precision": {"result": "ap_fixed<8,3,AP_RND,AP_SAT>"}, "ReuseFactor": 4, "Strategy": "Resource"},
    "scores": {"Precision": {"result": "ap_fixed<10,4,AP_RND_CONV,AP_SAT>"}},
}
# byo_project's own settings on top of hls4ml's defaults.
PROJECT_LAYERS = {
    "features": {"result": "ap_fixed<12,5>"},
    "dense1": {"accum": "ap_fixed<14,6>"},
    "scores": {"result": "ap_fixed<9,4,AP_RND,AP_SAT>"},
}


def hls_config(model):
    return hls4ml.utils.config_from_keras_model(model, granularity="name", backend=BACKEND)


def convert(model, config, output_dir, project_name="myproject"):
    return hls4ml.converters.convert_from_keras_model(
        model,
        hls_config=config,
        output_dir=str(output_dir),
        project_name=project_name,
        backend=BACKEND,
        io_type=IO_TYPE,
        part=PART,
        clock_period=CLOCK_PERIOD,
    )


def write_models(folder):
    folder.mkdir(parents=True, exist_ok=True)
    model = qmlp()
    model.save(folder / "qmlp.h5")
    model.save(folder / "qmlp_savedmodel", save_format="tf")
    (folder / "qmlp.json").write_text(model.to_json())
    model.save_weights(folder / "qmlp_weights.h5")
    yaml_config = {
        "KerasJson": "qmlp.json",
        "KerasH5": "qmlp_weights.h5",
        "OutputDir": "qmlp_yaml_prj",
        "ProjectName": "byo_yaml",
        "Backend": BACKEND,
        "Part": PART,
        "ClockPeriod": CLOCK_PERIOD,
        "IOType": IO_TYPE,
        "HLSConfig": {
            "Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 1, "Strategy": "Latency"},
            "LayerName": YAML_LAYERS,
        },
    }
    (folder / "qmlp.yml").write_text(yaml.safe_dump(yaml_config, sort_keys=False))
    # `faast build qmlp.h5 --hls4ml-config qmlp_overrides.json`: the same layer settings as an HLSConfig mapping.
    (folder / "qmlp_overrides.json").write_text(json.dumps({"LayerName": YAML_LAYERS}))
    config = hls_config(model)
    for layer, types in PROJECT_LAYERS.items():
        config["LayerName"][layer]["Precision"].update(types)
    convert(model, config, folder / "byo_project", project_name="byo_project").write()
    qmlp(input_name="input").save(folder / "qmlp_input.h5")  # hls4ml reserves the name `input`
    multi_io().save(folder / "multi_io.h5")
    quantizers().save(folder / "quantizers.h5")
    lambda_model().save(folder / "lambda.h5")


def _load(path):
    return qkeras.utils.load_qmodel(path, compile=False)


def _predict(graph, inputs, output_names, model_key, references):
    """predict() on float32 and on float64 rows, one array per output, keyed as the module says."""
    for dtype, suffix in ((np.float32, ""), (np.float64, "/double")):
        rows = [np.ascontiguousarray(x, dtype=dtype) for x in inputs]
        outputs = graph.predict(rows if len(rows) > 1 else rows[0])
        outputs = outputs if isinstance(outputs, list) else [outputs]
        for name, values in zip(output_names, outputs, strict=True):
            references[f"{model_key}/{name}{suffix}"] = np.asarray(values, dtype=dtype).reshape(len(rows[0]), -1)
    for name, variable in zip(output_names, graph.get_output_variables(), strict=True):
        references[f"{model_key}/{name}/type"] = np.array(str(variable.type.precision))


def predict(folder, inputs_path, references_path):
    inputs = dict(np.load(inputs_path))
    scratch = Path(references_path).resolve().parent / "qkeras_projects"  # hls4ml's projects, beside the answers
    references = {}

    def rows(key, names):
        return [inputs[f"{key}/{name}"] for name in names]

    # First: linking skips the project's `!keras_model` (a QKeras model that would not load), unless
    # parse_yaml_config below has registered its loader of that tag in this process.
    project = scratch / "byo_project"  # a copy: `faast build` reads the original meanwhile
    shutil.copytree(folder / "byo_project", project)
    graph = hls4ml.converters.link_existing_project(str(project))
    graph.compile()
    for dtype, suffix in ((np.float32, ""), (np.float64, "/double")):
        x = np.ascontiguousarray(inputs["project/features"], dtype=dtype)
        references[f"project/scores{suffix}"] = np.asarray(graph.predict(x), dtype=dtype).reshape(len(x), -1)

    model = _load(folder / "qmlp.h5")
    graph = convert(model, hls_config(model), scratch / "qkeras")
    graph.compile()
    _predict(graph, rows("qkeras", ["features"]), ["scores"], "qkeras", references)

    # --hls4ml-config: hls4ml's per-name configuration with the overrides merged in, key by key.
    config = hls_config(model)
    for layer, settings in YAML_LAYERS.items():
        for key, value in settings.items():
            if isinstance(value, dict):
                config["LayerName"][layer][key].update(value)
            else:
                config["LayerName"][layer][key] = value
    graph = convert(model, config, scratch / "config")
    graph.compile()
    _predict(graph, rows("config", ["features"]), ["scores"], "config", references)

    # What `hls4ml convert -c qmlp.yml` does, run in the YAML's folder as hls4ml resolves its paths: hls4ml
    # 1.3's convert_from_config converts only KerasModel, so a KerasJson + KerasH5 YAML goes to the Keras
    # converter it would call (only OutputDir moves, out of the models' folder).
    config = hls4ml.converters.parse_yaml_config(str(folder / "qmlp.yml"))
    config["OutputDir"] = str(scratch / "yaml")
    graph = hls4ml.converters.keras_v2_to_hls(config)
    graph.compile()
    _predict(graph, rows("yaml", ["features"]), ["scores"], "yaml", references)

    for key, input_names, output_names in (
        ("multi_io", ["jets", "leptons"], ["flavour", "energy"]),
        ("quantizers", ["x"], ["alpha_dense"]),
    ):
        model = _load(folder / f"{key}.h5")
        graph = convert(model, hls_config(model), scratch / key)
        graph.compile()
        _predict(graph, rows(key, input_names), output_names, key, references)
    np.savez(references_path, **references)


if __name__ == "__main__":
    command, folder, *paths = sys.argv[1:]
    if command == "models":
        write_models(Path(folder))
    else:
        folder = Path(folder).resolve()
        os.chdir(folder)  # the YAML's relative paths resolve as `hls4ml convert -c` resolves them
        predict(folder, *paths)
