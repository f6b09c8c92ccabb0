"""HTTP/REST transport: the KServe v2 protocol with Triton's extensions (binary tensor data,
repository, statistics, system shared memory, trace, logging) over the same dataplane as gRPC,
so `tritonclient.http` works and Kubernetes probes can use /v2/health/ready. Also serves /metrics.
"""

import base64
import json

import numpy as np
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor

from . import tensors
from .dataplane import InferRequest, InputTensor, RequestedOutput
from .errors import InferenceError, Internal, InvalidArgument, NotFound, Unavailable, Unimplemented
from .grpc_server import NO_CUDA
from .metrics import registry_for, render
from .shared_memory import region_from_parameters

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


def _error(error):
    return web.json_response({"error": str(error)}, status=HTTP_STATUS[type(error)])


def _handler(method):
    async def wrapper(request):
        try:
            return await method(request)
        except InferenceError as error:
            return _error(error)
        except (ValueError, KeyError, TypeError) as error:  # malformed JSON bodies
            return _error(InvalidArgument(f"failed to parse the request: {error}"))
    return wrapper


def parse_infer(body, header_length, model_name, shared_memory):
    """A KServe v2 infer body (JSON, optionally followed by binary tensors) → InferRequest."""
    header = json.loads(body[:header_length] if header_length is not None else body)
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs = []
    for tensor in header.get("inputs", []):
        params = tensor.get("parameters", {})
        name, datatype, shape = tensor["name"], tensor["datatype"], tuple(tensor["shape"])
        region = region_from_parameters(params)
        if region:
            inputs.append(InputTensor(name, datatype, shape, lambda region=region: shared_memory.read(*region)))
        elif "binary_data_size" in params:
            size = int(params["binary_data_size"])
            chunk = bytes(binary[offset:offset + size])
            offset += size
            inputs.append(InputTensor(name, datatype, shape, lambda chunk=chunk: chunk))
        else:
            inputs.append(InputTensor(name, datatype, shape,
                                      lambda data=tensor.get("data"), datatype=datatype, name=name:
                                      _json_data(data, datatype, name, model_name)))
    parameters = header.get("parameters", {})
    binary_default = bool(parameters.pop("binary_data_output", False))
    outputs, binary_outputs = [], set()
    for output in header.get("outputs", []):
        params = output.get("parameters", {})
        outputs.append(RequestedOutput(output["name"], region_from_parameters(params)))
        if params.get("binary_data", binary_default):
            binary_outputs.add(output["name"])
    request = InferRequest(model_name=model_name, id=str(header.get("id", "")), inputs=inputs, outputs=outputs,
                           parameters=parameters)
    return request, binary_outputs, binary_default


def _json_data(data, datatype, name, model_name):
    if datatype not in tensors.NUMPY:
        raise InvalidArgument(f"datatype '{datatype}' of input '{name}' is not supported by faast")
    if data is None:
        raise InvalidArgument(f"unable to find data for input tensor '{name}' for model '{model_name}' in request.")
    return np.asarray(data, dtype=tensors.NUMPY[datatype]).tobytes()


class HttpFrontend:
    def __init__(self, dataplane):
        self.dataplane = dataplane
        self.metrics = registry_for(dataplane.repository)

    def application(self, with_metrics=False, with_api=True):
        app = web.Application(client_max_size=2**31 - 1)
        routes = []
        if with_api:
            routes += [
                web.get("/v2/health/live", self.live), web.get("/v2/health/ready", self.ready),
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
                web.get("/v2/trace/setting", self.trace), web.post("/v2/trace/setting", self.trace),
                web.get("/v2/logging", self.logging), web.post("/v2/logging", self.logging),
            ]
            for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
                routes += [
                    web.get(prefix, self.model_metadata), web.get(prefix + "/ready", self.model_ready),
                    web.get(prefix + "/config", self.model_config), web.get(prefix + "/stats", self.statistics),
                    web.post(prefix + "/infer", self.infer),
                    web.get(prefix + "/trace/setting", self.trace), web.post(prefix + "/trace/setting", self.trace),
                ]
        if with_metrics:
            routes.append(web.get("/metrics", self.render_metrics))
        app.add_routes([web.route(r.method, r.path, _handler(r.handler)) for r in routes])
        return app

    async def live(self, request):
        return web.Response(status=200)

    async def ready(self, request):
        return web.Response(status=200 if self.dataplane.server_ready() else 400)

    async def server_metadata(self, request):
        return web.json_response(message_to_json(self.dataplane.server_metadata()))

    async def model_metadata(self, request):
        meta = self.dataplane.model_metadata(request.match_info["model"], request.match_info.get("version", ""))
        return web.json_response(message_to_json(meta))

    async def model_ready(self, request):
        ready = self.dataplane.model_ready(request.match_info["model"], request.match_info.get("version", ""))
        return web.Response(status=200 if ready else 400)

    async def model_config(self, request):
        config = self.dataplane.model_config(request.match_info["model"], request.match_info.get("version", ""))
        return web.json_response(message_to_json(config))

    async def statistics(self, request):
        stats = self.dataplane.model_statistics(request.match_info.get("model", ""),
                                                request.match_info.get("version", ""))
        return web.json_response(message_to_json(stats) or {"model_stats": []})

    async def repository_index(self, request):
        body = await request.read()
        ready = bool(json.loads(body).get("ready", False)) if body else False
        rows = self.dataplane.repository.index(ready)
        return web.json_response([{k: v for k, v in zip(("name", "version", "state", "reason"), row) if v}
                                  for row in rows])

    async def load(self, request):
        await self.dataplane.repository.load(request.match_info["model"])
        return web.Response(status=200)

    async def unload(self, request):
        await self.dataplane.repository.unload(request.match_info["model"])
        return web.Response(status=200)

    async def shm_status(self, request):
        regions = self.dataplane.shared_memory.status(request.match_info.get("region", ""))
        return web.json_response([{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                                  for r in regions])

    async def shm_register(self, request):
        body = await request.json()
        self.dataplane.shared_memory.register(request.match_info["region"], body["key"], int(body.get("offset", 0)),
                                              int(body["byte_size"]))
        return web.Response(status=200)

    async def shm_unregister(self, request):
        self.dataplane.shared_memory.unregister(request.match_info.get("region", ""))
        return web.Response(status=200)

    async def cuda_status(self, request):
        return web.json_response([])

    async def cuda_register(self, request):
        raise Unimplemented(NO_CUDA)

    async def trace(self, request):
        model = request.match_info.get("model", "")
        if model:
            self.dataplane.repository.get(model)
        updates = {}
        if request.method == "POST":
            body = await request.json()
            updates = {key: value if isinstance(value, list) else ([] if value is None else [str(value)])
                       for key, value in body.items()}
        settings = self.dataplane.trace.update(model, updates)
        return web.json_response({key: values if key == "trace_level" else values[0] for key, values in settings.items()})

    async def logging(self, request):
        updates = await request.json() if request.method == "POST" else {}
        return web.json_response(self.dataplane.logging.update(updates))

    async def infer(self, request):
        body = await request.read()
        header_length = request.headers.get(HEADER_LENGTH)
        infer_request, binary_outputs, binary_default = parse_infer(
            body, int(header_length) if header_length is not None else None, request.match_info["model"],
            self.dataplane.shared_memory)
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
        return web.Response(body=text + b"".join(blobs), content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(text))})

    async def render_metrics(self, request):
        return web.Response(body=render(self.metrics), content_type="text/plain")


async def start_http(app, host, port):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
