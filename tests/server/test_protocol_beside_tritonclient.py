"""faast.protocol and tritonclient.grpc in one process (issue 32): both define Triton's grpc_service.proto
and model_config.proto under Triton's own names; faast's live in a descriptor pool of their own, so a
program may import both, in either order, and pass messages between them as bytes."""

import json
import subprocess

import grpc
import numpy as np
import pytest
import tritonclient.grpc.model_config_pb2 as triton_model_config
from google.protobuf import descriptor_pool, json_format
from support import PYTHON, bits, infer
from tritonclient.grpc import service_pb2 as triton_service
from tritonclient.grpc import service_pb2_grpc as triton_service_grpc

from faast.protocol import POOL, model_config, service, service_grpc

# Imports both packages in the order given, then the faast modules that use faast.protocol, and hands
# a request of each package's making to the other's parser.
BOTH_IN_ONE_PROCESS = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
import faast.grpc_server, faast.grpc_wire, faast.grpc_converters
from faast.protocol import service
from tritonclient.grpc import service_pb2 as triton

def request(module):
    message = module.ModelInferRequest(model_name="facile", id="both", raw_input_contents=[b"rows"])
    message.parameters["priority"].int64_param = 3
    message.inputs.add(name="input", datatype="FP32", shape=[1, 15]).contents.fp32_contents.extend([0.5, 2])
    message.outputs.add(name="output").parameters["classification"].int64_param = 2
    return message.SerializeToString(deterministic=True)

ours, theirs = request(service), request(triton)
print(json.dumps({
    "ours": ours.hex(), "theirs": theirs.hex(),
    "ours_reserialized_by_tritonclient": triton.ModelInferRequest.FromString(ours)
    .SerializeToString(deterministic=True).hex(),
    "theirs_reserialized_by_faast": service.ModelInferRequest.FromString(theirs)
    .SerializeToString(deterministic=True).hex(),
}))
"""


@pytest.mark.parametrize(
    "import_order", [["tritonclient.grpc", "faast.protocol"], ["faast.protocol", "tritonclient.grpc"]]
)
def test_both_import_in_either_order_and_agree_on_bytes(import_order):
    ran = subprocess.run([*PYTHON, "-c", BOTH_IN_ONE_PROCESS, *import_order], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    made = json.loads(ran.stdout)
    assert made["ours"] == made["theirs"]
    assert made["ours_reserialized_by_tritonclient"] == made["ours"]
    assert made["theirs_reserialized_by_faast"] == made["theirs"]


def test_tritonclient_keeps_the_default_pool():
    default = descriptor_pool.Default()
    assert default.FindFileByName("grpc_service.proto").serialized_pb == triton_service.DESCRIPTOR.serialized_pb
    assert default.FindMessageTypeByName("inference.ModelInferRequest") is triton_service.ModelInferRequest.DESCRIPTOR
    assert POOL.FindMessageTypeByName("inference.ModelInferRequest") is service.ModelInferRequest.DESCRIPTOR
    assert service.ModelInferRequest.DESCRIPTOR is not triton_service.ModelInferRequest.DESCRIPTOR


def test_server_answers_faast_messages_beside_tritonclient_calls(server, facile_inputs):
    """One process: tritonclient.grpc's client and faast.protocol's stub ask a real faast server for the
    same rows; the request faast.protocol builds is what tritonclient parses, and the answers agree."""
    rows = facile_inputs[0][:64]
    expected = infer(server.client, rows)

    request = service.ModelInferRequest(model_name="facile", id="faast.protocol")
    request.inputs.add(name="input", datatype="FP32", shape=rows.shape)
    request.outputs.add(name="output")
    request.raw_input_contents.append(rows.tobytes())
    parsed = triton_service.ModelInferRequest.FromString(request.SerializeToString())
    assert json_format.MessageToDict(parsed) == json_format.MessageToDict(request)
    assert parsed.SerializeToString(deterministic=True) == request.SerializeToString(deterministic=True)

    with grpc.insecure_channel(server.url) as channel:
        ours = service_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        theirs = triton_service_grpc.GRPCInferenceServiceStub(channel).ModelInfer(parsed, timeout=30)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert (ours.id, ours.outputs[0].name, list(ours.outputs[0].shape)) == ("faast.protocol", "output", [64, 1])
    answer = np.frombuffer(ours.raw_output_contents[0], np.float32).reshape(expected.shape)
    assert np.array_equal(bits(answer), bits(expected))


def test_model_config_from_tritonclient_parses_as_faast_message(server):
    config = server.client.get_model_config("facile").config
    assert isinstance(config, triton_model_config.ModelConfig)
    ours = model_config.ModelConfig.FromString(config.SerializeToString())
    assert json_format.MessageToDict(ours) == json_format.MessageToDict(config)
    assert ours.parameters["device"].string_value == config.parameters["device"].string_value != ""
