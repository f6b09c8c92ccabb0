"""tritonserver's command line for `faast serve`, and tritonserver's log line formats.

FLAGS is tritonserver's whole option list (`tritonserver --help`) in its order: every flag of 2.51
and the ones later releases added, up to 2.71 (each such flag's `since` names the release that
added it; a tritonserver older than that refuses it as unrecognized). Each says what faast does with it:

  implemented  it means here what it means to tritonserver (differences in its note)
  accepted     taken without a warning: what it asks for already holds here (how: its note)
  ignored      it cannot mean anything here (GPUs, other backends, caches, ...): taken, and every
               one given is named in one warning line once logging is set up

plus faast's own `--host` and `--workers`. Parsing is tritonserver's (getopt_long): `--flag=value` or
`--flag value`, a unique prefix of a name stands for it, booleans are true/false, on/off or 1/0 in any
case, integers read like std::stoi (leading digits; out of int32 is an error; std::stoll and int64 for
--http-max-input-size), and the flags tritonserver bounds are bounded with its message. An unknown
flag, a missing or bad value, or a stray argument prints tritonserver's message and a usage on stderr
and exits with status 1, as tritonserver does.

Log lines (`TritonLogFormatter`) are tritonserver's, so launchers that wait for its milestone lines
find them: `I1202 16:06:26.840167 17825 grpc_server.py:120] "Started GRPCInferenceService at
0.0.0.0:8001"` (--log-format default: severity, MMDD hh:mm:ss.uuuuuu in UTC, process id,
file:line, the message quoted), `2026-12-02T16:06:36Z I 17825 ...` with --log-format ISO8601.
"""

import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

IMPLEMENTED, ACCEPTED, IGNORED = "implemented", "accepted", "ignored"
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
HTTP_DEFAULT_MAX_INPUT_SIZE = 1 << 26  # tritonserver's default --http-max-input-size (64 MB)
FLOAT_MAX = 3.4028234663852886e38  # std::stof's range


@dataclass(frozen=True)
class Flag:
    name: str  # without the leading --
    kind: str | None  # "boolean", "integer", "int64", "float", "string"; None: the flag takes no value
    effect: str  # IMPLEMENTED, ACCEPTED or IGNORED
    note: str  # what faast does with it
    dest: str | None = None  # the ServeOptions field it sets (default: its name with _ for -)
    repeat: bool = False  # every use adds to dest's list
    choices: tuple[str, ...] = ()
    template: str = "{}"  # how the value is stored (the deprecated --trace-* flags become --trace-config settings)
    grpc_option: str = ""  # the gRPC server option (channel argument) it sets
    bounds: tuple[int, int] | None = None  # the values tritonserver accepts, else `out_of_bounds` (with the text)
    out_of_bounds: str = ""
    since: str = ""  # the tritonserver release that added it (blank: 2.51 has it)


