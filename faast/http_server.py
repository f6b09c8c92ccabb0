"""HTTP/REST transport: the KServe v2 protocol with Triton's extensions (binary tensor data,
repository, statistics, system shared memory, trace, logging) over the same dataplane as gRPC,
so `tritonclient.http` works and Kubernetes probes can use /v2/health/ready. Also serves /metrics.
"""

import base64
import json
import logging
import re

import numpy as np
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf.descriptor import FieldDescriptor

from . import memory, tensors
from .dataplane import InferRequest, InputTensor, RequestedOutput
from .errors import InferenceError, Internal, InvalidArgument, NotFound, Unavailable, Unimplemented, fault_message
from .grpc_server import NO_CUDA
from .metrics import registry_for, render
from .shared_memory import region_from_parameters

log = logging.getLogger("faast.http")
HTTP_STATUS = {InvalidArgument: 400, NotFound: 404, Unavailable: 503, Unimplemented: 501, Internal: 500}
HEADER_LENGTH = "Inference-Header-Content-Length"


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

    result = {}
    for field, value in message.ListFields():
        if field.message_type and field.message_type.GetOptions().map_entry:
            inner = field.message_type.fields_by_name["value"]
            result[field.name] = {key: scalar(inner, item) for key, item in value.items()}
        elif field.is_repeated:
            result[field.name] = [scalar(field, item) for item in value]
        else:
            result[field.name] = scalar(field, value)
    return result


def _json_response(value, status=200, content_type="application/json"):
    """JSON as Triton's HTTP server writes it: compact, and `application/json` with no charset."""
    return web.Response(
        body=json.dumps(value, separators=(",", ":")).encode(), status=status, content_type=content_type
    )


def _error(error):
    return _json_response({"error": str(error)}, status=HTTP_STATUS[type(error)])


class HeaderSizeError(InvalidArgument):
    """A binary request's header length outside its body; Triton answers it as text/plain."""


