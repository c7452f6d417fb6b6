"""The Lock service on a running member, through the registry's handlers. What each case expects was read
from etcd 3.5.1 with the same requests over grpcio (tests/e2e/test_lock_election.py runs them on both)."""

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from proto.v3lockpb import v3lock_pb2
from tests.server.members import make_member, run_member
from trietcd.api import build_registry
from trietcd.wire.grpc_call import GrpcError, Status


@pytest.fixture
def clock(mock_clock):
    mock_clock.rate = 1
    return mock_clock


class Call:
    tls_common_name = None

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}


class Api:
    """The member's handlers by method name, with a few shortcuts."""

    def __init__(self, member) -> None:
        self.m = member
        self.registry = build_registry(member)

    def handler(self, service: str, method: str):
        return self.registry.lookup(f"/{service}/{method}").handler

    async def lock(self, name: bytes, lease: int = 0) -> v3lock_pb2.LockResponse:
        return await self.handler("v3lockpb.Lock", "Lock")(v3lock_pb2.LockRequest(name=name, lease=lease), Call())

    async def unlock(self, key: bytes) -> v3lock_pb2.UnlockResponse:
        return await self.handler("v3lockpb.Lock", "Unlock")(v3lock_pb2.UnlockRequest(key=key), Call())

    async def grant(self, lease_id: int, ttl: int = 30) -> None:
        await self.handler("etcdserverpb.Lease", "LeaseGrant")(rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl), None)

    async def revoke(self, lease_id: int) -> None:
        await self.handler("etcdserverpb.Lease", "LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=lease_id), None)

    async def delete(self, key: bytes) -> None:
        await self.handler("etcdserverpb.KV", "DeleteRange")(rpc_pb2.DeleteRangeRequest(key=key), Call())

    async def keys(self, prefix: bytes) -> list[bytes]:
        end = prefix[:-1] + bytes((prefix[-1] + 1,))
        resp = await self.handler("etcdserverpb.KV", "Range")(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, keys_only=True), Call())
        return [kv.key for kv in resp.kvs]

    async def wait_keys(self, prefix: bytes, count: int) -> list[bytes]:
        """The keys under prefix once there are `count` of them (waiters write theirs first)."""
        while len(keys := await self.keys(prefix)) != count:
            await trio.sleep(0.01)
        return keys


async def with_api(tmp_path, body) -> None:
    async def run(m):
        await body(Api(m))

    await run_member(make_member(tmp_path / "d"), run)


async def test_uncontended_lock_is_the_lease_key_and_relocking_answers_the_same(tmp_path, clock):
    async def body(api):
        await api.grant(100)
        first = await api.lock(b"mylock", 100)
        assert first.key == b"mylock/64"
        assert first.header.revision == 2 and first.header.member_id == api.m.id
        again = await api.lock(b"mylock", 100)  # the key exists: the same lease holds the lock
        assert (again.key, again.header.revision) == (b"mylock/64", 2)
        resp = await api.unlock(b"mylock/64")
        assert resp.header.revision == 3
        assert await api.keys(b"mylock/") == []

    await with_api(tmp_path, body)


async def test_lease_zero_grants_a_session_lease_of_60_s(tmp_path, clock):
    async def body(api):
        resp = await api.lock(b"")  # an empty name too: the key is "/<lease>"
        lease_id = int(resp.key.removeprefix(b"/"), 16)
        ttl = await api.handler("etcdserverpb.Lease", "LeaseTimeToLive")(
            rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True), None)
        assert (ttl.grantedTTL, list(ttl.keys)) == (60, [resp.key])

    await with_api(tmp_path, body)


async def test_errors_are_etcds_through_its_in_process_client(tmp_path, clock):
    async def body(api):
        with pytest.raises(GrpcError) as info:
            await api.lock(b"n", 12345)
        assert (info.value.code, info.value.message) == (Status.UNKNOWN, "etcdserver: requested lease not found")
        with pytest.raises(GrpcError) as info:
            await api.unlock(b"")
        assert (info.value.code, info.value.message) == (Status.UNKNOWN, "etcdserver: key is not provided")
        assert (await api.unlock(b"nothing")).header.revision == 1  # deleting nothing is no error

    await with_api(tmp_path, body)


