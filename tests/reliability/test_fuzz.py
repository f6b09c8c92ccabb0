"""Seeded fuzzing of a real `faast serve` over gRPC and HTTP: random bytes, mutated messages and
structurally valid requests with hostile fields must each get an answer with an allowed status (never
UNKNOWN, never a server fault, JSON errors over HTTP), must never reach a file outside the server's
own, and must leave the server computing exactly what it computed before. The seed fixes every case:
a violation is reproduced by running the test again, and its index names the request."""

import gzip
import http.client
import json
import os
import random
import shutil
import socket
import time
import urllib.parse
import zlib
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from support import Server, infer, infer_request
from tritonclient.grpc import service_pb2

SEED = 1313
GRPC_CASES = 1500
HTTP_CASES = 800
HOSTILE = 0.15  # chance that one field of a generated request is given a hostile value
CALL_TIMEOUT = 5  # s; an answer that takes longer is a hang
MAX_TIMEOUTS = 8  # unanswered cases after which a fuzz stops: the server hangs, more cases say no more
FUZZ_BUDGET_S = 150  # one fuzz stops here even if cases remain, so a slow server cannot stall CI
SHOWN_GROUPS = 40

SERVICE = "inference.GRPCInferenceService"
METHODS = {m.name: m for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
ALLOWED_CODES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "UNIMPLEMENTED", "INTERNAL", "ALREADY_EXISTS"}
FAULT = "unexpected server error"  # how faast words an exception it did not expect: a server bug

REFERENCE_ROWS = np.linspace(-5, 120, 32 * 15, dtype=np.float32).reshape(32, 15)
INTS = [
    0,
    1,
    -1,
    2,
    15,
    16,
    60,
    4095,
    4096,
    4097,
    65536,
    65537,
    2**31 - 1,
    2**31,
    2**32,
    2**40,
    2**62,
    2**63 - 1,
    -(2**63),
]
ROW_COUNTS = [0, 1, 2, 3, 16, 100, 1000, -1, 65536, 65537, 2**31, 2**40, 2**62]
DATATYPES = ["FP32"] * 6 + [
    "",
    "fp32",
    "FP16",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT64",
    "BOOL",
    "BYTES",
    "BF16",
    "NOPE",
    "FP32\0",
    "FP32 ",
    "é",
]
MODEL_NAMES = ["facile"] * 8 + [
    "",
    "nope",
    "FACILE",
    "facile\0x",
    "../x",
    "../../etc/passwd",
    "facile/../facile",
    "/abs",
    ".",
    "..",
    "é模型🚀",
    "a" * 5000,
    " facile",
    "facile ",
    "\u202e",
    "%2e%2e",
]
VERSIONS = [""] * 6 + ["1", "1", "0", "-1", "2", "x", "١", "²", "99999999999999999999", " 1", "1.0", "\0"]
TEXTS = [
    "",
    "x",
    "facile",
    "output",
    "input",
    "é",
    "\0",
    "\u202e",
    "a" * 300,
    "../../x",
    "%s%n",
    "{}",
    "[]",
    "null",
    "TIMESTAMPS",
    "OFF",
    "1",
    "-1",
    "0",
    "abc",
    "2147483648",
    "99999999999999999999",
]
PARAMETER_KEYS = [
    "priority",
    "timeout",
    "sequence_id",
    "sequence_start",
    "triton_x",
    "triton_enable_empty_final_response",
    "binary_data_output",
    "shared_memory_region",
    "shared_memory_offset",
    "shared_memory_byte_size",
    "",
    "é",
    "k" * 300,
]
CONTENTS_FIELDS = [f.name for f in service_pb2.InferTensorContents.DESCRIPTOR.fields]
SHM_NAMES = ["fz_a", "fz_b", "fz_a", "", "é", "a\0b", "n" * 1000]


def _region_name():
    return f"faast_fuzz_{os.getpid()}"


@dataclass
class Sandbox:
    """Files a client must never reach: a regular file to map, a model folder to load, and paths
    for trace and log files that must never appear."""

    root: object
    bait: object  # a 4096-byte file outside /dev/shm
    evil_model: object  # a loadable copy of facile outside the repository
    repository: object

    def files(self):
        """Every file under the sandbox and the repository (the server's working directory)."""
        return sorted(str(p) for folder in (self.root, self.repository) for p in folder.rglob("*"))

    def escaping_shm_keys(self):
        bait = str(self.bait)
        return [
            bait,
            f"../..{bait}",
            f"/..{bait}",
            f"/dev/shm/../..{bait}",
            f"/{_region_name()}/../x",
            "/",
            "/.",
            "/..",
            "../../tmp/x",
            f"{_region_name()}/",
            f"/{_region_name()}\0x",
        ]

    def escaping_model_names(self):
        return [
            os.path.relpath(self.evil_model, self.repository),
            str(self.evil_model),
            "evil",
            "../evil",
            "facile/..",
            "facile/1",
            "facile/../facile",
            ".",
            "..",
            "/facile",
        ]

    def paths(self):
        return [
            str(self.root / "trace.json"),
            str(self.root / "log.txt"),
            str(self.root / "sub" / "x"),
            f"{self.root}/../{self.root.name}/t.json",
        ]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, model_repository):
    root = tmp_path_factory.mktemp("fuzz_sandbox")
    bait = root / "bait"
    bait.write_bytes(b"b" * 4096)
    evil = root / "evil"
    shutil.copytree(model_repository / "facile", evil)
    (evil / "config.pbtxt").write_text((evil / "config.pbtxt").read_text().replace('name: "facile"', 'name: "evil"'))
    return Sandbox(root, bait, evil, model_repository)


@pytest.fixture(scope="module")
def region():
    """A real /dev/shm object the fuzzer may register, read inputs from and write outputs to."""
    path = f"/dev/shm/{_region_name()}"
    with open(path, "wb") as file:
        file.write(np.resize(REFERENCE_ROWS, 1024).tobytes())
    yield "/" + _region_name()
    os.unlink(path)