@web.middleware
async def _errors_as_json(request, handler):
    """Every failure is a JSON {"error": ...} answer: typed errors with their status, aiohttp's own
    (unknown route, wrong method) with theirs, and anything unexpected as a logged 500."""
    try:
        return await handler(request)
    except RequestPayloadError as error:  # a body that cannot be read, e.g. undecodable Content-Encoding
        return _error(InvalidArgument(f"unable to read the request body: {error}"))
    except HeaderSizeError as error:
        return _json_response({"error": str(error)}, status=400, content_type="text/plain")
    except InferenceError as error:
        return _error(error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _json_response({"error": error.reason}, status=error.status, content_type="text/plain")  # as Triton
    except Exception as error:
        log.error("unexpected error in %s %s", request.method, request.path, exc_info=error)
        return _json_response({"error": fault_message(error)}, status=500)


def _json(text):
    """Parsed JSON of a request body; malformed or too deeply nested JSON is the client's mistake."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {type(error).__name__}: {error}") from None


def _object(value, what):
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _field(mapping, key, kind, what, default=None):
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
    shape = _field(tensor, "shape", list, f"input '{name}'")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"the shape of input '{name}' must be a list of integers")
    return tuple(shape)


def parse_infer(body, header_length, model_name, shared_memory):
    """A KServe v2 infer body (JSON, optionally followed by binary tensors) → InferRequest; binary
    tensors are views into the body."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise HeaderSizeError(f"inference header size should be in range (0, {len(body)}), got: {header_length}")
    header = _object(_json(body[:header_length] if header_length is not None else body), "the inference request")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs = []
    for tensor in _field(header, "inputs", list, "the inference request"):
        tensor = _object(tensor, "an input")
        name = _field(tensor, "name", str, "an input")
        datatype = _field(tensor, "datatype", str, f"input '{name}'")
        shape = _shape(tensor, name)
        params = _field(tensor, "parameters", dict, f"input '{name}'", {})
        region = region_from_parameters(params, name)
        if region:
            inputs.append(InputTensor(name, datatype, shape, lambda region=region: shared_memory.read(*region)))
        elif "binary_data_size" in params:
            size = _field(params, "binary_data_size", int, f"parameters of '{name}'")
            if size < 0 or offset + size > len(binary):
                raise InvalidArgument(
                    f"unexpected binary_data_size {size} for input '{name}': the body holds "
                    f"{len(binary) - offset} more bytes"
                )
            chunk = binary[offset : offset + size]
            offset += size
            inputs.append(InputTensor(name, datatype, shape, lambda chunk=chunk: chunk))
        else:
            data = tensor.get("data")
            inputs.append(
                InputTensor(
                    name,
                    datatype,
                    shape,
                    lambda data=data, datatype=datatype, name=name: _json_data(data, datatype, name, model_name),
                )
            )
    parameters = dict(_field(header, "parameters", dict, "the inference request", {}))
    binary_default = parameters.pop("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidArgument("'binary_data_output' must be a boolean")
    outputs, binary_outputs = [], set()
    for output in _field(header, "outputs", list, "the inference request", []):
        output = _object(output, "a requested output")
        name = _field(output, "name", str, "a requested output")
        params = _field(output, "parameters", dict, f"output '{name}'", {})
        outputs.append(RequestedOutput(name, region_from_parameters(params, name)))
        if _field(params, "binary_data", bool, f"parameters of '{name}'", binary_default):
            binary_outputs.add(name)
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' of the inference request must be a string")
    request = InferRequest(model_name=model_name, id=request_id, inputs=inputs, outputs=outputs, parameters=parameters)
    return request, binary_outputs, binary_default


def _json_data(data, datatype, name, model_name):
    if datatype not in tensors.NUMPY:
        raise InvalidArgument(f"datatype '{datatype}' of input '{name}' is not supported by faast")
    if data is None:
        raise InvalidArgument(f"unable to find data for input tensor '{name}' for model '{model_name}' in request.")
    try:
        return np.asarray(data, dtype=tensors.NUMPY[datatype]).tobytes()
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(f"unable to parse 'data' of input '{name}' as '{datatype}' values") from None


def _header_length(request):
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        return None
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InvalidArgument(f"{HEADER_LENGTH} must be an integer, got '{text}'")
    return int(text)


class HttpFrontend:
    def __init__(self, dataplane):
        self.dataplane = dataplane
        self.metrics = registry_for(dataplane.repository)

    def application(self, with_metrics=False, with_api=True):
        app = web.Application(client_max_size=2**31 - 1, middlewares=[_errors_as_json])
        routes = []
        if with_api:
            routes += [
                web.get("/v2/health/live", self.live),
                web.get("/v2/health/ready", self.ready),
                web.get("/v2", self.server_metadata),
                web.post("/v2/repository/index", self.repository_index),
                web.post("/v2/repository/models/{model}/load", self.load),
                web.post("/v2/repository/models/{model}/unload", self.unload),
                web.get("/v2/models/stats", self.statistics),
                web.get("/v2/systemsharedmemory/status", self.shm_status),
                web.get("/v2/systemsharedmemory/region/{region}/status", self.shm_status),
                web.post("/v2/systemsharedmemory/region/{region}/register", self.shm_register),
                web.post("/v2/systemsharedmemory/unregister", self.shm_unregister),
                web.post("/v2/systemsharedmemory/region/{region}/unregister", self.shm_unregister),
                web.get("/v2/cudasharedmemory/status", self.cuda_status),
                web.post("/v2/cudasharedmemory/region/{region}/register", self.cuda_register),
                web.post("/v2/cudasharedmemory/unregister", self.cuda_status),
                web.post("/v2/cudasharedmemory/region/{region}/unregister", self.cuda_status),
                web.get("/v2/trace/setting", self.trace),
                web.post("/v2/trace/setting", self.trace),
                web.get("/v2/logging", self.logging),
                web.post("/v2/logging", self.logging),
            ]
            for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
                routes += [
                    web.get(prefix, self.model_metadata),
                    web.get(prefix + "/ready", self.model_ready),
                    web.get(prefix + "/config", self.model_config),
                    web.get(prefix + "/stats", self.statistics),
                    web.post(prefix + "/infer", self.infer),
                    web.get(prefix + "/trace/setting", self.trace),
                    web.post(prefix + "/trace/setting", self.trace),
                ]
        if with_metrics:
            routes.append(web.get("/metrics", self.render_metrics))
        app.add_routes(routes)
        return app

    async def live(self, request):
        return web.Response(status=200)

    async def ready(self, request):
        return web.Response(status=200 if self.dataplane.server_ready() else 400)

    async def server_metadata(self, request):
        return _json_response(message_to_json(self.dataplane.server_metadata()))

    async def model_metadata(self, request):
        meta = self.dataplane.model_metadata(request.match_info["model"], request.match_info.get("version", ""))
        return _json_response(message_to_json(meta))

    async def model_ready(self, request):
        ready = self.dataplane.model_ready(request.match_info["model"], request.match_info.get("version", ""))
        return web.Response(status=200 if ready else 400)

    async def model_config(self, request):
        config = self.dataplane.model_config(request.match_info["model"], request.match_info.get("version", ""))
        return _json_response(message_to_json(config))

    async def statistics(self, request):
        stats = self.dataplane.model_statistics(
            request.match_info.get("model", ""), request.match_info.get("version", "")
        )
        return _json_response(message_to_json(stats) or {"model_stats": []})

    async def repository_index(self, request):
        body = await request.read()
        ready = _field(_object(_json(body), "the request"), "ready", bool, "the request", False) if body else False
        rows = self.dataplane.repository.index(ready)
        return _json_response(
            [{k: v for k, v in zip(("name", "version", "state", "reason"), row, strict=True) if v} for row in rows]
        )

    async def load(self, request):
        body = await request.read()
        options = _object(_json(body), "the request") if body else {}
        parameters = _field(options, "parameters", dict, "the request", {})
        await self.dataplane.repository.load(request.match_info["model"], parameters)
        return web.Response(status=200)

    async def unload(self, request):
        await self.dataplane.repository.unload(request.match_info["model"])
        return web.Response(status=200)

    async def shm_status(self, request):
        regions = self.dataplane.shared_memory.status(request.match_info.get("region", ""))
        return _json_response(
            [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]
        )

    async def shm_register(self, request):
        body = _object(_json(await request.read()), "the request")
        what = "the registration"
        if "key" not in body:
            raise InvalidArgument("Shared memory register request has no 'key' field")
        self.dataplane.shared_memory.register(
            request.match_info["region"],
            _field(body, "key", str, what),
            _field(body, "offset", int, what, 0),
            _field(body, "byte_size", int, what),
        )
        return web.Response(status=200)

    async def shm_unregister(self, request):
        self.dataplane.shared_memory.unregister(request.match_info.get("region", ""))
        return web.Response(status=200)

    async def cuda_status(self, request):
        return _json_response([])

    async def cuda_register(self, request):
        raise Unimplemented(NO_CUDA)

    async def trace(self, request):
        model = request.match_info.get("model", "")
        if model:
            self.dataplane.check_trace_model(model)
        updates = {}
        if request.method == "POST":
            body = _object(_json(await request.read()), "the trace setting request")
            updates = {key: _trace_values(key, value) for key, value in body.items()}
        settings = self.dataplane.trace.update(model, updates)
        return _json_response({key: values if key == "trace_level" else values[0] for key, values in settings.items()})

    async def logging(self, request):
        updates = _object(_json(await request.read()), "the log setting request") if request.method == "POST" else {}
        return _json_response(self.dataplane.logging.update(updates))

    async def infer(self, request):
        body = await request.read()
        try:
            return await self._infer(request, body)
        finally:
            memory.after_request(len(body))

    async def _infer(self, request, body):
        infer_request, binary_outputs, binary_default = parse_infer(
            body, _header_length(request), request.match_info["model"], self.dataplane.shared_memory
        )
        infer_request.model_version = request.match_info.get("version", "")
        response = await self.dataplane.infer(infer_request)
        header = {"model_name": response.model_name, "model_version": response.model_version, "outputs": []}
        if response.id:
            header["id"] = response.id
        blobs = []
        for tensor in response.outputs:
            entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
            if tensor.data is None:
                pass  # written to the client's shared memory region
            elif tensor.name in binary_outputs or (not infer_request.outputs and binary_default):
                raw = tensors.to_raw(tensor.data, tensor.datatype)
                entry["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                entry["data"] = tensor.data.ravel().tolist()
            header["outputs"].append(entry)
        text = json.dumps(header).encode()
        if not blobs:
            return web.Response(body=text, content_type="application/json")
        return web.Response(
            body=text + b"".join(blobs),
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(text))},
        )

    async def render_metrics(self, request):
        return web.Response(body=render(self.metrics), content_type="text/plain")


def _trace_values(key, value):
    """A trace setting's JSON value → its list of strings (null clears it)."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"trace setting '{key}' must be a string or a list of strings")
    return values


async def start_http(app, host, port):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
