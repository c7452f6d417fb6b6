"""Auto-compaction: the pure decisions (server/autocompact.py) against etcd 3.5.1's compactor semantics, and the
member's task on virtual time (a real member on a temporary data dir, trio's MockClock jumping)."""

import io
import json

import attrs
import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from tests.server.members import run_member
from trietcd.config import parse
from trietcd.log import Logger
from trietcd.mvcc.errors import CompactedError
from trietcd.server import Member
from trietcd.server.autocompact import (
    HOUR_NS,
    Periodic,
    RetentionError,
    Revision,
    new_policy,
    parse_go_duration_ns,
    parse_retention,
)
from trietcd.server.errors import BootstrapError, RequestTimeoutError

S = 1_000_000_000


# ---- flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, text, value", [
    ("periodic", "0", 0), ("revision", "0", 0),
    ("periodic", "1", HOUR_NS), ("periodic", "+2", 2 * HOUR_NS), ("revision", "1000", 1000),
    ("periodic", "12h", 12 * HOUR_NS), ("periodic", "1s", S), ("periodic", "1.5m", 90 * S),
    ("periodic", "1h30m", 5400 * S), ("periodic", "10\u00b5s", 10_000),
    ("revision", "1s", S),  # etcd keeps the nanoseconds as a revision count
    ("", "5", 0), ("", "1h", HOUR_NS),
])
def test_retention_parses_as_etcd(mode, text, value):
    assert parse_retention(mode, text) == value


@pytest.mark.parametrize("text, error", [
    ("abc", 'error parsing CompactionRetention: time: invalid duration "abc"'),
    ("-1", 'error parsing CompactionRetention: time: missing unit in duration "-1"'),
    ("5x", 'error parsing CompactionRetention: time: unknown unit "x" in duration "5x"'),
    ("", 'error parsing CompactionRetention: time: invalid duration ""'),
    (".h", 'error parsing CompactionRetention: time: invalid duration ".h"'),
])
def test_bad_retention_has_etcds_error(text, error):
    with pytest.raises(RetentionError) as info:
        parse_retention("periodic", text)
    assert str(info.value) == error


def test_go_duration_sign_and_sums():
    assert parse_go_duration_ns("-1m30s") == -90 * S
    assert parse_go_duration_ns("1h1m1s1ms1us1ns") == HOUR_NS + 61 * S + 1_001_001
    assert parse_go_duration_ns("0") == 0


def test_policy_off_at_zero_and_refuses_negative():
    assert new_policy("periodic", "0", 0.0) is None
    assert new_policy("revision", "0", 0.0) is None
    assert isinstance(new_policy("revision", "10", 0.0), Revision)
    assert isinstance(new_policy("periodic", "10", 0.0), Periodic)
    with pytest.raises(RetentionError):
        new_policy("periodic", "-5m", 0.0)
    with pytest.raises(RetentionError):
        new_policy("periodic", "5ns", 0.0)
    # A config file without auto-compaction-mode: a bare number means off, a duration is refused.
    assert new_policy("", "5", 0.0) is None
    with pytest.raises(RetentionError, match="^unsupported compaction mode $"):
        new_policy("", "1h", 0.0)


# ---- periodic ---------------------------------------------------------------------------------------


def drive(policy, revision_at, until_s, leader_at=lambda t: True, fail_at=()):
    """The member's loop without trio: returns [(time, revision)] of the compactions proposed."""
    t = 0.0
    out = []
    while t < until_s:
        policy.sample(revision_at(t))
        t += policy.wait_s
        rev = policy.due(t, revision_at(t), paused=not leader_at(t))
        if rev is None:
            continue
        out.append((round(t, 6), rev))
        policy.finished(rev, t, round(t, 6) not in fail_at)
    return out


def test_periodic_1s_first_after_a_period_then_every_period():
    # One revision per 0.1 s: revision(t) = 1 + t * 10.
    p = Periodic(S, 0.0)
    assert (p.wait_s, p.retentions) == (0.1, 11)
    got = drive(p, lambda t: 1 + round(t * 10), 3.05)
    # At 1.0 the oldest sample is t=0; at 2.0 the window of 11 samples starts at t=0.9, at 3.0 at t=1.9.
    assert got == [(1.0, 1), (2.0, 10), (3.0, 20)]


