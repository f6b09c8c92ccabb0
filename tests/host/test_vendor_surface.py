"""The stand-ins are only as good as their fidelity: pyxrt's against the table of names XRT's own
pyxrt.cpp binds (tests/host/pyxrt_surface.json, with the XRT commits it was read from); the stand-in
of XRT's C library under PYNQ against what the real pynq 3.0.1 calls, and the PYNQ internals the
driver relies on against that package. No hardware is involved."""

import ast
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from support import pyxrt_surface, recording_pyxrt, standin_libxrt

from faast.host.pynq_driver import memory_attribute

TABLE = json.loads(recording_pyxrt.SURFACE_TABLE.read_text())
XRT_2021_2 = "202120.2.12.427"  # the XRT aws-fpga's Vitis 2021.2 flow installs on F1
XRT_2022_1 = "202210.2.13.466"  # the XRT of the U250 platform xilinx_u250_gen3x16_xdma_4_1_202210_1


def test_the_pyxrt_table_names_its_xrt_commits_and_the_releases_that_drive_a_u250_and_f1():
    assert set(TABLE) == {XRT_2021_2, XRT_2022_1, "master"}
    for revision in TABLE.values():
        assert re.fullmatch("[0-9a-f]{40}", revision["xrt_commit"])
        assert revision["source"] == "src/python/pybind11/src/pyxrt.cpp"
    # What the issue found: pyxrt binds no CU listing on an xclbin kernel, and 2022.1 has no enumerate_devices.
    assert TABLE["master"]["classes"]["xclbin.xclbinkernel"] == ["get_name", "get_num_args"]
    assert "enumerate_devices" not in TABLE[XRT_2022_1]["functions"]
    assert "state" in TABLE[XRT_2021_2]["classes"]["run"] and "map" in TABLE["master"]["classes"]["bo"]


def test_the_hw_context_api_is_bound_at_master_only_and_the_old_calls_everywhere():
    for revision in (XRT_2021_2, XRT_2022_1):
        assert "hw_context" not in TABLE[revision]["classes"]
        assert TABLE[revision]["constructors"]["kernel"][-1] == "device, uuid, str, kernel.cu_access_mode"
    master = TABLE["master"]
    assert {"device, uuid", "device, xclbin", "device, str"} <= set(master["constructors"]["hw_context"])
    assert "hw_context, str" in master["constructors"]["kernel"]
    assert "register_xclbin" in master["classes"]["device"]
    # Deprecated at master, still bound: what a release without hw_context is opened with.
    assert "device, uuid, str, kernel.cu_access_mode" in master["constructors"]["kernel"]
    assert "load_xclbin" in master["classes"]["device"]
    # The card telemetry faast reads is a get_info key in every release.
    for revision in TABLE.values():
        assert {"thermal", "electrical", "mechanical", "platform"} <= set(
            revision["enums"]["xrt_info_device"]["values"]
        )


@pytest.mark.parametrize("revision", [None, XRT_2021_2, XRT_2022_1, "master"])
def test_the_pyxrt_standin_exposes_exactly_what_the_release_binds(revision):
    bound = recording_pyxrt.surface(revision)
    exposed = recording_pyxrt.exposed(recording_pyxrt.module(revision), revision)
    assert {key: exposed[key] for key in ("functions", "attributes", "classes", "enums")} == {
        key: bound[key] for key in ("functions", "attributes", "classes", "enums")
    }
    top_level = {*bound["functions"], *bound["attributes"]}
    top_level |= {path for path in [*bound["classes"], *bound["enums"]] if "." not in path}
    top_level |= {v for path, e in bound["enums"].items() if "." not in path and e["exported"] for v in e["values"]}
    assert exposed["top_level"] == sorted(top_level)


def test_the_pyxrt_standin_refuses_names_pyxrt_does_not_bind():
    pyxrt = recording_pyxrt.module()
    with pytest.raises(AttributeError):
        pyxrt.enumerate_devices  # noqa: B018 — master binds it, 2022.1 does not
    with pytest.raises(AttributeError):
        pyxrt.hw_context  # noqa: B018 — master binds it, 2022.1 does not
    with pytest.raises(AttributeError):
        pyxrt.xclbin.xclbinkernel().get_cus  # noqa: B018 — what the old driver called
    with pytest.raises(AttributeError):
        pyxrt.bo.normal.value  # noqa: B018
    with pytest.raises(NotImplementedError, match="does not model graph.reset"):
        pyxrt.graph().reset()
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        pyxrt.bo(None, 64, pyxrt.bo.normal, 0)  # no overload takes None for a device
    older = recording_pyxrt.module(XRT_2021_2)
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        older.kernel(None, None, "top")  # the three-argument kernel came with 2022.1


