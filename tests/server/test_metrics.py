"""/metrics exactly as Triton 2.51 exports it (issue 17, item 2), so Grafana dashboards and alerts
built for Triton work on faast.

What a real tritonserver 2.51 (nvidia-pytriton 0.7.0, the stand-in FACILE of
tests/reliability/triton_reference.py, CPU only) exported after a few inferences, scraped by hand
and again by the slow tests below; TRITON_2_51 holds it, HELP strings included:

| family                                    | TYPE    | labels                  | when                          |
|-------------------------------------------|---------|-------------------------|-------------------------------|
| nv_inference_request_success              | counter | model, version          | always                        |
| nv_inference_request_failure              | counter | model, reason, version  | always (4 reasons, below)     |
| nv_inference_count                        | counter | model, version          | always                        |
| nv_inference_exec_count                   | counter | model, version          | always                        |
| nv_inference_request_duration_us          | counter | model, version          | counter_latencies (default on)|
| nv_inference_queue_duration_us            | counter | model, version          | counter_latencies             |
| nv_inference_compute_input_duration_us    | counter | model, version          | counter_latencies             |
| nv_inference_compute_infer_duration_us    | counter | model, version          | counter_latencies             |
| nv_inference_compute_output_duration_us   | counter | model, version          | counter_latencies             |
| nv_inference_pending_request_count        | gauge   | model, version          | always                        |
| nv_cpu_utilization                        | gauge   | (none)                  | --allow-cpu-metrics (default) |
| nv_cpu_memory_total_bytes                 | gauge   | (none)                  | --allow-cpu-metrics           |
| nv_cpu_memory_used_bytes                  | gauge   | (none)                  | --allow-cpu-metrics           |
| nv_inference_request_summary_us           | summary | model, version, quantile| summary_latencies=true        |
| nv_inference_queue_summary_us             | summary | model, version, quantile| summary_latencies=true        |
| nv_inference_compute_input_summary_us     | summary | model, version, quantile| summary_latencies=true        |
| nv_inference_compute_infer_summary_us     | summary | model, version, quantile| summary_latencies=true        |
| nv_inference_compute_output_summary_us    | summary | model, version, quantile| summary_latencies=true        |
| nv_pinned_memory_pool_total_bytes         | gauge   | (none)                  | always (not in faast: below)  |
| nv_pinned_memory_pool_used_bytes          | gauge   | (none)                  | always (not in faast: below)  |

The failure reasons are OTHER, BACKEND, CANCELED and REJECTED, in that order, every one listed
from the start. faast has no CUDA pinned memory pool and exports no nv_pinned_* family. Counters
carry no `_total` suffix. Summaries write `_count` and `_sum` (cumulative) and one sample
per quantile, `quantile` the last label: 0.5, 0.9, 0.95, 0.99, 0.999 by default (errors 0.05, 0.01,
0.001, 0.001, 0.001; `summary_quantiles=0.5:0.05,0.99:0.001` replaces them); an empty window's
quantiles are `Nan`. `counter_latencies=false` drops the five duration counters (Triton 2.51 then
also stops counting success, count and exec_count, which faast does not copy). Triton ignores an
unknown --metrics-config setting; faast refuses it. Triton counts no failure for a request refused
by validation (wrong shape, datatype): faast's dataplane counts it as OTHER, which the fast test
below checks as faast's behaviour.

Triton 2.52 and later (to 2.71, the newest) add one family that 2.51 does not have, so no Triton
here exports it; its tests below hold faast to the newest Triton's source (core's metrics.cc,
metric_model_reporter.{h,cc} and infer_response.cc, prometheus-cpp's text_serializer.cc, which
Triton links):

| nv_inference_first_response_histogram_ms  | histogram | model, version, le   | histogram_latencies=true       |

HELP "Duration from request to first response in milliseconds"; `_count`, `_sum`, then
`_bucket` per boundary (`le` last, written as a C++ stream writes a double: 100, 0.5) and
`le="+Inf"`; boundaries 100, 500, 2000, 5000 unless the model's config.pbtxt sets them
(model_metrics { metric_control { metric_identifier { family: "<the name>" } histogram_options {
buckets: [...] } } }; no --metrics-config key sets them). Observed: whole milliseconds (truncated)
from a request's arrival to its first response, for every request that passed validation, failed
or not. prometheus-cpp lists histograms after every gauge and before the summaries.
"""

import asyncio
import contextlib
import math
import pickle
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from support import BIN, Server, infer
from support.triton_metrics import families, sample_value, scrape, start_triton_with_metrics
from tritonclient.utils import InferenceServerException

from faast.contract.errors import InvalidArgument
from faast.dataplane import DataPlane, InferRequest, InputTensor
from faast.metrics import (
    MetricsConfig,
    MetricsView,
    merge_readings,
    model_readings,
    parse_metrics_config,
    registry_for,
    render,
    render_families,
)
from faast.protocol import model_config
from faast.repository import ModelRepository
from faast.shared_memory import SharedMemoryManager
from faast.statistics import (
    LatencySamples,
    ModelStatistics,
    SummaryWindow,
    record_first_responses,
    record_latencies,
)
from faast.trace_log import TraceSettings, parse_trace_config

