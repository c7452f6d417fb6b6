"""etcd 3.5.1's backend, the `member/snap/db` file, on the page file `storage/`.

Cores (pure): `schema` (bucket and meta names, codecs), `batch` (the read buffer).
Shell: `backend` (`Backend`: batch write transaction, read view, commits, hashes, snapshots, defrag while
serving).
"""

from .backend import Backend, BackendBrokenError, DefragJob, Snapshot, humanize_bytes
from .schema import (ALARM, AUTH, AUTH_ENABLED, AUTH_REVISION, AUTH_ROLES, AUTH_USERS, BUCKETS, CLUSTER,
                     CLUSTER_VERSION, CONF_STATE, CONSISTENT_INDEX, DOWNGRADE, FINISHED_COMPACT_REV, KEY, LEASE,
                     MEMBER_REMOVED_VALUE, MEMBERS, MEMBERS_REMOVED, META, SCHEDULED_COMPACT_REV, TERM, alarm_key,
                     conf_state_json, decode_u64, encode_u64, member_json, member_key, parse_conf_state_json)

__all__ = [
    "Backend", "BackendBrokenError", "DefragJob", "Snapshot", "humanize_bytes",
    "KEY", "META", "LEASE", "AUTH", "AUTH_USERS", "AUTH_ROLES", "ALARM", "MEMBERS", "MEMBERS_REMOVED", "CLUSTER",
    "BUCKETS", "CONSISTENT_INDEX", "TERM", "CONF_STATE", "SCHEDULED_COMPACT_REV", "FINISHED_COMPACT_REV",
    "AUTH_ENABLED", "AUTH_REVISION", "CLUSTER_VERSION", "DOWNGRADE", "MEMBER_REMOVED_VALUE",
    "encode_u64", "decode_u64", "conf_state_json", "parse_conf_state_json", "member_json", "member_key",
    "alarm_key",
]
