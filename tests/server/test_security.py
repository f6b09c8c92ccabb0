"""Security as tritonserver does it: gRPC over TLS and mutual TLS with real certificates (made here
with the openssl CLI) and real tritonclient clients, and Triton's restricted protocols and APIs,
answered as a real tritonserver 2.51 answers them (recorded below; the last test compares with a
live one where tests/.venv-triton exists).

Every serving test runs twice: `[api]` starts a child process serving through faast.security and the
transports' arguments directly (SERVE_WITH_API: `faast serve`'s own code with the security flags
parsed beside it), `[faast-serve]` passes the same flags to `faast serve` itself."""

import http.client
import json
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import BIN, PYTHON, free_port, infer, infer_request
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from faast import security

OPENSSL = "/usr/bin/openssl"
SERVICE = "/inference.GRPCInferenceService/"

# What tritonserver 2.51 answered, started with every group restricted under its own key
# (--grpc-restricted-protocol=GROUP:k-GROUP=v, --http-restricted-api=GROUP:k-GROUP=v for each group),
# to each call without the header: the group named in the message.
TRITON_GRPC_GROUPS = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}
TRITON_HTTP_GROUPS = [  # (path, group; None: Triton answered 404 Not Found, unrestricted)
    ("/v2/health/live", "health"),
    ("/v2/health/ready", "health"),
    ("/v2", "metadata"),
    ("/v2/repository/index", "model-repository"),
    ("/v2/repository/models/facile/load", "model-repository"),
    ("/v2/repository/models/facile/unload", "model-repository"),
    ("/v2/repository/foo/index", "model-repository"),
    ("/v2/models/stats", "statistics"),
    ("/v2/systemsharedmemory/status", "shared-memory"),
    ("/v2/systemsharedmemory/region/r/status", "shared-memory"),
    ("/v2/systemsharedmemory/region/r/register", "shared-memory"),
    ("/v2/systemsharedmemory/unregister", "shared-memory"),
    ("/v2/cudasharedmemory/status", "shared-memory"),
    ("/v2/trace/setting", "trace"),
    ("/v2/logging", "logging"),
    ("/v2/models/facile", "metadata"),
    ("/v2/models/facile/versions/1", "metadata"),
    ("/v2/models/facile/ready", "health"),
    ("/v2/models/facile/config", "model-config"),
    ("/v2/models/facile/stats", "statistics"),
    ("/v2/models/facile/infer", "inference"),
    ("/v2/models/facile/generate", "inference"),
    ("/v2/models/facile/generate_stream", "inference"),
    ("/v2/models/facile/trace/setting", "trace"),
    ("/metrics", None),
    ("/v2/nothing", None),
    ("/v2/health", None),
    ("/v2/health/live/", None),
]
# Where faast classifies a path Triton answers 404 for: faast serves these routes, so they are checked.
FAAST_ONLY_HTTP_GROUPS = [
    ("/v2/models/facile/versions/1/trace/setting", "trace"),
    ("/v2/models/facile/versions/x", "metadata"),
]
# tritonserver 2.51's answers to a restricted call without the header (flags as in `restricted`).
TRITON_GRPC_REJECTION = (grpc.StatusCode.UNAVAILABLE, "This protocol is restricted, expecting header '{}'")
TRITON_HTTP_REJECTION = (403, "text/plain", '{{"error":"This API is restricted, expecting header \'{}\'"}}')

