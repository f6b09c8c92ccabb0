"""Child process of `faast build` and `faast validate`: a model source (kernels/sources.py) → an hls4ml
project with kernel.json (tensors, and every layer's class, wiring, C++ types and attributes) and
weights.npz (weight mantissas as the C simulation loads them, activation tables as its initialisers
fill them): the emulator's input. Or, for validation, the source model's own outputs.

    python -P -m faast.kernels.convert convert SOURCE_JSON PROJECT_DIR NAME
    python -P -m faast.kernels.convert predict SOURCE_JSON INPUTS_NPZ OUT_NPZ

This module runs kernel folders, tf_keras / QKeras models, hls4ml YAMLs and projects of those, and
ONNX / QONNX models; faast.kernels.convert_keras3 runs Keras 3 models (HGQ2) with the same arguments.
A child loads its toolchain (TensorFlow, Keras, hls4ml: kernels/toolchain.py here) before anything
else, so nothing in this module imports them at module level; the build's own process and the server
stay free of TensorFlow. A user error (a missing file, a layer hls4ml cannot convert) exits 2 with one
line `error: ...` on stderr, which carries nothing else: the toolchain's chatter goes to stdout.

Keras and ONNX models convert with hls4ml's per-layer configuration (config_from_*_model, granularity
"name") under faast's defaults, the Vitis backend, io_parallel, part xcu250-figd2104-2L-e and a 4 ns
clock, with --hls4ml-config merged over them (kernels/sources.py: read_hls_overrides).
"""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faast.contract.fixed import FixedType
from faast.contract.kernel import KernelDescription, Layer, Tensor

from . import generated_cpp
from .sources import (
    PROJECT_CONFIG,
    YAML_MODEL_KEYS,
    Source,
    SourceError,
    project_config,
    read_hls_overrides,
    read_yaml,
    resolved_yaml,
)
from .spec import KernelSpec, merged

DEFAULTS = {"Backend": "Vitis", "IOType": "io_parallel", "Part": "xcu250-figd2104-2L-e", "ClockPeriod": 4}
RESERVED = "input"  # hls4ml's name for what feeds a graph's Input layers: no layer may take it
QONNX_QUANTIZERS = ("Quant", "BipolarQuant", "Trunc")


class ConversionError(Exception):
    """What stops a conversion that is the model's doing, not faast's: said in one line."""


@dataclass
class Converted:
    """An hls4ml graph (its OutputDir the project folder) and what kernel.json adds to it."""

    graph: object
    input_names: list  # the model's own tensor names, in the graph's input order
    output_names: list
    serving: dict = field(default_factory=dict)  # a shipped kernel's [serving] and [fpga] tables
    fpga: dict = field(default_factory=dict)


@dataclass
class World:
    """What one toolchain (QKeras / tf_keras, or Keras 3) converts and runs. A prediction is (outputs,
    their names, float reference outputs or None, what that reference is)."""

    converters: dict  # model kind → f(source, project_dir, project_name, overrides) -> Converted
    predictors: dict  # model kind → f(source, inputs by name) -> prediction
    graph_from_config: object  # f(hls4ml configuration, files resolved) -> (graph, input names, output names)
    predict_config: object  # f(hls4ml configuration, inputs by name) -> prediction of the model it names


# -- the child's command line -----------------------------------------------------------------------


def main(load_world):
    """Run a child: the one-line error channel first, then the toolchain, then the mode."""
    errors = os.fdopen(os.dup(2), "w")
    os.dup2(1, 2)  # TensorFlow's and hls4ml's messages join stdout; stderr is the error line only
    try:
        world = load_world()
        mode, source_json, *arguments = sys.argv[1:]
        source = Source.from_json(source_json)
        if mode == "convert":
            convert(world, source, *arguments)
        elif mode == "predict":
            predict(world, source, *arguments)
        else:
            raise SourceError(f"unknown mode {mode!r}: convert or predict")
    except (SourceError, ConversionError, generated_cpp.UnreadableFirmware) as error:
        errors.write(f"error: {' '.join(str(error).split())}\n")
        errors.flush()
        sys.exit(2)
    except Exception:
        import traceback

        traceback.print_exc(file=errors)  # a fault of faast's, not the model's
        errors.flush()
        sys.exit(1)


def convert(world, source, project_dir, name):
    project_dir = Path(project_dir)
    if source.kind == "hls4ml-project":
        import_project(world, source, project_dir, name)
        return
    if source.kind == "hls4ml-yaml":  # the graph hls4ml's convert_from_config makes of it
        converted = Converted(*world.graph_from_config(yaml_config(source.path, project_dir)))
    else:
        converted = world.converters[source.kind](source, project_dir, c_name(name), _overrides(source))
    _refuse_streams(converted.graph)
    with hls4ml_refusals():
        converted.graph.write()
    write_kernel(converted.graph, project_dir, name, source, converted)


