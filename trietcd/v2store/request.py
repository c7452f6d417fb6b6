"""Raw v2 `etcdserverpb.Request` entries: telling them from v3 entries, and writing them.

etcd 3.5.1 still proposes two kinds of raw v2 requests (raft-log-and-apply.md §4,
etcd-3.5-delta.md §3.1): a member's publish (`PUT /0/members/<id>/attributes`) and the leader's
cluster version (`PUT /0/version`), plus `SYNC` when v2 keys with a TTL exist. They are written
by gogoproto, which writes every non-nullable proto2 field even when zero; `PrevExist` and
`Refresh` (nullable) only when set.
"""

from __future__ import annotations

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2

from .members import VERSION_KEY, attributes_json, member_key

__all__ = [
    "V2_METHODS",
    "cluster_version_request",
    "decode_v2_request",
    "encode_v2_request",
    "is_v2_request",
    "publish_request",
]

# Methods a raw v2 Request may carry (what distinguishes it from an InternalRaftRequest's v2
# field 2, which is an embedded message).
V2_METHODS = frozenset((b"PUT", b"POST", b"DELETE", b"QGET", b"SYNC", b"GET", b"HEAD"))


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, next offset); IndexError past the end, ValueError past 10 bytes."""
    value = shift = 0
    for n in range(10):
        b = data[i + n]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + n + 1
        shift += 7
    raise ValueError("varint too long")


def _top_level_fields(data: bytes):
    """(field number, wire type, payload or None) of each top-level field; ValueError on bytes
    that do not walk (truncation, groups, wire types 6/7)."""
    i, end = 0, len(data)
    while i < end:
        try:
            tag, i = _varint(data, i)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, i = _varint(data, i)
                yield number, 0, None
            elif wire_type == 1 or wire_type == 5:
                i += 8 if wire_type == 1 else 4
                if i > end:
                    raise ValueError("truncated fixed field")
                yield number, wire_type, None
            elif wire_type == 2:
                length, i = _varint(data, i)
                if i + length > end:
                    raise ValueError("truncated length-delimited field")
                yield number, 2, data[i:i + length]
                i += length
            else:
                raise ValueError(f"wire type {wire_type}")
        except IndexError:
            raise ValueError("truncated varint") from None


def is_v2_request(data: bytes) -> bool:
    """Whether an EntryNormal's data is a raw v2 Request (raft-log-and-apply.md §2, the
    recommended rule): field 1 is a varint and field 2 is one of the v2 method names. Empty data
    (the leader's no-op) and anything that does not walk as protobuf are not."""
    saw_id = saw_method = False
    try:
        for number, wire_type, payload in _top_level_fields(data):
            if number == 1:
                if wire_type != 0:
                    return False
                saw_id = True
            elif number == 2:
                saw_method = wire_type == 2 and payload in V2_METHODS
                if not saw_method:
                    return False
    except ValueError:
        return False
    return saw_id and saw_method


def decode_v2_request(data: bytes) -> etcdserver_pb2.Request:
    """The Request as etcd decodes it (DecodeError with etcd's text if it would refuse it)."""
    return gogo.parse_like_gogo(etcdserver_pb2.Request, data)


def encode_v2_request(id: int, method: str, path: str, val: str = "", time_ns: int = 0, *,
                      dir: bool = False, prev_value: str = "", prev_index: int = 0,
                      prev_exist: bool | None = None, expiration_ns: int = 0,
                      recursive: bool = False, sorted: bool = False, quorum: bool = False,
                      refresh: bool | None = None) -> bytes:
    """The bytes etcd writes for a v2 Request (every non-nullable field, zero or not)."""
    req = etcdserver_pb2.Request(
        ID=id, Method=method, Path=path, Val=val, Dir=dir, PrevValue=prev_value,
        PrevIndex=prev_index, Expiration=expiration_ns, Recursive=recursive, Sorted=sorted,
        Quorum=quorum, Time=time_ns)
    if prev_exist is not None:
        req.PrevExist = prev_exist
    if refresh is not None:
        req.Refresh = refresh
    return gogo.marshal(req)


def publish_request(id: int, member_id: int, name: str, client_urls) -> bytes:
    """A member's publish entry: `PUT /0/members/<id hex>/attributes` with its name and client
    URLs (fixture WAL entry 3)."""
    return encode_v2_request(id, "PUT", member_key(member_id) + "/attributes",
                             attributes_json(name, client_urls))


def cluster_version_request(id: int, version: str = "3.5.0") -> bytes:
    """The leader's cluster version entry: `PUT /0/version` (fixture WAL entry 4)."""
    return encode_v2_request(id, "PUT", VERSION_KEY, version)
