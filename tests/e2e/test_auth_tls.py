"""--client-cert-auth logins: with auth enabled, a call without a token is made by the user its verified client
certificate names (CommonName); a token, when given, wins. etcd 3.5.1 and trietcd side by side, driven by
etcdctl 3.5.1 with the certificates of tests/wire/test_tls.py (client: CN=root, alice: CN=alice)."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.test_tls import SERVER_KINDS, etcdctl, start, tls_flags
from tests.wire.test_tls import standard_pki

STEPS = [
    ("client", ["user", "add", "root", "--new-user-password=rootpw"]),
    ("client", ["user", "add", "alice", "--new-user-password=alicepw"]),
    ("client", ["role", "add", "r"]),
    ("client", ["role", "grant-permission", "r", "read", "k"]),
    ("client", ["user", "grant-role", "alice", "r"]),
    ("client", ["auth", "enable"]),
    ("client", ["put", "k", "v"]),  # CN=root
    ("alice", ["get", "k"]),
    ("alice", ["put", "k", "x"]),
    ("alice", ["user", "list"]),
    ("alice", ["put", "k", "y", "--user", "root:rootpw"]),  # the token's user, not the certificate's
    ("alice", ["get", "k", "--user", "alice:wrong"]),
    ("client", ["user", "list"]),
    ("client", ["auth", "disable"]),
    ("alice", ["put", "k", "z"]),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return standard_pki(tmp_path_factory.mktemp("pki"))


def test_common_name_logins_alike(pki, tmp_path):
    started = {}
    try:
        for kind in SERVER_KINDS:
            extra = ("--bcrypt-cost", "4") if kind == "trietcd" else ()
            started[kind], _ = start(kind, tmp_path / kind, *tls_flags(pki), *extra)
        transcripts = {kind: [(args, etcdctl(server, *args, pki=pki, cert=cert)) for cert, args in STEPS]
                       for kind, server in started.items()}
    finally:
        for server in started.values():
            server.stop(signal.SIGKILL)
    for want, have in zip(transcripts["etcd"], transcripts["trietcd"], strict=True):
        assert have == want
    outputs = [out for _, (code, out, err) in transcripts["etcd"]]
    assert outputs[7] == "k\nv\n"  # alice reads with her certificate alone