def c_name(name):
    """A C identifier from the model name, for the project (the C++ top function) hls4ml writes."""
    name = re.sub(r"\W", "_", name)
    return name if re.match(r"[A-Za-z_]", name) else f"model_{name}"


def _overrides(source):
    """--hls4ml-config (kernels/sources.py: read_hls_overrides) over faast's defaults."""
    hls, settings = read_hls_overrides(source.hls4ml_config) if source.hls4ml_config else ({}, {})
    return hls, DEFAULTS | settings


def _refuse_streams(graph):
    inputs, outputs = graph.get_input_variables(), graph.get_output_variables()
    if graph.config.get_config_value("IOType") == "io_stream" and (len(inputs) > 1 or len(outputs) > 1):
        raise ConversionError(
            f"faast serves io_stream kernels with one input and one output; this model has {len(inputs)} inputs"
            f" and {len(outputs)} outputs: convert it with IOType io_parallel"
        )


# -- hls4ml configurations --------------------------------------------------------------------------


def model_config(project_dir, project_name, hls, settings, model_key, model):
    """The configuration hls4ml's convert_from_{keras,onnx}_model builds from its arguments (mirrored:
    faast calls hls4ml's parser itself, to name what it refuses and to rename a layer called `input`)."""
    import hls4ml

    config = hls4ml.utils.config.create_config(
        output_dir=str(project_dir),
        project_name=project_name,
        backend=settings["Backend"],
        part=settings["Part"],
        clock_period=settings["ClockPeriod"],
        io_type=settings["IOType"],
    )
    config[model_key] = model
    config["InputData"] = None
    config["OutputPredictions"] = None
    config["HLSConfig"] = {"Model": hls4ml.converters._check_model_config(hls.get("Model"))}
    if model_key == "KerasModel":
        config["HLSConfig"]["Model"]["BitExact"] = None  # hls4ml's default: on for HGQ models
    hls4ml.converters._check_hls_config(config, hls)
    return config


def with_overrides(generated, overrides):
    """hls4ml's generated per-layer configuration with --hls4ml-config's merged over it: a mapping
    merges key by key (so a layer's Precision.result alone can change), anything else replaces."""
    names = generated.get("LayerName", {})
    unknown = sorted(set(overrides.get("LayerName", {})) - set(names))
    if unknown:
        raise ConversionError(
            f"--hls4ml-config configures layer '{unknown[0]}', which the model does not have; its layers are"
            f" {', '.join(names)}"
        )
    return merged(generated, overrides)


def yaml_config(path, project_dir):
    """The YAML as `hls4ml convert -c` reads it, its files resolved (sources.resolve_yaml_path), with
    the project written into project_dir instead of its OutputDir."""
    config = resolved_yaml(path)
    print(f"writing the project into {project_dir} (the YAML's OutputDir is {config.get('OutputDir')})")
    config["OutputDir"] = str(project_dir)
    return config


@contextmanager
def hls4ml_refusals():
    """hls4ml's own exceptions while it parses or builds a graph: the model is what it cannot convert."""
    import hls4ml

    try:
        yield
    except ConversionError:
        raise
    except Exception as error:
        raise ConversionError(
            f"hls4ml {hls4ml.__version__} cannot convert this model: {type(error).__name__}: {error}"
        ) from error


def graph_from_layers(config, layer_list, inputs, outputs):
    """hls4ml's ModelGraph.from_layer_list, after renaming a layer called `input`, which hls4ml
    refuses ("No model layer should be named 'input'"): the serving name stays `input`."""
    from hls4ml.model import ModelGraph

    if any(layer["name"] == RESERVED for layer in layer_list):
        taken = {layer["name"] for layer in layer_list}
        new = next(n for n in (f"{RESERVED}_{i}" for i in itertools.count(1)) if n not in taken)
        print(f"hls4ml reserves the name '{RESERVED}': the model's layer '{RESERVED}' is '{new}' in the project")

        def renamed(name):
            return new if name == RESERVED else name

        for layer in layer_list:
            layer["name"] = renamed(layer["name"])
            if "inputs" in layer:
                layer["inputs"] = [renamed(n) for n in layer["inputs"]]
        inputs = inputs and [renamed(n) for n in inputs]
        outputs = outputs and [renamed(n) for n in outputs]
        names = config["HLSConfig"].get("LayerName", {})
        if RESERVED in names:
            names[new] = names.pop(RESERVED)
    with hls4ml_refusals():
        return ModelGraph.from_layer_list(config, layer_list, inputs, outputs)


