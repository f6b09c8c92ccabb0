"""One served model: its Triton configuration and the device that runs its kernel."""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from faast.host.device import DeviceError, open_device

from .protocol import model_config as mc
from .scheduler import make_scheduler
from .tensors import config_to_datatype


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol name, e.g. FP32
    dims: tuple  # without the batch dimension


def read_config(model_dir):
    path = Path(model_dir) / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    if not config.name:
        config.name = Path(model_dir).name
    return config


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
        self.scheduler = make_scheduler(config, device)
        self.stats = self.scheduler.stats

    @classmethod
    def load(cls, model_dir):
        """Load the newest numeric version folder of `model_dir` on the device its config names."""
        config = read_config(model_dir)
        versions = sorted((int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit()))
        if not versions:
            raise DeviceError(f"model '{config.name}' has no version folder in {model_dir}")
        kind = config.parameters["device"].string_value if "device" in config.parameters else "csim"
        device = open_device(kind, Path(model_dir) / str(versions[-1]))
        try:
            _check_kernel_fits(config, device.kernel)
        except DeviceError:
            device.close()
            raise
        return cls(config, str(versions[-1]), device)

    async def close(self):
        await self.scheduler.close()
        await asyncio.get_running_loop().run_in_executor(None, self.device.close)  # waits for running executions


def _check_kernel_fits(config, kernel):
    """The configured tensors must be the kernel's: one FP32 input and output of its sizes."""
    for tensors, size, role in ((_tensors(config.input), kernel.input_size, "input"),
                                (_tensors(config.output), kernel.output_size, "output")):
        if len(tensors) != 1 or tensors[0].datatype != "FP32" or int(np.prod(tensors[0].dims)) != size:
            raise DeviceError(f"config.pbtxt of '{config.name}' must declare one FP32 {role} of {size} "
                              f"elements, as kernel '{kernel.name}' has")
