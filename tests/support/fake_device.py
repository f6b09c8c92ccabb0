"""A fake device for in-process tests of the dataplane, the repository and the model: a real
`faast.host.device.Device` whose compute units run an affine kernel over the packed lanes, opened
through the real `open_device` by config.pbtxt's `device` parameter.

Everything the tests know of the kernel folder format (kernel.json's fields, config.pbtxt) and of
how a driver is registered lives in this one module: `write_fake_model` writes a model folder by
hand (no hls4ml, no layers: the fake units never run the emulator), `fake_driver` registers the
driver for the duration of a `with` block.

The fake kernel answers `scale * x + offset` for each of the row's `width` elements, computed on
the fixed-point mantissas the host packed, so it exercises packing, executions split over compute
units and unpacking as a real kernel does. `representable_rows` gives rows the input type holds
exactly, for which `fake_answers` is exactly what the kernel answers.
"""

import contextlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from faast.contract.errors import ComputeUnitFault
from faast.contract.fixed import FixedType
from faast.contract.kernel import KernelDescription, Tensor
from faast.contract.layout import BufferLayout, TensorLanes
from faast.dataplane import DataPlane
from faast.host import drivers, packing
from faast.host.compute_unit import ComputeUnit, DeviceBuffer
from faast.host.device import Device
from faast.repository import ModelRepository
from faast.shared_memory import SharedMemoryManager
from faast.trace_log import TraceSettings

KIND = "fake"  # config.pbtxt's `device` parameter that opens it
MODULE = "fake_driver_for_tests"  # the name it is registered under, as faast.host.<MODULE>
INPUT_TYPE, INPUT_FRACTION = "fixed<16,9,TRN,WRAP,0>", 7
OUTPUT_TYPE, OUTPUT_FRACTION, OUTPUT_WIDTH = "fixed<24,12,TRN,WRAP,0>", 12, 24
AFFINE = "fake.json"  # beside kernel.json: the fake kernel's scale and offset


def fake_answers(rows, scale=2, offset=1):
    """What the fake kernel answers for `rows` (from representable_rows: exactly)."""
    return (scale * np.asarray(rows, np.float64) + offset).astype(np.float32)


