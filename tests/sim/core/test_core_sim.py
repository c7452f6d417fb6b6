"""The core simulation in the normal test run: 240 seeds (3, 5 and 7 nodes,
PreVote/CheckQuorum on and off). More: `python -m tests.sim.core --seeds 5000`."""

from __future__ import annotations

import pytest

from tests.sim.core.sim import Cluster, Options, SafetyViolation, options_for, run_seed

CHUNK = 20
SEEDS = 240


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_seeds(start):
    for seed in range(start, start + CHUNK):
        run_seed(seed)  # raises SafetyViolation naming the seed


def test_every_size_is_covered():
    sizes = {options_for(seed).nodes for seed in range(SEEDS)}
    assert sizes == {3, 5, 7}


def test_replay_is_deterministic():
    assert run_seed(7) == run_seed(7)


def test_checks_catch_two_leaders_in_a_term():
    c = Cluster(1, Options(nodes=3, fault_steps=0))
    c.leaders[5] = 1
    c.nodes[2].rn.raft.term = 5
    c.nodes[2].rn.raft.state = c.nodes[2].rn.raft.state.LEADER
    with pytest.raises(SafetyViolation, match="seed=1 .*election safety"):
        c.check_step()


def test_liveness_failure_names_the_seed():
    # A cluster that is never healed in time: every message dropped forever.
    c = Cluster(3, Options(nodes=3, fault_steps=0, heal_ticks_max=30))
    c.send = lambda frm, m: None
    with pytest.raises(SafetyViolation, match=r"seed=3 .*no progress.*--seed 3"):
        c.run()
