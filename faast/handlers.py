"""What a transport serves besides health, metadata and inference: the model repository, shared-memory
registration, and trace and log settings. faast.cli builds one `Handlers` and gives it to each
transport, so a transport never reaches into the DataPlane for them; each method carries Triton's
semantics once, for gRPC and HTTP alike.
"""

from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument
from .repository import ModelRepository
from .shared_memory import SharedMemoryManager
from .trace_log import LogSettings, TraceSettings


class RepositoryHandlers:
    """RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload."""

    def __init__(self, repository: ModelRepository):
        self._repository = repository

    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of every model in the repository."""
        return self._repository.index(ready_only)

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        await self._repository.load(name, parameters)

    async def unload(self, name: str) -> None:
        await self._repository.unload(name)


class TraceHandlers:
    """TraceSetting: the global settings, or a loaded model's."""

    def __init__(self, trace: TraceSettings, repository: ModelRepository):
        self._trace = trace
        self._repository = repository

    def check_model(self, model_name: str) -> None:
        """A model's settings need the model loaded (Triton's status and wording); Triton checks
        this before it reads the request's settings."""
        if model_name and not self._repository.is_ready(model_name):
            raise InvalidArgument(f"Request for unknown model : {model_name}")

    def update(self, model_name: str, updates: dict[str, list[str]]) -> dict[str, list[str]]:
        """Apply `updates` (none: only read) and return the settings in force for `model_name` (""
        for the global ones)."""
        self.check_model(model_name)
        return self._trace.update(model_name, updates)


@dataclass(frozen=True)
class Handlers:
    repository: RepositoryHandlers
    shared_memory: SharedMemoryManager  # status, register, unregister
    trace: TraceHandlers
    logging: LogSettings
