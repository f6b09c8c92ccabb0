"""kernel.json, typed and versioned: the description of a built kernel that `faast build` writes
(faast.kernels: convert.py describes the hls4ml graph, build.py adds the buffer layout and compute
units) and that the host (drivers, emulator) and the server read. Nothing else parses kernel.json.

FORMAT_VERSION numbers the layout of the file. A kernel.json of another version is refused with one
message that says how to rebuild it; a kernel.json from before the version was written (no
"format_version") has version 1's layout and is read as such.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import DeviceError, KernelFormatError
from .fixed import FixedType
from .layout import BufferLayout

FORMAT_VERSION = 1
FILE = "kernel.json"
Scalar = bool | int | float | str | tuple[int, ...]
_MISSING: Any = object()


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Tensor:
    """A tensor of the kernel's top function: its C++ variable, the name a client uses for it, its
    shape (without the batch) and element type (the C++ type text, and its typedef's name)."""

    name: str
    serving_name: str
    shape: tuple[int, ...]
    size: int
    type: str
    type_name: str

    @property
    def fixed(self) -> FixedType:
        return FixedType.parse(self.type)

    @classmethod
    def from_json(cls, entry: dict) -> "Tensor":
        return cls(
            entry["name"],
            entry["serving_name"],
            tuple(entry["shape"]),
            entry["size"],
            entry["type"],
            entry["type_name"],
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "serving_name": self.serving_name,
            "shape": list(self.shape),
            "size": self.size,
            "type": self.type,
            "type_name": self.type_name,
        }


@dataclass(frozen=True)
class Layer:
    """One layer of the hls4ml graph as the emulator needs it: its class, wiring, C++ types
    (result_t, accum_t, ...), scalar attributes, weights (by the name the C simulation loads them
    under) and the product and kernel templates hls4ml picked. The accessors raise a KernelFormatError
    naming the layer when the description lacks what a reader asks for."""

    name: str
    class_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    variables: tuple[str, ...]  # the C++ variable each output is (the kernel's tensors name these)
    shape: tuple[int, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Scalar] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("types", "attributes", "weights", "templates"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def _missing(self, what: str) -> KernelFormatError:
        return KernelFormatError(f"layer '{self.name}' ({self.class_name}) of kernel.json has no {what}")

    def type(self, key: str) -> FixedType:
        """The fixed-point type `key` (e.g. "accum_t")."""
        if key not in self.types:
            raise self._missing(f"type {key}")
        return FixedType.parse(self.types[key])

    def _attribute(self, key: str, kinds: tuple[Any, ...], default: Any) -> Any:
        value = self.attributes.get(key, default)
        if value is _MISSING:
            raise self._missing(f"attribute {key}")
        if value is not default and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            raise KernelFormatError(f"layer '{self.name}' of kernel.json: attribute {key} is {value!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING) -> int:
        return self._attribute(key, (int,), default)

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        return self._attribute(key, (bool,), default)

    def text(self, key: str, default: Any = _MISSING) -> str:
        return self._attribute(key, (str,), default)

    def integers(self, key: str, default: Any = _MISSING) -> tuple[int, ...]:
        return tuple(self._attribute(key, (list, tuple), default))

    @classmethod
    def from_json(cls, entry: dict) -> "Layer":
        return cls(
            entry["name"],
            entry["class"],
            tuple(entry["inputs"]),
            tuple(entry["outputs"]),
            tuple(entry["variables"]),
            tuple(entry["shape"]),
            entry["types"],
            {k: tuple(v) if isinstance(v, list) else v for k, v in entry["attributes"].items()},
            entry["weights"],
            entry["templates"],
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "class": self.class_name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "variables": list(self.variables),
            "shape": list(self.shape),
            "types": dict(self.types),
            "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()},
            "weights": dict(self.weights),
            "templates": dict(self.templates),
        }


@dataclass(frozen=True)
class KernelDescription:
    """A built kernel. The conversion writes the graph's part (tensors, layers, hls4ml settings, and
    a shipped kernel's `serving` and `fpga` tables); the build adds the top function's name, the
    buffer layout, compute units per board and platforms (`layout` refuses a description without). `layers` is
    None for a kernel the emulator cannot describe (an imported hls4ml project hls4ml here does not
    rewrite identically). `folder` is where it was read from, not part of the file."""

    name: str
    project: str
    hls4ml_version: str | None
    io_type: str
    backend: str
    part: str | None
    clock_period_ns: float | None
    source_kind: str
    source_path: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    layers: tuple[Layer, ...] | None = None
    serving: Mapping[str, Any] = field(default_factory=dict)
    fpga: Mapping[str, Any] = field(default_factory=dict)
    top: str | None = None
    buffers: BufferLayout | None = None
    compute_units: Mapping[str, int] = field(default_factory=dict)
    platforms: Mapping[str, str] = field(default_factory=dict)
    # The files in hls4ml/firmware/weights/ the C simulation reads (none for a weightless network);
    # None in a kernel.json written before the build recorded them.
    weight_files: tuple[str, ...] | None = None
    folder: Path | None = field(default=None, compare=False)

    def __post_init__(self):
        for name in ("serving", "fpga", "compute_units", "platforms"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def input_size(self) -> int:
        """Elements of every input tensor in one row: a row holds them side by side, in order."""
        return sum(tensor.size for tensor in self.inputs)

    @property
    def output_size(self) -> int:
        return sum(tensor.size for tensor in self.outputs)

    @property
    def layout(self) -> BufferLayout:
        """The buffer layout; a KernelFormatError for a description the build has not completed."""
        if self.buffers is None:
            raise KernelFormatError(f"kernel.json of '{self.name}' has no buffer layout: build it with `faast build`")
        return self.buffers

    def with_build(
        self,
        top: str,
        buffers: BufferLayout,
        compute_units: Mapping[str, int],
        platforms: Mapping[str, str],
        weight_files: tuple[str, ...],
    ) -> "KernelDescription":
        """This description completed by the build."""
        return replace(
            self,
            top=top,
            buffers=buffers,
            compute_units=compute_units,
            platforms=platforms,
            weight_files=weight_files,
        )

    @classmethod
    def read(cls, folder) -> "KernelDescription":
        """kernel.json of a version folder; a KernelFormatError that names the fix when it is missing,
        unreadable or of another format version."""
        folder = Path(folder)
        path = folder / FILE
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            raise KernelFormatError(f"{path} is missing: build the kernel with `faast build`") from None
        except (OSError, ValueError) as error:
            raise KernelFormatError(f"{path} cannot be read ({error}): {_REBUILD}") from None
        return cls.from_json(entry, folder, path)

    @classmethod
    def from_json(cls, entry: Any, folder: Path | None = None, path: Any = FILE) -> "KernelDescription":
        version = entry.get("format_version", 1) if isinstance(entry, dict) else None
        if version != FORMAT_VERSION:
            raise KernelFormatError(
                f"{path} has format version {version}; this faast reads version {FORMAT_VERSION}: {_REBUILD}"
            )
        try:
            return cls(
                entry["name"],
                entry["project"],
                entry.get("hls4ml_version"),
                entry["io_type"],
                entry["backend"],
                entry.get("part"),
                entry.get("clock_period_ns"),
                entry["source"]["kind"],
                entry["source"]["path"],
                tuple(Tensor.from_json(t) for t in entry["inputs"]),
                tuple(Tensor.from_json(t) for t in entry["outputs"]),
                tuple(Layer.from_json(layer) for layer in entry["layers"]) if entry.get("layers") else None,
                entry.get("serving", {}),
                entry.get("fpga", {}),
                entry.get("kernel"),
                BufferLayout.from_json(entry["buffers"]) if "buffers" in entry else None,
                entry.get("compute_units", {}),
                entry.get("platforms", {}),
                tuple(entry["weight_files"]) if "weight_files" in entry else None,
                folder,
            )
        except (KeyError, TypeError, ValueError) as error:
            problem = f"{type(error).__name__}: {error}"
            raise KernelFormatError(f"{path} is not a kernel description ({problem}): {_REBUILD}") from None

    def to_json(self) -> dict:
        entry: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "project": self.project,
            "hls4ml_version": self.hls4ml_version,
            "io_type": self.io_type,
            "backend": self.backend,
            "part": self.part,
            "clock_period_ns": self.clock_period_ns,
            "source": {"kind": self.source_kind, "path": self.source_path},
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }
        if self.layers is not None:
            entry["layers"] = [layer.to_json() for layer in self.layers]
        for key, value in (("serving", self.serving), ("fpga", self.fpga)):
            if value:
                entry[key] = _plain(value)
        if self.top is not None:
            entry["kernel"] = self.top
        if self.buffers is not None:
            entry["buffers"] = self.buffers.to_json()
        if self.compute_units:
            entry["compute_units"] = dict(self.compute_units)
        if self.platforms:
            entry["platforms"] = dict(self.platforms)
        if self.weight_files is not None:
            entry["weight_files"] = list(self.weight_files)
        return entry

    def write(self, folder) -> Path:
        path = Path(folder) / FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def xclbins(self) -> list[Path]:
        """The images a card could load (.xclbin and .awsxclbin files), sorted."""
        if self.folder is None:
            return []
        return sorted([*self.folder.glob("*.xclbin"), *self.folder.glob("*.awsxclbin")])

    def xclbin(self, aws_f1: bool = False) -> Path:
        """The image a card loads: on AWS F1 XRT loads the .awsxclbin (the xclbin that names the AFI
        AWS made of it; F1 takes no bitstream from the host), on an Alveo card the .xclbin. Without
        that kind, the other one, so the driver can say which platform it was built for. A clear
        error when the Vitis build has made none."""
        wanted = ".awsxclbin" if aws_f1 else ".xclbin"
        xclbins = sorted(self.xclbins(), key=lambda path: path.suffix != wanted)  # stable: sorted within
        if not xclbins:
            raise DeviceError(f"no xclbin in {self.folder}: build one with `make` in its vitis/ folder")
        return xclbins[0]


_REBUILD = "rebuild the model with `faast build SOURCE --replace`"


def _plain(value: Any) -> Any:
    """A read-only mapping (and what it holds) back to JSON's dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
