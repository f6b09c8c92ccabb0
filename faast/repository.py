"""The model repository: every folder with a config.pbtxt under --model-repository is a model."""

import logging
from pathlib import Path

from .errors import InvalidArgument, NotFound
from .model import ServedModel

log = logging.getLogger("faast.repository")


class ModelRepository:
    def __init__(self, path):
        self.path = Path(path)
        self.models = {}
        self.failed = {}

    def load_all(self):
        """Load every model; one that fails is logged and left out, the server still starts."""
        for model_dir in sorted(p for p in self.path.iterdir() if (p / "config.pbtxt").is_file()):
            try:
                model = ServedModel.load(model_dir)
            except Exception as error:  # a broken model must not take the others down
                self.failed[model_dir.name] = str(error)
                log.error("failed to load model '%s': %s", model_dir.name, error)
                continue
            self.models[model.name] = model
            log.info("loaded model '%s' version %s on device '%s'", model.name, model.version, model.device.kind)

    def get(self, name, version=""):
        model = self.models.get(name)
        if model is None and name in self.failed:
            raise NotFound(f"Request for unknown model: '{name}' has no available versions "
                           f"(failed to load: {self.failed[name]})")
        if model is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if version and not (version.isdigit() and int(version) > 0):
            raise InvalidArgument(f"failed to get model version from specified version string '{version}' "
                                  "(details: not an integer), version should be an integral value > 0")
        if version and int(version) != int(model.version):
            raise NotFound(f"Request for unknown model: '{name}' version {version} is not found")
        return model

    def is_ready(self, name, version=""):
        model = self.models.get(name)
        return model is not None and (not version or version == model.version)

    async def close(self):
        for model in self.models.values():
            await model.close()
