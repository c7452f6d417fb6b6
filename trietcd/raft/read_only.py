"""Linearizable reads without a log entry (ReadIndex, Raft thesis §6.4).

Safe mode: the leader records its commit index for the request, then
broadcasts a heartbeat carrying the request context; once a quorum echoes the
context back, no newer leader can exist and the recorded index is safe to
read at. Requests are served in arrival order, so an ack for a later context
also confirms the earlier ones.

Lease mode answers at once, relying on CheckQuorum and bounded clock drift.
"""

from __future__ import annotations

import enum


class ReadOnlyOption(enum.Enum):
    SAFE = 0
    LEASE_BASED = 1


class ReadState:
    """A read the application may serve once it has applied up to `index`."""

    __slots__ = ("index", "request_ctx")

    def __init__(self, index: int, request_ctx: bytes) -> None:
        self.index = index
        self.request_ctx = request_ctx

    def __eq__(self, other) -> bool:
        return isinstance(other, ReadState) and (self.index, self.request_ctx) == (other.index, other.request_ctx)

    def __repr__(self) -> str:
        return f"ReadState(index={self.index}, request_ctx={self.request_ctx!r})"


class ReadIndexStatus:
    __slots__ = ("req", "index", "acks")

    def __init__(self, req, index: int) -> None:
        self.req = req
        self.index = index
        self.acks: dict = {}  # voter id -> True, the shape VoteResult takes


class ReadOnly:
    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self.pending_read_index: dict = {}
        self.read_index_queue: list = []

    def add_request(self, index: int, m) -> None:
        ctx = m.entries[0].Data
        if ctx in self.pending_read_index:
            return
        self.pending_read_index[ctx] = ReadIndexStatus(m, index)
        self.read_index_queue.append(ctx)

    def recv_ack(self, i: int, ctx: bytes) -> dict | None:
        """Record that voter i confirmed leadership for ctx; the acks so far."""
        rs = self.pending_read_index.get(ctx)
        if rs is None:
            return None
        rs.acks[i] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list:
        """Dequeue every request up to and including ctx."""
        if ctx not in self.pending_read_index:
            return []
        done = []
        for n, c in enumerate(self.read_index_queue):
            rs = self.pending_read_index[c]
            done.append(rs)
            if c == ctx:
                del self.read_index_queue[: n + 1]
                for r in done:
                    del self.pending_read_index[r.req.entries[0].Data]
                return done
        raise AssertionError("cannot find corresponding read state from pending map")

    def last_pending_request_ctx(self) -> bytes:
        return self.read_index_queue[-1] if self.read_index_queue else b""
