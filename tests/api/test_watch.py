"""The Watch service over the hub's shell on an in-memory store (no member): etcd's responses,
field by field, and the JSON gateway's streaming /v3/watch."""

import math

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2
from tests.server.watch_checker import FakeCall
from trietcd.api.gateway import gateway_app
from trietcd.api.watch import GRPC_OVERHEAD_BYTES, WatchService, fragments
from trietcd.mvcc import KVStore
from trietcd.server.watch import WatchHub
from trietcd.wire import Registry
from trietcd.wire.http1 import Request

HEADER = {"cluster_id": 11, "member_id": 22, "raft_term": 3}


def header(revision):
    return rpc_pb2.ResponseHeader(revision=revision, **HEADER)


def create(key=b"k", **kw):
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw))


def cancel(watch_id):
    return rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id))


PROGRESS = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())


class Env:
    def __init__(self, nursery, *, progress_interval_s=0.0, max_request_bytes=1572864):
        self.store = KVStore()
        self.hub = WatchHub(self.store, progress_interval_s=progress_interval_s)
        self.service = WatchService(self.hub, header, max_request_bytes=max_request_bytes)
        self.nursery = nursery
        nursery.start_soon(self.hub.run)

    def stream(self, capacity=math.inf) -> FakeCall:
        call = FakeCall(capacity)
        self.nursery.start_soon(self.service.Watch, call)
        return call


@pytest.fixture
async def env(nursery):
    return Env(nursery)


async def recv(call, n=1, timeout=5):
    out = []
    with trio.fail_after(timeout):
        for _ in range(n):
            out.append(await call.out.receive())
    return out


async def nothing_more(call, wait=1.0):
    with trio.move_on_after(wait):
        resp = await call.out.receive()
        raise AssertionError(f"unexpected {resp}")


async def test_create_event_and_header_revisions(env, autojump_clock):
    env.store.put(b"k", b"0")
    call = env.stream()
    call.request(create(prev_kv=True))
    [created] = await recv(call)
    assert created == rpc_pb2.WatchResponse(header=header(2), created=True)
    env.store.put(b"k", b"1")
    env.store.delete_range(b"k")
    put, delete = await recv(call, 2)
    assert put.header == header(3) and put.watch_id == 0
    assert put.events[0] == kv_pb2.Event(
        kv=kv_pb2.KeyValue(key=b"k", create_revision=2, mod_revision=3, version=2, value=b"1"),
        prev_kv=kv_pb2.KeyValue(key=b"k", create_revision=2, mod_revision=2, version=1, value=b"0"),
    )
    assert delete.events[0] == kv_pb2.Event(
        type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k", mod_revision=4),
        prev_kv=kv_pb2.KeyValue(key=b"k", create_revision=2, mod_revision=3, version=2, value=b"1"),
    )
    env.store.put(b"k", b"again")  # a create event: no prev_kv even when asked
    [again] = await recv(call)
    assert not again.events[0].HasField("prev_kv") and again.events[0].kv.version == 1


async def test_refused_creates_and_cancels_answer_like_etcd(env, autojump_clock):
    call = env.stream()
    for req in (create(watch_id=3), create(watch_id=3), create(b"b", range_end=b"a"), cancel(3), cancel(3), cancel(9),
                create()):
        call.request(req)
    out = await recv(call, 5)
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in out] == [
        (3, True, False, ""),
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (-1, True, True, "mvcc: watcher range is empty"),
        (3, False, True, ""),  # cancelling twice, or an unknown ID, answers nothing
        (0, True, False, ""),
    ]
    assert all(r.header == header(1) for r in out)
    await nothing_more(call)


async def test_compacted_start_revision(env, autojump_clock):
    for i in range(4):
        env.store.put(b"k", b"%d" % i)
    env.store.compact(4)
    call = env.stream()
    call.request(create(start_revision=2))
    created, compacted = await recv(call, 2)
    assert created.created and created.header.revision == 5
    assert compacted == rpc_pb2.WatchResponse(header=rpc_pb2.ResponseHeader(**HEADER), canceled=True,
                                              compact_revision=4)


