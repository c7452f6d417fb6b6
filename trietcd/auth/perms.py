"""Key permissions of one user, merged over its roles (etcd 3.5.1 `server/auth/range_perm_cache.go` over
`pkg/adt`'s interval tree). Pure.

Rules, as etcd's:
- Keys compare "affinely": the empty key is greater than every other key, at either end of an interval.
- A permission with no range_end covers its key alone, [key, key+"\\0"); a range_end of "\\0" means every key
  from key on, [key, +inf); any other range_end gives [key, range_end).
- A single-key request (no range_end) is allowed when any permitted interval touches [key, key+"\\0").
- A range request [key, range_end) (range_end "\\0": [key, +inf)) is allowed when the permitted intervals that
  overlap it, taken in order of their beginning, leave no gap and reach from its beginning to its end.
"""

from __future__ import annotations

from collections.abc import Iterable

from proto.authpb import auth_pb2

__all__ = ["UserPerms", "merge_perms"]

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE

# An interval bound as a sort key: (1, b"") is +inf (the empty key), (0, key) any other key.
Bound = tuple[int, bytes]
Interval = tuple[Bound, Bound]


def _bound(key: bytes) -> Bound:
    return (1, b"") if not key else (0, key)


def _point(key: bytes) -> Interval:
    return _bound(key), _bound(key + b"\x00")


def _overlaps(q: Interval, iv: Interval) -> bool:
    # adt Interval.Compare == 0: neither wholly left of the other.
    if q[0] < iv[0] and q[1] <= iv[0]:
        return False
    return not q[0] >= iv[1]


class UserPerms:
    """The read and write intervals a user's roles grant, each list sorted by beginning."""

    def __init__(self, read: list[Interval], write: list[Interval]) -> None:
        self.read = sorted(read)
        self.write = sorted(write)

    def allows(self, key: bytes, range_end: bytes, perm_type: int) -> bool:
        assert perm_type in (READ, WRITE), perm_type
        intervals = self.read if perm_type == READ else self.write
        if not range_end:
            q = _point(key)
            return any(_overlaps(q, iv) for iv in intervals)
        q = (_bound(key), _bound(b"" if range_end == b"\x00" else range_end))
        return _covers(intervals, q)


def _covers(intervals: list[Interval], q: Interval) -> bool:
    min_begin: Bound | None = None
    max_end: Bound | None = None
    for iv in intervals:
        if not _overlaps(q, iv):
            continue
        if min_begin is None:
            min_begin, max_end = iv
            continue
        if max_end < iv[0]:
            return False  # a gap
        if iv[1] > max_end:
            max_end = iv[1]
    return min_begin is not None and max_end >= q[1] and min_begin <= q[0]


def perm_interval(p: auth_pb2.Permission) -> Interval:
    if not p.range_end:
        return _point(p.key)
    return _bound(p.key), _bound(b"" if p.range_end == b"\x00" else p.range_end)


def merge_perms(roles: Iterable[auth_pb2.Role]) -> UserPerms:
    read: list[Interval] = []
    write: list[Interval] = []
    for role in roles:
        for p in role.keyPermission:
            iv = perm_interval(p)
            if p.permType in (READ, READWRITE):
                read.append(iv)
            if p.permType in (WRITE, READWRITE):
                write.append(iv)
    return UserPerms(read, write)
