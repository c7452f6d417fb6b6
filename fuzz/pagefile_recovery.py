"""Fuzz target: a mutated page file opens, reads and checks cleanly, or raises CorruptError.

For any input: opening (with and without a stored freelist), reading every
bucket both ways and `Tx.check()` either succeed or raise `CorruptError` —
never another exception, never a hang. When the check finds nothing wrong,
a write transaction must commit and leave a file that still checks clean
and reopens with the same contents.

    python fuzz/pagefile_recovery.py fuzz/corpus/pagefile_recovery/*        # each input once
    python fuzz/pagefile_recovery.py fuzz/corpus/pagefile_recovery -atheris_runs=20000
    python fuzz/pagefile_recovery.py fuzz/corpus/pagefile_recovery -max_total_time=60

Without atheris installed, or when every argument is a file, each file given
is run once (that is what CI does); otherwise the arguments go to libFuzzer.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fuzz import harness  # noqa: E402

from storage import DB, CorruptError, MemoryFile  # noqa: E402

NESTING_MAX = 16


def _read_all(bucket, depth: int = 0) -> dict:
    c = bucket.cursor()
    forward = []
    kv = c.first()
    while kv is not None:
        forward.append(kv)
        kv = c.next()
    backward = []
    kv = c.last()
    while kv is not None:
        backward.append(kv)
        kv = c.prev()
    assert backward == forward[::-1]
    out = {}
    for k, v in forward:
        if v is None:
            child = bucket.bucket(k)
            assert child is not None
            out[k] = _read_all(child, depth + 1) if depth < NESTING_MAX else {}
        else:
            assert bucket.get(k) == v
            out[k] = v
    return out


def _dump(db) -> dict:
    with db.view() as tx:
        return {name: _read_all(tx.bucket(name)) for name in tx.bucket_names()}


def _one(data: bytes, no_sync: bool) -> None:
    f = MemoryFile(data)
    try:
        db = DB(f, no_freelist_sync=no_sync, cache_pages=64)
        with db.view() as tx:
            problems = tx.check()
        before = _dump(db)
    except CorruptError:
        return
    if problems:
        return
    with db.update() as tx:
        b = tx.create_bucket_if_not_exists(b"fuzz")
        b.put(b"k", b"v" * 100)
        for name in [n for n in tx.bucket_names() if n != b"fuzz"][:2]:
            bucket = tx.bucket(name)
            first = bucket.cursor().first()
            if first is not None and first[1] is not None:
                bucket.delete(first[0])
    with db.view() as tx:
        assert tx.check() == [], tx.check()
    after = _dump(db)
    reopened = DB(MemoryFile(bytes(f.data)), no_freelist_sync=no_sync)
    assert _dump(reopened) == after
    assert after[b"fuzz"][b"k"] == b"v" * 100
    assert set(after) >= set(before)


def test_one_input(data: bytes) -> None:
    _one(data, True)
    _one(data, False)


def main() -> None:
    harness.main(test_one_input)


if __name__ == "__main__":
    main()
