"""Leases on a running member (real data dir, real nursery). Time is trio's MockClock running faster than
the wall clock, so the member's ticks, lease expiry and revoke loop all follow one clock."""

import pytest
import trio
import trio.lowlevel

from proto.etcdserverpb import raft_internal_pb2, rpc_pb2
from tests.server.members import make_member, run_member
from trietcd.backend import LEASE
from trietcd.lease import LeaseNotFoundError, decode_lease_row
from trietcd.wal.segment import read_wal

RATE = 10  # virtual seconds per real second


@pytest.fixture
def clock(mock_clock):
    mock_clock.rate = RATE
    return mock_clock


def put(key: bytes, value: bytes, lease: int = 0) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value, lease=lease)


async def grant(m, ttl: int, lease_id: int = 0) -> int:
    resp = await m.leases.grant(rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))
    return resp.ID


async def wait_until(pred, timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)


async def test_grant_picks_the_id_at_proposal_time(tmp_path, clock):
    data_dir = tmp_path / "d"

    async def body(m):
        resp = await m.leases.grant(rpc_pb2.LeaseGrantRequest(TTL=1))
        assert resp.TTL == 2  # the minimum with the default timing
        assert resp.ID > 0 and resp.ID >> 48 == (m.id & 0xFFFF) & 0x7FFF
        assert resp.header.revision == m.store.current_revision
        return resp.ID

    lease_id = await run_member(make_member(data_dir), body)
    entries = read_wal(str(data_dir / "member" / "wal")).entries
    grants = [irr for irr in (raft_internal_pb2.InternalRaftRequest.FromString(e.Data) for e in entries
                              if e.Data and e.Data[0] != 0x08) if irr.HasField("lease_grant")]
    assert [(g.lease_grant.ID, g.lease_grant.TTL) for g in grants] == [(lease_id, 1)]
    # The header ID is the next one of the same generator (the fixture's lease ...d06, header ...d07).
    assert grants[0].header.ID & 0x7FFFFFFFFFFFFFFF == lease_id + 1


async def test_expiry_deletes_the_keys_in_one_revision(tmp_path, clock):
    async def body(m):
        asked_at = trio.current_time()
        lease_id = await grant(m, 2)
        for k in (b"c", b"a", b"b"):
            await m.propose("put", put(k, b"v", lease_id))
        await m.propose("put", put(b"kept", b"v"))
        commits = []
        m.store.commit_listeners.append(lambda rev, ch: commits.append((rev, [(c.kv.key, c.deleted) for c in ch])))
        await wait_until(lambda: not m.lessor.exists(lease_id))
        # Not before the TTL; found within the revoke loop's 500 ms after it.
        assert 2.0 <= trio.current_time() - asked_at
        assert commits == [(6, [(b"a", True), (b"b", True), (b"c", True)])]
        assert [kv.key for kv in m.store.range(b"a", b"z").kvs] == [b"kept"]
        assert m.backend.get(LEASE, lease_id.to_bytes(8, "big")) is None

    await run_member(make_member(tmp_path / "d"), body)


async def test_keep_alive_extends(tmp_path, clock):
    async def body(m):
        lease_id = await grant(m, 3)
        await m.propose("put", put(b"k", b"v", lease_id))
        start = trio.current_time()
        while trio.current_time() - start < 10:
            assert await m.leases.renew(lease_id) == 3
            ttl = await m.leases.time_to_live(lease_id, True)
            # 3 s less the (virtual) time the two calls took
            assert (ttl.TTL in (2, 3), ttl.grantedTTL, list(ttl.keys)) == (True, 3, [b"k"])
            await trio.sleep(1)
        assert m.store.range(b"k").kvs
        stopped = trio.current_time()
        await wait_until(lambda: not m.store.range(b"k").kvs)
        assert trio.current_time() - stopped >= 2

    await run_member(make_member(tmp_path / "d"), body)


