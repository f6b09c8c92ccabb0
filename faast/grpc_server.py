"""gRPC transport: Triton's GRPCInferenceService and grpc.health.v1 over the dataplane.

Each method decodes its request (faast.grpc_converters, faast.grpc_wire), calls the dataplane or the
handlers, and answers a typed error with the status code the error carries (faast.contract.errors);
no inference semantics live here.
"""

import asyncio
import functools
import logging
from collections.abc import Sequence

import grpc

from . import grpc_converters as converters
from . import memory, security
from .contract.errors import InferenceError, Internal, Unavailable, fault_message
from .dataplane import DataPlane
from .grpc_wire import EncodedMessage, Undecodable, decode_infer_request, encode_stream_infer_response, tolerant
from .handlers import Handlers
from .protocol import health, service
from .security import Restrictions

log = logging.getLogger("faast.grpc")

# Triton's limits: clients send 16000-row batches and large images in one message.
MESSAGE_LIMIT_OPTIONS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
UNPARSABLE = "Unable to parse request"  # Triton says no more, whatever the bytes were
# Triton 2.58+'s answer to an inference call that arrives while the server drains (infer_handler.cc).
SHUTTING_DOWN = "GRPC server is shutting down and has stopped accepting new requests."
# The responses faast.grpc_wire encodes, their tensor bytes uncopied until grpc serializes them.
ENCODED_RESPONSES = (service.ModelInferResponse, service.ModelStreamInferResponse)


def _answer(method_name, error):
    """The (code, details) a request ends with after `error`; anything that is not a typed
    InferenceError is a server fault: logged with its traceback and answered INTERNAL."""
    if isinstance(error, InferenceError):
        return grpc.StatusCode[error.grpc_code], str(error)
    log.error("unexpected error in %s", method_name, exc_info=error)
    return grpc.StatusCode.INTERNAL, fault_message(error)


def _unary(method, empty_response, header=None):
    """`method` answering an undecodable request, a typed error or a fault with a status, never
    UNKNOWN; with `header` (a restricted group's (key, value)), a call without it is answered as
    Triton answers it, after the decoding check as in Triton. The status is set on the context and
    an empty response returned, rather than context.abort(): grpc keeps the exception abort raises,
    and with it the traceback's frames and the request they hold (gigabytes, for a rejected large
    request), alive after the call."""

    @functools.wraps(method)
    async def handle(request, context):
        try:
            if isinstance(request, Undecodable):
                code, details = grpc.StatusCode.INTERNAL, UNPARSABLE
            elif header is not None and not security.metadata_allows(context.invocation_metadata(), header):
                code, details = grpc.StatusCode.UNAVAILABLE, security.grpc_restricted_message(header[0])
            else:
                try:
                    return await method(request, context)
                except Exception as error:
                    code, details = _answer(method.__name__, error)
            context.set_code(code)
            context.set_details(details)
            return empty_response()
        finally:
            memory.after_request(getattr(request, "nbytes", 0))

    return handle


def _restricted_stream(method, header):
    """A streaming `method` that, like Triton, ends the whole stream without reading a request when
    the call lacks the restricted group's `header`."""

    @functools.wraps(method)
    async def handle(request_iterator, context):
        if not security.metadata_allows(context.invocation_metadata(), header):
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(security.grpc_restricted_message(header[0]))
            return
        async for reply in method(request_iterator, context):
            yield reply

    return handle


