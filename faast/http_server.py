"""HTTP/REST transport: the KServe v2 protocol with Triton's extensions (binary tensor data,
repository, statistics, system shared memory, trace, logging) over the same dataplane as gRPC,
so `tritonclient.http` works and Kubernetes probes can use /v2/health/ready. Also serves /metrics.
"""

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from . import http_converters as converters
from . import http_encoding, memory, security
from .contract.errors import InferenceError, InvalidArgument, fault_message
from .dataplane import DataPlane
from .handlers import Handlers
from .metrics import MetricsView
from .security import Restrictions
from .tritonserver_flags import HTTP_DEFAULT_MAX_INPUT_SIZE

log = logging.getLogger("faast.http")
CANCELLED_WAIT_S = 0.25  # how long a cancelled request's handler gets to end, at most


def _json_response(value, status=200, content_type="application/json"):
    """JSON as Triton's HTTP server writes it: compact, and `application/json` with no charset."""
    return web.Response(
        body=json.dumps(value, separators=(",", ":")).encode(), status=status, content_type=content_type
    )


def _error(error):
    return _json_response({"error": str(error)}, status=error.http_status, content_type=error.http_content_type)


@web.middleware
async def _errors_as_json(request, handler):
    """Every failure is a JSON {"error": ...} answer: typed errors with their status, aiohttp's own
    (unknown route, wrong method) with theirs, and anything unexpected as a logged 500."""
    try:
        return await handler(request)
    except RequestPayloadError as error:  # a body that cannot be read, e.g. cut short
        return _error(InvalidArgument(f"unable to read the request body: {error}"))
    except http_encoding.UnsupportedEncoding:
        return _json_response({"error": http_encoding.UNSUPPORTED}, status=501, content_type="text/plain")  # as Triton
    except http_encoding.UndecodableBody as error:
        return _error(InvalidArgument(str(error)))
    except converters.HeaderSizeError as error:
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


def _restricted(restrictions: Restrictions):
    """A middleware serving the groups `restrictions` restrict only to requests with their header,
    checked before anything else of the request, as Triton does (a wrong method gets the 403 too).
    The group comes from the path as the router sees it (percent-decoded but for %2F and %25), so a
    request reaches a handler only through the check of that handler's group."""

    @web.middleware
    async def check(request, handler):
        header = restrictions.http_header(security.http_group(request.rel_url.path_safe))
        if header is not None and request.headers.get(header[0]) != header[1]:
            message = security.http_restricted_message(header[0])
            return _json_response({"error": message}, status=403, content_type="text/plain")  # as Triton
        return await handler(request)

    return check


