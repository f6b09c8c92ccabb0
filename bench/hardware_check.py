"""The checks of the hardware acceptance kit (bench/hardware.sh), against a running `faast serve`.

    python bench/hardware_check.py exact --url HOST:PORT --model facile --version-dir REPO/facile/1 --out F
    python bench/hardware_check.py guards --metrics-url URL --model facile_guarded --out F [--failover-cards FILE]
    python bench/hardware_check.py report --board u250 --out DIR [--dry-run] BENCH_JSON...

`exact` sends edge-case rows (the input type's grid, half an LSB beside it, both ends of its range
and beyond, zeros, huge values) to the served model and compares its answers bit for bit with the
emulator (or the C simulation) of the same version folder. `guards` reads /metrics after `exact` ran
on a model with shadow validation of every execution and failover to the engine: the card's
sensors (faast_card_*), the rows the engine re-checked and how many differed, and, in a dry run
(--failover-cards: the stand-in cards' file, whose card it pulls out and puts back), that the model
answered on the engine while the card was gone and went back to it. `report` writes hardware.md: the measured
throughput and latency beside the FaaST paper's Table I. A dry run (stand-in cards) says so on every
line: it proves the kit runs, not what a card does.
"""

import argparse
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from faast.contract.kernel import KernelDescription
from faast.host.drivers import open_engine

# FaaST (Krupa et al.), Table I: FACILE inferences per second at batch 16000.
TABLE_I = {"u250": 86e6, "aws-f1": 36e6}


def edge_rows(fixed, width, count, seed):
    """`count` rows reaching the input type's edges: on its grid, half and a quarter LSB beside it,
    ±0, one LSB, both ends of its range and beyond them (wrapping or saturating), huge values."""
    rng = np.random.default_rng(seed)
    lsb = 2.0**-fixed.fraction
    low, high = (
        (-(2.0 ** (fixed.integer - 1)), 2.0 ** (fixed.integer - 1) - lsb)
        if fixed.signed
        else (0.0, 2.0**fixed.integer - lsb)
    )
    special = np.array(
        [0.0, -0.0, lsb, -lsb, lsb / 2, -lsb / 2, low, high, low - lsb, high + lsb, 4 * low, 4 * high, 1e9]
    )
    grid = rng.integers(round(low / lsb), round(high / lsb) + 1, (count, width)) * lsb
    rows = grid + rng.choice([0.0, 0.0, -0.5, 0.5, 0.25], grid.shape) * lsb
    picks = rng.random(grid.shape) < 0.2
    rows[picks] = rng.choice(special, int(picks.sum()))
    return rows.astype(np.float32)


