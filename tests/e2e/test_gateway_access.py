"""The client port's access control as etcd 3.5.1 applies it on an http:// listener (--host-whitelist,
--cors), etcd and trietcd started with the same flags and asked the same requests."""

from __future__ import annotations

import pytest

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD
from tests.e2e.test_gateway_lock_election import exchange, started_members, wait_serving


@pytest.fixture
def members(tmp_path):
    yield from started_members(tmp_path)


FLAGS = ("--host-whitelist", "good.com,127.0.0.1", "--cors", "http://a.com:80,https://b.org:443")

# (method, path, body, headers); the Host header is http.client's own (127.0.0.1:port) unless given.
REQUESTS = [
    ("GET", "/version", "", (("Host", "evil.com:99"),)),
    ("POST", "/v3/kv/range", '{"key":"YQ=="}', (("Host", "evil.com"), ("Origin", "http://a.com:80"))),
    ("GET", "/health", "", (("Host", "[::1]:80"),)),
    ("OPTIONS", "/v3/kv/put", "", (("Host", "good.com"), ("Origin", "http://a.com:80"))),
    ("POST", "/v3/kv/put", '{"key":"YQ==","value":"Yg=="}', (("Origin", "https://b.org:443"),)),
    ("POST", "/v3/kv/range", '{"key":"YQ==","keys_only":true}', (("Host", "good.com:2379"), ("Origin", "http://a.com"))),
]


def transcript(endpoint: str) -> list[str]:
    out = []
    for method, path, body, headers in REQUESTS:
        text = exchange(endpoint, method, path, body, headers)
        # etcd's version and the IDs in a body are not what this compares.
        out.append(f"{method} {path} {headers}\n" + text.replace(endpoint.rsplit(":", 1)[1], "PORT"))
    return out


def test_host_whitelist_and_cors_as_etcd(members):
    etcd = start_with(members, "etcd", ETCD_CMD)
    trietcd = start_with(members, "trietcd", TRIETCD_CMD)
    expected = transcript(etcd.endpoint)
    got = transcript(trietcd.endpoint)
    for want, have in zip(expected, got):
        assert have == want


def start_with(members, name, command):
    server = members(name, command, *FLAGS)
    wait_serving(server.endpoint)
    return server
