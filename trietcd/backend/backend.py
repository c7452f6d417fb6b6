"""etcd's backend on the page file: one batch write transaction, a read view, a read buffer, commits.

Rules (etcd 3.5.1 `server/mvcc/backend`: backend.go, batch_tx.go, tx_buffer.go, hooks.go):
- Writes go into one long-lived write transaction (`_wtx`) and, mirrored, into the read buffer. Only
  the owner (the applier, in the trio thread) writes, and never while a commit runs.
- Reads never touch `_wtx`: the buffer first, then `_rtx`, a read transaction of the last commit.
  That is what lets `commit_async` spill and fsync `_wtx` in a worker thread while reads go on.
- A commit first runs the hook (delta §1.2): `consistent_index`/`term` are written if they grew,
  a pending `confState` is written. Then, if anything is pending, the file commit; then a fresh read
  view, the old one closed (freed pages stay pending while it is open), a fresh write transaction,
  and only then the buffer is cleared.
- A failed file commit loses the batch (the page file rolls it back): the backend is broken
  from then on (etcd panics there); the WAL replay after a restart repairs it.
- The buffer keeps the caller's value objects: pass `bytes`, never a buffer that changes later.
"""

from __future__ import annotations

import math
import os

import trio

from storage import DB, MemoryFile, compact_tx

from ..wal.record import crc32c
from . import schema
from .batch import MISSING, ReadBuffer, merge_range
from .schema import CONF_STATE, CONSISTENT_INDEX, META, TERM, decode_u64, encode_u64

ITEMS_CHUNK_ROWS = 1000  # rows read per step by `items`; the read view may change between steps
# Defrag commits the copy every 10000 rows, as etcd (defragLimit), or at this many bytes of rows, whichever
# first: committing after every few big values would leave their leaves' old copies free in the file.
DEFRAG_TX_MAX_KEYS = 10_000
DEFRAG_TX_MAX_BYTES = 64 << 20
DEFRAG_FILL_PERCENT = 0.9  # etcd's defrag fill (dense pages: the copy only appends)


class BackendBrokenError(Exception):
    """A commit failed: the batch it held is lost and the backend takes no more writes."""


class Snapshot:
    """A read view of one commit: the bbolt image etcd's Snapshot RPC streams, and its hashes.

    Independent of the backend's later commits and defrags; safe to use from a worker thread. Close it when
    done (pages freed after it stay pending while it is open; a file a defrag replaced stays open for it).
    """

    def __init__(self, tx, on_close=None):
        self._tx = tx
        self._on_close = on_close
        self.size = tx.size

    def write_to(self, stream) -> int:
        return self._tx.write_to(stream)

    def chunks(self, chunk_bytes: int = 1 << 20):
        """The image in pieces of at most `chunk_bytes` (the first holds the two metas)."""
        return self._tx.image_chunks(chunk_bytes)

    def hash(self) -> int:
        """Maintenance.Hash of this view (see `Backend.hash`)."""
        return hash_tx(self._tx, HASH_SKIPPED_META)

    def hash_all(self) -> int:
        """The hash over every row (`etcdutl snapshot status`)."""
        return hash_tx(self._tx, ())

    def close(self) -> None:
        if self._tx.closed:
            return
        db = self._tx.db
        self._tx.rollback()
        if self._on_close is not None:
            self._on_close(db)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class DefragJob:
    """One defrag in progress (see `Backend.begin_defrag`): a dense copy of the commit it began at, in a
    fresh file beside the db, and the writes made since, waiting to be applied to it.

    `copy` and `apply` may run in a worker thread; the backend's owner calls the rest.
    """

    def __init__(self, src_tx, dst: DB, tmp_path: str | None):
        self._src_tx = src_tx
        self.dst = dst
        self.tmp_path = tmp_path
        self.ops: list[tuple[bytes, bytes, bytes | None]] = []  # writes since the copy's commit, in order
        self.copied = False

    def copy(self) -> None:
        """The dense copy of the commit the job began at."""
        try:
            compact_tx(self._src_tx, self.dst, tx_max_bytes=DEFRAG_TX_MAX_BYTES, fill_percent=DEFRAG_FILL_PERCENT,
                       tx_max_keys=DEFRAG_TX_MAX_KEYS)
        finally:
            self._src_tx.rollback()
        self.copied = True

    def take_ops(self) -> list:
        ops, self.ops = self.ops, []
        return ops

    def apply(self, ops) -> None:
        """Replays writes on the copy and commits them (a put or delete overwrites the whole row, so
        replaying one the copy already holds changes nothing)."""
        assert self.copied
        if not ops:
            return
        with self.dst.update() as tx:
            buckets = {}
            for bucket, key, value in ops:
                b = buckets.get(bucket)
                if b is None:
                    b = buckets[bucket] = tx.bucket(bucket)
                if value is None:
                    b.delete(key)
                else:
                    b.put(key, value)

    def discard(self) -> None:
        if not self._src_tx.closed:
            self._src_tx.rollback()
        self.dst.close()
        if self.tmp_path is not None:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass


