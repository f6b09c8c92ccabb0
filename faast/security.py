"""Security as tritonserver does it: gRPC over TLS (`--grpc-use-ssl`, `--grpc-use-ssl-mutual`) and
restricted protocols and APIs (`--grpc-restricted-protocol`, `--http-restricted-api`).

A restricted group of RPCs or routes is served only to requests carrying a header with the value
the flag names; anything else is answered as tritonserver 2.51 answers it:

- gRPC: UNAVAILABLE, "This protocol is restricted, expecting header 'triton-grpc-protocol-KEY'".
  The metadata key is the flag's KEY behind Triton's prefix `triton-grpc-protocol-`, compared
  exactly (gRPC metadata keys are lowercase on the wire, so KEY should be too). An undecodable
  request is answered "Unable to parse request" before the check, and ModelStreamInfer ends the
  whole stream before reading any request, both as Triton does.
- HTTP: 403, body {"error":"This API is restricted, expecting header 'KEY'"} as text/plain, before
  any other check of the request (a wrong method gets the 403 too); the header name is matched
  case-insensitively, its value exactly.

This module holds the flag parsing and the tables of which RPC and route belongs to which group;
the transports look a call's group up and check the header (faast.grpc_server, faast.http_server).
"""

import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# Triton's restricted categories (src/restricted_features.h, RESTRICTED_CATEGORY_NAMES), in its order.
GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton's kRestrictedProtocolHeaderTemplate (src/grpc/grpc_server.h)

# The group of every gRPC method faast serves, "service/method" → group: Triton 2.51's
# src/grpc/grpc_server.cc and infer_handler.cc, checked against a real tritonserver 2.51 started with
# every group restricted under its own key. grpc.health.v1's Check is a health RPC there too.
GRPC_METHOD_GROUPS: Mapping[str, str] = {
    "inference.GRPCInferenceService/ServerLive": "health",
    "inference.GRPCInferenceService/ServerReady": "health",
    "inference.GRPCInferenceService/ModelReady": "health",
    "inference.GRPCInferenceService/ServerMetadata": "metadata",
    "inference.GRPCInferenceService/ModelMetadata": "metadata",
    "inference.GRPCInferenceService/ModelInfer": "inference",
    "inference.GRPCInferenceService/ModelStreamInfer": "inference",
    "inference.GRPCInferenceService/ModelConfig": "model-config",
    "inference.GRPCInferenceService/ModelStatistics": "statistics",
    "inference.GRPCInferenceService/RepositoryIndex": "model-repository",
    "inference.GRPCInferenceService/RepositoryModelLoad": "model-repository",
    "inference.GRPCInferenceService/RepositoryModelUnload": "model-repository",
    "inference.GRPCInferenceService/SystemSharedMemoryStatus": "shared-memory",
    "inference.GRPCInferenceService/SystemSharedMemoryRegister": "shared-memory",
    "inference.GRPCInferenceService/SystemSharedMemoryUnregister": "shared-memory",
    "inference.GRPCInferenceService/CudaSharedMemoryStatus": "shared-memory",
    "inference.GRPCInferenceService/CudaSharedMemoryRegister": "shared-memory",
    "inference.GRPCInferenceService/CudaSharedMemoryUnregister": "shared-memory",
    "inference.GRPCInferenceService/TraceSetting": "trace",
    "inference.GRPCInferenceService/LogSettings": "logging",
    "grpc.health.v1.Health/Check": "health",
}

# The group of an HTTP path, as Triton 2.51's HTTPAPIServer::Handle dispatches (src/http_server.cc),
# whatever the method: the first pattern matching the whole path wins; a path matching none (404)
# is in no group. Checked against a real tritonserver 2.51 like the gRPC table. One deliberate
# difference: Triton takes a version only as digits and has no versioned trace route, where faast's
# routes take any version segment and serve /v2/models/M/versions/V/trace/setting; those paths are
# classified too ([^/]+ and the versioned trace pattern), so no faast route escapes its group.
_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"
HTTP_PATH_GROUPS: tuple[tuple[str, str], ...] = (
    (r"/v2/models/stats", "statistics"),
    (r"/v2/logging", "logging"),
    (_MODEL, "metadata"),
    (_MODEL + r"/ready", "health"),
    (_MODEL + r"/(?:infer|generate|generate_stream)", "inference"),
    (_MODEL + r"/config", "model-config"),
    (_MODEL + r"/stats", "statistics"),
    (_MODEL + r"/trace/setting", "trace"),
    (r"/v2", "metadata"),
    (r"/v2/health/(?:live|ready)", "health"),
    (r"/v2/systemsharedmemory(?:/region/[^/]+)?/(?:status|register|unregister)", "shared-memory"),
    (r"/v2/cudasharedmemory(?:/region/[^/]+)?/(?:status|register|unregister)", "shared-memory"),
    (r"/v2/repository(?:/[^/]+)?/(?:index|models/[^/]+/(?:load|unload))", "model-repository"),
    (r"/v2/trace/setting", "trace"),
)
_HTTP_PATTERNS = tuple((re.compile(pattern), group) for pattern, group in HTTP_PATH_GROUPS)

