"""Revisions: the (main, sub) pair that names one change in the MVCC history.

`main` is the store revision of one write transaction; `sub` counts the changes
inside it (0, 1, 2, ...). In the `key` bucket a revision is the 17-byte key
main(8 BE) '_' sub(8 BE), followed by 't' for a tombstone, so byte order equals
(main, sub) order.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from trietcd.mvcc.errors import CorruptError

REVISION_BYTES = 17
TOMBSTONE_MARK = b"t"

_struct = struct.Struct(">QcQ")  # '>' means no padding: 8 + 1 + 8 bytes


class Revision(NamedTuple):
    """(main, sub); tuples compare lexicographically, which is etcd's order."""

    main: int
    sub: int = 0


def revision_to_bytes(rev: Revision, tombstone: bool = False) -> bytes:
    assert rev.main >= 0 and rev.sub >= 0, rev
    out = _struct.pack(rev.main, b"_", rev.sub)
    assert len(out) == REVISION_BYTES
    return out + TOMBSTONE_MARK if tombstone else out


def bytes_to_revision(data: bytes) -> tuple[Revision, bool]:
    """Decode a `key` bucket key; returns (revision, is_tombstone)."""
    if len(data) == REVISION_BYTES:
        tombstone = False
    elif len(data) == REVISION_BYTES + 1 and data[REVISION_BYTES:] == TOMBSTONE_MARK:
        tombstone = True
    else:
        raise CorruptError(f"bad revision key {data.hex()}")
    main, sep, sub = _struct.unpack(data[:REVISION_BYTES])
    if sep != b"_" or main >= 1 << 63 or sub >= 1 << 63:
        raise CorruptError(f"bad revision key {data.hex()}")
    return Revision(main, sub), tombstone
