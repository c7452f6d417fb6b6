"""The raft log: stable storage plus the unstable tail, with commit and apply cursors.

Rules:
- applied <= committed <= last_index().
- first_index() - 1 is the compaction point (index of the snapshot); term()
  of anything older raises nothing but yields 0 only for out-of-range indices.
- Entries at or below `committed` are never truncated (asserted in append).
"""

from __future__ import annotations

from .errors import CompactedError, UnavailableError
from .storage import NO_LIMIT, limit_size
from .unstable import Unstable


class RaftLog:
    __slots__ = ("storage", "unstable", "committed", "applied", "max_next_ents_size")

    def __init__(self, storage, max_next_ents_size: int = NO_LIMIT) -> None:
        self.storage = storage
        first_index = storage.first_index()
        last_index = storage.last_index()
        self.unstable = Unstable(last_index + 1)
        # Start from the last compaction: whatever precedes it is applied.
        self.committed = first_index - 1
        self.applied = first_index - 1
        self.max_next_ents_size = max_next_ents_size

    def describe(self) -> str:
        return (
            f"committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable.entries)={len(self.unstable.entries)}"
        )

    # ---- appending ---------------------------------------------------------

    def maybe_append(self, index: int, log_term: int, committed: int, ents) -> int | None:
        """Append ents after (index, log_term) if that entry matches; return the
        index of the last new entry, or None when the log does not match."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, f"entry {ci} conflict with committed entry [committed({self.committed})]"
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].Index - 1
        assert after >= self.committed, f"after({after}) is out of range [committed({self.committed})]"
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents) -> int:
        """Index of the first entry whose term differs from ours (or that we
        lack); 0 when all of ents are already in the log."""
        for e in ents:
            if not self.match_term(e.Index, e.Term):
                return e.Index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= index whose term is <= term (or which cannot be
        read). The leader and follower use it to skip a whole term of
        mismatching entries per round trip instead of one entry."""
        if index > self.last_index():
            return index
        while True:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index
            if t <= term:
                return index
            index -= 1

    # ---- reading -----------------------------------------------------------

    def unstable_entries(self) -> list:
        return list(self.unstable.entries)

    def next_ents(self) -> list:
        """Committed entries not yet applied, limited by max_next_ents_size."""
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def has_next_ents(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def has_pending_snapshot(self) -> bool:
        snap = self.unstable.snapshot
        return snap is not None and snap.metadata.index != 0

    def snapshot(self):
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry i; 0 outside [first_index()-1, last_index()]. Raises
        CompactedError/UnavailableError when storage lost the entry meanwhile."""
        dummy = self.first_index() - 1
        if i < dummy or i > self.last_index():
            return 0
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def zero_term_on_compacted(self, i: int) -> int:
        try:
            return self.term(i)
        except CompactedError:
            return 0

    def entries(self, i: int, max_size: int = NO_LIMIT) -> list:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list:
        while True:
            try:
                return self.entries(self.first_index())
            except CompactedError:
                continue  # compacted meanwhile; read again

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (last_index, term) is at least as up to date as ours (§5.4.1)."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and last_index >= self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except (CompactedError, UnavailableError):
            return False

    def slice(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list:
        self._must_check_out_of_bounds(lo, hi)
        if lo == hi:
            return []
        ents: list = []
        offset = self.unstable.offset
        if lo < offset:
            upto = min(hi, offset)
            try:
                stored = self.storage.entries(lo, upto, max_size)
            except UnavailableError:
                raise AssertionError(f"entries[{lo}:{upto}) is unavailable from storage") from None
            if len(stored) < upto - lo:
                return stored  # the size limit cut it short
            ents = list(stored)
        if hi > offset:
            tail = self.unstable.slice(max(lo, offset), hi)
            if ents:
                ents.extend(tail)
            else:
                ents = tail
        return limit_size(ents, max_size)

    def _must_check_out_of_bounds(self, lo: int, hi: int) -> None:
        assert lo <= hi, f"invalid slice {lo} > {hi}"
        fi = self.first_index()
        if lo < fi:
            raise CompactedError()
        last = self.last_index()
        assert hi <= last + 1, f"slice[{lo},{hi}) out of bound [{fi},{last}]"

    # ---- cursors -----------------------------------------------------------

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            assert self.last_index() >= to_commit, (
                f"tocommit({to_commit}) is out of range [lastIndex({self.last_index()})]. "
                "Was the raft log corrupted, truncated, or lost?"
            )
            self.committed = to_commit

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        assert self.applied <= i <= self.committed, (
            f"applied({i}) is out of range [prevApplied({self.applied}), committed({self.committed})]"
        )
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to max_index if that entry is of `term` (only entries of the
        leader's current term are committed by counting replicas, §5.4.2)."""
        if max_index > self.committed and self.zero_term_on_compacted(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def restore(self, snap) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
