"""The model repository manager: which models are loaded, under Triton's model control modes.

  none      load every model at startup; load/unload requests are refused
  poll      like none, and rescan the repository every --repository-poll-secs (new, removed and
            changed models are loaded, unloaded and reloaded; see ModelRepository.poll)
  explicit  load only --load-model names at startup ("*" for all); clients load and unload

A model that fails to load is logged and reported with its reason; the server keeps serving the rest.

The models of several repositories are served together (tritonserver's repeated --model-repository);
a name found in more than one of them is no model at all until only one holds it, as Triton has it.
Loads, unloads and their failures are logged in Triton's words ("successfully loaded 'facile'"), which
launchers wait for.
"""

import asyncio
import base64
import binascii
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from google.protobuf import json_format

from .contract.errors import Internal, InvalidArgument, NotFound, Unavailable, Unimplemented
from .model import ServedModel, read_config, versions_to_load
from .protocol import model_config as mc
from .repository_agents import run_agents

log = logging.getLogger("faast.repository")
MODES = ("none", "poll", "explicit")
NOT_UNIQUE = "model appears in two or more repositories"  # the reason RepositoryIndex gives
DEVICE_CHECK_SECONDS = 2.0  # how often cards taken out of rotation are tried again
# Files a LoadModel request may not send: code the server would run (a C simulation, an FPGA image).
CODE_SUFFIXES = (".so", ".xclbin", ".awsxclbin")


class ModelState(Enum):
    """Triton's ModelReadyState of one model version, named as RepositoryIndex writes it."""

    UNKNOWN = "UNKNOWN"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class VersionState:
    """Where one version of a model stands in its lifecycle, and why (Triton's state and reason)."""

    state: ModelState
    reason: str = ""


READY = VersionState(ModelState.READY)
LOADING = VersionState(ModelState.LOADING)
UNLOADING = VersionState(ModelState.UNLOADING)
UNLOADED = VersionState(ModelState.UNAVAILABLE, "unloaded")  # a client unloaded it: not a failure
WHOLE_MODEL = ""  # the version key of a record about the model as a whole (see ModelRepository)


class VersionLoadError(Exception):
    """One version of a model failed to load; the message is the cause's."""

    def __init__(self, version: str, cause: Exception):
        super().__init__(str(cause))
        self.version = version