_NO_GPU = "faast runs FPGA kernels (or their emulation); there is no GPU to manage"
FLAGS: tuple[Flag, ...] = (
    # Server
    Flag("id", "string", IMPLEMENTED, "the server's name in ServerMetadata (default faast)"),
    Flag(
        "exit-timeout-secs",
        "float",
        IMPLEMENTED,
        "on SIGTERM, how long in-flight requests may take to finish (default 30; fractions allowed)",
    ),
    # Logging
    Flag("log-verbose", "integer", IMPLEMENTED, "verbose (debug) lines when >= 1"),
    Flag("log-info", "boolean", IMPLEMENTED, "info lines on or off"),
    Flag("log-warning", "boolean", IMPLEMENTED, "warning lines on or off"),
    Flag("log-error", "boolean", IMPLEMENTED, "error lines on or off"),
    Flag(
        "log-format",
        "string",
        IMPLEMENTED,
        'tritonserver\'s line format: "default" or "ISO8601"',
        choices=("default", "ISO8601"),
    ),
    Flag("log-file", "string", IMPLEMENTED, "append the log to this file instead of stderr"),
    # Model Repository
    Flag("model-store", "string", IMPLEMENTED, "same as --model-repository", dest="model_repository", repeat=True),
    Flag(
        "model-repository",
        "string",
        IMPLEMENTED,
        "a model repository (repeatable: the models of all are served; a name in two repositories is "
        "unavailable, as in tritonserver)",
        repeat=True,
    ),
    Flag(
        "exit-on-error",
        "boolean",
        IMPLEMENTED,
        "true: exit (status 1) if a model fails to load at startup; false: serve whatever loads, even without "
        "a repository; by default faast exits only if a repository is missing (tritonserver's default is true)",
    ),
    Flag(
        "disable-auto-complete-config",
        None,
        IMPLEMENTED,
        "a load request's 'config' parameter is used as given, not completed from config.pbtxt "
        "(faast always needs a complete config.pbtxt; faast build writes one)",
    ),
    Flag("strict-readiness", "boolean", IMPLEMENTED, "ServerReady only while every model is ready (default true)"),
    Flag(
        "model-control-mode",
        "string",
        IMPLEMENTED,
        '"none", "poll" or "explicit" model control (default none)',
        choices=("none", "poll", "explicit"),
    ),
    Flag("repository-poll-secs", "float", IMPLEMENTED, "poll interval with --model-control-mode poll (default 15)"),
    Flag(
        "load-model",
        "string",
        IMPLEMENTED,
        "with explicit control: a model to load at startup (repeatable; * for all)",
        repeat=True,
    ),
    Flag("model-config-name", "string", IGNORED, "faast reads config.pbtxt only"),
    Flag("model-load-thread-count", "integer", IMPLEMENTED, "how many models load at once (default 4)"),
    Flag("model-load-retry-count", "integer", IMPLEMENTED, "how many times a failed load is retried (default 0)"),
    Flag("model-namespacing", "boolean", IGNORED, "faast has no model namespaces"),
    Flag("enable-peer-access", "boolean", IGNORED, _NO_GPU),
    # HTTP
    Flag("allow-http", "boolean", IMPLEMENTED, "serve HTTP/REST (default true)"),
    Flag("http-address", "string", IMPLEMENTED, "HTTP address (default --host)"),
    Flag("http-port", "integer", IMPLEMENTED, "HTTP port (default 8000)"),
    Flag("reuse-http-port", "boolean", IMPLEMENTED, "let other processes bind the HTTP port too (SO_REUSEPORT)"),
    Flag("http-header-forward-pattern", "string", IGNORED, "faast forwards no headers as request parameters"),
    Flag("http-thread-count", "integer", IGNORED, "faast serves HTTP from its event loop, without a thread pool"),
    Flag(
        "http-max-input-size",
        "int64",
        IMPLEMENTED,
        "the most bytes an HTTP request's JSON (and a JSON input's data) may hold, and a gzip/deflate "
        "body may decode to (default 67108864, 64 MB); larger ones are refused with tritonserver's 400",
        bounds=(1, INT64[1]),
        out_of_bounds="Error: --http-max-input-size must be greater than 0.",
        since="2.59",
    ),
    Flag(
        "http-restricted-api",
        "string",
        IMPLEMENTED,
        "APIS:KEY=VALUE: these HTTP APIs need header KEY with VALUE (repeatable)",
        repeat=True,
    ),
    # GRPC
    Flag("allow-grpc", "boolean", IMPLEMENTED, "serve gRPC (default true)"),
    Flag("grpc-address", "string", IMPLEMENTED, "gRPC address (default --host)"),
    Flag("grpc-port", "integer", IMPLEMENTED, "gRPC port (default 8001)"),
    Flag(
        "reuse-grpc-port",
        "boolean",
        IMPLEMENTED,
        "let other servers listen on the gRPC port",
        grpc_option="grpc.so_reuseport",
    ),
    Flag("grpc-header-forward-pattern", "string", IGNORED, "faast forwards no headers as request parameters"),
    Flag(
        "grpc-infer-thread-count",
        "integer",
        IGNORED,
        "tritonserver's threads that run gRPC inference handlers (2 to 128); faast handles gRPC calls on its "
        "event loop (grpc.aio), which no server option spreads over threads: more cores serve with --workers",
        bounds=(2, 128),
        out_of_bounds="invalid argument for --grpc_infer_thread_count. Must be in the range 2 to 128.",
        since="2.57",
    ),
    Flag("grpc-infer-allocation-pool-size", "integer", IGNORED, "faast keeps no pool of request objects"),
    Flag(
        "grpc-max-response-pool-size",
        "integer",
        IGNORED,
        "how many responses of one request may wait to be written: only a decoupled model's request has "
        "more than one, and faast's models are not decoupled (every request has exactly one response)",
        bounds=(1, INT32[1]),
        out_of_bounds="Error: --grpc-max-response-pool-size must be greater than 0.",
        since="2.56",
    ),
    Flag("grpc-use-ssl", "boolean", IMPLEMENTED, "gRPC over TLS with --grpc-server-cert and --grpc-server-key"),
    Flag(
        "grpc-use-ssl-mutual",
        "boolean",
        IMPLEMENTED,
        "gRPC over mutual TLS (clients verified against --grpc-root-cert)",
    ),
    Flag("grpc-server-cert", "string", IMPLEMENTED, "PEM server certificate file"),
    Flag("grpc-server-key", "string", IMPLEMENTED, "PEM server key file"),
    Flag("grpc-root-cert", "string", IMPLEMENTED, "PEM root certificate file (mutual TLS)"),
    Flag(
        "grpc-infer-response-compression-level",
        "string",
        IMPLEMENTED,
        '"none", "low", "medium" or "high": gRPC compression of responses (all of them, not only inference)',
        choices=("none", "low", "medium", "high"),
    ),
    Flag(
        "grpc-keepalive-time",
        "integer",
        IMPLEMENTED,
        "ms between keepalive pings",
        grpc_option="grpc.keepalive_time_ms",
    ),
    Flag(
        "grpc-keepalive-timeout",
        "integer",
        IMPLEMENTED,
        "ms to wait for a keepalive acknowledgement",
        grpc_option="grpc.keepalive_timeout_ms",
    ),
    Flag(
        "grpc-keepalive-permit-without-calls",
        "boolean",
        IMPLEMENTED,
        "keepalive pings without calls in flight",
        grpc_option="grpc.keepalive_permit_without_calls",
    ),
    Flag(
        "grpc-http2-max-pings-without-data",
        "integer",
        IMPLEMENTED,
        "pings sent without data",
        grpc_option="grpc.http2.max_pings_without_data",
    ),
    Flag(
        "grpc-http2-min-recv-ping-interval-without-data",
        "integer",
        IMPLEMENTED,
        "ms expected between a client's pings without data",
        grpc_option="grpc.http2.min_ping_interval_without_data_ms",
    ),
    Flag(
        "grpc-http2-max-ping-strikes",
        "integer",
        IMPLEMENTED,
        "bad pings tolerated before GOAWAY",
        grpc_option="grpc.http2.max_ping_strikes",
    ),
    Flag(
        "grpc-max-connection-age",
        "integer",
        IMPLEMENTED,
        "ms a channel may live",
        grpc_option="grpc.max_connection_age_ms",
    ),
    Flag(
        "grpc-max-connection-age-grace",
        "integer",
        IMPLEMENTED,
        "ms of grace after a channel's max age",
        grpc_option="grpc.max_connection_age_grace_ms",
    ),
    Flag(
        "grpc-restricted-protocol",
        "string",
        IMPLEMENTED,
        "PROTOCOLS:KEY=VALUE: these gRPC protocols need header KEY with VALUE (repeatable)",
        repeat=True,
    ),
    # Sagemaker, Vertex
    Flag("allow-sagemaker", "boolean", IGNORED, "faast serves no SageMaker API"),
    Flag("sagemaker-port", "integer", IGNORED, "faast serves no SageMaker API"),
    Flag("sagemaker-safe-port-range", "string", IGNORED, "faast serves no SageMaker API"),
    Flag("sagemaker-thread-count", "integer", IGNORED, "faast serves no SageMaker API"),
    Flag("allow-vertex-ai", "boolean", IGNORED, "faast serves no Vertex AI API"),
    Flag("vertex-ai-port", "integer", IGNORED, "faast serves no Vertex AI API"),
    Flag("vertex-ai-thread-count", "integer", IGNORED, "faast serves no Vertex AI API"),
    Flag("vertex-ai-default-model", "string", IGNORED, "faast serves no Vertex AI API"),
    # Metrics
    Flag("allow-metrics", "boolean", IMPLEMENTED, "serve /metrics (default true)"),
    Flag("allow-gpu-metrics", "boolean", IGNORED, _NO_GPU),
    Flag("allow-cpu-metrics", "boolean", IMPLEMENTED, "CPU utilization and memory gauges on /metrics (default true)"),
    Flag("metrics-address", "string", IMPLEMENTED, "metrics address (default --http-address)"),
    Flag("metrics-port", "integer", IMPLEMENTED, "metrics port (default 8002)"),
    Flag(
        "metrics-interval-ms",
        "float",
        IMPLEMENTED,
        "how often the CPU gauges are refreshed (default 2000); the models' metrics are read when scraped",
    ),
    Flag("metrics-config", "string", IMPLEMENTED, "SETTING=VALUE metrics setting (repeatable)", repeat=True),
    # Tracing
    Flag(
        "trace-config",
        "string",
        IMPLEMENTED,
        "[triton,]KEY=VALUE request tracing: file=PATH, level=TIMESTAMPS, rate, count, log-frequency (repeatable)",
        repeat=True,
    ),
    # Backend, repository agents, response cache, rate limiter
    Flag("backend-directory", "string", IGNORED, "faast has one backend, its own"),
    Flag("backend-config", "string", IGNORED, "faast has one backend, its own"),
    Flag("repoagent-directory", "string", IGNORED, "faast has no repository agents"),
    Flag("cache-config", "string", IGNORED, "faast has no response cache"),
    Flag("cache-directory", "string", IGNORED, "faast has no response cache"),
    Flag("rate-limit", "string", IGNORED, "faast has no rate limiter", choices=("execution_count", "off")),
    Flag("rate-limit-resource", "string", IGNORED, "faast has no rate limiter"),
    # Memory/Device Management
    Flag("pinned-memory-pool-byte-size", "integer", IGNORED, _NO_GPU),
    Flag("cuda-memory-pool-byte-size", "string", IGNORED, _NO_GPU),
    Flag("cuda-virtual-address-size", "string", IGNORED, _NO_GPU),
    Flag("min-supported-compute-capability", "float", IGNORED, _NO_GPU),
    Flag("buffer-manager-thread-count", "integer", IGNORED, "faast copies tensors in its worker threads"),
    Flag("host-policy", "string", IGNORED, "faast sets no NUMA or CPU-core policies"),
    Flag("model-load-gpu-limit", "string", IGNORED, _NO_GPU),
    # Shared Memory
    Flag(
        "allow-client-shm",
        "boolean",
        IMPLEMENTED,
        "clients may register and unregister shared memory regions (default true, as tritonserver before "
        "2.68 always allows; 2.68+ defaults to false); false refuses those calls as tritonserver 2.68+ does",
        since="2.68",
    ),
    # DEPRECATED
    Flag("strict-model-config", "boolean", IMPLEMENTED, "true: as --disable-auto-complete-config"),
    Flag("response-cache-byte-size", "integer", IGNORED, "faast has no response cache"),
    Flag(
        "trace-file",
        "string",
        IMPLEMENTED,
        "as --trace-config file=",
        dest="trace_config",
        repeat=True,
        template="file={}",
    ),
    Flag(
        "trace-level",
        "string",
        IMPLEMENTED,
        "as --trace-config level=",
        dest="trace_config",
        repeat=True,
        template="level={}",
    ),
    Flag(
        "trace-rate",
        "string",
        IMPLEMENTED,
        "as --trace-config rate=",
        dest="trace_config",
        repeat=True,
        template="rate={}",
    ),
    Flag(
        "trace-count",
        "string",
        IMPLEMENTED,
        "as --trace-config count=",
        dest="trace_config",
        repeat=True,
        template="count={}",
    ),
    Flag(
        "trace-log-frequency",
        "string",
        IMPLEMENTED,
        "as --trace-config log-frequency=",
        dest="trace_config",
        repeat=True,
        template="log-frequency={}",
    ),
    # faast's own
    Flag("host", "string", IMPLEMENTED, "faast's: the default address of all three services (default 0.0.0.0)"),
    Flag(
        "workers",
        "integer",
        IMPLEMENTED,
        "faast's: server processes sharing the ports, each with its share of the cores (default 1); "
        "see ARCHITECTURE.md",
        bounds=(1, INT32[1]),
        out_of_bounds="--workers must be at least 1. Got {}",
    ),
)
HELP = Flag("help", None, IMPLEMENTED, "print this usage")
BY_NAME = {flag.name: flag for flag in (HELP, *FLAGS)}
GRPC_COMPRESSION_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}  # grpc_compression_level


