"""The seed questions of the raft core, answered by tests named after them.
Each asserts the exact messages, fields and progress states:

- how the leader sets each follower's commit on heartbeats;
- what the leader does with a MsgHeartbeatResp;
- why a follower that lags while snapshots keep moving does not loop forever;
- why a joint config has two majorities.
"""

from __future__ import annotations

import pytest

from proto.raftpb import raft_pb2 as pb
from tests.raft.harness import Network, new_storage, new_test_config, new_test_raft, read_messages
from trietcd.raft import ProgressState, RawNode, ReadState, SnapshotStatus, StateType
from trietcd.raft.raft import msg, msg_from

# ---- helpers ------------------------------------------------------------------------


def make_leader(r):
    r.become_candidate()
    r.become_leader()
    read_messages(r)
    return r


def leader(voters=(1, 2, 3), learners=(), **kw):
    """Node 1 as leader of term 1; its log holds the term's empty entry at 1."""
    return make_leader(new_test_raft(1, 10, 1, new_storage(voters, learners), **kw))


def propose(r, *datas) -> None:
    r.step(pb.Message(type=pb.MsgProp, **{"from": r.id}, entries=[pb.Entry(Data=d) for d in datas]))


def app_resp(r, frm: int, index: int, *, reject: bool = False, hint: int = 0) -> None:
    r.step(msg(pb.MsgAppResp, r.id, frm, term=r.term, index=index, reject=reject, rejectHint=hint))


def heartbeat_resp(r, frm: int, ctx: bytes = b"") -> None:
    r.step(msg(pb.MsgHeartbeatResp, r.id, frm, term=r.term, context=ctx))


def beat(r) -> None:
    r.step(msg(pb.MsgBeat, frm=r.id))


def vote_resp(r, frm: int, granted: bool) -> None:
    r.step(msg(pb.MsgVoteResp, r.id, frm, term=r.term, reject=not granted))


def app(m) -> tuple:
    """(to, index, logTerm, commit, [entry indexes]) of a MsgApp."""
    assert m.type == pb.MsgApp, pb.MessageType.Name(m.type)
    return (m.to, m.index, m.logTerm, m.commit, [e.Index for e in m.entries])


def to(msgs, i: int) -> list:
    return [m for m in msgs if m.to == i]


def names(msgs) -> list:
    return [(pb.MessageType.Name(m.type), m.to) for m in msgs]


# ---- how the leader sets each follower's commit on heartbeats -------------------------


def test_heartbeat_commit_is_min_of_match_and_committed():
    r = leader()
    propose(r, b"a", b"b", b"c")  # entries 2..4
    app_resp(r, 3, 4)  # 3 holds everything: 1 and 3 commit 4
    app_resp(r, 2, 1)  # 2 holds only entry 1
    assert r.raft_log.committed == 4
    assert (r.prs.progress[2].match, r.prs.progress[3].match) == (1, 4)
    read_messages(r)

    beat(r)
    hbs = read_messages(r)
    assert [(m.type, m.to, m.term, m.commit, m.index, m.logTerm, len(m.entries), m.context) for m in hbs] == [
        # Behind: told to commit only what the leader knows it holds.
        (pb.MsgHeartbeat, 2, 1, 1, 0, 0, 0, b""),
        # Caught up: gets the leader's commit.
        (pb.MsgHeartbeat, 3, 1, 4, 0, 0, 0, b""),
    ]


def test_heartbeat_commit_past_the_followers_log_would_be_fatal():
    """Why min(match, committed): a follower's commit may never pass its log,
    and a heartbeat carries no entries to fill the gap."""
    f = new_test_raft(2, 10, 1, new_storage([1, 2, 3]))
    f.become_follower(1, 1)
    f.step(msg(pb.MsgApp, 2, 1, term=1, index=0, logTerm=0, entries=[pb.Entry(Index=1, Term=1)]))
    read_messages(f)

    f.step(msg(pb.MsgHeartbeat, 2, 1, term=1, commit=1))  # commit = its match
    assert f.raft_log.committed == 1
    [resp] = read_messages(f)
    assert (resp.type, resp.to, resp.term) == (pb.MsgHeartbeatResp, 1, 1)

    with pytest.raises(AssertionError, match=r"tocommit\(4\) is out of range \[lastIndex\(1\)\]"):
        f.step(msg(pb.MsgHeartbeat, 2, 1, term=1, commit=4))  # the leader's commit


# ---- what the leader does with a MsgHeartbeatResp ---------------------------------------


