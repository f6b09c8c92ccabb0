"""A kernel folder: kernel.toml plus the Python that defines its model and data.

Reading the spec needs no toolchain; `load_entry` imports the folder's own modules (model.py pulls in
QKeras, so only the training and conversion processes call it).
"""

import importlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelSpec:
    path: Path
    config: dict

    @classmethod
    def read(cls, path, variant=None):
        """kernel.toml, with the tables of [variants.<variant>] merged over it when a variant is named."""
        path = Path(path).resolve()
        toml = path / "kernel.toml"
        if not toml.is_file():
            raise FileNotFoundError(f"{path} is not a kernel folder: it has no kernel.toml")
        with toml.open("rb") as f:
            config = tomllib.load(f)
        variants = config.pop("variants", {})
        if variant is not None:
            if variant not in variants:
                raise KeyError(f"{toml} has no variant '{variant}'; it has {sorted(variants) or 'none'}")
            config = merged(config, variants[variant])
        return cls(path, config)

    @property
    def name(self):
        return self.config["name"]

    @property
    def weights_path(self):
        """The trained weights, or None for a variant built untrained (weights = "")."""
        return self.path / self.config["weights"] if self.config["weights"] else None

    @property
    def serving(self):
        return self.config["serving"]

    @property
    def hls4ml(self):
        return self.config["hls4ml"]

    @property
    def training(self):
        return self.config["training"]

    def model(self, trained=True):
        """The QKeras model, built with kernel.toml's [architecture] arguments (if any), with its
        trained weights unless `trained` is False or it has none."""
        model = self.load_entry("model")(**self.config.get("architecture", {}))
        if trained and self.weights_path is not None:
            model.load_weights(self.weights_path)
        return model

    def load_entry(self, key):
        """The callable that kernel.toml names under `key` ("module:function" inside this folder)."""
        module_name, function = self.config[key].split(":")
        package = f"faast_kernel_{self.name}"
        if package not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                package, self.path / "__init__.py", submodule_search_locations=[str(self.path)]
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[package] = module
            spec.loader.exec_module(module)
        return getattr(importlib.import_module(f"{package}.{module_name}"), function)


def merged(base, override):
    """`override` over `base`, mapping by mapping: a nested table changes only the keys it names."""
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return result
