"""The Election service on a running member, through the registry's handlers. What each case expects was
read from etcd 3.5.1 with the same requests over grpcio (tests/e2e/test_lock_election.py runs them on
both)."""

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from proto.v3electionpb import v3election_pb2 as epb
from tests.api.test_lock import Api, Call, with_api
from trietcd.wire.grpc_call import GrpcError, Status

EL = "v3electionpb.Election"


@pytest.fixture
def clock(mock_clock):
    mock_clock.rate = 1
    return mock_clock


class StreamCall(Call):
    def __init__(self) -> None:
        super().__init__()
        self.sent = []
        self.changed = trio.Event()

    async def send(self, message) -> None:
        self.sent.append(message)
        self.changed.set()
        self.changed = trio.Event()


async def campaign(api: Api, name: bytes, lease: int, value: bytes) -> epb.CampaignResponse:
    return await api.handler(EL, "Campaign")(epb.CampaignRequest(name=name, lease=lease, value=value), Call())


async def proclaim(api: Api, leader: epb.LeaderKey, value: bytes) -> epb.ProclaimResponse:
    return await api.handler(EL, "Proclaim")(epb.ProclaimRequest(leader=leader, value=value), Call())


async def resign(api: Api, leader: epb.LeaderKey) -> epb.ResignResponse:
    return await api.handler(EL, "Resign")(epb.ResignRequest(leader=leader), Call())


async def leader(api: Api, name: bytes) -> epb.LeaderResponse:
    return await api.handler(EL, "Leader")(epb.LeaderRequest(name=name), Call())


async def failure(call) -> tuple[Status, str]:
    with pytest.raises(GrpcError) as info:
        await call
    return info.value.code, info.value.message


async def test_campaign_proclaim_resign(tmp_path, clock):
    async def body(api):
        await api.grant(100)
        assert await failure(leader(api, b"e")) == (Status.UNKNOWN, "election: no leader")
        won = await campaign(api, b"e", 100, b"v1")
        assert won.header.revision == 2
        assert won.leader == epb.LeaderKey(name=b"e", key=b"e/64", rev=2, lease=100)
        # The same lease again, another value: the value changes, the answer is the first txn's.
        again = await campaign(api, b"e", 100, b"v2")
        assert (again.header.revision, again.leader) == (2, won.leader)
        now = await leader(api, b"e")
        assert (now.header.revision, now.kv.key, now.kv.value, now.kv.version, now.kv.lease) == (3, b"e/64", b"v2", 2, 100)
        assert (await proclaim(api, won.leader, b"v3")).header.revision == 4
        stale = epb.LeaderKey(name=b"e", key=b"e/64", rev=1, lease=100)
        assert await failure(proclaim(api, stale, b"x")) == (Status.UNKNOWN, "election: not leader")
        assert (await resign(api, stale)).header.revision == 4  # not the leader's revision: nothing happens
        assert (await leader(api, b"e")).kv.value == b"v3"
        assert (await resign(api, won.leader)).header.revision == 5
        assert await failure(leader(api, b"e")) == (Status.UNKNOWN, "election: no leader")

    await with_api(tmp_path, body)


async def test_missing_leader_and_unknown_lease(tmp_path, clock):
    async def body(api):
        missing = (Status.UNKNOWN, '"leader" field must be provided')
        assert await failure(api.handler(EL, "Proclaim")(epb.ProclaimRequest(value=b"x"), Call())) == missing
        assert await failure(api.handler(EL, "Resign")(epb.ResignRequest(), Call())) == missing
        assert await failure(campaign(api, b"e", 999, b"v")) == (Status.UNKNOWN, "etcdserver: requested lease not found")
        # Proclaim with lease 0 grants a session lease, then finds it is not the leader.
        assert await failure(proclaim(api, epb.LeaderKey(name=b"e", key=b"e/1", rev=5), b"x")) == (
            Status.UNKNOWN, "election: not leader")
        leases = await api.handler("etcdserverpb.Lease", "LeaseLeases")(rpc_pb2.LeaseLeasesRequest(), None)
        assert len(leases.leases) == 1

    await with_api(tmp_path, body)


async def test_a_candidate_waits_for_the_leader_and_a_cancelled_one_resigns(tmp_path, clock):
    async def body(api):
        for lease_id in (1, 2, 3):
            await api.grant(lease_id)
        first = await campaign(api, b"e", 1, b"a")
        with trio.move_on_after(0.3):
            await campaign(api, b"e", 3, b"c")
        assert await api.keys(b"e/") == [b"e/1"]  # the cancelled candidate took its key back
        won = []

        async def second():
            won.append(await campaign(api, b"e", 2, b"b"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await api.wait_keys(b"e/", 2)
            assert won == []
            await resign(api, first.leader)
        # Revisions: 2 the leader, 3 and 4 the cancelled candidate's put and its deletion, 5 the second
        # candidate, 6 the resignation. The answer's header is the campaign's own write, not the resignation.
        assert (won[0].header.revision, won[0].leader.key, won[0].leader.rev) == (5, b"e/2", 5)
        assert (await leader(api, b"e")).kv.value == b"b"

    await with_api(tmp_path, body)


async def test_observe_follows_the_leader(tmp_path, clock):
    async def body(api):
        for lease_id in (300, 301):
            await api.grant(lease_id)
        call = StreamCall()

        async def until(count):
            while len(call.sent) < count:
                await call.changed.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.handler(EL, "Observe"), epb.LeaderRequest(name=b"E"), call)
            await trio.sleep(0.1)
            await api.handler("etcdserverpb.KV", "Put")(rpc_pb2.PutRequest(key=b"E0", value=b"z"), Call())  # rev 2
            first = await campaign(api, b"E", 300, b"a")  # rev 3
            await until(1)
            await proclaim(api, first.leader, b"b")  # rev 4
            await until(2)
            nursery.start_soon(campaign, api, b"E", 301, b"c")  # rev 5, waits
            await api.wait_keys(b"E/", 2)
            await resign(api, first.leader)  # rev 6: 301 leads
            await until(3)
            await api.revoke(301)  # rev 7: nobody leads
            await api.handler("etcdserverpb.KV", "Put")(rpc_pb2.PutRequest(key=b"E/zz", value=b"q"), Call())  # 8
            await until(4)
            nursery.cancel_scope.cancel()
        seen = [(r.header.revision, r.kv.key, r.kv.create_revision, r.kv.mod_revision, r.kv.value, r.kv.lease)
                for r in call.sent]
        assert seen == [
            (3, b"E/12c", 3, 3, b"a", 300),
            (4, b"E/12c", 3, 4, b"b", 300),
            (6, b"E/12d", 5, 5, b"c", 301),
            (8, b"E/zz", 8, 8, b"q", 0),
        ]
        assert all(r.header.member_id == api.m.id for r in call.sent)

    await with_api(tmp_path, body)
