"""One served model: its Triton configuration and the device that runs its kernel."""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from faast.host.device import Device, DeviceError, open_device

from .batcher import DynamicBatcher
from .protocol import model_config as mc
from .scheduler import DirectScheduler, Scheduler
from .statistics import ModelStatistics
from .tensors import NUMPY, config_to_datatype

log = logging.getLogger("faast.model")
# Integer wire types a model may declare for its input: the kernel's fixed-point bit patterns.
RAW_INPUT_TYPES = ("INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol name, e.g. FP32
    dims: tuple  # without the batch dimension


def read_config(model_dir):
    path = Path(model_dir) / "config.pbtxt"
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _tensors(configs):
    return [TensorSpec(c.name, config_to_datatype(mc.DataType.Name(c.data_type)), tuple(c.dims)) for c in configs]


class ServedModel:
    def __init__(self, config, version, device):
        self.config = config
        self.name = config.name
        self.version = version
        self.device = device
        self.max_batch_size = config.max_batch_size
        self.inputs = _tensors(config.input)
        self.outputs = _tensors(config.output)
        self.stats = ModelStatistics()
        self.scheduler = _scheduler(config, device, self.stats)

    @classmethod
    async def load(cls, model_dir, version, config):
        """Load version folder `version` of `model_dir` with model configuration `config` on the device
        it names, and run its warmup samples. Opening the device runs in a worker thread, so a slow
        load (a C simulation's dlopen, a card's xclbin) never stalls requests."""
        device = await asyncio.to_thread(_open, Path(model_dir) / version, config)
        return cls(config, version, device)

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
            raise DeviceError(f"version_policy of '{config.name}' names versions {missing} that {model_dir} lacks")
        chosen = sorted(set(policy.specific.versions))
    else:
        chosen = found[-max(policy.latest.num_versions, 1) :] if found else []
    if not chosen:
        raise DeviceError(f"model '{config.name}' has no version folder in {model_dir}")
    return [str(version) for version in chosen]


def instances(config: mc.ModelConfig) -> int | None:
    """Compute units instance_group asks for (summed over its groups); None leaves the device's own
    number (every core for the emulator, every CU of the xclbin for a card)."""
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            raise DeviceError(
                f"instance_group of '{config.name}' asks for KIND_GPU: faast runs kernels on FPGAs and CPU cores; "
                "use KIND_CPU or KIND_AUTO"
            )
    count = sum(group.count for group in config.instance_group)
    return count or None


def _open(version_dir: Path, config: mc.ModelConfig) -> Device:
    """The device of one version, checked against `config` and warmed up; blocking."""
    kind = config.parameters["device"].string_value if "device" in config.parameters else "auto"
    device = open_device(kind, version_dir, instances(config))
    try:
        _check_kernel_fits(config, device.kernel)
        _warm_up(config, device, version_dir.parent)
    except Exception:
        device.close()
        raise
    return device


def _warm_up(config: mc.ModelConfig, device: Device, model_dir: Path) -> None:
    """Run config.pbtxt's model_warmup samples (zeros, random data or a file from the model's
    warmup/ folder), each `count` times, before the model takes requests, as Triton does."""
    (spec,) = _tensors(config.input)
    for sample in config.model_warmup:
        extra = set(sample.inputs) - {spec.name}
        if extra or spec.name not in sample.inputs:
            raise DeviceError(
                f"warmup sample '{sample.name}' of '{config.name}' must give exactly input '{spec.name}'"
                + (f", not {sorted(extra)}" if extra else "")
            )
        given = sample.inputs[spec.name]
        datatype = config_to_datatype(mc.DataType.Name(given.data_type))
        if datatype != spec.datatype or tuple(given.dims) != spec.dims:
            raise DeviceError(
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
                raise DeviceError(
                    f"warmup sample '{sample.name}' of '{config.name}': {path} holds {data.size} values, "
                    f"not the {int(np.prod(shape))} of {list(shape)}"
                )
            rows = data.reshape(shape)
        elif source == "random_data":
            rows = np.random.default_rng().random(shape).astype(dtype)
        else:
            rows = np.zeros(shape, dtype)
        for _ in range(max(sample.count, 1)):
            device.run(rows.reshape(len(rows), -1))
        log.info("model '%s': warmup sample '%s' ran %d time(s)", config.name, sample.name, max(sample.count, 1))


def _check_kernel_fits(config, kernel):
    """The configured tensors must be the kernel's: one input and one FP32 output of its sizes. The
    input is FP32, or an integer type wide enough for the kernel's raw fixed-point bit patterns."""
    if len(config.input) != 1 or len(config.output) != 1:
        raise DeviceError(
            f"config.pbtxt of '{config.name}' must declare one input and one output, as kernel '{kernel.name}' has"
        )
    (tensor_in,), (tensor_out,) = _tensors(config.input), _tensors(config.output)
    input_bits = kernel.layout.input.type.width
    fits_bits = tensor_in.datatype in RAW_INPUT_TYPES and NUMPY[tensor_in.datatype].itemsize * 8 >= input_bits
    if tensor_in.datatype != "FP32" and not fits_bits:
        raise DeviceError(
            f"input '{tensor_in.name}' of '{config.name}' must be FP32, or an integer type of at least "
            f"{input_bits} bits carrying the kernel's {kernel.layout.input.type} bit patterns"
        )
    for tensor, size in ((tensor_in, kernel.input_size), (tensor_out, kernel.output_size)):
        if int(np.prod(tensor.dims)) != size:
            raise DeviceError(
                f"tensor '{tensor.name}' of '{config.name}' must have {size} elements, as kernel '{kernel.name}' has"
            )
    if tensor_out.datatype != "FP32":
        raise DeviceError(f"output '{tensor_out.name}' of '{config.name}' must be FP32")
