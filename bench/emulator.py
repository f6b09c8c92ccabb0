"""The emulator device against the C simulation of the same kernels, in one run (ratios, not absolutes).

    .venv/bin/python bench/emulator.py [--out bench/results]

Builds FACILE (kernels/facile), the test CNN (tests/kernels/cnn, io_stream) and the shipped
ResNet-50 (kernels/resnet50: 64×64, width 1/8), then measures throughput through the host runtime
(packing included) with the whole process pinned to one CPU (one compute unit) and on every core
(one compute unit per core), and checks both devices agree bit for bit on the measured rows. The
full-size ResNet-50 (--variant full) is timed per image on one core (its C simulation on one image:
~2 minutes). Writes emulator.json and emulator.md, with issue 7's speed targets.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one compute unit = one core, BLAS included

import numpy as np  # noqa: E402

from faast.host.csim import CsimDevice  # noqa: E402
from faast.host.device import KernelDescription  # noqa: E402
from faast.host.emulator import EmulatorDevice  # noqa: E402
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
        [Path(sys.executable).parent / "faast", "build", folder, "--out", work], check=True, stdout=subprocess.DEVNULL
    )
    kernel = KernelDescription.read(work / name / "1")
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 4, (emulator_rows, kernel.input_size)).astype(np.float32)
    if name != "cnn":
        rows = _kernel_data(folder, emulator_rows)
    cores = os.cpu_count()
    result = {"kernel": name, "io_type": kernel.raw["io_type"], "cores": cores}
    for label, units in (("one_core", 1), ("all_cores", cores)):
        # One core means the whole process on one CPU: host packing and the compute unit share it.
        os.sched_setaffinity(0, ALL_CPUS if units > 1 else {min(ALL_CPUS)})
        emulator, csim = EmulatorDevice(kernel, units), CsimDevice(kernel, units)
        result[f"emulator_{label}"] = rows_per_second(emulator, rows)
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


def write_markdown(results, full, path):
    lines = [
        "# Emulator vs C simulation",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
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
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    work = args.out / "work" / "emulator"
    work.mkdir(parents=True, exist_ok=True)
    results = [measure(name, *spec, work) for name, spec in KERNELS.items()]
    full = measure_full_resnet(work)
    (args.out / "emulator.json").write_text(json.dumps(results + [full], indent=2) + "\n")
    write_markdown(results, full, args.out / "emulator.md")
    print((args.out / "emulator.md").read_text())


if __name__ == "__main__":
    main()
