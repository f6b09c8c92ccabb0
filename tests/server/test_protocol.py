"""Triton's own client flows against a real faast process: sync and async infer, streaming, system
shared memory, statistics, repository, health, trace and log settings."""

import asyncio
import base64
import json
import queue
import shutil
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.utils.shared_memory as shm
from support import Server, bits, facile_input, infer
from tritonclient.utils import InferenceServerException


def test_async_client_matches_sync_client(server, facile_inputs):
    rows = facile_inputs[0][:100]
    expected = infer(server.client, rows)

    async def run():
        client = grpcclient_aio.InferenceServerClient(server.url)
        try:
            results = await asyncio.gather(
                *[
                    client.infer("facile", [facile_input(rows[i : i + 10])], request_id=str(i))
                    for i in range(0, 100, 10)
                ]
            )
            return [(r.get_response().id, r.as_numpy("output")) for r in results]
        finally:
            await client.close()

    for request_id, output in asyncio.run(run()):
        start = int(request_id)
        assert np.array_equal(bits(output), bits(expected[start : start + 10]))


def test_streaming_serves_every_request_and_survives_an_error(server, facile_inputs):
    rows = facile_inputs[0][:30]
    expected = infer(server.client, rows)
    replies = queue.Queue()
    client = grpcclient.InferenceServerClient(server.url)
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for i in range(3):
            client.async_stream_infer("facile", [facile_input(rows[i * 10 : (i + 1) * 10])], request_id=f"ok{i}")
        client.async_stream_infer("facile", [facile_input(np.zeros((2, 7), np.float32))], request_id="bad")
        client.async_stream_infer("facile", [facile_input(rows[:10])], request_id="after-error")
        got = [replies.get(timeout=30) for _ in range(5)]
    finally:
        client.stop_stream()
        client.close()
    errors = [error for result, error in got if error is not None]
    assert len(errors) == 1 and "unexpected shape for input 'input'" in errors[0].message()
    results = {result.get_response().id: result.as_numpy("output") for result, error in got if error is None}
    assert set(results) == {"ok0", "ok1", "ok2", "after-error"}
    for i in range(3):
        assert np.array_equal(bits(results[f"ok{i}"]), bits(expected[i * 10 : (i + 1) * 10]))
    assert np.array_equal(bits(results["after-error"]), bits(expected[:10]))


def test_system_shared_memory_inputs_and_outputs(server, facile_inputs):
    rows = np.ascontiguousarray(facile_inputs[0][:1000])
    expected = infer(server.client, rows)
    client = server.client
    client.unregister_system_shared_memory()
    input_region = shm.create_shared_memory_region("faast_in", "/faast_test_in", rows.nbytes)
    output_region = shm.create_shared_memory_region("faast_out", "/faast_test_out", 4000)
    try:
        shm.set_shared_memory_region(input_region, [rows])
        client.register_system_shared_memory("faast_in", "/faast_test_in", rows.nbytes)
        client.register_system_shared_memory("faast_out", "/faast_test_out", 4000)
        status = client.get_system_shared_memory_status(as_json=True)["regions"]
        assert status["faast_in"]["key"] == "/faast_test_in" and int(status["faast_out"]["byte_size"]) == 4000

        tensor = grpcclient.InferInput("input", [1000, 15], "FP32")
        tensor.set_shared_memory("faast_in", rows.nbytes)
        output = grpcclient.InferRequestedOutput("output")
        output.set_shared_memory("faast_out", 4000)
        result = client.infer("facile", [tensor], outputs=[output])
        assert result.get_output("output").shape == [1000, 1]
        served = shm.get_contents_as_numpy(output_region, np.float32, [1000, 1])
        assert np.array_equal(bits(served), bits(expected))

        too_small = grpcclient.InferRequestedOutput("output")
        too_small.set_shared_memory("faast_out", 400)
        with pytest.raises(InferenceServerException, match="should be at least 4000 bytes"):
            client.infer("facile", [tensor], outputs=[too_small])
        beyond = grpcclient.InferInput("input", [1000, 15], "FP32")
        beyond.set_shared_memory("faast_in", rows.nbytes, offset=60)
        with pytest.raises(InferenceServerException, match="Invalid offset \\+ byte size for shared memory region"):
            client.infer("facile", [beyond])
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(input_region)
        shm.destroy_shared_memory_region(output_region)
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


def test_cuda_shared_memory_is_a_clear_unimplemented_error(server):
    with pytest.raises(InferenceServerException) as caught:
        server.client.register_cuda_shared_memory("gpu", base64.b64encode(b"cuda-ipc-handle"), 0, 16)
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "CUDA shared memory is not supported" in caught.value.message()
    assert server.client.get_cuda_shared_memory_status(as_json=True).get("regions", {}) == {}


def test_statistics_report_triton_fields(server, facile_inputs):
    server.client.infer("facile", [facile_input(facile_inputs[0][:16])])
    stats = server.client.get_inference_statistics("facile", as_json=True)["model_stats"][0]
    assert stats["name"] == "facile" and stats["version"] == "1"
    assert int(stats["inference_count"]) >= 16 and int(stats["execution_count"]) >= 1
    assert int(stats["last_inference"]) > 0
    inference = stats["inference_stats"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inference[key]["count"]) >= 1 and int(inference[key]["ns"]) > 0, key
    assert any(int(batch["batch_size"]) == 16 for batch in stats["batch_stats"])
    everything = server.client.get_inference_statistics(as_json=True)["model_stats"]
    assert [model["name"] for model in everything] == ["facile"]


