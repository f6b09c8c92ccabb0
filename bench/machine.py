"""What the benchmarks say of the machine they ran on: its CPU (they differ between this project's
machines, AVX-512 VNNI on some, AVX2 only on others), for every table that quotes a speed."""

import platform
from pathlib import Path


def cpu() -> str:
    """The CPU's model and the vector extensions the engines use, as /proc/cpuinfo names them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = [flag for flag in ("avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512_vnni") if flag in flags]
    return f"{model or platform.machine()} ({' '.join(vector) or 'no AVX2'})"