@dataclass
class ServeOptions:
    """`faast serve`'s settings, tritonserver's defaults unless a flag's note says otherwise."""

    model_repository: list[str] = field(default_factory=list)
    id: str | None = None
    exit_timeout_secs: float = 30.0
    log_verbose: int = 0
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_format: str = "default"
    log_file: str = ""
    exit_on_error: bool | None = None  # None: exit only if a repository is missing
    disable_auto_complete_config: bool = False
    strict_model_config: bool = False
    strict_readiness: bool = True
    model_control_mode: str = "none"
    repository_poll_secs: float = 15.0
    load_model: list[str] = field(default_factory=list)
    model_load_thread_count: int = 4
    model_load_retry_count: int = 0
    allow_http: bool = True
    http_address: str | None = None
    http_port: int = 8000
    http_restricted_api: list[str] = field(default_factory=list)
    allow_grpc: bool = True
    grpc_address: str | None = None
    grpc_port: int = 8001
    grpc_use_ssl: bool = False
    grpc_use_ssl_mutual: bool = False
    grpc_server_cert: str = ""
    grpc_server_key: str = ""
    grpc_root_cert: str = ""
    grpc_infer_response_compression_level: str = "none"
    grpc_restricted_protocol: list[str] = field(default_factory=list)
    http_max_input_size: int = HTTP_DEFAULT_MAX_INPUT_SIZE
    allow_client_shm: bool = True  # tritonserver 2.68's default is false: see the README's "The server"
    grpc_options: dict[str, int] = field(default_factory=dict)  # set by flags with a grpc_option
    allow_metrics: bool = True
    allow_cpu_metrics: bool = True
    metrics_address: str | None = None
    metrics_port: int = 8002
    metrics_interval_ms: float = 2000.0
    metrics_config: list[str] = field(default_factory=list)
    trace_config: list[str] = field(default_factory=list)
    host: str = "0.0.0.0"
    workers: int = 1
    reuse_http_port: bool = False
    given: list[str] = field(default_factory=list)  # every flag given, in order, once each
    values: dict[str, Any] = field(default_factory=dict)  # the value of every other (ignored) flag

    @property
    def ignored(self) -> list[str]:
        """The flags given that mean nothing here."""
        return [name for name in self.given if BY_NAME[name].effect == IGNORED]

    @property
    def auto_complete(self) -> bool:
        return not (self.disable_auto_complete_config or self.strict_model_config)

    def addresses(self) -> tuple[str, str, str]:
        """(gRPC, HTTP, metrics) addresses: each its flag, else --host; metrics defaults to HTTP's, as
        in tritonserver."""
        http = self.http_address or self.host
        return self.grpc_address or self.host, http, self.metrics_address or http

    @property
    def shares_http_port(self) -> bool:
        """Whether other processes may bind the HTTP port: --reuse-http-port, or several --workers."""
        return self.reuse_http_port or self.workers > 1

    def grpc_server_options(self) -> list[tuple[str, int]]:
        """gRPC server options (channel arguments) of the flags given, compression included; several
        --workers share the port."""
        options = list(self.grpc_options.items())
        if self.workers > 1:
            options.append(("grpc.so_reuseport", 1))
        if "grpc-infer-response-compression-level" in self.given:
            level = GRPC_COMPRESSION_LEVELS[self.grpc_infer_response_compression_level]
            options.append(("grpc.default_compression_level", level))
        return options