def refuse_layer(name, class_name, why):
    import hls4ml

    raise ConversionError(f"hls4ml cannot convert layer '{name}' ({class_name}): {why} in hls4ml {hls4ml.__version__}")


# -- tf_keras / QKeras models -----------------------------------------------------------------------


def keras_v2_graph(config):
    """hls4ml's keras_v2_to_hls (what convert_from_config and convert_from_keras_model run for
    tf_keras models), and the model's own input and output layer names."""
    from hls4ml.converters.keras_v2_to_hls import get_model_arch, parse_keras_model

    with hls4ml_refusals():
        arch, reader = get_model_arch(config)
    layers = _keras_v2_layers(arch)
    _refuse_unsupported_keras_v2(layers)
    with hls4ml_refusals():
        layer_list, inputs, outputs, _ = parse_keras_model(arch, reader)
    if arch["class_name"] == "Sequential":
        first = layers[0]["config"]["name"] if layers[0]["class_name"] == "InputLayer" else layer_list[0]["name"]
        names = [first], [layers[-1]["config"]["name"]]
    else:
        names = [i[0] for i in arch["config"]["input_layers"]], [o[0] for o in arch["config"]["output_layers"]]
    return graph_from_layers(config, layer_list, inputs, outputs), *names


def _keras_v2_layers(arch):
    layers = arch["config"]
    return layers["layers"] if isinstance(layers, dict) else layers


def _refuse_unsupported_keras_v2(layers):
    import hls4ml

    supported = set(hls4ml.converters.get_supported_keras_layers()) | {"Dropout"}  # Dropout: hls4ml skips it
    for layer in layers:
        if layer["class_name"] not in supported:
            refuse_layer(layer["config"]["name"], layer["class_name"], "no Keras converter handles this class")


def quantized_objects():
    """QKeras's layers and quantizers, as Keras must know them to load a QKeras model."""
    from .toolchain import qkeras

    objects = {}
    qkeras.utils._add_supported_quantized_objects(objects)
    return objects | {"QActivation": _QActivationFromConfig}


class _QActivationFromConfig:
    """QKeras 0.9.0's QActivation keeps an activation given as a dict (how tf_keras 2.21's
    model.to_json() writes its quantizer) as that dict, so such a JSON does not load back: build the
    quantizer first."""

    @classmethod
    def from_config(cls, config):
        from .toolchain import qkeras

        activation = config.get("activation")
        if isinstance(activation, dict):
            config = dict(config, activation=qkeras.quantizers.get_quantizer(activation))
        return qkeras.QActivation.from_config(config)


def load_keras_v2(path, weights=None):
    """A tf_keras (QKeras) model: a whole-model .h5 or .keras, a SavedModel folder, or an architecture
    .json with its weights."""
    from .toolchain import tf_keras

    path = Path(path)
    try:
        if path.suffix == ".json":
            with tf_keras.utils.custom_object_scope(quantized_objects()):  # QKeras deserializes its quantizers itself
                model = tf_keras.models.model_from_json(path.read_text())
            model.load_weights(weights)
            return model
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                if "model_config" not in f.attrs:
                    raise ConversionError(
                        f"{path.name} holds weights only: give the architecture .json as the source and this"
                        " file with --weights"
                    )
        return tf_keras.models.load_model(path, custom_objects=quantized_objects(), compile=False)
    except ConversionError:
        raise
    except Exception as error:
        raise ConversionError(f"tf_keras cannot load {path}: {type(error).__name__}: {error}") from error


def keras_config(model, project_dir, project_name, overrides):
    """hls4ml's per-layer configuration of a Keras model (config_from_keras_model, granularity "name")
    with the overrides merged, in the configuration convert_from_keras_model would build."""
    import hls4ml

    extra, settings = overrides
    with hls4ml_refusals():
        hls = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=settings["Backend"])
    return model_config(project_dir, project_name, with_overrides(hls, extra), settings, "KerasModel", model)


def convert_kernel(source, project_dir, project_name, overrides):
    """A kernel folder exactly as before sources: kernel.toml's settings over the QKeras model."""
    from .toolchain import tf_keras

    spec = KernelSpec.read(source.path, source.variant)
    tf_keras.utils.set_random_seed(0)  # an untrained variant's initial weights are reproducible
    model = spec.model()
    settings = spec.hls4ml
    config = model_config(
        project_dir,
        spec.name,
        hls_config(spec, model),
        {
            "Backend": settings["backend"],
            "Part": settings["part"],
            "ClockPeriod": settings["clock_period_ns"],
            "IOType": settings["io_type"],
        },
        "KerasModel",
        model,
    )
    graph, _, _ = keras_v2_graph(config)
    serving = spec.serving
    return Converted(
        graph,
        [serving["input"]["name"]],
        [serving["output"]["name"]],
        serving,
        spec.config["fpga"],
    )


