"""Bad requests answered like Triton: each case goes to a real tritonserver 2.51 (triton_reference.py)
and to a real faast, both in explicit model-control mode with facile loaded, and the two answers must
match — gRPC status code and details, HTTP status, content type and error body — unless the case is
in DIFFERENCES, with the reason faast deliberately answers otherwise (there the answers must differ,
so the table cannot go stale). triton_observed.md records what Triton answered. Where the newest
Triton (2.71) answers as 2.51 does, read from its sources (the reserved request parameters of
section n), the real 2.51 is the oracle for both; what 2.71 changes is listed at the end of
triton_observed.md."""

import gzip
import http.client
import json
import os
import zlib
from pathlib import Path

import grpc
import pytest
from reliability.triton_reference import MODEL, start_triton
from support import Server
from tritonclient.grpc import service_pb2, service_pb2_grpc

# slow: starts a real tritonserver (and creates its venv when missing)
pytestmark = pytest.mark.slow

MALFORMED_JSON = (
    "Triton answers a malformed JSON field with HTTP 500 in its JSON library's words; a client "
    "mistake is a 400 here, naming the field"
)
DIFFERENCES = {
    "http_deep_nesting": "tritonserver 2.51 dies on it (SIGSEGV in its JSON parser); faast must answer and live on",
    "load_file_with_config": (
        "faast serves sent files only as its own kernels' data (kernel.json, weights.npz); a Python "
        "backend's model.py is nothing faast runs, so that load fails (INTERNAL, with the reason)"
    ),
    "model_name_nul": "Triton cuts the name at the NUL (a C string) and serves 'facile'; a name is the whole string",
    "shm_key_nul": (
        "Triton's message is cut at the NUL (a C string), closing quote included; faast quotes the whole key"
    ),
    "http_shm_negative_offset": MALFORMED_JSON,
    "http_shm_negative_byte_size": MALFORMED_JSON,
    "http_shm_string_byte_size": MALFORMED_JSON,
    "http_log_info_string": MALFORMED_JSON,
    "http_log_verbose_negative": MALFORMED_JSON,
    "http_log_verbose_text": MALFORMED_JSON,
    "http_body_list": MALFORMED_JSON,
    "http_body_string": MALFORMED_JSON,
    "http_inputs_object": MALFORMED_JSON,
    "http_shape_text": MALFORMED_JSON,
    "http_invalid_json": (
        "Triton quotes RapidJSON's parse error, faast Python's (both 'failed to parse the request JSON "
        "buffer'), and faast answers 400, not 500"
    ),
    "trace_level_bogus": (
        "Triton accepts a trace level it does not know and ignores it; faast refuses it when it is set"
    ),
    "http_trace_level_bogus": "as trace_level_bogus, over HTTP",
    "trace_unknown_key": (
        "Triton accepts and ignores an unknown trace setting; faast refuses it, so a typo is not silently lost"
    ),
    "http_trace_unknown_key": "as trace_unknown_key, over HTTP",
    "log_unknown_key": (
        "Triton accepts and ignores an unknown log setting; faast refuses it, so a typo is not silently lost"
    ),
    "http_log_unknown_key": "as log_unknown_key, over HTTP",
    "http_log_format_weird": (
        "Triton answers 503 naming its command-line flag (--log_format); faast answers 400 with the gRPC wording"
    ),
    "http_load_dotdot": (
        "Triton echoes the name still percent-encoded; faast names the decoded name it refused (same status)"
    ),
    "load_config_not_json": "faast adds to Triton's message why the 'config' parameter was refused (same status)",
    "http_gzip_garbage": (
        "Triton takes a body that does not inflate as an empty binary input 'raw_input' and answers a byte "
        "size mismatch; faast says the body is not valid gzip (same status)"
    ),
    "http_priority_negative": MALFORMED_JSON,
    "http_sequence_id_bool": MALFORMED_JSON,
    "http_timeout_text": MALFORMED_JSON,
    "http_binary_data_output_text": MALFORMED_JSON,
    "http_sequence_start_int": MALFORMED_JSON,
    "inputs_100000": (
        "Triton's error lists all 100000 input names (889 KB), more than a gRPC client takes: it sees "
        "RESOURCE_EXHAUSTED (metadata exceeds the hard limit); faast lists 1 KB of them and how many more, "
        "so the client gets the real error"
    ),
    "http_inputs_100000": "as inputs_100000: Triton's body lists all 100000 names (889 KB), faast's 1 KB of them",
    "http_header_length_text": (
        "Triton reads a non-numeric header length as 0 and takes the whole body as one raw input "
        "'raw_input'; faast refuses the header"
    ),
    "http_shm_same_key_two_names": (
        "Triton reuses the descriptor of the key's first registration, closed already, which the HTTP "
        "connection's socket took: it stats the socket (size 0) and answers 'invalid args' (400); "
        "faast answers as Triton does over gRPC, where the descriptor is still closed (INTERNAL)"
    ),
}

CASES = {}

SERVICE = "/inference.GRPCInferenceService/"
SHM_FILE = "/dev/shm/faast_parity_probe"
OUTSIDE_FILE = "/tmp/faast_parity_probe_x"
FACILE_JSON = json.dumps(
    {
        "name": "facile",
        "backend": "python",
        "max_batch_size": 65536,
        "dynamic_batching": {},
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [15]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [1]}],
    }
)