def test_the_table_reader_follows_pybind11_declarations():
    source = textwrap.dedent("""
        PYBIND11_MODULE(pyxrt, m) {
            m.def("enumerate_devices", &f, "doc");  // a comment .def("ignored", x)
            py::class_<xrt::bo> pybo(m, "bo", "doc");
            py::enum_<xrt::bo::flags>(pybo, "flags", "doc")
                .value("normal", xrt::bo::flags::normal)
                .export_values();
            pybo.def(py::init<>())
                .def(py::init<xrt::device, size_t, xrt::bo::flags>(), "doc")
                .def(py::init([](const xrt::hw_context& ctx, const std::string& name = "x") { return 0; }))
                .def("map", [](xrt::bo& b) { return 0; }, "doc")
                .def("sync", &g);
            py::class_<xrt::run>(m, "run").def("state", &h);
        }
    """)
    assert pyxrt_surface.surface(source) == {
        "functions": ["enumerate_devices"],
        "attributes": [],
        "classes": {"bo": ["map", "sync"], "run": ["state"]},
        "enums": {"bo.flags": {"values": ["normal"], "exported": True}},
        "constructors": {"bo": ["", "device, int, bo.flags", "hw_context, str"]},
    }


READ_REAL_PYNQ = """
import inspect, json, sys, warnings
warnings.simplefilter("ignore")
import pynq
from pynq._3rdparty import xrt
from pynq.overlay import _complete_description
from pynq.pl_server import xrt_device

print(json.dumps({
    "version": pynq.__version__,
    "xrt_source": inspect.getsource(xrt),
    "signatures": {
        name: str(inspect.signature(getattr(xrt_device.XrtDevice, name)))
        for name in ("_handle_events", "allocate_bo", "map_bo", "get_device_address", "flush", "invalidate")
    } | {"_free_bo": str(inspect.signature(xrt_device._free_bo))},
    "wait_handle": inspect.getsource(xrt_device.ErtWaitHandle),
    "memories": sorted(_complete_description({}, {}, False, {"DDR[0]": {"used": 1}, "bank1": {"used": 1}},
                                             None, None)["memories"]),
}))
"""


@pytest.fixture(scope="module")
def real_pynq():
    """pynq 3.0.1 read in its own process, without XILINX_XRT: nothing of the stand-in below it."""
    environment = {k: v for k, v in os.environ.items() if k != "XILINX_XRT"}
    result = subprocess.run(
        [sys.executable, "-c", READ_REAL_PYNQ], capture_output=True, text=True, check=True, env=environment
    )
    return json.loads(result.stdout)


def _library_calls(source):
    """{function: argument count} of every libc.NAME(...) call pynq/_3rdparty/xrt.py makes."""
    calls = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "libc":
                calls[node.func.attr] = len(node.args)
    return calls


def test_the_libxrt_standin_defines_only_what_pynq_calls_with_its_arity(real_pynq):
    assert real_pynq["version"] == "3.0.1"
    calls = _library_calls(real_pynq["xrt_source"])
    for function in standin_libxrt.FUNCTIONS:
        assert function.__name__ in calls, f"pynq 3.0.1 never calls {function.__name__}"
        assert len(inspect.signature(function).parameters) == calls[function.__name__], function.__name__


def test_the_pynq_internals_the_driver_uses_are_in_pynq_3_0_1(real_pynq):
    """Beyond PYNQ's public API the driver pumps events, allocates and syncs buffer objects itself and
    reads a run's outcome from its wait handle (host/pynq_driver.py says why)."""
    assert real_pynq["signatures"] == {
        "_handle_events": "(self, timeout=0)",
        "allocate_bo": "(self, size, idx, cacheable)",
        "map_bo": "(self, bo)",
        "get_device_address": "(self, bo)",
        "flush": "(self, bo, offset, ptr, size)",
        "invalidate": "(self, bo, offset, ptr, size)",
        "_free_bo": "(device, bo, ptr, length)",
    }
    assert "self._future.set_exception(" in real_pynq["wait_handle"] and "def done(self)" in real_pynq["wait_handle"]


def test_memory_names_are_the_ones_pynq_gives(real_pynq):
    assert real_pynq["memories"] == ["DDR0", "bank1"]
    assert [memory_attribute(name) for name in ("DDR[0]", "bank1")] == real_pynq["memories"]


def test_the_libxrt_standin_refuses_what_the_library_would():
    library = standin_libxrt.Library()
    with pytest.raises(AttributeError, match="undefined symbol: xclDebugReadIPStatus"):
        library.xclDebugReadIPStatus  # noqa: B018 — declared by pynq, not stood in
    library.xclProbe.argtypes = []
    with pytest.raises(TypeError, match="takes 0 argument"):
        library.xclProbe(0)