# The flags, as tritonserver names them: (option, what its error messages call a group).
OPTIONS = {"grpc": ("--grpc-restricted-protocol", "protocol"), "http": ("--http-restricted-api", "api")}


def http_group(path: str) -> str | None:
    """The restricted-API group of an HTTP request path (no query), None for a path in none."""
    for pattern, group in _HTTP_PATTERNS:
        if pattern.fullmatch(path):
            return group
    return None


def grpc_group(service: str, method: str) -> str:
    """The group of a gRPC method (service: its full name, e.g. inference.GRPCInferenceService)."""
    return GRPC_METHOD_GROUPS[f"{service}/{method}"]


@dataclass(frozen=True)
class Restrictions:
    """What is restricted: group → (KEY, VALUE) the flag named. Empty: nothing is restricted."""

    groups: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def grpc_header(self, group: str) -> tuple[str, str] | None:
        """The (metadata key, value) a gRPC call of `group` needs, None if it is not restricted."""
        if group not in self.groups:
            return None
        key, value = self.groups[group]
        return GRPC_HEADER_PREFIX + key, value

    def http_header(self, group: str | None) -> tuple[str, str] | None:
        """The (header, value) an HTTP request of `group` needs, None if it is not restricted."""
        return self.groups.get(group) if group is not None else None


def parse_restrictions(values: Iterable[str], transport: str = "grpc") -> Restrictions:
    """Restrictions from the values of one transport's flag, each `<groups>:<key>=<value>` with
    <groups> a comma-separated list of GROUPS (transport: "grpc" or "http", only for the wording of
    errors). A malformed value, an unknown group or a group named twice raises ValueError with
    tritonserver's message."""
    option, kind = OPTIONS[transport]
    groups: dict[str, tuple[str, str]] = {}
    for text in values:
        # Triton's ParseGenericConfigOption: the first ':' ends the groups, the first '=' after it the key.
        colon = text.find(":")
        equals = text.find("=", colon + 1)
        names, key, value = text[:colon], text[colon + 1 : equals], text[equals + 1 :]
        if colon < 0 or equals < 0 or not (names and key and value):
            raise ValueError(f"{option} option format is '<config name>:<setting>=<value>'. Got {text}")
        for name in names.split(","):
            if name not in GROUPS:
                raise ValueError(f"unknown restricted {kind} '{name}'")
            if name in groups:
                raise ValueError(f"restricted {kind} '{name}' can not be specified in multiple config groups")
            groups[name] = (key, value)
    return Restrictions(groups)


def grpc_restricted_message(header: str) -> str:
    return f"This protocol is restricted, expecting header '{header}'"


def http_restricted_message(header: str) -> str:
    return f"This API is restricted, expecting header '{header}'"


def metadata_allows(metadata: Iterable[tuple[str, str | bytes]] | None, header: tuple[str, str]) -> bool:
    """Whether gRPC invocation metadata carries the header: its first entry of that key has the value
    (Triton looks the key up in the client metadata and compares that one value)."""
    name, expected = header
    for key, value in metadata or ():
        if key == name:
            return value == expected
    return False


def _read_pem(path: str | None, option: str) -> bytes:
    if not path:
        raise ValueError(f"gRPC over TLS needs {option}")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {option} '{path}': {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{option} '{path}' holds no PEM data")
    return data


def grpc_credentials(
    server_cert: str | None, server_key: str | None, root_cert: str | None, mutual: bool
) -> grpc.ServerCredentials:
    """TLS credentials for the gRPC server from PEM files, as tritonserver builds them: the server's
    certificate (chain) and key; with `mutual`, a client certificate is required and verified against
    `root_cert` (the CA that signs the clients'). Without `mutual`, clients are not asked for one.
    A missing or unreadable file raises ValueError naming the flag."""
    cert = _read_pem(server_cert, "--grpc-server-cert")
    key = _read_pem(server_key, "--grpc-server-key")
    try:  # refused now, clearly, rather than as grpc's "Failed to bind" when the server starts
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(server_cert), str(server_key), password="")
    except ssl.SSLError as error:
        raise ValueError(
            f"--grpc-server-cert '{server_cert}' and --grpc-server-key '{server_key}' are not a certificate "
            f"and its unencrypted private key: {error.reason or error}"
        ) from None
    if mutual and not root_cert:
        raise ValueError("--grpc-use-ssl-mutual needs --grpc-root-cert (the CA that signs the client certificates)")
    root = _read_pem(root_cert, "--grpc-root-cert") if root_cert else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=root, require_client_auth=mutual)
