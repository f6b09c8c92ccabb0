"""Triton's perf_analyzer (installed by tests/tools/install_perf_analyzer.sh) completes against faast
for FACILE at batch 1 and 16000, concurrency 1 to 8, over gRPC and over system shared memory, and
reports server-side statistics."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

# slow: installs and runs perf_analyzer
pytestmark = pytest.mark.slow

COMMON = [
    "--concurrency-range",
    "1:8:7",
    "--measurement-mode",
    "count_windows",
    "--stability-percentage",
    "100",
    "--max-trials",
    "5",
]


@pytest.fixture(scope="session")
def perf_analyzer():
    dest = Path(sys.prefix) / "perf_analyzer"
    subprocess.run(["bash", ROOT / "tests" / "tools" / "install_perf_analyzer.sh", dest, sys.executable], check=True)
    return dest


@pytest.mark.parametrize("batch", [1, 16000])
@pytest.mark.parametrize("transport", ["grpc", "system_shared_memory"])
def test_perf_analyzer_completes_with_server_statistics(server, perf_analyzer, transport, batch):
    command = [
        perf_analyzer / "bin" / "perf_analyzer",
        "-m",
        "facile",
        "-u",
        server.url,
        "-i",
        "grpc",
        "-b",
        str(batch),
        *COMMON,
        "--measurement-request-count",
        "4" if batch > 1 else "50",
    ]
    if transport == "system_shared_memory":
        command += ["--shared-memory", "system", "--output-shared-memory-size", str(4 * batch)]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"LD_LIBRARY_PATH": str(perf_analyzer / "lib")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for concurrency in (1, 8):
        section = run.stdout.split(f"Request concurrency: {concurrency}")[1]
        # C++ default formatting: a million or more inferences/s prints as e.g. 1.6e+06
        throughput = float(re.search(r"Throughput: ([\d.e+]+) infer/sec", section).group(1))
        assert throughput > 0
        server_side = section.split("Server:")[1]
        assert int(re.search(r"Inference count: (\d+)", server_side).group(1)) >= batch
        assert re.search(r"compute infer \d+ usec", server_side)
