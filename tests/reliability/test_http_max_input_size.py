"""--http-max-input-size (tritonserver 2.59+) against a real `faast serve` and the real tritonclient:
bounded as tritonserver's http_server.cc bounds it (a request's JSON, a JSON input's bytes by its
shape and datatype, and, since 2.65, what a gzip/deflate body decodes to), each refused with its 400
and words; binary tensor data past the JSON is not bounded, as in tritonserver."""

import http.client
import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from support import Server, infer
from tritonclient.utils import InferenceServerException

from faast.tritonserver_flags import HTTP_DEFAULT_MAX_INPUT_SIZE, parse

LIMIT = 4096
ROWS = np.random.default_rng(5).normal(size=(100, 15)).astype(np.float32)  # 6000 bytes: past the limit
FEW_ROWS = ROWS[:3]  # 180 bytes
REPEATED_ROWS = np.tile(FEW_ROWS, (34, 1))  # 6120 bytes that compress to far fewer than the limit


def _bounded(what):
    """tritonserver's refusal of `what`, past this server's limit."""
    return f"{what} {LIMIT} bytes. Use --http-max-input-size to increase the limit."


@pytest.fixture(scope="module")
def bounded(model_repository, tmp_path_factory):
    running = Server(model_repository, tmp_path_factory.mktemp("logs") / "serve.log", f"--http-max-input-size={LIMIT}")
    yield running
    running.stop()


def _post(server, path, body, headers=None):
    connection = http.client.HTTPConnection(server.http_url, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _json_infer(shape, data):
    request = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}
    return json.dumps(request, separators=(",", ":")).encode()


def test_a_request_json_past_the_limit_is_refused(bounded):
    body = _json_infer([100, 15], ROWS.ravel().tolist())
    assert len(body) > LIMIT
    status, answer = _post(bounded, "/v2/models/facile/infer", body)
    what = f"request JSON size of {len(body)} bytes exceeds the maximum allowed input size of"
    assert (status, answer) == (400, {"error": _bounded(what)})
    assert _post(bounded, "/v2/logging", json.dumps({"log_info": True, "padding": "x" * LIMIT}))[0] == 400
    assert _post(bounded, "/v2/logging", json.dumps({"log_info": True}))[0] == 200


def test_a_json_input_is_bounded_by_its_bytes_not_its_text(bounded):
    """1500 zeros are 3 kB of JSON but 6000 bytes of FP32: refused, as tritonserver counts them."""
    body = _json_infer([100, 15], [0] * 1500)
    assert len(body) < LIMIT
    status, answer = _post(bounded, "/v2/models/facile/infer", body)
    what = "JSON input 'input' has a byte_size (6000 bytes) that exceeds the maximum allowed value of"
    assert (status, answer) == (400, {"error": _bounded(what)})


def test_binary_data_is_not_bounded(bounded):
    """6000 bytes of binary rows after a small JSON header: served, the same answer as over gRPC."""
    client = httpclient.InferenceServerClient(bounded.http_url)
    try:
        assert infer(client, ROWS).tobytes() == infer(bounded.client, ROWS).tobytes()
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_compressed_body_is_bounded_once_decoded(bounded, algorithm):
    """Rows that tritonclient compresses to less than the limit are refused once decoded past it; a
    small compressed request is served."""
    client = httpclient.InferenceServerClient(bounded.http_url)
    try:
        with pytest.raises(InferenceServerException) as refused:
            infer(client, REPEATED_ROWS, request_compression_algorithm=algorithm)
        assert refused.value.message() == _bounded("Decompressed data size exceeds the maximum allowed value of")
        served = infer(client, FEW_ROWS, request_compression_algorithm=algorithm)
        assert served.tobytes() == infer(bounded.client, FEW_ROWS).tobytes()
    finally:
        client.close()


def test_the_default_is_tritonservers():
    assert parse([]).http_max_input_size == HTTP_DEFAULT_MAX_INPUT_SIZE == 64 * 2**20