async def test_revoke_racing_keep_alive_never_reports_a_revoked_lease_renewed(tmp_path, clock):
    async def body(m):
        lease_id = await grant(m, 60)
        await m.propose("put", put(b"k", b"v", lease_id))
        results = []  # (header revision taken before, started after the revoke returned, TTL)
        revoked = trio.Event()

        async def keep_alive():
            while True:
                rev = m.header().revision
                after = revoked.is_set()
                try:
                    ttl = await m.leases.renew(lease_id)
                except LeaseNotFoundError:
                    ttl = 0
                results.append((rev, after, ttl))
                if after:
                    return
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(keep_alive)
            await trio.sleep(0.05)
            resp = await m.leases.revoke(lease_id)
            revoked.set()
        revoke_rev = resp.header.revision
        assert revoke_rev == 3  # the put was 2; the revoke deleted k at 3
        assert any(ttl == 60 for _, _, ttl in results)
        for rev, after, ttl in results:
            if after:
                assert ttl == 0
            if ttl:
                assert rev < revoke_rev

    await run_member(make_member(tmp_path / "d"), body)


async def test_renewing_an_expired_lease_waits_for_its_revoke(tmp_path, clock):
    async def body(m):
        lease_id = await grant(m, 2)
        await m.propose("put", put(b"k", b"v", lease_id))
        # Just past the expiry, before the revoke loop (every 0.5 s) has proposed the revoke: timed from the
        # lease's own expiry, not from the calls above, whose virtual duration grows on a loaded machine.
        await trio.sleep_until(m.lessor.leases[lease_id].expiry + 0.001)
        assert m.lessor.exists(lease_id)
        with pytest.raises(LeaseNotFoundError):
            await m.leases.renew(lease_id)
        assert not m.store.range(b"k").kvs

    await run_member(make_member(tmp_path / "d"), body)


async def test_restart_keeps_leases_and_keys_with_a_fresh_ttl(tmp_path, clock):
    data_dir = tmp_path / "d"

    async def before(m):
        lease_id = await grant(m, 20)
        short = await grant(m, 8)
        await m.propose("put", put(b"k", b"v", lease_id))
        await m.propose("put", put(b"s", b"v", short))
        await trio.sleep(5)
        assert (await m.leases.time_to_live(lease_id, False)).TTL in (13, 14)  # 15 s less the calls' time
        return lease_id, short

    lease_id, short = await run_member(make_member(data_dir), before)

    async def after(m):
        # etcd 3.5.1: every lease gets its full TTL again plus an election timeout (1 s) at promotion.
        ttl = await m.leases.time_to_live(lease_id, True)
        assert (ttl.TTL in (19, 20), ttl.grantedTTL, list(ttl.keys)) == (True, 20, [b"k"])
        assert 20 < m.lessor.leases[lease_id].remaining_s(m.leases.promoted_at) <= 21
        assert [lease.ID for lease in m.leases.leases().leases] == [short, lease_id]
        rows = {decode_lease_row(v).ID: decode_lease_row(v).TTL for _, v in m.backend.items(LEASE)}
        assert rows == {lease_id: 20, short: 8}
        await wait_until(lambda: not m.store.range(b"s").kvs)
        assert m.store.range(b"k").kvs

    await run_member(make_member(data_dir), after)


async def test_long_leases_are_checkpointed_and_a_keep_alive_resets_the_checkpoint(tmp_path, mock_clock):
    mock_clock.rate = 200

    async def body(m):
        lease_id = await grant(m, 900)
        await trio.sleep(301)
        await wait_until(lambda: m.lessor.leases[lease_id].remaining_ttl > 0)
        assert 590 <= m.lessor.leases[lease_id].remaining_ttl <= 600
        assert await m.leases.renew(lease_id) == 900
        assert m.lessor.leases[lease_id].remaining_ttl == 0
        assert (await m.leases.time_to_live(lease_id, False)).TTL == 899

    await run_member(make_member(tmp_path / "d"), body)


async def test_checkpointing_off_proposes_no_checkpoint(tmp_path, mock_clock):
    mock_clock.rate = 200

    async def body(m):
        lease_id = await grant(m, 900)
        await trio.sleep(310)
        assert m.lessor.leases[lease_id].remaining_ttl == 0

    await run_member(make_member(tmp_path / "d", "--experimental-enable-lease-checkpoint=false"), body)


class _SlowMember:
    """What the lease shell needs of a member, with proposals that take `delay_s` to apply."""

    def __init__(self, lessor, delay_s: float) -> None:
        from trietcd.config import parse
        from trietcd.log import logger

        self.config = parse(["--data-dir", "/nonexistent"], {})
        self.request_timeout_s = 7.0
        self.log = logger
        self.lessor = lessor
        self.delay_s = delay_s
        self.proposed = []
        self.in_flight = 0
        self.in_flight_max = 0

    async def propose(self, field, request):
        self.proposed.append((trio.current_time(), field, request.ID))
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            await trio.sleep(self.delay_s)
            self.lessor.revoke(request.ID)
        finally:
            self.in_flight -= 1


