"""Inference requests as the tests send them: tritonclient inputs of FACILE-shaped FP32 rows, an infer
call that returns the output array, a raw ModelInferRequest, and the bit patterns answers are compared by."""

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf.internal.encoder import _VarintBytes
from tritonclient.grpc import service_pb2


def varint(value: int) -> bytes:
    """`value` as protobuf's varint, by protobuf's own encoder (not faast.grpc_wire's, which it checks),
    for messages the tests write by hand (a length spared a copy)."""
    return _VarintBytes(value)


def facile_input(rows, module=grpcclient, name="input", datatype="FP32"):
    """A tritonclient InferInput (of `module`: tritonclient.grpc or tritonclient.http) carrying `rows`."""
    tensor = module.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    return tensor


def infer(client, rows, model="facile", **keywords):
    """`rows` through `client.infer` (a tritonclient gRPC or HTTP client; `keywords` go to infer as
    they are: model_version, outputs, headers, client_timeout...), answered as the "output" array."""
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    return client.infer(model, [facile_input(rows, module)], **keywords).as_numpy("output")


def infer_request(rows, model_name="facile", **fields):
    """A ModelInferRequest (tritonclient's message) whose one input "input" carries `rows` as raw
    FP32 bytes; `fields` are the message's other fields (id, model_version...)."""
    message = service_pb2.ModelInferRequest(model_name=model_name, **fields)
    message.inputs.add(name="input", datatype="FP32", shape=rows.shape)
    message.raw_input_contents.append(rows.tobytes())
    return message


def bits(array):
    """The float32 bit patterns of `array`, for answers that must match bit for bit."""
    return np.ascontiguousarray(array, np.float32).view(np.uint32)
