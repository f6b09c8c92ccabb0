"""Dynamic batching through a real server: many clients share kernel executions, replies stay theirs,
and a full queue answers UNAVAILABLE at once."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import Server, facile_input, infer
from tritonclient.utils import InferenceServerException

CLIENTS = 64
REQUESTS_PER_CLIENT = 4


def _serve_with_batching(model_repository, tmp_path, batching):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    config = repository / "facile" / "config.pbtxt"
    text = config.read_text()
    start = text.index("dynamic_batching {")
    end = text.index("}", start) + 1
    config.write_text(text[:start] + f"dynamic_batching {{ {batching} }}" + text[end:])
    return Server(repository, tmp_path / "serve.log")


def _statistics(client):
    stats = client.get_inference_statistics("facile").model_stats[0]
    return stats.execution_count, stats.inference_count, stats.inference_stats.success.count


def test_64_concurrent_one_row_clients_share_executions(model_repository, facile_inputs, tmp_path):
    server = _serve_with_batching(model_repository, tmp_path, "max_queue_delay_microseconds: 20000")
    try:
        rows = facile_inputs[0][: CLIENTS * REQUESTS_PER_CLIENT]
        expected = infer(server.client, rows)  # one request: the kernel's answer for every row
        executions_before, inferences_before, successes_before = _statistics(server.client)

        def client_session(index):
            client = grpcclient.InferenceServerClient(server.url)
            try:
                return [(i, infer(client, rows[i : i + 1])) for i in range(index, len(rows), CLIENTS)]
            finally:
                client.close()

        with ThreadPoolExecutor(CLIENTS) as pool:
            replies = [reply for session in pool.map(client_session, range(CLIENTS)) for reply in session]
        assert len(replies) == len(rows)
        for i, output in replies:
            assert output.shape == (1, 1)
            assert output.view(np.uint32)[0, 0] == expected.view(np.uint32)[i, 0], f"reply {i} is not its own"

        executions, inferences, successes = _statistics(server.client)
        assert successes - successes_before == len(rows)
        assert inferences - inferences_before == len(rows)
        assert executions - executions_before <= len(rows) / 8  # far fewer executions than requests
        stats = server.client.get_inference_statistics("facile").model_stats[0]
        assert max(batch.batch_size for batch in stats.batch_stats) > 8
    finally:
        server.stop()


def test_full_queue_answers_unavailable_promptly(model_repository, facile_inputs, tmp_path):
    server = _serve_with_batching(
        model_repository, tmp_path, "max_queue_delay_microseconds: 1000000 default_queue_policy { max_queue_size: 8 }"
    )
    try:
        rows = facile_inputs[0][:1]
        tensor = facile_input(rows)
        results = []
        for _ in range(8):  # fill the queue: they wait up to the 1 s queue delay
            server.client.async_infer("facile", [tensor], callback=lambda result, error: results.append(error))
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            server.client.infer("facile", [tensor])
        assert time.monotonic() - started < 0.5
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        assert caught.value.message() == "Exceeds maximum queue size"
        deadline = time.monotonic() + 10
        while len(results) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert results == [None] * 8  # the queued ones were served, nothing lost
    finally:
        server.stop()


def test_fixed_point_wire_type_int16_gives_the_same_answers(model_repository, facile_inputs, tmp_path):
    """A model may take the kernel's raw ap_fixed<16,9> bit patterns as INT16 (half the bytes of FP32,
    no host conversion): a client that quantizes itself gets exactly the FP32 model's answers."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository, repository)
    fixed = repository / "facile_int16"
    shutil.copytree(repository / "facile", fixed)
    config = (fixed / "config.pbtxt").read_text()
    (fixed / "config.pbtxt").write_text(
        config.replace('name: "facile"', 'name: "facile_int16"', 1).replace("TYPE_FP32", "TYPE_INT16", 1)
    )
    server = Server(repository, tmp_path / "serve.log")
    try:
        rows = np.ascontiguousarray(facile_inputs[0][:5000])
        # ap_fixed<16,9> (TRN, WRAP): floor to the LSB 2^-7, keep 16 bits, as the C++ cast does.
        bits = (np.floor(rows.astype(np.float64) * 128).astype(np.int64) & 0xFFFF).astype(np.uint16).view(np.int16)
        served = server.client.infer("facile_int16", [facile_input(bits, datatype="INT16")]).as_numpy("output")
        assert server.client.get_model_metadata("facile_int16").inputs[0].datatype == "INT16"
        assert np.array_equal(served.view(np.uint32), infer(server.client, rows).view(np.uint32))
        wrong = facile_input(rows)
        with pytest.raises(
            InferenceServerException, match="data-type is 'FP32', but model 'facile_int16' expects 'INT16'"
        ):
            server.client.infer("facile_int16", [wrong])
    finally:
        server.stop()
