"""Every way into data or administration without the right credentials, tried against one member with auth on:
each attempt must be refused (an error, or a watch cancelled at creation). The test counts the attempts and
lists any that got through; the number of attempts is printed (`pytest -s`).

Users: root (root role); alice (role app: readwrite on the prefix app/, read on config, write on the range
[k, l)); bob (no roles). The TLS side (certificates from another CA, revoked ones, a CN that is no user,
plain HTTP on an https port, a handshake that never finishes) is tried against processes in
tests/e2e/test_tls.py and tests/e2e/test_auth_tls.py, etcd 3.5.1 beside trietcd."""

from __future__ import annotations

import trio

from proto.authpb import auth_pb2
from proto.etcdserverpb import rpc_pb2
from tests.api.test_auth import ANON, Call, handlers, login, setup_users
from tests.server.members import make_member, run_member
from trietcd.wire.grpc_call import GrpcError

P = auth_pb2.Permission
Op = rpc_pb2.RequestOp


def txn(compare=(), success=(), failure=()) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


def put_op(key: bytes) -> Op:
    return Op(request_put=rpc_pb2.PutRequest(key=key, value=b"x"))


def range_op(key: bytes, end: bytes = b"") -> Op:
    return Op(request_range=rpc_pb2.RangeRequest(key=key, range_end=end))


async def watch_refused(h, call: Call, create: rpc_pb2.WatchCreateRequest) -> bool:
    call._requests = [rpc_pb2.WatchRequest(create_request=create)]
    call.sent = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h("Watch", "Watch"), call)
        with trio.fail_after(10):
            while not call.sent:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return call.sent[0].canceled


