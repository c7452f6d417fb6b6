"""Snapshots between trietcd and etcd 3.5.1, both ways: `etcdctl snapshot save` from one, `snapshot status` and
`snapshot restore` with etcdutl and trietcdutl, and both servers started on the restored data dirs must serve
the same keys, leases and HashKV as the source."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.e2e.servers import ETCD_BIN, ETCD_CMD, TRIETCD_CMD, start

ETCDUTL = [str(ETCD_BIN / "etcdutl")]
TRIETCDUTL = [sys.executable, "-m", "trietcd.tools.etcdutl"]
RESTORE_FLAGS = ["--name", "node1", "--initial-cluster", "node1=http://127.0.0.1:2380",
                 "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster-token", "snap-test"]


def tool(cmd, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=60)


def fill(server) -> None:
    for argv in (["put", "a", "1"], ["put", "b", "2"], ["put", "a", "3"], ["del", "b"], ["put", "c/x", "4"],
                 ["compaction", "3"], ["put", "d", "5"], ["lease", "grant", "1000"]):
        r = server.etcdctl(*argv)
        assert r.returncode == 0, r.stderr
    lease_id = r.stdout.split()[1]
    r = server.etcdctl("put", "leased", "6", "--lease", lease_id)
    assert r.returncode == 0, r.stderr


def state(server) -> dict:
    """What a restored member must serve as its source did."""
    kvs = json.loads(server.etcdctl("get", "", "--prefix", "-w", "json").stdout)
    hashkv = json.loads(server.etcdctl("endpoint", "hashkv", "-w", "json").stdout)[0]["HashKV"]
    leases = server.etcdctl("lease", "list").stdout
    return {"kvs": kvs.get("kvs"), "revision": kvs["header"]["revision"], "hash": hashkv["hash"],
            "compact_revision": hashkv["compact_revision"], "leases": leases}


def save(server, path) -> None:
    r = server.etcdctl("snapshot", "save", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Snapshot saved at {path}\n"


def restore(cmd, snapshot, data_dir) -> None:
    r = tool(cmd, "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir), *RESTORE_FLAGS)
    assert r.returncode == 0, r.stderr


def served(tmp_path, command, data_dir, name: str) -> dict:
    (tmp_path / name).mkdir()
    server = start(tmp_path / name, command, data_dir=data_dir)
    try:
        for _ in range(100):  # the restored member elects itself, then serves
            if server.etcdctl("endpoint", "health").returncode == 0:
                break
        return state(server)
    finally:
        server.stop()


@pytest.fixture
def source(tmp_path, request):
    kind = request.param
    (tmp_path / "source").mkdir()
    server = start(tmp_path / "source", ETCD_CMD if kind == "etcd" else TRIETCD_CMD)
    try:
        fill(server)
        want = state(server)
        save(server, tmp_path / "s.db")
    finally:
        server.stop()
    return kind, want, tmp_path / "s.db"


@pytest.mark.parametrize("source", ["trietcd", "etcd"], indirect=True)
def test_snapshot_moves_between_trietcd_and_etcd(tmp_path, source):
    kind, want, snapshot = source
    status = tool(ETCDUTL, "snapshot", "status", str(snapshot), "-w", "json")
    assert status.returncode == 0, status.stderr
    assert tool(TRIETCDUTL, "snapshot", "status", str(snapshot), "-w", "json").stdout == status.stdout
    assert json.loads(status.stdout)["revision"] == want["revision"]

    restore(ETCDUTL, snapshot, tmp_path / "by-etcdutl")
    restore(TRIETCDUTL, snapshot, tmp_path / "by-trietcdutl")
    shutil.copytree(tmp_path / "by-etcdutl", tmp_path / "by-etcdutl-2")
    shutil.copytree(tmp_path / "by-trietcdutl", tmp_path / "by-trietcdutl-2")
    runs = {
        "etcd on etcdutl's restore": served(tmp_path, ETCD_CMD, tmp_path / "by-etcdutl", "s1"),
        "trietcd on etcdutl's restore": served(tmp_path, TRIETCD_CMD, tmp_path / "by-etcdutl-2", "s2"),
        "trietcd on trietcdutl's restore": served(tmp_path, TRIETCD_CMD, tmp_path / "by-trietcdutl", "s3"),
        "etcd on trietcdutl's restore": served(tmp_path, ETCD_CMD, tmp_path / "by-trietcdutl-2", "s4"),
    }
    for name, got in runs.items():
        assert got == want, name


def auth_outcomes(server, tmp_path) -> list:
    for argv in (["user", "add", "root:rootpw"], ["user", "add", "u:upw"], ["auth", "enable"]):
        assert server.etcdctl(*argv).returncode == 0
    out = []
    for who in ([], ["--user", "u:upw"], ["--user", "root:rootpw"]):
        for argv in (["snapshot", "save", str(tmp_path / "s.db")], ["defrag"], ["endpoint", "hashkv"]):
            r = server.etcdctl(*who, *argv)
            text = r.stdout + "".join(line + "\n" for line in r.stderr.splitlines() if '"level"' not in line)
            out.append((r.returncode, re.sub(r", \d+\n$", ", <HASH>\n",
                                             text.replace(server.endpoint, "<EP>").replace(str(tmp_path), "<T>"))))
    return out


def test_snapshot_defrag_and_hashkv_need_root_as_in_etcd(tmp_path):
    results = []
    for kind, command in (("etcd", ETCD_CMD), ("trietcd", TRIETCD_CMD)):
        (tmp_path / kind).mkdir()
        server = start(tmp_path / kind, command)
        try:
            results.append(auth_outcomes(server, tmp_path / kind))
        finally:
            server.stop()
    assert results[1] == results[0]
    assert results[0][0] == (5, "Error: rpc error: code = Unknown desc = auth: user name is empty\n")
    assert results[0][4][1].endswith("auth: permission denied)\n")  # defrag as u
    assert results[0][6] == (0, "Snapshot saved at <T>/s.db\n")
