"""Overload: 200 concurrent gRPC clients, 10 gRPC streams 4 requests deep and 20 HTTP clients on a
2-core machine for a bounded time, with a mix of batch sizes. Every request must get exactly one
reply (the server's statistics must count exactly the replies the clients saw), every success must
carry exactly the outputs the same server computed for the same inputs at low concurrency, a
liveness probe must keep being answered, and afterwards the server must settle: no request left
pending, single requests fast again."""

import asyncio
import itertools
import json
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field

import aiohttp
import grpc
import numpy as np
import pytest
from support import Server, facile_with_config, infer, infer_request
from tritonclient.grpc import service_pb2

GRPC_CLIENTS = 200
STREAM_CLIENTS = 10
STREAM_DEPTH = 4  # requests each stream keeps in flight
HTTP_CLIENTS = 20
LOAD_SECONDS = 15
BATCH_SIZES = [1, 2, 7, 16, 100, 1000, 4000]
VARIANTS = 3  # distinct inputs per batch size, so a reply handed to the wrong request shows
REQUEST_TIMEOUT = 60  # s; under overload a reply may be slow, but one that never comes is a lost request
QUEUE_LIMIT = 8
REJECTION = "Exceeds maximum queue size"
REJECTED_STATUSES = ("UNAVAILABLE", 503, "error_message")  # a stream's error reply carries only its message
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
HEADER_LENGTH = "Inference-Header-Content-Length"
PROBE_TIMEOUT = 5  # s; a liveness probe unanswered this long under load gets a pod restarted


@dataclass
class Workload:
    """Inputs by (batch size, variant), with their wire forms and the server's outputs at rest."""

    inputs: dict
    grpc_requests: dict = field(default_factory=dict)
    http_bodies: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)

    @classmethod
    def create(cls):
        rng = np.random.default_rng(13)
        workload = cls(
            {
                (size, variant): rng.normal(10, 30, (size, 15)).astype(np.float32)
                for size in BATCH_SIZES
                for variant in range(VARIANTS)
            }
        )
        for key, rows in workload.inputs.items():
            workload.grpc_requests[key] = infer_request(rows, id=f"{key[0]}-{key[1]}").SerializeToString()
            header = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": list(rows.shape),
                            "parameters": {"binary_data_size": rows.nbytes},
                        }
                    ],
                    "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
                }
            ).encode()
            workload.http_bodies[key] = (header + rows.tobytes(), {HEADER_LENGTH: str(len(header))})
        return workload


@dataclass
class Tally:
    """What the clients saw: successes, allowed rejections, and everything else as a problem."""

    allowed_rejection: str = None
    successes: int = 0
    rejections: int = 0
    problems: list = field(default_factory=list)
    slowest_probe: float = 0.0

    def success(self, key, outputs, references):
        if np.array_equal(outputs.view(np.uint32), references[key].view(np.uint32)):
            self.successes += 1
        else:
            self.problems.append(f"batch {key}: outputs differ from the same inputs' outputs at rest")

    def failure(self, key, transport, status, message):
        if self.allowed_rejection and status in REJECTED_STATUSES and self.allowed_rejection in message:
            self.rejections += 1
        else:
            self.problems.append(f"batch {key} over {transport}: {status} {message[:200]!r}")


