"""The stable log a raft node reads from, and an in-memory implementation.

Rules of MemoryStorage:
- `_ents[0]` is a dummy entry carrying the index and term of the last
  compaction (or snapshot); real entries follow it contiguously.
- first_index() == _ents[0].Index + 1 and last_index() == _ents[-1].Index.
- The application appends entries (and the hard state) after it has persisted
  them, before calling RawNode.advance.
"""

from __future__ import annotations

from proto.raftpb import raft_pb2 as pb

from .errors import CompactedError, SnapOutOfDateError, UnavailableError

NO_LIMIT = (1 << 64) - 1
_byte_size = pb.Entry.ByteSize


def limit_size(ents: list, max_size: int) -> list:
    """The longest prefix of `ents` whose encoded size stays within max_size,
    but always at least one entry so that progress is possible."""
    if len(ents) <= 1 or max_size >= NO_LIMIT:
        return ents
    if sum(map(_byte_size, ents)) <= max_size:
        return ents  # the common case, summed without a Python-level loop
    size = ents[0].ByteSize()
    for limit in range(1, len(ents)):
        size += ents[limit].ByteSize()
        if size > max_size:
            return ents[:limit]
    return ents


class MemoryStorage:
    """Storage backed by lists; used by tests, the simulation and the benchmark."""

    def __init__(self) -> None:
        self.hard_state = pb.HardState()
        self._snapshot = pb.Snapshot()
        self._ents: list = [pb.Entry()]

    # ---- the Storage interface the raft log reads -------------------------

    def initial_state(self) -> tuple:
        """(HardState, ConfState) to start from."""
        return self.hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_size: int = NO_LIMIT) -> list:
        """Entries [lo, hi), limited by max_size (at least one is returned)."""
        offset = self._ents[0].Index
        if lo <= offset:
            raise CompactedError()
        assert hi <= self.last_index() + 1, f"entries' hi({hi}) is out of bound lastindex({self.last_index()})"
        if len(self._ents) == 1:
            raise UnavailableError()
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        offset = self._ents[0].Index
        if i < offset:
            raise CompactedError()
        if i - offset >= len(self._ents):
            raise UnavailableError()
        return self._ents[i - offset].Term

    def last_index(self) -> int:
        return self._ents[0].Index + len(self._ents) - 1

    def first_index(self) -> int:
        return self._ents[0].Index + 1

    def snapshot(self):
        return self._snapshot

    # ---- what the application calls -------------------------------------

    def set_hard_state(self, hard_state) -> None:
        self.hard_state = hard_state

    def apply_snapshot(self, snap) -> None:
        """Replace the whole contents with the snapshot's."""
        if self._snapshot.metadata.index >= snap.metadata.index:
            raise SnapOutOfDateError()
        self._snapshot = snap
        self._ents = [pb.Entry(Term=snap.metadata.term, Index=snap.metadata.index)]

    def create_snapshot(self, i: int, conf_state=None, data: bytes = b""):
        """Record a snapshot at applied index i; the log is not compacted."""
        if i <= self._snapshot.metadata.index:
            raise SnapOutOfDateError()
        offset = self._ents[0].Index
        assert i <= self.last_index(), f"snapshot {i} is out of bound lastindex({self.last_index()})"
        snap = pb.Snapshot(data=data)
        snap.metadata.index = i
        snap.metadata.term = self._ents[i - offset].Term
        if conf_state is not None:
            snap.metadata.conf_state.CopyFrom(conf_state)
        else:
            snap.metadata.conf_state.CopyFrom(self._snapshot.metadata.conf_state)
        self._snapshot = snap
        return snap

    def compact(self, compact_index: int) -> None:
        """Drop the entries before compact_index; it becomes the dummy entry."""
        offset = self._ents[0].Index
        if compact_index <= offset:
            raise CompactedError()
        assert compact_index <= self.last_index(), (
            f"compact {compact_index} is out of bound lastindex({self.last_index()})"
        )
        i = compact_index - offset
        dummy = pb.Entry(Index=self._ents[i].Index, Term=self._ents[i].Term)
        self._ents = [dummy, *self._ents[i + 1 :]]

    def append(self, entries) -> None:
        """Append persisted entries, truncating any conflicting suffix."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].Index + len(entries) - 1
        if last < first:
            return  # all of them are already compacted away
        if first > entries[0].Index:
            entries = entries[first - entries[0].Index :]
        offset = entries[0].Index - self._ents[0].Index
        assert offset <= len(self._ents), (
            f"missing log entry [last: {self.last_index()}, append at: {entries[0].Index}]"
        )
        if offset < len(self._ents):
            del self._ents[offset:]
        self._ents.extend(entries)
