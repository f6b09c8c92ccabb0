"""Fixtures of the deployment tests."""

import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


@pytest.fixture(scope="session")
def perf_analyzer():
    """perf_analyzer installed by tests/tools/install_perf_analyzer.sh (next to this interpreter)."""
    dest = Path(sys.prefix) / "perf_analyzer"
    subprocess.run(["bash", ROOT / "tests" / "tools" / "install_perf_analyzer.sh", dest, sys.executable], check=True)
    return dest


@pytest.fixture(scope="session")
def helm():
    """A real helm installed by tests/tools/install_helm.sh (next to this interpreter)."""
    dest = Path(sys.prefix) / "helm"
    subprocess.run(["bash", ROOT / "tests" / "tools" / "install_helm.sh", dest, sys.executable], check=True)
    return dest / "bin" / "helm"
