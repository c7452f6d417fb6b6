"""Backend: the read buffer over the last commit, the commit hook (delta §1.2), hashes, reopening."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import threading
from pathlib import Path

import pytest
import trio

from proto.raftpb import raft_pb2
from storage import DB, MemoryFile
from trietcd.backend import (BUCKETS, CONF_STATE, CONSISTENT_INDEX, KEY, LEASE, META, TERM, Backend, decode_u64,
                             encode_u64)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DB_351 = FIXTURES / "etcd-3.5.1/datadir/member/snap/db"
DB_3423 = FIXTURES / "etcd-3.4.23/bbolt/etcd-small.db"
DB_3423_SHA256 = "85aca896514549c0cd7903e7024be6225b83917e871739c2361df6415221e115"  # its datadir db (MANIFEST)
DB_3423_OVERFLOW = FIXTURES / "etcd-3.4.23/bbolt/etcd-branch-overflow.db"


def memory_backend(**kw) -> tuple[Backend, MemoryFile]:
    f = MemoryFile()
    return Backend(DB(f, no_freelist_sync=True), **kw), f


def crash_copy(f: MemoryFile) -> Backend:
    """The backend a restart would find: the file bytes as they are now."""
    return Backend.open_memory(bytes(f.data))


def stored_ci(b: Backend) -> tuple[bytes | None, bytes | None]:
    return b.get(META, CONSISTENT_INDEX), b.get(META, TERM)


# ---- open ----


def test_fresh_db_has_the_ten_buckets_committed():
    b, f = memory_backend()
    with DB(MemoryFile(bytes(f.data)), read_only=True) as db, db.view() as tx:
        assert tuple(tx.bucket_names()) == BUCKETS
        assert tx.check() == []
    assert b.consistent_index() == (0, 0)
    assert b.pending == 0
    b.close()


def test_open_path_creates_then_reopens_with_data(tmp_path):
    path = tmp_path / "db"
    b = Backend.open(str(path), fsync=False)
    assert b.path == str(path)
    b.put(KEY, b"k1", b"v1")
    b.commit()
    b.close()
    with Backend.open(str(path), lock_timeout_s=1) as b:
        assert b.get(KEY, b"k1") == b"v1"
        assert b.items(KEY).__next__() == (b"k1", b"v1")


# ---- reads see the batch ----


def test_reads_see_uncommitted_puts_and_deletes():
    b, _ = memory_backend()
    b.put(KEY, b"a", b"1")
    b.put(LEASE, b"x", b"lx")
    assert b.get(KEY, b"a") == b"1" and b.get(LEASE, b"x") == b"lx" and b.get(KEY, b"x") is None
    assert b.pending == 2
    b.commit()
    assert b.pending == 0
    b.delete(KEY, b"a")
    b.put(KEY, b"b", b"2")
    assert b.get(KEY, b"a") is None
    assert b.range(KEY, b"", b"") == [(b"b", b"2")]
    b.put(KEY, b"a", b"3")
    assert b.get(KEY, b"a") == b"3"
    b.close()


def test_range_merges_buffer_over_committed_rows():
    b, _ = memory_backend()
    for k in (b"a", b"c", b"e", b"g", b"i"):
        b.put(KEY, k, b"old-" + k)
    b.commit()
    b.put(KEY, b"c", b"new-c")  # overwrite
    b.delete(KEY, b"e")  # delete of a committed row
    b.put(KEY, b"f", b"new-f")  # new, between committed rows
    b.delete(KEY, b"zz")  # delete of nothing
    b.put(KEY, b"b", b"new-b")  # out of order: the buffer sorts itself
    assert b.range(KEY, b"", b"") == [(b"a", b"old-a"), (b"b", b"new-b"), (b"c", b"new-c"), (b"f", b"new-f"),
                                      (b"g", b"old-g"), (b"i", b"old-i")]
    assert b.range(KEY, b"b", b"g") == [(b"b", b"new-b"), (b"c", b"new-c"), (b"f", b"new-f")]
    assert b.range(KEY, b"c", b"c\x00") == [(b"c", b"new-c")]
    assert b.range(KEY, b"d", b"e\x00") == []
    assert b.range(KEY, b"a", b"", limit=3) == [(b"a", b"old-a"), (b"b", b"new-b"), (b"c", b"new-c")]
    assert b.range(KEY, b"d", b"", limit=2) == [(b"f", b"new-f"), (b"g", b"old-g")]
    assert b.range(KEY, b"j", b"") == []
    assert list(b.items(KEY)) == b.range(KEY, b"", b"")
    b.close()


def test_items_crosses_chunks_and_commits(monkeypatch):
    from trietcd.backend import backend as backend_module
    monkeypatch.setattr(backend_module, "ITEMS_CHUNK_ROWS", 3)
    b, _ = memory_backend()
    for i in range(10):
        b.put(KEY, b"k%02d" % i, b"v")
    b.commit()
    b.delete(KEY, b"k04")
    it = b.items(KEY)
    got = [next(it) for _ in range(3)]
    b.put(KEY, b"k08", b"w")
    b.commit()  # a commit between steps swaps the read view
    got += list(it)
    assert [k for k, _ in got] == [b"k%02d" % i for i in range(10) if i != 4]
    assert dict(got)[b"k08"] == b"w"
    b.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_writes_and_commits_match_a_dict(seed):
    rng = random.Random(seed)
    print("seed", seed)
    b, f = memory_backend()
    model: dict[bytes, bytes] = {}
    keys = [b"%03d" % i for i in range(60)]
    for step in range(600):
        op = rng.random()
        k = rng.choice(keys)
        if op < 0.55:
            v = b"v%d" % step
            b.put(KEY, k, v)
            model[k] = v
        elif op < 0.85:
            b.delete(KEY, k)
            model.pop(k, None)
        elif op < 0.95:
            b.commit()
        else:
            start, end = sorted(rng.sample(keys, 2))
            limit = rng.choice([0, 1, 5])
            want = sorted((kk, vv) for kk, vv in model.items() if start <= kk < end)
            assert b.range(KEY, start, end, limit) == (want[:limit] if limit else want)
        assert b.get(KEY, k) == model.get(k)
    assert b.range(KEY, b"", b"") == sorted(model.items())
    b.close()
    with Backend.open_memory(bytes(f.data)) as again:
        assert list(again.items(KEY)) == sorted(model.items())


# ---- durability ----


def test_uncommitted_writes_are_lost_on_reopen():
    b, f = memory_backend()
    b.put(KEY, b"kept", b"1")
    b.commit()
    b.put(KEY, b"lost", b"2")
    b.delete(KEY, b"kept")
    b.set_consistent_index(9, 1)
    crashed = crash_copy(f)
    assert crashed.get(KEY, b"kept") == b"1" and crashed.get(KEY, b"lost") is None
    assert crashed.consistent_index() == (0, 0)
    crashed.close()
    b.close()  # commits
    with crash_copy(f) as again:
        assert again.get(KEY, b"kept") is None and again.get(KEY, b"lost") == b"2"
        assert again.consistent_index() == (9, 1)


def test_commit_with_nothing_pending_writes_nothing():
    b, f = memory_backend()
    syncs = f.syncs
    txid = b._db.stats()["txid"]
    b.commit()
    assert (f.syncs, b._db.stats()["txid"]) == (syncs, txid)
    b.set_consistent_index(3, 1)  # a grown index is a write of its own: a force commit stores it
    b.commit()
    assert b._db.stats()["txid"] == txid + 1
    assert stored_ci(b) == (encode_u64(3), encode_u64(1))
    b.commit()
    assert b._db.stats()["txid"] == txid + 1
    b.close()


def test_snapshot_is_the_committed_image():
    b, _ = memory_backend()
    b.put(KEY, b"a", b"1")
    b.set_consistent_index(5, 2)
    with b.snapshot() as snap:
        out = io.BytesIO()
        assert snap.write_to(out) == snap.size == len(out.getvalue())
    b.put(KEY, b"b", b"2")  # after the snapshot: not in it
    with Backend.open_memory(out.getvalue()) as copy:
        assert copy.get(KEY, b"a") == b"1" and copy.get(KEY, b"b") is None
        assert copy.consistent_index() == (5, 2)
        assert copy.hash_all() == Backend.open_memory(out.getvalue()).hash_all()
    b.close()


def test_sizes_follow_commits():
    b, _ = memory_backend()
    size = b.size_bytes()
    assert size % 4096 == 0 and 0 < b.size_in_use_bytes() <= size
    for i in range(2000):
        b.put(KEY, b"%08d" % i, b"x" * 100)
    assert b.size_bytes() == size  # the file grows at the commit
    b.commit()
    assert b.size_bytes() > size + 2000 * 100
    for i in range(2000):
        b.delete(KEY, b"%08d" % i)
    b.commit()
    b.put(KEY, b"a", b"1")
    b.commit()  # pages freed two commits ago are free now
    assert b.size_in_use_bytes() < b.size_bytes() // 2
    b.close()


# ---- the consistent index hook (delta §1.2) ----


def test_consistent_index_written_only_when_it_grows():
    b, _ = memory_backend()
    b.set_consistent_index(0, 0)
    b.put(KEY, b"a", b"1")
    b.commit()
    assert stored_ci(b) == (None, None)  # index 0 is never written
    b.set_consistent_index(5, 0)
    b.commit()
    assert stored_ci(b) == (encode_u64(5), None)  # term only when > 0
    b.set_consistent_index(7, 2)
    b.commit()
    assert stored_ci(b) == (encode_u64(7), encode_u64(2))
    b.set_consistent_index(6, 2)  # same term, smaller index: kept
    b.commit()
    assert stored_ci(b) == (encode_u64(7), encode_u64(2))
    assert b.consistent_index() == (6, 2)  # the in-memory pair is what was set
    b.set_consistent_index(3, 3)  # larger term wins even with a smaller index (etcd's rule)
    b.commit()
    assert stored_ci(b) == (encode_u64(3), encode_u64(3))
    b.close()


def test_term_ahead_of_the_log_stops_index_updates():
    # The trap of delta §1.2: a stored term larger than the real one is never passed again.
    b, _ = memory_backend()
    b.put(META, TERM, encode_u64(100))
    b.put(META, CONSISTENT_INDEX, encode_u64(68))
    b.commit()
    for index in range(69, 77):
        b.set_consistent_index(index, 2)
        b.put(KEY, b"k%d" % index, b"v")
        b.commit()
    assert stored_ci(b) == (encode_u64(68), encode_u64(100))
    b.close()


def test_hook_writes_are_in_the_commit_of_the_entry_effects():
    b, f = memory_backend()
    b.put(KEY, b"effect", b"1")
    b.set_consistent_index(11, 2)
    assert stored_ci(b) == (None, None)  # not before the commit
    b.commit()
    with crash_copy(f) as again:
        assert again.get(KEY, b"effect") == b"1" and again.consistent_index() == (11, 2)
    b.close()


def test_conf_state_written_at_the_next_commit_only():
    b, _ = memory_backend()
    cs = raft_pb2.ConfState(voters=[5285530685960965173])
    b.set_conf_state(cs)
    assert b.get(META, CONF_STATE) is None
    b.commit()
    assert b.get(META, CONF_STATE) == b'{"voters":[5285530685960965173],"auto_leave":false}'
    b.put(META, CONF_STATE, b"patched")
    b.commit()
    b.commit()
    assert b.get(META, CONF_STATE) == b"patched"  # not pending any more: not rewritten
    b.close()


# ---- fixtures written by etcd ----


def fixture_copy(src: Path, tmp_path: Path) -> str:
    dst = tmp_path / "db"
    shutil.copy(src, dst)
    return str(dst)


def test_hash_of_the_etcd_351_fixture(tmp_path):
    with Backend.open(fixture_copy(DB_351, tmp_path)) as b:
        assert b.consistent_index() == (40, 2)
        assert b.hash() == 3614207890  # delta §1.3
        assert b.hash_all() == 2951703049  # etcdutl snapshot status of the same data (MANIFEST (b))
        assert b.get(META, CONF_STATE) == b'{"voters":[5285530685960965173],"auto_leave":false}'
        b.set_consistent_index(41, 2)
        b.put(KEY, b"x", b"y")
        b.delete(KEY, b"x")
        b.commit()
        assert b.hash() == 3614207890  # consistent_index and term are not hashed
        assert b.hash_all() != 2951703049
        assert (decode_u64(b.get(META, CONSISTENT_INDEX)), decode_u64(b.get(META, TERM))) == (41, 2)


def test_hash_of_etcd_3423_fixtures(tmp_path):
    assert hashlib.sha256(DB_3423.read_bytes()).hexdigest() == DB_3423_SHA256
    with Backend.open(fixture_copy(DB_3423, tmp_path)) as b:
        assert b.consistent_index() == (16, 0)
        assert b.get(META, CONF_STATE) is None and b.get(META, TERM) is None
        assert b.hash() == 438064735  # backend-schema §8.1: 3.4 skips only consistent_index
        assert b.hash_all() == 4084312169  # §8.3 (snapshot status of the same data)
        b.set_consistent_index(17, 2)  # the first 3.5 commit adds term
        b.commit()
        assert b.get(META, TERM) == encode_u64(2)
        assert b.hash() == 438064735
    (tmp_path / "db").unlink()
    with Backend.open(fixture_copy(DB_3423_OVERFLOW, tmp_path)) as b:
        assert b.hash() == 437649051


# ---- commit_async ----


class GatedFile(MemoryFile):
    """A MemoryFile whose sync blocks (in the committing thread) while `gate` is closed."""

    def __init__(self):
        super().__init__()
        self.in_sync = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def sync(self) -> None:
        self.in_sync.set()
        self.gate.wait(10)
        super().sync()


async def test_reads_are_served_while_commit_async_runs():
    f = GatedFile()
    b = Backend(DB(f, no_freelist_sync=True))
    b.put(KEY, b"a", b"committed")
    b.put(KEY, b"c", b"committed")
    b.commit()
    b.put(KEY, b"a", b"new")
    b.delete(KEY, b"c")
    b.put(KEY, b"b", b"new")
    b.set_consistent_index(4, 1)
    f.in_sync.clear()
    f.gate.clear()
    done = trio.Event()

    async def commit():
        await b.commit_async()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        await trio.to_thread.run_sync(f.in_sync.wait, 10)
        assert not done.is_set()
        # The commit is stuck in its fsync; reads go on from the old view plus the buffer.
        assert b.get(KEY, b"a") == b"new" and b.get(KEY, b"c") is None
        assert b.range(KEY, b"", b"") == [(b"a", b"new"), (b"b", b"new")]
        assert b.get(META, CONSISTENT_INDEX) == encode_u64(4)  # the hook's writes are in the buffer too
        with pytest.raises(AssertionError):
            b.put(KEY, b"d", b"x")
        with pytest.raises(AssertionError):
            b.delete(KEY, b"a")
        with pytest.raises(AssertionError):
            b.commit()
        f.gate.set()
        await done.wait()
    assert b.pending == 0 and not b._buf.buckets
    assert b.range(KEY, b"", b"") == [(b"a", b"new"), (b"b", b"new")]
    b.put(KEY, b"d", b"after")
    await b.commit_async()
    with Backend.open_memory(bytes(f.data)) as again:
        assert again.range(KEY, b"", b"") == [(b"a", b"new"), (b"b", b"new"), (b"d", b"after")]
        assert again.consistent_index() == (4, 1)
    b.close()


async def test_commit_async_with_nothing_pending_is_a_no_op():
    b, f = memory_backend()
    syncs = f.syncs
    await b.commit_async()
    assert f.syncs == syncs
    b.close()


class FailingFile(MemoryFile):
    fail = False

    def sync(self) -> None:
        if self.fail:
            raise OSError(5, "EIO")
        super().sync()


async def test_a_failed_commit_breaks_the_backend():
    from trietcd.backend import BackendBrokenError
    f = FailingFile()
    b = Backend(DB(f, no_freelist_sync=True))
    b.put(KEY, b"a", b"1")
    f.fail = True
    with pytest.raises(OSError):
        await b.commit_async()
    with pytest.raises(AssertionError):
        b.put(KEY, b"b", b"2")
    with pytest.raises(BackendBrokenError):
        b.commit()
    b.close()
    f.fail = False
    with Backend.open_memory(bytes(f.data)) as again:
        assert again.get(KEY, b"a") is None


def test_open_reads_without_writing_and_holds_the_lock(tmp_path):
    from storage import LockTimeoutError
    path = fixture_copy(DB_351, tmp_path)
    with Backend.open(path) as b:
        assert b.get(KEY, b"\x00" * 8 + b"_" + b"\x00" * 8) is None
        with pytest.raises(LockTimeoutError):
            Backend.open(path, lock_timeout_s=0)
    assert Path(path).read_bytes() == DB_351.read_bytes()  # all buckets there, nothing pending: no commit


async def test_snapshot_hash_in_a_worker_thread_while_writes_go_on(tmp_path):
    with Backend.open(fixture_copy(DB_351, tmp_path)) as b:
        snap = b.snapshot()
        b.put(KEY, b"later", b"x")
        b.commit()
        h, h_all = await trio.to_thread.run_sync(lambda: (snap.hash(), snap.hash_all()))
        snap.close()
        assert (h, h_all) == (3614207890, 2951703049)
        assert b.hash() != h


async def test_cancelled_commit_async_still_completes():
    f = GatedFile()
    b = Backend(DB(f, no_freelist_sync=True))
    b.put(KEY, b"a", b"1")
    f.in_sync.clear()
    f.gate.clear()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.commit_async)
            await trio.to_thread.run_sync(f.in_sync.wait, 10)
            scope.cancel()
            f.gate.set()
    assert scope.cancel_called  # it came while the file commit ran: the commit went through anyway
    assert b.pending == 0 and b._rbuckets[KEY].get(b"a") == b"1"  # swapped to the new view
    b.put(KEY, b"b", b"2")
    b.close()
    with Backend.open_memory(bytes(f.data)) as again:
        assert again.range(KEY, b"", b"") == [(b"a", b"1"), (b"b", b"2")]


# ---- defrag ----


def fill_and_thin(b: Backend) -> dict[bytes, bytes]:
    for i in range(3000):
        b.put(KEY, b"%06d" % i, b"v" * 100)
    b.commit()
    for i in range(3000):
        if i % 10:
            b.delete(KEY, b"%06d" % i)
    b.put(LEASE, b"l", b"lease")
    b.set_consistent_index(77, 3)
    return {b"%06d" % i: b"v" * 100 for i in range(0, 3000, 10)}


def test_defrag_in_memory_keeps_rows_and_shrinks():
    b, _ = memory_backend()
    want = fill_and_thin(b)
    before = (b.hash(), b.hash_all())
    big = b.size_bytes()
    b.defrag()
    assert b.size_bytes() < big // 3
    assert (b.hash(), b.hash_all()) == before
    assert dict(b.items(KEY)) == want and b.consistent_index() == (77, 3)
    b.put(KEY, b"after", b"1")
    assert b.get(KEY, b"after") == b"1"
    b.close()


def test_defrag_of_a_file_renames_over_it(tmp_path):
    path = tmp_path / "db"
    b = Backend.open(str(path), fsync=False)
    want = fill_and_thin(b)
    before = b.hash_all()
    b.defrag()
    assert [p.name for p in tmp_path.iterdir()] == ["db"]  # the temp file was renamed over it
    assert path.stat().st_size == b.size_bytes()
    b.put(KEY, b"after", b"1")
    b.close()
    with Backend.open(str(path)) as again:
        assert dict(again.items(KEY)) == {**want, b"after": b"1"}
        again.delete(KEY, b"after")
        assert again.hash_all() == before
