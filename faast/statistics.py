"""Per-model inference statistics, as Triton's ModelStatistics reports them; when /metrics exports
latency summaries (Triton's `--metrics-config summary_latencies=true`), each successful request's
latencies over the last minute; when it exports latency histograms (`histogram_latencies=true`,
Triton 2.52 and later), how many requests the model answered in each whole number of milliseconds."""

import threading
import time
from array import array
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from .protocol import service

# The latencies a summary observes per successful request, in this order (Triton's summary families).
SUMMARY_SERIES = ("request", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class SummaryWindow:
    """The time window of latency summaries: prometheus-cpp's Summary defaults, which Triton keeps
    (quantiles over the last max_age_s seconds, kept as age_buckets slices), and how many requests
    one slice keeps at most (beyond that it keeps every 2nd, then every 4th, ... request)."""

    max_age_s: float = 60.0
    age_buckets: int = 5
    capacity: int = 2048


_summary_window: SummaryWindow | None = None  # None: no per-request observations (the default)


def record_latencies(window: SummaryWindow | None) -> None:
    """Turn per-request latency observations on (for every model's statistics, loaded now or later)
    or off (None). faast.metrics.registry_for calls it from the metrics configuration."""
    global _summary_window
    _summary_window = window


_first_responses = False  # whether requests' first-response times are counted (off by default)


def record_first_responses(on: bool) -> None:
    """Turn the count of first-response times on or off, for every model's statistics, as
    record_latencies does for the summaries' observations."""
    global _first_responses
    _first_responses = on


class _Slice:
    """The observations of one age bucket: rows of len(SUMMARY_SERIES) microsecond values, one kept
    for every `stride` requests."""

    __slots__ = ("index", "rows", "seen", "stride")

    def __init__(self, index: int):
        self.index = index
        self.rows = array("q")
        self.seen = 0
        self.stride = 1


@dataclass(frozen=True)
class LatencySnapshot:
    """A copy of a model's latency observations: `count` requests observed since the start and the
    `sums` of each series (us); `samples`: (rows, weight) of the window, each row one kept request
    (weight: how many requests it stands for)."""

    count: int
    sums: tuple[int, ...]
    samples: tuple[tuple[array, int], ...]


class LatencySamples:
    """Successful requests' latencies (us, each truncated as Triton truncates them) for quantiles
    over a sliding window, as prometheus-cpp's time-window summary keeps them: age_buckets slices of
    max_age_s / age_buckets seconds, the window being the current slice and the ones before it, so
    between (age_buckets - 1) / age_buckets * max_age_s and max_age_s seconds. Each slice keeps at
    most `capacity` rows (a full slice drops every other row and keeps every 2nd request from then
    on), so memory and the cost of a scrape stay bounded at any request rate. Not thread-safe: the
    owning ModelStatistics holds its lock."""

    def __init__(self, window: SummaryWindow):
        self.window = window
        self.width_ns = max(int(window.max_age_s * 1e9 / window.age_buckets), 1)
        self.count = 0
        self.sums = [0] * len(SUMMARY_SERIES)
        self.slices: deque[_Slice] = deque()

    def add(self, now_ns: int, values: tuple[int, int, int, int, int]) -> None:
        """One request's latencies (us, in SUMMARY_SERIES order), observed at now_ns (monotonic)."""
        self.count += 1
        sums = self.sums
        sums[0] += values[0]
        sums[1] += values[1]
        sums[2] += values[2]
        sums[3] += values[3]
        sums[4] += values[4]
        index = now_ns // self.width_ns
        slices = self.slices
        if not slices or slices[-1].index != index:
            slices.append(_Slice(index))
            while slices[0].index <= index - self.window.age_buckets:
                slices.popleft()
        current = slices[-1]
        seen = current.seen
        current.seen = seen + 1
        if seen % current.stride:
            return
        rows = current.rows
        rows.extend(values)
        if len(rows) >= self.window.capacity * len(SUMMARY_SERIES):
            kept = array("q")
            kept.frombytes(np.frombuffer(rows, np.int64).reshape(-1, len(SUMMARY_SERIES))[::2].tobytes())
            current.rows = kept
            current.stride *= 2

    def snapshot(self, now_ns: int) -> LatencySnapshot:
        oldest = now_ns // self.width_ns - self.window.age_buckets + 1
        samples = tuple((array("q", s.rows), s.stride) for s in self.slices if s.index >= oldest and s.rows)
        return LatencySnapshot(self.count, tuple(self.sums), samples)


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The cumulative values /metrics exports, read at one instant."""

    success_count: int
    success_ns: int
    failures: dict[str, int]
    inference_count: int
    execution_count: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    latencies: LatencySnapshot | None
    first_response_ms: dict[int, int]  # whole milliseconds -> requests answered in that time


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns, count=1):
        self.count += count
        self.ns += int(ns)


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStatistics:
    """Cumulative counts and durations; safe to update from the event loop and worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.success = Duration()
        self.fail = Duration()
        self.failures = defaultdict(int)  # reason (REJECTED, CANCELED, BACKEND, OTHER) -> count
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches = defaultdict(BatchDurations)
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.latencies: LatencySamples | None = None  # only while latency summaries are on
        # Requests per whole millisecond from arrival to answer, while latency histograms are on: a
        # histogram's buckets are then counted at a scrape, with whatever boundaries the model's
        # config gives. Whole milliseconds (Triton truncates them too) keep this small.
        self.first_response_ms: defaultdict[int, int] = defaultdict(int)

    def record_execution(self, batch_size, input_ns, infer_ns, output_ns):
        with self._lock:
            self.execution_count += 1
            batch = self.batches[batch_size]
            batch.compute_input.add(input_ns)
            batch.compute_infer.add(infer_ns)
            batch.compute_output.add(output_ns)

    def record_success(self, rows, total_ns, queue_ns, input_ns, infer_ns, output_ns):
        with self._lock:
            self.success.add(total_ns)
            self.queue.add(queue_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)
            self.inference_count += rows
            self.last_inference_ms = time.time_ns() // 1_000_000
            if _first_responses:
                self.first_response_ms[int(total_ns) // 1_000_000] += 1
            if _summary_window is not None:
                if self.latencies is None or self.latencies.window is not _summary_window:
                    self.latencies = LatencySamples(_summary_window)
                self.latencies.add(
                    time.monotonic_ns(),
                    (
                        int(total_ns) // 1000,
                        int(queue_ns) // 1000,
                        int(input_ns) // 1000,
                        int(infer_ns) // 1000,
                        int(output_ns) // 1000,
                    ),
                )

    def record_failure(self, total_ns, reason="OTHER", answered_by_model=False):
        """`answered_by_model`: the request passed validation, so the model (its scheduler) sent its
        failure, which Triton times as the request's first response, as a success's."""
        with self._lock:
            self.fail.add(total_ns)
            self.failures[reason] += 1
            self.last_inference_ms = time.time_ns() // 1_000_000
            if _first_responses and answered_by_model:
                self.first_response_ms[int(total_ns) // 1_000_000] += 1

    def snapshot(self) -> StatisticsSnapshot:
        """What /metrics exports, copied under the lock (the latency rows too: a few tens of KiB)."""
        with self._lock:
            latencies = self.latencies.snapshot(time.monotonic_ns()) if self.latencies is not None else None
            return StatisticsSnapshot(
                success_count=self.success.count,
                success_ns=self.success.ns,
                failures=dict(self.failures),
                inference_count=self.inference_count,
                execution_count=self.execution_count,
                queue_ns=self.queue.ns,
                compute_input_ns=self.compute_input.ns,
                compute_infer_ns=self.compute_infer.ns,
                compute_output_ns=self.compute_output.ns,
                latencies=latencies,
                first_response_ms=dict(self.first_response_ms),
            )

    def to_proto(self, name, version):
        def duration(d):
            return service.StatisticDuration(count=d.count, ns=d.ns)

        with self._lock:
            stats = service.ModelStatistics(
                name=name,
                version=version,
                last_inference=self.last_inference_ms,
                inference_count=self.inference_count,
                execution_count=self.execution_count,
            )
            inference = stats.inference_stats
            for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                getattr(inference, key).CopyFrom(duration(getattr(self, key)))
            for size in sorted(self.batches):
                batch = self.batches[size]
                stats.batch_stats.add(
                    batch_size=size,
                    compute_input=duration(batch.compute_input),
                    compute_infer=duration(batch.compute_infer),
                    compute_output=duration(batch.compute_output),
                )
        return stats


def merge_statistics(responses: list[service.ModelStatisticsResponse]) -> service.ModelStatisticsResponse:
    """One ModelStatisticsResponse from several processes' (faast serve --workers): per model
    version, in first-seen order, every count and duration summed, and the latest last_inference."""
    merged: dict[tuple[str, str], service.ModelStatistics] = {}
    for response in responses:
        for stats in response.model_stats:
            into = merged.setdefault(
                (stats.name, stats.version), service.ModelStatistics(name=stats.name, version=stats.version)
            )
            into.last_inference = max(into.last_inference, stats.last_inference)
            into.inference_count += stats.inference_count
            into.execution_count += stats.execution_count
            for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
                _add(getattr(into.inference_stats, key), getattr(stats.inference_stats, key))
            batches = {batch.batch_size: batch for batch in into.batch_stats}
            for batch in stats.batch_stats:
                if batch.batch_size not in batches:
                    batches[batch.batch_size] = into.batch_stats.add(batch_size=batch.batch_size)
                for key in ("compute_input", "compute_infer", "compute_output"):
                    _add(getattr(batches[batch.batch_size], key), getattr(batch, key))
    for into in merged.values():
        into.batch_stats.sort(key=lambda batch: batch.batch_size)
    return service.ModelStatisticsResponse(model_stats=list(merged.values()))


def _add(into: service.StatisticDuration, other: service.StatisticDuration) -> None:
    into.count += other.count
    into.ns += other.ns