_CACHED = "(includes cached requests)"
_NOT_CACHED = "(does not include cached requests)"
MV = frozenset({"model", "version"})
MVQ = frozenset({"model", "version", "quantile"})
# family: (TYPE, label names, HELP), as tritonserver 2.51 exported them.
TRITON_2_51 = {
    "nv_inference_request_success": (
        "counter",
        MV,
        "Number of successful inference requests, all batch sizes",
    ),
    "nv_inference_request_failure": (
        "counter",
        frozenset({"model", "reason", "version"}),
        "Number of failed inference requests, all batch sizes",
    ),
    "nv_inference_count": ("counter", MV, f"Number of inferences performed {_NOT_CACHED}"),
    "nv_inference_exec_count": ("counter", MV, f"Number of model executions performed {_NOT_CACHED}"),
    "nv_inference_request_duration_us": (
        "counter",
        MV,
        f"Cumulative inference request duration in microseconds {_CACHED}",
    ),
    "nv_inference_queue_duration_us": (
        "counter",
        MV,
        f"Cumulative inference queuing duration in microseconds {_CACHED}",
    ),
    "nv_inference_compute_input_duration_us": (
        "counter",
        MV,
        f"Cumulative compute input duration in microseconds {_NOT_CACHED}",
    ),
    "nv_inference_compute_infer_duration_us": (
        "counter",
        MV,
        f"Cumulative compute inference duration in microseconds {_NOT_CACHED}",
    ),
    "nv_inference_compute_output_duration_us": (
        "counter",
        MV,
        f"Cumulative inference compute output duration in microseconds {_NOT_CACHED}",
    ),
    "nv_inference_pending_request_count": (
        "gauge",
        MV,
        "Instantaneous number of pending requests awaiting execution per-model.",
    ),
    "nv_cpu_utilization": ("gauge", frozenset(), "CPU utilization rate [0.0 - 1.0]"),
    "nv_cpu_memory_total_bytes": ("gauge", frozenset(), "CPU total memory (RAM), in bytes"),
    "nv_cpu_memory_used_bytes": ("gauge", frozenset(), "CPU used memory (RAM), in bytes"),
}
TRITON_2_51_SUMMARIES = {
    "nv_inference_request_summary_us": (
        "summary",
        MVQ,
        f"Summary of inference request duration in microseconds {_CACHED}",
    ),
    "nv_inference_queue_summary_us": (
        "summary",
        MVQ,
        f"Summary of inference queuing duration in microseconds {_CACHED}",
    ),
    # Triton reuses the duration counters' help for the three compute summaries.
    "nv_inference_compute_input_summary_us": (
        "summary",
        MVQ,
        f"Cumulative compute input duration in microseconds {_NOT_CACHED}",
    ),
    "nv_inference_compute_infer_summary_us": (
        "summary",
        MVQ,
        f"Cumulative compute inference duration in microseconds {_NOT_CACHED}",
    ),
    "nv_inference_compute_output_summary_us": (
        "summary",
        MVQ,
        f"Cumulative inference compute output duration in microseconds {_NOT_CACHED}",
    ),
}
DURATION_COUNTERS = [name for name in TRITON_2_51 if name.endswith("_duration_us")]
FAILURE_REASONS = {"OTHER", "BACKEND", "CANCELED", "REJECTED"}
QUANTILES = ["0.5", "0.9", "0.95", "0.99", "0.999"]
NOT_EXPORTED = {  # Triton families faast does not export, and why
    "nv_pinned_memory_pool_total_bytes": "faast has no CUDA pinned memory pool",
    "nv_pinned_memory_pool_used_bytes": "faast has no CUDA pinned memory pool",
}
FAAST_FAMILIES = {  # faast's own device metrics, beside Triton's
    "faast_device_info": ("gauge", frozenset({"model", "version", "device", "compute_units"})),
    "faast_kernel_executions": ("counter", MV),
    "faast_kernel_busy_us": ("counter", MV),
    "faast_batch_fill_ratio": ("gauge", MV),
    "faast_compute_units_out_of_rotation": ("gauge", MV),
}
BATCHES = (1, 4, 16)  # the successful requests both servers get, rows each
# Triton 2.52+'s histogram (core's metrics.cc) and its default buckets (metric_model_reporter.h).
FIRST_RESPONSE = "nv_inference_first_response_histogram_ms"
FIRST_RESPONSE_HELP = "Duration from request to first response in milliseconds"


@pytest.fixture(autouse=True)
def _latencies_off():
    """registry_for turns per-request observations on process-wide; leave them off for other tests."""
    yield
    record_latencies(None)
    record_first_responses(False)


