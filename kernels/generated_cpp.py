"""What faast reads from the C++ hls4ml generates, in one place: everything else about a kernel
comes from hls4ml's model graph (layers, attributes, types, weights, tensors).

The generated code alone says
- which product and kernel templates a layer's configuration struct picked (`using product =
  nnet::product::mult<...>`, `using kernel = nnet::DenseLatency<...>`): the graph keeps only the
  strategy they were chosen from;
- the fixed-point typedefs a configuration struct declares beyond the layer's own types;
- the name of that struct (the lookup tables are computed by a program that instantiates it);
- the top function's arguments and their types, for an hls4ml project imported as it is (there is
  no graph to ask).

These are hls4ml's internals, not an interface: SUPPORTED_HLS4ML lists the versions this reading was
checked against, and tests/kernels/test_generated_cpp.py fails on any other, or when the reading
finds less than hls4ml wrote.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faast.contract.kernel import Tensor

SUPPORTED_HLS4ML = ("1.3.0",)
_TEMPLATE = re.compile(r"using (product|kernel) = nnet::(?:product::)?(\w+)")
_FIXED_TYPEDEF = re.compile(r"typedef (ap_u?fixed<[^;]*>) (\w+);")
_STRUCT = re.compile(r"struct (\w+)\s*:")
_TYPEDEF = re.compile(r"typedef\s+(.+?)\s+(\w+)\s*;")
_ARGUMENT = re.compile(r"\s*(?:hls::stream<\s*(\w+)\s*>\s*&\s*(\w+)|(\w+)\s+(\w+)\s*\[)")
_ARRAY_ELEMENT = re.compile(r"nnet::array<\s*(.+?)\s*,[^,>]*>$")


class UnreadableFirmware(Exception):
    """The generated code does not say what faast reads from it."""


@dataclass(frozen=True)
class LayerConfig:
    """What a layer's generated configuration (hls4ml's `config_cpp` attribute) says."""

    templates: dict[str, str]  # "product" / "kernel" → the nnet template's name
    typedefs: dict[str, str]  # a fixed-point typedef's name → its type
    struct: str | None  # the configuration struct's name

    @classmethod
    def of(cls, config_cpp: str) -> "LayerConfig":
        struct = _STRUCT.search(config_cpp)
        return cls(
            dict(_TEMPLATE.findall(config_cpp)),
            {name: text for text, name in _FIXED_TYPEDEF.findall(config_cpp)},
            struct.group(1) if struct else None,
        )


def top_tensors(firmware: Path, config: dict) -> tuple[list[Tensor], list[Tensor]]:
    """The top function's arguments in an hls4ml project's firmware header (inputs, then outputs),
    with their C++ types from defines.h and shapes from the configuration's InputShapes / OutputShapes."""
    top = config["ProjectName"]
    header = (firmware / f"{top}.h").read_text()
    signature = re.search(rf"void\s+{top}\s*\(([^)]*)\)", header)
    if signature is None:
        raise UnreadableFirmware(f"firmware/{top}.h declares no top function {top}(...)")
    typedefs = {name: text for text, name in _TYPEDEF.findall((firmware / "defines.h").read_text())}
    shapes = {"inputs": config.get("InputShapes") or {}, "outputs": config.get("OutputShapes") or {}}
    tensors: dict[str, list[Tensor]] = {"inputs": [], "outputs": []}
    for argument in signature.group(1).split(","):
        match = _ARGUMENT.match(argument)
        if match is None:
            raise UnreadableFirmware(f"firmware/{top}.h: cannot read the top function's argument {argument.strip()!r}")
        type_name, variable = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        role = next((r for r in ("inputs", "outputs") if variable in shapes[r]), None)
        if role is None:
            raise UnreadableFirmware(
                f"the project's configuration gives no shape for the top function's argument {variable}"
                " (InputShapes / OutputShapes)"
            )
        element = typedefs[type_name]
        array = _ARRAY_ELEMENT.match(element) if "nnet::array" in element else None
        shape = tuple(int(d) for d in shapes[role][variable])
        tensors[role].append(
            Tensor(variable, variable, shape, int(np.prod(shape)), array.group(1) if array else element, type_name)
        )
    return tensors["inputs"], tensors["outputs"]