def test_heartbeat_resp_resumes_probing_and_resends_to_a_follower_behind():
    r = leader()
    propose(r, b"a")  # probes both followers with entries 1..2
    app_resp(r, 3, 2)
    read_messages(r)
    pr = r.prs.progress[2]
    assert (pr.state, pr.probe_sent, pr.is_paused(), pr.recent_active) == (ProgressState.PROBE, True, True, False)

    propose(r, b"b")  # a paused probe gets nothing new
    assert to(read_messages(r), 2) == []

    heartbeat_resp(r, 2)
    # Alive after all: the probe is resent at once, with everything it lacks.
    assert [app(m) for m in read_messages(r)] == [(2, 0, 0, 2, [1, 2, 3])]
    assert pr.recent_active
    assert (pr.state, pr.next, pr.match) == (ProgressState.PROBE, 1, 0)
    assert pr.probe_sent  # the resend is the new outstanding probe


def test_heartbeat_resp_clears_probe_sent_for_a_caught_up_follower():
    r = leader()
    app_resp(r, 2, 1)
    app_resp(r, 3, 1)
    r.step(msg(pb.MsgUnreachable, frm=2))  # back to probing
    pr = r.prs.progress[2]
    assert (pr.state, pr.match, pr.next) == (ProgressState.PROBE, 1, 2)
    # A probe is outstanding (set by hand: its answer was lost).
    pr.probe_sent = True
    read_messages(r)

    heartbeat_resp(r, 2)
    assert not pr.probe_sent and not pr.is_paused()
    assert read_messages(r) == []  # match == last index: nothing to resend

    propose(r, b"a")  # un-paused: the next proposal goes out right away
    assert [app(m) for m in to(read_messages(r), 2)] == [(2, 1, 1, 1, [2])]
    assert pr.probe_sent


def test_heartbeat_resp_frees_a_full_inflights_window_and_resends():
    r = leader(max_inflight_msgs=2)
    app_resp(r, 2, 1)
    app_resp(r, 3, 1)
    read_messages(r)
    pr = r.prs.progress[2]
    assert pr.state is ProgressState.REPLICATE

    propose(r, b"a")
    propose(r, b"b")
    propose(r, b"c")  # the window (2) is full: entry 4 is held back
    assert [app(m) for m in to(read_messages(r), 2)] == [(2, 1, 1, 1, [2]), (2, 2, 1, 1, [3])]
    assert list(pr.inflights._buffer) == [2, 3] and pr.is_paused()

    heartbeat_resp(r, 2)
    # One slot freed (its ack may be lost), and the missing entry sent in it.
    assert [app(m) for m in read_messages(r)] == [(2, 3, 1, 1, [4])]
    assert list(pr.inflights._buffer) == [3, 4]
    assert (pr.match, pr.next) == (1, 5)


def test_heartbeat_resp_acks_complete_a_read_index_on_quorum():
    r = leader((1, 2, 3, 4, 5))
    for i in (2, 3, 4, 5):
        app_resp(r, i, 1)
    assert r.raft_log.committed == 1
    read_messages(r)

    r.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(Data=b"rctx")]))
    hbs = read_messages(r)
    assert [(m.type, m.to, m.commit, m.context) for m in hbs] == [
        (pb.MsgHeartbeat, i, 1, b"rctx") for i in (2, 3, 4, 5)
    ]
    assert r.read_states == []

    heartbeat_resp(r, 2, b"rctx")  # leader + 2: 2 of 5
    heartbeat_resp(r, 2, b"rctx")  # the same voter twice is still one ack
    heartbeat_resp(r, 3)  # a heartbeat response without the context is no ack
    heartbeat_resp(r, 3, b"other")  # nor one for an unknown context
    assert r.read_states == []
    heartbeat_resp(r, 3, b"rctx")  # 3 of 5: a quorum confirmed leadership
    assert r.read_states == [ReadState(1, b"rctx")]
    heartbeat_resp(r, 4, b"rctx")  # late acks change nothing
    assert r.read_states == [ReadState(1, b"rctx")]
    assert read_messages(r) == []  # everyone was caught up: no appends either
    assert r.read_only.pending_read_index == {} and r.read_only.read_index_queue == []


