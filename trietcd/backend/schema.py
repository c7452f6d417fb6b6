"""The names and byte formats of etcd 3.5.1's backend (`member/snap/db`): buckets, meta keys, small codecs.

Specs: backend-schema.md §1 (buckets), §3 (meta), §6 (alarm), §7.1 (member JSON);
etcd-3.5-delta.md §1.1 (`term`, `confState` JSON). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import json

from proto.etcdserverpb import rpc_pb2
from proto.raftpb import raft_pb2
from trietcd.gojson import go_string

KEY = b"key"
META = b"meta"
LEASE = b"lease"
AUTH = b"auth"
AUTH_USERS = b"authUsers"
AUTH_ROLES = b"authRoles"
ALARM = b"alarm"
MEMBERS = b"members"
MEMBERS_REMOVED = b"members_removed"
CLUSTER = b"cluster"

# The buckets a fresh etcd 3.5 db has, in bbolt key order.
BUCKETS: tuple[bytes, ...] = tuple(sorted(
    (KEY, META, LEASE, AUTH, AUTH_USERS, AUTH_ROLES, ALARM, MEMBERS, MEMBERS_REMOVED, CLUSTER)))

# meta bucket
CONSISTENT_INDEX = b"consistent_index"
TERM = b"term"
CONF_STATE = b"confState"
SCHEDULED_COMPACT_REV = b"scheduledCompactRev"
FINISHED_COMPACT_REV = b"finishedCompactRev"

# auth bucket
AUTH_ENABLED = b"authEnabled"
AUTH_REVISION = b"authRevision"

# cluster bucket
CLUSTER_VERSION = b"clusterVersion"
DOWNGRADE = b"downgrade"

MEMBER_REMOVED_VALUE = b"removed"

U64_MAX = (1 << 64) - 1


def encode_u64(n: int) -> bytes:
    """8-byte big-endian, as etcd's `binary.BigEndian.PutUint64`."""
    assert 0 <= n <= U64_MAX, n
    return n.to_bytes(8, "big")


def decode_u64(b: bytes) -> int:
    if len(b) != 8:
        raise ValueError(f"want 8 bytes, got {len(b)}")
    return int.from_bytes(b, "big")


# ---- JSON as Go's encoding/json writes it -------------------------------------------


def _json_u64_list(ids) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def conf_state_json(cs: raft_pb2.ConfState) -> bytes:
    """etcd 3.5's `meta/confState` value: the four id lists (omitted when empty), then `auto_leave`."""
    parts = []
    for name in ("voters", "learners", "voters_outgoing", "learners_next"):
        ids = getattr(cs, name)
        if ids:
            parts.append(f'"{name}":{_json_u64_list(ids)}')
    parts.append('"auto_leave":' + ("true" if cs.auto_leave else "false"))
    return ("{" + ",".join(parts) + "}").encode()


def parse_conf_state_json(b: bytes) -> raft_pb2.ConfState:
    obj = json.loads(b)  # Python's json keeps integers exact (ids exceed 2**53)
    if not isinstance(obj, dict):
        raise ValueError("confState is not a JSON object")
    cs = raft_pb2.ConfState()
    for name in ("voters", "learners", "voters_outgoing", "learners_next"):
        ids = obj.get(name) or []
        if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i <= U64_MAX for i in ids):
            raise ValueError(f"confState {name} is not a list of uint64")
        getattr(cs, name).extend(ids)
    auto_leave = obj.get("auto_leave", False)
    if not isinstance(auto_leave, bool):
        raise ValueError("confState auto_leave is not a bool")
    cs.auto_leave = auto_leave
    return cs


def member_json(id: int, peer_urls, name: str = "", client_urls=(), is_learner: bool = False) -> bytes:
    """The `members` bucket value (backend-schema §7.1): Go field order, omitempty where etcd has it."""
    assert 0 <= id <= U64_MAX, id
    parts = [f'"id":{id}', '"peerURLs":[' + ",".join(go_string(u) for u in peer_urls) + "]"]
    if is_learner:
        parts.append('"isLearner":true')
    if name:
        parts.append('"name":' + go_string(name))
    if client_urls:
        parts.append('"clientURLs":[' + ",".join(go_string(u) for u in client_urls) + "]")
    return ("{" + ",".join(parts) + "}").encode()


def member_key(id: int) -> bytes:
    """A `members` / `members_removed` key: the id in lowercase hex without leading zeros."""
    return format(id, "x").encode()


def alarm_key(member_id: int, alarm: int) -> bytes:
    """An `alarm` bucket key: the marshalled `AlarmMember` (the value is empty)."""
    return rpc_pb2.AlarmMember(memberID=member_id, alarm=alarm).SerializeToString()
