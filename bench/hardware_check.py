"""The checks of the hardware acceptance kit (bench/hardware.sh), against a running `faast serve`.

    python bench/hardware_check.py exact --url HOST:PORT --model facile --version-dir REPO/facile/1 --out F
    python bench/hardware_check.py report --board u250 --out DIR [--dry-run] BENCH_JSON...

`exact` sends edge-case rows (the input type's grid, half an LSB beside it, both ends of its range
and beyond, zeros, huge values) to the served model and compares its answers bit for bit with the
emulator (or the C simulation) of the same version folder. `report` writes hardware.md: the measured
throughput and latency beside the FaaST paper's Table I. A dry run (stand-in cards) says so on every
line: it proves the kit runs, not what a card does.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription
from faast.host.drivers import open_device

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
    try:
        reference = open_device("emulator", args.version_dir)
    except DeviceError:
        reference = open_device("csim", args.version_dir)
    expected = np.concatenate([reference.run(rows[i : i + 1000]) for i in range(0, len(rows), 1000)])
    reference.close()
    served = np.concatenate([_infer(args.url, args.model, rows[i : i + 1000]) for i in range(0, len(rows), 1000)])
    mismatched = int(np.sum(np.any(served.view(np.uint32) != expected.view(np.uint32), axis=1)))
    result = {"model": args.model, "rows": len(rows), "mismatched_rows": mismatched, "reference": reference.kind}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: {len(rows)} edge rows, {mismatched} differ from the {reference.kind} bit for bit")
    return 0 if mismatched == 0 else 1


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