# `faast serve`'s code, with the security flags parsed here and handed to the transports.
SERVE_WITH_API = textwrap.dedent(
    """
    import argparse

    import faast.cli
    import faast.grpc_server
    import faast.http_server
    from faast import security

    def boolean(text):
        return text.lower() in ("1", "true", "yes", "on")


    flags = argparse.ArgumentParser(allow_abbrev=False)
    flags.add_argument("--grpc-use-ssl", type=boolean, default=False)
    flags.add_argument("--grpc-use-ssl-mutual", type=boolean, default=False)
    flags.add_argument("--grpc-server-cert")
    flags.add_argument("--grpc-server-key")
    flags.add_argument("--grpc-root-cert")
    flags.add_argument("--grpc-restricted-protocol", action="append", default=[])
    flags.add_argument("--http-restricted-api", action="append", default=[])
    args, rest = flags.parse_known_args()
    credentials = None
    if args.grpc_use_ssl or args.grpc_use_ssl_mutual:
        credentials = security.grpc_credentials(
            args.grpc_server_cert, args.grpc_server_key, args.grpc_root_cert, args.grpc_use_ssl_mutual
        )
    grpc_restrictions = security.parse_restrictions(args.grpc_restricted_protocol, "grpc")
    http_restrictions = security.parse_restrictions(args.http_restricted_api, "http")
    create_server, frontend = faast.grpc_server.create_server, faast.http_server.HttpFrontend


    def secure_server(*positional, **keywords):
        keywords.update(credentials=credentials, restrictions=grpc_restrictions)
        return create_server(*positional, **keywords)


    def restricted_frontend(*positional, **keywords):
        keywords.update(restrictions=http_restrictions)
        return frontend(*positional, **keywords)


    faast.grpc_server.create_server = secure_server  # faast.cli imports them when it serves
    faast.http_server.HttpFrontend = restricted_frontend
    faast.cli.main(["serve", *rest])
    """
)