def test_repository_index_health_and_metadata(server):
    index = server.client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "facile", "version": "1", "state": "READY"}]
    metadata = server.client.get_server_metadata()
    assert metadata.name == "faast" and "system_shared_memory" in metadata.extensions
    with grpc.insecure_channel(server.url) as channel:  # grpc.health.v1 by hand: no client library needed
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda m: m, response_deserializer=lambda m: m
        )
        assert check(b"") == b"\x08\x01"  # status: SERVING
        assert check(b"\x0a\x06facile") == b"\x08\x01"
        assert check(b"\x0a\x04nope") == b"\x08\x02"  # NOT_SERVING


def test_trace_and_log_settings(model_repository, facile_inputs, tmp_path):
    """The trace file is chosen at launch (as tritonserver's --trace-config); clients set level,
    rate and count, and can change neither the trace file nor the log file."""
    trace_file = tmp_path / "trace.jsonl"
    server = Server(model_repository, tmp_path / "serve.log", "--trace-config", f"triton,file={trace_file}")
    try:
        settings = server.client.update_trace_settings(
            "facile", {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "2"}, as_json=True
        )["settings"]
        assert settings["trace_level"]["value"] == ["TIMESTAMPS"] and settings["trace_rate"]["value"] == ["1"]
        assert settings["trace_file"]["value"] == [str(trace_file)]
        for request_id in ("t1", "t2", "t3"):
            server.client.infer("facile", [facile_input(facile_inputs[0][:2])], request_id=request_id)
        assert _eventually(lambda: trace_file.exists() and len(trace_file.read_text().splitlines()) == 2)
        traces = [json.loads(line) for line in trace_file.read_text().splitlines()]
        assert [t["request_id"] for t in traces] == ["t1", "t2"]  # trace_count 2
        names = [stamp["name"] for stamp in traces[0]["timestamps"]]
        assert names == ["REQUEST_START", "REQUEST_END"]
        assert traces[0]["timestamps"][1]["ns"] >= traces[0]["timestamps"][0]["ns"]
        server.client.update_trace_settings("facile", {"trace_level": ["OFF"]})
        elsewhere = tmp_path / "elsewhere.jsonl"
        with pytest.raises(InferenceServerException) as caught:
            server.client.update_trace_settings("facile", {"trace_file": str(elsewhere)})
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert caught.value.message() == "trace file location can not be updated through network protocol"

        logs = server.client.update_log_settings({"log_verbose_level": 1}, as_json=True)["settings"]
        assert logs["log_verbose_level"]["uint32_param"] == 1
        assert (
            server.client.update_log_settings({"log_verbose_level": 0}, as_json=True)["settings"]["log_info"][
                "bool_param"
            ]
            is True
        )
        with pytest.raises(InferenceServerException) as caught:
            server.client.update_log_settings({"log_file": str(elsewhere)})
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert not elsewhere.exists()
    finally:
        server.stop()


def test_explicit_model_control_load_and_unload(model_repository, tmp_path):
    server = Server(model_repository, tmp_path / "serve.log", "--model-control-mode", "explicit")
    try:
        client = server.client
        assert not client.is_model_ready("facile")
        assert client.get_model_repository_index(as_json=True)["models"] == [{"name": "facile"}]
        client.load_model("facile")
        assert client.is_model_ready("facile")
        client.infer("facile", [facile_input(np.zeros((3, 15), np.float32))])
        client.unload_model("facile")
        assert not client.is_model_ready("facile")
        index = client.get_model_repository_index(as_json=True)["models"]
        assert index == [{"name": "facile", "state": "UNAVAILABLE", "reason": "unloaded"}]
        with pytest.raises(InferenceServerException, match="load failed for model 'nope'|failed to load 'nope'"):
            client.load_model("nope")
        assert client.is_server_ready()  # an unknown model does not make the server unready
    finally:
        server.stop()


def test_load_is_refused_without_explicit_control(server):
    with pytest.raises(InferenceServerException) as caught:
        server.client.load_model("facile")
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "explicit model load / unload is not allowed" in caught.value.message()


def test_poll_mode_follows_the_repository(model_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    server = Server(repository, tmp_path / "serve.log", "--model-control-mode", "poll", "--repository-poll-secs", "0.3")
    try:
        client = server.client
        staging = tmp_path / "facile_copy"  # prepared aside, then moved in at once, as a deployment does
        shutil.copytree(repository / "facile", staging)
        config = staging / "config.pbtxt"
        config.write_text(config.read_text().replace('name: "facile"', 'name: "facile_copy"'))
        staging.rename(repository / "facile_copy")
        assert _eventually(lambda: client.is_model_ready("facile_copy"))
        shutil.rmtree(repository / "facile_copy")
        assert _eventually(lambda: not client.is_model_ready("facile_copy"))
        assert client.is_model_ready("facile")
    finally:
        server.stop()


def _eventually(condition, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False
