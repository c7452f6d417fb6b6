"""Files written by real etcd / bbolt read back as their MANIFEST.md says."""

from __future__ import annotations

import shutil
import struct

import pytest

from storage import DB, MemoryFile
from storage.freelist import decode_freelist
from storage.page import NO_FREELIST, read_header
from storage_helpers import dump, dump_db, fixture

ETCD_BUCKETS = [b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key", b"lease", b"members",
                b"members_removed", b"meta"]

ALL_DBS = [
    "etcd-3.4.23/bbolt/bbolt-freelist-sync.db",
    "etcd-3.4.23/bbolt/bbolt-new-empty.db",
    "etcd-3.4.23/bbolt/etcd-branch-overflow.db",
    "etcd-3.4.23/bbolt/etcd-small.db",
    "etcd-3.5.1/datadir/member/snap/db",
    "etcd-3.5.1/cluster/m1/member/snap/db",
    "etcd-3.5.1/cluster/m3/member/snap/db",
    "etcd-3.5.1/restore-3member-r1/member/snap/db",
    "etcd-3.5.1/snapshot.db",
]


def rev(main: int, sub: int = 0, tombstone: bool = False) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub) + (b"t" if tombstone else b"")


def u64be(n: int) -> bytes:
    return struct.pack(">Q", n)


def open_ro(rel: str) -> DB:
    return DB.open(fixture(rel), read_only=True)


def test_second_writer_waits_for_the_lock(tmp_path):
    from storage import LockTimeoutError
    path = tmp_path / "db"
    with DB.open(path):
        with pytest.raises(LockTimeoutError):
            DB.open(path, lock_timeout_s=0.1)
    DB.open(path, lock_timeout_s=0).close()


def test_etcd_small_34():
    db = open_ro("etcd-3.4.23/bbolt/etcd-small.db")
    assert (db._meta.txid, db._meta.root, db._meta.pgid, db._meta.freelist) == (13, 3, 5, NO_FREELIST)
    with db.view() as tx:
        assert tx.bucket_names() == ETCD_BUCKETS
        d = dump(tx)
        # the value sizes of the root page's elements (spec §13): all buckets inline
        root = tx.page(3)
        sizes = dict(zip(root.keys, map(len, root.vals)))
        assert sizes == {b"alarm": 32, b"auth": 68, b"authRoles": 72, b"authUsers": 62, b"cluster": 67,
                         b"key": 350, b"lease": 69, b"members": 181, b"members_removed": 32, b"meta": 175}
        assert all(tx.bucket(n).root == 0 for n in ETCD_BUCKETS)
    assert list(d[b"key"]) == [rev(3), rev(4), rev(5), rev(6, tombstone=True), rev(7), rev(7, 1)]
    assert d[b"key"][rev(4)] == bytes.fromhex("0a03666f6f100218042002 2a0462617232".replace(" ", ""))
    assert d[b"meta"][b"consistent_index"] == u64be(16)
    assert d[b"meta"][b"scheduledCompactRev"] == d[b"meta"][b"finishedCompactRev"] == rev(4)
    assert list(d[b"lease"]) == [bytes.fromhex("4c35a20be3e47d06")]
    assert d[b"auth"] == {b"authRevision": u64be(5)}
    assert list(d[b"authRoles"]) == [b"r1"] and list(d[b"authUsers"]) == [b"u1"]
    assert d[b"members"] == {b"4959fa27aa214c35": b'{"id":5285530685960965173,"peerURLs":["http://127.0.0.1:22380"],'
                             b'"name":"fx1","clientURLs":["http://127.0.0.1:22379"]}'}
    assert d[b"cluster"] == {b"clusterVersion": b"3.4.0"}
    assert d[b"alarm"] == {} and d[b"members_removed"] == {}


