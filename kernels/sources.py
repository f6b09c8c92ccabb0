"""What `faast build` / `faast validate` were given: a kernel folder, an hls4ml YAML configuration, a
Keras model (tf_keras / QKeras, or Keras 3), an ONNX / QONNX model or an hls4ml project, and which
conversion child handles it.

Reading a source needs no toolchain (no TensorFlow, Keras or hls4ml): the build's own process and
the server identify sources; the conversion child (kernels/convert.py, kernels/convert_keras3.py)
converts them. Every refusal is a `SourceError` with a one-line message.
"""

import json
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .spec import KernelSpec

KINDS = ("kernel", "hls4ml-yaml", "keras", "keras3", "onnx", "hls4ml-project")
PROJECT_CONFIG = "hls4ml_config.yml"  # the configuration hls4ml writes into every project
YAML_MODEL_KEYS = ("KerasJson", "KerasH5", "KerasModel", "OnnxModel")
YAML_PATH_KEYS = (*YAML_MODEL_KEYS, "InputData", "OutputPredictions")
HLS_CONFIG_KEYS = ("Model", "LayerType", "LayerName", "Flows", "Optimizers", "SkipOptimizers")
SERVED_BACKENDS = ("Vivado", "Vitis")  # their firmware is ap_types C++, which faast's kernel top and csim build


class SourceError(ValueError):
    """A source faast cannot take, with the one line that says why."""


@dataclass(frozen=True)
class Source:
    kind: str
    path: str  # absolute
    weights: str | None = None  # absolute; the weights of an architecture .json
    hls4ml_config: str | None = None  # absolute; HLSConfig overrides for keras, keras3 and onnx sources
    variant: str | None = None  # a kernel folder's [variants.<variant>]

    @property
    def converter(self):
        """The conversion child's module: Keras 3 models need real Keras 3 in their process, which the
        QKeras child (keras aliased to tf_keras) cannot have."""
        return "faast.kernels.convert_keras3" if self._keras3() else "faast.kernels.convert"

    def _keras3(self):
        if self.kind == "keras3":
            return True
        if self.kind == "hls4ml-yaml":
            config = read_yaml(self.path)
            model = config.get("KerasModel")
            return model is not None and is_keras3_file(resolve_yaml_path(config, "KerasModel", self.path))
        if self.kind == "hls4ml-project":
            model = project_config(self.path).get("KerasModel")
            return isinstance(model, str) and is_keras3_file(model)
        return False

    @property
    def default_name(self):
        """kernel.toml's name (its variant's, when one is built), an hls4ml project's ProjectName, else
        the file's (or folder's) stem; characters Triton names cannot carry become "_"."""
        if self.kind == "kernel":
            try:
                name = KernelSpec.read(self.path, self.variant).name
            except KeyError as error:  # a variant kernel.toml does not have
                raise SourceError(error.args[0]) from None
        elif self.kind == "hls4ml-project":
            name = read_yaml(Path(self.path) / PROJECT_CONFIG)["ProjectName"]
        else:
            name = Path(self.path).stem
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


def identify(path, weights=None, hls4ml_config=None, variant=None):
    """The Source at `path`, its kind told by what it is: a folder with kernel.toml (kernel), with
    hls4ml_config.yml and firmware/ (hls4ml-project) or saved_model.pb (keras: a SavedModel); a file
    .yml/.yaml (hls4ml-yaml), .h5 (keras: a whole model), .json (keras: an architecture, with
    `weights`), .keras (keras, or keras3 when Keras 3 saved it), .onnx (onnx)."""
    path = Path(path).resolve()
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    kind = _kind(path)
    if weights is not None:
        if path.suffix != ".json":
            raise SourceError(f"--weights goes with an architecture .json; {path.name} holds its own weights")
        weights = Path(weights).resolve()
        if not weights.is_file():
            raise SourceError(f"the weights file {weights} does not exist")
    elif path.suffix == ".json" and path.is_file():
        raise SourceError(f"{path.name} is a Keras architecture: give its weights with --weights FILE.h5")
    if variant is not None and kind != "kernel":
        raise SourceError(f"--variant selects a kernel folder's [variants.*]; {path} is a {kind} source")
    if hls4ml_config is not None:
        if kind not in ("keras", "keras3", "onnx"):
            where = {"kernel": "its kernel.toml", "hls4ml-yaml": "the YAML itself", "hls4ml-project": "the project"}
            raise SourceError(
                f"--hls4ml-config applies to Keras and ONNX models; a {kind} source's settings are {where[kind]}"
            )
        hls4ml_config = Path(hls4ml_config).resolve()
        read_hls_overrides(hls4ml_config)  # refused here rather than in the child
    if kind == "hls4ml-yaml":
        check_yaml(path)
    if kind == "hls4ml-project":
        check_project(path)
    return Source(kind, str(path), weights and str(weights), hls4ml_config and str(hls4ml_config), variant)


