"""Prometheus metrics with Triton's names and labels, so existing Grafana dashboards work, plus
faast's own device metrics. Values are read from the models' statistics at scrape time."""

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

LABELS = ["model", "version"]
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


class RepositoryCollector:
    def __init__(self, repository):
        self.repository = repository

    def collect(self):
        def counter(name, documentation, labels=LABELS):
            return CounterMetricFamily(name, documentation, labels=labels)

        success = counter("nv_inference_request_success", "Number of successful inference requests, all batch sizes")
        failure = counter(
            "nv_inference_request_failure", "Number of failed inference requests, all batch sizes", LABELS + ["reason"]
        )
        count = counter("nv_inference_count", "Number of inferences performed (does not include cached requests)")
        executions = counter("nv_inference_exec_count", "Number of model executions performed")
        durations = {
            key: counter(f"nv_inference_{key}_duration_us", f"Cumulative {text} duration in microseconds")
            for key, text in (
                ("request", "inference request"),
                ("queue", "inference queuing"),
                ("compute_input", "compute input"),
                ("compute_infer", "compute inference"),
                ("compute_output", "compute output"),
            )
        }
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels=LABELS,
        )
        device = GaugeMetricFamily(
            "faast_device_info", "The device serving each model (value 1)", labels=LABELS + ["device"]
        )
        kernel_executions = counter("faast_kernel_executions", "Kernel executions on the device's compute units")
        kernel_busy = counter("faast_kernel_busy_us", "Time compute units spent executing the kernel, microseconds")
        fill = GaugeMetricFamily(
            "faast_batch_fill_ratio",
            "Mean rows per kernel execution over the kernel's rows per execution",
            labels=LABELS,
        )
        for model in list(self.repository.models.values()):
            labels = [model.name, model.version]
            stats = model.stats
            success.add_metric(labels, stats.success.count)
            for reason in FAILURE_REASONS:
                failure.add_metric(labels + [reason], stats.failures.get(reason, 0))
            count.add_metric(labels, stats.inference_count)
            executions.add_metric(labels, stats.execution_count)
            durations["request"].add_metric(labels, (stats.success.ns + stats.fail.ns) / 1000)
            for key in ("queue", "compute_input", "compute_infer", "compute_output"):
                durations[key].add_metric(labels, getattr(stats, key).ns / 1000)
            pending.add_metric(labels, model.scheduler.pending)
            device.add_metric(labels + [model.device.kind], 1)
            runs, rows, busy_ns = model.device.usage()
            kernel_executions.add_metric(labels, runs)
            kernel_busy.add_metric(labels, busy_ns / 1000)
            capacity = model.device.kernel.layout.rows_per_execution
            fill.add_metric(labels, rows / runs / capacity if runs else 0.0)
        yield from (
            success,
            failure,
            count,
            executions,
            *durations.values(),
            pending,
            device,
            kernel_executions,
            kernel_busy,
            fill,
        )


def registry_for(repository):
    registry = CollectorRegistry()
    registry.register(RepositoryCollector(repository))
    return registry


def render(registry):
    return generate_latest(registry)
