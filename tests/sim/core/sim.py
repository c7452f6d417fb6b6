"""A seeded simulation of a raft cluster: RawNodes, in-memory disks and a
network that drops, duplicates, delays and reorders, with crashes that lose
unpersisted state and partitions that heal.

One seed decides everything (sub-seeds per component), so a failure replays
with `python -m tests.sim.core --seed N`.

Checked after every step:
- election safety: at most one leader per term;
- log matching: two entries with the same index and term have the same
  payload and the same preceding term (checked on every batch a node is
  asked to persist, which covers every entry that ever reaches a log);
- leader completeness: a node that becomes leader holds every entry any
  node has seen committed;
- state machine safety: no two nodes apply different entries at one index
  (and their state hashes agree after applying it).
After the faults stop and the network heals, a proposal must commit and be
applied on every node within a bounded number of ticks.
"""

from __future__ import annotations

import random
import zlib

import attrs

from proto.raftpb import raft_pb2 as pb
from trietcd.raft import (
    Config, MemoryStorage, ProposalDroppedError, RawNode, SnapshotStatus, StateType,
    StepPeerNotFoundError,
)

ELECTION_TICKS = 10
HEARTBEAT_TICKS = 1


class SafetyViolation(AssertionError):
    pass


@attrs.define
class Options:
    nodes: int = 3
    fault_steps: int = 300
    heal_ticks_max: int = 300  # liveness bound once healed
    drop: float = 0.1
    duplicate: float = 0.05
    delay_steps_max: int = 3
    crash: float = 0.004
    down_steps_max: int = 20
    partition: float = 0.01
    heal: float = 0.05
    propose: float = 0.3
    persist: float = 0.8  # chance a pending Ready is persisted in a step
    compact: float = 0.02
    pre_vote: bool = False
    check_quorum: bool = False


class Node:
    """A member: its RawNode, its disk (MemoryStorage) and its state machine."""

    def __init__(self, i: int, peers: list, opts: Options, rng: random.Random, disk: MemoryStorage | None) -> None:
        self.id = i
        if disk is None:
            disk = MemoryStorage()
            disk.snapshot().metadata.conf_state.voters.extend(peers)
        self.disk = disk
        self.rn = RawNode(Config(
            id=i, election_tick=ELECTION_TICKS, heartbeat_tick=HEARTBEAT_TICKS, storage=disk, rng=rng,
            max_size_per_msg=4096, max_committed_size_per_ready=8192, max_inflight_msgs=16,
            pre_vote=opts.pre_vote, check_quorum=opts.check_quorum,
        ))
        # The state machine restarts from the snapshot on the disk.
        snap = disk.snapshot()
        self.applied_index = snap.metadata.index
        self.state_hash = int(snap.data.decode() or 0)
        self.pending = None  # a Ready taken but not yet persisted
        self.down_until = -1