async def _grpc_client(url, workload, deadline, seed, tally):
    """Unary ModelInfer calls on its own channel, one after the other, until the deadline."""
    rng = np.random.default_rng(seed)
    keys = list(workload.inputs)
    async with grpc.aio.insecure_channel(url) as channel:
        model_infer = channel.unary_unary(MODEL_INFER, response_deserializer=service_pb2.ModelInferResponse.FromString)
        while time.monotonic() < deadline:
            key = keys[rng.integers(len(keys))]
            try:
                response = await model_infer(workload.grpc_requests[key], timeout=REQUEST_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                tally.failure(key, "gRPC", error.code().name, error.details() or "")
                continue
            tally.success(key, np.frombuffer(response.raw_output_contents[0], np.float32), workload.references)


def _with_id(serialized, request_id):
    """A serialized ModelInferRequest given another id: of two occurrences of a field, the last counts."""
    encoded = request_id.encode()
    assert len(encoded) < 128  # its length fits one varint byte
    return serialized + b"\x1a" + bytes([len(encoded)]) + encoded


async def _stream_client(url, workload, deadline, seed, tally):
    """One ModelStreamInfer kept STREAM_DEPTH requests deep until the deadline, then closed: every
    request gets exactly one reply, matched by id, and then the stream ends."""
    rng = np.random.default_rng(seed)
    keys = list(workload.inputs)
    waiting = {}  # request id -> key
    async with grpc.aio.insecure_channel(url) as channel:
        parse = service_pb2.ModelStreamInferResponse.FromString
        call = channel.stream_stream(STREAM_INFER, response_deserializer=parse)(
            timeout=deadline - time.monotonic() + REQUEST_TIMEOUT
        )
        numbers = itertools.count()

        async def send():
            key, request_id = keys[rng.integers(len(keys))], f"stream-{seed}-{next(numbers)}"
            waiting[request_id] = key
            await call.write(_with_id(workload.grpc_requests[key], request_id))

        try:
            for _ in range(STREAM_DEPTH):
                await send()
            closed = False
            while True:
                if not closed and time.monotonic() >= deadline:
                    await call.done_writing()
                    closed = True
                if closed and not waiting:
                    break
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                key = waiting.pop(reply.infer_response.id, None)
                if key is None:
                    tally.problems.append(f"stream {seed}: a reply for no waiting request: {reply.infer_response.id!r}")
                elif reply.error_message:
                    tally.failure(key, "stream", "error_message", reply.error_message)
                else:
                    outputs = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
                    tally.success(key, outputs, workload.references)
                if not closed:
                    await send()
            if await call.read() is not grpc.aio.EOF:
                tally.problems.append(f"stream {seed}: a reply after every request had one")
        except grpc.aio.AioRpcError as error:
            tally.problems.append(f"stream {seed} ended with {error.code().name}: {error.details()}")
        tally.problems += [f"stream {seed}: no reply to {request_id}" for request_id in waiting]


async def _http_client(url, workload, deadline, seed, tally):
    """Binary-tensor HTTP infer requests on one kept-alive connection, one after the other."""
    rng = np.random.default_rng(seed)
    keys = list(workload.inputs)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1)) as session:
        while time.monotonic() < deadline:
            key = keys[rng.integers(len(keys))]
            body, headers = workload.http_bodies[key]
            try:
                async with session.post(f"http://{url}/v2/models/facile/infer", data=body, headers=headers) as reply:
                    answer = await reply.read()
                    header_length = reply.headers.get(HEADER_LENGTH)
                    status = reply.status
            except (TimeoutError, aiohttp.ClientError) as error:
                tally.failure(key, "HTTP", "no reply", repr(error))
                continue
            if status != 200 or header_length is None:
                tally.failure(key, "HTTP", status, answer.decode(errors="replace"))
            else:
                tally.success(key, np.frombuffer(answer[int(header_length) :], np.float32), workload.references)


async def _liveness_probe(http_url, deadline, tally):
    """/v2/health/live twice a second, as a Kubernetes probe would ask it during the load."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                async with session.get(f"http://{http_url}/v2/health/live") as reply:
                    if reply.status != 200:
                        tally.problems.append(f"liveness probe answered {reply.status}")
            except (TimeoutError, aiohttp.ClientError) as error:
                tally.problems.append(f"liveness probe failed: {error!r}")
            tally.slowest_probe = max(tally.slowest_probe, time.monotonic() - started)
            await asyncio.sleep(0.5)


async def _overload(server, workload, seconds, tally):
    deadline = time.monotonic() + seconds
    clients = [_grpc_client(server.url, workload, deadline, seed, tally) for seed in range(GRPC_CLIENTS)]
    clients += [
        _stream_client(server.url, workload, deadline, GRPC_CLIENTS + seed, tally) for seed in range(STREAM_CLIENTS)
    ]
    clients += [
        _http_client(server.http_url, workload, deadline, GRPC_CLIENTS + STREAM_CLIENTS + seed, tally)
        for seed in range(HTTP_CLIENTS)
    ]
    clients.append(_liveness_probe(server.http_url, deadline, tally))
    await asyncio.wait_for(asyncio.gather(*clients), timeout=seconds + REQUEST_TIMEOUT + 30)


def _counts(server):
    """(successful, failed) requests of facile as the server's statistics count them."""
    stats = server.client.get_inference_statistics("facile", as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats["success"].get("count", 0)), int(stats["fail"].get("count", 0))


