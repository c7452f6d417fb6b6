"""Operating errors of the MVCC layer.

Each cause is a subclass of `MvccError`; `trietcd.api.errors` maps them to
etcd's gRPC codes and texts. The messages here are etcd's own error strings
(without the "etcdserver: " prefix the gRPC layer adds).
"""

from __future__ import annotations


class MvccError(Exception):
    """Base of the errors a request can meet in the MVCC layer."""

    message = "mvcc: error"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


class CompactedError(MvccError):
    """The requested revision is older than the compacted revision."""

    message = "mvcc: required revision has been compacted"


class FutureRevError(MvccError):
    """The requested revision is newer than the current revision."""

    message = "mvcc: required revision is a future revision"


class KeyNotFoundError(MvccError):
    """A put with ignore_value/ignore_lease found no previous value
    (etcd's etcdserver.ErrKeyNotFound)."""

    message = "key not found"


class LeaseNotFoundError(MvccError):
    """A put names a lease that does not exist (etcd's lease.ErrLeaseNotFound)."""

    message = "lease not found"


class CorruptError(MvccError):
    """Stored MVCC data cannot be decoded."""

    message = "mvcc: corrupt data"
