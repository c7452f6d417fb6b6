import json

from tests.server.members import make_member, run_member
from trietcd.peer import peer_http_app
from trietcd.wire.http1 import Request


def request(method: str, target: str) -> Request:
    return Request(method=method, target=target, headers=(), body=b"", peer="127.0.0.1:1")


async def test_members_as_etcd_serves_them(tmp_path):
    async def body(member):
        return await peer_http_app(member)(request("GET", "/members"))

    resp = await run_member(make_member(tmp_path / "d"), body)
    assert resp.status == 200
    # Exact bytes observed from etcd 3.5.1 started with no flags.
    assert resp.body == (
        b'[{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default",'
        b'"clientURLs":["http://localhost:2379"]}]\n'
    )
    assert ("X-Etcd-Cluster-Id", "cdf818194e3a8c32") in resp.headers


async def test_version_and_unknown_paths(tmp_path):
    async def body(member):
        return peer_http_app(member)

    app = await run_member(make_member(tmp_path / "d"), body)
    resp = await app(request("GET", "/version"))
    assert json.loads(resp.body) == {"etcdserver": "3.5.1", "etcdcluster": "3.5.0"}
    assert resp.body == b'{"etcdserver":"3.5.1","etcdcluster":"3.5.0"}'
    missing = await app(request("GET", "/nope"))
    assert (missing.status, missing.body) == (404, b"404 page not found\n")
    assert (await app(request("POST", "/members"))).status == 405
