"""Bytes ↔ messages for the gRPC transport: deserializers that never raise, a ModelInferRequest
decoder that views raw tensor bytes in place, and an inference response encoder that copies them once.

grpc's generated registration parses each request with `Message.FromString` and answers a parse
failure itself, with its own wording; here a failure becomes an `Undecodable` value the service
answers with Triton's status. ModelInferRequest's `raw_input_contents` (field 7) can be gigabytes:
protobuf would copy them on parse and again on every access, so the decoder slices them out of
the received bytes as memoryviews and parses only the rest as a message. Nothing is copied before
the dataplane has checked shapes and sizes.

A ModelInferResponse's `raw_output_contents` (field 6) would be copied out of the output arrays,
into the message and into its serialized bytes; the encoder serializes the rest of the message and
joins it with views of the arrays, once, when grpc serializes the response.
"""

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from .protocol import service

RAW_INPUT_CONTENTS = service.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number
RAW_OUTPUT_CONTENTS = service.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number
STREAM_INFER_RESPONSE = service.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number
LENGTH_DELIMITED = 2


@dataclass
class Undecodable:
    """A request whose bytes are not a valid message of the method's request type."""

    reason: str
    nbytes: int


@dataclass
class WireInferRequest:
    """A ModelInferRequest whose raw_input_contents are views into the received bytes."""

    message: service.ModelInferRequest
    raw: list
    nbytes: int  # of the whole request


@dataclass
class EncodedMessage:
    """A serialized message as bytes-like parts, tensor bytes among them as views of the arrays; the
    response serializer joins them, the one copy those bytes take. No parts: the empty message."""

    parts: list = field(default_factory=list)

    def serialize(self) -> bytes:
        return b"".join(self.parts)


def _varint(data, position):
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _skip(data, position, wire_type):
    """The position after a field's value of `wire_type` that starts at `position`."""
    if wire_type == 0:
        return _varint(data, position)[1]
    if wire_type == 1:
        end = position + 8
    elif wire_type == LENGTH_DELIMITED:
        length, position = _varint(data, position)
        end = position + length
    elif wire_type == 5:
        end = position + 4
    else:
        raise DecodeError(f"unsupported wire type {wire_type}")
    if end > len(data):
        raise DecodeError("truncated field")
    return end


def decode_infer_request(data):
    """ModelInferRequest bytes → WireInferRequest; raises DecodeError for bytes that are not one."""
    view = memoryview(data)
    raw, rest, position = [], [], 0
    while position < len(view):
        start = position
        tag, position = _varint(view, position)
        field_number, wire_type = tag >> 3, tag & 7
        if field_number == RAW_INPUT_CONTENTS and wire_type == LENGTH_DELIMITED:
            length, position = _varint(view, position)
            if position + length > len(view):
                raise DecodeError("truncated raw_input_contents")
            raw.append(view[position : position + length])
            position += length
        else:
            position = _skip(view, position, wire_type)
            rest.append(view[start:position])
    return WireInferRequest(service.ModelInferRequest.FromString(b"".join(rest)), raw, len(view))


def _encode_varint(value):
    encoded = bytearray()
    while value >= 0x80:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _length_delimited(field_number, parts):
    """The parts of a length-delimited field whose value is `parts`."""
    length = sum(memoryview(part).nbytes for part in parts)
    return [_encode_varint(field_number << 3 | LENGTH_DELIMITED), _encode_varint(length), *parts]


def encode_infer_response(message, raw_output_contents):
    """ModelInferResponse `message`, which has no raw_output_contents, with `raw_output_contents`
    (buffers, one per output) → EncodedMessage viewing them. Protobuf writes fields in number order
    and raw_output_contents is the last, so this is the message holding them, serialized."""
    parts = [message.SerializeToString()]
    for raw in raw_output_contents:
        parts += _length_delimited(RAW_OUTPUT_CONTENTS, [raw])
    return EncodedMessage(parts)


def encode_stream_infer_response(infer_response):
    """EncodedMessage of a ModelInferResponse → EncodedMessage of the ModelStreamInferResponse holding it."""
    return EncodedMessage(_length_delimited(STREAM_INFER_RESPONSE, infer_response.parts))


def tolerant(parse):
    """`parse` as a deserializer that returns Undecodable instead of raising."""

    def deserialize(data):
        try:
            return parse(data)
        except (DecodeError, RuntimeError, ValueError) as error:
            return Undecodable(str(error), len(data))

    return deserialize