class BadOption(ValueError):
    """A value tritonserver would refuse: reported as its 'Bad option' message."""


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise BadOption(f"invalid value for bool option: {text}")


def _integer(text: str, bounds: tuple[int, int] = INT32) -> int:
    """std::stoi: leading spaces, a sign and digits; anything after them is ignored."""
    match = re.match(r"\s*[+-]?[0-9]+", text)
    if not match:
        raise BadOption(f"Invalid option value. Got {text}")
    value = int(match.group())
    if not bounds[0] <= value <= bounds[1]:
        raise BadOption(f"Provided option value is out of bound. Got {text}")
    return value


def _int64(text: str) -> int:
    """std::stoll: as std::stoi, in int64's range."""
    return _integer(text, INT64)


def _float(text: str) -> float:
    """std::stof: the longest leading decimal number (or inf/nan); anything after it is ignored."""
    match = re.match(r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", text, re.I)
    if not match:
        raise BadOption(f"Invalid option value. Got {text}")
    value = float(match.group())
    if abs(value) > FLOAT_MAX and abs(value) != float("inf"):
        raise BadOption(f"Provided option value is out of bound. Got {text}")
    return value


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "boolean": _boolean,
    "integer": _integer,
    "int64": _int64,
    "float": _float,
    "string": str,
}