def hls_config(spec, model):
    """kernel.toml's [hls4ml] settings over hls4ml's per-layer configuration of the kernel's model."""
    import hls4ml

    settings = spec.hls4ml
    config = hls4ml.utils.config_from_keras_model(
        model,
        granularity="name",
        backend=settings["backend"],
        default_precision=settings["default_precision"],
        default_reuse_factor=settings["reuse_factor"],
    )
    config["Model"]["Strategy"] = settings["strategy"]
    layers = config["LayerName"]
    for layer, types in settings.get("precision", {}).items():
        if layer not in layers:
            raise KeyError(
                f"kernel.toml sets a precision for '{layer}', which the model does not have;"
                f" its layers are {sorted(layers)}"
            )
        layers[layer]["Precision"].update(types)
    for layer, options in settings.get("layer", {}).items():  # hls4ml's own per-layer keys, e.g. Implementation
        if layer not in layers:
            raise KeyError(
                f"kernel.toml configures layer '{layer}', which the model does not have;"
                f" its layers are {sorted(layers)}"
            )
        layers[layer].update(options)
    return config


def convert_keras(source, project_dir, project_name, overrides):
    model = load_keras_v2(source.path, source.weights)
    _refuse_unsupported_keras_v2(_keras_v2_layers(json.loads(model.to_json())))  # before hls4ml's configuration
    return Converted(*keras_v2_graph(keras_config(model, project_dir, project_name, overrides)))


def tf_graph_from_config(config):
    """What hls4ml's convert_from_config does with a configuration in the tf_keras world: KerasJson +
    KerasH5, KerasH5 or KerasModel through keras_v2_to_hls (hls4ml 1.3's convert_from_config itself
    sends only KerasModel there, and to the Keras 3 converter when `keras` is Keras 3), OnnxModel
    through onnx_to_hls after qonnx's cleaning."""
    if "OnnxModel" in config:
        original = _onnx_model(config["OnnxModel"])
        config["OnnxModel"] = clean_onnx(original)
        return onnx_graph(config), *onnx_names(original)
    if isinstance(config.get("KerasModel"), str):
        config["KerasModel"] = load_keras_v2(config["KerasModel"])
    return keras_v2_graph(config)


def tf_predict_config(config, inputs):
    if "OnnxModel" in config:
        return run_onnx(_onnx_model(config["OnnxModel"]), inputs)
    if "KerasModel" in config:
        return run_keras_v2(load_keras_v2(config["KerasModel"]), inputs)
    if "KerasJson" in config:
        return run_keras_v2(load_keras_v2(config["KerasJson"], config["KerasH5"]), inputs)
    return run_keras_v2(load_keras_v2(config["KerasH5"]), inputs)


def dequantize(model):
    """The float twin: every QKeras layer replaced by its Keras counterpart (QDense → Dense, ...), its
    quantizers dropped and the trained weights copied unquantized. None when a QKeras layer has no
    Keras counterpart (QConv2DBatchnorm, QAdaptiveActivation, ...)."""
    from .toolchain import tf_keras

    config = model.get_config()
    for layer in config["layers"]:
        name = layer["class_name"]
        if not name.startswith("Q"):
            continue
        if not hasattr(tf_keras.layers, name[1:]):
            return None
        layer["class_name"] = name[1:]
        settings = layer["config"]
        # Quantizers and QKeras' own initializers/constraints go; the trained weights are copied below.
        for key in [k for k in settings if k.endswith(("quantizer", "range", "initializer", "constraint"))]:
            del settings[key]
        if "activation" in settings:
            settings["activation"] = _float_activation(settings["activation"])
    twin = type(model).from_config(config)
    for layer in twin.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return twin


def _float_activation(activation):
    """A QKeras activation's float counterpart: quantized_relu → relu, quantized_bits → linear, ..."""
    text = json.dumps(activation) if isinstance(activation, dict) else str(activation)
    if "quantized" not in text and "binary" not in text and "ternary" not in text:
        return activation
    return next((f for f in ("relu", "tanh", "sigmoid") if f in text), "linear")


