"""Fixtures of the deployment tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT
from support.podman import PODMAN, RUN_OPTIONS

IMAGE = "localhost/faast:test"


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


@pytest.fixture(scope="session")
def image(model_repository, tmp_path_factory):
    """deploy/Containerfile's runtime stage, built once per session for every container test
    (test_container.py says how its toolchain stage is stood in for)."""
    environment = os.environ | {"PODMAN_OPTIONS": " ".join(PODMAN[1:])}
    subprocess.run(["bash", ROOT / "deploy" / "container" / "base.sh", "runtime"], check=True, env=environment)
    toolchain = tmp_path_factory.mktemp("toolchain")  # what the toolchain stage leaves in /artifacts
    shutil.copytree(model_repository, toolchain / "artifacts" / "models", ignore=shutil.ignore_patterns("hls4ml"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", toolchain / "artifacts" / "wheels", ROOT],
        check=True,
    )
    subprocess.run(
        [
            *PODMAN,
            "build",
            *RUN_OPTIONS[:4],  # the ulimits
            "--layers=false",
            "--format",
            "docker",
            "--target",
            "runtime",
            "--build-context",
            f"toolchain={toolchain}",
            "--ignorefile",
            ROOT / "deploy" / "container" / "ignore",
            "-f",
            ROOT / "deploy" / "Containerfile",
            "-t",
            IMAGE,
            ROOT,
        ],
        check=True,
    )
    return IMAGE
