"""`faast bench URL --model M --batch B --concurrency 1,2,4,...`: a load generator for any server
that speaks Triton's gRPC protocol (faast or Triton itself).

For each concurrency level, C clients — threads spread over several processes, since one Python
process cannot keep a fast server busy — send requests back to back for a fixed time, over gRPC or
over system shared memory. It records throughput (inferences/s and Gbit/s of input), latency
percentiles, and the server-side breakdown from ModelStatistics; writes bench.json and plots of
latency and throughput against simultaneous clients.
"""

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np

from .tensors import NUMPY


def _stub(url):
    import grpc

    from .grpc_server import MESSAGE_LIMIT_OPTIONS
    from .protocol import service_grpc

    channel = grpc.insecure_channel(url, options=MESSAGE_LIMIT_OPTIONS)
    return channel, service_grpc.GRPCInferenceServiceStub(channel)


def _model_io(url, model):
    from .protocol import service

    channel, stub = _stub(url)
    with channel:
        meta = stub.ModelMetadata(service.ModelMetadataRequest(name=model))
    tensor_in, tensor_out = meta.inputs[0], meta.outputs[0]
    return (
        (tensor_in.name, tensor_in.datatype, [d for d in tensor_in.shape[1:]]),
        (tensor_out.name, tensor_out.datatype, [d for d in tensor_out.shape[1:]]),
    )


def _client(url, model, batch, io, shared_memory, tag, stop_at, latencies, errors):
    """One client: back-to-back requests until stop_at; latencies in seconds."""
    from .protocol import service

    (in_name, in_type, in_dims), (out_name, out_type, out_dims) = io
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    data = (rng.random([batch, *in_dims]) * 10).astype(NUMPY[in_type])
    request = service.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=in_name, datatype=in_type, shape=[batch, *in_dims])
    out_bytes = batch * int(np.prod(out_dims)) * np.dtype(NUMPY[out_type]).itemsize
    channel, stub = _stub(url)
    regions = []
    try:
        if shared_memory:
            for role, size, payload in (("in", data.nbytes, data.tobytes()), ("out", out_bytes, None)):
                name = f"faast_bench_{tag}_{role}"
                path = f"/dev/shm/{name}"
                with open(path, "wb") as region:
                    region.write(payload if payload is not None else bytes(size))
                regions.append(path)
                stub.SystemSharedMemoryRegister(
                    service.SystemSharedMemoryRegisterRequest(name=name, key=f"/{name}", offset=0, byte_size=size)
                )
            tensor.parameters["shared_memory_region"].string_param = f"faast_bench_{tag}_in"
            tensor.parameters["shared_memory_byte_size"].int64_param = data.nbytes
            output = request.outputs.add(name=out_name)
            output.parameters["shared_memory_region"].string_param = f"faast_bench_{tag}_out"
            output.parameters["shared_memory_byte_size"].int64_param = out_bytes
        else:
            request.raw_input_contents.append(data.tobytes())
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                stub.ModelInfer(request)
            except Exception as error:  # counted and reported, the run goes on
                errors.append(str(error)[:200])
                continue
            latencies.append(time.perf_counter() - start)
    finally:
        for path in regions:
            name = Path(path).name
            try:
                stub.SystemSharedMemoryUnregister(service.SystemSharedMemoryUnregisterRequest(name=name))
            except Exception:
                pass
            os.unlink(path)
        channel.close()