def case(function):
    CASES[function.__name__] = function
    return function


class Target:
    """One server under probe: its gRPC stub and its HTTP endpoint."""

    def __init__(self, grpc_url, http_url):
        self.channel = grpc.insecure_channel(grpc_url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.http_url = http_url

    def grpc(self, method, request, summary=None):
        """(code, details) of an RPC; on success the code and what `summary` keeps of the reply."""
        try:
            reply = getattr(self.stub, method)(request, timeout=30)
        except grpc.RpcError as error:
            return {"grpc": error.code().name, "details": error.details()}
        return {"grpc": "OK", **({"reply": summary(reply)} if summary else {})}

    def raw(self, method, payload):
        """An RPC whose request is the bytes given, not a message."""
        try:
            self.channel.unary_unary(SERVICE + method)(payload, timeout=30)
        except grpc.RpcError as error:
            return {"grpc": error.code().name, "details": error.details()}
        return {"grpc": "OK"}

    def http(self, method, path, body=None, headers=None, summary=None):
        """Status and content type; the body when it is an error, what `summary` keeps of it otherwise."""
        connection = http.client.HTTPConnection(self.http_url, timeout=30)
        try:
            if isinstance(body, (dict, list, str)):
                body = json.dumps(body).encode()
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            content = response.read()
        except (ConnectionError, http.client.HTTPException) as error:
            return {"http": "no answer", "error": type(error).__name__}
        finally:
            connection.close()
        answer = {"http": response.status, "content_type": response.getheader("Content-Type")}
        if response.status >= 400:
            answer["body"] = content.decode(errors="replace")
        elif summary:
            answer["reply"] = summary(response, content)
        return answer

    def shm_cleanup(self):
        self.stub.SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(), timeout=30)

    def reload_facile(self):
        self.stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="facile"), timeout=60)

    def close(self):
        self.channel.close()


def _outputs(reply):
    return [(o.name, o.datatype, list(o.shape)) for o in reply.outputs]


def _http_outputs(response, content):
    header = int(response.getheader("Inference-Header-Content-Length") or len(content))
    return [(o["name"], o["datatype"], o["shape"]) for o in json.loads(content[:header])["outputs"]]


def _register(target, key, offset=0, byte_size=4096):
    try:
        return target.grpc(
            "SystemSharedMemoryRegister",
            service_pb2.SystemSharedMemoryRegisterRequest(name="probe", key=key, offset=offset, byte_size=byte_size),
        )
    finally:
        target.shm_cleanup()


def _http_register(target, body):
    try:
        return target.http("POST", "/v2/systemsharedmemory/region/probe/register", body)
    finally:
        target.shm_cleanup()


def _trace(target, settings, model_name=""):
    return target.grpc(
        "TraceSetting",
        service_pb2.TraceSettingRequest(
            model_name=model_name,
            settings={k: service_pb2.TraceSettingRequest.SettingValue(value=v) for k, v in settings.items()},
        ),
    )


def _log(target, **settings):
    return target.grpc(
        "LogSettings",
        service_pb2.LogSettingsRequest(
            settings={k: service_pb2.LogSettingsRequest.SettingValue(**v) for k, v in settings.items()}
        ),
    )


def _load(target, model_name, **parameters):
    try:
        return target.grpc(
            "RepositoryModelLoad",
            service_pb2.RepositoryModelLoadRequest(
                model_name=model_name,
                parameters={k: service_pb2.ModelRepositoryParameter(**v) for k, v in parameters.items()},
            ),
        )
    finally:
        target.reload_facile()


def _input_header(shape=(1, 15), datatype="FP32", **parameters):
    """An input's description in a ModelInferRequest (its bytes travel apart, in raw_input_contents)."""
    return service_pb2.ModelInferRequest.InferInputTensor(
        name="input",
        datatype=datatype,
        shape=list(shape),
        parameters={k: service_pb2.InferParameter(**v) for k, v in parameters.items()},
    )


def _model_infer(target, inputs=None, raw=None, model_name="facile", model_version="", outputs=(), **parameters):
    """A ModelInfer call built field by field (one zero row of facile's input unless told otherwise),
    sent to `target` and summarized for the comparison with Triton."""
    inputs = [_input_header()] if inputs is None else inputs
    raw = [bytes(60)] if raw is None else raw
    return target.grpc(
        "ModelInfer",
        service_pb2.ModelInferRequest(
            model_name=model_name,
            model_version=model_version,
            inputs=inputs,
            raw_input_contents=raw,
            outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs],
            parameters={k: service_pb2.InferParameter(**v) for k, v in parameters.items()},
        ),
        summary=_outputs,
    )


def _http_infer(target, body, headers=None, path="/v2/models/facile/infer"):
    return target.http("POST", path, body, headers, summary=_http_outputs)


def _binary_infer(header, data, length=None):
    header = json.dumps(header).encode()
    return header + data, {
        "Inference-Header-Content-Length": str(len(header) if length is None else length),
        "Content-Type": "application/octet-stream",
    }


ONE_ROW = {"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": [0.0] * 15}]}


# a. System shared memory registration.


