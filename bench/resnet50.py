"""ResNet-50 top tagging at batch 1: faast (the kernel on its default CPU device, the emulator)
against a real NVIDIA Triton serving the float network (TensorFlow, CPU), in one run on loopback.

    .venv/bin/python bench/resnet50.py [--quick] [--out bench/results]

Builds the shipped kernel (kernels/resnet50: 64×64, width 1/8, trained) and the full-size variant
(224×224, width 1, untrained), exports each one's float twin (quantizers removed, same weights) as a
SavedModel for Triton (bench/triton_resnet50.py), and sweeps perf_analyzer at batch 1 over gRPC,
concurrency {1, 2, 4, 8, 16} (shipped) and {1, 2, 4, 8} (full). --quick: the shipped model only,
concurrency {1, 2, 4}. Writes resnet50.json, resnet50.md and resnet50.png.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import PYTHON, ROOT, install_tools, perf_analyzer, start_servers  # noqa: E402

KERNEL = ROOT / "kernels" / "resnet50"
VARIANTS = {"resnet50": (None, [1, 2, 4, 8, 16]), "resnet50_full": ("full", [1, 2, 4, 8])}

EXPORT = """
import json, sys
import faast.kernels.toolchain  # QKeras and tf_keras, as the conversion children load them
from faast.kernels.spec import KernelSpec
from faast.kernels.convert import dequantize
kernel, variant, out = sys.argv[1], sys.argv[2] or None, sys.argv[3]
spec = KernelSpec.read(kernel, variant)
dequantize(spec.model()).export(f"{out}/{spec.name}")
with open(f"{out}/{spec.name}.json", "w") as f:
    json.dump({"shape": spec.serving["input"]["dims"], "max_batch_size": spec.serving["max_batch_size"]}, f)
"""


def setup(work, models):
    """faast's repository and Triton's float SavedModels for `models`."""
    repository, float_models = work / "resnet_repository", work / "resnet_float"
    float_models.mkdir(parents=True, exist_ok=True)
    for name in models:
        variant = VARIANTS[name][0]
        subprocess.run(
            [
                Path(sys.executable).parent / "faast",
                "build",
                KERNEL,
                "--out",
                repository,
                "--replace",
                *(["--variant", variant] if variant else []),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [*PYTHON, "-c", EXPORT, KERNEL, variant or "", float_models],
            check=True,
            env=os.environ | {"TF_USE_LEGACY_KERAS": "1"},
            stdout=subprocess.DEVNULL,
        )
    return repository, float_models


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the shipped model only, concurrency 1, 2, 4")
    parser.add_argument("--out", default=str(BENCH / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    models = {"resnet50": [1, 2, 4]} if args.quick else {name: levels for name, (_, levels) in VARIANTS.items()}
    triton_venv, binary = install_tools()
    repository, float_models = setup(work, models)
    servers = start_servers(work, triton_venv, repository, BENCH / "triton_resnet50.py", [float_models], models)
    results = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "faast_device": "auto (emulator: the kernel's fixed-point arithmetic on the CPU)",
        "triton": "tritonserver 2.51 (nvidia-pytriton 0.7.0), "
        "Python model running the float twin as a TensorFlow 2.21 SavedModel, CPU",
        "perf_analyzer": [],
    }
    try:
        for model, levels in models.items():
            shape = json.loads((float_models / f"{model}.json").read_text())["shape"]
            input_bytes = 4 * shape[0] * shape[1] * shape[2]
            for name, (url, _) in servers.items():
                for concurrency in levels:
                    row = perf_analyzer(
                        binary,
                        url,
                        1,
                        concurrency,
                        False,
                        work,
                        model=model,
                        input_bytes=input_bytes,
                        output_bytes=8,
                        count_windows=model != "resnet50",
                    )
                    row |= {"server": name, "model": model, "concurrency": concurrency}
                    results["perf_analyzer"].append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for _, process in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    (out / "resnet50.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out)


def _rows(results, model, server):
    return sorted(
        (r for r in results["perf_analyzer"] if r["model"] == model and r["server"] == server and "error" not in r),
        key=lambda r: r["concurrency"],
    )


def write_report(results, out):
    models = sorted({r["model"] for r in results["perf_analyzer"]})
    lines = [
        f"# faast vs Triton: ResNet-50 top tagging at batch 1 ({results['mode']} run)",
        "",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date']}",
        f"- faast device: {results['faast_device']}",
        f"- Triton: {results['triton']}",
        "- Models: `resnet50` = the shipped kernel (64×64×3, width 1/8, trained); `resnet50_full` = the "
        "full-size variant (224×224×3, width 1, 23.6M parameters, untrained weights).",
        "- Client: perf_analyzer (Triton's, 2.51 build), batch 1, gRPC, loopback; one run on a shared, noisy "
        "2-core machine: quote the ratios. Both servers run on the same CPU cores as the client.",
        "",
        "## Ratios",
        "",
        "| model | faast / Triton p50 latency at 1 client | faast / Triton best throughput |",
        "|---|---|---|",
    ]
    for model in models:
        faast, triton = _rows(results, model, "faast"), _rows(results, model, "triton")
        if faast and triton and faast[0]["concurrency"] == triton[0]["concurrency"] == 1:
            latency = faast[0]["latency_ms"]["p50"] / triton[0]["latency_ms"]["p50"]
            throughput = max(r["throughput_infer_per_s"] for r in faast) / max(
                r["throughput_infer_per_s"] for r in triton
            )
            lines.append(f"| {model} | {latency:.3g} | {throughput:.3g} |")
    for model in models:
        lines += [
            "",
            f"## {model}",
            "",
            "| server | clients | inf/s | p50 ms | p90 ms | p99 ms | queue us | input us | infer us | output us |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for server in ("faast", "triton"):
            for r in _rows(results, model, server):
                s, lat = r["server_us"], r["latency_ms"]
                lines.append(
                    f"| {server} | {r['concurrency']} | {r['throughput_infer_per_s']:.4g} | "
                    f"{lat['p50']:.3g} | {lat['p90']:.3g} | {lat['p99']:.3g} | {s['queue']:.0f} | "
                    f"{s['compute_input']:.0f} | {s['compute_infer']:.0f} | {s['compute_output']:.0f} |"
                )
        lines += [
            f"- perf_analyzer failed for {r['server']} concurrency {r['concurrency']}: `{r['error'][-200:]}`"
            for r in results["perf_analyzer"]
            if r["model"] == model and "error" in r
        ]
    lines += ["", "![ResNet-50 at batch 1](resnet50.png)"]
    (Path(out) / "resnet50.md").write_text("\n".join(lines) + "\n")
    _plot(results, models, Path(out))


def _plot(results, models, out):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    for (latency, throughput), model in zip(axes, models, strict=True):
        for server in ("faast", "triton"):
            rows = _rows(results, model, server)
            clients = [r["concurrency"] for r in rows]
            latency.plot(clients, [r["latency_ms"]["p50"] for r in rows], "o-", label=server)
            throughput.plot(clients, [r["throughput_infer_per_s"] for r in rows], "o-", label=server)
        for ax, what in ((latency, "p50 latency [ms]"), (throughput, "throughput [images/s]")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("simultaneous clients")
            ax.set_ylabel(what)
            ax.set_title(f"{model}, batch 1")
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "resnet50.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
