"""`faast build KERNEL --out REPO [--target csim|u250|aws-f1]`: a kernel folder → a Triton
model-repository entry.

    REPO/<name>/config.pbtxt          Triton model configuration (tensor names, batch size, device,
                                      the checksum agent's MD5 of every file faast serves from 1/)
    REPO/<name>/1/kernel.json         the kernel's description: tensors, layers with their types and
                                      attributes, buffer layout
    REPO/<name>/1/weights.npz         every weight's integer mantissas as the C simulation loads them
    REPO/<name>/1/hls4ml/             the generated hls4ml project (build output, never committed)
    REPO/<name>/1/vitis/              the Vitis project: kernel top, connectivity, Makefile
    REPO/<name>/1/csim.so             C simulation: that kernel top compiled with the firmware

The hls4ml conversion runs in a child process (TensorFlow stays out of this one); compiling and
writing the configuration need only the serving dependencies.
"""

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format, text_format

from faast.protocol import model_config as mc
from faast.repository_agents import add_checksums

from . import vitis
from .spec import KernelSpec

VERSION = "1"
TARGETS = ["csim", *vitis.BOARDS]


def build(kernel_dir, repository, target="csim", variant=None):
    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    spec = KernelSpec.read(kernel_dir, variant)
    version_dir = Path(repository).resolve() / spec.name / VERSION
    project_dir = version_dir / "hls4ml"
    for stale in (project_dir, version_dir / "vitis"):
        if stale.exists():
            shutil.rmtree(stale)
    version_dir.mkdir(parents=True, exist_ok=True)
    print(f"converting {spec.path} with hls4ml into {project_dir}", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "faast.kernels.convert",
            str(spec.path),
            str(project_dir),
            *([variant] if variant else []),
        ],
        check=True,
    )

    description = json.loads((project_dir / "kernel.json").read_text())
    (project_dir / "weights.npz").replace(version_dir / "weights.npz")
    fpga = spec.config["fpga"]
    compute_units = vitis.DEFAULT_COMPUTE_UNITS | fpga.get("compute_units", {})
    description |= {
        "kernel": f"{description['project']}_top",
        "buffers": vitis.buffer_layout(description, fpga["rows_per_execution"]),
        "compute_units": compute_units,
        "platforms": {board: spec["platform"] for board, spec in vitis.BOARDS.items()},
    }
    (version_dir / "kernel.json").write_text(json.dumps(description, indent=2) + "\n")
    default_board = target if target in vitis.BOARDS else "u250"
    vitis.write_project(
        version_dir / "vitis", description, compute_units, spec.hls4ml["clock_period_ns"], default_board
    )
    print("compiling the C simulation of the kernel top", flush=True)
    compile_csim(version_dir, description["project"])
    device = spec.serving["device"] if target == "csim" else "auto"
    config = model_config(spec, device)
    served = [path for path in version_dir.iterdir() if path.is_file()]  # what a load reads: pinned
    add_checksums(config, version_dir.parent, served)
    (version_dir.parent / "config.pbtxt").write_text(text_format.MessageToString(config))
    print(f"wrote {version_dir.parent} (target {target})")


def _cxx_standard():
    """The C++ standard hls4ml's own build_lib.sh picks, so csim and predict() compile alike."""
    probe = subprocess.run(
        ["g++", "-Werror", "-fsyntax-only", "-std=c++23", "-xc++", "-", "-o", "/dev/null"],
        input=b"",
        capture_output=True,
    )
    return "-std=c++23" if probe.returncode == 0 else "-std=c++11"


def compile_csim(version_dir, project):
    """csim.so from the Vitis kernel top and the hls4ml firmware, with weights read at run time."""
    templates = vitis.TEMPLATES
    flags = ["-O3", "-fPIC", _cxx_standard(), "-fno-gnu-unique", "-w", "-Ihls4ml", "-Ihls4ml/firmware/ap_types"]
    firmware = ["-include", str(templates / "csim_weights.h"), "-DWEIGHTS_DIR=faast_weights_dir()"]
    units = [
        ("vitis/kernel_top.cpp", []),
        (f"hls4ml/firmware/{project}.cpp", firmware),
        (str(templates / "csim_weights.cpp"), []),
    ]
    objects = [f"csim_{i}.o" for i in range(len(units))]

    def compile_one(unit, obj):
        source, extra = unit
        subprocess.run(["g++", *flags, *extra, "-c", source, "-o", obj], cwd=version_dir, check=True)

    with ThreadPoolExecutor() as pool:
        list(pool.map(compile_one, units, objects))
    subprocess.run(["g++", "-shared", *objects, "-o", "csim.so"], cwd=version_dir, check=True)
    for obj in objects:
        (version_dir / obj).unlink()


def model_config(spec, device):
    serving = spec.serving
    config = mc.ModelConfig(name=spec.name, backend="faast", max_batch_size=serving["max_batch_size"])
    for tensor, target in ((serving["input"], config.input), (serving["output"], config.output)):
        target.add(name=tensor["name"], data_type=mc.DataType.Value("TYPE_" + tensor["datatype"]), dims=tensor["dims"])
    config.parameters["device"].string_value = device
    if "dynamic_batching" in serving:
        json_format.ParseDict(serving["dynamic_batching"], config.dynamic_batching)
    return config
