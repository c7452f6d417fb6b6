"""The Lease service on a running member, through the registry and the JSON gateway. Expected bodies were
read from etcd 3.5.1 with curl, the same requests in the same order (IDs chosen by the client, so they
compare; the cluster and member IDs are the member's)."""

import pytest
import trio
import trio.lowlevel

from proto.etcdserverpb import rpc_pb2
from tests.api.test_gateway import post, run_stream
from tests.server.members import make_member, run_member
from trietcd.api import build_registry, errors
from trietcd.api.gateway import gateway_app
from trietcd.wire.grpc_call import GrpcError


@pytest.fixture
def clock(mock_clock):
    mock_clock.rate = 1
    return mock_clock


class StreamCall:
    """A bidi stream's call: the requests given, then a half-close; responses are collected."""

    def __init__(self, requests):
        self._requests = list(requests)
        self.sent = []

    async def requests(self):
        for r in self._requests:
            await trio.lowlevel.checkpoint()
            yield r

    async def send(self, message):
        self.sent.append(message)


def header_json(m, revision: int) -> str:
    return (f'{{"cluster_id":"{m.cluster_id}","member_id":"{m.id}","revision":"{revision}",'
            f'"raft_term":"{m.raft_term}"}}')


# (path, body, HTTP status, etcd's response body with the header as {h<revision>})
ETCD_EXCHANGE = [
    ("/v3/lease/grant", '{"TTL":100,"ID":5}', 200, '{"header":{h1},"ID":"5","TTL":"100"}'),
    ("/v3/lease/grant", '{"TTL":100,"ID":5}', 400,
     '{"error":"etcdserver: lease already exists","code":9,"message":"etcdserver: lease already exists"}'),
    ("/v3/lease/grant", '{"TTL":9000000001,"ID":6}', 400,
     '{"error":"etcdserver: too large lease TTL","code":11,"message":"etcdserver: too large lease TTL"}'),
    ("/v3/lease/grant", '{"TTL":1,"ID":7}', 200, '{"header":{h1},"ID":"7","TTL":"2"}'),
    ("/v3/lease/grant", '{"TTL":300,"ID":-3}', 200, '{"header":{h1},"ID":"-3","TTL":"300"}'),
    ("/v3/kv/put", '{"key":"YQ==","value":"MQ==","lease":5}', 200, '{"header":{h2}}'),
    ("/v3/kv/put", '{"key":"Yg==","value":"MQ==","lease":5}', 200, '{"header":{h3}}'),
    ("/v3/kv/put", '{"key":"Yw==","value":"MQ==","lease":99}', 404,
     '{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'),
    ("/v3/lease/timetolive", '{"ID":5,"keys":true}', 200,
     '{"header":{h3},"ID":"5","TTL":"99","grantedTTL":"100","keys":["YQ==","Yg=="]}'),
    ("/v3/kv/lease/timetolive", '{"ID":5}', 200, '{"header":{h3},"ID":"5","TTL":"99","grantedTTL":"100"}'),
    ("/v3/lease/timetolive", '{"ID":99,"keys":true}', 200, '{"header":{h3},"ID":"99","TTL":"-1"}'),
    ("/v3/lease/leases", '{}', 200, '{"header":{h3},"leases":[{"ID":"7"},{"ID":"5"},{"ID":"-3"}]}'),
    ("/v3/kv/lease/leases", '{}', 200, '{"header":{h3},"leases":[{"ID":"7"},{"ID":"5"},{"ID":"-3"}]}'),
    ("/v3/lease/revoke", '{"ID":5}', 200, '{"header":{h4}}'),
    ("/v3/kv/lease/revoke", '{"ID":5}', 404,
     '{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'),
    ("/v3/lease/revoke", '{"ID":0}', 404,
     '{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'),
    ("/v3/kv/range", '{"key":"YQ==","range_end":"ZA=="}', 200, '{"header":{h4}}'),
    ("/v3/kv/txn", '{"success":[{"request_put":{"key":"ZA==","lease":1234}}]}', 404,
     '{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'),
    ("/v3/kv/put", '{"key":"ZQ==","value":"MQ==","lease":-3}', 200, '{"header":{h5}}'),
    ("/v3/kv/range", '{"key":"ZQ=="}', 200,
     '{"header":{h5},"kvs":[{"key":"ZQ==","create_revision":"5","mod_revision":"5","version":"1","value":"MQ==",'
     '"lease":"-3"}],"count":"1"}'),
]


async def test_gateway_answers_as_etcd(tmp_path, clock):
    async def body(m):
        app = gateway_app(build_registry(m))
        for path, request, status, expected in ETCD_EXCHANGE:
            for rev in range(1, 6):
                expected = expected.replace("{h%d}" % rev, header_json(m, rev))
            response = await app(post(path, request))
            assert (path, request, response.status, response.body.decode()) == (path, request, status, expected)
        # Keep-alive: one stream, two leases; an unknown one answers TTL 0 (left out of the JSON).
        writer = await run_stream(await app(post("/v3/lease/keepalive", '{"ID":-3}{"ID":99}')))
        assert writer.status == 200
        assert writer.chunks == [
            b'{"result":{"header":' + header_json(m, 5).encode() + b',"ID":"-3","TTL":"300"}}\n',
            b'{"result":{"header":' + header_json(m, 5).encode() + b',"ID":"99"}}\n',
        ]

    await run_member(make_member(tmp_path / "d"), body)


async def test_grpc_handlers_grant_keep_alive_many_leases_and_revoke(tmp_path, clock):
    async def body(m):
        registry = build_registry(m)

        def handler(name):
            return registry.lookup(f"/etcdserverpb.Lease/{name}").handler

        granted = await handler("LeaseGrant")(rpc_pb2.LeaseGrantRequest(TTL=60), None)
        assert granted.ID > 0 and granted.TTL == 60 and granted.header.member_id == m.id
        other = await handler("LeaseGrant")(rpc_pb2.LeaseGrantRequest(TTL=30), None)
        assert other.ID != granted.ID
        await handler("LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=other.ID), None)
        call = StreamCall([rpc_pb2.LeaseKeepAliveRequest(ID=i) for i in (granted.ID, other.ID, 12345, granted.ID)])
        await handler("LeaseKeepAlive")(call)
        assert [(r.ID, r.TTL) for r in call.sent] == [(granted.ID, 60), (other.ID, 0), (12345, 0), (granted.ID, 60)]
        assert all(r.header.revision == m.store.current_revision for r in call.sent)
        ttl = await handler("LeaseTimeToLive")(rpc_pb2.LeaseTimeToLiveRequest(ID=other.ID), None)
        assert (ttl.ID, ttl.TTL, ttl.grantedTTL) == (other.ID, -1, 0)
        with pytest.raises(GrpcError) as info:
            await handler("LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=other.ID), None)
        assert isinstance(info.value, errors.ErrGRPCLeaseNotFound)
        leases = await handler("LeaseLeases")(rpc_pb2.LeaseLeasesRequest(), None)
        assert [s.ID for s in leases.leases] == [granted.ID]

    await run_member(make_member(tmp_path / "d"), body)
