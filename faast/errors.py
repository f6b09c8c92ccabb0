"""Typed request errors. The dataplane raises them with Triton's wording; each transport maps the
type to its status code in one place (gRPC: faast.grpc_server)."""


class InferenceError(Exception):
    """Base class; the message is sent to the client as is."""


class InvalidArgument(InferenceError):
    pass


class NotFound(InferenceError):
    pass


class Unavailable(InferenceError):
    pass


class Unimplemented(InferenceError):
    pass


class Internal(InferenceError):
    pass


def fault_message(error):
    """What a client is told of an exception the server did not expect (its traceback is logged)."""
    return f"unexpected server error: {type(error).__name__}: {error}"
