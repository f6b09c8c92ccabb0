"""The hardware acceptance kit's first step on AWS F1 (bench/hardware.sh --board aws-f1): XRT's mpd
service started and checked before the card is examined. systemctl, sudo and xbutil are stood in by
recording scripts on PATH; nothing here says anything about a card."""

import os
import subprocess

import pytest
from support import ROOT

# systemctl stood in: `is-active --quiet mpd` answers from the file `mpd` (active or not), `start mpd`
# makes it active unless the file says `broken`. Every call of the three tools is recorded.
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$(dirname "$0")/calls"
state=$(cat "$(dirname "$0")/mpd")
case "$*" in
    "is-active --quiet mpd") [ "$state" = active ] ;;
    "start mpd") [ "$state" != broken ] && echo active > "$(dirname "$0")/mpd" ;;
    *) exit 2 ;;
esac
"""
SUDO = """#!/bin/sh
echo "sudo $*" >> "$(dirname "$0")/calls"
"$@"
"""
XBUTIL = """#!/bin/sh
echo "xbutil $*" >> "$(dirname "$0")/calls"
"""


def _kit_until_the_build(tmp_path, mpd):
    """Runs the kit for aws-f1 with no `faast` to build with (FAAST_BIN is empty), so it stops at step 2."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, body in (("systemctl", SYSTEMCTL), ("sudo", SUDO), ("xbutil", XBUTIL)):
        (tools / name).write_text(body)
        (tools / name).chmod(0o755)
    (tools / "mpd").write_text(mpd)
    (tmp_path / "no_faast").mkdir()
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "FAAST_BIN": str(tmp_path / "no_faast")}
    out = tmp_path / "hardware"
    run = subprocess.run(
        [ROOT / "bench" / "hardware.sh", "--board", "aws-f1", "--out", out],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tools / "calls").read_text().splitlines()
    return run, (out / "steps.log").read_text(), calls


@pytest.mark.parametrize(
    "mpd, started",
    [("inactive", ["sudo systemctl start mpd", "systemctl start mpd"]), ("active", [])],
)
def test_on_f1_the_kit_starts_mpd_before_it_examines_the_card(tmp_path, mpd, started):
    run, steps, calls = _kit_until_the_build(tmp_path, mpd)
    assert calls == [
        "systemctl is-active --quiet mpd",
        *started,
        "systemctl is-active --quiet mpd",
        "xbutil examine",
        "xbutil validate",
    ]
    assert "mpd is active" in steps and "== 2. build facile for aws-f1" in steps
    assert run.returncode != 0 and "FAILED: faast build facile" in run.stderr  # no faast here: it stops


def test_on_f1_the_kit_stops_when_mpd_cannot_start(tmp_path):
    run, steps, calls = _kit_until_the_build(tmp_path, "broken")
    assert run.returncode != 0
    assert "FAILED: cannot start XRT's mpd service (sudo systemctl start mpd): F1's card needs it" in run.stderr
    assert calls == ["systemctl is-active --quiet mpd", "sudo systemctl start mpd", "systemctl start mpd"]
    assert "2. build" not in steps
