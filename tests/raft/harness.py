"""Helpers shared by the raft tests: test nodes and an in-process network."""

from __future__ import annotations

import random

from proto.raftpb import raft_pb2 as pb
from trietcd.raft import Config, MemoryStorage, ProposalDroppedError, Raft
from trietcd.raft.raft import msg, msg_from


def new_storage(voters=(), learners=()) -> MemoryStorage:
    s = MemoryStorage()
    cs = s.snapshot().metadata.conf_state
    cs.voters.extend(voters)
    cs.learners.extend(learners)
    return s


def new_test_config(i: int, election: int, heartbeat: int, storage, seed: int | None = None, **kw) -> Config:
    return Config(id=i, election_tick=election, heartbeat_tick=heartbeat, storage=storage,
                  rng=random.Random(i if seed is None else seed), max_inflight_msgs=kw.pop("max_inflight_msgs", 256),
                  **kw)


def new_test_raft(i: int, election: int, heartbeat: int, storage, **kw) -> Raft:
    return Raft(new_test_config(i, election, heartbeat, storage, **kw))


def read_messages(r: Raft) -> list:
    msgs, r.msgs = r.msgs, []
    return msgs


def ents_with_terms(*terms) -> list:
    return [pb.Entry(Index=i, Term=t) for i, t in enumerate(terms, 1)]


def voted_with_config(election: int, heartbeat: int, vote: int, term: int, voters) -> Raft:
    s = new_storage(voters)
    s.set_hard_state(pb.HardState(vote=vote, term=term))
    r = new_test_raft(1, election, heartbeat, s)
    r.reset(term)
    return r


def with_log(terms, voters=(1, 2, 3)) -> Raft:
    """A raft (id 1) whose stable log holds one entry per term in `terms`."""
    s = new_storage(voters)
    s.append(ents_with_terms(*terms))
    r = new_test_raft(1, 10, 1, s)
    if terms:
        r.reset(terms[-1])
    return r


class BlackHole:
    """A peer that swallows everything."""

    def step(self, m) -> None:
        pass

    msgs: list = []


class Network:
    """Steps messages synchronously between Raft peers until none is left.

    `peers` may hold None (a fresh 10/1 raft with all ids as voters), a Raft,
    or BLACK_HOLE."""

    def __init__(self, *peers, configure=None) -> None:
        ids = list(range(1, len(peers) + 1))
        self.peers: dict = {}
        self.storage: dict = {}
        self.dropm: dict = {}  # (from, to) -> drop probability
        self.ignorem: set = set()
        self.msg_hook = None
        for i, p in zip(ids, peers):
            if p is None:
                s = new_storage(ids)
                self.storage[i] = s
                kw = configure(i) if configure else {}
                p = new_test_raft(i, 10, 1, s, **kw)
            elif isinstance(p, Raft):
                p.id = i
                learners = set(p.prs.config.learners)
                from trietcd.raft.progress import Inflights, Progress, ProgressTracker
                from trietcd.raft.quorum import JointConfig
                prs = ProgressTracker(p.prs.max_inflight)
                for j in ids:
                    prs.progress[j] = Progress(0, 1, Inflights(prs.max_inflight), is_learner=j in learners)
                prs.config.voters = JointConfig([j for j in ids if j not in learners])
                prs.config.learners = learners
                p.prs = prs
                p.reset(p.term)
            self.peers[i] = p
        self.rng = random.Random(0)

    def send(self, *msgs) -> None:
        q = list(msgs)
        while q:
            m = q.pop(0)
            p = self.peers[m.to]
            try:
                p.step(m)
            except ProposalDroppedError:
                pass
            if isinstance(p, Raft):
                q.extend(self.filter(read_messages(p)))

    def campaign(self, i: int) -> None:
        self.send(msg(pb.MsgHup, to=i, frm=i))

    def propose(self, i: int, data: bytes = b"somedata") -> None:
        self.send(pb.Message(type=pb.MsgProp, to=i, **{"from": i}, entries=[pb.Entry(Data=data)]))

    def drop(self, frm: int, to: int, perc: float) -> None:
        self.dropm[(frm, to)] = perc

    def cut(self, a: int, b: int) -> None:
        self.drop(a, b, 2.0)
        self.drop(b, a, 2.0)

    def isolate(self, i: int) -> None:
        for j in self.peers:
            if j != i:
                self.cut(i, j)

    def ignore(self, t: int) -> None:
        self.ignorem.add(t)

    def recover(self) -> None:
        self.dropm = {}
        self.ignorem = set()

    def filter(self, msgs) -> list:
        out = []
        for m in msgs:
            if m.type in self.ignorem:
                continue
            if m.type == pb.MsgHup:
                raise AssertionError("unexpected MsgHup")
            perc = self.dropm.get((msg_from(m), m.to), 0)
            if perc and self.rng.random() < perc:
                continue
            if self.msg_hook is not None and not self.msg_hook(m):
                continue
            out.append(m)
        return out
