"""Clients that misbehave: cancel calls mid-flight, give 1 ms deadlines, open connections and leave
them idle, send one byte at a time, stall inside the HTTP/2 preface, hang up mid-body, never read
their answer. Meanwhile a well-behaved client must be served throughout, and once the bad clients
are gone the server's open files and memory must come back to where they were. Also: SIGTERM with
requests in flight answers every accepted request and then refuses new ones."""

import http.client
import json
import os
import random
import signal
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import Server, facile_input, facile_with_config, infer, infer_request

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
MESSAGE_LIMITS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
ROWS = np.linspace(-3, 80, 16 * 15, dtype=np.float32).reshape(16, 15)
BIG = np.resize(ROWS, (65536, 15))  # the largest batch facile takes: 3.9 MB on the wire
IDLE_CONNECTIONS = 50
GOOD_CLIENT_TIMEOUT = 10  # s per call of the well-behaved client
SLOWEST_GOOD_ANSWER = 5  # s: what the well-behaved client may wait at worst while others misbehave
FD_SLACK = 20
RSS_SLACK_MB = 150
SETTLE_S = 15  # how long open files and memory get to come back
QUEUE_DELAY_S = 3  # the SIGTERM test's batching delay: how long its small requests stay in the server
EXIT_TIMEOUT_S = 10


def _json_infer_body(rows):
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    ).encode()


def _http_request(path, body):
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