def _send_requests(http_url):
    """The same requests to either server: BATCHES as successes, then one wrong-shape request."""
    client = httpclient.InferenceServerClient(http_url)
    try:
        for rows in BATCHES:
            infer(client, np.random.default_rng(rows).random((rows, 15), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="unexpected shape"):
            infer(client, np.zeros((2, 14), np.float32))
    finally:
        client.close()


def _assert_valid_exposition(text):
    """prometheus_client's parser reads it, and no nv_ family or sample is named with `_total`."""
    parsed = list(text_string_to_metric_families(text))
    assert parsed
    named = [line.split()[2] for line in text.splitlines() if line.startswith(("# HELP ", "# TYPE "))]
    named += [line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert not [n for n in named if n.startswith("nv_") and n.endswith("_total")]
    return parsed


def _assert_families_as_triton(found, expected):
    for name, (typ, labels, help_text) in expected.items():
        assert name in found, f"{name} missing"
        family = found[name]
        assert (family.type, family.label_names, family.help) == (typ, labels, help_text), name


class FakeDevice:
    kind = "emulator"
    kernel = SimpleNamespace(layout=SimpleNamespace(rows_per_execution=16))
    compute_units = ["emulator0", "emulator1"]
    shadow = failover = None  # not a card guarded by the engine

    def usage(self):
        return 3, 21, 5000

    def out_of_rotation(self):
        return [("card0/facile_top_2", "kernel did not complete")]


def _fake_repository(config=None):
    """What the collector reads of a repository: models with name, version, stats, scheduler, device
    and config (a ModelConfig)."""
    model = SimpleNamespace(
        name="facile",
        version="1",
        stats=ModelStatistics(),
        scheduler=SimpleNamespace(pending=2),
        device=FakeDevice(),
        config=config if config is not None else model_config.ModelConfig(name="facile"),
        load_seconds=0.5,
    )
    return SimpleNamespace(served=lambda: iter([model])), model.stats


# ---- --metrics-config ------------------------------------------------------------------------


def test_parse_metrics_config():
    assert parse_metrics_config([]) == MetricsConfig()
    assert MetricsConfig().summary_quantiles == ((0.5, 0.05), (0.9, 0.01), (0.95, 0.001), (0.99, 0.001), (0.999, 0.001))
    config = parse_metrics_config(
        ["summary_latencies=true", "counter_latencies=false", "summary_quantiles=0.5:0.05,0.99:0.001"]
    )
    assert config.summary_latencies and not config.counter_latencies
    assert config.summary_quantiles == ((0.5, 0.05), (0.99, 0.001))
    assert parse_metrics_config(["summary_latencies=true", "summary_latencies=false"]) == MetricsConfig()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("histogram_quantiles=true", "unknown --metrics-config setting 'histogram_quantiles'"),
        ("histogram_latencies=1", "histogram_latencies must be true or false"),
        ("summary_latencies", r"format is '<setting>=<value>'"),
        ("model,summary_latencies=true", r"format is '<setting>=<value>'"),
        ("summary_latencies=yes", "summary_latencies must be true or false"),
        ("summary_quantiles=0.5", "No ':' delimiter found"),
        ("summary_quantiles=half:0.05", "not numbers"),
        ("summary_quantiles=1.5:0.05", r"must be in \[0, 1\]"),
    ],
)
def test_parse_metrics_config_refuses(option, message):
    with pytest.raises(ValueError, match=message):
        parse_metrics_config([option])


# ---- the exposition, in process ------------------------------------------------------------------


def test_exposition_in_process_has_tritons_families_and_values():
    repository, stats = _fake_repository()
    text = render(registry_for(repository)).decode()
    _assert_valid_exposition(text)
    for latency_ms in (1, 2, 3):
        stats.record_success(4, latency_ms * 1_000_000, 1500, 2500, 3500, 4500)
    stats.record_execution(12, 0, 0, 0)
    stats.record_failure(7_000_000, "REJECTED")
    text = render(registry_for(repository)).decode()
    _assert_valid_exposition(text)
    found = families(text)
    _assert_families_as_triton(found, TRITON_2_51)
    assert not set(found) & set(TRITON_2_51_SUMMARIES)  # summaries only when asked for
    assert sample_value(found["nv_inference_request_success"]) == 3
    assert {labels["reason"] for _, labels, _ in found["nv_inference_request_failure"].samples} == FAILURE_REASONS
    assert sample_value(found["nv_inference_request_failure"], reason="REJECTED") == 1
    assert sample_value(found["nv_inference_request_failure"], reason="OTHER") == 0
    assert sample_value(found["nv_inference_count"]) == 12
    assert sample_value(found["nv_inference_exec_count"]) == 1
    # Cumulative microseconds of successful requests only, as Triton counts them.
    assert sample_value(found["nv_inference_request_duration_us"]) == 6000
    assert sample_value(found["nv_inference_queue_duration_us"]) == 4  # 4500 ns
    assert sample_value(found["nv_inference_compute_output_duration_us"]) == 13
    assert sample_value(found["nv_inference_pending_request_count"]) == 2
    assert 0 <= sample_value(found["nv_cpu_utilization"]) <= 1
    assert 0 < sample_value(found["nv_cpu_memory_used_bytes"]) < sample_value(found["nv_cpu_memory_total_bytes"])
    for name, (typ, labels) in FAAST_FAMILIES.items():
        assert (found[name].type, found[name].label_names) == (typ, labels), name
    assert sample_value(found["faast_device_info"], device="emulator") == 1
    assert sample_value(found["faast_kernel_executions"]) == 3
    assert sample_value(found["faast_kernel_busy_us"]) == 5
    assert sample_value(found["faast_batch_fill_ratio"]) == 21 / 3 / 16
    assert sample_value(found["faast_compute_units_out_of_rotation"]) == 1


