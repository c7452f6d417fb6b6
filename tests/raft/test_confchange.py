"""confchange: simple changes, joint consensus, learners and demotion.

Each scenario is a list of steps (operation, changes, last index, expected);
the expected text is the tracker's description, or the error etcd's changer
gives for the same step (its testdata under raft/confchange)."""

from __future__ import annotations

import types

import pytest

from proto.raftpb import raft_pb2 as pb
from tests.raft.harness import new_storage, new_test_raft
from trietcd.raft import ConfigError
from trietcd.raft.confchange import Changer, as_v2, enter_joint, leave_joint, restore
from trietcd.raft.progress import ProgressTracker

TYPES = {"v": pb.ConfChangeAddNode, "l": pb.ConfChangeAddLearnerNode, "r": pb.ConfChangeRemoveNode,
         "u": pb.ConfChangeUpdateNode}


def parse(changes: str) -> list:
    return [pb.ConfChangeSingle(type=TYPES[tok[0]], node_id=int(tok[1:])) for tok in changes.split()]


def describe(cfg, prs) -> str:
    lines = [cfg.describe()]
    lines += [f"{i}: {prs[i].describe()}" for i in sorted(prs)]
    return "\n".join(lines)


def run(steps) -> None:
    t = ProgressTracker(10)
    for n, (op, changes, last_index, want) in enumerate(steps):
        ch = Changer(t.config, t.progress, t.max_inflight, last_index)
        before = describe(t.config, t.progress)
        try:
            if op == "simple":
                cfg, prs = ch.simple(parse(changes))
            elif op == "enter-joint":
                cfg, prs = ch.enter_joint(False, parse(changes))
            elif op == "enter-joint-auto":
                cfg, prs = ch.enter_joint(True, parse(changes))
            else:
                assert op == "leave-joint" and not changes
                cfg, prs = ch.leave_joint()
        except ConfigError as e:
            assert str(e) == want, f"step {n}: {op} {changes}"
            # A refused change leaves the tracker as it was.
            assert describe(t.config, t.progress) == before
            continue
        got = describe(cfg, prs)
        assert got == want.strip(), f"step {n}: {op} {changes}\n{got}"
        # The changer never mutates its input.
        assert describe(t.config, t.progress) == before
        t.config, t.progress = cfg, prs


def test_simple_safety():
    run([
        ("simple", "l1", 1, "removed all voters"),
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("simple", "v2 l3", 2, """
voters=(1 2) learners=(3)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=2
3: StateProbe match=0 next=2 learner"""),
        ("simple", "r1 v5", 3, "more than one voter changed without entering joint config"),
        ("simple", "r1 r2", 4, "removed all voters"),
        ("simple", "v3 v4", 5, "more than one voter changed without entering joint config"),
        ("simple", "l1 v5", 6, "more than one voter changed without entering joint config"),
        ("simple", "l1 l2", 7, "removed all voters"),
        ("simple", "l2 l3 l4 l5", 8, """
voters=(1) learners=(2 3 4 5)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=2 learner
3: StateProbe match=0 next=2 learner
4: StateProbe match=0 next=8 learner
5: StateProbe match=0 next=8 learner"""),
        ("simple", "r1", 9, "removed all voters"),
        ("simple", "r2 r3 r4 r5", 10, "voters=(1)\n1: StateProbe match=0 next=1"),
    ])


