"""`faast validate KERNEL [--data FILE] [--url HOST:PORT] [--out DIR]`: what quantization did to
the physics, with a verdict.

On the same held-out inputs it runs four stages and compares them:
  float   the QKeras model with its quantizers removed (same trained weights, float arithmetic)
  qkeras  the quantization-aware QKeras model
  kernel  the built kernel's fixed-point outputs: the emulator (bit-equal to the C simulation, and
          checked against it on the first [validation] csim_samples inputs), or the hls4ml C
          simulation itself for a kernel the emulator does not cover
  served  optionally, a running faast (any device) through the Triton protocol
plus, per layer, hls4ml's trace against QKeras' intermediate outputs and each layer's fixed-point
range. Tolerances come from the kernel folder's [validation] table. Writes report.json, report.md,
report.html and PNG plots into --out; exits non-zero naming the failing checks.
"""

import html
import json
from pathlib import Path

import numpy as np

from faast.host.csim import CsimDevice
from faast.host.device import DeviceError, KernelDescription
from faast.host.emulator import EmulatorDevice
from faast.host.fixed import FixedType

from .build import VERSION, build
from .convert import hls_config
from .spec import KernelSpec
from .toolchain import hls4ml, qkeras, tf_keras

STAGES = ("float", "qkeras", "kernel")


def dequantize(model):
    """The float twin: every QKeras layer replaced by its Keras counterpart, weights unquantized."""
    replace = {
        "QDense": "Dense",
        "QConv2D": "Conv2D",
        "QActivation": "Activation",
        "QBatchNormalization": "BatchNormalization",
        "QAveragePooling2D": "AveragePooling2D",
        "QGlobalAveragePooling2D": "GlobalAveragePooling2D",
    }
    config = model.get_config()
    for layer in config["layers"]:
        name = layer["class_name"]
        if name not in replace:
            continue
        layer["class_name"] = replace[name]
        settings = layer["config"]
        # Quantizers and QKeras' own initializers/constraints go; the trained weights are copied below.
        for key in [k for k in settings if k.endswith(("quantizer", "range", "initializer", "constraint"))]:
            del settings[key]
        if name == "QActivation":
            activation = str(settings["activation"])
            settings["activation"] = "relu" if "relu" in activation else activation.split("(")[0]
    twin = tf_keras.Model.from_config(config)
    for layer in twin.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return twin


def _intermediate(model, x):
    outputs = [layer.output for layer in model.layers[1:]]
    values = tf_keras.Model(model.inputs, outputs).predict(x, batch_size=4096, verbose=0)
    result = {layer.name: np.asarray(v).reshape(len(x), -1) for layer, v in zip(model.layers[1:], values, strict=False)}
    result[model.layers[0].name] = np.asarray(x).reshape(len(x), -1)
    return result


def _differences(value, reference):
    diff = np.abs(value.astype(np.float64) - reference)
    relative = diff / np.maximum(np.abs(reference), 1e-6)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(relative.max()),
        "mean_rel": float(relative.mean()),
    }


def layer_table(spec, model, x, description, workdir, settings):
    """hls4ml trace vs QKeras per layer, and how many values each layer's type cannot hold."""
    config = hls_config(spec, model)
    for layer in config["LayerName"].values():
        layer["Trace"] = True
    hls = spec.hls4ml
    graph = hls4ml.converters.convert_from_keras_model(
        model,
        hls_config=config,
        output_dir=str(workdir),
        project_name=spec.name,
        backend=hls["backend"],
        io_type=hls["io_type"],
        part=hls["part"],
        clock_period=hls["clock_period_ns"],
    )
    graph.compile()
    _, trace = graph.trace(np.ascontiguousarray(x, dtype=np.float32))
    keras = _intermediate(model, x)
    rows = []
    for layer in description["layers"]:
        name = layer["name"]
        reference = keras.get(name, keras.get(name.removesuffix("_linear")))
        if reference is None or "result_t" not in layer["types"]:
            continue
        fixed = FixedType.parse(layer["types"]["result_t"])
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
            "out_of_range_behaviour": "saturates" if fixed.overflow.startswith("SAT") else "wraps",
        }
        if name in trace:
            traced = np.asarray(trace[name]).reshape(reference.shape)
            # A value differs when it is off by more than 2 LSB and by more than the relative tolerance
            # of its own size or of the layer's typical size (so values near zero do not count).
            scale = np.maximum(np.abs(reference), np.std(reference))
            tolerance = np.maximum(2 * row["lsb"], settings["layer_relative_tolerance"] * scale)
            row["mismatch_fraction"] = float(np.mean(np.abs(traced - reference) > tolerance))
            row["max_abs_diff"] = float(np.max(np.abs(traced - reference)))
        rows.append(row)
    return rows


