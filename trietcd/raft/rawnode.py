"""RawNode: the application's handle on a Raft, with Ready/Advance.

The application loop (see STYLE.md "Layers"):

    if node.has_ready():
        rd = node.ready()
        persist rd.hard_state, rd.entries, rd.snapshot (fsync if rd.must_sync)
        send rd.messages
        apply rd.snapshot, then rd.committed_entries (apply_conf_change for conf entries)
        node.advance(rd)

Rules: a Ready's messages may be sent only after its entries and hard state
are persisted; ready() hands out each message once; advance(rd) must follow
ready() before the next ready().
"""

from __future__ import annotations

import enum

import attrs

from proto.raftpb import raft_pb2 as pb

from .errors import StepLocalMsgError, StepPeerNotFoundError
from .raft import (
    LOCAL_MSGS, NONE, RESPONSE_MSGS, Config, Raft, SoftState, StateType, is_empty_hard_state, msg,
)

EMPTY_SNAPSHOT = pb.Snapshot()
EMPTY_HARD_STATE = pb.HardState()


class SnapshotStatus(enum.Enum):
    FINISH = 1
    FAILURE = 2


@attrs.frozen
class Ready:
    """What the node asks the application to persist, send and apply."""

    soft_state: SoftState | None = None  # None when unchanged
    hard_state: object = EMPTY_HARD_STATE  # empty when unchanged
    read_states: list = attrs.Factory(list)
    entries: list = attrs.Factory(list)  # to persist before sending messages
    snapshot: object = EMPTY_SNAPSHOT  # to persist (empty when none)
    committed_entries: list = attrs.Factory(list)  # to apply
    messages: list = attrs.Factory(list)  # to send after persisting
    must_sync: bool = False  # entries or term/vote changed: fsync before sending

    def applied_cursor(self) -> int:
        if self.committed_entries:
            return self.committed_entries[-1].Index
        if self.snapshot.metadata.index > 0:
            return self.snapshot.metadata.index
        return 0


def must_sync(st, prev, n_entries: int) -> bool:
    # Term, vote and new entries must be durable before anyone hears of them;
    # a commit index alone may be lost and relearned.
    return n_entries != 0 or st.vote != prev.vote or st.term != prev.term


@attrs.frozen
class Status:
    id: int
    hard_state: object
    soft_state: SoftState
    applied: int
    lead_transferee: int
    progress: dict  # id -> Progress copy (leader only, else empty)
    config: object


class RawNode:
    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        self._prev_soft_state = self.raft.soft_state()
        self._prev_hard_state = self.raft.hard_state()

    # ---- inputs --------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def tick_quiesced(self) -> None:
        """Advance the election clock only (no heartbeats, no elections)."""
        self.raft.election_elapsed += 1

    def campaign(self) -> None:
        self.raft.step(msg(pb.MsgHup))

    def propose(self, data: bytes) -> None:
        """Raises ProposalDroppedError when the proposal cannot be taken."""
        self.raft.step(pb.Message(type=pb.MsgProp, **{"from": self.raft.id}, entries=[pb.Entry(Data=data)]))

    def propose_many(self, datas) -> None:
        """Propose several entries in one message (one append, one broadcast)."""
        r = self.raft
        m = pb.Message(type=pb.MsgProp, **{"from": r.id})
        ents = m.entries
        for d in datas:  # made inside the message: no copy, and they share its memory while the log keeps them
            ents.add(Data=d)
        if r.state is StateType.LEADER:
            r.leader_propose(list(ents))  # what stepping the MsgProp comes to on a leader
        else:
            r.step(m)

    def propose_conf_change(self, cc) -> None:
        if isinstance(cc, pb.ConfChangeV2):
            t = pb.EntryConfChangeV2
        else:
            t = pb.EntryConfChange
        self.raft.step(pb.Message(type=pb.MsgProp, entries=[pb.Entry(Type=t, Data=cc.SerializeToString())]))

    def apply_conf_change(self, cc):
        """Apply a committed conf change entry's payload; returns the ConfState."""
        return self.raft.apply_conf_change(cc)

    def step(self, m) -> None:
        """Step a message received from a peer."""
        if m.type in LOCAL_MSGS:
            raise StepLocalMsgError()
        if getattr(m, "from") in self.raft.prs.progress or m.type not in RESPONSE_MSGS:
            self.raft.step(m)
            return
        raise StepPeerNotFoundError()

    def read_index(self, rctx: bytes) -> None:
        """Ask for a read index; the answer arrives as a ReadState with ctx rctx."""
        self.raft.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(Data=rctx)]))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(msg(pb.MsgTransferLeader, frm=transferee))

    def report_unreachable(self, i: int) -> None:
        self.raft.step(msg(pb.MsgUnreachable, frm=i))

    def report_snapshot(self, i: int, status: SnapshotStatus) -> None:
        self.raft.step(msg(pb.MsgSnapStatus, frm=i, reject=status is SnapshotStatus.FAILURE))

    # ---- outputs -------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if r.msgs or r.read_states:
            return True
        log = r.raft_log
        if log.unstable.entries or log.has_next_ents() or log.has_pending_snapshot():
            return True
        if r.soft_state() != self._prev_soft_state:
            return True
        hs = r.hard_state()
        if not is_empty_hard_state(hs) and not _hard_state_equal(hs, self._prev_hard_state):
            return True
        return False

    def ready(self) -> Ready:
        r = self.raft
        log = r.raft_log
        soft = r.soft_state()
        hard = r.hard_state()
        ents = log.unstable_entries()
        rd = Ready(
            soft_state=None if soft == self._prev_soft_state else soft,
            hard_state=EMPTY_HARD_STATE if _hard_state_equal(hard, self._prev_hard_state) else hard,
            read_states=r.read_states,
            entries=ents,
            snapshot=log.unstable.snapshot if log.unstable.snapshot is not None else EMPTY_SNAPSHOT,
            committed_entries=log.next_ents(),
            messages=r.msgs,
            must_sync=must_sync(hard, self._prev_hard_state, len(ents)),
        )
        if rd.soft_state is not None:
            self._prev_soft_state = rd.soft_state
        r.read_states = []
        r.msgs = []
        return rd

    def advance(self, rd: Ready) -> None:
        if not is_empty_hard_state(rd.hard_state):
            self._prev_hard_state = rd.hard_state
        self.raft.advance(rd)

    def status(self) -> Status:
        r = self.raft
        progress = {}
        if r.state is StateType.LEADER:
            progress = {i: pr.clone() for i, pr in r.prs.progress.items()}
        return Status(
            id=r.id, hard_state=r.hard_state(), soft_state=r.soft_state(), applied=r.raft_log.applied,
            lead_transferee=r.lead_transferee, progress=progress, config=r.prs.config.clone(),
        )

    def lead(self) -> int:
        return self.raft.lead if self.raft.lead != NONE else NONE


def _hard_state_equal(a, b) -> bool:
    return a.term == b.term and a.vote == b.vote and a.commit == b.commit
