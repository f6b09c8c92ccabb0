"""faast: FPGA inference as a service, speaking NVIDIA Triton's protocol.

The path of one request: faast.grpc_server (transport) → faast.dataplane (protocol-agnostic
checks) → faast.model (one served model) → faast.host (device: C simulation or card) → the
hls4ml kernel.
"""

__version__ = "0.1.0"