async def test_no_unauthorized_attempt_is_accepted(tmp_path, mock_clock):
    mock_clock.rate = 1

    async def body(m):
        h = handlers(m)
        await setup_users(h)
        grant = h("Auth", "RoleGrantPermission")
        await grant(rpc_pb2.AuthRoleGrantPermissionRequest(
            name="app", perm=P(key=b"k", range_end=b"l", permType=P.WRITE)), await login(h, "root", "rootpw"))
        root = await login(h, "root", "rootpw")
        await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="bob", password="bobpw"), root)
        await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="gone", password="gonepw"), root)
        alice, bob, gone = (await login(h, "alice", "alicepw"), await login(h, "bob", "bobpw"),
                            await login(h, "gone", "gonepw"))
        await h("Auth", "UserDelete")(rpc_pb2.AuthUserDeleteRequest(name="gone"), root)
        lease = await h("Lease", "LeaseGrant")(rpc_pb2.LeaseGrantRequest(TTL=600), root)
        await h("KV", "Put")(rpc_pb2.PutRequest(key=b"secret", value=b"s", lease=lease.ID), root)
        await h("KV", "Put")(rpc_pb2.PutRequest(key=b"app/x", value=b"1", lease=lease.ID), root)
        # A token from before its user lost a role: issued, then the role is revoked.
        await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="carol", password="carolpw"), root)
        await h("Auth", "UserGrantRole")(rpc_pb2.AuthUserGrantRoleRequest(user="carol", role="app"), root)
        carol = await login(h, "carol", "carolpw")
        await h("Auth", "UserRevokeRole")(rpc_pb2.AuthUserRevokeRoleRequest(name="carol", role="app"), root)
        # A token whose password was changed after it was issued.
        await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="dave", password="davepw"), root)
        dave = await login(h, "dave", "davepw")
        await h("Auth", "UserChangePassword")(
            rpc_pb2.AuthUserChangePasswordRequest(name="dave", password="new"), root)

        kv = {name: h("KV", name) for name in ("Range", "Put", "DeleteRange", "Txn", "Compact")}
        R, W = rpc_pb2.RangeRequest, rpc_pb2.PutRequest
        forged = Call("aaaaaaaaaaaaaaaa.%d" % m.applied_index)
        attempts = [
            # who is calling
            ("no token", kv["Range"](R(key=b"app/x"), ANON)),
            ("garbage token", kv["Range"](R(key=b"app/x"), Call("garbage"))),
            ("forged simple token", kv["Range"](R(key=b"app/x"), forged)),
            ("token of a deleted user", kv["Range"](R(key=b"app/x"), gone)),
            ("token from before a password change", kv["Range"](R(key=b"app/x"), dave)),
            ("token from before a role was revoked", kv["Range"](R(key=b"app/x"), carol)),
            ("a user without roles", kv["Range"](R(key=b"app/x"), bob)),
            ("wrong password", h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="alice", password="x"),
                                                         ANON)),
            ("unknown user", h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="mallory", password="x"),
                                                       ANON)),
            # ranges
            ("read outside the prefix", kv["Range"](R(key=b"secret"), alice)),
            ("read a range wider than the prefix", kv["Range"](R(key=b"app/", range_end=b"b"), alice)),
            ("read everything", kv["Range"](R(key=b"\0", range_end=b"\0"), alice)),
            ("read from a key on", kv["Range"](R(key=b"app/", range_end=b"\0"), alice)),
            ("read l with a permission on [k, l)", kv["Range"](R(key=b"l"), alice)),
            ("write l with a permission on [k, l)", kv["Put"](W(key=b"l", value=b"x"), alice)),
            ("read-only key written", kv["Put"](W(key=b"config", value=b"x"), alice)),
            ("write-only key read", kv["Range"](R(key=b"k1"), alice)),
            ("prev_kv of a write-only key", kv["Put"](W(key=b"k1", value=b"x", prev_kv=True), alice)),
            ("delete outside the prefix", kv["DeleteRange"](rpc_pb2.DeleteRangeRequest(key=b"secret"), alice)),
            ("delete a range past the prefix", kv["DeleteRange"](
                rpc_pb2.DeleteRangeRequest(key=b"app/", range_end=b"b"), alice)),
            ("delete with prev_kv of a write-only key", kv["DeleteRange"](
                rpc_pb2.DeleteRangeRequest(key=b"k1", prev_kv=True), alice)),
            # transactions
            ("txn compare on an unreadable key", kv["Txn"](txn(
                compare=[rpc_pb2.Compare(key=b"secret", target=rpc_pb2.Compare.VERSION)]), alice)),
            ("txn success branch writes an unpermitted key", kv["Txn"](txn(success=[put_op(b"secret")]), alice)),
            ("txn failure branch writes an unpermitted key", kv["Txn"](
                txn(success=[put_op(b"app/y")], failure=[put_op(b"secret")]), alice)),
            ("txn failure branch reads an unpermitted key", kv["Txn"](
                txn(success=[put_op(b"app/y")], failure=[range_op(b"secret")]), alice)),
            ("txn nested write", kv["Txn"](txn(success=[Op(request_txn=txn(success=[put_op(b"secret")]))]),
                                           alice)),
            ("txn nested read in the failure branch", kv["Txn"](
                txn(failure=[Op(request_txn=txn(failure=[range_op(b"secret")]))]), alice)),
            # leases
            ("revoke a lease with an unwritable key", h("Lease", "LeaseRevoke")(
                rpc_pb2.LeaseRevokeRequest(ID=lease.ID), alice)),
            ("revoke a lease anonymously", h("Lease", "LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), ANON)),
            ("put with a lease outside the prefix", kv["Put"](W(key=b"secret", value=b"x", lease=lease.ID), alice)),
            # administration
            ("add a user as a user", h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="x", password="x"), alice)),
            ("grant root to oneself", h("Auth", "UserGrantRole")(
                rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="root"), alice)),
            ("widen one's own role", grant(rpc_pb2.AuthRoleGrantPermissionRequest(
                name="app", perm=P(key=b"\0", range_end=b"\0", permType=P.READWRITE)), alice)),
            ("change another's password", h("Auth", "UserChangePassword")(
                rpc_pb2.AuthUserChangePasswordRequest(name="root", password="x"), alice)),
            ("disable auth as a user", h("Auth", "AuthDisable")(rpc_pb2.AuthDisableRequest(), alice)),
            ("list users as a user", h("Auth", "UserList")(rpc_pb2.AuthUserListRequest(), alice)),
            ("read the root role as a user", h("Auth", "RoleGet")(rpc_pb2.AuthRoleGetRequest(role="root"), alice)),
            ("read another user", h("Auth", "UserGet")(rpc_pb2.AuthUserGetRequest(name="root"), alice)),
            ("add a member as a user", h("Cluster", "MemberAdd")(
                rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True), alice)),
            ("add a member anonymously", h("Cluster", "MemberAdd")(
                rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True), ANON)),
            ("snapshot as a user", h("Maintenance", "Hash")(rpc_pb2.HashRequest(), alice)),
            ("hashkv as a user", h("Maintenance", "HashKV")(rpc_pb2.HashKVRequest(), alice)),
            ("defragment as a user", h("Maintenance", "Defragment")(rpc_pb2.DefragmentRequest(), alice)),
        ]
        accepted = []
        for name, attempt in attempts:
            try:
                await attempt
            except GrpcError:
                continue
            accepted.append(name)
        watches = [
            ("watch an unreadable key", alice, rpc_pb2.WatchCreateRequest(key=b"secret")),
            ("watch wider than the prefix", alice, rpc_pb2.WatchCreateRequest(key=b"app/", range_end=b"b")),
            ("watch from a key on", alice, rpc_pb2.WatchCreateRequest(key=b"app/", range_end=b"\0")),
            ("watch a write-only key", alice, rpc_pb2.WatchCreateRequest(key=b"k1")),
            ("watch without a token", ANON, rpc_pb2.WatchCreateRequest(key=b"app/x")),
            ("watch as a user without roles", bob, rpc_pb2.WatchCreateRequest(key=b"app/x")),
        ]
        for name, who, create in watches:
            caller = Call(who.metadata.get("token"))
            try:
                refused = await watch_refused(h, caller, create)
            except GrpcError:
                refused = True
            if not refused:
                accepted.append(name)
        # etcd 3.5.1 lets any caller, even an anonymous one, compact, move the leader and raise or clear
        # alarms while auth is on (only its auth requests, member changes and the maintenance
        # snapshot/hash/defragment calls need root); operators' scripts rely on that, so trietcd does too.
        await kv["Compact"](rpc_pb2.CompactionRequest(revision=1), ANON)
        await h("Maintenance", "Alarm")(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), bob)
        # Nothing changed behind the refusals.
        got = await kv["Range"](R(key=b"\0", range_end=b"\0"), root)
        assert {kv_.key: kv_.value for kv_ in got.kvs} == {b"secret": b"s", b"app/x": b"1"}
        return len(attempts) + len(watches), accepted

    total, accepted = await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)
    print(f"security matrix: {total} attempts, {len(accepted)} accepted")
    assert total >= 45
    assert accepted == [], accepted
