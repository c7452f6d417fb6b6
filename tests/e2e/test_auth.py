"""etcdctl 3.5.1's auth, user and role commands and --user against real etcd 3.5.1 and trietcd, side by side,
and a data dir with auth enabled that trietcd wrote, served by etcd."""

from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start

JWT_KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "jwt"
JWT_RS256 = f"jwt,pub-key={JWT_KEYS / 'rs.pub'},priv-key={JWT_KEYS / 'rs.key'},sign-method=RS256"

# (etcdctl arguments, stdin)
SCRIPT = [
    (["user", "add", "root", "--new-user-password=rootpw"], None),
    (["user", "add", "alice", "--new-user-password=alicepw"], None),
    (["role", "add", "app"], None),
    (["role", "grant-permission", "app", "readwrite", "app/", "--prefix"], None),
    (["role", "grant-permission", "app", "read", "cfg"], None),
    (["role", "grant-permission", "app", "write", "w", "--from-key"], None),
    (["user", "grant-role", "alice", "app"], None),
    (["auth", "enable"], None),
    (["put", "cfg", "1", "--user", "root:rootpw"], None),
    (["put", "secret", "s", "--user", "root:rootpw"], None),
    (["put", "app/a", "1", "--user", "alice:alicepw"], None),
    (["put", "app/a", "2", "--prev-kv", "--user", "alice:alicepw"], None),
    (["put", "x", "2", "--prev-kv", "--user", "alice:alicepw"], None),  # write-only: prev_kv needs read
    (["put", "x", "3", "--user", "alice:alicepw"], None),
    (["get", "cfg", "--user", "alice:alicepw"], None),
    (["get", "w", "--from-key", "--user", "alice:alicepw"], None),
    (["get", "app/", "--prefix", "-w", "fields", "--user", "alice:alicepw"], None),
    (["put", "cfg", "2", "--user", "alice:alicepw"], None),
    (["get", "secret", "--user", "alice:alicepw"], None),
    (["get", "secret"], None),
    (["txn", "--user", "alice:alicepw"], 'value("cfg") = "1"\n\nput app/b yes\n\nput app/b no\n\n'),
    (["txn", "--user", "alice:alicepw"], 'value("secret") = "s"\n\nput app/b yes\n\n\n'),
    (["txn", "--user", "alice:alicepw"], 'value("cfg") = "1"\n\nget secret\n\n\n'),
    (["del", "app/", "--prefix", "--user", "alice:alicepw"], None),
    (["del", "cfg", "--user", "alice:alicepw"], None),
    (["watch", "secret", "--user", "alice:alicepw"], None),
    (["lock", "app/lock", "--user", "alice:alicepw", "echo", "locked"], None),
    (["lock", "mylock", "--user", "alice:alicepw", "echo", "locked"], None),
    (["lock", "mylock", "--user", "root:rootpw", "echo", "locked"], None),
    (["user", "list", "--user", "alice:alicepw"], None),
    (["user", "get", "alice", "--user", "alice:alicepw"], None),
    (["user", "get", "root", "--user", "alice:alicepw"], None),
    (["role", "get", "app", "--user", "alice:alicepw"], None),
    (["role", "get", "root", "--user", "alice:alicepw"], None),
    (["user", "passwd", "alice", "--interactive=false", "--user", "root:rootpw"], "newpw\n"),
    (["get", "cfg", "--user", "alice:alicepw"], None),
    (["get", "cfg", "--user", "alice:newpw"], None),
    (["role", "revoke-permission", "app", "cfg", "--user", "root:rootpw"], None),
    (["get", "cfg", "--user", "alice:newpw"], None),
    (["auth", "status", "--user", "root:rootpw"], None),
    (["auth", "status", "-w", "json", "--user", "root:rootpw"], None),
    (["user", "add", "nopw", "--no-password", "--user", "root:rootpw"], None),
    (["get", "cfg", "--user", "nopw:x"], None),
    # bcrypt reads 72 bytes of a password; Go's bcrypt of etcd 3.5.1 ignores the rest.
    (["user", "add", "long", "--new-user-password=" + "p" * 72 + "tail1", "--user", "root:rootpw"], None),
    (["user", "grant-role", "long", "root", "--user", "root:rootpw"], None),
    (["get", "cfg", "--user", "long:" + "p" * 72 + "other"], None),
    (["get", "cfg", "--user", "long:" + "p" * 71], None),
    (["role", "delete", "app", "--user", "root:rootpw"], None),
    (["user", "get", "alice", "--user", "root:rootpw"], None),
    (["auth", "disable", "--user", "alice:newpw"], None),
    (["auth", "disable", "--user", "root:rootpw"], None),
    (["get", "secret"], None),
    (["user", "delete", "root"], None),
]

