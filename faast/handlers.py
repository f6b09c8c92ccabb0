"""What a transport serves besides health, metadata and inference: the model repository, shared-memory
registration, and trace and log settings. faast.cli builds one `Handlers` and gives it to each
transport, so a transport never reaches into the DataPlane for them; each method carries Triton's
semantics once, for gRPC and HTTP alike. Under `faast serve --workers N` a call that changes state is
applied here and then replayed on the other workers (faast.workers) before it is answered: each
class names its replayed operations once, for the replay here and for the worker that applies them
(`local_operations`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .contract.errors import InvalidArgument, Unimplemented
from .repository import ModelRepository
from .shared_memory import SharedMemoryManager
from .trace_log import LogSettings, TraceSettings
from .workers import Peers, replay


class RepositoryHandlers:
    """RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload."""

    LOAD, UNLOAD = "repository.load", "repository.unload"

    def __init__(self, repository: ModelRepository, peers: Peers | None = None):
        self._repository = repository
        self._peers = peers

    def local_operations(self) -> dict[str, Callable[..., Any]]:
        return {self.LOAD: self._repository.load, self.UNLOAD: self._repository.unload}

    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of every model in the repository."""
        return self._repository.index(ready_only)

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        await self._repository.load(name, parameters)
        await replay(self._peers, self.LOAD, name, parameters)

    async def unload(self, name: str) -> None:
        await self._repository.unload(name)
        await replay(self._peers, self.UNLOAD, name)


# tritonserver 2.68+'s answer to a registration or unregistration under --allow-client-shm=false
CLIENT_SHM_DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
NO_CUDA = "CUDA shared memory is not supported: faast runs FPGA and CPU kernels, use system shared memory instead"


class SharedMemoryHandlers:
    """Shared-memory status, registration and unregistration: system shared memory, and CUDA's
    refused (there is never a CUDA region). Without `allow_client` (--allow-client-shm=false) every
    registration and unregistration, system or CUDA, is refused before anything else is looked at,
    as tritonserver 2.68+ refuses them; status calls are answered."""

    REGISTER, UNREGISTER = "shared_memory.register", "shared_memory.unregister"

    def __init__(self, manager: SharedMemoryManager, peers: Peers | None = None, allow_client: bool = True):
        self._manager = manager
        self._peers = peers
        self._allow_client = allow_client

    def _check_allowed(self) -> None:
        if not self._allow_client:
            raise Unimplemented(CLIENT_SHM_DISABLED)

    def local_operations(self) -> dict[str, Callable[..., Any]]:
        return {self.REGISTER: self._manager.register, self.UNREGISTER: self._manager.unregister}

    def status(self, name: str = "") -> list:
        return self._manager.status(name)

    async def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._check_allowed()
        self._manager.register(name, key, offset, byte_size)
        await replay(self._peers, self.REGISTER, name, key, offset, byte_size)

    async def unregister(self, name: str = "") -> None:
        """Unregister `name`, or every region when name is empty."""
        self._check_allowed()
        self._manager.unregister(name)
        await replay(self._peers, self.UNREGISTER, name)

    def cuda_register(self) -> NoReturn:
        self._check_allowed()
        raise Unimplemented(NO_CUDA)

    def cuda_unregister(self) -> None:
        """Nothing to unregister, once allowed."""
        self._check_allowed()


class TraceHandlers:
    """TraceSetting: the global settings, or a loaded model's."""

    UPDATE = "trace.update"

    def __init__(self, trace: TraceSettings, repository: ModelRepository, peers: Peers | None = None):
        self._trace = trace
        self._repository = repository
        self._peers = peers

    def local_operations(self) -> dict[str, Callable[..., Any]]:
        return {self.UPDATE: self._trace.update}

    def check_model(self, model_name: str) -> None:
        """A model's settings need the model loaded (Triton's status and wording); Triton checks
        this before it reads the request's settings."""
        if model_name and not self._repository.is_ready(model_name):
            raise InvalidArgument(f"Request for unknown model : {model_name}")

    async def update(self, model_name: str, updates: dict[str, list[str]]) -> dict[str, list[str]]:
        """Apply `updates` (none: only read) and return the settings in force for `model_name` (""
        for the global ones)."""
        self.check_model(model_name)
        settings = self._trace.update(model_name, updates)
        if updates:
            await replay(self._peers, self.UPDATE, model_name, updates)
        return settings


class LogHandlers:
    """LogSettings."""

    UPDATE = "logging.update"

    def __init__(self, settings: LogSettings, peers: Peers | None = None):
        self._settings = settings
        self._peers = peers

    def local_operations(self) -> dict[str, Callable[..., Any]]:
        return {self.UPDATE: self._settings.update}

    async def update(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Apply `updates` (none: only read) and return the settings in force."""
        settings = self._settings.update(updates)
        if updates:
            await replay(self._peers, self.UPDATE, updates)
        return settings


@dataclass(frozen=True)
class Handlers:
    repository: RepositoryHandlers
    shared_memory: SharedMemoryHandlers
    trace: TraceHandlers
    logging: LogHandlers

    def local_operations(self) -> dict[str, Callable[..., Any]]:
        """What the other workers replay here, each applied to this process's own state only."""
        return {
            **self.repository.local_operations(),
            **self.shared_memory.local_operations(),
            **self.trace.local_operations(),
            **self.logging.local_operations(),
        }