def test_simple_idempotency_and_promote_demote():
    """Repeating a change is a no-op; a learner promoted to voter (and back)
    keeps its progress (`next` shows the round it was created in)."""
    run([
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("simple", "v1", 2, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("simple", "v2", 3, "voters=(1 2)\n1: StateProbe match=0 next=1\n2: StateProbe match=0 next=3"),
        ("simple", "l3", 4, """
voters=(1 2) learners=(3)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=3
3: StateProbe match=0 next=4 learner"""),
        ("simple", "l3", 5, """
voters=(1 2) learners=(3)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=3
3: StateProbe match=0 next=4 learner"""),
        ("simple", "v3", 6, """
voters=(1 2 3)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=3
3: StateProbe match=0 next=4"""),
        ("simple", "l2", 7, """
voters=(1 3) learners=(2)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=3 learner
3: StateProbe match=0 next=4"""),
        ("simple", "r2", 8, "voters=(1 3)\n1: StateProbe match=0 next=1\n3: StateProbe match=0 next=4"),
        ("simple", "r2", 9, "voters=(1 3)\n1: StateProbe match=0 next=1\n3: StateProbe match=0 next=4"),
        ("simple", "u1 u3", 10, "voters=(1 3)\n1: StateProbe match=0 next=1\n3: StateProbe match=0 next=4"),
    ])


def test_joint_safety():
    run([
        ("leave-joint", "", 1, "can't leave a non-joint config"),
        ("enter-joint", "", 2, "can't make a zero-voter config joint"),
        ("enter-joint", "v1", 3, "can't make a zero-voter config joint"),
        ("simple", "v1", 4, "voters=(1)\n1: StateProbe match=0 next=4"),
        ("leave-joint", "", 5, "can't leave a non-joint config"),
        ("enter-joint", "", 6, "voters=(1)&&(1)\n1: StateProbe match=0 next=4"),
        ("enter-joint", "", 7, "config is already joint"),
        ("leave-joint", "", 8, "voters=(1)\n1: StateProbe match=0 next=4"),
        ("leave-joint", "", 9, "can't leave a non-joint config"),
        ("enter-joint", "r1 v2 v3 l4", 10, """
voters=(2 3)&&(1) learners=(4)
1: StateProbe match=0 next=4
2: StateProbe match=0 next=10
3: StateProbe match=0 next=10
4: StateProbe match=0 next=10 learner"""),
        ("enter-joint", "", 11, "config is already joint"),
        ("enter-joint", "v12", 12, "config is already joint"),
        ("simple", "l15", 13, "can't apply simple config change in joint config"),
        ("leave-joint", "", 14, """
voters=(2 3) learners=(4)
2: StateProbe match=0 next=10
3: StateProbe match=0 next=10
4: StateProbe match=0 next=10 learner"""),
        ("simple", "l9", 15, """
voters=(2 3) learners=(4 9)
2: StateProbe match=0 next=10
3: StateProbe match=0 next=10
4: StateProbe match=0 next=10 learner
9: StateProbe match=0 next=15 learner"""),
    ])


def test_joint_demotion_goes_through_learners_next():
    """A voter demoted while joint is still a voter of the outgoing half: it
    waits in learners_next and becomes a learner, progress kept, on leave."""
    run([
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("enter-joint", "v2 l1", 2, """
voters=(2)&&(1) learners_next=(1)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=2"""),
        ("leave-joint", "", 3, """
voters=(2) learners=(1)
1: StateProbe match=0 next=1 learner
2: StateProbe match=0 next=2"""),
    ])


def test_joint_autoleave_and_removed_voter_kept_while_outgoing():
    run([
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("simple", "v2", 2, "voters=(1 2)\n1: StateProbe match=0 next=1\n2: StateProbe match=0 next=2"),
        ("enter-joint-auto", "r2 v3 l4", 3, """
voters=(1 3)&&(1 2) learners=(4) autoleave
1: StateProbe match=0 next=1
2: StateProbe match=0 next=2
3: StateProbe match=0 next=3
4: StateProbe match=0 next=3 learner"""),
        # 2 was removed but kept its progress while in the outgoing half; leaving drops it.
        ("leave-joint", "", 4, """
voters=(1 3) learners=(4)
1: StateProbe match=0 next=1
3: StateProbe match=0 next=3
4: StateProbe match=0 next=3 learner"""),
    ])


def test_joint_idempotency():
    run([
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("enter-joint", "r1 r1 v2 v2 l3 l3 l4 l4", 2, """
voters=(2)&&(1) learners=(3 4)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=2
3: StateProbe match=0 next=2 learner
4: StateProbe match=0 next=2 learner"""),
        ("leave-joint", "", 3, """
voters=(2) learners=(3 4)
2: StateProbe match=0 next=2
3: StateProbe match=0 next=2 learner
4: StateProbe match=0 next=2 learner"""),
    ])


def test_zero_node_id_is_ignored():
    """etcd voids a change upstream of raft by zeroing its node id."""
    run([
        ("simple", "v1", 1, "voters=(1)\n1: StateProbe match=0 next=1"),
        ("simple", "v0 r0 l0", 2, "voters=(1)\n1: StateProbe match=0 next=1"),
    ])


def test_unknown_change_type_is_refused():
    # protobuf will not build a ConfChangeSingle with an unknown type; the
    # changer only reads .type and .node_id.
    t = ProgressTracker(10)
    ch = Changer(t.config, t.progress, 10, 1)
    with pytest.raises(ConfigError, match="^unexpected conf type 9$"):
        ch.simple([types.SimpleNamespace(type=9, node_id=1)])


# ---- ConfChange / ConfChangeV2 classification ------------------------------------------


def test_v1_is_a_simple_v2():
    cc = as_v2(pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=7, context=b"ctx"))
    assert [(c.type, c.node_id) for c in cc.changes] == [(pb.ConfChangeAddLearnerNode, 7)]
    assert cc.context == b"ctx"
    assert enter_joint(cc) is None and not leave_joint(cc)


