"""The MVCC key-value store (etcd 3.5 `mvcc/kvstore*.go` semantics), sans-IO.

Two parts, like etcd:

- the key index (`TreeIndex`): key -> generations of revisions;
- the key bucket (`KeyBucket`): revision -> KeyValue row, the shape of etcd's
  bbolt `key` bucket (17-byte revision keys, tombstone rows carry only the key).
  `MemoryKeyBucket` keeps it in memory; the durable backend fills the same
  interface later.

Rules:

- A fresh store is at revision 1 (etcd's first revision; no key has it).
- A write transaction that changes something gets revision current+1; all its
  changes share that main revision with sub 0, 1, 2, ... A write transaction
  that changes nothing (a delete of nothing) leaves the revision alone.
- Reads inside a write transaction see its own earlier changes.
- Reads at a revision > current fail with FutureRevError, at a revision below
  the compacted revision with CompactedError (the compacted revision itself is
  still readable).
- Only one transaction is open at a time: callers run each request to its end
  without yielding (the server's applier owns the store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

from trietcd.mvcc.errors import CompactedError, FutureRevError
from trietcd.mvcc.key_index import RevisionNotFound, TreeIndex
from trietcd.mvcc.revision import Revision


@attrs.frozen(slots=True)
class KeyValue:
    """One row of the key bucket (mvccpb.KeyValue)."""

    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


@attrs.frozen(slots=True)
class Change:
    """One change of a write transaction, in order: a put or a delete (tombstone)."""

    rev: Revision
    kv: KeyValue  # for a delete: only the key, like etcd's tombstone row
    deleted: bool = False


@attrs.frozen(slots=True)
class RangeResult:
    kvs: list[KeyValue]
    rev: int  # the store revision the read saw (the response header revision)
    count: int  # live keys in range at the read revision, ignoring limit


class KeyBucket(Protocol):
    """Rows of the `key` bucket in revision order."""

    def put(self, rev: Revision, kv: KeyValue, tombstone: bool) -> None: ...
    def get(self, rev: Revision) -> KeyValue: ...
    def delete(self, rev: Revision) -> None: ...
    def revisions_upto(self, main: int) -> list[Revision]: ...
    def size_bytes(self) -> int: ...
    def __len__(self) -> int: ...


class MemoryKeyBucket:
    def __init__(self) -> None:
        self._rows: dict[Revision, tuple[KeyValue, bool]] = {}
        self._order: list[Revision] = []  # ascending; rows are only appended in order
        self._deleted = 0  # entries of _order whose row is gone
        self._size_bytes = 0  # what the rows would take as bucket entries

    def __len__(self) -> int:
        return len(self._rows)

    def size_bytes(self) -> int:
        return self._size_bytes

    def put(self, rev: Revision, kv: KeyValue, tombstone: bool) -> None:
        order = self._order
        while order and order[-1] not in self._rows:  # rows an aborted txn took back
            order.pop()
            self._deleted -= 1
        assert not order or rev > order[-1], rev
        self._rows[rev] = (kv, tombstone)
        self._size_bytes += _row_bytes(kv)
        self._order.append(rev)

    def get(self, rev: Revision) -> KeyValue:
        return self._rows[rev][0]

    def row(self, rev: Revision) -> tuple[KeyValue, bool]:
        return self._rows[rev]

    def delete(self, rev: Revision) -> None:
        kv, _ = self._rows.pop(rev)
        self._size_bytes -= _row_bytes(kv)
        self._deleted += 1
        if self._deleted > len(self._rows):
            self._order = [r for r in self._order if r in self._rows]
            self._deleted = 0

    def revisions_upto(self, main: int) -> list[Revision]:
        out = []
        for rev in self._order:
            if rev.main > main:
                break
            if rev in self._rows:
                out.append(rev)
        return out

    def items(self) -> Iterator[tuple[Revision, KeyValue, bool]]:
        for rev in self._order:
            row = self._rows.get(rev)
            if row is not None:
                yield rev, row[0], row[1]


def _row_bytes(kv: KeyValue) -> int:
    # A bbolt leaf element (16 bytes), the 17-byte revision key, and the
    # marshalled KeyValue (key, value and four varints, about 24 bytes).
    return 16 + 17 + 24 + len(kv.key) + len(kv.value)


def index_end(range_end: bytes) -> bytes | None:
    """etcd's wire range_end -> the index's end: b"" single key, b"\\0" all keys
    from key on (etcd's mkGteRange), else the exclusive end."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


class KVStore:
    def __init__(self, bucket: KeyBucket | None = None) -> None:
        self.bucket: KeyBucket = bucket if bucket is not None else MemoryKeyBucket()
        self.index = TreeIndex()
        self.current_revision = 1  # invariant: >= every main revision in the index
        self.compact_revision = -1  # -1: never compacted; invariant: <= current_revision
        self._txn_open = False
        # Called as listener(revision, changes) after each write transaction
        # that changed something (watch hub, lessor).
        self.commit_listeners: list[Callable[[int, list[Change]], None]] = []

    # ---- transactions

    def read(self) -> ReadTxn:
        return ReadTxn(self)

    def write(self) -> WriteTxn:
        assert not self._txn_open, "a write transaction is already open"
        self._txn_open = True
        return WriteTxn(self)

    # ---- one-shot operations (each its own transaction)

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult:
        return self.read().range(key, range_end, rev=rev, limit=limit, count_only=count_only)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> tuple[int, KeyValue | None]:
        """Returns (revision of the put, previous KeyValue or None)."""
        with self.write() as txn:
            prev = txn.get(key)
            rev = txn.put(key, value, lease)
        return rev, prev

    def delete_range(self, key: bytes, range_end: bytes = b"") -> tuple[int, list[KeyValue]]:
        """Returns (header revision, the deleted KeyValues in key order)."""
        with self.write() as txn:
            prev = txn.range(key, range_end).kvs
            _, rev = txn.delete_range(key, range_end)
        return rev, prev

    def size_bytes(self) -> int:
        """Bytes the stored revisions would take in the backend's key bucket."""
        return self.bucket.size_bytes()

    def compact(self, rev: int) -> set[Revision]:
        """Compact history up to rev: keeps, per key, its latest row at rev if the
        key is live then, and every row after rev. Returns the kept revisions <= rev."""
        assert not self._txn_open
        if rev <= self.compact_revision:
            raise CompactedError
        if rev > self.current_revision:
            raise FutureRevError
        self.compact_revision = rev
        keep = self.index.compact(rev)
        for r in self.bucket.revisions_upto(rev):
            if r not in keep:
                self.bucket.delete(r)
        return keep

    # ---- reads shared by both transaction kinds

    def _range(
        self, key: bytes, range_end: bytes, cur_rev: int, rev: int, limit: int, count_only: bool
    ) -> RangeResult:
        if rev > cur_rev:
            raise FutureRevError
        if rev <= 0:
            rev = cur_rev
        if rev < self.compact_revision:
            raise CompactedError
        end = index_end(range_end)
        if count_only:
            return RangeResult(kvs=[], rev=cur_rev, count=self.index.count_revisions(key, end, rev))
        revs, total = self.index.revisions(key, end, rev, limit)
        if limit > 0:
            revs = revs[:limit]
        get = self.bucket.get
        return RangeResult(kvs=[get(r) for r in revs], rev=cur_rev, count=total)

    def _get(self, key: bytes, cur_rev: int, rev: int) -> KeyValue | None:
        # _range of one key, without the result list.
        if rev > cur_rev:
            raise FutureRevError
        if rev <= 0:
            rev = cur_rev
        if rev < self.compact_revision:
            raise CompactedError
        found = self.index.latest(key, rev)
        return None if found is None else self.bucket.get(found)


class ReadTxn:
    """A read view at the store's current revision."""

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self.rev = store.current_revision

    @property
    def first_rev(self) -> int:
        return self._store.compact_revision

    def range(
        self, key: bytes, range_end: bytes = b"", *, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        return self._store._range(key, range_end, self.rev, rev, limit, count_only)

    def get(self, key: bytes, rev: int = 0) -> KeyValue | None:
        """key's row at rev (0: this view's revision), or None; errors as range."""
        return self._store._get(key, self.rev, rev)


class WriteTxn:
    """All changes get main revision begin_rev + 1; use as a context manager
    (or call end()) so the store's revision moves only when something changed."""

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self.begin_rev = store.current_revision
        self.changes: list[Change] = []
        self._ended = False

    def __enter__(self) -> WriteTxn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    @property
    def rev(self) -> int:
        """The revision this transaction's reads see (and writes create, once any)."""
        return self.begin_rev + 1 if self.changes else self.begin_rev

    @property
    def first_rev(self) -> int:
        return self._store.compact_revision

    def range(
        self, key: bytes, range_end: bytes = b"", *, rev: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        assert not self._ended
        return self._store._range(key, range_end, self.rev, rev, limit, count_only)

    def get(self, key: bytes, rev: int = 0) -> KeyValue | None:
        """key's row at rev (0: this transaction's revision), or None."""
        assert not self._ended
        return self._store._get(key, self.rev, rev)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        assert not self._ended
        store = self._store
        main = self.begin_rev + 1
        idx_rev = Revision(main, len(self.changes))
        try:
            _, created, ver = store.index.get(key, main)
            create_revision = created.main
        except RevisionNotFound:
            create_revision, ver = main, 0
        kv = KeyValue(
            key=key, create_revision=create_revision, mod_revision=main, version=ver + 1, value=value, lease=lease
        )
        store.bucket.put(idx_rev, kv, False)
        store.index.put(key, idx_rev)
        self.changes.append(Change(idx_rev, kv))
        return main

    def delete_range(self, key: bytes, range_end: bytes = b"") -> tuple[int, int]:
        """Returns (number deleted, revision for the response header)."""
        assert not self._ended
        keys, _ = self._store.index.range(key, index_end(range_end), self.rev)
        for k in keys:
            self._delete(k)
        if keys or self.changes:
            return len(keys), self.begin_rev + 1
        return 0, self.begin_rev

    def _delete(self, key: bytes) -> None:
        store = self._store
        idx_rev = Revision(self.begin_rev + 1, len(self.changes))
        kv = KeyValue(key=key)
        store.bucket.put(idx_rev, kv, True)
        store.index.tombstone(key, idx_rev)
        self.changes.append(Change(idx_rev, kv, deleted=True))

    def abort(self) -> None:
        """Undo every change and end: the store is as before the transaction.
        (etcd never needs this; here a txn op can fail after earlier ops applied,
        see Applier.txn.)"""
        assert not self._ended
        store = self._store
        for change in reversed(self.changes):
            store.index.undo(change.kv.key, change.rev)
            store.bucket.delete(change.rev)
        self.changes.clear()
        self.end()

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        store = self._store
        store._txn_open = False
        if self.changes:
            store.current_revision += 1
            assert store.current_revision == self.begin_rev + 1
            for listener in store.commit_listeners:
                listener(store.current_revision, self.changes)
