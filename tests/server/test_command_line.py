"""`faast serve` takes tritonserver's command line (tritonserver 2.51, as observed by running its
binary, and the flags releases up to 2.71 added, as its src/command_line_parser.cc declares and bounds
them): SONIC's local fallback line with two model repositories, both spellings of a value, its
booleans, its way of failing on an unknown flag or a bad value, its log formats and milestone lines,
and one warning for the flags that mean nothing here. Real `faast serve` processes throughout, plus
the parser in-process where a server would add nothing."""

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from support import BIN, Server, facile_input, free_port, infer
from tritonclient.utils import InferenceServerException

from faast.tritonserver_flags import FLAGS, IGNORED, parse

# tritonserver 2.51's options, in its --help order (every "  --NAME" line of `tritonserver --help`).
TRITONSERVER_FLAGS = """
help id exit-timeout-secs log-verbose log-info log-warning log-error log-format log-file model-store
model-repository exit-on-error disable-auto-complete-config strict-readiness model-control-mode
repository-poll-secs load-model model-config-name model-load-thread-count model-load-retry-count
model-namespacing enable-peer-access allow-http http-address http-port reuse-http-port
http-header-forward-pattern http-thread-count http-restricted-api allow-grpc grpc-address grpc-port
reuse-grpc-port grpc-header-forward-pattern grpc-infer-allocation-pool-size grpc-use-ssl grpc-use-ssl-mutual
grpc-server-cert grpc-server-key grpc-root-cert grpc-infer-response-compression-level grpc-keepalive-time
grpc-keepalive-timeout grpc-keepalive-permit-without-calls grpc-http2-max-pings-without-data
grpc-http2-min-recv-ping-interval-without-data grpc-http2-max-ping-strikes grpc-max-connection-age
grpc-max-connection-age-grace grpc-restricted-protocol allow-sagemaker sagemaker-port
sagemaker-safe-port-range sagemaker-thread-count allow-vertex-ai vertex-ai-port vertex-ai-thread-count
vertex-ai-default-model allow-metrics allow-gpu-metrics allow-cpu-metrics metrics-address metrics-port
metrics-interval-ms metrics-config trace-config backend-directory backend-config repoagent-directory
cache-config cache-directory rate-limit rate-limit-resource pinned-memory-pool-byte-size
cuda-memory-pool-byte-size cuda-virtual-address-size min-supported-compute-capability
buffer-manager-thread-count host-policy model-load-gpu-limit strict-model-config response-cache-byte-size
trace-file trace-level trace-rate trace-count trace-log-frequency
""".split()
# The flags later releases added, each with the first release whose command_line_parser.cc has it, and
# the one before which tritonserver 2.71 lists it in --help.
NEWER_FLAGS = {
    "http-max-input-size": ("2.59", "http-restricted-api"),
    "grpc-infer-thread-count": ("2.57", "grpc-infer-allocation-pool-size"),
    "grpc-max-response-pool-size": ("2.56", "grpc-use-ssl"),
    "allow-client-shm": ("2.68", "strict-model-config"),
}
# tritonserver's line formats: "default" and "ISO8601" (severity, time in UTC, process id, file:line, quoted message).
AFTER_SEVERITY = r"\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ [\w.]+:\d+\] "
DEFAULT_LINE = "[IWE]" + AFTER_SEVERITY
ISO8601_LINE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [IWE] \d+ [\w.]+:\d+\] "
ROWS = np.random.default_rng(0).normal(size=(3, 15)).astype(np.float32)  # sent to see that a model serves


def _second_repository(model_repository, folder, name="facile2"):
    """A repository in `folder` holding FACILE again under another name."""
    repository = Path(folder)
    shutil.copytree(Path(model_repository) / "facile", repository / name)
    config = repository / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', f'name: "{name}"'))
    return repository


