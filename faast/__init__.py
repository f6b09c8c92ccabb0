"""faast: FPGA inference as a service, speaking NVIDIA Triton's protocol.

The path of one request: faast.grpc_server or faast.http_server (transport) → their converters →
faast.dataplane (Triton's semantics) → faast.batcher or faast.scheduler → faast.host.device (compute
units, packing) → a driver (faast.host.emulator, csim, xrt_driver, pynq_driver) → the hls4ml kernel.
ARCHITECTURE.md walks through it.
"""

__version__ = "0.1.0"