def test_summaries_in_process_as_triton_computes_them():
    repository, stats = _fake_repository()
    registry = registry_for(repository, parse_metrics_config(["summary_latencies=true"]))
    found = families(render(registry).decode())
    _assert_families_as_triton(found, TRITON_2_51_SUMMARIES)
    for name in TRITON_2_51_SUMMARIES:  # no observation yet: count 0, sum 0, quantiles NaN (Triton: Nan)
        samples = {(n, labels.get("quantile")): v for n, labels, v in found[name].samples}
        assert samples[(name + "_count", None)] == "0" and samples[(name + "_sum", None)] == "0"
        assert [samples[(name, q)] for q in QUANTILES] == ["NaN"] * len(QUANTILES)
    # Triton's own scrape after 3 requests of 616, 458 and 47934 us: 0.5 -> 458, 0.9 .. 0.999 -> 616
    # (prometheus-cpp's CKMS answers the observation of rank floor(q * n)).
    for request_us, queue_ns in ((616, 2000), (458, 1000), (47934, 3999)):
        stats.record_success(1, request_us * 1000 + 999, queue_ns, 10_000, 20_000, 30_000)
    text = render(registry).decode()
    parsed = {f.name: f for f in _assert_valid_exposition(text)}
    found = families(text)
    _assert_families_as_triton(found, TRITON_2_51_SUMMARIES)
    _assert_families_as_triton(found, TRITON_2_51)
    request = found["nv_inference_request_summary_us"]
    assert [sample_value(request, quantile=q) for q in QUANTILES] == [458, 616, 616, 616, 616]
    samples = {s.name: s.value for s in parsed["nv_inference_request_summary_us"].samples if "quantile" not in s.labels}
    assert samples == {"nv_inference_request_summary_us_count": 3, "nv_inference_request_summary_us_sum": 49008}
    queue = found["nv_inference_queue_summary_us"]
    assert [sample_value(queue, quantile=q) for q in QUANTILES] == [1, 2, 2, 2, 2]
    assert sample_value(found["nv_inference_compute_infer_summary_us"], quantile="0.5") == 20
    # Quantile labels follow summary_quantiles.
    config = parse_metrics_config(["summary_latencies=true", "summary_quantiles=0.25:0.01,0.75:0.01"])
    found = families(render(registry_for(repository, config)).decode())
    assert {
        labels["quantile"] for _, labels, _ in found["nv_inference_queue_summary_us"].samples if labels.get("quantile")
    } == {
        "0.25",
        "0.75",
    }


def test_counter_latencies_false_drops_the_duration_counters():
    repository, stats = _fake_repository()
    stats.record_success(1, 1000, 0, 0, 0, 0)
    found = families(render(registry_for(repository, parse_metrics_config(["counter_latencies=false"]))).decode())
    assert not set(found) & set(DURATION_COUNTERS)
    assert sample_value(found["nv_inference_request_success"]) == 1  # still counted (Triton 2.51 stops: see above)


def test_latency_observations_only_when_summaries_are_on():
    repository, stats = _fake_repository()
    registry_for(repository)
    stats.record_success(1, 1000, 0, 0, 0, 0)
    assert stats.latencies is None
    registry_for(repository, MetricsConfig(summary_latencies=True))
    stats.record_success(1, 1000, 0, 0, 0, 0)
    assert stats.latencies is not None and stats.latencies.count == 1


def test_latency_window_is_bounded_and_slides():
    window = SummaryWindow(max_age_s=60, age_buckets=5, capacity=256)
    samples = LatencySamples(window)
    slice_ns = 12 * 10**9
    values = np.random.default_rng(1).permutation(100_000)
    for v in values:
        samples.add(slice_ns * 10, (int(v), 0, 0, 0, 0))
    snapshot = samples.snapshot(slice_ns * 10)
    assert snapshot.count == 100_000 and snapshot.sums[0] == int(values.sum())
    ((rows, weight),) = snapshot.samples
    assert len(rows) // 5 <= 256 and weight * (len(rows) // 5) == pytest.approx(100_000, rel=0.01)
    # The median of a uniform 0 .. 99999 from a few hundred kept requests: within a few percent.
    kept = np.frombuffer(rows, np.int64).reshape(-1, 5)[:, 0]
    assert abs(np.median(kept) - 50_000) < 5_000
    # Still in the window 4 slices later (48 s), gone in the 5th (60 s), as prometheus-cpp's buckets.
    assert samples.snapshot(slice_ns * 14).samples
    assert not samples.snapshot(slice_ns * 15).samples
    samples.add(slice_ns * 14, (5, 5, 5, 5, 5))
    assert len(samples.snapshot(slice_ns * 14).samples) == 2
    assert [weight for _, weight in samples.snapshot(slice_ns * 15).samples] == [1]
    samples.add(slice_ns * 15, (6, 6, 6, 6, 6))
    assert len(samples.slices) == 2 and samples.snapshot(slice_ns * 15).count == 100_002


def test_label_values_are_escaped():
    repository, _ = _fake_repository()
    next(repository.served()).name = 'fa"ce\\ile\n'
    text = render(registry_for(repository)).decode()
    parsed = {f.name: f for f in _assert_valid_exposition(text)}
    assert parsed["nv_inference_count"].samples[0].labels["model"] == 'fa"ce\\ile\n'


# ---- one view over several worker processes (faast serve --workers) ------------------------------


