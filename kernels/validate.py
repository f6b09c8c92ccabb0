"""`faast validate SOURCE [--data FILE.npz] [--task regression|classification] [--url HOST:PORT]
[--out DIR]`: what quantization did to the physics, with a verdict.

SOURCE is anything `faast build` takes (kernels/sources.py). It is built into DIR/repository, then
on the same held-out inputs these stages are compared:
  float   the float reference, where the source has one: a QKeras model with its quantizers removed
          (same trained weights, float arithmetic), a QONNX model without its quantizer nodes, a
          model without quantizers itself; none for HGQ2, whose quantizers are part of its layers
  qkeras  the source model's own outputs (QKeras predict; "model" when the source is not QKeras:
          Keras, HGQ2, ONNX / QONNX execution), from the predict child of its Keras world
  kernel  the built kernel's fixed-point outputs: the emulator (bit-equal to the C simulation, and
          checked against it on the first csim_samples inputs), or the hls4ml C simulation itself
          for a kernel the emulator does not cover
  served  optionally, a running faast (any device) through the Triton protocol
plus, for tf_keras / QKeras models, hls4ml's per-layer trace of the very configuration the kernel
was built from against the model's intermediate outputs, and each layer's fixed-point range.

A kernel folder brings its data (data.py) and tolerances (kernel.toml [validation]); any other
source takes --data (inputs "x", or one array per model input named as the model names it, and the
truth "y" of its first output) and --task, with the tolerances of VALIDATION_DEFAULTS. Writes
report.json, report.md, report.html and PNG plots into --out; exits 1 naming the failing checks, 2
with one line `error: ...` when it cannot validate at all.
"""

import html
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from faast.contract.errors import DeviceError
from faast.contract.fixed import Overflow
from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice
from faast.host.emulator import EmulatorDevice

from .build import VERSION, BuildError, build
from .sources import SourceError, identify
from .spec import KernelSpec

TASKS = ("regression", "classification")
# Tolerances of a source without a kernel.toml (a kernel folder's [validation] table is merged over
# them): FACILE's [validation] values, and ResNet-50's AUC drop.
VALIDATION_DEFAULTS = {
    "trace_samples": 2000,  # inputs traced layer by layer through an hls4ml C simulation
    "csim_samples": None,  # kernel outputs checked against the C simulation itself; None: every input
    "energy_bins": None,  # regression: bin edges of |y|; None: regression_bins (REGRESSION_QUANTILES)
    "min_entries": 200,  # bins with fewer entries are reported, not judged
    "max_resolution_increase": 0.02,  # kernel relative resolution may exceed the reference's by 2 points per bin
    "max_auc_drop": 0.01,  # kernel AUC (per class) may be at most this far below the reference's
    "max_out_of_range_fraction": 0.001,  # per layer: values the fixed-point type cannot hold
    "layer_relative_tolerance": 0.1,  # per value: off by more than 2 LSB and 10% of max(|value|, layer std)
    "max_layer_mismatch_fraction": 0.02,  # a layer with more differing values than this diverges
}
# Default regression bins: between these quantiles of |y|, the last up to its largest value. The lowest
# tenth, where a ratio to the truth says little, is left out.
REGRESSION_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)


class ValidationError(Exception):
    """The source cannot be validated as asked (data, task, a server's answer); one line says why."""


