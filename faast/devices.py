"""`faast devices [REPOSITORY]`: the first command on a card host. It lists the cards XRT and PYNQ
see (name, board, shell) with what XRT's sensors read on each (temperatures, power, fans, clocks),
the xclbins in a model repository and the platforms they were built for, and which device each model
version would run on, and why — the choice `faast serve` makes with device auto, or the failure it
would log, without loading anything."""

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from faast.host import pynq_driver, xrt_driver
from faast.host.drivers import HARDWARE
from faast.host.vendor import board, import_vendor

from .contract.errors import DeviceError
from .contract.kernel import KernelDescription
from .protocol import model_config as mc


@dataclass(frozen=True)
class Card:
    vendor: str  # xrt or pynq: the driver that sees it
    index: int
    shell: str
    detail: str = ""
    telemetry: xrt_driver.CardTelemetry | None = None  # XRT's sensor readings

    @property
    def board(self):
        return board(self.shell)


def find_cards() -> tuple[dict[str, list[Card]], dict[str, str]]:
    """The cards each driver sees, and for a driver that cannot look, why."""
    found: dict[str, list[Card]] = {vendor: [] for vendor in HARDWARE}
    problems = {}
    try:
        pyxrt = import_vendor("pyxrt", "XRT's Python binding pyxrt is not importable (source /opt/xilinx/xrt/setup.sh)")
        for index, device in xrt_driver.cards(pyxrt):
            telemetry = xrt_driver.read_telemetry(pyxrt, index, device)
            found["xrt"].append(Card("xrt", index, telemetry.shell, f"bdf {telemetry.bdf}", telemetry))
    except DeviceError as error:
        problems["xrt"] = str(error)
    try:
        pynq = import_vendor("pynq", pynq_driver.INSTALL_HINT)
        found["pynq"] = [Card("pynq", index, card.name) for index, card in enumerate(pynq_driver.cards(pynq))]
    except DeviceError as error:
        problems["pynq"] = str(error)
    except Exception as error:  # noqa: BLE001 — PYNQ's own listing failed: said, as auto says it
        problems["pynq"] = f"PYNQ could not list the cards: {type(error).__name__}: {error}"
    return found, problems


@dataclass(frozen=True)
class Version:
    model: str
    version: str
    folder: Path
    device: str  # config.pbtxt's parameters["device"], auto when absent
    xclbins: list[tuple[Path, str]]  # (image, the platform it was built for)
    problem: str = ""  # why this version cannot be served at all


def _xclbin_platform(path):
    try:
        pyxrt = import_vendor("pyxrt", "")
    except DeviceError:
        return "unknown (reading an xclbin needs pyxrt)"
    return pyxrt.xclbin(str(path)).get_xsa_name()


def find_versions(repository) -> list[Version]:
    """Every numbered version folder of every model in `repository`, with its xclbins' platforms."""
    versions = []
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        device = config.parameters["device"].string_value if "device" in config.parameters else "auto"
        model = config.name or config_path.parent.name
        for folder in sorted(p for p in config_path.parent.iterdir() if p.is_dir() and p.name.isdigit()):
            try:
                kernel = KernelDescription.read(folder)
            except DeviceError as error:
                versions.append(Version(model, folder.name, folder, device, [], str(error)))
                continue
            images = [(image, _xclbin_platform(image)) for image in kernel.xclbins()]
            versions.append(Version(model, folder.name, folder, device, images))
    return versions


def placement(version: Version, cards: dict[str, list[Card]], problems: dict[str, str]) -> tuple[str, str]:
    """(device, why) for one version, as open_device would choose; device 'none' when it cannot load."""
    if version.problem:
        return "none", version.problem
    if version.device in ("emulator", "csim"):
        return version.device, "its config.pbtxt asks for it"
    if not version.xclbins:
        why = f"{version.folder} holds no xclbin (build one with `make` in its vitis/ folder)"
        return ("emulator", why) if version.device == "auto" else ("none", f"device '{version.device}': {why}")
    vendors = HARDWARE if version.device == "auto" else [version.device]
    reasons = []
    for vendor in vendors:
        if not cards[vendor]:
            reasons.append(f"{vendor}: {problems.get(vendor, 'no card')}")
            continue
        on_f1 = all(card.board == "aws-f1" for card in cards[vendor])  # as the drivers pick on an F1 host
        suffix = ".awsxclbin" if on_f1 else ".xclbin"
        images = [(image, platform) for image, platform in version.xclbins if image.suffix == suffix]
        if not images:
            return "none", f"{vendor}: {version.folder} holds no {suffix} (the image its cards load)"
        image, platform = images[0]
        matching = [card for card in cards[vendor] if card.board == board(platform)]
        seen = ", ".join(f"card{card.index} {card.shell}" for card in cards[vendor])
        if not matching:  # auto stops at the first driver with cards: the model fails to load
            return "none", f"{vendor}: {image.name} is built for {platform}, but no card matches ({seen})"
        on = ", ".join(f"card{card.index}" for card in matching)
        return vendor, f"{image.name} is built for {platform} ({board(platform)}), as {on} ({seen})"
    if version.device != "auto":
        return "none", "; ".join(reasons)
    return "emulator", f"no card is usable ({'; '.join(reasons)})"


def report(repository=None) -> str:
    cards, problems = find_cards()
    lines = ["Cards"]
    for vendor in HARDWARE:
        if cards[vendor]:
            for card in cards[vendor]:
                detail = f", {card.detail}" if card.detail else ""
                lines.append(f"  {vendor} card{card.index}: {card.shell} (board {card.board}{detail})")
                if card.telemetry is not None:
                    lines.append(f"    {sensors(card.telemetry)}")
        else:
            lines.append(f"  {vendor}: no card ({problems.get(vendor, 'none listed')})")
    if repository is None:
        return "\n".join(lines) + "\n"
    versions = find_versions(repository)
    lines += ["", f"Repository {repository}"]
    for version in versions:
        name = f"{version.model}/{version.version}"
        if not version.xclbins:
            lines.append(f"  {name}: no xclbin" + (f" ({version.problem})" if version.problem else ""))
        for image, platform in version.xclbins:
            lines.append(f"  {name}: {image.name} for {platform} (board {board(platform)})")
    lines += ["", "Placement (device auto unless config.pbtxt names one)"]
    for version in versions:
        device, why = placement(version, cards, problems)
        lines.append(f"  {version.model}/{version.version} -> {device}: {why}")
    return "\n".join(lines) + "\n"


def sensors(telemetry: xrt_driver.CardTelemetry) -> str:
    """One line of what a card's sensors read; what XRT does not report is left out."""

    def readings(values, unit):
        return ", ".join(f"{name} {value:g} {unit}" for name, value in values.items())

    parts = []
    if telemetry.temperatures_c:
        parts.append(f"temperatures {readings(telemetry.temperatures_c, 'C')}")
    if telemetry.power_w is not None:
        parts.append(f"power {telemetry.power_w:g} W")
    if telemetry.fans_rpm:
        parts.append(f"fans {readings(telemetry.fans_rpm, 'rpm')}")
    if telemetry.clocks_mhz:
        parts.append(f"clocks {readings(telemetry.clocks_mhz, 'MHz')}")
    return "; ".join(parts) if parts else "no sensor readings (XRT reports none)"


def run(args):
    print(report(args.repository), end="")