async def test_revoke_loop_rate_limits_and_retries_slow_revokes(autojump_clock):
    from trietcd.lease import Lessor
    from trietcd.server.lessor import MAX_PENDING_REVOKES, LeaseKeeper

    lessor = Lessor(min_ttl_s=2)
    lessor.promote(trio.current_time(), 0.0)
    for i in range(1, 2001):
        lessor.grant(i, 10, trio.current_time())
    slow = _SlowMember(lessor, delay_s=4.0)  # longer than the 3 s after which an expired lease is proposed again
    keeper = LeaseKeeper(slow, lessor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.run)
        await wait_until(lambda: not lessor.leases, timeout_s=3600)
        nursery.cancel_scope.cancel()
    assert slow.in_flight_max == MAX_PENDING_REVOKES
    first = {}
    for at, field, lease_id in slow.proposed:
        assert field == "lease_revoke"
        first.setdefault(lease_id, at)
    assert sorted(first) == list(range(1, 2001))
    # No more than 500 revokes are found per 500 ms round, whatever the proposals' pace.
    per_round = {}
    for at in first.values():
        per_round[round(at * 2)] = per_round.get(round(at * 2), 0) + 1
    assert max(per_round.values()) <= 500


async def test_watchers_see_an_expiry_as_deletes_at_one_revision(tmp_path, clock):
    async def body(m):
        stream = m.watch_hub.new_stream()
        stream.create(b"w/", b"w0", 0)
        lease_id = await grant(m, 2)
        for k in (b"w/2", b"w/1", b"w/3"):
            await m.propose("put", put(k, b"v", lease_id))
        await wait_until(lambda: not m.lessor.exists(lease_id))
        responses = []

        def deleted():
            responses.extend(iter(stream.take, None))
            return any(e.deleted for r in responses for e in r.events)

        await wait_until(deleted)
        with_deletes = [r for r in responses if any(e.deleted for e in r.events)]
        # One response at the revoke's revision holds the three deletes, in key order.
        assert [(r.revision, [(e.kv.key, e.kv.mod_revision, e.deleted) for e in r.events]) for r in with_deletes] \
            == [(5, [(b"w/1", 5, True), (b"w/2", 5, True), (b"w/3", 5, True)])]
        m.watch_hub.close_stream(stream)

    await run_member(make_member(tmp_path / "d"), body)


async def test_persisted_checkpoints_keep_the_remaining_ttl_across_a_restart(tmp_path, mock_clock):
    # etcd 3.5.2's --experimental-enable-lease-checkpoint-persist: the checkpoint writes RemainingTTL into the
    # lease row, and a restart starts the lease from it instead of its full TTL.
    mock_clock.rate = 200
    data_dir = tmp_path / "d"
    flags = ("--experimental-enable-lease-checkpoint-persist",)

    async def before(m):
        lease_id = await grant(m, 900)
        await trio.sleep(301)
        await wait_until(lambda: m.lessor.leases[lease_id].remaining_ttl > 0)
        return lease_id, m.lessor.leases[lease_id].remaining_ttl

    lease_id, remaining = await run_member(make_member(data_dir, *flags), before)
    assert 590 <= remaining <= 600

    async def after(m):
        rows = {decode_lease_row(v).ID: decode_lease_row(v) for _, v in m.backend.items(LEASE)}
        assert (rows[lease_id].TTL, rows[lease_id].RemainingTTL) == (900, remaining)
        ttl = await m.leases.time_to_live(lease_id, False)
        assert remaining - 5 <= ttl.TTL <= remaining + 1 and ttl.grantedTTL == 900

    await run_member(make_member(data_dir, *flags), after)

    # Without the flag (etcd 3.5.1's rows) the same restart gives the full TTL again.
    data_dir2 = tmp_path / "d2"
    lease_id, remaining = await run_member(make_member(data_dir2), before)

    async def after_without(m):
        assert decode_lease_row(next(v for _, v in m.backend.items(LEASE))).RemainingTTL == 0
        assert (await m.leases.time_to_live(lease_id, False)).TTL >= 899

    await run_member(make_member(data_dir2), after_without)
