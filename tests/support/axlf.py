"""A real xclbin container (axlf) describing what `faast build` describes, for the stand-in cards.

The layout is XRT's (src/runtime_src/core/include/xclbin.h): the axlf magic and header, section
headers of 40 bytes, and the sections PYNQ's parser reads — EMBEDDED_METADATA (the kernel XML v++
embeds: the kernel top, its ports and arguments with their control-register offsets, one instance
per compute unit), IP_LAYOUT, MEM_TOPOLOGY and CONNECTIVITY (each argument's memory bank). The
compute units and banks come from the connectivity file kernels/vitis.py wrote for the board
(nk=top:N:top_1…, sp=top_i.arg:bank). A card has no fabric here: the BITSTREAM section holds the
version folder, which the stand-in card (tests/support/standin_libxrt.py) runs the emulator of.
"""

import re
import struct
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

from faast.contract.kernel import KernelDescription

MAGIC = b"xclbin2\0"
HEADER = struct.Struct("<QQQHBBHH16s64s16s16sI4x")  # axlf_header, 152 bytes
SECTION_HEADER = struct.Struct("<I16s4xQQ")  # axlf_section_header, 40 bytes
MEM_DATA = struct.Struct("<BB6xQQ16s")  # mem_data, 40 bytes
IP_DATA = struct.Struct("<IIQ64s")  # ip_data, 80 bytes
CONNECTION = struct.Struct("<iii")  # connection, 12 bytes
PREFIX = 8 + 4 + 28 + 256 + 8  # magic, signature length, reserved, key block, unique id

BITSTREAM, EMBEDDED_METADATA, MEM_TOPOLOGY, CONNECTIVITY, IP_LAYOUT = 0, 2, 6, 7, 8
MEM_DDR4, IP_KERNEL = 1, 1
AP_CTRL_CHAIN = 1
BANK_BYTES = 16 << 30  # a U250 / F1 DDR bank: 16 GiB
CU_BASE, CU_STRIDE = 0x1800000, 0x10000  # control-register windows, as v++ spaces them

# The kernel top's arguments (kernels/templates/kernel_top.cpp): name, AXI port, control-register
# offset, size, type — the offsets Vitis HLS gives two 64-bit pointers and an int after AP_CTRL.
ARGUMENTS = [
    ("inputs", "M_AXI_GMEM0", 0x10, 8, "word_t const *"),
    ("outputs", "M_AXI_GMEM1", 0x1C, 8, "word_t *"),
    ("rows", "S_AXI_CONTROL", 0x28, 4, "int"),
]


def connectivity(version_dir: Path, board: str):
    """(kernel top, [CU names], {(CU, argument): bank}) from the build's connectivity.<board>.cfg."""
    text = (version_dir / "vitis" / f"connectivity.{board}.cfg").read_text()
    top, _, names = re.search(r"^nk=(\w+):(\d+):([\w.]+)$", text, re.M).groups()
    banks = {(cu, arg): bank for cu, arg, bank in re.findall(r"^sp=(\w+)\.(\w+):(\S+)$", text, re.M)}
    return top, names.split("."), banks


def _kernel_xml(top, cus, platform):
    ports = [
        '<port name="S_AXI_CONTROL" mode="slave" range="0x1000" dataWidth="32" portType="addressable" base="0x0"/>',
        *(
            f'<port name="{port}" mode="master" range="0xFFFFFFFFFFFFFFFF" dataWidth="512" portType="addressable"'
            ' base="0x0"/>'
            for _, port, _, _, kind in ARGUMENTS
            if "*" in kind
        ),
    ]
    args = [
        f'<arg name="{name}" addressQualifier="{1 if "*" in kind else 0}" id="{index}" port="{port}"'
        f' size="{size:#x}" offset="{offset:#x}" hostOffset="0x0" hostSize="{size:#x}" type={quoteattr(kind)}/>'
        for index, (name, port, offset, size, kind) in enumerate(ARGUMENTS)
    ]
    instances = [
        f'<instance name="{cu}"><addrRemap base="{CU_BASE + i * CU_STRIDE:#x}" range="{CU_STRIDE:#x}"'
        ' port="S_AXI_CONTROL"/></instance>'
        for i, cu in enumerate(cus)
    ]
    kernel = (
        f'<kernel name="{top}" language="c" vlnv="xilinx.com:hls:{top}:1.0" preferredWorkGroupSizeMultiple="0"'
        f' workGroupSize="1" interrupt="true" hwControlProtocol="ap_ctrl_chain">'
        + "".join(ports + args + instances)
        + "</kernel>"
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><project name="{top}"><platform vendor="xilinx" name="{platform}">'
        f'<device name="fpga0"><core name="OCL_REGION_0" type="clc_region">{kernel}</core></device>'
        "</platform></project>"
    ).encode()


def write(version_dir: Path, board: str = "u250", name: str = "facile.xclbin") -> Path:
    """An xclbin in `version_dir` for `board`: the build's compute units, each in its banks."""
    kernel = KernelDescription.read(version_dir)
    top, cus, banks = connectivity(version_dir, board)
    assert top == kernel.top, "the connectivity file names the kernel top kernel.json names"
    platform = kernel.platforms[board]
    memories = sorted(set(banks.values()), key=lambda bank: [int(n) for n in re.findall(r"\d+", bank)])
    mem_topology = struct.pack("<i4x", len(memories)) + b"".join(
        MEM_DATA.pack(MEM_DDR4, 1, BANK_BYTES >> 10, 0x40_0000_0000 * i, bank.encode())
        for i, bank in enumerate(memories)
    )
    ip_layout = struct.pack("<i4x", len(cus)) + b"".join(
        IP_DATA.pack(IP_KERNEL, AP_CTRL_CHAIN << 8, CU_BASE + i * CU_STRIDE, f"{top}:{cu}".encode())
        for i, cu in enumerate(cus)
    )
    connections = [
        CONNECTION.pack(index, ip, memories.index(banks[(cu, arg)]))
        for ip, cu in enumerate(cus)
        for index, (arg, *_) in enumerate(ARGUMENTS)
        if (cu, arg) in banks
    ]
    sections = [
        (BITSTREAM, "bitstream", str(version_dir.resolve()).encode()),
        (EMBEDDED_METADATA, "metadata", _kernel_xml(top, cus, platform)),
        (MEM_TOPOLOGY, "mem_topology", mem_topology),
        (IP_LAYOUT, "ip_layout", ip_layout),
        (CONNECTIVITY, "connectivity", struct.pack("<i", len(connections)) + b"".join(connections)),
    ]
    offset = PREFIX + HEADER.size + SECTION_HEADER.size * len(sections)
    headers, payload = b"", b""
    for kind, section_name, data in sections:
        offset += -offset % 8  # every section starts 8-byte aligned
        payload += b"\0" * (offset - PREFIX - HEADER.size - SECTION_HEADER.size * len(sections) - len(payload))
        headers += SECTION_HEADER.pack(kind, section_name.encode(), offset, len(data))
        payload += data
        offset += len(data)
    header = HEADER.pack(
        offset, 0, 0, 0, 2, 1, 0, 0, b"\0" * 16, platform.encode(), uuid.uuid4().bytes, b"", len(sections)
    )
    prefix = MAGIC + struct.pack("<i", -1) + b"\xff" * 28 + b"\0" * 256 + struct.pack("<Q", 0)
    path = version_dir / name
    path.write_bytes(prefix + header + headers + payload)
    return path