def run_keras_v2(model, inputs):
    """The tf_keras model's outputs, and its float twin's when it has QKeras layers."""
    feeds = keras_feeds(model, [inputs[n] for n in model.input_names])
    outputs = listed(model.predict(feeds, batch_size=4096, verbose=0))
    names = list(model.output_names)
    if not any(type(layer).__name__.startswith("Q") for layer in model.layers):
        return outputs, names, outputs, "the Keras model has no quantizers: its outputs are the float reference"
    twin = dequantize(model)
    if twin is None:
        return outputs, names, None, "a QKeras layer of the model has no float Keras counterpart: no float reference"
    return (
        outputs,
        names,
        listed(twin.predict(feeds, batch_size=4096, verbose=0)),
        "the QKeras model with quantizers removed",
    )


def run_kernel(source, inputs):
    """A kernel folder's QKeras model, its tensors named as kernel.toml [serving] names them."""
    from .toolchain import tf_keras

    spec = KernelSpec.read(source.path, source.variant)
    tf_keras.utils.set_random_seed(0)  # as convert_kernel: an untrained variant's initial weights
    model = spec.model()
    outputs, _, floats, note = run_keras_v2(model, {model.input_names[0]: inputs[spec.serving["input"]["name"]]})
    return outputs, [spec.serving["output"]["name"]], floats, note


def keras_feeds(model, arrays):
    """The inputs shaped as the model's inputs (they may come flattened, as the kernel takes them)."""
    return [np.asarray(a, np.float32).reshape(len(a), *t.shape[1:]) for a, t in zip(arrays, model.inputs, strict=True)]


def listed(values):
    return [np.asarray(v) for v in values] if isinstance(values, (list, tuple)) else [np.asarray(values)]


# -- ONNX / QONNX models ----------------------------------------------------------------------------


def _onnx_model(model):
    """An ONNX ModelProto from a path or (in a project's configuration) its serialized bytes."""
    import onnx

    try:
        return onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    except Exception as error:
        raise ConversionError(f"onnx cannot load the model: {type(error).__name__}: {error}") from error


def clean_onnx(model):
    """The model as hls4ml's ONNX frontend reads it (hls4ml docs, "ONNX and QONNX"): qonnx's cleaning
    (shapes inferred, constants folded, unique names), channels last, Gemm as MatMul, cleaned again."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    try:
        model = cleanup_model(ModelWrapper(model))
        model = model.transform(ConvertToChannelsLastAndClean())
        model = model.transform(GemmToMatMul())
        return cleanup_model(model)
    except Exception as error:
        raise ConversionError(f"qonnx cannot prepare the model for hls4ml: {type(error).__name__}: {error}") from error


def onnx_names(model):
    """The ONNX graph's own input names (initializers aside) and output names."""
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers], [o.name for o in model.graph.output]


def onnx_graph(config):
    """hls4ml's onnx_to_hls, on a cleaned model."""
    from hls4ml.converters.onnx_to_hls import parse_onnx_model

    model = config["OnnxModel"]
    _refuse_unsupported_onnx(model)
    with hls4ml_refusals():
        layer_list, inputs, outputs = parse_onnx_model(model)
    return graph_from_layers(config, layer_list, inputs, outputs)


def _refuse_unsupported_onnx(model):
    import hls4ml

    supported = set(hls4ml.converters.get_supported_onnx_layers()) | {"Dropout", "Identity"}  # hls4ml skips these
    for node in model.graph.node:
        if node.op_type not in supported:
            refuse_layer(node.name, node.op_type, "no ONNX converter handles this operation")


def convert_onnx(source, project_dir, project_name, overrides):
    import hls4ml

    extra, settings = overrides
    original = _onnx_model(source.path)
    model = clean_onnx(original)
    _refuse_unsupported_onnx(model)  # before hls4ml's configuration
    with hls4ml_refusals():
        hls = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=settings["Backend"])
    config = model_config(project_dir, project_name, with_overrides(hls, extra), settings, "OnnxModel", model)
    return Converted(onnx_graph(config), *onnx_names(original))


def run_onnx(model, inputs):
    """The ONNX model's outputs (QONNX through qonnx's executor, which runs its custom quantizers), and
    for QONNX the float twin's: the graph with its quantizer nodes made identities."""
    in_names, out_names = onnx_names(model)
    quantized = any(node.op_type in QONNX_QUANTIZERS for node in model.graph.node)
    outputs = _execute_onnx(model, {n: inputs[n] for n in in_names}, out_names)
    if not quantized:
        return outputs, out_names, outputs, "the ONNX model has no quantizers: its outputs are the float reference"
    twin = _without_quantizers(model)
    floats = _execute_onnx(twin, {n: inputs[n] for n in in_names}, out_names)
    return outputs, out_names, floats, f"the QONNX model with its {'/'.join(QONNX_QUANTIZERS)} nodes removed"


