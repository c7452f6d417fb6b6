"""quorum: the majority/joint arithmetic against naive twins.

The fast code sorts acked indexes and counts votes; the twins below say the
same thing the slow, obvious way (try every index, try every way the missing
voters could still vote), so a disagreement points at the fast code.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings, strategies as st

from trietcd.raft.progress import Inflights, Progress, ProgressTracker
from trietcd.raft.quorum import INFINITE_INDEX, JointConfig, MajorityConfig, VoteResult

SETTINGS = settings(derandomize=True, max_examples=400, database=None, deadline=None)

# ---- the naive twins ------------------------------------------------------------


def naive_majority_committed(voters, acked: dict) -> int:
    """The largest index that more than half of the voters acked (an unknown
    voter acked 0); an empty config does not constrain anything."""
    if not voters:
        return INFINITE_INDEX
    best = 0
    for idx in {0, *acked.values()}:
        holders = sum(1 for v in voters if acked.get(v, 0) >= idx)
        if 2 * holders > len(voters) and idx > best:
            best = idx
    return best


def naive_joint_committed(incoming, outgoing, acked: dict) -> int:
    return min(naive_majority_committed(incoming, acked), naive_majority_committed(outgoing, acked))


def _wins(voters, votes: dict) -> bool:
    return not voters or 2 * sum(1 for v in voters if votes.get(v)) > len(voters)


def naive_vote_result(halves, votes: dict) -> VoteResult:
    """Try every way the voters that did not answer could still answer: WON
    when every outcome wins in every half, LOST when none does."""
    missing = sorted({v for h in halves for v in h if v not in votes})
    outcomes = set()
    for choice in itertools.product((True, False), repeat=len(missing)):
        full = {**votes, **dict(zip(missing, choice))}
        outcomes.add(all(_wins(h, full) for h in halves))
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


# ---- strategies -------------------------------------------------------------------

ids = st.integers(min_value=1, max_value=9)
voter_sets = st.frozensets(ids, max_size=7)


@st.composite
def acks(draw, voters):
    """An acked index for some of the voters (and maybe for non-voters)."""
    universe = sorted(voters | draw(st.frozensets(ids, max_size=2)))
    present = draw(st.lists(st.sampled_from(universe), unique=True)) if universe else []
    return {i: draw(st.integers(min_value=0, max_value=20)) for i in present}


@st.composite
def votes(draw, voters):
    universe = sorted(voters | draw(st.frozensets(ids, max_size=2)))
    present = draw(st.lists(st.sampled_from(universe), unique=True)) if universe else []
    return {i: draw(st.booleans()) for i in present}


@st.composite
def joint_with_acks(draw):
    inc, out = draw(voter_sets), draw(voter_sets)
    return inc, out, draw(acks(inc | out))


@st.composite
def joint_with_votes(draw):
    inc, out = draw(voter_sets), draw(voter_sets)
    return inc, out, draw(votes(inc | out))


# ---- properties ----------------------------------------------------------------------


@SETTINGS
@given(joint_with_acks())
def test_majority_committed_index_matches_naive(case):
    inc, _, acked = case
    assert MajorityConfig(inc).committed_index(acked.get) == naive_majority_committed(inc, acked)


@SETTINGS
@given(joint_with_acks())
def test_joint_committed_index_matches_naive(case):
    inc, out, acked = case
    assert JointConfig(inc, out).committed_index(acked.get) == naive_joint_committed(inc, out, acked)


@SETTINGS
@given(joint_with_votes())
def test_majority_vote_result_matches_naive(case):
    inc, _, vs = case
    assert MajorityConfig(inc).vote_result(vs) is naive_vote_result([inc], vs)


@SETTINGS
@given(joint_with_votes())
def test_joint_vote_result_matches_naive(case):
    inc, out, vs = case
    assert JointConfig(inc, out).vote_result(vs) is naive_vote_result([inc, out], vs)


@SETTINGS
@given(joint_with_acks())
def test_joint_with_itself_is_the_majority(case):
    """(C, C) decides exactly like C: entering a joint config with no changes
    must not change what commits."""
    inc, _, acked = case
    assert JointConfig(inc, inc).committed_index(acked.get) == MajorityConfig(inc).committed_index(acked.get)


@SETTINGS
@given(joint_with_acks())
def test_tracker_committed_uses_progress_match(case):
    """ProgressTracker.committed() feeds each voter's match to the joint
    config; learners' matches never count."""
    inc, out, acked = case
    t = ProgressTracker(4)
    t.config.voters = JointConfig(inc, out)
    for i in inc | out:
        t.progress[i] = Progress(acked.get(i, 0), acked.get(i, 0) + 1, Inflights(4))
    learner = 42
    t.progress[learner] = Progress(100, 101, Inflights(4), is_learner=True)
    t.config.learners = {learner}
    assert t.committed() == naive_joint_committed(inc, out, acked)


# ---- a few cases spelled out ----------------------------------------------------------


def test_majority_committed_examples():
    c = MajorityConfig({1, 2, 3})
    assert c.committed_index({1: 5, 2: 3, 3: 1}.get) == 3
    assert c.committed_index({1: 5}.get) == 0  # only one of three acked anything
    assert MajorityConfig({1, 2, 3, 4}).committed_index({1: 9, 2: 8, 3: 7, 4: 1}.get) == 7
    assert MajorityConfig().committed_index({}.get) == INFINITE_INDEX


def test_joint_committed_is_the_smaller_half():
    j = JointConfig({1, 2, 3}, {4, 5, 6})
    acked = {1: 10, 2: 10, 3: 10, 4: 2, 5: 3, 6: 1}
    assert j.committed_index(acked.get) == 2
    assert JointConfig({1, 2, 3}).committed_index(acked.get) == 10


def test_vote_result_examples():
    c = MajorityConfig({1, 2, 3})
    assert c.vote_result({}) is VoteResult.PENDING
    assert c.vote_result({1: True, 2: True}) is VoteResult.WON
    assert c.vote_result({1: True, 2: False}) is VoteResult.PENDING
    assert c.vote_result({1: False, 2: False}) is VoteResult.LOST
    assert MajorityConfig().vote_result({}) is VoteResult.WON
    j = JointConfig({1, 2, 3}, {1, 4, 5})
    assert j.vote_result({1: True, 2: True, 3: True}) is VoteResult.PENDING
    assert j.vote_result({1: True, 2: True, 4: False, 5: False}) is VoteResult.LOST
    assert j.vote_result({1: True, 2: True, 4: True}) is VoteResult.WON