def _infer(url, model, rows):
    from faast.loadgen import _model_io, _stub
    from faast.protocol import service

    (in_name, in_type, _), _ = _model_io(url, model)
    request = service.ModelInferRequest(model_name=model)
    request.inputs.add(name=in_name, datatype=in_type, shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    channel, stub = _stub(url)
    with channel:
        response = stub.ModelInfer(request)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(len(rows), -1)


def exact(args):
    kernel = KernelDescription.read(args.version_dir)
    rows = edge_rows(kernel.layout.input.type, kernel.input_size, args.rows, args.seed)
    reference = open_engine(kernel)
    expected = np.concatenate([reference.run(rows[i : i + 1000]) for i in range(0, len(rows), 1000)])
    reference.close()
    served = np.concatenate([_infer(args.url, args.model, rows[i : i + 1000]) for i in range(0, len(rows), 1000)])
    mismatched = int(np.sum(np.any(served.view(np.uint32) != expected.view(np.uint32), axis=1)))
    result = {"model": args.model, "rows": len(rows), "mismatched_rows": mismatched, "reference": reference.kind}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: {len(rows)} edge rows, {mismatched} differ from the {reference.kind} bit for bit")
    return 0 if mismatched == 0 else 1


def _metrics(url):
    """{(family, labels text): value} of a /metrics page."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found = re.findall(r"^(\w+)(\{[^}]*\})? (\S+)$", text, re.M)
    return {(family, labels): float(value) for family, labels, value in found}


def _model_value(metrics, family, model):
    return next((v for (f, labels), v in metrics.items() if f == family and f'model="{model}"' in labels), None)


def _until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def guards(args):
    metrics = _metrics(args.metrics_url)
    sensors = sorted({f for f, _ in metrics if f.startswith("faast_card_")})
    shadow = {
        "validated_rows": _model_value(metrics, "faast_shadow_validated_rows", args.model),
        "mismatched_rows": _model_value(metrics, "faast_shadow_mismatched_rows", args.model),
        "skipped_executions": _model_value(metrics, "faast_shadow_skipped_executions", args.model),
    }
    result = {"model": args.model, "card_sensor_families": sensors, "shadow_validation": shadow}
    ok = bool(sensors) and bool(shadow["validated_rows"]) and shadow["mismatched_rows"] == 0
    if args.failover_cards:
        result["failover"] = failover(args)
        ok = ok and result["failover"]["answered_on_engine"] and result["failover"]["back_on_card"]
    else:
        result["failover"] = "not exercised: it needs the card to go away (the dry run pulls a stand-in card out)"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


def failover(args):
    """Pull the stand-in card out, check the model still answers (on the engine, exactly), put it back."""
    cards = Path(args.failover_cards)
    listed = json.loads(cards.read_text())
    kernel = KernelDescription.read(args.version_dir)
    rows = edge_rows(kernel.layout.input.type, kernel.input_size, 1000, args.seed)
    reference = open_engine(kernel)
    expected = reference.run(rows)
    reference.close()
    cards.write_text(json.dumps([card | {"present": False} for card in listed]))
    try:
        answers = [_infer(args.url, args.model, rows) for _ in range(3)]  # faulted units leave, then the engine
        exact_on_engine = all(np.array_equal(a.view(np.uint32), expected.view(np.uint32)) for a in answers)
        active = _model_value(_metrics(args.metrics_url), "faast_failover_active", args.model) == 1
    finally:
        cards.write_text(json.dumps(listed))
    back = _until(lambda: _model_value(_metrics(args.metrics_url), "faast_failover_active", args.model) == 0)
    # Every model's units back in rotation (not only the guarded one's) before the kit goes on.
    back = back and _until(
        lambda: all(
            v == 0 for (f, _), v in _metrics(args.metrics_url).items() if f == "faast_compute_units_out_of_rotation"
        )
    )
    rows_on_engine = _model_value(_metrics(args.metrics_url), "faast_failover_rows", args.model)
    return {"answered_on_engine": exact_on_engine and active, "rows_on_engine": rows_on_engine, "back_on_card": back}


def _failover_line(failover):
    if isinstance(failover, str):
        return failover
    answered = "answered" if failover["answered_on_engine"] else "did NOT answer"
    back = "went back to the card" if failover["back_on_card"] else "did NOT go back to the card"
    return f"with the card gone the model {answered} on the engine ({failover['rows_on_engine']:.0f} rows), then {back}"


def report(args):
    label = "DRY RUN on stand-in cards: not a hardware result" if args.dry_run else f"measured on {args.board}"
    lines = [f"# faast hardware acceptance ({label})", "", "| model | batch | clients | inf/s | p50 ms | p99 ms |"]
    lines.append("|---|---|---|---|---|---|")
    best = {}
    for path in args.bench:
        bench = json.loads(Path(path).read_text())
        for level in bench["levels"]:
            rate = level["throughput_infer_per_s"]
            best[bench["model"]] = max(best.get(bench["model"], 0.0), rate)
            latency = level["latency_ms"]
            lines.append(
                f"| {bench['model']} | {bench['batch']} | {level['concurrency']} | {rate:.0f} | "
                f"{latency['p50']:.3f} | {latency['p99']:.3f} |"
            )
    paper = TABLE_I.get(args.board)
    lines += ["", f"FaaST Table I, FACILE on {args.board} at batch 16000: {paper:.0f} inf/s."]
    if "facile" in best and paper:
        lines.append(f"faast here: {best['facile']:.0f} inf/s, {best['facile'] / paper:.3f} of the paper ({label}).")
    guarded = Path(args.out) / "guards.json"
    if guarded.exists():
        checks = json.loads(guarded.read_text())
        shadow = checks["shadow_validation"]
        lines += [
            "",
            f"Card sensors on /metrics: {', '.join(checks['card_sensor_families']) or 'none'}.",
            f"Shadow validation of {checks['model']}: {shadow['validated_rows']:.0f} rows re-run on the engine, "
            f"{shadow['mismatched_rows']:.0f} differed ({label}).",
            f"Failover: {_failover_line(checks['failover'])}.",
        ]
    (Path(args.out) / "hardware.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("exact")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version-dir", required=True)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", required=True)
    p.set_defaults(run=exact)
    p = commands.add_parser("guards")
    p.add_argument("--metrics-url", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version-dir", required=True)
    p.add_argument("--failover-cards", help="dry run: the stand-in cards' file, to pull the card out")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", required=True)
    p.set_defaults(run=guards)
    p = commands.add_parser("report")
    p.add_argument("--board", required=True, choices=sorted(TABLE_I))
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("bench", nargs="+", help="bench.json files of `faast bench`")
    p.set_defaults(run=report)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