def test_etcd_branch_overflow_34():
    db = open_ro("etcd-3.4.23/bbolt/etcd-branch-overflow.db")
    assert (db._meta.txid, db._meta.root, db._meta.pgid) == (16, 41, 42)
    with db.view() as tx:
        key = tx.bucket(b"key")
        assert key.root == 39
        top = tx.page(39)
        assert not top.is_leaf and len(top.keys) == 33
        rows = list(key.items())
        big = tx.page(34)
        assert big.is_leaf and big.overflow == 2
    assert len(rows) == 601
    assert [k for k, _ in rows] == ([rev(m) for m in range(2, 403)] + [rev(m, tombstone=True) for m in range(403, 603)])
    big_value = dict(rows)[rev(402)]
    assert bytes(range(256)) * 40 in big_value and b"big" in big_value
    assert (b"v0007-" * 33) in dict(rows)[rev(9)]


def test_bbolt_freelist_sync():
    db = open_ro("etcd-3.4.23/bbolt/bbolt-freelist-sync.db")
    assert (db._meta.txid, db._meta.root, db._meta.freelist, db._meta.pgid) == (3, 42, 43, 44)
    raw = fixture("etcd-3.4.23/bbolt/bbolt-freelist-sync.db").read_bytes()
    assert decode_freelist(raw[43 * 4096:44 * 4096], 43, 44) == list(range(4, 25))
    d = dump_db(db)
    assert list(d) == [b"b1"]
    b1 = d[b"b1"]
    expected = {b"key%04d" % i: bytes(100) for i in range(300) if i % 3}
    expected[b"nested"] = {b"x": b"y"}
    assert b1 == expected
    with db.view() as tx:
        assert tx.bucket(b"b1").bucket(b"nested").root == 0  # inline


def test_bbolt_new_empty():
    db = open_ro("etcd-3.4.23/bbolt/bbolt-new-empty.db")
    assert (db._meta.txid, db._meta.root, db._meta.freelist, db._meta.pgid) == (1, 3, 2, 4)
    assert dump_db(db) == {}


def test_etcd_351_datadir():
    d = dump_db(open_ro("etcd-3.5.1/datadir/member/snap/db"))
    assert list(d) == ETCD_BUCKETS
    assert list(d[b"key"]) == [rev(3), rev(4), rev(5), rev(6, tombstone=True), rev(7), rev(7, 1), rev(8), rev(9),
                               rev(10)]
    assert d[b"key"][rev(9)] == b"\n\x07/app/k1\x10\t\x18\t \x01*\x02v1"
    meta = d[b"meta"]
    assert meta[b"consistent_index"] == u64be(40) and meta[b"term"] == u64be(2)
    assert meta[b"confState"] == b'{"voters":[5285530685960965173],"auto_leave":false}'
    assert meta[b"scheduledCompactRev"] == meta[b"finishedCompactRev"] == rev(4)
    assert d[b"auth"] == {b"authEnabled": b"\x01", b"authRevision": u64be(9)}
    assert list(d[b"authUsers"]) == [b"root", b"u1"] and list(d[b"authRoles"]) == [b"r1", b"root"]
    assert d[b"authRoles"][b"r1"] == b"\n\x02r1\x12\x10\x08\x02\x12\x05/app/\x1a\x05/app0"
    assert d[b"authUsers"][b"root"].startswith(b"\n\x04root\x12<$2a$10$")
    assert list(d[b"lease"]) == [bytes.fromhex("4c35a20c009e9406")]
    assert d[b"members"] == {b"4959fa27aa214c35": b'{"id":5285530685960965173,"peerURLs":["http://127.0.0.1:22380"],'
                             b'"name":"fx1"}'}
    assert d[b"cluster"] == {b"clusterVersion": b"3.5.0"}
    assert d[b"alarm"] == {} and d[b"members_removed"] == {}