async def test_waiters_get_the_lock_in_create_order(tmp_path, clock):
    async def body(api):
        for lease_id in (1, 2, 3):
            await api.grant(lease_id)
        await api.lock(b"L", 1)
        got = []

        async def wait_lock(lease_id):
            resp = await api.lock(b"L", lease_id)
            got.append((lease_id, resp.key, resp.header.revision))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_lock, 2)
            await api.wait_keys(b"L/", 2)
            nursery.start_soon(wait_lock, 3)
            await api.wait_keys(b"L/", 3)
            await api.unlock(b"L/1")  # revision 5: lease 2's turn
            while not got:
                await trio.sleep(0.01)
            assert got == [(2, b"L/2", 5)]
            await api.unlock(b"L/2")
        assert got == [(2, b"L/2", 5), (3, b"L/3", 6)]

    await with_api(tmp_path, body)


async def test_a_waiter_waits_for_every_key_created_before_its_own(tmp_path, clock):
    async def body(api):
        for lease_id in (1, 2, 3):
            await api.grant(lease_id)
        await api.lock(b"L", 1)
        outcome = {}

        async def wait_lock(lease_id):
            try:
                outcome[lease_id] = (await api.lock(b"L", lease_id)).key
            except GrpcError as exc:
                outcome[lease_id] = exc.message

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_lock, 2)
            await api.wait_keys(b"L/", 2)
            nursery.start_soon(wait_lock, 3)
            await api.wait_keys(b"L/", 3)
            await api.delete(b"L/2")  # the key lease 3 watches goes, but lease 1 still holds
            await trio.sleep(0.2)
            assert outcome == {}
            await api.revoke(1)  # the holder's lease is revoked: its key goes with it
        assert outcome == {2: "mutex: session is expired", 3: b"L/3"}

    await with_api(tmp_path, body)


async def test_a_cancelled_waiter_deletes_its_key(tmp_path, clock):
    async def body(api):
        for lease_id in (1, 2):
            await api.grant(lease_id)
        await api.lock(b"L", 1)
        with trio.move_on_after(0.5) as scope:
            await api.lock(b"L", 2)
        assert scope.cancelled_caught
        assert await api.keys(b"L/") == [b"L/1"]
        # The deletion came after the waiter's put: revisions 2 (holder), 3 (waiter), 4 (cleanup).
        assert api.m.store.current_revision == 4

    await with_api(tmp_path, body)


async def test_a_waiter_whose_key_went_meanwhile_reports_an_expired_session(tmp_path, clock):
    async def body(api):
        for lease_id in (1, 2):
            await api.grant(lease_id)
        await api.lock(b"L", 1)
        outcome = []

        async def wait_lock():
            try:
                await api.lock(b"L", 2)
            except GrpcError as exc:
                outcome.append((exc.code, exc.message))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_lock)
            await api.wait_keys(b"L/", 2)
            await api.delete(b"L/2")
            await api.unlock(b"L/1")
        assert outcome == [(Status.UNKNOWN, "mutex: session is expired")]

    await with_api(tmp_path, body)


async def test_a_cleanup_outlives_the_cancellation_for_one_request_timeout_at_most(autojump_clock):
    from trietcd.api.lock import Keys

    class Server:
        leases = watch_hub = None
        request_timeout_s = 7.0

    class StuckKV:
        deletes = 0

        async def DeleteRange(self, request, call):
            StuckKV.deletes += 1
            await trio.sleep_forever()  # a member that stopped answering proposals

    keys = Keys(Server(), StuckKV())
    with trio.CancelScope() as scope:
        scope.cancel()  # the call is already being cancelled
        start = trio.current_time()
        await keys.delete_shielded(b"L/1")
    assert (StuckKV.deletes, trio.current_time() - start) == (1, 7.0)
