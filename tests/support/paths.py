"""Where things are: the repository, the installed `faast` entry point, the interpreter running the tests."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent
# -P: never import the source tree from the working directory; always the installed package.
PYTHON = [sys.executable, "-P"]
