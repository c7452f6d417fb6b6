"""aetcd (asyncio, gRPC) through its public API, against trietcd and etcd 3.5.1.

The tests are plain functions that run their asyncio body with asyncio.run (the suite's own async tests run
on trio)."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.clients.isolation import load

aetcd = load("aetcd", globals(), isolated=True)

TIMEOUT_S = 10


@pytest.fixture
def run(server):
    """run(body): awaits body(client) with a client of `server`, in a fresh asyncio loop."""
    host, port = server.endpoint.rsplit(":", 1)

    def run(body):
        async def main():
            async with aetcd.Client(host=host, port=int(port), timeout=TIMEOUT_S) as client:
                return await asyncio.wait_for(body(client), 3 * TIMEOUT_S)

        return asyncio.run(main())

    return run


def test_status_and_members(run, server):
    async def body(client):
        status = await client.status()
        assert status.version == "3.5.1"
        [member] = [m async for m in client.members()]
        assert member.id == status.leader.id != 0
        assert member.name == "node1"
        assert list(member.client_urls) == [server.client_url]
        assert list(member.peer_urls) == [server.peer_url]

    run(body)


def test_put_get_range_delete(run, prefix):
    async def body(client):
        put = await client.put(prefix + b"a", b"1")
        assert put.header.revision > 0
        await client.put(prefix + b"b", b"2")
        await client.put(prefix + b"c", b"3")
        got = await client.get(prefix + b"a")
        assert (got.key, got.value, got.version) == (prefix + b"a", b"1", 1)
        assert got.create_revision == got.mod_revision == put.header.revision
        assert got.header.revision >= put.header.revision
        assert await client.get(prefix + b"missing") is None

        put = await client.put(prefix + b"a", b"11", prev_kv=True)
        assert put.prev_kv.value == b"1"

        everything = await client.get_prefix(prefix)
        assert len(everything) == 3 and [kv.value for kv in everything] == [b"11", b"2", b"3"]
        descending = await client.get_prefix(prefix, sort_order="descend", sort_target="key")
        assert [kv.key for kv in descending] == [prefix + b"c", prefix + b"b", prefix + b"a"]
        keys_only = await client.get_prefix(prefix, keys_only=True)
        assert [kv.value for kv in keys_only] == [b"", b"", b""]
        ranged = await client.get_range(prefix + b"a", prefix + b"c")
        assert [kv.key for kv in ranged] == [prefix + b"a", prefix + b"b"]
        assert not await client.get_prefix(prefix + b"none/")

        assert await client.replace(prefix + b"c", b"3", b"33") is True
        assert await client.replace(prefix + b"c", b"3", b"333") is False

        deleted = await client.delete(prefix + b"a", prev_kv=True)
        assert deleted.deleted == 1 and deleted.prev_kv.value == b"11"
        assert await client.delete(prefix + b"a") is None
        deleted = await client.delete_range(prefix + b"b", prefix + b"d", prev_kv=True)
        assert deleted.deleted == 2 and [kv.value for kv in deleted] == [b"2", b"33"]
        assert not await client.delete_prefix(prefix)

    run(body)


def test_transaction(run, prefix):
    async def body(client):
        key = prefix + b"k"
        await client.put(key, b"old")
        t = client.transactions
        succeeded, responses = await client.transaction(
            compare=[t.value(key) == b"old", t.version(key) > 0, t.create(key) != 0, t.mod(key) < 1 << 40],
            success=[t.put(key, b"new", prev_kv=True), t.get(key)],
            failure=[t.delete(key)],
        )
        assert succeeded is True
        put, get = responses
        assert put.response_put.prev_kv.value == b"old"
        [(value, meta)] = get
        assert value == b"new" and meta.version == 2

        succeeded, responses = await client.transaction(
            compare=[t.value(key) == b"old"], success=[t.put(key, b"newer")], failure=[t.delete(key, prev_kv=True)],
        )
        assert succeeded is False
        assert responses[0].response_delete_range.prev_kvs[0].value == b"new"
        assert await client.get(key) is None

    run(body)


def test_watch(run, prefix):
    async def body(client):
        before = await client.put(prefix + b"before", b"0")
        revision = before.header.revision
        watch = await client.watch_prefix(prefix, start_revision=revision + 1, prev_kv=True)
        await client.put(prefix + b"x", b"1")
        await client.delete(prefix + b"x")
        events = []
        async for event in watch:
            events.append(event)
            if len(events) == 2:
                break
        await watch.cancel()
        put, delete = events
        assert (put.kind, put.kv.key, put.kv.value, put.kv.mod_revision) == ("PUT", prefix + b"x", b"1", revision + 1)
        assert (delete.kind, delete.kv.mod_revision, delete.prev_kv.value) == ("DELETE", revision + 2, b"1")

        # From history, filtered to deletions.
        event = await client.watch_once(
            prefix + b"x", timeout=TIMEOUT_S, start_revision=revision, kind=aetcd.EventKind.DELETE,
        )
        assert (event.kind, event.kv.mod_revision) == ("DELETE", revision + 2)
        with pytest.raises(aetcd.WatchTimeoutError):
            await client.watch_once(prefix + b"nothing", timeout=0.5)

    run(body)


def test_watch_of_a_compacted_revision_fails(run, prefix):
    async def body(client):
        await client.put(prefix + b"k", b"1")
        revision = (await client.put(prefix + b"k", b"2")).header.revision
        await client.compact(revision)
        watch = await client.watch(prefix + b"k", start_revision=revision - 1)
        with pytest.raises(aetcd.RevisionCompactedError) as raised:
            async for _ in watch:
                pass
        assert raised.value.compacted_revision == revision

    run(body)


def test_lease(run, prefix):
    async def body(client):
        lease = await client.lease(60)
        assert lease.id > 0 and lease.ttl == 60
        assert await lease.granted_ttl() == 60
        assert 0 < await lease.remaining_ttl() <= 60
        await client.put(prefix + b"a", b"1", lease=lease)
        await client.put(prefix + b"b", b"2", lease=lease.id)
        assert sorted(await lease.keys()) == [prefix + b"a", prefix + b"b"]
        assert (await client.get(prefix + b"a")).lease == lease.id
        refreshed = await lease.refresh()
        assert (refreshed.ID, refreshed.TTL) == (lease.id, 60)
        await lease.revoke()
        assert not await client.get_prefix(prefix)
        assert await lease.remaining_ttl() == -1
        with pytest.raises(aetcd.ClientError, match="^etcdserver: requested lease not found$"):
            await client.put(prefix + b"c", b"3", lease=lease)
        with pytest.raises(aetcd.DuplicateLeaseError):
            other = await client.lease(60)
            await client.lease(60, lease_id=other.id)

    run(body)


def test_lock(run, prefix):
    async def body(client):
        key = prefix + b"lock"
        first = client.lock(key, ttl=60)
        second = client.lock(key, ttl=60)
        async with first:
            assert await first.is_acquired()
            assert await second.acquire(timeout=0.5) is False
            refreshed = await first.refresh()
            assert refreshed.TTL == 60
        assert not await first.is_acquired()
        assert await second.acquire(timeout=TIMEOUT_S) is True
        assert await second.is_acquired()

        # A waiting acquire returns once the holder releases (it watches for the key's deletion).
        third = client.lock(key, ttl=60)
        waiting = asyncio.create_task(third.acquire(timeout=TIMEOUT_S))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert await second.release() is True
        assert await waiting is True
        assert await third.release() is True

    run(body)


def test_auth(auth_server):
    host, port = auth_server.endpoint.rsplit(":", 1)

    async def body():
        async with aetcd.Client(host=host, port=int(port), timeout=TIMEOUT_S, username="alice", password="pw") as alice:
            await alice.put(b"/a/k", b"v")
            assert (await alice.get(b"/a/k")).value == b"v"
            with pytest.raises(aetcd.ClientError, match="^etcdserver: permission denied$"):
                await alice.put(b"/b/k", b"v")
            with pytest.raises(aetcd.ClientError, match="^etcdserver: permission denied$"):
                await alice.get_prefix(b"/")
        with pytest.raises(aetcd.InvalidArgumentError, match="authentication failed, invalid user ID or password"):
            async with aetcd.Client(host=host, port=int(port), timeout=TIMEOUT_S, username="alice", password="x"):
                pass
        async with aetcd.Client(host=host, port=int(port), timeout=TIMEOUT_S) as anonymous:
            with pytest.raises(aetcd.InvalidArgumentError, match="^etcdserver: user name is empty$"):
                await anonymous.get(b"/a/k")

    asyncio.run(asyncio.wait_for(body(), 3 * TIMEOUT_S))
