"""Consistency walk over every page a transaction can reach (bbolt `tx.go` check).

What is checked, for the transaction's snapshot:
- every reachable page id lies in [2, meta.pgid) and is reached exactly once
  (overflow pages included; a page reference cycle shows up as a revisit and
  is not followed);
- page headers name their own page id and carry the type the tree expects;
  all leaves of a bucket sit at the same depth;
- keys are strictly increasing within each page and lie within the range
  their parent's separators give; the top-level bucket holds only buckets;
- no reachable page is free; and, when the snapshot is the newest one, every
  page below the high-water mark is either reachable or free.

`reachable_pages` is the same walk without the freelist part; opening a file
without a stored freelist uses it to rebuild the free list.
"""

from __future__ import annotations

from .page import (BRANCH, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, LEAF, PAGE_HEADER_SIZE, CorruptError,
                   decode_page, read_header, unpack_bucket_header)
from .cursor import DEPTH_MAX


class _Walk:
    def __init__(self, tx):
        self.tx = tx
        self.high_water = tx.meta.pgid
        self.page_size = tx.page_size
        self.seen: dict[int, int] = {}  # page id -> first page of the run it belongs to
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def mark(self, pgid: int, overflow: int) -> bool:
        """Record pages pgid..pgid+overflow as reachable; False when any was reached already."""
        fresh = True
        for p in range(pgid, pgid + overflow + 1):
            if not 2 <= p < self.high_water:
                self.error(f"page {p}: out of bounds: {self.high_water} (reached from run at {pgid})")
                fresh = False
            elif p in self.seen:
                self.error(f"page {p}: multiple references (first from run at {self.seen[p]}, again from {pgid})")
                fresh = False
            else:
                self.seen[p] = pgid
        return fresh

    def header(self, pgid: int):
        data = self.tx.db._read(pgid * self.page_size, PAGE_HEADER_SIZE)
        if len(data) < PAGE_HEADER_SIZE:
            raise CorruptError("beyond the end of the file", pgid)
        return read_header(data)

    def walk_bucket(self, root: int, inline_value: bytes | None, top: bool) -> None:
        if root == 0:
            try:
                page = decode_page(memoryview(inline_value)[BUCKET_HEADER_SIZE:], None, allow_types=LEAF)
            except CorruptError as e:
                self.error(f"inline bucket: {e}")
                return
            self.check_leaf(page, "inline bucket", None, None, top)
            return
        leaf_depths: set[int] = set()
        self.walk_page(root, None, None, 0, top, leaf_depths)
        if len(leaf_depths) > 1:
            self.error(f"page {root}: bucket leaves at different depths {sorted(leaf_depths)}")

    def walk_page(self, pgid, low, high, depth, top, leaf_depths) -> None:
        if depth > DEPTH_MAX:
            self.error(f"page {pgid}: tree deeper than {DEPTH_MAX} levels")
            return
        if not 2 <= pgid < self.high_water:
            self.error(f"page {pgid}: out of bounds: {self.high_water}")
            return
        if pgid in self.seen:
            self.error(f"page {pgid}: multiple references (first from run at {self.seen[pgid]})")
            return
        try:
            hid, flags, count, overflow = self.header(pgid)
            page = self.tx.page(pgid)
        except CorruptError as e:
            self.seen[pgid] = pgid
            self.error(str(e))
            return
        if not self.mark(pgid, overflow):
            return
        if hid != pgid:
            self.error(f"page {pgid}: header names page {hid}")
        if flags not in (BRANCH, LEAF):
            self.error(f"page {pgid}: invalid type {flags:#x}")
            return
        what = f"page {pgid}"
        if page.is_leaf:
            leaf_depths.add(depth)
            self.check_leaf(page, what, low, high, top)
            return
        if not page.keys:
            self.error(f"{what}: empty branch")
            return
        self.check_order(page.keys, what, low, high)
        keys = page.keys
        for i, child in enumerate(page.vals):
            child_high = keys[i + 1] if i + 1 < len(keys) else high
            self.walk_page(child, keys[i], child_high, depth + 1, top, leaf_depths)

    def check_order(self, keys, what, low, high) -> None:
        for a, b in zip(keys, keys[1:]):
            if not a < b:
                self.error(f"{what}: keys out of order ({a!r} !< {b!r})")
                return
        if keys and low is not None and keys[0] < low:
            self.error(f"{what}: key {keys[0]!r} below its separator {low!r}")
        if keys and high is not None and keys[-1] >= high:
            self.error(f"{what}: key {keys[-1]!r} not below the next separator {high!r}")

    def check_leaf(self, page, what, low, high, top) -> None:
        self.check_order(page.keys, what, low, high)
        for key, value, flags in zip(page.keys, page.vals, page.flags):
            if flags & BUCKET_LEAF_FLAG:
                try:
                    root, _ = unpack_bucket_header(value)
                except CorruptError as e:
                    self.error(f"{what}: bucket {key!r}: {e}")
                    continue
                self.walk_bucket(root, value if root == 0 else None, False)
            elif top:
                self.error(f"{what}: plain key {key!r} in the top-level bucket")

    def walk_freelist(self) -> None:
        fl = self.tx.meta.freelist
        if fl == 0xFFFFFFFFFFFFFFFF:
            return
        try:
            _, flags, _, overflow = self.header(fl)
        except CorruptError as e:
            self.error(str(e))
            return
        self.mark(fl, overflow)


def reachable_pages(tx) -> set[int]:
    """Ids of every page reachable from tx's meta (trees and freelist page); CorruptError on the first problem."""
    w = _Walk(tx)
    w.walk_freelist()
    w.walk_bucket(tx.meta.root, None, True)
    if w.errors:
        first = w.errors[0]
        pgid = None
        if first.startswith("page "):
            try:
                pgid = int(first.split()[1].rstrip(":"))
            except ValueError:
                pgid = None
        raise CorruptError(first.partition(": ")[2] if pgid is not None else first, pgid)
    return set(w.seen)


def check_tx(tx) -> list[str]:
    w = _Walk(tx)
    w.walk_freelist()
    w.walk_bucket(tx.meta.root, None, True)
    db = tx.db
    freelist = db._freelist
    if freelist is None:
        return w.errors
    # Pages freed by transactions newer than this snapshot may still be part of it.
    visible_txid = tx.meta.txid - 1 if tx.writable else tx.meta.txid
    free = set(freelist.ids)
    for txid, ids in freelist.pending.items():
        if txid <= visible_txid:
            free.update(ids)
    for p in sorted(free):
        if p in w.seen:
            w.error(f"page {p}: reachable freed")
        if not 2 <= p < max(w.high_water, db._meta.pgid):
            w.error(f"page {p}: freed page out of bounds")
    newest = tx.writable or tx.meta.txid == db._meta.txid
    if newest and not tx.pages:
        for p in range(2, w.high_water):
            if p not in w.seen and p not in free:
                w.error(f"page {p}: unreachable unfreed")
    return w.errors
