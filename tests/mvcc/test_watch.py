"""The watch hub's core (trietcd/mvcc/watch.py) on an in-memory store: synced and unsynced
watchers, batches, compaction, victims, filters, IDs, progress; plus a seeded model test."""

import random

import pytest

from tests.mvcc.fake_backend import FakeBackend
from trietcd.mvcc import KVStore
from trietcd.mvcc.watch import (
    ERR_DUPLICATE_WATCH_ID,
    ERR_EMPTY_WATCHER_RANGE,
    ERR_TOO_MANY_WATCHERS,
    FILTER_NODELETE,
    FILTER_NOPUT,
    INVALID_WATCH_ID,
    WATCH_BATCH_MAX_REVS,
    WatchableStore,
)


def drain(stream):
    out = []
    while (r := stream.take()) is not None:
        out.append(r)
    return out


def events_of(responses, watch_id=None):
    """[(mod_revision, key, value or None for a delete)] of the responses' events."""
    return [
        (e.kv.mod_revision, e.kv.key, None if e.deleted else e.kv.value)
        for r in responses
        if watch_id is None or r.watch_id == watch_id
        for e in r.events
    ]


def make(durable=False, **kw):
    store = KVStore(backend=FakeBackend()) if durable else KVStore()
    return store, WatchableStore(store, **kw)


def test_synced_watcher_gets_each_revision_at_commit_with_its_header_revision():
    store, hub = make()
    s = hub.new_stream()
    created = s.create(b"k", b"", 0)
    assert (created.watch_id, created.created, created.revision) == (0, True, 1)
    store.put(b"k", b"1")
    store.put(b"other", b"x")
    with store.write() as txn:  # one revision, two changes of the watched key range
        txn.put(b"k", b"2")
        txn.delete_range(b"k")
    out = drain(s)
    assert out[0] == created
    assert [(r.watch_id, r.revision, len(r.events)) for r in out[1:]] == [(0, 2, 1), (0, 4, 2)]
    assert events_of(out) == [(2, b"k", b"1"), (4, b"k", b"2"), (4, b"k", None)]
    put = out[1].events[0]
    assert put.is_create and (put.kv.create_revision, put.kv.version) == (2, 1)
    assert not out[2].events[0].is_create


@pytest.mark.parametrize(
    "key, end, seen",
    [
        (b"b", b"", [b"b"]),
        (b"b", b"c", [b"b", b"b1"]),
        (b"b", b"\x00", [b"b", b"b1", b"c", b"d"]),  # from key on
        (b"", b"\x00", [b"a", b"b", b"b1", b"c", b"d"]),  # every key
    ],
)
def test_key_ranges(key, end, seen):
    store, hub = make()
    s = hub.new_stream()
    s.create(key, end, 0)
    for k in (b"a", b"b", b"b1", b"c", b"d"):
        store.put(k, b"v")
    assert [k for _, k, _ in events_of(drain(s))] == seen


def test_unsynced_watcher_catches_up_then_follows():
    store, hub = make()
    for i in range(5):
        store.put(b"k", b"%d" % i)  # revisions 2..6
    s = hub.new_stream()
    s.create(b"k", b"", 3)
    assert hub.watcher_counts() == (0, 1, 0)
    drain(s)
    assert hub.sync_watchers() == 0
    out = drain(s)
    assert [r.revision for r in out] == [6]  # one response, header = revision at the sync
    assert [rev for rev, _, _ in events_of(out)] == [3, 4, 5, 6]
    assert hub.watcher_counts() == (1, 0, 0)
    store.put(b"k", b"x")
    assert events_of(drain(s)) == [(7, b"k", b"x")]


def test_future_start_revision_waits_for_it():
    store, hub = make()
    s = hub.new_stream()
    s.create(b"k", b"", 4)
    drain(s)
    for i in range(4):
        store.put(b"k", b"%d" % i)  # 2..5
    assert [rev for rev, _, _ in events_of(drain(s))] == [4, 5]


def test_catch_up_sends_at_most_the_batch_limit_of_revisions_per_response():
    store, hub = make()
    for i in range(WATCH_BATCH_MAX_REVS + 10):
        with store.write() as txn:
            txn.put(b"k", b"%d" % i)
            txn.put(b"k2", b"%d" % i)
    s = hub.new_stream()
    s.create(b"k", b"l", 2)
    drain(s)
    assert hub.sync_watchers() == 1
    first = drain(s)
    assert len(first) == 1 and len(first[0].events) == 2 * WATCH_BATCH_MAX_REVS
    assert hub.sync_watchers() == 0
    second = drain(s)
    revs = [rev for rev, _, _ in events_of(first + second)]
    assert revs == sorted(revs) and len(revs) == 2 * (WATCH_BATCH_MAX_REVS + 10)