def test_heartbeat_resp_ack_for_a_later_read_confirms_earlier_ones():
    r = leader()
    app_resp(r, 2, 1)
    app_resp(r, 3, 1)
    read_messages(r)
    # A request forwarded by follower 2, then a local one.
    r.step(pb.Message(type=pb.MsgReadIndex, **{"from": 2}, entries=[pb.Entry(Data=b"a")]))
    r.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(Data=b"b")]))
    assert [m.context for m in read_messages(r)] == [b"a", b"a", b"b", b"b"]

    heartbeat_resp(r, 3, b"b")
    [resp] = read_messages(r)
    assert (resp.type, resp.to, resp.term, resp.index, [e.Data for e in resp.entries]) == (
        pb.MsgReadIndexResp, 2, 1, 1, [b"a"])
    assert r.read_states == [ReadState(1, b"b")]


def test_heartbeat_resp_from_a_learner_is_no_read_index_ack():
    r = leader((1, 2, 3), learners=(4,))
    for i in (2, 3, 4):
        app_resp(r, i, 1)
    read_messages(r)
    r.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(Data=b"c")]))
    assert [m.to for m in read_messages(r)] == [2, 3, 4]  # learners hear heartbeats too
    heartbeat_resp(r, 4, b"c")
    assert r.read_states == []
    heartbeat_resp(r, 2, b"c")
    assert r.read_states == [ReadState(1, b"c")]


# ---- why a lagging follower does not loop on snapshots ------------------------------------


def snapshot_leader():
    """A RawNode leading voters (1 2) at term 12 whose log was compacted up to
    a snapshot at 11 (term 11); entry 12 is its empty entry. Follower 2 has
    nothing, so a probe at 11 is rejected and it needs the snapshot."""
    s = new_storage()
    snap = pb.Snapshot()
    snap.metadata.index, snap.metadata.term = 11, 11
    snap.metadata.conf_state.voters.extend([1, 2])
    s.apply_snapshot(snap)
    s.set_hard_state(pb.HardState(term=11, commit=11))
    rn = RawNode(new_test_config(1, 10, 1, s))
    r = make_leader(rn.raft)
    assert (r.term, r.raft_log.first_index(), r.raft_log.last_index()) == (12, 12, 12)

    r.bcast_append()
    assert [app(m) for m in read_messages(r)] == [(2, 11, 11, 11, [12])]
    app_resp(r, 2, 11, reject=True, hint=0)
    [m] = read_messages(r)
    assert (m.type, m.to, m.term, m.snapshot.metadata.index, m.snapshot.metadata.term) == (
        pb.MsgSnap, 2, 12, 11, 11)
    pr = r.prs.progress[2]
    assert (pr.state, pr.pending_snapshot, pr.match) == (ProgressState.SNAPSHOT, 11, 0)
    return rn, s


def test_pending_snapshot_sends_one_msgsnap_then_nothing_but_heartbeats():
    rn, _ = snapshot_leader()
    r = rn.raft
    sent = []
    for n in range(3):
        propose(r, b"x%d" % n)
        beat(r)
        heartbeat_resp(r, 2)  # alive, but still busy applying the snapshot
        app_resp(r, 2, 11, reject=True, hint=0)  # a duplicate of the old rejection
        sent += read_messages(r)
    # No MsgApp, no second MsgSnap: only heartbeats, which commit nothing on it.
    assert [(m.type, m.commit) for m in sent] == [(pb.MsgHeartbeat, 0)] * 3
    pr = r.prs.progress[2]
    assert (pr.state, pr.pending_snapshot, pr.next) == (ProgressState.SNAPSHOT, 11, 1)


def test_snap_status_failure_probes_again_after_a_heartbeat():
    rn, _ = snapshot_leader()
    r = rn.raft
    rn.report_snapshot(2, SnapshotStatus.FAILURE)
    pr = r.prs.progress[2]
    # The snapshot never arrived: probe from after match, not the snapshot.
    assert (pr.state, pr.pending_snapshot, pr.next, pr.probe_sent) == (ProgressState.PROBE, 0, 1, True)
    assert read_messages(r) == []
    propose(r, b"x")
    assert read_messages(r) == []  # paused until the next heartbeat round

    beat(r)
    assert names(read_messages(r)) == [("MsgHeartbeat", 2)]
    heartbeat_resp(r, 2)
    # The probe needs compacted entries: one fresh snapshot, then pending again.
    [m] = read_messages(r)
    assert (m.type, m.to, m.snapshot.metadata.index) == (pb.MsgSnap, 2, 11)
    assert (pr.state, pr.pending_snapshot) == (ProgressState.SNAPSHOT, 11)


