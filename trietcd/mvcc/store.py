"""The MVCC key-value store (etcd 3.5 `mvcc/kvstore*.go` semantics), sans-IO.

Two parts, like etcd:

- the key index (`TreeIndex`): key -> generations of revisions;
- the key bucket (`KeyBucket`): revision -> KeyValue row, the shape of etcd's
  bbolt `key` bucket (17-byte revision keys, tombstone rows carry only the key).
  `MemoryKeyBucket` keeps it in memory; `BackendKeyBucket` (rows.py) keeps it in
  the backend's `key` bucket, byte-exact as etcd.

Rules:

- A fresh store is at revision 1 (etcd's first revision; no key has it).
- A write transaction that changes something gets revision current+1; all its
  changes share that main revision with sub 0, 1, 2, ... A write transaction
  that changes nothing (a delete of nothing) leaves the revision alone. Its rows
  go to the bucket as they are made, in revision order.
- Reads inside a write transaction see its own earlier changes.
- Reads at a revision > current fail with FutureRevError, at a revision below
  the compacted revision with CompactedError (the compacted revision itself is
  still readable).
- Only one transaction is open at a time: callers run each request to its end
  without yielding (the server's applier owns the store).

A durable store (`KVStore.open(backend)`) never commits: its owner commits the
backend. Compaction is etcd's (backend-schema.md §2.4): `compact(rev)` moves the
compacted revision and the index at once, writes `scheduledCompactRev` (commit
right after), and returns a `Compaction` whose steps delete the rows; the last
step writes `finishedCompactRev`. Reads never need the deleted rows, so the
rows may go later. On restart (`open`) a compaction that was scheduled but not
finished is offered again as `pending_compaction`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

from trietcd.mvcc.errors import CompactedError, FutureRevError
from trietcd.mvcc.key_index import KeyIndex, RevisionNotFound, TreeIndex
from trietcd.mvcc.revision import Revision, bytes_to_revision, revision_to_bytes
from trietcd.mvcc.rows import (
    FINISHED_COMPACT_REV,
    KEY_BUCKET,
    META_BUCKET,
    SCHEDULED_COMPACT_REV,
    Backend,
    BackendKeyBucket,
    KeyValue,
    compact_rev_bytes,
    decode_kv,
    encode_kv,
)
from trietcd.wal.record import crc32c

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
    def delete(self, rev: Revision, tombstone: bool = False) -> None: ...
    def scan(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, bool]]:
        """Up to limit (rev, is_tombstone) of rows with start <= rev and main <= upto_main."""
        ...
    def rows(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, KeyValue, bool]]:
        """Up to limit (rev, row, is_tombstone) with start <= rev and main <= upto_main, in order."""
        ...
    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every row as etcd stores it (revision bytes, KeyValue bytes), in order."""
        ...
    def items(self) -> Iterator[tuple[Revision, KeyValue, bool]]: ...
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

    def delete(self, rev: Revision, tombstone: bool = False) -> None:
        kv, _ = self._rows.pop(rev)
        self._size_bytes -= _row_bytes(kv)
        self._deleted += 1
        if self._deleted > len(self._rows):
            self._order = [r for r in self._order if r in self._rows]
            self._deleted = 0

    def scan(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, bool]]:
        order = self._order
        out = []
        for i in range(bisect.bisect_left(order, start), len(order)):
            rev = order[i]
            if rev.main > upto_main or len(out) >= limit:
                break
            row = self._rows.get(rev)
            if row is not None:
                out.append((rev, row[1]))
        return out

    def rows(self, start: Revision, upto_main: int, limit: int) -> list[tuple[Revision, KeyValue, bool]]:
        rows = self._rows
        return [(rev, *rows[rev]) for rev, _ in self.scan(start, upto_main, limit)]

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        for rev, kv, tombstone in self.items():
            yield revision_to_bytes(rev, tombstone), encode_kv(kv, tombstone)

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
    def __init__(self, bucket: KeyBucket | None = None, backend: Backend | None = None) -> None:
        """An empty store; with a backend, rows go to its `key` bucket (use
        `open` for a backend that may hold rows already)."""
        if backend is not None:
            assert bucket is None
            bucket = BackendKeyBucket(backend)
        self.bucket: KeyBucket = bucket if bucket is not None else MemoryKeyBucket()
        self.backend = backend
        self.index = TreeIndex()
        self.current_revision = 1  # invariant: >= every main revision in the index
        self.compact_revision = -1  # -1: never compacted; invariant: <= current_revision
        self.finished_compact_revision = -1  # the last compaction whose rows are all gone
        # A compaction scheduled before the restart and not finished; its owner
        # runs it (and commits) like one `compact` returned.
        self.pending_compaction: Compaction | None = None
        self._txn_open = False
        # Called as listener(revision, changes) after each write transaction
        # that changed something (watch hub, lessor).
        self.commit_listeners: list[Callable[[int, list[Change]], None]] = []

    @classmethod
    def open(cls, backend: Backend) -> KVStore:
        """The store kept in backend, rebuilt as etcd's restore does: every row of
        `key` in order; a key's first row starts it (a tombstone first: the key's
        earlier rows are compacted away, it is not indexed), a tombstone ends the
        generation, a later put starts the next. The current revision is the main
        of the last row, but at least the compacted revision."""
        store = cls(backend=backend)
        finished = _meta_revision(backend, FINISHED_COMPACT_REV)
        scheduled = _meta_revision(backend, SCHEDULED_COMPACT_REV)
        key_indexes: dict[bytes, KeyIndex] = {}
        current = 1
        count = size = 0
        for k, v in backend.items(KEY_BUCKET):
            count += 1
            size += 16 + len(k) + len(v)
            rev, tombstone = bytes_to_revision(k)
            current = rev.main
            kv = decode_kv(v)
            ki = key_indexes.get(kv.key)
            if ki is None:
                if tombstone:
                    continue
                ki = KeyIndex(kv.key)
                ki.restore(Revision(kv.create_revision, 0), rev, kv.version)
                key_indexes[kv.key] = ki
            elif tombstone:
                try:
                    ki.tombstone(rev)
                except RevisionNotFound:
                    pass  # a second tombstone: etcd logs it and goes on
            else:
                ki.put(rev)
        store.index.load(key_indexes)
        assert isinstance(store.bucket, BackendKeyBucket)
        store.bucket.set_counts(count, size)
        if finished is not None:
            store.compact_revision = store.finished_compact_revision = finished
        if scheduled is not None and scheduled <= store.compact_revision:
            scheduled = None
        # etcd takes max(last row, finished); a compaction that deleted every
        # row and stopped before writing finishedCompactRev would then leave the
        # revision below the scheduled one and the compaction not resumed.
        # The scheduled revision was current once, so it counts too.
        store.current_revision = max(current, store.compact_revision, scheduled or 0)
        if scheduled is not None:
            store.pending_compaction = store.compact(scheduled)
        return store

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

    def compact(self, rev: int) -> Compaction:
        """Compact history up to rev: keeps, per key, its latest row at rev if the
        key is live then, and every row after rev. Reads below rev fail from now
        on. With a backend, writes `scheduledCompactRev` (the caller commits it)
        and returns the compaction to run step by step; without one, the
        compaction is already done."""
        assert not self._txn_open
        if rev <= self.compact_revision:
            raise CompactedError
        if rev > self.current_revision:
            raise FutureRevError
        self.compact_revision = rev
        if self.backend is not None:
            self.backend.put(META_BUCKET, SCHEDULED_COMPACT_REV, compact_rev_bytes(rev))
        compaction = Compaction(self, rev, self.index.compact(rev))
        if self.backend is None:
            compaction.run()
        return compaction

    def _finish_compaction(self, rev: int) -> None:
        # Compactions run in the order they were made; a late finish of an
        # older one must not move finishedCompactRev back.
        if rev <= self.finished_compact_revision:
            return
        self.finished_compact_revision = rev
        if self.backend is not None:
            self.backend.put(META_BUCKET, FINISHED_COMPACT_REV, compact_rev_bytes(rev))

    def live(self) -> Iterator[KeyValue]:
        """Every live key's current row, in key order: one pass over the index (a paged Range would count
        the whole range again for every page)."""
        get = self.bucket.get
        for ki in self.index.visit(b"", b""):
            if ki.generations[-1].revs:
                yield get(ki.modified)

    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """Maintenance.HashKV (backend-schema.md §8.2): (hash, current revision,
        compacted revision). CRC-32C of b"key" and each row (key, value) in key
        order with main <= rev, leaving out rows at or below the compacted
        revision that compaction at rev would not keep (none left out when it
        keeps nothing)."""
        assert not self._txn_open
        cur, compacted = self.current_revision, self.compact_revision
        if 0 < rev <= compacted:
            raise CompactedError
        if rev > cur:
            raise FutureRevError
        if rev <= 0:
            rev = cur
        keep = self.index.keep(rev)
        upper = revision_to_bytes(Revision(rev + 1, 0))
        lower = revision_to_bytes(Revision(compacted + 1, 0)) if compacted >= 0 else b""
        h = crc32c(0, KEY_BUCKET)
        for k, v in self.bucket.raw_items():
            if k >= upper:
                break
            if k < lower and keep and bytes_to_revision(k)[0] not in keep:
                continue
            h = crc32c(crc32c(h, k), v)
        return h, cur, compacted

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
        # The key's state at this revision is its latest (nothing newer than `main` exists). A new key is the
        # common case, so this asks without raising RevisionNotFound.
        g = store.index.live_generation(key)
        if g is not None:
            create_revision, ver = g.created.main, g.ver
        else:
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
            store.bucket.delete(change.rev, change.deleted)
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


