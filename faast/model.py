"""One served model: its Triton configuration and the device that runs its kernel."""

import asyncio
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
    async def load(cls, model_dir, config=None):
        """Load the newest numeric version folder of `model_dir` on the device its config names
        (`config`, when given, instead of config.pbtxt). Opening the device runs in a worker thread,
        so a slow load (a C simulation's dlopen, a card's xclbin) never stalls requests."""
        version, config, device = await asyncio.to_thread(_open, model_dir, config)
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


def _open(model_dir, config):
    """(version, config, device) of `model_dir`; blocking."""
    config = config if config is not None else read_config(model_dir)
    if not config.name:
        config.name = Path(model_dir).name
    versions = sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise DeviceError(f"model '{config.name}' has no version folder in {model_dir}")
    kind = config.parameters["device"].string_value if "device" in config.parameters else "auto"
    device = open_device(kind, Path(model_dir) / str(versions[-1]))
    try:
        _check_kernel_fits(config, device.kernel)
    except DeviceError:
        device.close()
        raise
    return str(versions[-1]), config, device


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
