"""The lessor's operating errors (etcd 3.5.1 `server/lease/lessor.go`); `api/errors.py` maps them to etcd's
gRPC errors."""

from __future__ import annotations

__all__ = [
    "LeaseError",
    "LeaseExistsError",
    "LeaseExpiredError",
    "LeaseNotFoundError",
    "LeaseTTLTooLargeError",
    "NotPrimaryError",
]


class LeaseError(Exception):
    """Base of the lessor's errors."""


class LeaseNotFoundError(LeaseError):
    def __init__(self) -> None:
        super().__init__("lease not found")


class LeaseExistsError(LeaseError):
    def __init__(self) -> None:
        super().__init__("lease already exists")


class LeaseTTLTooLargeError(LeaseError):
    def __init__(self) -> None:
        super().__init__("too large lease TTL")


class NotPrimaryError(LeaseError):
    """Only the leader's lessor counts time: renewals go to it."""

    def __init__(self) -> None:
        super().__init__("not a primary lessor")


class LeaseExpiredError(LeaseError):
    """The lease expired and its revoke is not applied yet: a renewal waits for the revoke (then the lease is
    not found) or for a demotion (then it is retried), as etcd's Renew does."""

    def __init__(self) -> None:
        super().__init__("lease expired, revoke pending")