def _http_outputs(http_url, rows, timeout=GOOD_CLIENT_TIMEOUT):
    request = urllib.request.Request(
        f"http://{http_url}/v2/models/facile/infer", data=_json_infer_body(rows), method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return np.array(json.loads(response.read())["outputs"][0]["data"], np.float32).reshape(-1, 1)


class WellBehavedClient(threading.Thread):
    """Sends the 16-row batch over gRPC and HTTP in turn until stopped; notes every failure, wrong
    answer and the slowest answer, each with the fault that was going on at the time."""

    def __init__(self, server, expected):
        super().__init__(daemon=True)
        self.server, self.expected = server, expected
        self.fault = "none yet"
        self.calls, self.failures, self.slowest = 0, [], (0.0, "")
        self.stopping = threading.Event()

    def run(self):
        client = grpcclient.InferenceServerClient(self.server.url)
        tensor = facile_input(ROWS)
        while not self.stopping.is_set():
            for transport in ("gRPC", "HTTP"):
                started, fault = time.monotonic(), self.fault
                try:
                    if transport == "gRPC":
                        answer = client.infer("facile", [tensor], client_timeout=GOOD_CLIENT_TIMEOUT)
                        outputs = answer.as_numpy("output")
                    else:
                        outputs = _http_outputs(self.server.http_url, ROWS)
                    if not np.array_equal(outputs, self.expected):
                        self.failures.append(f"{transport} during {fault}: wrong outputs")
                except Exception as error:  # every failure is the finding, whatever its type
                    self.failures.append(f"{transport} during {fault}: {type(error).__name__}: {error}")
                took = time.monotonic() - started
                self.calls += 1
                self.slowest = max(self.slowest, (took, f"{transport} during {fault}"))
            self.stopping.wait(0.02)
        client.close()


def cancel_mid_flight(server, stack, rng):
    """Large calls cancelled after 0-20 ms, a channel closed with calls in flight, and a stream
    cancelled while the client still holds it open."""
    big = infer_request(BIG).SerializeToString()
    with grpc.insecure_channel(server.url, options=MESSAGE_LIMITS) as channel:
        infer = channel.unary_unary(MODEL_INFER)
        for _ in range(30):
            call = infer.future(big, timeout=30)
            time.sleep(rng.uniform(0, 0.02))
            call.cancel()
        held_open = threading.Event()

        def requests():
            yield infer_request(ROWS).SerializeToString()
            held_open.wait(10)

        stream = channel.stream_stream(STREAM_INFER)(requests(), timeout=30)
        time.sleep(0.2)
        stream.cancel()
        held_open.set()
    channel = grpc.insecure_channel(server.url, options=MESSAGE_LIMITS)
    calls = [channel.unary_unary(MODEL_INFER).future(big, timeout=30) for _ in range(5)]
    time.sleep(0.01)
    channel.close()
    errors = [call.exception() for call in calls if call.exception()]
    return [
        f"{error.code().name} {error.details()}"
        for error in errors
        if error.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    ]


def tiny_deadlines(server, stack, rng):
    """200 calls of every size with a 1 ms deadline: DEADLINE_EXCEEDED (or an answer) is all they get."""
    unexpected = []
    with grpc.insecure_channel(server.url, options=MESSAGE_LIMITS) as channel:
        model_infer = channel.unary_unary(MODEL_INFER)
        for index in range(200):
            rows = BIG[: rng.choice([1, 16, 1000, 65536])]
            try:
                model_infer(infer_request(rows).SerializeToString(), timeout=0.001)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    unexpected.append(f"call {index}: {error.code().name} {error.details()}")
    return unexpected


def idle_connections(server, stack, rng):
    """IDLE_CONNECTIONS TCP connections to each of the gRPC and HTTP ports that never send a byte,
    and as many gRPC connections stalled inside the HTTP/2 preface; all held until the end."""
    for port in (server.port, server.http_port):
        for _ in range(IDLE_CONNECTIONS):
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
    for _ in range(IDLE_CONNECTIONS):
        stack.enter_context(socket.create_connection(("127.0.0.1", server.port))).sendall(b"PRI * HTTP/2.0\r\n")
    return []


def slow_senders(server, stack, rng):
    """A valid HTTP request sent one byte every 5 ms must be answered correctly; three requests
    whose headers trickle in and never end are held until the end."""
    request = _http_request("/v2/models/facile/infer", _json_infer_body(ROWS[:1]))
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        for byte in request:
            sock.sendall(bytes([byte]))
            time.sleep(0.005)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        body = answer.read()
    trickling = [stack.enter_context(socket.create_connection(("127.0.0.1", server.http_port))) for _ in range(3)]
    for byte in b"POST /v2/models/facile/infer HTTP/1.1\r\nHost: x\r\n":
        for sock in trickling:
            sock.sendall(bytes([byte]))
        time.sleep(0.01)
    expected = infer(server.client, ROWS[:1], client_timeout=60).ravel().tolist()
    if answer.status == 200 and json.loads(body)["outputs"][0]["data"] == expected:
        return []
    return [f"the byte-by-byte request got {answer.status} {body[:200]!r}"]


def _http2_headers_frame(path):
    """A HEADERS frame opening stream 1 for a gRPC call, HPACK literals without Huffman coding."""
    block = b"".join(
        b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
        for name, value in (
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"x"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        )
    )
    return struct.pack(">I", len(block))[1:] + b"\x01\x04" + struct.pack(">I", 1) + block


def _http2_data_frame(payload):
    return struct.pack(">I", len(payload))[1:] + b"\x00\x00" + struct.pack(">I", 1) + payload


def disconnects_mid_body(server, stack, rng):
    """HTTP bodies and gRPC messages cut off well before their declared length, the connection
    closed or (once each) left stalled until the end."""
    for index in range(21):
        sock = socket.create_connection(("127.0.0.1", server.http_port))
        declared = 2**31 - 2 if index == 20 else 10 * 2**20
        sock.sendall(
            f"POST /v2/models/facile/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
            + b'{"inputs": ['
            + b" " * 65536
        )
        if index == 20:
            stack.enter_context(sock)
        else:
            sock.close()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # and empty SETTINGS
    message_start = b"\x00" + struct.pack(">I", 64 * 2**20)  # uncompressed, 64 MiB declared
    for index in range(11):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            preface
            + _http2_headers_frame(MODEL_INFER)
            + _http2_data_frame(message_start + bytes(16000))
            + b"".join(_http2_data_frame(bytes(16000)) for _ in range(3))
        )
        if index == 10:
            stack.enter_context(sock)
        else:
            sock.close()
    return []


