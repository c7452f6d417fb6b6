"""The `key` bucket on etcd's backend: rows byte-exact as etcd writes them.

A row is `revision_to_bytes(rev, tombstone)` -> marshalled `mvccpb.KeyValue`
(backend-schema.md §2.1, §2.2). A tombstone row carries only the key. Fields
that are zero are left out, in field order, which is what both gogo protobuf
and this protobuf runtime produce.

`BackendKeyBucket` implements the store's `KeyBucket` on any object with the
backend's methods (put/delete/get/range/items); it never commits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

import attrs

from proto.mvccpb import kv_pb2
from trietcd.mvcc.errors import CorruptError
from trietcd.mvcc.revision import Revision, bytes_to_revision, revision_to_bytes

# The names of backend-schema.md §1 and §3 (the same as trietcd/backend/schema.py;
# importing that package would load the backend's shell too).
KEY_BUCKET = b"key"
META_BUCKET = b"meta"
SCHEDULED_COMPACT_REV = b"scheduledCompactRev"
FINISHED_COMPACT_REV = b"finishedCompactRev"

_pack_revision = struct.Struct(">QcQ").pack  # revision.py's key layout
_KeyValuePb = kv_pb2.KeyValue
_parse = _KeyValuePb.FromString


@attrs.frozen(slots=True)
class KeyValue:
    """One row of the key bucket (mvccpb.KeyValue)."""

    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


class Backend(Protocol):
    """What the store uses of the backend (trietcd/backend/backend.py)."""

    def put(self, bucket: bytes, key: bytes, value: bytes) -> None: ...
    def delete(self, bucket: bytes, key: bytes) -> None: ...
    def get(self, bucket: bytes, key: bytes) -> bytes | None: ...
    def range(self, bucket: bytes, start: bytes, end: bytes, limit: int = 0) -> list[tuple[bytes, bytes]]: ...
    def items(self, bucket: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def encode_kv(kv: KeyValue, tombstone: bool = False) -> bytes:
    """The marshalled mvccpb.KeyValue of a row (a tombstone keeps only the key)."""
    if tombstone:
        return _KeyValuePb(key=kv.key).SerializeToString()
    return _KeyValuePb(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    ).SerializeToString()


def decode_kv(data: bytes) -> KeyValue:
    """A row value -> KeyValue."""
    try:
        m = _parse(data)
    except Exception as exc:  # the runtime's DecodeError
        raise CorruptError(f"bad KeyValue row {data[:32].hex()}") from exc
    return KeyValue(m.key, m.create_revision, m.mod_revision, m.version, m.value, m.lease)


def compact_rev_bytes(rev: int) -> bytes:
    """scheduledCompactRev / finishedCompactRev value: the revision (rev, 0)."""
    return revision_to_bytes(Revision(rev, 0))


def _row_bytes(key_len: int, value_len: int) -> int:
    return 16 + key_len + value_len  # a bbolt leaf element header, key and value


class BackendKeyBucket:
    """The `key` bucket of a backend. Row count and size are counted once, on
    first use (or handed over by the store's restore, which reads every row)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._count: int | None = None
        self._size: int = 0

    def put(self, rev: Revision, kv: KeyValue, tombstone: bool) -> None:
        key = revision_to_bytes(rev, tombstone)
        value = encode_kv(kv, tombstone)
        self.backend.put(KEY_BUCKET, key, value)
        if self._count is not None:
            self._count += 1
            self._size += _row_bytes(len(key), len(value))

    def get(self, rev: Revision) -> KeyValue:
        # On every Range: the revision packed directly (revisions in the index
        # are valid), one backend lookup, one parse.
        data = self.backend.get(KEY_BUCKET, _pack_revision(rev[0], b"_", rev[1]))
        if data is None:
            raise CorruptError(f"no row for revision {rev.main}_{rev.sub}")
        m = _parse(data)
        return KeyValue(m.key, m.create_revision, m.mod_revision, m.version, m.value, m.lease)

    def delete(self, rev: Revision, tombstone: bool = False) -> None:
        key = revision_to_bytes(rev, tombstone)
        if self._count is not None:
            value = self.backend.get(KEY_BUCKET, key)
            if value is None:
                return
            self._count -= 1
            self._size -= _row_bytes(len(key), len(value))
        self.backend.delete(KEY_BUCKET, key)

    def scan(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, bool]]:
        """Up to limit rows with start <= revision and main <= upto_main, in order."""
        rows = self.backend.range(
            KEY_BUCKET, revision_to_bytes(start), revision_to_bytes(Revision(upto_main + 1, 0)), limit
        )
        return [bytes_to_revision(k) for k, _ in rows]

    def rows(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, KeyValue, bool]]:
        """Up to limit (rev, row, is_tombstone) with start <= rev and main <= upto_main, in order
        (a tombstone's row carries only the key)."""
        found = self.backend.range(
            KEY_BUCKET, revision_to_bytes(start), revision_to_bytes(Revision(upto_main + 1, 0)), limit
        )
        out = []
        for k, v in found:
            rev, tombstone = bytes_to_revision(k)
            out.append((rev, decode_kv(v), tombstone))
        return out

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """(row key, row value) bytes in key order."""
        return self.backend.items(KEY_BUCKET)

    def items(self) -> Iterator[tuple[Revision, KeyValue, bool]]:
        for k, v in self.backend.items(KEY_BUCKET):
            rev, tombstone = bytes_to_revision(k)
            yield rev, decode_kv(v), tombstone

    def set_counts(self, count: int, size: int) -> None:
        self._count, self._size = count, size

    def _ensure_counts(self) -> None:
        if self._count is None:
            count = size = 0
            for k, v in self.backend.items(KEY_BUCKET):
                count += 1
                size += _row_bytes(len(k), len(v))
            self._count, self._size = count, size

    def size_bytes(self) -> int:
        self._ensure_counts()
        return self._size

    def __len__(self) -> int:
        self._ensure_counts()
        assert self._count is not None
        return self._count
