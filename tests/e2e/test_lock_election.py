"""The Lock and Election services over grpcio, on real etcd 3.5.1 and on trietcd: one scenario, the same
transcript expected of both (member and cluster IDs, raft terms and granted lease IDs left out)."""

from __future__ import annotations

import threading
import time

import pytest

from proto.v3electionpb import v3election_pb2 as epb
from proto.v3lockpb import v3lock_pb2 as lpb
from tests.e2e import workload
from tests.e2e.workload import grpc, impl_param, kill_leftover_servers, rpc_pb2  # noqa: F401

TIMEOUT_S = 10
IMPLS = [impl_param("etcd"), impl_param("trietcd")]


class Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)

    def close(self) -> None:
        self.channel.close()

    def method(self, path: str, response_type):
        return self.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=response_type.FromString)

    def call(self, path: str, request, response_type):
        """The response, or (code name, details) of the error."""
        try:
            return self.method(path, response_type)(request, timeout=TIMEOUT_S, wait_for_ready=True)
        except grpc.RpcError as exc:
            return (exc.code().name, exc.details())

    def lock(self, name: bytes, lease: int = 0):
        return self.call("/v3lockpb.Lock/Lock", lpb.LockRequest(name=name, lease=lease), lpb.LockResponse)

    def unlock(self, key: bytes):
        return self.call("/v3lockpb.Lock/Unlock", lpb.UnlockRequest(key=key), lpb.UnlockResponse)

    def election(self, method: str, request, response_type):
        return self.call(f"/v3electionpb.Election/{method}", request, response_type)

    def grant(self, lease_id: int) -> None:
        self.call("/etcdserverpb.Lease/LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=30),
                  rpc_pb2.LeaseGrantResponse)

    def keys(self, prefix: bytes) -> list[bytes]:
        end = prefix[:-1] + bytes((prefix[-1] + 1,))
        resp = self.call("/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=prefix, range_end=end, keys_only=True),
                         rpc_pb2.RangeResponse)
        return [kv.key for kv in resp.kvs]

    def wait_keys(self, prefix: bytes, count: int) -> list[bytes]:
        deadline = time.monotonic() + TIMEOUT_S
        while len(keys := self.keys(prefix)) != count:
            assert time.monotonic() < deadline, keys
            time.sleep(0.02)
        return keys


def shown(reply) -> str:
    if isinstance(reply, tuple):
        return repr(reply)
    if reply.HasField("header"):
        for name in ("cluster_id", "member_id", "raft_term"):
            reply.header.ClearField(name)
    return f"{type(reply).__name__} {reply}".replace("\n", " ").strip()


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)))
    thread.start()
    return thread, out


def lock_scenario(c: Client) -> list[str]:
    out = []
    for lease_id in (200, 201, 202):
        c.grant(lease_id)
    out.append(shown(c.lock(b"L", 200)))  # rev 2
    out.append(shown(c.lock(b"L", 200)))  # held by the same lease: the same answer
    waiter, got = in_thread(c.lock, b"L", 201)  # rev 3
    c.wait_keys(b"L/", 2)
    request = lpb.LockRequest(name=b"L", lease=202)
    cancelled = c.method("/v3lockpb.Lock/Lock", lpb.LockResponse).future(request, timeout=TIMEOUT_S)  # rev 4
    c.wait_keys(b"L/", 3)
    cancelled.cancel()  # the client goes away: its key is deleted (rev 5)
    out.append(repr(c.wait_keys(b"L/", 2)))
    out.append(shown(c.unlock(b"L/c8")))  # rev 6
    waiter.join(TIMEOUT_S)
    out.append(shown(got[0]))
    out.append(shown(c.lock(b"L", 12345)))
    out.append(shown(c.unlock(b"")))
    return out


LOCK_TRANSCRIPT = [
    'LockResponse header {   revision: 2 } key: "L/c8"',
    'LockResponse header {   revision: 2 } key: "L/c8"',
    "[b'L/c8', b'L/c9']",
    "UnlockResponse header {   revision: 6 }",
    'LockResponse header {   revision: 6 } key: "L/c9"',
    "('UNKNOWN', 'etcdserver: requested lease not found')",
    "('UNKNOWN', 'etcdserver: key is not provided')",
]