class ModelRepository:
    """The models of the repositories and where each stands in its lifecycle.

    `states(name)` is the one record of that: version -> VersionState. A load marks the versions it
    loads LOADING (beside the versions still serving, which stay READY until the new ones swap in),
    then READY; an unload marks the served versions UNLOADING, then the model UNAVAILABLE "unloaded".
    A failed load leaves what serves READY (for a reload polling started, see below), or, with nothing
    serving, records the failure on the model as a whole: under the version key WHOLE_MODEL (""), alone,
    with the failure's reason. Versions load all or none, and some failures come before any version is
    known (a config.pbtxt that does not parse, a checksum agent, a version_policy naming no folder), so
    a failure is the model's, not a version's; that record is the row RepositoryIndex shows without a
    version, as Triton's index has a version-less row for its own model-level verdict (a name in several
    repositories). A name without a record is UNKNOWN: never loaded, or being loaded for the first time
    before its versions are known.

    A reload that polling started and that failed while versions serve keeps its failure in the record,
    as Triton's index does, since no client was answered it: each version it tried that does not serve
    is UNAVAILABLE with the reason, and a serving version whose own reload failed (or all of them, for a
    failure before the versions were known) stays READY, serving what was loaded before, with
    "reload failed: <reason>" as its reason. A reload a client asked for (explicit mode) answers that
    client the failure and leaves the record as it stood.

    The record holds the lifecycle; the device's health is read live on top of it, as Triton checks a
    READY model's runtime readiness on every readiness call: a READY version whose device has no
    compute unit in rotation reads UNAVAILABLE with the device's reason (`state`). Its compute units
    fail in worker threads and come back in `watch_devices`, so reading them when asked is exact, where
    a copy in the record would lag. `models` holds the loaded ServedModel objects, exactly the READY
    versions; `get` serves from it.
    """

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
        self.models: dict[str, dict[str, ServedModel]] = {}  # name -> version -> model, oldest version first
        self._sent: dict[str, Path] = {}  # name -> folder holding the files its last LoadModel sent
        self._states: dict[str, dict[str, VersionState]] = {}  # name -> version -> lifecycle state, oldest first
        self._stamps: dict[str, tuple] = {}  # name -> _stamp() at the last load attempt, for polling
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

    async def _load(self, name, config=None, files=None):
        """Load the versions of `name` its version_policy serves (with `config` instead of its
        config.pbtxt, and from `files` instead of its folder, when given). The new versions take
        requests only once every one of them loaded; the ones they replace finish what they took,
        then close. On failure what is loaded keeps serving. Returns None, or why the load failed."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            model_dir = files if files is not None else self._folder(name)
            if files is None:  # taken before anything is read, so a change made during the load shows
                self._stamps[name] = await asyncio.to_thread(_stamp, model_dir)  # (see poll)
            loaded, failure = None, None
            chosen: list[str] = []  # the versions the last attempt tried, once known
            before = self._states.get(name)
            try:
                async with self._load_slots:  # at most --model-load-thread-count loads at once
                    for _attempt in range(self.load_retries + 1):
                        chosen = []
                        try:
                            chosen_config, chosen = await self._choose_versions(name, model_dir, config)
                            loaded = await self._load_versions(name, model_dir, chosen_config, chosen)
                            break
                        except Exception as error:  # a broken model must not take the others down
                            failure = error
            except BaseException:  # cancelled (shutdown): the record goes back to what still stands
                self._record(name, before)
                raise
            if loaded is None:
                assert failure is not None
                if files is not None:
                    shutil.rmtree(files, ignore_errors=True)
                serving = self.models.get(name, {})
                if serving and self.mode == "poll":  # no client was answered: the record says why
                    self._record(name, _failed_reload(serving, chosen, failure))
                elif serving:  # what is loaded keeps serving; the client that asked was answered
                    self._record(name, {version: READY for version in serving})
                else:
                    self._record(name, {WHOLE_MODEL: VersionState(ModelState.UNAVAILABLE, str(failure))})
                where = f"'{name}' version {failure.version}" if isinstance(failure, VersionLoadError) else f"'{name}'"
                log.error("failed to load %s: Internal: %s", where, failure)
                log.info("failed to load model '%s'", name)
                return str(failure)
            previous, self.models[name] = self.models.get(name, {}), loaded
            self._record(name, {version: READY for version in loaded})
            for model in loaded.values():
                log.info("loaded model '%s' version %s on device '%s'", name, model.version, model.device.kind)
            log.info("successfully loaded '%s'", name)
            for model in previous.values():
                await model.close()
            self._forget_sent(name, keep=files)
            return None

    async def _choose_versions(self, name, model_dir: Path, config) -> tuple[mc.ModelConfig, list[str]]:
        """The configuration of `name` (`config`, else its config.pbtxt), checked by its repository
        agents, and the versions its version_policy serves."""
        config = config if config is not None else read_config(model_dir)
        config.name = config.name or name
        await asyncio.to_thread(run_agents, config, model_dir)
        return config, versions_to_load(model_dir, config)

    async def _load_versions(self, name, model_dir: Path, config, versions: list[str]) -> dict[str, ServedModel]:
        """`versions` of `name`, loaded; all or none. The record shows the ones not serving yet
        LOADING."""
        serving = self.models.get(name, {})  # stays READY until the new versions swap in
        self._record(name, {v: READY if v in serving else LOADING for v in sorted({*versions, *serving}, key=int)})
        loaded: dict[str, ServedModel] = {}
        try:
            for version in versions:
                log.info("loading: %s:%s", name, version)
                copy = mc.ModelConfig()
                copy.CopyFrom(config)
                try:
                    loaded[version] = await ServedModel.load(model_dir, version, copy)
                except Exception as error:
                    raise VersionLoadError(version, error) from error
        except BaseException:
            for model in loaded.values():
                await model.close()
            raise
        return loaded

    def _forget_sent(self, name, keep=None):
        """Delete the folder of files an earlier LoadModel sent for `name`, unless it is `keep`."""
        sent = self._sent.pop(name, None)
        if sent is not None and sent != keep:
            shutil.rmtree(sent, ignore_errors=True)
        if keep is not None:
            self._sent[name] = keep

    async def _unload(self, name):
        """Stop serving `name`: its versions are UNLOADING while they finish what they took, then the
        model is UNAVAILABLE "unloaded"."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions = self.models.pop(name, {})
            if versions:
                self._record(name, dict.fromkeys(versions, UNLOADING))
            self._stamps.pop(name, None)
            for model in versions.values():
                await model.close()
                log.info("successfully unloaded '%s' version %s", name, model.version)
            self._record(name, {WHOLE_MODEL: UNLOADED})
            self._forget_sent(name)

    def _record(self, name, versions: dict[str, VersionState] | None):
        """Set where every version of `name` stands (None: nothing is known of it)."""
        if versions is None:
            self._states.pop(name, None)
        else:
            self._states[name] = versions

    async def load(self, name, parameters=None):
        """RepositoryModelLoad: (re)load `name`; parameters as Triton takes them: "config", a JSON
        model configuration used instead of config.pbtxt, and with it "file:<version>/<name>" entries
        whose contents make up the model's folder instead of the repository's. Sent files are data
        the emulator reads (kernel.json, weights.npz): code (a C simulation, an xclbin) is refused,
        so a client can never make the server run code it sent."""
        self._refuse_unless_explicit()
        parameters = parameters or {}
        config = self._config_override(name, parameters)
        files = self._write_sent_files(name, parameters, config)
        failure = await self._load(name, config, files)
        if failure is not None:
            raise Internal(f"load failed for model '{name}': {failure}")

    @staticmethod
    def _write_sent_files(name, parameters, config) -> Path | None:
        """The "file:" parameters written into a new folder (None without any)."""
        sent = {key[len("file:") :]: value for key, value in parameters.items() if key.startswith("file:")}
        if not sent:
            return None
        for relative in sent:
            path = PurePosixPath(relative)
            if path.suffix in CODE_SUFFIXES:
                raise Unimplemented(
                    f"failed to load '{name}': 'file:{relative}' is code; faast loads code only from its model "
                    "repository, a client may send data files (kernel.json, weights.npz)"
                )
            if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or not path.parts[0].isdigit():
                raise InvalidArgument(
                    f"failed to load '{name}': 'file:{relative}' must name a file inside a version folder, "
                    "e.g. file:1/kernel.json"
                )
        if config is None:  # Triton's answer; the log says why
            log.error("failed to load '%s': 'file:' parameters come with a 'config' parameter", name)
            raise Internal(f"failed to load '{name}', failed to poll from model repository")
        folder = Path(tempfile.mkdtemp(prefix=f"faast-{name}-"))
        try:
            for relative, content in sent.items():
                if isinstance(content, str):  # HTTP sends the contents base64-encoded
                    try:
                        content = base64.b64decode(content, validate=True)
                    except binascii.Error:
                        raise InvalidArgument(f"failed to load '{name}': 'file:{relative}' is not base64") from None
                if not isinstance(content, bytes):
                    raise InvalidArgument(f"failed to load '{name}': 'file:{relative}' must carry bytes")
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def _config_override(self, name, parameters):
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
        """Bring what is loaded in line with the repositories: unload the models gone, load the new
        ones, reload the ones whose files changed since their last load attempt.

        A change is any difference in `_stamp`: a file or folder anywhere in the model's folder
        (config.pbtxt, every version folder, warmup/) added, removed, resized or with another mtime.
        Triton compares the newest mtime in the folder; faast compares every file, so a file put back
        with an older mtime (`cp -p`, rsync) or resized within the clock's resolution counts too.

        A model whose load failed is tried again at the first poll that sees its files changed, not at
        every poll, as Triton does (a model unmodified since its failed attempt is left alone): a load
        that fails for its files fails again until they change, and trying it every poll would reopen
        its device (program a card) and log the same failure every few seconds. This is what serves a
        version folder copied in file by file: the stamp is taken before the load reads anything, so a
        file that lands after that is a change the next poll sees, and one that landed before was read;
        only a rewrite leaving a file's name, size and mtime all as they were could go unseen. While the
        failure stands the index shows it (see the class's docstring) and what was loaded serves.
        A failure that no change of files cures (a card that was busy) is retried --model-load-retry-count
        times within the attempt, as a load is anywhere."""
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
        for name in set(self._states) - present:  # gone from the repositories: nothing is known of it
            self._record(name, None)
        folders = {name: scanned[name][0] for name in present}
        stamps = await asyncio.to_thread(lambda: {name: _stamp(folder) for name, folder in folders.items()})
        for name in sorted(present):
            if self._stamps.get(name) != stamps[name]:  # new, changed, or changed since a failed attempt
                try:
                    await self._load(name)
                except Internal as error:  # removed while being polled
                    log.info("%s", error)

    def states(self, name) -> dict[str, VersionState]:
        """The lifecycle record of `name`: version -> VersionState, oldest first (WHOLE_MODEL alone for
        a record about the model as a whole; empty for a model never loaded)."""
        return dict(self._states.get(name, {}))

    def state(self, name, version) -> VersionState:
        """Where version `version` of `name` stands as a client sees it: its record, with a READY
        version whose device has no compute unit in rotation UNAVAILABLE for the device's reason."""
        record = self._states.get(name, {}).get(version, VersionState(ModelState.UNKNOWN))
        if record.state is ModelState.READY:
            healthy, why = self.models[name][version].device.health()
            if not healthy:
                return VersionState(ModelState.UNAVAILABLE, why)
        return record

    def index(self, ready_only=False):
        """(name, version, state, reason) for every model in the repositories, as RepositoryIndex lists:
        a row for each version of its record (with `ready_only`, each READY one), the version-less row
        of a record about the model as a whole, and a name alone for a model without a record."""
        rows = []
        not_unique = set(self.not_unique())
        for name in sorted(set(self.available()) | not_unique):
            if name in not_unique:
                if not ready_only:
                    rows.append((name, "", ModelState.UNAVAILABLE.value, NOT_UNIQUE))
                continue
            records = self._states.get(name, {})
            if not records and not ready_only:
                rows.append((name, "", "", ""))  # Triton's name-only row: state UNKNOWN, not written
            for version, record in records.items():
                if not ready_only or record.state is ModelState.READY:
                    shown = self.state(name, version)
                    rows.append((name, version, shown.state.value, shown.reason))
        return rows

    def get(self, name, version=""):
        """The loaded model `name` at `version` ("": its newest loaded version), or Triton's error."""
        versions = self.models.get(name)
        failure = self._states.get(name, {}).get(WHOLE_MODEL)
        if not versions and failure is not None:
            raise NotFound(
                f"Request for unknown model: '{name}' has no available versions (failed to load: {failure.reason})"
            )
        if not versions:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if not version:
            return versions[next(reversed(versions))]
        if not re.fullmatch(r"-?[0-9]+", version):
            raise InvalidArgument(
                f"failed to get model version from specified version string '{version}' "
                "(details: stol), version should be an integral value > 0"
            )
        if int(version) < 0:
            raise InvalidArgument(
                f"invalid model version specified '{version}' , version should be an integral value > 0"
            )
        model = versions.get(str(int(version)))
        if model is None:
            raise NotFound(f"Request for unknown model: '{name}' version {version} is not found")
        return model

    def versions(self, name) -> list[ServedModel]:
        """Every loaded version of `name`, oldest first (none when it is not loaded)."""
        return list(self.models.get(name, {}).values())

    def served(self) -> Iterator[ServedModel]:
        """Every loaded version of every model."""
        for versions in list(self.models.values()):
            yield from list(versions.values())

    def all_ready(self):
        """Triton's strict readiness: every version of every record READY, on a device with a compute
        unit in rotation, or unavailable because a client unloaded it (a model loading, unloading or
        that failed to load is not ready)."""
        return all(
            self.state(name, version).state is ModelState.READY or record == UNLOADED
            for name, records in list(self._states.items())
            for version, record in list(records.items())
        )

    def is_ready(self, name, version=""):
        """READY (at `version`, or any version) on a device with a compute unit in rotation."""
        records = self._states.get(name, {})
        chosen = [version] if version else list(records)
        return any(version in records and self.state(name, version).state is ModelState.READY for version in chosen)

    async def watch_devices(self, seconds=DEVICE_CHECK_SECONDS):
        """Every `seconds`, put back into rotation the compute units whose card works again, and log
        each model version that stops or starts being ready because of its device."""
        unready: dict[int, str] = {}
        while True:
            await asyncio.sleep(seconds)
            for model in self.served():
                await asyncio.to_thread(model.device.recover)
                healthy, why = model.device.health()
                key = id(model)
                if not healthy and key not in unready:
                    unready[key] = why
                    log.error("model '%s' version %s is not ready: %s", model.name, model.version, why)
                elif healthy and key in unready:
                    del unready[key]
                    log.info("model '%s' version %s is ready again: %s", model.name, model.version, why)

    async def close(self):
        for name in list(self.models):
            await self._unload(name)