def test_catch_up_reads_bounded_row_batches_of_whole_revisions():
    store, hub = make(sync_rows_max=5)
    for i in range(4):
        with store.write() as txn:  # three rows per revision
            for k in (b"a", b"b", b"c"):
                txn.put(k, b"%d" % i)
    with store.write() as txn:  # one revision of 8 rows: read whole though over the limit
        for i in range(8):
            txn.put(b"d%d" % i, b"x")
    s = hub.new_stream()
    s.create(b"a", b"\x00", 2)
    drain(s)
    responses = []
    passes = 0
    while hub.sync_watchers():
        passes += 1
        responses += drain(s)
    responses += drain(s)
    assert passes >= 3
    for r in responses:  # no revision split across responses
        revs = [e.kv.mod_revision for e in r.events]
        assert len([e for e in r.events if e.kv.mod_revision == revs[-1]]) in (3, 8)
    assert len(events_of(responses)) == 4 * 3 + 8
    assert hub.watcher_counts() == (1, 0, 0)


def test_compacted_start_revision_gets_the_compact_response_and_the_watcher_leaves():
    store, hub = make()
    for i in range(4):
        store.put(b"k", b"%d" % i)  # 2..5
    store.compact(4)
    s = hub.new_stream()
    s.create(b"k", b"", 3)
    s.create(b"k", b"", 4)  # the compacted revision itself is still readable
    drain(s)
    hub.sync_watchers()
    out = drain(s)
    compacted = [r for r in out if r.compact_revision]
    assert [(r.watch_id, r.compact_revision, r.canceled, r.revision, r.events) for r in compacted] == [
        (0, 4, True, 0, ())
    ]
    assert events_of(out, 1) == [(4, b"k", b"2"), (5, b"k", b"3")]
    assert hub.watcher_counts() == (1, 0, 0)
    assert s.watchers[0].compacted  # still on its stream, as in etcd, until cancelled
    store.put(b"k", b"later")
    assert events_of(drain(s)) == [(6, b"k", b"later")]


def test_negative_start_revision_is_below_any_compaction():
    store, hub = make()
    store.put(b"k", b"v")
    s = hub.new_stream()
    s.create(b"k", b"", -3)
    drain(s)
    hub.sync_watchers()
    assert [(r.compact_revision, r.canceled) for r in drain(s)] == [(-1, True)]  # etcd's answer too


def test_full_stream_makes_victims_without_blocking_and_they_catch_up_in_order():
    store, hub = make(capacity=2)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    drain(s)
    for i in range(10):
        store.put(b"k", b"%d" % i)  # 2..11; the stream takes two, then its watcher is a victim
    assert hub.watcher_counts() == (0, 0, 1)
    got = drain(s)
    while hub.watcher_counts() != (1, 0, 0):
        hub.move_victims()
        hub.sync_watchers()
        got += drain(s)
    store.put(b"k", b"last")
    got += drain(s)
    assert [rev for rev, _, _ in events_of(got)] == list(range(2, 13))
    victim_response = got[2]  # revisions 2 and 3 fitted; 4 waited as the victim's response
    assert victim_response.revision == 4  # the last revision the watcher has seen
    assert [e.kv.mod_revision for e in victim_response.events] == [4]


def test_victim_stays_a_victim_while_the_stream_is_full():
    store, hub = make(capacity=1)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    drain(s)
    store.put(b"k", b"1")
    store.put(b"k", b"2")
    assert hub.move_victims() == 0
    assert hub.watcher_counts() == (0, 0, 1)
    assert len(hub.victims) == 1
    assert events_of(drain(s)) == [(2, b"k", b"1")]
    assert hub.move_victims() == 1
    assert hub.watcher_counts() == (1, 0, 0)  # it had seen revision 3 already
    assert events_of(drain(s)) == [(3, b"k", b"2")]


def test_pending_bytes_limit_makes_victims_but_a_lone_response_always_fits():
    store, hub = make(max_pending_bytes=500)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    drain(s)
    store.put(b"k", b"x" * 1000)  # bigger than the limit, but the queue is empty
    store.put(b"k", b"y")
    assert s.data_count == 1 and hub.watcher_counts() == (0, 0, 1)


def test_filters():
    store, hub = make()
    s = hub.new_stream()
    s.create(b"k", b"", 0, filters=[FILTER_NOPUT])
    s.create(b"k", b"", 0, filters=[FILTER_NODELETE])
    s.create(b"k", b"", 0, filters=[FILTER_NOPUT, FILTER_NODELETE])
    drain(s)
    store.put(b"k", b"1")
    store.delete_range(b"k")
    out = drain(s)
    assert events_of(out, 0) == [(3, b"k", None)]
    assert events_of(out, 1) == [(2, b"k", b"1")]
    assert [r for r in out if r.watch_id == 2] == []


