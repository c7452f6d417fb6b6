"""Buckets: a B+tree of keys (values or nested buckets) inside a transaction.

Rules (bbolt `bucket.go`):
- `root` is the bucket's root page id, 0 for an inline bucket whose only
  leaf lives in its parent's value (`inline_page`).
- `nodes` maps page ids to the nodes this write transaction materialized;
  `root_node` is the (possibly new) root of those. Reads prefer nodes.
- `buckets` caches nested buckets opened in this transaction, so their
  changes are written when the parent spills.
- A nested bucket is written inline when its single leaf holds no bucket and
  fits in a quarter page; otherwise as pages with a 16-byte header value.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .cursor import DEPTH_MAX, Cursor, check_child_bounds
from .node import Node
from .page import (BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, ELEMENT_SIZE, KEY_SIZE_MAX, LEAF, PAGE_HEADER_SIZE,
                   VALUE_SIZE_MAX, BucketExistsError, BucketNameRequiredError, BucketNotFoundError,
                   CorruptError, IncompatibleValueError, KeyRequiredError, KeyTooLargeError, SequenceOverflowError,
                   TxClosedError, TxNotWritableError, ValueTooLargeError, decode_page, encode_leaf,
                   pack_bucket_header, unpack_bucket_header)

DEFAULT_FILL_PERCENT = 0.5


class BucketStats:
    """Counts over a bucket and its nested buckets (bbolt `BucketStats`)."""

    __slots__ = ("branch_pages", "branch_overflow", "leaf_pages", "leaf_overflow", "key_n", "depth",
                 "branch_in_use", "leaf_in_use", "bucket_n", "inline_bucket_n", "inline_bucket_in_use")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self):
        return f"BucketStats({self.as_dict()})"


class Bucket:
    __slots__ = ("tx", "root", "sequence", "inline_page", "root_node", "nodes", "buckets", "fill_percent")

    def __init__(self, tx, root: int, sequence: int = 0, inline_page=None):
        self.tx = tx
        self.root = root
        self.sequence = sequence
        self.inline_page = inline_page
        self.root_node: Node | None = None
        self.nodes: dict[int, Node] = {}
        self.buckets: dict[bytes, Bucket] = {}
        self.fill_percent = DEFAULT_FILL_PERCENT

    @classmethod
    def from_value(cls, tx, value: bytes, pgid_for_errors: int | None = None) -> "Bucket":
        root, sequence = unpack_bucket_header(value, pgid_for_errors)
        inline = None
        if root == 0:
            inline = decode_page(memoryview(value)[BUCKET_HEADER_SIZE:], pgid_for_errors, allow_types=LEAF)
            inline.pgid = 0
        elif not 2 <= root < tx.meta.pgid:
            raise CorruptError(f"bucket root {root} outside [2, {tx.meta.pgid})", pgid_for_errors)
        return cls(tx, root, sequence, inline)

    @property
    def writable(self) -> bool:
        return self.tx.writable

    # ---- pages and nodes ----

    def page_node(self, pgid: int):
        """What a read at `pgid` sees: this tx's node, the inline page, or the decoded page."""
        if self.root == 0:
            if pgid != 0:
                raise CorruptError(f"inline bucket refers to page {pgid}", pgid)
            return self.root_node if self.root_node is not None else self.inline_page
        node = self.nodes.get(pgid) if self.nodes else None
        if node is not None:
            return node
        return self.tx.page(pgid)

    def node(self, pgid: int, parent: Node | None, key: bytes | None = None) -> Node:
        """The writable node for `pgid`, materialized under `parent` (None: the root)."""
        assert self.tx.writable, "node() in a read-only tx"
        n = self.nodes.get(pgid)
        if n is not None:
            return n
        if parent is None and self.root_node is not None:
            return self.root_node
        page = self.inline_page if self.root == 0 else self.tx.page(pgid)
        n = Node.from_page(self, page, parent, key)
        if parent is None:
            self.root_node = n
        else:
            parent.children.append(n)
        self.nodes[pgid] = n
        return n

    # ---- reads ----

    def _check_tx(self):
        if self.tx.closed:
            raise TxClosedError("tx closed")

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`, or None when it is absent or names a nested bucket."""
        if self.tx.closed:
            raise TxClosedError("tx closed")
        if self.root and not self.nodes:
            return self._get_from_pages(key)
        view = self.page_node(self.root)
        depth = 0
        while not view.is_leaf:
            keys = view.keys
            if not keys:
                raise CorruptError("empty branch page", view.pgid)
            i = bisect_right(keys, key) - 1
            if i < 0:
                i = 0
            view = self.page_node(view.vals[i])
            check_child_bounds(keys, i, view)
            depth += 1
            if depth > DEPTH_MAX:
                raise CorruptError("tree deeper than 64 levels (page reference cycle?)", view.pgid)
        keys = view.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key and not view.flags[i] & BUCKET_LEAF_FLAG:
            return view.vals[i]
        return None

    def _get_from_pages(self, key: bytes) -> bytes | None:
        """`get` when nothing of this bucket is shadowed by nodes: the same walk and checks, inlined, with cached
        pages taken straight from the database's cache (after the checks `Tx.page` makes). Only the leaf is
        marked recently used: eviction passes over branch pages anyway."""
        tx = self.tx
        db = tx.db
        cache = db._cache
        end = tx.meta.pgid
        pgid = self.root
        hits = 0
        view = cache.get(pgid)
        if view is None or not 2 <= pgid < end - view.overflow:
            view = tx.page(pgid)
            hit = False
        else:
            hits += 1
            hit = True
        depth = 0
        while not view.is_leaf:
            keys = view.keys
            if not keys:
                raise CorruptError("empty branch page", view.pgid)
            i = bisect_right(keys, key) - 1
            if i < 0:
                i = 0
            pgid = view.vals[i]
            view = cache.get(pgid)
            if view is None or not 2 <= pgid < end - view.overflow:
                view = tx.page(pgid)
                hit = False
            else:
                hits += 1
                hit = True
            ckeys = view.keys
            if ckeys and ((i and ckeys[0] < keys[i]) or (i + 1 < len(keys) and ckeys[-1] >= keys[i + 1])):
                check_child_bounds(keys, i, view)  # raises, naming the page
            depth += 1
            if depth > DEPTH_MAX:
                raise CorruptError("tree deeper than 64 levels (page reference cycle?)", view.pgid)
        if hits:
            db._stats["cache_hit_n"] += hits
            if hit:
                try:
                    cache.move_to_end(pgid)
                except KeyError:
                    pass  # evicted by another thread meanwhile
        keys = view.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key and not view.flags[i] & BUCKET_LEAF_FLAG:
            return view.vals[i]
        return None

    def cursor(self) -> Cursor:
        self._check_tx()
        return Cursor(self)

    def items(self):
        """(key, value) pairs in key order; value None for nested buckets."""
        c = self.cursor()
        kv = c.first()
        while kv is not None:
            yield kv
            kv = c.next()

    def for_each(self, fn) -> None:
        for k, v in self.items():
            fn(k, v)

    def bucket(self, name: bytes) -> "Bucket | None":
        self._check_tx()
        child = self.buckets.get(name)
        if child is not None:
            return child
        found = self._seek_exact(name)
        if found is None or not found[2] & BUCKET_LEAF_FLAG:
            return None
        child = Bucket.from_value(self.tx, found[1])
        self.buckets[name] = child
        return child

    def _seek_exact(self, key: bytes):
        c = Cursor(self)
        c._search(key)
        raw = c._raw()
        if raw is None or raw[0] != key:
            return None
        return raw

    # ---- writes ----

    def _check_writable(self):
        self._check_tx()
        if not self.tx.writable:
            raise TxNotWritableError("tx not writable")

    def put(self, key: bytes, value: bytes) -> None:
        tx = self.tx
        if tx.closed or not tx.writable:
            self._check_writable()  # raises the error that applies
        if not key:
            raise KeyRequiredError("key required")
        if len(key) > KEY_SIZE_MAX:
            raise KeyTooLargeError("key too large")
        if len(value) > VALUE_SIZE_MAX:
            raise ValueTooLargeError("value too large")
        # Stored keys and values are bytes (bytes() of bytes is the same object, but the call is not free).
        if type(key) is not bytes:
            key = bytes(key)
        if type(value) is not bytes:
            value = bytes(value)
        # The writable leaf where `key` belongs, materializing the path down to it (a cursor's search, minus the
        # cursor), inline: puts come by the thousand.
        n = self.root_node if self.root_node is not None else self.node(self.root, None)
        nodes = self.nodes
        depth = 0
        while not n.is_leaf:
            keys = n.keys
            if not keys:
                raise CorruptError("empty branch page", n.pgid)
            i = bisect_right(keys, key) - 1
            if i < 0:
                i = 0
            pgid = n.vals[i]
            child = nodes.get(pgid)
            if child is None:
                # Checked once, when it comes from its page: puts below keep a node inside its separators.
                child = self.node(pgid, n, keys[i])
                check_child_bounds(keys, i, child)
            n = child
            depth += 1
            if depth >= DEPTH_MAX:
                raise CorruptError("tree deeper than 64 levels (page reference cycle?)", n.pgid)
        n.put_value(key, value)

    def delete(self, key: bytes) -> None:
        self._check_writable()
        c = Cursor(self)
        c._search(key)
        raw = c._raw()
        if raw is None or raw[0] != key:
            return
        if raw[2] & BUCKET_LEAF_FLAG:
            raise IncompatibleValueError("incompatible value")
        c.node().delete(key)

    def create_bucket(self, name: bytes) -> "Bucket":
        self._check_writable()
        if not name:
            raise BucketNameRequiredError("bucket name required")
        if len(name) > KEY_SIZE_MAX:
            raise KeyTooLargeError("key too large")
        name = bytes(name)
        c = Cursor(self)
        c._search(name)
        raw = c._raw()
        if raw is not None and raw[0] == name:
            if raw[2] & BUCKET_LEAF_FLAG:
                raise BucketExistsError("bucket already exists")
            raise IncompatibleValueError("incompatible value")
        value = pack_bucket_header(0, 0) + encode_leaf(0, [], [], [], 0)
        c.node().put(name, name, value, BUCKET_LEAF_FLAG)
        # A bucket holding buckets is never inline; from now on it is written as pages.
        self.inline_page = None
        return self.bucket(name)

    def create_bucket_if_not_exists(self, name: bytes) -> "Bucket":
        try:
            return self.create_bucket(name)
        except BucketExistsError:
            return self.bucket(name)

    def delete_bucket(self, name: bytes) -> None:
        self._check_writable()
        found = self._seek_exact(name)
        if found is None:
            raise BucketNotFoundError("bucket not found")
        if not found[2] & BUCKET_LEAF_FLAG:
            raise IncompatibleValueError("incompatible value")
        child = self.bucket(name)
        for k, v in list(child.items()):
            if v is None:
                child.delete_bucket(k)
        self.buckets.pop(name, None)
        child.nodes = {}
        child.root_node = None
        child.free()
        c = Cursor(self)
        c._search(name)
        c.node().delete(name)

    def set_sequence(self, value: int) -> None:
        self._check_writable()
        self._materialize_root()
        self.sequence = value

    def next_sequence(self) -> int:
        self._check_writable()
        self._materialize_root()
        if self.sequence >= (1 << 64) - 1:
            raise SequenceOverflowError("sequence overflow")
        self.sequence += 1
        return self.sequence

    def _materialize_root(self):
        # A bucket is rewritten at commit only if it has a root node.
        if self.root_node is None:
            self.node(self.root, None)

    # ---- commit: rebalance, spill, free ----

    def forget_nodes(self, spilled: bool) -> None:
        """Drop this transaction's nodes (it ended): nodes link to their parents, children and bucket in
        cycles, which reference counting alone cannot free. (After a spill every node's children list is
        already empty: only the bucket's own references remain.)"""
        for child in self.buckets.values():
            child.forget_nodes(spilled)
        if not spilled:
            for node in self.nodes.values():
                node.parent = None
                node.children = []
        self.nodes = {}
        self.root_node = None


    def rebalance(self) -> None:
        # A merge removes nodes from `nodes`; a removed node must not rebalance again.
        for pgid in list(self.nodes):
            node = self.nodes.get(pgid)
            if node is not None and node.unbalanced:  # most nodes only took puts: no call for them
                node.rebalance()
        for child in self.buckets.values():
            child.rebalance()

    def spill(self) -> None:
        for name in sorted(self.buckets):
            child = self.buckets[name]
            if child.inlineable():
                child.free()
                value = child.write_inline()
            else:
                child.spill()
                value = pack_bucket_header(child.root, child.sequence)
            if child.root_node is None:
                continue
            c = Cursor(self)
            c._search(name)
            raw = c._raw()
            assert raw is not None and raw[0] == name and raw[2] & BUCKET_LEAF_FLAG, f"spill: bucket {name!r} lost"
            c.node().put(name, name, value, BUCKET_LEAF_FLAG)
        if self.root_node is None:
            return
        self.root_node.spill()
        self.root_node = self.root_node.root()
        assert self.root_node.pgid < self.tx.meta.pgid, "root above the high-water mark"
        self.root = self.root_node.pgid

    def inlineable(self) -> bool:
        n = self.root_node
        if n is None or not n.is_leaf:
            return False
        size = PAGE_HEADER_SIZE
        limit = self.tx.page_size // 4
        for k, v, f in zip(n.keys, n.vals, n.flags):
            if f & BUCKET_LEAF_FLAG:
                return False
            size += ELEMENT_SIZE + len(k) + len(v)
            if size > limit:
                return False
        return True

    def write_inline(self) -> bytes:
        n = self.root_node
        return pack_bucket_header(0, self.sequence) + encode_leaf(0, n.keys, n.vals, n.flags, 0)

    def free(self) -> None:
        """Free every page of this bucket (it becomes inline or goes away)."""
        if self.root == 0:
            return
        tx = self.tx
        for view in self._walk_views():
            if isinstance(view, Node):
                view.free()
            else:
                tx.free_page(view.pgid, view.overflow)
        self.root = 0

    def _walk_views(self):
        """Every page-or-node of this bucket's tree (not nested buckets), each once."""
        seen = set()
        todo = [self.root]
        while todo:
            pgid = todo.pop()
            if pgid in seen:
                raise CorruptError("page reached twice in one bucket", pgid)
            seen.add(pgid)
            view = self.page_node(pgid)
            yield view
            if not view.is_leaf:
                todo.extend(view.vals)

    # ---- stats ----

    def stats(self) -> BucketStats:
        s = BucketStats()
        self._add_stats(s, 1)
        return s

    def _add_stats(self, s: BucketStats, depth_base: int) -> None:
        page_size = self.tx.page_size
        s.bucket_n += 1
        if self.root == 0:
            s.inline_bucket_n += 1
        todo = [(self.root, 1)]
        children = []
        while todo:
            pgid, depth = todo.pop()
            view = self.page_node(pgid)
            s.depth = max(s.depth, depth_base + depth - 1)
            if view.is_leaf:
                size = PAGE_HEADER_SIZE + sum(ELEMENT_SIZE + len(k) + len(v) for k, v in zip(view.keys, view.vals))
                s.key_n += len(view.keys)
                if self.root == 0:
                    s.inline_bucket_in_use += size
                else:
                    s.leaf_pages += 1
                    s.leaf_overflow += getattr(view, "overflow", 0)
                    s.leaf_in_use += size
                for k, v, f in zip(view.keys, view.vals, view.flags):
                    if f & BUCKET_LEAF_FLAG:
                        children.append(Bucket.from_value(self.tx, v, pgid))
            else:
                s.branch_pages += 1
                s.branch_overflow += getattr(view, "overflow", 0)
                s.branch_in_use += PAGE_HEADER_SIZE + sum(ELEMENT_SIZE + len(k) for k in view.keys)
                todo.extend((c, depth + 1) for c in view.vals)
        del page_size
        for child in children:
            child._add_stats(s, 1)  # as bbolt: a nested bucket's depth counts on its own