@pytest.fixture(scope="module")
def fuzzed(model_repository, tmp_path_factory, sandbox, region):
    """The fuzz target: explicit model control, so repository RPCs are live targets too."""
    running = Server(
        model_repository,
        tmp_path_factory.mktemp("fuzz_logs") / "serve.log",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "facile",
    )
    running.reference = infer(running.client, REFERENCE_ROWS, client_timeout=CALL_TIMEOUT)
    yield running
    running.stop()


def _random_text(rng):
    if rng.random() < 0.7:
        return rng.choice(TEXTS)
    code_points = (rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x30000)]) for _ in range(rng.randrange(20)))
    return "".join(chr(c) for c in code_points if not 0xD800 <= c < 0xE000)  # surrogates are no UTF-8


def _random_bytes(rng, longest=200):
    return rng.randbytes(rng.randrange(longest + 1))


def _set_random_parameter(rng, parameter, sandbox):
    """Any InferParameter (or LogSettings' SettingValue) choice, with values at the edges."""
    fields = [f.name for f in parameter.DESCRIPTOR.fields]
    choice = rng.choice(fields)
    if choice == "bool_param":
        parameter.bool_param = rng.random() < 0.5
    elif choice == "int64_param":
        parameter.int64_param = rng.choice(INTS)
    elif choice in ("uint64_param", "uint32_param"):
        top = 2**64 - 1 if choice == "uint64_param" else 2**32 - 1
        setattr(parameter, choice, rng.choice([v for v in INTS if 0 <= v <= top] + [top]))
    elif choice == "double_param":
        parameter.double_param = rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan"), 2.0**63])
    elif choice == "bytes_param":
        parameter.bytes_param = _random_bytes(rng)
    else:
        parameter.string_param = rng.choice(sandbox.paths()) if rng.random() < 0.2 else _random_text(rng)


def _random_shape(rng):
    if rng.random() < 0.6:
        return [rng.choice(ROW_COUNTS), 15]
    return [rng.choice(INTS) for _ in range(rng.choice([0, 1, 2, 3, 5, 64]))]


def _input_bytes(rng, shape, hostile):
    """Raw contents for `shape`: random floats of the right size, or (hostile) special values or the
    wrong size."""
    count = int(np.prod(shape, dtype=object)) if shape else 1
    fits = 0 <= count <= 16000
    if fits and not hostile:
        return np.random.default_rng(rng.randrange(2**32)).normal(0, 50, count).astype(np.float32).tobytes()
    if fits and rng.random() < 0.5:
        special = np.full(count, rng.choice([np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1e-45]), np.float32).tobytes()
        return special if rng.random() < 0.7 else special[: rng.randrange(len(special) + 1)]
    return _random_bytes(rng, rng.choice([0, 3, 60, 4096, 70000]))


def _random_contents(rng, tensor):
    """Typed contents of a random kind, with counts and values that may not fit."""
    field = rng.choice(CONTENTS_FIELDS)
    count = rng.choice([0, 1, 14, 15, 30, 480])
    values = {
        "bool_contents": lambda: rng.random() < 0.5,
        "int_contents": lambda: rng.choice([0, -1, 127, 128, 2**31 - 1, -(2**31)]),
        "int64_contents": lambda: rng.choice(INTS),
        "uint_contents": lambda: rng.choice([0, 255, 256, 2**32 - 1]),
        "uint64_contents": lambda: rng.choice([0, 2**63, 2**64 - 1]),
        "fp32_contents": lambda: rng.choice([0.5, -1e30, float("nan"), float("inf"), 3.4e38]),
        "fp64_contents": lambda: rng.choice([0.5, 1e308, float("nan"), -0.0]),
        "bytes_contents": lambda: _random_bytes(rng, 20),
    }[field]
    getattr(tensor.contents, field).extend(values() for _ in range(count))


def _infer_message(rng, sandbox):
    """A structurally valid ModelInferRequest for facile in which each field is, with probability
    HOSTILE, replaced by a hostile value: most requests are wrong in one or a few ways, some in none,
    so every check of the server is reached, the last ones too."""

    def hostile():
        return rng.random() < HOSTILE

    message = service_pb2.ModelInferRequest(
        model_name=rng.choice(MODEL_NAMES) if hostile() else "facile",
        model_version=rng.choice(VERSIONS) if hostile() else "",
        id=_random_text(rng) if hostile() else "",
    )
    for _ in range(rng.choice([0, 2, 3]) if hostile() else 1):
        rows = rng.choice([1, 2, 16, 64, 1000])
        name = rng.choice(["", "output", "input\0", "é", "inputs"]) if hostile() else "input"
        tensor = message.inputs.add(
            name=name,
            datatype=rng.choice(DATATYPES) if hostile() else "FP32",
            shape=_random_shape(rng) if hostile() else [rows, 15],
        )
        source = rng.random()
        if source < 0.7:
            message.raw_input_contents.append(_input_bytes(rng, list(tensor.shape), hostile()))
        elif source < 0.85:
            if hostile():
                _random_contents(rng, tensor)
            else:
                tensor.contents.fp32_contents.extend(np.linspace(-1, 90, rows * 15, dtype=np.float32).tolist())
        else:
            tensor.parameters["shared_memory_region"].string_param = (
                rng.choice(SHM_NAMES + ["nope"]) if hostile() else "fz_a"
            )
            for key, valid in (("shared_memory_offset", 0), ("shared_memory_byte_size", rows * 60)):
                if hostile():
                    _set_random_parameter(rng, tensor.parameters[key], sandbox)
                else:
                    tensor.parameters[key].int64_param = valid
        if hostile():
            _set_random_parameter(rng, tensor.parameters[rng.choice(PARAMETER_KEYS)], sandbox)
    if hostile():
        message.raw_input_contents.append(_random_bytes(rng))  # more raw buffers than inputs
    for _ in range(rng.choice([0, 1, 2]) if hostile() else rng.choice([0, 1])):
        name = rng.choice(["output", "energy", "", "input", "é"]) if hostile() else "output"
        output = message.outputs.add(name=name)
        if rng.random() < 0.2:  # into shared memory
            output.parameters["shared_memory_region"].string_param = rng.choice(SHM_NAMES) if hostile() else "fz_b"
            output.parameters["shared_memory_byte_size"].int64_param = rng.choice(INTS) if hostile() else 4000
        if hostile():
            key = rng.choice(
                [
                    "binary_data",
                    "classification",
                    "shared_memory_region",
                    "shared_memory_offset",
                    "shared_memory_byte_size",
                ]
            )
            _set_random_parameter(rng, output.parameters[key], sandbox)
    for _ in range(rng.choice([1, 2, 3]) if hostile() else 0):
        _set_random_parameter(rng, message.parameters[rng.choice(PARAMETER_KEYS)], sandbox)
    return message


