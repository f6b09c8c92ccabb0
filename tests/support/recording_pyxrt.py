"""RECORDING STAND-IN for XRT's Python binding `pyxrt` — not XRT, and no hardware is involved.

`module()` is what tests put in sys.modules["pyxrt"]: it exposes exactly the names pyxrt.cpp binds in
every XRT release the table tests/host/pyxrt_surface.json was read from (XRT 2022.1 and master), and
nothing else, so a driver that calls anything outside that surface fails with AttributeError. Bound
names this stand-in does not model raise NotImplementedError. Every call faast makes is recorded in
CALLS, and the "card" does real work: a run executes the C-simulation build of the same kernel top, on
a card thread, on the stand-in's *device-side* memory. Host and device memory are separate, so a
driver that forgets a sync gets wrong answers; runs complete asynchronously, as on a card.

Cards are configured with `install(cards)`: dicts {"name": shell, "bdf": ..., "present": bool,
"hang": set of CU names that never complete, "corrupt": set of CU names whose runs flip the lowest
bit of their first output word, as a card that computes wrong does}. A fake xclbin is a JSON file:
{"platform", "kernel", "cus": [...], "library": csim.so, "weights": dir}.
"""

import ctypes
import json
import threading
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


def common_surface():
    """What every recorded XRT release binds: the table's revisions intersected."""
    revisions = list(json.loads(SURFACE_TABLE.read_text()).values())
    first, *rest = revisions
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


def module():
    """A fresh `pyxrt` holding exactly the common surface."""
    surface = common_surface()
    enums = {path: _enum(path, enum["values"]) for path, enum in surface["enums"].items()}
    sync = enums["xclBOSyncDirection"]
    states = enums["ert_cmd_state"]
    info = enums["xrt_info_device"]

    class uuid:
        __slots__ = ("__weakref__",)

        def __init__(self, text):
            _STATE[self] = {"text": text}

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

        def __init__(self, path):
            CALLS.append(("xclbin", Path(path).name))
            spec = json.loads(Path(path).read_text())
            _STATE[self] = {"path": path, "spec": spec}

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

        def __init__(self, index):
            CALLS.append(("device", index))
            _STATE[self] = {"index": index, "card": _card(index), "image": None}

        def get_info(self, key):
            card = _state(self)["card"]
            if key is info.name:
                return card["name"]
            if key is info.bdf:
                return card["bdf"]
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

        def get_xclbin_uuid(self):
            return _state(self)["image"].get_uuid()

    class bo:
        __slots__ = ("__weakref__",)

        def __init__(self, dev, nbytes, flags, group):
            CALLS.append(("bo", _state(dev)["index"], nbytes, group))
            _STATE[self] = {
                "card": _state(dev)["card"],
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
            done = _state(self)["done"]
            done.wait(timeout_ms / 1000 if timeout_ms else None)
            return self.state() if done.is_set() else states.ERT_CMD_STATE_TIMEOUT

    class kernel:
        __slots__ = ("__weakref__",)

        def __init__(self, dev, xclbin_uuid, name, mode):
            state = _state(dev)
            CALLS.append(("kernel", state["index"], name, mode))
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
            return state["spec"]["cus"].index(state["cu"])  # CU n's bank

        def __call__(self, inputs, outputs, rows):
            state = _state(self)
            card = _state(state["device"])["card"]
            CALLS.append(("start", _state(state["device"])["index"], state["name"], id(inputs), id(outputs), rows))
            execution = run()
            done = threading.Event()
            _STATE[execution] = {"state": states.ERT_CMD_STATE_SUBMITTED, "done": done}
            if not card["present"]:
                raise RuntimeError("kernel start: device is gone")
            if state["cu"] in card["hang"]:
                return execution

            def execute():
                with state["queue"]:  # a CU runs its queued commands one at a time, as the card's ERT does
                    state["top"](_state(inputs)["device"].ctypes.data, _state(outputs)["device"].ctypes.data, rows)
                    if state["cu"] in card["corrupt"]:
                        _state(outputs)["device"][0] ^= 1
                    CALLS.append(("done", state["name"], id(inputs)))
                _STATE[execution]["state"] = states.ERT_CMD_STATE_COMPLETED
                done.set()

            threading.Thread(target=execute, daemon=True).start()
            return execution

    modeled = {"uuid": uuid, "xclbin": xclbin, "device": device, "bo": bo, "run": run, "kernel": kernel}
    modeled["xclbin.xclbinkernel"] = xclbinkernel
    pyxrt = types.ModuleType("pyxrt", "RECORDING STAND-IN of pyxrt (tests/support/recording_pyxrt.py)")
    pyxrt.XCL_BO_FLAGS_NONE = 0  # type: ignore[attr-defined]
    for path, names in surface["classes"].items():
        cls = modeled.get(path) or type(path.rsplit(".", 1)[-1], (), {"__slots__": ("__weakref__",)})
        for name in names:
            if not hasattr(cls, name):
                setattr(cls, name, _not_modeled(f"{path}.{name}"))
        parent, _, leaf = path.rpartition(".")
        setattr(getattr(pyxrt, parent) if parent else pyxrt, leaf, cls)
    for path, enum in surface["enums"].items():
        parent, _, leaf = path.rpartition(".")
        owner = getattr(pyxrt, parent) if parent else pyxrt
        setattr(owner, leaf, enums[path])
        if enum["exported"]:
            for value in enum["values"]:
                setattr(owner, value, getattr(enums[path], value))
    return pyxrt


def exposed(pyxrt):
    """The public names a pyxrt module object exposes, in the table's shape, for the surface test."""
    surface = common_surface()
    exported = {v for path, e in surface["enums"].items() if e["exported"] for v in e["values"]}

    def names(obj, path):
        nested = {n for n in surface["classes"] | surface["enums"] if n.startswith(f"{path}.")}
        leaves = {n.rsplit(".", 1)[-1] for n in nested}
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
        "classes": {path: names(_resolve(pyxrt, path), path) for path in surface["classes"]},
        "enums": {
            path: {
                "values": sorted(n for n in vars(_resolve(pyxrt, path)) if not n.startswith("_")),
                "exported": all(
                    hasattr(_resolve(pyxrt, path.rpartition(".")[0]) if "." in path else pyxrt, v) for v in e["values"]
                ),
            }
            for path, e in surface["enums"].items()
        },
        "top_level": sorted(n for n in vars(pyxrt) if not n.startswith("_")),
    }


def _resolve(pyxrt, path):
    obj = pyxrt
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
