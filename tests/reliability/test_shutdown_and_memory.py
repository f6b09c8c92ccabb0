"""Bounded resources, honest timeouts: `--exit-timeout-secs` bounds the whole shutdown, whatever a
client holds open (an HTTP body that never ends, a gRPC stream), while requests that finish in time
are still answered; and the memory of refused oversized requests (gzip bombs, a gRPC message past
the 2 GiB limit) goes back to the system."""

import http.client
import json
import signal
import socket
import threading
import time
import urllib.request
import zlib

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import Server, facile_with_config, infer, infer_request, varint

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
ROWS = np.linspace(-3, 80, 16 * 15, dtype=np.float32).reshape(16, 15)
EXIT_TIMEOUT_S = 5
EXIT_MARGIN_S = 1.5  # the process is gone within the exit timeout and this
QUEUE_DELAY_S = 1.5  # the batcher's delay: how long the in-flight requests stay in the server
BOMB_BYTES = 3 * 2**29  # 1.5 GiB of zeros, about 1.5 MB gzipped
RSS_SLACK_MB = 200
SETTLE_S = 15


def _pending(server):
    """Requests of facile received and not yet answered, summed over the workers, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("nv_inference_pending_request_count{"))
    return float(line.split()[-1])


def _http_outputs(http_url, rows):
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    ).encode()
    request = urllib.request.Request(f"http://{http_url}/v2/models/facile/infer", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return np.array(json.loads(response.read())["outputs"][0]["data"], np.float32).reshape(-1, 1)


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


@pytest.fixture(params=[1, 2], ids=["one process", "two workers"])
def slow_batching(request, model_repository, tmp_path):
    """facile whose batcher holds small requests QUEUE_DELAY_S, served with --exit-timeout-secs 5."""
    repository = facile_with_config(
        model_repository,
        tmp_path,
        "max_queue_delay_microseconds: 100\n",
        f"max_queue_delay_microseconds: {int(QUEUE_DELAY_S * 1e6)}\n",
    )
    options = ["--exit-timeout-secs", str(EXIT_TIMEOUT_S), "--workers", str(request.param)]
    running = Server(repository, tmp_path / "serve.log", *options)
    yield running
    running.client.close()
    if running.process.poll() is None:  # the test failed before its SIGTERM ended the server
        running.process.kill()
        running.process.wait(timeout=30)


def test_exit_timeout_bounds_shutdown_and_in_flight_requests_are_answered(slow_batching):
    """With an HTTP body that never ends and a ModelStreamInfer stream held open, SIGTERM ends the
    server within --exit-timeout-secs and a margin, and the requests in flight that finish in time
    (held by the batcher's delay) are answered right, over gRPC and HTTP."""
    server = slow_batching
    expected = infer(server.client, ROWS, client_timeout=30)
    body = socket.create_connection(("127.0.0.1", server.http_port))
    body.sendall(
        b"POST /v2/models/facile/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'10\r\n{"inputs": [    \r\n'
    )
    channel = grpc.insecure_channel(server.url)
    held_open = threading.Event()

    def stream_requests():
        yield infer_request(ROWS, id="streamed").SerializeToString()
        held_open.wait(60)

    stream = channel.stream_stream(STREAM_INFER)(stream_requests(), timeout=60)
    outcomes = {}

    def send(transport):
        try:
            if transport == "gRPC":
                with grpcclient.InferenceServerClient(server.url) as client:
                    outcomes[transport] = infer(client, ROWS, client_timeout=30)
            else:
                outcomes[transport] = _http_outputs(server.http_url, ROWS)
        except Exception as error:  # recorded: the assertion below shows it
            outcomes[transport] = error

    try:
        assert next(stream) is not None  # the stream's first request answered; the stream stays open
        threads = [threading.Thread(target=send, args=(transport,)) for transport in ("gRPC", "HTTP")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + QUEUE_DELAY_S / 2
        while _pending(server) < len(threads):
            assert time.monotonic() < deadline, "the requests did not reach the server in time"
            time.sleep(0.02)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_status = server.process.wait(timeout=EXIT_TIMEOUT_S + 30)
        exited_after = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=30)
    finally:
        held_open.set()
        body.close()
        channel.close()
    print(f"exited {exited_after:.2f} s after SIGTERM with status {exit_status}")
    assert exited_after <= EXIT_TIMEOUT_S + EXIT_MARGIN_S, exited_after
    assert exit_status == 0
    wrong = {
        name: outcome
        for name, outcome in outcomes.items()
        if not isinstance(outcome, np.ndarray) or not np.array_equal(outcome, expected)
    }
    assert len(outcomes) == 2 and not wrong, wrong


def _gzip_bomb(size):
    compressor = zlib.compressobj(1, wbits=16 + zlib.MAX_WBITS)
    zeros = bytes(2**24)
    return b"".join([*(compressor.compress(zeros) for _ in range(size // len(zeros))), compressor.flush()])


def _oversized_grpc_message():
    """A ModelInferRequest of 2**31 bytes (one past gRPC's receive limit in faast), written by hand:
    field 7 (raw_input_contents) after the model's name."""
    head = b"\x0a\x06facile\x3a"
    for length_bytes in range(1, 6):
        payload = 2**31 - len(head) - length_bytes
        length = varint(payload)
        if len(length) == length_bytes:
            return head + length + bytes(payload)
    raise AssertionError("no varint length fits")


@pytest.fixture
def plain(model_repository, tmp_path):
    running = Server(model_repository, tmp_path / "serve.log")
    yield running
    running.stop()


def test_refused_gzip_bombs_and_an_oversized_grpc_message_give_memory_back(plain):
    """Three 1.5 GiB gzip bombs (refused once --http-max-input-size, 64 MB by default, is inflated) and
    a 2 GiB gRPC message (past the receive limit): RSS ends within RSS_SLACK_MB of where it started,
    and the server still answers."""
    server = plain
    expected = infer(server.client, ROWS, client_timeout=30)
    _http_outputs(server.http_url, ROWS)  # both transports warm: their first requests allocate for good
    before = _rss_mb(server.process.pid)
    bomb = _gzip_bomb(BOMB_BYTES)
    peaks = []
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
        try:
            connection.request("POST", "/v2/models/facile/infer", body=bomb, headers={"Content-Encoding": "gzip"})
            answer = connection.getresponse()
            status, text = answer.status, answer.read().decode()
        finally:
            connection.close()
        assert status == 400 and "exceeds the maximum allowed value of 67108864 bytes" in text, (status, text)
        peaks.append(_rss_mb(server.process.pid))
    del bomb
    message = _oversized_grpc_message()
    limits = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.url, options=limits) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(MODEL_INFER)(message, timeout=120)
    del message
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    deadline = time.monotonic() + SETTLE_S
    while _rss_mb(server.process.pid) > before + RSS_SLACK_MB and time.monotonic() < deadline:
        time.sleep(0.2)
    after = _rss_mb(server.process.pid)
    print(f"RSS {before} MB before, {peaks} MB after each bomb, {after} MB at the end")
    assert after <= before + RSS_SLACK_MB, (before, peaks, after)
    assert np.array_equal(infer(server.client, ROWS, client_timeout=30), expected)
    assert np.array_equal(_http_outputs(server.http_url, ROWS), expected)
