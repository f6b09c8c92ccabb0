"""SuperSONIC's Helm chart (github.com/fastmachinelearning/SuperSONIC) running faast with
deploy/supersonic/values.yaml: rendered by a real helm, every object validated against the
Kubernetes schemas, and what the chart asks of its servers asked of a live faast: its KEDA scaling
query evaluated by a real Prometheus (Debian's) scraping faast with the chart's scrape job, its
startup probe, its readiness command, and the gRPC call its Envoy rate limiter inspects.

The chart is published only in SuperSONIC's own Helm repository (fastmachinelearning.org/SuperSONIC)
and on no package registry, so a test cannot install it: it is taken from FAAST_SUPERSONIC_CHART (a
checkout's helm/supersonic) or from a git mirror of SuperSONIC at MIRROR, and the tests that need it
skip without one. The facts the live tests use (the query, the probe, the inspected call, the
scraped port and labels) are recorded here from the chart's templates, so they run without the
chart; with it, test_the_recorded_facts_are_what_the_chart_renders checks each against the render
and the live fixture scrapes with the chart's own job."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from support import ROOT, Server
from support.kubernetes import assert_valid
from support.prometheus import query, running_prometheus
from tritonclient.grpc import service_pb2

from faast import tritonserver_flags

# slow: a faast replica of its own and a Prometheus that scrapes it for a few seconds
pytestmark = pytest.mark.slow

VALUES = ROOT / "deploy" / "supersonic" / "values.yaml"
SUPERSONIC_VERSION = "0.3.1"  # the chart version values.yaml is written for
MIRROR = Path("/work/.mirror/fastmachinelearning+SuperSONIC/repo")  # a bare clone, as `git clone --mirror` makes
RELEASE, NAMESPACE = "supersonic", "physics"  # values.yaml's header says why the release is "supersonic"
OLDEST_KUBERNETES = "1.25.0"
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor"}  # schemas ship with KEDA and the Prometheus operator

# Facts of SuperSONIC 0.3.1's templates, for release RELEASE.
# templates/_helpers/_scaling-metric.tpl: KEDA's query and the Envoy rate limiter's, mean queue time
# per model execution in milliseconds, compared with serverLoadThreshold (values.yaml: 100).
SCALING_QUERY = """sum by (release) (
    rate(nv_inference_queue_duration_us{release=~"supersonic"}[30s])
)
  /
