"""Every query of deploy/grafana/faast.json answers with data from a real Prometheus (Debian's)
scraping two live faast replicas, and every series and label it names is on a live /metrics: a
dashboard that names a series faast does not export would show nothing and pass a syntax check.
The second replica runs on a host with a card (the recording pyxrt stand-in's, reporting the sensors
XRT's sources write), so the card panels answer for it, and for it only."""

import json
import os
import re
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import ROOT, Server, xrt_sensors
from support.cards import U250_SHELL
from support.prometheus import query, running_prometheus
from support.triton_metrics import families, scrape

# slow: a second replica and a Prometheus that scrapes them for a few seconds
pytestmark = pytest.mark.slow

DASHBOARD = ROOT / "deploy" / "grafana" / "faast.json"
# Added by the scrape (the ServiceMonitor's target labels), not by faast's /metrics.
TARGET_LABELS = {"pod", "namespace", "instance", "job"}
SCRAPE_SECONDS = 1
CARD_REPLICAS = {"replica-b"}  # the replicas with a card: only they export faast_card_*


def _queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def _grafana_variables_filled(expr):
    """What Grafana sends Prometheus: $__rate_interval as at least four scrapes, $model as "all"."""
    return expr.replace("$__rate_interval", f"{4 * SCRAPE_SECONDS}s").replace("$model", ".*")


_FUNCTIONS_AND_KEYWORDS = {
    "sum", "avg", "rate", "clamp_min", "by", "without", "on", "ignoring", "max", "min",
}  # fmt: skip


def _series_and_labels(expr):
    """{series name: label names it is grouped or matched by} of a PromQL expression."""
    found: dict[str, set[str]] = {}
    grouping = set()
    for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouping |= {label.strip() for label in labels.split(",") if label.strip()}
    no_groupings = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", expr)
    for name, matchers in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", no_groupings):
        if name in _FUNCTIONS_AND_KEYWORDS:  # numbers and durations (1e-9, 4s) never match: a name follows no digit
            continue
        found.setdefault(name, set()).update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=~?", matchers or ""))
    for labels in found.values():
        labels |= grouping
    return found


@pytest.fixture(scope="module")
def scraped_replicas(server, model_repository, tmp_path_factory, facile_inputs):
    """Two live replicas that have served FACILE, scraped by Prometheus every second as pods a and b."""
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "cards.json").write_text(json.dumps([{"name": U250_SHELL, **xrt_sensors.U250}]))
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("FAAST_STANDIN_CARDS", str(folder / "cards.json"))
        standins = ROOT / "tests" / "support" / "standin_site"
        environment.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(standins), os.environ.get("PYTHONPATH")])))
        second = Server(model_repository, folder / "replica-b.log")
    replicas = {"replica-a": server, "replica-b": second}
    jobs = [
        {"targets": [f"127.0.0.1:{replica.metrics_port}"], "labels": {"pod": pod, "namespace": "physics"}}
        for pod, replica in replicas.items()
    ]
    try:
        with running_prometheus(folder, [{"job_name": "faast", "static_configs": jobs}], SCRAPE_SECONDS) as address:
            features = facile_inputs[0][:256].astype(np.float32)
            deadline = time.monotonic() + 12 * SCRAPE_SECONDS
            while time.monotonic() < deadline:  # traffic across several scrapes, so every rate has two points
                for replica in replicas.values():
                    tensor = grpcclient.InferInput("input", list(features.shape), "FP32")
                    tensor.set_data_from_numpy(features)
                    replica.client.infer("facile", [tensor])
                time.sleep(0.1)
            yield address, replicas
    finally:
        second.stop()


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    titles = " ".join(title.lower() for title, _ in _queries(json.loads(DASHBOARD.read_text())))
    panels = ("throughput", "queue", "compute", "batch fill", "kernel busy", "failures by reason")
    for wanted in (*panels, "card temperature", "card power", "card clocks"):
        assert wanted in titles
    for _, expr in _queries(json.loads(DASHBOARD.read_text())):
        assert "by (pod" in expr, f"not per replica: {expr}"


def test_every_series_and_label_the_dashboard_queries_is_on_a_live_metrics(scraped_replicas):
    _, replicas = scraped_replicas
    exported = families(scrape(f"127.0.0.1:{replicas['replica-a'].metrics_port}"))
    exported |= families(scrape(f"127.0.0.1:{replicas['replica-b'].metrics_port}"))  # with its card's series
    dashboard = json.loads(DASHBOARD.read_text())
    queried: dict[str, set[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(SERIES, LABEL)
            name, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]).groups()
            queried.setdefault(name, set()).add(label)
    for _, expr in _queries(dashboard):
        for name, labels in _series_and_labels(_grafana_variables_filled(expr)).items():
            queried.setdefault(name, set()).update(labels)
    assert len(queried) >= 15, queried
    for name, labels in queried.items():
        assert name in exported, f"{name} is not on /metrics"
        assert exported[name].samples, f"{name} has no sample"
        missing = labels - TARGET_LABELS - exported[name].label_names
        assert not missing, f"{name} has no label {missing}"


def test_every_dashboard_query_answers_per_replica_from_a_real_prometheus(scraped_replicas):
    prometheus, replicas = scraped_replicas
    deadline = time.monotonic() + 30
    while not query(prometheus, 'up{job="faast"} == 1') or len(query(prometheus, 'up{job="faast"} == 1')) < 2:
        assert time.monotonic() < deadline, "Prometheus never scraped both replicas"
        time.sleep(SCRAPE_SECONDS)
    for title, expr in _queries(json.loads(DASHBOARD.read_text())):
        result = query(prometheus, _grafana_variables_filled(expr))
        pods = CARD_REPLICAS if "faast_card_" in expr else set(replicas)  # no card: no series, not zeros
        assert {series["metric"].get("pod") for series in result} == pods, f"{title}: {expr} -> {result}"
        if "Throughput" in title or "Requests/s" in title:
            assert all(float(series["value"][1]) > 0 for series in result), f"{title}: {result}"