@contextlib.asynccontextmanager
async def _loaded(model_repository):
    """The built FACILE repository loaded in this process, as one worker serves it, and a function
    sending one request of `rows` (of `features` values) through its dataplane."""
    repository = ModelRepository(model_repository)
    assert await repository.start() == []
    dataplane = DataPlane(repository, SharedMemoryManager(), TraceSettings(parse_trace_config([])))
    dataplane.ready = True

    async def send(rows, features=15):
        data = np.random.default_rng(rows).random((rows, features), dtype=np.float32).tobytes()
        await dataplane.infer(InferRequest("facile", inputs=[InputTensor("input", "FP32", (rows, features), data)]))

    try:
        yield repository, send
    finally:
        await repository.close()


def _counts(family):
    return [float(v) for n, _, v in family.samples if n.endswith("_count")]


def test_merged_readings_sum_the_workers_and_pool_their_latency_windows(model_repository):
    """Two workers' readings (one repository read before and after more requests, sent pickled as a
    peer sends them) merge into one reading whose counts are the sums and whose quantiles are over
    both workers' kept requests."""

    async def scenario():
        async with _loaded(model_repository) as (repository, send):
            view = MetricsView(repository, MetricsConfig(summary_latencies=True))
            for rows in BATCHES:
                await send(rows)
            with pytest.raises(InvalidArgument):
                await send(2, features=14)
            first = model_readings(repository)
            for rows in (2, 3):
                await send(rows)
            second = pickle.loads(pickle.dumps(model_readings(repository)))
            return view.collector, first, second

    collector, first, second = asyncio.run(scenario())
    merged = merge_readings([first, second])
    assert [(r.name, r.version) for r in merged] == [("facile", "1")]
    texts = [render_families(collector.families(readings)).decode() for readings in (first, second, merged)]
    _assert_valid_exposition(texts[2])
    one, two, both = (families(text) for text in texts)
    assert sample_value(one["nv_inference_count"]) == sum(BATCHES)
    assert sample_value(two["nv_inference_count"]) == sum(BATCHES) + 5
    for name in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "faast_kernel_executions",
        "faast_compute_units_out_of_rotation",
    ):
        assert sample_value(both[name]) == sample_value(one[name]) + sample_value(two[name]), name
    assert sample_value(both["nv_inference_request_failure"], reason="OTHER") == 2
    assert sample_value(both["nv_inference_request_failure"], reason="BACKEND") == 0
    # Nanoseconds are summed, then truncated to microseconds once.
    (a,), (b,) = first, second
    assert sample_value(both["nv_inference_queue_duration_us"]) == (a.stats.queue_ns + b.stats.queue_ns) // 1000
    assert sample_value(both["faast_kernel_busy_us"]) == pytest.approx((a.kernel_busy_ns + b.kernel_busy_ns) / 1000)
    # The fill ratio of the summed rows and executions, not a sum of ratios.
    fill = (a.kernel_rows + b.kernel_rows) / (a.kernel_runs + b.kernel_runs) / a.capacity
    assert sample_value(both["faast_batch_fill_ratio"]) == pytest.approx(fill)
    ((_, device, _),) = both["faast_device_info"].samples
    assert device["compute_units"] == str(a.compute_units + b.compute_units)
    # Pending requests and faulted compute units (none in the idle repository above) are summed too.
    (single,) = model_readings(_fake_repository()[0])
    (doubled,) = merge_readings([[single], [single]])
    assert single.pending > 0 and single.out_of_rotation > 0
    assert (doubled.pending, doubled.out_of_rotation) == (2 * single.pending, 2 * single.out_of_rotation)
    # Latency summaries: counts and sums added; each quantile the observation of rank floor(q * n)
    # over both windows' requests together (each kept request stands for itself at these rates).
    request = both["nv_inference_request_summary_us"]
    assert _counts(request) == [len(BATCHES) + len(BATCHES) + 2]
    windows = [reading.stats.latencies for reading in (a, b)]
    assert all(weight == 1 for window in windows for _, weight in window.samples)
    observed = np.sort(
        np.concatenate([np.frombuffer(rows, np.int64).reshape(-1, 5)[:, 0] for w in windows for rows, _ in w.samples])
    )
    assert len(observed) == len(BATCHES) * 2 + 2
    for quantile in QUANTILES:
        rank = max(1, math.floor(float(quantile) * len(observed)))
        assert sample_value(request, quantile=quantile) == observed[rank - 1], quantile


