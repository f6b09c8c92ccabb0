"""gRPC transport: Triton's GRPCInferenceService and grpc.health.v1 over the dataplane.

Converts protocol messages to the dataplane's dataclasses and back, and maps the dataplane's typed
errors to gRPC status codes; no inference semantics live here.
"""

import functools

import grpc

from . import tensors
from .dataplane import InferRequest, InputTensor
from .errors import InferenceError, Internal, InvalidArgument, NotFound, Unavailable, Unimplemented
from .protocol import health, health_grpc, service, service_grpc

STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    Internal: grpc.StatusCode.INTERNAL,
}
# Triton's limits: clients send 16000-row batches and large images in one message.
MESSAGE_LIMIT_OPTIONS = [("grpc.max_send_message_length", 2**31 - 1),
                         ("grpc.max_receive_message_length", 2**31 - 1)]


def _status_on_error(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except InferenceError as error:
            await context.abort(STATUS[type(error)], str(error))
    return wrapper


def infer_request(message):
    """ModelInferRequest → InferRequest; tensor bytes are read lazily so errors come in Triton's order."""
    model = message.model_name
    raw = message.raw_input_contents

    def reader(index, tensor):
        def read():
            if raw:
                if tensor.HasField("contents"):
                    raise InvalidArgument(f"contents field must not be specified when using raw_input_contents "
                                          f"for '{tensor.name}' for model '{model}'")
                if index >= len(raw):
                    raise InvalidArgument(f"unable to find data for input tensor '{tensor.name}' for model "
                                          f"'{model}' in request.")
                return raw[index]
            return tensors.contents_to_raw(tensor.name, model, tensor.datatype, tensor.contents)
        return read

    return InferRequest(
        model_name=model, model_version=message.model_version, id=message.id,
        inputs=[InputTensor(t.name, t.datatype, tuple(t.shape), reader(i, t)) for i, t in enumerate(message.inputs)],
        outputs=[o.name for o in message.outputs], parameters=parameters(message.parameters))


def parameters(message_map):
    """map<string, InferParameter> → {name: python value}."""
    result = {}
    for key, value in message_map.items():
        choice = value.WhichOneof("parameter_choice")
        result[key] = getattr(value, choice) if choice else None
    return result


def infer_response(response):
    message = service.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                         id=response.id)
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(tensors.to_raw(tensor.data, tensor.datatype))
    return message


class InferenceService(service_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane):
        self.dataplane = dataplane

    async def ServerLive(self, request, context):
        return service.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service.ServerReadyResponse(ready=self.dataplane.ready)

    async def ModelReady(self, request, context):
        return service.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return self.dataplane.server_metadata()

    @_status_on_error
    async def ModelMetadata(self, request, context):
        return self.dataplane.model_metadata(request.name, request.version)

    @_status_on_error
    async def ModelConfig(self, request, context):
        return service.ModelConfigResponse(config=self.dataplane.model_config(request.name, request.version))

    @_status_on_error
    async def ModelStatistics(self, request, context):
        return self.dataplane.model_statistics(request.name, request.version)

    @_status_on_error
    async def ModelInfer(self, request, context):
        return infer_response(await self.dataplane.infer(infer_request(request)))


class HealthService(health_grpc.HealthServicer):
    """grpc.health.v1: SERVING when the server (service "") or the named model is ready."""

    def __init__(self, dataplane):
        self.dataplane = dataplane

    async def Check(self, request, context):
        ready = self.dataplane.ready and (not request.service or self.dataplane.model_ready(request.service))
        status = health.HealthCheckResponse.SERVING if ready else health.HealthCheckResponse.NOT_SERVING
        return health.HealthCheckResponse(status=status)


def create_server(dataplane, address):
    server = grpc.aio.server(options=MESSAGE_LIMIT_OPTIONS)
    service_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(dataplane), server)
    health_grpc.add_HealthServicer_to_server(HealthService(dataplane), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server
