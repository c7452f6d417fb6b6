"""Auth through the JSON gateway: /v3/auth/* and the token in the HTTP Authorization header, answered alike by
etcd 3.5.1 and trietcd (status and body; the token and the IDs masked)."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start

# (path, body, send the token)
STEPS = [
    ("/v3/auth/user/add", {"name": "root", "password": "pw"}, False),
    ("/v3/auth/user/add", {"name": "u", "password": "upw"}, False),
    ("/v3/auth/role/add", {"name": "r"}, False),
    ("/v3/auth/role/grant", {"name": "r", "perm": {"key": "YQ==", "range_end": "Yg==", "permType": "READWRITE"}},
     False),
    ("/v3/auth/user/grant", {"user": "u", "role": "r"}, False),
    ("/v3/auth/enable", {}, False),
    ("/v3/auth/user/grant", {"user": "root", "role": "root"}, False),
    ("/v3/auth/enable", {}, False),
    ("/v3/kv/put", {"key": "YQ==", "value": "MQ=="}, False),
    ("/v3/auth/authenticate", {"name": "root", "password": "bad"}, False),
    ("/v3/auth/authenticate", {"name": "root", "password": "pw"}, False),
    ("/v3/kv/put", {"key": "YQ==", "value": "MQ=="}, True),
    ("/v3/kv/range", {"key": "YQ=="}, True),
    ("/v3/auth/status", {}, True),
    ("/v3/auth/role/get", {"role": "r"}, True),
    ("/v3/auth/user/get", {"name": "u"}, True),
    ("/v3/auth/user/list", {}, True),
    ("/v3/auth/authenticate", {"name": "u", "password": "upw"}, False),
    ("/v3/kv/put", {"key": "Yg==", "value": "MQ=="}, True),
    ("/v3/kv/range", {"key": "YQ==", "range_end": "Yg=="}, True),
    ("/v3/auth/user/list", {}, True),
    ("/v3/kv/range", {"key": "YQ=="}, "bogus.1"),
    ("/v3/watch", {"create_request": {"key": "eg=="}}, True),
]

_MASKS = [
    (re.compile(r'"token":"[^"]*"'), '"token":"<TOKEN>"'),
    (re.compile(r'"(cluster_id|member_id|raft_term)":"\d+"'), r'"\1":"<ID>"'),
]


def post(url: str, path: str, body: dict, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    if token:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            # A watch answers a stream: its first message is enough.
            return response.status, response.readline().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def play(server) -> list:
    token = None
    out = []
    for path, body, send in STEPS:
        status, text = post(server.client_url, path, body, send if isinstance(send, str) else token if send else None)
        if path == "/v3/auth/authenticate" and status == 200:
            token = json.loads(text)["token"]
        for pattern, replacement in _MASKS:
            text = pattern.sub(replacement, text)
        out.append((path, status, text.strip()))
    return out


def test_gateway_auth_alike(tmp_path):
    (tmp_path / "etcd").mkdir()
    (tmp_path / "trietcd").mkdir()
    servers = [start(tmp_path / "etcd", ETCD_CMD), start(tmp_path / "trietcd", TRIETCD_CMD, "--bcrypt-cost", "4")]
    try:
        expected, got = (play(s) for s in servers)
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)
    for want, have in zip(expected, got, strict=True):
        assert have == want
    assert expected[11][1] == 200 and expected[8][1] != 200  # the token is what let the put through
