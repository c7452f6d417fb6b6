"""Cursors: a stack of (page-or-node, index) from a bucket's root down to a leaf.

Each stack entry holds whatever the bucket resolves a page id to: the decoded
page, or the write transaction's node that shadows it. Both have `is_leaf`,
`keys`, `vals` (child ids on branches) and `flags`, so the walk is the same.

Methods return `(key, value)`; the value is None for a nested bucket (as
bbolt). `None` alone means the cursor ran off the end.

A delete through the cursor leaves it between the deleted element's
neighbours: `next()` then returns the element after it, `prev()` the one
before (bbolt 1.3 skips one in that case; we do not).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .page import BUCKET_LEAF_FLAG, CorruptError, IncompatibleValueError, TxClosedError, TxNotWritableError

DEPTH_MAX = 64  # a deeper tree means a page reference cycle


def check_child_bounds(separators, index: int, child) -> None:
    """The child under separator `index` holds keys in [separators[index], separators[index + 1]).

    (No lower bound for the first child: a write transaction may insert below it before spilling.)
    """
    keys = child.keys
    if keys and ((index > 0 and keys[0] < separators[index])
                 or (index + 1 < len(separators) and keys[-1] >= separators[index + 1])):
        raise CorruptError("keys outside the range of the parent's separators", child.pgid)


class Cursor:
    __slots__ = ("bucket", "_stack", "_after_delete")

    def __init__(self, bucket):
        self.bucket = bucket
        self._stack: list[list] = []  # [view, index]
        self._after_delete = False

    # ---- public moves ----

    def first(self):
        self._check_open()
        self._stack = [[self.bucket.page_node(self.bucket.root), 0]]
        self._after_delete = False
        self._go_first()
        if not self._stack[-1][0].keys:
            return self._next()
        return self._key_value()

    def last(self):
        self._check_open()
        root = self.bucket.page_node(self.bucket.root)
        self._stack = [[root, len(root.keys) - 1]]
        self._after_delete = False
        self._go_last()
        if not self._stack[-1][0].keys:
            return self._prev()
        return self._key_value()

    def next(self):
        self._check_open()
        if not self._stack:
            return None
        if self._after_delete:
            self._after_delete = False
            view, index = self._stack[-1]
            if index < len(view.keys):
                return self._key_value()
        return self._next()

    def prev(self):
        self._check_open()
        if not self._stack:
            return None
        self._after_delete = False
        return self._prev()

    def seek(self, key: bytes):
        """The first element whose key is >= `key`."""
        self._check_open()
        self._after_delete = False
        self._search(key)
        view, index = self._stack[-1]
        if index >= len(view.keys):
            return self._next()
        return self._key_value()

    def delete(self) -> None:
        """Delete the element under the cursor."""
        self._check_open()
        tx = self.bucket.tx
        if not tx.writable:
            raise TxNotWritableError("tx not writable")
        view, index = self._stack[-1] if self._stack else (None, 0)
        if view is None or index >= len(view.keys) or index < 0:
            return
        if view.flags[index] & BUCKET_LEAF_FLAG:
            raise IncompatibleValueError("incompatible value")
        node = self.node()
        node.delete(node.keys[index])
        self._after_delete = True

    # ---- walking ----

    def _check_open(self):
        if self.bucket.tx.closed:
            raise TxClosedError("tx closed")

    def _push(self, pgid: int, index_from_end: bool):
        stack = self._stack
        if len(stack) >= DEPTH_MAX:
            raise CorruptError("tree deeper than 64 levels (page reference cycle?)", pgid)
        view = self.bucket.page_node(pgid)
        if not view.is_leaf and not view.keys:
            raise CorruptError("empty branch page", pgid)
        if stack:
            parent, index = stack[-1]
            check_child_bounds(parent.keys, index, view)
        stack.append([view, len(view.keys) - 1 if index_from_end else 0])

    def _go_first(self):
        while True:
            view, index = self._stack[-1]
            if view.is_leaf:
                return
            self._push(view.vals[index], False)

    def _go_last(self):
        while True:
            view, index = self._stack[-1]
            if view.is_leaf:
                return
            self._push(view.vals[index], True)

    def _next(self):
        stack = self._stack
        while True:
            i = len(stack) - 1
            while i >= 0:
                ref = stack[i]
                if ref[1] < len(ref[0].keys) - 1:
                    ref[1] += 1
                    break
                i -= 1
            if i < 0:
                # park past the end so a later prev() comes back to the last element
                stack[-1][1] = len(stack[-1][0].keys)
                return None
            del stack[i + 1:]
            self._go_first()
            if stack[-1][0].keys:
                return self._key_value()

    def _prev(self):
        stack = self._stack
        while True:
            i = len(stack) - 1
            while i >= 0:
                ref = stack[i]
                if ref[1] > 0:
                    ref[1] = min(ref[1], len(ref[0].keys)) - 1
                    break
                i -= 1
            if i < 0:
                stack[-1][1] = -1 if stack[-1][0].is_leaf else 0
                return None
            del stack[i + 1:]
            self._go_last()
            if stack[-1][0].keys:
                return self._key_value()

    def _search(self, key: bytes):
        bucket = self.bucket
        self._stack = []
        pgid = bucket.root
        while True:
            self._push(pgid, False)
            ref = self._stack[-1]
            view = ref[0]
            if view.is_leaf:
                ref[1] = bisect_left(view.keys, key)
                return
            index = bisect_right(view.keys, key) - 1
            ref[1] = index if index > 0 else 0
            pgid = view.vals[ref[1]]

    def _key_value(self):
        view, index = self._stack[-1]
        if index < 0 or index >= len(view.keys):
            return None
        if view.flags[index] & BUCKET_LEAF_FLAG:
            return view.keys[index], None
        return view.keys[index], view.vals[index]

    def _raw(self):
        """(key, value, flags) under the cursor, or None."""
        view, index = self._stack[-1]
        if index < 0 or index >= len(view.keys):
            return None
        return view.keys[index], view.vals[index], view.flags[index]

    def node(self):
        """The writable node of the leaf under the cursor, materializing the path down to it."""
        stack = self._stack
        top = stack[-1][0]
        if top.is_leaf and hasattr(top, "bucket"):
            return top
        bucket = self.bucket
        first = stack[0][0]
        n = first if hasattr(first, "bucket") else bucket.node(bucket.root, None, None)
        stack[0][0] = n
        for depth in range(len(stack) - 1):
            n = n.child_at(stack[depth][1])
            stack[depth + 1][0] = n
        assert n.is_leaf, "cursor.node: not a leaf"
        return n
