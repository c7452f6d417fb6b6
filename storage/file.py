"""The shell of the page file: the file handle, locking, fsync, growth, and the DB object.

Everything the OS does happens here: `OsFile` (pread/pwrite/fdatasync/flock,
never mmap) or any object with the same five methods (`MemoryFile`, the
tests' crash-simulating file). The B+tree, freelist and commit plan live in
the cores (`tx`, `bucket`, `node`, `freelist`, `meta`, `page`, `check`).

Concurrency: one writer at a time (`_write_lock`, held from `begin(writable=
True)` to commit/rollback), any number of readers. A reader registers the
txid of its meta; a writer starting moves pages freed by transactions older
than every open reader from pending to free (`Freelist.release`). Readers
never wait for the writer: the meta they read is swapped under `_meta_lock`
only after the new meta is durable.

Decoded pages are cached by page id, least recently used first out, bounded
in pages (`cache_pages`; a page with overflow counts them) whether a read
decoded them or a commit wrote them. A page id's bytes change only when the
page is rewritten after being freed and released, i.e. when no open
transaction can reach it; a commit replaces the cache entries of every page
it writes.
"""

from __future__ import annotations

import fcntl
import os
from collections import OrderedDict
import threading
import time

from .check import reachable_pages
from .freelist import Freelist, decode_freelist
from .meta import Meta, choose_meta, decode_meta, page_size_hint
from .page import (FREELIST, LEAF, NO_FREELIST, PAGE_HEADER_SIZE, CorruptError, DatabaseNotOpenError,
                   DatabaseReadOnlyError, StorageError, decode_page, pack_header, read_header)
from .tx import Tx

DEFAULT_PAGE_SIZE = 4096
CACHE_PAGES_DEFAULT = 262144  # decoded pages cost about their size in memory: ~1 GiB at 4 KiB pages
_EVICT_SKIP_MAX = 8  # branch pages passed over before the oldest page goes regardless


class LockTimeoutError(StorageError):
    pass


# ---- file layers -------------------------------------------------------------------


class OsFile:
    """A real file: positional reads and writes, fdatasync, an flock shared by bbolt."""

    def __init__(self, path, *, read_only: bool = False, lock_timeout_s: float | None = None):
        self.path = os.fspath(path)
        flags = os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT
        self.fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            self._lock(fcntl.LOCK_SH if read_only else fcntl.LOCK_EX, lock_timeout_s)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def _lock(self, kind: int, timeout_s: float | None) -> None:
        # flock, not lockf: only flock excludes a real bbolt holding the same file.
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self.fd, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeoutError(f"timeout waiting for the lock on {self.path}") from None
                time.sleep(0.05)

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, n: int) -> None:
        os.ftruncate(self.fd, n)

    def __del__(self):
        self.close()

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1


class MemoryFile:
    """A file held in memory (benchmarks, fuzzing, tests). `data` is the whole content."""

    def __init__(self, data: bytes = b""):
        self.data = bytearray(data)
        self.syncs = 0

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.data[offset:offset + n])

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    def sync(self) -> None:
        self.syncs += 1

    def size(self) -> int:
        return len(self.data)

    def truncate(self, n: int) -> None:
        if n < len(self.data):
            del self.data[n:]
        else:
            self.data.extend(bytes(n - len(self.data)))

    def close(self) -> None:
        pass


# ---- the database ------------------------------------------------------------------