def test_watch_ids_auto_skip_used_ones_duplicates_and_empty_ranges_are_refused():
    _, hub = make()
    s = hub.new_stream()
    assert s.create(b"a", b"", 0, watch_id=1).watch_id == 1
    assert s.create(b"a", b"", 0).watch_id == 0
    assert s.create(b"a", b"", 0).watch_id == 2
    dup = s.create(b"a", b"", 0, watch_id=1)
    assert (dup.watch_id, dup.created, dup.canceled, dup.cancel_reason) == (
        INVALID_WATCH_ID, True, True, ERR_DUPLICATE_WATCH_ID)
    for end in (b"a", b"b"):
        bad = s.create(b"b", end, 0)
        assert (bad.watch_id, bad.canceled, bad.cancel_reason) == (INVALID_WATCH_ID, True, ERR_EMPTY_WATCHER_RANGE)
    assert s.create(b"a", b"", 0, watch_id=-5).watch_id == -5
    assert s.cancel(0)
    assert not s.cancel(0) and not s.cancel(42)
    assert s.create(b"a", b"", 0).watch_id == 3  # 0 is free again, but the numbering goes on
    other = hub.new_stream()
    assert other.create(b"a", b"", 0).watch_id == 0  # numbering is per stream


def test_watchers_per_stream_limit_refuses_creates_until_one_is_cancelled():
    _, hub = make(watchers_per_stream_max=2)
    s = hub.new_stream()
    assert [s.create(b"k", b"", 0).watch_id for _ in range(2)] == [0, 1]
    refused = s.create(b"k", b"", 0)
    assert (refused.watch_id, refused.canceled, refused.cancel_reason) == (-1, True, ERR_TOO_MANY_WATCHERS)
    assert hub.new_stream().create(b"k", b"", 0).watch_id == 0  # per stream
    s.cancel(0)
    assert s.create(b"k", b"", 0).watch_id == 2


def test_cancel_drops_queued_responses_and_answers_after_them():
    store, hub = make()
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    s.create(b"k", b"", 0)
    drain(s)
    store.put(b"k", b"1")
    s.cancel(0)
    out = drain(s)
    assert [(r.watch_id, bool(r.events), r.canceled) for r in out] == [(1, True, False), (0, False, True)]
    assert out[1].revision == 2
    store.put(b"k", b"2")
    assert [r.watch_id for r in drain(s)] == [1]
    assert hub.watcher_counts() == (1, 0, 0)


def test_cancel_of_a_victim_removes_it():
    store, hub = make(capacity=1)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    drain(s)
    store.put(b"k", b"1")
    store.put(b"k", b"2")
    assert hub.watcher_counts() == (0, 0, 1)
    s.cancel(0)
    assert hub.watcher_counts() == (0, 0, 0)
    hub.move_victims()
    assert [r.canceled for r in drain(s)] == [True]


def test_progress_notify_only_for_synced_watchers_and_not_after_events():
    store, hub = make()
    store.put(b"k", b"0")
    s = hub.new_stream()
    s.create(b"k", b"", 0, progress_notify=True)  # synced
    s.create(b"k", b"", 2, progress_notify=True)  # unsynced
    s.create(b"x", b"", 0)  # did not ask
    drain(s)
    hub.progress_tick()
    out = drain(s)
    assert [(r.watch_id, r.revision, r.events) for r in out] == [(0, 2, ())]
    store.put(b"k", b"1")
    drain(s)  # watcher 0 got an event: its next notification is skipped
    hub.progress_tick()
    assert drain(s) == []
    hub.sync_watchers()
    drain(s)  # watcher 1 caught up with events: skipped once too
    hub.progress_tick()
    assert [r.watch_id for r in drain(s)] == [0]
    hub.progress_tick()
    assert sorted(r.watch_id for r in drain(s)) == [0, 1]


def test_progress_request_waits_for_unsynced_watchers_and_follows_their_events():
    store, hub = make()
    for i in range(3):
        store.put(b"k", b"%d" % i)  # 2..4
    s = hub.new_stream()
    s.request_progress()  # no watchers: at once
    assert [(r.watch_id, r.revision) for r in drain(s)] == [(INVALID_WATCH_ID, 4)]
    s.create(b"k", b"", 2)
    s.request_progress()
    assert [r.created for r in drain(s)] == [True]  # waits: the watcher is unsynced
    hub.sync_watchers()
    out = drain(s)
    assert [(r.watch_id, len(r.events), r.revision) for r in out] == [(0, 3, 4), (INVALID_WATCH_ID, 0, 4)]