def method_handlers(servicer, service_descriptor, module, restrictions: Restrictions | None = None):
    """A generic handler for every method of `service_descriptor`, calling `servicer`'s method of the
    same name with tolerantly parsed requests (module: the generated *_pb2 holding the messages), and
    only for calls carrying the header of the method's group where `restrictions` restrict it."""
    handlers = {}
    for method in service_descriptor.methods:
        request_type = getattr(module, method.input_type.name)
        response_type = getattr(module, method.output_type.name)
        if response_type in ENCODED_RESPONSES:
            empty_response, serialize = EncodedMessage, EncodedMessage.serialize
        else:
            empty_response, serialize = response_type, response_type.SerializeToString
        parse = tolerant(decode_infer_request if request_type is service.ModelInferRequest else request_type.FromString)
        implementation = getattr(servicer, method.name)
        group = security.grpc_group(service_descriptor.full_name, method.name)  # every method has one
        header = restrictions.grpc_header(group) if restrictions else None
        if method.client_streaming:  # ModelStreamInfer answers each request itself
            make = grpc.stream_stream_rpc_method_handler
            if header is not None:
                implementation = _restricted_stream(implementation, header)
        else:
            make, implementation = grpc.unary_unary_rpc_method_handler, _unary(implementation, empty_response, header)
        handlers[method.name] = make(implementation, request_deserializer=parse, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)


class InferenceService:
    """GRPCInferenceService's methods: inference through the dataplane, the rest through the handlers.
    Once `drain` began, inference calls (and stream requests) that arrive are refused as Triton 2.58+
    refuses them, while those already admitted finish."""

    def __init__(self, dataplane: DataPlane, handlers: Handlers):
        self.dataplane = dataplane
        self.handlers = handlers
        self._accepting = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _admit(self):
        if not self._accepting:
            raise Unavailable(SHUTTING_DOWN)
        self._in_flight += 1
        self._idle.clear()

    def _done(self):
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def drain(self, grace):
        """Refuse new inference from now on; return once the admitted calls finished, or after `grace` s."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            pass

    async def ServerLive(self, request, context):
        return service.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service.ServerReadyResponse(ready=self.dataplane.server_ready())

    async def ModelReady(self, request, context):
        return service.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return self.dataplane.server_metadata()

    async def ModelMetadata(self, request, context):
        return self.dataplane.model_metadata(request.name, request.version)

    async def ModelConfig(self, request, context):
        return service.ModelConfigResponse(config=self.dataplane.model_config(request.name, request.version))

    async def ModelStatistics(self, request, context):
        return await self.dataplane.model_statistics(request.name, request.version)

    async def ModelInfer(self, request, context):
        self._admit()
        try:
            return converters.infer_response(await self.dataplane.infer(converters.infer_request(request)))
        finally:
            self._done()

    async def ModelStreamInfer(self, request_iterator, context):
        """Requests are served concurrently; each gets exactly one reply, a response or an
        error_message with the request's id, and replies follow the order of the requests, as
        Triton answers a model that is not decoupled. An error never closes the stream; the stream
        ends once the client has finished sending and every request has its reply."""
        replies: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()  # one per request, in request order

        async def serve(request) -> EncodedMessage:
            try:
                if isinstance(request, Undecodable):
                    raise Internal(UNPARSABLE)
                self._admit()
                try:
                    response = await self.dataplane.infer(converters.infer_request(request))
                finally:
                    self._done()
                reply = encode_stream_infer_response(converters.infer_response(response, streamed=True))
            except Exception as error:
                error_reply = service.ModelStreamInferResponse(error_message=_answer("ModelStreamInfer", error)[1])
                if not isinstance(request, Undecodable):
                    error_reply.infer_response.id = request.message.id
                reply = EncodedMessage([error_reply.SerializeToString()])
            memory.after_request(request.nbytes)
            return reply

        async def read_all():
            try:
                async for request in request_iterator:
                    await replies.put(asyncio.ensure_future(serve(request)))
            finally:
                await replies.put(None)

        reader = asyncio.ensure_future(read_all())
        try:
            while (reply := await replies.get()) is not None:
                yield await reply
        finally:
            reader.cancel()
            while not replies.empty():  # the client went away: what is still running is not answered
                task = replies.get_nowait()
                if task is not None:
                    task.cancel()

    async def RepositoryIndex(self, request, context):
        response = service.RepositoryIndexResponse()
        for name, version, state, reason in self.handlers.repository.index(request.ready):
            response.models.add(name=name, version=version, state=state, reason=reason)
        return response

    async def RepositoryModelLoad(self, request, context):
        await self.handlers.repository.load(request.model_name, converters.parameters(request.parameters))
        return service.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self.handlers.repository.unload(request.model_name)
        return service.RepositoryModelUnloadResponse()

    async def SystemSharedMemoryStatus(self, request, context):
        response = service.SystemSharedMemoryStatusResponse()
        for region in self.handlers.shared_memory.status(request.name):
            response.regions[region.name].CopyFrom(
                service.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size
                )
            )
        return response

    async def SystemSharedMemoryRegister(self, request, context):
        await self.handlers.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        return service.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request, context):
        await self.handlers.shared_memory.unregister(request.name)
        return service.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request, context):
        return service.CudaSharedMemoryStatusResponse()  # there is never a CUDA region

    async def CudaSharedMemoryRegister(self, request, context):
        self.handlers.shared_memory.cuda_register()

    async def CudaSharedMemoryUnregister(self, request, context):
        self.handlers.shared_memory.cuda_unregister()
        return service.CudaSharedMemoryUnregisterResponse()

    async def TraceSetting(self, request, context):
        updates = {key: list(value.value) for key, value in request.settings.items()}
        settings = await self.handlers.trace.update(request.model_name, updates)
        response = service.TraceSettingResponse()
        for key, values in settings.items():
            response.settings[key].value.extend(values)
        return response

    async def LogSettings(self, request, context):
        updates = converters.parameters(request.settings)  # SettingValue shares InferParameter's oneof name
        settings = await self.handlers.logging.update(updates)
        response = service.LogSettingsResponse()
        for key, value in settings.items():
            field = {bool: "bool_param", int: "uint32_param", str: "string_param"}[type(value)]
            setattr(response.settings[key], field, value)
        return response


class HealthService:
    """grpc.health.v1: SERVING when the server (service "") or the named model is ready."""

    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane

    async def Check(self, request, context):
        ready = self.dataplane.ready and (not request.service or self.dataplane.model_ready(request.service))
        status = health.HealthCheckResponse.SERVING if ready else health.HealthCheckResponse.NOT_SERVING
        return health.HealthCheckResponse(status=status)


class GrpcTransport:
    """The gRPC server and its inference service. `stop` drains as Triton 2.58+ does: inference that
    arrives is refused with SHUTTING_DOWN while the calls in flight finish, then the server stops."""

    def __init__(self, server: grpc.aio.Server, inference: InferenceService):
        self.server = server
        self.inference = inference

    async def start(self):
        await self.server.start()

    async def stop(self, grace):
        """Stop within `grace` s: drain, then give what is left of it to grpc's own stop."""
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        await self.inference.drain(grace)
        await self.server.stop(grace=max(end - loop.time(), 0))


