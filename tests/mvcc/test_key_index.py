"""KeyIndex generations and compaction (etcd 3.5 mvcc/key_index.go rules)."""

import pytest

from trietcd.mvcc.key_index import KeyIndex, RevisionNotFound, TreeIndex
from trietcd.mvcc.revision import Revision as R


def history():
    # put 2, put 4, del 6 | put 8, put 10, del 12 | put 14, put 14.1, put 16
    ki = KeyIndex(b"foo")
    ki.put(R(2))
    ki.put(R(4))
    ki.tombstone(R(6))
    ki.put(R(8))
    ki.put(R(10))
    ki.tombstone(R(12))
    ki.put(R(14))
    ki.put(R(14, 1))
    ki.put(R(16))
    return ki


def test_get_across_generations():
    ki = history()
    assert ki.get(2) == (R(2), R(2), 1)
    assert ki.get(5) == (R(4), R(2), 2)
    for deleted in (1, 6, 7, 12, 13):
        with pytest.raises(RevisionNotFound):
            ki.get(deleted)
    assert ki.get(9) == (R(8), R(8), 1)
    assert ki.get(14) == (R(14, 1), R(14), 2)
    assert ki.get(100) == (R(16), R(14), 3)


def test_tombstone_of_deleted_key_fails():
    ki = KeyIndex(b"k")
    ki.put(R(2))
    ki.tombstone(R(3))
    with pytest.raises(RevisionNotFound):
        ki.tombstone(R(4))


def test_put_needs_increasing_revisions():
    ki = KeyIndex(b"k")
    ki.put(R(5))
    with pytest.raises(AssertionError):
        ki.put(R(5))


def test_since_keeps_last_sub_of_each_main():
    ki = history()
    assert ki.since(9) == [R(10), R(12), R(14, 1), R(16)]
    assert ki.since(1) == [R(2), R(4), R(6), R(8), R(10), R(12), R(14, 1), R(16)]


@pytest.mark.parametrize(
    "at, kept, generations",
    [
        (1, set(), "g(2 4 6) g(8 10 12) g(14 14.1 16)"),
        (2, {R(2)}, "g(2 4 6) g(8 10 12) g(14 14.1 16)"),
        (5, {R(4)}, "g(4 6) g(8 10 12) g(14 14.1 16)"),
        (6, set(), "g(8 10 12) g(14 14.1 16)"),
        (7, set(), "g(8 10 12) g(14 14.1 16)"),
        (10, {R(10)}, "g(10 12) g(14 14.1 16)"),
        (12, set(), "g(14 14.1 16)"),
        (14, {R(14, 1)}, "g(14.1 16)"),
        (16, {R(16)}, "g(16)"),
    ],
)
def test_compact(at, kept, generations):
    ki = history()
    available = set()
    keep = set()
    ki.keep(at, keep)
    ki.compact(at, available)
    assert available == kept == keep
    shown = " ".join(
        "g(" + " ".join(f"{r.main}" if r.sub == 0 else f"{r.main}.{r.sub}" for r in g.revs) + ")"
        for g in ki.generations
    )
    assert shown == generations


def test_tree_index_drops_keys_emptied_by_compaction():
    ti = TreeIndex()
    ti.put(b"a", R(2))
    ti.put(b"b", R(3))
    ti.tombstone(b"a", R(4))
    assert ti.compact(4) == {R(3)}
    assert ti.key_index(b"a") is None
    assert len(ti) == 1
    assert ti.range(b"\x00", b"", 4) == ([b"b"], [R(3)])


def test_tree_index_ranges():
    ti = TreeIndex()
    for i, k in enumerate([b"a", b"b", b"c", b"d"]):
        ti.put(k, R(i + 2))
    assert ti.revisions(b"b", b"", 100, 2) == ([R(3), R(4)], 3)
    assert ti.revisions(b"b", None, 100, 0) == ([R(3)], 1)
    assert ti.revisions(b"b", b"d", 3, 0) == ([R(3)], 1)  # c did not exist at 3
    assert ti.count_revisions(b"a", b"", 100) == 4
    assert ti.range_since(b"a", b"", 3) == [R(3), R(4), R(5)]


def test_sorted_keys_against_a_sorted_list():
    import bisect
    import random

    from trietcd.mvcc.key_index import SortedKeys

    rng = random.Random(7)
    model: list[bytes] = []
    class Small(SortedKeys):
        CHUNK = 4  # many splits and emptied chunks

    keys = Small()
    pool = [b"%03d" % i for i in range(300)]
    for step in range(3000):
        k = rng.choice(pool)
        i = bisect.bisect_left(model, k)
        if i < len(model) and model[i] == k:
            if rng.random() < 0.6:
                keys.remove(k)
                del model[i]
        else:
            keys.add(k)
            model.insert(i, k)
        if step % 50 == 0:
            assert list(keys) == model and len(keys) == len(model)
            lo, hi = sorted(rng.sample(pool, 2))
            assert list(keys.between(lo, hi)) == [x for x in model if lo <= x < hi]
            assert list(keys.between(lo, b"")) == [x for x in model if lo <= x]
            assert list(keys.between(b"999", b"")) == []
    assert list(Small(model)) == model and list(Small(model).between(model[5], model[9])) == model[5:9]
