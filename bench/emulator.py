"""The emulator device against the C simulation of the same kernels, in one run (ratios, not absolutes).

    .venv/bin/python bench/emulator.py [--out bench/results]

Builds FACILE (kernels/facile), the test CNN (tests/kernels/cnn, io_stream) and the shipped
ResNet-50 (kernels/resnet50: 64×64, width 1/8), then measures throughput through the host runtime
(packing included) with the whole process pinned to one CPU (one compute unit) and on every core
(one compute unit per core), and checks both devices agree bit for bit on the measured rows. The
full-size ResNet-50 (--variant full) is timed per image on one core (its C simulation on one image:
~2 minutes). FACILE is also measured on the emulator's steps where the compiled network pass covers
them (before / after), and as an engine: mantissas in, mantissas out, no host runtime, one thread per
core. Writes emulator.json and emulator.md, with issues 7's and 16's speed targets; --facile-only
prints FACILE's tables and writes nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one compute unit = one core, BLAS included

import numpy as np  # noqa: E402
from machine import cpu  # noqa: E402

from faast.contract.kernel import KernelDescription  # noqa: E402
from faast.host import fastpath  # noqa: E402
from faast.host.csim import CsimDevice  # noqa: E402
from faast.host.emulator import EmulatorDevice, load_program  # noqa: E402
from faast.host.emulator.compiled import NetworkPass  # noqa: E402
from faast.kernels.spec import KernelSpec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALL_CPUS = os.sched_getaffinity(0)
KERNELS = {
    "facile": (ROOT / "kernels" / "facile", 400000, 20000),  # folder, emulator rows, csim rows
    "cnn": (ROOT / "tests" / "kernels" / "cnn", 20000, 1000),
    "resnet50": (ROOT / "kernels" / "resnet50", 64, 8),
}


def rows_per_second(device, rows, repeats=3):
    device.run(rows[:2])  # warm: first-call table and weight loading
    best = min(_timed(device.run, rows) for _ in range(repeats))
    return len(rows) / best


def _timed(function, *args):
    begin = time.perf_counter()
    function(*args)
    return time.perf_counter() - begin


def measure(name, folder, emulator_rows, csim_rows, work):
    subprocess.run(
        [Path(sys.executable).parent / "faast", "build", folder, "--out", work, "--replace"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    kernel = KernelDescription.read(work / name / "1")
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 4, (emulator_rows, kernel.input_size)).astype(np.float32)
    if name != "cnn":
        rows = _kernel_data(folder, emulator_rows)
    cores = os.cpu_count()
    result = {"kernel": name, "io_type": kernel.io_type, "cores": cores}
    for label, units in (("one_core", 1), ("all_cores", cores)):
        # One core means the whole process on one CPU: host packing and the compute unit share it.
        os.sched_setaffinity(0, ALL_CPUS if units > 1 else {min(ALL_CPUS)})
        emulator, csim = EmulatorDevice(kernel, units), CsimDevice(kernel, units)
        result[f"emulator_{label}"] = rows_per_second(emulator, rows)
        if isinstance(emulator.compute_units[0].program, NetworkPass):  # before the pass: the steps
            steps = EmulatorDevice(kernel, units, compiled_pass=False)
            result[f"emulator_steps_{label}"] = rows_per_second(steps, rows)
            steps.close()
        result[f"csim_{label}"] = rows_per_second(csim, rows[:csim_rows], repeats=1)
        same = np.array_equal(
            emulator.run(rows[:csim_rows]).view(np.uint32), csim.run(rows[:csim_rows]).view(np.uint32)
        )
        result[f"bit_equal_{label}"] = bool(same)
        result[f"ratio_{label}"] = result[f"emulator_{label}"] / result[f"csim_{label}"]
        emulator.close()
        csim.close()
    os.sched_setaffinity(0, ALL_CPUS)
    return result


def measure_engine(name, folder, count, work):
    """The emulator as an engine, without the host runtime: input mantissas → output mantissas, in
    process. The emulator's steps (Program.run) and the compiled network pass on one core (the process
    pinned to one CPU); the pass on every core (a thread each, pinned to its own CPU as the one-core
    figure is, on its share of the rows: the pass holds no GIL; the threads start before the clock
    does). The pass writes into an output array of its own per thread, allocated once, as each
    emulator compute unit keeps one. Best of 3."""
    kernel = KernelDescription.read(work / name / "1")
    fixed = kernel.layout.input.type
    rows = fixed.from_bits(fixed.to_bits(_kernel_data(folder, count)))
    rows = rows.astype(np.int16) if fixed.width <= 16 else rows
    program = load_program(kernel)
    network = NetworkPass(program)
    cores = len(ALL_CPUS)
    shares = np.array_split(rows, cores)
    outs = [np.empty((len(share), network.output_columns), np.int64) for share in shares]
    whole = np.empty((len(rows), network.output_columns), np.int64)

    def on_core(cpu, share, out):
        os.sched_setaffinity(0, {cpu})  # this thread only
        try:
            network.run(share, out)
        finally:
            os.sched_setaffinity(0, ALL_CPUS)

    pool = ThreadPoolExecutor(cores)

    def every_core():
        list(pool.map(on_core, sorted(ALL_CPUS), shares, outs))

    os.sched_setaffinity(0, {min(ALL_CPUS)})
    result = {
        "kernel": name,
        "cores": cores,
        "steps_one_core": count / min(_timed(program.run, rows) for _ in range(3)),
        "pass_one_core": count / min(_timed(network.run, rows, whole) for _ in range(3)),
    }
    os.sched_setaffinity(0, ALL_CPUS)
    result["pass_all_cores"] = count / min(_timed(every_core) for _ in range(3))
    pool.shutdown()
    result["bit_equal"] = bool(np.array_equal(network.run(rows[:20000]), program.run(rows[:20000])))
    return result


def _kernel_data(folder, count):
    """Inputs from the kernel folder's own generator (FACILE channels, jet images)."""
    return KernelSpec.read(folder).load_entry("data")(count, seed=5)[0]


