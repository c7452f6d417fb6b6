"""A recorded etcd 3.5.1 run with the v2 API (data/make-v2-api-run.sh): set, replace, update,
compare-and-swap (hit and miss), unique POST, TTL keys and directories, refresh, expiry by SYNC,
deletes of keys and directories (plain, recursive, compare-and-delete, failing), a hidden key,
HTML-escaped and non-ASCII values, a quorum read, the update of a directory etcd refuses; then a
restart. Every `.snap` etcd wrote is rebuilt from the WAL entries.

Run 1 snapshots also count the v2 API's local reads (its auth check reads /2/enabled on every
request, outside raft), so their getsSuccess/getsFail are not compared; everything else is,
byte for byte, the TTLs too (apply times taken from the TTLs asked for and the SYNC times).
The restart's snapshots are compared whole: etcd's start-up reads (IsMetaStoreOnly, Recover)
then the replayed tail of the WAL, the new term's publish replacing the old attributes.
"""

from __future__ import annotations

import re

import pytest

from tests.v2store.replay import load_recording, replay
from trietcd.v2store import V2Store, decode_v2_request, is_v2_request

RUN_1_LAST_INDEX = 46  # the restart's first entry is 47 (term 3)
RESTART_NS = 1_795_511_801_000_000_000  # about when the restarted member replayed 43.. again
TTL_ASKED_S = {14: 1000, 21: 1, 28: 2000, 34: 1500, 36: 500, 40: 2}  # entry index -> ttl=


ENTRIES, SNAPS = load_recording("v2-api-run.json.gz")


def apply_times(entries) -> dict[int, int]:
    """When etcd applied each entry, as well as the WAL tells: a TTL write shortly after its
    proposal (expiration - ttl), a SYNC at its Time; other entries at the last known time."""
    times, now = {}, 0
    for entry in entries:
        if entry.Data and is_v2_request(entry.Data):
            req = decode_v2_request(entry.Data)
            if req.Method == "SYNC":
                now = req.Time + 1_000_000
            elif entry.Index in TTL_ASKED_S:
                now = req.Expiration - TTL_ASKED_S[entry.Index] * 1_000_000_000 + 1_000_000
        times[entry.Index] = now
    return times


def replay_timed(store: V2Store, entries, upto: int) -> V2Store:
    times = apply_times(ENTRIES)
    for entry in entries:
        replay(store, [entry], upto=upto, now_ns=times[entry.Index])
    return store


def without_gets(data: bytes) -> bytes:
    return re.sub(rb'"getsSuccess":\d+,"getsFail":\d+', b"", data)


def test_the_recording_has_both_runs():
    assert sorted(SNAPS) == [6, 12, 18, 24, 30, 36, 42, 48, 54, 60]
    methods = {decode_v2_request(e.Data).Method for e in ENTRIES if e.Data and is_v2_request(e.Data)}
    assert methods == {"PUT", "POST", "DELETE", "QGET", "SYNC"}


@pytest.mark.parametrize("index", [i for i in sorted(SNAPS) if i <= RUN_1_LAST_INDEX])
def test_run_1_snapshots_rebuilt(index):
    store = replay_timed(V2Store.new(), ENTRIES, upto=index)
    assert without_gets(store.to_json()) == without_gets(SNAPS[index])


@pytest.mark.parametrize("index", [i for i in sorted(SNAPS) if i > RUN_1_LAST_INDEX])
def test_restart_snapshots_rebuilt_exactly(index):
    store = V2Store.from_json(SNAPS[42])  # the newest snapshot at the restart
    assert not store.is_meta_store_only()  # the v2 API left keys under /1
    version, members, removed = store.recover()
    assert version == "3.5.0" and len(members) == 1 and removed == set()
    replay(store, [e for e in ENTRIES if e.Index > 42], upto=index, now_ns=RESTART_NS)
    assert store.to_json() == SNAPS[index]


def test_restart_publish_replaced_the_attributes():
    store = V2Store.from_json(SNAPS[48])
    publish = [e for e in store.history.in_order() if e.node.key.endswith("/attributes")]
    assert [e.action for e in publish] == ["set", "set"]
    assert publish[1].prev_node.value == publish[1].node.value
    assert publish[1].prev_node.modified_index == 2 and publish[1].node.created_index == 28


def test_snapshots_round_trip():
    for data in SNAPS.values():
        assert V2Store.from_json(data).to_json() == data


def test_expired_and_remaining_keys():
    store = V2Store.from_json(SNAPS[60])
    assert store.peek("/1/short") is None and store.peek("/1/dir4") is None  # expired by SYNC
    assert store.peek("/1/ttlkey").value == "t2" and store.peek("/1/ttlkey").is_permanent()
    assert store.peek("/1/html").value == '<a&b> "q" é ☃ \t'
    assert not store.has_ttl_keys()
    expired = [e for e in store.history.in_order() if e.action == "expire"]
    assert [e.node.key for e in expired] == ["/1/short", "/1/dir4"]
    assert expired[1].prev_node.ttl == -40  # applied on restart, 40 s after it expired
