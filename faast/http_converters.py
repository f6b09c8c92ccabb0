"""HTTP/REST wire ↔ the dataplane's dataclasses: KServe v2 JSON (with Triton's binary tensor data
extension) to InferRequest and InferResponse back, and the JSON helpers the other routes share.

Every field a client sends is type-checked here, so a malformed body is an InvalidArgument naming
the field; what the request means is checked by the dataplane.
"""

import base64
import json
import math
import re
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from . import http_encoding, tensors
from .contract.errors import InvalidArgument
from .dataplane import InferRequest, InferResponse, InputTensor, RequestedOutput
from .shared_memory import region_from_parameters

HEADER_LENGTH = "Inference-Header-Content-Length"
# Request parameters Triton's HTTP endpoint reads itself, each of its own type (checked by the
# dataplane); any other parameter is a string, a boolean or a number, and none starts with "triton_".
READ_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output")
# Where an input's bytes may come from: exactly one of these.
INPUT_SOURCES = (
    ("data", "'data'"),
    ("binary_data_size", "'binary_data_size' in 'parameters'"),
    ("shared_memory_region", "'shared_memory_region' in 'parameters'"),
)


INT64_MAX = 2**63 - 1


def message_to_json(message):
    """A protobuf message as KServe/Triton JSON: field names as in the .proto, integers as numbers."""

    def scalar(field, value):
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return message_to_json(value)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return field.enum_type.values_by_number[value].name
        if field.type == FieldDescriptor.TYPE_BYTES:
            return base64.b64encode(value).decode()
        return value

    result: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type and field.message_type.GetOptions().map_entry:
            inner = field.message_type.fields_by_name["value"]
            result[field.name] = {key: scalar(inner, item) for key, item in value.items()}
        elif field.is_repeated:
            result[field.name] = [scalar(field, item) for item in value]
        else:
            result[field.name] = scalar(field, value)
    return result


class HeaderSizeError(InvalidArgument):
    """A binary request's header length outside its body; Triton answers it as text/plain."""


