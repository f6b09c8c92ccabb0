"""XRT device: Alveo cards (U250, AWS F1) through XRT's own Python binding, `pyxrt`.

pyxrt ships with XRT (not on PyPI). One compute unit per kernel instance per card; each buffer is
an XRT buffer object in the memory bank of its kernel argument. The driver uses only names pyxrt binds
in every XRT release from 2021.2 on (the table in tests/host/pyxrt_surface.json): no `enumerate_devices`
(2022.1 lacks it), no xclbin CU listing (pyxrt binds none) — the CU names are the ones `faast build`
wrote into the connectivity config and kernel.json. Where the binding has `hw_context` (XRT 2023.2 on;
master deprecates `load_xclbin` and `kernel(device, uuid, name)`), a CU is opened through one.
Untested on hardware here: the tests drive this code against a recording stand-in that exposes
exactly that surface (tests/support/recording_pyxrt.py).
"""

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faast.contract.errors import ComputeUnitFault, DeviceError

from .compute_unit import ComputeUnit, DeviceBuffer
from .device import Device
from .vendor import board, import_vendor

log = logging.getLogger("faast.host")

# How long a run may take before its CU is given up on: KERNEL_TIMEOUT_MS to reach the CU and start
# (ERT scheduling, DMA contention), plus KERNEL_TIMEOUT_PER_ROW_US a row — 6000 cycles at 300 MHz, far
# above the row interval of an hls4ml kernel top (one row per initiation interval of its dataflow).
# A run queued behind others on the same CU waits for them, so its deadline adds their bounds.
KERNEL_TIMEOUT_MS = 10_000
KERNEL_TIMEOUT_PER_ROW_US = 20
INPUTS, OUTPUTS = 0, 1  # the kernel top's argument indices (kernels/templates/kernel_top.cpp)
POLL_S = 0.0002  # run.state() polling period: time.sleep releases the GIL, pyxrt's run.wait() does not
MAX_CARDS = 64


def _pyxrt():
    return import_vendor("pyxrt", "device 'xrt' needs XRT's Python binding pyxrt (source /opt/xilinx/xrt/setup.sh)")


def cards(pyxrt):
    """(index, device) of every card XRT opens; pyxrt 2022.1 has no enumerate_devices, so probe by index."""
    found = []
    for index in range(MAX_CARDS):
        try:
            found.append((index, pyxrt.device(index)))
        except RuntimeError:
            break
    return found


def run_timeout_ms(rows):
    """The bound on one run of `rows` rows, once it reaches its CU (see KERNEL_TIMEOUT_MS)."""
    return KERNEL_TIMEOUT_MS + rows * KERNEL_TIMEOUT_PER_ROW_US / 1000


def compute_unit_names(kernel, platform_board):
    """The CU instance names `faast build` gave this board's connectivity config (nk=top:N:top_1.…)."""
    count = kernel.compute_units.get(platform_board, 0)
    return [f"{kernel.top}_{i}" for i in range(1, count + 1)]


