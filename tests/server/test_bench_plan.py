"""`faast bench` against a real faast, and `faast plan` on the paper's example and on live statistics."""

import json
import re
import subprocess

import pytest
from support import BIN


@pytest.mark.slow  # load generation at three concurrencies
def test_bench_quick_writes_sane_json_and_plots(server, tmp_path):
    out = tmp_path / "bench"
    run = subprocess.run(
        [BIN / "faast", "bench", server.url, "--model", "facile", "--batch", "100", "--quick", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert [level["concurrency"] for level in report["levels"]] == [1, 2, 4]
    for level in report["levels"]:
        assert level["errors"] == 0 and level["requests"] > 0
        assert level["throughput_infer_per_s"] == level["requests"] * 100 / level["duration_s"]
        latency = level["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] < 10_000
        assert level["server_executions"] > 0
        assert level["server_us_per_request"]["compute_infer"] > 0
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bench.json").write_text((out / "bench.json").read_text())


def test_plan_reproduces_the_protodune_example():
    # Wang et al.: t_CPU 330 s, p 0.65, t_GPU 1.77 s, t_latency = 2.05 s transmit + 0.38 s travel.
    run = subprocess.run(
        [
            BIN / "faast",
            "plan",
            "--t-cpu",
            "330",
            "--p",
            "0.65",
            "--t-acc",
            "1.77",
            "--t-latency",
            "2.43",
            "--n-acc",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ratio = float(re.search(r"one accelerator feeds ([\d.]+) client processes", run.stdout).group(1))
    assert round(ratio) == 68  # the paper's 68 CPU processes per GPU
    assert "4 feed 270" in run.stdout  # and the ~270 processes at which their 4-GPU server saturated


@pytest.mark.slow  # load generation
def test_plan_on_live_statistics_and_bench_data(server, tmp_path):
    test_bench_quick_writes_sane_json_and_plots(server, tmp_path)
    out = tmp_path / "plan"
    run = subprocess.run(
        [
            BIN / "faast",
            "plan",
            "--t-cpu",
            "0.5",
            "--p",
            "0.15",
            "--t-latency",
            "0.002",
            "--url",
            server.url,
            "--model",
            "facile",
            "--bench",
            tmp_path / "bench.json",
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["t_acc"] > 0 and plan["t_acc_source"].startswith(f"measured at {server.url}")
    assert plan["clients_per_accelerator"] == plan["t_ideal"] / plan["t_acc"]
    assert [point["clients"] for point in plan["comparison"]] == [1, 2, 4]
    assert all(point["predicted_s"] > 0 and point["measured_s"] > 0 for point in plan["comparison"])
    assert (out / "plan.png").read_bytes()[:4] == b"\x89PNG"
