"""faast.grpc_wire's inference response encoder, through faast.grpc_converters.infer_response.

The encoder joins the message serialized without raw_output_contents with views of the output
arrays; what it produces must be, byte for byte, `SerializeToString()` of the message holding the
arrays' bytes (the way responses were built before: `tensors.to_raw` appended to the message).
Outputs here are larger than 128 bytes, and some than 16384, so lengths take multi-byte varints.
"""

import numpy as np
import pytest

from faast import grpc_converters, tensors
from faast.dataplane import InferResponse, OutputTensor
from faast.grpc_wire import EncodedMessage, encode_stream_infer_response
from faast.protocol import service


def _output(name, datatype, data):
    return OutputTensor(name, datatype, tuple(data.shape), data)


def _response(outputs):
    return InferResponse("facile", "1", "request-7", outputs)


def _old_message(response, streamed=False):
    """The ModelInferResponse as it was built before the encoder: every output's bytes copied in."""
    message = service.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if streamed:
        message.parameters["triton_final_response"].bool_param = True
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(b"" if tensor.data is None else tensors.to_raw(tensor.data, tensor.datatype))
    return message


RNG = np.random.default_rng(7)
RESPONSES = {
    "several outputs": _response(
        [
            _output("energy", "FP32", RNG.standard_normal((64, 2), dtype=np.float32)),  # 512 bytes
            _output("mantissa", "INT8", RNG.integers(-128, 128, (300,), dtype=np.int8)),
            _output("precise", "FP64", RNG.standard_normal((50, 50))),  # 20000 bytes: a 3-byte varint
            _output("flag", "BOOL", RNG.integers(0, 2, (200,)).astype(bool)),
            _output("half", "FP16", RNG.standard_normal((3, 70)).astype(np.float16)),
        ]
    ),
    "shared memory and empty outputs": _response(
        [
            OutputTensor("to_region", "FP32", (64, 2), None),  # written to shared memory: an empty entry
            _output("no_rows", "FP32", np.zeros((0, 2), np.float32)),
            _output("after", "INT32", np.arange(100, dtype=np.int32)),
            OutputTensor("also_to_region", "INT8", (5,), None),
        ]
    ),
    "arrays the wire's dtype or layout must convert": _response(
        [
            _output("transposed", "FP32", RNG.standard_normal((40, 30), dtype=np.float32).T),
            _output("column", "FP64", RNG.standard_normal((100, 3))[:, 1]),
            _output("big_endian", "FP32", np.arange(200, dtype=">f4")),
            _output("widened", "INT64", np.arange(-50, 50, dtype=np.int8)),
            _output("scalar", "FP32", np.array(2.5, np.float32)),
        ]
    ),
    "no outputs": _response([]),
}


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("response", RESPONSES.values(), ids=RESPONSES.keys())
def test_encoded_response_is_the_message_serialized(response, streamed):
    encoded = grpc_converters.infer_response(response, streamed).serialize()
    assert encoded == _old_message(response, streamed).SerializeToString()


@pytest.mark.parametrize("response", RESPONSES.values(), ids=RESPONSES.keys())
def test_encoded_stream_response_is_the_message_serialized(response):
    encoded = encode_stream_infer_response(grpc_converters.infer_response(response, streamed=True)).serialize()
    expected = service.ModelStreamInferResponse(infer_response=_old_message(response, streamed=True))
    assert encoded == expected.SerializeToString()
    assert service.ModelStreamInferResponse.FromString(encoded) == expected


def test_outputs_in_the_wire_layout_are_not_copied_before_the_join():
    fp32 = np.arange(1000, dtype=np.float32).reshape(100, 10)
    transposed = np.arange(1000, dtype=np.float32).reshape(100, 10).T
    parts = grpc_converters.infer_response(
        _response([_output("a", "FP32", fp32), _output("b", "FP32", transposed)])
    ).parts
    views = [part for part in parts if isinstance(part, memoryview)]
    assert len(views) == 2
    assert np.shares_memory(np.asarray(views[0]), fp32)
    assert not np.shares_memory(np.asarray(views[1]), transposed)  # the one copy the layout needs


def test_the_empty_encoded_message_is_the_empty_message():
    """What a failed ModelInfer call returns beside its status."""
    assert EncodedMessage().serialize() == service.ModelInferResponse().SerializeToString() == b""