def _apply(options: ServeOptions, flag: Flag, text: str | None) -> None:
    if flag.name not in options.given:
        options.given.append(flag.name)
    if flag.kind is None:
        value: Any = True
    else:
        assert text is not None
        value = CONVERTERS[flag.kind](text)
        if flag.choices and value not in flag.choices:
            raise BadOption(f"invalid argument for --{flag.name}")
        if flag.bounds and not flag.bounds[0] <= value <= flag.bounds[1]:
            raise BadOption(flag.out_of_bounds.format(text))
    if flag.name == "trace-config" or flag.template != "{}":
        value = flag.template.format(value)
        _check_trace(value)
    if flag.effect == IGNORED:
        options.values[flag.name] = value
    elif flag.grpc_option:
        options.grpc_options[flag.grpc_option] = int(value)
    elif flag.repeat:
        getattr(options, flag.dest or _dest(flag.name)).append(value)
    else:
        setattr(options, flag.dest or _dest(flag.name), value)


def _dest(name: str) -> str:
    return name.replace("-", "_")


def _check_trace(setting: str) -> None:
    from .trace_log import parse_trace_config

    try:
        parse_trace_config([setting])
    except ValueError as error:
        raise BadOption(str(error)) from None


def _match(name: str) -> list[Flag]:
    """The flags `name` stands for, as getopt_long matches: the exact name, else every flag it begins."""
    if name in BY_NAME:
        return [BY_NAME[name]]
    return [flag for flag in BY_NAME.values() if flag.name.startswith(name)]


