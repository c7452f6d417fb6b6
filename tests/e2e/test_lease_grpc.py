"""The Lease service over grpcio, real etcd 3.5.1 and trietcd side by side: the same calls on both, the
responses compared with only the member and cluster IDs and the raft term left out."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import pytest

grpc = pytest.importorskip("grpc")

from proto.etcdserverpb import rpc_pb2  # noqa: E402
from tests.e2e import servers  # noqa: E402

TIMEOUT_S = 10


def unary(channel, method: str, request, response_type):
    call = channel.unary_unary(f"/etcdserverpb.{method}", request_serializer=type(request).SerializeToString,
                               response_deserializer=response_type.FromString)
    try:
        return call(request, timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        return (exc.code().name, exc.details())


def shown(reply) -> str:
    if isinstance(reply, tuple):
        return repr(reply)
    reply.header.ClearField("cluster_id")
    reply.header.ClearField("member_id")
    reply.header.ClearField("raft_term")
    return f"{type(reply).__name__} {reply}".replace("\n", " ")


def scenario(server) -> list[str]:
    out = []
    with grpc.insecure_channel(server.endpoint) as channel:
        def call(method, request, response_type):
            out.append(shown(unary(channel, method, request, response_type)))

        call("Lease/LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=11, TTL=60), rpc_pb2.LeaseGrantResponse)
        call("Lease/LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=12, TTL=30), rpc_pb2.LeaseGrantResponse)
        call("KV/Put", rpc_pb2.PutRequest(key=b"a", value=b"1", lease=12), rpc_pb2.PutResponse)
        call("KV/Put", rpc_pb2.PutRequest(key=b"b", value=b"1", lease=12), rpc_pb2.PutResponse)
        call("KV/Put", rpc_pb2.PutRequest(key=b"a", value=b"2", lease=11), rpc_pb2.PutResponse)  # moves a to 11
        call("Lease/LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=12, keys=True),
             rpc_pb2.LeaseTimeToLiveResponse)

        # One keep-alive stream for several leases; a revoke between two of its requests.
        requests: queue.Queue = queue.Queue()
        stream = channel.stream_stream("/etcdserverpb.Lease/LeaseKeepAlive",
                                       request_serializer=rpc_pb2.LeaseKeepAliveRequest.SerializeToString,
                                       response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString)
        responses = stream(iter(requests.get, None), timeout=TIMEOUT_S)
        for lease_id in (11, 12, 99):
            requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            out.append(shown(next(responses)))
        call("Lease/LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=12), rpc_pb2.LeaseRevokeResponse)
        for lease_id in (12, 11):
            requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            out.append(shown(next(responses)))
        requests.put(None)  # half-close: the server ends the stream
        out.append(repr(list(responses)))

        call("KV/Range", rpc_pb2.RangeRequest(key=b"a", range_end=b"c"), rpc_pb2.RangeResponse)
        call("Lease/LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=11, keys=True),
             rpc_pb2.LeaseTimeToLiveResponse)
        call("Lease/LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=12), rpc_pb2.LeaseTimeToLiveResponse)
        call("Lease/LeaseLeases", rpc_pb2.LeaseLeasesRequest(), rpc_pb2.LeaseLeasesResponse)
        call("Lease/LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=12), rpc_pb2.LeaseRevokeResponse)
        call("Lease/LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=11, TTL=5), rpc_pb2.LeaseGrantResponse)
        call("Lease/LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=13, TTL=9_000_000_001), rpc_pb2.LeaseGrantResponse)
    return out


def run(tmp_path, kind, command):
    (tmp_path / kind).mkdir()
    server = servers.start(tmp_path / kind, command)
    try:
        return scenario(server)
    finally:
        server.stop()


def test_lease_calls_over_grpc_like_etcd(tmp_path):
    with ThreadPoolExecutor(2) as pool:
        etcd = pool.submit(run, tmp_path, "etcd", servers.ETCD_CMD)
        ours = pool.submit(run, tmp_path, "trietcd", servers.TRIETCD_CMD)
        expected, got = etcd.result(), ours.result()
    assert got == expected
    # The scenario itself: the revoked lease answers TTL 0 on the stream, the moved key stays with lease 11.
    assert any("ID: 12" in line and "TTL" not in line for line in expected)
