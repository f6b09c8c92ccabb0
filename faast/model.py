"""One served model: its Triton configuration and the device that runs its kernel."""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from faast.host.device import Device
from faast.host.drivers import HARDWARE, open_device, open_engine

from .batcher import DynamicBatcher
from .contract.errors import ModelConfigError
from .contract.kernel import KernelDescription
from .contract.layout import Segment
from .protocol import model_config as mc
from .scheduler import DirectScheduler, Scheduler
from .statistics import ModelStatistics
from .tensors import NUMPY, config_to_datatype

log = logging.getLogger("faast.model")
# Integer wire types a model may declare for an input or output: the kernel's fixed-point bit patterns.
RAW_TYPES = ("INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64")
FLOAT_OUTPUT_TYPES = ("FP16", "FP32", "FP64")
# config.pbtxt's parameter "input_range": what a request's input values outside the kernel's input type
# (NaN, ±Inf, beyond its range) get. "accept" (the default): the C++ assignment's answer, wrapped or
# saturated as the type says; "refuse": the request fails with INVALID_ARGUMENT before it is queued.
INPUT_RANGE = "input_range"
INPUT_RANGE_CHOICES = ("accept", "refuse")
# config.pbtxt's parameters that guard a card with the bit-exact engine: "shadow_validation", the
# fraction of the card's executions re-run on the engine off the serving path and compared; "failover":
# "engine" runs the model's executions on the engine while no compute unit of its card is in rotation.
SHADOW_VALIDATION = "shadow_validation"
FAILOVER = "failover"
FAILOVER_CHOICES = ("none", "engine")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol name, e.g. FP32
    dims: tuple  # without the batch dimension


@dataclass(frozen=True)
class KernelTensor:
    """A configured tensor bound to its kernel tensor: its columns in the kernel's rows and type."""

    spec: TensorSpec
    segment: Segment

    def answer(self, rows: np.ndarray) -> np.ndarray:
        """This output's columns of the kernel's float rows in the configured datatype: a float type,
        or the fixed-point mantissas (the bit patterns, sign-extended) as an integer type."""
        values = rows[:, self.segment.columns]  # a view
        if self.spec.datatype in FLOAT_OUTPUT_TYPES:
            return values.astype(NUMPY[self.spec.datatype], copy=False)
        mantissas = np.rint(values.astype(np.float64) * 2.0**self.segment.type.fraction)
        return mantissas.astype(np.int64).astype(NUMPY[self.spec.datatype])


def refuses_out_of_range(config: mc.ModelConfig) -> bool:
    """Whether config.pbtxt's "input_range" parameter is "refuse"; ModelConfigError for a value
    other than "accept" or "refuse"."""
    if INPUT_RANGE not in config.parameters:
        return False
    value = config.parameters[INPUT_RANGE].string_value
    if value not in INPUT_RANGE_CHOICES:
        raise ModelConfigError(
            f"parameter '{INPUT_RANGE}' of '{config.name}' must be one of {', '.join(INPUT_RANGE_CHOICES)}, "
            f"not '{value}'"
        )
    return value == "refuse"


def shadow_fraction(config: mc.ModelConfig) -> float:
    """config.pbtxt's "shadow_validation" fraction (0: off); ModelConfigError unless 0 <= it <= 1."""
    if SHADOW_VALIDATION not in config.parameters:
        return 0.0
    value = config.parameters[SHADOW_VALIDATION].string_value
    try:
        fraction = float(value)
    except ValueError:
        fraction = math.nan
    if not 0 <= fraction <= 1:
        raise ModelConfigError(
            f"parameter '{SHADOW_VALIDATION}' of '{config.name}' must be a fraction of executions from 0 to 1, "
            f"not '{value}'"
        )
    return fraction


def fails_over(config: mc.ModelConfig) -> bool:
    """Whether config.pbtxt's "failover" parameter is "engine"; ModelConfigError for another value
    than "none" or "engine"."""
    value = config.parameters[FAILOVER].string_value if FAILOVER in config.parameters else "none"
    if value not in FAILOVER_CHOICES:
        raise ModelConfigError(
            f"parameter '{FAILOVER}' of '{config.name}' must be one of {', '.join(FAILOVER_CHOICES)}, not '{value}'"
        )
    return value == "engine"


def read_config(model_dir):
    path = Path(model_dir) / "config.pbtxt"
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _tensors(configs):
    return [TensorSpec(c.name, config_to_datatype(mc.DataType.Name(c.data_type)), tuple(c.dims)) for c in configs]