def test_metrics_view_adds_the_other_workers_readings(model_repository):
    """With peers, /metrics is this worker's readings plus what gather("metrics.readings") returns:
    here a second worker that served the same requests, so every count doubles; the CPU gauges stay
    this machine's."""

    class Peers:
        def __init__(self, answer):
            self.answer, self.asked = answer, []

        async def gather(self, operation, *args):
            self.asked.append((operation, args))
            return [pickle.loads(pickle.dumps(self.answer()))]

    async def scenario():
        async with _loaded(model_repository) as (repository, send):
            peers = Peers(lambda: model_readings(repository))
            alone, together = MetricsView(repository), MetricsView(repository, peers=peers)
            for rows in BATCHES:
                await send(rows)
            texts = [(await view.text()).decode() for view in (alone, together)]
            return texts, render(registry_for(repository)).decode(), peers.asked

    (alone_text, together_text), registry_text, asked = asyncio.run(scenario())
    assert asked == [("metrics.readings", ())]
    local_only = [line for line in alone_text.splitlines() if not line.startswith("nv_cpu_")]
    assert local_only == [line for line in registry_text.splitlines() if not line.startswith("nv_cpu_")]
    _assert_valid_exposition(together_text)
    alone, together = families(alone_text), families(together_text)
    assert list(alone) == list(together)
    assert sample_value(alone["nv_inference_count"]) == sum(BATCHES)
    for name, family in alone.items():
        doubled = family.type == "counter" or name == "nv_inference_pending_request_count"
        if name.startswith("nv_cpu_") or not doubled:
            continue
        for (_, labels, value), (_, labels_too, value_too) in zip(family.samples, together[name].samples, strict=True):
            assert labels == labels_too
            if name in DURATION_COUNTERS:  # nanoseconds summed, then truncated once
                assert 2 * float(value) <= float(value_too) <= 2 * float(value) + 1, name
            else:
                assert float(value_too) == 2 * float(value), name
    assert sample_value(together["faast_batch_fill_ratio"]) == sample_value(alone["faast_batch_fill_ratio"])
    ((_, device, _),) = alone["faast_device_info"].samples
    ((_, device_too, _),) = together["faast_device_info"].samples
    assert int(device_too["compute_units"]) == 2 * int(device["compute_units"])
    for name in ("nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes"):
        mine, merged = alone[name], together[name]
        assert (merged.type, merged.help, merged.label_names) == (mine.type, mine.help, mine.label_names), name
    assert sample_value(together["nv_cpu_memory_total_bytes"]) == sample_value(alone["nv_cpu_memory_total_bytes"])
    assert 0 <= sample_value(together["nv_cpu_utilization"]) <= 1


# ---- a real faast serve ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(model_repository, tmp_path_factory):
    """A faast serve of its own (so counts are exactly this module's requests), after the requests."""
    server = Server(model_repository, tmp_path_factory.mktemp("metrics") / "serve.log")
    try:
        _send_requests(server.http_url)
        yield server
    finally:
        server.stop()


def test_metrics_count_what_the_requests_did(served):
    text = scrape(f"127.0.0.1:{served.metrics_port}")
    _assert_valid_exposition(text)
    found = families(text)
    _assert_families_as_triton(found, TRITON_2_51)
    assert not set(found) & {*TRITON_2_51_SUMMARIES, FIRST_RESPONSE}
    assert sample_value(found["nv_inference_request_success"], model="facile", version="1") == len(BATCHES)
    assert sample_value(found["nv_inference_count"], model="facile") == sum(BATCHES)
    assert sample_value(found["nv_inference_exec_count"], model="facile") == len(BATCHES)  # one at a time
    # The wrong-shape request: faast counts it as OTHER (Triton 2.51 counts no failure for it).
    failures = {labels["reason"]: float(v) for _, labels, v in found["nv_inference_request_failure"].samples}
    assert failures == {"OTHER": 1, "BACKEND": 0, "CANCELED": 0, "REJECTED": 0}
    assert sample_value(found["nv_inference_pending_request_count"], model="facile") == 0
    # Triton 2.52+'s load time (core's metrics.cc and model_lifecycle.cc), registered after the pending count.
    load = found["nv_model_load_duration_secs"]
    assert (load.type, load.help, load.label_names) == ("gauge", "Model load time in seconds", MV)
    assert 0 < sample_value(load, model="facile", version="1") < 120
    names = list(found)
    assert names.index("nv_model_load_duration_secs") == names.index("nv_inference_pending_request_count") + 1
    client = httpclient.InferenceServerClient(served.http_url)
    try:
        stats = client.get_inference_statistics("facile")["model_stats"][0]
    finally:
        client.close()
    inference = stats["inference_stats"]
    assert inference["fail"]["count"] == 1 and inference["success"]["count"] == len(BATCHES)
    for family, key in (
        ("nv_inference_request_duration_us", "success"),
        ("nv_inference_queue_duration_us", "queue"),
        ("nv_inference_compute_input_duration_us", "compute_input"),
        ("nv_inference_compute_infer_duration_us", "compute_infer"),
        ("nv_inference_compute_output_duration_us", "compute_output"),
    ):
        assert sample_value(found[family], model="facile") == int(inference[key]["ns"]) // 1000, family
    assert sample_value(found["faast_device_info"], model="facile", device="emulator") == 1
    assert sample_value(found["faast_kernel_executions"], model="facile") >= len(BATCHES)
    assert 0 < sample_value(found["nv_cpu_memory_used_bytes"]) < sample_value(found["nv_cpu_memory_total_bytes"])
    assert 0 <= sample_value(found["nv_cpu_utilization"]) <= 1


# ---- parity with a real Triton 2.51 (slow: starts tritonserver) ---------------------------------------


