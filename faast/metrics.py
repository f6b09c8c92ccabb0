"""/metrics as Triton 2.51 exports it, so Grafana dashboards and alerts built for Triton work
unchanged: the same family names (counters without prometheus_client's `_total` suffix), TYPE
lines, HELP strings and labels (`model`, `version`; `reason` on failures; `quantile` on summaries),
the latency summaries of `--metrics-config summary_latencies=true`, and the CPU and memory gauges
read from /proc; and the first-response histogram of `histogram_latencies=true` as Triton 2.52 to
2.71 export it (2.51 has none), with 2.52's per-version load time (nv_model_load_duration_secs).
Beside them, faast's own device metrics (faast_device_info,
faast_kernel_executions, faast_kernel_busy_us, faast_batch_fill_ratio,
faast_compute_units_out_of_rotation), for a card guarded by the bit-exact engine its shadow
validation and failover counts (only for the models that configure them), and the cards' sensors
as XRT reads them (faast_card_*, the machine's, like the CPU gauges: card_families).

Values are read at scrape time into ModelReadings: plain, picklable copies of each model's
ModelStatistics (one short copy under its lock) and its device's usage. With several worker
processes (faast serve --workers) the worker answering a scrape gathers the others' readings and
sums them, so /metrics shows one merged view across worker processes. The exposition is written
here, in the Prometheus text format 0.0.4, because prometheus_client's writer names every counter
`NAME_total`, which Triton's families are not. `registry_for` still returns a prometheus_client
CollectorRegistry holding a custom collector, so the families can be read with `registry.collect()`
like any other.
"""

import asyncio
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from itertools import pairwise
from typing import Any

import numpy as np
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from .host.xrt_driver import CardTelemetry, card_telemetry
from .statistics import (
    SUMMARY_SERIES,
    LatencySnapshot,
    StatisticsSnapshot,
    SummaryWindow,
    record_first_responses,
    record_latencies,
)
from .workers import Peers

LABELS = ("model", "version")
# Triton's failure reasons, in the order its /metrics lists them (failure_reasons.h).
FAILURE_REASONS = ("OTHER", "BACKEND", "CANCELED", "REJECTED")
# Triton's summary quantiles, (quantile, allowed rank error) (metric_model_reporter.h).
DEFAULT_QUANTILES: tuple[tuple[float, float], ...] = (
    (0.5, 0.05),
    (0.9, 0.01),
    (0.95, 0.001),
    (0.99, 0.001),
    (0.999, 0.001),
)

# Help strings exactly as tritonserver 2.51 prints them (its own wording, typos and all).
_CACHED = "(includes cached requests)"
_NOT_CACHED = "(does not include cached requests)"
SUCCESS = ("nv_inference_request_success", "Number of successful inference requests, all batch sizes")
FAILURE = ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes")
COUNT = ("nv_inference_count", f"Number of inferences performed {_NOT_CACHED}")
EXEC_COUNT = ("nv_inference_exec_count", f"Number of model executions performed {_NOT_CACHED}")
# Cumulative latency counters (counter_latencies, on by default), in SUMMARY_SERIES order.
DURATION_COUNTERS = (
    ("nv_inference_request_duration_us", f"Cumulative inference request duration in microseconds {_CACHED}"),
    ("nv_inference_queue_duration_us", f"Cumulative inference queuing duration in microseconds {_CACHED}"),
    ("nv_inference_compute_input_duration_us", f"Cumulative compute input duration in microseconds {_NOT_CACHED}"),
    (
        "nv_inference_compute_infer_duration_us",
        f"Cumulative compute inference duration in microseconds {_NOT_CACHED}",
    ),
    (
        "nv_inference_compute_output_duration_us",
        f"Cumulative inference compute output duration in microseconds {_NOT_CACHED}",
    ),
)
PENDING = (
    "nv_inference_pending_request_count",
    "Instantaneous number of pending requests awaiting execution per-model.",
)
# Triton 2.52+ (core's metrics.cc): every model version's load time, registered after PENDING.
LOAD_DURATION = ("nv_model_load_duration_secs", "Model load time in seconds")
CPU_UTILIZATION = ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]")
CPU_MEMORY_TOTAL = ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes")
CPU_MEMORY_USED = ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes")
# Latency summaries (summary_latencies), in SUMMARY_SERIES order; Triton reuses the counters' help
# for the compute summaries.
SUMMARIES = (
    ("nv_inference_request_summary_us", f"Summary of inference request duration in microseconds {_CACHED}"),
    ("nv_inference_queue_summary_us", f"Summary of inference queuing duration in microseconds {_CACHED}"),
    ("nv_inference_compute_input_summary_us", DURATION_COUNTERS[2][1]),
    ("nv_inference_compute_infer_summary_us", DURATION_COUNTERS[3][1]),
    ("nv_inference_compute_output_summary_us", DURATION_COUNTERS[4][1]),
)
assert len(DURATION_COUNTERS) == len(SUMMARIES) == len(SUMMARY_SERIES)