def _random_json_text(rng):
    return rng.choice(
        [
            '{"max_batch_size": 8}',
            '{"max_batch_size": -1}',
            '{"max_batch_size": 1e400}',
            "not json",
            "{}",
            "[]",
            '"x"',
            '{"input": []}',
            '{"name": "other"}',
            '{"dynamic_batching": {"x": 1}}',
            "[" * 100000,
            '{"max_batch_size": ' + "9" * 5000 + "}",
            '{"dynamic_batching": {"max_queue_delay_microseconds": -5}}',
        ]
    )


def _valid_message(rng, method, sandbox, region):
    """A well-formed request for `method` with fields drawn from the hostile pools (sandbox paths and
    escaping names included), and whether an OK answer to it would be a violation (it names a file
    or model outside the server's reach)."""
    if method in ("ModelInfer", "ModelStreamInfer"):
        return _infer_message(rng, sandbox), False
    request_type = getattr(service_pb2, METHODS[method].input_type.name)
    message = request_type()
    forbidden = False
    if method in ("ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"):
        message.name, message.version = rng.choice(MODEL_NAMES), rng.choice(VERSIONS)
    elif method in ("RepositoryModelLoad", "RepositoryModelUnload"):
        escaping = sandbox.escaping_model_names()
        message.model_name = rng.choice(escaping if rng.random() < 0.4 else MODEL_NAMES)
        forbidden = method == "RepositoryModelLoad" and message.model_name in escaping
        if method == "RepositoryModelLoad":
            for _ in range(rng.choice([0, 0, 1, 2])):
                key = rng.choice(["config", "config", "file:1/model.py", "file:1/csim.so", "x", ""])
                if key == "config" and rng.random() < 0.7:
                    message.parameters[key].string_param = _random_json_text(rng)
                elif key.startswith("file:"):
                    message.parameters[key].bytes_param = _random_bytes(rng)
                else:
                    _set_random_parameter(rng, message.parameters[key], sandbox)
    elif method == "RepositoryIndex":
        message.repository_name, message.ready = rng.choice(["", "x", "../"]), rng.random() < 0.5
    elif method in ("SystemSharedMemoryRegister", "CudaSharedMemoryRegister"):
        message.name = rng.choice(SHM_NAMES)
        if method == "SystemSharedMemoryRegister":
            escaping = rng.random() < 0.4
            message.key = (
                rng.choice(sandbox.escaping_shm_keys())
                if escaping
                else rng.choice([region] * 6 + [region.lstrip("/"), "/nonexistent_fuzz", "", _random_text(rng)])
            )
            forbidden = escaping
            message.offset = rng.choice([16, 960, 4095, 4096, 4097, 2**63, 2**64 - 1]) if rng.random() < HOSTILE else 0
        else:
            message.raw_handle, message.device_id = _random_bytes(rng, 64), rng.choice([0, -1, 2**31 - 1])
        message.byte_size = rng.choice([0, 60, 960, 4097, 2**63, 2**64 - 1]) if rng.random() < HOSTILE else 4096
    elif method in (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryUnregister",
    ):
        message.name = rng.choice(SHM_NAMES + ["nope"])
    elif method == "TraceSetting":
        message.model_name = rng.choice([""] * 4 + MODEL_NAMES)
        for _ in range(rng.choice([0, 1, 2, 3])):
            key = rng.choice(
                ["trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency", "trace_mode", "nope", ""]
            )
            pool = sandbox.paths() + TEXTS + ["TIMESTAMPS", "TENSORS", "BOGUS"]
            message.settings[key].value.extend(rng.choice(pool) for _ in range(rng.choice([0, 1, 1, 2])))
    elif method == "LogSettings":
        for _ in range(rng.choice([0, 1, 2, 3])):
            key = rng.choice(
                ["log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format", "nope", ""]
            )
            _set_random_parameter(rng, message.settings[key], sandbox)
    return message, forbidden


