"""The protocol-agnostic core of the server: health, metadata and inference with Triton's semantics.

Transports (faast.grpc_server, faast.http_server) turn wire messages into the dataclasses below and
back; every check a Triton client relies on happens here, in Triton's order and with its wording,
so the transports stay thin.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import __version__, tensors
from .errors import InvalidArgument, NotFound, Unavailable
from .protocol import service
from .settings import LogSettings, TraceSettings, wall_ns

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


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: tuple
    read: Callable[[], bytes]  # the tensor's raw bytes; raises InvalidArgument when the wire lacks them


@dataclass
class RequestedOutput:
    name: str
    shared_memory: tuple = None  # (region, offset, byte_size) to write the output into


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: tuple
    data: np.ndarray  # None when the output went to the client's shared memory


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # RequestedOutput, in the order wanted
    parameters: dict = field(default_factory=dict)  # request parameters, e.g. priority, timeout


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list


def _dims(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


class DataPlane:
    def __init__(self, repository, shared_memory, log_verbose=0, strict_readiness=True, trace=None):
        self.repository = repository
        self.shared_memory = shared_memory
        self.trace = trace or TraceSettings()
        self.logging = LogSettings(log_verbose)
        self.strict_readiness = strict_readiness
        self.ready = False  # set once the transports listen, cleared on shutdown

    def server_ready(self):
        """Triton's readiness: serving, and with strict readiness every model that should be is."""
        return self.ready and (not self.strict_readiness or self.repository.all_ready())

    def server_metadata(self):
        return service.ServerMetadataResponse(name="faast", version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name, version=""):
        return self.repository.is_ready(name, version)

    def model_metadata(self, name, version=""):
        model = self.repository.get(name, version)
        batch = [-1] if model.max_batch_size > 0 else []
        meta = service.ModelMetadataResponse(name=model.name, versions=[model.version], platform="faast")
        for spec, target in ((model.inputs, meta.inputs), (model.outputs, meta.outputs)):
            for tensor in spec:
                target.add(name=tensor.name, datatype=tensor.datatype, shape=batch + list(tensor.dims))
        return meta

    def model_config(self, name, version=""):
        return self.repository.get(name, version).config

    def model_statistics(self, name="", version=""):
        if name and not self.repository.is_ready(name):
            raise InvalidArgument(f"requested model '{name}' is not available")
        models = [self.repository.get(name, version)] if name else self.repository.models.values()
        return service.ModelStatisticsResponse(model_stats=[m.stats.to_proto(m.name, m.version) for m in models])

    def check_trace_model(self, name):
        """Trace settings of a model need the model loaded (Triton's wording, and its status)."""
        if not self.repository.is_ready(name):
            raise InvalidArgument(f"Request for unknown model : {name}")

    @staticmethod
    def check_parameters(parameters):
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

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self.ready:
            raise Unavailable("Server not ready")
        model = self.repository.get(request.model_name, request.model_version)
        arrival, started = time.perf_counter_ns(), wall_ns()
        try:
            rows = self._kernel_rows(model, request)
            result = await model.scheduler.submit(rows, request.parameters)
            response = self._response(model, request, result)
        except Exception as error:
            reason = {Unavailable: "REJECTED", InvalidArgument: "OTHER", NotFound: "OTHER"}.get(type(error), "BACKEND")
            model.stats.record_failure(time.perf_counter_ns() - arrival, reason)
            raise
        if self.trace.should_trace(model.name):
            self.trace.write(
                model.name, model.version, request.id, [("REQUEST_START", started), ("REQUEST_END", wall_ns())]
            )
        return response

    def _response(self, model, request, result):
        batch = [len(result)] if model.max_batch_size > 0 else []
        wanted = request.outputs or [RequestedOutput(o.name) for o in model.outputs]
        outputs = []
        for requested in wanted:
            spec = next(o for o in model.outputs if o.name == requested.name)
            shape = tuple(batch) + spec.dims
            data = result.reshape(shape)
            if requested.shared_memory:
                region, offset, size = requested.shared_memory
                raw = tensors.to_raw(data, spec.datatype)
                if size < len(raw):
                    raise InvalidArgument(
                        f"shared memory size specified with the request for output "
                        f"'{spec.name}' should be at least {len(raw)} bytes to hold the results"
                    )
                self.shared_memory.write(region, offset, size, raw)
                data = None
            outputs.append(OutputTensor(spec.name, spec.datatype, shape, data))
        return InferResponse(model.name, model.version, request.id, outputs)

    def _kernel_rows(self, model, request):
        """Validate a request against the model as Triton does and return float32 kernel rows."""
        prefix = f"[request id: {request.id or '<id_unknown>'}] "
        self.check_parameters(request.parameters)
        seen = set()
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InvalidArgument(f"{prefix}input '{tensor.name}' already exists in request")
            seen.add(tensor.name)
        unique = {}
        for output in request.outputs:  # Triton answers an output requested twice once
            unique.setdefault(output.name, output)
        request.outputs = list(unique.values())
        names = list(unique)
        raw = [tensor.read() for tensor in request.inputs]

        output_names = [o.name for o in model.outputs]
        for name in names:
            if name not in output_names:
                raise InvalidArgument(f"unexpected inference output '{name}' for model '{model.name}'")
        specs = {spec.name: spec for spec in model.inputs}
        if len(request.inputs) != len(specs):
            got = ",".join(f"'{t.name}'" for t in request.inputs)
            missing = ",".join(f"'{n}'" for n in specs if n not in seen)
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
        # Kernels have one input tensor (checked when the model loads); its bytes are viewed, not copied.
        ((tensor, data),) = zip(request.inputs, raw, strict=True)
        return tensors.from_raw(tensor.datatype, tensor.shape, data).reshape(-1, model.device.kernel.input_size)