async def test_history_then_live_and_prev_kv_only_where_not_compacted(env, autojump_clock):
    for i in range(4):
        env.store.put(b"k", b"%d" % i)  # 2..5
    env.store.compact(3)
    call = env.stream()
    call.request(create(start_revision=3, prev_kv=True))
    _created, history = await recv(call, 2)
    assert [e.kv.mod_revision for e in history.events] == [3, 4, 5]
    assert [e.HasField("prev_kv") for e in history.events] == [False, True, True]  # revision 2 is compacted
    assert history.header.revision == 5


async def test_progress_request_and_periodic_progress(nursery, autojump_clock):
    env = Env(nursery, progress_interval_s=10.0)
    env.store.put(b"k", b"v")
    call = env.stream()
    call.request(PROGRESS)
    call.request(create(progress_notify=True))
    call.request(create(b"other"))
    progress, _, _ = await recv(call, 3)
    assert progress == rpc_pb2.WatchResponse(header=header(2), watch_id=-1)
    start = trio.current_time()
    [notification] = await recv(call, timeout=20)
    assert notification == rpc_pb2.WatchResponse(header=header(2), watch_id=0)
    assert 10.0 <= trio.current_time() - start <= 11.0  # the interval plus at most a tenth of jitter
    env.store.put(b"k", b"v2")
    await recv(call)
    # The tick after an event is skipped; the next one notifies again.
    start = trio.current_time()
    [notification] = await recv(call, timeout=30)
    assert trio.current_time() - start >= 10.0 and notification.header.revision == 3


async def test_progress_notify_interval_has_etcd_minimum(nursery):
    assert WatchHub(KVStore(), progress_interval_s=0.01).progress_interval_s == 0.1
    assert WatchHub(KVStore()).progress_interval_s == 600.0


async def test_slow_reader_gets_everything_in_order_without_blocking_writes(env, autojump_clock):
    call = env.stream(capacity=0)  # nothing is read until later: every send waits
    call.request(create(b"k", range_end=b"l"))
    out = await recv(call)
    for i in range(600):  # the stream queue (128) fills, the watcher becomes a victim
        env.store.put(b"k%d" % (i % 7), b"%d" % i)
    assert env.hub.core.victims_made >= 1
    revs = []
    with trio.fail_after(30):
        while len(revs) < 600:
            [resp] = await recv(call)
            revs += [e.kv.mod_revision for e in resp.events]
    assert out[0].created and revs == list(range(2, 602))


async def test_half_closed_stream_keeps_watching_and_closing_it_removes_the_watchers(env, autojump_clock):
    call = env.stream()
    call.request(create())
    call.close_requests()
    await recv(call)
    env.store.put(b"k", b"v")
    [event] = await recv(call)
    assert event.events[0].kv.value == b"v"
    assert env.hub.core.watcher_counts() == (1, 0, 0)