def test_more_unsynced_watchers_than_one_pass_takes():
    store, hub = make(watchers_per_sync_max=3)
    store.put(b"k", b"v")
    s = hub.new_stream()
    for _ in range(7):
        s.create(b"k", b"", 1)
    drain(s)
    assert hub.sync_watchers() == 4
    assert hub.sync_watchers() == 1
    assert hub.sync_watchers() == 0
    assert sorted(r.watch_id for r in drain(s)) == list(range(7))


def test_closed_stream_leaves_the_hub():
    store, hub = make(capacity=1)
    s = hub.new_stream()
    s.create(b"k", b"", 0)
    s.create(b"k", b"", 1)
    store.put(b"k", b"1")
    store.put(b"k", b"2")
    s.close()
    assert hub.watcher_counts() == (0, 0, 0) and not hub.streams
    store.put(b"k", b"3")
    hub.sync_watchers()
    hub.move_victims()
    assert s.take() is None


# ---- model test: random writes, compactions and watchers against a slow random consumer


def _history(store_log, start, key, end):
    """Expected events of a watcher from a log of (rev, [(key, value or None)])."""
    out = []
    for rev, changes in store_log:
        if rev < start:
            continue
        for k, v in changes:
            if (end is None and k == key) or (end is not None and key <= k and (not end or k < end)):
                out.append((rev, k, v))
    return out


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "backend"])
@pytest.mark.parametrize("seed", range(15))
def test_model_every_watcher_gets_exactly_its_history(seed, durable):
    rng = random.Random(seed)
    store, hub = make(durable, capacity=rng.choice([1, 2, 8, 128]), sync_rows_max=rng.choice([3, 50, 10_000]),
                      watchers_per_sync_max=rng.choice([2, 512]))
    keys = [b"a", b"b", b"ba", b"c"]
    log = []

    def on_commit(rev, changes):
        log.append((rev, [(c.kv.key, None if c.deleted else c.kv.value) for c in changes]))

    store.commit_listeners.append(on_commit)
    streams = [hub.new_stream() for _ in range(3)]
    watchers = []  # (stream, id, start, key, end)
    got: dict[tuple[int, int], list] = {}
    compacted_ids = set()
    compactions = set()
    for step in range(400):
        op = rng.random()
        if op < 0.45:
            with store.write() as txn:
                for k in rng.sample(keys, rng.randint(1, 3)):
                    if rng.random() < 0.75:
                        txn.put(k, b"%d" % step)
                    else:
                        txn.delete_range(k)
        elif op < 0.55:
            si = rng.randrange(len(streams))
            key, end = rng.choice([(b"b", None), (b"b", b"c"), (b"a", b""), (b"c", None)])
            cur = store.current_revision
            start = rng.choice([0, max(1, cur - rng.randint(0, 30)), cur + rng.randint(1, 5)])
            r = streams[si].create(key, end or (b"\x00" if end == b"" else b""), start)
            eff_start = start or cur + 1
            watchers.append((si, r.watch_id, eff_start, key, end))
        elif op < 0.58 and store.current_revision > 20:
            target = store.current_revision - rng.randint(0, 20)
            if target > store.compact_revision:
                store.compact(target).run()  # rows go at once (a durable store's steps)
                compactions.add(target)
        elif op < 0.75:
            hub.sync_watchers()
        elif op < 0.85:
            hub.move_victims()
        else:
            si = rng.randrange(len(streams))
            for _ in range(rng.randint(0, 4)):
                r = streams[si].take()
                if r is None:
                    break
                if r.compact_revision:
                    compacted_ids.add((si, r.watch_id))
                got.setdefault((si, r.watch_id), []).extend(events_of([r]))
    for _ in range(2000):  # let every watcher finish, the consumer now fast
        hub.move_victims()
        hub.sync_watchers()
        for si, s in enumerate(streams):
            while (r := s.take()) is not None:
                if r.compact_revision:
                    compacted_ids.add((si, r.watch_id))
                got.setdefault((si, r.watch_id), []).extend(events_of([r]))
        if hub.watcher_counts()[1:] == (0, 0):
            break
    assert hub.watcher_counts()[1:] == (0, 0)
    for si, wid, start, key, end in watchers:
        events = got.get((si, wid), [])
        expected = _history(log, start, key, end)
        check_history(events, expected, compactions, (si, wid) in compacted_ids)


def check_history(events, expected, compactions, compacted):
    """events is expected, except: a delete at a compaction's revision may be missing (the
    compaction removed its tombstone row; etcd reads the same rows), and a watcher that got the
    compacted response misses everything from some point on."""
    i = 0
    for e in expected:
        if i < len(events) and events[i] == e:
            i += 1
        elif e[2] is None and e[0] in compactions:
            continue
        elif compacted:
            break
        else:
            raise AssertionError(f"missing {e}; got {events[i:i + 3]}")
    assert i == len(events), f"unexpected {events[i:i + 3]}"