@pytest.fixture(scope="module")
def triton_families(tmp_path_factory):
    """Triton's /metrics with summary_latencies on, after the same requests as faast's."""
    workdir = tmp_path_factory.mktemp("triton-metrics")
    process, http_url, metrics_url = start_triton_with_metrics(workdir, "summary_latencies=true")
    try:
        _send_requests(http_url)
        text = scrape(metrics_url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return families(text)


def _model_families(found):
    """Triton's per-model and CPU families: nv_inference_* and nv_cpu_*."""
    return {name: f for name, f in found.items() if name.startswith(("nv_inference_", "nv_cpu_"))}


@pytest.mark.slow
def test_families_match_a_real_triton(served, triton_families):
    triton = _model_families(triton_families)
    recorded = {
        name: (f.type, f.label_names, f.help) for name, f in triton.items() if name not in TRITON_2_51_SUMMARIES
    }
    assert recorded == TRITON_2_51  # what the docstring and the fast tests take as Triton's
    assert {
        name: (f.type, f.label_names, f.help) for name, f in triton.items() if name in TRITON_2_51_SUMMARIES
    } == TRITON_2_51_SUMMARIES
    assert set(triton_families) - set(triton) == set(NOT_EXPORTED)
    assert {labels["reason"] for _, labels, _ in triton["nv_inference_request_failure"].samples} == FAILURE_REASONS
    assert [
        labels["quantile"] for _, labels, _ in triton["nv_inference_queue_summary_us"].samples if "quantile" in labels
    ] == QUANTILES
    assert sample_value(triton["nv_inference_count"]) == sum(BATCHES)
    # faast served as tritonserver runs by default: every family but the summaries.
    faast = _model_families(families(scrape(f"127.0.0.1:{served.metrics_port}")))
    for name, family in triton.items():
        if name in TRITON_2_51_SUMMARIES:
            assert name not in faast
            continue
        assert name in faast, name
        assert (faast[name].type, faast[name].label_names, faast[name].help) == (
            family.type,
            family.label_names,
            family.help,
        ), name
    # With summaries on (in process until `faast serve --metrics-config` is there: see the next test).
    repository, stats = _fake_repository()
    registry = registry_for(repository, parse_metrics_config(["summary_latencies=true"]))
    stats.record_success(1, 1000, 0, 0, 0, 0)
    in_process = _model_families(families(render(registry).decode()))
    assert set(in_process) == set(triton)
    for name, family in triton.items():
        mine = in_process[name]
        assert (mine.type, mine.label_names, mine.help) == (family.type, family.label_names, family.help), name
        assert [s[1].get("quantile") for s in mine.samples] == [s[1].get("quantile") for s in family.samples], name


def _serve_knows_metrics_config():
    usage = subprocess.run([BIN / "faast", "serve", "--help"], capture_output=True, text=True).stdout
    return "--metrics-config" in usage


def _served_metrics(repository, tmp_path, metrics_config):
    """/metrics of a `faast serve --metrics-config METRICS_CONFIG` after _send_requests, checked as
    exposition text."""
    server = Server(repository, tmp_path / "serve.log", "--metrics-config", metrics_config)
    try:
        _send_requests(server.http_url)
        text = scrape(f"127.0.0.1:{server.metrics_port}")
    finally:
        server.stop()
    _assert_valid_exposition(text)
    return text


@pytest.mark.slow
def test_served_with_metrics_config_summary_latencies_matches_triton(model_repository, tmp_path, triton_families):
    """`faast serve --metrics-config summary_latencies=true` exports every family Triton does."""
    if not _serve_knows_metrics_config():
        pytest.skip("faast serve has no --metrics-config option yet")
    text = _served_metrics(model_repository, tmp_path, "summary_latencies=true")
    faast, triton = _model_families(families(text)), _model_families(triton_families)
    assert set(faast) == set(triton)
    for name, family in triton.items():
        mine = faast[name]
        assert (mine.type, mine.label_names, mine.help) == (family.type, family.label_names, family.help), name
        if family.type == "summary":  # _count, _sum, then each quantile, with the same labels
            assert [s[:2] for s in mine.samples] == [s[:2] for s in family.samples], name
    request = faast["nv_inference_request_summary_us"]
    assert sample_value(request, quantile="0.5") > 0 and not math.isnan(sample_value(request, quantile="0.999"))
    count = [float(v) for n, _, v in request.samples if n.endswith("_count")]
    assert count == [len(BATCHES)]


# ---- the first-response histogram of Triton 2.52 and later ---------------------------------------


def _histogram_lines(text):
    return [line for line in text.splitlines() if FIRST_RESPONSE in line]


def test_first_response_histogram_as_the_newest_triton_writes_it():
    repository, stats = _fake_repository()
    assert FIRST_RESPONSE not in render(registry_for(repository)).decode()  # off by default, as in Triton
    stats.record_success(1, 7_000_000, 0, 0, 0, 0)  # not counted while off
    registry = registry_for(repository, parse_metrics_config(["histogram_latencies=true"]))
    for ms in (0.4, 99.9, 100, 100.999, 501, 6000):
        stats.record_success(1, int(ms * 1_000_000), 0, 0, 0, 0)
    stats.record_failure(300_000_000, "BACKEND", answered_by_model=True)  # the model's failed response
    stats.record_failure(5_000_000, "OTHER")  # refused by validation: no response of the model's
    text = render(registry).decode()
    _assert_valid_exposition(text)
    labels = 'model="facile",version="1"'
    # Whole milliseconds 0, 99, 100, 100, 501, 6000 and 300: each bucket counts those <= its bound.
    assert _histogram_lines(text) == [
        f"# HELP {FIRST_RESPONSE} {FIRST_RESPONSE_HELP}",
        f"# TYPE {FIRST_RESPONSE} histogram",
        f"{FIRST_RESPONSE}_count{{{labels}}} 7",
        f"{FIRST_RESPONSE}_sum{{{labels}}} 7100",
        f'{FIRST_RESPONSE}_bucket{{{labels},le="100"}} 4',
        f'{FIRST_RESPONSE}_bucket{{{labels},le="500"}} 5',
        f'{FIRST_RESPONSE}_bucket{{{labels},le="2000"}} 6',
        f'{FIRST_RESPONSE}_bucket{{{labels},le="5000"}} 6',
        f'{FIRST_RESPONSE}_bucket{{{labels},le="+Inf"}} 7',
    ]
    (parsed,) = [f for f in text_string_to_metric_families(text) if f.name == FIRST_RESPONSE]
    assert parsed.type == "histogram"
    # prometheus-cpp's order: counters, gauges (the CPU's last), histograms, then summaries.
    names = list(families(text))
    assert names.index("nv_cpu_memory_used_bytes") < names.index(FIRST_RESPONSE) < names.index("faast_device_info")
    both = registry_for(repository, parse_metrics_config(["histogram_latencies=true", "summary_latencies=true"]))
    names = list(families(render(both).decode()))
    assert names.index(FIRST_RESPONSE) < names.index("nv_inference_request_summary_us")


def test_first_response_buckets_from_the_models_config():
    """model_metrics in config.pbtxt sets a model's buckets; boundaries that do not strictly increase
    (Triton fails such a model's load) keep the defaults."""
    config = text_format.Parse(
        f"""name: "facile"
        model_metrics {{ metric_control: [
          {{ metric_identifier: {{ family: "nv_other_histogram" }} histogram_options: {{ buckets: [ 3 ] }} }},
          {{ metric_identifier: {{ family: "{FIRST_RESPONSE}" }} histogram_options: {{ buckets: [ 0.5, 2, 1e20 ] }} }}
        ] }}""",
        model_config.ModelConfig(),
    )
    repository, stats = _fake_repository(config)
    registry = registry_for(repository, parse_metrics_config(["histogram_latencies=true"]))
    for ns in (0, 1_500_000, 3_000_000):
        stats.record_success(1, ns, 0, 0, 0, 0)
    buckets = [line.rsplit(" ", 1) for line in _histogram_lines(render(registry).decode()) if "_bucket" in line]
    assert [(line.split('le="')[1].split('"')[0], int(count)) for line, count in buckets] == [
        ("0.5", 1),
        ("2", 2),
        ("1e+20", 3),
        ("+Inf", 3),
    ]
    # Two workers' readings merge into one histogram: counts per millisecond summed.
    (merged,) = merge_readings([model_readings(repository), model_readings(repository)])
    assert merged.stats.first_response_ms == {0: 2, 1: 2, 3: 2}
    unsorted = model_config.ModelConfig(name="facile")
    control = unsorted.model_metrics.metric_control.add()
    control.metric_identifier.family = FIRST_RESPONSE
    control.histogram_options.buckets.extend([5, 5])
    repository, _ = _fake_repository(unsorted)
    text = render(registry_for(repository, parse_metrics_config(["histogram_latencies=true"]))).decode()
    assert [line.split('le="')[1].split('"')[0] for line in _histogram_lines(text) if "_bucket" in line] == [
        "100",
        "500",
        "2000",
        "5000",
        "+Inf",
    ]


def test_served_with_histogram_latencies(model_repository, tmp_path):
    """`faast serve --metrics-config histogram_latencies=true` with buckets from config.pbtxt: the
    requests that passed validation are counted (the wrong-shape one is not), each bucket at most
    the request count, and the histogram's sum within the requests' total duration."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository, symlinks=True)
    config = repository / "facile" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + f'model_metrics {{ metric_control: [ {{ metric_identifier: {{ family: "{FIRST_RESPONSE}" }}'
        + " histogram_options: { buckets: [ 1, 10000 ] } } ] }\n"
    )
    text = _served_metrics(repository, tmp_path, "histogram_latencies=true")
    found = families(text)
    histogram = found[FIRST_RESPONSE]
    assert (histogram.type, histogram.help) == ("histogram", FIRST_RESPONSE_HELP)
    samples = {(name, labels.get("le")): float(value) for name, labels, value in histogram.samples}
    assert set(samples) == {
        (f"{FIRST_RESPONSE}_count", None),
        (f"{FIRST_RESPONSE}_sum", None),
        (f"{FIRST_RESPONSE}_bucket", "1"),
        (f"{FIRST_RESPONSE}_bucket", "10000"),
        (f"{FIRST_RESPONSE}_bucket", "+Inf"),
    }
    assert samples[(f"{FIRST_RESPONSE}_count", None)] == len(BATCHES) == samples[(f"{FIRST_RESPONSE}_bucket", "+Inf")]
    assert samples[(f"{FIRST_RESPONSE}_bucket", "10000")] == len(BATCHES)
    assert 0 <= samples[(f"{FIRST_RESPONSE}_bucket", "1")] <= len(BATCHES)
    assert samples[(f"{FIRST_RESPONSE}_sum", None)] <= sample_value(found["nv_inference_request_duration_us"]) / 1000