class SecureServer:
    """A faast serving the session's FACILE build on free loopback ports with `options`, started
    through `how` ("api": SERVE_WITH_API, "faast-serve": the command); ready once HTTP says so
    (gRPC may need TLS, and listens before HTTP)."""

    def __init__(self, how, launcher, repository, log_path, *options):
        self.port, self.http_port = free_port(), free_port()
        self.url, self.http_url = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.http_port}"
        self.log_path = log_path
        command = [*PYTHON, launcher] if how == "api" else [BIN / "faast", "serve"]
        self.process = subprocess.Popen(
            [
                *command,
                "--model-repository",
                repository,
                "--grpc-port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                "--metrics-port",
                str(free_port()),
                "--host",
                "127.0.0.1",
                *options,
            ],
            stdout=open(log_path, "w"),
            stderr=subprocess.STDOUT,
            cwd=repository,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {Path(log_path).read_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    path = tmp_path_factory.mktemp("launcher") / "serve_with_api.py"
    path.write_text(SERVE_WITH_API)
    return path


def _openssl(*arguments, cwd):
    subprocess.run([OPENSSL, *arguments], cwd=cwd, check=True, capture_output=True)


def _signed(folder, ca, name, subject, extensions):
    """name.key and name.pem: a P-256 key and its certificate, signed by `ca` (ca.key, ca.pem)."""
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial",
        str(sum(map(ord, name))), "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=folder,
    )  # fmt: skip


def _ca(folder, name):
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA; a server certificate for 127.0.0.1 and localhost and a client certificate, both signed by
    it; and a client certificate signed by another CA. Paths as strings, by file name without .pem."""
    folder = tmp_path_factory.mktemp("certificates")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    server = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    _signed(folder, "ca", "server", "/CN=localhost", server)
    _signed(folder, "ca", "client", "/CN=faast-client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _signed(folder, "other-ca", "rogue", "/CN=rogue", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return {path.stem if path.suffix == ".pem" else path.name: str(path) for path in folder.iterdir()}


def _serve(request, launcher, model_repository, tmp_path_factory, *options):
    running = SecureServer(
        request.param, launcher, model_repository, tmp_path_factory.mktemp("logs") / "serve.log", *options
    )
    request.addfinalizer(running.stop)
    return running


HOW = ["api", "faast-serve"]


@pytest.fixture(scope="module", params=HOW)
def tls_server(request, launcher, model_repository, tmp_path_factory, certificates):
    return _serve(
        request,
        launcher,
        model_repository,
        tmp_path_factory,
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={certificates['server']}",
        f"--grpc-server-key={certificates['server.key']}",
    )


@pytest.fixture(scope="module", params=HOW)
def mutual_tls_server(request, launcher, model_repository, tmp_path_factory, certificates):
    return _serve(
        request,
        launcher,
        model_repository,
        tmp_path_factory,
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={certificates['server']}",
        f"--grpc-server-key={certificates['server.key']}",
        f"--grpc-root-cert={certificates['ca']}",
    )


RESTRICTED = [
    "--grpc-restricted-protocol=model-repository:admin-key=secret",
    "--http-restricted-api=model-repository:admin-key=secret",
]


@pytest.fixture(scope="module", params=HOW)
def restricted(request, launcher, model_repository, tmp_path_factory):
    return _serve(request, launcher, model_repository, tmp_path_factory, *RESTRICTED)


@pytest.fixture(scope="module", params=HOW)
def restricted_more(request, launcher, model_repository, tmp_path_factory):
    """gRPC inference and health restricted; over HTTP metadata, statistics and trace, under another key."""
    return _serve(
        request,
        launcher,
        model_repository,
        tmp_path_factory,
        "--grpc-restricted-protocol=inference,health:user-key=k2",
        "--http-restricted-api=metadata,statistics,trace:stat-key=s",
    )


def _rows(facile_inputs, count=64):
    return np.ascontiguousarray(facile_inputs[0][:count], dtype=np.float32)


def _http_infer(url, rows, **keywords):
    """`rows` through a fresh HTTP client of `url`, answered as the output array."""
    client = httpclient.InferenceServerClient(url)
    try:
        return infer(client, rows, **keywords)
    finally:
        client.close()


def _fails(client):
    with pytest.raises(InferenceServerException) as failure:
        client.is_server_live(client_timeout=10)
    return failure.value


def _http(url, method, path, headers=None, body=None):
    """(status, content type, body) of one plain HTTP request."""
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type"), answer.read().decode()
    finally:
        connection.close()


def _grpc_call(url, method, request, metadata=None):
    """(status code, details) of one unary call on an insecure channel; OK's details are ''."""
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary(
            SERVICE + method, request_serializer=type(request).SerializeToString, response_deserializer=bytes
        )
        try:
            call(request, metadata=metadata, timeout=30)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            return error.code(), error.details()


def _stream(url, requests, metadata=None):
    """(status code, details, replies) of one ModelStreamInfer call."""
    with grpc.insecure_channel(url) as channel:
        call = channel.stream_stream(
            SERVICE + "ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        replies = []
        try:
            replies.extend(call(iter(requests), metadata=metadata, timeout=30))
            return grpc.StatusCode.OK, "", replies
        except grpc.RpcError as error:
            return error.code(), error.details(), replies


# ------------------------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_client_with_the_ca_infers_facile(tls_server, certificates, facile_inputs, host):
    rows = _rows(facile_inputs)
    client = grpcclient.InferenceServerClient(
        f"{host}:{tls_server.port}", ssl=True, root_certificates=certificates["ca"]
    )
    try:
        assert client.is_server_live() and client.is_model_ready("facile")
        outputs = infer(client, rows)
    finally:
        client.close()
    assert outputs.shape == (len(rows), 1)
    assert np.array_equal(outputs.view(np.uint32), _http_infer(tls_server.http_url, rows).view(np.uint32))


def test_tls_refuses_clients_that_do_not_trust_its_certificate(tls_server, certificates):
    for client in (
        grpcclient.InferenceServerClient(tls_server.url, ssl=True),  # the system's CAs, not ours
        grpcclient.InferenceServerClient(tls_server.url, ssl=True, root_certificates=certificates["other-ca"]),
        grpcclient.InferenceServerClient(tls_server.url),  # no TLS at all
    ):
        try:
            assert _fails(client).status() == "StatusCode.UNAVAILABLE"
        finally:
            client.close()


def test_mutual_tls_refuses_a_client_without_a_certificate_it_trusts(mutual_tls_server, certificates):
    ca = certificates["ca"]
    for client in (
        grpcclient.InferenceServerClient(mutual_tls_server.url, ssl=True, root_certificates=ca),
        grpcclient.InferenceServerClient(
            mutual_tls_server.url,
            ssl=True,
            root_certificates=ca,
            private_key=certificates["rogue.key"],
            certificate_chain=certificates["rogue"],
        ),
    ):
        try:
            assert _fails(client).status() == "StatusCode.UNAVAILABLE"
        finally:
            client.close()


def test_mutual_tls_serves_a_client_with_its_certificate(mutual_tls_server, certificates, facile_inputs):
    rows = _rows(facile_inputs, 16)
    client = grpcclient.InferenceServerClient(
        mutual_tls_server.url,
        ssl=True,
        root_certificates=certificates["ca"],
        private_key=certificates["client.key"],
        certificate_chain=certificates["client"],
    )
    try:
        outputs = infer(client, rows)
    finally:
        client.close()
    assert np.array_equal(outputs.view(np.uint32), _http_infer(mutual_tls_server.http_url, rows).view(np.uint32))


# ------------------------------------------------------------------------ restricted protocols


def test_restricted_model_repository_grpc(restricted, facile_inputs):
    key = "triton-grpc-protocol-admin-key"
    rejected = (TRITON_GRPC_REJECTION[0], TRITON_GRPC_REJECTION[1].format(key))
    index = service_pb2.RepositoryIndexRequest()
    unload = service_pb2.RepositoryModelUnloadRequest(model_name="facile")
    load = service_pb2.RepositoryModelLoadRequest(model_name="facile")
    assert _grpc_call(restricted.url, "RepositoryIndex", index) == rejected
    assert _grpc_call(restricted.url, "RepositoryIndex", index, [("admin-key", "secret")]) == rejected  # no prefix
    assert _grpc_call(restricted.url, "RepositoryIndex", index, [(key, "wrong")]) == rejected
    assert _grpc_call(restricted.url, "RepositoryModelUnload", unload) == rejected
    assert _grpc_call(restricted.url, "RepositoryModelLoad", load) == rejected
    assert _grpc_call(restricted.url, "RepositoryIndex", index, [(key, "secret")]) == (grpc.StatusCode.OK, "")
    for method, request in (("RepositoryModelUnload", unload), ("RepositoryModelLoad", load)):
        assert _grpc_call(restricted.url, method, request, [(key, "secret")]) != rejected  # the handler answers

    client = grpcclient.InferenceServerClient(restricted.url)
    try:
        with pytest.raises(InferenceServerException) as failure:
            client.get_model_repository_index()
        assert (failure.value.status(), failure.value.message()) == ("StatusCode.UNAVAILABLE", rejected[1])
        index = client.get_model_repository_index(headers={key: "secret"}, as_json=True)["models"]
        assert index == [{"name": "facile", "version": "1", "state": "READY"}]
        assert client.is_model_ready("facile")  # health is not restricted
        assert infer(client, _rows(facile_inputs, 4)).shape == (4, 1)  # nor is inference
    finally:
        client.close()


def test_restricted_model_repository_http(restricted, facile_inputs):
    status, content_type, body = TRITON_HTTP_REJECTION
    rejected = (status, content_type, body.format("admin-key"))
    url = restricted.http_url
    assert _http(url, "POST", "/v2/repository/index") == rejected
    assert _http(url, "GET", "/v2/repository/index") == rejected  # before the method check, as Triton
    assert _http(url, "POST", "/v2/repository/index", {"admin-key": "wrong"}) == rejected
    assert _http(url, "POST", "/v2/repository/index", {"triton-grpc-protocol-admin-key": "secret"}) == rejected
    assert _http(url, "POST", "/v2/repository/models/facile/unload") == rejected
    assert _http(url, "POST", "/v2/repository/models/a%2Fb/unload") == rejected
    assert _http(url, "POST", "/v2/repository/models/facile/unload", {"admin-key": "secret"}) != rejected
    assert _http(url, "POST", "/v2/repository/index", {"Admin-Key": "secret"})[0] == 200  # names ignore case
    assert _http(url, "GET", "/v2/repository/index", {"admin-key": "secret"})[0] == 405

    client = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException, match="This API is restricted, expecting header 'admin-key'"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers={"admin-key": "secret"})
        assert index == [{"name": "facile", "version": "1", "state": "READY"}]
    finally:
        client.close()
    assert _http_infer(url, _rows(facile_inputs, 4)).shape == (4, 1)  # inference is not restricted


def test_restricted_inference_and_health_grpc(restricted_more, facile_inputs):
    key = "triton-grpc-protocol-user-key"
    rejected = (TRITON_GRPC_REJECTION[0], TRITON_GRPC_REJECTION[1].format(key))
    rows = _rows(facile_inputs, 4)
    url = restricted_more.url
    assert _grpc_call(url, "ModelInfer", infer_request(rows, id="s1")) == rejected
    assert _grpc_call(url, "ModelInfer", infer_request(rows, id="s1"), [(key, "k2")]) == (grpc.StatusCode.OK, "")
    assert _grpc_call(url, "ServerLive", service_pb2.ServerLiveRequest()) == rejected
    assert _grpc_call(url, "ModelReady", service_pb2.ModelReadyRequest(name="facile")) == rejected
    assert _grpc_call(url, "ModelMetadata", service_pb2.ModelMetadataRequest(name="facile"))[0] == grpc.StatusCode.OK
    assert _grpc_call(url, "RepositoryIndex", service_pb2.RepositoryIndexRequest())[0] == grpc.StatusCode.OK
    with grpc.insecure_channel(url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as failure:
            check(b"", timeout=30)
        assert (failure.value.code(), failure.value.details()) == rejected
        assert check(b"", metadata=[(key, "k2")], timeout=30) == b"\x08\x01"  # SERVING

    assert _stream(url, [infer_request(rows, id="s1")]) == (*rejected, [])  # the whole stream, before any request
    code, details, replies = _stream(url, [infer_request(rows, id="s1")] * 3, [(key, "k2")])
    assert (code, details, len(replies)) == (grpc.StatusCode.OK, "", 3)
    assert all(not reply.error_message and reply.infer_response.id == "s1" for reply in replies)

    client = grpcclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException, match=rejected[1]):
            infer(client, rows)
        assert infer(client, rows, headers={key: "k2"}).shape == (4, 1)
    finally:
        client.close()


def test_restricted_http_groups(restricted_more, facile_inputs):
    status, content_type, body = TRITON_HTTP_REJECTION
    rejected = (status, content_type, body.format("stat-key"))
    url = restricted_more.http_url
    for path in (
        "/v2",
        "/v2/models/facile",
        "/v2/models/facile/versions/1",
        "/v2/models/stats",
        "/v2/models/facile/stats",
        "/v2/trace/setting",
        "/v2/models/facile/trace/setting",
        "/v2/models/facile/versions/1/trace/setting",
    ):
        assert _http(url, "GET", path) == rejected, path
    assert _http(url, "POST", "/v2/trace/setting", body=b"{}") == rejected
    for path in ("/v2/health/ready", "/v2/models/facile/ready", "/v2/models/facile/config"):
        assert _http(url, "GET", path)[0] == 200, path
    assert json.loads(_http(url, "GET", "/v2/models/facile", {"stat-key": "s"})[2])["name"] == "facile"
    assert _http_infer(url, _rows(facile_inputs, 4)).shape == (4, 1)  # gRPC's restriction is not HTTP's


# ----------------------------------------------------------------------------- flags and tables


def test_parse_restrictions():
    parsed = security.parse_restrictions(["model-repository,trace:admin-key=se=cret", "inference:user=u"])
    assert dict(parsed.groups) == {
        "model-repository": ("admin-key", "se=cret"),
        "trace": ("admin-key", "se=cret"),
        "inference": ("user", "u"),
    }
    assert parsed.grpc_header("trace") == ("triton-grpc-protocol-admin-key", "se=cret")
    assert parsed.http_header("trace") == ("admin-key", "se=cret")
    assert parsed.grpc_header("health") is None and parsed.http_header(None) is None
    assert parsed and not security.parse_restrictions([])


@pytest.mark.parametrize(
    "values, message",
    [  # tritonserver 2.51's messages (it adds a space before the newline of the first two)
        (["foo:k=v"], "unknown restricted protocol 'foo'"),
        (["Health:k=v"], "unknown restricted protocol 'Health'"),
        (["health,:k=v"], "unknown restricted protocol ''"),
        (["health,health:k=v"], "restricted protocol 'health' can not be specified in multiple config groups"),
        (["health:k=v", "health:k2=v2"], "restricted protocol 'health' can not be specified in multiple config groups"),
        *[
            ([text], f"--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got {text}")
            for text in ("health", "health:k", "health:=v", "health:k=", ":k=v", "k=v:health")
        ],
    ],
)
def test_invalid_grpc_restrictions(values, message):
    with pytest.raises(ValueError) as failure:
        security.parse_restrictions(values)
    assert str(failure.value) == message


def test_invalid_http_restrictions_name_the_http_flag():
    with pytest.raises(ValueError, match="^unknown restricted api 'foo'$"):
        security.parse_restrictions(["foo:k=v"], "http")
    with pytest.raises(ValueError, match="^restricted api 'health' can not be specified in multiple config groups$"):
        security.parse_restrictions(["health,health:k=v"], "http")
    with pytest.raises(ValueError) as failure:
        security.parse_restrictions(["health"], "http")
    assert str(failure.value) == "--http-restricted-api option format is '<config name>:<setting>=<value>'. Got health"


def test_grpc_groups_as_triton():
    methods = [method.name for method in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods]
    assert sorted(methods) == sorted(TRITON_GRPC_GROUPS)
    assert {method: security.grpc_group("inference.GRPCInferenceService", method) for method in methods} == (
        TRITON_GRPC_GROUPS
    )
    assert security.grpc_group("grpc.health.v1.Health", "Check") == "health"
    assert set(security.GRPC_METHOD_GROUPS.values()) <= set(security.GROUPS)


@pytest.mark.parametrize("path, group", TRITON_HTTP_GROUPS + FAAST_ONLY_HTTP_GROUPS)
def test_http_groups_as_triton(path, group):
    assert security.http_group(path) == group


def test_grpc_credentials(certificates, tmp_path):
    assert isinstance(
        security.grpc_credentials(certificates["server"], certificates["server.key"], None, False),
        grpc.ServerCredentials,
    )
    assert isinstance(
        security.grpc_credentials(certificates["server"], certificates["server.key"], certificates["ca"], True),
        grpc.ServerCredentials,
    )
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=f"cannot read --grpc-server-cert '{missing}'"):
        security.grpc_credentials(missing, certificates["server.key"], None, False)
    with pytest.raises(ValueError, match="cannot read --grpc-root-cert"):
        security.grpc_credentials(certificates["server"], certificates["server.key"], missing, True)
    with pytest.raises(ValueError, match="--grpc-use-ssl-mutual needs --grpc-root-cert"):
        security.grpc_credentials(certificates["server"], certificates["server.key"], None, True)
    with pytest.raises(ValueError, match="needs --grpc-server-key"):
        security.grpc_credentials(certificates["server"], None, None, False)
    with pytest.raises(ValueError, match="are not a certificate and its unencrypted private key: KEY_VALUES_MISMATCH"):
        security.grpc_credentials(certificates["server"], certificates["client.key"], None, False)
    (tmp_path / "text.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="holds no PEM data"):
        security.grpc_credentials(str(tmp_path / "text.pem"), certificates["server.key"], None, False)


# ------------------------------------------------------------------------- against a real Triton


@pytest.mark.slow  # starts a real Triton (and builds its venv when missing)
def test_restricted_answers_equal_a_real_tritonserver(restricted, tmp_path):
    """The same restricted calls to a live tritonserver 2.51 and to faast answer the same."""
    from reliability import triton_reference

    process, triton_grpc, triton_http = triton_reference.start_triton(tmp_path, *RESTRICTED)
    try:

        def answers(grpc_url, http_url):
            key = "triton-grpc-protocol-admin-key"
            return [
                _grpc_call(grpc_url, "RepositoryIndex", service_pb2.RepositoryIndexRequest()),
                _grpc_call(grpc_url, "RepositoryIndex", service_pb2.RepositoryIndexRequest(), [(key, "wrong")]),
                _grpc_call(grpc_url, "RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest()),
                _grpc_call(grpc_url, "RepositoryIndex", service_pb2.RepositoryIndexRequest(), [(key, "secret")]),
                _grpc_call(grpc_url, "ServerLive", service_pb2.ServerLiveRequest()),
                _http(http_url, "POST", "/v2/repository/index"),
                _http(http_url, "GET", "/v2/repository/index"),
                _http(http_url, "POST", "/v2/repository/models/facile/unload", {"admin-key": "wrong"}),
                _http(http_url, "POST", "/v2/repository/index", {"Admin-Key": "secret"}),
                _http(http_url, "GET", "/v2/health/live")[0],
            ]

        assert answers(restricted.url, restricted.http_url) == answers(triton_grpc, triton_http)
    finally:
        process.terminate()
        process.wait(timeout=30)
