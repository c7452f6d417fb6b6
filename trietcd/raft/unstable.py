"""Entries and a snapshot not yet handed to stable storage.

Rules:
- `entries[i]` has index `offset + i`.
- `offset` may be less than the last index held in storage: a leader's
  conflicting entries are then overwriting stored ones.
- If `snapshot` is set, it precedes all of `entries` (offset == its index + 1
  when it was restored).
"""

from __future__ import annotations


class Unstable:
    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int = 0) -> None:
        self.snapshot = None
        self.entries: list = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].Term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to i (of term t) are persisted; forget them.

        Only entries still matching term t are released: a newer leader may
        have replaced them while the write was in flight."""
        gt = self.maybe_term(i)
        if gt is None:
            return
        if gt == t and i >= self.offset:
            self.entries = self.entries[i + 1 - self.offset :]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents) -> None:
        after = ents[0].Index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace everything unstable; storage truncates on its own append.
            self.offset = after
            self.entries = list(ents)
        else:
            keep = self.slice(self.offset, after)
            keep.extend(ents)
            self.entries = keep

    def slice(self, lo: int, hi: int) -> list:
        self._must_check_out_of_bounds(lo, hi)
        return self.entries[lo - self.offset : hi - self.offset]

    def _must_check_out_of_bounds(self, lo: int, hi: int) -> None:
        assert lo <= hi, f"invalid unstable.slice {lo} > {hi}"
        upper = self.offset + len(self.entries)
        assert self.offset <= lo and hi <= upper, (
            f"unstable.slice[{lo},{hi}) out of bound [{self.offset},{upper}]"
        )