_MASKS = [
    (re.compile(r'"ts":"[^"]*"'), '"ts":"<TS>"'),
    (re.compile(r"0xc[0-9a-f]+"), "<PTR>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "<ENDPOINT>"),
    (re.compile(r'"(cluster_id|member_id|raft_term)":\d+'), r'"\1":<ID>'),
    (re.compile(r'"(ClusterID|MemberID|RaftTerm)" : \d+'), r'"\1" : <ID>'),
]


def normalized(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def play(server) -> list[tuple]:
    out = []
    for args, stdin in SCRIPT:
        r = server.etcdctl(*args, input=stdin, timeout=5 if args[0] == "watch" else 20)
        out.append((args, r.returncode, normalized(r.stdout), normalized(r.stderr)))
    return out


@pytest.mark.parametrize("tokens", [(), ("--auth-token", JWT_RS256)], ids=["simple", "jwt"])
def test_etcdctl_auth_flow_as_etcd(tmp_path, tokens):
    (tmp_path / "etcd").mkdir()
    (tmp_path / "trietcd").mkdir()
    servers = [start(tmp_path / "etcd", ETCD_CMD, *tokens),
               start(tmp_path / "trietcd", TRIETCD_CMD, "--bcrypt-cost", "4", *tokens)]
    try:
        with ThreadPoolExecutor(2) as pool:
            expected, got = pool.map(play, servers)
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)
    for want, have in zip(expected, got, strict=True):
        assert have == want


def test_a_data_dir_with_auth_moves_from_trietcd_to_etcd(tmp_path):
    data_dir = tmp_path / "moving.etcd"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = start(tmp_path / "a", TRIETCD_CMD, "--bcrypt-cost", "4", data_dir=data_dir)
    try:
        for args in (["user", "add", "root", "--new-user-password=rootpw"], ["user", "grant-role", "root", "root"],
                     ["role", "add", "r"], ["role", "grant-permission", "r", "read", "k"],
                     ["user", "add", "u", "--new-user-password=upw"], ["user", "grant-role", "u", "r"],
                     ["auth", "enable"], ["put", "k", "v", "--user", "root:rootpw"]):
            r = ours.etcdctl(*args)
            assert r.returncode == 0, r
    finally:
        ours.stop()
    theirs = start(tmp_path / "b", ETCD_CMD, data_dir=data_dir)
    try:
        r = theirs.etcdctl("get", "k", "--user", "u:upw")
        assert (r.returncode, r.stdout) == (0, "k\nv\n")
        r = theirs.etcdctl("put", "k", "w", "--user", "u:upw")
        assert (r.returncode, r.stderr.splitlines()[-1]) == (1, "Error: etcdserver: permission denied")
        r = theirs.etcdctl("get", "k")
        assert (r.returncode, r.stderr.splitlines()[-1]) == (1, "Error: etcdserver: user name is empty")
        r = theirs.etcdctl("auth", "status", "--user", "root:rootpw")
        assert r.stdout == "Authentication Status: true\nAuthRevision: 7\n"
    finally:
        theirs.stop(signal.SIGKILL)
