"""Child process for Keras 3 models (.keras files Keras 3 saved: HGQ2 and plain Keras 3), and hls4ml
YAMLs and projects of them, with the arguments of kernels/convert.py:

    python -P -m faast.kernels.convert_keras3 convert SOURCE_JSON PROJECT_DIR NAME
    python -P -m faast.kernels.convert_keras3 predict SOURCE_JSON INPUTS_NPZ OUT_NPZ

Its process has real Keras 3: no tf_keras aliasing, no TF_USE_LEGACY_KERAS (what kernels/toolchain.py
sets up for QKeras, under which Keras 3 models do not load). hls4ml converts them with its keras-v3
frontend, as its convert_from_keras_model does when `keras` is Keras 3.
"""

import json
import os
import zipfile

import numpy as np

from .convert import (
    ConversionError,
    Converted,
    World,
    graph_from_layers,
    hls4ml_refusals,
    keras_config,
    listed,
    main,
    refuse_layer,
)


def load_keras3(path):
    """A .keras model; a Lambda layer is refused before Keras would refuse to load its Python code."""
    import keras

    with zipfile.ZipFile(path) as archive:
        layers = json.loads(archive.read("config.json")).get("config", {}).get("layers", [])
    for layer in layers:
        if layer.get("class_name") == "Lambda":
            refuse_layer(layer["config"]["name"], "Lambda", "no keras-v3 converter handles this class")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:
        raise ConversionError(
            f"Keras {keras.__version__} cannot load {path}: {type(error).__name__}: {error}"
        ) from error


def _functional(model):
    import keras

    return model._functional if isinstance(model, keras.Sequential) else model  # as hls4ml's parser sees it


def keras3_graph(config):
    """hls4ml's keras_v3_to_hls, with the fallbacks convert_from_config reads from HLSConfig.Model (both
    on by default, as in convert_from_keras_model), and the model's own input and output layer names."""
    from hls4ml.converters.keras_v3_to_hls import parse_keras_v3_model

    model = config["KerasModel"]
    flags = config["HLSConfig"].get("Model", {})
    allow_da, allow_v2 = flags.get("AllowDAFallback", True), flags.get("AllowV2Fallback", True)
    _refuse_unsupported(model, allow_v2)
    with hls4ml_refusals():
        layer_list, inputs, outputs, _ = parse_keras_v3_model(model, allow_da, allow_v2)
    functional = _functional(model)
    return (
        graph_from_layers(config, layer_list, inputs, outputs),
        [t._keras_history.operation.name for t in functional.inputs],
        [t._keras_history.operation.name for t in functional.outputs],
    )


def _refuse_unsupported(model, allow_v2):
    """The layers hls4ml's keras-v3 dispatcher finds no handler for (its keras-v3 registry by module
    and class, then the Keras 2 handlers; its DA fallback needs da4ml, which faast does not install)."""
    from hls4ml.converters.keras_v2_to_hls import layer_handlers as v2_handlers
    from hls4ml.converters.keras_v3 import layer_handlers as v3_handlers

    for layer in _functional(model).layers:
        cls = type(layer)
        known = f"{cls.__module__}.{cls.__name__}" in v3_handlers or cls.__name__ in v3_handlers
        if not known and not (allow_v2 and cls.__name__ in v2_handlers):
            refuse_layer(layer.name, cls.__name__, "no keras-v3 converter handles this class")


def convert_keras3(source, project_dir, project_name, overrides):
    model = load_keras3(source.path)
    _refuse_unsupported(model, allow_v2=True)  # before hls4ml's configuration, which parses the model too
    return Converted(*keras3_graph(keras_config(model, project_dir, project_name, overrides)))


def graph_from_config(config):
    """convert_from_config with a Keras 3 KerasModel (the only kind identify sends here)."""
    if isinstance(config.get("KerasModel"), str):
        config["KerasModel"] = load_keras3(config["KerasModel"])
    return keras3_graph(config)


def run_keras3(model, inputs):
    """The Keras 3 model's outputs. A plain Keras model is its own float reference; an HGQ2 model has
    none: its quantizers are part of every layer (learned bit widths), with no float twin to remove them."""
    functional = _functional(model)
    feeds = [
        np.asarray(inputs[t._keras_history.operation.name], np.float32).reshape(-1, *t.shape[1:])
        for t in functional.inputs
    ]
    outputs = listed(model.predict(feeds, batch_size=4096, verbose=0))
    names = [t._keras_history.operation.name for t in functional.outputs]
    if any(type(layer).__module__.startswith("hgq.") for layer in functional.layers):
        return outputs, names, None, "an HGQ2 model quantizes inside its layers: it has no float twin"
    return outputs, names, outputs, "the Keras model has no quantizers: its outputs are the float reference"


def _keras3_world():
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # HGQ2's layers and quantizers, registered for Keras to load them; hls4ml after Keras 3.
    import hgq  # noqa: F401
    import hls4ml  # noqa: F401

    np.product = np.prod  # hls4ml 1.3 writes quantized_po2 weights with np.product, gone in numpy 2
    return World(
        converters={"keras3": convert_keras3},
        predictors={"keras3": lambda source, inputs: run_keras3(load_keras3(source.path), inputs)},
        graph_from_config=graph_from_config,
        predict_config=lambda config, inputs: run_keras3(load_keras3(config["KerasModel"]), inputs),
    )


if __name__ == "__main__":
    main(_keras3_world)
