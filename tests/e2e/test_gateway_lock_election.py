"""The lock and election routes of the JSON gateway, etcd 3.5.1 and trietcd side by side: the same HTTP
requests in the same order on fresh members of each, every answer (status, headers, body) compared
with the member and cluster IDs and raft terms masked."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import time

import pytest

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start

TIMEOUT_S = 10

# (method, path, JSON body, extra headers). Lease 100 and 101 are granted first; revisions are
# alike on both, so later steps can name them. SETTLE repeats a range, unrecorded, until it shows one
# key: etcd's gateway may answer a waiter's deadline before the server has deleted the waiter's key.
STEPS = [
    ("POST", "/v3/lease/grant", '{"ID":100,"TTL":60}', ()),
    ("POST", "/v3/lease/grant", '{"ID":101,"TTL":60}', ()),
    # Lock: revision 2 is the lock of lease 100.
    ("POST", "/v3/lock/lock", '{"name":"TA==","lease":100}', ()),
    ("POST", "/v3/lock/lock", '{"name":"TA==","lease":"100"}', ()),
    ("POST", "/v3beta/lock/lock", '{"name":"TA==","lease":100}', ()),
    ("POST", "/v3/lock/unlock", "{}", ()),
    ("POST", "/v3/lock/lock", '{"name":"TA==","lease":7}', ()),
    ("POST", "/v3/lock/lock", '{"name":"TA==","lease":"x"}', ()),
    ("GET", "/v3/lock/lock", "", ()),
    ("POST", "/v3/lock", "{}", ()),
    # A waiter whose deadline passes: 504, and its key (revision 3) is deleted (revision 4).
    ("POST", "/v3/lock/lock", '{"name":"TA==","lease":101}', (("Grpc-Timeout", "300m"),)),
    ("SETTLE", "/v3/kv/range", '{"key":"TC8=","range_end":"TDA=","keys_only":true}', ()),
    ("POST", "/v3/kv/range", '{"key":"TC8=","range_end":"TDA=","keys_only":true}', ()),
    ("POST", "/v3/lock/unlock", '{"key":"TC82NA=="}', ()),  # revision 5
    # Election "E": no leader, then lease 100 campaigns (revision 6).
    ("POST", "/v3/election/leader", '{"name":"RQ=="}', ()),
    ("POST", "/v3/election/campaign", '{"name":"RQ==","lease":100,"value":"YQ=="}', ()),
    ("POST", "/v3/election/campaign", '{"name":"RQ==","lease":100,"value":"YQ=="}', ()),
    ("POST", "/v3/election/leader", '{"name":"RQ=="}', ()),
    ("POST", "/v3/election/proclaim",
     '{"leader":{"name":"RQ==","key":"RS82NA==","rev":"6","lease":"100"},"value":"Yg=="}', ()),  # revision 7
    ("POST", "/v3/election/proclaim",
     '{"leader":{"name":"RQ==","key":"RS82NA==","rev":"5","lease":"100"},"value":"Yg=="}', ()),
    ("POST", "/v3/election/proclaim", '{"value":"Yg=="}', ()),
    ("POST", "/v3/election/proclaim", '{"leader":{},"value":"Yg=="}', ()),
    ("POST", "/v3/election/resign", '{"leader":{"name":"RQ==","key":"RS82NA==","rev":"1","lease":"100"}}', ()),
    ("POST", "/v3/election/resign", "{}", ()),
    # A candidate whose deadline passes resigns (revisions 8 and 9).
    ("POST", "/v3/election/campaign", '{"name":"RQ==","lease":101,"value":"Yw=="}', (("Grpc-Timeout", "300m"),)),
    ("SETTLE", "/v3/kv/range", '{"key":"RS8=","range_end":"RTA=","keys_only":true}', ()),
    ("POST", "/v3/kv/range", '{"key":"RS8=","range_end":"RTA=","keys_only":true}', ()),
    # Observe until its deadline: the leader, then the deadline's error as the stream's last line.
    ("POST", "/v3/election/observe", '{"name":"RQ=="}', (("Grpc-Timeout", "500m"),)),
    ("POST", "/v3/election/observe", '{"name":1}', ()),
    ("POST", "/v3/election/resign", '{"leader":{"name":"RQ==","key":"RS82NA==","rev":"6","lease":"100"}}', ()),
    ("POST", "/v3/election/leader", '{"name":"RQ=="}', ()),
]

_MASKED = re.compile(r'"(cluster_id|member_id|raft_term)":"\d+"')
# A stream that reaches its deadline ends, on etcd, with whichever error comes first: its handler's
# (UNKNOWN, as etcd returns the context's error) or the gateway's own client's (DEADLINE_EXCEEDED).
_DEADLINE_UNKNOWN = '{"grpc_code":2,"http_code":500,"message":"context deadline exceeded","http_status":"Internal Server Error"}'
_DEADLINE = '{"grpc_code":4,"http_code":504,"message":"context deadline exceeded","http_status":"Gateway Timeout"}'


def exchange(endpoint: str, method: str, path: str, body: str, headers) -> str:
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body.encode(), headers=dict(headers))
        resp = conn.getresponse()
        data = resp.read().decode()
        shown = [f"{resp.status} {resp.reason}"]
        shown += [f"{k}: {v}" for k, v in resp.getheaders() if k not in ("Date", "Content-Length")]
        data = _MASKED.sub(r'"\1":"*"', data).replace(_DEADLINE_UNKNOWN, _DEADLINE)
        return "\n".join(shown) + "\n\n" + data
    finally:
        conn.close()


def transcript(endpoint: str) -> list[str]:
    out = []
    for method, path, body, headers in STEPS:
        if method == "SETTLE":
            deadline = time.monotonic() + TIMEOUT_S
            while exchange(endpoint, "POST", path, body, headers).count('"key"') != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            continue
        out.append(f"{method} {path} {body}\n" + exchange(endpoint, method, path, body, headers))
    return out


@pytest.fixture
def members(tmp_path):
    yield from started_members(tmp_path)


def started_members(tmp_path):
    """The body of a `members` fixture: a function starting a named server with flags; all killed after."""
    started = []

    def _start(name, command, *flags):
        (tmp_path / name).mkdir()
        server = start(tmp_path / name, command, *flags)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop(signal.SIGKILL)


def wait_serving(endpoint: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            if "200" in exchange(endpoint, "GET", "/health", "", ()).split("\n", 1)[0]:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_lock_and_election_routes_answer_as_etcd(members):
    etcd = members("etcd", ETCD_CMD)
    trietcd = members("trietcd", TRIETCD_CMD)
    wait_serving(etcd.endpoint)
    wait_serving(trietcd.endpoint)
    expected = transcript(etcd.endpoint)
    got = transcript(trietcd.endpoint)
    for want, have in zip(expected, got):
        assert have == want


def _lock_keys(endpoint: str) -> str:
    return exchange(endpoint, "POST", "/v3/kv/range", '{"key":"TC8=","range_end":"TDA=","keys_only":true}', ())


@pytest.mark.parametrize("impl", [
    "etcd",
    "trietcd",
])
def test_a_lock_waiter_whose_http_client_goes_away_is_removed(members, impl):
    server = members(impl, ETCD_CMD if impl == "etcd" else TRIETCD_CMD)
    wait_serving(server.endpoint)
    exchange(server.endpoint, "POST", "/v3/lock/lock", '{"name":"TA=="}', ())
    host, port = server.endpoint.rsplit(":", 1)
    body = b'{"name":"TA=="}'
    with socket.create_connection((host, int(port))) as waiter:
        waiter.sendall(b"POST /v3/lock/lock HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + TIMEOUT_S
        while _lock_keys(server.endpoint).count('"key"') != 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    deadline = time.monotonic() + 3
    while _lock_keys(server.endpoint).count('"key"') != 1:
        assert time.monotonic() < deadline, "the waiter's key is still there"
        time.sleep(0.05)