def never_reads(server, stack, rng):
    """Three requests for 40000 rows as JSON (about 1 MB of answer each) whose answers are never
    read, through receive buffers kept small so the server's writes back up."""
    body = _http_request("/v2/models/facile/infer", _json_infer_body(BIG[:40000]))
    for _ in range(3):
        sock = stack.enter_context(socket.socket())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.http_port))
        sock.sendall(body)
    return []


FAULTS = [cancel_mid_flight, tiny_deadlines, idle_connections, slow_senders, disconnects_mid_body, never_reads]


@pytest.fixture(scope="module")
def target(model_repository, tmp_path_factory):
    running = Server(model_repository, tmp_path_factory.mktemp("client_faults") / "serve.log")
    yield running
    running.stop()


@pytest.mark.slow  # many misbehaving clients, leaks measured
def test_misbehaving_clients_neither_starve_others_nor_leak(target):
    expected = infer(target.client, ROWS, client_timeout=60)
    # every size once, so the allocator's high-water mark is part of the baseline
    infer(target.client, BIG, client_timeout=60)
    _http_outputs(target.http_url, BIG[:40000], timeout=60)
    good = WellBehavedClient(target, expected)
    good.start()
    try:
        while good.calls < 4:  # its connections are open: they belong to the baseline
            time.sleep(0.05)
        fds_before, rss_before = _open_fds(target.process.pid), _rss_mb(target.process.pid)
        rng = random.Random(7)
        findings = []
        with ExitStack() as held:  # what the faults leave open, closed only after all of them ran
            for fault in FAULTS:
                good.fault = fault.__name__
                findings += [f"{fault.__name__}: {finding}" for finding in fault(target, held, rng)]
                assert target.process.poll() is None, f"the server died during {fault.__name__}"
            good.fault = "all faults held open"
            time.sleep(1)  # the well-behaved client is served with every bad connection open at once
            fds_held = _open_fds(target.process.pid)
        good.fault = "after the faults"
        time.sleep(1)
    finally:
        good.stopping.set()
        good.join(timeout=2 * GOOD_CLIENT_TIMEOUT)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline and (
        _open_fds(target.process.pid) > fds_before + FD_SLACK or _rss_mb(target.process.pid) > rss_before + RSS_SLACK_MB
    ):
        time.sleep(0.5)
    fds_after, rss_after = _open_fds(target.process.pid), _rss_mb(target.process.pid)
    print(
        f"well-behaved client: {good.calls} calls, slowest {good.slowest[0]:.2f} s ({good.slowest[1]}); "
        f"fds {fds_before} -> {fds_held} held -> {fds_after}; RSS {rss_before} -> {rss_after} MB"
    )
    assert not findings, findings
    assert not good.failures, good.failures[:20]
    assert good.slowest[0] < SLOWEST_GOOD_ANSWER, good.slowest
    assert fds_after <= fds_before + FD_SLACK, (fds_before, fds_held, fds_after)
    assert rss_after <= rss_before + RSS_SLACK_MB, (rss_before, rss_after)
    assert np.array_equal(infer(target.client, ROWS, client_timeout=60), expected)


@pytest.fixture
def slow_batching(model_repository, tmp_path):
    """facile whose dynamic batcher waits QUEUE_DELAY_S for more rows, so small requests are certainly
    still in the server when SIGTERM arrives."""
    repository = facile_with_config(
        model_repository,
        tmp_path,
        "max_queue_delay_microseconds: 100\n",
        f"max_queue_delay_microseconds: {int(QUEUE_DELAY_S * 1e6)}\n",
    )
    running = Server(repository, tmp_path / "serve.log", "--exit-timeout-secs", str(EXIT_TIMEOUT_S))
    yield running
    running.client.close()
    if running.process.poll() is None:  # the test failed before its SIGTERM ended the server
        running.process.kill()
        running.process.wait(timeout=30)