@case
def shm_key_dotdot(target):
    """SystemSharedMemoryRegister key="../../tmp/faast_parity_probe_x" (an existing 4096-byte file)."""
    return _register(target, "../.." + OUTSIDE_FILE)


@case
def shm_key_slash_dotdot(target):
    """SystemSharedMemoryRegister key="/../x"."""
    return _register(target, "/../x")


@case
def shm_key_inner_slash(target):
    """SystemSharedMemoryRegister key="a/b"."""
    return _register(target, "a/b")


@case
def shm_key_nul(target):
    """SystemSharedMemoryRegister key="/a\\0b"."""
    return _register(target, "/a\0b")


@case
def shm_key_empty(target):
    """SystemSharedMemoryRegister key=""."""
    return _register(target, "")


@case
def shm_key_missing(target):
    """SystemSharedMemoryRegister key="/nonexistent_faast_probe"."""
    return _register(target, "/nonexistent_faast_probe")


@case
def shm_beyond_size(target):
    """SystemSharedMemoryRegister of an existing 4096-byte region, offset 4000, byte_size 200."""
    return _register(target, "/" + Path(SHM_FILE).name, offset=4000, byte_size=200)


@case
def shm_byte_size_zero(target):
    """SystemSharedMemoryRegister of an existing 4096-byte region, byte_size 0."""
    return _register(target, "/" + Path(SHM_FILE).name, byte_size=0)


@case
def http_shm_negative_offset(target):
    """HTTP register {"key": existing, "offset": -1, "byte_size": 16}."""
    return _http_register(target, {"key": "/" + Path(SHM_FILE).name, "offset": -1, "byte_size": 16})


@case
def http_shm_negative_byte_size(target):
    """HTTP register {"key": existing, "offset": 0, "byte_size": -1}."""
    return _http_register(target, {"key": "/" + Path(SHM_FILE).name, "offset": 0, "byte_size": -1})


@case
def http_shm_string_byte_size(target):
    """HTTP register {"key": existing, "offset": 0, "byte_size": "16"}."""
    return _http_register(target, {"key": "/" + Path(SHM_FILE).name, "offset": 0, "byte_size": "16"})


@case
def http_shm_missing_key(target):
    """HTTP register {"offset": 0, "byte_size": 16}."""
    return _http_register(target, {"offset": 0, "byte_size": 16})


# b. Trace settings.


@case
def trace_file(target):
    """TraceSetting trace_file=["/tmp/x.json"]."""
    return _trace(target, {"trace_file": ["/tmp/x.json"]})


@case
def http_trace_file(target):
    """HTTP POST /v2/trace/setting {"trace_file": "/tmp/x.json"}."""
    return target.http("POST", "/v2/trace/setting", {"trace_file": "/tmp/x.json"})


@case
def trace_rate_text(target):
    """TraceSetting trace_rate=["abc"]."""
    return _trace(target, {"trace_rate": ["abc"]})


@case
def http_trace_rate_text(target):
    """HTTP POST /v2/trace/setting {"trace_rate": "abc"}."""
    return target.http("POST", "/v2/trace/setting", {"trace_rate": "abc"})


@case
def trace_count_text(target):
    """TraceSetting trace_count=["abc"]."""
    return _trace(target, {"trace_count": ["abc"]})


@case
def trace_level_bogus(target):
    """TraceSetting trace_level=["BOGUS"]."""
    return _trace(target, {"trace_level": ["BOGUS"]})


@case
def http_trace_level_bogus(target):
    """HTTP POST /v2/trace/setting {"trace_level": ["BOGUS"]}."""
    return target.http("POST", "/v2/trace/setting", {"trace_level": ["BOGUS"]})


@case
def trace_unknown_key(target):
    """TraceSetting nope=["1"]."""
    return _trace(target, {"nope": ["1"]})


@case
def http_trace_unknown_key(target):
    """HTTP POST /v2/trace/setting {"nope": "1"}."""
    return target.http("POST", "/v2/trace/setting", {"nope": "1"})


@case
def trace_log_frequency_text(target):
    """TraceSetting log_frequency=["x"]."""
    return _trace(target, {"log_frequency": ["x"]})


@case
def trace_unknown_model(target):
    """TraceSetting model_name="nope", no settings."""
    return _trace(target, {}, model_name="nope")


@case
def http_trace_unknown_model(target):
    """HTTP GET /v2/models/nope/trace/setting."""
    return target.http("GET", "/v2/models/nope/trace/setting")


# c. Log settings.


@case
def log_file(target):
    """LogSettings log_file=string "/tmp/log.txt"."""
    return _log(target, log_file={"string_param": "/tmp/log.txt"})


@case
def http_log_file(target):
    """HTTP POST /v2/logging {"log_file": "/tmp/log.txt"}."""
    return target.http("POST", "/v2/logging", {"log_file": "/tmp/log.txt"})


@case
def log_info_string(target):
    """LogSettings log_info=string "yes"."""
    return _log(target, log_info={"string_param": "yes"})


@case
def http_log_info_string(target):
    """HTTP POST /v2/logging {"log_info": "yes"}."""
    return target.http("POST", "/v2/logging", {"log_info": "yes"})


@case
def http_log_verbose_negative(target):
    """HTTP POST /v2/logging {"log_verbose_level": -1}."""
    return target.http("POST", "/v2/logging", {"log_verbose_level": -1})