@pytest.mark.parametrize("transition, n, want", [
    (pb.ConfChangeTransitionAuto, 1, None),  # one change, auto: simple
    (pb.ConfChangeTransitionAuto, 2, True),  # several: joint, left automatically
    (pb.ConfChangeTransitionJointImplicit, 1, True),
    (pb.ConfChangeTransitionJointExplicit, 1, False),  # the application leaves it
    (pb.ConfChangeTransitionJointExplicit, 3, False),
])
def test_enter_joint_classification(transition, n, want):
    cc = pb.ConfChangeV2(transition=transition, changes=parse(" ".join(f"v{i}" for i in range(1, n + 1))))
    assert enter_joint(cc) is want


def test_empty_v2_leaves_joint():
    assert leave_joint(pb.ConfChangeV2(context=b"x"))
    assert not leave_joint(pb.ConfChangeV2(transition=pb.ConfChangeTransitionJointExplicit))


# ---- through Raft ----------------------------------------------------------------------


def test_raft_apply_conf_change_joint_round_trip():
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    cs = r.apply_conf_change(pb.ConfChangeV2(changes=parse("r3 v4 l5")))
    assert (list(cs.voters), list(cs.voters_outgoing), list(cs.learners), cs.auto_leave) == (
        [1, 2, 4], [1, 2, 3], [5], True)
    assert r.prs.config.voters.is_joint()
    with pytest.raises(ConfigError, match="^config is already joint$"):
        r.apply_conf_change(pb.ConfChangeV2(changes=parse("v6 v7")))
    cs = r.apply_conf_change(pb.ConfChangeV2())
    assert (list(cs.voters), list(cs.voters_outgoing), list(cs.learners), cs.auto_leave) == ([1, 2, 4], [], [5], False)
    assert 3 not in r.prs.progress


def test_restore_rebuilds_a_joint_conf_state():
    cs = pb.ConfState(voters=[1, 2, 4], voters_outgoing=[1, 2, 3], learners=[5], learners_next=[3], auto_leave=True)
    t = ProgressTracker(10)
    cfg, prs = restore(Changer(t.config, t.progress, 10, 7), cs)
    t.config, t.progress = cfg, prs
    got = t.conf_state()
    assert (list(got.voters), list(got.voters_outgoing), list(got.learners), list(got.learners_next),
            got.auto_leave) == ([1, 2, 4], [1, 2, 3], [5], [3], True)
    assert not prs[3].is_learner and prs[5].is_learner
