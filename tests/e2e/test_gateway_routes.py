"""Every route of etcd 3.5.1's JSON gateway, on etcd and on trietcd side by side: one request each, in the
order of proto/gateway_routes.py, the answers compared with what differs between any two members masked
(IDs, hashes, sizes, TTLs counting down, snapshot bytes)."""

from __future__ import annotations

import re

import pytest

from proto.gateway_routes import HTTP_VERBS, ROUTES
from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD
from tests.e2e.test_gateway_lock_election import exchange, started_members, wait_serving


@pytest.fixture
def members(tmp_path):
    yield from started_members(tmp_path)


BODIES = {
    "/v3/kv/range": '{"key":"YQ=="}',
    "/v3/kv/put": '{"key":"YQ==","value":"MQ=="}',
    "/v3/kv/deleterange": '{"key":"Yg=="}',
    "/v3/kv/txn": '{"compare":[{"key":"YQ==","target":"VERSION","version":1}],'
                  '"success":[{"request_range":{"key":"YQ=="}}]}',
    "/v3/kv/compaction": '{"revision":1}',
    "/v3/watch": '{"create_request":{"key":"YQ==","start_revision":1}}',
    "/v3/lease/grant": '{"ID":5,"TTL":60}',
    "/v3/lease/revoke": '{"ID":77}',
    "/v3/kv/lease/revoke": '{"ID":77}',
    "/v3/lease/keepalive": '{"ID":5}',
    "/v3/lease/timetolive": '{"ID":5}',
    "/v3/kv/lease/timetolive": '{"ID":5,"keys":true}',
    "/v3/cluster/member/add": '{"peerURLs":["bad"]}',
    # Not a second conf change right after another: etcd may then wait out its request timeout.
    "/v3/cluster/member/remove": '{"ID":"x"}',
    "/v3/cluster/member/update": '{"ID":1,"peerURLs":["http://127.0.0.1:1"]}',
    "/v3/cluster/member/promote": '{"ID":1}',
    "/v3/maintenance/alarm": '{"action":"GET"}',
    "/v3/maintenance/transfer-leadership": '{"targetID":1}',
    "/v3/maintenance/downgrade": '{"action":"VALIDATE","version":"9.9"}',
    "/v3/auth/user/add": '{"name":"u","password":"p"}',
    "/v3/auth/user/get": '{"name":"u"}',
    "/v3/auth/role/add": '{"name":"r"}',
    "/v3/auth/authenticate": '{"name":"u","password":"p"}',
    "/v3/lock/lock": '{"name":"TA==","lease":5}',
    "/v3/lock/unlock": '{"key":"TC81"}',
    "/v3/election/campaign": '{"name":"RQ==","lease":5,"value":"dg=="}',
    "/v3/election/proclaim": '{"leader":{"name":"RQ==","key":"RS81","rev":"5","lease":"5"},"value":"dw=="}',
    "/v3/election/leader": '{"name":"RQ=="}',
    "/v3/election/observe": '{"name":"RQ=="}',
    "/v3/election/resign": '{"leader":{"name":"RQ==","key":"RS81","rev":"5","lease":"5"}}',
}
# Streams that only end at their deadline.
DEADLINES = {"/v3/watch", "/v3/election/observe"}

_VOLATILE = re.compile(
    r'"(ID|hash|blob|remaining_bytes|version|dbSize|dbSizeInUse|leader|raftIndex|raftAppliedIndex|name|'
    r'clientURLs|peerURLs|TTL)":("[^"]*"|\d+|\[[^\]]*\])')


def masked(path: str, text: str) -> str:
    text = _VOLATILE.sub(r'"\1":*', text)
    if path == "/v3/maintenance/snapshot":
        # The database's size decides how many pieces it comes in: their kinds are what compares.
        head, _, body = text.partition("\n\n")
        text = head + "\n\n" + "\n".join(sorted(set(body.splitlines())))
    return text


def transcript(endpoint: str) -> list[str]:
    out = []
    for path in ROUTES:
        body = BODIES.get(path, "{}")
        headers = (("Grpc-Timeout", "300m"),) if path in DEADLINES else ()
        out.append(f"{path} {body}\n" + masked(path, exchange(endpoint, HTTP_VERBS[path], path, body, headers)))
    return out


def test_every_route_answers_as_etcd(members):
    etcd = members("etcd", ETCD_CMD)
    trietcd = members("trietcd", TRIETCD_CMD)
    wait_serving(etcd.endpoint)
    wait_serving(trietcd.endpoint)
    expected = transcript(etcd.endpoint)
    got = transcript(trietcd.endpoint)
    assert len(expected) == len(ROUTES) == 50
    for want, have in zip(expected, got):
        assert have == want