def _execute_onnx(model, feeds, out_names):
    """All rows at once: the batch dimension set to the rows given, shapes inferred again."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    rows = len(next(iter(feeds.values())))
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]
    for tensor in itertools.chain(model.graph.input, model.graph.output):
        if tensor.name in feeds or tensor.name in out_names:
            tensor.type.tensor_type.shape.dim[0].Clear()
            tensor.type.tensor_type.shape.dim[0].dim_value = rows
    wrapper = ModelWrapper(model).transform(InferShapes())
    feeds = {n: v.astype(np.float32).reshape(wrapper.get_tensor_shape(n)) for n, v in feeds.items()}
    results = execute_onnx(wrapper, feeds)
    return [np.asarray(results[n]) for n in out_names]


def _without_quantizers(model):
    import onnx

    twin = onnx.ModelProto.FromString(model.SerializeToString())
    for node in twin.graph.node:
        if node.op_type in QONNX_QUANTIZERS:
            identity = onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)
            node.CopyFrom(identity)
    return twin


# -- hls4ml projects --------------------------------------------------------------------------------


def import_project(world, source, project_dir, name):
    """An hls4ml project served as it is: its firmware/ and configuration copied into project_dir
    (the C simulation compiles that very firmware), its tensors read from the firmware's header.
    kernel.json describes the layers (for the emulator) only when hls4ml here, given the project's
    configuration and model, writes firmware identical to the project's: then its graph is this project's."""
    project = Path(source.path)
    config = read_yaml(project / PROJECT_CONFIG)
    project_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(project / "firmware", project_dir / "firmware", ignore=shutil.ignore_patterns("*.o", "*.so"))
    shutil.copy2(project / PROJECT_CONFIG, project_dir / PROJECT_CONFIG)
    rebuilt, why = _rebuilt(world, project)
    if why is None:
        print(
            f"hls4ml {_hls4ml_version()} writes this very firmware from the project's configuration and model:"
            " kernel.json describes its layers"
        )
        write_kernel(rebuilt[0], project_dir, name, source, Converted(*rebuilt))
        return
    print(f"layers omitted from kernel.json ({why}): the emulator cannot serve it, the C simulation does")
    inputs, outputs = generated_cpp.top_tensors(project / "firmware", config)
    if rebuilt is not None and (len(inputs), len(outputs)) == (len(rebuilt[1]), len(rebuilt[2])):
        # the model's own names, where the model loads
        inputs = [replace(t, serving_name=n) for t, n in zip(inputs, rebuilt[1], strict=True)]
        outputs = [replace(t, serving_name=n) for t, n in zip(outputs, rebuilt[2], strict=True)]
    description = _description(name, config["ProjectName"], config, source, inputs, outputs)
    replace(description, hls4ml_version=None).write(project_dir)  # whichever hls4ml wrote the project
    np.savez(project_dir / "weights.npz")


def _project_model_config(project):
    """The project's configuration (sources.project_config), refused when the model it names is not found."""
    config = project_config(project)
    for key in YAML_MODEL_KEYS:
        if isinstance(config.get(key), str) and not Path(config[key]).exists():
            raise ConversionError(f"the project's model ({key}: {config[key]}) is neither there nor in {project}")
    if not any(key in config for key in YAML_MODEL_KEYS):
        raise ConversionError("the project's configuration names no model")
    return config


def _rebuilt(world, project):
    """The project rebuilt from its configuration and model, (graph, input names, output names) or
    None, and why it is not the project's: None when hls4ml writes the very same firmware from them."""
    scratch = Path(tempfile.mkdtemp(prefix="faast-rebuild-"))
    try:
        rebuilt = world.graph_from_config(_project_model_config(project) | {"OutputDir": str(scratch)})
        rebuilt[0].write()
        difference = _first_difference(project / "firmware", scratch / "firmware")
    except (ConversionError, SourceError) as error:
        return None, f"hls4ml here cannot rebuild it: {error}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if difference:
        return rebuilt, f"hls4ml {_hls4ml_version()} writes a different firmware/{difference} from its configuration"
    return rebuilt, None


def _first_difference(ours, theirs):
    names = sorted({p.relative_to(ours) for p in ours.rglob("*") if p.is_file()})
    others = sorted({p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file()})
    if names != others:
        return str(next(iter(sorted(set(names) ^ set(others)))))
    return next((str(n) for n in names if (ours / n).read_bytes() != (theirs / n).read_bytes()), None)


# -- kernel.json and weights.npz --------------------------------------------------------------------


def _hls4ml_version():
    import hls4ml

    return hls4ml.__version__