def _mutate(rng, data):
    """A serialized message with bits flipped, bytes overwritten or inserted, a stretch repeated, or
    the rest cut off, one to four times."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        operation = rng.choice(["flip", "truncate", "duplicate", "insert", "overwrite"])
        position = rng.randrange(len(data) + 1)
        if operation == "flip" and data:
            index = min(position, len(data) - 1)
            data[index] ^= 1 << rng.randrange(8)
        elif operation == "truncate":
            data = data[:position]
        elif operation == "duplicate":
            end = rng.randrange(position, len(data) + 1)
            data[position:position] = data[position:end] * rng.choice([1, 2, 8])
        elif operation == "insert":
            data[position:position] = _random_bytes(rng, 16)
        else:
            data[position : position + 1] = bytes([rng.choice([0x00, 0x7F, 0x80, 0xFF])])
    return bytes(data)


def _random_metadata(rng):
    """Request metadata a client may send: unknown keys, Triton-looking keys, binary values."""
    if rng.random() < 0.8:
        return None
    keys = [
        "x-fuzz",
        "triton-grpc-protocol-infer-header",
        "priority",
        "timeout",
        "grpc-accept-encoding",
        "user-agent",
        "authorization",
        "x-fuzz-bin",
    ]
    pairs = []
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(keys)
        value = (
            _random_bytes(rng, 100)
            if key.endswith("-bin")
            else "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(200)))
        )
        pairs.append((key, value))
    return pairs


def _describe(payload):
    if isinstance(payload, bytes):
        return f"{len(payload)} bytes {payload[:60]!r}"
    text = text_format.MessageToString(payload, as_one_line=True, as_utf8=True)
    return text if len(text) < 300 else text[:300] + f"... ({payload.ByteSize()} bytes)"


@dataclass
class Violation:
    """One broken rule: the case's index and kind, what was sent, and what came back."""

    index: int
    kind: str
    request: str
    answer: str

    def __str__(self):
        return f"#{self.index} {self.kind}: {self.request}\n    -> {self.answer}"


def _report(violations, cases):
    """Violations grouped by kind and answer, each group with its count and first case."""
    groups = {}
    for violation in violations:
        groups.setdefault((violation.kind, violation.answer[:70]), []).append(violation)
    lines = [f"{len(violations)} violations in {cases} cases (seed {SEED}), {len(groups)} distinct:"]
    for members in list(groups.values())[:SHOWN_GROUPS]:
        lines.append(f"[{len(members)}x] {members[0]}")
    if len(groups) > SHOWN_GROUPS:
        lines.append(f"... and {len(groups) - SHOWN_GROUPS} more groups")
    return "\n".join(lines)


def _fuzz(fuzzer, cases, server):
    """Run the cases until done, the server dies, it hangs too often, or the budget is spent."""
    started = time.monotonic()
    for index in range(cases):
        fuzzer.run_case(index)
        if server.process.poll() is not None:
            fuzzer.violations.append(Violation(index, "crash", "the case above", f"exit {server.process.returncode}"))
            break
        if fuzzer.timeouts >= MAX_TIMEOUTS:
            fuzzer.violations.append(Violation(index, "hang", "the cases above", f"{MAX_TIMEOUTS} unanswered: stopped"))
            break
        if time.monotonic() - started > FUZZ_BUDGET_S:
            fuzzer.violations.append(Violation(index, "slow", "the cases above", f"{FUZZ_BUDGET_S} s spent: stopped"))
            break
    return time.monotonic() - started


def _restore_facile(server, index, violations):
    """Repository cases may unload facile or load it with another config: load it plainly again."""
    try:
        server.client.load_model("facile", client_timeout=30)
    except Exception as error:
        violations.append(Violation(index, "repository", "plain load of facile", str(error)))


class GrpcFuzzer:
    """Sends generated cases over one channel and records every answer that breaks the rules."""

    def __init__(self, server, sandbox, region, rng):
        self.server, self.sandbox, self.region, self.rng = server, sandbox, region, rng
        self.channel = grpc.insecure_channel(server.url)
        self.violations = []
        self.timeouts = 0

    def method_path(self, method):
        return HEALTH_CHECK if method == "Health" else f"/{SERVICE}/{method}"

    def call(self, index, kind, method, payload, forbidden=False):
        data = payload if isinstance(payload, bytes) else payload.SerializeToString()
        unary = self.channel.unary_unary(self.method_path(method))
        compression = grpc.Compression.Gzip if self.rng.random() < 0.1 else None
        try:
            unary(data, timeout=CALL_TIMEOUT, metadata=_random_metadata(self.rng), compression=compression)
            code, details = "OK", ""
        except grpc.RpcError as error:
            code, details = error.code().name, error.details() or ""
        self.judge(index, kind, f"{method} {_describe(payload)}", code, details, forbidden)

    def judge(self, index, kind, request, code, details, forbidden=False):
        self.timeouts += code == "DEADLINE_EXCEEDED"
        wrong = code not in ALLOWED_CODES or details.startswith(FAULT) or (forbidden and code == "OK")
        if wrong:
            why = "accepted a request that reaches outside the server" if forbidden and code == "OK" else ""
            self.violations.append(Violation(index, kind, request, f"{code} {details[:300]!r} {why}".strip()))

    def stream(self, index, items):
        """One ModelStreamInfer of mixed requests: one reply each, the good ones right, then the end."""
        stream = self.channel.stream_stream(self.method_path("ModelStreamInfer"))
        described = f"ModelStreamInfer of {len(items)}: " + ", ".join(kind for kind, _ in items)
        replies = []
        try:
            for reply in stream(iter([data for _, data in items]), timeout=CALL_TIMEOUT):
                replies.append(service_pb2.ModelStreamInferResponse.FromString(reply))
            code, details = "OK", ""
        except grpc.RpcError as error:
            code, details = error.code().name, error.details() or ""
        self.judge(index, "stream", described, code, details)
        if code != "OK":
            return
        if len(replies) != len(items):
            self.violations.append(Violation(index, "stream", described, f"{len(replies)} replies"))
        for reply in replies:
            if reply.error_message.startswith(FAULT):
                self.violations.append(Violation(index, "stream", described, reply.error_message[:300]))
            if reply.infer_response.id.startswith("good-"):
                answer = reply.error_message or np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
                if reply.error_message or not np.array_equal(answer, self.server.reference.ravel()):
                    self.violations.append(
                        Violation(index, "stream", described, f"good request {reply.infer_response.id} got {answer!r}")
                    )

    def check_good(self, index):
        """The reference batch between fuzz cases: always answered, always the same numbers."""
        try:
            outputs = infer(self.server.client, REFERENCE_ROWS, client_timeout=CALL_TIMEOUT)
            if not np.array_equal(outputs, self.server.reference):
                self.violations.append(Violation(index, "good", "reference batch", "different outputs"))
        except Exception as error:
            self.violations.append(Violation(index, "good", "reference batch", f"{type(error).__name__}: {error}"))

    def run_case(self, index):
        rng = self.rng
        kind = rng.choices(
            ["infer", "mutated", "random_bytes", "stream", "unary", "good"], weights=[40, 18, 12, 4, 24, 2]
        )[0]
        if kind == "good":
            self.check_good(index)
        elif kind == "infer":
            self.call(index, kind, "ModelInfer", _infer_message(rng, self.sandbox))
        elif kind == "random_bytes":
            method = rng.choice([m for m in METHODS if m != "ModelStreamInfer"] + ["Health"])
            self.call(index, kind, method, _random_bytes(rng, rng.choice([8, 200, 5000])))
        elif kind == "mutated":
            method = rng.choice([m for m in METHODS if m != "ModelStreamInfer"])
            message, _ = _valid_message(rng, method, self.sandbox, self.region)
            self.call(index, kind, method, _mutate(rng, message.SerializeToString()))
            if method.startswith("Repository"):
                _restore_facile(self.server, index, self.violations)
        elif kind == "stream":
            items = []
            for item in range(rng.randrange(1, 9)):
                choice = rng.choice(["good", "infer", "mutated", "random_bytes"])
                if choice == "good":
                    data = infer_request(REFERENCE_ROWS, id=f"good-{item}").SerializeToString()
                elif choice == "infer":
                    data = _infer_message(rng, self.sandbox).SerializeToString()
                elif choice == "mutated":
                    data = _mutate(rng, infer_request(REFERENCE_ROWS).SerializeToString())
                else:
                    data = _random_bytes(rng)
                items.append((choice, data))
            self.stream(index, items)
        else:
            method = rng.choice([m for m in METHODS if m not in ("ModelInfer", "ModelStreamInfer")] + ["Health"])
            if method == "Health":
                service_name = rng.choice(MODEL_NAMES).encode()[:127]
                self.call(index, kind, method, b"\x0a" + bytes([len(service_name)]) + service_name)
            else:
                message, forbidden = _valid_message(rng, method, self.sandbox, self.region)
                self.call(index, kind, method, message, forbidden)
                if method.startswith("Repository"):
                    _restore_facile(self.server, index, self.violations)


