"""The write path: page shapes, freelist, pending pages, commit order, errors."""

from __future__ import annotations

import struct

import pytest

from storage import (DB, BucketExistsError, BucketNotFoundError, CorruptError, IncompatibleValueError,
                     KeyRequiredError, KeyTooLargeError, MemoryFile, TxClosedError, TxNotWritableError, compact)
from storage.freelist import Freelist, decode_freelist, encode_freelist
from storage.page import BRANCH, LEAF, NO_FREELIST, read_header
from storage_helpers import RecordingFile, dump_db, fixture

PS = 4096


def header(f: MemoryFile, pgid: int):
    return read_header(bytes(f.data[pgid * PS:pgid * PS + 16]))


def test_new_file_is_bbolts_initial_layout():
    f = MemoryFile()
    DB(f)
    assert bytes(f.data) == fixture("etcd-3.4.23/bbolt/bbolt-new-empty.db").read_bytes()


def test_meta_alternates_and_txids_increase():
    f = MemoryFile()
    db = DB(f)
    for i in range(4):
        with db.update() as tx:
            tx.create_bucket_if_not_exists(b"b").put(b"k", b"%d" % i)
        slot = (2 + i) % 2
        (txid,) = struct.unpack_from("<Q", f.data, slot * PS + 64)
        assert txid == 2 + i
    assert db.stats()["txid"] == 5


def test_commit_writes_pages_then_syncs_then_meta_then_syncs():
    f = RecordingFile()
    db = DB(f)
    f.ops.clear()
    with db.update() as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    kinds = [op[0] for op in f.ops]
    assert kinds[-3:] == ["sync", "write", "sync"]
    meta_write = f.ops[-2]
    assert meta_write[1] == 0 and len(meta_write[2]) == PS  # txid 2 -> meta page 0
    assert all(op[1] >= 2 * PS for op in f.ops[:-3] if op[0] == "write")


def test_split_honours_fill_percent_and_overflow():
    f = MemoryFile()
    db = DB(f, no_freelist_sync=True)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        b.fill_percent = 0.9
        for i in range(300):
            b.put(b"k%05d" % i, bytes(200))
        b.put(b"zz-big", bytes(10000))
    with db.view() as tx:
        b = tx.bucket(b"b")
        root = tx.page(b.root)
        assert not root.is_leaf
        leaves = [tx.page(p) for p in root.vals]
        threshold = int(PS * 0.9)
        for leaf in leaves[:-1]:
            size = 16 + sum(16 + len(k) + len(v) for k, v in zip(leaf.keys, leaf.vals))
            assert size <= threshold
        # each full leaf would exceed the threshold with one more element
        assert all(len(leaf.keys) == len(leaves[0].keys) for leaf in leaves[:-2])
        assert 16 + (len(leaves[0].keys) + 1) * (16 + 6 + 200) > threshold
        big_leaf = leaves[-1]
        assert b"zz-big" in big_leaf.keys
        _, flags, _, overflow = header(f, big_leaf.pgid)
        assert flags == LEAF and overflow >= 2
        assert b.get(b"zz-big") == bytes(10000)
        assert tx.check() == []


def test_default_fill_half():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(100):
            b.put(b"k%05d" % i, bytes(200))
    with db.view() as tx:
        root = tx.page(tx.bucket(b"b").root)
        first = tx.page(root.vals[0])
        assert 16 + len(first.keys) * 222 <= PS // 2 < 16 + (len(first.keys) + 1) * 222


