"""--allow-client-shm (tritonserver 2.68+): real `faast serve` processes and the real tritonclient.
With false, every registration and unregistration of client shared memory, system or CUDA, gRPC or
HTTP, is refused as tritonserver 2.68+ refuses it (UNSUPPORTED: gRPC UNIMPLEMENTED, HTTP 501, its
words), and status calls are still answered; with true (faast's default) a client registers and
serves inputs and outputs from its shared memory."""

import base64
import http.client
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support import Server, facile_input
from tritonclient.utils import InferenceServerException

from faast.tritonserver_flags import parse

# tritonserver 2.68+'s message (src/common.h, kClientShmDisabledErrorStr)
DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
ROWS = np.random.default_rng(3).normal(size=(4, 15)).astype(np.float32)


@pytest.fixture(scope="module")
def refusing(model_repository, tmp_path_factory):
    running = Server(model_repository, tmp_path_factory.mktemp("logs") / "serve.log", "--allow-client-shm=false")
    yield running
    running.stop()


def _refusals(calls):
    """The (status, message) each call ends with."""
    answers = []
    for call in calls:
        with pytest.raises(InferenceServerException) as refused:
            call()
        answers.append((refused.value.status(), refused.value.message()))
    return answers


def test_grpc_registrations_are_refused_and_status_answered(refusing):
    client = refusing.client
    handle = base64.b64encode(b"cuda-ipc-handle")
    answers = _refusals(
        [
            lambda: client.register_system_shared_memory("region", "/faast_refused", 64),
            lambda: client.unregister_system_shared_memory("region"),
            lambda: client.unregister_system_shared_memory(),
            lambda: client.register_cuda_shared_memory("gpu", handle, 0, 16),
            lambda: client.unregister_cuda_shared_memory("gpu"),
            lambda: client.unregister_cuda_shared_memory(),
        ]
    )
    assert answers == [("StatusCode.UNIMPLEMENTED", DISABLED)] * 6
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
    assert client.get_cuda_shared_memory_status(as_json=True).get("regions", {}) == {}


def test_http_registrations_are_refused_with_a_501(refusing):
    paths = [
        ("/v2/systemsharedmemory/region/region/register", {"key": "/faast_refused", "offset": 0, "byte_size": 64}),
        ("/v2/systemsharedmemory/region/region/unregister", None),
        ("/v2/systemsharedmemory/unregister", None),
        ("/v2/cudasharedmemory/region/gpu/register", {"raw_handle": {"b64": "AA=="}, "device_id": 0, "byte_size": 16}),
        ("/v2/cudasharedmemory/region/gpu/unregister", None),
        ("/v2/cudasharedmemory/unregister", None),
    ]
    for path, body in paths:
        connection = http.client.HTTPConnection(refusing.http_url, timeout=30)
        try:
            connection.request("POST", path, body=json.dumps(body) if body else None)
            response = connection.getresponse()
            assert (path, response.status, json.loads(response.read())) == (path, 501, {"error": DISABLED})
        finally:
            connection.close()
    client = httpclient.InferenceServerClient(refusing.http_url)
    try:
        with pytest.raises(InferenceServerException, match="Client shared memory is disabled"):
            client.register_system_shared_memory("region", "/faast_refused", 64)
        assert client.get_system_shared_memory_status() == []
        assert client.get_cuda_shared_memory_status() == []
        assert client.infer("facile", [facile_input(ROWS, httpclient)]).as_numpy("output").shape == (4, 1)
    finally:
        client.close()


def test_an_input_in_shared_memory_finds_no_region(refusing, server):
    """No region can be registered, so a request naming one is answered as a server that allows
    client shared memory answers a region never registered."""
    tensor = grpcclient.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_shared_memory("never_registered", ROWS.nbytes)
    answers = []
    for running in (refusing, server):
        with pytest.raises(InferenceServerException) as refused:
            running.client.infer("facile", [tensor])
        answers.append((refused.value.status(), refused.value.message()))
    assert answers[0] == answers[1] and "never_registered" in answers[0][1]


def test_allowed_client_shared_memory_serves_both_transports(model_repository, tmp_path):
    """--allow-client-shm=true: registered over gRPC and HTTP, inputs read from and outputs written
    to the client's memory, the same answer as the rows sent in the request."""
    server = Server(model_repository, tmp_path / "serve.log", "--allow-client-shm=true")
    http_client = httpclient.InferenceServerClient(server.http_url)
    input_region = shm.create_shared_memory_region("rows", "/faast_allowed_in", ROWS.nbytes)
    output_region = shm.create_shared_memory_region("answers", "/faast_allowed_out", 4 * len(ROWS))
    try:
        shm.set_shared_memory_region(input_region, [ROWS])
        expected = server.client.infer("facile", [facile_input(ROWS)]).as_numpy("output")
        server.client.register_system_shared_memory("rows", "/faast_allowed_in", ROWS.nbytes)
        http_client.register_system_shared_memory("answers", "/faast_allowed_out", 4 * len(ROWS))
        for client, module in ((server.client, grpcclient), (http_client, httpclient)):
            tensor = module.InferInput("input", list(ROWS.shape), "FP32")
            tensor.set_shared_memory("rows", ROWS.nbytes)
            output = module.InferRequestedOutput("output")
            output.set_shared_memory("answers", 4 * len(ROWS))
            client.infer("facile", [tensor], outputs=[output])
            served = shm.get_contents_as_numpy(output_region, np.float32, [len(ROWS), 1])
            assert served.tobytes() == expected.tobytes()
        assert sorted(server.client.get_system_shared_memory_status(as_json=True)["regions"]) == ["answers", "rows"]
        http_client.unregister_system_shared_memory()
        assert server.client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
    finally:
        http_client.close()
        shm.destroy_shared_memory_region(input_region)
        shm.destroy_shared_memory_region(output_region)
        server.stop()


def test_default_allows_and_spellings_parse():
    assert parse([]).allow_client_shm is True
    assert parse(["--allow-client-shm=off"]).allow_client_shm is False
    assert parse(["--allow-client-shm", "TRUE"]).allow_client_shm is True