def _health_serving(url):
    with grpc.insecure_channel(url) as channel:
        return channel.unary_unary(HEALTH_CHECK)(b"", timeout=CALL_TIMEOUT) == b"\x08\x01"


def _still_serving(server, sandbox, files_before):
    """What must hold after a fuzz: alive, same outputs, statistics and health answer, sandbox untouched."""
    problems = []
    if server.process.poll() is not None:
        return [f"the server exited with status {server.process.returncode}"]
    try:
        server.client.unregister_system_shared_memory(client_timeout=CALL_TIMEOUT)  # what the fuzz registered
        if not np.array_equal(infer(server.client, REFERENCE_ROWS, client_timeout=CALL_TIMEOUT), server.reference):
            problems.append("the reference batch now gives different outputs")
        stats = server.client.get_inference_statistics("facile", as_json=True, client_timeout=CALL_TIMEOUT)
        if stats["model_stats"][0]["name"] != "facile":
            problems.append(f"statistics answer {stats}")
        if not _health_serving(server.url):
            problems.append("grpc.health.v1 does not say SERVING")
        connection = http.client.HTTPConnection(server.http_url, timeout=CALL_TIMEOUT)
        connection.request("GET", "/v2/health/ready")
        if connection.getresponse().status != 200:
            problems.append("HTTP /v2/health/ready is not 200")
        connection.close()
    except Exception as error:
        problems.append(f"after the fuzz: {type(error).__name__}: {error}")
    if sandbox.files() != files_before or sandbox.bait.read_bytes() != b"b" * 4096:
        changed = sorted(set(sandbox.files()) ^ set(files_before))
        problems.append(f"files in the sandbox or the repository changed: {changed or 'the bait file'}")
    return problems


@pytest.mark.slow  # thousands of fuzzed requests
def test_grpc_fuzz_gets_only_allowed_statuses_and_changes_nothing(fuzzed, sandbox, region):
    rng = random.Random(SEED)
    files_before = sandbox.files()
    fuzzer = GrpcFuzzer(fuzzed, sandbox, region, rng)
    seconds = _fuzz(fuzzer, GRPC_CASES, fuzzed)
    fuzzer.channel.close()
    problems = _still_serving(fuzzed, sandbox, files_before)
    print(f"gRPC fuzz: {GRPC_CASES} cases in {seconds:.1f} s")
    assert not fuzzer.violations and not problems, "\n".join(problems) + "\n" + _report(fuzzer.violations, GRPC_CASES)


# HTTP ----------------------------------------------------------------------------------------------

ROUTES = [
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{m}",
    "/v2/models/{m}/ready",
    "/v2/models/{m}/config",
    "/v2/models/{m}/stats",
    "/v2/models/stats",
    "/v2/models/{m}/infer",
    "/v2/models/{m}/versions/{v}/infer",
    "/v2/models/{m}/versions/{v}",
    "/v2/repository/index",
    "/v2/repository/models/{m}/load",
    "/v2/repository/models/{m}/unload",
    "/v2/systemsharedmemory/status",
    "/v2/systemsharedmemory/region/{r}/status",
    "/v2/systemsharedmemory/region/{r}/register",
    "/v2/systemsharedmemory/unregister",
    "/v2/systemsharedmemory/region/{r}/unregister",
    "/v2/cudasharedmemory/status",
    "/v2/cudasharedmemory/region/{r}/register",
    "/v2/trace/setting",
    "/v2/models/{m}/trace/setting",
    "/v2/logging",
    "/metrics",
    "/",
    "/v2/nope",
    "/v3/models/facile/infer",
    "/v2/models/{m}/infer/extra",
    "//v2//health//live",
    "/v2/models/{m}/versions/{v}/infer?x=%ff",
]
METHOD_NAMES = ["GET", "POST", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]
JSON_ATOMS = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64,
    10**30,
    1e308,
    -0.0,
    0.5,
    "",
    "x",
    "FP32",
    "input",
    "output",
    "é模型🚀",
    "\u0000",
    "a" * 1000,
    [],
    {},
]


