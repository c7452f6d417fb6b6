"""RawNode.propose_many: a leader appends without building the MsgProp; the result is stepping it."""

from __future__ import annotations

import pytest

from proto.raftpb import raft_pb2 as pb
from tests.raft.harness import new_storage, new_test_config
from trietcd.raft import ProposalDroppedError, RawNode, StateType


def _node(voters, *, lead: bool) -> RawNode:
    storage = new_storage(voters)
    rn = RawNode(new_test_config(1, 10, 1, storage))
    if lead:
        rn.raft.become_candidate()
        rn.raft.become_leader()
    else:
        rn.raft.become_follower(1, 2)
    rd = rn.ready()
    storage.append(rd.entries)  # what the application does with a Ready
    rn.advance(rd)
    return rn


def _ready(rn: RawNode):
    rd = rn.ready()
    return ([(e.Type, e.Term, e.Index, e.Data) for e in rd.entries],
            [(e.Term, e.Index, e.Data) for e in rd.committed_entries],
            [(m.type, m.to, m.index, m.logTerm, m.commit, [e.Data for e in m.entries]) for m in rd.messages],
            (rd.hard_state.term, rd.hard_state.vote, rd.hard_state.commit))


@pytest.mark.parametrize("voters", [(1,), (1, 2, 3)])
@pytest.mark.parametrize("lead", [True, False])
def test_propose_many_is_stepping_the_msgprop(voters, lead):
    datas = [b"a", b"", b"c" * 300]
    fast, stepped = _node(voters, lead=lead), _node(voters, lead=lead)
    assert (fast.raft.state is StateType.LEADER) == lead
    fast.propose_many(datas)
    stepped.raft.step(pb.Message(type=pb.MsgProp, **{"from": 1}, entries=[pb.Entry(Data=d) for d in datas]))
    got = _ready(fast)
    assert got == _ready(stepped)
    if lead:
        assert [e[3] for e in got[0]] == datas
        assert len(got[1]) == (len(datas) if voters == (1,) else 0)  # a single voter commits at once
    else:
        assert [m[0] for m in got[2]] == [pb.MsgProp]  # forwarded to the leader


def test_a_leader_handing_over_drops_proposals():
    rn = _node((1, 2, 3), lead=True)
    rn.raft.lead_transferee = 2
    with pytest.raises(ProposalDroppedError):
        rn.propose_many([b"x"])