def usage(prog: str = "faast serve") -> str:
    """The usage text: every flag, what it takes, and what faast does with it."""
    lines = [f"Usage: {prog} [options]", "  --help", "\tPrint usage"]
    for flag in FLAGS:
        kind = "integer" if flag.kind == "int64" else flag.kind  # tritonserver's usage says <integer> for both
        lines.append(f"  --{flag.name}" + (f" <{kind}>" if kind else ""))
        since = f" [tritonserver {flag.since}+]" if flag.since else ""
        lines.append(f"\t{flag.note}" + ("" if flag.effect == IMPLEMENTED else f" ({flag.effect})") + since)
    return "\n".join(lines) + "\n"


def _fail(prog: str, message: str, usage_first: bool = False) -> NoReturn:
    """Report a command-line error as tritonserver does (stderr, then exit status 1)."""
    text = usage(prog) + message + "\n" if usage_first else message + "\n" + usage(prog)
    sys.stderr.write(text)
    raise SystemExit(1)


def bad_option(name: str, message: str, prog: str = "faast serve") -> NoReturn:
    _fail(prog, f'Bad option: "--{name}".\n{message}\n', usage_first=True)


def parse(argv: list[str], prog: str = "faast serve") -> ServeOptions:
    """`faast serve`'s command line (without `faast serve`), read as tritonserver reads its own; on
    an error, exits as tritonserver does. `--help` (or faast's `-h`) prints the usage and exits 0."""
    options = ServeOptions()
    strays = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if argument == "--":
            strays.extend(argv[index:])
            break
        if argument == "-h":
            argument = "--help"
        if not argument.startswith("-") or argument == "-":
            strays.append(argument)  # getopt_long moves these to the end; tritonserver then refuses them
            continue
        if not argument.startswith("--"):
            _fail(prog, f"{prog}: invalid option -- '{argument[1]}'")
        name, equals, text = argument[2:].partition("=")
        matches = _match(name)
        if not matches:
            _fail(prog, f"{prog}: unrecognized option '{argument}'")
        if len(matches) > 1:
            possibilities = " ".join(f"'--{flag.name}'" for flag in matches)
            _fail(prog, f"{prog}: option '{argument}' is ambiguous; possibilities: {possibilities}")
        (flag,) = matches
        value: str | None = None
        if flag.kind is None and equals:
            _fail(prog, f"{prog}: option '--{flag.name}' doesn't allow an argument")
        if flag.kind is not None:
            if equals:
                value = text
            elif index < len(argv):
                value, index = argv[index], index + 1
            else:
                _fail(prog, f"{prog}: option '--{flag.name}' requires an argument")
        if flag is HELP:
            sys.stdout.write(usage(prog))
            raise SystemExit(0)
        try:
            _apply(options, flag, value)
        except BadOption as error:
            bad_option(flag.name, str(error), prog)
    if strays:
        _fail(prog, f"Unexpected argument: {strays[0]}", usage_first=True)
    return options


