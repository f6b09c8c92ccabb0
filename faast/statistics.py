"""Per-model inference statistics, as Triton's ModelStatistics reports them."""

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from .protocol import service


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
        self.failures = defaultdict(int)  # reason (REJECTED, BACKEND, OTHER) -> count
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches = defaultdict(BatchDurations)
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0

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

    def record_failure(self, total_ns, reason="OTHER"):
        with self._lock:
            self.fail.add(total_ns)
            self.failures[reason] += 1
            self.last_inference_ms = time.time_ns() // 1_000_000

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
