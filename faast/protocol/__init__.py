"""Triton's v2 protocol as Python messages, generated from protos/ when the package is built and
registered in POOL, a descriptor pool of their own (pool.py says why), not protobuf's default one."""

from .pool import POOL
from . import grpc_service_pb2 as service
from . import grpc_service_pb2_grpc as service_grpc
from . import health_pb2 as health
from . import health_pb2_grpc as health_grpc
from . import model_config_pb2 as model_config

__all__ = ["POOL", "service", "service_grpc", "health", "health_grpc", "model_config"]
