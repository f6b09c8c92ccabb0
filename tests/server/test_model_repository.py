"""The model repository as Triton runs it, through real faast processes: version_policy with several
versions served side by side, model_warmup, instance_group mapped onto compute units, LoadModel's
"file:" contents, and the checksum repository agent that `faast build` configures."""

import json
import os
import re
import shutil
import stat
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from support import Server, bits, infer
from tritonclient.utils import InferenceServerException


def _copy(model_repository, tmp_path, name="facile"):
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / name)
    return repository


def _add_version_2(model):
    """Version 2: version 1 with the output layer's biases moved, so its answers differ."""
    shutil.copytree(model / "1", model / "2")
    with np.load(model / "1" / "weights.npz") as weights:
        arrays = dict(weights)
    bias = [key for key in arrays if key.startswith("b") and arrays[key].size == 1]
    assert bias, sorted(arrays)
    arrays[bias[-1]] = arrays[bias[-1]] + (1 << 8)
    np.savez(model / "2" / "weights.npz", **arrays)


def _set_config(model, text):
    config = model / "config.pbtxt"
    config.write_text(config.read_text() + "\n" + text)


def _metrics(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_a_built_model_has_the_umask_s_mode_so_a_server_of_another_uid_reads_it(model_repository):
    mask = os.umask(0o022)  # what the build ran under (the test process's own, as a shell sets it)
    os.umask(mask)
    for folder in (model_repository / "facile", model_repository / "facile" / "1"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder


def test_version_policy_all_serves_both_versions_side_by_side(model_repository, facile_inputs, tmp_path):
    repository = _copy(model_repository, tmp_path)
    _add_version_2(repository / "facile")
    _set_config(repository / "facile", "version_policy { all { } }")
    server = Server(repository, tmp_path / "serve.log")
    try:
        rows = facile_inputs[0][:64]
        one, two, latest = (
            infer(server.client, rows, model_version="1"),
            infer(server.client, rows, model_version="2"),
            infer(server.client, rows),
        )
        assert not np.array_equal(bits(one), bits(two))
        assert np.array_equal(bits(latest), bits(two))  # no version: the newest
        assert server.client.is_model_ready("facile", "1") and server.client.is_model_ready("facile", "2")
        assert server.client.get_model_metadata("facile").versions == ["1", "2"]
        index = server.client.get_model_repository_index().models
        assert [(m.name, m.version, m.state) for m in index] == [("facile", "1", "READY"), ("facile", "2", "READY")]
        stats = {s.version: s.inference_count for s in server.client.get_inference_statistics("facile").model_stats}
        assert stats == {"1": 64, "2": 128}
        with pytest.raises(InferenceServerException, match="'facile' version 3 is not found"):
            infer(server.client, rows, model_version="3")
        text = _metrics(server)
        for version, count in (("1", 64), ("2", 128)):
            assert f'nv_inference_count{{model="facile",version="{version}"}} {count}' in text
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("", ["2"]),
        ("version_policy { latest { num_versions: 2 } }", ["1", "2"]),
        ("version_policy { specific { versions: 1 } }", ["1"]),
    ],
)
def test_version_policies_choose_the_versions(model_repository, tmp_path, policy, served):
    repository = _copy(model_repository, tmp_path)
    _add_version_2(repository / "facile")
    _set_config(repository / "facile", policy)
    server = Server(repository, tmp_path / "serve.log")
    try:
        assert [m.version for m in server.client.get_model_repository_index().models] == served
        for version in ("1", "2"):
            assert server.client.is_model_ready("facile", version) == (version in served)
    finally:
        server.stop()


def test_warmup_runs_before_the_model_is_ready(model_repository, facile_inputs, tmp_path):
    repository = _copy(model_repository, tmp_path)
    model = repository / "facile"
    (model / "warmup").mkdir()
    facile_inputs[0][:8].astype("<f4").tofile(model / "warmup" / "channels")
    _set_config(
        model,
        """model_warmup [
  { name: "zeros" batch_size: 4 count: 3
    inputs { key: "input" value { data_type: TYPE_FP32 dims: 15 zero_data: true } } },
  { name: "file" batch_size: 8
    inputs { key: "input" value { data_type: TYPE_FP32 dims: 15 input_data_file: "channels" } } }
]""",
    )
    server = Server(repository, tmp_path / "serve.log")
    try:
        log = (tmp_path / "serve.log").read_text()
        assert log.index("warmup sample 'zeros' ran 3 time(s)") < log.index("successfully loaded 'facile'")
        assert "warmup sample 'file' ran 1 time(s)" in log
        text = _metrics(server)
        assert re.search(r'^faast_kernel_executions\{model="facile",version="1"\} 4(\.0)?$', text, re.M)
        stats = server.client.get_inference_statistics("facile").model_stats[0]
        assert stats.inference_count == 0  # warmup is not traffic
    finally:
        server.stop()


def test_a_warmup_sample_that_does_not_fit_fails_the_load(model_repository, tmp_path):
    repository = _copy(model_repository, tmp_path)
    _set_config(
        repository / "facile",
        'model_warmup { name: "wrong" batch_size: 1\n'
        'inputs { key: "input" value { data_type: TYPE_FP32 dims: 14 zero_data: true } } }',
    )
    server = Server(repository, tmp_path / "serve.log", expect_ready=False)
    try:
        (row,) = server.client.get_model_repository_index().models
        assert row.state == "UNAVAILABLE"
        assert "warmup sample 'wrong' of 'facile': input 'input' must be FP32 [15], not FP32 [14]" in row.reason
    finally:
        server.stop()