class XrtComputeUnit(ComputeUnit):
    overlapping_runs = 2  # the next run's input transfer overlaps this one's compute (ERT queues the start)

    def __init__(self, pyxrt, index, device, image, instance):
        self.pyxrt = pyxrt
        self.index = index
        self.image = image
        self.instance = instance  # "top:{top_N}"
        self.name = f"card{index}/{instance.split('{')[-1].rstrip('}')}"
        self.lost = False  # XRT refused the card itself: worth reopening when it comes back
        # Runs given up on while the card still owns their command (with their buffers): XRT recycles a
        # dropped run's command buffer, so a late completion would mark another run COMPLETED.
        self.abandoned: list[tuple[Any, DeviceBuffer, DeviceBuffer]] = []  # (pyxrt.run, its buffers)
        self._in_flight: dict[object, float] = {}  # run -> its bound (ms), while execute waits on it
        self._in_flight_lock = threading.Lock()
        self.open(device)
        states = pyxrt.ert_cmd_state
        self.finished = {
            states.ERT_CMD_STATE_COMPLETED,
            states.ERT_CMD_STATE_ERROR,
            states.ERT_CMD_STATE_ABORT,
            states.ERT_CMD_STATE_TIMEOUT,
            states.ERT_CMD_STATE_NORESPONSE,
            states.ERT_CMD_STATE_SKERROR,
            states.ERT_CMD_STATE_SKCRASHED,
        }

    def open(self, device):
        """Load the xclbin on `device` and open this CU there (at start, and when the card comes back):
        through a hardware context where pyxrt binds one, else with the calls older releases bind."""
        if hasattr(self.pyxrt, "hw_context"):
            self.context = self.pyxrt.hw_context(device, device.register_xclbin(self.image))
            self.kernel = self.pyxrt.kernel(self.context, self.instance)
        else:
            uuid = device.load_xclbin(self.image)
            self.kernel = self.pyxrt.kernel(device, uuid, self.instance, self.pyxrt.kernel.shared)
        self.device = device

    def recovered(self):
        if self.lost:
            try:
                self.open(self.pyxrt.device(self.index))
            except RuntimeError:
                return False
            self.lost = False
            self.abandoned.clear()  # their commands went with the card
            return True
        # A unit that timed out comes back once XRT completed every run it was given up on (it was
        # slow, not hung); one that never finishes stays out: XRT binds no way to reset a CU.
        if not self.abandoned or any(run.state() not in self.finished for run, _, _ in self.abandoned):
            return False
        completed = all(run.state() == self.pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED for run, _, _ in self.abandoned)
        self.abandoned.clear()
        return completed

    def allocate(self, nbytes):
        return self._buffer(nbytes, INPUTS)

    def allocate_outputs(self, nbytes):
        return self._buffer(nbytes, OUTPUTS)

    def _buffer(self, nbytes, argument):
        """A buffer in the memory bank the CU's `argument` is connected to: a buffer elsewhere would
        make XRT run the kernel on a copy in the connected bank, and outputs would never come back."""
        bo = self.pyxrt.bo(self.device, nbytes, self.pyxrt.bo.normal, self.kernel.group_id(argument))
        return DeviceBuffer(np.frombuffer(bo.map(), np.uint8), bo)  # map() is a memoryview of the buffer

    def execute(self, inputs, outputs, rows, in_bytes, out_bytes):
        sync = self.pyxrt.xclBOSyncDirection
        try:
            inputs.handle.sync(sync.XCL_BO_SYNC_BO_TO_DEVICE, in_bytes, 0)
            run = self.kernel(inputs.handle, outputs.handle, rows)
        except RuntimeError as error:  # XRT raises when the card is gone or the CU refuses the run
            self.lost = True
            raise ComputeUnitFault(f"kernel {self.name} could not start: {error}") from None
        bound_ms = run_timeout_ms(rows)
        with self._in_flight_lock:
            timeout_ms = bound_ms + sum(self._in_flight.values())  # the runs queued ahead of it, first
            self._in_flight[run] = bound_ms
        try:
            deadline = time.monotonic() + timeout_ms / 1000
            while (state := run.state()) not in self.finished:
                if time.monotonic() > deadline:
                    self.abandoned.append((run, inputs, outputs))
                    raise ComputeUnitFault(f"kernel {self.name} did not complete within {round(timeout_ms)} ms")
                time.sleep(POLL_S)
        finally:
            with self._in_flight_lock:
                del self._in_flight[run]
        if state != self.pyxrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise ComputeUnitFault(f"kernel {self.name} ended in state {state}")
        try:
            outputs.handle.sync(sync.XCL_BO_SYNC_BO_FROM_DEVICE, out_bytes, 0)
        except RuntimeError as error:
            self.lost = True
            raise ComputeUnitFault(f"kernel {self.name}: reading outputs failed: {error}") from None


@dataclass(frozen=True)
class CardTelemetry:
    """One card's sensors as XRT reports them (`xbutil examine -r thermal electrical mechanical
    platform` reads the same): a sensor XRT reports absent or unreadable is left out, never 0."""

    card: str  # card0: the index faast names compute units by
    bdf: str
    shell: str
    temperatures_c: dict[str, float] = field(default_factory=dict)  # sensor location id -> degrees Celsius
    power_w: float | None = None  # the board's power draw
    fans_rpm: dict[str, float] = field(default_factory=dict)
    clocks_mhz: dict[str, float] = field(default_factory=dict)  # clock id -> frequency


def card_telemetry() -> list[CardTelemetry]:
    """The telemetry of every card XRT lists; none where pyxrt is not importable."""
    try:
        pyxrt = _pyxrt()
    except DeviceError:
        return []
    return [read_telemetry(pyxrt, index, device) for index, device in cards(pyxrt)]


