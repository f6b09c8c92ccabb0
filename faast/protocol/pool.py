"""The descriptor pool faast.protocol's files are registered in (setup.py rewrites the generated modules to
use it). Not protobuf's default pool: tritonclient.grpc registers Triton's own grpc_service.proto and
model_config.proto there, with the same file and message names as ours (the names Triton's wire format and
method paths need), and a pool refuses a second file of either. In a pool of their own, faast's messages
and tritonclient's load in one process in either order, and serialize to the same bytes."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
