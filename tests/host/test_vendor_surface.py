"""The stand-ins are only as good as their fidelity: pyxrt's against the table of names XRT's own
pyxrt.cpp binds (tests/host/pyxrt_surface.json, with the XRT commits it was read from), pynq's
against the real pynq 3.0.1 package the test extra installs. No hardware is involved."""

import inspect
import json
import re
import subprocess
import sys
import textwrap

import pytest
from support import pyxrt_surface, recording_pynq, recording_pyxrt

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
import importlib, pynq
from pynq.overlay import _complete_description

def resolve(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)

def source(cls):
    text = ""
    for c in cls.__mro__:
        try:
            text += inspect.getsource(c) if c.__module__.startswith("pynq") else ""
        except OSError:  # a namedtuple has no class statement
            pass
    return text

def describe(obj):
    if not isinstance(obj, type):
        return {"signature": str(inspect.signature(obj))}
    names = {}
    for cls in obj.__mro__:
        if cls.__module__.startswith("pynq") or cls.__module__ == "collections":
            for name, value in vars(cls).items():
                if callable(value) and not isinstance(value, type):
                    names.setdefault(name, str(inspect.signature(value)))
                else:
                    names.setdefault(name, type(value).__name__)
    for name, value in vars(type(obj)).items():
        if isinstance(value, property):
            names.setdefault(name, "metaclass property")
    return {"names": names, "source": source(obj) if obj.__module__.startswith("pynq") else ""}

print(json.dumps({
    "version": pynq.__version__,
    "objects": {dotted: describe(resolve(dotted)) for dotted in json.loads(sys.argv[1])},
    "memories": sorted(_complete_description({}, {}, False, {"DDR[0]": {"used": 1}, "bank1": {"used": 1}},
                                             None, None)["memories"]),
}))
"""


@pytest.fixture(scope="module")
def real_pynq():
    """pynq 3.0.1 read in its own process (it patches asyncio on import; faast's tests stay clean)."""
    result = subprocess.run(
        [sys.executable, "-c", READ_REAL_PYNQ, json.dumps(list(recording_pynq.REAL_NAMES))],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def _own_names(cls):
    skip = set(vars(object)) | set(vars(recording_pynq._Strict)) | {"__dict__", "__weakref__", "__module__"}
    if issubclass(cls, tuple):
        return {name: "" for name in cls._fields}
    return {name: value for name, value in vars(cls).items() if name not in skip and not name.startswith("_")}


def _instance_attributes(cls):
    """Public attributes the stand-in sets in __init__ (self.x = …)."""
    if "__init__" not in vars(cls):
        return set()
    return set(re.findall(r"self\.([a-z]\w*) =", inspect.getsource(cls.__init__)))


def test_the_pynq_standin_offers_only_what_pynq_3_0_1_has_with_the_same_signatures(real_pynq):
    assert real_pynq["version"] == "3.0.1"
    for dotted, standin in recording_pynq.REAL_NAMES.items():
        real = real_pynq["objects"][dotted]
        if not isinstance(standin, type):
            assert str(inspect.signature(standin)) == real["signature"], dotted
            continue
        for name, value in _own_names(standin).items():
            if name == "start":  # DefaultIP.start is PYNQ's _start_ert on an ERT-scheduled card
                name = "_start_ert"
            assert name in real["names"], f"{dotted}.{name} is not in pynq 3.0.1"
            if callable(value) and not isinstance(value, type):
                assert str(inspect.signature(value)) == real["names"][name], f"{dotted}.{name}"
        for name in _instance_attributes(standin):
            assigned = re.search(rf"self\.{name}\s*[=,)]", real["source"])  # self.x = …, or (…, self.x) = …
            assert name in real["names"] or assigned, f"{dotted}: instance .{name}"
    assert real_pynq["objects"]["pynq.Device"]["names"]["devices"] == "metaclass property"
    assert "done" in real_pynq["objects"]["pynq.pl_server.xrt_device.ErtWaitHandle"]["names"]


def test_memory_names_are_the_ones_pynq_gives(real_pynq):
    assert real_pynq["memories"] == ["DDR0", "bank1"]
    assert [memory_attribute(name) for name in ("DDR[0]", "bank1")] == real_pynq["memories"]


def test_the_pynq_standin_refuses_names_it_does_not_have():
    pynq = recording_pynq.module()
    with pytest.raises(AttributeError):
        pynq.Device.active_device  # noqa: B018 — real, but not modeled: refused rather than faked
    handle = recording_pynq.ErtWaitHandle(recording_pynq._Run(None))
    with pytest.raises(AttributeError):
        handle.result  # noqa: B018
    assert handle.done is False  # nothing pumped its events: a poll on `done` would wait forever
