"""The protocol-agnostic core of the server: health, metadata and inference with Triton's semantics.

Transports (faast.grpc_server, faast.http_server) turn wire messages into the dataclasses below
with their converters (faast.grpc_converters, faast.http_converters) and back; every check a Triton
client relies on happens here, in Triton's order and with its wording, so the transports stay thin.
Shared-memory tensors are read and written here, in one place. Everything else a transport serves
(repository, shared-memory registration, trace and log settings) goes through faast.handlers.
"""

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import __version__, tensors
from .contract.errors import (
    AnswerFailed,
    FaastError,
    InferenceError,
    InputVanished,
    InvalidArgument,
    OutputVanished,
    Unavailable,
)
from .contract.memory import ClientMemory, Rows
from .model import ServedModel
from .protocol import service
from .repository import ModelRepository
from .shared_memory import SharedMemoryManager, SharedMemoryWindow
from .statistics import merge_statistics
from .trace_log import TraceSettings, wall_ns
from .workers import Peers

# The protocol extensions this server implements (ServerMetadata lists exactly these).
EXTENSIONS = [
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "statistics",
    "trace",
    "logging",
    "parameters",
    "binary_tensor_data",
]
# Request parameters a client may set with the reserved "triton_" prefix.
ALLOWED_TRITON_PARAMETERS = ["triton_enable_empty_final_response"]
# Request parameters the scheduler reads, with the InferParameter fields Triton accepts for them.
INTEGER_PARAMETERS = {"priority": "int64_param or uint64_param", "timeout": "int64_param"}
# Request parameters Triton reads as flags (bool_param only), and the sequence id (int64 or string).
BOOL_PARAMETERS = ["sequence_start", "sequence_end", "triton_enable_empty_final_response"]
# How much of a client's names an error text lists (10^5 input names would be a megabyte, which a gRPC
# client cannot even receive: it sees RESOURCE_EXHAUSTED), and the most an inference error text says.
LISTED_NAMES_LIMIT = 1000
ERROR_TEXT_LIMIT = 4096