def parse_json(text):
    """Parsed JSON of a request body; malformed or too deeply nested JSON is the client's mistake."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {type(error).__name__}: {error}") from None


def json_object(value, what):
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def json_field(mapping, key, kind, what, default=None):
    """mapping[key], which must be of `kind` (bool is never an int); `default` when absent."""
    if key not in mapping:
        if default is None:
            raise InvalidArgument(f"missing '{key}' in {what}")
        return default
    value = mapping[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise InvalidArgument(f"'{key}' in {what} has the wrong type: {type(value).__name__}")
    return value


def _shape(tensor, name):
    shape = json_field(tensor, "shape", list, f"input '{name}'")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"the shape of input '{name}' must be a list of integers")
    return tuple(shape)


def infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str, max_input_size: int
) -> tuple[InferRequest, set[str], bool]:
    """A KServe v2 infer body (JSON, optionally followed by binary tensors) → (InferRequest, the
    outputs wanted as binary, whether binary is the default); binary tensors are views into the body.
    The JSON, and each JSON input's data, may hold `max_input_size` bytes (--http-max-input-size)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise HeaderSizeError(f"inference header size should be in range (0, {len(body)}), got: {header_length}")
    http_encoding.check_json_size(len(body) if header_length is None else header_length, max_input_size)
    header = json_object(
        parse_json(body[:header_length] if header_length is not None else body), "the inference request"
    )
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs = []
    for tensor in json_field(header, "inputs", list, "the inference request"):
        tensor = json_object(tensor, "an input")
        name = json_field(tensor, "name", str, "an input")
        datatype = json_field(tensor, "datatype", str, f"input '{name}'")
        shape = _shape(tensor, name)
        params = json_field(tensor, "parameters", dict, f"input '{name}'", {})
        _check_one_source(tensor, params)
        entry = InputTensor(name, datatype, shape, shared_memory=region_from_parameters(params, name))
        inputs.append(entry)
        if entry.shared_memory is not None:
            continue
        if "binary_data_size" in params:
            size = json_field(params, "binary_data_size", int, f"parameters of '{name}'")
            if size < 0 or offset + size > len(binary):
                raise InvalidArgument(
                    f"unexpected binary_data_size {size} for input '{name}': the body holds "
                    f"{len(binary) - offset} more bytes"
                )
            chunk = binary[offset : offset + size]
            offset += size
            entry.data = chunk
        else:
            if "data" in tensor:
                _check_json_shape(name, shape)
                _check_json_input_size(name, datatype, shape, max_input_size)
            try:
                entry.data = _json_data(tensor.get("data"), datatype, name, model_name)
            except InvalidArgument as error:  # reported in Triton's order, by the dataplane
                entry.error = error
    if offset < len(binary):
        raise InvalidArgument(f"unexpected additional input data for model '{model_name}'")
    parameters = dict(json_field(header, "parameters", dict, "the inference request", {}))
    _check_parameters(parameters)
    binary_default = parameters.pop("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidArgument("'binary_data_output' must be a boolean")
    outputs, binary_outputs = [], set()
    for output in json_field(header, "outputs", list, "the inference request", []):
        output = json_object(output, "a requested output")
        name = json_field(output, "name", str, "a requested output")
        params = json_field(output, "parameters", dict, f"output '{name}'", {})
        outputs.append(RequestedOutput(name, region_from_parameters(params, name)))
        if json_field(params, "binary_data", bool, f"parameters of '{name}'", binary_default):
            binary_outputs.add(name)
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' of the inference request must be a string")
    request = InferRequest(model_name, model_version, request_id, inputs, outputs, parameters)
    return request, binary_outputs, binary_default


def _check_one_source(tensor, params):
    """An input names one source of its bytes at most (none: the dataplane says it has no data)."""
    given = [key for key, _ in INPUT_SOURCES if key in (tensor if key == "data" else params)]
    if len(given) > 1:
        raise InvalidArgument(
            "Input must set only one of the following fields: "
            + ", ".join(described for _, described in INPUT_SOURCES)
            + ". But set "
            + " ".join(f"'{key}'" for key in given)
        )


def _check_parameters(parameters):
    """Triton's HTTP checks of request parameters: no "triton_" keys, and values it can pass on."""
    for key, value in parameters.items():
        if key.startswith("triton_"):
            raise InvalidArgument(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."
            )
        if key not in READ_PARAMETERS and not isinstance(value, str | bool | int | float):
            raise InvalidArgument(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
            )


def _check_json_shape(name, shape):
    """Triton 2.59+'s check of a JSON input's shape (http_server.cc, common.cc's GetElementCount): a
    dimension it reads as below -1 (an unsigned value of 2^63 or more, as int64) or an element count
    past int64 is refused in its words. A shape written with negative values Triton cannot read at
    all (not an unsigned integer): that keeps faast's answer to a shape the model does not take."""
    if any(d < 0 for d in shape):
        return
    dims = [d - 2**64 if d >= 2**63 else d for d in shape]
    count = 1
    for dim in dims:
        if dim == -1 or dim == 0:  # a wildcard, or no elements: Triton counts no further
            return
        if dim < 0:
            raise InvalidArgument(
                f"invalid shape for input '{name}': shape {_shape_text(dims)} contains one or more invalid dimensions"
            )
        count *= dim
        if count > INT64_MAX:
            raise InvalidArgument(
                f"invalid shape for input '{name}': shape {_shape_text(dims)} causes total element count to exceed "
                f"maximum size of {INT64_MAX}"
            )


def _shape_text(dims):
    return "[" + ",".join(str(d) for d in dims) + "]"


def _check_json_input_size(name, datatype, shape, limit):
    """tritonserver's bound of a JSON input's bytes, as its shape and datatype make them."""
    if datatype in tensors.NUMPY and all(dimension >= 0 for dimension in shape):
        byte_size = math.prod(shape) * np.dtype(tensors.NUMPY[datatype]).itemsize
        if byte_size > limit:
            what = f"JSON input '{name}' has a byte_size ({byte_size} bytes) that exceeds the maximum allowed value of"
            raise InvalidArgument(http_encoding.too_large(what, limit))


def _json_data(data, datatype, name, model_name):
    if datatype not in tensors.NUMPY:
        raise InvalidArgument(f"datatype '{datatype}' of input '{name}' is not supported by faast")
    if data is None:
        raise InvalidArgument(f"unable to find data for input tensor '{name}' for model '{model_name}' in request.")
    try:
        return np.asarray(data, dtype=tensors.NUMPY[datatype]).tobytes()
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(f"unable to parse 'data' of input '{name}' as '{datatype}' values") from None


def binary_header_length(headers):
    text = headers.get(HEADER_LENGTH)
    if text is None:
        return None
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InvalidArgument(f"{HEADER_LENGTH} must be an integer, got '{text}'")
    return int(text)


def infer_response(
    response: InferResponse, binary_outputs: set[str], binary_default: bool
) -> tuple[bytes, list[bytes]]:
    """An InferResponse → (the JSON header, the binary tensors after it, in order); outputs named in
    `binary_outputs`, or all with `binary_default`, go as binary, the others as JSON data."""
    entries: list[dict[str, Any]] = []
    header: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        header["id"] = response.id
    header["outputs"] = entries
    blobs = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.data is None:
            pass  # written to the client's shared memory region
        elif tensor.name in binary_outputs or binary_default:
            raw = tensors.to_raw(tensor.data, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.data.ravel().tolist()
        entries.append(entry)
    return json.dumps(header).encode(), blobs


def trace_values(key, value):
    """A trace setting's JSON value → its list of strings (null clears it)."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"trace setting '{key}' must be a string or a list of strings")
    return values