# Maintenance.Hash leaves out the rows that differ between members applying the same entries.
HASH_SKIPPED_META = (CONSISTENT_INDEX, TERM)


def hash_tx(tx, skip_meta) -> int:
    """CRC-32C of every bucket name and its rows in key order, minus `meta` rows named in skip_meta
    (backend-schema §8.1, delta §1.3)."""
    h = 0
    for name in tx.bucket_names():
        h = crc32c(h, name)
        skip = skip_meta if name == META else ()
        for k, v in tx.bucket(name).items():
            if v is None or k in skip:
                continue
            h = crc32c(crc32c(h, k), v)
    return h


class Backend:
    """The `member/snap/db` store. Open with `Backend.open(path)` or `Backend.open_memory()`.

    `Backend(db)` wraps an open `storage.DB` (opened with no_freelist_sync=True, as etcd does).
    """

    def __init__(self, db: DB, *, batch_limit: int = 10_000, path: str | None = None):
        assert batch_limit > 0, batch_limit
        self._db = db
        self._fsync = db.fsync
        self.path = path
        self.batch_limit = batch_limit
        self.pending = 0  # writes since the last commit, hook writes included (etcd's pending)
        self._buf = ReadBuffer()
        self._bufs = self._buf.buckets  # the same dict, one lookup shorter
        # Why writes are refused now (None: they are not): a commit runs, a commit failed, closed.
        self._write_block: str | None = None
        self._broken: BaseException | None = None
        self._closed = False
        self._conf_state: bytes | None = None  # `confState` JSON to write at the next commit
        self._defrag: DefragJob | None = None  # a defrag in progress: writes are recorded for it too
        self._snapshots_open: dict[DB, int] = {}  # open Snapshots per file
        self._retired: set[DB] = set()  # files a defrag replaced, open while Snapshots of them are
        self._ensure_buckets()
        self._open_views()
        index, term = self._stored_consistent_index()
        self._index = index  # the in-memory pair of set_consistent_index
        self._term = term

    @classmethod
    def open(cls, path: str, *, batch_limit: int = 10_000, fsync: bool = True,
             lock_timeout_s: float | None = None) -> "Backend":
        """Open (or create) the db file at `path`; creates the buckets that are missing. Copies a defrag left
        beside it (`<path>.tmp.<digits>`, from a process that stopped before renaming one over the db) are
        removed once the db's lock is held: no defrag of it can be running then."""
        db = DB.open(path, no_freelist_sync=True, fsync=fsync, lock_timeout_s=lock_timeout_s)
        try:
            _remove_defrag_leftovers(str(path))
            return cls(db, batch_limit=batch_limit, path=str(path))
        except BaseException:
            db.close()
            raise

    @classmethod
    def open_memory(cls, data: bytes = b"", *, batch_limit: int = 10_000, fsync: bool = True) -> "Backend":
        """A backend on a `MemoryFile` holding `data` (empty: a fresh db)."""
        return cls(DB(MemoryFile(data), no_freelist_sync=True, fsync=fsync), batch_limit=batch_limit)

    def _ensure_buckets(self) -> None:
        with self._db.view() as tx:
            missing = [name for name in schema.BUCKETS if tx.bucket(name) is None]
        if missing:
            with self._db.update() as tx:
                for name in missing:
                    tx.create_bucket(name)

    @staticmethod
    def _buckets_of(tx) -> dict:
        return {name: tx.bucket(name) for name in tx.bucket_names()}

    def _stored_consistent_index(self) -> tuple[int, int]:
        index = self.get(META, CONSISTENT_INDEX)
        term = self.get(META, TERM)
        return (decode_u64(index) if index is not None else 0, decode_u64(term) if term is not None else 0)

    # ---- writes (the owner only) ----

    def put(self, bucket: bytes, key: bytes, value: bytes) -> None:
        assert self._write_block is None, self._write_block
        self._wbuckets[bucket].put(key, value)
        buf = self._bufs.get(bucket)
        if buf is None:
            buf = self._buf.bucket(bucket)
        buf.put(key, value)
        self.pending += 1
        if self._defrag is not None:
            self._defrag.ops.append((bucket, key, value))

    def delete(self, bucket: bytes, key: bytes) -> None:
        assert self._write_block is None, self._write_block
        self._wbuckets[bucket].delete(key)
        buf = self._bufs.get(bucket)
        if buf is None:
            buf = self._buf.bucket(bucket)
        buf.put(key, None)
        self.pending += 1
        if self._defrag is not None:
            self._defrag.ops.append((bucket, key, None))

    # ---- reads (buffer over the last commit) ----

    def get(self, bucket: bytes, key: bytes) -> bytes | None:
        buf = self._bufs.get(bucket)
        if buf is not None:
            v = buf.rows.get(key, MISSING)
            if v is not MISSING:
                return v
        b = self._rbuckets.get(bucket)
        return None if b is None else b.get(key)

    def range(self, bucket: bytes, start: bytes, end: bytes, limit: int = 0) -> list[tuple[bytes, bytes]]:
        """Rows with keys in [start, end) in key order (end b"" = to the end of the bucket), at most
        `limit` of them (0 = all)."""
        return merge_range(self._bufs.get(bucket), self._committed(bucket, start, end), start, end,
                           limit)

    def _committed(self, bucket: bytes, start: bytes, end: bytes):
        b = self._rbuckets.get(bucket)
        if b is None:
            return
        c = b.cursor()
        kv = c.seek(start)
        while kv is not None:
            k, v = kv
            if end and k >= end:
                return
            if v is not None:  # nested buckets: none in etcd
                yield kv
            kv = c.next()

    def items(self, bucket: bytes):
        """Every row of `bucket` in key order, read in steps of ITEMS_CHUNK_ROWS (each step sees the
        latest writes)."""
        start = b""
        while True:
            rows = self.range(bucket, start, b"", ITEMS_CHUNK_ROWS)
            yield from rows
            if len(rows) < ITEMS_CHUNK_ROWS:
                return
            start = rows[-1][0] + b"\x00"

    # ---- the pre-commit hook ----

    def set_consistent_index(self, index: int, term: int) -> None:
        """The (index, term) of the entry being applied; written at the next commit if it grew."""
        assert index >= 0 and term >= 0, (index, term)
        self._index = index
        self._term = term

    def consistent_index(self) -> tuple[int, int]:
        return self._index, self._term

    def set_conf_state(self, cs) -> None:
        """A ConfChange was applied: write this ConfState as `confState` at the next commit."""
        self._conf_state = schema.conf_state_json(cs)

    def _run_hook(self) -> None:
        index, term = self._index, self._term
        if index:
            stored_index, stored_term = self._stored_consistent_index()
            if term > stored_term or (term == stored_term and index > stored_index):
                self.put(META, CONSISTENT_INDEX, encode_u64(index))
                if term:
                    self.put(META, TERM, encode_u64(term))
        if self._conf_state is not None:
            self.put(META, CONF_STATE, self._conf_state)
            self._conf_state = None

    # ---- commits ----

    def commit(self) -> None:
        """Run the hook; commit the batch if anything is pending (fsync included); fresh views."""
        self._check_can_commit()
        self._run_hook()
        if not self.pending:
            return
        try:
            self._wtx.commit()
        except BaseException as e:
            self._break(e)
            raise
        self._after_commit()

    async def commit_async(self) -> None:
        """`commit`, with the file work (spill, write, fsync) in a worker thread. Reads are served by
        the old view and the buffer meanwhile; writes must wait for it."""
        self._check_can_commit()
        self._run_hook()
        if not self.pending:
            return
        self._write_block = "backend write while a commit runs"
        try:
            # Not abandoned on cancel: the commit finishes and the views are swapped before a
            # Cancelled can surface.
            await trio.to_thread.run_sync(self._wtx.commit)
        except BaseException as e:
            self._break(e)
            raise
        self._write_block = None
        self._after_commit()

    def _check_can_commit(self) -> None:
        if self._broken is not None:
            raise BackendBrokenError("an earlier commit failed") from self._broken
        assert self._write_block is None, self._write_block

    def _break(self, e: BaseException) -> None:
        self._broken = e
        self._write_block = "backend write after a failed commit"

    def _after_commit(self) -> None:
        self._open_views(old_rtx=self._rtx)
        self._buf.clear()
        self.pending = 0

    def _open_views(self, old_rtx=None) -> None:
        """The batch write transaction, then a read view of the last commit (etcd's order). The old read
        view closes first, so the writer's begin frees every page no reader needs, those the last commit
        freed included: a reader of that commit never needed them."""
        if old_rtx is not None:
            old_rtx.rollback()
        self._wtx = self._db.begin(True)
        self._wbuckets = self._buckets_of(self._wtx)
        self._rtx = self._db.begin(False)
        self._rbuckets = self._buckets_of(self._rtx)
        self._update_sizes()

    def _update_sizes(self) -> None:
        # etcd takes both at every transaction begin: the size is the high-water mark, and in use is
        # that minus the free pages (pages still pending for an open reader count as in use).
        stats = self._db.stats()
        self._size_bytes = self._rtx.size
        self._size_in_use_bytes = self._size_bytes - stats["free_page_n"] * stats["page_size"]

    # ---- whole-db views ----

    def hash(self) -> int:
        """Maintenance.Hash: CRC-32C of every bucket name and row except meta's consistent_index and
        term (backend-schema §8.1, delta §1.3). Commits first. (For a big db, take `snapshot()` and
        run its `hash` in a worker thread instead.)"""
        self.commit()
        return hash_tx(self._rtx, HASH_SKIPPED_META)

    def hash_all(self) -> int:
        """The same over every row (`etcdutl snapshot status`'s hash of this db). Commits first."""
        self.commit()
        return hash_tx(self._rtx, ())

    def size_bytes(self) -> int:
        """The db size etcd reports: the file's high-water mark at the last commit."""
        return self._size_bytes

    def size_in_use_bytes(self) -> int:
        return self._size_in_use_bytes

    def snapshot(self) -> Snapshot:
        """Commit, then a read view of the db to stream (close it when done, in the owner's thread)."""
        self.commit()
        db = self._db
        snap = Snapshot(db.begin(False), self._snapshot_closed)
        self._snapshots_open[db] = self._snapshots_open.get(db, 0) + 1
        return snap

    def _snapshot_closed(self, db) -> None:
        n = self._snapshots_open[db] - 1
        if n:
            self._snapshots_open[db] = n
            return
        del self._snapshots_open[db]
        if db in self._retired:
            self._retired.discard(db)
            db.close()

    # ---- defrag

    def defrag(self) -> None:
        """etcd's Defragment, all in the caller: commit, copy the db densely into a fresh file
        (`<db>.tmp.<digits>` beside it), rename that over the db. Reads and writes wait."""
        job = self.begin_defrag()
        try:
            job.copy()
            self._check_can_commit()
            self._run_hook()
            job.apply(job.take_ops())
            self._swap(job)
        except BaseException:
            self.abort_defrag(job)
            raise

    def begin_defrag(self) -> DefragJob:
        """Commit, then start a defrag of that commit; from now on every write is also recorded for the job.

        The caller runs `job.copy()` (a worker thread may: reads and writes go on meanwhile), may replay the
        recorded writes with `job.apply(job.take_ops())` while more arrive, and ends with `finish_defrag_async`
        (or `abort_defrag`). The db file is replaced only by an atomic rename of a complete, synced copy, so a
        crash at any point leaves either the old file or the new one, each consistent with its own
        consistent index."""
        assert self._defrag is None, "a defrag already runs"
        self.commit()
        self._check_can_commit()
        tmp = self._create_temp_file() if self.path is not None else None
        try:
            if tmp is None:
                dst = DB(MemoryFile(), no_freelist_sync=True, fsync=self._fsync)
            else:
                dst = DB.open(tmp, no_freelist_sync=True, fsync=self._fsync)
        except BaseException:
            if tmp is not None:
                os.unlink(tmp)
            raise
        job = DefragJob(self._db.begin(False), dst, tmp)
        self._defrag = job
        return job

    async def finish_defrag_async(self, job: DefragJob) -> None:
        """The last step of a defrag: the writes not replayed yet go to the copy (in a worker thread; reads go
        on, writes must wait), then the copy replaces the db."""
        assert job is self._defrag and job.copied
        self._check_can_commit()
        self._run_hook()
        self._write_block = "backend write while a defrag finishes"
        try:
            await trio.to_thread.run_sync(job.apply, job.take_ops())
        except BaseException:
            self._write_block = None
            self.abort_defrag(job)
            raise
        self._write_block = None
        try:
            self._swap(job)
        except BaseException:
            self.abort_defrag(job)
            raise

    def abort_defrag(self, job: DefragJob) -> None:
        """Drop a defrag: the db stays as it is, the copy is removed."""
        if self._defrag is job:
            self._defrag = None
        job.discard()

    def _swap(self, job: DefragJob) -> None:
        # The copy holds every commit and every pending write: rename it over the db first (if that fails
        # nothing changed), then drop the old file's transactions and serve from the copy.
        if job.tmp_path is not None:
            os.rename(job.tmp_path, self.path)
            job.tmp_path = None
            if self._fsync:
                _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        self._defrag = None
        old = self._db
        self._wtx.rollback()
        self._rtx.rollback()
        self._db = job.dst
        if self._snapshots_open.get(old):
            self._retired.add(old)
        else:
            old.close()
        self._open_views()
        self._buf.clear()
        self.pending = 0

    def _create_temp_file(self) -> str:
        while True:
            tmp = f"{self.path}.tmp.{int.from_bytes(os.urandom(4), 'big')}"
            try:
                os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                return tmp
            except FileExistsError:
                continue

    def close(self) -> None:
        """Commit what is pending and close the file (a broken backend just closes)."""
        if self._closed:
            return
        try:
            if self._broken is None:
                self.commit()
        finally:
            self._closed = True
            self._write_block = "backend closed"
            if not self._wtx.closed:
                self._wtx.rollback()
            self._rtx.rollback()
            if self._defrag is not None:
                self.abort_defrag(self._defrag)
            self._db.close()
            for db in self._retired:
                db.close()
            self._retired.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


_SIZES = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes, as etcd logs db sizes and etcdctl/etcdutl tables show them: SI units, one decimal
    below 10 ("9.5 MB", "17 MB")."""
    if n < 10:
        return f"{n} B"
    e = math.floor(math.log(n) / math.log(1000))
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.1f} {_SIZES[e]}" if val < 10 else f"{val:.0f} {_SIZES[e]}"


def _remove_defrag_leftovers(path: str) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    prefix = name + ".tmp."
    for entry in os.listdir(directory):
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            os.unlink(os.path.join(directory, entry))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