def regression_physics(truth, predictions, bins, min_entries):
    table = []
    for low, high in zip(bins[:-1], bins[1:], strict=True):
        selected = (truth >= low) & (truth < high)
        row = {"bin": [low, high], "entries": int(selected.sum())}
        for stage, values in predictions.items():
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
    table = {}
    for stage, scores in predictions.items():
        _, _, auc = roc(labels, scores[:, -1])
        table[stage] = {"auc": auc, "accuracy": float(np.mean(np.argmax(scores, axis=1) == labels))}
    return table


def served_outputs(url, model_name, x, max_batch):
    """Outputs of a running server over Triton's gRPC protocol (faast's own stubs: tritonclient
    registers the same protobuf names and cannot share a process with faast.protocol)."""
    import grpc

    from faast.grpc_server import MESSAGE_LIMIT_OPTIONS
    from faast.protocol import service, service_grpc

    with grpc.insecure_channel(url, options=MESSAGE_LIMIT_OPTIONS) as channel:
        stub = service_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(service.ModelMetadataRequest(name=model_name))
        parts = []
        for start in range(0, len(x), max_batch):
            rows = np.ascontiguousarray(x[start : start + max_batch], dtype=np.float32)
            request = service.ModelInferRequest(model_name=model_name, raw_input_contents=[rows.tobytes()])
            request.inputs.add(name=metadata.inputs[0].name, datatype="FP32", shape=rows.shape)
            response = stub.ModelInfer(request)
            parts.append(np.frombuffer(response.raw_output_contents[0], "<f4"))
    return np.concatenate(parts).reshape(len(x), -1)