def create_server(
    dataplane: DataPlane,
    handlers: Handlers,
    address: str,
    credentials: grpc.ServerCredentials | None = None,
    restrictions: Restrictions | None = None,
    options: Sequence[tuple[str, int]] = (),
) -> GrpcTransport:
    """A gRPC server (not yet started) listening on `address` with Triton's services: over TLS with
    `credentials` (faast.security.grpc_credentials), and serving the groups `restrictions` restrict
    only to calls with their header. `options` are gRPC channel arguments (keepalive, compression,
    reuse-port) from tritonserver's flags; a port is not shared unless they say so, as in tritonserver."""
    merged = dict(MESSAGE_LIMIT_OPTIONS) | {"grpc.so_reuseport": 0} | dict(options)
    server = grpc.aio.server(options=list(merged.items()))
    inference = InferenceService(dataplane, handlers)
    server.add_generic_rpc_handlers(
        [
            method_handlers(
                inference,
                service.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                service,
                restrictions,
            ),
            method_handlers(
                HealthService(dataplane), health.DESCRIPTOR.services_by_name["Health"], health, restrictions
            ),
        ]
    )
    if credentials is None:
        if server.add_insecure_port(address) == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
    elif server.add_secure_port(address, credentials) == 0:
        raise OSError(f"cannot listen for gRPC over TLS on {address} (is the key the certificate's?)")
    return GrpcTransport(server, inference)
