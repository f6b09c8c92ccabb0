"""Reads the Python surface XRT's binding `pyxrt` exposes from its source, src/python/pybind11/src/pyxrt.cpp.

Run once per XRT revision against a clone of Xilinx/XRT to refresh tests/host/pyxrt_surface.json:
    python tests/support/pyxrt_surface.py XRT_CLONE 202210.2.13.466 master > tests/host/pyxrt_surface.json
The tests only read the stored table; they never need XRT.
"""

import json
import re
import subprocess
import sys

SOURCE = "src/python/pybind11/src/pyxrt.cpp"
DECLARATION = re.compile(r"py::(class_|enum_)<[^;]*?>\s*(\w+)?\s*\(\s*(\w+)\s*,\s*\"(\w+)\"")
VECTOR = re.compile(r"py::bind_vector<[^;]*?>\s*\(\s*(\w+)\s*,\s*\"(\w+)\"")
SUBMODULE = re.compile(r"py::module_\s+(\w+)\s*=\s*(\w+)\.def_submodule\(\s*\"(\w+)\"")
# A constructor: py::init<T1, T2>() or py::init([](T1 a, T2 b) {...}).
INIT = r"py::init\s*(?:<(?P<{0}types>[^;()]*?)>\s*\(\s*\)|\(\s*\[[^\]]*\]\s*\((?P<{0}params>[^)]*)\))"
TOKEN = re.compile(
    r"py::(?P<kind>class_|enum_)<[^;]*?>\s*(?P<var>\w+)?\s*\(\s*(?P<parent>\w+)\s*,\s*\"(?P<name>\w+)\""
    r"|py::bind_vector<[^;]*?>\s*\(\s*(?P<vparent>\w+)\s*,\s*\"(?P<vname>\w+)\""
    r"|\b(?P<target>\w+)\s*\.\s*(?P<call>def|attr|value|def_static)\s*\(\s*(?:\"(?P<tname>\w+)\"|"
    + INIT.format("t")
    + ")"
    r"|\.\s*def\s*\(\s*" + INIT.format("c") + ""
    r"|\.\s*(?P<chain>def|value|def_static)\s*\(\s*\"(?P<cname>\w+)\""
    r"|\.\s*(?P<export>export_values)\s*\("
)
# C++ parameter types as the Python values pybind11 converts to them.
PYTHON_TYPES = {"std::string": "str", "char": "str", "unsigned int": "int", "int": "int", "size_t": "int"}
PYTHON_TYPES["xrt::memory_group"] = "int"


def surface(source):
    """{"functions", "attributes", "classes": {path: [names]}, "enums": {path: {"values", "exported"}},
    "constructors": {path: ["type, type", ...]}}: a constructor as the Python types of its arguments."""
    source = re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)
    paths: dict[str, str | None] = {"m": None}
    for variable, _, name in SUBMODULE.findall(source):  # first: classes are declared in submodules
        paths[variable] = name
    for variable, parent, name in ((m[2], m[3], m[4]) for m in DECLARATION.finditer(source) if m[2]):
        paths[variable] = _join(paths.get(parent), name)
    result: dict = {"functions": set(), "attributes": set(), "classes": {}, "enums": {}, "constructors": {}}
    for name in paths.values():
        if name and "." not in name and name not in (m[4] for m in DECLARATION.finditer(source)):
            result["classes"].setdefault(name, set())  # a submodule: holds classes, binds nothing itself
    current = current_path = None
    for match in TOKEN.finditer(source):
        constructor = _constructor(match, "t")
        constructor = _constructor(match, "c") if constructor is None else constructor
        if match["kind"]:
            path = _join(paths.get(match["parent"]), match["name"])
            current_path = path
            if match["kind"] == "class_":
                current = result["classes"].setdefault(path, set())
            else:
                current = result["enums"].setdefault(path, {"values": set(), "exported": False})
        elif match["vname"]:
            result["classes"][_join(paths.get(match["vparent"]), match["vname"])] = {
                "__getitem__",
                "__iter__",
                "__len__",
            }
            current = None
        elif match["target"]:
            if match["target"] == "m":
                current = None
                if match["tname"]:
                    result["functions" if match["call"] == "def" else "attributes"].add(match["tname"])
                continue
            path = current_path = paths.get(match["target"])
            if path is None:
                current = None
                continue
            current = result["enums"][path] if path in result["enums"] else result["classes"].setdefault(path, set())
            if match["tname"]:
                _add(current, match["tname"])
            elif constructor is not None:
                result["constructors"].setdefault(path, set()).add(constructor)
        elif constructor is not None and isinstance(current, set):
            result["constructors"].setdefault(current_path, set()).add(constructor)
        elif match["cname"] and current is not None:
            _add(current, match["cname"])
        elif match["export"] and isinstance(current, dict):
            current["exported"] = True
    return {
        "functions": sorted(result["functions"]),
        "attributes": sorted(result["attributes"]),
        "classes": {path: sorted(names) for path, names in sorted(result["classes"].items())},
        "enums": {
            path: {"values": sorted(enum["values"]), "exported": enum["exported"]}
            for path, enum in sorted(result["enums"].items())
        },
        "constructors": {path: sorted(signatures) for path, signatures in sorted(result["constructors"].items())},
    }


def _constructor(match, prefix):
    """The Python argument types of a py::init match ("" for none), or None when it is no constructor."""
    types, params = match[f"{prefix}types"], match[f"{prefix}params"]
    if types is None and params is None:
        return None
    if types is not None:
        declared = [t for t in types.split(",") if t.strip()]
    else:  # a lambda's parameters: drop each one's name
        declared = [re.sub(r"\w+\s*$", "", p.partition("=")[0]) for p in params.split(",") if p.strip()]
    return ", ".join(_python_type(t) for t in declared)


def _python_type(cpp):
    """`const xrt::hw_context&` -> hw_context, `const std::string&` -> str, `xrt::bo::flags` -> bo.flags."""
    cpp = re.sub(r"\bconst\b|[&*]", " ", cpp)
    cpp = " ".join(cpp.split())
    if cpp in PYTHON_TYPES:
        return PYTHON_TYPES[cpp]
    return cpp.removeprefix("xrt::").replace("::", ".")


def _join(parent, name):
    return name if parent is None else f"{parent}.{name}"


def _add(target, name):
    if isinstance(target, dict):
        (target["values"] if not name.startswith("__") else target.setdefault("methods", set())).add(name)
    else:
        target.add(name)


def main(clone, revisions):
    def git(*args):
        return subprocess.run(["git", "-C", clone, *args], capture_output=True, text=True, check=True).stdout

    table = {}
    for revision in revisions:
        commit = git("rev-parse", f"{revision}^{{commit}}").strip()
        table[revision] = {"xrt_commit": commit, "source": SOURCE, **surface(git("show", f"{commit}:{SOURCE}"))}
    print(json.dumps(table, indent=1, default=sorted))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