def _kind(path):
    if path.is_dir():
        if (path / "kernel.toml").is_file():
            return "kernel"
        if (path / PROJECT_CONFIG).is_file() and (path / "firmware").is_dir():
            return "hls4ml-project"
        if (path / "saved_model.pb").is_file():
            return "keras"
        raise SourceError(
            f"{path} is none of the folders faast builds: a kernel folder (kernel.toml), an hls4ml project"
            f" ({PROJECT_CONFIG} and firmware/) or a Keras SavedModel (saved_model.pb)"
        )
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return "hls4ml-yaml"
    if suffix in (".h5", ".hdf5", ".json"):
        return "keras"
    if suffix == ".keras":
        return "keras3" if is_keras3_file(path) else "keras"
    if suffix == ".onnx":
        return "onnx"
    raise SourceError(
        f"{path.name} is none of the models faast builds: an hls4ml YAML (.yml), a Keras model (.h5, .keras,"
        " an architecture .json with --weights, a SavedModel folder), an ONNX model (.onnx), a kernel folder"
        " or an hls4ml project folder"
    )


def is_keras3_file(path):
    """Whether Keras 3 saved this .keras archive (tf_keras writes the same format, as Keras 2)."""
    path = Path(path)
    if path.suffix != ".keras" or not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        version = json.loads(archive.read("metadata.json")).get("keras_version", "")
    return int(version.split(".")[0] or 0) >= 3


# -- hls4ml YAML configurations ---------------------------------------------------------------------


