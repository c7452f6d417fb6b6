"""KVStore semantics, case by case. The expectations match etcd 3.5.1 (checked
with tests/mvcc/etcd_oracle.py, which replays random workloads on a real etcd)."""

import pytest

from trietcd.mvcc import (
    CompactedError,
    FutureRevError,
    KeyValue,
    KVStore,
    MemoryKeyBucket,
    Revision,
)


def kv(key, value, create, mod, version, lease=0):
    return KeyValue(key=key, value=value, create_revision=create, mod_revision=mod, version=version, lease=lease)


def test_fresh_store_is_at_revision_1():
    s = KVStore()
    assert s.current_revision == 1
    assert s.compact_revision == -1
    r = s.range(b"foo")
    assert (r.kvs, r.rev, r.count) == ([], 1, 0)


def test_put_revisions_and_versions():
    s = KVStore()
    assert s.put(b"foo", b"bar") == (2, None)
    assert s.put(b"foo", b"bar2", lease=7) == (3, kv(b"foo", b"bar", 2, 2, 1))
    assert s.range(b"foo").kvs == [kv(b"foo", b"bar2", 2, 3, 2, lease=7)]
    assert s.current_revision == 3


def test_version_restarts_after_delete_and_recreate():
    s = KVStore()
    s.put(b"k", b"1")  # 2
    s.put(b"k", b"2")  # 3
    assert s.delete_range(b"k") == (4, [kv(b"k", b"2", 2, 3, 2)])
    assert s.range(b"k").kvs == []
    s.put(b"k", b"3")  # 5
    assert s.range(b"k").kvs == [kv(b"k", b"3", 5, 5, 1)]
    # History stays readable at each revision.
    assert s.range(b"k", rev=3).kvs == [kv(b"k", b"2", 2, 3, 2)]
    assert s.range(b"k", rev=4).kvs == []
    assert s.range(b"k", rev=1).kvs == []


def test_delete_of_nothing_keeps_the_revision():
    s = KVStore()
    s.put(b"a", b"1")
    assert s.delete_range(b"zzz") == (2, [])
    assert s.delete_range(b"a", b"a") == (2, [])  # empty interval
    assert s.current_revision == 2
    assert s.delete_range(b"a") == (3, [kv(b"a", b"1", 2, 2, 1)])
    assert s.delete_range(b"a") == (3, [])  # already deleted


def test_delete_range_variants():
    s = KVStore()
    for k in (b"a", b"a/1", b"a/2", b"b", b"c"):
        s.put(k, k)
    # prefix "a/" = ["a/", "a0")
    rev, deleted = s.delete_range(b"a/", b"a0")
    assert rev == 7 and [d.key for d in deleted] == [b"a/1", b"a/2"]
    # from key: range_end "\0"
    rev, deleted = s.delete_range(b"b", b"\x00")
    assert rev == 8 and [d.key for d in deleted] == [b"b", b"c"]
    assert [x.key for x in s.range(b"\x00", b"\x00").kvs] == [b"a"]


def test_range_end_forms():
    s = KVStore()
    for k in (b"a", b"ab", b"b", b"c"):
        s.put(k, b"")
    keys = lambda r: [x.key for x in r.kvs]  # noqa: E731
    assert keys(s.range(b"a")) == [b"a"]  # single key
    assert keys(s.range(b"a", b"b")) == [b"a", b"ab"]
    assert keys(s.range(b"ab", b"\x00")) == [b"ab", b"b", b"c"]  # from key
    assert keys(s.range(b"\x00", b"\x00")) == [b"a", b"ab", b"b", b"c"]  # everything
    assert keys(s.range(b"c", b"a")) == []  # end before key


def test_range_limit_and_count():
    s = KVStore()
    for k in (b"a", b"b", b"c", b"d"):
        s.put(k, b"")
    r = s.range(b"a", b"\x00", limit=2)
    assert [x.key for x in r.kvs] == [b"a", b"b"] and r.count == 4
    r = s.range(b"a", b"\x00", limit=-3)  # a non-positive limit means no limit
    assert len(r.kvs) == 4
    r = s.range(b"a", b"\x00", count_only=True)
    assert r.kvs == [] and r.count == 4


def test_range_at_revision_and_errors():
    s = KVStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    assert s.range(b"a", rev=2).kvs == [kv(b"a", b"1", 2, 2, 1)]
    r = s.range(b"a", rev=2)
    assert r.rev == 3  # the header revision is the current one, not the one read
    assert s.range(b"a", rev=-5).kvs[0].value == b"2"  # rev <= 0 reads the current revision
    with pytest.raises(FutureRevError):
        s.range(b"a", rev=4)
    s.compact(3)
    assert s.range(b"a", rev=3).kvs[0].value == b"2"  # the compacted revision itself is readable
    with pytest.raises(CompactedError):
        s.range(b"a", rev=2)


