"""Model test: random writes, reads and compactions on KVStore against a naive
model that keeps the whole key -> KeyValue map of every revision.

Seeded; the seed is printed. Replay one with TRIETCD_SEED=<seed>.
"""

import os
import random

import pytest

from trietcd.mvcc import CompactedError, FutureRevError, KeyValue, KVStore, MemoryKeyBucket

KEYS = [b"a", b"a/1", b"a/2", b"b", b"b/1", b"c", b"d", b"\x00", b"\xff"]
SEEDS = [int(os.environ["TRIETCD_SEED"])] if "TRIETCD_SEED" in os.environ else list(range(30))


class Model:
    def __init__(self):
        self.states = {1: {}}  # revision -> {key: KeyValue}
        self.rev = 1
        self.compacted = -1

    def in_range(self, k, key, end):
        if not end:
            return k == key
        if end == b"\x00":
            return k >= key
        return key <= k < end

    def write(self, ops):
        """ops: [("put", k, v, lease) | ("del", key, end)]; returns deleted counts."""
        state = dict(self.states[self.rev])
        new = self.rev + 1
        changed = False
        counts = []
        for op in ops:
            if op[0] == "put":
                _, k, v, lease = op
                prev = state.get(k)
                state[k] = KeyValue(
                    key=k,
                    value=v,
                    lease=lease,
                    mod_revision=new,
                    create_revision=prev.create_revision if prev else new,
                    version=prev.version + 1 if prev else 1,
                )
                changed = True
            else:
                _, key, end = op
                gone = [k for k in state if self.in_range(k, key, end)]
                for k in gone:
                    del state[k]
                counts.append(len(gone))
                changed = changed or bool(gone)
        if changed:
            self.rev = new
            self.states[new] = state
        return counts

    def range(self, key, end, rev):
        if rev > self.rev:
            raise FutureRevError
        if rev <= 0:
            rev = self.rev
        if rev < self.compacted:
            raise CompactedError
        # Revisions without a write keep the previous state.
        r = max(x for x in self.states if x <= rev)
        return sorted((v for k, v in self.states[r].items() if self.in_range(k, key, end)), key=lambda x: x.key)


def random_range(rng):
    key = rng.choice(KEYS)
    end = rng.choice([b"", b"", b"\x00", rng.choice(KEYS), key + b"0"])
    return key, end


@pytest.mark.parametrize("seed", SEEDS)
def test_store_matches_model(seed):
    print(f"seed={seed}")
    rng = random.Random(seed)
    bucket = MemoryKeyBucket()
    store, model = KVStore(bucket), Model()
    for step in range(300):
        pick = rng.random()
        if pick < 0.5:
            ops = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                if rng.random() < 0.7:
                    ops.append(("put", rng.choice(KEYS), rng.choice([b"", b"x", b"y"]), rng.choice([0, 0, 9])))
                else:
                    ops.append(("del", *random_range(rng)))
            want_counts = model.write(ops)
            with store.write() as txn:
                got_counts = []
                for op in ops:
                    if op[0] == "put":
                        txn.put(op[1], op[2], op[3])
                    else:
                        got_counts.append(txn.delete_range(op[1], op[2])[0])
            assert got_counts == want_counts, (seed, step)
            assert store.current_revision == model.rev, (seed, step)
        elif pick < 0.95:
            key, end = random_range(rng)
            rev = rng.choice([0, rng.randint(-1, model.rev + 1)])
            limit = rng.choice([0, 0, 1, 2])
            try:
                want = model.range(key, end, rev)
            except (CompactedError, FutureRevError) as exc:
                with pytest.raises(type(exc)):
                    store.range(key, end, rev=rev, limit=limit)
                continue
            got = store.range(key, end, rev=rev, limit=limit)
            assert got.count == len(want), (seed, step)
            assert got.kvs == (want[:limit] if limit else want), (seed, step)
            assert got.rev == model.rev
        else:
            rev = rng.randint(max(model.compacted, 1), model.rev)
            if rev <= model.compacted:
                with pytest.raises(CompactedError):
                    store.compact(rev)
                continue
            store.compact(rev)
            model.compacted = rev
            check_compacted_rows(bucket, model, rev)


def check_compacted_rows(bucket, model, rev):
    """After compaction at rev, the rows at or below rev are exactly the latest
    row of each key live at rev, and there are no tombstones at or below rev."""
    r = max(x for x in model.states if x <= rev)
    want = sorted((kv.mod_revision, kv.key) for kv in model.states[r].values())
    rows = [(row_rev, kv, tomb) for row_rev, kv, tomb in bucket.items() if row_rev.main <= rev]
    assert not any(tomb for _, _, tomb in rows)
    assert sorted((kv.mod_revision, kv.key) for _, kv, _ in rows) == want
