"""The host overhead: CPU time per inference that faast spends around the kernel.

    .venv/bin/python bench/host_overhead.py [--seconds 20] [--workers 1,2] [--out bench/results]

Method. faast serves FACILE on its default device (the emulator), as one process and as
`--workers 2`, and perf_analyzer drives it on loopback, over gRPC and over system shared memory, at
batch 16000 (one HCAL event per request) and four clients, each on its own connection
(TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT=1: perf_analyzer otherwise multiplexes up to six clients
on one connection, which one worker serves). Over each window the script reads, before and after,
the CPU time of the server's processes (utime + stime from /proc/PID/stat of the server and its
worker processes: every thread: transport, decoding, batching, packing, unpacking, encoding, and
the kernel) and the inferences served (nv_inference_count, summed over the workers). The kernel's
own CPU time per row is measured in this process on the same build: the emulator's compute unit
executing packed 16000-row buffers, timed with the thread's CPU clock (wall-clock busy time would
count the time a loaded machine keeps the thread waiting).
Host overhead = server CPU time per inference - kernel CPU time per inference. It excludes the client
(perf_analyzer runs in its own process) and includes everything the server adds, so it is what a
host needs per inference to feed a card. From it: the host cores one U250 (86M inf/s) or one F1
(36M inf/s, the FaaST paper's Table I) needs to be kept fed at that rate.
Writes host_overhead.json and host_overhead.md.
"""

import argparse
import csv
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from machine import cpu

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CARDS = {"U250": 86e6, "AWS F1": 36e6}  # FACILE inf/s at batch 16000 (FaaST paper, Table I)
BATCH = 16000
CLIENTS = 4


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_ns(pid):
    """CPU time of process `pid` and its children (the workers of `faast serve --workers`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK") + sum(_cpu_ns(int(child)) for child in children)


def _metric(text, name):
    """The sum of `name`'s samples in a /metrics text."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def _inferences(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return _metric(response.read().decode(), "nv_inference_count")


def kernel_ns_per_row(version_dir, seconds=3.0):
    """The emulator kernel's CPU time per row, on one compute unit fed packed buffers."""
    import numpy as np

    from faast.host import packing
    from faast.host.drivers import open_device

    device = open_device("emulator", version_dir, 1)
    try:
        (unit,) = device.compute_units
        layout = device.kernel.layout
        rows = np.random.default_rng(1).uniform(0, 50, (BATCH, device.kernel.input_size)).astype(np.float32)
        inputs, outputs = unit.allocate(layout.input.nbytes(BATCH)), unit.allocate(layout.output.nbytes(BATCH))
        in_bytes, out_bytes = packing.pack(layout.input, [rows], inputs.host), layout.output.nbytes(BATCH)
        spent, done, wall_end = 0, 0, time.monotonic() + seconds
        while time.monotonic() < wall_end:
            start = time.thread_time_ns()
            unit.execute(inputs, outputs, BATCH, in_bytes, out_bytes)
            spent += time.thread_time_ns() - start
            done += BATCH
        return spent / done
    finally:
        device.close()


