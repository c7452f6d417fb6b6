"""Crash at any point of a commit: unsynced writes dropped (or kept), the last write torn at every point.

Reopening must give exactly the state before the commit or the state after
it, and a consistent file (check() clean). Once the meta's sync returned, it
must be the new state.
"""

from __future__ import annotations

import random

import pytest

from storage import DB, CorruptError, MemoryFile
from storage_helpers import RecordingFile, apply_ops, dump_db

PS = 4096


def build_old(no_sync: bool) -> tuple[bytes, dict]:
    f = MemoryFile()
    db = DB(f, no_freelist_sync=no_sync)
    rng = random.Random(7)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(400):
            b.put(b"k%04d" % i, bytes(rng.randrange(50, 150)))
        tx.create_bucket(b"small").put(b"a", b"1")
    return bytes(f.data), dump_db(db)


def new_commit(tx):
    b = tx.bucket(b"b")
    for i in range(0, 400, 3):
        b.delete(b"k%04d" % i)
    for i in range(400, 500):
        b.put(b"k%04d" % i, b"n" * 120)
    b.put(b"huge", b"h" * 9000)
    tx.bucket(b"small").put(b"b", b"2")
    tx.create_bucket(b"fresh").create_bucket(b"inner").put(b"x", b"y")


def tear_points(data: bytes) -> list[int]:
    n = len(data)
    if n == PS:
        pts = set(range(0, 128))  # every byte of the meta part of a page
    else:
        pts = set(range(0, n, 97))
    pts.update({0, 1, 15, 16, 17, n - 1})
    for boundary in range(PS, n, PS):
        pts.update({boundary - 1, boundary, boundary + 1})
    return sorted(p for p in pts if 0 <= p < n)


def crash_images(old: bytes, ops):
    """(description, image, must_be_new) for every crash point of `ops`."""
    syncs = [i for i, op in enumerate(ops) if op[0] == "sync"]
    for k in range(len(ops) + 1):
        last_sync = max((i for i in syncs if i < k), default=-1)
        durable = apply_ops(old, ops[:last_sync + 1])
        unsynced = [op for op in ops[last_sync + 1:k] if op[0] != "sync"]
        must_be_new = bool(syncs) and last_sync == syncs[-1]
        yield f"crash before op {k}, unsynced dropped", durable, must_be_new
        if unsynced:
            yield f"crash before op {k}, unsynced kept", apply_ops(durable, unsynced), must_be_new
            for op in unsynced[:-1]:
                yield f"crash before op {k}, only {op[0]}@{op[1]} kept", apply_ops(durable, [op]), must_be_new
            last = unsynced[-1]
            if last[0] == "write":
                kept = apply_ops(durable, unsynced[:-1])
                for t in tear_points(last[2]):
                    torn = ("write", last[1], last[2][:t])
                    yield f"crash before op {k}, last write torn at {t}", apply_ops(kept, [torn]), must_be_new


@pytest.mark.parametrize("no_sync", [True, False], ids=["no-freelist-sync", "freelist-sync"])
def test_crash_at_every_point_of_a_commit(no_sync):
    old_image, old_state = build_old(no_sync)
    f = RecordingFile(old_image)
    db = DB(f, no_freelist_sync=no_sync)
    f.ops.clear()
    with db.update() as tx:
        new_commit(tx)
    new_state = dump_db(db)
    ops = list(f.ops)
    assert [op[0] for op in ops][-3:] == ["sync", "write", "sync"]
    assert new_state != old_state
    seen = {"old": 0, "new": 0}
    for what, image, must_be_new in crash_images(old_image, ops):
        reopened = DB(MemoryFile(image), no_freelist_sync=no_sync)
        state = dump_db(reopened)
        assert state in (old_state, new_state), what
        if must_be_new:
            assert state == new_state, what
        with reopened.view() as tx:
            assert tx.check() == [], what
        seen["old" if state == old_state else "new"] += 1
        # and the reopened file takes the next commit
        with reopened.update() as tx:
            tx.bucket(b"b").put(b"after", b"crash")
        with reopened.view() as tx:
            assert tx.check() == [], what
    assert seen["old"] > 0 and seen["new"] > 0


def test_bad_newest_meta_opens_previous_commit():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        tx.create_bucket(b"b").put(b"k", b"1")
    first = dump_db(db)
    with db.update() as tx:
        tx.bucket(b"b").put(b"k", b"2")
    slot = db._meta.txid % 2
    image = bytearray(f.data)
    image[slot * PS + 40] ^= 0x01  # flip a bit of the newest meta's root field
    assert dump_db(DB(MemoryFile(image))) == first


def test_both_metas_bad_is_corrupt():
    f = MemoryFile()
    DB(f)
    image = bytearray(f.data)
    image[16] ^= 0xFF
    image[PS + 16] ^= 0xFF
    with pytest.raises(CorruptError, match="page 0"):
        DB(MemoryFile(image))
