"""`faast validate`: float vs QKeras vs C simulation vs a served kernel, with a verdict."""

import json
import re
import shutil
import subprocess

import pytest
from support import BIN, ROOT


def validate(kernel, out, *extra):
    return subprocess.run(
        [BIN / "faast", "validate", kernel, "--out", out, *extra],
        capture_output=True,
        text=True,
        cwd=out.parent,
        timeout=900,
    )


@pytest.mark.slow  # TensorFlow models and hls4ml's trace (compiles a C simulation)
def test_validate_facile_passes_and_served_kernel_is_bit_exact(server, tmp_path):
    out = tmp_path / "report"
    run = validate(ROOT / "kernels" / "facile", out, "--url", server.url)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"PASS: (\d+) of \1 checks passed", run.stdout)
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["first_divergence"] is None
    assert report["served"] == {"url": server.url, "values": 20000, "mismatches": 0}
    assert report["kernel_outputs"] == {"device": "emulator", "csim_values": 20000, "csim_mismatches": 0}
    assert report["float_model"] == "the QKeras model with quantizers removed"
    assert set(report["outputs"]) == {"qkeras vs float", "kernel vs float", "kernel vs qkeras"}
    judged = [row for row in report["physics"] if row["enough_entries"]]
    assert len(judged) >= 5 and all(0.9 < row["kernel"]["response"] < 1.1 for row in judged)
    assert [row["layer"] for row in report["layers"]][:3] == ["features", "dense1", "bn1"]
    for name in ("report.md", "report.html", "physics.png", "layers.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "physics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="physics.png">' in (out / "report.html").read_text()


@pytest.mark.slow  # builds with hls4ml, TensorFlow models and hls4ml's trace (compiles a C simulation)
def test_validate_fails_a_too_narrow_layer_and_names_it(tmp_path):
    kernel = tmp_path / "facile_narrow"  # test-only variant: bn3's result squeezed into ap_fixed<8,2>
    shutil.copytree(ROOT / "kernels" / "facile", kernel, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (kernel / "kernel.toml").read_text().replace('name = "facile"', 'name = "facile_narrow"')
    toml = toml.replace("[hls4ml.precision.bn3]\n", '[hls4ml.precision.bn3]\nresult = "ap_fixed<8,2>"\n')
    (kernel / "kernel.toml").write_text(toml)
    out = tmp_path / "report"
    run = validate(kernel, out)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "FAILED hls4ml trace follows QKeras in every layer: first divergence at layer bn3" in run.stdout
    assert re.search(r"FAILED range of layer bn3: \d+ values outside ap_fixed<8,2,TRN,WRAP> \(wraps\)", run.stdout)
    report = json.loads((out / "report.json").read_text())
    assert report["first_divergence"] == "bn3" and not report["passed"]
    overflowing = [row["layer"] for row in report["layers"] if row["out_of_range"] > 0]
    assert overflowing == ["bn3"]