def representable_rows(count, width=4, seed=0):
    """`count` rows of `width` values that the kernel's input type holds exactly (multiples of 2^-7
    within ±100), so that the kernel's answer to them is exactly `fake_answers`."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-100 << INPUT_FRACTION, 100 << INPUT_FRACTION, (count, width)) / 2**INPUT_FRACTION).astype(
        np.float32
    )


class FakeComputeUnit(ComputeUnit):
    """One compute unit of the fake kernel. Set `fault` (a reason) to make every execution raise
    ComputeUnitFault, as a card that vanished does; clear it and the unit has recovered."""

    def __init__(self, kernel: KernelDescription, index: int):
        self.name = f"{KIND}{index}"
        self.layout = kernel.layout
        assert kernel.folder is not None
        fake = json.loads((kernel.folder / AFFINE).read_text())
        self.scale, self.offset = fake["scale"], fake["offset"]
        self.fault: str | None = None
        self.executions = 0

    def allocate(self, nbytes):
        return DeviceBuffer(np.zeros(nbytes, np.uint8))

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        if self.fault is not None:
            raise ComputeUnitFault(f"compute unit {self.name} failed: {self.fault}")
        mantissas = packing.mantissas(self.layout.input, inputs.host, rows)  # int64, sign-extended
        shift = OUTPUT_FRACTION - INPUT_FRACTION
        result = (self.scale * mantissas + (self.offset << INPUT_FRACTION)) << shift
        lanes = outputs.host[:out_bytes].view(self.layout.output.lane_dtype)
        lanes[: result.size] = (result & ((1 << OUTPUT_WIDTH) - 1)).reshape(-1)
        lanes[result.size :] = 0
        self.executions += 1

    def recovered(self):
        return self.fault is None


class FakeDevice(Device):
    kind = KIND

    def __init__(self, kernel: KernelDescription, compute_units: int | None = None):
        super().__init__(kernel, [FakeComputeUnit(kernel, index) for index in range(compute_units or 2)])

    @staticmethod
    def available():
        return True, "the fake device needs nothing"


@contextlib.asynccontextmanager
async def serving(path, mode="none", startup_models=()):
    """A started ModelRepository of `path` behind a ready DataPlane; everything closed after."""
    repository = ModelRepository(path, mode, startup_models)
    problems = await repository.start()
    assert problems == []
    dataplane = DataPlane(repository, SharedMemoryManager(), TraceSettings())
    dataplane.ready = True
    try:
        yield dataplane
    finally:
        dataplane.ready = False
        await repository.close()


@contextlib.contextmanager
def in_process(monkeypatch):
    """The fake driver registered, and no child process started (starting one fails the test): what
    an in-process test runs in."""

    def refuse(*args, **keywords):
        raise AssertionError(f"an in-process test started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    with fake_driver():
        yield


@contextlib.contextmanager
def fake_driver():
    """Register FakeDevice as the driver of device kind KIND for the block, as a real driver is
    registered (an entry in faast.host.drivers.DRIVERS naming a module faast.host.NAME exporting DRIVER)."""
    name = f"faast.host.{MODULE}"
    module = types.ModuleType(name)
    module.DRIVER = FakeDevice
    assert KIND not in drivers.DRIVERS and name not in sys.modules
    drivers.DRIVERS[KIND] = MODULE
    sys.modules[name] = module
    try:
        yield
    finally:
        del drivers.DRIVERS[KIND]
        del sys.modules[name]


def write_kernel(version_dir, name, width=4, rows_per_execution=8, scale=2, offset=1):
    """kernel.json of the fake kernel in `version_dir`: `width` inputs and outputs per row, at most
    `rows_per_execution` rows per execution, answering scale * x + offset."""
    version_dir = Path(version_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    x = Tensor("x", "input", (width,), width, INPUT_TYPE, "input_t")
    y = Tensor("y", "output", (width,), width, OUTPUT_TYPE, "result_t")
    KernelDescription(
        name=name,
        project=name,
        hls4ml_version=None,
        io_type="io_parallel",
        backend="Vitis",
        part=None,
        clock_period_ns=None,
        source_kind="fake",
        source_path=str(version_dir),
        inputs=(x,),
        outputs=(y,),
        top=f"{name}_top",
        buffers=BufferLayout(
            rows_per_execution,
            TensorLanes.of([(x.name, FixedType.parse(INPUT_TYPE), width)]),
            TensorLanes.of([(y.name, FixedType.parse(OUTPUT_TYPE), width)]),
        ),
    ).write(version_dir)
    (version_dir / AFFINE).write_text(json.dumps({"scale": scale, "offset": offset}))


def write_fake_model(
    repository,
    name="fake",
    *,
    width=4,
    rows_per_execution=8,
    max_batch_size=64,
    batching="max_queue_delay_microseconds: 100",
    compute_units=2,
    versions=(1,),
    scale=2,
    offset=1,
):
    """A model folder `name` in `repository` served by the fake device: config.pbtxt and a kernel.json
    in each of `versions`. `batching`: the dynamic_batching block's contents (None: the direct
    scheduler); `compute_units`: instance_group's count. Returns the model folder."""
    folder = Path(repository) / name
    for version in versions:
        write_kernel(folder / str(version), name, width, rows_per_execution, scale, offset)
    lines = [
        f'name: "{name}"',
        f"max_batch_size: {max_batch_size}",
        f'input {{ name: "input" data_type: TYPE_FP32 dims: {width} }}',
        f'output {{ name: "output" data_type: TYPE_FP32 dims: {width} }}',
        f"instance_group {{ kind: KIND_CPU count: {compute_units} }}",
        f'parameters {{ key: "device" value {{ string_value: "{KIND}" }} }}',
        'backend: "faast"',
    ]
    if batching is not None:
        lines.append(f"dynamic_batching {{ {batching} }}")
    if len(versions) > 1:
        lines.append("version_policy { all { } }")
    (folder / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return folder
