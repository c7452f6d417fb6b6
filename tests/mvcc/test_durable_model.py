"""Model test: random writes, txns (some aborted) and compactions on a store on a
backend, with commits and compaction steps at random points and crashes at
random points. After a crash the store is reopened from what was committed and
compared with an in-memory store given the operations that were committed:
every Range at every revision from the compacted one on, HashKV at each of
those revisions, and (once compactions are done) the rows themselves.

Seeded; the seed is printed. Replay one with TRIETCD_SEED=<seed>.
"""

from __future__ import annotations

import os
import random

import pytest

from storage import DB, MemoryFile
from tests.mvcc.fake_backend import FakeBackend
from trietcd.backend import Backend
from trietcd.mvcc import CompactedError, FutureRevError, KVStore

KEYS = [b"a", b"a/1", b"a/2", b"b", b"c", b"d/x", b"\x00", b"\xff"]
SEEDS = [int(os.environ["TRIETCD_SEED"])] if "TRIETCD_SEED" in os.environ else list(range(16))


class FakeDisk:
    def __init__(self) -> None:
        self.backend = FakeBackend()

    def crash(self) -> FakeBackend:
        self.backend = self.backend.image()
        return self.backend


class PageFileDisk:
    """The real backend on a memory file; a crash keeps the file as the last
    commit left it (pages are written only by commits)."""

    def __init__(self) -> None:
        self.file = MemoryFile()
        self.backend = Backend(DB(self.file, no_freelist_sync=True, fsync=False))

    def crash(self) -> Backend:
        self.file = MemoryFile(bytes(self.file.data))
        self.backend = Backend(DB(self.file, no_freelist_sync=True, fsync=False))
        return self.backend


def random_op(rng: random.Random, rev: int, compacted: int):
    pick = rng.random()
    if pick < 0.08 and rev > max(compacted, 1):
        return ("compact", rng.randint(max(compacted + 1, 1), rev))
    ops = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        key = rng.choice(KEYS)
        if rng.random() < 0.7:
            ops.append(("put", key, rng.choice([b"", b"x", b"yy", bytes(rng.randrange(50))]), rng.choice([0, 0, 7])))
        else:
            ops.append(("del", key, rng.choice([b"", b"", b"\x00", rng.choice(KEYS)])))
    return ("txn", ops, rng.random() < 0.1)  # the flag: abort at the end


def apply_op(store: KVStore, op):
    """Returns the Compaction of a compact op, else None."""
    if op[0] == "compact":
        return store.compact(op[1])
    _, ops, abort = op
    txn = store.write()
    for o in ops:
        if o[0] == "put":
            txn.put(o[1], o[2], o[3])
        else:
            txn.delete_range(o[1], o[2])
    if abort:
        txn.abort()
    else:
        txn.end()
    return None


def replay(log) -> KVStore:
    store = KVStore()
    for op in log:
        apply_op(store, op)
    return store


def compare(store: KVStore, ref: KVStore, where: str) -> None:
    """`ref` is in memory: its compactions are done. While one of `store`'s is
    not, rows at or below the compacted revision that it does not keep are still
    there, and HashKV at a revision whose keep set is empty counts them (etcd's
    rule, backend-schema.md §8.2), so only the other revisions compare then."""
    settled = store.pending_compaction is None or store.pending_compaction.done
    assert (store.current_revision, store.compact_revision) == (ref.current_revision, ref.compact_revision), where
    first = max(ref.compact_revision, 1)
    for rev in range(first, ref.current_revision + 1):
        got, want = store.range(b"", b"\x00", rev=rev), ref.range(b"", b"\x00", rev=rev)
        assert (got.kvs, got.count, got.rev) == (want.kvs, want.count, want.rev), (where, rev)
        if rev > ref.compact_revision and (settled or store.index.keep(rev)):
            assert store.hash_kv(rev) == ref.hash_kv(rev), (where, rev)
    if first > 1:
        with pytest.raises(CompactedError):
            store.range(b"a", rev=first - 1)
    with pytest.raises(FutureRevError):
        store.range(b"a", rev=ref.current_revision + 1)
    if settled or store.index.keep(ref.current_revision):
        assert store.hash_kv(0) == ref.hash_kv(0), where


def run(seed: int, disk, steps: int) -> int:
    print(f"seed={seed}")
    rng = random.Random(seed)
    store = KVStore.open(disk.backend)
    log: list = []  # every op applied since the start, in order
    durable = 0  # len(log) at the last commit
    compactions = []  # made, not yet done, in order
    crashes = 0

    def commit() -> None:
        nonlocal durable
        disk.backend.commit()
        durable = len(log)

    for step in range(steps):
        op = random_op(rng, store.current_revision, store.compact_revision)
        compaction = apply_op(store, op)
        log.append(op)
        if compaction is not None:
            compactions.append(compaction)
            if rng.random() < 0.8:
                commit()  # the member commits scheduledCompactRev at once
        if compactions and rng.random() < 0.4:
            if compactions[0].step(rng.choice([1, 2, 3, 8])):
                compactions.pop(0)
            if rng.random() < 0.8:
                commit()
        if rng.random() < 0.2:
            commit()
        if rng.random() < 0.04:
            crashes += 1
            where = f"seed {seed} step {step} crash {crashes}"
            backend = disk.crash()
            log = log[:durable]
            ref = replay(log)
            store = KVStore.open(backend)
            compare(store, ref, where)
            compactions = [store.pending_compaction] if store.pending_compaction is not None else []
    # The end: finish the compactions, commit, reopen, and compare rows too.
    for compaction in compactions:
        compaction.run(rng.choice([1, 5]))
    commit()
    ref = replay(log)
    compare(store, ref, f"seed {seed} end")
    backend = disk.crash()
    store = KVStore.open(backend)
    assert store.pending_compaction is None
    compare(store, ref, f"seed {seed} reopened")
    assert list(store.bucket.raw_items()) == list(ref.bucket.raw_items())
    if isinstance(backend, Backend):
        backend.close()
    return crashes


@pytest.mark.parametrize("seed", SEEDS)
def test_durable_store_matches_memory_store(seed):
    assert run(seed, FakeDisk(), 400) > 0


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_durable_store_on_the_page_file_matches_memory_store(seed):
    run(1000 + seed, PageFileDisk(), 250)
