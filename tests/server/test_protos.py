"""Wire compatibility of protos/ with Triton: every message tritonclient knows has, in ours, the same
fields with the same names, numbers, types and labels (and the same service methods)."""

import json
import subprocess

import tritonclient.grpc.model_config_pb2 as triton_model_config
import tritonclient.grpc.service_pb2 as triton_service
from support import PYTHON

# Runs in a child process: our messages and tritonclient's share full names, and one process's
# protobuf descriptor pool must not hold both.
DUMP_OURS = """
import json
from faast.protocol import model_config, service
from tests_dump import dump
print(json.dumps({"service": dump(service.DESCRIPTOR), "model_config": dump(model_config.DESCRIPTOR)}))
"""

DUMP = """
def dump(file):
    messages, enums, methods = {}, {}, {}

    def visit(message):
        messages[message.full_name] = {
            f.name: [f.number, f.type, f.is_repeated, f.is_required,
                     (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else ""]
            for f in message.fields}
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
            methods[f"{svc.full_name}/{m.name}"] = [m.input_type.full_name, m.output_type.full_name,
                                                   m.client_streaming, m.server_streaming]
    return {"messages": messages, "enums": enums, "methods": methods}
"""


def test_protos_match_tritonclient_descriptors(tmp_path):
    (tmp_path / "tests_dump.py").write_text(DUMP)
    namespace = {}
    exec(DUMP, namespace)
    theirs = {
        "service": namespace["dump"](triton_service.DESCRIPTOR),
        "model_config": namespace["dump"](triton_model_config.DESCRIPTOR),
    }
    ours = json.loads(
        subprocess.run(
            [*PYTHON, "-c", DUMP_OURS],
            cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    for file in ("service", "model_config"):
        assert theirs[file]["messages"], "tritonclient's descriptors list no messages"
        for kind in ("messages", "enums", "methods"):
            for name, expected in theirs[file][kind].items():
                assert ours[file][kind].get(name) == expected, f"{kind[:-1]} {name} differs from Triton's"
    assert len(theirs["service"]["methods"]) >= 20  # the whole GRPCInferenceService is compared