# --- log lines ----------------------------------------------------------------------------------


def _letter(level: int) -> str:
    if level >= logging.ERROR:
        return "E"
    if level >= logging.WARNING:
        return "W"
    return "I"  # tritonserver writes its verbose lines as I too


class TritonLogFormatter(logging.Formatter):
    """tritonserver's log line, in the format `settings["log_format"]` names at the time of the line
    (`settings` is the live LogSettings.values, so a client's log_format update applies at once)."""

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        self.settings = settings

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        letter = _letter(record.levelno)
        if self.settings.get("log_format") == "ISO8601":
            heading = f"{when:%Y-%m-%dT%H:%M:%SZ} {letter} {record.process}"
        else:
            heading = f"{letter}{when:%m%d %H:%M:%S.%f} {record.process}"
        line = f"{heading} {record.filename}:{record.lineno}] {json.dumps(record.getMessage(), ensure_ascii=False)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LevelSwitches(logging.Filter):
    """tritonserver's independent switches: info, warning and error lines each on or off, verbose
    lines with a verbose level above 0 (read from the live LogSettings.values)."""

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return bool(self.settings["log_error"])
        if record.levelno >= logging.WARNING:
            return bool(self.settings["log_warning"])
        if record.levelno >= logging.INFO:
            return bool(self.settings["log_info"])
        return self.settings["log_verbose_level"] > 0


def log_handler(settings: dict[str, Any], log_file: str) -> tuple[logging.Handler, str]:
    """The handler that writes tritonserver's lines: appended to `log_file`, or on stderr without one
    (or when it cannot be opened: the second value then says why)."""
    handler: logging.Handler
    problem = ""
    try:
        handler = logging.FileHandler(log_file, mode="a") if log_file else logging.StreamHandler(sys.stderr)
    except OSError as error:
        handler, problem = logging.StreamHandler(sys.stderr), f"cannot open log file {log_file}: {error}"
    handler.setFormatter(TritonLogFormatter(settings))
    handler.addFilter(LevelSwitches(settings))
    return handler, problem