sum by (release) (
    (rate(nv_inference_exec_count{release=~"supersonic"}[30s]) * 1000) + 0.001
)"""
SCALING_THRESHOLD = 100
# templates/triton/deployment.yaml: the startup probe (the readiness probe's command is values.yaml's).
STARTUP_PROBE = {"path": "/v2/health/ready", "port": "http"}
# cfg/envoy-filter.lua: the one call the rate limiter inspects (Envoy's only check of the servers;
# its upstream cluster has no health_checks and follows the headless Service's ready pods).
RATE_LIMITED_CALL = "/inference.GRPCInferenceService/RepositoryIndex"
# templates/monitoring/prometheus-configmap.yaml: the Triton job keeps container port 8002 on
# /metrics and labels each target with its pod's app.kubernetes.io/instance as `release`.
SCRAPED_PORT, SCRAPED_PATH, SCRAPE_JOB = 8002, "/metrics", "supersonic-triton"
SCRAPE_SECONDS = 1
# faast serve's flags that the test sets itself: the pod's ports become free loopback ports, the
# image's /models the session's FACILE repository.
MAPPED_FLAGS = {"--model-repository", "--http-port", "--grpc-port", "--metrics-port"}


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    """SuperSONIC's chart in a folder of its own, or None where neither FAAST_SUPERSONIC_CHART nor
    MIRROR holds it. A source checkout lacks the subcharts (Grafana, Prometheus, Tempo, OpenTelemetry
    collector), which come from their projects' Helm repositories, out of reach here; helm refuses
    to render a chart whose dependencies are missing, even disabled ones, so their entries leave
    Chart.yaml. What they render is theirs; every template of SuperSONIC's own is rendered."""
    folder = tmp_path_factory.mktemp("supersonic")
    if os.environ.get("FAAST_SUPERSONIC_CHART"):
        chart = Path(shutil.copytree(os.environ["FAAST_SUPERSONIC_CHART"], folder / "supersonic"))
    elif (MIRROR / "HEAD").is_file():
        archive = subprocess.run(
            ["git", "--git-dir", MIRROR, "archive", f"supersonic-{SUPERSONIC_VERSION}", "helm/supersonic"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as files:
            files.extractall(folder, filter="data")
        chart = folder / "helm" / "supersonic"
    else:
        return None
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert metadata["version"] == SUPERSONIC_VERSION, f"values.yaml is written for {SUPERSONIC_VERSION}"
    if not (chart / "charts").is_dir():  # a packaged chart (helm pull --untar) has them
        metadata.pop("dependencies")
        (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata))
        (chart / "Chart.lock").unlink()
    return chart


NO_CHART = (
    "SuperSONIC's chart is published only in its own Helm repository, which tests cannot reach: set "
    f"FAAST_SUPERSONIC_CHART to a checkout's helm/supersonic (git tag supersonic-{SUPERSONIC_VERSION}), "
    f"or mirror github.com/fastmachinelearning/SuperSONIC at {MIRROR}"
)


@pytest.fixture(scope="module")
def rendered(chart, request):
    """The chart's objects with faast's values, or None without the chart."""
    if chart is None:
        return None
    helm = request.getfixturevalue("helm")
    run = subprocess.run(
        [helm, "template", RELEASE, chart, "--namespace", NAMESPACE, "-f", VALUES], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


@pytest.fixture
def objects(rendered):
    if rendered is None:
        pytest.skip(NO_CHART)
    return rendered


def _only(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


def _server_container(objects):
    (container,) = _only(objects, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]["containers"]
    return container


def _scaled_object_trigger(objects):
    (trigger,) = _only(objects, "ScaledObject", f"{RELEASE}-keda-so")["spec"]["triggers"]
    return trigger


def _prometheus_job(objects):
    config = yaml.safe_load(_only(objects, "ConfigMap", f"{RELEASE}-prometheus-config")["data"]["prometheus.yml"])
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == SCRAPE_JOB]
    return job


def test_the_chart_lints_renders_with_faast_and_every_object_validates(helm, chart, objects):
    lint = subprocess.run([helm, "lint", "--strict", chart, "-f", VALUES], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    own = [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "supersonic"]
    kinds = sorted(o["kind"] for o in own)  # a packaged chart's subcharts add their own
    assert kinds == sorted(
        ["ConfigMap"] * 3
        + ["Deployment"] * 2
        + ["Role", "RoleBinding", "ScaledObject", "ServiceAccount"]
        + ["Service"] * 2
        + ["ServiceMonitor"] * 2
    )
    assert_valid(objects, OLDEST_KUBERNETES, CUSTOM_KINDS)


def test_the_chart_starts_faast_on_the_ports_it_wires_to_envoy_prometheus_and_the_probes(objects):
    values = yaml.safe_load(VALUES.read_text())
    server = _server_container(objects)
    assert server["image"] == values["triton"]["image"] and server["command"] == ["tritonserver"]
    options = tritonserver_flags.parse(server["args"])  # faast's own reading of tritonserver's flags
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {"http": options.http_port, "grpc": options.grpc_port, "metrics": options.metrics_port}
    assert options.metrics_port == SCRAPED_PORT
    pod = _only(objects, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]
    assert options.exit_timeout_secs < pod["terminationGracePeriodSeconds"]
    envoy = yaml.safe_load(_only(objects, "ConfigMap", f"{RELEASE}-envoy-config")["data"]["envoy.yaml"])
    (upstream,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "triton_grpc_service"]
    (endpoint,) = upstream["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": f"{RELEASE}-triton",
        "port_value": options.grpc_port,
    }
    assert "http2_protocol_options" in upstream and "health_checks" not in upstream
    assert _only(objects, "Service", f"{RELEASE}-triton")["spec"]["clusterIP"] == "None"  # Envoy resolves pods
    assert server["readinessProbe"]["exec"]["command"] == values["triton"]["readinessProbe"]["command"]


def test_the_readiness_command_is_the_images_own_health_check():
    """The chart's probe runs curl, which faast's image lacks; the command runs faast-healthcheck,
    the image's HEALTHCHECK (run in a real container by test_container.py)."""
    command = yaml.safe_load(VALUES.read_text())["triton"]["readinessProbe"]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and command[2].split(" && ")[0] == "faast-healthcheck"
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    assert "COPY deploy/container/healthcheck.py /usr/local/bin/faast-healthcheck" in containerfile
    assert 'CMD ["faast-healthcheck"]' in containerfile


def test_the_recorded_facts_are_what_the_chart_renders(objects):
    trigger = _scaled_object_trigger(objects)
    assert trigger["metadata"]["query"].strip() == SCALING_QUERY
    assert float(trigger["metadata"]["threshold"]) == SCALING_THRESHOLD
    lua = _only(objects, "ConfigMap", f"{RELEASE}-lua-config")["data"]["envoy-filter.lua"]
    assert f'path == "{RATE_LIMITED_CALL}"' in lua
    assert f"local query = {json.dumps(chr(10) + SCALING_QUERY)}" in lua  # the same query, as a Lua string
    assert _server_container(objects)["startupProbe"]["httpGet"] == STARTUP_PROBE
    job = _prometheus_job(objects)
    assert job["metrics_path"] == SCRAPED_PATH
    relabeling = {(tuple(r["source_labels"]), r.get("target_label"), r.get("regex")) for r in job["relabel_configs"]}
    assert (("__meta_kubernetes_pod_container_port_number",), None, str(SCRAPED_PORT)) in relabeling
    assert (("__meta_kubernetes_pod_label_app_kubernetes_io_instance",), "release", None) in relabeling


def _pod_targets(objects, replica):
    """What Kubernetes' pod discovery gives the chart's job for one faast pod: a target per
    container port, with the pod's __meta_kubernetes_* labels; addresses on loopback."""
    pod = _only(objects, "Deployment", f"{RELEASE}-triton")["spec"]["template"]
    loopback = {"http": replica.http_port, "grpc": replica.port, "metrics": replica.metrics_port}
    pod_labels = {
        "__meta_kubernetes_pod_label_" + name.replace(".", "_").replace("/", "_").replace("-", "_"): value
        for name, value in pod["metadata"]["labels"].items()
    }
    return [
        {
            "targets": [f"127.0.0.1:{loopback[port['name']]}"],
            "labels": {
                **pod_labels,
                "__meta_kubernetes_pod_name": f"{RELEASE}-triton-0",
                "__meta_kubernetes_namespace": NAMESPACE,
                "__meta_kubernetes_pod_container_port_name": port["name"],
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
            },
        }
        for port in _server_container(objects)["ports"]
    ]


def _scrape_job(rendered, replica):
    """The chart's job with pod discovery replaced by the targets it would find; without the chart,
    a job giving faast's /metrics the labels the chart's relabeling gives it."""
    if rendered is None:
        labels = {"release": RELEASE, "pod": f"{RELEASE}-triton-0", "namespace": NAMESPACE}
        targets = [{"targets": [f"127.0.0.1:{replica.metrics_port}"], "labels": labels}]
        return {"job_name": SCRAPE_JOB, "metrics_path": SCRAPED_PATH, "static_configs": targets}
    job = dict(_prometheus_job(rendered))
    del job["kubernetes_sd_configs"]
    return job | {"static_configs": _pod_targets(rendered, replica)}


def _last_scrape(prometheus):
    """When Prometheus last scraped faast (unix time), 0 before a successful scrape. (timestamp() of
    a filtered expression would give the evaluation time: the selector is filtered afterwards.)"""
    result = query(prometheus, f'timestamp(up{{job="{SCRAPE_JOB}"}}) and up{{job="{SCRAPE_JOB}"}} == 1')
    return float(result[0]["value"][1]) if result else 0.0


def _queue_and_executions(replica):
    """faast's own statistics (Triton's statistics extension), summed over its models: queue time
    in microseconds and model executions."""
    models = replica.client.get_inference_statistics(as_json=True)["model_stats"]
    queue_ns = sum(int(m["inference_stats"]["queue"].get("ns", 0)) for m in models)
    return queue_ns / 1000, sum(int(m.get("execution_count", 0)) for m in models)


@pytest.fixture(scope="module")
def scraped_faast(rendered, model_repository, tmp_path_factory, facile_inputs):
    """A fresh faast started with values.yaml's arguments (pod ports on free loopback ports) and
    scraped every SCRAPE_SECONDS by Prometheus with the chart's job, after a few seconds of FACILE
    traffic that began after Prometheus's first scrape and ended before its last: (Prometheus
    address, replica, faast's (queue us, executions) over that traffic)."""
    folder = tmp_path_factory.mktemp("supersonic-prometheus")
    arguments = yaml.safe_load(VALUES.read_text())["triton"]["args"]
    replica = Server(
        model_repository, folder / "faast.log", *[a for a in arguments if a.partition("=")[0] not in MAPPED_FLAGS]
    )
    try:
        with running_prometheus(folder, [_scrape_job(rendered, replica)], SCRAPE_SECONDS) as address:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if _last_scrape(address):
                        break
                except urllib.error.URLError:
                    pass
                assert time.monotonic() < deadline, (folder / "prometheus.log").read_text()
                time.sleep(0.2)
            before = _queue_and_executions(replica)
            features = facile_inputs[0][:64].astype(np.float32)
            until = time.monotonic() + 3 * SCRAPE_SECONDS
            while time.monotonic() < until:
                tensor = grpcclient.InferInput("input", list(features.shape), "FP32")
                tensor.set_data_from_numpy(features)
                replica.client.infer("facile", [tensor])
            after = _queue_and_executions(replica)
            traffic_ended = time.time()
            while _last_scrape(address) <= traffic_ended:
                time.sleep(0.2)
            yield address, replica, (after[0] - before[0], after[1] - before[1])
    finally:
        replica.stop()


def test_prometheus_scrapes_only_faasts_metrics_port_with_the_release_label(scraped_faast):
    prometheus, replica, _ = scraped_faast
    (up,) = query(prometheus, f'up{{job="{SCRAPE_JOB}"}}')
    assert up["metric"]["instance"] == f"127.0.0.1:{replica.metrics_port}" and up["value"][1] == "1"
    assert up["metric"]["release"] == RELEASE and up["metric"]["namespace"] == NAMESPACE


def test_the_scaling_query_is_faasts_mean_queue_time_per_execution_in_milliseconds(scraped_faast, rendered):
    """KEDA's prometheus scaler wants one series; its value, over a window holding every request of
    the traffic and a scrape before it, is the queue time over executions of faast's statistics."""
    prometheus, _, (queue_us, executions) = scraped_faast
    expr = SCALING_QUERY if rendered is None else _scaled_object_trigger(rendered)["metadata"]["query"]
    (series,) = query(prometheus, expr)
    assert series["metric"] == {"release": RELEASE}
    value = float(series["value"][1])
    assert executions > 10 and queue_us > 0
    assert value == pytest.approx(queue_us / executions / 1000, rel=0.01)
    assert 0 < value < SCALING_THRESHOLD  # one client in turn: no scale-up, no refused RepositoryIndex


def test_the_startup_probe_passes_on_faasts_http_port(scraped_faast, rendered):
    _, replica, _ = scraped_faast
    probe = STARTUP_PROBE if rendered is None else _server_container(rendered)["startupProbe"]["httpGet"]
    assert probe["port"] == "http"  # the container port faast's --http-port is
    with urllib.request.urlopen(f"http://{replica.http_url}{probe['path']}", timeout=5) as answer:
        assert answer.status == 200


def test_faast_answers_the_call_envoys_rate_limiter_inspects(scraped_faast, model_repository):
    """The rate limiter passes RepositoryIndex through to a server while the query is under the
    threshold: the call, by its exact path, lists the repository's models."""
    _, replica, _ = scraped_faast
    with grpc.insecure_channel(replica.url) as channel:  # gRPC's content-type is application/grpc
        repository_index = channel.unary_unary(
            RATE_LIMITED_CALL,
            request_serializer=service_pb2.RepositoryIndexRequest.SerializeToString,
            response_deserializer=service_pb2.RepositoryIndexResponse.FromString,
        )
        answer = repository_index(service_pb2.RepositoryIndexRequest(), timeout=10)
    served = {model.name for model in answer.models if model.state == "READY"}
    assert served == {entry.name for entry in Path(model_repository).iterdir() if entry.is_dir()}