def _faast_serve(*options, timeout=60):
    """`faast serve OPTIONS` run to its end: (exit status, stdout, stderr)."""
    done = subprocess.run([BIN / "faast", "serve", *map(str, options)], capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def _lines(text, message, line=DEFAULT_LINE):
    """Log lines of `text` (in the format `line`) whose quoted message is `message` exactly."""
    return re.findall(rf"^{line}\"{re.escape(message)}\"$", text, flags=re.M)


def test_sonic_fallback_line_serves_both_repositories(model_repository, tmp_path):
    """CMSSW's SONIC starts its fallback server as `tritonserver --model-repository=A
    --model-repository=B --log-verbose=1 --log-error=1 --log-info=1`: the models of both repositories
    serve, and the log carries the lines launchers wait for, in tritonserver's format."""
    second = _second_repository(model_repository, tmp_path / "second")
    log = tmp_path / "serve.log"
    server = Server(
        model_repository, log, f"--model-repository={second}", "--log-verbose=1", "--log-error=1", "--log-info=1"
    )
    try:
        assert infer(server.client, ROWS, "facile").shape == (3, 1)
        assert infer(server.client, ROWS, "facile2").shape == (3, 1)
        np.testing.assert_array_equal(infer(server.client, ROWS, "facile"), infer(server.client, ROWS, "facile2"))
        http = httpclient.InferenceServerClient(server.http_url)
        assert infer(http, np.zeros((2, 15), np.float32), "facile2").shape == (2, 1)
        index = {row["name"]: row["state"] for row in server.client.get_model_repository_index(as_json=True)["models"]}
        assert index == {"facile": "READY", "facile2": "READY"}
    finally:
        server.stop()
    text = log.read_text()
    for message in (
        f"Started GRPCInferenceService at 127.0.0.1:{server.port}",
        f"Started HTTPService at 127.0.0.1:{server.http_port}",
        f"Started Metrics Service at 127.0.0.1:{server.metrics_port}",
        "loading: facile:1",
        "successfully loaded 'facile'",
        "loading: facile2:1",
        "successfully loaded 'facile2'",
        "successfully unloaded 'facile' version 1",
        "successfully unloaded 'facile2' version 1",
    ):
        assert len(_lines(text, message)) == 1, message
    assert all(re.match(DEFAULT_LINE, line) for line in text.splitlines())


def test_model_store_is_model_repository(model_repository, tmp_path):
    second = _second_repository(model_repository, tmp_path / "second")
    server = Server(model_repository, tmp_path / "serve.log", "--model-store", second)
    try:
        assert infer(server.client, ROWS, "facile2").shape == (3, 1)
    finally:
        server.stop()


def test_a_name_in_two_repositories_is_no_model(model_repository, tmp_path):
    """As in tritonserver: the name is listed UNAVAILABLE with Triton's reason and requests for it are
    answered as for an unknown model; the other models serve."""
    second = _second_repository(model_repository, tmp_path / "second")
    third = _second_repository(model_repository, tmp_path / "third", name="facile")
    log = tmp_path / "serve.log"
    server = Server(model_repository, log, "--model-repository", second, "--model-repository", third)
    try:
        index = server.client.get_model_repository_index(as_json=True)["models"]
        assert {
            "name": "facile",
            "state": "UNAVAILABLE",
            "reason": "model appears in two or more repositories",
        } in index
        assert not server.client.is_model_ready("facile")
        with pytest.raises(InferenceServerException) as caught:
            infer(server.client, ROWS, "facile")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        assert caught.value.message() == "Request for unknown model: 'facile' is not found"
        assert infer(server.client, ROWS, "facile2").shape == (3, 1)
        assert server.client.is_server_ready()  # as tritonserver: the name is no model, so none failed
    finally:
        server.stop()
    assert _lines(log.read_text(), "failed to poll model 'facile': not unique across all model repositories")


def test_exit_on_error(model_repository, tmp_path):
    """--exit-on-error=true: a model that cannot load at startup ends faast as it ends tritonserver."""
    third = _second_repository(model_repository, tmp_path / "third", name="facile")
    status, _, stderr = _faast_serve(
        "--model-repository", model_repository, f"--model-repository={third}", "--exit-on-error=true",
        "--grpc-port", free_port(), "--http-port", free_port(), "--metrics-port", free_port(), "--host", "127.0.0.1",
    )  # fmt: skip
    assert status == 1
    assert stderr.splitlines()[-1] == "error: creating server: Internal - failed to load all models"
    assert "Started GRPCInferenceService" not in stderr


def test_a_missing_repository_ends_faast_unless_exit_on_error_is_false(model_repository, tmp_path):
    """As tritonserver by default; with --exit-on-error=false the other repositories serve."""
    missing = tmp_path / "nowhere"
    status, _, stderr = _faast_serve(
        "--model-repository", model_repository, "--model-repository", missing, "--host", "127.0.0.1",
        "--grpc-port", free_port(), "--http-port", free_port(), "--metrics-port", free_port(),
    )  # fmt: skip
    assert status == 1
    assert stderr.splitlines()[-1] == f"error: creating server: Internal - failed to stat file {missing}"
    log = tmp_path / "serve.log"
    server = Server(model_repository, log, "--model-repository", missing, "--exit-on-error=false")
    try:
        assert infer(server.client, ROWS, "facile").shape == (3, 1)
    finally:
        server.stop()
    assert _lines(log.read_text(), f"Internal: failed to stat file {missing}")


@pytest.mark.parametrize("spelling", ["true", "True", "ON", "1", "false", "FALSE", "off", "0"])
def test_booleans_as_tritonserver_reads_them(spelling):
    """true/false, on/off and 1/0 in any case; nothing else."""
    expected = spelling.lower() in ("true", "on", "1")
    assert parse(["--allow-http", spelling]).allow_http is expected
    assert parse([f"--allow-http={spelling}"]).allow_http is expected


@pytest.mark.parametrize("spelling", ["yes", "no", "2", "t", ""])
def test_other_booleans_are_refused_as_tritonserver_refuses_them(spelling):
    status, stdout, stderr = _faast_serve(f"--allow-metrics={spelling}")
    assert status == 1 and stdout == ""
    assert stderr.startswith("Usage: faast serve [options]\n")
    assert stderr.endswith(f'Bad option: "--allow-metrics".\ninvalid value for bool option: {spelling}\n\n')


def test_both_spellings_of_a_value(model_repository, tmp_path):
    """`--flag=value` and `--flag value`, booleans included, with a real server: metrics off with one
    spelling, HTTP on with the other."""
    server = Server(model_repository, tmp_path / "serve.log", "--allow-metrics=off", "--allow-http", "1")
    try:
        assert httpclient.InferenceServerClient(server.http_url).is_server_ready()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=2)
    finally:
        server.stop()
    assert "Started Metrics Service" not in (tmp_path / "serve.log").read_text()


