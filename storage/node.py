"""Mutable B+tree nodes of a write transaction: put/delete, split at spill, merge at rebalance.

Rules (bbolt `node.go`):
- A node is materialized from its page the first time a write transaction
  changes something under it; it then shadows the page (`Bucket.nodes`).
- `key` is the separator the parent holds for this node (None for new
  nodes); at spill the parent's element is looked up by `key` and replaced
  by the node's new first key and page id.
- Branch `vals` are child page ids, leaf `vals` are values; `flags` is None
  on branches. Keys stay sorted and unique.
- Children spill before parents, so a node's content is final when it is
  written; a page freed at spill goes to the writer's pending set.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from .page import (BRANCH, BUCKET_LEAF_FLAG, ELEMENT_SIZE, LEAF, PAGE_HEADER_SIZE, IncompatibleValueError, Page,
                   branch_parts, join_page, leaf_parts)

MIN_KEYS_PER_PAGE = 2
_NO_CHILDREN = ()  # a leaf's children: one shared empty tuple instead of a list per leaf node


class Node:
    __slots__ = ("bucket", "is_leaf", "unbalanced", "spilled", "key", "pgid", "overflow", "parent",
                 "children", "keys", "vals", "flags", "sizes")

    def __init__(self, bucket, is_leaf: bool, parent: "Node | None" = None):
        self.bucket = bucket
        self.is_leaf = is_leaf
        self.unbalanced = False
        self.spilled = False
        self.key: bytes | None = None
        self.pgid = 0
        self.overflow = 0
        self.parent = parent
        self.children: list[Node] = []
        self.keys: list[bytes] = []
        self.vals: list = []
        self.flags: list[int] | None = [] if is_leaf else None
        # Leaf: None, or (k, v) while every element has a k-byte key, a v-byte value and flags 0 (`Page.sizes`):
        # each edit that breaks that clears it; it only saves `parts` from measuring every element.
        self.sizes: tuple[int, int] | None = None

    @classmethod
    def from_page(cls, bucket, page: Page, parent: "Node | None", key: bytes | None) -> "Node":
        n = cls.__new__(cls)  # every field set here: __init__'s empty lists would be thrown away
        n.bucket = bucket
        n.is_leaf = is_leaf = page.is_leaf
        n.unbalanced = False
        n.spilled = False
        n.pgid = page.pgid
        n.overflow = page.overflow
        n.parent = parent
        n.children = [] if not is_leaf else _NO_CHILDREN
        n.keys = keys = list(page.keys)
        n.vals = list(page.vals)
        n.flags = list(page.flags) if is_leaf else None
        n.sizes = page.sizes
        n.key = key if key is not None else (keys[0] if keys else None)
        return n

    def __repr__(self):
        kind = "leaf" if self.is_leaf else "branch"
        return f"Node({kind}, pgid={self.pgid}, n={len(self.keys)})"

    # ---- shape ----

    def root(self) -> "Node":
        n = self
        while n.parent is not None:
            n = n.parent
        return n

    def min_keys(self) -> int:
        return 1 if self.is_leaf else 2

    def size(self) -> int:
        sz = PAGE_HEADER_SIZE + ELEMENT_SIZE * len(self.keys) + sum(map(len, self.keys))
        if self.is_leaf:
            sz += sum(map(len, self.vals))
        return sz

    def child_at(self, index: int) -> "Node":
        assert not self.is_leaf, "child_at on a leaf"
        return self.bucket.node(self.vals[index], self, self.keys[index])

    def child_index(self, child: "Node") -> int:
        return bisect_left(self.keys, child.key)

    def next_sibling(self) -> "Node | None":
        i = self.parent.child_index(self)
        if i >= len(self.parent.keys) - 1:
            return None
        return self.parent.child_at(i + 1)

    def prev_sibling(self) -> "Node | None":
        i = self.parent.child_index(self)
        if i == 0:
            return None
        return self.parent.child_at(i - 1)

    # ---- edits ----

    def put(self, old_key: bytes, new_key: bytes, value, flags: int) -> None:
        """Insert or replace the element found by `old_key` (value: bytes on leaves, page id on branches)."""
        assert new_key, "put: empty key"
        sizes = self.sizes
        if sizes is not None and (flags or len(new_key) != sizes[0] or len(value) != sizes[1]):
            self.sizes = None
        keys = self.keys
        i = bisect_left(keys, old_key)
        if i < len(keys) and keys[i] == old_key:
            keys[i] = new_key
            self.vals[i] = value
            if self.is_leaf:
                self.flags[i] = flags
        else:
            keys.insert(i, new_key)
            self.vals.insert(i, value)
            if self.is_leaf:
                self.flags.insert(i, flags)

    def put_value(self, key: bytes, value: bytes) -> None:
        """Insert or replace the plain value of `key` in this leaf (not over a nested bucket)."""
        sizes = self.sizes
        if sizes is not None and (len(key) != sizes[0] or len(value) != sizes[1]):
            self.sizes = None
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            if self.flags[i] & BUCKET_LEAF_FLAG:
                raise IncompatibleValueError("incompatible value")
            self.vals[i] = value
            self.flags[i] = 0
        else:
            keys.insert(i, key)
            self.vals.insert(i, value)
            self.flags.insert(i, 0)

    def delete(self, key: bytes) -> bool:
        keys = self.keys
        i = bisect_left(keys, key)
        if i >= len(keys) or keys[i] != key:
            return False
        del keys[i]
        del self.vals[i]
        if self.is_leaf:
            del self.flags[i]
        self.unbalanced = True
        return True

    def remove_child(self, target: "Node") -> None:
        for i, c in enumerate(self.children):
            if c is target:
                del self.children[i]
                return

    def free(self) -> None:
        if self.pgid:
            tx = self.bucket.tx
            tx.free_page(self.pgid, self.overflow)
            self.pgid = 0

    def parts(self) -> tuple[list, int]:
        """This node's page image before its header and padding, and its size (`page.join_page` finishes it)."""
        if self.is_leaf:
            parts, size, self.sizes = leaf_parts(self.keys, self.vals, self.flags, self.sizes)
            return parts, size
        return branch_parts(self.keys, self.vals)

    # ---- split (spill time) ----

    def split(self, page_size: int) -> list["Node"]:
        """This node cut into nodes that each fit a page at the bucket's fill percent (bbolt's split, applied
        again to the remainder until it fits), found in one pass over the element sizes."""
        keys = self.keys
        n = len(keys)
        if n <= MIN_KEYS_PER_PAGE * 2:
            return [self]
        if self.is_leaf:
            sizes = [ELEMENT_SIZE + len(k) + len(v) for k, v in zip(keys, self.vals)]
        else:
            sizes = [ELEMENT_SIZE + len(k) for k in keys]
        prefix = [0]
        prefix.extend(accumulate(sizes))
        if PAGE_HEADER_SIZE + prefix[n] < page_size:
            return [self]
        threshold = int(page_size * min(max(self.bucket.fill_percent, 0.1), 1.0))
        cuts = []
        start = 0
        while n - start > MIN_KEYS_PER_PAGE * 2 and PAGE_HEADER_SIZE + prefix[n] - prefix[start] >= page_size:
            # The first index past MIN_KEYS_PER_PAGE where the page would overflow the threshold, but leaving
            # at least MIN_KEYS_PER_PAGE elements behind.
            index = 0
            sz = PAGE_HEADER_SIZE
            for i in range(n - start - MIN_KEYS_PER_PAGE):
                index = i
                el = sizes[start + i]
                if i >= MIN_KEYS_PER_PAGE and sz + el > threshold:
                    break
                sz += el
            start += index
            cuts.append(start)
        if not cuts:
            return [self]
        if self.parent is None:
            self.parent = Node(self.bucket, False)
            self.parent.children.append(self)
        nodes = [self]
        bounds = cuts + [n]
        for a, b in zip(bounds, bounds[1:]):
            nxt = Node(self.bucket, self.is_leaf, self.parent)
            self.parent.children.append(nxt)
            nxt.keys = keys[a:b]
            nxt.vals = self.vals[a:b]
            if self.is_leaf:
                nxt.flags = self.flags[a:b]
                nxt.sizes = self.sizes
            nodes.append(nxt)
        first = cuts[0]
        del self.keys[first:]
        del self.vals[first:]
        if self.is_leaf:
            del self.flags[first:]
        return nodes

    def spill(self) -> None:
        """Write this node and its dirty descendants to newly allocated pages."""
        if self.spilled:
            return
        tx = self.bucket.tx
        page_size = tx.page_size
        children = self.children
        if children:
            children.sort(key=_first_key)
            i = 0
            while i < len(children):  # a child that splits appends its new siblings (already spilled)
                children[i].spill()
                i += 1
            self.children = []
        parts, size = self.parts()
        if len(self.keys) <= MIN_KEYS_PER_PAGE * 2 or size < page_size:
            self._write(tx, page_size, parts, size)
        else:
            for node in self.split(page_size):
                node._write(tx, page_size, *node.parts())
        if self.parent is not None and self.parent.pgid == 0:
            self.children = []
            self.parent.spill()

    def _write(self, tx, page_size: int, parts: list, size: int) -> None:
        """Move this node to newly allocated pages, how many its encoded `size` decides."""
        npages = (size + page_size - 1) // page_size
        self.pgid = pgid = tx.reallocate(self.pgid, self.overflow, npages)
        self.overflow = npages - 1
        tx.write_node(self, join_page(parts, size, pgid, LEAF if self.is_leaf else BRANCH, len(self.keys),
                                      page_size))
        self.spilled = True
        parent = self.parent
        if parent is not None:
            first = self.keys[0]
            parent.put(self.key if self.key is not None else first, first, self.pgid, 0)
            self.key = first

    # ---- rebalance (commit time, after deletes) ----

    def rebalance(self) -> None:
        if not self.unbalanced:
            return
        self.unbalanced = False
        bucket = self.bucket
        if self.size() > bucket.tx.page_size // 4 and len(self.keys) > self.min_keys():
            return
        parent = self.parent
        if parent is None:
            if not self.is_leaf and len(self.keys) == 1:
                self._pull_up_only_child()
            return
        if not self.keys:
            parent.delete(self.key)
            parent.remove_child(self)
            bucket.nodes.pop(self.pgid, None)
            self.free()
            parent.rebalance()
            return
        assert len(parent.keys) > 1, "parent of a non-root node must have at least 2 children"
        if parent.child_index(self) == 0:
            target = self.next_sibling()
            self._adopt_children_of(target, self)
            self._append(target)
            parent.delete(target.key)
            parent.remove_child(target)
            bucket.nodes.pop(target.pgid, None)
            target.free()
        else:
            target = self.prev_sibling()
            self._adopt_children_of(self, target)
            target._append(self)
            parent.delete(self.key)
            parent.remove_child(self)
            bucket.nodes.pop(self.pgid, None)
            self.free()
        parent.rebalance()

    def _pull_up_only_child(self) -> None:
        bucket = self.bucket
        child = bucket.node(self.vals[0], self, self.keys[0])
        self.is_leaf = child.is_leaf
        self.keys = child.keys
        self.vals = child.vals
        self.flags = child.flags
        self.sizes = child.sizes
        self.children = child.children
        if not self.is_leaf:
            for pgid in self.vals:
                grandchild = bucket.nodes.get(pgid)
                if grandchild is not None:
                    grandchild.parent = self
        for c in self.children:
            c.parent = self
        child.parent = None
        bucket.nodes.pop(child.pgid, None)
        child.free()

    @staticmethod
    def _adopt_children_of(source: "Node", dest: "Node") -> None:
        """Materialized children of `source` move under `dest` (which takes over its elements)."""
        if source.is_leaf:
            return
        nodes = source.bucket.nodes
        for pgid in source.vals:
            child = nodes.get(pgid)
            if child is not None and child.parent is source:
                source.remove_child(child)
                child.parent = dest
                dest.children.append(child)

    def _append(self, other: "Node") -> None:
        self.keys.extend(other.keys)
        self.vals.extend(other.vals)
        if self.is_leaf:
            self.flags.extend(other.flags)
            if self.sizes != other.sizes:
                self.sizes = None


def _first_key(node: Node) -> bytes:
    return node.keys[0]