def checks_for(report, settings):
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
    divergence = report["first_divergence"]
    checks.append(
        {
            "check": "hls4ml trace follows QKeras in every layer",
            "passed": divergence is None,
            "detail": f"first divergence at layer {divergence}" if divergence else "no layer diverges",
        }
    )
    if settings["task"] == "regression":
        for row in report["physics"]:
            if not row["enough_entries"]:
                continue
            allowed = row["float"]["resolution"] + settings["max_resolution_increase"]
            checks.append(
                {
                    "check": f"resolution in {row['bin'][0]}-{row['bin'][1]}",
                    "passed": row["kernel"]["resolution"] <= allowed,
                    "detail": f"kernel {row['kernel']['resolution']:.4f}, float {row['float']['resolution']:.4f}",
                }
            )
    else:
        physics = report["physics"]
        checks.append(
            {
                "check": "kernel AUC",
                "passed": physics["kernel"]["auc"] >= physics["float"]["auc"] - settings["max_auc_drop"],
                "detail": f"kernel {physics['kernel']['auc']:.4f}, float {physics['float']['auc']:.4f}",
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


def kernel_outputs(description, x, csim_samples):
    """The kernel's outputs for x: from the emulator, cross-checked against the C simulation on the
    first csim_samples inputs, or from the C simulation alone when the emulator cannot run it."""
    csim = CsimDevice(description)
    try:
        emulator = EmulatorDevice(description)
    except DeviceError as error:
        print(f"kernel outputs from the C simulation: the emulator cannot run this kernel ({error})", flush=True)
        outputs = csim.run(x)
        csim.close()
        return outputs, {"device": "csim"}
    outputs = emulator.run(x)
    emulator.close()
    checked = csim.run(x[:csim_samples])
    csim.close()
    mismatches = int(np.count_nonzero(checked.view(np.uint32) != outputs[:csim_samples].view(np.uint32)))
    return outputs, {"device": "emulator", "csim_values": int(checked.size), "csim_mismatches": mismatches}


def validate(kernel_dir, data=None, url=None, out="validation"):
    spec = KernelSpec.read(kernel_dir)
    settings = spec.config["validation"]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if data:
        arrays = np.load(data)
        x, y = arrays["x"], arrays["y"]
    else:
        x, y = spec.load_entry("data")(settings["samples"], seed=settings["seed"])

    model = spec.model()
    print(f"validating {spec.name} on {len(x)} held-out inputs", flush=True)
    predictions = {
        "float": dequantize(model).predict(x, batch_size=4096, verbose=0),
        "qkeras": model.predict(x, batch_size=4096, verbose=0),
    }
    build(spec.path, out / "repository")
    version = out / "repository" / spec.name / VERSION
    description = KernelDescription.read(version)
    predictions["kernel"], report_kernel = kernel_outputs(description, x, settings.get("csim_samples", len(x)))
    predictions = {k: np.asarray(v, np.float32).reshape(len(x), -1) for k, v in predictions.items()}

    report = {
        "kernel": spec.name,
        "samples": len(x),
        "float_model": "the QKeras model with quantizers removed",
        "kernel_outputs": report_kernel,
        "outputs": {},
    }
    for stage in ("qkeras", "kernel"):
        report["outputs"][f"{stage} vs float"] = _differences(predictions[stage], predictions["float"])
    report["outputs"]["kernel vs qkeras"] = _differences(predictions["kernel"], predictions["qkeras"])
    traced = min(len(x), settings["trace_samples"])
    report["layers"] = layer_table(spec, model, x[:traced], description.raw, out / "trace_project", settings)
    report["first_divergence"] = next(
        (
            row["layer"]
            for row in report["layers"]
            if row.get("mismatch_fraction", 0) > settings["max_layer_mismatch_fraction"]
        ),
        None,
    )
    if settings["task"] == "regression":
        report["physics"] = regression_physics(
            y, {k: v[:, 0] for k, v in predictions.items()}, settings["energy_bins"], settings["min_entries"]
        )
    else:
        report["physics"] = classification_physics(y.astype(int), predictions)
    if url:
        served = served_outputs(url, spec.name, x, spec.serving["max_batch_size"])
        mismatches = int(np.count_nonzero(served.view(np.uint32) != predictions["kernel"].view(np.uint32)))
        report["served"] = {"url": url, "values": int(served.size), "mismatches": mismatches}
        predictions["served"] = served
    report["checks"] = checks_for(report, settings)
    report["passed"] = all(check["passed"] for check in report["checks"])
    report["plots"] = _plots(report, predictions, y, out, settings)
    _write(report, out)

    failed = [check for check in report["checks"] if not check["passed"]]
    for check in failed:
        print(f"FAILED {check['check']}: {check['detail']}")
    print(
        f"{'PASS' if not failed else 'FAIL'}: {len(report['checks']) - len(failed)} of {len(report['checks'])}"
        f" checks passed; report in {out / 'report.html'}"
    )
    return 0 if not failed else 1


def _plots(report, predictions, y, out, settings):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if settings["task"] == "regression":
        centres = [np.mean(row["bin"]) for row in report["physics"]]
        for stage in STAGES:
            axes[0].plot(centres, [row[stage]["response"] for row in report["physics"]], "o-", label=stage)
            axes[1].plot(centres, [row[stage]["resolution"] for row in report["physics"]], "o-", label=stage)
        for ax, what in zip(
            axes, ("response (median predicted / true)", "relative resolution (68% half-width)"), strict=True
        ):
            ax.set_xscale("log")
            ax.set_xlabel("true energy [GeV]")
            ax.set_ylabel(what)
            ax.legend()
    else:
        for stage in STAGES:
            fpr, tpr, auc = roc(y.astype(int), predictions[stage][:, -1])
            axes[0].plot(fpr, tpr, label=f"{stage} (AUC {auc:.4f})")
        axes[0].set_xlabel("false positive rate")
        axes[0].set_ylabel("true positive rate")
        axes[0].legend()
        axes[1].bar(STAGES, [report["physics"][s]["accuracy"] for s in STAGES])
        axes[1].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out / "physics.png", dpi=90)
    files.append("physics.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage in ("qkeras", "kernel"):
        axes[0].hist(
            (predictions[stage] - predictions["float"]).ravel(), bins=100, histtype="step", label=f"{stage} - float"
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
        label="trace differs from QKeras",
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
    lines = [
        f"# Validation of kernel `{report['kernel']}`: {'PASS' if report['passed'] else 'FAIL'}",
        "",
        f"{report['samples']} held-out inputs. Float model: {report['float_model']}.",
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", "## Outputs", "", "| comparison | max abs | mean abs | max rel | mean rel |", "|---|---|---|---|---|"]
    lines += [
        f"| {k} | {v['max_abs']:.4g} | {v['mean_abs']:.4g} | {v['max_rel']:.4g} | {v['mean_rel']:.4g} |"
        for k, v in report["outputs"].items()
    ]
    lines += [
        "",
        f"## Layers (first divergence: {report['first_divergence'] or 'none'})",
        "",
        "| layer | type | outside range | trace differs | max abs diff |",
        "|---|---|---|---|---|",
    ]
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


__all__ = ["validate", "dequantize", "qkeras"]