def read_telemetry(pyxrt, index, device) -> CardTelemetry:
    """`device.get_info`'s thermal, electrical, mechanical and platform reports, parsed as XRT writes
    them (sensor.cpp, info_platform.cpp: boost's write_json, so every value is a string; a report
    without entries is an object or "" where a list would be)."""
    keys = pyxrt.xrt_info_device

    def report(key):
        try:
            answer = json.loads(device.get_info(key))
        except (RuntimeError, ValueError):  # a query the card's driver refuses
            return {}
        return answer if isinstance(answer, dict) else {}

    thermal, electrical, mechanical, platform = map(
        report, (keys.thermal, keys.electrical, keys.mechanical, keys.platform)
    )
    platforms = _entries(platform, "platforms")
    return CardTelemetry(
        card=f"card{index}",
        bdf=device.get_info(keys.bdf),
        shell=device.get_info(keys.name),
        temperatures_c=_present_values(_entries(thermal, "thermals"), "location_id", "temp_C"),
        power_w=_number(electrical.get("power_consumption_watts")),
        fans_rpm=_present_values(_entries(mechanical, "fans"), "location_id", "speed_rpm"),
        clocks_mhz={
            clock["id"]: mhz
            for clock in _entries(platforms[0] if platforms else {}, "clocks")
            if clock.get("description") != "Unused" and (mhz := _number(clock.get("freq_mhz"))) is not None
        },
    )


def _number(text):
    """A value of XRT's JSON as a float; None for what is no reading ("N/A", "NA", a missing key)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _entries(report, key):
    """The list of objects XRT wrote under `key`; none where it wrote {"error_msg": ...} or ""."""
    entries = report.get(key)
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _present_values(entries, name_key, value_key):
    """{name: value} of the sensors XRT marks is_present (it writes 0 for the others)."""
    return {
        entry[name_key]: value
        for entry in entries
        if entry.get("is_present") == "true"
        and name_key in entry
        and (value := _number(entry.get(value_key))) is not None
    }


class XrtDevice(Device):
    kind = "xrt"

    def __init__(self, kernel):
        pyxrt = _pyxrt()
        found = cards(pyxrt)
        shells = {index: device.get_info(pyxrt.xrt_info_device.name) for index, device in found}
        on_f1 = bool(shells) and all(board(shell) == "aws-f1" for shell in shells.values())  # F1 hosts hold F1 only
        xclbin = kernel.xclbin(aws_f1=on_f1)
        if not found:
            raise DeviceError("device 'xrt' found no Alveo card")
        image = pyxrt.xclbin(str(xclbin))
        platform = image.get_xsa_name()
        if on_f1 and board(platform) == "aws-f1" and xclbin.suffix != ".awsxclbin":
            raise DeviceError(
                f"{xclbin.name} is built for {platform}, but F1 loads the AFI's .awsxclbin: build it with "
                "`make TARGET_BOARD=aws-f1` in its vitis/ folder"
            )
        if kernel.top not in [k.get_name() for k in image.get_kernels()]:
            raise DeviceError(f"{xclbin.name} holds no kernel {kernel.top}")
        cu_names = compute_unit_names(kernel, board(platform))
        if not cu_names:
            raise DeviceError(f"kernel.json names no compute unit for platform {platform}")
        matching = [(index, device) for index, device in found if board(shells[index]) == board(platform)]
        if not matching:
            cards_seen = ", ".join(f"card {index} is {shell}" for index, shell in shells.items())
            raise DeviceError(f"{xclbin.name} is built for platform {platform}, but no card matches ({cards_seen})")
        for index in sorted(set(shells) - {index for index, _ in matching}):
            log.info(
                "device 'xrt' leaves card %d (%s) alone: %s is for %s", index, shells[index], xclbin.name, platform
            )
        compute_units = []
        for index, device in matching:
            for name in cu_names:
                try:
                    compute_units.append(XrtComputeUnit(pyxrt, index, device, image, f"{kernel.top}:{{{name}}}"))
                except RuntimeError as error:
                    raise DeviceError(f"{xclbin.name} on card {index} has no compute unit {name}: {error}") from None
        super().__init__(kernel, compute_units)

    @staticmethod
    def available():
        try:
            pyxrt = _pyxrt()
        except DeviceError as error:
            return False, str(error)
        count = len(cards(pyxrt))
        return count > 0, f"XRT lists {count} card(s)"


DRIVER = XrtDevice
