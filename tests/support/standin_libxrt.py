"""STAND-IN for XRT's C library under the real PYNQ 3.0.1 — no hardware is involved.

PYNQ reaches XRT only through ctypes: pynq/_3rdparty/xrt.py loads $XILINX_XRT/lib/libxrt_core.so and
calls its functions (xclProbe, xclOpen, xclLoadXclBin, xclAllocBO, xclMapBO, xclSyncBO, xclExecBuf,
xclExecWait, …). `real_pynq()` imports the real pynq and puts `Library` where that library was: every
line of PYNQ above it — Device.devices, Overlay, the xclbin parser, DefaultIP and `_create_call`,
pynq.allocate, ErtWaitHandle, XrtDevice's event handling — runs as shipped. Only functions
pynq/_3rdparty/xrt.py declares exist here (tests/host/test_vendor_surface.py checks).

Each card behaves as XRT and the card do: a buffer's mapped host memory (real mmap'd pages, which
PYNQ munmaps) is separate from its device memory, so only synced bytes reach the kernel; an exec
buffer's ERT packet names the compute unit (cu_mask) and its register image; the CU decodes the
argument addresses at the offsets the xclbin's metadata gives, runs the version's emulator on the
input buffer's device memory (the xclbin's BITSTREAM section names the version folder, see
tests/support/axlf.py), writes the output buffer's device memory, and sets the packet's state;
xclExecWait returns when a command has finished, as poll() on the card does.

Cards: `install([{"name": shell, "present": bool, "hang": CU names that never finish, "fail": {CU:
[ERT states its next runs end in]}}])`. COMMANDS records every (card, CU, final state).
"""

import ctypes
import ctypes.util
import errno
import functools
import itertools
import json
import os
import queue
import re
import struct
import sys
import tempfile
import threading
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from faast.contract.kernel import KernelDescription
from faast.host.compute_unit import DeviceBuffer
from faast.host.emulator import EmulatorDevice

CARDS: list[dict] = []
COMMANDS: list[tuple[int, str, int]] = []
XRT_VERSION = "2.13.466"  # XRT 2022.1, the U250 platform's
EXECBUF = 1 << 31  # xclAllocBO flag of an exec buffer (DRM_XOCL_BO_EXECBUF)
COMPLETED, ERROR, ABORT = 4, 5, 6  # ert_cmd_state
QUEUED, RUNNING = 2, 3
SECTION_HEADER = struct.Struct("<I16s4xQQ")
PREFIX = 304  # bytes before the axlf header (tests/support/axlf.py)
PAGE = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT_RW, MAP_PRIVATE_ANONYMOUS = 0x3, 0x22


def install(cards):
    """The stand-in cards, replacing any before; PYNQ enumerates them afresh on its next look."""
    COMMANDS.clear()
    CARDS[:] = [{"present": True, "hang": set(), "fail": {}, **card, "_state": None} for card in cards]
    xrt, devices = sys.modules.get("pynq._3rdparty.xrt"), sys.modules.get("pynq.pl_server.device")
    if xrt is not None and devices is not None and xrt.libc is LIBRARY:
        for cached in ("_devices", "_active_device"):  # what a fresh process would not have
            if cached in vars(devices.Device):
                delattr(devices.Device, cached)


def _card(handle):
    card = LIBRARY.handles[ctypes.cast(handle, ctypes.c_void_p).value]
    return card, card["_state"]