class Compaction:
    """Deleting the rows a compaction at `revision` does not keep (etcd's
    scheduleCompaction): each step looks at up to `limit` rows with main <=
    revision, deletes those not in `keep`, and the step that sees fewer than
    `limit` rows writes `finishedCompactRev`. Commit the backend after each
    step. Run compactions in the order `compact` made them."""

    def __init__(self, store: KVStore, revision: int, keep: set[Revision]) -> None:
        self.revision = revision
        self.keep = keep
        self.done = False
        self.deleted = 0  # rows deleted so far
        self._store = store
        self._next = Revision(0, 0)

    def step(self, limit: int = 1000) -> bool:
        """One batch; True when the compaction is done."""
        assert limit > 0
        if self.done:
            return True
        bucket, keep = self._store.bucket, self.keep
        rows = bucket.scan(self._next, self.revision, limit)
        for rev, tombstone in rows:
            if rev not in keep:
                bucket.delete(rev, tombstone)
                self.deleted += 1
        if len(rows) < limit:
            self._store._finish_compaction(self.revision)
            self.done = True
            return True
        last = rows[-1][0]
        self._next = Revision(last.main, last.sub + 1)
        return False

    def run(self, limit: int = 1000) -> None:
        """All steps at once (no commits in between)."""
        while not self.step(limit):
            pass


def _meta_revision(backend: Backend, key: bytes) -> int | None:
    data = backend.get(META_BUCKET, key)
    if not data:
        return None
    return bytes_to_revision(data)[0].main
