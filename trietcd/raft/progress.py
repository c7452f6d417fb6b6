"""What a leader knows about each follower, and the tracker over all of them.

Progress states:
- PROBE: the leader does not know the follower's last index; it sends one
  MsgApp per heartbeat interval (probe_sent pauses it) and backs `next` off
  on rejections.
- REPLICATE: the follower keeps up; the leader streams MsgApps optimistically
  (next runs ahead of match), bounded by the inflights window.
- SNAPSHOT: the follower needs a snapshot; nothing else is sent until the
  snapshot is reported (MsgSnapStatus) or a MsgAppResp shows it applied it.

Invariant: match < next.
"""

from __future__ import annotations

import collections
import enum

from proto.raftpb import raft_pb2 as pb

from .quorum import JointConfig, MajorityConfig, VoteResult


class ProgressState(enum.Enum):
    PROBE = "StateProbe"
    REPLICATE = "StateReplicate"
    SNAPSHOT = "StateSnapshot"


class Inflights:
    """Last indices of the MsgApps sent to a follower and not yet acknowledged."""

    __slots__ = ("size", "_buffer")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer: collections.deque = collections.deque()

    def clone(self) -> Inflights:
        c = Inflights(self.size)
        c._buffer = collections.deque(self._buffer)
        return c

    @property
    def count(self) -> int:
        return len(self._buffer)

    def add(self, inflight: int) -> None:
        assert len(self._buffer) < self.size, "cannot add into a Full inflights"
        self._buffer.append(inflight)

    def free_le(self, to: int) -> None:
        """Release every message whose last index is <= to."""
        buf = self._buffer
        while buf and buf[0] <= to:
            buf.popleft()

    def free_first_one(self) -> None:
        if self._buffer:
            self._buffer.popleft()

    def full(self) -> bool:
        return len(self._buffer) >= self.size

    def reset(self) -> None:
        self._buffer.clear()


class Progress:
    __slots__ = (
        "match", "next", "state", "pending_snapshot", "recent_active", "probe_sent",
        "inflights", "is_learner",
    )

    def __init__(self, match: int, next: int, inflights: Inflights, *, is_learner: bool = False,
                 recent_active: bool = False) -> None:
        self.match = match
        self.next = next
        self.state = ProgressState.PROBE
        # In SNAPSHOT state: the index of the snapshot in flight.
        self.pending_snapshot = 0
        # Heard from since the last CheckQuorum round (or just added).
        self.recent_active = recent_active
        # In PROBE state: a MsgApp is outstanding; wait for a response or heartbeat.
        self.probe_sent = False
        self.inflights = inflights
        self.is_learner = is_learner

    def clone(self) -> Progress:
        c = Progress(self.match, self.next, self.inflights.clone(), is_learner=self.is_learner,
                     recent_active=self.recent_active)
        c.state = self.state
        c.pending_snapshot = self.pending_snapshot
        c.probe_sent = self.probe_sent
        return c

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot, the follower holds at least the snapshot's entries.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self.reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged index n; False when that is old news."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A MsgApp at index `rejected` was refused; back `next` off using the
        follower's hint. False when the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            # Optimistic sends overshot; restart right after what is known.
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.PROBE:
            return self.probe_sent
        if state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def describe(self) -> str:
        out = [f"{self.state.value} match={self.match} next={self.next}"]
        if self.is_learner:
            out.append(" learner")
        if self.is_paused():
            out.append(" paused")
        if self.pending_snapshot:
            out.append(f" pendingSnap={self.pending_snapshot}")
        if not self.recent_active:
            out.append(" inactive")
        if self.inflights.count:
            out.append(f" inflight={self.inflights.count}")
            if self.inflights.full():
                out.append("[full]")
        return "".join(out)


class TrackerConfig:
    """The membership: voters (possibly joint), learners, and learners_next
    (voters of the outgoing config that become learners when it is left)."""

    __slots__ = ("voters", "learners", "learners_next", "auto_leave")

    def __init__(self) -> None:
        self.voters = JointConfig()
        self.learners: set = set()
        self.learners_next: set = set()
        self.auto_leave = False

    def clone(self) -> TrackerConfig:
        c = TrackerConfig()
        c.voters = JointConfig(self.voters.incoming, self.voters.outgoing)
        c.learners = set(self.learners)
        c.learners_next = set(self.learners_next)
        c.auto_leave = self.auto_leave
        return c

    def describe(self) -> str:
        out = [f"voters={self.voters.describe()}"]
        if self.learners:
            out.append(" learners=" + MajorityConfig(self.learners).describe())
        if self.learners_next:
            out.append(" learners_next=" + MajorityConfig(self.learners_next).describe())
        if self.auto_leave:
            out.append(" autoleave")
        return "".join(out)


class ProgressTracker:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.config = TrackerConfig()
        self.progress: dict = {}
        self.votes: dict = {}

    def conf_state(self):
        c = self.config
        return pb.ConfState(
            voters=sorted(c.voters.incoming),
            voters_outgoing=sorted(c.voters.outgoing),
            learners=sorted(c.learners),
            learners_next=sorted(c.learners_next),
            auto_leave=c.auto_leave,
        )

    def is_singleton(self) -> bool:
        return len(self.config.voters.incoming) == 1 and not self.config.voters.outgoing

    def committed(self) -> int:
        """The largest index replicated on a quorum of voters."""
        progress = self.progress

        def acked(i):
            pr = progress.get(i)
            return None if pr is None else pr.match

        return self.config.voters.committed_index(acked)

    def ids(self) -> list:
        return sorted(self.progress)

    def visit(self):
        """(id, progress) pairs in id order, for deterministic message order."""
        progress = self.progress
        return [(i, progress[i]) for i in sorted(progress)]

    def quorum_active(self) -> bool:
        votes = {i: pr.recent_active for i, pr in self.progress.items() if not pr.is_learner}
        return self.config.voters.vote_result(votes) is VoteResult.WON

    def voter_nodes(self) -> list:
        return sorted(self.config.voters.ids())

    def learner_nodes(self) -> list:
        return sorted(self.config.learners)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, i: int, granted: bool) -> None:
        self.votes.setdefault(i, granted)

    def tally_votes(self) -> tuple:
        """(granted, rejected, VoteResult) over the voters that answered."""
        granted = rejected = 0
        for i, pr in self.progress.items():
            if pr.is_learner:
                continue
            v = self.votes.get(i)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, self.config.voters.vote_result(self.votes)
