"""Request semantics Triton clients rely on, through a real faast process: gRPC deadlines and
cancellation take a queued request out of the queue, compressed requests and responses (gzip and
deflate, gRPC and HTTP, as tritonclient sends them), and stream replies that carry their request's
id in request order."""

import gzip
import http.client
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import Server, facile_input, facile_with_config, infer
from tritonclient.utils import InferenceServerException


def _counts(client):
    stats = client.get_inference_statistics("facile").model_stats[0]
    return stats.execution_count, stats.inference_count


@pytest.fixture(scope="module")
def slow(model_repository, tmp_path_factory):
    """One compute unit of the (slow) C simulation: a 65536-row request keeps it busy for a second."""
    folder = tmp_path_factory.mktemp("slow")
    one_unit = 'string_value: "csim"\n  }\n}\ninstance_group { count: 1 }'
    repository = facile_with_config(model_repository, folder, 'string_value: "auto"\n  }\n}', one_unit)
    server = Server(repository, folder / "serve.log")
    yield server
    server.stop()


def _occupy(server, facile_inputs, requests=2):
    """Start `requests` big requests that fill the single unit's buffer sets; returns their futures."""
    rows = np.resize(facile_inputs[0], (65536, 15))
    pool = ThreadPoolExecutor(requests)

    def big():
        client = grpcclient.InferenceServerClient(server.url)
        try:
            return infer(client, rows)
        finally:
            client.close()

    futures = [pool.submit(big) for _ in range(requests)]
    pool.shutdown(wait=False)
    time.sleep(0.3)  # both are running on the unit
    return futures


def _failures(client):
    return client.get_inference_statistics("facile").model_stats[0].inference_stats.fail.count


@pytest.mark.parametrize("timeout", [0.005, 0.3])
def test_a_request_whose_deadline_passes_in_the_queue_never_runs(slow, facile_inputs, timeout):
    """5 ms: the deadline may pass before the call reaches the queue; 300 ms: it passes while the
    request waits there (a failure in the statistics), and the request leaves the queue."""
    executions, inferences = _counts(slow.client)
    failures = _failures(slow.client)
    running = _occupy(slow, facile_inputs)
    one = facile_inputs[0][:1]
    with pytest.raises(InferenceServerException) as caught:
        slow.client.infer("facile", [facile_input(one)], client_timeout=timeout)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert all(future.result(timeout=60).shape == (65536, 1) for future in running)
    time.sleep(0.2)
    assert _counts(slow.client) == (executions + 2, inferences + 2 * 65536)  # the late request never ran
    if timeout > 0.1:
        assert _failures(slow.client) == failures + 1
    assert infer(slow.client, one).shape == (1, 1)  # still serving


def test_a_cancelled_call_leaves_the_queue(slow, facile_inputs):
    executions, inferences = _counts(slow.client)
    failures = _failures(slow.client)
    running = _occupy(slow, facile_inputs)
    answers: queue.Queue = queue.Queue()
    call = slow.client.async_infer(
        "facile", [facile_input(facile_inputs[0][:3])], callback=lambda result, error: answers.put((result, error))
    )
    time.sleep(0.2)
    call.cancel()
    result, error = answers.get(timeout=30)
    assert result is None and "CANCELLED" in str(error)
    assert all(future.result(timeout=60).shape == (65536, 1) for future in running)
    time.sleep(0.2)
    assert _counts(slow.client) == (executions + 2, inferences + 2 * 65536)
    assert _failures(slow.client) == failures + 1


def test_stream_replies_follow_request_order_and_carry_ids(slow, facile_inputs):
    """A slow first request, then an invalid one and a quick one: the replies come in request order."""
    replies: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(slow.url)
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        big = np.resize(facile_inputs[0], (20000, 15))
        client.async_stream_infer("facile", [facile_input(big)], request_id="big")
        wrong = grpcclient.InferInput("input", [1, 15], "INT32")
        wrong.set_data_from_numpy(np.zeros((1, 15), np.int32))
        client.async_stream_infer("facile", [wrong], request_id="wrong")
        client.async_stream_infer("facile", [facile_input(facile_inputs[0][:1])], request_id="small")
        answers = [replies.get(timeout=60) for _ in range(3)]
    finally:
        client.stop_stream()
        client.close()
    (first, none), (nothing, error), (third, none_again) = answers
    assert none is None and none_again is None and nothing is None
    assert first.get_response().id == "big" and first.as_numpy("output").shape == (20000, 1)
    assert "[request id: wrong] inference input 'input' data-type is 'INT32'" in str(error)
    assert third.get_response().id == "small"
    assert first.get_response().parameters["triton_final_response"].bool_param


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compressed_requests_and_responses(server, facile_inputs, algorithm):
    rows = facile_inputs[0][:100]
    plain = infer(server.client, rows)
    compressed = server.client.infer("facile", [facile_input(rows)], compression_algorithm=algorithm)
    assert np.array_equal(compressed.as_numpy("output").view(np.uint32), plain.view(np.uint32))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
def test_http_compressed_requests_and_responses(server, facile_inputs, algorithm, binary):
    rows = facile_inputs[0][:100]
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        plain = infer(client, rows)
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        result = client.infer(
            "facile",
            [tensor],
            outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
    finally:
        client.close()
    assert np.array_equal(result.as_numpy("output").view(np.uint32), plain.view(np.uint32))


def _post(server, body, headers):
    connection = http.client.HTTPConnection(server.http_url, timeout=60)
    try:
        connection.request("POST", "/v2/models/facile/infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Encoding"), response.read()
    finally:
        connection.close()


def test_http_response_encoding_follows_accept_encoding(server):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": [1.0] * 15}]})
    answers = {
        accept: _post(server, body, {"Accept-Encoding": accept}) for accept in ("gzip, deflate", "deflate", "br")
    }
    status, encoding, data = answers["gzip, deflate"]
    assert (status, encoding) == (200, "gzip") and json.loads(gzip.decompress(data))["outputs"]
    assert answers["deflate"][:2] == (200, "deflate")
    assert answers["br"][:2] == (200, None) and json.loads(answers["br"][2])["outputs"]


def test_http_bad_encodings_are_answered_as_triton_does(server):
    status, _, data = _post(server, b"{}", {"Content-Encoding": "br"})
    assert (status, json.loads(data)) == (501, {"error": "Unsupported compression type"})
    for encoding, body in (("gzip", b"garbage"), ("deflate", b"garbage"), ("gzip", gzip.compress(b"{}")[:-5])):
        status, _, data = _post(server, body, {"Content-Encoding": encoding})
        assert status == 400 and encoding in json.loads(data)["error"]
    assert server.client.is_server_live()


def test_a_compression_bomb_is_refused_without_stalling_the_server(server):
    """1 GiB and more of zeros in a few MB of gzip: refused once --http-max-input-size (64 MB by
    default) is passed, decoded away from the event loop, so health checks keep being answered meanwhile."""
    bomb = gzip.compress(bytes(1 << 30) + bytes(1 << 20), compresslevel=9)
    answers: list = []
    sender = threading.Thread(target=lambda: answers.append(_post(server, bomb, {"Content-Encoding": "gzip"})))
    sender.start()
    slowest = 0.0
    while sender.is_alive():
        started = time.monotonic()
        assert server.client.is_server_live()
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    sender.join()
    status, _, data = answers[0]
    assert status == 400 and "Decompressed data size exceeds" in json.loads(data)["error"]
    assert slowest < 1.0
