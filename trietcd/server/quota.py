"""The backend quota (etcd 3.5.1 `etcdserver/quota.go`).

A put, a txn with puts and a lease grant cost bytes: a put 256 (the key's
metadata) plus its key and value, a txn the larger of its branches' puts, a
lease grant 64. A request fits when the backend's size plus its cost stays
under the quota. `--quota-backend-bytes` 0 means etcd's default (2 GiB); a
negative quota turns the check off.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Quota", "DEFAULT_QUOTA_BYTES", "MAX_QUOTA_BYTES", "QUOTA_FIELDS"]

DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
MAX_QUOTA_BYTES = 8 * 1024 * 1024 * 1024
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64

# The InternalRaftRequest fields the quota applies to.
QUOTA_FIELDS = frozenset({"put", "txn", "lease_grant"})


class Quota:
    def __init__(self, quota_bytes: int, size_bytes: Callable[[], int]) -> None:
        self.enabled = quota_bytes >= 0
        self.max_bytes = quota_bytes or DEFAULT_QUOTA_BYTES
        self._size_bytes = size_bytes

    def available(self, field: str, request) -> bool:
        if not self.enabled:
            return True
        return self._size_bytes() + cost(field, request) < self.max_bytes


def cost(field: str, request) -> int:
    if field == "put":
        return _cost_put(request)
    if field == "txn":
        return txn_cost(request)
    if field == "lease_grant":
        return LEASE_OVERHEAD
    return 0


def _cost_put(r) -> int:
    return KV_OVERHEAD + len(r.key) + len(r.value)


def txn_cost(r) -> int:
    """The larger of the two branches' put costs (nested txns cost nothing, as in etcd)."""
    success = sum(_cost_put(op.request_put) for op in r.success if op.WhichOneof("request") == "request_put")
    failure = sum(_cost_put(op.request_put) for op in r.failure if op.WhichOneof("request") == "request_put")
    return max(success, failure)
