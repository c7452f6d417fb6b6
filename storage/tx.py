"""Transactions: a snapshot of one meta, the root bucket, and the commit plan.

Rules:
- A read transaction keeps the meta it began with; every page it reaches is
  below that meta's high-water mark and stays unchanged while it is open
  (the database keeps pages freed after it pending until it closes).
- A write transaction works on nodes; `commit` rebalances, spills (pages
  allocated from the free list or past the high-water mark, never a page
  reachable from the committed meta), frees the old freelist page, writes a
  new one unless the database runs without a freelist, then hands the dirty
  pages and the new meta to the database, which writes pages, syncs, writes
  the meta at page `txid % 2`, syncs.
- Everything here is pure: page reads and writes go through `db`, the shell.
"""

from __future__ import annotations

from .bucket import Bucket
from .freelist import encode_freelist
from .page import (NO_FREELIST, CorruptError, DatabaseReadOnlyError, Page, TxClosedError, TxNotWritableError,
                   leaf_flags, read_header)


class Tx:
    def __init__(self, db, meta, writable: bool):
        self.db = db
        self.meta = meta  # a private copy; a writer's txid is already the new one
        self.writable = writable
        self.closed = False
        self.page_size = meta.page_size
        self.pages: dict[int, bytes | bytearray] = {}  # dirty page images by first page id
        self.decoded: dict[int, Page] = {}  # the same pages, decoded, to seed the cache after commit
        self.undecoded: list[int] = []  # ids written without a decoded page: overflow pages, freelist pages
        self.root = Bucket(self, meta.root, meta.sequence)
        self.on_commit: list = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.closed:
            if exc_type is None and self.writable:
                self.commit()
            else:
                self.rollback()
        return False

    def __repr__(self):
        return f"Tx(id={self.id}, writable={self.writable}, closed={self.closed})"

    @property
    def id(self) -> int:
        return self.meta.txid

    @property
    def size(self) -> int:
        """Bytes of the database as this transaction sees it."""
        return self.meta.pgid * self.page_size

    # ---- buckets ----

    def _check_open(self):
        if self.closed:
            raise TxClosedError("tx closed")

    def bucket(self, name: bytes) -> Bucket | None:
        self._check_open()
        return self.root.bucket(name)

    def create_bucket(self, name: bytes) -> Bucket:
        self._check_writable()
        return self.root.create_bucket(name)

    def create_bucket_if_not_exists(self, name: bytes) -> Bucket:
        self._check_writable()
        return self.root.create_bucket_if_not_exists(name)

    def delete_bucket(self, name: bytes) -> None:
        self._check_writable()
        self.root.delete_bucket(name)

    def cursor(self):
        """A cursor over the top-level bucket names (values are None)."""
        self._check_open()
        return self.root.cursor()

    def for_each(self, fn) -> None:
        """fn(name, bucket) for every top-level bucket, in name order."""
        for name in self.bucket_names():
            fn(name, self.root.bucket(name))

    def bucket_names(self) -> list[bytes]:
        # Only buckets: a plain key at the top level is corruption (check() reports it).
        return [name for name, v in self.root.items() if v is None]

    # ---- pages (used by buckets and nodes) ----

    def page(self, pgid: int) -> Page:
        end = self.meta.pgid
        if not 2 <= pgid < end:
            raise CorruptError(f"reference outside [2, {end})", pgid)
        page = self.db._page(pgid)
        if pgid + page.overflow >= end:
            raise CorruptError(f"overflow {page.overflow} runs past the high-water mark {end}", pgid)
        return page

    def allocate(self, npages: int) -> int:
        """The first of `npages` contiguous pages: free ones, else new ones past the high-water mark."""
        return self.reallocate(0, 0, npages)

    def free_page(self, pgid: int, overflow: int) -> None:
        self.db._freelist.free(self.meta.txid, pgid, overflow)

    def reallocate(self, pgid: int, overflow: int, npages: int) -> int:
        """`free_page(pgid, overflow)` (pgid 0: nothing to free), then `allocate(npages)`: a node moving to new
        pages, in one call."""
        freelist = self.db._freelist
        if pgid:
            freelist.free(self.meta.txid, pgid, overflow)
        pgid = freelist.allocate(npages)
        if pgid == 0:
            pgid = self.meta.pgid
            self.meta.pgid += npages
        return pgid

    def write_node(self, node, image: bytes) -> None:
        """Record `node` (its page id allocated) with `image`, its encoding under that page id (`join_page`
        checked its size)."""
        self.pages[node.pgid] = image
        if node.overflow:
            self.undecoded.extend(range(node.pgid + 1, node.pgid + node.overflow + 1))
        # The node's lists are final once it is written; as tuples they cost the garbage collector nothing.
        flags = leaf_flags(node.flags) if node.is_leaf else None
        self.decoded[node.pgid] = Page(node.pgid, node.is_leaf, tuple(node.keys), tuple(node.vals), flags,
                                       node.overflow, node.sizes)

    # ---- end of a transaction ----

    def _check_writable(self):
        self._check_open()
        if not self.writable:
            raise TxNotWritableError("tx not writable")

    def commit(self) -> None:
        self._check_open()
        if not self.writable:
            raise TxNotWritableError("tx not writable")
        if self.db.read_only:
            raise DatabaseReadOnlyError("database is in read-only mode")
        try:
            self.root.rebalance()
            self.root.spill()
            self.meta.root = self.root.root
            self.meta.sequence = self.root.sequence
            self._write_freelist()
            self.db._commit(self)
        except BaseException:
            self.rollback()
            raise
        self.closed = True
        self.root.forget_nodes(spilled=True)
        self.db._close_tx(self, committed=True)
        for fn in self.on_commit:
            fn()

    def _write_freelist(self) -> None:
        freelist = self.db._freelist
        if self.meta.freelist != NO_FREELIST:
            _, _, _, overflow = read_header(self.db._read(self.meta.freelist * self.page_size, 16))
            self.free_page(self.meta.freelist, overflow)
        if self.db.no_freelist_sync:
            self.meta.freelist = NO_FREELIST
            return
        npages = freelist.size_bytes() // self.page_size + 1
        pgid = self.allocate(npages)
        self.pages[pgid] = encode_freelist(pgid, freelist.all_ids(), self.page_size, npages)
        self.undecoded.extend(range(pgid, pgid + npages))
        self.meta.freelist = pgid

    def rollback(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.writable:
            self.root.forget_nodes(spilled=False)
            self.db._freelist.rollback(self.meta.txid)
        self.db._close_tx(self, committed=False)

    # ---- whole-file views ----

    def check(self) -> list[str]:
        """Problems found by walking every page (empty when the file is consistent)."""
        from .check import check_tx
        return check_tx(self)

    def write_to(self, stream, chunk_bytes: int = 1 << 20) -> int:
        """Write a consistent image of this snapshot to `stream` (anything with write(bytes)); bytes written.

        Two fresh metas (txid and txid - 1) then pages 2.. of the file as this
        transaction sees them: what bbolt's Tx.WriteTo produces.
        """
        written = 0
        for data in self.image_chunks(chunk_bytes):
            stream.write(data)
            written += len(data)
        return written

    def image_chunks(self, chunk_bytes: int = 1 << 20):
        """The image `write_to` writes, as successive pieces: the two metas, then up to `chunk_bytes` of
        pages at a time. A reader may pull one piece per call from another thread."""
        self._check_open()
        ps = self.page_size
        meta0 = self.meta.copy()
        meta1 = self.meta.copy()
        meta1.txid = max(meta0.txid - 1, 0)
        yield meta0.encode(0) + meta1.encode(1)
        end = self.meta.pgid * ps
        offset = 2 * ps
        while offset < end:
            n = min(chunk_bytes, end - offset)
            self._check_open()
            data = self.db._read(offset, n)
            if len(data) != n:
                raise CorruptError(f"file ends inside page {offset // ps}", offset // ps)
            yield data
            offset += n
