"""etcd's v2 store, as far as an etcd 3.5 member needs it (sans-IO).

Membership and the cluster version live in the v2 store's `/0` namespace; the whole store is the
`data` of every raft snapshot (`.snap` file, wal-and-snap.md §7.3) and raw v2 Request entries in
the WAL (publish, cluster version, SYNC) are applied to it (raft-log-and-apply.md §2, §4, §5).

Modules: `gojson` (Go encoding/json strings and times), `node` (tree nodes, events, history,
errors), `members` (the `/0` layout), `store` (`V2Store`), `apply` (a v2 Request's effect),
`request` (classifying and writing raw v2 Request entries).
"""

from .apply import Response, UnknownMethodError
from .gojson import GoTime
from .members import MemberRecord, UnknownMemberError
from .node import CorruptError, Event, NodeExtern, V2Error
from .request import (
    cluster_version_request,
    decode_v2_request,
    encode_v2_request,
    is_v2_request,
    publish_request,
)
from .store import V2Store

__all__ = [
    "CorruptError",
    "Event",
    "GoTime",
    "MemberRecord",
    "NodeExtern",
    "Response",
    "UnknownMemberError",
    "UnknownMethodError",
    "V2Error",
    "V2Store",
    "cluster_version_request",
    "decode_v2_request",
    "encode_v2_request",
    "is_v2_request",
    "publish_request",
]
