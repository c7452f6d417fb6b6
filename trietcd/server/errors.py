"""Operating errors of the member layer; api/errors.py maps them to etcd's gRPC errors."""

__all__ = ["ServerError", "RequestTooLargeError", "BootstrapError"]


class ServerError(Exception):
    """Base of the member's operating errors."""


class RequestTooLargeError(ServerError):
    """The raft entry a request would take exceeds --max-request-bytes."""


class BootstrapError(ServerError):
    """A configuration the member cannot start from; the text is etcd's."""
