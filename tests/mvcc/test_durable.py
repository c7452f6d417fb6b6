"""The store on etcd's backend: rows byte-exact with etcd's, restore from etcd's
own db files, HashKV figures measured on etcd, compaction in resumable steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from storage import DB, MemoryFile
from tests.mvcc.fake_backend import FakeBackend, load_db
from trietcd.backend import Backend
from trietcd.mvcc import CompactedError, FutureRevError, KeyValue, KVStore, Revision
from trietcd.mvcc.rows import BackendKeyBucket, decode_kv, encode_kv
from trietcd.mvcc.revision import revision_to_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DB_34 = FIXTURES / "etcd-3.4.23" / "bbolt" / "etcd-small.db"  # = datadir/member/snap/db (MANIFEST)
DB_34_BIG = FIXTURES / "etcd-3.4.23" / "bbolt" / "etcd-branch-overflow.db"
DB_35 = FIXTURES / "etcd-3.5.1" / "datadir" / "member" / "snap" / "db"
DB_35_M1 = FIXTURES / "etcd-3.5.1" / "cluster" / "m1" / "member" / "snap" / "db"
LEASE_34 = 0x4C35A20BE3E47D06


@pytest.fixture
def open_copy(tmp_path):
    """Opens a real Backend on a copy of a fixture file; closes them all at the end."""
    opened = []

    def open_(path: Path) -> Backend:
        copy = tmp_path / f"{len(opened)}-{path.name}"
        shutil.copyfile(path, copy)
        backend = Backend.open(str(copy), fsync=False)
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        backend.close()


def all_kvs(store: KVStore, rev: int = 0) -> list[KeyValue]:
    return store.range(b"", b"\x00", rev=rev).kvs


def key_rows(backend) -> list[tuple[bytes, bytes]]:
    return list(backend.items(b"key"))


def fixture_workload_34(store: KVStore, backend) -> None:
    """The 3.4.23 fixture's KV requests (MANIFEST), committing like the member."""
    store.put(b"foo", b"bar")  # 2
    store.put(b"leased-key", b"lv", lease=LEASE_34)  # 3
    store.put(b"foo", b"bar2")  # 4
    store.put(b"to-delete", b"gone")  # 5
    store.delete_range(b"to-delete")  # 6
    with store.write() as txn:  # 7_0, 7_1
        txn.put(b"txn-key", b"ok")
        txn.put(b"foo", b"bar3")
    compaction = store.compact(4)
    backend.commit()
    while not compaction.step(1000):
        backend.commit()
    backend.commit()


# ---- rows


def test_rows_are_etcd_bytes():
    # backend-schema.md §2.2 examples.
    backend = Backend.open_memory(fsync=False)
    store = KVStore.open(backend)
    store.put(b"foo", b"bar")
    store.put(b"leased-key", b"lv", lease=LEASE_34)
    store.put(b"foo", b"bar2")
    store.put(b"to-delete", b"gone")
    store.delete_range(b"to-delete")
    rows = dict(key_rows(backend))
    assert rows[bytes.fromhex("0000000000000004 5f 0000000000000000")] == bytes.fromhex(
        "0a03666f6f 1002 1804 2002 2a0462617232"
    )
    assert rows[revision_to_bytes(Revision(3))] == bytes.fromhex(
        "0a0a6c65617365642d6b6579 1003 1803 2001 2a026c76 3086fa919fbec1e89a4c"
    )
    assert rows[bytes.fromhex("0000000000000006 5f 0000000000000000 74")] == bytes.fromhex("0a09746f2d64656c657465")
    backend.close()


def test_names_are_the_backend_schema_names():
    from trietcd.backend import schema
    from trietcd.mvcc import rows

    assert (rows.KEY_BUCKET, rows.META_BUCKET) == (schema.KEY, schema.META)
    assert rows.SCHEDULED_COMPACT_REV == schema.SCHEDULED_COMPACT_REV
    assert rows.FINISHED_COMPACT_REV == schema.FINISHED_COMPACT_REV


def test_row_codec_round_trip():
    kv = KeyValue(b"k", 2, 9, 3, b"\x00v", 1 << 62)
    assert decode_kv(encode_kv(kv)) == kv
    assert decode_kv(encode_kv(kv, tombstone=True)) == KeyValue(b"k")
    assert encode_kv(KeyValue(b"k")) == b"\x0a\x01k"


