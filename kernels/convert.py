"""Child process of `faast build`: QKeras model → hls4ml project, kernel.json (tensors and every
layer's class, wiring, C++ types and attributes) and weights.npz (weight mantissas as the C
simulation loads them, activation tables as its initialisers fill them): the emulator's input.

Run as `python -m faast.kernels.convert KERNEL_DIR PROJECT_DIR [VARIANT]`. It is the only code that
imports hls4ml (through .toolchain), so the build's own process and the server stay free of TensorFlow.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from faast.host.fixed import FixedType

from .spec import KernelSpec
from .toolchain import hls4ml, tf_keras


def hls_config(spec, model):
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


def convert(kernel_dir, project_dir, variant=None):
    spec = KernelSpec.read(kernel_dir, variant)
    tf_keras.utils.set_random_seed(0)  # an untrained variant's initial weights are reproducible
    model = spec.model()
    settings = spec.hls4ml
    graph = hls4ml.converters.convert_from_keras_model(
        model,
        hls_config=hls_config(spec, model),
        output_dir=str(project_dir),
        project_name=spec.name,
        backend=settings["backend"],
        io_type=settings["io_type"],
        part=settings["part"],
        clock_period=settings["clock_period_ns"],
    )
    graph.write()
    description = {
        "name": spec.name,
        "project": spec.name,
        "hls4ml_version": hls4ml.__version__,
        "io_type": settings["io_type"],
        "inputs": [_tensor(v) for v in graph.get_input_variables()],
        "outputs": [_tensor(v) for v in graph.get_output_variables()],
        "layers": [_layer(layer) for layer in graph.get_layers()],
    }
    (Path(project_dir) / "kernel.json").write_text(json.dumps(description, indent=2) + "\n")
    firmware = Path(project_dir) / "firmware"
    np.savez(Path(project_dir) / "weights.npz", **_weights(graph, firmware / "weights"), **_tables(graph, firmware))


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


def _layer(layer):
    """What the emulator needs of one layer: its class, wiring, C++ types (result_t, accum_t, ...),
    scalar attributes, weights (by the name csim loads them under) and the product and kernel
    templates hls4ml picked."""
    config = layer.get_attr("config_cpp") or ""
    templates = dict(re.findall(r"using (product|kernel) = nnet::(?:product::)?(\w+)", config))
    typedefs = dict((name, text) for text, name in re.findall(r"typedef (ap_u?fixed<[^;]*>) (\w+);", config))
    return {
        "name": layer.name,
        "class": layer.class_name,
        "inputs": list(layer.inputs),
        "outputs": list(layer.outputs),
        "types": {name: str(t.precision) for name, t in layer.types.items()} | typedefs | _input_type(layer),
        "attributes": {
            k: v
            for k, v in layer.attributes.items()
            if k not in _NOT_ATTRIBUTES
            and (
                isinstance(v, (bool, int, float, str))
                or isinstance(v, (list, tuple))
                and all(isinstance(i, int) for i in v)
            )
        },
        "weights": {key: weight.name for key, weight in layer.weights.items()},
        "templates": templates,
    }


def _input_type(layer):
    """The type of the tensor a layer reads (input_t), for C code that slices its bits."""
    variable = layer.get_input_variable() if layer.inputs else None
    return {} if variable is None else {"input_t": str(variable.type.precision)}


def _weights(graph, folder):
    """Every weight as the C simulation loads it: the text file's doubles cast into the weight's type."""
    arrays = {}
    for layer in graph.get_layers():
        for weight in layer.weights.values():
            text = (folder / f"{weight.name}.txt").read_text().splitlines()[0]
            values = np.array([float(token) for token in text.split(",")])
            fixed = FixedType.parse(str(weight.type.precision))
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
        struct = re.search(r"struct (\w+)\s*:", config).group(1)
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


def _tensor(variable):
    return {
        "name": variable.name,
        "shape": [int(d) for d in variable.shape],
        "size": int(variable.size()),
        "type": str(variable.type.precision),
    }


if __name__ == "__main__":
    convert(*sys.argv[1:])