async def test_stream_end_removes_its_watchers(autojump_clock):
    store = KVStore()
    hub = WatchHub(store)
    service = WatchService(hub, header, max_request_bytes=1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        call = FakeCall()
        scope = trio.CancelScope()
        nursery.start_soon(_run_in, scope, service.Watch, call)
        call.request(create())
        call.request(create(b"a", start_revision=1))
        await recv(call, 2)
        assert sum(hub.core.watcher_counts()) == 2
        scope.cancel()
        await trio.sleep(0.1)
        assert hub.core.watcher_counts() == (0, 0, 0) and not hub.core.streams
        nursery.cancel_scope.cancel()


async def _run_in(scope, fn, *args):
    with scope:
        await fn(*args)


def _big_response(n, value_bytes):
    events = [kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k%d" % i, mod_revision=9, value=b"x" * value_bytes))
              for i in range(n)]
    return rpc_pb2.WatchResponse(header=header(9), watch_id=4, events=events)


def test_fragments_like_etcd():
    msg = _big_response(10, 1000)
    assert fragments(msg, msg.ByteSize() + 1) == [msg]  # under the limit: as it is
    one = _big_response(1, 5000)
    assert fragments(one, 100) == [one]  # one event is never split
    parts = fragments(msg, 3500)
    assert [len(p.events) for p in parts] == [3, 3, 3, 1]
    assert [p.fragment for p in parts] == [True, True, True, False]
    assert all(p.ByteSize() < 3500 for p in parts)
    assert [e for p in parts for e in p.events] == list(msg.events)
    assert all(p.header == msg.header and p.watch_id == 4 for p in parts)
    # A fragment holds at least one event even when that alone is over the limit.
    assert [len(p.events) for p in fragments(msg, 500)] == [1] * 10


async def test_fragment_only_when_asked(nursery, autojump_clock):
    env = Env(nursery, max_request_bytes=3000 - GRPC_OVERHEAD_BYTES)
    call = env.stream()
    call.request(create(b"a", range_end=b"z", fragment=True))
    call.request(create(b"a", range_end=b"z"))
    await recv(call, 2)
    with env.store.write() as txn:
        for i in range(5):
            txn.put(b"k%d" % i, b"x" * 1000)
    out = await recv(call, 4)
    by_id = {0: [], 1: []}
    for r in out:
        by_id[r.watch_id].append(r)
    assert [(len(r.events), r.fragment) for r in by_id[0]] == [(2, True), (2, True), (1, False)]
    assert [(len(r.events), r.fragment) for r in by_id[1]] == [(5, False)]


# ---- the JSON gateway


async def test_gateway_watch_streams_result_lines(nursery, autojump_clock):
    env = Env(nursery)
    registry = Registry()
    registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["Watch"], env.service.handlers())
    app = gateway_app(registry)
    env.store.put(b"foo", b"bar")
    body = b'{"create_request":{"key":"Zm9v","start_revision":1,"prev_kv":true}} {"create_request":{"key":"Zm9v"}}'
    response = await app(Request("POST", "/v3/watch", (("Host", "x"),), body, "ipv4:127.0.0.1:1"))
    lines = []

    class Writer:
        def set_head(self, status, headers):
            raise AssertionError("no error expected")

        async def write(self, data):
            lines.append(data)

    scope = trio.CancelScope()
    nursery.start_soon(_run_in, scope, response.body.run, Writer())
    await trio.sleep(1)
    env.store.put(b"foo", b"baz")
    await trio.sleep(1)
    scope.cancel()
    h = '"header":{"cluster_id":"11","member_id":"22","revision":"%d","raft_term":"3"}'
    expected = [
        ('{"result":{' + h % 2 + ',"created":true}}\n').encode(),
        ('{"result":{' + h % 2 + ',"watch_id":"1","created":true}}\n').encode(),
        ('{"result":{' + h % 2 + ',"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2",'
         '"version":"1","value":"YmFy"}}]}}\n').encode(),
        ('{"result":{' + h % 3 + ',"watch_id":"1","events":[{"kv":{"key":"Zm9v","create_revision":"2",'
         '"mod_revision":"3","version":"2","value":"YmF6"}}]}}\n').encode(),
        ('{"result":{' + h % 3 + ',"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3",'
         '"version":"2","value":"YmF6"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2",'
         '"version":"1","value":"YmFy"}}]}}\n').encode(),
    ]
    # Each watcher's responses come in order; how the two watchers' responses interleave
    # depends on when the catch-up tick runs (as in etcd, whose catch-up has its own 100 ms tick).
    def of_watcher(lines, second):
        return [line for line in lines if (b'"watch_id":"1"' in line) == second]

    assert lines[0] == expected[0]
    assert of_watcher(lines, False) == of_watcher(expected, False)
    assert of_watcher(lines, True) == of_watcher(expected, True)
    await trio.sleep(0.1)
    assert env.hub.core.watcher_counts() == (0, 0, 0)
