"""Importing faast.protocol in a test process that also imports tritonclient.grpc."""

import importlib
import sys
from unittest import mock

from google.protobuf import descriptor_pool


def import_faast_protocol() -> None:
    """faast.protocol and tritonclient.grpc (which the suite's conftest imports) both register a
    grpc_service.proto in protobuf's default descriptor pool, and the pool refuses the second one.
    When tritonclient came first, load faast.protocol into a private pool: tests that build and
    serialize faast's own messages in process need only faast.protocol's own classes. Call it
    before importing anything of faast that imports faast.protocol."""
    if "faast.protocol" in sys.modules:
        return
    try:
        descriptor_pool.Default().FindFileByName("grpc_service.proto")
    except KeyError:
        return  # nothing registered it: the ordinary import works
    private = descriptor_pool.DescriptorPool()
    with mock.patch.object(descriptor_pool, "Default", lambda: private):
        importlib.import_module("faast.protocol")