@pytest.mark.parametrize("count", [1, 3])
def test_instance_group_count_is_the_number_of_compute_units(model_repository, facile_inputs, tmp_path, count):
    repository = _copy(model_repository, tmp_path)
    _set_config(repository / "facile", f"instance_group {{ kind: KIND_CPU count: {count} }}")
    server = Server(repository, tmp_path / "serve.log")
    try:
        assert infer(server.client, facile_inputs[0][:10]).shape == (10, 1)
        assert f'compute_units="{count}"' in _metrics(server)
    finally:
        server.stop()


def test_kind_gpu_fails_the_load_with_the_reason(model_repository, tmp_path):
    repository = _copy(model_repository, tmp_path)
    _set_config(repository / "facile", "instance_group { kind: KIND_GPU count: 1 }")
    server = Server(repository, tmp_path / "serve.log", expect_ready=False)
    try:
        (row,) = server.client.get_model_repository_index().models
        assert "KIND_GPU" in row.reason
    finally:
        server.stop()


def test_a_changed_artifact_fails_its_model_only(model_repository, facile_inputs, tmp_path):
    """faast build pins every served file's MD5 in the checksum agent; one byte changed after the
    build fails that model's load with the checksum agent's reason, the other model serves."""
    repository = _copy(model_repository, tmp_path)
    shutil.copytree(repository / "facile", repository / "facile2")
    config = repository / "facile2" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', 'name: "facile2"'))
    assert 'key: "MD5:1/weights.npz"' in config.read_text()
    kernel = repository / "facile2" / "1" / "kernel.json"
    kernel.write_text(kernel.read_text() + " ")
    server = Server(repository, tmp_path / "serve.log", expect_ready=False)
    try:
        index = {m.name: m for m in server.client.get_model_repository_index().models}
        assert index["facile"].state == "READY"
        assert index["facile2"].state == "UNAVAILABLE"
        assert re.fullmatch(
            r"Mismatched MD5 hash for file 1/kernel.json, expect: [0-9a-f]{32}, got: [0-9a-f]{32}",
            index["facile2"].reason,
        )
        assert infer(server.client, facile_inputs[0][:4]).shape == (4, 1)
        assert not server.client.is_server_ready()  # as Triton: a model that failed to load
    finally:
        server.stop()


def _version_files(model_repository):
    version = model_repository / "facile" / "1"
    return {f"file:1/{name}": (version / name).read_bytes() for name in ("kernel.json", "weights.npz")}


def test_load_model_with_files_serves_what_was_sent(model_repository, facile_inputs, tmp_path):
    """LoadModel with a config and file: contents, over gRPC and HTTP: the model is served from the
    sent files. Code is refused, so a client can never make the server run what it sent."""
    repository = _copy(model_repository, tmp_path)
    server = Server(repository, tmp_path / "serve.log", "--model-control-mode", "explicit", "--load-model", "facile")
    rows = facile_inputs[0][:32]
    try:
        expected = infer(server.client, rows)
        config = server.client.get_model_config("facile", as_json=True)["config"]
        config.pop("model_repository_agents", None)
        config["max_batch_size"] = 32
        config["parameters"] = {"device": {"string_value": "emulator"}}
        server.client.load_model("facile", config=json.dumps(config), files=_version_files(model_repository))
        assert server.client.get_model_config("facile").config.max_batch_size == 32
        assert np.array_equal(bits(infer(server.client, rows)), bits(expected))

        http = httpclient.InferenceServerClient(server.http_url)
        try:
            config["max_batch_size"] = 16
            http.load_model("facile", config=json.dumps(config), files=_version_files(model_repository))
            assert http.get_model_config("facile")["max_batch_size"] == 16
        finally:
            http.close()
        assert np.array_equal(bits(infer(server.client, rows[:16])), bits(expected[:16]))

        with pytest.raises(InferenceServerException) as caught:
            server.client.load_model("facile", config=json.dumps(config), files={"file:1/csim.so": b"\x7fELF"})
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        with pytest.raises(InferenceServerException, match="failed to poll from model repository"):
            server.client.load_model("facile", files=_version_files(model_repository))  # no config: as Triton
        with pytest.raises(InferenceServerException, match="inside a version folder"):
            server.client.load_model("facile", config=json.dumps(config), files={"file:../x/kernel.json": b"{}"})
        assert server.client.get_model_config("facile").config.max_batch_size == 16  # still the last good load
    finally:
        server.stop()


def test_polling_serves_a_new_version_folder(model_repository, facile_inputs, tmp_path):
    """--model-control-mode=poll sees a version folder moved in, as Triton does, and serves it in
    place of the older one (the default version_policy: the newest)."""
    repository = _copy(model_repository, tmp_path)
    server = Server(repository, tmp_path / "serve.log", "--model-control-mode", "poll", "--repository-poll-secs", "0.3")
    try:
        rows = facile_inputs[0][:16]
        one = infer(server.client, rows)
        staging = tmp_path / "staging"
        staging.mkdir()
        shutil.copytree(repository / "facile", staging / "facile")
        _add_version_2(staging / "facile")
        (staging / "facile" / "2").rename(repository / "facile" / "2")
        deadline = time.monotonic() + 20
        while not server.client.is_model_ready("facile", "2"):
            assert time.monotonic() < deadline, "version 2 was never loaded"
            time.sleep(0.2)
        assert not server.client.is_model_ready("facile", "1")
        assert not np.array_equal(bits(infer(server.client, rows)), bits(one))
    finally:
        server.stop()
