"""The README's list of the layers the emulator runs is its handler table, class for class."""

import re
from pathlib import Path

from faast.host.emulator import HANDLERS

README = Path(__file__).resolve().parents[2] / "README.md"
PREFIX = "Layers the emulator runs"


def readme_layers():
    lines = [line for line in README.read_text().splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, f"README.md should have one line starting {PREFIX!r}, found {len(lines)}"
    classes = re.findall(r"`([^`]+)`", lines[0].partition(":")[2])
    assert classes == sorted(classes), f"README.md lists the emulator's layers unsorted: {classes}"
    return classes


def test_readme_lists_exactly_the_emulator_handlers():
    listed = set(readme_layers())
    handled = set(HANDLERS)
    assert listed == handled, (
        f"README.md's {PREFIX!r} and host/emulator/layers.py's HANDLERS differ: "
        f"handled but not listed {sorted(handled - listed)}, listed but not handled {sorted(listed - handled)}"
    )
