"""Leases (etcd 3.5.1 `server/lease`): the sans-IO lessor; the member's shell is `trietcd/server/lessor.py`."""

from trietcd.lease.errors import (
                                  LeaseError,
                                  LeaseExistsError,
                                  LeaseExpiredError,
                                  LeaseNotFoundError,
                                  LeaseTTLTooLargeError,
                                  NotPrimaryError,
)
from trietcd.lease.lessor import (
                                  FOREVER_TTL_S,
                                  LEASE_BUCKET,
                                  LEASE_CHECKPOINT_RATE,
                                  LEASE_REVOKE_RATE,
                                  MAX_CHECKPOINT_BATCH,
                                  MAX_LEASE_TTL_S,
                                  NO_LEASE,
                                  Lease,
                                  Lessor,
                                  Recovered,
                                  decode_lease_row,
                                  encode_lease_row,
                                  min_lease_ttl_s,
)

__all__ = [
    "FOREVER_TTL_S", "LEASE_BUCKET", "LEASE_CHECKPOINT_RATE", "LEASE_REVOKE_RATE", "MAX_CHECKPOINT_BATCH",
    "MAX_LEASE_TTL_S", "NO_LEASE", "Lease", "LeaseError", "LeaseExistsError", "LeaseExpiredError",
    "LeaseNotFoundError", "LeaseTTLTooLargeError", "Lessor", "NotPrimaryError", "Recovered", "decode_lease_row",
    "encode_lease_row", "min_lease_ttl_s",
]