def test_fixture_workload_writes_the_fixture_rows(tmp_path):
    fixture = load_db(DB_34, tmp_path)
    backend = Backend.open_memory(fsync=False)
    store = KVStore.open(backend)
    fixture_workload_34(store, backend)
    assert key_rows(backend) == sorted(fixture.committed[b"key"].items())
    for name in (b"scheduledCompactRev", b"finishedCompactRev"):
        assert backend.get(b"meta", name) == fixture.committed[b"meta"][name]
    assert store.hash_kv(0) == (3687147342, 7, 4)
    backend.close()


# ---- restore from etcd's files


def test_open_etcd_3_4_db(open_copy):
    store = KVStore.open(open_copy(DB_34))
    assert (store.current_revision, store.compact_revision) == (7, 4)
    assert store.pending_compaction is None
    assert all_kvs(store) == [
        KeyValue(b"foo", 2, 7, 3, b"bar3"),
        KeyValue(b"leased-key", 3, 3, 1, b"lv", LEASE_34),
        KeyValue(b"txn-key", 7, 7, 1, b"ok"),
    ]
    # History down to the compacted revision is still readable.
    assert all_kvs(store, 4) == [KeyValue(b"foo", 2, 4, 2, b"bar2"), KeyValue(b"leased-key", 3, 3, 1, b"lv", LEASE_34)]
    assert [kv.key for kv in all_kvs(store, 5)] == [b"foo", b"leased-key", b"to-delete"]
    assert [kv.key for kv in all_kvs(store, 6)] == [b"foo", b"leased-key"]
    with pytest.raises(CompactedError):
        all_kvs(store, 3)
    # backend-schema.md §8.2
    assert store.hash_kv(5) == (3014433230, 7, 4)
    assert store.hash_kv(6) == (3684700848, 7, 4)
    assert store.hash_kv(7) == store.hash_kv(0) == (3687147342, 7, 4)
    with pytest.raises(CompactedError):
        store.hash_kv(4)
    with pytest.raises(FutureRevError):
        store.hash_kv(8)
    # Going on from the restored state: versions and create revisions continue.
    assert store.put(b"foo", b"bar4") == (8, KeyValue(b"foo", 2, 7, 3, b"bar3"))
    assert store.range(b"foo").kvs == [KeyValue(b"foo", 2, 8, 4, b"bar4")]
    assert store.put(b"to-delete", b"again")[0] == 9
    assert store.range(b"to-delete").kvs == [KeyValue(b"to-delete", 9, 9, 1, b"again")]


def test_open_etcd_3_4_db_with_many_rows(open_copy):
    store = KVStore.open(open_copy(DB_34_BIG))
    assert (store.current_revision, store.compact_revision) == (602, -1)
    assert store.range(b"", b"\x00").count == 201
    assert len(store.bucket) == 601
    assert store.hash_kv(0) == (3318572743, 602, -1)
    assert store.range(b"k0000", rev=2).kvs == [KeyValue(b"k0000", 2, 2, 1, b"v0000-" * 33)]
    assert store.range(b"k0000").kvs == []
    assert store.range(b"big").kvs[0].value == bytes(range(256)) * 40


def test_open_etcd_3_5_db(open_copy):
    store = KVStore.open(open_copy(DB_35))
    assert (store.current_revision, store.compact_revision) == (10, 4)
    assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in all_kvs(store)] == [
        (b"/app/k1", b"v1", 9, 9, 1),
        (b"after-disarm", b"yes", 8, 8, 1),
        (b"by-root", b"r", 10, 10, 1),
        (b"foo", b"bar3", 2, 7, 3),
        (b"leased-key", b"lv", 3, 3, 1),
        (b"txn-key", b"ok", 7, 7, 1),
    ]
    measured = {10: 1625769479, 5: 2893437533, 6: 2515663991, 7: 2291723110, 8: 4278292545, 9: 2833289231}
    for rev, want in measured.items():
        assert store.hash_kv(rev) == (want, 10, 4), rev
    assert store.hash_kv(0)[0] == 1625769479
    with pytest.raises(CompactedError):
        store.hash_kv(4)
    with pytest.raises(FutureRevError):
        store.hash_kv(11)


def test_open_etcd_3_5_cluster_member_db(open_copy):
    # Compaction at 5 removed nothing; `a` has a tombstone at 6 above it.
    store = KVStore.open(open_copy(DB_35_M1))
    assert (store.current_revision, store.compact_revision) == (7, 5)
    assert [(kv.key, kv.value) for kv in all_kvs(store)] == [(b"b", b"2"), (b"c", b"4"), (b"with-lease", b"lv")]
    assert [kv.key for kv in all_kvs(store, 5)] == [b"a", b"b", b"c", b"with-lease"]
    assert store.hash_kv(7) == (3510018732, 7, 5)
    assert store.hash_kv(6) == (1051531284, 7, 5)
    with pytest.raises(CompactedError):
        store.hash_kv(5)


