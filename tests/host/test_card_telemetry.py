"""Card telemetry: what XRT's device.get_info reports of a card's sensors (thermal, electrical,
mechanical, platform clocks), read by the XRT driver and exported as faast_card_* gauges on a real
`faast serve`'s /metrics and in a real `faast devices`. The cards are the recording pyxrt stand-in's,
answering with JSON shaped as XRT's own sources write it (tests/support/xrt_sensors.py); no hardware.
A sensor XRT reports absent stays absent: no zeros."""

import json
import os
import subprocess
import sys

import pytest
from support import BIN, ROOT, Server, recording_pyxrt, xrt_sensors
from support.cards import F1_SHELL, U250_SHELL
from support.triton_metrics import families, scrape

from faast.host.xrt_driver import card_telemetry

STANDIN_SITE = ROOT / "tests" / "support" / "standin_site"
# A U250 reporting its sensors, an F1 card whose queries fail, a card whose sensors report nothing.
CARDS = [{"name": U250_SHELL, **xrt_sensors.U250}, {"name": F1_SHELL, **xrt_sensors.F1}, {"name": U250_SHELL}]
CARD_FAMILIES = (
    "faast_card_temperature",
    "faast_card_power_usage",
    "faast_card_fan_speed",
    "faast_card_clock_frequency",
)


def _present(entries, name_key, value_key):
    """The fixture's own readings: what XRT marked present."""
    return {e[name_key]: float(e[value_key]) for e in entries if e["is_present"] == "true"}


U250_TEMPERATURES = _present(xrt_sensors.U250["thermal"]["thermals"], "location_id", "temp_C")
U250_FANS = _present(xrt_sensors.U250["mechanical"]["fans"], "location_id", "speed_rpm")
U250_CLOCKS = {c["id"]: float(c["freq_mhz"]) for c in xrt_sensors.U250["platform"]["platforms"][0]["clocks"]}
U250_POWER = float(xrt_sensors.U250["electrical"]["power_consumption_watts"])


@pytest.fixture
def cards_file(tmp_path, monkeypatch):
    """The stand-in cards for a child process (`faast serve`, `faast devices`)."""
    path = tmp_path / "cards.json"
    path.write_text(json.dumps(CARDS))
    monkeypatch.setenv("FAAST_STANDIN_CARDS", str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(STANDIN_SITE), os.environ.get("PYTHONPATH")])))
    return path


def test_the_driver_reads_what_xrt_reports_and_leaves_out_what_it_does_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxrt", recording_pyxrt.module())
    recording_pyxrt.install(CARDS)
    u250, f1, silent = card_telemetry()
    assert (u250.card, u250.bdf, u250.shell) == ("card0", "0000:65:00.1", U250_SHELL)
    assert u250.temperatures_c == U250_TEMPERATURES and "fpga_hbm" not in u250.temperatures_c
    assert u250.power_w == U250_POWER
    assert u250.fans_rpm == U250_FANS and u250.clocks_mhz == U250_CLOCKS
    for card in (f1, silent):  # "N/A", zeros marked absent, "Information unavailable": no reading at all
        assert (card.temperatures_c, card.power_w, card.fans_rpm, card.clocks_mhz) == ({}, None, {}, {})
    recording_pyxrt.CARDS[0]["present"] = False  # a card XRT cannot open is not listed
    assert [card.card for card in card_telemetry()] == []


def test_metrics_export_the_cards_gauges_beside_tritons(server, model_repository, tmp_path, cards_file):
    assert not set(CARD_FAMILIES) & set(families(scrape(f"127.0.0.1:{server.metrics_port}")))  # no card here
    with_cards = Server(model_repository, tmp_path / "serve.log")
    try:
        exported = families(scrape(f"127.0.0.1:{with_cards.metrics_port}"))
    finally:
        with_cards.stop()
    assert "nv_inference_count" in exported and "nv_cpu_utilization" in exported
    for name in CARD_FAMILIES:
        assert exported[name].type == "gauge" and exported[name].help, name
        assert {labels["card"] for _, labels, _ in exported[name].samples} == {"card0"}, name  # others: absent
        assert {labels["bdf"] for _, labels, _ in exported[name].samples} == {"0000:65:00.1"}, name

    def values(name, label):
        return {labels[label]: float(value) for _, labels, value in exported[name].samples}

    assert values("faast_card_temperature", "sensor") == U250_TEMPERATURES
    assert values("faast_card_fan_speed", "fan") == U250_FANS
    assert values("faast_card_clock_frequency", "clock") == U250_CLOCKS
    assert [float(value) for _, _, value in exported["faast_card_power_usage"].samples] == [U250_POWER]


def test_faast_devices_shows_each_cards_sensors(cards_file):
    result = subprocess.run([BIN / "faast", "devices"], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    card0 = lines[lines.index(f"  xrt card0: {U250_SHELL} (board u250, bdf 0000:65:00.1)") + 1]
    temperatures = ", ".join(f"{name} {value:g} C" for name, value in U250_TEMPERATURES.items())
    assert card0 == (
        f"    temperatures {temperatures}; power {U250_POWER:g} W; fans fpga_fan_1 {U250_FANS['fpga_fan_1']:g} rpm; "
        f"clocks DATA_CLK {U250_CLOCKS['DATA_CLK']:g} MHz, KERNEL_CLK {U250_CLOCKS['KERNEL_CLK']:g} MHz"
    )
    card1 = lines.index(f"  xrt card1: {F1_SHELL} (board aws-f1, bdf 0000:66:00.1)")
    assert lines[card1 + 1] == "    no sensor readings (XRT reports none)"
