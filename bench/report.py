"""Results table (Markdown) and plots for bench/run.py; ratios against Triton are what we quote."""

from pathlib import Path

TARGETS = (
    "FACILE batch 16000 over gRPC >= 2.5x Triton's throughput; system shared memory >= 2x faast's own gRPC "
    "throughput; batch 1 concurrency 1 p50 <= 0.3x Triton's; batch 1 concurrency 32 throughput >= 3x Triton's "
    "(issue 16)"
)


def _rows(results, server, batch, transport):
    return sorted(
        (
            r
            for r in results["perf_analyzer"]
            if r["server"] == server and r["batch"] == batch and r["transport"] == transport and "error" not in r
        ),
        key=lambda r: r["concurrency"],
    )


def _best(rows):
    return max((r["throughput_infer_per_s"] for r in rows), default=0.0)


def targets(results):
    faast_grpc = _rows(results, "faast", 16000, "grpc")
    faast_shm = _rows(results, "faast", 16000, "shared_memory")
    triton_grpc = _rows(results, "triton", 16000, "grpc")
    faast_b1 = [r for r in _rows(results, "faast", 1, "grpc") if r["concurrency"] == 1]
    triton_b1 = [r for r in _rows(results, "triton", 1, "grpc") if r["concurrency"] == 1]
    checks = []
    if faast_grpc and triton_grpc:
        ratio = _best(faast_grpc) / _best(triton_grpc)
        checks.append(
            ("batch 16000 gRPC throughput, faast / Triton (best over concurrency)", ratio, ratio >= 2.5, ">= 2.5")
        )
    if faast_shm and faast_grpc:
        ratio = _best(faast_shm) / _best(faast_grpc)
        checks.append(("batch 16000 throughput, faast shared memory / faast gRPC", ratio, ratio >= 2, ">= 2"))
    if faast_b1 and triton_b1:
        ratio = faast_b1[0]["latency_ms"]["p50"] / triton_b1[0]["latency_ms"]["p50"]
        checks.append(("batch 1, concurrency 1 p50 latency, faast / Triton", ratio, ratio <= 0.3, "<= 0.3"))
    faast_b1_32 = [r for r in _rows(results, "faast", 1, "grpc") if r["concurrency"] == 32]
    triton_b1_32 = [r for r in _rows(results, "triton", 1, "grpc") if r["concurrency"] == 32]
    if faast_b1_32 and triton_b1_32:
        ratio = faast_b1_32[0]["throughput_infer_per_s"] / triton_b1_32[0]["throughput_infer_per_s"]
        checks.append(("batch 1, concurrency 32 throughput, faast / Triton", ratio, ratio >= 3, ">= 3"))
    return checks


def write_report(results, out):
    out = Path(out)
    lines = [
        f"# faast vs Triton: FACILE ({results['mode']} run)",
        "",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date']}",
        f"- faast device: {results['faast_device']}; Triton: {results['triton']}",
        f"- Command: `{results['command']}`",
        "- Clients: perf_analyzer (Triton's, 2.51 build) on loopback, every client on its own connection "
        "(TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT=1); numbers from one run on a shared, noisy machine: "
        "quote the ratios.",
        "",
        "## Targets",
        "",
        f"Targets: {TARGETS}.",
        "",
        "| ratio | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {value:.3g} | {target} | {'yes' if met else '**no**'} |"
        for name, value, met, target in targets(results)
    ]
    for batch in (1, 16000):
        lines += [
            "",
            f"## Batch {batch} (perf_analyzer)",
            "",
            "| server | transport | clients | inf/s | Gbit/s | p50 ms | p90 ms | p99 ms | queue us | input us "
            "| infer us | output us |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for server, transport in (("faast", "grpc"), ("faast", "shared_memory"), ("triton", "grpc")):
            for r in _rows(results, server, batch, transport):
                s, lat = r["server_us"], r["latency_ms"]
                lines.append(
                    f"| {server} | {transport} | {r['concurrency']} | {r['throughput_infer_per_s']:.4g} | "
                    f"{r['throughput_gbit_per_s']:.3g} | {lat['p50']:.3g} | {lat['p90']:.3g} | "
                    f"{lat['p99']:.3g} | {s['queue']:.0f} | {s['compute_input']:.0f} | "
                    f"{s['compute_infer']:.0f} | {s['compute_output']:.0f} |"
                )
        failed = [r for r in results["perf_analyzer"] if r["batch"] == batch and "error" in r]
        lines += [
            f"- perf_analyzer failed for {r['server']} {r['transport']} concurrency {r['concurrency']}: "
            f"`{r['error'][-200:]}`"
            for r in failed
        ]
        lines += ["", f"![batch {batch}](perf_b{batch}.png)"]
    lines += ["", "## faast bench (the same sweep with faast's own load generator)", ""]
    for entry in results["faast_bench"]:
        for level in entry["report"]["levels"]:
            lines.append(
                f"- {entry['server']} batch {entry['batch']} clients {level['concurrency']}: "
                f"{level['throughput_infer_per_s']:.4g} inf/s, p50 {level['latency_ms']['p50']:.3g} ms"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plots(results, out)


def _plots(results, out):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    for batch in (1, 16000):
        fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
        for server, transport in (("faast", "grpc"), ("faast", "shared_memory"), ("triton", "grpc")):
            rows = _rows(results, server, batch, transport)
            if not rows:
                continue
            clients = [r["concurrency"] for r in rows]
            label = f"{server} ({transport.replace('_', ' ')})"
            latency.plot(clients, [r["latency_ms"]["p50"] for r in rows], "o-", label=label)
            throughput.plot(clients, [r["throughput_infer_per_s"] for r in rows], "o-", label=label)
        for ax, what in ((latency, "p50 latency [ms]"), (throughput, "throughput [inferences/s]")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("simultaneous clients")
            ax.set_ylabel(what)
            ax.set_title(f"FACILE, batch {batch}")
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"perf_b{batch}.png", dpi=90)
        plt.close(fig)