class _Buffer:
    def __init__(self, size, flags, paddr, memory):
        self.size, self.flags, self.paddr, self.memory = size, flags, paddr, memory
        address = _libc.mmap(None, size, PROT_RW, MAP_PRIVATE_ANONYMOUS, -1, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.host = address  # mapped once; PYNQ munmaps it when it frees the buffer
        self.device = np.zeros(size, np.uint8)


class _Image:
    """What a card programmed with an xclbin runs: its compute units, each a worker with a queue."""

    def __init__(self, data, card):
        length = struct.unpack_from("<Q", data, PREFIX)[0]
        self.uuid = data[PREFIX + 112 : PREFIX + 128]
        count = struct.unpack_from("<I", data, PREFIX + 144)[0]
        sections = {}
        for i in range(count):
            kind, _, offset, size = SECTION_HEADER.unpack_from(data, PREFIX + 152 + 40 * i)
            assert offset + size <= length, "a section inside the file"
            sections[kind] = data[offset : offset + size]
        kernel = ElementTree.fromstring(sections[2]).find("platform/device/core/kernel")
        self.offsets = {arg.get("name"): int(arg.get("offset"), 0) for arg in kernel.findall("arg")}
        (ips,) = struct.unpack_from("<i", sections[8])
        layout = [struct.unpack_from("<IIQ64s", sections[8], 8 + 80 * i) for i in range(ips)]
        self.cus = [
            name.rstrip(b"\0").decode() for kind, _, _, name in sorted(layout, key=lambda ip: ip[2]) if kind == 1
        ]
        folder = Path(sections[0].decode())
        self.kernel = KernelDescription.read(folder)
        emulator = EmulatorDevice(self.kernel, len(self.cus))
        emulator.close()  # its units compute on any bytes; its own buffer pools are not needed
        self.queues = []
        for name, unit in zip(self.cus, emulator.compute_units, strict=True):
            work: queue.Queue = queue.Queue()
            threading.Thread(target=self._serve, args=(card, name, unit, work), daemon=True).start()
            self.queues.append(work)

    def _serve(self, card, name, unit, work):
        instance = name.split(":")[1]
        while True:
            packet = work.get()
            state = card["_state"]
            _set_state(packet, RUNNING)
            if instance in card["hang"]:
                continue  # never finishes: no state change, no event
            failures = card["fail"].get(instance)
            if failures:
                final = failures.pop(0)
            else:
                registers = ctypes.string_at(packet + 8, max(self.offsets.values()) + 8)
                inputs, outputs = (
                    state.find(struct.unpack_from("<Q", registers, self.offsets[a])[0]) for a in ("inputs", "outputs")
                )
                (rows,) = struct.unpack_from("<i", registers, self.offsets["rows"])
                layout = self.kernel.layout
                unit.execute(
                    DeviceBuffer(inputs),
                    DeviceBuffer(outputs),
                    rows,
                    layout.input.nbytes(rows),
                    layout.output.nbytes(rows),
                )
                final = COMPLETED
            COMMANDS.append((CARDS.index(card), instance, final))
            _set_state(packet, final)
            with state.events:
                state.finished += 1
                state.events.notify_all()


def _set_state(packet, value):
    header = ctypes.c_uint32.from_address(packet)
    header.value = (header.value & ~0xF) | value


class _CardState:
    """A card's XRT side: its buffers by handle, the loaded image, finished commands not yet waited for."""

    def __init__(self):
        self.buffers: dict[int, _Buffer] = {}
        self.handles = itertools.count(1)
        self.next_paddr: dict[int, int] = {}
        self.image: _Image | None = None
        self.events = threading.Condition()
        self.finished = 0

    def find(self, address):
        """The device memory from `address` on, as the CU's AXI master sees it."""
        for buffer in list(self.buffers.values()):  # xclAllocBO may add one meanwhile
            if buffer.memory is not None and buffer.paddr <= address < buffer.paddr + buffer.size:
                return buffer.device[address - buffer.paddr :]
        raise RuntimeError(f"no buffer at device address {address:#x}")


def _present(function):
    """A call on a card that is gone fails as XRT's do: -ENODEV."""

    @functools.wraps(function)
    def checked(handle, *args):
        card, _ = _card(handle)
        return function(handle, *args) if card["present"] else -errno.ENODEV

    return checked


def xclProbe():
    return sum(card["present"] for card in CARDS)


def xclOpen(index, log_file, level):
    card = [card for card in CARDS if card["present"]][index]
    if card["_state"] is None:
        card["_state"] = _CardState()
    LIBRARY.handles[id(card)] = card
    return id(card)  # a handle PYNQ hands back, never dereferences


def xclClose(handle):
    return None


@_present
def xclGetDeviceInfo2(handle, info):
    card, _ = _card(handle)
    info.mName = card["name"].encode()
    info.mMagic = 0x586C0C6C
    info.mDDRBankCount = 4
    return 0


@_present
def xclLockDevice(handle):
    return 0


def xclUnlockDevice(handle):
    return 0


@_present
def xclLoadXclBin(handle, data):
    card, state = _card(handle)
    data = bytes(data)
    if data[:8] != b"xclbin2\0":
        return -errno.EINVAL
    platform = data[PREFIX + 48 : PREFIX + 112].rstrip(b"\0").decode()
    if platform.split("_")[:2] != card["name"].split("_")[:2]:  # XRT checks the shell's interface
        return -errno.EOPNOTSUPP
    if state.image is None or state.image.uuid != data[PREFIX + 112 : PREFIX + 128]:
        state.image = _Image(data, card)
    return 0


@_present
def xclIPName2Index(handle, name):
    _, state = _card(handle)
    name = name.decode() if isinstance(name, bytes) else name
    return state.image.cus.index(name) if state.image and name in state.image.cus else -errno.ENOENT


@_present
def xclOpenContext(handle, xclbin_id, index, shared):
    _, state = _card(handle)
    return (
        0
        if state.image and bytes(xclbin_id)[:16] == state.image.uuid and index < len(state.image.cus)
        else -errno.EINVAL
    )


def xclCloseContext(handle, xclbin_id, index):
    return 0


@_present
def xclAllocBO(handle, size, domain, flags):
    _, state = _card(handle)
    memory = None if flags & EXECBUF else flags & 0xFFFF
    paddr = 0
    if memory is not None:
        paddr = state.next_paddr.get(memory, (memory << 34) + PAGE)
        state.next_paddr[memory] = paddr + -(-size // PAGE) * PAGE
    bo = next(state.handles)
    state.buffers[bo] = _Buffer(size, flags, paddr, memory)
    return bo


@_present
def xclGetBOProperties(handle, bo, properties):
    _, state = _card(handle)
    buffer = state.buffers[bo]
    properties.handle, properties.flags, properties.size = bo, buffer.flags, buffer.size
    properties.paddr, properties.domain = buffer.paddr, 0
    return 0


def xclMapBO(handle, bo, write):
    _, state = _card(handle)
    return state.buffers[bo].host


def xclFreeBO(handle, bo):
    _, state = _card(handle)
    state.buffers.pop(bo, None)


@_present
def xclSyncBO(handle, bo, direction, size, offset):
    _, state = _card(handle)
    buffer = state.buffers[bo]
    host = (ctypes.c_uint8 * buffer.size).from_address(buffer.host)
    window = np.frombuffer(host, np.uint8)[offset : offset + size]
    if direction == 0:  # XCL_BO_SYNC_BO_TO_DEVICE
        buffer.device[offset : offset + size] = window
    else:
        window[:] = buffer.device[offset : offset + size]
    return 0


@_present
def xclExecBuf(handle, bo):
    _, state = _card(handle)
    packet = state.buffers[bo].host
    cu_mask = ctypes.c_uint32.from_address(packet + 4).value
    _set_state(packet, QUEUED)
    state.image.queues[cu_mask.bit_length() - 1].put(packet)
    return 0


def xclExecWait(handle, timeout_ms):
    """poll() on the card: the number of commands that finished since the last call, 0 on timeout."""
    card, state = _card(handle)
    with state.events:
        state.events.wait_for(lambda: state.finished, timeout=max(timeout_ms, 0) / 1000)
        finished, state.finished = state.finished, 0
    return finished


class _Function:
    """A library function as ctypes gives it: settable argtypes and restype, the result converted."""

    def __init__(self, implementation):
        self.implementation = implementation
        self.argtypes = None
        self.restype = ctypes.c_int

    def __call__(self, *args):
        name = self.implementation.__name__
        if self.argtypes is not None and len(args) != len(self.argtypes):
            raise TypeError(f"{name}: this function takes {len(self.argtypes)} argument(s) ({len(args)} given)")
        result = self.implementation(*args)
        restype = self.restype
        if restype is None:
            return None
        if issubclass(restype, ctypes._Pointer):
            return ctypes.cast(ctypes.c_void_p(result), restype)
        return restype(result).value


FUNCTIONS = [
    xclProbe, xclOpen, xclClose, xclGetDeviceInfo2, xclLockDevice, xclUnlockDevice, xclLoadXclBin, xclIPName2Index,
    xclOpenContext, xclCloseContext, xclAllocBO, xclGetBOProperties, xclMapBO, xclFreeBO, xclSyncBO, xclExecBuf,
    xclExecWait,
]  # fmt: skip


class Library:
    """libxrt_core.so as ctypes.CDLL gives it: a missing symbol is an AttributeError."""

    def __init__(self):
        self.functions = {f.__name__: _Function(f) for f in FUNCTIONS}
        self.handles: dict[int, dict] = {}

    def __getattr__(self, name):
        functions = self.__dict__.get("functions", {})
        if name not in functions:
            raise AttributeError(f"libxrt_core.so (stand-in): undefined symbol: {name}")
        return functions[name]


LIBRARY = Library()


def xrt_folder():
    """A $XILINX_XRT for PYNQ to find: version.json, and lib/libxrt_core.so for ctypes to load (libm:
    any shared object opens; `real_pynq` then puts LIBRARY in its place)."""
    folder = Path(tempfile.mkdtemp(prefix="faast-standin-xrt-"))
    (folder / "lib").mkdir()
    maps = Path("/proc/self/maps").read_text()
    (folder / "lib" / "libxrt_core.so").symlink_to(re.search(r"(/\S*/libm\.so\.6)$", maps, re.M).group(1))
    (folder / "version.json").write_text(json.dumps({"BUILD_VERSION": XRT_VERSION}))
    return folder


def real_pynq():
    """The real pynq 3.0.1, its libxrt calls going to LIBRARY (pynq imported now, XILINX_XRT set)."""
    pynq = sys.modules.get("pynq")
    if pynq is None:  # XILINX_XRT only for the import: child processes of the tests stay without it
        before = os.environ.get("XILINX_XRT")
        os.environ["XILINX_XRT"] = str(xrt_folder())
        try:
            import pynq
        finally:
            if before is None:
                del os.environ["XILINX_XRT"]
            else:
                os.environ["XILINX_XRT"] = before
    assert pynq._3rdparty.xrt.XRT_SUPPORTED, "pynq was imported before XILINX_XRT named the stand-in"
    pynq._3rdparty.xrt.libc = LIBRARY
    return pynq


def module():
    """`import pynq` in a child process (tests/support/standin_site): the real package, stood in below."""
    site = str(Path(__file__).parent / "standin_site")
    sys.modules.pop("pynq", None)  # the standin_site module being imported
    path = sys.path[:]
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != site]
    try:
        return real_pynq()
    finally:
        sys.path[:] = path