def _process(url, model, batch, io, shared_memory, clients, tag, start_at, stop_at, results):
    latencies: list[float] = []
    errors: list[str] = []
    time.sleep(max(0.0, start_at - time.time()))
    stop = time.perf_counter() + (stop_at - time.time())
    threads = [
        threading.Thread(
            target=_client, args=(url, model, batch, io, shared_memory, f"{tag}_{i}", stop, latencies, errors)
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((latencies, errors))


def _statistics(url, model):
    from .protocol import service

    channel, stub = _stub(url)
    with channel:
        stats = stub.ModelStatistics(service.ModelStatisticsRequest(name=model)).model_stats[0]
    s = stats.inference_stats
    return {
        "count": s.success.count,
        "queue": s.queue.ns,
        "compute_input": s.compute_input.ns,
        "compute_infer": s.compute_infer.ns,
        "compute_output": s.compute_output.ns,
        "inferences": stats.inference_count,
        "executions": stats.execution_count,
    }


def replica_statistics(urls, model):
    """Statistics of each server behind a balancer (asked directly: through the balancer, a
    statistics call reaches one replica) and their sum."""
    each = [_statistics(url, model) for url in urls]
    return each, {key: sum(stats[key] for stats in each) for key in each[0]}


def measure(url, model, batch, concurrency, duration, shared_memory=False, processes=None, replicas=None):
    """One concurrency level against url; with replicas (the servers behind a balancer at url), the
    server-side numbers are summed over them and each one's share of the requests is reported."""
    io = _model_io(url, model)
    processes = max(1, min(concurrency, processes or os.cpu_count() or 1))
    share = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    warmup = 0.5
    before = None
    start_at = time.time() + 1.5 + warmup  # spawned processes need a moment to import
    workers = [
        context.Process(
            target=_process,
            args=(
                url,
                model,
                batch,
                io,
                shared_memory,
                n,
                f"{os.getpid()}_{k}",
                start_at,
                start_at + duration,
                results,
            ),
        )
        for k, n in enumerate(share)
    ]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, start_at - time.time()))
    each_before, before = replica_statistics(replicas or [url], model)
    gathered = [results.get() for _ in workers]
    each_after, after = replica_statistics(replicas or [url], model)
    for worker in workers:
        worker.join()
    latencies = np.array([x for lat, _ in gathered for x in lat]) * 1000
    errors = [e for _, err in gathered for e in err]
    requests = len(latencies)
    in_dims = io[0][2]
    input_bytes = batch * int(np.prod(in_dims)) * np.dtype(NUMPY[io[0][1]]).itemsize
    served = max(after["count"] - before["count"], 1)
    level = {
        "concurrency": concurrency,
        "batch": batch,
        "transport": "shared_memory" if shared_memory else "grpc",
        "requests": requests,
        "errors": len(errors),
        "duration_s": duration,
        "throughput_infer_per_s": requests * batch / duration,
        "throughput_gbit_per_s": requests * input_bytes * 8 / duration / 1e9,
        "latency_ms": {
            q: float(np.percentile(latencies, int(q[1:]))) if requests else None for q in ("p50", "p90", "p99")
        },
        "server_us_per_request": {
            key: (after[key] - before[key]) / served / 1000
            for key in ("queue", "compute_input", "compute_infer", "compute_output")
        },
        "server_executions": after["executions"] - before["executions"],
    }
    if replicas:
        level["replica_requests"] = {
            replica: done["count"] - started["count"]
            for replica, started, done in zip(replicas, each_before, each_after, strict=True)
        }
    if errors:
        level["first_error"] = errors[0]
    return level


def run(args):
    from tqdm import tqdm

    levels = [int(c) for c in str(args.concurrency).split(",")]
    duration = args.duration
    if args.quick:
        levels, duration = [c for c in levels if c <= 4] or [1], min(duration, 2.0)
    report = {
        "url": args.url,
        "replicas": _replica_urls(args),
        "model": args.model,
        "batch": args.batch,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "levels": [],
    }
    for concurrency in tqdm(levels, desc=f"bench {args.model} batch {args.batch}", unit="level"):
        report["levels"].append(
            measure(
                args.url,
                args.model,
                args.batch,
                concurrency,
                duration,
                args.shared_memory,
                args.processes,
                _replica_urls(args),
            )
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot([report], out, label=args.label or args.url)
    for level in report["levels"]:
        print(
            f"concurrency {level['concurrency']:>3}: {level['throughput_infer_per_s']:>12.0f} inf/s, "
            f"p50 {level['latency_ms']['p50']:.3f} ms, p99 {level['latency_ms']['p99']:.3f} ms, "
            f"{level['errors']} errors"
        )
    return report


def _replica_urls(args):
    return [url for url in (getattr(args, "replicas", None) or "").split(",") if url]


def _machine():
    import platform

    return f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def plot(reports, out, label=None, labels=None):
    """Latency and throughput against simultaneous clients, one line per report (as in the papers)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = labels or [label] * len(reports)
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
    for report, name in zip(reports, labels, strict=True):
        clients = [level["concurrency"] for level in report["levels"]]
        latency.plot(clients, [level["latency_ms"]["p50"] for level in report["levels"]], "o-", label=name)
        throughput.plot(clients, [level["throughput_infer_per_s"] for level in report["levels"]], "o-", label=name)
    for ax, what in ((latency, "p50 latency [ms]"), (throughput, "throughput [inferences/s]")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("simultaneous clients")
        ax.set_ylabel(what)
        ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out) / "bench.png", dpi=90)
    plt.close(fig)
