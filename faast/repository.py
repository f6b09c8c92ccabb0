"""The model repository manager: which models are loaded, under Triton's model control modes.

  none      load every model at startup; load/unload requests are refused
  poll      like none, and rescan the repository every --repository-poll-secs (new, removed and
            changed models are loaded, unloaded and reloaded)
  explicit  load only --load-model names at startup ("*" for all); clients load and unload

A model that fails to load is logged and reported with its reason; the server keeps serving the rest.
"""

import asyncio
import logging
import re
from pathlib import Path

from google.protobuf import json_format

from .errors import Internal, InvalidArgument, NotFound, Unavailable, Unimplemented
from .model import ServedModel, read_config
from .protocol import model_config as mc

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
        self._locks = {}  # name -> lock: one load or unload of a model at a time

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

    def _folder(self, name):
        """The folder of model `name`: a name is one entry of the repository, never a path, so
        nothing outside the repository can be named."""
        if name not in self.available():
            raise Internal(f"failed to load '{name}', failed to poll from model repository")
        return self.path / name

    async def _load(self, name, config=None):
        """Load `name` (with `config` instead of its config.pbtxt, when given). The new model takes
        requests only once it loaded; the one it replaces finishes what it took, then closes. On
        failure a model already loaded keeps serving. Returns None, or why the load failed."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            model_dir = self._folder(name)
            self._stamps[name] = (model_dir / "config.pbtxt").stat().st_mtime_ns  # polling retries after a change
            try:
                model = await ServedModel.load(model_dir, config)
            except Exception as error:  # a broken model must not take the others down
                if name not in self.models:
                    self.failed[name] = str(error)
                log.error("failed to load model '%s': %s", name, error)
                return str(error)
            self.failed.pop(name, None)
            previous, self.models[name] = self.models.get(name), model
            log.info("loaded model '%s' version %s on device '%s'", name, model.version, model.device.kind)
            if previous is not None:
                await previous.close()
            return None

    async def _unload(self, name):
        async with self._locks.setdefault(name, asyncio.Lock()):
            model = self.models.pop(name, None)
            self._stamps.pop(name, None)
            if model is not None:
                await model.close()
                log.info("unloaded model '%s'", name)

    async def load(self, name, parameters=None):
        """RepositoryModelLoad: (re)load `name`; parameters as Triton takes them ("config": a JSON
        model configuration used instead of config.pbtxt). "file:" parameters are refused: they
        would let a client send code (a kernel library) that the server then loads."""
        self._refuse_unless_explicit()
        config = self._config_override(name, parameters or {})
        failure = await self._load(name, config)
        if failure is not None:
            raise Internal(f"load failed for model '{name}': {failure}")

    def _config_override(self, name, parameters):
        files = [key for key in parameters if key.startswith("file:")]
        if files:
            raise Unimplemented(
                f"failed to load '{name}': faast loads models only from its model repository; "
                f"'file:' parameters ({', '.join(files)}) are not supported"
            )
        if "config" not in parameters:
            return None
        text = parameters["config"]
        if not isinstance(text, str):
            raise InvalidArgument(f"failed to load '{name}': the 'config' parameter must be a string of JSON")
        try:
            config = json_format.Parse(text, mc.ModelConfig())
        except (json_format.ParseError, RecursionError) as error:
            raise Internal(
                f"failed to load '{name}', failed to poll from model repository: the 'config' "
                f"parameter is not a model configuration: {error}"
            ) from None
        if config.name and config.name != name:
            raise InvalidArgument(f"failed to load '{name}': the 'config' parameter names model '{config.name}'")
        config.name = name
        if not config.input and not config.output:  # completed from the kernel's own, as Triton auto-completes
            built = read_config(self._folder(name))
            config.input.extend(built.input)
            config.output.extend(built.output)
        return config

    async def unload(self, name):
        self._refuse_unless_explicit()
        if name not in self.models and name not in self.available():
            return  # nothing by that name is loaded: done, as Triton answers it
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
                try:
                    await self._load(name)
                except Internal as error:  # removed while being polled
                    log.info("%s", error)

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
            raise NotFound(
                f"Request for unknown model: '{name}' has no available versions (failed to load: {self.failed[name]})"
            )
        if model is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if version and not re.fullmatch(r"-?[0-9]+", version):
            raise InvalidArgument(
                f"failed to get model version from specified version string '{version}' "
                "(details: stol), version should be an integral value > 0"
            )
        if version and int(version) < 0:
            raise InvalidArgument(
                f"invalid model version specified '{version}' , version should be an integral value > 0"
            )
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
