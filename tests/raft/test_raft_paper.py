"""One test per claim of the Raft paper (§5.2 election, §5.3 replication,
§5.4 safety), in the spirit of etcd's raft_paper_test.go."""

from __future__ import annotations

import pytest

from proto.raftpb import raft_pb2 as pb
from tests.raft.harness import (
    Network, ents_with_terms, new_storage, new_test_raft, read_messages, with_log,
)
from trietcd.raft import StateType
from trietcd.raft.raft import msg, msg_from


def key(m):
    return (m.type, msg_from(m), m.to, m.term, m.logTerm, m.index, m.commit, m.reject,
            tuple((e.Term, e.Index, e.Data) for e in m.entries))


def sorted_keys(msgs):
    return sorted(key(m) for m in msgs)


def commit_noop_entry(r, s) -> None:
    """Make leader r commit its empty entry, and persist everything."""
    assert r.state is StateType.LEADER
    r.bcast_append()
    for m in read_messages(r):
        assert m.type == pb.MsgApp and len(m.entries) == 1
        r.step(accept_and_reply(m))
    read_messages(r)
    s.append(r.raft_log.unstable_entries())
    r.raft_log.applied_to(r.raft_log.committed)
    r.raft_log.stable_to(r.raft_log.last_index(), r.raft_log.last_term())


def accept_and_reply(m):
    assert m.type == pb.MsgApp
    return pb.Message(type=pb.MsgAppResp, to=msg_from(m), **{"from": m.to}, term=m.term,
                      index=m.index + len(m.entries))


# ---- §5.1 / §5.2 leader election ----------------------------------------------


@pytest.mark.parametrize("state", ["follower", "candidate", "leader"])
def test_update_term_from_message(state):
    """A server seeing a larger term adopts it and reverts to follower (§5.1)."""
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    if state == "candidate":
        r.become_candidate()
    elif state == "leader":
        r.become_candidate()
        r.become_leader()
    r.step(msg(pb.MsgApp, term=2))
    assert r.term == 2
    assert r.state is StateType.FOLLOWER


def test_reject_stale_term_message():
    """Requests with a stale term are ignored (§5.1)."""
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    r.load_state(pb.HardState(term=2))
    r.step(msg(pb.MsgApp, term=1))
    assert r.msgs == [] and r.term == 2 and r.state is StateType.FOLLOWER


def test_start_as_follower():
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    assert r.state is StateType.FOLLOWER


def test_leader_bcast_beat():
    """A leader sends heartbeats to all followers every heartbeat tick (§5.2)."""
    hi = 1
    r = new_test_raft(1, 10, hi, new_storage([1, 2, 3]))
    r.become_candidate()
    r.become_leader()
    for i in range(10):
        r.append_entry([pb.Entry(Index=i + 1)])
    read_messages(r)
    for _ in range(hi):
        r.tick()
    got = sorted_keys(read_messages(r))
    assert got == sorted_keys([
        msg(pb.MsgHeartbeat, frm=1, to=2, term=1), msg(pb.MsgHeartbeat, frm=1, to=3, term=1),
    ])


@pytest.mark.parametrize("state", ["follower", "candidate"])
def test_non_leader_start_election(state):
    """On election timeout a follower/candidate starts an election: term+1,
    votes for itself, asks every peer (§5.2)."""
    et = 10
    r = new_test_raft(1, et, 1, new_storage([1, 2, 3]))
    if state == "follower":
        r.become_follower(1, 2)
    else:
        r.become_candidate()
    for _ in range(2 * et):
        r.tick()
    assert r.term == 2
    assert r.state is StateType.CANDIDATE
    assert r.prs.votes[1] is True
    got = sorted_keys(read_messages(r))
    assert got == sorted_keys([
        msg(pb.MsgVote, frm=1, to=2, term=2), msg(pb.MsgVote, frm=1, to=3, term=2),
    ])