def _pending(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("nv_inference_pending_request_count{"))
    return float(line.split()[-1])


def _answered(server):
    """Requests of facile the server has answered with success, as its statistics count them."""
    stats = server.client.get_inference_statistics("facile", as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats["success"].get("count", 0))


def _refusal(server):
    """How a new gRPC and a new HTTP request fare: ((gRPC status, details), HTTP status or error), None
    for OK."""
    try:
        with grpc.insecure_channel(server.url) as channel:
            channel.unary_unary(MODEL_INFER)(infer_request(ROWS).SerializeToString(), timeout=5)
        grpc_answer = None
    except grpc.RpcError as error:
        grpc_answer = error.code().name, error.details()
    try:
        _http_outputs(server.http_url, ROWS, timeout=5)
        http_answer = None
    except urllib.error.HTTPError as error:
        http_answer = error.code
    except urllib.error.URLError as error:
        http_answer = type(error.reason).__name__
    return grpc_answer, http_answer


def test_sigterm_answers_every_accepted_request_then_refuses(slow_batching):
    server = slow_batching
    small = [np.ascontiguousarray(np.roll(BIG, shift, axis=0)[:100]) for shift in range(19)]
    # References in one request of more rows than one execution holds, so it is not held back.
    everything = infer(server.client, np.concatenate([BIG[:40000], *small]), client_timeout=60)
    expected = {"big": everything[:40000], **{index: everything[40000 + 100 * index :][:100] for index in range(19)}}
    outcomes = {}

    def send(name, rows, transport):
        try:
            if transport == "gRPC":
                with grpcclient.InferenceServerClient(server.url) as client:
                    outcomes[name] = infer(client, rows, client_timeout=60)
            else:
                outcomes[name] = _http_outputs(server.http_url, rows, 60)
        except Exception as error:  # recorded: the assertions below show it
            outcomes[name] = error

    threads = [threading.Thread(target=send, args=("big", BIG[:40000], "gRPC"))]
    threads += [
        threading.Thread(target=send, args=(index, rows, "gRPC" if index % 4 else "HTTP"))
        for index, rows in enumerate(small)
    ]
    answered_before = _answered(server)
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + QUEUE_DELAY_S / 2
    while (accepted := _answered(server) - answered_before + _pending(server)) < len(threads):
        assert time.monotonic() < deadline, f"only {accepted} of {len(threads)} requests reached the server"
        time.sleep(0.02)
    in_flight = _pending(server)
    assert in_flight, "every request was answered before SIGTERM: nothing was left in flight"
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    while "shutting down" not in server.log_path.read_text() and time.monotonic() < signalled + 5:
        time.sleep(0.02)
    during_drain = _refusal(server)
    exit_status = server.process.wait(timeout=EXIT_TIMEOUT_S + 10)
    exited_after = time.monotonic() - signalled
    for thread in threads:
        thread.join(timeout=30)
    wrong = {
        name: outcome
        for name, outcome in outcomes.items()
        if not isinstance(outcome, np.ndarray) or not np.array_equal(outcome, expected[name])
    }
    assert len(outcomes) == len(threads) and not wrong, wrong
    # gRPC as Triton 2.58+ answers while it drains (src/grpc/infer_handler.cc at v2.71.0).
    shutting_down = "GRPC server is shutting down and has stopped accepting new requests."
    assert during_drain[0] == ("UNAVAILABLE", shutting_down), during_drain
    assert during_drain[1] in (503, "ConnectionRefusedError"), during_drain
    assert exit_status == 0 and exited_after < EXIT_TIMEOUT_S + 5, (exit_status, exited_after)
    for port in (server.port, server.http_port, server.metrics_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