class ServedModel:
    def __init__(self, config, version, device, load_seconds=0.0):
        self.config = config
        self.load_seconds = load_seconds  # opening the device and warming it up, as Triton 2.52+ reports it
        self.name = config.name
        self.version = version
        self.device = device
        self.max_batch_size = config.max_batch_size
        self.inputs = _tensors(config.input)
        self.outputs = _tensors(config.output)
        layout = device.kernel.layout
        # config.pbtxt's tensors are the kernel's, in order (checked when the device opened).
        self.kernel_inputs = {
            s.name: KernelTensor(s, g) for s, g in zip(self.inputs, layout.input.segments, strict=True)
        }
        self.kernel_outputs = {
            s.name: KernelTensor(s, g) for s, g in zip(self.outputs, layout.output.segments, strict=True)
        }
        # Whether a request's input values outside the kernel's input types are refused (the dataplane
        # reads every value before the request is queued).
        self.refuses_out_of_range = refuses_out_of_range(config)
        # Whether an FP32 input in a client's shared memory may reach the kernel as a view of it: the
        # kernel packs such rows where they lie, under its guard, and nothing reads them before (one
        # input tensor; several are put side by side by numpy first; nor when the values are checked,
        # which needs a copy numpy may read).
        self.packs_shared_memory_in_place = (
            len(self.inputs) == 1 and layout.input.packs_in_place and not self.refuses_out_of_range
        )
        # Whether the kernel may unpack an FP32 output straight into a client's shared memory: the one
        # output, answered as the kernel's float32 rows as they are (no columns to pick, no conversion).
        self.unpacks_shared_memory_in_place = (
            len(self.outputs) == 1 and self.outputs[0].datatype == "FP32" and layout.output.unpacks_in_place
        )
        self.stats = ModelStatistics()
        self.scheduler = _scheduler(config, device, self.stats)

    @classmethod
    async def load(cls, model_dir, version, config):
        """Load version folder `version` of `model_dir` with model configuration `config` on the device
        it names, and run its warmup samples. Opening the device runs in a worker thread, so a slow
        load (a C simulation's dlopen, a card's xclbin) never stalls requests."""
        started = time.perf_counter()
        device = await asyncio.to_thread(_open, Path(model_dir) / version, config)
        return cls(config, version, device, time.perf_counter() - started)

    async def close(self):
        """Stop taking requests, finish every one already taken, then release the device."""
        await self.scheduler.close()
        await asyncio.get_running_loop().run_in_executor(None, self.device.close)


def _scheduler(config: mc.ModelConfig, device: Device, stats: ModelStatistics) -> Scheduler:
    """The scheduler config.pbtxt asks for, recording its executions into `stats`."""
    if config.HasField("dynamic_batching"):
        rows_per_execution = device.kernel.layout.rows_per_execution
        capacity = min(config.max_batch_size or rows_per_execution, rows_per_execution)
        return DynamicBatcher(config.name, device, stats, config.dynamic_batching, capacity)
    return DirectScheduler(config.name, device, stats)


def version_folders(model_dir) -> list[int]:
    """The versions `model_dir` holds: its folders named by a positive number, in order."""
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit() and int(p.name))


def versions_to_load(model_dir, config: mc.ModelConfig) -> list[str]:
    """The version folders config.pbtxt's version_policy serves, oldest first: the newest one
    (Triton's default, latest with one version), the newest N, all, or the ones it names."""
    found = version_folders(model_dir)
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = found
    elif choice == "specific":
        missing = sorted(set(policy.specific.versions) - set(found))
        if missing:
            raise ModelConfigError(f"version_policy of '{config.name}' names versions {missing} that {model_dir} lacks")
        chosen = sorted(set(policy.specific.versions))
    else:
        chosen = found[-max(policy.latest.num_versions, 1) :] if found else []
    if not chosen:
        raise ModelConfigError(f"model '{config.name}' has no version folder in {model_dir}")
    return [str(version) for version in chosen]


def instances(config: mc.ModelConfig) -> int | None:
    """Compute units instance_group asks for (summed over its groups); None leaves the device's own
    number (every core for the emulator, every CU of the xclbin for a card)."""
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            raise ModelConfigError(
                f"instance_group of '{config.name}' asks for KIND_GPU: faast runs kernels on FPGAs and CPU cores; "
                "use KIND_CPU or KIND_AUTO"
            )
    count = sum(group.count for group in config.instance_group)
    return count or None