@pytest.mark.parametrize("size, votes, state", [
    (1, {}, StateType.LEADER),
    (3, {2: True, 3: True}, StateType.LEADER),
    (3, {2: True}, StateType.LEADER),
    (5, {2: True, 3: True, 4: True, 5: True}, StateType.LEADER),
    (5, {2: True, 3: True, 4: True}, StateType.LEADER),
    (5, {2: True, 3: True}, StateType.LEADER),
    (3, {2: False, 3: False}, StateType.FOLLOWER),
    (5, {2: False, 3: False, 4: False, 5: False}, StateType.FOLLOWER),
    (5, {2: True, 3: False, 4: False, 5: False}, StateType.FOLLOWER),
    (3, {}, StateType.CANDIDATE),
    (5, {2: True}, StateType.CANDIDATE),
    (5, {2: False, 3: False}, StateType.CANDIDATE),
    (5, {}, StateType.CANDIDATE),
])
def test_leader_election_in_one_round_rpc(size, votes, state):
    """A candidate wins with a majority, loses on a majority against, and
    otherwise stays candidate (§5.2)."""
    r = new_test_raft(1, 10, 1, new_storage(range(1, size + 1)))
    r.step(msg(pb.MsgHup, frm=1))
    for i, granted in votes.items():
        r.step(msg(pb.MsgVoteResp, frm=i, to=1, term=r.term, reject=not granted))
    assert r.state is state
    assert r.term == 1


@pytest.mark.parametrize("vote, nvote, reject", [
    (0, 1, False), (0, 2, False), (1, 1, False), (2, 2, False), (1, 2, True), (2, 1, True),
])
def test_follower_vote(vote, nvote, reject):
    """Each server votes for at most one candidate per term, first come first served (§5.2)."""
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    r.load_state(pb.HardState(term=1, vote=vote))
    r.step(msg(pb.MsgVote, frm=nvote, to=1, term=1))
    got = read_messages(r)
    assert [key(m) for m in got] == [key(msg(pb.MsgVoteResp, frm=1, to=nvote, term=1, reject=reject))]


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_fallback(term):
    """A candidate hearing from a leader of at least its term becomes follower (§5.2)."""
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    r.step(msg(pb.MsgHup, frm=1))
    assert r.state is StateType.CANDIDATE
    r.step(msg(pb.MsgApp, frm=2, to=1, term=term))
    assert r.state is StateType.FOLLOWER
    assert r.term == term


@pytest.mark.parametrize("state", ["follower", "candidate"])
def test_non_leader_election_timeout_randomized(state):
    """Election timeouts are drawn from [et, 2et) (§5.2)."""
    et = 10
    r = new_test_raft(1, et, 1, new_storage([1, 2, 3]))
    timeouts = set()
    for _ in range(50 * et):
        if state == "follower":
            r.become_follower(r.term + 1, 2)
        else:
            r.become_candidate()
        time = 0
        while not read_messages(r):
            r.tick()
            time += 1
        timeouts.add(time)
    assert timeouts == set(range(et, 2 * et))


@pytest.mark.parametrize("state", ["follower", "candidate"])
def test_non_leaders_election_timeout_nonconflict(state):
    """Randomized timeouts make simultaneous timeouts rare (§5.2)."""
    et, size, rounds = 10, 5, 1000
    rs = [new_test_raft(i, et, 1, new_storage(range(1, size + 1))) for i in range(1, size + 1)]
    conflicts = 0
    for _ in range(rounds):
        for r in rs:
            if state == "follower":
                r.become_follower(r.term + 1, 0)
            else:
                r.become_candidate()
        timeout_num = 0
        while timeout_num == 0:
            for r in rs:
                r.tick()
                if read_messages(r):
                    timeout_num += 1
        if timeout_num > 1:
            conflicts += 1
    assert conflicts / rounds <= 0.3


# ---- §5.3 log replication --------------------------------------------------------


