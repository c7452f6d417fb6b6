"""Applying a raw v2 `etcdserverpb.Request` entry to the store (raft-log-and-apply.md §4.1;
etcd server/etcdserver/apply_v2.go).

Dispatch on Method: PUT is Update / CompareAndSwap / Create when PrevExist is set, else
CompareAndSwap when a previous value or index is given, else a member's attributes (path
matching `/0/members/<hex>/attributes` anywhere, as etcd's unanchored regexp does), else the
cluster version (`/0/version` exactly), else Set. POST creates a unique in-order child, DELETE
deletes or compare-and-deletes, QGET reads, SYNC expires keys whose expire time is at or before
the request's `Time`.

The store's answers (V2Error) come back in the Response, as etcd hands them to a waiting
proposer; they change nothing but the stats. What etcd panics on raises here: an attributes
update of a member the store never had (UnknownMemberError), an attributes value that is not
etcd's JSON (CorruptError, a ValueError) or a cluster version that is not semver (ValueError).
"""

from __future__ import annotations

import re

import attrs

from .gojson import GoTime
from .members import VERSION_KEY, parse_attributes
from .node import Event, V2Error

__all__ = ["Response", "UnknownMethodError", "apply_request", "member_id_from_attributes_path"]

_MEMBER_ATTRIBUTES = re.compile(r"/0/members/[0-9A-Fa-f]{1,16}/attributes")
_HEX_ID = re.compile(r"[0-9A-Fa-f]{1,16}")


class UnknownMethodError(Exception):
    def __init__(self) -> None:
        super().__init__("etcdserver: unknown method")


@attrs.frozen
class Response:
    """etcd's v2 Response: the event of a change or read, or the error answered."""

    event: Event | None = None
    error: Exception | None = None


def member_id_from_attributes_path(path: str) -> int:
    """etcd's MustParseMemberIDFromKey(path.Dir(p)): the last element of the cleaned directory
    part of `path`, parsed as hex; ValueError where etcd panics."""
    rooted = path.startswith("/")
    stack: list[str] = []
    for part in path[: path.rfind("/") + 1].split("/"):
        if part in ("", "."):
            continue
        if part == ".." and stack and stack[-1] != "..":
            stack.pop()
        elif part != ".." or not rooted:
            stack.append(part)
    name = stack[-1] if stack else ""
    if not _HEX_ID.fullmatch(name):
        raise ValueError(f"failed to parse member id from key {path!r}")
    return int(name, 16)


def apply_request(store, req, now_ns: int) -> Response:
    """Apply `req` (a parsed Request) to `store` (a V2Store); `now_ns` is this member's wall
    clock, used for the TTLs events report."""
    method = req.Method
    try:
        if method == "PUT":
            return _put(store, req, now_ns)
        if method == "POST":
            return Response(store.create(req.Path, req.Dir, req.Val, True, _expire(req),
                                         now_ns=now_ns))
        if method == "DELETE":
            if req.PrevIndex > 0 or req.PrevValue != "":
                return Response(store.compare_and_delete(req.Path, req.PrevValue, req.PrevIndex,
                                                         now_ns=now_ns))
            return Response(store.delete(req.Path, req.Dir, req.Recursive, now_ns=now_ns))
        if method == "QGET":
            return Response(store.get(req.Path, req.Recursive, req.Sorted, now_ns=now_ns))
        if method == "SYNC":
            store.delete_expired_keys(req.Time, now_ns=now_ns)
            return Response()
    except V2Error as err:
        return Response(error=err)
    return Response(error=UnknownMethodError())


def _put(store, req, now_ns: int) -> Response:
    expire = _expire(req)
    refresh = req.HasField("Refresh") and req.Refresh
    if req.HasField("PrevExist"):
        if req.PrevExist:
            if req.PrevIndex == 0 and req.PrevValue == "":
                return Response(store.update(req.Path, req.Val, expire, refresh, now_ns=now_ns))
            return Response(store.compare_and_swap(req.Path, req.PrevValue, req.PrevIndex,
                                                   req.Val, expire, refresh, now_ns=now_ns))
        return Response(store.create(req.Path, req.Dir, req.Val, False, expire, now_ns=now_ns))
    if req.PrevIndex > 0 or req.PrevValue != "":
        return Response(store.compare_and_swap(req.Path, req.PrevValue, req.PrevIndex, req.Val,
                                               expire, refresh, now_ns=now_ns))
    if _MEMBER_ATTRIBUTES.search(req.Path):
        member_id = member_id_from_attributes_path(req.Path)
        name, client_urls = parse_attributes(req.Val)
        store.update_attributes(member_id, name, client_urls)
        return Response()
    if req.Path == VERSION_KEY:
        store.set_cluster_version(req.Val)
        return Response()
    return Response(store.set(req.Path, req.Dir, req.Val, expire, refresh, now_ns=now_ns))


def _expire(req) -> GoTime | None:
    """The request's Expiration (Unix ns) as an expire time; 0 is none (permanent)."""
    return GoTime(req.Expiration) if req.Expiration != 0 else None
