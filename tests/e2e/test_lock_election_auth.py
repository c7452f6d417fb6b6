"""Lock and Election under auth, over grpcio, on etcd 3.5.1 and on trietcd: the key work runs with the
caller's permissions (etcd's in-process client passes the caller's token along), so the same transcript
is expected of both."""

from __future__ import annotations

import time

import pytest

from proto.authpb import auth_pb2
from proto.v3electionpb import v3election_pb2 as epb
from proto.v3lockpb import v3lock_pb2 as lpb
from tests.e2e.test_lock_election import TIMEOUT_S, Client, played, shown
from tests.e2e.workload import grpc, impl_param, kill_leftover_servers, rpc_pb2  # noqa: F401

A = "/etcdserverpb.Auth/"


def scenario(c: Client) -> list[str]:
    def auth(method, request, response_type):
        return shown(c.call(A + method, request, response_type))

    setup = [
        auth("UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="pw"), rpc_pb2.AuthUserAddResponse),
        auth("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
             rpc_pb2.AuthUserGrantRoleResponse),
        auth("UserAdd", rpc_pb2.AuthUserAddRequest(name="u", password="upw"), rpc_pb2.AuthUserAddResponse),
        auth("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="r"), rpc_pb2.AuthRoleAddResponse),
        auth("RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(name="r", perm=auth_pb2.Permission(
            permType=auth_pb2.Permission.READWRITE, key=b"L/", range_end=b"L0")),
            rpc_pb2.AuthRoleGrantPermissionResponse),
        auth("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="u", role="r"), rpc_pb2.AuthUserGrantRoleResponse),
        auth("AuthEnable", rpc_pb2.AuthEnableRequest(), rpc_pb2.AuthEnableResponse),
    ]
    out = list(setup)

    def token(name, password):
        return c.method(A + "Authenticate", rpc_pb2.AuthenticateResponse)(
            rpc_pb2.AuthenticateRequest(name=name, password=password), timeout=TIMEOUT_S).token

    user = [("token", token("u", "upw"))]

    def call(path, request, response_type, metadata):
        try:
            reply = c.method(path, response_type)(request, timeout=TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            return repr((exc.code().name, exc.details()))
        if isinstance(reply, lpb.LockResponse):
            reply.ClearField("key")  # holds the granted lease's ID
        return shown(reply)

    lock, unlock = "/v3lockpb.Lock/Lock", "/v3lockpb.Lock/Unlock"
    out.append(call(lock, lpb.LockRequest(name=b"L"), lpb.LockResponse, user))
    out.append(call(lock, lpb.LockRequest(name=b"M"), lpb.LockResponse, user))
    out.append(call(lock, lpb.LockRequest(name=b"L"), lpb.LockResponse, None))
    out.append(call(lock, lpb.LockRequest(name=b"L"), lpb.LockResponse, [("token", "bad.1")]))
    out.append(call(unlock, lpb.UnlockRequest(key=b"M/1"), lpb.UnlockResponse, user))
    el = "/v3electionpb.Election/"
    out.append(call(el + "Leader", epb.LeaderRequest(name=b"E"), epb.LeaderResponse, user))
    out.append(call(el + "Campaign", epb.CampaignRequest(name=b"E", value=b"v"), epb.CampaignResponse, user))
    out.append(call(el + "Resign", epb.ResignRequest(leader=epb.LeaderKey(name=b"E", key=b"E/1", rev=1, lease=1)),
                    epb.ResignResponse, user))
    # Observe cannot read the prefix: etcd's observer gives up and the stream ends without an error.
    observe = c.channel.unary_stream(el + "Observe", request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=epb.LeaderResponse.FromString)
    out.append(repr(list(observe(epb.LeaderRequest(name=b"E"), timeout=TIMEOUT_S, metadata=user))))
    # A waiter whose deadline passes: its cleanup runs as nobody and is refused, so its key stays.
    root = [("token", token("root", "pw"))]
    try:
        c.method(lock, lpb.LockResponse)(lpb.LockRequest(name=b"L"), timeout=0.5, metadata=root)
    except grpc.RpcError as exc:
        # etcd: the client's deadline or the handler's context error, whichever comes first.
        out.append("deadline" if exc.details() in ("Deadline Exceeded", "context deadline exceeded") else
                   repr((exc.code().name, exc.details())))
    time.sleep(0.3)  # etcd answers the deadline before its cleanup would be applied
    held = c.method("/etcdserverpb.KV/Range", rpc_pb2.RangeResponse)(
        rpc_pb2.RangeRequest(key=b"L/", range_end=b"L0", count_only=True), timeout=TIMEOUT_S, metadata=root)
    out.append(f"{held.count} keys under L/")
    # Leases granted for sessions: every call with a usable token (or none) got one before its key work
    # failed; the bad token got none.
    leases = c.method("/etcdserverpb.Lease/LeaseLeases", rpc_pb2.LeaseLeasesResponse)(
        rpc_pb2.LeaseLeasesRequest(), timeout=TIMEOUT_S, metadata=root)
    out.append(f"{len(leases.leases)} leases")
    return out


TRANSCRIPT = ["AuthUserAddResponse header {   revision: 1 }", "AuthUserGrantRoleResponse header {   revision: 1 }",
              "AuthUserAddResponse header {   revision: 1 }", "AuthRoleAddResponse header {   revision: 1 }",
              "AuthRoleGrantPermissionResponse header {   revision: 1 }",
              "AuthUserGrantRoleResponse header {   revision: 1 }", "AuthEnableResponse header {   revision: 1 }",
              "LockResponse header {   revision: 2 }",
              "('UNKNOWN', 'etcdserver: permission denied')",
              "('UNKNOWN', 'etcdserver: user name is empty')",
              "('UNKNOWN', 'etcdserver: invalid auth token')",
              "('UNKNOWN', 'etcdserver: permission denied')",
              "('UNKNOWN', 'etcdserver: permission denied')",
              "('UNKNOWN', 'etcdserver: permission denied')",
              "('UNKNOWN', 'etcdserver: permission denied')",
              "[]",
              "deadline",
              "2 keys under L/",
              "5 leases"]


@pytest.mark.parametrize("impl", [impl_param("etcd"), impl_param("trietcd")])
def test_lock_and_election_use_the_callers_permissions(impl, tmp_path):
    assert played(impl, tmp_path, scenario) == TRANSCRIPT
