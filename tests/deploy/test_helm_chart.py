"""deploy/helm/faast rendered by a real helm (tests/tools/install_helm.sh) with the default (emulator)
and the card values, every object validated against the Kubernetes schemas (kubernetes-validate,
strict: no field the API would drop), and what the chart promises checked in the rendered objects."""

import subprocess

import pytest
import yaml
from support import ROOT
from support.balancer import HAPROXY_CONFIG, haproxy_binary
from support.kubernetes import assert_valid

CHART = ROOT / "deploy" / "helm" / "faast"
OLDEST_KUBERNETES = "1.25.0"  # Chart.yaml's kubeVersion
# Custom resources have no schema in Kubernetes' own: the Prometheus operator's CRD defines it.
CUSTOM_KINDS = {"ServiceMonitor"}


def _render(helm, *values_files, check=True):
    options = [arg for name in values_files for arg in ("-f", CHART / name)]
    run = subprocess.run(
        [helm, "template", "faast", CHART, "--namespace", "physics", *options], capture_output=True, text=True
    )
    if check:
        assert run.returncode == 0, run.stderr
        return [doc for doc in yaml.safe_load_all(run.stdout) if doc]
    return run


def _only(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)}"
    return found[0]


@pytest.mark.parametrize("values", [[], ["values-card.yaml"]], ids=["default", "card"])
def test_chart_lints_renders_and_validates_against_the_kubernetes_schemas(helm, values):
    options = [arg for name in values for arg in ("-f", CHART / name)]
    lint = subprocess.run([helm, "lint", "--strict", CHART, *options], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    objects = _render(helm, *values)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
        + ["Service"] * 3
        + ["ServiceMonitor"]
    )
    assert_valid(objects, OLDEST_KUBERNETES, CUSTOM_KINDS)


def test_default_values_serve_the_emulator_on_cpu_nodes_with_the_promised_probes_and_termination(helm):
    objects = _render(helm)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = _only(objects, "Deployment", "faast")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["args"][0] == "tritonserver" and "--model-repository=/models" in server["args"]
    exit_timeout = values["server"]["exitTimeoutSecs"]
    assert f"--exit-timeout-secs={exit_timeout}" in server["args"]
    assert pod["terminationGracePeriodSeconds"] == exit_timeout + values["server"]["terminationMarginSeconds"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] and server["securityContext"]["readOnlyRootFilesystem"]
    assert not any(name.startswith("xilinx.com/") for name in server["resources"]["limits"])
    assert "nodeSelector" not in pod
    assert pod["initContainers"][0]["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    ports = {p["name"] for p in _only(objects, "Service", "faast")["spec"]["ports"]}
    assert ports == {"grpc", "http", "metrics"}
    assert _only(objects, "Service", "faast-replicas")["spec"]["clusterIP"] == "None"
    assert _only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    hpa = _only(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "faast_pending_requests"
    adapter_rules = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())
    assert hpa["metrics"][0]["pods"]["metric"]["name"] in {rule["name"]["as"] for rule in adapter_rules}
    assert _only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"


def test_card_values_request_the_device_plugins_fpga_on_card_nodes(helm):
    objects = _render(helm, "values-card.yaml")
    card = yaml.safe_load((CHART / "values-card.yaml").read_text())
    pod = _only(objects, "Deployment", "faast")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    for kind in ("requests", "limits"):
        assert server["resources"][kind][card["fpga"]["resource"]] == 1
    assert pod["nodeSelector"] == card["fpga"]["nodeSelector"]
    assert {"name": "xrt", "mountPath": "/opt/xilinx", "readOnly": True} in server["volumeMounts"]


def test_model_repository_from_a_persistent_volume_claim(helm, tmp_path):
    (tmp_path / "pvc.yaml").write_text("modelRepository: {persistentVolumeClaim: faast-models}\n")
    run = subprocess.run(
        [helm, "template", "faast", CHART, "-f", tmp_path / "pvc.yaml"], capture_output=True, text=True, check=True
    )
    pod = _only([d for d in yaml.safe_load_all(run.stdout) if d], "Deployment", "faast")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"] == {"claimName": "faast-models", "readOnly": True}


def test_an_unknown_profile_is_refused(helm, tmp_path):
    (tmp_path / "bad.yaml").write_text("profile: gpu\n")
    run = subprocess.run(
        [helm, "template", "faast", CHART, "-f", tmp_path / "bad.yaml"], capture_output=True, text=True
    )
    assert run.returncode != 0 and 'profile must be emulator or card, not "gpu"' in run.stderr


def test_the_balancer_runs_the_tested_haproxy_config_and_haproxy_accepts_it_in_dns_mode(helm, tmp_path):
    objects = _render(helm)
    shipped = _only(objects, "ConfigMap", "faast-balancer")["data"]["haproxy.cfg"]
    assert shipped.strip() == HAPROXY_CONFIG.read_text().strip()
    (balancer,) = _only(objects, "Deployment", "faast-balancer")["spec"]["template"]["spec"]["containers"]
    environment = {e["name"]: e["value"] for e in balancer["env"]}
    assert environment["FAAST_REPLICAS_DNS"] == "faast-replicas.physics.svc.cluster.local"
    (tmp_path / "haproxy.cfg").write_text(shipped)
    check = subprocess.run(
        [haproxy_binary(), "-c", "-f", tmp_path / "haproxy.cfg"], capture_output=True, text=True, env=environment
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Configuration file is valid" in check.stdout