@case
def http_log_verbose_text(target):
    """HTTP POST /v2/logging {"log_verbose_level": "abc"}."""
    return target.http("POST", "/v2/logging", {"log_verbose_level": "abc"})


@case
def log_unknown_key(target):
    """LogSettings nope=bool true."""
    return _log(target, nope={"bool_param": True})


@case
def http_log_unknown_key(target):
    """HTTP POST /v2/logging {"nope": true}."""
    return target.http("POST", "/v2/logging", {"nope": True})


@case
def log_format_weird(target):
    """LogSettings log_format=string "weird"."""
    return _log(target, log_format={"string_param": "weird"})


@case
def http_log_format_weird(target):
    """HTTP POST /v2/logging {"log_format": "weird"}."""
    return target.http("POST", "/v2/logging", {"log_format": "weird"})


# d. Repository load and unload.


@case
def load_dotdot(target):
    """RepositoryModelLoad model_name="../outside/evil"."""
    return _load(target, "../outside/evil")


@case
def load_absolute(target):
    """RepositoryModelLoad model_name="/abs/path"."""
    return _load(target, "/abs/path")


@case
def load_inner_slash(target):
    """RepositoryModelLoad model_name="a/b"."""
    return _load(target, "a/b")


@case
def load_unknown(target):
    """RepositoryModelLoad model_name="nope"."""
    return _load(target, "nope")


@case
def load_empty_name(target):
    """RepositoryModelLoad model_name=""."""
    return _load(target, "")


@case
def http_load_dotdot(target):
    """HTTP POST /v2/repository/models/..%2Foutside%2Fevil/load."""
    try:
        return target.http("POST", "/v2/repository/models/..%2Foutside%2Fevil/load")
    finally:
        target.reload_facile()


@case
def load_config_not_json(target):
    """RepositoryModelLoad facile, parameters {"config": "not json"}."""
    return _load(target, "facile", config={"string_param": "not json"})


@case
def load_config_partial(target):
    """RepositoryModelLoad facile, parameters {"config": '{"max_batch_size": 8}'}."""
    return _load(target, "facile", config={"string_param": '{"max_batch_size": 8}'})


@case
def load_file_without_config(target):
    """RepositoryModelLoad facile, parameters {"file:1/model.py": model.py's bytes}, no config."""
    return _load(target, "facile", **{"file:1/model.py": {"bytes_param": MODEL.encode()}})


@case
def load_file_with_config(target):
    """RepositoryModelLoad facile, parameters {"config": full facile JSON, "file:1/model.py": bytes}."""
    return _load(
        target, "facile", config={"string_param": FACILE_JSON}, **{"file:1/model.py": {"bytes_param": MODEL.encode()}}
    )