def test_snap_status_success_waits_for_the_followers_app_resp():
    rn, _ = snapshot_leader()
    r = rn.raft
    rn.report_snapshot(2, SnapshotStatus.FINISH)
    pr = r.prs.progress[2]
    # Probe from right after the snapshot, but paused until the follower speaks.
    assert (pr.state, pr.pending_snapshot, pr.match, pr.next, pr.probe_sent) == (
        ProgressState.PROBE, 0, 0, 12, True)
    propose(r, b"x")  # entry 13
    assert read_messages(r) == []

    app_resp(r, 2, 11)  # the follower applied the snapshot
    assert (pr.state, pr.match) == (ProgressState.REPLICATE, 11)
    assert [app(m) for m in read_messages(r)] == [(2, 11, 11, 11, [12, 13])]
    assert (pr.next, list(pr.inflights._buffer)) == (14, [13])


def test_app_resp_after_snapshot_moves_follower_to_replicate():
    """No MsgSnapStatus needed: the follower's MsgAppResp for the snapshot's
    index ends the snapshot state by itself."""
    rn, _ = snapshot_leader()
    r = rn.raft
    app_resp(r, 2, 11)
    pr = r.prs.progress[2]
    assert (pr.state, pr.match, pr.pending_snapshot) == (ProgressState.REPLICATE, 11, 0)
    assert [app(m) for m in read_messages(r)] == [(2, 11, 11, 11, [12])]
    app_resp(r, 2, 12)
    assert r.raft_log.committed == 12
    assert [app(m) for m in read_messages(r)] == [(2, 12, 12, 12, [])]  # the new commit


def test_follower_answers_a_snapshot_with_its_index_and_a_duplicate_with_its_commit():
    """The follower's side: applying MsgSnap answers MsgAppResp(index=snapshot
    index), which is what moves the leader on; a duplicate (or older)
    snapshot is not applied again and is answered with the commit index."""
    f = new_test_raft(2, 10, 1, new_storage([1, 2]))
    f.become_follower(12, 1)
    snap = pb.Snapshot()
    snap.metadata.index, snap.metadata.term = 11, 11
    snap.metadata.conf_state.voters.extend([1, 2])
    m = msg(pb.MsgSnap, 2, 1, term=12)
    m.snapshot.CopyFrom(snap)
    f.step(m)
    [resp] = read_messages(f)
    assert (resp.type, resp.to, resp.term, resp.index, resp.reject) == (pb.MsgAppResp, 1, 12, 11, False)
    assert (f.raft_log.committed, f.raft_log.last_index(), f.raft_log.has_pending_snapshot()) == (11, 11, True)

    f.step(m)  # the same snapshot again: nothing restored, commit reported
    [resp] = read_messages(f)
    assert (resp.type, resp.index) == (pb.MsgAppResp, 11)
    assert f.raft_log.unstable.snapshot.metadata.index == 11


def test_snapshots_keep_moving_each_sent_once_until_the_follower_catches_up():
    """While snapshot 11 is in flight the leader compacts past it. It neither
    re-sends 11 nor sends the newer one until the follower answers; then it
    sends the newer snapshot exactly once, and replication follows."""
    rn, s = snapshot_leader()
    r = rn.raft
    propose(r, b"a", b"b", b"c")  # entries 13..15
    s.append(r.raft_log.unstable_entries())
    r.raft_log.stable_to(15, 12)
    s.create_snapshot(14)
    s.compact(14)
    assert r.raft_log.first_index() == 15
    for _ in range(3):
        beat(r)
        heartbeat_resp(r, 2)
    assert names(read_messages(r)) == [("MsgHeartbeat", 2)] * 3

    app_resp(r, 2, 11)  # snapshot 11 applied; 12.. are gone from the leader
    [m] = read_messages(r)
    assert (m.type, m.to, m.snapshot.metadata.index, m.snapshot.metadata.term) == (pb.MsgSnap, 2, 14, 12)
    pr = r.prs.progress[2]
    assert (pr.state, pr.match, pr.pending_snapshot) == (ProgressState.SNAPSHOT, 11, 14)

    app_resp(r, 2, 14)  # snapshot 14 applied: a quorum holds 14, of this term
    assert r.raft_log.committed == 14
    assert [app(m) for m in read_messages(r)] == [(2, 14, 12, 14, [15])]
    assert (pr.state, pr.match, pr.next) == (ProgressState.REPLICATE, 14, 16)


# ---- why a joint config has two majorities ---------------------------------------------------


def joint_raft():
    """Node 1 in the joint config (1 2 3)&&(1 4 5): incoming and outgoing."""
    s = new_storage([1, 2, 3])
    s.snapshot().metadata.conf_state.voters_outgoing.extend([1, 4, 5])
    r = new_test_raft(1, 10, 1, s)
    assert r.prs.config.voters.describe() == "(1 2 3)&&(1 4 5)"
    return r


