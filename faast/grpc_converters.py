"""gRPC wire ↔ the dataplane's dataclasses: ModelInferRequest to InferRequest, InferResponse back
to ModelInferResponse, and protobuf parameter maps to Python values.

Tensor bytes stay views into the received message, and output bytes views of the output arrays
until grpc serializes the response (faast.grpc_wire); an input the wire got wrong carries its
error, which the dataplane raises where Triton reports it.
"""

from collections.abc import Mapping
from typing import Any

from . import tensors
from .contract.errors import InvalidArgument
from .dataplane import InferRequest, InferResponse, InputTensor, RequestedOutput
from .grpc_wire import EncodedMessage, WireInferRequest, encode_infer_response
from .protocol import service
from .shared_memory import region_from_parameters


def parameters(message_map: Mapping[str, Any]) -> dict[str, Any]:
    """map<string, InferParameter> (or LogSettings' SettingValue) → {name: python value}."""
    result = {}
    for key, value in message_map.items():
        choice = value.WhichOneof("parameter_choice")
        result[key] = getattr(value, choice) if choice else None
    return result


# Request parameters Triton reads as a signed 64-bit integer (a uint64_param is refused), with the
# InferParameter fields it accepts for them.
SIGNED_PARAMETERS = {"timeout": "int64_param", "sequence_id": "int64_param or string_param"}
# The parameters Triton reads itself; it passes any other on to the model if it is an int64, bool,
# string or double (the "triton_" keys are refused or read apart, by the dataplane).
READ_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout")


def _parameter_error(message_map) -> InvalidArgument | None:
    """What the wire types of a request's parameters get wrong that their Python values no longer
    show (both int64_param and uint64_param become an int, and an unset choice None)."""
    for key, expected in SIGNED_PARAMETERS.items():
        if key in message_map and message_map[key].WhichOneof("parameter_choice") == "uint64_param":
            return InvalidArgument(f"invalid value type for '{key}' parameter, expected {expected}.")
    for key, value in message_map.items():
        if key in READ_PARAMETERS or key.startswith("triton_"):
            continue
        if value.WhichOneof("parameter_choice") in ("uint64_param", None):
            return InvalidArgument(
                f"invalid value type for '{key}' parameter, expected int64_param, bool_param, or string_param."
            )
    return None


def infer_request(wire: WireInferRequest) -> InferRequest:
    """raw_input_contents holds one entry per input that does not come from shared memory, in order."""
    message, raw = wire.message, wire.raw
    model = message.model_name
    inputs, raw_index = [], 0
    for tensor in message.inputs:
        entry = InputTensor(
            tensor.name,
            tensor.datatype,
            tuple(tensor.shape),
            shared_memory=region_from_parameters(parameters(tensor.parameters), tensor.name),
        )
        try:
            if entry.shared_memory is not None:
                if tensor.HasField("contents"):
                    raise InvalidArgument(
                        f"unexpected 'content' provided when using shared memory for input tensor "
                        f"'{tensor.name}' for model '{model}'"
                    )
            elif raw:
                if tensor.HasField("contents"):
                    raise InvalidArgument(
                        f"contents field must not be specified when using raw_input_contents "
                        f"for '{tensor.name}' for model '{model}'"
                    )
                if raw_index >= len(raw):
                    raise InvalidArgument(
                        f"unable to find data for input tensor '{tensor.name}' for model '{model}' in request."
                    )
                entry.data = raw[raw_index]
            else:
                entry.data = tensors.contents_to_raw(tensor.name, model, tensor.datatype, tensor.contents)
        except InvalidArgument as error:
            entry.error = error
        raw_index += entry.shared_memory is None
        inputs.append(entry)
    outputs = [
        RequestedOutput(o.name, region_from_parameters(parameters(o.parameters), o.name)) for o in message.outputs
    ]
    request = InferRequest(model, message.model_version, message.id, inputs, outputs, parameters(message.parameters))
    request.error = _parameter_error(message.parameters)
    return request


def infer_response(response: InferResponse, streamed: bool = False) -> EncodedMessage:
    """ModelInferResponse whose raw_output_contents view the output arrays (faast.grpc_wire); a
    streamed one says it is its request's last, as Triton's do for a model that is not decoupled."""
    message = service.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if streamed:
        message.parameters["triton_final_response"].bool_param = True
    raw_output_contents = []
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        # An output written to shared memory keeps an empty entry, so indices still match outputs.
        raw_output_contents.append(
            b"" if tensor.data is None else tensors.wire_array(tensor.data, tensor.datatype).data
        )
    return encode_infer_response(message, raw_output_contents)