@case
def unload_unknown(target):
    """RepositoryModelUnload model_name="nope"."""
    return target.grpc("RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest(model_name="nope"))


# e. Zero-row batches.


@case
def infer_zero_rows(target):
    """ModelInfer input shape [0, 15], raw_input_contents [b""]."""
    return _model_infer(target, [_input_header((0, 15))], [b""])


@case
def http_infer_zero_rows_binary(target):
    """HTTP infer shape [0, 15], binary_data_size 0."""
    body, headers = _binary_infer(
        {"inputs": [{"name": "input", "shape": [0, 15], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]},
        b"",
    )
    return _http_infer(target, body, headers)


@case
def http_infer_zero_rows_json(target):
    """HTTP infer shape [0, 15], "data": []."""
    return _http_infer(target, {"inputs": [{"name": "input", "shape": [0, 15], "datatype": "FP32", "data": []}]})


# f. Bytes that are no protobuf message.


@case
def raw_model_infer(target):
    """ModelInfer with the request bytes b"\\xff\\xff\\xff"."""
    return target.raw("ModelInfer", b"\xff\xff\xff")


@case
def raw_server_metadata(target):
    """ServerMetadata with the request bytes b"\\xff\\xff\\xff"."""
    return target.raw("ServerMetadata", b"\xff\xff\xff")


@case
def raw_repository_load(target):
    """RepositoryModelLoad with the request bytes b"\\xff\\xff\\xff"."""
    return target.raw("RepositoryModelLoad", b"\xff\xff\xff")


@case
def raw_shm_register(target):
    """SystemSharedMemoryRegister with the request bytes b"\\xff\\xff\\xff"."""
    return target.raw("SystemSharedMemoryRegister", b"\xff\xff\xff")


# g. Versions, names and parameters.


@case
def version_arabic_indic(target):
    """ModelInfer model_version="١" (ARABIC-INDIC DIGIT ONE)."""
    return _model_infer(target, model_version="\u0661")


@case
def version_superscript(target):
    """ModelInfer model_version="²"."""
    return _model_infer(target, model_version="\u00b2")


@case
def version_negative(target):
    """ModelInfer model_version="-1"."""
    return _model_infer(target, model_version="-1")


@case
def version_zero(target):
    """ModelInfer model_version="0"."""
    return _model_infer(target, model_version="0")


@case
def model_name_nul(target):
    """ModelInfer model_name="facile\\0x"."""
    return _model_infer(target, model_name="facile\0x")


@case
def priority_text(target):
    """ModelInfer parameter priority=string "abc"."""
    return _model_infer(target, priority={"string_param": "abc"})


@case
def priority_huge(target):
    """ModelInfer parameter priority=int64 2**62."""
    return _model_infer(target, priority={"int64_param": 2**62})


@case
def timeout_text(target):
    """ModelInfer parameter timeout=string "abc"."""
    return _model_infer(target, timeout={"string_param": "abc"})


def _shm_infer(target, **parameters):
    target.grpc(
        "SystemSharedMemoryRegister",
        service_pb2.SystemSharedMemoryRegisterRequest(
            name="probe", key="/" + Path(SHM_FILE).name, offset=0, byte_size=4096
        ),
    )
    try:
        return _model_infer(target, [_input_header(shared_memory_region={"string_param": "probe"}, **parameters)], [])
    finally:
        target.shm_cleanup()


@case
def shm_offset_text(target):
    """ModelInfer input from a registered region, shared_memory_byte_size 60, shared_memory_offset="abc"."""
    return _shm_infer(target, shared_memory_byte_size={"int64_param": 60}, shared_memory_offset={"string_param": "abc"})


@case
def shm_byte_size_negative(target):
    """ModelInfer input from a registered region, shared_memory_byte_size=int64 -1."""
    return _shm_infer(target, shared_memory_byte_size={"int64_param": -1})


# h. Typed contents.


@case
def int32_contents_for_fp32(target):
    """ModelInfer input datatype INT32, int_contents of 15 values (the model takes FP32)."""
    tensor = _input_header(datatype="INT32")
    tensor.contents.int_contents.extend(range(15))
    return _model_infer(target, [tensor], [])


@case
def fp32_contents_wrong_count(target):
    """ModelInfer input FP32 [1, 15], fp32_contents of 14 values."""
    tensor = _input_header()
    tensor.contents.fp32_contents.extend([0.0] * 14)
    return _model_infer(target, [tensor], [])


@case
def int_contents_for_fp32_datatype(target):
    """ModelInfer input datatype FP32, 15 values in int_contents."""
    tensor = _input_header()
    tensor.contents.int_contents.extend(range(15))
    return _model_infer(target, [tensor], [])


# i. HTTP infer bodies and paths.


@case
def http_body_list(target):
    """HTTP infer body []."""
    return _http_infer(target, [])


@case
def http_body_string(target):
    """HTTP infer body "x"."""
    return _http_infer(target, "x")


@case
def http_inputs_object(target):
    """HTTP infer body {"inputs": {}}."""
    return _http_infer(target, {"inputs": {}})


@case
def http_shape_text(target):
    """HTTP infer input "shape": "abc"."""
    return _http_infer(target, {"inputs": [{"name": "input", "shape": "abc", "datatype": "FP32", "data": [1]}]})


@case
def http_deep_nesting(target):
    """HTTP infer "data" nested 100000 levels deep ([[[...]]])."""
    data = b"[" * 100000 + b"]" * 100000
    body = b'{"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": ' + data + b"}]}"
    return _http_infer(target, body)


@case
def http_invalid_json(target):
    """HTTP infer body '{"inputs": ['."""
    return _http_infer(target, b'{"inputs": [')


@case
def http_header_length_beyond_body(target):
    """HTTP infer Inference-Header-Content-Length = body length + 10."""
    body, headers = _binary_infer(ONE_ROW, b"")
    return _http_infer(target, body, headers | {"Inference-Header-Content-Length": str(len(body) + 10)})


@case
def http_header_length_negative(target):
    """HTTP infer Inference-Header-Content-Length: -1."""
    body, headers = _binary_infer(ONE_ROW, b"", -1)
    return _http_infer(target, body, headers)


@case
def http_header_length_text(target):
    """HTTP infer Inference-Header-Content-Length: abc."""
    body, headers = _binary_infer(ONE_ROW, b"")
    return _http_infer(target, body, headers | {"Inference-Header-Content-Length": "abc"})


@case
def http_unknown_path(target):
    """HTTP GET /v2/nope."""
    return target.http("GET", "/v2/nope")


@case
def http_infer_wrong_method(target):
    """HTTP GET /v2/models/facile/infer."""
    return target.http("GET", "/v2/models/facile/infer")


@case
def http_ready_wrong_method(target):
    """HTTP POST /v2/health/ready."""
    return target.http("POST", "/v2/health/ready")


# j. Outputs and statistics.


@case
def duplicate_outputs(target):
    """ModelInfer requesting output "output" twice."""
    return _model_infer(target, outputs=["output", "output"])


@case
def http_duplicate_outputs(target):
    """HTTP infer requesting output "output" twice."""
    return _http_infer(target, ONE_ROW | {"outputs": [{"name": "output"}, {"name": "output"}]})


@case
def statistics_unknown_model(target):
    """ModelStatistics name="nope"."""
    return target.grpc("ModelStatistics", service_pb2.ModelStatisticsRequest(name="nope"))


@case
def http_statistics_unknown_model(target):
    """HTTP GET /v2/models/nope/stats."""
    return target.http("GET", "/v2/models/nope/stats")


# k. Streams and compression.


def _stream_reply(reply):
    response = reply.infer_response
    final = {key: value.bool_param for key, value in response.parameters.items()}
    return [response.id, response.model_name, response.model_version, reply.error_message, len(response.outputs), final]


def _stream_request(request_id, rows=1, datatype="FP32", model_name="facile"):
    return service_pb2.ModelInferRequest(
        model_name=model_name,
        id=request_id,
        inputs=[_input_header((rows, 15), datatype)],
        raw_input_contents=[bytes(60 * rows)],
    )


@case
def stream_order_and_ids(target):
    """ModelStreamInfer: "big" (20000 rows), "wrong" (INT32), "small" (1 row), "nope" (unknown model)."""
    requests = [
        _stream_request("big", 20000),
        _stream_request("wrong", datatype="INT32"),
        _stream_request("small"),
        _stream_request("nope", model_name="nope"),
    ]
    try:
        replies = [_stream_reply(reply) for reply in target.stub.ModelStreamInfer(iter(requests), timeout=60)]
    except grpc.RpcError as error:
        return {"grpc": error.code().name, "details": error.details()}
    return {"grpc": "OK", "replies": replies}


def _compressed_infer(target, encoding, body, accept=None):
    headers = {"Content-Encoding": encoding} | ({"Accept-Encoding": accept} if accept else {})

    def summary(response, content):
        used = response.getheader("Content-Encoding")
        decoded = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(used, bytes)(content)
        return [used, _http_outputs(response, decoded)]

    return target.http("POST", "/v2/models/facile/infer", body, headers, summary=summary)


@case
def http_gzip_request_and_response(target):
    """HTTP infer, body gzip-compressed, Accept-Encoding: gzip."""
    return _compressed_infer(target, "gzip", gzip.compress(json.dumps(ONE_ROW).encode()), "gzip")


@case
def http_deflate_request_and_response(target):
    """HTTP infer, body deflate-compressed (zlib), Accept-Encoding: deflate."""
    return _compressed_infer(target, "deflate", zlib.compress(json.dumps(ONE_ROW).encode()), "deflate")


@case
def http_accept_gzip_and_deflate(target):
    """HTTP infer, plain body, Accept-Encoding: deflate, gzip."""
    return _compressed_infer(target, "identity", json.dumps(ONE_ROW).encode(), "deflate, gzip")


@case
def http_unsupported_encoding(target):
    """HTTP infer, Content-Encoding: br."""
    return _compressed_infer(target, "br", json.dumps(ONE_ROW).encode())


# l. Parameter types, binary chunks and input counts (issue 33).


def _bounded(answer, limit=600):
    """`answer` with an error text longer than `limit` cut, its full length told: a huge text is compared
    and recorded by its start and length."""
    for key in ("details", "body"):
        text = answer.get(key)
        if text is not None and len(text) > limit:
            answer[key] = f"{text[:limit]}... ({len(text)} characters)"
    return answer


@case
def priority_negative(target):
    """ModelInfer parameter priority=int64 -1."""
    return _model_infer(target, priority={"int64_param": -1})


@case
def http_priority_negative(target):
    """HTTP infer parameters {"priority": -1}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"priority": -1}})


@case
def timeout_uint64(target):
    """ModelInfer parameter timeout=uint64 1000000."""
    return _model_infer(target, timeout={"uint64_param": 1000000})


@case
def sequence_start_int(target):
    """ModelInfer parameter sequence_start=int64 1."""
    return _model_infer(target, sequence_start={"int64_param": 1})


@case
def http_sequence_start_int(target):
    """HTTP infer parameters {"sequence_start": 1}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"sequence_start": 1}})


