"""Wire compatibility of protos/ with Triton: every message tritonclient knows has, in ours, the same
fields with the same names, numbers, types and labels (and the same service methods). Both sets load in
this one process: faast.protocol's live in a descriptor pool of their own (faast/protocol/pool.py)."""

import pytest
import tritonclient.grpc.model_config_pb2 as triton_model_config
import tritonclient.grpc.service_pb2 as triton_service

from faast.protocol import model_config, service


def dump(file):
    """Every message's fields, enum's values and service method's types in `file` (a FileDescriptor)."""
    messages, enums, methods = {}, {}, {}

    def visit(message):
        messages[message.full_name] = {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.is_required,
                (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else "",
            ]
            for f in message.fields
        }
        for nested in message.nested_types:
            visit(nested)
        for enum in message.enum_types:
            enums[enum.full_name] = {v.name: v.number for v in enum.values}

    for message in file.message_types_by_name.values():
        visit(message)
    for enum in file.enum_types_by_name.values():
        enums[enum.full_name] = {v.name: v.number for v in enum.values}
    for svc in file.services_by_name.values():
        for m in svc.methods:
            methods[f"{svc.full_name}/{m.name}"] = [
                m.input_type.full_name,
                m.output_type.full_name,
                m.client_streaming,
                m.server_streaming,
            ]
    return {"messages": messages, "enums": enums, "methods": methods}


@pytest.mark.parametrize(("theirs", "ours"), [(triton_service, service), (triton_model_config, model_config)])
def test_protos_match_tritonclient_descriptors(theirs, ours):
    theirs, ours = dump(theirs.DESCRIPTOR), dump(ours.DESCRIPTOR)
    assert theirs["messages"], "tritonclient's descriptors list no messages"
    for kind in ("messages", "enums", "methods"):
        for name, expected in theirs[kind].items():
            assert ours[kind].get(name) == expected, f"{kind[:-1]} {name} differs from Triton's"


def test_the_whole_service_is_compared():
    assert len(dump(triton_service.DESCRIPTOR)["methods"]) >= 20
