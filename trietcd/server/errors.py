"""Operating errors of the member layer; api/errors.py maps them to etcd's gRPC errors."""

__all__ = ["ServerError", "RequestTooLargeError", "BootstrapError", "RequestTimeoutError", "StoppedError",
           "ProposalDroppedError", "NoSpaceError", "CorruptError"]


class ServerError(Exception):
    """Base of the member's operating errors."""


class RequestTooLargeError(ServerError):
    """The raft entry a request would take exceeds --max-request-bytes."""


class BootstrapError(ServerError):
    """A configuration the member cannot start from; the text is etcd's."""


class RequestTimeoutError(ServerError):
    """A request was not applied within the request timeout (etcd's ErrTimeout)."""


class StoppedError(ServerError):
    """The member is stopping (etcd's ErrStopped)."""


class ProposalDroppedError(ServerError):
    """Raft refused the proposal, e.g. while no leader is known."""

    def __init__(self) -> None:
        super().__init__("raft proposal dropped")


class NoSpaceError(ServerError):
    """The backend quota is exhausted, or a NOSPACE alarm is active (etcd's ErrNoSpace)."""


class CorruptError(ServerError):
    """A CORRUPT alarm is active (etcd's ErrCorrupt)."""