def _description(name, project, config, source, inputs, outputs, layers=None, converted=None) -> KernelDescription:
    return KernelDescription(
        name=name,
        project=project,
        hls4ml_version=_hls4ml_version(),
        io_type=config.get("IOType", "io_parallel"),
        backend=config.get("Backend", "Vivado"),
        part=config.get("Part"),
        clock_period_ns=float(config["ClockPeriod"]) if config.get("ClockPeriod") is not None else None,
        source_kind=source.kind,
        source_path=source.path,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        layers=layers,
        serving=converted.serving if converted else {},
        fpga=converted.fpga if converted else {},
    )


def write_kernel(graph, project_dir, name, source, converted):
    """kernel.json and weights.npz of a written graph."""
    firmware = Path(project_dir) / "firmware"
    layers = None
    if graph.config.get_writer_config().get("WriteWeightsTxt", True):
        layers = tuple(_layer(layer) for layer in graph.get_layers())
        np.savez(Path(project_dir) / "weights.npz", **_weights(graph, firmware / "weights"), **_tables(graph, firmware))
    else:
        print("layers omitted from kernel.json: the emulator reads weights as hls4ml writes them with WriteWeightsTxt")
        np.savez(Path(project_dir) / "weights.npz")
    _description(
        name,
        graph.config.get_project_name(),
        graph.config.config | {"Backend": graph.config.backend.name},
        source,
        [_tensor(v, n) for v, n in zip(graph.get_input_variables(), converted.input_names, strict=True)],
        [_tensor(v, n) for v, n in zip(graph.get_output_variables(), converted.output_names, strict=True)],
        layers,
        converted,
    ).write(project_dir)


_NOT_ATTRIBUTES = {
    "config_cpp",
    "function_cpp",
    "include_header",
    "name",
    "class_name",
    "inputs",
    "outputs",
    "index",
    "trace",
}


def _layer(layer) -> Layer:
    """What the emulator needs of one layer, from hls4ml's graph: its class, wiring, C++ types
    (result_t, accum_t, ...), scalar attributes and weights (by the name csim loads them under); from
    the layer's generated configuration (generated_cpp): the types and templates only it names."""
    generated = generated_cpp.LayerConfig.of(layer.get_attr("config_cpp") or "")
    return Layer(
        name=layer.name,
        class_name=layer.class_name,
        inputs=tuple(layer.inputs),
        outputs=tuple(layer.outputs),
        # The C++ variable each output is (kernel.json's tensors name these) and its shape.
        variables=tuple(layer.get_output_variable(output).name for output in layer.outputs),
        shape=tuple(int(d) for d in layer.get_output_variable().shape),
        types={name: str(t.precision) for name, t in layer.types.items()} | generated.typedefs | _input_type(layer),
        attributes={
            k: tuple(v) if isinstance(v, list) else v
            for k, v in layer.attributes.items()
            if k not in _NOT_ATTRIBUTES
            and (
                isinstance(v, (bool, int, float, str))
                or isinstance(v, (list, tuple))
                and all(isinstance(i, int) for i in v)
            )
        },
        weights={key: weight.name for key, weight in layer.weights.items()},
        templates=generated.templates,
    )


def _input_type(layer):
    """The type of the tensor a layer reads (input_t), for C code that slices its bits."""
    variable = layer.get_input_variable() if layer.inputs else None
    return {} if variable is None else {"input_t": str(variable.type.precision)}


def _weights(graph, folder):
    """Every fixed-point weight as the C simulation loads it: the text file's doubles cast into the
    weight's type. Weights written otherwise (quantized_po2's {sign, exponent} pairs, compressed
    {row, column, weight} triplets) are left out: the emulator refuses their layers."""
    arrays = {}
    for layer in graph.get_layers():
        for weight in layer.weights.values():
            text = (folder / f"{weight.name}.txt").read_text().splitlines()[0]
            try:
                fixed = FixedType.parse(str(weight.type.precision))
                values = np.array([float(token) for token in text.split(",")])
            except ValueError:
                continue
            bits = fixed.width + (not fixed.signed)
            dtype = next(d for d in (np.int8, np.int16, np.int32, np.int64) if bits <= np.iinfo(d).bits)
            arrays[weight.name] = fixed.quantize(values).astype(dtype).reshape(np.shape(weight.data))
    return arrays