def _open(version_dir: Path, config: mc.ModelConfig) -> Device:
    """The device of one version, checked against `config` and warmed up; blocking."""
    refuses_out_of_range(config)  # bad values fail the load before the device opens
    fraction, failover = shadow_fraction(config), fails_over(config)
    kind = config.parameters["device"].string_value if "device" in config.parameters else "auto"
    device = open_device(kind, version_dir, instances(config))
    try:
        if (fraction or failover) and device.kind in HARDWARE:
            device.attach(
                failover=open_engine(device.kernel) if failover else None,
                shadow=open_engine(device.kernel, 1) if fraction else None,
                fraction=fraction,
            )
        elif fraction or failover:
            log.info(
                "'%s' runs on device '%s', not a card: shadow_validation and failover have nothing to guard",
                config.name,
                device.kind,
            )
        _check_kernel_fits(config, device.kernel)
        _warm_up(config, device, version_dir.parent)
    except Exception:
        device.close()
        raise
    return device


def _warm_up(config: mc.ModelConfig, device: Device, model_dir: Path) -> None:
    """Run config.pbtxt's model_warmup samples (zeros, random data or a file from the model's
    warmup/ folder), each `count` times, before the model takes requests, as Triton does."""
    specs = _tensors(config.input)
    for sample in config.model_warmup:
        names = [spec.name for spec in specs]
        if set(sample.inputs) != set(names):
            raise ModelConfigError(
                f"warmup sample '{sample.name}' of '{config.name}' must give exactly the inputs {names}, "
                f"not {sorted(sample.inputs)}"
            )
        rows = []
        for spec in specs:
            rows.append(_warmup_input(config, sample, spec, model_dir).reshape(max(sample.batch_size, 1), -1))
        for _ in range(max(sample.count, 1)):
            device.run(rows[0] if len(rows) == 1 else np.hstack(rows))
        log.info("model '%s': warmup sample '%s' ran %d time(s)", config.name, sample.name, max(sample.count, 1))


def _warmup_input(config, sample, spec: TensorSpec, model_dir: Path) -> np.ndarray:
    given = sample.inputs[spec.name]
    datatype = config_to_datatype(mc.DataType.Name(given.data_type))
    if datatype != spec.datatype or tuple(given.dims) != spec.dims:
        raise ModelConfigError(
            f"warmup sample '{sample.name}' of '{config.name}': input '{spec.name}' must be {spec.datatype} "
            f"{list(spec.dims)}, not {datatype} {list(given.dims)}"
        )
    shape = (max(sample.batch_size, 1), *spec.dims)
    dtype = NUMPY[datatype]
    source = given.WhichOneof("input_data_type")
    if source == "input_data_file":
        path = model_dir / "warmup" / given.input_data_file
        data = np.fromfile(path, dtype)
        if data.size != int(np.prod(shape)):
            raise ModelConfigError(
                f"warmup sample '{sample.name}' of '{config.name}': {path} holds {data.size} values, "
                f"not the {int(np.prod(shape))} of {list(shape)}"
            )
        return data.reshape(shape)
    if source == "random_data":
        return np.random.default_rng().random(shape).astype(dtype)
    return np.zeros(shape, dtype)


def _check_kernel_fits(config, kernel: KernelDescription):
    """The configured tensors must be the kernel's, in its order and of its sizes. Inputs are FP32, or
    integer types wide enough for their fixed-point bit patterns (all inputs alike, as they share the
    kernel's rows); outputs are FP16, FP32, FP64, or integer types wide enough for their bit patterns."""
    layout = kernel.layout
    sides = (
        ("input", _tensors(config.input), layout.input.segments),
        ("output", _tensors(config.output), layout.output.segments),
    )
    for side, tensors, segments in sides:
        if len(tensors) != len(segments):
            raise ModelConfigError(
                f"config.pbtxt of '{config.name}' must declare {len(segments)} {side}(s), as kernel "
                f"'{kernel.name}' has, not {len(tensors)}"
            )
        floats = ("FP32",) if side == "input" else FLOAT_OUTPUT_TYPES
        for tensor, segment in zip(tensors, segments, strict=True):
            if int(np.prod(tensor.dims)) != segment.size:
                raise ModelConfigError(
                    f"tensor '{tensor.name}' of '{config.name}' must have {segment.size} elements, as kernel "
                    f"'{kernel.name}' has"
                )
            fits_bits = tensor.datatype in RAW_TYPES and NUMPY[tensor.datatype].itemsize * 8 >= segment.type.width
            if tensor.datatype not in floats and not fits_bits:
                raise ModelConfigError(
                    f"{side} '{tensor.name}' of '{config.name}' must be {' or '.join(floats)}, or an integer type "
                    f"of at least {segment.type.width} bits carrying the kernel's {segment.type} bit patterns"
                )
    raw_inputs = {tensor.datatype in RAW_TYPES for tensor in sides[0][1]}
    if len(raw_inputs) > 1:
        raise ModelConfigError(f"inputs of '{config.name}' must be all FP32 or all integer bit patterns")