def test_leader_start_replication():
    """A leader appends a proposal to its log and sends it in MsgApp to every
    follower, with the index and term of the preceding entry (§5.3)."""
    s = new_storage([1, 2, 3])
    r = new_test_raft(1, 10, 1, s)
    r.become_candidate()
    r.become_leader()
    commit_noop_entry(r, s)
    li = r.raft_log.last_index()
    r.step(msg(pb.MsgProp, frm=1, to=1, entries=[pb.Entry(Data=b"some data")]))
    assert r.raft_log.last_index() == li + 1
    assert r.raft_log.committed == li
    want_ent = pb.Entry(Index=li + 1, Term=1, Data=b"some data")
    got = sorted_keys(read_messages(r))
    assert got == sorted_keys([
        msg(pb.MsgApp, frm=1, to=i, term=1, index=li, logTerm=1, commit=li, entries=[want_ent]) for i in (2, 3)
    ])
    assert [(e.Index, e.Term, e.Data) for e in r.raft_log.unstable_entries()] == [(li + 1, 1, b"some data")]


def test_leader_commit_entry():
    """Once replicated on a majority, the entry commits and the commit index
    is sent to followers in later MsgApps (§5.3)."""
    s = new_storage([1, 2, 3])
    r = new_test_raft(1, 10, 1, s)
    r.become_candidate()
    r.become_leader()
    commit_noop_entry(r, s)
    li = r.raft_log.last_index()
    r.step(msg(pb.MsgProp, frm=1, to=1, entries=[pb.Entry(Data=b"some data")]))
    for m in read_messages(r):
        r.step(accept_and_reply(m))
    assert r.raft_log.committed == li + 1
    assert [(e.Index, e.Data) for e in r.raft_log.next_ents()] == [(li + 1, b"some data")]
    got = sorted(read_messages(r), key=lambda m: m.to)
    assert [(m.to, m.type, m.commit) for m in got] == [(2, pb.MsgApp, li + 1), (3, pb.MsgApp, li + 1)]


@pytest.mark.parametrize("size, acceptors, commit", [
    (1, set(), True), (3, set(), False), (3, {2}, True), (3, {2, 3}, True),
    (5, set(), False), (5, {2}, False), (5, {2, 3}, True), (5, {2, 3, 4}, True), (5, {2, 3, 4, 5}, True),
])
def test_leader_acknowledge_commit(size, acceptors, commit):
    """An entry commits once the leader has it on a majority (§5.3)."""
    s = new_storage(range(1, size + 1))
    r = new_test_raft(1, 10, 1, s)
    r.become_candidate()
    r.become_leader()
    commit_noop_entry(r, s)
    li = r.raft_log.last_index()
    r.step(msg(pb.MsgProp, frm=1, to=1, entries=[pb.Entry(Data=b"some data")]))
    for m in read_messages(r):
        if m.to in acceptors:
            r.step(accept_and_reply(m))
    assert (r.raft_log.committed > li) == commit


@pytest.mark.parametrize("terms", [[], [2], [1, 1], [1, 2]])
def test_leader_commit_preceding_entries(terms):
    """Committing an entry also commits all preceding entries, including
    those of earlier leaders (§5.3)."""
    s = new_storage([1, 2, 3])
    s.append(ents_with_terms(*terms))
    r = new_test_raft(1, 10, 1, s)
    r.load_state(pb.HardState(term=2))
    r.become_candidate()
    r.become_leader()
    r.step(msg(pb.MsgProp, frm=1, to=1, entries=[pb.Entry(Data=b"some data")]))
    for m in read_messages(r):
        r.step(accept_and_reply(m))
    li = len(terms)
    got = [(e.Term, e.Index, e.Data) for e in r.raft_log.next_ents()]
    want = [(t, i, b"") for i, t in enumerate(terms, 1)] + [(3, li + 1, b""), (3, li + 2, b"some data")]
    assert got == want