def test_periodic_12h_samples_every_6_minutes_and_compacts_hourly():
    p = Periodic(12 * HOUR_NS, 0.0)
    assert (p.wait_s, p.retentions) == (360.0, 121)
    minute = lambda t: 1 + round(t / 60)  # one revision a minute
    got = drive(p, minute, 15 * 3600 + 1)
    assert [t for t, _ in got] == [12 * 3600.0, 13 * 3600.0, 14 * 3600.0, 15 * 3600.0]
    # 12h: the first sample (t=0); 13h: the 121 samples end at 12h54m, so they start at 54m.
    assert [r for _, r in got] == [1, minute(54 * 60), minute(114 * 60), minute(174 * 60)]


def test_periodic_30m_compacts_every_30m_to_the_revision_of_30m_ago():
    p = Periodic(1800 * S, 0.0)
    assert (p.wait_s, p.retentions) == (180.0, 11)
    got = drive(p, lambda t: 1 + round(t), 3600 * 2 + 1)
    assert got == [(1800.0, 1), (3600.0, 1 + 1620), (5400.0, 1 + 3420), (7200.0, 1 + 5220)]


def test_periodic_paused_while_not_leader_then_resumes_at_next_sample():
    p = Periodic(S, 0.0)
    got = drive(p, lambda t: 1 + round(t * 10), 2.55, leader_at=lambda t: t >= 1.45)
    # At 1.5 the 11 samples run from t=0.4 to 1.4.
    assert got == [(1.5, 5), (2.5, 15)]


def test_periodic_failure_retries_at_next_sample():
    p = Periodic(S, 0.0)
    got = drive(p, lambda t: 1 + round(t * 10), 2.25, fail_at=(1.0,))
    # Failed at 1.0: retried at 1.1 (base interval already shortened), then a period after that success.
    assert got == [(1.0, 1), (1.1, 1), (2.1, 11)]


# ---- revision ---------------------------------------------------------------------------------------


def test_revision_mode_every_5_minutes_only_when_the_revision_moved():
    r = Revision(1000)
    assert r.wait_s == 300.0
    revs = {300: 500, 600: 1500, 900: 1500, 1200: 2600, 1500: 2600}
    got = []
    for t, current in sorted(revs.items()):
        rev = r.due(float(t), current, paused=False)
        if rev is not None:
            got.append((t, rev))
            r.finished(rev, float(t), True)
    assert got == [(600, 500), (1200, 1600)]
    assert r.due(1800.0, 3000, paused=True) is None
    assert r.due(1800.0, 3000, paused=False) == 2000


def test_revision_mode_retries_after_a_failure():
    r = Revision(10)
    assert r.due(300.0, 20, paused=False) == 10
    r.finished(10, 300.0, False)
    assert r.due(600.0, 20, paused=False) == 10


# ---- the member's task ------------------------------------------------------------------------------
# Member._auto_compactor runs on a stand-in holding what it reads (store revision, leader, config, log) and a
# propose that compacts the stand-in's store as the applier would: no disk and no worker threads, so virtual
# time is exact.


class _Store:
    def __init__(self):
        self.current_revision = 1
        self.compact_revision = -1


class _Member:
    def __init__(self, mode: str, retention: str, out=None):
        self.config = parse(["--auto-compaction-mode", mode, "--auto-compaction-retention", retention], {})
        self._auto_compaction = (mode, retention)
        self.log = Logger(out=out or io.StringIO())
        self.store = _Store()
        self.id = 1
        self.leader_id = 1
        self.proposed: list[tuple[float, int]] = []
        self.fail_next = None

    def put(self, n: int = 1) -> None:
        self.store.current_revision += n

    async def propose(self, field, request):
        assert field == "compaction" and not request.physical
        self.proposed.append((trio.current_time(), request.revision))
        await trio.sleep(0.002)  # a raft round
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if request.revision <= self.store.compact_revision:
            raise CompactedError()
        self.store.compact_revision = request.revision
        return rpc_pb2.CompactionResponse()


async def _run(member, body):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Member._auto_compactor, member)
        await body(member)
        nursery.cancel_scope.cancel()


def _lines(out, msg):
    return [json.loads(line) for line in out.getvalue().splitlines() if f'"msg":"{msg}"' in line]


