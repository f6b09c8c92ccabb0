"""Error table: each malformed request gets Triton's status code and message, and the server stays
up. Requests are built with tritonclient's own protocol messages, so anything a client can send
can be sent."""

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROWS = np.arange(30, dtype=np.float32).reshape(2, 15)
PREFIX = "[request id: <id_unknown>] "
ROWS_RAW = (ROWS.tobytes(),)


def request(
    model="facile",
    version="",
    shape=(2, 15),
    datatype="FP32",
    raw=ROWS_RAW,
    name="input",
    outputs=(),
    extra_input=False,
    contents=None,
    parameters=None,
):
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if contents is not None:
        tensor.contents.fp32_contents.extend(contents)
    if extra_input:
        message.inputs.add(name="extra", datatype="FP32", shape=shape)
    message.raw_input_contents.extend(raw)
    for output in outputs:
        message.outputs.add(name=output)
    for key, value in (parameters or {}).items():
        message.parameters[key].string_param = value
    return message


def shm_input():
    message = request(raw=())
    message.inputs[0].parameters["shared_memory_region"].string_param = "never_registered"
    message.inputs[0].parameters["shared_memory_byte_size"].int64_param = 120
    return message


CASES = [
    ("unknown model", request(model="nope"), "NOT_FOUND", "Request for unknown model: 'nope' is not found"),
    (
        "unknown version",
        request(version="7"),
        "NOT_FOUND",
        "Request for unknown model: 'facile' version 7 is not found",
    ),
    (
        "bad version",
        request(version="x"),
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string 'x'",
    ),
    (
        "shape",
        request(shape=(2, 14), raw=(ROWS[:, :14].tobytes(),)),
        "INVALID_ARGUMENT",
        PREFIX + "unexpected shape for input 'input' for model 'facile'. Expected [-1,15], got [2,14]. NOTE:",
    ),
    (
        "no batch dimension",
        request(shape=(15,), raw=(ROWS[0].tobytes(),)),
        "INVALID_ARGUMENT",
        PREFIX + "unexpected shape for input 'input' for model 'facile'. Expected [-1,15], got [15].",
    ),
    (
        "batch too large",
        request(shape=(70000, 15), raw=(b"",)),
        "INVALID_ARGUMENT",
        PREFIX + "inference request batch-size must be <= 65536 for 'facile'",
    ),
    (
        "datatype",
        request(datatype="INT32"),
        "INVALID_ARGUMENT",
        PREFIX + "inference input 'input' data-type is 'INT32', but model 'facile' expects 'FP32'",
    ),
    (
        "missing input",
        request(name="wrong"),
        "INVALID_ARGUMENT",
        "unexpected inference input 'wrong' for model 'facile'",
    ),
    (
        "extra input",
        request(extra_input=True, raw=(ROWS.tobytes(), ROWS.tobytes())),
        "INVALID_ARGUMENT",
        PREFIX + "expected 1 inputs but got 2 inputs for model 'facile'. Got input(s) ['input','extra']",
    ),
    (
        "unknown output",
        request(outputs=("energy",)),
        "INVALID_ARGUMENT",
        "unexpected inference output 'energy' for model 'facile'",
    ),
    (
        "byte size",
        request(raw=(ROWS.tobytes()[:-4],)),
        "INVALID_ARGUMENT",
        PREFIX + "input byte size mismatch for input 'input' for model 'facile'. Expected 120, got 116",
    ),
    (
        "too few raw buffers",
        request(raw=(ROWS.tobytes(),), extra_input=True),
        "INVALID_ARGUMENT",
        "unable to find data for input tensor 'extra' for model 'facile' in request.",
    ),
    (
        "contents and raw",
        request(contents=ROWS.ravel().tolist()),
        "INVALID_ARGUMENT",
        "contents field must not be specified when using raw_input_contents for 'input' for model 'facile'",
    ),
    (
        "reserved parameter",
        request(parameters={"triton_secret": "x"}),
        "INVALID_ARGUMENT",
        "parameter keys starting with 'triton_' are reserved for Triton usage.",
    ),
    ("unknown shared memory", shm_input(), "NOT_FOUND", "Unable to find shared memory region: 'never_registered'"),
]


@pytest.mark.parametrize("case, message, code, text", CASES, ids=[case[0] for case in CASES])
def test_malformed_request_gets_tritons_status_and_message(server, case, message, code, text):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(message)
        assert caught.value.code().name == code
        assert caught.value.details().startswith(text), caught.value.details()
        # The server is unharmed and the same connection still answers a good request.
        good = stub.ModelInfer(request())
        assert np.frombuffer(good.raw_output_contents[0], np.float32).shape == (2,)


def test_typed_contents_are_accepted_and_outputs_come_raw(server):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        raw = stub.ModelInfer(request())
        typed = stub.ModelInfer(request(raw=(), contents=ROWS.ravel().tolist()))
        assert typed.raw_output_contents == raw.raw_output_contents and not typed.outputs[0].HasField("contents")
        selected = stub.ModelInfer(request(outputs=("output",)))
        assert [o.name for o in selected.outputs] == ["output"]
        echoed = request()
        echoed.id = "my-request-7"
        assert stub.ModelInfer(echoed).id == "my-request-7"
