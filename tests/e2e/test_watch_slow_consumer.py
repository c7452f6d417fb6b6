"""A watch client that stops reading must not stall writers or other watchers, nor make the server hold
what it cannot send: 100 watchers on one connection that never reads, 2000 puts of 1 KiB to their key
(200k undeliverable events: a server that queued them grows by 50 MiB or more; etcd and trietcd by about 10). Run against etcd 3.5.1 too, to show the test asks what etcd does.

Put latency under a stalled watcher is measured, not asserted: `python -m benchmarks.slow_watcher`."""

from __future__ import annotations

import os
import queue
import threading

import pytest

from benchmarks.slow_watcher import StalledWatch, rss_bytes
from tests.e2e import workload
from tests.e2e.workload import impl_param, kill_leftover_servers  # noqa: F401

grpc = pytest.importorskip("grpc")

from proto.etcdserverpb import rpc_pb2  # noqa: E402

WATCHERS = 100
PUTS = 2000
VALUE = os.urandom(1024)
RSS_GROWTH_MAX = 32 * 2**20


def _watch_stub(channel):
    return channel.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=rpc_pb2.WatchRequest.SerializeToString,
                                 response_deserializer=rpc_pb2.WatchResponse.FromString)


def _live_watcher(channel, key: bytes, events: queue.Queue, created: threading.Event):
    requests = queue.Queue()
    requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)))
    responses = _watch_stub(channel)(iter(requests.get, None), timeout=120)

    def read():
        try:
            for resp in responses:
                if resp.created:
                    created.set()
                for ev in resp.events:
                    events.put(ev.kv.mod_revision)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return responses, requests, thread


@pytest.mark.parametrize("impl", [impl_param("trietcd"), impl_param("etcd")])
def test_a_stalled_watch_stream_holds_writers_and_memory_to_bounds(tmp_path, impl):
    server = workload.start(impl, tmp_path, tmp_path / "data")
    channel = grpc.insecure_channel(server.endpoint)
    put = channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=rpc_pb2.PutRequest.SerializeToString,
                              response_deserializer=rpc_pb2.PutResponse.FromString)
    for _ in range(100):  # warm up the server's caches before the baseline
        put(rpc_pb2.PutRequest(key=b"warm", value=VALUE), timeout=10)

    events: queue.Queue = queue.Queue()
    created = threading.Event()
    live_call, live_requests, live_thread = _live_watcher(channel, b"k", events, created)
    assert created.wait(10)
    before = rss_bytes(server.proc.pid)
    stalled = StalledWatch(server.endpoint, b"k", WATCHERS)
    try:
        revisions = [put(rpc_pb2.PutRequest(key=b"k", value=VALUE), timeout=30).header.revision for _ in range(PUTS)]
        growth = rss_bytes(server.proc.pid) - before
        # Every put was answered, and the reading watcher on another connection saw every one of them.
        seen = [events.get(timeout=30) for _ in range(PUTS)]
        assert seen == revisions
        assert growth < RSS_GROWTH_MAX, f"server grew by {growth / 2**20:.1f} MiB"
    finally:
        stalled.close()
        live_requests.put(None)
        live_call.cancel()
        live_thread.join(10)
        channel.close()
    # The server still answers, with the last write.
    out = server.etcdctl("get", "k", "-w", "json")
    assert f'"mod_revision":{revisions[-1]}' in out.stdout, out
