"""`faast devices`, the real command in a child process, on 0, 1 and 2 stand-in cards
(tests/support/standin_site puts the stand-ins of pyxrt and of XRT's library, under the real pynq,
on its import path), with a wrong platform and a missing xclbin. No hardware is involved."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from support import BIN, ROOT, recording_pyxrt
from support.cards import F1_SHELL, U250_PLATFORM, U250_SHELL, fake_xclbin

from faast.contract.kernel import KernelDescription
from faast.host.xrt_driver import XrtDevice

F1_PLATFORM = "xilinx_aws-vu9p-f1_shell-v04261818_201920_3"
STANDIN_SITE = ROOT / "tests" / "support" / "standin_site"


@pytest.fixture
def repository(model_repository, tmp_path):
    """facile with a U250 xclbin, and a copy of it (facile_bare) without any xclbin."""
    repo = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repo / "facile")
    fake_xclbin(repo / "facile" / "1")
    shutil.copytree(model_repository / "facile", repo / "facile_bare")
    config = repo / "facile_bare" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', 'name: "facile_bare"'))
    return repo


def devices(tmp_path, cards, *args, standins=True):
    (tmp_path / "cards.json").write_text(json.dumps(cards))
    env = {**os.environ, "FAAST_STANDIN_CARDS": str(tmp_path / "cards.json")}
    if standins:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDIN_SITE), env.get("PYTHONPATH")]))
    result = subprocess.run([BIN / "faast", "devices", *map(str, args)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_no_card(repository, tmp_path):
    out = devices(tmp_path, [], repository)
    assert "  xrt: no card (none listed)" in out and "  pynq: no card (none listed)" in out
    assert f"  facile/1: facile.xclbin for {U250_PLATFORM} (board u250)" in out
    assert "  facile/1 -> emulator: no card is usable (xrt: no card; pynq: no card)" in out
    assert f"  facile_bare/1 -> emulator: {repository / 'facile_bare' / '1'} holds no xclbin" in out


def test_one_card(repository, tmp_path):
    out = devices(tmp_path, [{"name": U250_SHELL}], repository)
    assert f"  xrt card0: {U250_SHELL} (board u250, bdf 0000:65:00.1)" in out
    assert f"  pynq card0: {U250_SHELL} (board u250)" in out
    assert f"  facile/1 -> xrt: facile.xclbin is built for {U250_PLATFORM} (u250), as card0 (card0 {U250_SHELL})" in out
    assert "  facile_bare/1 -> emulator:" in out  # no xclbin, card or not


def test_two_cards_of_different_boards(repository, tmp_path):
    cards = [{"name": F1_SHELL}, {"name": U250_SHELL}]
    out = devices(tmp_path, cards, repository)
    assert f"  xrt card0: {F1_SHELL} (board aws-f1" in out and f"  xrt card1: {U250_SHELL} (board u250" in out
    assert f"facile/1 -> xrt: facile.xclbin is built for {U250_PLATFORM} (u250), as card1 (card0 {F1_SHELL}" in out


def test_the_driver_opens_only_the_cards_the_placement_names(repository, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", recording_pyxrt.module())
    recording_pyxrt.install([{"name": F1_SHELL}, {"name": U250_SHELL}])
    device = XrtDevice(KernelDescription.read(repository / "facile" / "1"))
    assert {cu.name.split("/")[0] for cu in device.compute_units} == {"card1"}
    device.close()


def test_wrong_platform(repository, tmp_path):
    fake_xclbin(repository / "facile" / "1", platform=F1_PLATFORM)
    out = devices(tmp_path, [{"name": U250_SHELL}], repository)
    assert f"  facile/1: facile.xclbin for {F1_PLATFORM} (board aws-f1)" in out
    assert (
        f"  facile/1 -> none: xrt: facile.xclbin is built for {F1_PLATFORM}, but no card matches "
        f"(card0 {U250_SHELL})" in out
    )


def test_missing_xclbin_for_a_model_that_asks_for_a_card(repository, tmp_path):
    config = repository / "facile_bare" / "config.pbtxt"
    config.write_text(config.read_text().replace('"auto"', '"xrt"'))
    out = devices(tmp_path, [{"name": U250_SHELL}], repository)
    assert f"  facile_bare/1 -> none: device 'xrt': {repository / 'facile_bare' / '1'} holds no xclbin" in out


def test_without_xrt_it_says_what_is_missing(tmp_path):
    out = devices(tmp_path, [], standins=False)
    assert "  xrt: no card (XRT's Python binding pyxrt is not importable (source /opt/xilinx/xrt/setup.sh))" in out
