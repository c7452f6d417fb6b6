"""Request IDs as etcd's idutil generates them (pkg/idutil/id.go).

An ID is 64 bits: the low 16 bits of the member ID on top, then 48 bits of a
counter that starts at (milliseconds since the epoch at process start, low 40
bits) << 8 and grows by one per ID. IDs of one member never repeat while its
clock moves forward between restarts; IDs of different members differ in the
prefix. Lease IDs chosen by the server come from the same generator with the
top bit cleared.
"""

from __future__ import annotations

__all__ = ["IdGenerator"]

_SUFFIX_BITS = 48
_SUFFIX_MASK = (1 << _SUFFIX_BITS) - 1
_TS_MASK = (1 << 40) - 1


class IdGenerator:
    def __init__(self, member_id: int, now_ms: int) -> None:
        self._prefix = (member_id & 0xFFFF) << _SUFFIX_BITS
        self._suffix = (now_ms & _TS_MASK) << 8

    def next(self) -> int:
        self._suffix += 1
        return self._prefix | (self._suffix & _SUFFIX_MASK)