def validate(source, data=None, url=None, out="validation", task=None, name=None, weights=None, hls4ml_config=None):
    """Build `source` into out/repository, compare its stages and write the report; the exit status:
    0 every check passed, 1 some failed, 2 it could not validate (printed as `error: ...`)."""
    try:
        return _validate(source, data, url, Path(out).resolve(), task, name, weights, hls4ml_config)
    except (BuildError, SourceError, ValidationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _validate(source, data, url, out, task, name, weights, hls4ml_config):
    found = identify(source, weights=weights, hls4ml_config=hls4ml_config)
    if task is not None and task not in TASKS:
        raise ValidationError(f"unknown task '{task}': choose {' or '.join(TASKS)}")
    settings = dict(VALIDATION_DEFAULTS)
    if found.kind == "kernel":
        spec = KernelSpec.read(found.path)
        settings |= spec.config["validation"]
    settings["task"] = task or settings.get("task")
    arrays, where = _held_out(found, data, settings)
    truth = _truth(arrays, settings, where)  # before the build: a mistake here is told at once
    out.mkdir(parents=True, exist_ok=True)

    repository = out / "repository"
    model_dir = build(found.path, repository, name=name, weights=weights, hls4ml_config=hls4ml_config, replace=True)
    version = model_dir / VERSION
    description = KernelDescription.read(version)
    inputs = model_inputs(arrays, description.inputs, where)
    samples = len(next(iter(inputs.values())))
    if truth is not None and len(truth) != samples:
        raise ValidationError(f"{where} holds {len(truth)} rows of y for {samples} rows of inputs")
    print(f"validating {model_dir.name} on {samples} held-out inputs", flush=True)

    outputs, floats, float_note = source_outputs(found, inputs, description.outputs)
    model_stage = "qkeras" if "QKeras" in float_note else "model"
    predictions = {}
    if floats is not None:
        predictions["float"] = floats
    predictions[model_stage] = outputs
    rows = np.concatenate([inputs[t.serving_name].reshape(samples, -1) for t in description.inputs], axis=1)
    predictions["kernel"], report_kernel = kernel_outputs(description, rows, settings["csim_samples"] or samples)
    predictions = {k: np.asarray(v, np.float32).reshape(samples, -1) for k, v in predictions.items()}
    reference = "float" if floats is not None else model_stage

    report = {
        "kernel": model_dir.name,
        "source": {"kind": found.kind, "path": found.path},
        "samples": samples,
        "stages": list(predictions),
        "float_model": float_note,
        "kernel_outputs": report_kernel,
        "outputs": output_differences(predictions, description.outputs, model_stage),
        "task": settings["task"],
    }
    report["layers"], skipped = layer_table(found, description, version, inputs, out / "trace_project", settings)
    if skipped:
        report["layers_skipped"] = skipped
        print(f"no per-layer trace: {skipped}", flush=True)
    report["first_divergence"] = next(
        (
            row["layer"]
            for row in report["layers"]
            if row.get("mismatch_fraction", 0) > settings["max_layer_mismatch_fraction"]
        ),
        None,
    )
    first_output = description.outputs[0].size
    if truth is not None and settings["task"] == "regression" and truth[0].size > first_output:
        raise ValidationError(
            f"{where} holds {truth[0].size} truth values per row; the model's first output has {first_output}"
        )
    physics_predictions = {k: v[:, :first_output] for k, v in predictions.items()}
    if settings["task"] == "regression":
        bins = settings["energy_bins"] or regression_bins(truth)
        report["physics"] = regression_physics(truth, physics_predictions, bins, settings["min_entries"])
    elif settings["task"] == "classification":
        report["physics"] = classification_physics(truth.astype(int).ravel(), physics_predictions)
    else:
        report["physics"] = None
    if url:
        served = served_outputs(url, model_dir.name, [inputs[t.serving_name] for t in description.inputs])
        mismatches = int(np.count_nonzero(served.view(np.uint32) != predictions["kernel"].view(np.uint32)))
        report["served"] = {"url": url, "values": int(served.size), "mismatches": mismatches}
        predictions["served"] = served
    report["checks"] = checks_for(report, settings, reference, model_stage)
    report["passed"] = all(check["passed"] for check in report["checks"])
    report["plots"] = _plots(report, predictions, first_output, truth, out, settings, reference, model_stage)
    _write(report, out)

    failed = [check for check in report["checks"] if not check["passed"]]
    for check in failed:
        print(f"FAILED {check['check']}: {check['detail']}")
    print(
        f"{'PASS' if not failed else 'FAIL'}: {len(report['checks']) - len(failed)} of {len(report['checks'])}"
        f" checks passed; report in {out / 'report.html'}"
    )
    return 0 if not failed else 1


# -- data -------------------------------------------------------------------------------------------


def _held_out(found, data, settings):
    """The arrays of --data, or a kernel folder's own generator with its held-out seed; and where they
    come from, to name in messages."""
    if data:
        try:
            with np.load(data) as archive:
                return {key: archive[key] for key in archive.files}, f"--data {data}"
        except (OSError, ValueError) as error:
            raise ValidationError(f"cannot read --data {data}: {error}") from None
    if found.kind != "kernel":
        raise ValidationError(
            f"{Path(found.path).name} brings no data: give --data FILE.npz with its inputs (x, or one array per"
            " model input) and, for the physics checks, the truth y"
        )
    x, y = KernelSpec.read(found.path).load_entry("data")(settings["samples"], seed=settings["seed"])
    return {"x": x, "y": y}, "the kernel's data.py"


def model_inputs(arrays, tensors, where):
    """The model's inputs by serving name, float32 rows: "x" for a one-input model, else one array per
    input named as the model names it."""
    if len(tensors) == 1 and "x" in arrays:
        given = {tensors[0].serving_name: arrays["x"]}
    else:
        missing = [t.serving_name for t in tensors if t.serving_name not in arrays]
        if missing:
            wanted = "x (or " + tensors[0].serving_name + ")" if len(tensors) == 1 else ", ".join(missing)
            raise ValidationError(f"{where} has no input {wanted}; it holds {', '.join(arrays) or 'nothing'}")
        given = {t.serving_name: arrays[t.serving_name] for t in tensors}
    samples = {len(values) for values in given.values()}
    if len(samples) != 1:
        raise ValidationError(f"the inputs in {where} have different numbers of rows: {sorted(samples)}")
    for tensor in tensors:
        values = given[tensor.serving_name]
        if values[0].size != tensor.size:
            raise ValidationError(
                f"input {tensor.serving_name} in {where} has {values[0].size} values per row; the model"
                f" takes {tensor.size} (shape {list(tensor.shape)})"
            )
    return {name: np.ascontiguousarray(values, np.float32) for name, values in given.items()}


def _truth(arrays, settings, where):
    """The truth y, which a task needs and which needs a task."""
    y = arrays.get("y")
    if settings["task"] is None and y is not None:
        raise ValidationError(f"{where} holds the truth y: say what it is with --task {' or '.join(TASKS)}")
    if settings["task"] is not None and y is None:
        raise ValidationError(f"--task {settings['task']} needs the truth: an array y in {where}")
    return None if y is None else np.asarray(y)


# -- the stages -------------------------------------------------------------------------------------


def source_outputs(source, inputs, tensors):
    """The source model's own outputs and its float reference's (or None), columns concatenated in the
    kernel's output order, and what the reference is: from the predict child of the source's Keras
    world (kernels/convert.py), so TensorFlow and Keras 3 each stay in a process of their own."""
    with tempfile.TemporaryDirectory(prefix="faast-validate-") as scratch:
        inputs_npz, out_npz = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
        np.savez(inputs_npz, **inputs)
        child = subprocess.run(
            [sys.executable, "-P", "-m", source.converter, "predict", source.to_json(), str(inputs_npz), str(out_npz)],
            stderr=subprocess.PIPE,
            text=True,
        )
        if child.returncode != 0:
            lines = child.stderr.strip().splitlines()
            reason = next((line[len("error: ") :] for line in reversed(lines) if line.startswith("error: ")), None)
            if reason is None:
                sys.stderr.write(child.stderr)
                reason = f"running {source.path} failed (exit status {child.returncode}); see the output above"
            raise ValidationError(reason)
        with np.load(out_npz) as archive:
            arrays = {key: archive[key] for key in archive.files}
    names = [t.serving_name for t in tensors]
    given = [key.removeprefix("model/") for key in arrays if key.startswith("model/")]
    if sorted(given) != sorted(names):
        raise ValidationError(f"the model's outputs are {', '.join(given)}; the kernel's are {', '.join(names)}")
    samples = len(next(iter(inputs.values())))

    def stage(prefix):
        return np.concatenate([arrays[f"{prefix}/{n}"].reshape(samples, -1) for n in names], axis=1)

    floats = stage("float") if f"float/{names[0]}" in arrays else None
    return stage("model"), floats, str(arrays["float_note"])


def kernel_outputs(description, rows, csim_samples):
    """The kernel's outputs for `rows` (every input's elements side by side): from the emulator,
    cross-checked against the C simulation on the first csim_samples rows, or from the C simulation
    alone when the emulator cannot run it."""
    csim = CsimDevice(description)
    try:
        emulator = EmulatorDevice(description)
    except DeviceError as error:
        print(f"kernel outputs from the C simulation: the emulator cannot run this kernel ({error})", flush=True)
        outputs = csim.run(rows)
        csim.close()
        return outputs, {"device": "csim"}
    outputs = emulator.run(rows)
    emulator.close()
    checked = csim.run(rows[:csim_samples])
    csim.close()
    mismatches = int(np.count_nonzero(checked.view(np.uint32) != outputs[:csim_samples].view(np.uint32)))
    return outputs, {"device": "emulator", "csim_values": int(checked.size), "csim_mismatches": mismatches}


def served_outputs(url, model_name, inputs):
    """Outputs of a running server over Triton's gRPC protocol, columns in the model's output order
    (faast's own stubs: tritonclient registers the same protobuf names and cannot share a process with
    faast.protocol)."""
    import grpc

    from faast.grpc_server import MESSAGE_LIMIT_OPTIONS
    from faast.protocol import service, service_grpc

    samples = len(inputs[0])
    with grpc.insecure_channel(url, options=MESSAGE_LIMIT_OPTIONS) as channel:
        stub = service_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(service.ModelMetadataRequest(name=model_name))
        max_batch = stub.ModelConfig(service.ModelConfigRequest(name=model_name)).config.max_batch_size or samples
        declared = [o.name for o in metadata.outputs if o.datatype != "FP32"]
        if declared:
            raise ValidationError(
                f"model {model_name} at {url} answers {', '.join(declared)} in other types than FP32: --url compares"
                " FP32 outputs with the kernel's, bit for bit"
            )
        parts = {o.name: [] for o in metadata.outputs}
        for start in range(0, samples, max_batch):
            request = service.ModelInferRequest(model_name=model_name)
            for tensor, values in zip(metadata.inputs, inputs, strict=True):
                rows = np.ascontiguousarray(values[start : start + max_batch], dtype=np.float32)
                request.inputs.add(name=tensor.name, datatype="FP32", shape=rows.shape)
                request.raw_input_contents.append(rows.tobytes())
            response = stub.ModelInfer(request)
            for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
                parts[output.name].append(np.frombuffer(raw, "<f4").reshape(output.shape[0], -1))
    return np.concatenate([np.concatenate(parts[o.name]) for o in metadata.outputs], axis=1)


# -- comparisons ------------------------------------------------------------------------------------


def _differences(value, reference):
    diff = np.abs(value.astype(np.float64) - reference)
    relative = diff / np.maximum(np.abs(reference), 1e-6)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(relative.max()),
        "mean_rel": float(relative.mean()),
    }