def read_yaml(path):
    """A YAML configuration as hls4ml's parse_yaml_config reads it, except that nothing is loaded: a
    `!keras_model PATH` stays the path, and the ONNX model hls4ml embeds in a project's configuration
    (a !!python/object ModelWrapper) stays its serialized bytes, under `OnnxModel`."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!keras_model", lambda loader, node: loader.construct_scalar(node))
    Loader.add_multi_constructor("tag:yaml.org,2002:python/", _embedded_onnx)
    path = Path(path)
    try:
        with path.open() as f:
            config = yaml.load(f, Loader=Loader)
    except yaml.YAMLError as error:
        raise SourceError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise SourceError(f"{path} holds no hls4ml configuration (a mapping of keys such as KerasH5 and HLSConfig)")
    return config


def _embedded_onnx(loader, suffix, node):
    """hls4ml dumps a project's qonnx ModelWrapper as Python objects: keep the model's bytes only."""
    import yaml

    value = loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else None
    return next(_bytes_in(value), None)


def _bytes_in(value):
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _bytes_in(item)


def resolve_yaml_path(config, key, yaml_path):
    """The file a YAML key names, found as hls4ml finds it (relative to the working directory) or
    else next to the YAML; a SourceError naming the key and path when it is in neither place."""
    yaml_path = Path(yaml_path)
    value = config[key]
    if not isinstance(value, str):
        raise SourceError(f"{yaml_path.name}: {key} should name a file, not {value!r}")
    given = Path(value).expanduser()
    for candidate in (given, yaml_path.parent / given):
        if candidate.exists():
            return candidate.resolve()
    if given.is_absolute():
        raise SourceError(f"{yaml_path.name}: {key} names {value}, which does not exist")
    raise SourceError(
        f"{yaml_path.name}: {key} names {value}, which is neither in the working directory ({Path.cwd()})"
        f" nor next to the YAML ({yaml_path.parent})"
    )


def resolved_yaml(path):
    """The YAML configuration with every file it names resolved (resolve_yaml_path) to an absolute path."""
    path = Path(path)
    config = read_yaml(path)
    for key in YAML_PATH_KEYS:
        if isinstance(config.get(key), str):
            config[key] = str(resolve_yaml_path(config, key, path))
    return config


def check_yaml(path):
    config = resolved_yaml(path)
    if "PytorchModel" in config:
        raise SourceError(f"{path.name} configures a PyTorch model; faast builds Keras and ONNX models")
    if not any(key in config for key in YAML_MODEL_KEYS):
        raise SourceError(f"{path.name} names no model: hls4ml reads one of {', '.join(YAML_MODEL_KEYS)}")
    if "KerasJson" in config and "KerasH5" not in config:
        raise SourceError(f"{path.name} gives KerasJson without KerasH5, the weights hls4ml reads with it")
    check_backend(config.get("Backend", "Vivado"), path.name)
    if not config.get("ProjectName"):
        raise SourceError(f"{path.name} sets no ProjectName (hls4ml names the C++ top function after it)")


def check_backend(backend, where):
    if str(backend).lower() not in (b.lower() for b in SERVED_BACKENDS):
        raise SourceError(f"{where} uses hls4ml's {backend} backend; faast builds {' and '.join(SERVED_BACKENDS)}")


def read_hls_overrides(path):
    """--hls4ml-config: a YAML or JSON file holding an HLSConfig mapping (Model / LayerType /
    LayerName ...) or a whole hls4ml configuration with HLSConfig (then its Backend, IOType, Part
    and ClockPeriod apply too). Returns (hls_config, top_level_settings)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"the --hls4ml-config file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SourceError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise SourceError(f"{path} holds no HLSConfig mapping")
    else:
        config = read_yaml(path)
    settings = {key: config[key] for key in ("Backend", "IOType", "Part", "ClockPeriod") if key in config}
    hls = config.get("HLSConfig", config if not settings else None)
    if not isinstance(hls, dict) or set(hls) - set(HLS_CONFIG_KEYS):
        unknown = sorted(set(hls) - set(HLS_CONFIG_KEYS)) if isinstance(hls, dict) else []
        raise SourceError(
            f"{path} is neither an HLSConfig mapping ({', '.join(HLS_CONFIG_KEYS)}) nor an hls4ml configuration"
            " with HLSConfig" + (f"; it has {', '.join(map(str, unknown))}" if unknown else "")
        )
    if "Backend" in settings:
        check_backend(settings["Backend"], path.name)
    return hls, settings


# -- hls4ml projects --------------------------------------------------------------------------------


def check_project(path):
    config = read_yaml(path / PROJECT_CONFIG)
    project = config.get("ProjectName")
    if not project:
        raise SourceError(f"{path / PROJECT_CONFIG} sets no ProjectName")
    check_backend(config.get("Backend", "Vivado"), f"the project {path.name}")
    top = path / "firmware" / f"{project}.cpp"
    if not top.is_file():
        raise SourceError(f"the hls4ml project {path} has no {top.relative_to(path)}: it is not a written project")


def project_config(path):
    """An hls4ml project's configuration, the model files it names (KerasModel: hls4ml saves that into
    the project as keras_model.keras; KerasJson, KerasH5, OnnxModel from a YAML) found where hls4ml
    left them or, for a project that moved, beside it."""
    path = Path(path)
    config = read_yaml(path / PROJECT_CONFIG)
    for key in YAML_MODEL_KEYS:
        if isinstance(config.get(key), str) and not Path(config[key]).exists():
            moved = path / Path(config[key]).name
            if moved.exists():
                config[key] = str(moved)
    return config