def _pending(server):
    """Requests of facile received and not yet answered, from the metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return float(
        re.search(r'^nv_inference_pending_request_count\{model="facile",version="1"\} (\S+)$', text, re.M).group(1)
    )


def _single_request_latency(server, rows):
    """Median seconds of 20 batch-1 requests, one at a time."""
    times = []
    for _ in range(20):
        started = time.perf_counter()
        infer(server.client, rows, client_timeout=REQUEST_TIMEOUT).ravel()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run_overload(server, workload, seconds, tally):
    for key, rows in workload.inputs.items():  # the reference: the same server, one request at a time
        workload.references[key] = infer(server.client, rows, client_timeout=REQUEST_TIMEOUT).ravel()
    one_row = workload.inputs[(1, 0)]
    latency_at_rest = _single_request_latency(server, one_row)
    before = _counts(server)
    started = time.monotonic()
    asyncio.run(_overload(server, workload, seconds, tally))
    took = time.monotonic() - started
    assert server.process.poll() is None, "the server died under load"
    settle_deadline = time.monotonic() + 10
    while _pending(server) and time.monotonic() < settle_deadline:
        time.sleep(0.1)
    pending, after = _pending(server), _counts(server)
    latency_after = _single_request_latency(server, one_row)
    print(
        f"{tally.successes} successes, {tally.rejections} rejections, {len(tally.problems)} problems in {took:.1f} s;"
        f" slowest liveness probe {tally.slowest_probe:.2f} s; batch-1 latency {latency_at_rest * 1e3:.1f} ms at"
        f" rest, {latency_after * 1e3:.1f} ms after"
    )
    assert not tally.problems, f"{len(tally.problems)} requests went wrong, e.g.:\n" + "\n".join(tally.problems[:20])
    assert tally.successes > 0
    assert pending == 0, f"{pending} requests still pending 10 s after the load ended"
    # Exactly one reply per request: the server counted what the clients received, no more, no less.
    assert (after[0] - before[0], after[1] - before[1]) == (tally.successes, tally.rejections)
    assert latency_after < max(0.1, 5 * latency_at_rest), (latency_at_rest, latency_after)
    assert np.array_equal(
        infer(server.client, one_row, client_timeout=REQUEST_TIMEOUT).ravel(), workload.references[(1, 0)]
    )


@pytest.fixture(scope="module")
def workload():
    return Workload.create()


@pytest.fixture
def unchanged(model_repository, tmp_path):
    """facile exactly as `faast build` configures it: no queue limit, so nothing may be refused."""
    running = Server(model_repository, tmp_path / "serve.log")
    yield running
    running.stop()


@pytest.fixture
def queue_limited(model_repository, tmp_path):
    """facile with a queue of QUEUE_LIMIT requests: beyond it requests are refused, never lost."""
    repository = facile_with_config(
        model_repository,
        tmp_path,
        "dynamic_batching {",
        f"dynamic_batching {{\n  default_queue_policy {{ max_queue_size: {QUEUE_LIMIT} }}",
    )
    running = Server(repository, tmp_path / "serve.log")
    yield running
    running.stop()


@pytest.mark.slow  # sustained overload
def test_every_request_under_overload_succeeds_with_the_outputs_at_rest(unchanged, workload):
    _run_overload(unchanged, workload, LOAD_SECONDS, Tally())


@pytest.mark.slow  # sustained overload
def test_a_full_queue_refuses_requests_and_loses_none(queue_limited, workload):
    _run_overload(queue_limited, workload, LOAD_SECONDS / 2, Tally(allowed_rejection=REJECTION))
