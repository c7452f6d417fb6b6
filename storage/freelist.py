"""The free page list: free ids, pending ids per freeing txid, and its page codec.

Rules:
- `ids` is sorted and holds pages no open transaction can see; `pending[T]`
  holds pages freed by write transaction T, which readers older than T may
  still see. `release(minid)` moves every pending set with T < minid to `ids`.
- A page is in at most one of `ids` and the pending sets (`_known` mirrors
  their union so a double free is caught where it happens).
- A write transaction's allocations and frees are journaled so `rollback`
  can undo them exactly.
"""

from __future__ import annotations

import bisect
import struct

from .page import FREELIST, PAGE_HEADER_SIZE, CorruptError, pack_header, read_header

_COUNT_ESCAPE = 0xFFFF


class Freelist:
    def __init__(self):
        # `_ids[_head:]` are the free ids: single-page allocations advance `_head` instead of deleting from the
        # front of a long list (one memmove each); `ids` drops the taken prefix first.
        self._ids: list[int] = []
        self._head = 0
        self.pending: dict[int, list[int]] = {}
        self._known: set[int] = set()
        self._allocated: list[tuple[int, int]] = []  # (pgid, n) taken from ids by the open write tx
        self._allocated_pages: list[int] = []  # single pages taken likewise (the usual case: no tuple each)

    @property
    def ids(self) -> list[int]:
        """The free ids, sorted (a copy: other threads may read it while the writer allocates)."""
        return self._ids[self._head:]

    def _compacted(self) -> list[int]:
        """The free ids list itself, taken prefix dropped (the writer's thread only)."""
        if self._head:
            del self._ids[:self._head]
            self._head = 0
        return self._ids

    # ---- queries ----

    def free_count(self) -> int:
        return len(self._ids) - self._head

    def pending_count(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def count(self) -> int:
        return len(self._known)

    def is_free(self, pgid: int) -> bool:
        return pgid in self._known

    def all_ids(self) -> list[int]:
        """Free and pending ids, sorted: what a freelist page stores."""
        return sorted(self._known)

    # ---- changes ----

    def load(self, ids) -> None:
        """Replace the contents with `ids` (all free), e.g. from a freelist page or a reachability walk."""
        self._ids = sorted(set(ids))
        self._head = 0
        self.pending = {}
        self._known = set(self._ids)
        self._allocated = []
        self._allocated_pages = []

    def allocate(self, n: int) -> int:
        """The first id of a run of `n` contiguous free pages taken from `ids`, or 0 when there is none."""
        if n == 1:
            if self._head == len(self._ids):
                return 0
            pgid = self._ids[self._head]
            self._head += 1
            self._known.discard(pgid)
            self._allocated_pages.append(pgid)
            return pgid
        ids = self._compacted()
        if not ids:
            return 0
        run_start = prev = -2
        for i, pgid in enumerate(ids):
            if pgid != prev + 1:
                run_start = pgid
            prev = pgid
            if pgid - run_start + 1 == n:
                start = i - n + 1
                del ids[start:i + 1]
                for p in range(run_start, run_start + n):
                    self._known.discard(p)
                self._allocated.append((run_start, n))
                return run_start
        return 0

    def free(self, txid: int, pgid: int, overflow: int) -> None:
        assert pgid > 1, f"cannot free page {pgid}"
        pending = self.pending.get(txid)
        if pending is None:
            pending = self.pending[txid] = []
        if not overflow:  # the usual single page, without the loop
            assert pgid not in self._known, f"page {pgid} already freed"
            self._known.add(pgid)
            pending.append(pgid)
            return
        for p in range(pgid, pgid + overflow + 1):
            assert p not in self._known, f"page {p} already freed"
            self._known.add(p)
            pending.append(p)

    def release(self, minid: int) -> None:
        """Pages freed by transactions older than `minid` (the oldest open reader's txid) become free."""
        done = [t for t in self.pending if t < minid]
        if not done:
            return
        merged = self._ids[self._head:]
        for t in done:
            merged.extend(self.pending.pop(t))
        merged.sort()
        self._ids = merged
        self._head = 0

    def commit(self) -> None:
        """The write transaction committed: its allocations stay taken."""
        self._allocated = []
        self._allocated_pages = []

    def rollback(self, txid: int) -> None:
        """Undo the open write transaction `txid`: its frees and its allocations."""
        for p in self.pending.pop(txid, ()):
            self._known.discard(p)
        for pgid, n in self._allocated + [(p, 1) for p in self._allocated_pages]:
            for p in range(pgid, pgid + n):
                self._known.add(p)
                bisect.insort(self._compacted(), p)
        self._allocated = []
        self._allocated_pages = []

    # ---- page codec ----

    def size_bytes(self) -> int:
        n = len(self._known)
        return PAGE_HEADER_SIZE + 8 * n + (8 if n >= _COUNT_ESCAPE else 0)

    def encode(self, pgid: int, page_size: int) -> bytes:
        return encode_freelist(pgid, self.all_ids(), page_size, self.size_bytes() // page_size + 1)


def encode_freelist(pgid: int, ids: list[int], page_size: int, npages: int) -> bytes:
    """A freelist page run of `npages` pages (bbolt allocates floor(size / page_size) + 1)."""
    n = len(ids)
    if n >= _COUNT_ESCAPE:
        body = struct.pack(f"<{n + 1}Q", n, *ids)
        count = _COUNT_ESCAPE
    else:
        body = struct.pack(f"<{n}Q", *ids)
        count = n
    size = PAGE_HEADER_SIZE + len(body)
    assert size <= npages * page_size, (size, npages)
    buf = bytearray(npages * page_size)
    pack_header(buf, 0, pgid, FREELIST, count, npages - 1)
    buf[PAGE_HEADER_SIZE:size] = body
    return bytes(buf)


def decode_freelist(buf, pgid: int, high_water: int) -> list[int]:
    """The ids on a freelist page; each must lie in [2, high_water)."""
    if len(buf) < PAGE_HEADER_SIZE:
        raise CorruptError("truncated freelist page", pgid)
    _, flags, count, _ = read_header(buf, 0)
    if flags != FREELIST:
        raise CorruptError(f"flags {flags:#x} where a freelist page was expected", pgid)
    start = PAGE_HEADER_SIZE
    if count == _COUNT_ESCAPE:
        if len(buf) < start + 8:
            raise CorruptError("truncated freelist count", pgid)
        (count,) = struct.unpack_from("<Q", buf, start)
        start += 8
    if start + 8 * count > len(buf):
        raise CorruptError(f"freelist of {count} ids does not fit its pages", pgid)
    ids = list(struct.unpack_from(f"<{count}Q", buf, start))
    for p in ids:
        if not 2 <= p < high_water:
            raise CorruptError(f"freelist names page {p} outside [2, {high_water})", pgid)
    if len(set(ids)) != len(ids):
        raise CorruptError("freelist names a page twice", pgid)
    return sorted(ids)