async def test_member_periodic_compacts_to_the_revision_one_period_ago(autojump_clock):
    out = io.StringIO()
    m = _Member("periodic", "1h", out=out)

    async def body(m):
        start = trio.current_time()
        await trio.sleep(1)
        m.put(5)  # revision 6 in the first minutes
        await trio.sleep_until(start + 1800)
        m.put(5)  # 11 at 30 min
        await trio.sleep_until(start + 7300)

    await _run(m, body)
    # At 1h the oldest sample is the one taken at start (revision 1); at 2h the window of 11 samples
    # (6 min apart) ending at 1h54m starts at 54m (revision 11).
    assert [(round(t, 3), rev) for t, rev in m.proposed] == [(3600.0, 1), (7200.002, 11)]  # the next round starts after the 2 ms proposal
    started = _lines(out, "starting auto periodic compaction")
    completed = _lines(out, "completed auto periodic compaction")
    assert [(x["revision"], x["compact-period"], x["caller"], x["level"]) for x in started] == [
        (1, "1h0m0s", "v3compactor/periodic.go:134", "info"), (11, "1h0m0s", "v3compactor/periodic.go:134", "info")]
    assert [(x["revision"], x["took"]) for x in completed] == [(1, "2ms"), (11, "2ms")]


async def test_member_periodic_counts_already_compacted_as_success_and_retries_failures(autojump_clock):
    out = io.StringIO()
    m = _Member("periodic", "1s", out=out)

    async def body(m):
        start = trio.current_time()
        m.fail_next = RequestTimeoutError()
        await trio.sleep_until(start + 3.05)

    await _run(m, body)
    # 1.0: fails; 1.102: retried (to the oldest sample, still revision 1); a period later: the store is at 1
    # (etcd's ErrCompacted: a success).
    assert [round(t, 3) for t, _ in m.proposed] == [1.0, 1.102, 2.104]
    failed = _lines(out, "failed auto periodic compaction")
    assert [(x["level"], x["retry-interval"], x["error"]) for x in failed] == [
        ("warn", "100ms", "RequestTimeoutError")]
    assert len(_lines(out, "completed auto periodic compaction")) == 2


async def test_member_revision_mode_every_5_minutes_when_the_revision_moved(autojump_clock):
    out = io.StringIO()
    m = _Member("revision", "3", out=out)

    async def body(m):
        start = trio.current_time()
        m.put(10)  # revision 11
        await trio.sleep_until(start + 301)
        m.put(1)
        await trio.sleep_until(start + 1201)

    await _run(m, body)
    assert [(round(t), rev) for t, rev in m.proposed] == [(300, 8), (600, 9)]
    assert [(x["revision"], x["revision-compaction-retention"], x["caller"])
            for x in _lines(out, "starting auto revision compaction")] == [
        (8, 3, "v3compactor/revision.go:86"), (9, 3, "v3compactor/revision.go:86")]


async def test_member_pauses_while_not_leader(autojump_clock):
    m = _Member("revision", "1")

    async def body(m):
        start = trio.current_time()
        m.put(2)
        m.leader_id = 2  # another member leads
        await trio.sleep_until(start + 601)
        assert m.proposed == []
        m.leader_id = 1
        await trio.sleep_until(start + 901)

    await _run(m, body)
    assert [(round(t), rev) for t, rev in m.proposed] == [(900, 2)]


async def test_member_without_retention_never_compacts(autojump_clock):
    m = _Member("periodic", "0")

    async def body(m):
        m.put(3)
        await trio.sleep(5 * 3600)

    await _run(m, body)
    assert m.proposed == []


async def test_real_member_runs_the_task(tmp_path):
    # The task is in the member's nursery: with --auto-compaction-retention it is parsed at start (a bad
    # one refuses to start), without it the task ends at once.
    member = Member(parse(["--data-dir", str(tmp_path / "d"), "--auto-compaction-mode=revision",
                           "--auto-compaction-retention=1000"], {}), log=Logger(out=io.StringIO()))

    async def body(m):
        await m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
        assert m.store.compact_revision == -1

    await run_member(member, body)


def test_empty_retention_is_off(tmp_path):
    # What a config file without the two keys gives: etcd reads the retention as "0".
    config = attrs.evolve(parse(["--data-dir", str(tmp_path / "d")], {}),
                          auto_compaction_retention="", auto_compaction_mode="")
    member = Member(config, log=Logger(out=io.StringIO()))
    try:
        assert member._auto_compaction == ("", "0")
    finally:
        member.disk.close()


def test_bad_retention_refuses_to_start(tmp_path):
    with pytest.raises(BootstrapError, match='error parsing CompactionRetention: time: invalid duration "abc"'):
        Member(parse(["--data-dir", str(tmp_path / "d"), "--auto-compaction-retention=abc"], {}))
    assert not (tmp_path / "d").exists()