# The latency histogram (histogram_latencies, Triton 2.52 and later: core's metrics.cc): whole
# milliseconds from a request's arrival to its first response, in buckets a model's config.pbtxt may
# set (model_metrics { metric_control { metric_identifier { family: "<this name>" }
# histogram_options { buckets: [...] } } }), else these (metric_model_reporter.h).
FIRST_RESPONSE = ("nv_inference_first_response_histogram_ms", "Duration from request to first response in milliseconds")
DEFAULT_FIRST_RESPONSE_BUCKETS = (100.0, 500.0, 2000.0, 5000.0)

DEVICE_INFO = ("faast_device_info", "The device serving each model and its compute units (value 1)")
KERNEL_EXECUTIONS = ("faast_kernel_executions", "Kernel executions on the device's compute units")
KERNEL_BUSY = ("faast_kernel_busy_us", "Time compute units spent executing the kernel, microseconds")
BATCH_FILL = ("faast_batch_fill_ratio", "Mean rows per kernel execution over the kernel's rows per execution")
OUT_OF_ROTATION = ("faast_compute_units_out_of_rotation", "Compute units taken out of rotation after a fault")
SHADOW_ROWS = ("faast_shadow_validated_rows", "Rows of the card's executions re-run on the bit-exact engine")
SHADOW_MISMATCHES = ("faast_shadow_mismatched_rows", "Re-run rows whose card outputs differ from the bit-exact engine")
SHADOW_SKIPPED = ("faast_shadow_skipped_executions", "Executions sampled for shadow validation but skipped (busy)")
FAILOVER_ROWS = ("faast_failover_rows", "Rows run on the bit-exact engine while no compute unit was in rotation")
FAILOVER_ACTIVE = ("faast_failover_active", "Whether the bit-exact engine currently serves in the card's place")
# Card telemetry, named as Triton names a GPU's gauges (nv_gpu_power_usage, ...), labeled card and bdf.
CARD_TEMPERATURE = ("faast_card_temperature", "Card sensor temperature in degrees Celsius")
CARD_POWER = ("faast_card_power_usage", "Card power usage in watts")
CARD_FAN_SPEED = ("faast_card_fan_speed", "Card fan speed in RPM")
CARD_CLOCK = ("faast_card_clock_frequency", "Card clock frequency in MHz")


@dataclass(frozen=True)
class MetricsConfig:
    """What /metrics exports. The first four are tritonserver's `--metrics-config` settings
    (parse_metrics_config); `cpu_metrics` is `--allow-cpu-metrics` and `interval_ms` is
    `--metrics-interval-ms` (how often the CPU gauges are refreshed, at most every interval_ms/2,
    as Triton's poller does)."""

    counter_latencies: bool = True  # the nv_inference_*_duration_us counters
    summary_latencies: bool = False  # the nv_inference_*_summary_us summaries
    histogram_latencies: bool = False  # the nv_inference_first_response_histogram_ms histogram
    summary_quantiles: tuple[tuple[float, float], ...] = DEFAULT_QUANTILES  # (quantile, error)
    cpu_metrics: bool = True
    interval_ms: int = 2000


def _boolean(key: str, value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"--metrics-config {key} must be true or false, got '{value}'")