def test_write_txn_shares_one_revision():
    s = KVStore()
    s.put(b"x", b"0")  # 2
    with s.write() as txn:
        assert txn.rev == 2
        assert txn.put(b"a", b"1") == 3
        assert txn.rev == 3
        # Reads in the txn see its own writes.
        assert txn.get(b"a") == kv(b"a", b"1", 3, 3, 1)
        assert txn.put(b"a", b"2") == 3
        assert txn.get(b"a") == kv(b"a", b"2", 3, 3, 2)
        assert txn.delete_range(b"x") == (1, 3)
        assert txn.delete_range(b"nothing") == (0, 3)  # after changes: the txn's revision
        assert [c.rev for c in txn.changes] == [Revision(3, 0), Revision(3, 1), Revision(3, 2)]
    assert s.current_revision == 3
    assert s.range(b"a").kvs == [kv(b"a", b"2", 3, 3, 2)]


def test_write_txn_without_changes_does_not_bump():
    s = KVStore()
    with s.write() as txn:
        assert txn.delete_range(b"a", b"\x00") == (0, 1)
    assert s.current_revision == 1


def test_only_one_write_txn_at_a_time():
    s = KVStore()
    txn = s.write()
    with pytest.raises(AssertionError):
        s.write()
    txn.end()
    s.write().end()


def test_key_bucket_rows():
    bucket = MemoryKeyBucket()
    s = KVStore(bucket)
    s.put(b"a", b"1")
    s.put(b"b", b"1")
    s.delete_range(b"a", b"c")
    rows = list(bucket.items())
    assert rows == [
        (Revision(2, 0), kv(b"a", b"1", 2, 2, 1), False),
        (Revision(3, 0), kv(b"b", b"1", 3, 3, 1), False),
        (Revision(4, 0), KeyValue(key=b"a"), True),
        (Revision(4, 1), KeyValue(key=b"b"), True),
    ]


def test_compaction_keeps_latest_live_row_per_key():
    # The backend-schema example: revisions 2..7, compaction at 4.
    bucket = MemoryKeyBucket()
    s = KVStore(bucket)
    s.put(b"foo", b"bar")  # 2
    s.put(b"leased-key", b"v", lease=5)  # 3
    s.put(b"foo", b"bar2")  # 4
    s.put(b"to-delete", b"x")  # 5
    s.delete_range(b"to-delete")  # 6 (tombstone)
    with s.write() as txn:  # 7_0, 7_1
        txn.put(b"t1", b"a")
        txn.put(b"t2", b"b")
    keep = s.compact(4).keep
    assert keep == {Revision(3), Revision(4)}
    assert [r for r, _, _ in bucket.items()] == [
        Revision(3), Revision(4), Revision(5), Revision(6), Revision(7, 0), Revision(7, 1)
    ]
    assert s.compact_revision == 4
    # Compacting past the tombstone drops the deleted key entirely.
    s.compact(6)
    assert [r for r, _, _ in bucket.items()] == [Revision(3), Revision(4), Revision(7, 0), Revision(7, 1)]
    assert s.index.key_index(b"to-delete") is None
    assert s.range(b"\x00", b"\x00", rev=6).count == 2


def test_compaction_errors():
    s = KVStore()
    s.put(b"a", b"1")
    with pytest.raises(FutureRevError):
        s.compact(3)
    s.compact(2)
    with pytest.raises(CompactedError):
        s.compact(2)
    with pytest.raises(CompactedError):
        s.compact(1)


def test_commit_listeners_see_each_changing_txn():
    s = KVStore()
    seen = []
    s.commit_listeners.append(lambda rev, changes: seen.append((rev, [(c.kv.key, c.deleted) for c in changes])))
    s.put(b"a", b"1")
    s.delete_range(b"zz")  # no change, no call
    with s.write() as txn:
        txn.put(b"b", b"1")
        txn.delete_range(b"a")
    assert seen == [(2, [(b"a", False)]), (3, [(b"b", False), (b"a", True)])]


def test_aborted_txn_leaves_no_trace():
    s = KVStore()
    s.put(b"a", b"1")
    s.delete_range(b"a")
    s.put(b"b", b"1")
    before = (s.index.describe(), list(s.bucket.items()), s.current_revision)
    txn = s.write()
    txn.put(b"a", b"2")  # recreates a deleted key
    txn.put(b"c", b"1")  # creates a new key
    txn.delete_range(b"b")
    txn.put(b"b", b"3")
    txn.abort()
    assert (s.index.describe(), list(s.bucket.items()), s.current_revision) == before
    assert s.put(b"c", b"x") == (5, None)


def test_size_follows_stored_revisions_through_compaction():
    from trietcd.mvcc import KVStore

    store = KVStore()
    assert store.size_bytes() == 0
    store.put(b"k", b"v" * 100)
    one = store.size_bytes()
    assert one > 100
    rev, _ = store.put(b"k", b"w" * 100)
    assert store.size_bytes() == 2 * one
    store.compact(rev)
    assert store.size_bytes() == one
def test_live_yields_each_live_keys_current_row_in_key_order():
    s = KVStore()
    s.put(b"b", b"1", lease=7)
    s.put(b"a", b"1")
    s.put(b"b", b"2", lease=7)
    s.put(b"c", b"1")
    s.delete_range(b"c")
    assert [(kv.key, kv.value, kv.lease) for kv in s.live()] == [(b"a", b"1", 0), (b"b", b"2", 7)]
