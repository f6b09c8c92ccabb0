"""RECORDING STAND-IN for XRT's Python binding `pyxrt` — not XRT, and no hardware is involved.

`module()` is what tests put in sys.modules["pyxrt"]: it exposes exactly the names (and constructor
signatures) pyxrt.cpp binds in every XRT release the table tests/host/pyxrt_surface.json was read from,
and nothing else, so a driver that calls anything outside that surface fails with AttributeError or
pybind11's TypeError; `module(revision)` exposes one release's surface (e.g. "master", with
hw_context). Bound names this stand-in does not model raise NotImplementedError. Every call faast makes
is recorded in CALLS, and the "card" does real work: a run executes the C-simulation build of the same
kernel top, on a card thread, on the stand-in's *device-side* memory. Host and device memory are
separate, so a driver that forgets a sync gets wrong answers; runs complete asynchronously, as on a
card. As XRT does, a run object that is dropped gives its command back to the card's cache while the
card may still own it (xrt_kernel.cpp, ~kernel_command), and a buffer outside the bank of its kernel
argument is run on as a copy in the connected bank (validate_bo_at_index), so its outputs never return.

Cards are configured with `install(cards)`: dicts {"name": shell, "bdf": ..., "present": bool,
"hang": CU names that never complete, "slow": {CU name: seconds its next runs take first}, "corrupt":
CU names whose runs flip the lowest bit of their first output word (as a card that computes wrong
does), and what `get_info` answers for "thermal", "electrical", "mechanical", "platform": the JSON
objects XRT's sensor.cpp and info_platform.cpp write (boost's write_json: every value a string)}. A
fake xclbin is a JSON file: {"platform", "kernel", "cus": [...], "library": csim.so, "weights": dir,
and optionally "groups": {CU: [memory group of each kernel argument]}, else each CU's arguments in
its own bank}.
"""

import ctypes
import json
import threading
import time
import types
import weakref
from pathlib import Path

import numpy as np

CALLS: list[tuple] = []
CARDS: list[dict] = []
SURFACE_TABLE = Path(__file__).parents[1] / "host" / "pyxrt_surface.json"


def install(cards):
    CALLS.clear()
    CARDS[:] = [
        {"present": True, "hang": set(), "corrupt": set(), "bdf": f"0000:{0x65 + i:02x}:00.1", **c}
        for i, c in enumerate(cards)
    ]


def surface(revision=None):
    """One recorded release's surface, or (None) what every recorded release binds: their intersection."""
    table = json.loads(SURFACE_TABLE.read_text())
    if revision is not None:
        return {key: table[revision][key] for key in ("functions", "attributes", "classes", "enums", "constructors")}
    first, *rest = table.values()
    return {
        "functions": sorted(set(first["functions"]).intersection(*(r["functions"] for r in rest))),
        "attributes": sorted(set(first["attributes"]).intersection(*(r["attributes"] for r in rest))),
        "classes": {
            path: sorted(set(names).intersection(*(r["classes"][path] for r in rest)))
            for path, names in first["classes"].items()
            if all(path in r["classes"] for r in rest)
        },
        "enums": {
            path: {
                "values": sorted(set(enum["values"]).intersection(*(r["enums"][path]["values"] for r in rest))),
                "exported": enum["exported"] and all(r["enums"][path]["exported"] for r in rest),
            }
            for path, enum in first["enums"].items()
            if all(path in r["enums"] for r in rest)
        },
        "constructors": {
            path: sorted(set(signatures).intersection(*(r["constructors"].get(path, []) for r in rest)))
            for path, signatures in first["constructors"].items()
        },
    }


def load_kernel(spec):
    """The fake card's kernel: the C-simulation library's top function, weights set."""
    library = ctypes.CDLL(spec["library"])
    library.faast_set_weights_dir(spec["weights"].encode())
    top = getattr(library, spec["kernel"])
    top.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return top