def _failed_reload(serving: dict, tried: list[str], failure: Exception) -> dict[str, VersionState]:
    """The record after a polled reload of `tried` versions failed while `serving` serves (see
    ModelRepository): the versions tried that do not serve UNAVAILABLE with the reason (the one that
    failed with its own, the others with which one failed: versions load all or none), the serving
    ones READY, with the reason when their own reload failed (all, when none was known yet)."""
    failed = failure.version if isinstance(failure, VersionLoadError) else None
    record: dict[str, VersionState] = {}
    for version in sorted({*tried, *serving}, key=int):
        if version in serving:
            reloaded = version in tried or not tried
            record[version] = VersionState(ModelState.READY, f"reload failed: {failure}" if reloaded else "")
        elif failed is None or version == failed:
            record[version] = VersionState(ModelState.UNAVAILABLE, str(failure))
        else:
            record[version] = VersionState(ModelState.UNAVAILABLE, f"version {failed} failed to load: {failure}")
    return record


def _stamp(model_dir: Path) -> tuple:
    """What polling compares to see a model changed: every file and folder under `model_dir`,
    recursively, as (path relative to it, size, mtime in ns), a folder by its path alone (what it holds
    is listed; its own mtime would change for an editor's swap file come and gone), and one that cannot
    be read (being written, removed meanwhile) as (path, None, None). Symbolic links are followed, each
    folder once. Cheap: a stat per file, no reading."""
    entries: list[tuple] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            entries.append((prefix, None, None))
            return
        for child in children:
            relative = f"{prefix}/{child.name}" if prefix else child.name
            try:
                info = child.stat()  # follows a symbolic link
            except OSError:
                entries.append((relative, None, None))
                continue
            if stat.S_ISDIR(info.st_mode):
                entries.append((relative + "/",))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    walk(child.path, relative)
            else:
                entries.append((relative, info.st_size, info.st_mtime_ns))

    walk(str(model_dir), "")
    return tuple(entries)