def _quote(text):
    return urllib.parse.quote(text, safe="")


def _random_path(rng, sandbox):
    route = rng.choice(ROUTES)
    model = rng.choice(MODEL_NAMES + sandbox.escaping_model_names())
    return route.format(m=_quote(model), v=_quote(rng.choice(VERSIONS)), r=_quote(rng.choice(SHM_NAMES)))


def _random_json(rng, depth=0):
    roll = rng.random()
    if depth > 4 or roll < 0.5:
        atom = rng.choice(JSON_ATOMS)
        return type(atom)() if isinstance(atom, (list, dict)) else atom  # a fresh container: callers edit it
    if roll < 0.75:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "inputs",
        "outputs",
        "name",
        "shape",
        "datatype",
        "data",
        "parameters",
        "id",
        "key",
        "offset",
        "byte_size",
        "ready",
        "trace_level",
        "log_info",
        "config",
        "",
    ]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def _valid_infer_body(shared_memory=False):
    """The reference batch as JSON, or read from region fz_a and written to fz_b."""
    tensor = {"name": "input", "datatype": "FP32", "shape": list(REFERENCE_ROWS.shape)}
    output = {"name": "output", "parameters": {"binary_data": False}}
    if shared_memory:
        tensor["parameters"] = {
            "shared_memory_region": "fz_a",
            "shared_memory_byte_size": REFERENCE_ROWS.nbytes,
            "shared_memory_offset": 0,
        }
        output["parameters"] = {"shared_memory_region": "fz_b", "shared_memory_byte_size": 4 * len(REFERENCE_ROWS)}
    else:
        tensor["data"] = REFERENCE_ROWS.ravel().tolist()
    return {"id": "h", "inputs": [tensor], "outputs": [output], "parameters": {}}


def _replace_somewhere(rng, value, depth=0):
    """`value` with one member or element, at any depth, replaced, removed or added (the whole value
    itself only rarely: the interesting checks are the deep ones)."""
    descend = 0.95 if depth == 0 else 0.7
    if isinstance(value, dict) and value and rng.random() < descend:
        key = rng.choice(list(value))
        action = rng.random()
        if action < 0.4:
            value[key] = _replace_somewhere(rng, value[key], depth + 1)
        elif action < 0.8:
            value[key] = _random_json(rng)
        elif action < 0.9:
            del value[key]
        else:
            value[rng.choice(["extra", "binary_data_size", "shared_memory_region"])] = _random_json(rng)
        return value
    if isinstance(value, list) and value and rng.random() < descend:
        index = rng.randrange(len(value))
        value[index] = _replace_somewhere(rng, value[index], depth + 1) if rng.random() < 0.5 else _random_json(rng)
        return value
    return _random_json(rng)


def _deeply_nested(rng):
    depth = rng.choice([1000, 10000, 100000])
    nested = "[" * depth + "1" + "]" * depth if rng.random() < 0.8 else "[" * depth
    where = rng.choice(["top", "data", "shape", "parameters"])
    if where == "top":
        return nested
    if where == "parameters":
        return '{"inputs": [], "parameters": {"x": ' + nested + "}}"
    return (
        '{"inputs": [{"name": "input", "datatype": "FP32", "shape": '
        + (nested if where == "shape" else "[1, 15]")
        + ', "data": '
        + nested
        + "}]}"
    )


def _odd_numbers(rng):
    """An infer body with a number JSON allows but no program expects (or one only Python reads) in
    the shape, the data or a parameter."""
    number = rng.choice(
        [
            "1e400",
            "-1e400",
            "9" * 5000,
            "-" + "9" * 30,
            "1.5",
            "-0",
            "NaN",
            "Infinity",
            "1E2",
            "0x10",
            "15.0000000000000000001",
            "2e-400",
        ]
    )
    shape, data, parameter = "[1, 15]", ", ".join(["1.0"] * 15), "0"
    where = rng.choice(["shape", "batch", "data", "parameter"])
    if where == "shape":
        shape = f"[1, {number}]"
    elif where == "batch":
        shape = f"[{number}, 15]"
    elif where == "data":
        data = ", ".join([number] * 15)
    else:
        parameter = number
    return (
        f'{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": {shape}, "data": [{data}]}}], '
        f'"parameters": {{"priority": {parameter}}}}}'
    )


def _binary_infer(rng):
    """A binary-tensor infer body whose header length, binary_data_size and data may each lie."""

    def hostile():
        return rng.random() < 0.3

    rows = REFERENCE_ROWS[: rng.choice([0, 1, 2, 32])]
    data = rows.tobytes()
    size = rng.choice([0, -1, len(data) + 1, 2**63, "60", None]) if hostile() else len(data)
    parameters = {} if size is None else {"binary_data_size": size}
    header = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "parameters": parameters}]}
    ).encode()
    body = header + (data[: rng.choice([0, max(0, len(data) - 4)])] if hostile() else data)
    length = (
        rng.choice(
            [len(body) + 10, len(body), 0, -1, "abc", "", " 5", "1e3", "0x10", str(10**30), str(len(header) - 1)]
        )
        if hostile()
        else len(header)
    )
    return body, {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}