def test_restore_skips_keys_whose_first_row_is_a_tombstone():
    # A key compacted down to its tombstone (the compaction stopped before the
    # tombstone's turn) is not indexed; its next put starts over.
    store = KVStore(backend=FakeBackend())
    store.put(b"a", b"1")  # 2
    store.delete_range(b"a")  # 3
    store.put(b"b", b"1")  # 4
    backend = store.backend
    backend.delete(b"key", revision_to_bytes(Revision(2)))  # as a compaction at 3 does first
    backend.commit()
    again = KVStore.open(backend.image())
    assert again.index.key_index(b"a") is None
    assert again.current_revision == 4
    assert again.put(b"a", b"2") == (5, None)
    assert again.range(b"a").kvs == [KeyValue(b"a", 5, 5, 1, b"2")]


def test_restore_after_everything_was_compacted():
    backend = FakeBackend()
    store = KVStore(backend=backend)
    store.put(b"a", b"1")  # 2
    store.delete_range(b"a")  # 3
    store.compact(3).run()
    backend.commit()
    assert key_rows(backend) == []
    again = KVStore.open(backend.image())
    assert (again.current_revision, again.compact_revision, len(again.index)) == (3, 3, 0)
    assert again.put(b"a", b"x")[0] == 4


def test_restore_when_a_compaction_deleted_every_row_but_did_not_finish():
    # Rows 2 and 3t are all the history; a compaction at 3 with batches of 2
    # deletes both in its first step, and the crash comes before the step that
    # writes finishedCompactRev. etcd would restart at revision 1 and drop the
    # compaction (FutureRev); the scheduled revision keeps the store at 3.
    backend = FakeBackend()
    store = KVStore(backend=backend)
    store.put(b"a", b"1")  # 2
    store.delete_range(b"a")  # 3
    compaction = store.compact(3)
    backend.commit()
    assert not compaction.step(2)
    backend.commit()
    crashed = backend.image()
    assert key_rows(crashed) == []
    again = KVStore.open(crashed)
    assert (again.current_revision, again.compact_revision) == (3, 3)
    assert again.pending_compaction.step(2)
    assert crashed.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(3))
    assert again.put(b"b", b"1")[0] == 4


# ---- compaction


def build(backend, n_keys: int = 12, rounds: int = 6) -> KVStore:
    store = KVStore(backend=backend)
    for r in range(rounds):
        for i in range(n_keys):
            key = b"k%02d" % i
            if (i + r) % 5 == 0:
                store.delete_range(key)
            else:
                store.put(key, b"%d-%d" % (r, i), lease=i % 3)
        backend.commit()
    return store


def test_compaction_writes_scheduled_then_finished():
    backend = FakeBackend()
    store = build(backend)
    rev = store.current_revision - 20
    compaction = store.compact(rev)
    assert store.compact_revision == rev
    assert backend.get(b"meta", b"scheduledCompactRev") == revision_to_bytes(Revision(rev))
    assert backend.get(b"meta", b"finishedCompactRev") is None
    steps = 0
    while not compaction.step(5):
        steps += 1
        assert backend.get(b"meta", b"finishedCompactRev") is None
        backend.commit()
    assert steps >= 3
    assert backend.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(rev))
    assert compaction.done and compaction.step(5)
    # Exactly the rows compaction keeps: every row above rev, the kept ones at or below.
    rows = [rev_ for rev_, _, _ in store.bucket.items()]
    assert [r for r in rows if r.main <= rev] == sorted(compaction.keep)
    assert len(store.bucket) == len(rows)


def uninterrupted(rev: int) -> tuple[list, int]:
    backend = FakeBackend()
    store = build(backend)
    store.compact(rev).run(5)
    backend.commit()
    return key_rows(backend), store.hash_kv(0)[0]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 4, 7, 100])
