"""The kernel contract: what `faast build` (faast.kernels) writes and the host runtime (faast.host)
and the server (faast) read, in one place both sides import.

- `errors`: every typed error, each class carrying how a client sees it (gRPC code, HTTP status,
  Triton's failure reason), looked up through the class hierarchy.
- `fixed`: `FixedType`, hls4ml's fixed-point types, with their quantization and overflow modes as enums.
- `layout`: the kernel's buffer layout: rows of tensors in lanes of 512-bit words.
- `kernel`: `KernelDescription`, kernel.json typed and versioned, layers included.
- `memory`: `ClientMemory`, a client's shared memory, which only the guarded compiled code may touch.

Imports flow one way: this package imports nothing else of faast; faast.host imports it, faast
imports both, and faast.kernels imports it (never faast.host's internals to describe a kernel).
"""
