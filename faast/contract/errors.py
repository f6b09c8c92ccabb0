"""Typed errors, one table: each class carries how a client sees it — its gRPC status code, HTTP
status and the reason Triton's failure counter files it under — and a subclass inherits what it does
not override, so a lookup goes through the class hierarchy. The dataplane raises request errors with
Triton's wording; the transports read `grpc_code` / `http_status`, the statistics `failure_reason`.

Only an `InferenceError`'s message is sent to a client as is; any other exception reaching a
transport is a server fault (`fault_message`, logged with its traceback)."""


class FaastError(Exception):
    """Every error faast raises on purpose. Unless a subclass says otherwise, a client that meets
    one sees a server fault."""

    grpc_code = "INTERNAL"  # a grpc.StatusCode member's name
    http_status = 500
    http_content_type = "application/json"  # of the HTTP error body, {"error": message}
    failure_reason = "BACKEND"  # nv_inference_request_failure's reason label


class InferenceError(FaastError):
    """A request's answer: the message is sent to the client as is."""


class InvalidArgument(InferenceError):
    grpc_code, http_status, failure_reason = "INVALID_ARGUMENT", 400, "OTHER"


class NotFound(InferenceError):
    grpc_code, http_status, failure_reason = "NOT_FOUND", 404, "OTHER"


class AlreadyExists(InferenceError):
    """Something by that name is there already (a shared memory region): Triton's HTTP answer is a 400."""

    grpc_code, http_status, failure_reason = "ALREADY_EXISTS", 400, "OTHER"


class Unavailable(InferenceError):
    grpc_code, http_status, failure_reason = "UNAVAILABLE", 503, "REJECTED"


class Unimplemented(InferenceError):
    grpc_code, http_status = "UNIMPLEMENTED", 501


class Internal(InferenceError):
    pass


class AnswerFailed(Internal):
    """A request's answer could not be written (after the kernel ran): Triton sends this error over
    HTTP as text/plain."""

    http_content_type = "text/plain"


class ModelConfigError(FaastError):
    """A model's configuration (config.pbtxt, version folders) cannot be served: its load fails with
    this message."""


class DeviceError(FaastError):
    """The device cannot be opened or a kernel execution failed; the message says why."""


class KernelFormatError(DeviceError):
    """kernel.json is missing, unreadable, of another format version, or lacks what a reader needs
    (so no device can open the kernel); the message names the file and the fix."""


class ComputeUnitFault(DeviceError):
    """One compute unit failed (timed out, errored, or its card vanished): it leaves the rotation."""


class MemoryVanished(FaastError):
    """A guarded read or write hit memory that is gone: the client truncated the shared memory object
    it lies in."""


class BlockVanished(FaastError):
    """Block `block` of a run lay in a client's shared memory (its rows, or where its outputs go), and
    the client truncated it under the access. The run answers nothing; its other blocks can run again
    without this one. Not a DeviceError: the device is fine, one request's memory is gone."""

    access = "accessed"

    def __init__(self, block: int):
        super().__init__(f"the memory of block {block} was truncated while it was {self.access}")
        self.block = block


class InputVanished(BlockVanished):
    """The block's rows could not be read."""

    access = "read"


class OutputVanished(BlockVanished):
    """The block's outputs could not be written."""

    access = "written"


def fault_message(error):
    """What a client is told of an exception the server did not expect (its traceback is logged)."""
    return f"unexpected server error: {type(error).__name__}: {error}"