def election_scenario(c: Client) -> list[str]:
    out = []
    for lease_id in (300, 301):
        c.grant(lease_id)

    def election(method, request_type, response_type, **fields):
        return c.election(method, request_type(**fields), response_type)

    out.append(shown(election("Leader", epb.LeaderRequest, epb.LeaderResponse, name=b"E")))
    out.append(shown(election("Proclaim", epb.ProclaimRequest, epb.ProclaimResponse, value=b"x")))
    out.append(shown(election("Resign", epb.ResignRequest, epb.ResignResponse)))
    out.append(shown(election("Campaign", epb.CampaignRequest, epb.CampaignResponse, name=b"E", lease=999)))
    first = election("Campaign", epb.CampaignRequest, epb.CampaignResponse, name=b"E", lease=300, value=b"a")  # 2
    leader_key = epb.LeaderKey()
    leader_key.CopyFrom(first.leader)
    out.append(shown(first))

    # The observer starts with a leader, so its first answer is that leader (a read); the rest follow it.
    observed: list = []
    stream = c.channel.unary_stream("/v3electionpb.Election/Observe",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=epb.LeaderResponse.FromString)
    responses = stream(epb.LeaderRequest(name=b"E"), timeout=TIMEOUT_S, wait_for_ready=True)

    def observe():
        try:
            for resp in responses:
                observed.append(shown(resp))
        except grpc.RpcError as exc:
            observed.append(exc.code().name)

    def wait_observed(count):
        deadline = time.monotonic() + TIMEOUT_S
        while len(observed) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    observer = threading.Thread(target=observe)
    observer.start()
    wait_observed(1)
    out.append(shown(election("Proclaim", epb.ProclaimRequest, epb.ProclaimResponse, leader=leader_key,
                              value=b"b")))  # 3
    stale = epb.LeaderKey(name=b"E", key=leader_key.key, rev=1, lease=300)
    out.append(shown(election("Proclaim", epb.ProclaimRequest, epb.ProclaimResponse, leader=stale, value=b"x")))
    out.append(shown(election("Resign", epb.ResignRequest, epb.ResignResponse, leader=stale)))
    second, got = in_thread(election, "Campaign", epb.CampaignRequest, epb.CampaignResponse, name=b"E", lease=301,
                            value=b"c")  # 4
    c.wait_keys(b"E/", 2)
    out.append(shown(election("Leader", epb.LeaderRequest, epb.LeaderResponse, name=b"E")))
    out.append(shown(election("Resign", epb.ResignRequest, epb.ResignResponse, leader=leader_key)))  # 5
    second.join(TIMEOUT_S)
    out.append(shown(got[0]))
    wait_observed(3)
    responses.cancel()
    observer.join(TIMEOUT_S)
    out.extend(observed)
    return out


ELECTION_TRANSCRIPT = [
    "('UNKNOWN', 'election: no leader')",
    "('UNKNOWN', '\"leader\" field must be provided')",
    "('UNKNOWN', '\"leader\" field must be provided')",
    "('UNKNOWN', 'etcdserver: requested lease not found')",
    'CampaignResponse header {   revision: 2 } leader {   name: "E"   key: "E/12c"   rev: 2   lease: 300 }',
    "ProclaimResponse header {   revision: 3 }",
    "('UNKNOWN', 'election: not leader')",
    "ResignResponse header {   revision: 3 }",
    ('LeaderResponse header {   revision: 4 } kv {   key: "E/12c"   create_revision: 2   mod_revision: 3'
     '   version: 2   value: "b"   lease: 300 }'),
    "ResignResponse header {   revision: 5 }",
    'CampaignResponse header {   revision: 4 } leader {   name: "E"   key: "E/12d"   rev: 4   lease: 301 }',
    ('LeaderResponse header {   revision: 2 } kv {   key: "E/12c"   create_revision: 2   mod_revision: 2'
     '   version: 1   value: "a"   lease: 300 }'),
    ('LeaderResponse header {   revision: 3 } kv {   key: "E/12c"   create_revision: 2   mod_revision: 3'
     '   version: 2   value: "b"   lease: 300 }'),
    ('LeaderResponse header {   revision: 5 } kv {   key: "E/12d"   create_revision: 4   mod_revision: 4'
     '   version: 1   value: "c"   lease: 301 }'),
    "CANCELLED",
]


def played(impl: str, tmp_path, scenario) -> list:
    """The transcript of `scenario(client)` against a fresh server of `impl`."""
    server = workload.start(impl, tmp_path, tmp_path / "data")
    client = Client(server.endpoint)
    try:
        return scenario(client)
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize("impl", IMPLS)
def test_lock(impl, tmp_path):
    assert played(impl, tmp_path, lock_scenario) == LOCK_TRANSCRIPT


@pytest.mark.parametrize("impl", IMPLS)
def test_election(impl, tmp_path):
    assert played(impl, tmp_path, election_scenario) == ELECTION_TRANSCRIPT