def output_differences(predictions, tensors, model_stage):
    """Each stage against the float reference and the kernel against the model, per output of a
    multi-output model ("<comparison> (<output>)")."""
    pairs = [(stage, "float") for stage in (model_stage, "kernel") if "float" in predictions]
    pairs.append(("kernel", model_stage))
    table, start = {}, 0
    for tensor in tensors:
        columns = slice(start, start + tensor.size)
        start += tensor.size
        suffix = f" ({tensor.serving_name})" if len(tensors) > 1 else ""
        for stage, reference in pairs:
            table[f"{stage} vs {reference}{suffix}"] = _differences(
                predictions[stage][:, columns], predictions[reference][:, columns]
            )
    return table


def regression_bins(truth):
    """Edges at REGRESSION_QUANTILES of |y| and just above its largest value, to 3 significant digits."""
    magnitudes = np.abs(truth)
    edges = {float(f"{q:.3g}") for q in np.quantile(magnitudes, REGRESSION_QUANTILES)}
    top = float(magnitudes.max())
    step = 10.0 ** (np.floor(np.log10(top)) - 2) if top > 0 else 1.0
    return sorted(edges) + [float(f"{(np.floor(top / step) + 1) * step:.3g}")]


def regression_physics(truth, predictions, bins, min_entries):
    """Per bin of |y|: the response (median predicted / true) and relative resolution (68% half-width
    over the response) of each stage; a y with several columns is the truth of as many output columns."""
    truth = truth.reshape(len(truth), -1)
    columns = truth.shape[1]
    truth = truth.ravel()
    table = []
    for low, high in zip(bins[:-1], bins[1:], strict=True):
        selected = (np.abs(truth) >= low) & (np.abs(truth) < high)
        row = {"bin": [low, high], "entries": int(selected.sum())}
        for stage, values in predictions.items():
            values = values[:, :columns].ravel()
            ratio = values[selected] / truth[selected] if selected.any() else np.array([np.nan])
            response = float(np.median(ratio))
            q16, q84 = np.percentile(ratio, [16, 84])
            row[stage] = {"response": response, "resolution": float((q84 - q16) / 2 / response)}
        row["enough_entries"] = row["entries"] >= min_entries
        table.append(row)
    return table