def test_compaction_resumes_after_a_crash(crash_after):
    backend = FakeBackend()
    store = build(backend)
    rev = store.current_revision - 20
    want_rows, want_hash = uninterrupted(rev)
    compaction = store.compact(rev)
    backend.commit()
    for _ in range(crash_after):
        done = compaction.step(5)
        backend.commit()
        if done:
            break
    crashed = backend.image()
    again = KVStore.open(crashed)
    if crash_after == 100:
        assert again.pending_compaction is None
    else:
        assert again.pending_compaction is not None
        assert again.pending_compaction.revision == rev
        # Reads below the compaction fail at once, as before the crash.
        with pytest.raises(CompactedError):
            again.range(b"k00", rev=rev - 1)
        assert again.hash_kv(0)[0] == want_hash  # not-yet-deleted rows do not count
        again.pending_compaction.run(3)
    crashed.commit()
    assert (again.compact_revision, again.current_revision) == (rev, store.current_revision)
    assert key_rows(crashed) == want_rows
    assert crashed.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(rev))
    assert again.hash_kv(0)[0] == want_hash


def test_a_late_finish_does_not_move_finished_back():
    backend = FakeBackend()
    store = build(backend)
    first = store.compact(store.current_revision - 30)
    second = store.compact(store.current_revision - 10)
    second.run(4)
    first.run(4)
    assert backend.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(second.revision))


def test_compaction_on_the_real_backend_resumes_after_a_crash():
    file = MemoryFile()
    backend = Backend(DB(file, no_freelist_sync=True, fsync=False))
    store = build(backend, n_keys=40, rounds=8)
    rev = store.current_revision - 50
    compaction = store.compact(rev)
    backend.commit()
    compaction.step(30)
    backend.commit()
    compaction.step(30)  # lost in the crash
    image = bytes(file.data)
    again_backend = Backend(DB(MemoryFile(image), no_freelist_sync=True, fsync=False))
    again = KVStore.open(again_backend)
    assert again.pending_compaction is not None and again.compact_revision == rev
    while not again.pending_compaction.step(30):
        again_backend.commit()
    again_backend.commit()
    compaction.run(30)
    backend.commit()
    assert key_rows(again_backend) == key_rows(backend)
    assert again_backend.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(rev))
    assert again.hash_kv(0) == store.hash_kv(0)
    reopened = KVStore.open(again_backend)
    assert reopened.pending_compaction is None
    assert all_kvs(reopened, rev) == all_kvs(store, rev)
    again_backend.close()


# ---- the bucket


def test_backend_bucket_counts_rows():
    backend = FakeBackend()
    store = build(backend, n_keys=5, rounds=3)
    bucket = store.bucket
    assert isinstance(bucket, BackendKeyBucket)
    rows = key_rows(backend)
    assert len(bucket) == len(rows)
    size = bucket.size_bytes()
    assert size == sum(16 + len(k) + len(v) for k, v in rows)
    store.compact(store.current_revision).run()
    assert len(bucket) == len(key_rows(backend)) < len(rows)
    assert bucket.size_bytes() < size
    # A fresh bucket on the same backend counts the rows itself.
    assert len(BackendKeyBucket(backend)) == len(bucket)
    assert BackendKeyBucket(backend).size_bytes() == bucket.size_bytes()
    # Restore hands its count over.
    reopened = KVStore.open(backend)
    assert (len(reopened.bucket), reopened.bucket.size_bytes()) == (len(bucket), bucket.size_bytes())


def test_aborted_txn_takes_its_rows_back_from_the_backend():
    backend = FakeBackend()
    store = KVStore(backend=backend)
    store.put(b"a", b"1")
    backend.commit()
    before = key_rows(backend)
    txn = store.write()
    txn.put(b"b", b"1")
    txn.delete_range(b"a")
    txn.abort()
    assert key_rows(backend) == before
    backend.commit()
    assert KVStore.open(backend.image()).range(b"", b"\x00").kvs == [KeyValue(b"a", 2, 2, 1, b"1")]


def test_applier_compaction_returns_the_compaction_to_run():
    from proto.etcdserverpb import rpc_pb2
    from trietcd.mvcc.apply import Applier

    backend = FakeBackend()
    store = build(backend)
    rev = store.current_revision - 5
    resp, compaction = Applier(store).compaction(rpc_pb2.CompactionRequest(revision=rev))
    assert resp.header.revision == store.current_revision
    assert (compaction.revision, compaction.done, store.compact_revision) == (rev, False, rev)
    compaction.run()
    assert compaction.done and backend.get(b"meta", b"finishedCompactRev") == revision_to_bytes(Revision(rev))
    with pytest.raises(CompactedError):
        Applier(store).compaction(rpc_pb2.CompactionRequest(revision=rev))
    # In memory there is nothing left to do.
    memory = KVStore()
    memory.put(b"a", b"1")
    _, done = Applier(memory).compaction(rpc_pb2.CompactionRequest(revision=2))
    assert done.done