@pytest.mark.parametrize("ents, commit", [
    ([(1, 1, b"some data")], 1),
    ([(1, 1, b"some data"), (1, 2, b"some data2")], 2),
    ([(1, 1, b"some data2"), (1, 2, b"some data")], 2),
    ([(1, 1, b"some data"), (1, 2, b"some data2")], 1),
])
def test_follower_commit_entry(ents, commit):
    """A follower applies entries up to the leader's commit index (§5.3)."""
    r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
    r.become_follower(1, 2)
    entries = [pb.Entry(Term=t, Index=i, Data=d) for t, i, d in ents]
    r.step(msg(pb.MsgApp, frm=2, to=1, term=1, entries=entries, commit=commit))
    assert r.raft_log.committed == commit
    assert [(e.Term, e.Index, e.Data) for e in r.raft_log.next_ents()] == ents[:commit]


@pytest.mark.parametrize("term, index, windex, wreject, wreject_hint, wlog_term", [
    (0, 0, 1, False, 0, 0),  # match the committed entry
    (1, 1, 1, False, 0, 0),  # ditto (index 1 is committed)
    (2, 2, 2, False, 0, 0),  # match the last entry
    (1, 2, 2, True, 1, 1),  # unmatched term
    (3, 3, 3, True, 2, 2),  # missing entry
])
def test_follower_check_msg_app(term, index, windex, wreject, wreject_hint, wlog_term):
    """A follower rejects a MsgApp whose preceding entry it does not hold,
    hinting where its log could match (§5.3)."""
    s = new_storage([1, 2, 3])
    s.append(ents_with_terms(1, 2))
    r = new_test_raft(1, 10, 1, s)
    r.load_state(pb.HardState(commit=1))
    r.become_follower(2, 2)
    r.step(msg(pb.MsgApp, frm=2, to=1, term=2, logTerm=term, index=index))
    got = read_messages(r)
    assert [key(m) + (m.rejectHint,) for m in got] == [
        key(msg(pb.MsgAppResp, frm=1, to=2, term=2, index=windex, reject=wreject, logTerm=wlog_term))
        + (wreject_hint,)
    ]