class Cluster:
    def __init__(self, seed: int, opts: Options) -> None:
        self.seed = seed
        self.opts = opts
        master = random.Random(seed)
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_fault = random.Random(master.getrandbits(64))
        self.rng_work = random.Random(master.getrandbits(64))
        self.rng_nodes = random.Random(master.getrandbits(64))
        self.ids = list(range(1, opts.nodes + 1))
        self.nodes = {i: Node(i, self.ids, opts, self._node_rng(), None) for i in self.ids}
        self.in_flight: list = []  # (deliver_at, seq, from, bytes)
        self.seq = 0
        self.step_no = 0
        self.groups: dict = {}  # id -> partition group; empty when healed
        self.faults = True
        # Global knowledge for the checks.
        self.leaders: dict = {}  # term -> id
        self.entries: dict = {}  # (index, term) -> (data, type, prev term)
        self.committed: dict = {}  # index -> term, entries seen committed
        self.applied: dict = {}  # index -> (term, data, state hash after)
        self.proposed = 0

    def _node_rng(self) -> random.Random:
        return random.Random(self.rng_nodes.getrandbits(64))

    def fail(self, what: str) -> None:
        raise SafetyViolation(f"seed={self.seed} step={self.step_no}: {what} "
                              f"(replay: python -m tests.sim.core --seed {self.seed} --nodes {self.opts.nodes})")

    # ---- network ---------------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        return not self.groups or self.groups[a] == self.groups[b]

    def send(self, frm: int, m) -> None:
        rng = self.rng_net
        if (self.faults and rng.random() < self.opts.drop) or not self.connected(frm, m.to):
            if m.type == pb.MsgSnap:
                # The transport learns a snapshot did not get through; without
                # this report the leader would wait for it forever.
                self.report_snapshot(frm, m.to, SnapshotStatus.FAILURE)
            return
        data = m.SerializeToString()  # what a transport would carry
        copies = 2 if self.faults and rng.random() < self.opts.duplicate else 1
        for _ in range(copies):
            self.seq += 1
            delay = rng.randint(0, self.opts.delay_steps_max)
            self.in_flight.append((self.step_no + delay, self.seq, frm, m.to, data))

    def deliver(self) -> None:
        due = [x for x in self.in_flight if x[0] <= self.step_no]
        self.in_flight = [x for x in self.in_flight if x[0] > self.step_no]
        # Reorder within the step too.
        self.rng_net.shuffle(due)
        for _, _, frm, to, data in due:
            node = self.nodes[to]
            m = pb.Message.FromString(data)
            if node.down_until >= self.step_no or not self.connected(frm, to):
                if m.type == pb.MsgSnap:
                    self.report_snapshot(frm, to, SnapshotStatus.FAILURE)
                continue
            if m.type == pb.MsgSnap:
                self.report_snapshot(frm, to, SnapshotStatus.FINISH)
            try:
                node.rn.step(m)
            except (ProposalDroppedError, StepPeerNotFoundError):
                pass

    def report_snapshot(self, frm: int, to: int, status: SnapshotStatus) -> None:
        sender = self.nodes[frm]
        if sender.down_until < self.step_no:
            sender.rn.report_snapshot(to, status)

    # ---- nodes -------------------------------------------------------------------

    def crash(self, node: Node) -> None:
        """Lose everything not on disk: the raft state, the pending Ready,
        the state machine (rebuilt from the disk's snapshot)."""
        down = self.rng_fault.randint(0, self.opts.down_steps_max)
        fresh = Node(node.id, self.ids, self.opts, self._node_rng(), node.disk)
        fresh.down_until = self.step_no + down
        self.nodes[node.id] = fresh

    def process_ready(self, node: Node) -> None:
        rn = node.rn
        if node.pending is None:
            if not rn.has_ready():
                return
            node.pending = rd = rn.ready()
            self.check_ready(node, rd)
        if self.faults and self.rng_fault.random() >= self.opts.persist:
            return  # the disk is slow; a crash now loses this Ready
        rd, node.pending = node.pending, None
        disk = node.disk
        if rd.snapshot.metadata.index:
            disk.apply_snapshot(rd.snapshot)
        if rd.entries:
            disk.append(rd.entries)
        if rd.hard_state.term or rd.hard_state.vote or rd.hard_state.commit:
            disk.set_hard_state(rd.hard_state)
        for m in rd.messages:
            self.send(node.id, m)
        if rd.snapshot.metadata.index:
            node.applied_index = rd.snapshot.metadata.index
            node.state_hash = int(rd.snapshot.data.decode() or 0)
        for e in rd.committed_entries:
            self.apply(node, e)
        rn.advance(rd)
        self.maybe_compact(node)

    def apply(self, node: Node, e) -> None:
        if e.Index <= node.applied_index:
            return
        if e.Index != node.applied_index + 1:
            self.fail(f"node {node.id} applies {e.Index} after {node.applied_index}")
        node.applied_index = e.Index
        node.state_hash = zlib.crc32(e.Data, node.state_hash)
        got = (e.Term, e.Data, node.state_hash)
        seen = self.applied.setdefault(e.Index, got)
        if seen != got:
            self.fail(f"state machine safety: node {node.id} applied {got} at {e.Index}, another applied {seen}")

    def maybe_compact(self, node: Node) -> None:
        if not self.faults or self.rng_fault.random() >= self.opts.compact:
            return
        disk = node.disk
        i = node.applied_index
        if i <= disk.snapshot().metadata.index or i > disk.last_index():
            return
        cs = node.rn.raft.prs.conf_state()
        disk.create_snapshot(i, cs, str(node.state_hash).encode())
        # Keep a few entries so slow followers sometimes catch up by log.
        keep = self.rng_fault.randint(0, 5)
        if i - keep > disk.first_index():
            disk.compact(i - keep)

    # ---- checks ------------------------------------------------------------------

    def check_ready(self, node: Node, rd) -> None:
        log = node.rn.raft.raft_log
        for k, e in enumerate(rd.entries):
            if k:
                prev_term = rd.entries[k - 1].Term
            else:
                prev_term = log.zero_term_on_compacted(e.Index - 1)
            got = (e.Data, e.Type, prev_term)
            seen = self.entries.setdefault((e.Index, e.Term), got)
            if seen != got:
                self.fail(f"log matching: node {node.id} has {got} at {e.Index}/{e.Term}, another had {seen}")
        for e in rd.committed_entries:
            t = self.committed.setdefault(e.Index, e.Term)
            if t != e.Term:
                self.fail(f"node {node.id} commits {e.Index}/{e.Term}, term {t} was committed there")
        if rd.soft_state is not None and rd.soft_state.raft_state is StateType.LEADER:
            self.check_leader(node)

    def check_leader(self, node: Node) -> None:
        r = node.rn.raft
        other = self.leaders.setdefault(r.term, node.id)
        if other != node.id:
            self.fail(f"election safety: {other} and {node.id} both lead term {r.term}")
        log = r.raft_log
        first = log.first_index()
        for i, t in self.committed.items():
            if i < first:
                continue  # compacted: it was applied, hence in the snapshot
            if log.zero_term_on_compacted(i) != t:
                self.fail(f"leader completeness: leader {node.id} of term {r.term} lacks committed {i}/{t}")

    def check_step(self) -> None:
        for node in self.nodes.values():
            r = node.rn.raft
            if r.state is StateType.LEADER:
                other = self.leaders.setdefault(r.term, node.id)
                if other != node.id:
                    self.fail(f"election safety: {other} and {node.id} both lead term {r.term}")

    # ---- the loop ----------------------------------------------------------------

    def step(self) -> None:
        self.step_no += 1
        opts = self.opts
        if self.faults:
            self.inject_faults()
        self.deliver()
        for i in self.ids:
            node = self.nodes[i]
            if node.down_until >= self.step_no:
                continue
            node.rn.tick()
        if self.rng_work.random() < opts.propose:
            self.propose(self.rng_work.choice(self.ids))
        for i in self.ids:
            node = self.nodes[i]
            if node.down_until < self.step_no:
                self.process_ready(node)
        self.check_step()

    def propose(self, i: int) -> bool:
        node = self.nodes[i]
        if node.down_until >= self.step_no:
            return False
        self.proposed += 1
        try:
            node.rn.propose(b"p%d" % self.proposed)
        except ProposalDroppedError:
            return False
        return True

    def inject_faults(self) -> None:
        rng, opts = self.rng_fault, self.opts
        for i in self.ids:
            if rng.random() < opts.crash:
                self.crash(self.nodes[i])
        if not self.groups and rng.random() < opts.partition:
            self.groups = {i: rng.randint(0, 1) for i in self.ids}
        elif self.groups and rng.random() < opts.heal:
            self.groups = {}

    def heal(self) -> None:
        self.faults = False
        self.groups = {}
        for node in self.nodes.values():
            node.down_until = -1

    def run(self) -> dict:
        for _ in range(self.opts.fault_steps):
            self.step()
        self.heal()
        # Liveness: a marker proposal commits and applies everywhere.
        start = self.step_no
        marker = b"marker-%d" % self.seed
        marker_index = None
        while True:
            if self.step_no - start > self.opts.heal_ticks_max:
                self.fail(f"no progress {self.opts.heal_ticks_max} ticks after healing "
                          f"(marker at {marker_index}, applied {[n.applied_index for n in self.nodes.values()]})")
            if marker_index is None or not any(
                    self.applied.get(marker_index, (0, b""))[1] == marker for _ in [0]):
                marker_index = self.try_marker(marker, marker_index)
            self.step()
            if marker_index is not None and self.applied.get(marker_index, (0, b""))[1] == marker and all(
                    n.applied_index >= marker_index for n in self.nodes.values()):
                break
        return {"steps": self.step_no, "heal_steps": self.step_no - start, "applied": len(self.applied),
                "terms": len(self.leaders)}

    def try_marker(self, marker: bytes, marker_index):
        """Propose the marker at the leader (again, if an earlier try was lost)."""
        if marker_index is not None and self.step_no % (2 * ELECTION_TICKS):
            return marker_index
        for node in self.nodes.values():
            r = node.rn.raft
            if r.state is StateType.LEADER:
                try:
                    node.rn.propose(marker)
                except ProposalDroppedError:
                    return marker_index
                return r.raft_log.last_index()
        return marker_index


def options_for(seed: int, nodes: int | None = None) -> Options:
    """Each seed also picks a cluster size and which election features are on."""
    rng = random.Random(seed ^ 0x5EED)
    return Options(
        nodes=nodes or rng.choice((3, 5, 7)),
        pre_vote=rng.random() < 0.5,
        check_quorum=rng.random() < 0.5,
    )


def run_seed(seed: int, nodes: int | None = None, fault_steps: int | None = None) -> dict:
    opts = options_for(seed, nodes)
    if fault_steps is not None:
        opts.fault_steps = fault_steps
    return Cluster(seed, opts).run()
