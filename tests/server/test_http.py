"""HTTP/REST (KServe v2) with tritonclient.http, Prometheus metrics, and graceful shutdown."""

import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support import Server, facile_input, infer
from tritonclient.utils import InferenceServerException


@pytest.fixture
def http(server):
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_equals_grpc(server, http, facile_inputs, binary):
    rows = np.ascontiguousarray(facile_inputs[0][:500])
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    result = http.infer(
        "facile", [tensor], outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)], request_id="h1"
    )
    assert result.get_response()["id"] == "h1"
    assert np.array_equal(result.as_numpy("output").view(np.uint32), infer(server.client, rows).view(np.uint32))


def test_http_metadata_health_repository_and_statistics(server, http):
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("facile")
    assert not http.is_model_ready("nope")
    assert http.get_model_metadata("facile")["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 15]}]
    config = http.get_model_config("facile")
    assert config["max_batch_size"] == 65536 and config["input"][0]["dims"] == [15]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    assert http.get_model_repository_index() == [{"name": "facile", "version": "1", "state": "READY"}]
    stats = http.get_inference_statistics("facile")["model_stats"][0]
    assert stats["name"] == "facile" and stats["inference_count"] > 0
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as probe:  # a Kubernetes probe
        assert probe.status == 200
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
        http.get_model_metadata("nope")


def test_http_system_shared_memory(server, http, facile_inputs):
    rows = np.ascontiguousarray(facile_inputs[0][:200])
    region = shm.create_shared_memory_region("http_in", "/faast_http_in", rows.nbytes)
    out_region = shm.create_shared_memory_region("http_out", "/faast_http_out", 800)
    try:
        shm.set_shared_memory_region(region, [rows])
        http.register_system_shared_memory("http_in", "/faast_http_in", rows.nbytes)
        http.register_system_shared_memory("http_out", "/faast_http_out", 800)
        assert {r["name"] for r in http.get_system_shared_memory_status()} == {"http_in", "http_out"}
        tensor = httpclient.InferInput("input", [200, 15], "FP32")
        tensor.set_shared_memory("http_in", rows.nbytes)
        output = httpclient.InferRequestedOutput("output")
        output.set_shared_memory("http_out", 800)
        http.infer("facile", [tensor], outputs=[output])
        served = shm.get_contents_as_numpy(out_region, np.float32, [200, 1])
        assert np.array_equal(served.view(np.uint32), infer(server.client, rows).view(np.uint32))
    finally:
        http.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(region)
        shm.destroy_shared_memory_region(out_region)


def test_http_errors_keep_tritons_wording(http):
    tensor = facile_input(np.zeros((2, 16), np.float32), httpclient)
    with pytest.raises(InferenceServerException) as caught:
        http.infer("facile", [tensor])
    assert (
        "unexpected shape for input 'input' for model 'facile'. Expected [-1,15], got [2,16]" in caught.value.message()
    )


def test_metrics_use_tritons_names(server, facile_inputs):
    infer(server.client, facile_inputs[0][:32])
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        text = response.read().decode()
    labels = '{model="facile",version="1"}'
    for name in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
        "faast_kernel_executions",
        "faast_kernel_busy_us",
        "faast_batch_fill_ratio",
    ):
        assert re.search(rf"^{name}(_total)?{re.escape(labels)} \d", text, re.M), name
    assert re.search(r'^nv_inference_count(_total)?\{model="facile",version="1"\} ([1-9]\d*)', text, re.M)
    assert (
        'nv_inference_request_failure_total{model="facile",reason="BACKEND",version="1"}' in text
        or 'nv_inference_request_failure{model="facile",reason="BACKEND",version="1"}' in text
    )
    assert re.search(r'^faast_device_info\{.*device="emulator",model="facile",version="1"\} 1.0$', text, re.M)


def test_sigterm_finishes_in_flight_requests(model_repository, facile_inputs, tmp_path):
    server = Server(model_repository, tmp_path / "serve.log")
    rows = np.ascontiguousarray(facile_inputs[0][:40000])
    outcome = {}

    def long_request():
        client = grpcclient.InferenceServerClient(server.url)
        try:
            outcome["output"] = infer(client, rows)
        except Exception as error:  # recorded for the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)  # the request is on the server, the kernel is running
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    assert server.process.wait(timeout=60) == 0
    assert "error" not in outcome and outcome["output"].shape == (40000, 1)
    assert "shutting down: finishing in-flight requests" in (tmp_path / "serve.log").read_text()


def test_json_shapes_past_int64_are_refused_in_triton_2_59_s_words(server):
    """Triton 2.59+ (http_server.cc, common.cc's GetElementCount at v2.71.0): a JSON input's dimension
    of 2^63 or more reads as a negative int64, and an element count past int64 overflows."""
    huge = 2**63 + 5
    for shape, message in (
        ([huge, 15], f"shape [{huge - 2**64},15] contains one or more invalid dimensions"),
        ([2**62, 15], f"shape [{2**62},15] causes total element count to exceed maximum size of {2**63 - 1}"),
    ):
        body = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": [0.0]}]})
        request = urllib.request.Request(
            f"http://{server.http_url}/v2/models/facile/infer", data=body.encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert json.loads(refused.value.read()) == {"error": f"invalid shape for input 'input': {message}"}