def test_deletes_rebalance_and_merge_down_to_one_leaf():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        b.put(b"nested-marker", b"x")
        sub = b.create_bucket(b"sub")
        for i in range(2000):
            b.put(b"k%05d" % i, bytes(100))
            sub.put(b"s%05d" % i, b"v")
    with db.view() as tx:
        assert not tx.page(tx.bucket(b"b").root).is_leaf
    for lo in range(0, 2000, 500):
        with db.update() as tx:
            b = tx.bucket(b"b")
            for i in range(lo, lo + 500):
                b.delete(b"k%05d" % i)
                b.bucket(b"sub").delete(b"s%05d" % i)
        with db.view() as tx:
            assert tx.check() == []
    with db.view() as tx:
        b = tx.bucket(b"b")
        assert tx.page(b.root).is_leaf  # merged back into one leaf
        assert b.bucket(b"sub").root == 0  # and the empty nested bucket went inline again
        assert dict(b.items()) == {b"nested-marker": b"x", b"sub": None}
    stats = db.stats()
    assert stats["high_water_pgid"] - 2 == stats["free_page_n"] + stats["pending_page_n"] + 2 + 1


def test_inline_bucket_grows_to_pages_and_back():
    db = DB(MemoryFile())
    with db.update() as tx:
        tx.create_bucket(b"b").put(b"a", b"1")
    with db.view() as tx:
        assert tx.bucket(b"b").root == 0
        raw = tx.root.page_node(tx.root.root).vals[0]
        assert raw[:16] == bytes(16) and raw[16 + 8:16 + 12] == b"\x02\x00\x01\x00"
    with db.update() as tx:
        b = tx.bucket(b"b")
        for i in range(40):
            b.put(b"k%03d" % i, bytes(30))  # > page_size / 4
    with db.view() as tx:
        assert tx.bucket(b"b").root != 0
    with db.update() as tx:
        b = tx.bucket(b"b")
        for i in range(40):
            b.delete(b"k%03d" % i)
    with db.view() as tx:
        assert tx.bucket(b"b").root == 0
        assert tx.check() == []
    assert dump_db(db) == {b"b": {b"a": b"1"}}


def test_freelist_page_as_bbolt_writes_it():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(500):
            b.put(b"k%05d" % i, bytes(100))
    with db.update() as tx:
        b = tx.bucket(b"b")
        for i in range(0, 500, 2):
            b.delete(b"k%05d" % i)
    meta = db._meta
    assert meta.freelist != NO_FREELIST
    ids = decode_freelist(bytes(f.data[meta.freelist * PS:(meta.freelist + 1) * PS]), meta.freelist, meta.pgid)
    assert ids == db._freelist.all_ids() and ids == sorted(ids)
    reopened = DB(MemoryFile(f.data))
    assert reopened._freelist.ids == ids


def test_freelist_codec_count_escape():
    ids = list(range(2, 2 + 70000))
    npages = (16 + 8 + 8 * len(ids)) // PS + 1
    data = encode_freelist(5, ids, PS, npages)
    _, flags, count, overflow = read_header(data)
    assert (flags, count, overflow) == (0x10, 0xFFFF, npages - 1)
    assert struct.unpack_from("<Q", data, 16)[0] == 70000
    assert decode_freelist(data, 5, 1 << 20) == ids
    small = encode_freelist(5, [7, 9], PS, 1)
    assert read_header(small)[2] == 2 and decode_freelist(small, 5, 10) == [7, 9]
    with pytest.raises(CorruptError, match="page 5"):
        decode_freelist(small, 5, 8)


def test_freelist_allocate_runs_and_rollback():
    fl = Freelist()
    fl.load([3, 4, 6, 7, 8, 12])
    assert fl.allocate(3) == 6
    assert fl.allocate(2) == 3
    fl.free(9, 20, 1)
    assert fl.ids == [12] and fl.pending == {9: [20, 21]}
    fl.rollback(9)
    assert fl.ids == [3, 4, 6, 7, 8, 12] and fl.pending == {}
    assert fl.allocate(4) == 0


def test_freelist_single_pages_lowest_first_then_runs_and_rollback():
    fl = Freelist()
    fl.load([3, 5, 6, 7, 10, 11])
    assert [fl.allocate(1), fl.allocate(1)] == [3, 5]  # lowest first
    assert fl.free_count() == 4 and fl.ids == [6, 7, 10, 11]
    fl.ids.append(99)  # a copy: readers cannot disturb the writer
    assert fl.allocate(2) == 6 and fl.ids == [10, 11]
    assert fl.allocate(1) == 10
    fl.release(1 << 64)
    fl.rollback(1)
    assert fl.ids == [3, 5, 6, 7, 10, 11] and fl.free_count() == 6
    assert [fl.allocate(1) for _ in range(7)] == [3, 5, 6, 7, 10, 11, 0]