def _table_initialisers(layer):
    """The lookup tables a layer's C code fills at its first call: (the emulator's name for the table,
    hls4ml's initialiser call with {s} for the layer's config struct, table type, its size constant)."""
    if layer.class_name == "Softmax":
        implementation = str(layer.get_attr("implementation")).lower()
        if implementation == "legacy":
            return [
                ("exp_table", "init_exp_table_legacy<{s}, {s}::exp_table_size>(table)", "table_t", "exp_table_size"),
                ("inv_table", "init_invert_table_legacy<{s}, {s}::inv_table_size>(table)", "table_t", "inv_table_size"),
            ]
        exp_table = {
            "stable": "init_exp_table<{s}::inp_norm_t, {s}>(table, true)",  # addressed by max - x
            "latency": "init_exp_table<" + layer.get_input_variable().type.precision.definition_cpp() + ", {s}>(table)",
        }  # addressed by x itself
        return (
            [
                ("exp_table", exp_table[implementation], "exp_table_t", "exp_table_size"),
                ("inv_table", "init_invert_table<{s}::inv_inp_t, {s}>(table)", "inv_table_t", "inv_table_size"),
            ]
            if implementation in exp_table
            else []
        )
    if layer.class_name == "Activation" and str(layer.get_attr("activation")).lower() == "sigmoid":
        return [("table", "init_sigmoid_table<{s}, {s}::table_size>(table)", "table_t", "table_size")]
    return []


def _tables(graph, firmware):
    """Activation lookup tables exactly as the C code computes them: a small program built from the
    layer's own configuration runs hls4ml's table initialisers and prints the bit patterns."""
    tables = {}
    for layer in graph.get_layers():
        initialisers = _table_initialisers(layer)
        if not initialisers:
            continue
        config = layer.get_attr("config_cpp")
        struct = generated_cpp.LayerConfig.of(config).struct
        lines = []
        for _, call, table_type, size in initialisers:
            lines.append(f"""    {{
        static {struct}::{table_type} table[{struct}::{size}];
        nnet::{call.format(s=struct)};
        for (unsigned i = 0; i < {struct}::{size}; ++i)
            std::printf("%llu\\n", (unsigned long long)table[i].range(table[i].width - 1, 0).to_uint64());
        std::printf("end\\n");
    }}""")
        source = firmware / f"faast_tables_{layer.name}.cpp"
        source.write_text(
            '#include <cstdio>\n#include "ap_fixed.h"\n#include "defines.h"\n'
            '#include "nnet_utils/nnet_activation.h"\n' + config + "\nint main() {\n" + "\n".join(lines) + "\n}\n"
        )
        program = source.with_suffix("")
        subprocess.run(
            [
                "g++",
                "-std=c++17",
                "-O1",
                "-w",
                f"-I{firmware}",
                f"-I{firmware / 'ap_types'}",
                str(source),
                "-o",
                str(program),
            ],
            check=True,
        )
        output = subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout
        for (table, _, table_type, _), block in zip(initialisers, output.split("end"), strict=False):
            fixed = FixedType.parse(str(layer.types[table_type].precision))
            tables[f"{layer.name}.{table}"] = fixed.from_bits(np.array(block.split(), np.uint64))
        source.unlink()
        program.unlink()
    return tables


def _tensor(variable, serving_name) -> Tensor:
    return Tensor(
        variable.name,
        serving_name,
        tuple(int(d) for d in variable.shape),
        int(variable.size()),
        str(variable.type.precision),
        variable.type.name,
    )


# -- predict ----------------------------------------------------------------------------------------


def predict(world, source, inputs_npz, out_npz):
    """The source model's own outputs ("model/<name>", float64), its float reference's where it has
    one ("float/<name>") and what that reference is ("float_note")."""
    with np.load(inputs_npz) as archive:
        inputs = {name: archive[name] for name in archive.files}
    if source.kind == "hls4ml-yaml":
        outputs, names, floats, note = world.predict_config(resolved_yaml(source.path), inputs)
    elif source.kind == "hls4ml-project":
        outputs, names, floats, note = world.predict_config(_project_model_config(Path(source.path)), inputs)
    else:
        outputs, names, floats, note = world.predictors[source.kind](source, inputs)
    arrays = {f"model/{n}": np.asarray(v, np.float64) for n, v in zip(names, outputs, strict=True)}
    if floats is not None:
        arrays |= {f"float/{n}": np.asarray(v, np.float64) for n, v in zip(names, floats, strict=True)}
    np.savez(out_npz, **arrays, float_note=np.array(note))


def _tf_world():
    from . import toolchain  # noqa: F401  first: QKeras needs tf_keras as `keras` before hls4ml loads

    return World(
        converters={"kernel": convert_kernel, "keras": convert_keras, "onnx": convert_onnx},
        predictors={
            "kernel": run_kernel,
            "keras": lambda source, inputs: run_keras_v2(load_keras_v2(source.path, source.weights), inputs),
            "onnx": lambda source, inputs: run_onnx(_onnx_model(source.path), inputs),
        },
        graph_from_config=tf_graph_from_config,
        predict_config=tf_predict_config,
    )


if __name__ == "__main__":
    main(_tf_world)