@pytest.mark.parametrize("one_half, other_half", [((2, 3), (4,)), ((4, 5), (2,))])
def test_joint_commit_needs_a_majority_of_both_halves(one_half, other_half):
    r = make_leader(joint_raft())
    propose(r, b"x")  # entry 2
    read_messages(r)
    for i in one_half:
        app_resp(r, i, 2)
    # One half alone holds a majority (it would commit as a plain config)...
    acked = {i: r.prs.progress[i].match for i in r.prs.progress}
    assert max(r.prs.config.voters.incoming.committed_index(acked.get),
               r.prs.config.voters.outgoing.committed_index(acked.get)) == 2
    # ...but the other half has only the leader: nothing commits.
    assert r.raft_log.committed == 0
    # The acking followers were paused probes: each gets an (empty) append
    # that still says commit 0.
    assert [app(m) for m in read_messages(r)] == [(i, 2, 1, 0, []) for i in one_half]

    app_resp(r, other_half[0], 2)  # now a majority of each half
    assert r.raft_log.committed == 2
    msgs = read_messages(r)
    acked_ids = sorted((*one_half, *other_half))
    assert [app(m) for m in msgs] == [(i, 2, 1, 2, []) for i in acked_ids]


def test_joint_election_won_in_one_half_only_is_not_won():
    r = joint_raft()
    r.step(msg(pb.MsgHup, frm=1))
    assert r.state is StateType.CANDIDATE
    reqs = read_messages(r)
    assert [(m.type, m.to, m.term) for m in reqs] == [(pb.MsgVote, i, 1) for i in (2, 3, 4, 5)]

    vote_resp(r, 2, True)
    vote_resp(r, 3, True)  # (1 2 3) is won; (1 4 5) has only its own vote
    assert r.state is StateType.CANDIDATE
    vote_resp(r, 4, True)
    assert r.state is StateType.LEADER


def test_joint_election_lost_in_one_half_is_lost():
    r = joint_raft()
    r.step(msg(pb.MsgHup, frm=1))
    read_messages(r)
    vote_resp(r, 2, True)
    vote_resp(r, 3, True)
    vote_resp(r, 4, False)
    assert r.state is StateType.CANDIDATE  # 5 may still decide the outgoing half
    vote_resp(r, 5, False)
    # Won the incoming majority, lost the outgoing: the election is lost.
    assert (r.state, r.term, r.lead) == (StateType.FOLLOWER, 1, 0)


def test_joint_election_won_in_outgoing_half_only_is_not_won():
    r = joint_raft()
    r.step(msg(pb.MsgHup, frm=1))
    read_messages(r)
    vote_resp(r, 4, True)
    vote_resp(r, 5, True)
    assert r.state is StateType.CANDIDATE
    vote_resp(r, 2, False)
    vote_resp(r, 3, False)
    assert r.state is StateType.FOLLOWER


def test_joint_read_index_needs_acks_from_both_halves():
    r = make_leader(joint_raft())
    for i in (2, 3, 4, 5):
        app_resp(r, i, 1)
    assert r.raft_log.committed == 1
    read_messages(r)
    r.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(Data=b"j")]))
    read_messages(r)
    heartbeat_resp(r, 2, b"j")
    heartbeat_resp(r, 3, b"j")
    assert r.read_states == []
    heartbeat_resp(r, 5, b"j")
    assert r.read_states == [ReadState(1, b"j")]


# ---- found alongside ------------------------------------------------------------------------


def test_transfer_leader_asked_of_a_follower_goes_to_the_named_transferee():
    """RawNode.transfer_leader(3) on follower 2 steps MsgTransferLeader with
    from=3; the follower forwards it to the leader with `from` unchanged, so
    the leader transfers to 3, not to the follower that forwarded it."""
    nt = Network(None, None, None)
    nt.campaign(1)
    seen = []
    nt.msg_hook = lambda m: seen.append((m.type, msg_from(m), m.to)) or True
    nt.send(msg(pb.MsgTransferLeader, to=2, frm=3))
    assert (pb.MsgTransferLeader, 3, 1) in seen  # forwarded by 2, still naming 3
    assert (pb.MsgTimeoutNow, 1, 3) in seen
    assert [p.state for p in nt.peers.values()] == [StateType.FOLLOWER, StateType.FOLLOWER, StateType.LEADER]
    assert nt.peers[3].term == 2