def test_no_freelist_sync_mode_writes_no_freelist_page():
    f = MemoryFile()
    db = DB(f, no_freelist_sync=True)
    with db.update() as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    assert db._meta.freelist == NO_FREELIST
    assert struct.unpack_from("<Q", f.data, 48)[0] == NO_FREELIST
    db2 = DB(MemoryFile(f.data), no_freelist_sync=True)
    assert db2._freelist.ids == db._freelist.all_ids()
    with db2.view() as tx:
        assert tx.check() == []


def test_pending_pages_wait_for_readers():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(200):
            b.put(b"k%04d" % i, b"old" * 30)
    reader = db.begin()
    reader_pages = {reader.bucket(b"b").root} | set(reader.page(reader.bucket(b"b").root).vals)
    for round_ in range(3):
        with db.update() as tx:
            b = tx.bucket(b"b")
            for i in range(200):
                b.put(b"k%04d" % i, b"new%d" % round_)
        # nothing the reader can reach was handed out again
        with db.view() as tx:
            now = {tx.bucket(b"b").root} | set(tx.page(tx.bucket(b"b").root).vals)
        assert not now & reader_pages
        assert reader.bucket(b"b").get(b"k0001") == b"old" * 30
    assert reader.check() == []
    assert db.stats()["pending_page_n"] > 0
    reader.rollback()
    with db.update() as tx:
        tx.bucket(b"b").put(b"x", b"y")
    assert db._freelist.pending_count() <= 10  # released once the reader closed


def test_rollback_discards_everything():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        tx.create_bucket(b"b").put(b"k", b"v")
    image = bytes(f.data)
    free_before = db._freelist.all_ids()
    tx = db.begin(True)
    tx.bucket(b"b").put(b"k2", b"v2")
    tx.create_bucket(b"c")
    tx.delete_bucket(b"b")
    tx.rollback()
    assert bytes(f.data) == image and db._freelist.all_ids() == free_before
    assert dump_db(db) == {b"b": {b"k": b"v"}}
    with pytest.raises(TxClosedError):
        tx.bucket(b"b")


def test_errors():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        b.create_bucket(b"sub")
        with pytest.raises(BucketExistsError):
            tx.create_bucket(b"b")
        with pytest.raises(KeyRequiredError):
            b.put(b"", b"v")
        with pytest.raises(KeyTooLargeError):
            b.put(b"k" * 32769, b"v")
        with pytest.raises(IncompatibleValueError):
            b.put(b"sub", b"v")
        with pytest.raises(IncompatibleValueError):
            b.delete(b"sub")
        b.put(b"plain", b"v")
        with pytest.raises(IncompatibleValueError):
            b.create_bucket(b"plain")
        with pytest.raises(BucketNotFoundError):
            tx.delete_bucket(b"nope")
        assert b.get(b"sub") is None and b.bucket(b"plain") is None
    with db.view() as tx:
        with pytest.raises(TxNotWritableError):
            tx.bucket(b"b").put(b"a", b"b")
        with pytest.raises(TxNotWritableError):
            tx.create_bucket(b"x")


def test_sequence_and_nested_delete():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        assert b.next_sequence() == 1 and b.next_sequence() == 2
        deep = b.create_bucket(b"l1").create_bucket(b"l2")
        for i in range(300):
            deep.put(b"%04d" % i, bytes(50))
    with db.update() as tx:
        assert tx.bucket(b"b").sequence == 2
        tx.bucket(b"b").set_sequence(41)
    with db.view() as tx:
        assert tx.bucket(b"b").sequence == 41
        assert tx.bucket(b"b").bucket(b"l1").bucket(b"l2").stats().key_n == 300
    with db.update() as tx:
        tx.bucket(b"b").delete_bucket(b"l1")
    with db.view() as tx:
        assert tx.check() == []
    assert dump_db(db) == {b"b": {}}