class _Enum:
    """A pybind11 enum value: compares by identity, prints as Enum.VALUE."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return self._name


def _enum(path, values):
    return type(path.rsplit(".", 1)[-1], (), {"__slots__": (), **{v: _Enum(f"{path}.{v}") for v in values}})


_STATE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()  # objects carry no extra names


def _state(obj):
    return _STATE[obj]


def _card(index):
    if index >= len(CARDS) or not CARDS[index]["present"]:
        raise RuntimeError(f"Could not open device with index '{index}'")
    return CARDS[index]


def _not_modeled(name):
    def method(*args, **kwargs):
        raise NotImplementedError(f"the pyxrt stand-in does not model {name}")

    method.__name__ = name.rsplit(".", 1)[-1]
    return method


def _accepts(type_name, value, classes):
    """Whether pybind11 would convert `value` to a constructor argument of `type_name` (the table's
    Python names: str, int, a class path, an enum path)."""
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, _Enum)
    if isinstance(value, _Enum):
        return value._name.rpartition(".")[0] == type_name
    return type_name in classes and isinstance(value, classes[type_name])


def module(revision=None):
    """A fresh `pyxrt` holding exactly the surface of `revision` (None: what every recorded release binds)."""
    bound = surface(revision)
    enums = {path: _enum(path, enum["values"]) for path, enum in bound["enums"].items()}
    sync = enums["xclBOSyncDirection"]
    states = enums["ert_cmd_state"]
    info = enums["xrt_info_device"]
    classes: dict[str, type] = {}

    def constructor(path, args):
        """The bound signature `args` match, as pybind11 picks an overload; its TypeError otherwise."""
        for signature in bound["constructors"].get(path, []):
            types_ = signature.split(", ") if signature else []
            if len(types_) == len(args) and all(_accepts(t, a, classes) for t, a in zip(types_, args, strict=True)):
                return signature
        raise TypeError(f"__init__(): incompatible constructor arguments for pyxrt.{path}: {args!r}")

    class uuid:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            constructor("uuid", args)
            _STATE[self] = {"text": args[0]}

        def to_string(self):
            return _state(self)["text"]

    class xclbinkernel:
        __slots__ = ("__weakref__",)

        def get_name(self):
            return _state(self)["name"]

        def get_num_args(self):
            return 3

    class xclbin:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            constructor("xclbin", args)
            CALLS.append(("xclbin", Path(args[0]).name))
            spec = json.loads(Path(args[0]).read_text())
            _STATE[self] = {"path": args[0], "spec": spec}

        def get_xsa_name(self):
            return _state(self)["spec"]["platform"]

        def get_kernels(self):
            kernel = xclbinkernel()
            _STATE[kernel] = {"name": _state(self)["spec"]["kernel"]}
            return [kernel]

        def get_uuid(self):
            return uuid(f"uuid-of-{Path(_state(self)['path']).name}")

    class device:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            constructor("device", args)
            CALLS.append(("device", args[0]))
            _STATE[self] = {"index": args[0], "card": _card(args[0]), "image": None, "registered": {}}

        def get_info(self, key):
            card = _state(self)["card"]
            if key is info.name:
                return card["name"]
            if key is info.bdf:
                return card["bdf"]
            if key in (info.thermal, info.electrical, info.mechanical, info.platform):
                if not card["present"]:
                    raise RuntimeError("get_info: device is gone")
                return json.dumps(card.get(repr(key).rpartition(".")[2], NO_SENSORS[repr(key).rpartition(".")[2]]))
            raise NotImplementedError(f"the pyxrt stand-in does not model get_info({key})")

        def load_xclbin(self, image):
            state = _state(self)
            if isinstance(image, str):
                image = xclbin(image)
            CALLS.append(("load_xclbin", state["index"], Path(_state(image)["path"]).name))
            if not state["card"]["present"]:
                raise RuntimeError("load_xclbin: device is gone")
            state["image"] = image
            return image.get_uuid()

        def register_xclbin(self, image):
            state = _state(self)
            CALLS.append(("register_xclbin", state["index"], Path(_state(image)["path"]).name))
            registered = image.get_uuid()
            state["registered"][registered.to_string()] = image
            return registered

        def get_xclbin_uuid(self):
            image = _state(self)["image"]
            return image.get_uuid() if image is not None else uuid("00000000-0000-0000-0000-000000000000")

    class hw_context:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            signature = constructor("hw_context", args)
            if signature != "device, uuid":
                raise NotImplementedError(f"the pyxrt stand-in does not model hw_context({signature})")
            dev, registered = args
            state = _state(dev)
            CALLS.append(("hw_context", state["index"], registered.to_string()))
            if not state["card"]["present"]:
                raise RuntimeError("hw_context: device is gone")
            state["image"] = state["registered"][registered.to_string()]  # the context loads it
            _STATE[self] = {"device": dev}

    class bo:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            signature = constructor("bo", args)
            if signature != "device, int, bo.flags, int":
                raise NotImplementedError(f"the pyxrt stand-in does not model bo({signature})")
            dev, nbytes, _, group = args
            CALLS.append(("bo", _state(dev)["index"], nbytes, group))
            _STATE[self] = {
                "card": _state(dev)["card"],
                "group": group,
                "host": np.zeros(nbytes, np.uint8),
                "device": np.zeros(nbytes, np.uint8),
            }

        def map(self):
            return memoryview(_state(self)["host"])

        def size(self):
            return len(_state(self)["host"])

        def sync(self, direction, size=None, offset=0):
            state = _state(self)
            size = len(state["host"]) if size is None else size
            CALLS.append(("sync", repr(direction).split("XCL_BO_SYNC_BO_")[-1].lower(), id(self), size))
            if not state["card"]["present"]:
                raise RuntimeError("bo::sync: device is gone")
            if direction is sync.XCL_BO_SYNC_BO_TO_DEVICE:
                state["device"][offset : offset + size] = state["host"][offset : offset + size]
            elif direction is sync.XCL_BO_SYNC_BO_FROM_DEVICE:
                state["host"][offset : offset + size] = state["device"][offset : offset + size]
            else:
                raise NotImplementedError(f"the pyxrt stand-in does not model {direction}")

    class run:
        __slots__ = ("__weakref__",)

        def state(self):
            return _state(self)["state"]

        def wait(self, timeout_ms=0):
            CALLS.append(("wait", timeout_ms))
            command = _state(self)
            command["done"].wait(timeout_ms / 1000 if timeout_ms else None)
            return self.state() if command["done"].is_set() else states.ERT_CMD_STATE_TIMEOUT

    class kernel:
        __slots__ = ("__weakref__",)

        def __init__(self, *args):
            signature = constructor("kernel", args)
            if signature == "hw_context, str":
                dev, name = _state(args[0])["device"], args[1]
                CALLS.append(("kernel", _state(dev)["index"], name))
            else:
                dev, _, name, *mode = args
                CALLS.append(("kernel", _state(dev)["index"], name, *mode))
            state = _state(dev)
            spec = _state(state["image"])["spec"]
            top, _, cu = name.partition(":")
            cu = cu.strip("{}")
            if top != spec["kernel"] or (cu and cu not in spec["cus"]):
                raise RuntimeError(f"No compute units matching '{name}'")
            _STATE[self] = {
                "device": dev,
                "name": name,
                "cu": cu,
                "top": load_kernel(spec),
                "spec": spec,
                "queue": threading.Lock(),
            }

        def group_id(self, argument):
            state = _state(self)
            spec, cu = state["spec"], state["cu"]
            return spec["groups"][cu][argument] if "groups" in spec else spec["cus"].index(cu)

        def __call__(self, inputs, outputs, rows):
            state = _state(self)
            card = _state(state["device"])["card"]
            CALLS.append(("start", _state(state["device"])["index"], state["name"], id(inputs), id(outputs), rows))
            cache = card.setdefault("command_cache", [])
            command = cache.pop() if cache else {}  # XRT reuses a dropped run's command buffer
            command.update(state=states.ERT_CMD_STATE_SUBMITTED, done=threading.Event())
            execution = run()
            _STATE[execution] = command

            def release():
                if command["state"] is not states.ERT_CMD_STATE_COMPLETED:
                    CALLS.append(("command released while on the card", state["name"]))
                cache.append(command)

            weakref.finalize(execution, release)
            if not card["present"]:
                raise RuntimeError("kernel start: device is gone")
            arguments = []
            for index, buffer in enumerate((inputs, outputs)):
                if _state(buffer)["group"] == self.group_id(index):
                    arguments.append(_state(buffer)["device"])
                else:  # XRT warns and runs on a copy in the connected bank
                    CALLS.append(("copy to connected bank", state["name"], index))
                    arguments.append(_state(buffer)["device"].copy())
            if state["cu"] in card["hang"]:
                return execution

            def execute():
                with state["queue"]:  # a CU runs its queued commands one at a time, as the card's ERT does
                    delays = card.get("slow", {}).get(state["cu"], [])
                    time.sleep(delays.pop(0) if delays else 0)
                    state["top"](arguments[0].ctypes.data, arguments[1].ctypes.data, rows)
                    if state["cu"] in card["corrupt"]:
                        arguments[1][0] ^= 1
                    CALLS.append(("done", state["name"], id(inputs)))
                command["state"] = states.ERT_CMD_STATE_COMPLETED  # whichever run holds the command now
                command["done"].set()

            threading.Thread(target=execute, daemon=True).start()
            return execution

    modeled = {"uuid": uuid, "xclbin": xclbin, "device": device, "bo": bo, "run": run, "kernel": kernel}
    modeled |= {"hw_context": hw_context, "xclbin.xclbinkernel": xclbinkernel}
    pyxrt = types.ModuleType("pyxrt", "RECORDING STAND-IN of pyxrt (tests/support/recording_pyxrt.py)")
    pyxrt.XCL_BO_FLAGS_NONE = 0  # type: ignore[attr-defined]
    for name in bound["functions"]:
        setattr(pyxrt, name, _not_modeled(name))
    for path, names in bound["classes"].items():
        cls = modeled.get(path) or type(path.rsplit(".", 1)[-1], (), {"__slots__": ("__weakref__",)})
        for name in [n for n in vars(cls) if not n.startswith("_") and n not in names]:
            delattr(cls, name)  # modeled for another release
        for name in names:
            if not hasattr(cls, name):
                setattr(cls, name, _not_modeled(f"{path}.{name}"))
        classes[path] = cls
        parent, _, leaf = path.rpartition(".")
        setattr(getattr(pyxrt, parent) if parent else pyxrt, leaf, cls)
    for path, enum in bound["enums"].items():
        parent, _, leaf = path.rpartition(".")
        owner = getattr(pyxrt, parent) if parent else pyxrt
        setattr(owner, leaf, enums[path])
        if enum["exported"]:
            for value in enum["values"]:
                setattr(owner, value, getattr(enums[path], value))
    return pyxrt


# What get_info answers for a card whose sensors report nothing (sensor.cpp's "Information unavailable"
# when the data-driven query is empty; read_electrical's empty tree; a platform without clocks).
NO_SENSORS = {
    "thermal": {"thermals": {"error_msg": "Information unavailable"}},
    "mechanical": {"fans": {"error_msg": "Information unavailable"}},
    "electrical": {},
    "platform": {"platforms": [{}]},
}


def exposed(pyxrt, revision=None):
    """The public names a pyxrt module object exposes, in the table's shape, for the surface test."""
    bound = surface(revision)

    def names(obj, path):
        nested = {n for n in bound["classes"] | bound["enums"] if n.startswith(f"{path}.")}
        leaves = {n.rsplit(".", 1)[-1] for n in nested}
        exported = {
            v for p, e in bound["enums"].items() if e["exported"] and p.rpartition(".")[0] == path for v in e["values"]
        }
        public = {
            n for n in vars(obj) if not n.startswith("_") or n in ("__call__", "__getitem__", "__iter__", "__len__")
        }
        return sorted(public - leaves - exported)

    return {
        "functions": sorted(
            n
            for n in vars(pyxrt)
            if callable(getattr(pyxrt, n)) and not isinstance(getattr(pyxrt, n), type) and not n.startswith("_")
        ),
        "attributes": sorted(n for n in vars(pyxrt) if isinstance(getattr(pyxrt, n), int)),
        "classes": {path: names(_resolve(pyxrt, path), path) for path in bound["classes"]},
        "enums": {
            path: {
                "values": sorted(n for n in vars(_resolve(pyxrt, path)) if not n.startswith("_")),
                "exported": all(
                    hasattr(_resolve(pyxrt, path.rpartition(".")[0]) if "." in path else pyxrt, v) for v in e["values"]
                ),
            }
            for path, e in bound["enums"].items()
        },
        "top_level": sorted(n for n in vars(pyxrt) if not n.startswith("_")),
    }


def _resolve(pyxrt, path):
    obj = pyxrt
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