def _quantiles(value: str) -> tuple[tuple[float, float], ...]:
    """Triton's `summary_quantiles=<quantile>:<error>,...`; an empty value keeps the defaults."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        quantile, colon, error = item.partition(":")
        if not colon:
            raise ValueError(
                f"--metrics-config summary_quantiles: invalid option [{item}]. No ':' delimiter found. "
                "Expected format is <quantile>:<error>"
            )
        try:
            pair = (float(quantile), float(error))
        except ValueError:
            raise ValueError(f"--metrics-config summary_quantiles: invalid option [{item}]: not numbers") from None
        if not (0.0 <= pair[0] <= 1.0 and 0.0 <= pair[1] <= 1.0):
            raise ValueError(
                f"--metrics-config summary_quantiles: invalid option [{item}]: quantile and error must be in [0, 1]"
            )
        pairs.append(pair)
    return tuple(pairs) or DEFAULT_QUANTILES


_SETTINGS = {
    "counter_latencies": _boolean,
    "summary_latencies": _boolean,
    "histogram_latencies": _boolean,
    "summary_quantiles": lambda key, value: _quantiles(value),
}


def parse_metrics_config(options: Iterable[str]) -> MetricsConfig:
    """A MetricsConfig from tritonserver's repeatable `--metrics-config <setting>=<value>` values
    (counter_latencies, summary_latencies, summary_quantiles, histogram_latencies; a later one
    overrides an earlier one).
    Raises ValueError naming what is wrong: an option without '=', an unknown setting, a bad value."""
    values: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals:
            raise ValueError(f"--metrics-config option format is '<setting>=<value>'. Got {option}")
        if "," in key:
            raise ValueError(f"--metrics-config option format is '<setting>=<value>'. Got {option}")
        key = key.strip()
        if key not in _SETTINGS:
            raise ValueError(f"unknown --metrics-config setting '{key}'; faast knows {', '.join(sorted(_SETTINGS))}")
        values[key] = _SETTINGS[key](key, value.strip())
    return MetricsConfig(**values)


class CpuSampler:
    """Triton's CPU gauges from /proc: utilization over the time since the previous reading (busy
    over busy + idle jiffies of /proc/stat's aggregate line), memory total and used (MemTotal,
    MemTotal - MemAvailable of /proc/meminfo). Read at a scrape, at most every interval_ms / 2 (the
    last values otherwise), so scrapes stay cheap; what cannot be read is 0, as Triton sets it."""

    def __init__(self, interval_ms: int = 2000):
        self.min_age_s = interval_ms / 2000
        self._cpu = self._read_cpu()  # the baseline, as Triton takes it when metrics start
        self._read_at: float | None = None
        self._values = (0.0, 0, 0)

    @staticmethod
    def _read_cpu() -> tuple[int, int] | None:
        """(busy, idle) jiffies since boot."""
        try:
            with open("/proc/stat") as f:
                line = f.readline()
            if not line.startswith("cpu "):
                return None
            fields = [int(v) for v in line.split()[1:9]]
            fields += [0] * (8 - len(fields))
            user, nice, system, idle, iowait, irq, softirq, steal = fields
            return user + nice + system + irq + softirq + steal, idle + iowait
        except (OSError, ValueError):
            return None

    @staticmethod
    def _read_memory() -> tuple[int, int]:
        """(total, used) bytes."""
        info = {}
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    if name in ("MemTotal", "MemAvailable"):
                        info[name] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return 0, 0
        if len(info) < 2 or info["MemAvailable"] > info["MemTotal"]:
            return 0, 0
        return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]

    def values(self) -> tuple[float, int, int]:
        """(utilization [0, 1], memory total bytes, memory used bytes)."""
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.min_age_s:
            return self._values
        self._read_at = now
        utilization = 0.0
        cpu = self._read_cpu()
        if cpu is not None:
            if self._cpu is not None:
                busy, idle = max(cpu[0] - self._cpu[0], 0), max(cpu[1] - self._cpu[1], 0)
                utilization = busy / (busy + idle) if busy + idle else self._values[0]
            self._cpu = cpu
        self._values = (utilization, *self._read_memory())
        return self._values


def _family(name_help: tuple[str, str], typ: str) -> Metric:
    return Metric(name_help[0], name_help[1], typ)


def _quantile_values(latencies: LatencySnapshot, quantiles: Iterable[float]) -> list[list[float]]:
    """Per series, the value of each quantile over the window's kept requests, as prometheus-cpp's
    CKMS estimator answers it: the observation of rank floor(q * n) (at least the first); NaN when
    the window holds none."""
    quantiles = list(quantiles)
    width = len(SUMMARY_SERIES)
    if not latencies.samples:
        return [[math.nan] * len(quantiles) for _ in range(width)]
    rows = np.concatenate([np.frombuffer(r, np.int64).reshape(-1, width) for r, _ in latencies.samples])
    weights = np.concatenate([np.full(len(r) // width, w, np.int64) for r, w in latencies.samples])
    total = int(weights.sum())
    ranks = np.array([max(1, math.floor(q * total)) for q in quantiles])
    result: list[list[float]] = []
    for column in range(width):
        order = np.argsort(rows[:, column], kind="stable")
        cumulative = np.cumsum(weights[order])
        at = np.minimum(np.searchsorted(cumulative, ranks), len(order) - 1)
        result.append([int(v) for v in rows[order[at], column]])  # observations: integer us
    return result


@dataclass(frozen=True)
class ModelReading:
    """What /metrics exports of one served model version, read at one scrape. Plain data, so another
    worker process can receive it (pickled) and merge it with its own (merge_readings)."""

    name: str
    version: str
    stats: StatisticsSnapshot
    pending: int  # requests awaiting execution in the model's scheduler
    device_kind: str
    compute_units: int
    kernel_runs: int  # kernel executions, rows executed and busy ns, summed over the compute units
    kernel_rows: int
    kernel_busy_ns: float
    capacity: int  # the kernel's rows per execution
    out_of_rotation: int  # compute units taken out of rotation after a fault
    shadow: tuple[int, int, int] | None  # validated rows, mismatched rows, skipped executions (None: off)
    failover: tuple[int, int] | None  # rows run on the engine, whether it serves now (None: off)
    first_response_buckets: tuple[float, ...]  # the histogram's bucket boundaries (ms)
    load_seconds: float  # how long the version took to load


def first_response_buckets(config: Any) -> tuple[float, ...]:
    """The first-response histogram's bucket boundaries of a model's ModelConfig: its model_metrics'
    for the family where it names it, else Triton's defaults. Boundaries that do not strictly
    increase (which prometheus-cpp throws on, failing Triton's model load) keep the defaults."""
    for control in config.model_metrics.metric_control:
        if control.metric_identifier.family == FIRST_RESPONSE[0]:
            buckets = tuple(control.histogram_options.buckets)
            if all(low < high for low, high in pairwise(buckets)):
                return buckets
    return DEFAULT_FIRST_RESPONSE_BUCKETS


def _reading(model: Any) -> ModelReading:
    runs, rows, busy_ns = model.device.usage()
    return ModelReading(
        name=model.name,
        version=str(model.version),
        stats=model.stats.snapshot(),
        pending=model.scheduler.pending,
        device_kind=model.device.kind,
        compute_units=len(model.device.compute_units),
        kernel_runs=runs,
        kernel_rows=rows,
        kernel_busy_ns=busy_ns,
        capacity=model.device.kernel.layout.rows_per_execution,
        out_of_rotation=len(model.device.out_of_rotation()),
        shadow=_shadow(model.device.shadow),
        failover=_failover(model.device.failover),
        first_response_buckets=first_response_buckets(model.config),
        load_seconds=model.load_seconds,
    )


def _shadow(shadow: Any) -> tuple[int, int, int] | None:
    return None if shadow is None else (shadow.checked_rows, shadow.mismatched_rows, shadow.skipped_executions)


def _failover(failover: Any) -> tuple[int, int] | None:
    return None if failover is None else (failover.rows, int(failover.active))


def model_readings(repository: Any) -> list[ModelReading]:
    """The readings of every model version `repository` serves, in its order."""
    return [_reading(model) for model in repository.served()]


# What merge_readings sums; the rest (device_kind, capacity, buckets) is the same in every worker, and
# the load time is the first worker's.
_SUMMED_STATS = tuple(
    f.name for f in fields(StatisticsSnapshot) if f.name not in ("failures", "first_response_ms", "latencies")
)
_SUMMED_READING = ("pending", "compute_units", "kernel_runs", "kernel_rows", "kernel_busy_ns", "out_of_rotation")


def _merged(readings: list[ModelReading]) -> ModelReading:
    """One model version's readings from several workers as one: counts, durations and usage summed;
    the latency windows' kept requests pooled, so quantiles are over every worker's requests."""
    stats = [reading.stats for reading in readings]
    windows = [snapshot.latencies for snapshot in stats if snapshot.latencies is not None]
    latencies = (
        LatencySnapshot(
            sum(window.count for window in windows),
            tuple(sum(series) for series in zip(*(window.sums for window in windows), strict=True)),
            tuple(sample for window in windows for sample in window.samples),
        )
        if windows
        else None
    )
    merged = StatisticsSnapshot(
        failures=_summed_counts(snapshot.failures for snapshot in stats),
        first_response_ms=_summed_counts(snapshot.first_response_ms for snapshot in stats),
        latencies=latencies,
        **{key: sum(getattr(snapshot, key) for snapshot in stats) for key in _SUMMED_STATS},
    )
    return replace(
        readings[0],
        stats=merged,
        **{key: sum(getattr(reading, key) for reading in readings) for key in _SUMMED_READING},
        shadow=_summed_guard([reading.shadow for reading in readings]),
        failover=_summed_guard([reading.failover for reading in readings]),
    )


def _summed_guard(values: list[Any]) -> Any:
    """Shadow or failover counts of several workers summed (each worker guards its own device)."""
    present = [value for value in values if value is not None]
    return tuple(sum(column) for column in zip(*present, strict=True)) if present else None


def _summed_counts(counts: Iterable[dict[Any, int]]) -> dict[Any, int]:
    """Counts by key (failures by reason, first responses by millisecond) summed over workers."""
    summed: dict[Any, int] = {}
    for by_key in counts:
        for key, count in by_key.items():
            summed[key] = summed.get(key, 0) + count
    return summed


def merge_readings(groups: list[list[ModelReading]]) -> list[ModelReading]:
    """Several workers' readings (each one model_readings list) as one list: one reading per model
    version, in the order first seen (groups[0] first)."""
    by_version: dict[tuple[str, str], list[ModelReading]] = {}
    for readings in groups:
        for reading in readings:
            by_version.setdefault((reading.name, reading.version), []).append(reading)
    return [_merged(readings) for readings in by_version.values()]


class RepositoryCollector:
    """The families of every loaded model, in the order Triton lists them, then faast's own."""

    def __init__(self, repository: Any, config: MetricsConfig | None = None):
        self.repository = repository
        self.config = config if config is not None else MetricsConfig()
        self.cpu = CpuSampler(self.config.interval_ms) if self.config.cpu_metrics else None

    def collect(self) -> Iterator[Metric]:
        return self.families(model_readings(self.repository))

    def families(self, readings: Iterable[ModelReading]) -> Iterator[Metric]:
        """The families of `readings` (this process's, or every worker's merged), and the CPU gauges
        of this machine."""
        config = self.config
        success, failure = _family(SUCCESS, "counter"), _family(FAILURE, "counter")
        count, executions = _family(COUNT, "counter"), _family(EXEC_COUNT, "counter")
        durations = [_family(d, "counter") for d in DURATION_COUNTERS]
        pending = _family(PENDING, "gauge")
        load_duration = _family(LOAD_DURATION, "gauge")
        summaries = [_family(s, "summary") for s in SUMMARIES]
        first_response = _family(FIRST_RESPONSE, "histogram")
        device = _family(DEVICE_INFO, "gauge")
        kernel_executions = _family(KERNEL_EXECUTIONS, "counter")
        kernel_busy = _family(KERNEL_BUSY, "counter")
        fill = _family(BATCH_FILL, "gauge")
        out_of_rotation = _family(OUT_OF_ROTATION, "gauge")
        guards = [
            _family(SHADOW_ROWS, "counter"),
            _family(SHADOW_MISMATCHES, "counter"),
            _family(SHADOW_SKIPPED, "counter"),
            _family(FAILOVER_ROWS, "counter"),
            _family(FAILOVER_ACTIVE, "gauge"),
        ]
        quantiles = [q for q, _ in config.summary_quantiles]
        for reading in readings:
            labels = {"model": reading.name, "version": reading.version}
            stats = reading.stats
            success.add_sample(success.name, labels, stats.success_count)
            for reason in FAILURE_REASONS:
                failure.add_sample(
                    failure.name,
                    {"model": reading.name, "reason": reason, "version": reading.version},
                    stats.failures.get(reason, 0),
                )
            count.add_sample(count.name, labels, stats.inference_count)
            executions.add_sample(executions.name, labels, stats.execution_count)
            totals_ns = (
                stats.success_ns,
                stats.queue_ns,
                stats.compute_input_ns,
                stats.compute_infer_ns,
                stats.compute_output_ns,
            )
            for family, ns in zip(durations, totals_ns, strict=True):
                family.add_sample(family.name, labels, ns // 1000)
            pending.add_sample(pending.name, labels, reading.pending)
            load_duration.add_sample(load_duration.name, labels, reading.load_seconds)
            if config.summary_latencies:
                latencies = stats.latencies or LatencySnapshot(0, (0,) * len(SUMMARY_SERIES), ())
                values = _quantile_values(latencies, quantiles)
                for i, family in enumerate(summaries):
                    family.add_sample(family.name + "_count", labels, latencies.count)
                    family.add_sample(family.name + "_sum", labels, latencies.sums[i])
                    for quantile, value in zip(quantiles, values[i], strict=True):
                        family.add_sample(family.name, {**labels, "quantile": _number(quantile)}, value)
            if config.histogram_latencies:
                _add_histogram(first_response, labels, stats.first_response_ms, reading.first_response_buckets)
            device_labels = {**labels, "device": reading.device_kind, "compute_units": str(reading.compute_units)}
            device.add_sample(device.name, device_labels, 1.0)
            runs, rows = reading.kernel_runs, reading.kernel_rows
            kernel_executions.add_sample(kernel_executions.name, labels, runs)
            kernel_busy.add_sample(kernel_busy.name, labels, reading.kernel_busy_ns / 1000)
            fill.add_sample(fill.name, labels, rows / runs / reading.capacity if runs else 0.0)
            out_of_rotation.add_sample(out_of_rotation.name, labels, reading.out_of_rotation)
            for family, value in zip(guards[:3], reading.shadow or (), strict=False):
                family.add_sample(family.name, labels, value)
            for family, value in zip(guards[3:], reading.failover or (), strict=False):
                family.add_sample(family.name, labels, value)
        yield from (success, failure, count, executions)
        if config.counter_latencies:
            yield from durations
        yield pending
        yield load_duration
        if self.cpu is not None:
            utilization, memory_total, memory_used = self.cpu.values()
            for name_help, value in (
                (CPU_UTILIZATION, utilization),
                (CPU_MEMORY_TOTAL, memory_total),
                (CPU_MEMORY_USED, memory_used),
            ):
                gauge = _family(name_help, "gauge")
                gauge.add_sample(gauge.name, {}, value)
                yield gauge
        if config.histogram_latencies:  # prometheus-cpp lists histograms after gauges, before summaries
            yield first_response
        if config.summary_latencies:
            yield from summaries
        yield from (device, kernel_executions, kernel_busy, fill, out_of_rotation)
        yield from (family for family in guards if family.samples)


def _add_histogram(family: Metric, labels: dict[str, str], counts: dict[int, int], buckets: tuple[float, ...]) -> None:
    """One model's histogram samples as prometheus-cpp writes them: `_count`, `_sum`, then each
    bucket's cumulative count (observations <= its bound) with `le` the last label, and +Inf's
    unless the boundaries end with it."""
    total = sum(counts.values())
    family.add_sample(family.name + "_count", labels, total)
    family.add_sample(family.name + "_sum", labels, sum(ms * n for ms, n in counts.items()))
    for bound in buckets:
        below = sum(n for ms, n in counts.items() if ms <= bound)
        family.add_sample(family.name + "_bucket", {**labels, "le": _bound(bound)}, below)
    if not buckets or buckets[-1] != math.inf:
        family.add_sample(family.name + "_bucket", {**labels, "le": "+Inf"}, total)


def _bound(value: float) -> str:
    """A bucket boundary as prometheus-cpp writes a double (a C++ stream with 16 significant digits):
    100 for 100.0, 0.5, 1e+20, +Inf."""
    return ("+Inf" if value > 0 else "-Inf") if math.isinf(value) else format(value, ".16g")


def _collector(repository: Any, config: MetricsConfig | None) -> RepositoryCollector:
    """The collector of `repository` (its models as they are at each scrape). Turns the models'
    per-request latency observations on exactly when `config` asks for summaries, and their
    first-response counts when it asks for histograms (process-wide settings, as Triton's metrics
    configuration is)."""
    config = config if config is not None else MetricsConfig()
    record_latencies(SummaryWindow() if config.summary_latencies else None)
    record_first_responses(config.histogram_latencies)
    return RepositoryCollector(repository, config)


def registry_for(repository: Any, config: MetricsConfig | None = None) -> CollectorRegistry:
    """A registry holding `repository`'s collector (see _collector), for `registry.collect()`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(repository, config))
    return registry


class MetricsView:
    """What the /metrics route renders: this process's models, merged with the other workers'
    readings (their "metrics.readings") when there are `peers`, so every worker answers a scrape
    with the whole server's counts."""

    def __init__(self, repository: Any, config: MetricsConfig | None = None, *, peers: Peers | None = None):
        self.collector = _collector(repository, config)
        self.peers = peers

    async def text(self) -> bytes:
        readings = model_readings(self.collector.repository)
        if self.peers is not None:
            readings = merge_readings([readings, *await self.peers.gather("metrics.readings")])
        cards = await asyncio.to_thread(card_telemetry)  # XRT's queries read the cards' sensors
        return render_families([*self.collector.families(readings), *card_families(cards)])


def card_families(cards: Iterable[CardTelemetry]) -> list[Metric]:
    """The faast_card_* gauges of `cards`: one sample per reading XRT reported, none for a sensor it
    did not (a missing sensor is absent, not 0), and no family without a sample."""
    temperature, power = _family(CARD_TEMPERATURE, "gauge"), _family(CARD_POWER, "gauge")
    fan_speed, clock = _family(CARD_FAN_SPEED, "gauge"), _family(CARD_CLOCK, "gauge")
    for card in cards:
        labels = {"card": card.card, "bdf": card.bdf}
        for sensor, celsius in card.temperatures_c.items():
            temperature.add_sample(temperature.name, {**labels, "sensor": sensor}, celsius)
        if card.power_w is not None:
            power.add_sample(power.name, labels, card.power_w)
        for fan, rpm in card.fans_rpm.items():
            fan_speed.add_sample(fan_speed.name, {**labels, "fan": fan}, rpm)
        for clock_id, mhz in card.clocks_mhz.items():
            clock.add_sample(clock.name, {**labels, "clock": clock_id}, mhz)
    return [family for family in (temperature, power, fan_speed, clock) if family.samples]


def _number(value: float) -> str:
    """A sample value: integers (counts, microseconds, bytes) as integers, as Triton writes them;
    NaN and infinities in the text format's spelling; other floats with Python's shortest
    round-trip digits (1.0 stays 1.0, as prometheus_client wrote faast's own gauges)."""
    if isinstance(value, int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_order(item: tuple[str, str]) -> tuple[bool, str]:
    """Labels sorted by name, a summary's `quantile` or a histogram's `le` last: how prometheus-cpp
    (Triton) orders them."""
    return item[0] in ("quantile", "le"), item[0]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render_families(families: Iterable[Metric]) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of `families`, written as Triton's
    prometheus-cpp writes it: each family's `# HELP` and `# TYPE` under its own name and its samples
    under theirs, with no suffix added (a counter stays `nv_inference_count`)."""
    lines = []
    for family in families:
        typ = "untyped" if family.type == "unknown" else family.type
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {documentation}\n# TYPE {family.name} {typ}\n")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_escape_label(str(value))}"' for key, value in sorted(sample.labels.items(), key=_label_order)
            )
            lines.append(f"{sample.name}{{{labels}}}" if labels else sample.name)
            lines.append(f" {_number(sample.value)}\n")
    return "".join(lines).encode()


def render(registry: CollectorRegistry) -> bytes:
    """The exposition of `registry`'s families (render_families)."""
    return render_families(registry.collect())