@dataclass
class InputTensor:
    """One input as the wire carried it: its bytes, or the shared-memory window holding them."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes | memoryview | None = None  # raw little-endian bytes
    shared_memory: SharedMemoryWindow | None = None  # where the bytes are instead
    error: InferenceError | None = None  # what the wire got wrong, raised where Triton reports it


@dataclass
class RequestedOutput:
    name: str
    shared_memory: SharedMemoryWindow | None = None  # where to write the output


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | None  # None when the output went to the client's shared memory


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)  # in the order wanted
    parameters: dict[str, Any] = field(default_factory=dict)  # request parameters, e.g. priority, timeout
    error: InferenceError | None = None  # what the wire got wrong in the parameters, raised with their checks


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


def _dims(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _listed(names) -> str:
    """Names quoted and comma-separated as Triton lists them, cut after LISTED_NAMES_LIMIT characters
    with how many more there were."""
    shown: list[str] = []
    length = 0
    for name in names:
        item = f"'{name}'"
        if length + len(item) + 1 > LISTED_NAMES_LIMIT:
            shown.append(f"... ({len(names) - len(shown)} more)")
            break
        shown.append(item)
        length += len(item) + 1
    return ",".join(shown)


def _bounded(error: InferenceError) -> None:
    """Cut `error`'s text to ERROR_TEXT_LIMIT characters (a name a client sent can be huge)."""
    text = str(error)
    if len(text) > ERROR_TEXT_LIMIT:
        error.args = (f"{text[: ERROR_TEXT_LIMIT - 40]}... ({len(text)} characters in all)",)


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        shared_memory: SharedMemoryManager,
        trace: TraceSettings,
        strict_readiness: bool = True,
        server_id: str = "faast",
        peers: Peers | None = None,
    ):
        self.repository = repository
        self.peers = peers  # the other worker processes under --workers
        self.shared_memory = shared_memory
        self.trace = trace
        self.strict_readiness = strict_readiness
        self.server_id = server_id  # ServerMetadata's name (tritonserver's --id)
        self.ready = False  # set once the transports listen, cleared on shutdown

    def server_ready(self) -> bool:
        """Triton's readiness: serving, and with strict readiness every model that should be is."""
        return self.ready and (not self.strict_readiness or self.repository.all_ready())

    def server_metadata(self) -> service.ServerMetadataResponse:
        return service.ServerMetadataResponse(name=self.server_id, version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.is_ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> service.ModelMetadataResponse:
        model = self.repository.get(name, version)
        batch = [-1] if model.max_batch_size > 0 else []
        versions = [loaded.version for loaded in self.repository.versions(name)] if not version else [model.version]
        meta = service.ModelMetadataResponse(name=model.name, versions=versions, platform="faast")
        for spec, target in ((model.inputs, meta.inputs), (model.outputs, meta.outputs)):
            for tensor in spec:
                target.add(name=tensor.name, datatype=tensor.datatype, shape=batch + list(tensor.dims))
        return meta

    def model_config(self, name: str, version: str = ""):
        return self.repository.get(name, version).config

    async def model_statistics(self, name: str = "", version: str = "") -> service.ModelStatisticsResponse:
        """ModelStatistics: this process's, summed with every other worker's under --workers."""
        local = self.local_statistics(name, version)
        if self.peers is None:
            return local
        others = await self.peers.gather("statistics", name, version)
        return merge_statistics([local, *(service.ModelStatisticsResponse.FromString(data) for data in others)])

    def local_statistics(self, name: str = "", version: str = "") -> service.ModelStatisticsResponse:
        if name and not self.repository.is_ready(name):
            raise InvalidArgument(f"requested model '{name}' is not available")
        if name:
            models = [self.repository.get(name, version)] if version else self.repository.versions(name)
        else:
            models = list(self.repository.served())
        return service.ModelStatisticsResponse(model_stats=[m.stats.to_proto(m.name, m.version) for m in models])

    @staticmethod
    def check_parameters(parameters, error: InferenceError | None = None):
        """Triton's checks of request parameters: reserved keys, and the types (and priority's sign) of
        the ones it reads; `error`: what the wire's own types got wrong (a gRPC uint64 timeout)."""
        if error is not None:
            raise error
        reserved = [key for key in parameters if key.startswith("triton_") and key not in ALLOWED_TRITON_PARAMETERS]
        if reserved:
            raise InvalidArgument(
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only the "
                "following keys starting with 'triton_' are allowed: " + " ".join(ALLOWED_TRITON_PARAMETERS)
            )
        for key, expected in INTEGER_PARAMETERS.items():
            value = parameters.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument(f"invalid value type for '{key}' parameter, expected {expected}.")
        if parameters.get("priority", 0) < 0:
            raise InvalidArgument("invalid value for 'priority', expected value >= 0.")
        for key in BOOL_PARAMETERS:
            if not isinstance(parameters.get(key, False), bool):
                raise InvalidArgument(f"invalid value type for '{key}' parameter, expected bool_param.")
        sequence_id = parameters.get("sequence_id", 0)
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str):
            raise InvalidArgument(
                "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."
            )

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate `request` against its model, run it through the model's scheduler and answer it;
        the one place that records a request's success or failure in the model's statistics."""
        if not self.ready:
            raise Unavailable("Server not ready")
        model = self.repository.get(request.model_name, request.model_version)
        arrival, started = time.perf_counter_ns(), wall_ns()
        validated = False  # past Triton's checks, a request is the model's to answer, failed or not
        try:
            request, rows = self._validated(model, request)
            validated = True
            into = self._destination(model, request, len(rows))
            try:
                done = await model.scheduler.submit(rows, request.parameters, into)
            except (InputVanished, OutputVanished) as vanished:  # only views of shared memory can vanish
                tensor = request.inputs[0] if isinstance(vanished, InputVanished) else request.outputs[0]
                assert tensor.shared_memory is not None, "only shared memory is accessed in place"
                raise InvalidArgument(
                    f"shared memory region '{tensor.shared_memory.region}' was truncated while it was {vanished.access}"
                ) from None
            response = self._response(model, request, done.outputs, in_place=into is not None)
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            model.stats.record_failure(time.perf_counter_ns() - arrival, "CANCELED", validated)
            raise
        except Exception as error:
            reason = error.failure_reason if isinstance(error, FaastError) else "BACKEND"
            model.stats.record_failure(time.perf_counter_ns() - arrival, reason, validated)
            if isinstance(error, InferenceError):
                _bounded(error)
            raise
        model.stats.record_success(
            len(rows), time.perf_counter_ns() - arrival, done.queue_ns, done.input_ns, done.infer_ns, done.output_ns
        )
        if self.trace.should_trace(model.name):
            self.trace.write(
                model.name, model.version, request.id, [("REQUEST_START", started), ("REQUEST_END", wall_ns())]
            )
        return response

    def _input_bytes(self, model: ServedModel, tensor: InputTensor) -> bytes | memoryview | ClientMemory:
        """An input's raw bytes: views of the request's, or the client's shared memory where the kernel
        packs it in place (else copied from it)."""
        if tensor.error is not None:
            raise tensor.error
        if tensor.shared_memory is not None:
            in_place = model.packs_shared_memory_in_place and tensor.datatype == "FP32"
            return self.shared_memory.read(*tensor.shared_memory, in_place=in_place)
        assert tensor.data is not None, "a converter gives every input its data, a window or an error"
        return tensor.data

    def _destination(self, model: ServedModel, request: InferRequest, rows: int) -> ClientMemory | None:
        """Where the kernel unpacks the request's outputs itself: the client's shared memory, when the
        request wants the model's one output there, as the kernel's float32 rows, and the window holds
        them. None otherwise: the answer is written from the result after the run (a window too small
        is refused then, with Triton's wording)."""
        if not model.unpacks_shared_memory_in_place or len(request.outputs) != 1:
            return None
        window = request.outputs[0].shared_memory
        shape = (rows, model.device.kernel.output_size)
        nbytes = shape[0] * shape[1] * np.dtype(np.float32).itemsize
        if window is None or window.byte_size < nbytes:
            return None
        view = self.shared_memory.destination(window.region, window.offset, nbytes)
        return None if view is None else view.typed(np.float32, shape)

    def _response(
        self, model: ServedModel, request: InferRequest, result: Rows, in_place: bool = False
    ) -> InferResponse:
        """The answer to a request from its result rows; `in_place`: the kernel unpacked them into the
        client's shared memory already (`result` is that ClientMemory)."""
        batch = [len(result)] if model.max_batch_size > 0 else []
        wanted = request.outputs or [RequestedOutput(o.name) for o in model.outputs]
        outputs = []
        for requested in wanted:
            output = model.kernel_outputs[requested.name]
            spec = output.spec
            shape = tuple(batch) + spec.dims
            if in_place:
                outputs.append(OutputTensor(spec.name, spec.datatype, shape, None))
                continue
            assert isinstance(result, np.ndarray), "only an in-place answer lies in a client's memory"
            data: np.ndarray | None = output.answer(result).reshape(shape)
            if requested.shared_memory:
                region, offset, size = requested.shared_memory
                raw = tensors.wire_array(data, spec.datatype)
                if size < raw.nbytes:  # found when the answer is written, hence Triton's INTERNAL
                    raise AnswerFailed(
                        f"shared memory size specified with the request for output '{spec.name}' "
                        f"({size} bytes) should be at least {raw.nbytes} bytes to hold the results"
                    )
                self.shared_memory.write(region, offset, size, raw)
                data = None
            outputs.append(OutputTensor(spec.name, spec.datatype, shape, data))
        return InferResponse(model.name, model.version, request.id, outputs)

    def _validated(self, model: ServedModel, request: InferRequest) -> tuple[InferRequest, Rows]:
        """Validate a request against the model as Triton does: the request as it runs (an output
        requested twice is answered once, as Triton does) and its kernel rows."""
        prefix = f"[request id: {request.id or '<id_unknown>'}] "
        self.check_parameters(request.parameters, request.error)
        seen: set[str] = set()
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InvalidArgument(f"{prefix}input '{tensor.name}' already exists in request")
            seen.add(tensor.name)
        unique: dict[str, RequestedOutput] = {}
        for output in request.outputs:  # Triton answers an output requested twice once
            unique.setdefault(output.name, output)
        request = replace(request, outputs=list(unique.values()))
        names = list(unique)
        raw = [self._input_bytes(model, tensor) for tensor in request.inputs]
        for output in request.outputs:  # an output's window is checked with the request, as Triton does
            if output.shared_memory is not None:
                self.shared_memory.check_window(*output.shared_memory)

        output_names = [o.name for o in model.outputs]
        for name in names:
            if name not in output_names:
                raise InvalidArgument(f"unexpected inference output '{name}' for model '{model.name}'")
        specs = {spec.name: spec for spec in model.inputs}
        if len(request.inputs) != len(specs):
            got = _listed([t.name for t in request.inputs])
            missing = _listed([n for n in specs if n not in seen])
            raise InvalidArgument(
                f"{prefix}expected {len(specs)} inputs but got {len(request.inputs)} inputs for model "
                f"'{model.name}'. Got input(s) [{got}], but missing required input(s) [{missing}]. "
                "Please provide all required input(s)."
            )
        for tensor in request.inputs:
            if tensor.name not in specs:
                raise InvalidArgument(f"unexpected inference input '{tensor.name}' for model '{model.name}'")

        batch_size = None
        if model.max_batch_size > 0:
            for tensor in request.inputs:
                if not tensor.shape:
                    raise InvalidArgument(
                        f"{prefix}input '{tensor.name}' has no shape but model requires "
                        f"batch dimension for '{model.name}'"
                    )
                if batch_size is not None and tensor.shape[0] != batch_size:
                    raise InvalidArgument(
                        f"{prefix}input '{tensor.name}' batch size does not match other inputs for '{model.name}'"
                    )
                batch_size = tensor.shape[0]
            if batch_size > model.max_batch_size:
                raise InvalidArgument(
                    f"{prefix}inference request batch-size must be <= {model.max_batch_size} for '{model.name}'"
                )

        for tensor, data in zip(request.inputs, raw, strict=True):
            spec = specs[tensor.name]
            if tensor.datatype != spec.datatype:
                shown = (
                    tensor.datatype if tensor.datatype in tensors.NUMPY or tensor.datatype == "BYTES" else "<invalid>"
                )
                raise InvalidArgument(
                    f"{prefix}inference input '{tensor.name}' data-type is '{shown}', but "
                    f"model '{model.name}' expects '{spec.datatype}'"
                )
            expected = ((-1,) if model.max_batch_size > 0 else ()) + spec.dims
            given = tuple(tensor.shape[1:]) if model.max_batch_size > 0 else tuple(tensor.shape)
            if any(d < 0 for d in tensor.shape):
                raise InvalidArgument(
                    f"{prefix}All input dimensions should be specified for input "
                    f"'{tensor.name}' for model '{model.name}', got {_dims(tensor.shape)}"
                )
            if given != spec.dims:
                note = (
                    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension"
                    " to be prepended to each input shape. If you want to specify the full shape including"
                    " the batch dim in your input dims config, try setting max_batch_size to zero. See the"
                    " model configuration docs for more info on max_batch_size."
                    if model.max_batch_size > 0
                    else ""
                )
                raise InvalidArgument(
                    f"{prefix}unexpected shape for input '{tensor.name}' for model "
                    f"'{model.name}'. Expected {_dims(expected)}, got "
                    f"{_dims(tensor.shape)}. {note}"
                )
            # Triton counts a zero batch as one row, so a request without rows is refused as too small.
            counted = tensor.shape if model.max_batch_size <= 0 or tensor.shape[0] else (1, *tensor.shape[1:])
            size = tensors.byte_size(tensor.datatype, counted)
            if len(data) != size or counted != tensor.shape:
                raise InvalidArgument(
                    f"{prefix}input byte size mismatch for input '{tensor.name}' for model "
                    f"'{model.name}'. Expected {size}, got {len(data)}"
                )
        if model.refuses_out_of_range:
            for tensor, data in zip(request.inputs, raw, strict=True):
                self._check_range(model, tensor, data, prefix)
        return request, self._rows(model, request, raw)

    @staticmethod
    def _check_range(model: ServedModel, tensor: InputTensor, data, prefix: str) -> None:
        """For a model whose config refuses them: InvalidArgument naming the first row (and element) of
        `tensor` that holds NaN, ±Inf or a value outside its kernel input type's range; float values are
        compared with the type's real range, integer bit patterns with its mantissas'."""
        assert not isinstance(data, ClientMemory), "a model that checks values packs no client memory in place"
        fixed = model.kernel_inputs[tensor.name].segment.type
        values = tensors.from_raw(tensor.datatype, tensor.shape, data)
        values = values.reshape(-1, model.kernel_inputs[tensor.name].segment.size)
        if values.dtype.kind in "iu":
            info = np.iinfo(values.dtype)
            low, high = max(fixed.lowest, info.min), min(fixed.highest, info.max)
            bad = (values < values.dtype.type(low)) | (values > values.dtype.type(high))
            limits = f"bit patterns [{fixed.lowest}, {fixed.highest}]"
        else:
            low, high = fixed.lowest * 2.0**-fixed.fraction, fixed.highest * 2.0**-fixed.fraction
            bad = ~((values >= np.float64(low)) & (values <= np.float64(high)))  # NaN compares false
            limits = f"range [{low}, {high}]"
        if not bad.any():
            return
        row, element = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgument(
            f"{prefix}input '{tensor.name}' for model '{model.name}' holds {values[row, element]} in row {row} "
            f"(element {element}), outside its type {fixed}'s {limits}: the model's "
            "config.pbtxt refuses such values (parameter input_range: refuse)"
        )

    @staticmethod
    def _rows(model: ServedModel, request: InferRequest, raw: list) -> Rows:
        """A valid request's kernel rows: one input's bytes where they lie (no copy), several side by
        side in the kernel's order, whatever order the request named them in."""
        width = model.device.kernel.input_size
        if len(raw) == 1:
            (tensor,), (data,) = request.inputs, raw
            if isinstance(data, ClientMemory):
                return data.typed(tensors.NUMPY[tensor.datatype], (-1, width))
            return tensors.from_raw(tensor.datatype, tensor.shape, data).reshape(-1, width)
        assert not any(isinstance(data, ClientMemory) for data in raw), "one input alone is packed in place"
        arrays = {
            t.name: tensors.from_raw(t.datatype, t.shape, data) for t, data in zip(request.inputs, raw, strict=True)
        }
        return np.hstack(
            [arrays[name].reshape(-1, tensor.segment.size) for name, tensor in model.kernel_inputs.items()]
        )
