"""The raft state machine: roles, elections, replication, commit, membership.

Rules this module keeps (etcd raft semantics):
- Every message from a peer carries a term. A higher term makes us a
  follower first (except PreVote traffic, which never changes terms, and
  votes inside a CheckQuorum lease, which are ignored). A lower term is
  ignored, except that heartbeats/appends from a stale leader are answered so
  it learns the newer term when CheckQuorum or PreVote could strand it.
- Local messages (MsgHup, MsgBeat, MsgProp, MsgCheckQuorum, ...) have term 0.
- A leader commits only entries of its own term by counting replicas (§5.4.2);
  earlier ones commit with them.
- A heartbeat carries min(follower's match, committed): a follower may not
  yet hold the leader's committed entries, and commit must never pass its log.
- Everything that depends on chance draws from the injected `rng`.
"""

from __future__ import annotations

import enum

import attrs

from proto.raftpb import raft_pb2 as pb

from . import confchange
from .errors import (
    CompactedError, ConfigError, ProposalDroppedError, SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from .log import RaftLog
from .progress import ProgressState, ProgressTracker
from .quorum import VoteResult
from .read_only import ReadOnly, ReadOnlyOption, ReadState
from .storage import NO_LIMIT

NONE = 0  # no node id
CAMPAIGN_PRE_ELECTION = b"CampaignPreElection"
CAMPAIGN_ELECTION = b"CampaignElection"
CAMPAIGN_TRANSFER = b"CampaignTransfer"

T = pb  # message type constants live on the generated module
LOCAL_MSGS = frozenset({pb.MsgHup, pb.MsgBeat, pb.MsgUnreachable, pb.MsgSnapStatus, pb.MsgCheckQuorum})
RESPONSE_MSGS = frozenset({
    pb.MsgAppResp, pb.MsgVoteResp, pb.MsgHeartbeatResp, pb.MsgUnreachable, pb.MsgPreVoteResp,
})


class StateType(enum.Enum):
    FOLLOWER = "StateFollower"
    CANDIDATE = "StateCandidate"
    LEADER = "StateLeader"
    PRE_CANDIDATE = "StatePreCandidate"


def vote_resp_type(t: int) -> int:
    if t == pb.MsgVote:
        return pb.MsgVoteResp
    if t == pb.MsgPreVote:
        return pb.MsgPreVoteResp
    raise AssertionError(f"not a vote message: {t}")


def msg(type: int, to: int = 0, frm: int = 0, **fields):
    """A raftpb.Message; `frm` stands for the reserved word `from`."""
    return pb.Message(type=type, to=to, **{"from": frm}, **fields)


def msg_from(m) -> int:
    return getattr(m, "from")


def payload_size(ents) -> int:
    return sum(len(e.Data) for e in ents)


@attrs.frozen
class Config:
    """What a raft node needs to start. `rng` is a random.Random (or anything
    with `randrange`); it decides the randomized election timeout."""

    id: int
    election_tick: int
    heartbeat_tick: int
    storage: object
    rng: object
    applied: int = 0
    # Max bytes of entries per MsgApp; 0 means one entry per message.
    max_size_per_msg: int = NO_LIMIT
    # Max bytes of committed entries per Ready; 0 means max_size_per_msg.
    max_committed_size_per_ready: int = 0
    # Max bytes of proposed-but-uncommitted payload at the leader; 0 is no limit.
    max_uncommitted_entries_size: int = 0
    max_inflight_msgs: int = 256
    check_quorum: bool = False
    pre_vote: bool = False
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    disable_proposal_forwarding: bool = False

    def validate(self) -> None:
        if self.id == NONE:
            raise ConfigError("cannot use none as id")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election tick must be greater than heartbeat tick")
        if self.storage is None:
            raise ConfigError("storage cannot be nil")
        if self.rng is None or not hasattr(self.rng, "randrange"):
            raise ConfigError("rng must be a random.Random")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max inflight messages must be greater than 0")
        if self.read_only_option is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigError("CheckQuorum must be enabled when ReadOnlyOption is ReadOnlyLeaseBased")


class SoftState:
    """Volatile state the application may want to observe (not persisted)."""

    __slots__ = ("lead", "raft_state")

    def __init__(self, lead: int, raft_state: StateType) -> None:
        self.lead = lead
        self.raft_state = raft_state

    def __eq__(self, other) -> bool:
        return isinstance(other, SoftState) and self.lead == other.lead and self.raft_state == other.raft_state

    def __repr__(self) -> str:
        return f"SoftState(lead={self.lead}, raft_state={self.raft_state.value})"


def is_empty_hard_state(hs) -> bool:
    return hs.term == 0 and hs.vote == 0 and hs.commit == 0


def is_empty_snap(snap) -> bool:
    return snap.metadata.index == 0


class Raft:
    def __init__(self, c: Config) -> None:
        c.validate()
        max_committed = c.max_committed_size_per_ready or c.max_size_per_msg
        self.id = c.id
        self.raft_log = RaftLog(c.storage, max_committed)
        hs, cs = c.storage.initial_state()
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.msgs: list = []
        self.read_states: list = []
        self.max_msg_size = c.max_size_per_msg
        self.max_uncommitted_size = c.max_uncommitted_entries_size or NO_LIMIT
        self.prs = ProgressTracker(c.max_inflight_msgs)
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.read_only = ReadOnly(c.read_only_option)
        self.heartbeat_timeout = c.heartbeat_tick
        self.election_timeout = c.election_tick
        self.disable_proposal_forwarding = c.disable_proposal_forwarding
        self.rng = c.rng
        self.lead_transferee = NONE
        # Only one conf change may be pending (in the log, unapplied) at a
        # time; this is the index of the latest one a leader appended.
        self.pending_conf_index = 0
        # Payload bytes appended by this leader and not yet committed.
        self.uncommitted_size = 0
        # ReadIndex requests held until this leader commits an entry of its term.
        self.pending_read_index_messages: list = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self._tick = self.tick_election
        self._step = self.step_follower

        changer = confchange.Changer(self.prs.config, self.prs.progress, self.prs.max_inflight,
                                     self.raft_log.last_index())
        cfg, prs = confchange.restore(changer, cs)
        assert_conf_states_equivalent(cs, self.switch_to_config(cfg, prs))
        if not is_empty_hard_state(hs):
            self.load_state(hs)
        if c.applied > 0:
            self.raft_log.applied_to(c.applied)
        self.become_follower(self.term, NONE)

    # ---- observation ---------------------------------------------------------

    def has_leader(self) -> bool:
        return self.lead != NONE

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self):
        return pb.HardState(term=self.term, vote=self.vote, commit=self.raft_log.committed)

    # ---- sending ---------------------------------------------------------------

    def send(self, m) -> None:
        # Only an unset sender is filled in: a forwarded MsgTransferLeader
        # names the transferee in `from`, and overwriting it would make the
        # leader hand leadership to the forwarding follower instead.
        if msg_from(m) == NONE:
            setattr(m, "from", self.id)
        t = m.type
        if t in (pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp):
            # Vote traffic states its term explicitly: a PreVote asks for the
            # term we would campaign in, and a granted PreVoteResp echoes it.
            assert m.term != 0, f"term should be set when sending {pb.MessageType.Name(t)}"
        else:
            assert m.term == 0, f"term should not be set when sending {pb.MessageType.Name(t)} (was {m.term})"
            # Proposals and read requests forwarded to the leader stay local
            # messages (term 0) so the leader treats them as its own.
            if t != pb.MsgProp and t != pb.MsgReadIndex:
                m.term = self.term
        self.msgs.append(m)

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send a MsgApp (or MsgSnap) carrying new entries to `to`; False when
        nothing was sent (paused, or nothing new and not asked to)."""
        pr = self.prs.progress[to]
        if pr.is_paused():
            return False
        log = self.raft_log
        try:
            term = log.term(pr.next - 1)
            ents = log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            # The entries are compacted away: only a snapshot can help.
            if not send_if_empty:
                return False
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        m = pb.Message(type=pb.MsgApp, to=to, index=pr.next - 1, logTerm=term, entries=ents,
                       commit=log.committed)
        if ents:
            state = pr.state
            if state is ProgressState.REPLICATE:
                last = ents[-1].Index
                pr.optimistic_update(last)
                pr.inflights.add(last)
            elif state is ProgressState.PROBE:
                pr.probe_sent = True
            else:
                raise AssertionError(f"{self.id} is sending append in unhandled state {state}")
        self.send(m)
        return True

    def _send_snapshot(self, to: int, pr) -> bool:
        if not pr.recent_active:
            return False  # it may be down; do not ship a snapshot into the void
        try:
            snapshot = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        assert not is_empty_snap(snapshot), "need non-empty snapshot"
        m = pb.Message(type=pb.MsgSnap, to=to)
        m.snapshot.CopyFrom(snapshot)
        pr.become_snapshot(snapshot.metadata.index)
        self.send(m)
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # The follower may not have every committed entry yet; it must never
        # be told to commit past what the leader knows it holds.
        commit = min(self.prs.progress[to].match, self.raft_log.committed)
        self.send(pb.Message(type=pb.MsgHeartbeat, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for i in self.prs.ids():
            if i != self.id:
                self.send_append(i)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for i in self.prs.ids():
            if i != self.id:
                self.send_heartbeat(i, ctx)

    def send_timeout_now(self, to: int) -> None:
        self.send(pb.Message(type=pb.MsgTimeoutNow, to=to))

    # ---- commit and apply ------------------------------------------------------

    def maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.prs.committed(), self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.zero_term_on_compacted(self.raft_log.committed) == self.term

    def advance(self, rd) -> None:
        """The application persisted and applied what `rd` carried."""
        self.reduce_uncommitted_size(rd.committed_entries)
        new_applied = rd.applied_cursor()
        if new_applied > 0:
            old_applied = self.raft_log.applied
            self.raft_log.applied_to(new_applied)
            if (self.prs.config.auto_leave and old_applied <= self.pending_conf_index <= new_applied
                    and self.state is StateType.LEADER):
                # The joint config is in effect and auto-leave is asked for:
                # propose the empty change that leaves it. Never refused.
                ent = pb.Entry(Type=pb.EntryConfChangeV2)
                assert self.append_entry([ent]), "refused un-refusable auto-leaving ConfChangeV2"
                self.pending_conf_index = self.raft_log.last_index()
        if rd.entries:
            e = rd.entries[-1]
            self.raft_log.stable_to(e.Index, e.Term)
        if not is_empty_snap(rd.snapshot):
            self.raft_log.stable_snap_to(rd.snapshot.metadata.index)

    def append_entry(self, es) -> bool:
        log = self.raft_log
        li = log.last_index()
        if not self.increase_uncommitted_size(es):
            return False
        term = self.term
        for i, e in enumerate(es, 1):
            e.Term = term
            e.Index = li + i
        li = log.append(es)
        self.prs.progress[self.id].maybe_update(li)
        # A single-voter cluster commits right away.
        self.maybe_commit()
        return True

    def increase_uncommitted_size(self, ents) -> bool:
        if self.max_uncommitted_size == NO_LIMIT:
            return True  # nothing to enforce, nothing to track
        s = payload_size(ents)
        if self.uncommitted_size > 0 and s > 0 and self.uncommitted_size + s > self.max_uncommitted_size:
            # Always admit at least one proposal, however large, when none is pending.
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents) -> None:
        if self.uncommitted_size == 0:
            return  # followers never track it
        s = payload_size(ents)
        self.uncommitted_size = 0 if s > self.uncommitted_size else self.uncommitted_size - s

    # ---- ticks -------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(msg(pb.MsgHup, frm=self.id))

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(msg(pb.MsgCheckQuorum, frm=self.id))
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state is StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state is not StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(msg(pb.MsgBeat, frm=self.id))

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    # ---- role changes -----------------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.prs.reset_votes()
        last = self.raft_log.last_index()
        for i, pr in self.prs.progress.items():
            pr.match = last if i == self.id else 0
            pr.next = last + 1
            pr.reset_state(ProgressState.PROBE)
            pr.recent_active = False
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly(self.read_only.option)

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self.step_follower
        self.reset(term)
        self._tick = self.tick_election
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        assert self.state is not StateType.LEADER, "invalid transition [leader -> candidate]"
        self._step = self.step_candidate
        self.reset(self.term + 1)
        self._tick = self.tick_election
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        assert self.state is not StateType.LEADER, "invalid transition [leader -> pre-candidate]"
        # A pre-candidate changes neither term nor vote: it only asks whether
        # it could win, so a partitioned node does not inflate terms.
        self._step = self.step_candidate
        self.prs.reset_votes()
        self._tick = self.tick_election
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        assert self.state is not StateType.FOLLOWER, "invalid transition [follower -> leader]"
        self._step = self.step_leader
        self.reset(self.term)
        self._tick = self.tick_heartbeat
        self.lead = self.id
        self.state = StateType.LEADER
        # The leader knows its own log, so it replicates to itself.
        self.prs.progress[self.id].become_replicate()
        # Conservatively assume the log tail may hold an unapplied conf change.
        self.pending_conf_index = self.raft_log.last_index()
        empty = pb.Entry()
        assert self.append_entry([empty]), "empty entry was dropped"
        # The term's first (empty) entry does not count against the quota.
        self.reduce_uncommitted_size([empty])

    def promotable(self) -> bool:
        """Whether this node may campaign: a voter without a pending snapshot."""
        pr = self.prs.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.has_pending_snapshot()

    def hup(self, kind: bytes) -> None:
        if self.state is StateType.LEADER:
            return
        if not self.promotable():
            return
        log = self.raft_log
        if log.committed > log.applied:
            ents = log.slice(log.applied + 1, log.committed + 1)
            if num_of_pending_conf(ents):
                # The config it would campaign under may be about to change.
                return
        self.campaign(kind)

    def campaign(self, kind: bytes) -> None:
        if not self.promotable():
            return
        if kind == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = pb.MsgPreVote
            term = self.term + 1  # the term it would use in the real election
        else:
            self.become_candidate()
            vote_msg = pb.MsgVote
            term = self.term
        _, _, res = self.poll(self.id, vote_resp_type(vote_msg), True)
        if res is VoteResult.WON:
            # Single-voter config: won already.
            if kind == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == CAMPAIGN_TRANSFER else b""
        last_index, last_term = self.raft_log.last_index(), self.raft_log.last_term()
        for i in self.prs.voter_nodes():
            if i == self.id:
                continue
            self.send(pb.Message(type=vote_msg, to=i, term=term, index=last_index, logTerm=last_term,
                                 context=ctx))

    def poll(self, i: int, t: int, granted: bool) -> tuple:
        self.prs.record_vote(i, granted)
        return self.prs.tally_votes()

    # ---- step --------------------------------------------------------------------

    def step(self, m) -> None:
        """Handle one message; raises ProposalDroppedError for refused proposals."""
        t = m.type
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t == pb.MsgVote or t == pb.MsgPreVote:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and self.lead != NONE and self.election_elapsed < self.election_timeout
                if not force and in_lease:
                    # We heard from a leader within the election timeout: the
                    # candidate is likely a partitioned node coming back; do
                    # not let it depose a healthy leader.
                    return
            if t == pb.MsgPreVote:
                pass  # never changes our term
            elif t == pb.MsgPreVoteResp and not m.reject:
                pass  # our term rises when the real election starts
            elif t in (pb.MsgApp, pb.MsgHeartbeat, pb.MsgSnap):
                self.become_follower(m.term, msg_from(m))
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t == pb.MsgHeartbeat or t == pb.MsgApp):
                # A stale leader (e.g. healed from a partition) would otherwise
                # never learn our term: with CheckQuorum we ignore its higher-
                # term votes, with PreVote it never raises its term. Tell it.
                self.send(pb.Message(type=pb.MsgAppResp, to=msg_from(m)))
            elif t == pb.MsgPreVote:
                # Reject so the pre-candidate learns our term and gives up.
                self.send(pb.Message(type=pb.MsgPreVoteResp, to=msg_from(m), term=self.term, reject=True))
            return

        if t == pb.MsgHup:
            self.hup(CAMPAIGN_PRE_ELECTION if self.pre_vote else CAMPAIGN_ELECTION)
        elif t == pb.MsgVote or t == pb.MsgPreVote:
            frm = msg_from(m)
            can_vote = (
                self.vote == frm
                or (self.vote == NONE and self.lead == NONE)
                or (t == pb.MsgPreVote and m.term > self.term)
            )
            if can_vote and self.raft_log.is_up_to_date(m.index, m.logTerm):
                # Reply with the message's term: for PreVote that is a future
                # term we do not hold ourselves.
                self.send(pb.Message(type=vote_resp_type(t), to=frm, term=m.term))
                if t == pb.MsgVote:
                    self.election_elapsed = 0
                    self.vote = frm
            else:
                self.send(pb.Message(type=vote_resp_type(t), to=frm, term=self.term, reject=True))
        else:
            self._step(m)

    def step_leader(self, m) -> None:
        t = m.type
        if t == pb.MsgBeat:
            self.bcast_heartbeat()
            return
        if t == pb.MsgCheckQuorum:
            pr = self.prs.progress.get(self.id)
            if pr is not None:
                pr.recent_active = True
            if not self.prs.quorum_active():
                self.become_follower(self.term, NONE)
            for i, pr in self.prs.progress.items():
                if i != self.id:
                    pr.recent_active = False
            return
        if t == pb.MsgProp:
            self._leader_propose(m)
            return
        if t == pb.MsgReadIndex:
            if self.prs.is_singleton():
                resp = self.response_to_read_index_req(m, self.raft_log.committed)
                if resp is not None:
                    self.send(resp)
                return
            if not self.committed_entry_in_current_term():
                # Our commit index may lag the previous leader's until an
                # entry of our term commits; answer after that.
                self.pending_read_index_messages.append(m)
                return
            self.send_read_index_response(m)
            return

        frm = msg_from(m)
        pr = self.prs.progress.get(frm)
        if pr is None:
            return
        if t == pb.MsgAppResp:
            self._leader_app_resp(m, frm, pr)
        elif t == pb.MsgHeartbeatResp:
            self._leader_heartbeat_resp(m, frm, pr)
        elif t == pb.MsgSnapStatus:
            if pr.state is not ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # On success, wait for the follower's MsgAppResp before sending more;
            # on failure, wait a heartbeat interval before probing again.
            pr.probe_sent = True
        elif t == pb.MsgUnreachable:
            # Optimistic streaming to an unreachable peer loses messages; probe.
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
        elif t == pb.MsgTransferLeader:
            self._leader_transfer(frm, pr)

    def _leader_propose(self, m) -> None:
        assert len(m.entries) > 0, "stepped empty MsgProp"
        self.leader_propose(list(m.entries))

    def leader_propose(self, ents: list) -> None:
        """A leader's MsgProp, given its entries (RawNode.propose_many calls it without the message)."""
        if self.id not in self.prs.progress:
            # Removed from the config while leader; it steps down on its own.
            raise ProposalDroppedError()
        if self.lead_transferee != NONE:
            raise ProposalDroppedError()
        for i, e in enumerate(ents):
            if e.Type == pb.EntryConfChange or e.Type == pb.EntryConfChangeV2:
                if e.Type == pb.EntryConfChange:
                    cc = confchange.as_v2(pb.ConfChange.FromString(e.Data))
                else:
                    cc = pb.ConfChangeV2.FromString(e.Data)
                already_pending = self.pending_conf_index > self.raft_log.applied
                already_joint = self.prs.config.voters.is_joint()
                wants_leave_joint = len(cc.changes) == 0
                if already_pending or (already_joint and not wants_leave_joint) or (
                        not already_joint and wants_leave_joint):
                    # Refused changes become empty entries: the proposal's
                    # slot is kept so callers waiting on it still see it.
                    ents[i] = pb.Entry(Type=pb.EntryNormal)
                else:
                    self.pending_conf_index = self.raft_log.last_index() + i + 1
        if not self.append_entry(ents):
            raise ProposalDroppedError()
        self.bcast_append()

    def _leader_app_resp(self, m, frm: int, pr) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.rejectHint
            if m.logTerm > 0:
                # The follower told us the term at its hint; skip our entries
                # of any later term in one go.
                next_probe = self.raft_log.find_conflict_by_term(m.rejectHint, m.logTerm)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            # The follower caught up past the snapshot (it applied it, or got
            # there by appends): resume normal replication.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused:
            # It was paused; tell it what it missed (or at least our commit).
            self.send_append(frm)
        # The freed window may allow several size-limited messages at once.
        while self.maybe_send_append(frm, False):
            pass
        if frm == self.lead_transferee and pr.match == self.raft_log.last_index():
            self.send_timeout_now(frm)

    def _leader_heartbeat_resp(self, m, frm: int, pr) -> None:
        pr.recent_active = True
        pr.probe_sent = False  # a probing follower is alive: probe again
        # A full window may have lost its acks; free one slot so progress resumes.
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()
        if pr.match < self.raft_log.last_index():
            self.send_append(frm)
        if self.read_only.option is not ReadOnlyOption.SAFE or not m.context:
            return
        acks = self.read_only.recv_ack(frm, m.context)
        if acks is None or self.prs.config.voters.vote_result(acks) is not VoteResult.WON:
            return
        for rs in self.read_only.advance(m.context):
            resp = self.response_to_read_index_req(rs.req, rs.index)
            if resp is not None:
                self.send(resp)

    def _leader_transfer(self, transferee: int, pr) -> None:
        if pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return  # already under way
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # The transfer must finish within an election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.raft_log.last_index():
            self.send_timeout_now(transferee)
        else:
            self.send_append(transferee)

    def step_candidate(self, m) -> None:
        # Only replies of the kind this round asked for count; a stale
        # MsgPreVoteResp after moving to a real election is ignored.
        my_resp = pb.MsgPreVoteResp if self.state is StateType.PRE_CANDIDATE else pb.MsgVoteResp
        t = m.type
        if t == pb.MsgProp:
            raise ProposalDroppedError()
        if t == pb.MsgApp:
            self.become_follower(m.term, msg_from(m))
            self.handle_append_entries(m)
        elif t == pb.MsgHeartbeat:
            self.become_follower(m.term, msg_from(m))
            self.handle_heartbeat(m)
        elif t == pb.MsgSnap:
            self.become_follower(m.term, msg_from(m))
            self.handle_snapshot(m)
        elif t == my_resp:
            _, _, res = self.poll(msg_from(m), t, not m.reject)
            if res is VoteResult.WON:
                if self.state is StateType.PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res is VoteResult.LOST:
                # m.term may exceed ours for a rejected PreVote; stay at our term.
                self.become_follower(self.term, NONE)

    def step_follower(self, m) -> None:
        t = m.type
        if t == pb.MsgProp:
            if self.lead == NONE or self.disable_proposal_forwarding:
                raise ProposalDroppedError()
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgApp:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self.handle_append_entries(m)
        elif t == pb.MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self.handle_heartbeat(m)
        elif t == pb.MsgSnap:
            self.election_elapsed = 0
            self.lead = msg_from(m)
            self.handle_snapshot(m)
        elif t == pb.MsgTransferLeader:
            if self.lead == NONE:
                return
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgTimeoutNow:
            # A transfer campaigns at once and skips PreVote: the leader asked.
            self.hup(CAMPAIGN_TRANSFER)
        elif t == pb.MsgReadIndex:
            if self.lead == NONE:
                return
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgReadIndexResp:
            if len(m.entries) != 1:
                return
            self.read_states.append(ReadState(m.index, m.entries[0].Data))

    # ---- follower handlers ------------------------------------------------------

    def handle_append_entries(self, m) -> None:
        log = self.raft_log
        frm = msg_from(m)
        if m.index < log.committed:
            self.send(pb.Message(type=pb.MsgAppResp, to=frm, index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.logTerm, m.commit, m.entries)
        if last_new is not None:
            self.send(pb.Message(type=pb.MsgAppResp, to=frm, index=last_new))
            return
        # Reject with a hint: the last index at or below m.index whose term is
        # <= m.logTerm. The leader then skips every entry that cannot match.
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.logTerm)
        try:
            hint_term = log.term(hint)
        except (CompactedError, UnavailableError):
            hint_term = 0
        self.send(pb.Message(type=pb.MsgAppResp, to=frm, index=m.index, reject=True, rejectHint=hint,
                             logTerm=hint_term))

    def handle_heartbeat(self, m) -> None:
        self.raft_log.commit_to(m.commit)
        self.send(pb.Message(type=pb.MsgHeartbeatResp, to=msg_from(m), context=m.context))

    def handle_snapshot(self, m) -> None:
        if self.restore(m.snapshot):
            self.send(pb.Message(type=pb.MsgAppResp, to=msg_from(m), index=self.raft_log.last_index()))
        else:
            self.send(pb.Message(type=pb.MsgAppResp, to=msg_from(m), index=self.raft_log.committed))

    def restore(self, s) -> bool:
        """Adopt snapshot s if it is newer than our commit; False when ignored."""
        meta = s.metadata
        if meta.index <= self.raft_log.committed:
            return False
        if self.state is not StateType.FOLLOWER:
            # Only a follower receives snapshots; step down to be safe.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        if self.id not in (*cs.voters, *cs.learners, *cs.voters_outgoing):
            # A snapshot of a config we are not in is for someone else.
            return False
        if self.raft_log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: just fast-forward the commit.
            self.raft_log.commit_to(meta.index)
            return False
        self.raft_log.restore(s)
        self.prs = ProgressTracker(self.prs.max_inflight)
        changer = confchange.Changer(self.prs.config, self.prs.progress, self.prs.max_inflight,
                                     self.raft_log.last_index())
        cfg, prs = confchange.restore(changer, cs)
        assert_conf_states_equivalent(cs, self.switch_to_config(cfg, prs))
        pr = self.prs.progress[self.id]
        pr.maybe_update(pr.next - 1)
        return True

    # ---- membership --------------------------------------------------------------

    def apply_conf_change(self, cc):
        """Apply a committed ConfChange(V2); returns the new ConfState."""
        cc = confchange.as_v2(cc)
        changer = confchange.Changer(self.prs.config, self.prs.progress, self.prs.max_inflight,
                                     self.raft_log.last_index())
        if confchange.leave_joint(cc):
            cfg, prs = changer.leave_joint()
        else:
            auto_leave = confchange.enter_joint(cc)
            if auto_leave is not None:
                cfg, prs = changer.enter_joint(auto_leave, cc.changes)
            else:
                cfg, prs = changer.simple(cc.changes)
        return self.switch_to_config(cfg, prs)

    def switch_to_config(self, cfg, prs):
        self.prs.config = cfg
        self.prs.progress = prs
        cs = self.prs.conf_state()
        pr = prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.state is StateType.LEADER:
            # A removed or demoted leader keeps leading until it steps down
            # (CheckQuorum, or the application transferring leadership).
            return cs
        if self.state is not StateType.LEADER or not cs.voters:
            return cs
        if self.maybe_commit():
            # The quorum changed; newly committable entries are broadcast.
            self.bcast_append()
        else:
            # Probe newly added peers now rather than a heartbeat later.
            for i in self.prs.ids():
                if i != self.id:
                    self.maybe_send_append(i, False)
        if self.lead_transferee != NONE and self.lead_transferee not in cfg.voters.ids():
            self.abort_leader_transfer()
        return cs

    def load_state(self, hs) -> None:
        log = self.raft_log
        assert log.committed <= hs.commit <= log.last_index(), (
            f"{self.id} state.commit {hs.commit} is out of range [{log.committed}, {log.last_index()}]"
        )
        log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # ---- reads -------------------------------------------------------------------

    def send_read_index_response(self, m) -> None:
        if self.read_only.option is ReadOnlyOption.SAFE:
            ctx = m.entries[0].Data
            self.read_only.add_request(self.raft_log.committed, m)
            self.read_only.recv_ack(self.id, ctx)  # the leader's own ack
            self.bcast_heartbeat_with_ctx(ctx)
        else:
            resp = self.response_to_read_index_req(m, self.raft_log.committed)
            if resp is not None:
                self.send(resp)

    def release_pending_read_index_messages(self) -> None:
        if not self.committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self.send_read_index_response(m)

    def response_to_read_index_req(self, req, read_index: int):
        """A local request becomes a ReadState; a forwarded one a MsgReadIndexResp."""
        frm = msg_from(req)
        if frm == NONE or frm == self.id:
            self.read_states.append(ReadState(read_index, req.entries[0].Data))
            return None
        return pb.Message(type=pb.MsgReadIndexResp, to=frm, index=read_index, entries=list(req.entries))


def num_of_pending_conf(ents) -> int:
    return sum(1 for e in ents if e.Type == pb.EntryConfChange or e.Type == pb.EntryConfChangeV2)


def assert_conf_states_equivalent(a, b) -> None:
    def norm(cs):
        return (sorted(cs.voters), sorted(cs.learners), sorted(cs.voters_outgoing), sorted(cs.learners_next),
                cs.auto_leave)

    assert norm(a) == norm(b), f"ConfStates not equivalent after sorting:\n{a}\n{b}"
