"""The model repository manager: which models are loaded, under Triton's model control modes.

  none      load every model at startup; load/unload requests are refused
  poll      like none, and rescan the repository every --repository-poll-secs (new, removed and
            changed models are loaded, unloaded and reloaded)
  explicit  load only --load-model names at startup ("*" for all); clients load and unload

A model that fails to load is logged and reported with its reason; the server keeps serving the rest.
"""

import asyncio
import logging
from pathlib import Path

from .errors import InvalidArgument, NotFound, Unavailable
from .model import ServedModel

log = logging.getLogger("faast.repository")
MODES = ("none", "poll", "explicit")


class ModelRepository:
    def __init__(self, path, mode="none", startup_models=()):
        if mode not in MODES:
            raise ValueError(f"unknown model control mode '{mode}'; choose one of {', '.join(MODES)}")
        self.path = Path(path)
        self.mode = mode
        self.startup_models = list(startup_models)
        self.models = {}
        self.failed = {}  # name -> why it is not loaded
        self._stamps = {}  # name -> config.pbtxt mtime at the last load attempt, for polling

    def available(self):
        """Model folders in the repository: every folder holding a config.pbtxt."""
        return sorted(p.name for p in self.path.iterdir() if (p / "config.pbtxt").is_file())

    async def start(self):
        if self.mode == "explicit":
            names = self.available() if "*" in self.startup_models else self.startup_models
        else:
            names = self.available()
        for name in names:
            await self._load(name)

    async def _load(self, name):
        model_dir = self.path / name
        if not (model_dir / "config.pbtxt").is_file():
            raise InvalidArgument(f"failed to load '{name}', failed to poll from model repository")
        if name in self.models:
            await self._unload(name)
        self._stamps[name] = (model_dir / "config.pbtxt").stat().st_mtime_ns  # polling retries after a change
        try:
            model = ServedModel.load(model_dir)
        except Exception as error:  # a broken model must not take the others down
            self.failed[name] = str(error)
            log.error("failed to load model '%s': %s", name, error)
            return False
        self.failed.pop(name, None)
        self.models[name] = model
        log.info("loaded model '%s' version %s on device '%s'", name, model.version, model.device.kind)
        return True

    async def _unload(self, name):
        model = self.models.pop(name, None)
        self._stamps.pop(name, None)
        if model is not None:
            await model.close()
            log.info("unloaded model '%s'", name)

    async def load(self, name):
        self._refuse_unless_explicit()
        if not await self._load(name):
            raise InvalidArgument(f"load failed for model '{name}': {self.failed[name]}")

    async def unload(self, name):
        self._refuse_unless_explicit()
        if name not in self.models and name not in self.available():
            raise InvalidArgument(f"failed to unload '{name}', no version is available")
        await self._unload(name)
        self.failed[name] = "unloaded"

    def _refuse_unless_explicit(self):
        if self.mode == "poll":
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")
        if self.mode == "none":
            raise Unavailable("explicit model load / unload is not allowed if model control mode is NONE")

    async def poll_forever(self, seconds):
        while True:
            await asyncio.sleep(seconds)
            await self.poll()

    async def poll(self):
        present = set(self.available())
        for name in list(self.models):
            if name not in present:
                await self._unload(name)
        for name in set(self._stamps) - present:
            del self._stamps[name]
            self.failed.pop(name, None)
        for name in sorted(present):
            stamp = (self.path / name / "config.pbtxt").stat().st_mtime_ns
            if self._stamps.get(name) != stamp:  # new, changed, or changed since a failed attempt
                await self._load(name)

    def index(self, ready_only=False):
        """(name, version, state, reason) for every model in the repository, as RepositoryIndex lists."""
        rows = []
        for name in self.available():
            model = self.models.get(name)
            if model is not None:
                rows.append((name, model.version, "READY", ""))
            elif not ready_only:
                reason = self.failed.get(name, "")
                rows.append((name, "", "UNAVAILABLE" if reason else "", reason))
        return rows

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

    def all_ready(self):
        """No model failed to load (models a client unloaded on purpose do not count)."""
        return all(reason == "unloaded" for reason in self.failed.values())

    def is_ready(self, name, version=""):
        model = self.models.get(name)
        return model is not None and (not version or version == model.version)

    async def close(self):
        for name in list(self.models):
            await self._unload(name)
