"""`faast build SOURCE --out REPO`: what an hls4ml user has → a Triton model-repository entry.

SOURCE is a kernel folder, an hls4ml YAML configuration, a Keras model file (.h5, SavedModel,
.json with --weights, .keras), an ONNX / QONNX model, or an hls4ml project directory
(kernels/sources.py tells them apart). It writes:

    REPO/<name>/config.pbtxt          Triton model configuration (every tensor, batch size, dynamic
                                      batching, device, the checksum agent's MD5 of every file faast
                                      serves from 1/)
    REPO/<name>/1/kernel.json         the kernel's description: tensors, layers with their types and
                                      attributes, buffer layout
    REPO/<name>/1/weights.npz         every weight's integer mantissas as the C simulation loads them
    REPO/<name>/1/hls4ml/             the hls4ml project (build output, never committed)
    REPO/<name>/1/vitis/              the Vitis project: kernel top, connectivity, Makefile
    REPO/<name>/1/csim.so             C simulation: that kernel top compiled with the firmware

The conversion runs in a child process of the model's own Keras world (TensorFlow stays out of
this one); compiling and writing the configuration need only the serving dependencies. The entry is
built aside and moved into place whole, so a failed build leaves the repository as it was.
"""

import re
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf import json_format, text_format

from faast.contract.kernel import KernelDescription
from faast.protocol import model_config as mc
from faast.repository_agents import add_checksums

from . import vitis
from .sources import Source, SourceError, identify

VERSION = "1"
TARGETS = ["csim", *vitis.BOARDS]
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # what every Triton client and header carries
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # a folder name, on every filesystem
MAX_ROWS_PER_EXECUTION = 16384  # FACILE's: one HCAL event per execution
EXECUTION_BYTES = 1 << 19  # a model without [fpga] settings packs about this much input per execution
REQUEST_BYTES = 64 << 20  # and takes requests up to this many bytes of FP32 inputs
# What a model without a kernel.toml is served with: Triton's dynamic batcher, the best device here.
DEFAULT_SERVING = {"device": "auto", "dynamic_batching": {"max_queue_delay_microseconds": 100}}


class BuildError(Exception):
    """The source cannot be built as asked; the message is one line saying why."""


def build(
    source,
    repository,
    target="csim",
    name=None,
    variant=None,
    weights=None,
    hls4ml_config=None,
    max_batch_size=None,
    rows_per_execution=None,
    inputs=None,
    outputs=None,
    replace=False,
) -> Path:
    """Build `source` into `repository`/<name> and return that folder; BuildError when it cannot.

    `inputs` / `outputs` rename the tensors (in the kernel's order); `replace` allows overwriting a
    model of the same name, which is otherwise an error.
    """
    if target not in TARGETS:
        raise BuildError(f"unknown target '{target}'; choose one of {', '.join(TARGETS)}")
    try:
        found = identify(source, weights=weights, hls4ml_config=hls4ml_config, variant=variant)
        name = name or found.default_name
    except SourceError as error:
        raise BuildError(str(error)) from None
    for given, side in ((inputs, "input"), (outputs, "output")):
        _check_given_names(given, side)  # before the conversion, which takes a while
    if not MODEL_NAME.fullmatch(name):
        raise BuildError(f"'{name}' cannot name a model (letters, digits, '_', '.', '-'): choose one with --name")
    repository = Path(repository).resolve()
    model_dir = repository / name
    if model_dir.exists() and not replace:
        raise BuildError(f"model '{name}' already exists in {repository}: choose another --name, or --replace it")
    repository.mkdir(parents=True, exist_ok=True)
    # No config.pbtxt yet: unseen by a server. mkdir (unlike mkdtemp's 0700) gives it the umask's
    # mode, so a server of another uid (the image's) can read the model.
    staging = repository / f".faast-build-{name}-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        config = _build_version(
            found, staging / VERSION, name, target, max_batch_size, rows_per_execution, inputs, outputs
        )
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
        _point_project_at(model_dir / VERSION / "hls4ml")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = model_dir / ".config.pbtxt"  # the configuration last: the model appears to a poll complete
    written.write_text(text_format.MessageToString(config))
    written.rename(model_dir / "config.pbtxt")
    print(f"wrote {model_dir} (target {target})")
    return model_dir


