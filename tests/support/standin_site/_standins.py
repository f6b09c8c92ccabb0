"""Loads the stand-ins of tests/support (recording_pyxrt; standin_libxrt under the real pynq) without
running tests/support/__init__.py (whose tritonclient import would clash with faast's own protobuf
registrations in a `faast` process)."""

import importlib
import json
import os
import sys
import threading
import time
import types
from pathlib import Path


def load(name):
    """tests/support/<name>.py, its cards installed from the JSON file $FAAST_STANDIN_CARDS."""
    if "standin_support" not in sys.modules:
        package = types.ModuleType("standin_support")
        package.__path__ = [str(Path(__file__).parents[1])]
        sys.modules["standin_support"] = package
    standin = importlib.import_module(f"standin_support.{name}")
    cards = Path(os.environ["FAAST_STANDIN_CARDS"])
    standin.install(json.loads(cards.read_text()))
    threading.Thread(target=_follow_presence, args=(standin, cards), daemon=True).start()
    return standin.module()


def _follow_presence(standin, cards):
    """Copy each card's "present" and "corrupt" from the JSON file into the stand-in as the test
    rewrites it, so a test can pull a card out of a running server and put it back, or make it
    compute wrong."""
    while True:
        time.sleep(0.1)
        try:
            listed = json.loads(cards.read_text())
        except (OSError, ValueError):  # being rewritten
            continue
        for card, entry in zip(standin.CARDS, listed, strict=False):
            card["present"] = entry.get("present", True)
            card["corrupt"] = set(entry.get("corrupt", ()))