def _window(perf_analyzer, url, shared_memory, seconds, work):
    """perf_analyzer for about `seconds` of requests; returns its throughput (inf/s)."""
    report = work / f"pa_{time.time_ns()}.csv"
    command = [
        perf_analyzer / "bin" / "perf_analyzer",
        "-m",
        "facile",
        "-u",
        url,
        "-i",
        "grpc",
        "-b",
        str(BATCH),
        "--concurrency-range",
        f"{CLIENTS}:{CLIENTS}",
        "-p",
        str(seconds * 1000 // 3),
        "--max-trials",
        "3",
        "--stability-percentage",
        "999",  # three windows, whatever their spread: the CPU times cover all three
        "-f",
        report,
    ]
    if shared_memory:
        command += ["--shared-memory", "system", "--output-shared-memory-size", str(4 * BATCH)]
    env = os.environ | {
        "LD_LIBRARY_PATH": str(perf_analyzer / "lib"),
        "TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT": "1",
    }
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed: {(run.stdout + run.stderr)[-2000:]}")
    return float(next(csv.DictReader(io.StringIO(report.read_text())))["Inferences/Second"])


def measure(perf_analyzer, repository, seconds, work, workers, kernel):
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    server = subprocess.Popen(
        [
            *[Path(sys.executable).parent / "faast", "serve", "--model-repository", repository],
            *["--host", "127.0.0.1", "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
            *["--metrics-port", str(metrics_port), "--workers", str(workers)],
        ],
        stdout=open(work / "faast.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((work / "faast.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        rows = {}
        for transport, shared_memory in (("grpc", False), ("shared_memory", True)):
            _window(perf_analyzer, url, shared_memory, 3, work)  # warm up
            inferences0, cpu0 = _inferences(metrics_port), _cpu_ns(server.pid)
            throughput = _window(perf_analyzer, url, shared_memory, seconds, work)
            cpu, inferences = _cpu_ns(server.pid) - cpu0, _inferences(metrics_port) - inferences0
            host = cpu / inferences - kernel
            rows[f"{transport}, {workers} worker{'s' if workers > 1 else ''}"] = {
                "transport": transport,
                "workers": workers,
                "throughput_infer_per_s": throughput,
                "inferences": int(inferences),
                "server_cpu_ns_per_inference": cpu / inferences,
                "kernel_ns_per_inference": kernel,
                "host_ns_per_inference": host,
                "cores_to_feed": {card: rate * host / 1e9 for card, rate in CARDS.items()},
            }
        return rows
    finally:
        server.terminate()
        server.wait(timeout=60)


def write(results, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Host overhead per inference (FACILE, faast on its default device)",
        "",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date']}",
        f"- Command: `{results['command']}`",
        f"- Load: perf_analyzer 2.51, batch {BATCH}, {CLIENTS} clients, loopback, {results['seconds']} s windows.",
        "- Method: server CPU time per inference over the window, less the kernel's CPU time per row measured",
        "  in-process on one compute unit; see bench/host_overhead.py.",
        "  The client's CPU time is not counted. On a shared, noisy machine: quote the order of magnitude.",
        "",
        "| transport | workers | inf/s | server CPU ns/inf | kernel ns/inf | host ns/inf | cores for a U250 (86M/s) "
        "| cores for an F1 (36M/s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = results["transports"].values()
    for row in rows:
        cores = row["cores_to_feed"]
        lines.append(
            f"| {row['transport']} | {row['workers']} | {row['throughput_infer_per_s']:.3g} "
            f"| {row['server_cpu_ns_per_inference']:.0f} "
            f"| {row['kernel_ns_per_inference']:.0f} | {row['host_ns_per_inference']:.0f} "
            f"| {cores['U250']:.1f} | {cores['AWS F1']:.1f} |"
        )
    best = min(row["host_ns_per_inference"] for row in rows if row["transport"] == "shared_memory")
    lines += [""]
    for transport in ("grpc", "shared_memory"):
        by_workers = {row["workers"]: row["throughput_infer_per_s"] for row in rows if row["transport"] == transport}
        if 1 in by_workers and len(by_workers) > 1:
            most = max(by_workers)
            lines.append(
                f"- {transport}: {most} workers serve {by_workers[most] / by_workers[1]:.2f}x the throughput of one."
            )
    lines += [
        "",
        f"Target (issue 16): host overhead over shared memory <= 30 ns per inference: {best:.0f} ns, "
        + ("met." if best <= 30 else "**not met**."),
    ]
    (out / "host_overhead.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="length of each measured window")
    parser.add_argument("--workers", default="1,2", help="comma-separated `faast serve --workers` counts")
    parser.add_argument("--out", default=str(BENCH / "results"))
    options = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"faast_host_overhead_{os.getpid()}"
    work.mkdir(parents=True)
    perf_analyzer = BENCH / ".perf_analyzer"
    subprocess.run(
        ["bash", ROOT / "tests" / "tools" / "install_perf_analyzer.sh", perf_analyzer, sys.executable], check=True
    )
    repository = work / "repository"
    subprocess.run(
        [Path(sys.executable).parent / "faast", "build", ROOT / "kernels" / "facile", "--out", repository, "--replace"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    results = {
        "machine": f"{cpu()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["bench/host_overhead.py", *sys.argv[1:]]),
        "seconds": options.seconds,
        "transports": {},
    }
    kernel = kernel_ns_per_row(repository / "facile" / "1")
    for workers in map(int, options.workers.split(",")):
        results["transports"].update(measure(perf_analyzer, repository, options.seconds, work, workers, kernel))
    write(results, Path(options.out))
    print((Path(options.out) / "host_overhead.md").read_text())


if __name__ == "__main__":
    main()