@case
def empty_final_response_text(target):
    """ModelInfer parameter triton_enable_empty_final_response=string "true"."""
    return _model_infer(target, triton_enable_empty_final_response={"string_param": "true"})


@case
def http_empty_final_response_text(target):
    """HTTP infer parameters {"triton_enable_empty_final_response": "true"}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"triton_enable_empty_final_response": "true"}})


@case
def empty_final_response_bool(target):
    """ModelInfer parameter triton_enable_empty_final_response=bool true."""
    return _model_infer(target, triton_enable_empty_final_response={"bool_param": True})


@case
def http_empty_final_response_bool(target):
    """HTTP infer parameters {"triton_enable_empty_final_response": true}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"triton_enable_empty_final_response": True}})


@case
def http_parameter_float(target):
    """HTTP infer parameters {"custom": 1.5}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"custom": 1.5}})


@case
def http_parameter_list(target):
    """HTTP infer parameters {"custom": [1]}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"custom": [1]}})


@case
def http_parameter_null(target):
    """HTTP infer parameters {"custom": null}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"custom": None}})


@case
def http_parameter_object(target):
    """HTTP infer parameters {"custom": {"a": 1}}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"custom": {"a": 1}}})


@case
def http_binary_trailing_bytes(target):
    """HTTP infer, binary_data_size 60, 70 bytes after the header."""
    body, headers = _binary_infer(
        {"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "parameters": {"binary_data_size": 60}}]},
        bytes(70),
    )
    return _http_infer(target, body, headers)


@case
def http_data_and_binary(target):
    """HTTP infer, an input with both "data" (15 zeros) and binary_data_size 60, 60 bytes after the header."""
    body, headers = _binary_infer(
        {"inputs": [ONE_ROW["inputs"][0] | {"parameters": {"binary_data_size": 60}}]},
        bytes(60),
    )
    return _http_infer(target, body, headers)


MANY_INPUTS = 100000


@case
def inputs_100000(target):
    """ModelInfer with 100000 inputs "input", "x1" ... "x99999", each [1, 15] FP32 with empty raw contents."""
    inputs = [_input_header()] + [
        service_pb2.ModelInferRequest.InferInputTensor(name=f"x{i}", datatype="FP32", shape=[1, 15])
        for i in range(1, MANY_INPUTS)
    ]
    return _bounded(_model_infer(target, inputs, [b""] * MANY_INPUTS))


@case
def http_inputs_100000(target):
    """HTTP infer with 100000 inputs "input", "x1" ... "x99999", each [1, 15] FP32 of binary_data_size 0."""
    inputs = [
        {"name": f"x{i}" if i else "input", "shape": [1, 15], "datatype": "FP32", "parameters": {"binary_data_size": 0}}
        for i in range(MANY_INPUTS)
    ]
    body, headers = _binary_infer({"inputs": inputs}, b"")
    return _bounded(_http_infer(target, body, headers))


@case
def http_gzip_garbage(target):
    """HTTP infer, Content-Encoding: gzip, a body that is not gzip."""
    return _compressed_infer(target, "gzip", b"not gzip at all")


# l. Shared memory: a name or key registered twice, and output windows.


def _register_twice(target, first, second, http=False):
    """Register `first` (name, key), then answer the registration of `second` (gRPC, or HTTP)."""
    try:
        target.grpc(
            "SystemSharedMemoryRegister",
            service_pb2.SystemSharedMemoryRegisterRequest(name=first[0], key=first[1], byte_size=4096),
        )
        if http:
            body = {"key": second[1], "offset": 0, "byte_size": 4096}
            return target.http("POST", f"/v2/systemsharedmemory/region/{second[0]}/register", body)
        return target.grpc(
            "SystemSharedMemoryRegister",
            service_pb2.SystemSharedMemoryRegisterRequest(name=second[0], key=second[1], byte_size=4096),
        )
    finally:
        target.shm_cleanup()


SHM_KEY = "/" + Path(SHM_FILE).name


@case
def shm_same_name_twice(target):
    """SystemSharedMemoryRegister name="probe" twice (the same key, 4096 bytes)."""
    return _register_twice(target, ("probe", SHM_KEY), ("probe", SHM_KEY))


@case
def http_shm_same_name_twice(target):
    """SystemSharedMemoryRegister name="probe", then HTTP register "probe" again (the same key)."""
    return _register_twice(target, ("probe", SHM_KEY), ("probe", SHM_KEY), http=True)


@case
def shm_same_key_two_names(target):
    """SystemSharedMemoryRegister name="probe", then name="probe2", both of the same key."""
    return _register_twice(target, ("probe", SHM_KEY), ("probe2", SHM_KEY))


@case
def http_shm_same_key_two_names(target):
    """SystemSharedMemoryRegister name="probe", then HTTP register "probe2" of the same key."""
    return _register_twice(target, ("probe", SHM_KEY), ("probe2", SHM_KEY), http=True)


def _shm_output(target, http=False, region="probe", **window):
    """One row of facile inferred with its output (4 bytes) asked for in the window `window` of the
    registered 4096-byte region "probe" (gRPC, or HTTP)."""
    target.grpc(
        "SystemSharedMemoryRegister",
        service_pb2.SystemSharedMemoryRegisterRequest(name="probe", key=SHM_KEY, offset=0, byte_size=4096),
    )
    try:
        if http:
            parameters = {"shared_memory_region": region} | {f"shared_memory_{k}": v for k, v in window.items()}
            return _http_infer(target, ONE_ROW | {"outputs": [{"name": "output", "parameters": parameters}]})
        parameters = {"shared_memory_region": {"string_param": region}} | {
            f"shared_memory_{k}": {"int64_param": v} for k, v in window.items()
        }
        output = service_pb2.ModelInferRequest.InferRequestedOutputTensor(
            name="output", parameters={k: service_pb2.InferParameter(**v) for k, v in parameters.items()}
        )
        request = service_pb2.ModelInferRequest(
            model_name="facile", inputs=[_input_header()], raw_input_contents=[bytes(60)], outputs=[output]
        )
        return target.grpc("ModelInfer", request, summary=_outputs)
    finally:
        target.shm_cleanup()


@case
def shm_output_too_small(target):
    """ModelInfer, output in region "probe" with shared_memory_byte_size 2 (the output takes 4)."""
    return _shm_output(target, byte_size=2)


@case
def http_shm_output_too_small(target):
    """HTTP infer, output in region "probe" with shared_memory_byte_size 2 (the output takes 4)."""
    return _shm_output(target, http=True, byte_size=2)


@case
def shm_output_past_end(target):
    """ModelInfer, output in region "probe" at shared_memory_offset 4092, shared_memory_byte_size 8."""
    return _shm_output(target, offset=4092, byte_size=8)


@case
def http_shm_output_past_end(target):
    """HTTP infer, output in region "probe" at shared_memory_offset 4092, shared_memory_byte_size 8."""
    return _shm_output(target, http=True, offset=4092, byte_size=8)


@case
def shm_output_offset_at_end(target):
    """ModelInfer, output in region "probe" at shared_memory_offset 4096, shared_memory_byte_size 4."""
    return _shm_output(target, offset=4096, byte_size=4)


@case
def shm_output_unknown_region(target):
    """ModelInfer, output in region "nope" (not registered), shared_memory_byte_size 4."""
    return _shm_output(target, region="nope", byte_size=4)


@case
def http_shm_output_unknown_region(target):
    """HTTP infer, output in region "nope" (not registered), shared_memory_byte_size 4."""
    return _shm_output(target, http=True, region="nope", byte_size=4)


@case
def shm_output_last_bytes(target):
    """ModelInfer, output in region "probe" at shared_memory_offset 4092, shared_memory_byte_size 4."""
    return _shm_output(target, offset=4092, byte_size=4)


# n. Reserved request parameters. tritonserver 2.71 (the newest) reads them exactly as 2.51 does
# (server's src/grpc/infer_handler.cc SetInferenceRequestMetadata and src/http_server.cc
# ParseJsonTritonParams are unchanged from r24.10 to v2.71.0, wording included), so the real 2.51
# is the oracle for both; 2.69 only adds "headers" to the reserved names, which matters for
# --*-header-forward-pattern alone (see triton_observed.md).


@case
def triton_unknown_key(target):
    """ModelInfer parameter triton_other=bool true (a "triton_" key Triton does not allow)."""
    return _model_infer(target, triton_other={"bool_param": True})


@case
def sequence_id_double(target):
    """ModelInfer parameter sequence_id=double 1.5."""
    return _model_infer(target, sequence_id={"double_param": 1.5})


@case
def sequence_id_uint64(target):
    """ModelInfer parameter sequence_id=uint64 7."""
    return _model_infer(target, sequence_id={"uint64_param": 7})


@case
def sequence_end_text(target):
    """ModelInfer parameter sequence_end=string "true"."""
    return _model_infer(target, sequence_end={"string_param": "true"})


@case
def priority_double(target):
    """ModelInfer parameter priority=double 1.0."""
    return _model_infer(target, priority={"double_param": 1.0})


@case
def priority_uint64(target):
    """ModelInfer parameter priority=uint64 1."""
    return _model_infer(target, priority={"uint64_param": 1})


@case
def parameter_uint64(target):
    """ModelInfer parameter custom=uint64 1 (a parameter Triton passes on, of a type it does not)."""
    return _model_infer(target, custom={"uint64_param": 1})


@case
def parameter_unset(target):
    """ModelInfer parameter custom with no value set (an empty InferParameter)."""
    return _model_infer(target, custom={})


@case
def headers_and_binary_data_output(target):
    """ModelInfer parameters headers=string "x" and binary_data_output=bool true (reserved names
    that gRPC passes on as any other)."""
    return _model_infer(target, headers={"string_param": "x"}, binary_data_output={"bool_param": True})


@case
def http_triton_unknown_key(target):
    """HTTP infer parameters {"triton_other": true}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"triton_other": True}})


@case
def http_sequence_id_bool(target):
    """HTTP infer parameters {"sequence_id": true}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"sequence_id": True}})


