"""The read buffer core: sorted keys kept across writes, and the merge of buffer over committed rows."""

from __future__ import annotations

import random

import pytest

from trietcd.backend.batch import MISSING, BucketBuffer, ReadBuffer, merge_range


@pytest.mark.parametrize("seed", range(5))
def test_sorted_keys_stay_right_through_appends_and_stray_writes(seed):
    rng = random.Random(seed)
    print("seed", seed)
    buf = BucketBuffer()
    next_key = 1000
    for _ in range(2000):
        r = rng.random()
        if r < 0.6:
            key = b"%06d" % next_key  # appends, as the key bucket gets them
            next_key += rng.randint(1, 3)
        elif r < 0.8:
            key = b"%06d" % rng.randint(0, next_key)  # anywhere, often existing
        else:
            assert buf.sorted_keys() == sorted(buf.rows)
            continue
        buf.put(key, None if rng.random() < 0.2 else b"v")
    assert buf.sorted_keys() == sorted(buf.rows)


def test_sorted_keys_are_kept_by_appends_only():
    buf = BucketBuffer()
    buf.put(b"b", b"1")
    keys = buf.sorted_keys()
    buf.put(b"c", b"2")
    buf.put(b"b", None)  # an existing key: the order holds
    assert buf.sorted is keys and keys == [b"b", b"c"]
    buf.put(b"a", b"3")
    assert buf.sorted is None and buf.sorted_keys() == [b"a", b"b", b"c"]


def test_read_buffer_get_and_clear():
    rb = ReadBuffer()
    assert rb.get(b"key", b"a") is MISSING
    rb.put(b"key", b"a", b"1")
    rb.put(b"key", b"b", None)
    assert (rb.get(b"key", b"a"), rb.get(b"key", b"b"), rb.get(b"meta", b"a")) == (b"1", None, MISSING)
    assert len(rb) == 2
    buckets = rb.buckets
    rb.clear()
    assert rb.buckets is buckets and not buckets and rb.get(b"key", b"a") is MISSING


def committed_rows(rows: dict, start: bytes, end: bytes):
    return iter(sorted((k, v) for k, v in rows.items() if k >= start and (not end or k < end)))


@pytest.mark.parametrize("seed", range(5))
def test_merge_range_matches_a_dict(seed):
    rng = random.Random(seed)
    print("seed", seed)
    keys = [b"%02d" % i for i in range(40)]
    for _ in range(200):
        committed = {k: b"c" + k for k in rng.sample(keys, rng.randint(0, 30))}
        buf = BucketBuffer()
        for k in rng.sample(keys, rng.randint(0, 15)):
            buf.put(k, rng.choice([None, b"b" + k]))
        merged = dict(committed)
        for k, v in buf.rows.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        start = rng.choice(keys)
        end = rng.choice([b"", rng.choice(keys)])
        limit = rng.choice([0, 1, 3, 100])
        want = [(k, v) for k, v in sorted(merged.items()) if k >= start and (not end or k < end)]
        got = merge_range(buf, committed_rows(committed, start, end), start, end, limit)
        assert got == (want[:limit] if limit else want)
        assert merge_range(None, committed_rows(committed, start, end), start, end, limit) == (
            [kv for kv in sorted(committed.items()) if kv[0] >= start and (not end or kv[0] < end)][:limit or None])


def test_merge_range_reads_committed_rows_lazily():
    pulled = []

    def committed():
        for i in range(100):
            pulled.append(i)
            yield (b"%03d" % i, b"c")

    buf = BucketBuffer()
    buf.put(b"000", None)
    assert merge_range(buf, committed(), b"", b"", 2) == [(b"001", b"c"), (b"002", b"c")]
    assert len(pulled) <= 4
