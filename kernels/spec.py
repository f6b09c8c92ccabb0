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
    def read(cls, path):
        path = Path(path).resolve()
        toml = path / "kernel.toml"
        if not toml.is_file():
            raise FileNotFoundError(f"{path} is not a kernel folder: it has no kernel.toml")
        with toml.open("rb") as f:
            return cls(path, tomllib.load(f))

    @property
    def name(self):
        return self.config["name"]

    @property
    def weights_path(self):
        return self.path / self.config["weights"]

    @property
    def serving(self):
        return self.config["serving"]

    @property
    def hls4ml(self):
        return self.config["hls4ml"]

    @property
    def training(self):
        return self.config["training"]

    def model(self):
        """The QKeras model, built with kernel.toml's [architecture] arguments (if any)."""
        return self.load_entry("model")(**self.config.get("architecture", {}))

    def load_entry(self, key):
        """The callable that kernel.toml names under `key` ("module:function" inside this folder)."""
        module_name, function = self.config[key].split(":")
        package = f"faast_kernel_{self.name}"
        if package not in sys.modules:
            spec = importlib.util.spec_from_file_location(
                package, self.path / "__init__.py", submodule_search_locations=[str(self.path)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[package] = module
            spec.loader.exec_module(module)
        return getattr(importlib.import_module(f"{package}.{module_name}"), function)