@case
def http_sequence_id_text(target):
    """HTTP infer parameters {"sequence_id": "seq-1"}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"sequence_id": "seq-1"}})


@case
def http_timeout_text(target):
    """HTTP infer parameters {"timeout": "abc"}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"timeout": "abc"}})


@case
def http_binary_data_output_text(target):
    """HTTP infer parameters {"binary_data_output": "yes"}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"binary_data_output": "yes"}})


@case
def http_headers_object(target):
    """HTTP infer parameters {"headers": {"a": "b"}}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"headers": {"a": "b"}}})


@case
def http_headers_text(target):
    """HTTP infer parameters {"headers": "x"}."""
    return _http_infer(target, ONE_ROW | {"parameters": {"headers": "x"}})


@pytest.fixture(scope="module", autouse=True)
def probe_files():
    """The 4096-byte shared memory region and the file outside /dev/shm that the cases point at."""
    for path in (SHM_FILE, OUTSIDE_FILE):
        with open(path, "wb") as f:
            f.write(bytes(4096))
    yield
    for path in (SHM_FILE, OUTSIDE_FILE):
        os.unlink(path)


class Reference:
    """The reference tritonserver, started again when a case has killed it."""

    def __init__(self, workdir):
        self.workdir, self.process, self.current, self.starts = workdir, None, None, 0

    def target(self):
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self.starts += 1
            self.process, grpc_url, http_url = start_triton(self.workdir / str(self.starts))
            self.current = Target(grpc_url, http_url)
        return self.current

    def stop(self):
        if self.process is not None:
            self.current.close()
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    reference = Reference(tmp_path_factory.mktemp("triton"))
    yield reference
    reference.stop()


@pytest.fixture(scope="module")
def faast(model_repository, tmp_path_factory):
    server = Server(
        model_repository,
        tmp_path_factory.mktemp("faast") / "serve.log",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "facile",
    )
    target = Target(server.url, server.http_url)
    yield target
    target.close()
    server.stop()


@pytest.mark.parametrize("name", CASES)
def test_answers_like_triton(name, triton, faast):
    expected, got = CASES[name](triton.target()), CASES[name](faast)
    if name in DIFFERENCES:
        assert got != expected, f"faast now answers like Triton; drop {name} from DIFFERENCES"
    else:
        assert got == expected