def _build_version(source: Source, version_dir, name, target, max_batch_size, rows_per_execution, inputs, outputs):
    """Convert, describe, write the Vitis project and compile the C simulation into `version_dir`;
    returns the model's configuration (with the checksums of what it wrote)."""
    project_dir = version_dir / "hls4ml"
    version_dir.mkdir(parents=True)
    print(f"converting {source.path} ({source.kind}) with hls4ml into {project_dir}", flush=True)
    _convert(source, project_dir, name)
    converted = KernelDescription.read(project_dir)
    (project_dir / "weights.npz").replace(version_dir / "weights.npz")
    fpga = converted.fpga
    rows = rows_per_execution or fpga.get("rows_per_execution") or _rows_per_execution(converted)
    compute_units = vitis.DEFAULT_COMPUTE_UNITS | dict(fpga.get("compute_units", {}))
    try:
        description = converted.with_build(
            f"{converted.project}_top",
            vitis.buffer_layout(converted, rows),
            compute_units,
            {board: spec["platform"] for board, spec in vitis.BOARDS.items()},
            tuple(sorted(path.name for path in (project_dir / "firmware" / "weights").glob("*.txt"))),
        )
    except ValueError as error:  # a type the host cannot pack
        raise BuildError(str(error)) from None
    description.write(version_dir)
    default_board = target if target in vitis.BOARDS else "u250"
    try:
        vitis.write_project(
            version_dir / "vitis", description, compute_units, description.clock_period_ns, default_board
        )
    except ValueError as error:
        raise BuildError(str(error)) from None
    print("compiling the C simulation of the kernel top", flush=True)
    compile_csim(version_dir, description.project)
    serving = DEFAULT_SERVING | dict(description.serving)
    config = model_config(
        name,
        description,
        serving,
        device=serving["device"] if target == "csim" else "auto",
        max_batch_size=max_batch_size or serving.get("max_batch_size") or _max_batch_size(description),
        names=(
            _tensor_names(description.inputs, inputs, "input"),
            _tensor_names(description.outputs, outputs, "output"),
        ),
    )
    served = [path for path in version_dir.iterdir() if path.is_file()]  # what a load reads: pinned
    add_checksums(config, version_dir.parent, served)
    return config


def _point_project_at(project_dir):
    """The hls4ml project's OutputDir is where it now lies, so hls4ml's link_existing_project (and
    compile()) find it there, not in the folder it was built in."""
    config = project_dir / "hls4ml_config.yml"
    text = re.sub(r"(?m)^OutputDir:.*$", lambda _: f"OutputDir: {project_dir}", config.read_text())
    config.write_text(text)


def _convert(source: Source, project_dir, name):
    """Run the conversion child of the source's Keras world; its one-line error becomes ours."""
    child = subprocess.run(
        [sys.executable, "-P", "-m", source.converter, "convert", source.to_json(), str(project_dir), name],
        stderr=subprocess.PIPE,
        text=True,
    )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines()
        reason = next((line[len("error: ") :] for line in reversed(lines) if line.startswith("error: ")), None)
        if reason is None:  # not a refusal the child explained: show what it printed
            sys.stderr.write(child.stderr)
            reason = f"converting {source.path} failed (exit status {child.returncode}); see the output above"
        raise BuildError(reason)


def _rows_per_execution(description):
    """About EXECUTION_BYTES of packed input per execution, in a power of two of rows."""
    row_bytes = description.input_size * 8  # at most 64-bit lanes
    rows = 1
    while rows * 2 * row_bytes <= EXECUTION_BYTES and rows * 2 <= MAX_ROWS_PER_EXECUTION:
        rows *= 2
    return rows


def _max_batch_size(description):
    """Requests of up to REQUEST_BYTES of FP32 inputs, and at least one row."""
    return max(1, min(65536, REQUEST_BYTES // (4 * description.input_size)))


def _given_names(given):
    return [n.strip() for n in given.split(",")] if isinstance(given, str) else list(given or [])


def _check_given_names(given, side):
    for chosen in _given_names(given):
        if not TENSOR_NAME.fullmatch(chosen):
            raise BuildError(
                f"'{chosen}' cannot name a Triton tensor: use letters, digits, '_', '.', '-', not starting"
                " with a digit, '.' or '-'"
            )


def _tensor_names(tensors, given, side):
    """Triton names of the kernel's tensors: `given` (comma-separated, in order), else the model's
    own names made valid (other characters become '_'); unique."""
    if given:
        names = _given_names(given)
        if len(names) != len(tensors):
            raise BuildError(f"--{side}s names {len(names)} tensor(s); the model has {len(tensors)} {side}(s)")
    else:
        names = []
        for tensor in tensors:
            own = re.sub(r"[^A-Za-z0-9_.\-]", "_", tensor.serving_name or tensor.name)
            names.append(own if TENSOR_NAME.fullmatch(own) else f"{side}_{own}")
    if len(set(names)) != len(names):
        raise BuildError(f"{side} names {names} are not unique: choose them with --{side}s")
    return names


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


def model_config(name, description, serving, device, max_batch_size, names):
    """config.pbtxt: every kernel tensor (named `names`; FP32 and the kernel's shape unless
    kernel.toml's [serving] declares them), batching and the device."""
    config = mc.ModelConfig(name=name, backend="faast", max_batch_size=max_batch_size)
    input_names, output_names = names
    sides = (
        (description.inputs, input_names, config.input, serving.get("input")),
        (description.outputs, output_names, config.output, serving.get("output")),
    )
    for tensors, tensor_names, target, declared in sides:
        for tensor, tensor_name in zip(tensors, tensor_names, strict=True):
            chosen = declared or {"datatype": "FP32", "dims": list(tensor.shape)}  # kernel.toml: one tensor each
            target.add(name=tensor_name, data_type=mc.DataType.Value("TYPE_" + chosen["datatype"]), dims=chosen["dims"])
    config.parameters["device"].string_value = device
    if "dynamic_batching" in serving:
        json_format.ParseDict(serving["dynamic_batching"], config.dynamic_batching)
    return config
