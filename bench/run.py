"""Benchmark faast against a real NVIDIA Triton serving the same FACILE weights, on loopback.

    .venv/bin/python bench/run.py [--quick] [--workers N] [--out bench/results]

Sets up what it needs from the registries (a Triton venv with nvidia-pytriton 0.7.0, the
perf_analyzer that runs here), builds FACILE for faast (its default device) and exports the same
weights in float for Triton (a Python model, bench/triton_facile.py). Then drives both servers with
the same clients — perf_analyzer and `faast bench` — over gRPC, and faast also over system shared
memory: batch {1, 16000} x concurrency {1, 2, 4, 8, 16, 32, 64} ({1, 2, 4} with --quick), faast as
`faast serve --workers N` (default 1). Each perf_analyzer client has its own connection, so the
connections spread over faast's workers (and Triton gets the same clients). Writes
results.json, results.md (the table, with the machine, date and the target ratios) and plots.
"""

import argparse
import csv
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = [sys.executable, "-P"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_tools():
    """The Triton venv (pytriton's tritonserver; TensorFlow for the float ResNet-50) and perf_analyzer."""
    triton_venv = BENCH / ".venv-triton"
    if not (triton_venv / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", triton_venv], check=True)
    subprocess.run(
        [
            triton_venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "nvidia-pytriton==0.7.0",
            "numpy<2",
            "tensorflow-cpu==2.21.0",
        ],
        check=True,
    )
    perf_analyzer = BENCH / ".perf_analyzer"
    subprocess.run(
        ["bash", ROOT / "tests" / "tools" / "install_perf_analyzer.sh", perf_analyzer, sys.executable], check=True
    )
    return triton_venv, perf_analyzer


def setup(work):
    triton_venv, perf_analyzer = install_tools()
    repository = work / "repository"
    subprocess.run(
        [Path(sys.executable).parent / "faast", "build", ROOT / "kernels" / "facile", "--out", repository, "--replace"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    weights = work / "facile_float.npz"
    subprocess.run([*PYTHON, "-c", EXPORT, str(ROOT / "kernels" / "facile"), str(weights)], check=True)
    return triton_venv, perf_analyzer, repository, weights


EXPORT = """
import sys
import numpy as np
import faast.kernels.toolchain  # QKeras and tf_keras, as the conversion children load them
from faast.kernels.spec import KernelSpec
from faast.kernels.convert import dequantize
spec = KernelSpec.read(sys.argv[1])
model = spec.load_entry("model")()
model.load_weights(spec.weights_path)
arrays = {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w.numpy()
          for layer in dequantize(model).layers for w in layer.weights}
np.savez(sys.argv[2], **arrays)
"""


def wait_ready(url, process, log, models, seconds=600):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log).read_text()[-2000:]}")
        try:
            if client.is_server_ready() and all(client.is_model_ready(model) for model in models):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready: {Path(log).read_text()[-2000:]}")


def start_servers(work, triton_venv, repository, triton_script, triton_args, models, workers=1):
    """faast serving `repository` (with `workers` processes) and Triton running `triton_script` (in
    its venv), both on loopback."""
    faast_ports = [free_port() for _ in range(3)]
    triton_ports = [free_port() for _ in range(3)]
    faast = subprocess.Popen(
        [
            Path(sys.executable).parent / "faast",
            "serve",
            "--model-repository",
            repository,
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(faast_ports[0]),
            "--http-port",
            str(faast_ports[1]),
            "--metrics-port",
            str(faast_ports[2]),
            "--workers",
            str(workers),
        ],
        stdout=open(work / "faast.log", "w"),
        stderr=subprocess.STDOUT,
    )
    libdir = subprocess.run(
        [triton_venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    triton = subprocess.Popen(
        [triton_venv / "bin" / "python", triton_script, *map(str, triton_args), *map(str, triton_ports)],
        stdout=open(work / "triton.log", "w"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"LD_LIBRARY_PATH": libdir},
    )
    servers = {"faast": (f"127.0.0.1:{faast_ports[0]}", faast), "triton": (f"127.0.0.1:{triton_ports[0]}", triton)}
    for name, (url, process) in servers.items():
        wait_ready(url, process, work / f"{name}.log", models)
    return servers


def perf_analyzer(
    binary,
    url,
    batch,
    concurrency,
    shared_memory,
    work,
    model="facile",
    input_bytes=15 * 4,
    output_bytes=4,
    count_windows=None,
):
    """One perf_analyzer measurement. Windows are 2 s, or (count_windows=True, and for big batches)
    a request count per window, for requests that take seconds."""
    report = work / f"pa_{time.time_ns()}.csv"
    command = [
        binary / "bin" / "perf_analyzer",
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-b",
        str(batch),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "-f",
        report,
        "--max-trials",
        "6",
    ]
    if count_windows if count_windows is not None else batch > 1:
        command += [
            "--measurement-mode",
            "count_windows",
            "--measurement-request-count",
            str(max(4, 2 * concurrency)),
            "--stability-percentage",
            "50",
        ]
    else:
        command += ["-p", "2000", "--stability-percentage", "30"]
    if shared_memory:
        command += ["--shared-memory", "system", "--output-shared-memory-size", str(output_bytes * batch)]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=1800,
        env=os.environ | {"LD_LIBRARY_PATH": str(binary / "lib"), "TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT": "1"},
    )
    if run.returncode != 0 or not report.exists():
        return {"error": (run.stdout + run.stderr)[-500:]}
    row = next(csv.DictReader(io.StringIO(report.read_text())))
    throughput = float(row["Inferences/Second"])
    return {
        "throughput_infer_per_s": throughput,
        "throughput_gbit_per_s": throughput * input_bytes * 8 / 1e9,
        "latency_ms": {q: float(row[f"{q} latency"]) / 1000 for q in ("p50", "p90", "p99")},
        "server_us": {
            "queue": float(row["Server Queue"]),
            "compute_input": float(row["Server Compute Input"]),
            "compute_infer": float(row["Server Compute Infer"]),
            "compute_output": float(row["Server Compute Output"]),
        },
    }


def faast_bench(url, batch, levels, duration, label, work):
    out = work / f"bench_{label}_{batch}"
    subprocess.run(
        [
            Path(sys.executable).parent / "faast",
            "bench",
            url,
            "--model",
            "facile",
            "--batch",
            str(batch),
            "--concurrency",
            ",".join(map(str, levels)),
            "--duration",
            str(duration),
            "--label",
            label,
            "--out",
            out,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads((out / "bench.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1, 2, 4 and short windows (< 5 min)")
    parser.add_argument("--workers", type=int, default=1, help="faast serve --workers")
    parser.add_argument("--out", default=str(BENCH / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    levels = [1, 2, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64]
    triton_venv, binary, repository, weights = setup(work)
    servers = start_servers(
        work, triton_venv, repository, BENCH / "triton_facile.py", [weights], ["facile"], args.workers
    )
    results = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "faast_device": f"auto (the emulator: the kernel's fixed-point arithmetic, compiled network pass), "
        f"{args.workers} worker process{'es' if args.workers > 1 else ''}",
        "triton": "tritonserver 2.51 (nvidia-pytriton 0.7.0), Python model, float FACILE, CPU",
        "perf_analyzer": [],
        "faast_bench": [],
    }
    try:
        for batch in (1, 16000):
            for name, (url, _) in servers.items():
                for shared_memory in (False, True) if name == "faast" else (False,):
                    for concurrency in levels:
                        row = perf_analyzer(binary, url, batch, concurrency, shared_memory, work)
                        row |= {
                            "server": name,
                            "batch": batch,
                            "concurrency": concurrency,
                            "transport": "shared_memory" if shared_memory else "grpc",
                        }
                        results["perf_analyzer"].append(row)
                        print(json.dumps(row), flush=True)
                results["faast_bench"].append(
                    {
                        "server": name,
                        "batch": batch,
                        "report": faast_bench(url, batch, levels, 2.0 if args.quick else 5.0, name, work),
                    }
                )
    finally:
        for _, process in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from report import write_report

    write_report(results, out)


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()
