"""The model repository manager: which models are loaded, under Triton's model control modes.

  none      load every model at startup; load/unload requests are refused
  poll      like none, and rescan the repository every --repository-poll-secs (new, removed and
            changed models are loaded, unloaded and reloaded)
  explicit  load only --load-model names at startup ("*" for all); clients load and unload

A model that fails to load is logged and reported with its reason; the server keeps serving the rest.

The models of several repositories are served together (tritonserver's repeated --model-repository);
a name found in more than one of them is no model at all until only one holds it, as Triton has it.
Loads, unloads and their failures are logged in Triton's words ("successfully loaded 'facile'"), which
launchers wait for.
"""

import asyncio
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import json_format

from .errors import Internal, InvalidArgument, NotFound, Unavailable, Unimplemented
from .model import ServedModel, read_config
from .protocol import model_config as mc

log = logging.getLogger("faast.repository")
MODES = ("none", "poll", "explicit")
NOT_UNIQUE = "model appears in two or more repositories"  # the reason RepositoryIndex gives


class ModelRepository:
    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        mode="none",
        startup_models=(),
        load_threads=4,
        load_retries=0,
        auto_complete=True,
    ):
        """`paths`: one repository or several; `load_threads`: how many models load at once;
        `load_retries`: how often a failed load is tried again; `auto_complete`: complete a load
        request's 'config' parameter from config.pbtxt when it declares no tensors."""
        if mode not in MODES:
            raise ValueError(f"unknown model control mode '{mode}'; choose one of {', '.join(MODES)}")
        paths = [paths] if isinstance(paths, str | os.PathLike) else paths
        self.paths = list(dict.fromkeys(Path(path) for path in paths))  # each repository once
        self.mode = mode
        self.startup_models = list(startup_models)
        self.load_retries = load_retries
        self.auto_complete = auto_complete
        self.models: dict[str, ServedModel] = {}
        self.failed: dict[str, str] = {}  # name -> why it is not loaded
        self._stamps: dict[str, int] = {}  # name -> config.pbtxt mtime at the last load attempt, for polling
        self._locks: dict[str, asyncio.Lock] = {}  # name -> lock: one load or unload of a model at a time
        self._load_slots = asyncio.Semaphore(max(load_threads, 1))
        self._not_unique: set[str] = set()  # names in two or more repositories at the last poll

    def _scan(self):
        """name -> the model folders (holding a config.pbtxt) of that name, over all repositories;
        a repository that is missing holds none."""
        found: dict[str, list[Path]] = {}
        for repository in self.paths:
            try:
                entries = sorted(repository.iterdir())
            except OSError:
                continue
            for entry in entries:
                if (entry / "config.pbtxt").is_file():
                    found.setdefault(entry.name, []).append(entry)
        return found

    def available(self):
        """Names of the models in the repositories: every folder holding a config.pbtxt whose name
        no other repository has."""
        return sorted(name for name, folders in self._scan().items() if len(folders) == 1)

    def not_unique(self):
        """Names that two or more repositories hold: none of them is a model."""
        return sorted(name for name, folders in self._scan().items() if len(folders) > 1)

    async def start(self):
        """Load the startup models; returns what went wrong (empty when every one loaded), for
        --exit-on-error."""
        problems = []
        for path in self.paths:
            if not path.is_dir():  # served as empty (a poll may find it later); faast.cli says so
                problems.append(f"failed to stat file {path}")
        self._not_unique = set(self.not_unique())
        if self.mode == "explicit" and "*" not in self.startup_models:
            names = list(dict.fromkeys(self.startup_models))
        else:
            names = self.available() + sorted(self._not_unique)
        failures = await asyncio.gather(*(self._load_startup(name) for name in names))
        return problems + [failure for failure in failures if failure]

    async def _load_startup(self, name):
        try:
            return await self._load(name)
        except Internal as error:  # not in the repositories, or not unique
            return str(error)

    def _folder(self, name):
        """The folder of model `name`: a name is one entry of a repository, never a path, so
        nothing outside the repositories can be named."""
        folders = self._scan().get(name, [])
        if len(folders) > 1:
            log.error("failed to poll model '%s': not unique across all model repositories", name)
        if not folders:
            log.error("failed to poll model '%s': model not found in any model repository.", name)
        if len(folders) != 1:
            raise Internal(f"failed to load '{name}', failed to poll from model repository")
        return folders[0]

    async def _load(self, name, config=None):
        """Load `name` (with `config` instead of its config.pbtxt, when given). The new model takes
        requests only once it loaded; the one it replaces finishes what it took, then closes. On
        failure a model already loaded keeps serving. Returns None, or why the load failed."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            model_dir = self._folder(name)
            self._stamps[name] = (model_dir / "config.pbtxt").stat().st_mtime_ns  # polling retries after a change
            version = _latest_version(model_dir)
            if version is not None:
                log.info("loading: %s:%s", name, version)
            model, failure = None, None
            async with self._load_slots:  # at most --model-load-thread-count loads at once
                for _attempt in range(self.load_retries + 1):
                    try:
                        model = await ServedModel.load(model_dir, config)
                        break
                    except Exception as error:  # a broken model must not take the others down
                        failure = error
            if model is None:
                if name not in self.models:
                    self.failed[name] = str(failure)
                where = f"'{name}'" if version is None else f"'{name}' version {version}"
                log.error("failed to load %s: Internal: %s", where, failure)
                log.info("failed to load model '%s'", name)
                return str(failure)
            self.failed.pop(name, None)
            previous, self.models[name] = self.models.get(name), model
            log.info("loaded model '%s' version %s on device '%s'", name, model.version, model.device.kind)
            log.info("successfully loaded '%s'", name)
            if previous is not None:
                await previous.close()
            return None

    async def _unload(self, name):
        async with self._locks.setdefault(name, asyncio.Lock()):
            model = self.models.pop(name, None)
            self._stamps.pop(name, None)
            if model is not None:
                await model.close()
                log.info("successfully unloaded '%s' version %s", name, model.version)

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
        if self.auto_complete and not config.input and not config.output:  # as Triton auto-completes
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
        scanned = self._scan()
        present = {name for name, folders in scanned.items() if len(folders) == 1}
        not_unique = {name for name, folders in scanned.items() if len(folders) > 1}
        for name in sorted(not_unique - self._not_unique):
            log.error("failed to poll model '%s': not unique across all model repositories", name)
        self._not_unique = not_unique
        for name in list(self.models):
            if name not in present:
                await self._unload(name)
        for name in set(self._stamps) - present:
            del self._stamps[name]
            self.failed.pop(name, None)
        for name in sorted(present):
            stamp = (scanned[name][0] / "config.pbtxt").stat().st_mtime_ns
            if self._stamps.get(name) != stamp:  # new, changed, or changed since a failed attempt
                try:
                    await self._load(name)
                except Internal as error:  # removed while being polled
                    log.info("%s", error)

    def index(self, ready_only=False):
        """(name, version, state, reason) for every model in the repositories, as RepositoryIndex lists."""
        rows = []
        not_unique = set(self.not_unique())
        for name in sorted(set(self.available()) | not_unique):
            model = self.models.get(name)
            if name in not_unique:
                if not ready_only:
                    rows.append((name, "", "UNAVAILABLE", NOT_UNIQUE))
            elif model is not None:
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


def _latest_version(model_dir):
    """The version a load of `model_dir` serves: its newest numeric folder (None without one)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return str(max(versions)) if versions else None