def _encoded_infer(rng):
    """The reference infer body under a Content-Encoding: compressed right, garbage, or not at all."""
    body = json.dumps(_valid_infer_body()).encode()
    encoding = rng.choice(["gzip", "deflate", "gzip", "deflate", "identity", "gzip, deflate", "x-nope", "br", "zstd"])
    compress = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding)
    data = compress(body) if compress else body
    damage = rng.choice(["none", "none", "garbage", "cut"])
    if damage == "garbage":
        data = _random_bytes(rng, 100)
    elif damage == "cut":
        data = data[: len(data) // 2]
    intact = compress is not None and damage == "none"
    return data, {"Content-Encoding": encoding, "Content-Type": "application/json"}, intact


def _raw_http(rng):
    """Bytes that are not quite HTTP/1.1."""
    return rng.choice(
        [
            b"GARBAGE \x01\r\n\r\n",
            _random_bytes(rng, 300) + b"\r\n\r\n",
            b"POST /v2/models/facile/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /v2/models/facile/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET /v2/health/live HTTP/9.9\r\n\r\n",
            b"FOO /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",  # a method the HTTP parser does not know
            b"GET " + b"/v2" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v2/health/live HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n",
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
        ]
    )


class HttpFuzzer:
    """Sends generated cases over one kept-alive HTTP/1.1 connection (a fresh one after the server
    closes it) and records every answer that breaks the rules."""

    def __init__(self, server, sandbox, rng):
        self.server, self.sandbox, self.rng = server, sandbox, rng
        self.violations = []
        self.connection = None
        self.timeouts = 0

    def send(self, index, kind, method, path, body=None, headers=None, forbidden=False):
        """One request on the kept-alive connection; (status, body), or None when no answer came."""
        shown = f"{(body or b'')[:120]!r}{'...' if body and len(body) > 120 else ''} ({len(body or b'')} bytes)"
        described = f"{method} {path[:200]} {headers or ''} body {shown}"
        for attempt in (1, 2):
            reused = self.connection is not None
            if not reused:
                self.connection = http.client.HTTPConnection(self.server.http_url, timeout=CALL_TIMEOUT)
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                answer = response.read()
                break
            except TimeoutError:
                self.timeouts += 1
                self.violations.append(Violation(index, kind, described, f"no answer within {CALL_TIMEOUT} s"))
            except (http.client.HTTPException, ConnectionError) as error:
                if reused and attempt == 1:  # a server may close a kept-alive connection between requests
                    self.reset()
                    continue
                self.violations.append(Violation(index, kind, described, f"connection failed: {error!r}"))
            self.reset()
            return None
        if response.getheader("Connection", "").lower() == "close":
            self.reset()
        problem = _http_problem(method, path, response, answer, forbidden)
        if problem:
            self.violations.append(Violation(index, kind, described, problem))
        return response.status, answer

    def reset(self):
        if self.connection is not None:
            self.connection.close()
        self.connection = None

    def raw(self, index, data):
        """Malformed HTTP: the server answers with a status that is not a fault (any body: aiohttp's
        parser answers these before any route) or closes the connection, and keeps serving."""
        described = f"raw {data[:120]!r}"
        try:
            with socket.create_connection(("127.0.0.1", self.server.http_port), timeout=CALL_TIMEOUT) as sock:
                sock.sendall(data)
                answer = sock.recv(65536)
        except TimeoutError:
            self.timeouts += 1
            self.violations.append(Violation(index, "raw", described, f"no answer within {CALL_TIMEOUT} s"))
            return
        except ConnectionRefusedError:
            self.violations.append(Violation(index, "raw", described, "connection refused"))
            return
        except ConnectionError:
            return  # closed on us: an allowed answer to bytes that are not HTTP
        status_line = answer.split(b"\r\n", 1)[0]
        status = status_line.split(b" ")[1:2]
        if answer and (not status or not status[0].isdigit() or 500 <= int(status[0]) != 505):
            self.violations.append(Violation(index, "raw", described, f"answered {status_line!r}"))

    def run_case(self, index):
        rng = self.rng
        kind = rng.choices(
            [
                "route",
                "infer_json",
                "infer_binary",
                "encoded",
                "numbers",
                "deep",
                "random_body",
                "json_shapes",
                "raw",
                "good",
            ],
            weights=[20, 30, 12, 5, 5, 6, 8, 16, 4, 4],
        )[0]
        infer_path = "/v2/models/facile/infer"
        if kind == "good":
            self.good(index)
        elif kind == "route":
            path = _random_path(rng, self.sandbox)
            body = json.dumps(_random_json(rng)).encode() if rng.random() < 0.5 else None
            self.send(index, kind, rng.choice(METHOD_NAMES), path, body, forbidden=self.escapes(path))
            self.restore_after(index, path)
        elif kind == "infer_json":
            body = _valid_infer_body(shared_memory=rng.random() < 0.2)
            for _ in range(rng.choice([1, 1, 2, 3])):
                body = _replace_somewhere(rng, body)
            path = infer_path if rng.random() < 0.8 else _random_path(rng, self.sandbox)
            self.send(index, kind, "POST", path, json.dumps(body).encode())
            self.restore_after(index, path)
        elif kind == "infer_binary":
            body, headers = _binary_infer(rng)
            self.send(index, kind, "POST", infer_path, body, headers)
        elif kind == "encoded":
            body, headers, intact = _encoded_infer(rng)
            self.good(index)  # a connection that has served an infer: some decoders keep state across requests
            answer = self.send(index, kind, "POST", infer_path, body, headers)
            if answer and intact and not _is_reference_answer(*answer, self.server.reference):
                self.violations.append(
                    Violation(
                        index,
                        kind,
                        f"reference batch, {headers['Content-Encoding']}",
                        f"{answer[0]} {answer[1][:200]!r}",
                    )
                )
        elif kind == "numbers":
            self.send(index, kind, "POST", infer_path, _odd_numbers(rng).encode())
        elif kind == "deep":
            path = rng.choice(
                [
                    infer_path,
                    "/v2/repository/models/facile/load",
                    "/v2/logging",
                    "/v2/trace/setting",
                    "/v2/systemsharedmemory/region/fz_a/register",
                    "/v2/repository/index",
                ]
            )
            self.send(index, kind, "POST", path, _deeply_nested(rng).encode())
            self.restore_after(index, path)
        elif kind == "random_body":
            path = _random_path(rng, self.sandbox)
            self.send(index, kind, "POST", path, _random_bytes(rng, 2000), forbidden=self.escapes(path))
            self.restore_after(index, path)
        elif kind == "json_shapes":
            self.json_shapes(index)
        else:
            self.raw(index, _raw_http(rng))

    def good(self, index):
        """The reference batch as JSON: always answered, always the same numbers."""
        answer = self.send(index, "good", "POST", "/v2/models/facile/infer", json.dumps(_valid_infer_body()).encode())
        if answer and not _is_reference_answer(*answer, self.server.reference):
            self.violations.append(Violation(index, "good", "reference batch", f"{answer[0]} {answer[1][:200]!r}"))

    def json_shapes(self, index):
        """Bodies of random shape, and hostile values of the right shape, for every POST route."""
        rng = self.rng
        target = rng.choice(["register", "load", "trace", "logging", "index", "unregister"])
        value = _random_json(rng)
        forbidden = False
        if target == "register":
            escaping = self.sandbox.escaping_shm_keys()
            registration = {
                "key": rng.choice(escaping) if rng.random() < 0.4 else "/" + _region_name(),
                "offset": 0,
                "byte_size": 4096,
            }
            if rng.random() < 0.2:
                value = registration.pop(rng.choice(["key", "offset", "byte_size"]))  # anything but an object
            elif rng.random() < 0.5:
                registration[rng.choice(["key", "offset", "byte_size"])] = rng.choice(
                    [value, -1, 0, 4097, 2**63, 2**64, "16", 1e3, True]
                )
                value = registration
            else:
                value = registration
            forbidden = isinstance(value, dict) and value.get("key") in escaping
            path = f"/v2/systemsharedmemory/region/{_quote(rng.choice(SHM_NAMES))}/register"
        elif target == "load":
            name = rng.choice(MODEL_NAMES + self.sandbox.escaping_model_names())
            forbidden = name in self.sandbox.escaping_model_names()
            if rng.random() < 0.5:
                value = {"parameters": {"config": rng.choice([_random_json_text(rng), value])}}
            path = f"/v2/repository/models/{_quote(name)}/load"
        elif target == "trace":
            if rng.random() < 0.5:
                value = {
                    rng.choice(["trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency"]): rng.choice(
                        self.sandbox.paths() + [value, ["TIMESTAMPS"], "BOGUS", "-1", "1"]
                    )
                }
            path = rng.choice(["/v2/trace/setting", "/v2/models/facile/trace/setting"])
        elif target == "logging":
            if rng.random() < 0.5:
                value = {
                    rng.choice(["log_file", "log_info", "log_verbose_level", "log_format", "log_error"]): rng.choice(
                        self.sandbox.paths() + [value, True, -1, 2**32, "ISO8601", "weird"]
                    )
                }
            path = "/v2/logging"
        elif target == "index":
            path = "/v2/repository/index"
        else:
            path = "/v2/systemsharedmemory/unregister"
        self.send(index, "json_shapes", "POST", path, json.dumps(value).encode(), forbidden=forbidden)
        self.restore_after(index, path)

    def escapes(self, path):
        return any(f"/{_quote(name)}/load" in path for name in self.sandbox.escaping_model_names())

    def restore_after(self, index, path):
        if "/repository/models/" in path:
            _restore_facile(self.server, index, self.violations)


def _is_reference_answer(status, body, reference):
    try:
        return status == 200 and json.loads(body)["outputs"][0]["data"] == reference.ravel().tolist()
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _http_problem(method, path, response, body, forbidden):
    """Why an HTTP answer breaks the rules, or None: errors are JSON {"error": ...} (but "not ready"
    is an empty 400, as in Triton); a fault or a non-JSON 500 never happens; text/plain only where
    Triton uses it (400, 404, 405, and 501 for an unsupported Content-Encoding)."""
    status, content_type = response.status, (response.getheader("Content-Type") or "").split(";")[0]
    if forbidden and status < 300:
        return f"{status}: accepted a request that reaches outside the server"
    not_ready = status == 400 and not body and path.split("?")[0].endswith(("/ready", "/live"))
    if status < 400 or method == "HEAD" or not_ready:
        if content_type == "application/json" and body:
            try:
                json.loads(body)
            except ValueError:
                return f"{status} with a body that is not JSON: {body[:200]!r}"
        return None
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} {content_type} whose body is no JSON {{'error': ...}}: {body[:200]!r}"
    if not isinstance(error, str) or error.startswith(FAULT):
        return f"{status} server fault: {str(error)[:300]!r}"
    if content_type != "application/json" and not (content_type == "text/plain" and status in (400, 404, 405, 501)):
        return f"{status} error as {content_type!r}: {body[:200]!r}"
    return None


def test_http_fuzz_gets_only_json_errors_and_changes_nothing(fuzzed, sandbox):
    rng = random.Random(SEED + 1)
    files_before = sandbox.files()
    fuzzer = HttpFuzzer(fuzzed, sandbox, rng)
    seconds = _fuzz(fuzzer, HTTP_CASES, fuzzed)
    fuzzer.reset()
    problems = _still_serving(fuzzed, sandbox, files_before)
    print(f"HTTP fuzz: {HTTP_CASES} cases in {seconds:.1f} s")
    assert not fuzzer.violations and not problems, "\n".join(problems) + "\n" + _report(fuzzer.violations, HTTP_CASES)