@pytest.mark.parametrize("member", ["m1", "m3"])
def test_etcd_351_cluster(member):
    d = dump_db(open_ro(f"etcd-3.5.1/cluster/{member}/member/snap/db"))
    assert list(d[b"key"]) == [rev(2), rev(3), rev(4), rev(5), rev(6, tombstone=True), rev(7)]
    assert d[b"key"][rev(7)] == b"\n\x01c\x10\x05\x18\x07 \x02*\x014"
    assert d[b"meta"][b"consistent_index"] == u64be(20) and d[b"meta"][b"term"] == u64be(4)
    assert d[b"meta"][b"confState"] == (b'{"voters":[2698808638792898300,11004000251015324663,17268176225074349900],'
                                        b'"auto_leave":false}')
    assert d[b"members"] == {
        b"25741828780196fc": b'{"id":2698808638792898300,"peerURLs":["http://127.0.0.1:32400"],"isLearner":true}',
        b"98b60fed3613e3f7": b'{"id":11004000251015324663,"peerURLs":["http://127.0.0.1:32380"],"name":"m1"}',
        b"efa4e2c93667074c": b'{"id":17268176225074349900,"peerURLs":["http://127.0.0.1:32390"],"name":"m2"}',
    }
    assert d[b"members_removed"] == {b"877c25dc12c9dae0": b"removed"}
    assert list(d[b"lease"]) == [bytes.fromhex("63f7a20c0185c506")]


def test_restore_3member():
    d = dump_db(open_ro("etcd-3.5.1/restore-3member-r1/member/snap/db"))
    assert d[b"meta"][b"consistent_index"] == u64be(3) and d[b"meta"][b"term"] == u64be(1)
    assert sorted(d[b"members"]) == [b"42e00a14296fa14a", b"c82de2aefa87f719", b"d6db3434b0838f1c"]


def test_snapshot_image_equals_write_to():
    """snapshot.db is bbolt's Tx.WriteTo output (+ 32-byte sha256); ours must produce the same bytes."""
    raw = fixture("etcd-3.5.1/snapshot.db").read_bytes()
    image = raw[:-32]
    db = DB(MemoryFile(image), read_only=True)
    assert db._meta.txid == 23
    out = MemoryFile()

    class Sink:
        def write(self, b):
            out.write(out.size(), b)

    with db.view() as tx:
        assert tx.write_to(Sink()) == len(image)
    assert bytes(out.data) == image


@pytest.mark.parametrize("rel", ALL_DBS)
def test_cursor_both_ways_and_check(rel, tmp_path):
    path = tmp_path / "db"
    shutil.copyfile(fixture(rel), path)
    original = path.read_bytes()
    for no_sync in (True, False):
        if not no_sync:
            path.write_bytes(original)
        db = DB.open(path, no_freelist_sync=no_sync)
        with db.view() as tx:
            assert tx.check() == []

            def both_ways(b):
                c = b.cursor()
                fwd = []
                kv = c.first()
                while kv is not None:
                    fwd.append(kv)
                    kv = c.next()
                back = []
                kv = c.last()
                while kv is not None:
                    back.append(kv)
                    kv = c.prev()
                assert back == fwd[::-1]
                for k, v in fwd:
                    assert c.seek(k) == (k, v)
                    if v is None:
                        both_ways(b.bucket(k))
                    else:
                        assert b.get(k) == v

            for name in tx.bucket_names():
                both_ways(tx.bucket(name))
        db.close()


def test_no_freelist_rebuilds_free_pages(tmp_path):
    path = tmp_path / "db"
    shutil.copyfile(fixture("etcd-3.4.23/bbolt/etcd-small.db"), path)
    db = DB.open(path, no_freelist_sync=True)
    assert db._freelist.ids == [2, 4]  # spec §13: pages 2 and 4 are stale
    db.close()


def test_opening_with_freelist_sync_writes_one(tmp_path):
    """Like bbolt without NoFreelistSync: a file without a freelist gets one at open."""
    path = tmp_path / "db"
    shutil.copyfile(fixture("etcd-3.4.23/bbolt/etcd-small.db"), path)
    with DB.open(path, read_only=True) as ro:  # (an open reader's shared flock would block the writer)
        before = dump_db(ro)
    db = DB.open(path, lock_timeout_s=5)
    assert db._meta.txid == 14 and db._meta.freelist != NO_FREELIST
    raw = path.read_bytes()
    _, flags, count, _ = read_header(raw, db._meta.freelist * 4096)
    assert flags == 0x10
    db.close()
    with DB.open(path, read_only=True) as ro:
        assert dump_db(ro) == before