def test_cursor_delete_while_iterating():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(1000):
            b.put(b"%04d" % i, bytes(20))
    with db.update() as tx:
        c = tx.bucket(b"b").cursor()
        kv = c.first()
        while kv is not None:
            if int(kv[0]) % 3:
                c.delete()
            kv = c.next()
    with db.view() as tx:
        assert [k for k, _ in tx.bucket(b"b").items()] == [b"%04d" % i for i in range(0, 1000, 3)]
        assert tx.check() == []


def test_write_to_opens_as_the_same_db():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(500):
            b.put(b"%04d" % i, bytes(100))
    out = MemoryFile()

    class Sink:
        def write(self, data):
            out.write(out.size(), data)

    with db.view() as tx:
        n = tx.write_to(Sink())
        # a writer keeps going while the copy is made
        with db.update() as wtx:
            wtx.bucket(b"b").put(b"later", b"x")
        assert n == tx.size
    copy = DB(out, read_only=True)
    assert copy._meta.txid == 2
    assert dump_db(copy)[b"b"] == {b"%04d" % i: bytes(100) for i in range(500)}


def test_compact_is_dense_and_equal():
    src = DB(MemoryFile())
    with src.update() as tx:
        b = tx.create_bucket(b"b")
        b.set_sequence(7)
        b.create_bucket(b"nested").put(b"x", b"y")
        for i in range(3000):
            b.put(b"%05d" % ((i * 7919) % 3000), bytes(100))
    with src.update() as tx:
        b = tx.bucket(b"b")
        for i in range(0, 3000, 2):
            b.delete(b"%05d" % i)
    dst = DB(MemoryFile())
    compact(src, dst, tx_max_bytes=50_000)
    assert dump_db(dst) == dump_db(src)
    with dst.view() as tx:
        assert tx.check() == [] and tx.bucket(b"b").sequence == 7
        live = sum(len(k) + len(v) + 16 for k, v in tx.bucket(b"b").items() if v)
    assert dst.stats()["size_bytes"] < src.stats()["size_bytes"]
    assert dst.stats()["size_bytes"] <= 1.3 * live + 8 * PS


def test_stats():
    db = DB(MemoryFile())
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(1000):
            b.put(b"%04d" % i, bytes(100))
        b.create_bucket(b"in").put(b"a", b"b")
    with db.view() as tx:
        s = tx.bucket(b"b").stats()
        assert s.key_n == 1002 and s.bucket_n == 2 and s.inline_bucket_n == 1 and s.depth == 2
        assert s.branch_pages == 1 and s.leaf_pages >= 30
    s = db.stats()
    assert s["commit_n"] == 1 and s["open_tx_n"] == 0 and s["written_bytes"] > 0


def test_branch_page_types_written():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(1000):
            b.put(b"%04d" % i, bytes(100))
    with db.view() as tx:
        root = tx.bucket(b"b").root
    _, flags, count, _ = header(f, root)
    assert flags == BRANCH and count > 1


def test_cache_is_bounded_on_reads_and_keeps_branch_pages():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(3000):
            b.put(b"%05d" % i, bytes(100))
    with db.view() as tx:
        root = tx.bucket(b"b").root
        leaves = tx.bucket(b"b").stats().leaf_pages
    assert leaves > 100
    reopened = DB(MemoryFile(f.data), cache_pages=16)
    with reopened.view() as tx:
        b = tx.bucket(b"b")
        before = reopened.stats()["cache_miss_n"]
        for i in range(0, 3000, 7):  # every leaf, in key order
            assert b.get(b"%05d" % i) == bytes(100)
    s = reopened.stats()
    assert s["cache_pages"] == 16
    assert root in reopened._cache
    assert s["cache_miss_n"] - before == leaves + 1  # the bucket's root page was read once, never dropped