def test_parsing_is_tritonserver_getopt():
    options = parse(
        ["--model-repo=/a", "--model-store", "/b", "--grpc-port= 8005xyz", "--exit-timeout-secs", "2.5",
         "--log-verbose=-1", "--load-model=x", "--load-model", "y", "--trace-level=timestamps", "--"]
    )  # fmt: skip
    assert options.model_repository == ["/a", "/b"]  # a unique prefix names its flag; --model-store adds too
    assert options.grpc_port == 8005  # std::stoi: leading digits
    assert options.exit_timeout_secs == 2.5
    assert options.log_verbose == -1
    assert options.load_model == ["x", "y"]
    assert options.trace_config == ["level=timestamps"]
    assert parse(["--grpc-use-ssl=1"]).grpc_use_ssl and not parse(["--grpc-use-ssl-mutual=0"]).grpc_use_ssl
    assert parse(["--grpc-keepalive-time=1000", "--grpc-keepalive-permit-without-calls=on"]).grpc_server_options() == [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    assert parse(["--grpc-infer-response-compression-level=high"]).grpc_server_options() == [
        ("grpc.default_compression_level", 3)
    ]
    assert parse(["--strict-model-config=true"]).auto_complete is False
    assert parse(["--disable-auto-complete-config"]).auto_complete is False
    assert parse([]).auto_complete is True
    assert parse(["--host=10.0.0.1", "--http-address=10.0.0.2"]).addresses() == ("10.0.0.1", "10.0.0.2", "10.0.0.2")
    assert parse(["--http-max-input-size=8589934592xyz"]).http_max_input_size == 2**33  # std::stoll
    newer = parse(["--grpc-infer-thread-count=2", "--grpc-max-response-pool-size", "1", "--allow-client-shm=0"])
    assert newer.ignored == ["grpc-infer-thread-count", "grpc-max-response-pool-size"]
    assert newer.allow_client_shm is False and newer.grpc_server_options() == []


@pytest.mark.parametrize(
    ("arguments", "first_line", "last_line"),
    [
        (["--bogus"], "faast serve: unrecognized option '--bogus'", None),
        (["--bogus=1"], "faast serve: unrecognized option '--bogus=1'", None),
        (["--model-repository"], "faast serve: option '--model-repository' requires an argument", None),
        (
            ["--disable-auto-complete-config=1"],
            "faast serve: option '--disable-auto-complete-config' doesn't allow an argument",
            None,
        ),
        (["--log-form=x"], None, "invalid argument for --log-format"),  # a prefix; the value is checked
        (["--grpc-port", "abc"], None, "Invalid option value. Got abc"),
        (["--grpc-port=99999999999"], None, "Provided option value is out of bound. Got 99999999999"),
        (["--model-control-mode=bogus"], None, "invalid argument for --model-control-mode"),
        (["stray"], None, "Unexpected argument: stray"),
        (["-x"], "faast serve: invalid option -- 'x'", None),
        (["--http-max-input-size=0"], None, "Error: --http-max-input-size must be greater than 0."),
        (
            ["--http-max-input-size=9223372036854775808"],
            None,
            "Provided option value is out of bound. Got 9223372036854775808",
        ),
        (
            ["--grpc-infer-thread-count=129"],
            None,
            "invalid argument for --grpc_infer_thread_count. Must be in the range 2 to 128.",
        ),
        (["--grpc-max-response-pool-size=0"], None, "Error: --grpc-max-response-pool-size must be greater than 0."),
        (["--allow-client-shm=maybe"], None, "invalid value for bool option: maybe"),
    ],
)
def test_command_line_errors_as_tritonserver_reports_them(arguments, first_line, last_line):
    """Exit status 1, nothing on stdout, the message and a usage on stderr, in tritonserver's order."""
    status, stdout, stderr = _faast_serve(*arguments)
    assert status == 1 and stdout == ""
    lines = [line for line in stderr.splitlines() if line]
    if first_line:
        assert lines[0] == first_line and lines[1] == "Usage: faast serve [options]"
    if last_line:
        assert lines[0] == "Usage: faast serve [options]" and lines[-1] == last_line


def test_ambiguous_prefix():
    status, _, stderr = _faast_serve("--grpc-use=1")
    assert status == 1
    assert stderr.splitlines()[0] == (
        "faast serve: option '--grpc-use=1' is ambiguous; possibilities: '--grpc-use-ssl' '--grpc-use-ssl-mutual'"
    )


def test_no_model_repository():
    status, _, stderr = _faast_serve("--grpc-port=8001")
    assert (status, stderr) == (1, "error: creating server: Invalid argument - --model-repository must be specified\n")


def test_help_lists_every_flag():
    status, stdout, _ = _faast_serve("--help")
    assert status == 0
    assert re.findall(r"^  --([a-z0-9-]+)", stdout, flags=re.M) == ["help"] + [flag.name for flag in FLAGS]


def test_the_table_is_tritonservers_whole_command_line():
    """tritonserver 2.71's flags in its order (2.51's, and the newer ones where 2.71 lists them), then
    faast's own; each newer flag names the release that added it."""
    newest = list(TRITONSERVER_FLAGS[1:])
    for name, (_, before) in NEWER_FLAGS.items():
        newest.insert(newest.index(before), name)
    assert [flag.name for flag in FLAGS if flag.name not in ("host", "workers")] == newest
    assert [flag.name for flag in FLAGS][-2:] == ["host", "workers"]
    assert {flag.name: flag.since for flag in FLAGS if flag.since} == {
        name: since for name, (since, _) in NEWER_FLAGS.items()
    }


def test_meaningless_flags_make_one_warning_line(model_repository, tmp_path):
    log = tmp_path / "serve.log"
    server = Server(
        model_repository,
        log,
        "--pinned-memory-pool-byte-size=268435456",
        "--backend-directory",
        "/opt/tritonserver/backends",
        "--backend-directory=/elsewhere",
        "--cuda-memory-pool-byte-size",
        "0:67108864",
    )
    server.stop()
    text = log.read_text()
    warnings = [line for line in text.splitlines() if "--pinned-memory-pool-byte-size" in line]
    assert len(warnings) == 1
    assert re.match(rf"^W{AFTER_SEVERITY}", warnings[0])
    assert warnings[0].endswith(
        ': --pinned-memory-pool-byte-size, --backend-directory, --cuda-memory-pool-byte-size"'
    )  # each named once, in the order given
    assert text.count("--backend-directory") == 1
    ignored = {flag.name for flag in FLAGS if flag.effect == IGNORED}
    assert {"pinned-memory-pool-byte-size", "backend-config", "rate-limit"} <= ignored


def test_no_warning_without_meaningless_flags(server):
    assert not re.search(rf"^W{AFTER_SEVERITY}", server.log_path.read_text(), flags=re.M)


def test_log_file_and_iso8601(model_repository, tmp_path):
    log_file = tmp_path / "triton.log"
    log_file.write_text("kept\n")  # appended to, as tritonserver does
    console = tmp_path / "serve.log"
    server = Server(model_repository, console, "--log-format=ISO8601", "--log-file", log_file)
    try:
        assert infer(server.client, ROWS, "facile").shape == (3, 1)
    finally:
        server.stop()
    text = log_file.read_text()
    assert text.startswith("kept\n")
    assert len(_lines(text, f"Started GRPCInferenceService at 127.0.0.1:{server.port}", ISO8601_LINE)) == 1
    assert len(_lines(text, "successfully loaded 'facile'", ISO8601_LINE)) == 1
    assert all(re.match(ISO8601_LINE, line) for line in text.splitlines()[1:])
    assert "Started GRPCInferenceService" not in console.read_text()


def test_log_levels_switch_independently(model_repository, tmp_path):
    """tritonserver's --log-info, --log-warning and --log-error are independent switches."""
    quiet_info = tmp_path / "quiet_info.log"
    Server(model_repository, quiet_info, "--log-info=false", "--rate-limit=off").stop()
    text = quiet_info.read_text()
    assert "Started GRPCInferenceService" not in text and "--rate-limit" in text
    quiet_warning = tmp_path / "quiet_warning.log"
    Server(model_repository, quiet_warning, "--log-warning=false", "--rate-limit=off").stop()
    text = quiet_warning.read_text()
    assert "Started GRPCInferenceService" in text and "--rate-limit" not in text


def test_addresses(model_repository, tmp_path):
    """--grpc-address, --http-address and --metrics-address each bind their service (faast's --host
    is the default of all three)."""
    log = tmp_path / "serve.log"
    server = Server(model_repository, log, "--metrics-address=127.0.0.2", "--http-address", "127.0.0.3")
    try:
        with urllib.request.urlopen(f"http://127.0.0.2:{server.metrics_port}/metrics", timeout=5) as reply:
            assert b"nv_inference_count" in reply.read()
        with urllib.request.urlopen(f"http://127.0.0.3:{server.http_port}/v2/health/live", timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.stop()
    text = log.read_text()
    assert _lines(text, f"Started Metrics Service at 127.0.0.2:{server.metrics_port}")
    assert _lines(text, f"Started HTTPService at 127.0.0.3:{server.http_port}")
    assert _lines(text, f"Started GRPCInferenceService at 127.0.0.1:{server.port}")


def test_a_taken_port_ends_faast(model_repository, tmp_path):
    """As tritonserver: a service that cannot start is logged and faast exits with status 1."""
    blocker = Server(model_repository, tmp_path / "first.log")
    try:
        status, _, stderr = _faast_serve(
            "--model-repository", model_repository, "--http-port", blocker.http_port, "--host", "127.0.0.1",
            "--grpc-port", free_port(), "--metrics-port", free_port(),
        )  # fmt: skip
    finally:
        blocker.stop()
    assert status == 1
    assert re.search(rf"^E{AFTER_SEVERITY}\"failed to start HTTP service: ", stderr, flags=re.M)


def test_strict_model_config_uses_a_load_config_as_given(model_repository, tmp_path):
    """Without auto-completion a load request's 'config' that declares no tensors is not completed
    from config.pbtxt, so it cannot fit the kernel."""
    server = Server(
        model_repository, tmp_path / "serve.log", "--model-control-mode=explicit", "--load-model=facile",
        "--strict-model-config", "true",
    )  # fmt: skip
    try:
        with pytest.raises(InferenceServerException, match=r"must declare 1 input\(s\), as kernel .facile. has, not 0"):
            server.client.load_model("facile", config='{"max_batch_size": 8}')
        assert infer(server.client, ROWS, "facile").shape == (3, 1)  # the loaded one keeps serving
    finally:
        server.stop()


def test_load_threads_and_retries_accepted(model_repository, tmp_path):
    second = _second_repository(model_repository, tmp_path / "second")
    server = Server(
        model_repository, tmp_path / "serve.log", "--model-repository", second, "--model-load-thread-count=1",
        "--model-load-retry-count", "2", "--metrics-interval-ms=500", "--exit-timeout-secs=5",
    )  # fmt: skip
    try:
        assert infer(server.client, ROWS, "facile2").shape == (3, 1)
    finally:
        server.stop()


def test_server_id(model_repository, tmp_path):
    server = Server(model_repository, tmp_path / "serve.log", "--id=fallback")
    try:
        assert server.client.get_server_metadata().name == "fallback"
    finally:
        server.stop()


def test_grpc_options(model_repository, tmp_path):
    server = Server(
        model_repository, tmp_path / "serve.log", "--grpc-keepalive-time=10000", "--grpc-keepalive-timeout", "5000",
        "--grpc-keepalive-permit-without-calls=1", "--grpc-http2-max-pings-without-data=0",
        "--grpc-infer-response-compression-level=high", "--grpc-max-connection-age=600000",
    )  # fmt: skip
    try:
        assert infer(server.client, ROWS, "facile").shape == (3, 1)
    finally:
        server.stop()


def test_the_newest_tritonserver_command_line_serves(model_repository, tmp_path):
    """The issue's line for tritonserver 26.04+: every new flag is taken; the two that cannot mean
    anything here are named in the warning line."""
    log = tmp_path / "serve.log"
    server = Server(
        model_repository, log, "--allow-client-shm=true", "--grpc-infer-thread-count", "4",
        "--grpc-max-response-pool-size=16", "--http-max-input-size=1000000",
    )  # fmt: skip
    try:
        assert infer(server.client, ROWS, "facile").shape == (3, 1)
        http_client = httpclient.InferenceServerClient(server.http_url)
        assert infer(http_client, ROWS, "facile").shape == (3, 1)
        http_client.close()
    finally:
        server.stop()
    warnings = [line for line in log.read_text().splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and warnings[0].endswith(': --grpc-infer-thread-count, --grpc-max-response-pool-size"')


def test_restricted_protocol_and_api(model_repository, tmp_path):
    """--grpc-restricted-protocol and --http-restricted-api reach the transports."""
    server = Server(
        model_repository, tmp_path / "serve.log", "--grpc-restricted-protocol=inference:infer-key=secret",
        "--http-restricted-api", "inference:infer-key=secret",
    )  # fmt: skip
    try:
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            infer(server.client, ROWS, "facile")
        one = np.zeros((1, 15), np.float32)
        assert infer(server.client, one, headers={"triton-grpc-protocol-infer-key": "secret"}).shape == (1, 1)
        http = httpclient.InferenceServerClient(server.http_url)
        tensor = facile_input(one, httpclient)
        with pytest.raises(InferenceServerException, match="This API is restricted"):
            http.infer("facile", [tensor])
        assert http.infer("facile", [tensor], headers={"infer-key": "secret"}).as_numpy("output").shape == (1, 1)
    finally:
        server.stop()


def test_bad_restriction_is_a_bad_option(model_repository):
    status, _, stderr = _faast_serve("--model-repository", model_repository, "--grpc-restricted-protocol=foo")
    assert status == 1
    assert stderr.endswith(
        'Bad option: "--grpc-restricted-protocol".\n'
        "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got foo\n\n"
    )


def test_metrics_config(model_repository, tmp_path):
    server = Server(model_repository, tmp_path / "serve.log", "--metrics-config=summary_latencies=true")
    try:
        infer(server.client, ROWS, "facile")
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
            if "nv_inference_request_summary_us" in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "nv_inference_request_summary_us" in text
    finally:
        server.stop()
    status, _, stderr = _faast_serve("--model-repository", model_repository, "--metrics-config=nonsense")
    assert status == 1 and 'Bad option: "--metrics-config".' in stderr