class DB:
    """A bbolt-format page file. Open with `DB.open(path)` or `DB(file_layer)`."""

    def __init__(self, file, *, page_size: int = DEFAULT_PAGE_SIZE, read_only: bool = False,
                 no_freelist_sync: bool = False, fsync: bool = True, initial_size_bytes: int = 0,
                 grow_step_bytes: int = 0, cache_pages: int = CACHE_PAGES_DEFAULT):
        self._file = file
        self.read_only = read_only
        self.no_freelist_sync = no_freelist_sync
        self.fsync = fsync
        self.grow_step_bytes = grow_step_bytes
        # pgid -> decoded page, least recently used first; `_cache_pages_n` counts them in pages (a page with
        # overflow counts 1 + overflow) and stays <= `_cache_pages_max` except while a single huge page is in.
        self._cache: OrderedDict = OrderedDict()
        self._cache_pages_n = 0
        self._cache_pages_max = max(cache_pages, 16)
        self._cache_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._readers: list[int] = []
        self._writer: Tx | None = None
        self._freelist: Freelist | None = None
        self._stats = {"tx_n": 0, "commit_n": 0, "written_bytes": 0, "sync_n": 0, "cache_hit_n": 0,
                       "cache_miss_n": 0}
        self._opened = False
        try:
            self._open(page_size, initial_size_bytes)
        except BaseException:
            file.close()
            raise
        self._opened = True
        if not read_only and not no_freelist_sync and self._meta.freelist == NO_FREELIST:
            # bbolt writes a freelist right away when it opens a file that has none.
            self.begin(writable=True).commit()

    @classmethod
    def open(cls, path, *, read_only: bool = False, lock_timeout_s: float | None = None, **options) -> "DB":
        return cls(OsFile(path, read_only=read_only, lock_timeout_s=lock_timeout_s), read_only=read_only,
                   **options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._opened = False

    @property
    def page_size(self) -> int:
        return self._meta.page_size

    @property
    def path(self):
        return getattr(self._file, "path", None)

    # ---- opening ----

    def _open(self, page_size: int, initial_size_bytes: int) -> None:
        size = self._file.size()
        if size == 0:
            if self.read_only:
                raise CorruptError("empty file opened read-only")
            self._init_file(page_size)
            size = self._file.size()
        if initial_size_bytes > size and not self.read_only:
            self._file.truncate(initial_size_bytes)
            size = initial_size_bytes
        first = self._file.read(0, 0x1000)
        if len(first) < 0x1000 and len(first) < 2 * page_size:
            raise CorruptError(f"file size too small: {size} bytes")
        ps = page_size_hint(first, page_size)
        if size < 2 * ps:
            raise CorruptError(f"file size too small: {size} bytes")
        metas = []
        for i in (0, 1):
            try:
                m = decode_meta(self._file.read(i * ps, ps), i)
                if m.page_size != ps:
                    raise CorruptError(f"meta page size {m.page_size} differs from {ps}", i)
                if m.pgid * ps > size:
                    raise CorruptError(f"meta high-water mark {m.pgid} beyond the end of the file", i)
                metas.append(m)
            except CorruptError as e:
                metas.append(e)
        # The newest meta whose own fields are sound wins; corruption below it is an error, not a
        # reason to fall back silently to an older commit.
        self._file_size = size
        self._meta = choose_meta(metas)
        if not self.read_only:
            self._freelist = self._load_freelist(self._meta)

    def _init_file(self, page_size: int) -> None:
        buf = bytearray(4 * page_size)
        for i in (0, 1):
            buf[i * page_size:(i + 1) * page_size] = Meta(page_size, 3, 2, 4, i).encode(i)
        pack_header(buf, 2 * page_size, 2, FREELIST, 0, 0)
        pack_header(buf, 3 * page_size, 3, LEAF, 0, 0)
        self._file.write(0, bytes(buf))
        if self.fsync:
            self._file.sync()

    def _load_freelist(self, meta: Meta) -> Freelist:
        fl = Freelist()
        if meta.freelist == NO_FREELIST:
            reachable = reachable_pages(Tx(self, meta, False))
            fl.load(p for p in range(2, meta.pgid) if p not in reachable)
        else:
            header = self._read(meta.freelist * meta.page_size, PAGE_HEADER_SIZE)
            if len(header) < PAGE_HEADER_SIZE:
                raise CorruptError("freelist page beyond the end of the file", meta.freelist)
            _, _, _, overflow = read_header(header)
            if meta.freelist + overflow >= meta.pgid:
                raise CorruptError("freelist page runs past the high-water mark", meta.freelist)
            data = self._read(meta.freelist * meta.page_size, (overflow + 1) * meta.page_size)
            fl.load(decode_freelist(data, meta.freelist, meta.pgid))
        return fl

    # ---- transactions ----

    def begin(self, writable: bool = False) -> Tx:
        if not self._opened:
            raise DatabaseNotOpenError("database not open")
        if not writable:
            with self._meta_lock:
                tx = Tx(self, self._meta.copy(), False)
                self._readers.append(tx.meta.txid)
                self._stats["tx_n"] += 1
            return tx
        if self.read_only:
            raise DatabaseReadOnlyError("database is in read-only mode")
        self._write_lock.acquire()
        try:
            with self._meta_lock:
                minid = min(self._readers) if self._readers else 1 << 64
                meta = self._meta.copy()
            self._freelist.release(minid)
            meta.txid += 1
            tx = Tx(self, meta, True)
            self._writer = tx
        except BaseException:
            self._write_lock.release()
            raise
        return tx

    def view(self, fn=None):
        """A read transaction (use with `with`), or run fn(tx) in one and return its result."""
        tx = self.begin(False)
        if fn is None:
            return tx
        with tx:
            return fn(tx)

    def update(self, fn=None):
        """A write transaction committed at the end of `with` (rolled back on error), or run fn(tx) in one."""
        tx = self.begin(True)
        if fn is None:
            return tx
        with tx:
            return fn(tx)

    def _close_tx(self, tx: Tx, committed: bool) -> None:
        if tx.writable:
            assert self._writer is tx
            self._writer = None
            self._write_lock.release()
        else:
            with self._meta_lock:
                self._readers.remove(tx.meta.txid)

    # ---- page access (called by cores through the tx) ----

    def _read(self, offset: int, n: int) -> bytes:
        if self._file is None:
            raise DatabaseNotOpenError("database not open")
        return self._file.read(offset, n)

    def _page(self, pgid: int):
        cache = self._cache
        page = cache.get(pgid)
        if page is not None:
            self._stats["cache_hit_n"] += 1
            try:
                cache.move_to_end(pgid)
            except KeyError:
                pass  # evicted by another thread meanwhile: it is only a cache
            return page
        self._stats["cache_miss_n"] += 1
        ps = self._meta.page_size
        data = self._read(pgid * ps, ps)
        if len(data) < PAGE_HEADER_SIZE:
            raise CorruptError("beyond the end of the file", pgid)
        _, _, _, overflow = read_header(data)
        if overflow:
            if pgid + overflow >= self._meta.pgid:
                raise CorruptError(f"overflow {overflow} runs past the end of the file", pgid)
            data = self._read(pgid * ps, (overflow + 1) * ps)
        page = decode_page(data, pgid)
        with self._cache_lock:
            self._cache_add(pgid, page)
        return page

    def _cache_add(self, pgid: int, page) -> None:
        """Insert or replace a decoded page, then evict down to the limit (call under `_cache_lock`)."""
        cache = self._cache
        old = cache.pop(pgid, None)
        if old is not None:
            self._cache_pages_n -= old.overflow + 1
        cache[pgid] = page
        self._cache_pages_n += page.overflow + 1
        while self._cache_pages_n > self._cache_pages_max and len(cache) > 1:
            self._evict_one(cache)

    def _cache_drop(self, pgid: int) -> None:
        """Forget a page id (call under `_cache_lock`)."""
        old = self._cache.pop(pgid, None)
        if old is not None:
            self._cache_pages_n -= old.overflow + 1

    def _evict_one(self, cache: OrderedDict) -> None:
        """Drop the least recently used leaf page (call under `_cache_lock`). Branch pages found on the way go
        to the back: there are few of them, every lookup passes through one per level, and decoding one costs
        many leaves. (Every insert and removal holds the lock; readers only move pages to the back.)"""
        popitem = cache.popitem
        for _ in range(_EVICT_SKIP_MAX):
            pgid, page = popitem(last=False)
            if page.is_leaf:
                break
            cache[pgid] = page
        else:
            pgid, page = popitem(last=False)
        self._cache_pages_n -= page.overflow + 1

    def _commit(self, tx: Tx) -> None:
        """Write the dirty pages, sync, write the meta, sync (the only place that writes a commit)."""
        ps = tx.page_size
        meta = tx.meta
        end = meta.pgid * ps
        if end > self._file_size and self.grow_step_bytes:
            step = self.grow_step_bytes
            new_size = (end + step - 1) // step * step
            self._file.truncate(new_size)
            self._file_size = new_size
        # Adjacent pages are written as one run (joined only when there is more than one).
        write = self._file.write
        pages = tx.pages
        written = 0
        run_start = 0
        run: list = []
        run_end = -1
        for pgid in sorted(pages):
            data = pages[pgid]
            offset = pgid * ps
            if offset != run_end:
                if run:
                    write(run_start, run[0] if len(run) == 1 else b"".join(run))
                run_start = offset
                run = [data]
            else:
                run.append(data)
            run_end = offset + len(data)
            written += len(data)
        if run:
            write(run_start, run[0] if len(run) == 1 else b"".join(run))
        self._file_size = max(self._file_size, end)
        if self.fsync:
            self._file.sync()
        slot = meta.txid % 2
        self._file.write(slot * ps, meta.encode(slot))
        if self.fsync:
            self._file.sync()
        self._stats["sync_n"] += 2 if self.fsync else 0
        self._stats["written_bytes"] += written + ps
        self._stats["commit_n"] += 1
        with self._cache_lock:
            # Every written page id now holds new bytes: one written without a decoded page (an overflow or
            # freelist page) drops whatever was cached under it, a written node's decoded page replaces the old.
            for pgid in tx.undecoded:
                self._cache_drop(pgid)
            for pgid, page in tx.decoded.items():
                self._cache_add(pgid, page)
        self._freelist.commit()
        with self._meta_lock:
            self._meta = meta.copy()

    # ---- statistics ----

    def stats(self) -> dict:
        """Counters of the database (bbolt `DB.Stats`, plus cache and write figures)."""
        with self._meta_lock:
            s = dict(self._stats)
            s["open_tx_n"] = len(self._readers) + (1 if self._writer else 0)
            meta = self._meta
        fl = self._freelist
        s["free_page_n"] = fl.free_count() if fl else 0
        s["pending_page_n"] = fl.pending_count() if fl else 0
        s["free_alloc_bytes"] = (s["free_page_n"] + s["pending_page_n"]) * meta.page_size
        s["freelist_inuse_bytes"] = fl.size_bytes() if fl else 0
        s["page_size"] = meta.page_size
        s["high_water_pgid"] = meta.pgid
        s["txid"] = meta.txid
        s["size_bytes"] = meta.pgid * meta.page_size
        s["cache_pages"] = self._cache_pages_n
        return s


# ---- compaction ------------------------------------------------------------------


def compact(src: DB, dst: DB, *, tx_max_bytes: int = 1 << 20, fill_percent: float = 0.9,
            tx_max_keys: int | None = None) -> None:
    """Copy every bucket and key of `src` into the empty database `dst`, densely (etcd's defrag).

    Commits whenever about `tx_max_bytes` of keys and values, or more than `tx_max_keys` keys, were copied.
    (A commit that splits a run of big values rewrites the leaf the last ones sit in, so a small byte limit
    leaves free pages behind in the copy.)
    """
    with src.view() as rtx:
        compact_tx(rtx, dst, tx_max_bytes=tx_max_bytes, fill_percent=fill_percent, tx_max_keys=tx_max_keys)


def compact_tx(rtx, dst: DB, *, tx_max_bytes: int = 1 << 20, fill_percent: float = 0.9,
               tx_max_keys: int | None = None) -> None:
    """`compact` from the snapshot a read transaction `rtx` sees (it stays open; may run in another thread
    than the one that began it)."""
    wtx = dst.begin(True)
    state = {"tx": wtx, "bytes": 0, "keys": 0, "max_keys": tx_max_keys}
    try:
        for name, _ in list(rtx.root.items()):
            _copy_bucket(rtx.root.bucket(name), state, [name], dst, tx_max_bytes, fill_percent)
        state["tx"].commit()
    except BaseException:
        if not state["tx"].closed:
            state["tx"].rollback()
        raise


def _copy_bucket(src_bucket, state, path, dst, tx_max_bytes, fill_percent) -> None:
    def dst_bucket():
        b = state["tx"].root
        for name in path:
            b = b.bucket(name) if b.bucket(name) is not None else b.create_bucket(name)
            b.fill_percent = fill_percent
        return b

    target = dst_bucket()
    if src_bucket.sequence:
        target.set_sequence(src_bucket.sequence)
    for k, v in src_bucket.items():
        if v is None:
            _copy_bucket(src_bucket.bucket(k), state, path + [k], dst, tx_max_bytes, fill_percent)
            target = dst_bucket()
            continue
        max_keys = state["max_keys"]
        if state["bytes"] >= tx_max_bytes or (max_keys is not None and state["keys"] >= max_keys):
            state["tx"].commit()
            state["tx"] = dst.begin(True)
            state["bytes"] = 0
            state["keys"] = 0
            target = dst_bucket()
        target.put(k, v)
        state["bytes"] += len(k) + len(v)
        state["keys"] += 1