@pytest.mark.parametrize("index, term, ents, wents, wunstable", [
    (2, 2, [(3, 3)], [(1, 1), (2, 2), (3, 3)], [(3, 3)]),
    (1, 1, [(3, 2), (4, 3)], [(1, 1), (3, 2), (4, 3)], [(3, 2), (4, 3)]),
    (0, 0, [(1, 1)], [(1, 1), (2, 2)], []),
    (0, 0, [(3, 1)], [(3, 1)], [(3, 1)]),
])
def test_follower_append_entries(index, term, ents, wents, wunstable):
    """A follower deletes a conflicting entry and all that follow it, then
    appends the new ones (§5.3)."""
    s = new_storage([1, 2, 3])
    s.append(ents_with_terms(1, 2))
    r = new_test_raft(1, 10, 1, s)
    r.become_follower(2, 2)
    entries = [pb.Entry(Term=t, Index=i) for t, i in ents]
    r.step(msg(pb.MsgApp, frm=2, to=1, term=2, logTerm=term, index=index, entries=entries))
    assert [(e.Term, e.Index) for e in r.raft_log.all_entries()] == wents
    assert [(e.Term, e.Index) for e in r.raft_log.unstable_entries()] == wunstable


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize("follower", [
    [1, 1, 1, 4, 4, 5, 5, 6, 6],
    [1, 1, 1, 4],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    [1, 1, 1, 4, 4, 4, 4],
    [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
])
def test_leader_sync_follower_log(follower):
    """The leader brings every follower's log (figure 7 a-f) into agreement
    with its own (§5.3)."""
    lead_s = new_storage([1, 2, 3])
    lead_s.append(ents_with_terms(*FIG7_LEADER))
    lead = new_test_raft(1, 10, 1, lead_s)
    lead.load_state(pb.HardState(commit=lead.raft_log.last_index(), term=8))
    fol_s = new_storage([1, 2, 3])
    fol_s.append(ents_with_terms(*follower))
    fol = new_test_raft(2, 10, 1, fol_s)
    fol.load_state(pb.HardState(term=7))
    n = Network(lead, fol, None)
    n.campaign(1)
    # The third node (black hole in etcd's test) votes: here a fresh node.
    n.send(msg(pb.MsgVoteResp, frm=3, to=1, term=lead.term))
    n.propose(1, b"")
    want = [(e.Term, e.Index, e.Data) for e in lead.raft_log.all_entries()]
    assert [(e.Term, e.Index, e.Data) for e in fol.raft_log.all_entries()] == want


def test_vote_request():
    """A candidate's MsgVote carries its last log index and term (§5.4.1)."""
    for ents, wterm in ([[(1, 1)], 2], [[(1, 1), (2, 2)], 3]):
        r = new_test_raft(1, 10, 1, new_storage([1, 2, 3]))
        r.step(msg(pb.MsgApp, frm=2, to=1, term=wterm - 1, logTerm=0, index=0,
                   entries=[pb.Entry(Term=t, Index=i) for t, i in ents]))
        read_messages(r)
        for _ in range(1, r.election_timeout * 2):
            r.tick_election()
        got = sorted(read_messages(r), key=lambda m: m.to)
        assert len(got) == 2
        for m, to in zip(got, (2, 3)):
            assert (m.type, m.to, m.term, m.index, m.logTerm) == (pb.MsgVote, to, wterm, ents[-1][1], ents[-1][0])


# ---- §5.4 safety -------------------------------------------------------------------


@pytest.mark.parametrize("ents, logterm, index, wreject", [
    ([(1, 1)], 1, 1, False), ([(1, 1)], 1, 2, False), ([(1, 1), (1, 2)], 1, 1, True),
    ([(1, 1)], 2, 1, False), ([(1, 1)], 2, 2, False), ([(1, 1), (1, 2)], 2, 1, False),
    ([(2, 1)], 1, 1, True), ([(2, 1)], 1, 2, True), ([(2, 1), (1, 2)], 1, 1, True),
])
def test_voter(ents, logterm, index, wreject):
    """A voter denies its vote when its own log is more up to date (§5.4.1)."""
    s = new_storage([1, 2])
    s.append([pb.Entry(Term=t, Index=i) for t, i in ents])
    r = new_test_raft(1, 10, 1, s)
    r.step(msg(pb.MsgVote, frm=2, to=1, term=3, logTerm=logterm, index=index))
    (m,) = read_messages(r)
    assert m.type == pb.MsgVoteResp and m.reject == wreject


@pytest.mark.parametrize("index, wcommit", [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_log_from_current_term(index, wcommit):
    """A leader commits by counting replicas only for entries of its own
    term; older entries commit along with them (§5.4.2)."""
    s = new_storage([1, 2])
    s.append(ents_with_terms(1, 2))
    r = new_test_raft(1, 10, 1, s)
    r.load_state(pb.HardState(term=2))
    r.become_candidate()  # term 3
    r.become_leader()
    read_messages(r)
    r.step(msg(pb.MsgAppResp, frm=2, to=1, term=r.term, index=index))
    assert r.raft_log.committed == wcommit


def test_leader_completeness_after_election():
    """A new leader holds every committed entry (§5.4.3): the node missing
    committed entries cannot win."""
    n = Network(None, None, None)
    n.campaign(1)
    n.isolate(3)
    for _ in range(3):
        n.propose(1)
    n.recover()
    n.isolate(1)
    # Node 3 lacks the committed entries; 2 refuses to vote for it.
    n.campaign(3)
    assert n.peers[3].state is not StateType.LEADER
    n.campaign(2)
    assert n.peers[2].state is StateType.LEADER
    assert n.peers[2].raft_log.committed >= 4
