"""The watch hub's shell (trietcd/server/watch.py) on virtual time: unsynced watchers catch up on
the 100 ms tick, victims are retried within 10 ms, progress ticks per stream."""

import random

import trio

from trietcd.mvcc import KVStore
from trietcd.server.watch import WatchHub


def drain(stream):
    out = []
    while (r := stream.take()) is not None:
        out.append(r)
    return out


async def wait_for(predicate, step_s=0.001):
    while not predicate():
        await trio.sleep(step_s)


async def test_unsynced_watchers_catch_up_on_the_sync_tick(nursery, autojump_clock):
    store = KVStore()
    hub = WatchHub(store)
    nursery.start_soon(hub.run)
    await trio.sleep(0.05)  # the loop is between ticks
    store.put(b"k", b"1")
    s = hub.new_stream()
    s.create(b"k", b"", 1)
    start = trio.current_time()
    await wait_for(lambda: hub.core.watcher_counts() == (1, 0, 0))
    assert 0 < trio.current_time() - start <= 0.1
    assert [len(r.events) for r in drain(s)] == [0, 1]  # created, then the catch-up


async def test_victims_are_retried_soon_after_the_stream_drains(nursery, autojump_clock):
    store = KVStore()
    hub = WatchHub(store)
    hub.core.capacity = 1
    nursery.start_soon(hub.run)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    drain(s)
    store.put(b"k", b"1")
    store.put(b"k", b"2")
    assert hub.core.watcher_counts() == (0, 0, 1)
    await trio.sleep(1)
    assert hub.core.watcher_counts() == (0, 0, 1)  # still full: still a victim
    assert len(drain(s)) == 1
    start = trio.current_time()
    await wait_for(lambda: hub.core.watcher_counts() == (1, 0, 0))
    assert trio.current_time() - start <= 0.011
    assert [r.events[0].kv.value for r in drain(s)] == [b"2"]


async def test_progress_ticks_per_stream_from_its_start(nursery, autojump_clock):
    store = KVStore()
    hub = WatchHub(store, progress_interval_s=1.0, rng=random.Random(3))
    nursery.start_soon(hub.run)
    streams = []
    for i in range(3):
        s = hub.new_stream()
        s.create(b"k", b"", 0, progress_notify=True)
        drain(s)
        ticks = []
        s.on_ready = lambda ticks=ticks: ticks.append(trio.current_time())
        streams.append((trio.current_time(), ticks))
        await trio.sleep(0.4)
    await trio.sleep(5)
    for started, ticks in streams:
        assert len(ticks) >= 4
        gaps = [b - a for a, b in zip([started, *ticks], ticks)]
        assert gaps[0] >= 1.0 and all(1.0 <= g <= 1.1 for g in gaps), gaps  # interval plus jitter
        assert max(gaps) - min(gaps) < 1e-6  # one period per stream, drawn at its start