class HttpFrontend:
    """The routes of Triton's HTTP server over the dataplane and the handlers, and /metrics; the
    groups of routes `restrictions` restrict (--http-restricted-api) only for requests with their header.
    `max_input_size` (--http-max-input-size) bounds what a body decodes to, a request's JSON and a
    JSON input's data, as tritonserver bounds them."""

    def __init__(
        self,
        dataplane: DataPlane,
        handlers: Handlers,
        metrics: MetricsView,
        restrictions: Restrictions | None = None,
        max_input_size: int = HTTP_DEFAULT_MAX_INPUT_SIZE,
    ):
        self.dataplane = dataplane
        self.handlers = handlers
        self.metrics = metrics
        self.restrictions = restrictions
        self.max_input_size = max_input_size
        self._handling: set[asyncio.Task] = set()  # the tasks of requests being handled, for stop_http

    async def _body(self, request) -> bytes:
        """The request's body, decoded from its Content-Encoding (faast.http_encoding)."""
        return await http_encoding.decode(
            await request.read(), request.headers.get("Content-Encoding"), self.max_input_size
        )

    async def _json_body(self, request) -> bytes:
        """The body of a request that is JSON only, refused past the limit as tritonserver refuses it."""
        body = await self._body(request)
        http_encoding.check_json_size(len(body), self.max_input_size)
        return body

    @web.middleware
    async def _tracked(self, request, handler):
        task = asyncio.current_task()
        assert task is not None
        self._handling.add(task)
        try:
            return await handler(request)
        finally:
            self._handling.discard(task)

    async def finish_requests(self, timeout: float) -> int:
        """Wait up to `timeout` s for the requests being handled to be answered, then cancel those
        still running (a body that never ends, a request still queued); returns how many were."""
        if self._handling:
            await asyncio.wait(set(self._handling), timeout=max(timeout, 0))
        unfinished = list(self._handling)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=CANCELLED_WAIT_S)
        return len(unfinished)

    def application(self, with_metrics=False, with_api=True):
        middlewares = [self._tracked, _errors_as_json]
        if with_api and self.restrictions:
            middlewares.append(_restricted(self.restrictions))
        app = web.Application(client_max_size=2**31 - 1, middlewares=middlewares)
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
                web.post("/v2/cudasharedmemory/unregister", self.cuda_unregister),
                web.post("/v2/cudasharedmemory/region/{region}/unregister", self.cuda_unregister),
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
            unclassified = [route.path for route in routes if security.http_group(route.path) is None]
            if unclassified:  # a route the restricted-API check would not know
                raise RuntimeError(
                    f"routes in no restricted-API group (faast.security.HTTP_PATH_GROUPS): {unclassified}"
                )
        if with_metrics:
            routes.append(web.get("/metrics", self.render_metrics))
        app.add_routes(routes)
        return app

    async def live(self, request):
        return web.Response(status=200)

    async def ready(self, request):
        return web.Response(status=200 if self.dataplane.server_ready() else 400)

    async def server_metadata(self, request):
        return _json_response(converters.message_to_json(self.dataplane.server_metadata()))

    async def model_metadata(self, request):
        meta = self.dataplane.model_metadata(request.match_info["model"], request.match_info.get("version", ""))
        return _json_response(converters.message_to_json(meta))

    async def model_ready(self, request):
        ready = self.dataplane.model_ready(request.match_info["model"], request.match_info.get("version", ""))
        return web.Response(status=200 if ready else 400)

    async def model_config(self, request):
        config = self.dataplane.model_config(request.match_info["model"], request.match_info.get("version", ""))
        return _json_response(converters.message_to_json(config))

    async def statistics(self, request):
        stats = await self.dataplane.model_statistics(
            request.match_info.get("model", ""), request.match_info.get("version", "")
        )
        return _json_response(converters.message_to_json(stats) or {"model_stats": []})

    async def repository_index(self, request):
        body = await self._json_body(request)
        ready = (
            converters.json_field(
                converters.json_object(converters.parse_json(body), "the request"), "ready", bool, "the request", False
            )
            if body
            else False
        )
        rows = self.handlers.repository.index(ready)
        return _json_response(
            [{k: v for k, v in zip(("name", "version", "state", "reason"), row, strict=True) if v} for row in rows]
        )

    async def load(self, request):
        body = await self._json_body(request)
        options = converters.json_object(converters.parse_json(body), "the request") if body else {}
        parameters = converters.json_field(options, "parameters", dict, "the request", {})
        await self.handlers.repository.load(request.match_info["model"], parameters)
        return web.Response(status=200)

    async def unload(self, request):
        await self.handlers.repository.unload(request.match_info["model"])
        return web.Response(status=200)

    async def shm_status(self, request):
        regions = self.handlers.shared_memory.status(request.match_info.get("region", ""))
        return _json_response(
            [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]
        )

    async def shm_register(self, request):
        body = converters.json_object(converters.parse_json(await self._json_body(request)), "the request")
        what = "the registration"
        if "key" not in body:
            raise InvalidArgument("Shared memory register request has no 'key' field")
        await self.handlers.shared_memory.register(
            request.match_info["region"],
            converters.json_field(body, "key", str, what),
            converters.json_field(body, "offset", int, what, 0),
            converters.json_field(body, "byte_size", int, what),
        )
        return web.Response(status=200)

    async def shm_unregister(self, request):
        await self.handlers.shared_memory.unregister(request.match_info.get("region", ""))
        return web.Response(status=200)

    async def cuda_status(self, request):
        return _json_response([])

    async def cuda_register(self, request):
        self.handlers.shared_memory.cuda_register()

    async def cuda_unregister(self, request):
        self.handlers.shared_memory.cuda_unregister()
        return web.Response(status=200)

    async def trace(self, request):
        model = request.match_info.get("model", "")
        self.handlers.trace.check_model(model)  # before the body, as Triton
        updates = {}
        if request.method == "POST":
            body = converters.json_object(
                converters.parse_json(await self._json_body(request)), "the trace setting request"
            )
            updates = {key: converters.trace_values(key, value) for key, value in body.items()}
        settings = await self.handlers.trace.update(model, updates)
        return _json_response({key: values if key == "trace_level" else values[0] for key, values in settings.items()})

    async def logging(self, request):
        updates = (
            converters.json_object(converters.parse_json(await self._json_body(request)), "the log setting request")
            if request.method == "POST"
            else {}
        )
        return _json_response(await self.handlers.logging.update(updates))

    async def infer(self, request):
        body = await self._body(request)
        try:
            return await self._infer(request, body)
        finally:
            memory.after_request(len(body))

    async def _infer(self, request, body):
        infer_request, binary_outputs, binary_default = converters.infer_request(
            body,
            converters.binary_header_length(request.headers),
            request.match_info["model"],
            request.match_info.get("version", ""),
            self.max_input_size,
        )
        response = await self.dataplane.infer(infer_request)
        header, blobs = converters.infer_response(
            response, binary_outputs, binary_default and not infer_request.outputs
        )
        headers = {converters.HEADER_LENGTH: str(len(header))} if blobs else {}
        body = header + b"".join(blobs) if blobs else header
        encoding = http_encoding.response_encoding(request.headers.get("Accept-Encoding"))
        if encoding is not None:  # as Triton: infer responses only; the header length counts uncompressed bytes
            body = await http_encoding.encode(body, encoding)
            headers["Content-Encoding"] = encoding
        return web.Response(
            body=body, content_type="application/octet-stream" if blobs else "application/json", headers=headers
        )

    async def render_metrics(self, request):
        return web.Response(body=await self.metrics.text(), content_type="text/plain")


async def start_http(app, host, port, reuse_port=False, shutdown_timeout=60.0):
    """Serve `app` on host:port; with `reuse_port` other processes may bind it too (SO_REUSEPORT).
    `shutdown_timeout`: how long the runner's cleanup waits for a request still being handled, at
    most (stop_http cancels them sooner)."""
    # auto_decompress: faast.http_encoding decodes
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    return runner


async def stop_http(runners: list[web.AppRunner], frontend: HttpFrontend, timeout: float) -> None:
    """Stop serving HTTP within `timeout` s: the ports close and idle connections with them at once,
    requests being handled get until then to be answered, and those still running are cancelled.
    aiohttp's own cleanup waits for every handler (a request whose body never ends holds it for
    its shutdown_timeout), so the wait and the cancelling are done here, and the cleanup is bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cleanups = [asyncio.ensure_future(runner.cleanup()) for runner in runners]
    cancelled = await frontend.finish_requests(timeout)
    if cancelled:
        log.warning("exit timeout: %d HTTP request(s) cancelled unanswered", cancelled)
    if cleanups:
        _, unfinished = await asyncio.wait(cleanups, timeout=max(deadline - loop.time(), 0) + CANCELLED_WAIT_S)
        for cleanup in unfinished:
            cleanup.cancel()
