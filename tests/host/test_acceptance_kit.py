"""The hardware acceptance kit (bench/hardware.sh) end to end in its dry mode: the real `faast build`,
`faast devices`, `faast serve` and `faast bench`, with the stand-ins of pyxrt and of XRT's library
(under the real pynq) in place of XRT and a card. It proves the kit runs; it says nothing about
hardware, and says so."""

import json
import subprocess

import pytest
from support import ROOT


@pytest.mark.slow  # builds FACILE, serves it and benches it: about a minute
def test_the_dry_run_goes_end_to_end_on_stand_in_cards(tmp_path):
    out = tmp_path / "hardware"
    run = subprocess.run(
        [ROOT / "bench" / "hardware.sh", "--board", "u250", "--dry-run", "--out", out],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "DRY_RUN").read_text().startswith("DRY RUN on stand-in cards")
    assert "facile/1 -> xrt: facile.xclbin is built for xilinx_u250" in (out / "devices.txt").read_text()
    assert "device auto for 'facile': xrt" in (out / "serve.log").read_text()
    exact = json.loads((out / "exact_facile.json").read_text())
    assert exact == {"model": "facile", "rows": 4096, "mismatched_rows": 0, "reference": "emulator"}
    bench = json.loads((out / "bench_facile" / "bench.json").read_text())
    assert [level["concurrency"] for level in bench["levels"]] == [1, 2]
    assert all(level["throughput_infer_per_s"] > 0 for level in bench["levels"])
    guards = json.loads((out / "guards.json").read_text())
    assert {"faast_card_temperature", "faast_card_power_usage"} <= set(guards["card_sensor_families"])
    shadow = guards["shadow_validation"]
    assert shadow["validated_rows"] > 0 and shadow["mismatched_rows"] == 0, shadow
    failover = guards["failover"]
    assert failover["answered_on_engine"] and failover["back_on_card"] and failover["rows_on_engine"] >= 1000
    report = (out / "hardware.md").read_text()
    assert "Shadow validation of facile_guarded: " in report and "0 differed (DRY RUN" in report
    assert report.startswith("# faast hardware acceptance (DRY RUN on stand-in cards: not a hardware result)")
    assert "FaaST Table I, FACILE on u250 at batch 16000: 86000000 inf/s." in report