def measure_full_resnet(work):
    """Seconds per image on one core: the emulator (best of 2 on 2 images) and the C simulation (one
    image: ~2 minutes), with their outputs compared."""
    subprocess.run(
        [
            Path(sys.executable).parent / "faast",
            "build",
            ROOT / "kernels" / "resnet50",
            "--variant",
            "full",
            "--out",
            work,
            "--replace",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    kernel = KernelDescription.read(work / "resnet50_full" / "1")
    images = np.random.default_rng(2).random((2, kernel.input_size)).astype(np.float32) * 0.01
    os.sched_setaffinity(0, {min(ALL_CPUS)})
    emulator, csim = EmulatorDevice(kernel, 1), CsimDevice(kernel, 1)
    emulator_seconds = 1 / rows_per_second(emulator, images, repeats=2)
    begin = time.perf_counter()
    csim_output = csim.run(images[:1])
    csim_seconds = time.perf_counter() - begin
    same = np.array_equal(emulator.run(images[:1]).view(np.uint32), csim_output.view(np.uint32))
    emulator.close()
    csim.close()
    os.sched_setaffinity(0, ALL_CPUS)
    return {
        "kernel": "resnet50_full",
        "emulator_seconds_per_image_one_core": emulator_seconds,
        "csim_seconds_per_image_one_core": csim_seconds,
        "ratio_one_core": csim_seconds / emulator_seconds,
        "bit_equal_one_core": bool(same),
    }


def engine_targets(facile, engine):
    """Issue 16's engine targets: (what, measured, met)."""
    one, every = engine["pass_one_core"], engine["pass_all_cores"]
    return [
        ("FACILE engine (the pass, in process) >= 20M rows/s on one core", f"{one / 1e6:.1f}M rows/s", one >= 20e6),
        (
            f"FACILE engine on {engine['cores']} cores >= 1.8x one core",
            f"{every / one:.2f}x ({every / 1e6:.1f}M rows/s)",
            every >= 1.8 * one,
        ),
        (
            "FACILE emulator device (host runtime included) >= 20M rows/s on one core",
            f"{facile['emulator_one_core'] / 1e6:.1f}M rows/s",
            facile["emulator_one_core"] >= 20e6,
        ),
    ]


def facile_markdown(facile, engine):
    """FACILE before (the emulator's steps) and after (the compiled network pass), and issue 16's targets."""
    lines = [
        "## FACILE: the compiled network pass",
        "",
        "Rows/s, best of 3. Device: through the host runtime (packing included), a compute unit per core. "
        "Engine: input mantissas to output mantissas in process, a thread per core.",
        "",
        "| path | cores | emulator steps | network pass | pass / steps |",
        "|---|---|---|---|---|",
    ]
    for label, cores in (("one_core", 1), ("all_cores", facile["cores"])):
        steps, network = facile[f"emulator_steps_{label}"], facile[f"emulator_{label}"]
        lines.append(f"| device | {cores} | {steps:,.0f} | {network:,.0f} | {network / steps:.1f}x |")
    steps, one = engine["steps_one_core"], engine["pass_one_core"]
    lines.append(f"| engine | 1 | {steps:,.0f} | {one:,.0f} | {one / steps:.1f}x |")
    lines.append(f"| engine | {engine['cores']} | | {engine['pass_all_cores']:,.0f} | |")
    lines += [
        "",
        f"Engine bit-equal to the steps: {engine['bit_equal']}.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, value, met in engine_targets(facile, engine):
        lines.append(f"| {name} | {value} | {'yes' if met else '**no**'} |")
    return lines


def targets(results, full):
    """Issue 7's speed targets: (what, measured, met)."""
    by_kernel = {r["kernel"]: r for r in results}
    facile, resnet = by_kernel["facile"], by_kernel["resnet50"]
    return [
        (
            "FACILE emulator / csim on one core >= 100x",
            f"{facile['ratio_one_core']:.0f}x",
            facile["ratio_one_core"] >= 100,
        ),
        (
            f"FACILE on this machine's {facile['cores']} cores >= 2M rows/s",
            f"{facile['emulator_all_cores'] / 1e6:.2f}M rows/s",
            facile["emulator_all_cores"] >= 2e6,
        ),
        (
            "reduced ResNet-50 emulator / csim per image >= 100x",
            f"{resnet['ratio_one_core']:.0f}x",
            resnet["ratio_one_core"] >= 100,
        ),
        (
            "full ResNet-50 emulator / csim per image >= 100x",
            f"{full['ratio_one_core']:.0f}x",
            full["ratio_one_core"] >= 100,
        ),
    ]


def write_markdown(results, full, engine, path):
    lines = [
        "# Emulator vs C simulation",
        "",
        f"Machine: {cpu()}, {os.cpu_count()} cores, compiled engine {fastpath.isa()}, "
        f"{time.strftime('%Y-%m-%d')}. Throughput through the host runtime (float rows in, packing and "
        "unpacking included), best of 3; both devices in the same run, outputs compared bit for bit.",
        "",
        "| kernel | io | cores | emulator rows/s | csim rows/s | emulator / csim | bit-equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for label, cores in (("one_core", 1), ("all_cores", r["cores"])):
            lines.append(
                f"| {r['kernel']} | {r['io_type']} | {cores} | {r[f'emulator_{label}']:,.0f} | "
                f"{r[f'csim_{label}']:,.0f} | {r[f'ratio_{label}']:.0f}x | {r[f'bit_equal_{label}']} |"
            )
    lines += [
        "",
        f"Full-size ResNet-50 (224×224×3, width 1, untrained weights) on one core: emulator "
        f"{full['emulator_seconds_per_image_one_core']:.2f} s per image, C simulation "
        f"{full['csim_seconds_per_image_one_core']:.0f} s (one image), {full['ratio_one_core']:.0f}x; "
        f"bit-equal: {full['bit_equal_one_core']}.",
    ]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in targets(results, full)]
    lines += ["", *facile_markdown(results[0], engine)]
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--facile-only", action="store_true", help="FACILE's measurements only, printed")
    args = parser.parse_args()
    work = args.out / "work" / "emulator"
    work.mkdir(parents=True, exist_ok=True)
    kernels = {"facile": KERNELS["facile"]} if args.facile_only else KERNELS
    results = [measure(name, *spec, work) for name, spec in kernels.items()]
    engine = measure_engine("facile", KERNELS["facile"][0], KERNELS["facile"][1], work)
    if args.facile_only:
        print("\n".join(facile_markdown(results[0], engine)))
        return
    full = measure_full_resnet(work)
    (args.out / "emulator.json").write_text(json.dumps(results + [full, engine], indent=2) + "\n")
    write_markdown(results, full, engine, args.out / "emulator.md")
    print((args.out / "emulator.md").read_text())


if __name__ == "__main__":
    main()
