"""Regression tests for the holes a probe of a running faast found: each defect of issue 13 is
attacked here against a real `faast serve` and must stay closed."""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from support import Server, facile_input, facile_with_config, infer, infer_request, varint
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

ROWS = np.linspace(-3, 40, 16 * 15, dtype=np.float32).reshape(16, 15)
GIB = 2**30
MESSAGE_LIMITS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


@pytest.fixture(scope="module")
def explicit(model_repository, tmp_path_factory):
    """A server whose clients may load and unload models, as the probe's was."""
    running = Server(
        model_repository,
        tmp_path_factory.mktemp("defects") / "serve.log",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "facile",
    )
    yield running
    running.stop()


def _status(call, *args, timeout=30):
    try:
        call(*args, timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name, error.details()
    return "OK", ""


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


def test_shared_memory_keys_reach_only_regular_files_in_dev_shm(explicit, tmp_path):
    outside = tmp_path / "secret"
    outside.write_bytes(b"s" * 4096)
    link, fifo = "/dev/shm/faast_test_link", "/dev/shm/faast_test_fifo"
    os.symlink(outside, link)
    os.mkfifo(fifo)
    try:
        escapes = [
            f"../..{outside}",
            f"/..{outside}",
            str(outside),
            "faast_test_link",
            "/faast_test_link",
            "/faast_test_fifo",
            "/",
            "/.",
            "/..",
            "",
            "/a\0b",
        ]
        for key in escapes:
            started = time.monotonic()
            with pytest.raises(InferenceServerException) as caught:
                explicit.client.register_system_shared_memory("escape", key, 64)
            assert caught.value.status() == "StatusCode.INTERNAL", key
            assert caught.value.message().startswith("Unable to open shared memory region: '"), key
            assert time.monotonic() - started < 5, f"{key!r} blocked the server"
        assert explicit.client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
        first, again = (infer(explicit.client, ROWS, client_timeout=30) for _ in range(2))
        assert np.array_equal(first, again)  # still serving
    finally:
        os.unlink(link)
        os.unlink(fifo)


def test_a_truncated_region_is_an_error_not_sigbus(explicit):
    region = shm.create_shared_memory_region("faast_truncated", "/faast_truncated", 2 * ROWS.nbytes)
    try:
        shm.set_shared_memory_region(region, [ROWS])
        explicit.client.register_system_shared_memory("truncated", "/faast_truncated", 2 * ROWS.nbytes)
        inputs = grpcclient.InferInput("input", list(ROWS.shape), "FP32")
        inputs.set_shared_memory("truncated", ROWS.nbytes)
        expected = infer(explicit.client, ROWS, client_timeout=30)
        assert np.array_equal(explicit.client.infer("facile", [inputs]).as_numpy("output"), expected)
        os.truncate("/dev/shm/faast_truncated", 100)  # the client shrinks its own object
        with pytest.raises(InferenceServerException, match="was truncated"):
            explicit.client.infer("facile", [inputs])
        outputs = grpcclient.InferRequestedOutput("output")
        outputs.set_shared_memory("truncated", 64, offset=ROWS.nbytes)
        plain = facile_input(ROWS)
        with pytest.raises(InferenceServerException, match="was truncated"):
            explicit.client.infer("facile", [plain], outputs=[outputs])
        assert explicit.process.poll() is None
        assert np.array_equal(infer(explicit.client, ROWS, client_timeout=30), expected)
    finally:
        explicit.client.unregister_system_shared_memory("truncated")
        shm.destroy_shared_memory_region(region)


def _held_facile(model_repository, tmp_path):
    """A server whose batcher holds every request 1.5 s: time for a client to pull memory under it."""
    repository = facile_with_config(
        model_repository, tmp_path, "max_queue_delay_microseconds: 100\n", "max_queue_delay_microseconds: 1500000\n"
    )
    return Server(repository, tmp_path / "serve.log")


def _truncated_while_held(held, server, key, inputs, outputs, message):
    """Send (inputs, outputs), whose shared memory lies in /dev/shm/`key`, together with another
    client's plain request; truncate the object while the batcher holds both. The first fails alone
    with INVALID_ARGUMENT and `message`; the other is answered bit for bit in one execution (the
    batch ran again without the vanished request), and the server lives on."""
    other = np.random.default_rng(12).uniform(-3, 80, (700, 15)).astype(np.float32)
    before = held.client.get_inference_statistics("facile").model_stats[0]
    answers: dict[str, object] = {}

    def send(name, tensors, wanted=None):
        client = grpcclient.InferenceServerClient(held.url)  # its own connection
        try:
            answers[name] = client.infer("facile", tensors, outputs=wanted, client_timeout=30)
        except InferenceServerException as error:
            answers[name] = error
        finally:
            client.close()

    plain = facile_input(other)
    threads = [
        threading.Thread(target=send, args=("in place", inputs, outputs)),
        threading.Thread(target=send, args=("plain", [plain])),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.7)  # both are checked and queued; the batcher holds them for 1.5 s
    os.truncate(f"/dev/shm/{key}", 0)
    for thread in threads:
        thread.join(30)
    failed = answers["in place"]
    assert isinstance(failed, InferenceServerException)
    assert failed.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in failed.message()
    assert np.array_equal(answers["plain"].as_numpy("output"), infer(server.client, other, client_timeout=30))
    after = held.client.get_inference_statistics("facile").model_stats[0]
    assert after.execution_count - before.execution_count == 1
    assert after.inference_count - before.inference_count == len(other)
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert held.process.poll() is None
    assert np.array_equal(infer(held.client, other, client_timeout=30), infer(server.client, other, client_timeout=30))


def test_an_input_region_truncated_while_its_request_waits_fails_alone(model_repository, server, tmp_path):
    """An FP32 input in shared memory reaches the kernel as a view of the client's memory (no copy).
    A client that truncates its object after the request was checked, while the batcher holds it,
    gets Triton's INVALID_ARGUMENT, alone. (Copied instead, the request would succeed: this failure
    proves the read is in place.)"""
    held = _held_facile(model_repository, tmp_path)
    rows = np.random.default_rng(11).uniform(-3, 80, (4096, 15)).astype(np.float32)
    region = shm.create_shared_memory_region("faast_vanishing", "/faast_vanishing", rows.nbytes)
    try:
        shm.set_shared_memory_region(region, [rows])
        held.client.register_system_shared_memory("vanishing", "/faast_vanishing", rows.nbytes)
        viewed = grpcclient.InferInput("input", list(rows.shape), "FP32")
        viewed.set_shared_memory("vanishing", rows.nbytes)
        assert np.array_equal(
            held.client.infer("facile", [viewed]).as_numpy("output"), infer(server.client, rows, client_timeout=30)
        )
        _truncated_while_held(
            held,
            server,
            "faast_vanishing",
            [viewed],
            None,
            "shared memory region 'vanishing' was truncated while it was read",
        )
    finally:
        held.client.unregister_system_shared_memory("vanishing")
        shm.destroy_shared_memory_region(region)
        held.stop()


def test_an_output_region_truncated_while_its_request_waits_fails_alone(model_repository, server, tmp_path):
    """FACILE's FP32 output, asked for in shared memory, is unpacked by the kernel straight into the
    client's memory (no answer array, no copy). A client that truncates that object while the batcher
    holds its request gets INVALID_ARGUMENT, alone. (Written from an answer array instead, the write
    would find the object smaller beforehand and say so: this message proves the write is in place.)"""
    held = _held_facile(model_repository, tmp_path)
    rows = np.random.default_rng(13).uniform(-3, 80, (4096, 15)).astype(np.float32)
    nbytes = len(rows) * 4
    region = shm.create_shared_memory_region("faast_vanishing_out", "/faast_vanishing_out", nbytes)
    try:
        held.client.register_system_shared_memory("vanishing_out", "/faast_vanishing_out", nbytes)
        given = facile_input(rows)
        wanted = grpcclient.InferRequestedOutput("output")
        wanted.set_shared_memory("vanishing_out", nbytes)
        answer = held.client.infer("facile", [given], outputs=[wanted])
        assert answer.get_response().raw_output_contents == [b""]  # as Triton: the output's bytes are not sent
        written = shm.get_contents_as_numpy(region, np.float32, [len(rows), 1])
        assert np.array_equal(written, infer(server.client, rows, client_timeout=30))
        _truncated_while_held(
            held,
            server,
            "faast_vanishing_out",
            [given],
            [wanted],
            "shared memory region 'vanishing_out' was truncated while it was written",
        )
    finally:
        held.client.unregister_system_shared_memory("vanishing_out")
        shm.destroy_shared_memory_region(region)
        held.stop()


def test_settings_cannot_name_files_and_are_validated_when_set(explicit, tmp_path):
    target = tmp_path / "written_by_a_client"
    with grpc.insecure_channel(explicit.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        trace = service_pb2.TraceSettingRequest()
        trace.settings["trace_file"].value.append(str(target))
        assert _status(stub.TraceSetting, trace) == (
            "UNIMPLEMENTED",
            "trace file location can not be updated through network protocol",
        )
        logs = service_pb2.LogSettingsRequest()
        logs.settings["log_file"].string_param = str(target)
        assert _status(stub.LogSettings, logs) == (
            "UNIMPLEMENTED",
            "log file location can not be updated through network protocol",
        )
        rate = service_pb2.TraceSettingRequest()
        rate.settings["trace_rate"].value.append("abc")
        assert _status(stub.TraceSetting, rate) == ("INVALID_ARGUMENT", "Unable to parse 'trace_rate', got: abc")
    request = urllib.request.Request(
        f"http://{explicit.http_url}/v2/trace/setting",
        method="POST",
        data=json.dumps({"trace_file": str(target)}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 501
    assert not target.exists()
    assert explicit.client.get_trace_settings(as_json=True)["settings"]["trace_rate"]["value"] == ["1000"]
    assert infer(explicit.client, ROWS, client_timeout=30).shape == (16, 1)  # the refused rate did not break inference


def test_a_fifo_trace_file_never_blocks_inference(model_repository, tmp_path):
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)  # nobody ever reads it: opening it for writing blocks forever
    server = Server(
        model_repository,
        tmp_path / "serve.log",
        "--trace-config",
        f"triton,file={fifo}",
        "--trace-config",
        "level=TIMESTAMPS",
        "--trace-config",
        "rate=1",
    )
    try:
        started = time.monotonic()
        for _ in range(20):
            assert infer(server.client, ROWS, client_timeout=30).shape == (16, 1)
        assert time.monotonic() - started < 20
    finally:
        server.process.kill()  # the trace writer is stuck in open(); SIGTERM's flush would wait for it
        server.process.wait(timeout=30)


def test_loads_never_leave_the_repository(explicit, model_repository, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(model_repository / "facile", outside / "evil")
    config = outside / "evil" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', 'name: "evil"'))
    relative = os.path.relpath(outside / "evil", model_repository)
    for name in (relative, str(outside / "evil"), "evil", "facile/../facile", "facile/1", ".", ".."):
        with pytest.raises(InferenceServerException) as caught:
            explicit.client.load_model(name)
        assert caught.value.status() == "StatusCode.INTERNAL", name
        assert caught.value.message() == f"failed to load '{name}', failed to poll from model repository"
    escaped = urllib.parse.quote(relative, safe="")
    request = urllib.request.Request(f"http://{explicit.http_url}/v2/repository/models/{escaped}/load", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert "failed to poll from model repository" in json.loads(caught.value.read())["error"]
    assert [m["name"] for m in explicit.client.get_model_repository_index(as_json=True)["models"]] == ["facile"]
    assert not explicit.client.is_model_ready("evil")


def test_load_parameters_are_applied_or_refused(explicit):
    try:
        override = {"max_batch_size": 8, "dynamic_batching": {}}
        explicit.client.load_model("facile", config=json.dumps(override))
        assert explicit.client.get_model_config("facile", as_json=True)["config"]["max_batch_size"] == 8
        with pytest.raises(InferenceServerException, match="batch-size must be <= 8"):
            infer(explicit.client, ROWS, client_timeout=30)
        assert infer(explicit.client, ROWS[:8], client_timeout=30).shape == (8, 1)
        with pytest.raises(InferenceServerException) as caught:
            explicit.client.load_model("facile", files={"file:1/csim.so": b"\x7fELF client code"})
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert explicit.client.get_model_config("facile", as_json=True)["config"]["max_batch_size"] == 8
    finally:
        explicit.client.load_model("facile")
    assert explicit.client.get_model_config("facile", as_json=True)["config"]["max_batch_size"] == 65536


def test_zero_rows_are_answered_at_once_as_triton_does(explicit):
    empty = np.zeros((0, 15), np.float32)
    with grpc.insecure_channel(explicit.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        started = time.monotonic()
        code, details = _status(stub.ModelInfer, infer_request(empty))
    assert time.monotonic() - started < 5  # no other traffic is needed to get an answer
    assert code == "INVALID_ARGUMENT"
    assert details.endswith("input byte size mismatch for input 'input' for model 'facile'. Expected 60, got 0")


def test_every_streamed_request_gets_one_reply_and_the_stream_ends(explicit):
    good = infer_request(ROWS, id="good").SerializeToString()
    unknown = infer_request(ROWS, model_name="nope", id="unknown").SerializeToString()
    empty = infer_request(np.zeros((0, 15), np.float32), id="empty").SerializeToString()
    priority = infer_request(ROWS, id="priority")
    priority.parameters["priority"].string_param = "high"
    sent = [good, unknown, b"\xff\xff\xff", empty, good, priority.SerializeToString()]  # the last one fails
    with grpc.insecure_channel(explicit.url) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [service_pb2.ModelStreamInferResponse.FromString(reply) for reply in stream(iter(sent), timeout=30)]
    assert len(replies) == len(sent)
    errors = sorted(reply.error_message for reply in replies if reply.error_message)
    assert len(errors) == 4 and "Unable to parse request" in errors
    assert sorted(reply.infer_response.id for reply in replies if not reply.error_message) == ["good", "good"]


@pytest.mark.slow  # gigabyte requests, memory measured
def test_rejected_huge_requests_give_their_memory_back(explicit):
    """Three rejected 1.9 GiB requests: RSS ends within 200 MB of where it started."""
    size = int(1.9 * GIB)
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[2, 15])
    header = service_pb2.ModelInferRequest(model_name="facile", inputs=[tensor]).SerializeToString()
    # Field 7 (raw_input_contents), length-delimited, written by hand to spare the client a copy.
    payload = header + b"\x3a" + varint(size) + bytes(size)
    with grpc.insecure_channel(explicit.url, options=MESSAGE_LIMITS) as channel:
        model_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        _status(model_infer, infer_request(ROWS).SerializeToString())  # warm: the first request allocates for good
        before = _rss_mb(explicit.process.pid)
        for _ in range(3):
            code, details = _status(model_infer, payload, timeout=300)
            assert code == "INVALID_ARGUMENT" and "input byte size mismatch" in details
        del payload
        deadline = time.monotonic() + 20
        while _rss_mb(explicit.process.pid) > before + 200 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _rss_mb(explicit.process.pid) <= before + 200, (before, _rss_mb(explicit.process.pid))


@pytest.mark.slow  # a stress loop
def test_load_unload_and_infer_of_one_model_concurrently(explicit):
    """Reloads swap the model in only once loaded, so traffic never notices them; unloads refuse
    new requests cleanly and finish the ones they took."""
    expected = infer(explicit.client, ROWS, client_timeout=30)
    answers, stop = [], threading.Event()

    def traffic():
        client = grpcclient.InferenceServerClient(explicit.url)
        tensor = facile_input(ROWS)
        while not stop.is_set():
            try:
                answers.append(("OK", client.infer("facile", [tensor], client_timeout=30).as_numpy("output")))
            except InferenceServerException as error:
                answers.append((error.status(), error.message()))
        client.close()

    def phase(action, seconds):
        answers.clear()
        stop.clear()
        clients = [threading.Thread(target=traffic) for _ in range(4)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            action()
        stop.set()
        for client in clients:
            client.join(timeout=60)
        return list(answers)

    reloads = phase(lambda: explicit.client.load_model("facile"), 6)
    assert reloads and [value for status, value in reloads if status != "OK"] == []
    assert all(np.array_equal(value, expected) for _, value in reloads)

    def unload_and_load():
        explicit.client.unload_model("facile")
        explicit.client.load_model("facile")

    churn = phase(unload_and_load, 6)
    for status, value in churn:
        if status == "OK":
            assert np.array_equal(value, expected)
        else:
            assert status in ("StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE"), (status, value)
    assert any(status == "OK" for status, _ in churn)
    assert explicit.client.is_model_ready("facile")
    assert np.array_equal(infer(explicit.client, ROWS, client_timeout=30), expected)
