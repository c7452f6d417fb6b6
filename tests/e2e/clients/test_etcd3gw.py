"""etcd3gw (the JSON gateway client of OpenStack) through its public API, against trietcd and etcd 3.5.1."""

from __future__ import annotations

import pytest

from tests.e2e.clients.isolation import load

etcd3gw = load("etcd3gw", globals())

WATCH_TIMEOUT_S = 10


@pytest.fixture
def client(server):
    host, port = server.endpoint.rsplit(":", 1)
    return etcd3gw.client(host=host, port=int(port), timeout=10)


def test_discovers_the_v3_api_path(client):
    assert client.api_path == "/v3/"


def test_status_and_members(client, server):
    status = client.status()
    assert status["version"] == "3.5.1"
    assert int(status["dbSize"]) > 0 and int(status["raftTerm"]) >= 2
    [member] = client.members()
    assert member["ID"] == status["leader"] != "0"
    assert (member["name"], member["clientURLs"], member["peerURLs"]) == ("node1", [server.client_url], [server.peer_url])


def test_put_get_range_delete(client, prefix):
    assert client.put(prefix + b"a", "1") is True
    assert client.put(prefix + b"b", b"2") is True
    assert client.put(prefix + b"c", "3") is True
    assert client.get(prefix + b"a") == [b"1"]
    assert client.get(prefix + b"missing") == []
    [(value, meta)] = client.get(prefix + b"b", metadata=True)
    assert value == b"2"
    assert meta["key"] == prefix + b"b"
    assert int(meta["version"]) == 1
    assert int(meta["create_revision"]) == int(meta["mod_revision"]) > 0

    assert [v for v, _ in client.get_prefix(prefix)] == [b"1", b"2", b"3"]
    assert [m["key"] for _, m in client.get_prefix(prefix, sort_order="descend")] == [
        prefix + b"c", prefix + b"b", prefix + b"a",
    ]
    assert client.get(prefix + b"a", range_end=prefix + b"c") == [b"1", b"2"]

    assert client.create(prefix + b"a", "again") is False
    assert client.create(prefix + b"d", "4") is True
    assert client.replace(prefix + b"d", "4", "5") is True
    assert client.replace(prefix + b"d", "4", "6") is False
    assert client.get(prefix + b"d") == [b"5"]

    assert client.delete(prefix + b"a") is True
    assert client.delete(prefix + b"a") is False
    assert client.delete_prefix(prefix) is True
    assert client.get_prefix(prefix) == []


def test_transaction(client, prefix):
    from etcd3gw.utils import _encode

    key = prefix + b"k"
    client.put(key, "old")
    txn = {
        "compare": [{"key": _encode(key), "result": "EQUAL", "target": "VALUE", "value": _encode(b"old")}],
        "success": [
            {"request_put": {"key": _encode(key), "value": _encode(b"new"), "prev_kv": True}},
            {"request_range": {"key": _encode(key)}},
        ],
        "failure": [{"request_delete_range": {"key": _encode(key)}}],
    }
    result = client.transaction(txn)
    assert result["succeeded"] is True
    put, get = result["responses"]
    assert put["response_put"]["prev_kv"]["value"] == _encode(b"old")
    assert get["response_range"]["kvs"][0]["value"] == _encode(b"new")
    assert get["response_range"]["count"] == "1"

    result = client.transaction(txn)  # the value is "new" now: the failure branch deletes
    assert result.get("succeeded", False) is False
    assert result["responses"][0]["response_delete_range"]["deleted"] == "1"
    assert client.get(key) == []


def test_watch(client, prefix):
    first = client.put(prefix + b"before", "0")
    assert first is True
    revision = int(client.status()["header"]["revision"])
    events, cancel = client.watch_prefix(prefix, start_revision=revision + 1)
    try:
        client.put(prefix + b"x", "1")
        client.delete(prefix + b"x")
        received = [_next(events), _next(events)]
    finally:
        cancel()
    assert [e.get("type", "PUT") for e in received] == ["PUT", "DELETE"]
    assert received[0]["kv"]["key"] == prefix + b"x"
    assert received[0]["kv"]["value"] == b"1"
    assert int(received[1]["kv"]["mod_revision"]) == revision + 2

    # From history, with the previous value.
    event = client.watch_once(prefix + b"x", timeout=WATCH_TIMEOUT_S, start_revision=revision + 2, prev_kv=True)
    assert event["type"] == "DELETE"
    assert event["prev_kv"]["value"] == "MQ=="  # etcd3gw decodes kv only: b"1" in base64


def _next(events):
    # The iterator blocks without a bound; run it where a stuck watch fails the test instead of hanging it.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(next, events).result(timeout=WATCH_TIMEOUT_S)


def test_lease(client, prefix):
    lease = client.lease(ttl=60)
    assert lease.id > 0
    assert 0 < lease.ttl() <= 60
    client.put(prefix + b"a", "1", lease=lease)
    client.put(prefix + b"b", "2", lease=lease)
    assert sorted(lease.keys()) == [prefix + b"a", prefix + b"b"]
    assert lease.refresh() == 60
    assert lease.revoke() is True
    assert client.get_prefix(prefix) == []
    assert lease.ttl() == -1


def test_lock(client, prefix):
    name = (prefix + b"lock").decode()
    first = client.lock(name, ttl=60)
    second = client.lock(name, ttl=60)
    with first:
        assert first.is_acquired()
        assert second.acquire() is False
        assert not second.is_acquired()
        assert first.refresh() == 60
    assert not first.is_acquired()
    assert second.acquire() is True
    assert second.is_acquired()
    assert second.release() is True
