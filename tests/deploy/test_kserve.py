"""deploy/kserve: faast's KServe runtimes and the example InferenceService, read as KServe reads them
with the KServe SDK's own models of its API (generated from the Go types its CRDs come from; core
types from the Kubernetes client): a field KServe does not know, a value of the wrong type or a
missing required field fails. Then what they promise, checked against faast itself: its command line
(parsed by faast, and the image run with the runtime's args exactly), its kernel format, and the Helm
chart's FPGA resource."""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml
from support import PYTHON, ROOT, infer
from support.podman import PODMAN, RUN_OPTIONS

from faast.contract.kernel import FORMAT_VERSION
from faast.tritonserver_flags import parse

KSERVE = ROOT / "deploy" / "kserve"
CHART = ROOT / "deploy" / "helm" / "faast"
READER = ROOT / "tests" / "deploy" / "kserve_reader.py"
RUNTIMES = ["faast-runtime.yaml", "faast-alveo-u250-runtime.yaml"]
MODEL_STORE = "/mnt/models"  # where KServe's storage initializer puts storageUri
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}  # KServe's protocol versions (constants.ProtocolV1...)


def _read(*paths):
    """What kserve_reader.py answers for each file: {"object": ...} or {"error": ...}."""
    run = subprocess.run([*PYTHON, READER, *paths], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.fixture(scope="module")
def kserve_objects():
    """deploy/kserve's files as KServe's SDK read them, by file name."""
    names = [*RUNTIMES, "inferenceservice.yaml"]
    answers = _read(*(KSERVE / name for name in names))
    for name, answer in zip(names, answers, strict=True):
        assert "object" in answer, f"{name}: {answer['error']}"
    return {name: answer["object"] for name, answer in zip(names, answers, strict=True)}


def test_the_reader_refuses_what_kserve_does_not_know(tmp_path):
    """The reader is these tests' oracle: a misspelled field, a wrong type and a missing required
    field are refused, each named."""
    data = yaml.safe_load((KSERVE / "faast-runtime.yaml").read_text())
    spec = data["spec"]
    nameless = {key: value for key, value in spec["containers"][0].items() if key != "name"}
    broken = {
        "supportedModelFormat": {**spec, "supportedModelFormat": spec["supportedModelFormats"]},
        "protocolVersions": {**spec, "protocolVersions": "v2"},
        "args[0]": {**spec, "containers": [{**spec["containers"][0], "args": [9000]}]},
        "name": {**spec, "containers": [nameless]},
    }
    paths = []
    for index, wrong in enumerate(broken.values()):
        paths.append(tmp_path / f"broken{index}.yaml")
        paths[-1].write_text(yaml.safe_dump({**data, "spec": wrong}))
    for named, answer in zip(broken, _read(*paths), strict=True):
        assert named in answer.get("error", ""), answer


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_is_a_serving_runtime_for_faast_kernels_over_v2(kserve_objects, name):
    spec = kserve_objects[name]["spec"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"} and set(spec["protocolVersions"]) <= PROTOCOLS
    (kernel_format,) = spec["supportedModelFormats"]
    assert (kernel_format["name"], kernel_format["version"]) == ("faast", str(FORMAT_VERSION))  # kernel.json's
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the container KServe serves the model from
    assert container["securityContext"]["runAsUser"] == 10001  # deploy/Containerfile's user


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_args_are_a_command_line_faast_serve_takes(kserve_objects, name):
    """The image runs `tritonserver ARGS` as faast serve (deploy/container/tritonserver.sh): faast's own
    parser reads the args, with the repository where KServe puts it and metrics where the runtime's
    Prometheus annotation says."""
    spec = kserve_objects[name]["spec"]
    (container,) = spec["containers"]
    assert container["args"][0] == "tritonserver"
    options = parse(container["args"][1:])
    assert options.model_repository == [MODEL_STORE]
    assert options.allow_grpc and options.allow_http
    assert (options.http_port, options.grpc_port) == (8080, 9000)
    assert options.metrics_port == int(spec["annotations"]["prometheus.kserve.io/port"])


def test_the_card_runtime_asks_for_the_fpga_the_helm_chart_asks_for(kserve_objects):
    spec = kserve_objects["faast-alveo-u250-runtime.yaml"]["spec"]
    card = yaml.safe_load((CHART / "values-card.yaml").read_text())["fpga"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["fpga"]
    (container,) = spec["containers"]
    for asked in (container["resources"]["requests"], container["resources"]["limits"]):
        assert asked[card["resource"]] == str(card["count"])
    assert spec["nodeSelector"] == card["nodeSelector"]
    (xrt,) = spec["volumes"]
    (mount,) = container["volumeMounts"]
    assert xrt["hostPath"]["path"] == defaults["xrtHostPath"] == mount["mountPath"]
    assert mount["name"] == xrt["name"] and mount["readOnly"]


def test_the_inference_service_uses_the_runtime_over_grpc(kserve_objects):
    model = kserve_objects["inferenceservice.yaml"]["spec"]["predictor"]["model"]
    runtime = kserve_objects["faast-runtime.yaml"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {found["name"] for found in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    (port,) = model["ports"]
    assert port["name"] == "h2c"  # Knative's name for a gRPC (HTTP/2 cleartext) port
    assert port["containerPort"] == parse(runtime["spec"]["containers"][0]["args"][1:]).grpc_port


# In the runtime's container: readiness and one inference over HTTP on the runtime's port, and the
# gRPC port's ServerReady, with the image's own Python (no client library in the image).
PROBE = """
import json, sys, urllib.request
import grpc
from faast.protocol import service, service_grpc
rows = json.loads(sys.argv[1])
with urllib.request.urlopen("http://127.0.0.1:8080/v2/health/ready", timeout=10) as ready:
    assert ready.status == 200
body = {"inputs": [{"name": "input", "shape": [len(rows), 15], "datatype": "FP32", "data": rows}]}
call = urllib.request.Request("http://127.0.0.1:8080/v2/models/facile/infer", json.dumps(body).encode())
with urllib.request.urlopen(call, timeout=10) as answer:
    (output,) = json.load(answer)["outputs"]
with grpc.insecure_channel("127.0.0.1:9000") as channel:
    grpc_ready = service_grpc.GRPCInferenceServiceStub(channel).ServerReady(service.ServerReadyRequest()).ready
print(json.dumps({"output": output["data"], "grpc_ready": grpc_ready}))
"""


@pytest.mark.slow
def test_the_image_serves_with_the_runtime_args_as_kserve_runs_it(
    kserve_objects, image, model_repository, server, facile_inputs, tmp_path
):
    """The image run as KServe runs it: entrypoint kept, the runtime's args exactly, the model
    repository at /mnt/models. Ports 8080 and 9000 stay in the container's own network namespace."""
    (container,) = kserve_objects["faast-runtime.yaml"]["spec"]["containers"]
    models = tmp_path / "models"  # the storage initializer's copy, readable by the image's user
    shutil.copytree(model_repository, models, ignore=shutil.ignore_patterns("hls4ml"))
    for folder, _, _ in os.walk(tmp_path):
        os.chmod(folder, 0o755)
    options = [option for option in RUN_OPTIONS if option not in ("--network", "host")]
    run = subprocess.run(
        [
            *PODMAN,
            "run",
            "-d",
            *options,
            "--network",
            "none",
            "-v",
            f"{models}:{MODEL_STORE}:ro",
            image,
            *container["args"],
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    name = run.stdout.strip()
    rows = facile_inputs[0][:16].astype(np.float32)
    try:
        deadline = time.monotonic() + 90
        while True:
            probe = subprocess.run(
                [*PODMAN, "exec", name, "python3", "-c", PROBE, json.dumps(rows.tolist())],
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        logs = subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr + logs.stdout + logs.stderr
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "10", name], capture_output=True)
    answer = json.loads(probe.stdout)
    assert answer["grpc_ready"]
    reference = infer(server.client, rows)  # faast from this checkout
    np.testing.assert_array_equal(np.array(answer["output"], np.float32).reshape(reference.shape), reference)
