"""The driver registry: every way of executing a kernel by name, and `auto`'s choice among them.

A driver is a module of faast.host exporting DRIVER, its `Device` subclass; it is imported only when
its name is asked for, so a vendor's API (pyxrt, pynq) loads only for a card.
"""

import importlib
import logging
from collections.abc import Callable

from faast.contract.errors import DeviceError
from faast.contract.kernel import KernelDescription

from .device import Device

log = logging.getLogger("faast.host")
# Driver name → its module in faast.host; HARDWARE: the card drivers, in the order `auto` tries them.
DRIVERS = {"csim": "csim", "emulator": "emulator", "xrt": "xrt_driver", "pynq": "pynq_driver"}
HARDWARE = ["xrt", "pynq"]


def driver(kind: str) -> type[Device]:
    """The Device class of driver `kind`, its module imported now (a vendor's API only when asked for)."""
    if kind not in DRIVERS:
        raise DeviceError(f"unknown device '{kind}'; choose auto, {', '.join(DRIVERS)}")
    return importlib.import_module(f"{__package__}.{DRIVERS[kind]}").DRIVER


def open_device(kind: str, folder, compute_units: int | None = None) -> Device:
    """Open device `kind` (auto, emulator, csim, xrt, pynq) on the kernel built into `folder`.

    auto prefers a card (a driver that raises anything, at import, enumeration or opening, is
    passed over with the error as its reason), then the emulator (exact, fast), then the C simulation (exact, slow), and
    logs why it chose what it chose. `compute_units` (config.pbtxt's instance_group count) is how
    many the emulator and the C simulation run, one per worker thread; None: cores_of_this_process(). A card
    has the compute units its xclbin was built with, whatever the count says.
    """
    kernel = KernelDescription.read(folder)
    if kind != "auto":
        return _make(kind, kernel, compute_units)
    reasons = []
    if kernel.xclbins():
        for hardware in HARDWARE:
            try:  # a vendor's module may raise anything, on import, enumeration or opening a card
                available, reason = driver(hardware).available()
                if available:
                    device = _make(hardware, kernel, compute_units)
                    log.info("device auto for '%s': %s, because %s", kernel.name, hardware, reason)
                    return device
            except Exception as error:  # noqa: BLE001 — logged as the reason auto moves on
                reason = f"{type(error).__name__}: {error}"
            reasons.append(f"{hardware}: {reason}")
    else:
        reasons.append(f"{folder} holds no xclbin")
    device = open_engine(kernel, compute_units)
    log.info(
        "device auto for '%s': %s, because no card is usable (%s)",
        kernel.name,
        "emulator" if device.kind == "emulator" else "C simulation",
        "; ".join(reasons),
    )
    return device


def open_engine(kernel: KernelDescription, compute_units: int | None = None) -> Device:
    """The bit-exact engine of `kernel`: the emulator (fast), or the C simulation where the emulator
    cannot run the kernel. What `auto` serves without a card, and what a card's shadow validation
    and failover run."""
    try:
        return _make("emulator", kernel, compute_units)
    except DeviceError as error:
        log.info("kernel '%s' runs on the C simulation: the emulator cannot run this kernel: %s", kernel.name, error)
        return _make("csim", kernel, compute_units)


def _make(kind: str, kernel: KernelDescription, compute_units: int | None) -> Device:
    if kind in HARDWARE:
        opened: Callable[..., Device] = driver(kind)  # a card's Device takes the kernel only
        device = opened(kernel)
        if compute_units is not None and compute_units != len(device.compute_units):
            log.warning(
                "kernel '%s': instance_group asks for %d compute units, the xclbin has %d: all %d serve",
                kernel.name,
                compute_units,
                len(device.compute_units),
                len(device.compute_units),
            )
        return device
    emulated: Callable[..., Device] = driver(kind)
    return emulated(kernel, compute_units)