def roc(labels, scores):
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    tpr = np.concatenate([[0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def classification_physics(labels, predictions):
    """Per stage: the AUC of the last score column (the positive class of a binary classifier) and the
    accuracy; with more than two classes also each class's AUC against the rest."""
    table = {}
    for stage, scores in predictions.items():
        _, _, auc = roc(labels, scores[:, -1])
        chosen = np.argmax(scores, axis=1) if scores.shape[1] > 1 else (scores[:, 0] > 0.5).astype(int)
        table[stage] = {"auc": auc, "accuracy": float(np.mean(chosen == labels))}
        if scores.shape[1] > 2:
            table[stage]["auc_per_class"] = [
                roc((labels == c).astype(int), scores[:, c])[2] for c in range(scores.shape[1])
            ]
    return table


# -- the per-layer trace ----------------------------------------------------------------------------


def layer_table(found, description, version, inputs, workdir, settings):
    """hls4ml's trace of the configuration the kernel was built from (its project's hls4ml_config.yml)
    against the Keras model's intermediate outputs per layer, and how many values each layer's type
    cannot hold; ([], why) where there is no tf_keras model to trace against."""
    if found.converter != "faast.kernels.convert":
        return (
            [],
            "a Keras 3 model (HGQ2, plain Keras 3) runs in a process of its own; the trace compares tf_keras layers",
        )
    if found.kind == "onnx":
        return [], "the model is an ONNX model; hls4ml's trace is compared with Keras layers"
    if not description.layers:
        return [], "kernel.json describes no layers (the emulator does not serve this kernel)"
    from . import toolchain  # first: QKeras needs tf_keras as `keras` before hls4ml loads
    from .convert import ConversionError, load_keras_v2, project_config, tf_graph_from_config

    try:
        config = project_config(version / "hls4ml") | {"OutputDir": str(workdir)}
        if "OnnxModel" in config:
            return [], "the model is an ONNX model; hls4ml's trace is compared with Keras layers"
        if "KerasJson" in config:
            model = load_keras_v2(config["KerasJson"], config["KerasH5"])
        else:
            model = load_keras_v2(config.get("KerasModel") or config["KerasH5"])
        if "KerasModel" in config:
            config["KerasModel"] = model
        graph, _, _ = tf_graph_from_config(config)
    except (ConversionError, SourceError) as error:
        return [], f"the built project's model and configuration do not convert again here: {error}"
    for layer in graph.get_layers():  # the model's layers; not the stream clones hls4ml inserts
        layer.set_attr("trace", layer.class_name != "Clone")
    traced = min(len(next(iter(inputs.values()))), settings["trace_samples"])
    # The kernel's inputs are the model's, in its order (hls4ml takes Keras' input layers in order).
    given = [inputs[t.serving_name][:traced] for t in description.inputs]
    rows = [np.ascontiguousarray(x.reshape(traced, -1)) for x in given]
    _, trace = graph.trace(rows if len(rows) > 1 else rows[0])
    keras = _intermediate(toolchain.tf_keras, model, given)
    table = []
    for layer in description.layers:
        name = layer.name
        reference = keras.get(name, keras.get(name.removesuffix("_linear")))
        if reference is None or "result_t" not in layer.types:
            continue
        fixed = layer.type("result_t")
        low = -(2.0 ** (fixed.integer - 1)) if fixed.signed else 0.0
        high = (2.0 ** (fixed.integer - 1) if fixed.signed else 2.0**fixed.integer) - 2.0**-fixed.fraction
        outside = int(np.count_nonzero((reference < low) | (reference > high)))
        row = {
            "layer": name,
            "type": str(fixed),
            "range": [low, high],
            "lsb": 2.0**-fixed.fraction,
            "out_of_range": outside,
            "out_of_range_fraction": outside / reference.size,
            "out_of_range_behaviour": "wraps" if fixed.overflow is Overflow.WRAP else "saturates",
        }
        if name in trace:
            values = np.asarray(trace[name]).reshape(reference.shape)
            # A value differs when it is off by more than 2 LSB and by more than the relative tolerance
            # of its own size or of the layer's typical size (so values near zero do not count).
            scale = np.maximum(np.abs(reference), np.std(reference))
            tolerance = np.maximum(2 * row["lsb"], settings["layer_relative_tolerance"] * scale)
            row["mismatch_fraction"] = float(np.mean(np.abs(values - reference) > tolerance))
            row["max_abs_diff"] = float(np.max(np.abs(values - reference)))
        table.append(row)
    return table, None


def _intermediate(tf_keras, model, inputs):
    """Every layer's output (an input layer's: its input), one row per input."""
    samples = len(inputs[0])
    feeds = [
        np.asarray(x, np.float32).reshape(samples, *t.shape[1:]) for x, t in zip(inputs, model.inputs, strict=True)
    ]
    result = {name: x.reshape(samples, -1) for name, x in zip(model.input_names, feeds, strict=True)}
    layers = [layer for layer in model.layers if layer.name not in result]
    values = tf_keras.Model(model.inputs, [layer.output for layer in layers]).predict(feeds, batch_size=4096, verbose=0)
    values = values if isinstance(values, list) else [values]
    result |= {layer.name: np.asarray(v).reshape(samples, -1) for layer, v in zip(layers, values, strict=True)}
    return result


# -- the verdict ------------------------------------------------------------------------------------


def checks_for(report, settings, reference, model_stage):
    checks = []
    for row in report["layers"]:
        limit = settings["max_out_of_range_fraction"]
        checks.append(
            {
                "check": f"range of layer {row['layer']}",
                "passed": row["out_of_range_fraction"] <= limit,
                "detail": f"{row['out_of_range']} values outside {row['type']} ({row['out_of_range_behaviour']})",
            }
        )
    if report["layers"]:
        divergence = report["first_divergence"]
        checks.append(
            {
                "check": f"hls4ml trace follows {'QKeras' if model_stage == 'qkeras' else 'Keras'} in every layer",
                "passed": divergence is None,
                "detail": f"first divergence at layer {divergence}" if divergence else "no layer diverges",
            }
        )
    if settings["task"] == "regression":
        for row in report["physics"]:
            if not row["enough_entries"]:
                continue
            allowed = row[reference]["resolution"] + settings["max_resolution_increase"]
            checks.append(
                {
                    "check": f"resolution in {row['bin'][0]}-{row['bin'][1]}",
                    "passed": row["kernel"]["resolution"] <= allowed,
                    "detail": f"kernel {row['kernel']['resolution']:.4f}, {reference}"
                    f" {row[reference]['resolution']:.4f}",
                }
            )
    elif settings["task"] == "classification":
        kernel, judged = report["physics"]["kernel"], report["physics"][reference]
        pairs = [("kernel AUC", kernel["auc"], judged["auc"])]
        if "auc_per_class" in kernel:
            pairs = [
                (f"kernel AUC of class {c}", auc, judged["auc_per_class"][c])
                for c, auc in enumerate(kernel["auc_per_class"])
            ]
        for check, auc, reference_auc in pairs:
            checks.append(
                {
                    "check": check,
                    "passed": auc >= reference_auc - settings["max_auc_drop"],
                    "detail": f"kernel {auc:.4f}, {reference} {reference_auc:.4f}",
                }
            )
    csim = report["kernel_outputs"]
    if "csim_mismatches" in csim:
        checks.append(
            {
                "check": "emulator == C simulation, bit for bit",
                "passed": csim["csim_mismatches"] == 0,
                "detail": f"{csim['csim_mismatches']} of {csim['csim_values']} values differ",
            }
        )
    if "served" in report:
        checks.append(
            {
                "check": "served == kernel, bit for bit",
                "passed": report["served"]["mismatches"] == 0,
                "detail": f"{report['served']['mismatches']} of {report['served']['values']} values differ",
            }
        )
    return checks


# -- the report -------------------------------------------------------------------------------------


def _plots(report, predictions, first_output, truth, out, settings, reference, model_stage):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    files = []
    stages = report["stages"]
    if report["physics"] is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        if settings["task"] == "regression":
            bins = [row["bin"] for row in report["physics"]]
            centres = [np.mean(b) for b in bins]
            for stage in stages:
                axes[0].plot(centres, [row[stage]["response"] for row in report["physics"]], "o-", label=stage)
                axes[1].plot(centres, [row[stage]["resolution"] for row in report["physics"]], "o-", label=stage)
            for ax, what in zip(
                axes, ("response (median predicted / true)", "relative resolution (68% half-width)"), strict=True
            ):
                if bins[0][0] > 0:
                    ax.set_xscale("log")
                ax.set_xlabel("true value |y| (bin)")
                ax.set_ylabel(what)
                ax.legend()
        else:
            for stage in stages:
                fpr, tpr, auc = roc(truth.astype(int).ravel(), predictions[stage][:, first_output - 1])
                axes[0].plot(fpr, tpr, label=f"{stage} (AUC {auc:.4f})")
            axes[0].set_xlabel("false positive rate")
            axes[0].set_ylabel("true positive rate")
            axes[0].legend()
            axes[1].bar(stages, [report["physics"][s]["accuracy"] for s in stages])
            axes[1].set_ylabel("accuracy")
        fig.tight_layout()
        fig.savefig(out / "physics.png", dpi=90)
        files.append("physics.png")
        plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage in stages:
        if stage not in (reference, "served"):
            axes[0].hist(
                (predictions[stage] - predictions[reference]).ravel(),
                bins=100,
                histtype="step",
                label=f"{stage} - {reference}",
            )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("output difference")
    axes[0].legend()
    names = [row["layer"] for row in report["layers"]]
    axes[1].bar(names, [row["out_of_range_fraction"] for row in report["layers"]], label="outside type range")
    axes[1].bar(
        names,
        [row.get("mismatch_fraction", 0) for row in report["layers"]],
        alpha=0.5,
        label=f"trace differs from {'QKeras' if model_stage == 'qkeras' else 'Keras'}",
    )
    axes[1].tick_params(axis="x", rotation=90)
    axes[1].set_ylabel("fraction of values")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "layers.png", dpi=90)
    files.append("layers.png")
    plt.close(fig)
    return files


def _write(report, out):
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    source = report["source"]
    lines = [
        f"# Validation of kernel `{report['kernel']}`: {'PASS' if report['passed'] else 'FAIL'}",
        "",
        f"Source: {source['kind']} {source['path']}. {report['samples']} held-out inputs."
        f" Stages: {', '.join(report['stages'])}. Float model: {report['float_model']}.",
        "",
    ]
    if report["physics"] is None:
        lines += ["No physics checks: no --task and truth y were given.", ""]
    lines += ["## Checks", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", "## Outputs", "", "| comparison | max abs | mean abs | max rel | mean rel |", "|---|---|---|---|---|"]
    lines += [
        f"| {k} | {v['max_abs']:.4g} | {v['mean_abs']:.4g} | {v['max_rel']:.4g} | {v['mean_rel']:.4g} |"
        for k, v in report["outputs"].items()
    ]
    lines += ["", f"## Layers (first divergence: {report['first_divergence'] or 'none'})", ""]
    if "layers_skipped" in report:
        lines += [f"No per-layer trace: {report['layers_skipped']}."]
    else:
        lines += ["| layer | type | outside range | trace differs | max abs diff |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['layer']} | `{r['type']}` | {r['out_of_range']} ({r['out_of_range_behaviour']}) | "
            f"{r.get('mismatch_fraction', float('nan')):.4f} | {r.get('max_abs_diff', float('nan')):.4g} |"
            for r in report["layers"]
        ]
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in report["plots"]]
    markdown = "\n".join(lines) + "\n"
    (out / "report.md").write_text(markdown)
    body = []
    for line in markdown.splitlines():
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            body.append(f'<img src="{html.escape(name)}">')
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
            body.append(f"<tr>{cells}</tr>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>faast validate</title>"
        "<style>td{border:1px solid #ccc;padding:2px 6px}</style>\n" + "\n".join(body) + "\n"
    )
