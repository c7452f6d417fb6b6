"""The Auth service and the permission checks of KV, Watch and Lease on a running member, through the
registry's handlers; errors are etcd 3.5.1's (codes and texts as rpctypes and the auth store have them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from proto.authpb import auth_pb2
from proto.etcdserverpb import rpc_pb2
from tests.server.members import make_member, run_member
from trietcd.api import build_registry, errors
from trietcd.auth import AuthInfo, AuthOldRevisionError
from trietcd.wire.grpc_call import GrpcError, Status

P = auth_pb2.Permission


@pytest.fixture
def clock(mock_clock):
    mock_clock.rate = 1
    return mock_clock


class Call:
    def __init__(self, token: str | None = None, name: str = "token", requests=()) -> None:
        self.metadata = {} if token is None else {name: token}
        self._requests = list(requests)
        self.sent = []

    async def requests(self):
        for r in self._requests:
            await trio.lowlevel.checkpoint()
            yield r

    async def send(self, message):
        self.sent.append(message)


ANON = Call()


def handlers(m):
    registry = build_registry(m)

    def h(service: str, name: str):
        return registry.lookup(f"/etcdserverpb.{service}/{name}").handler

    return h


async def fails(coro, error):
    with pytest.raises(GrpcError) as info:
        await coro
    assert (info.value.code, info.value.message) == (error.CODE, error.MESSAGE), info.value
    return info.value


async def setup_users(h):
    """root (root role), alice (role app: readwrite app/ prefix, read config), auth enabled."""
    await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"), ANON)
    await h("Auth", "UserAdd")(rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw"), ANON)
    await h("Auth", "RoleAdd")(rpc_pb2.AuthRoleAddRequest(name="app"), ANON)
    for key, end, t in ((b"app/", b"app0", P.READWRITE), (b"config", b"", P.READ)):
        await h("Auth", "RoleGrantPermission")(rpc_pb2.AuthRoleGrantPermissionRequest(
            name="app", perm=P(key=key, range_end=end, permType=t)), ANON)
    await h("Auth", "UserGrantRole")(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="app"), ANON)
    await fails(h("Auth", "AuthEnable")(rpc_pb2.AuthEnableRequest(), ANON), errors.ErrGRPCRootRoleNotExist)
    await h("Auth", "UserGrantRole")(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), ANON)
    await h("Auth", "AuthEnable")(rpc_pb2.AuthEnableRequest(), ANON)


async def login(h, name: str, password: str) -> Call:
    resp = await h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name=name, password=password), ANON)
    return Call(resp.token)


async def test_users_roles_login_and_kv_checks(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await fails(h("Auth", "AuthEnable")(rpc_pb2.AuthEnableRequest(), ANON), errors.ErrGRPCRootUserNotExist)
        await fails(h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="root", password="x"), ANON),
                    errors.ErrGRPCAuthNotEnabled)
        await setup_users(h)
        # The hash was made before proposing, at --bcrypt-cost.
        assert m.auth.store.users["alice"].password.startswith(b"$2a$04$")

        await fails(h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="alice", password="bad"), ANON),
                    errors.ErrGRPCAuthFailed)
        await fails(h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="ghost", password="x"), ANON),
                    errors.ErrGRPCAuthFailed)
        resp = await h("Auth", "Authenticate")(rpc_pb2.AuthenticateRequest(name="alice", password="alicepw"), ANON)
        assert re.fullmatch(r"[A-Za-z]{16}\.(\d+)", resp.token)
        assert int(resp.token.split(".")[1]) == m.applied_index  # the index of the login's entry
        assert resp.header.member_id == m.id
        alice = Call(resp.token)
        root = await login(h, "root", "rootpw")

        put, rng = h("KV", "Put"), h("KV", "Range")
        await put(rpc_pb2.PutRequest(key=b"app/x", value=b"1"), alice)
        await put(rpc_pb2.PutRequest(key=b"config", value=b"c"), root)
        got = await rng(rpc_pb2.RangeRequest(key=b"app/", range_end=b"app0"), alice)
        assert [kv.key for kv in got.kvs] == [b"app/x"]
        await fails(put(rpc_pb2.PutRequest(key=b"config", value=b"2"), alice), errors.ErrGRPCPermissionDenied)
        prev = await put(rpc_pb2.PutRequest(key=b"app/x", value=b"2", prev_kv=True), alice)
        assert prev.prev_kv.value == b"1"
        await fails(rng(rpc_pb2.RangeRequest(key=b"secret"), alice), errors.ErrGRPCPermissionDenied)
        await fails(rng(rpc_pb2.RangeRequest(key=b"app/x"), ANON), errors.ErrGRPCUserEmpty)
        await fails(rng(rpc_pb2.RangeRequest(key=b"app/x"), Call("nonsense")), errors.ErrGRPCInvalidAuthToken)
        await fails(rng(rpc_pb2.RangeRequest(key=b"app/x"), Call("abc.1")), errors.ErrGRPCInvalidAuthToken)
        # etcd's second metadata name for the token.
        await rng(rpc_pb2.RangeRequest(key=b"app/x"), Call(resp.token, "authorization"))
        txn = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"config", target=rpc_pb2.Compare.VERSION)],
                                 success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"app/y"))])
        await h("KV", "Txn")(txn, alice)
        txn.failure.add(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"config"))
        await fails(h("KV", "Txn")(txn, alice), errors.ErrGRPCPermissionDenied)
        # A write hidden in a nested txn is refused too (etcd 3.5.1 lets it through).
        inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"secret"))])
        nested = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=inner)])
        await fails(h("KV", "Txn")(nested, alice), errors.ErrGRPCPermissionDenied)
        assert (await rng(rpc_pb2.RangeRequest(key=b"secret"), root)).count == 0
        await fails(h("KV", "DeleteRange")(rpc_pb2.DeleteRangeRequest(key=b"config"), alice),
                    errors.ErrGRPCPermissionDenied)

        # Management needs root; a user may read itself and its own roles.
        await fails(h("Auth", "UserList")(rpc_pb2.AuthUserListRequest(), alice), errors.ErrGRPCPermissionDenied)
        assert list((await h("Auth", "UserGet")(rpc_pb2.AuthUserGetRequest(name="alice"), alice)).roles) == ["app"]
        await h("Auth", "RoleGet")(rpc_pb2.AuthRoleGetRequest(role="app"), alice)
        await fails(h("Auth", "RoleGet")(rpc_pb2.AuthRoleGetRequest(role="root"), alice),
                    errors.ErrGRPCPermissionDenied)
        await fails(h("Auth", "UserDelete")(rpc_pb2.AuthUserDeleteRequest(name="root"), root),
                    errors.ErrGRPCInvalidAuthMgmt)
        status = await h("Auth", "AuthStatus")(rpc_pb2.AuthStatusRequest(), root)
        assert (status.enabled, status.authRevision) == (True, m.auth.store.revision)

        # A new password drops alice's tokens.
        await h("Auth", "UserChangePassword")(rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="new"),
                                              root)
        await fails(rng(rpc_pb2.RangeRequest(key=b"app/x"), alice), errors.ErrGRPCInvalidAuthToken)
        alice = await login(h, "alice", "new")
        await rng(rpc_pb2.RangeRequest(key=b"app/x"), alice)

        # Disabled again: anonymous calls pass, tokens are gone.
        await h("Auth", "AuthDisable")(rpc_pb2.AuthDisableRequest(), root)
        await rng(rpc_pb2.RangeRequest(key=b"secret"), ANON)
        await fails(rng(rpc_pb2.RangeRequest(key=b"secret"), root), errors.ErrGRPCInvalidAuthToken)

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)


async def test_entries_are_checked_again_at_their_auth_revision(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await setup_users(h)
        old = AuthInfo("alice", m.auth.store.revision)
        await m.propose("put", rpc_pb2.PutRequest(key=b"app/a", value=b"1"), auth=old)
        await h("Auth", "RoleAdd")(rpc_pb2.AuthRoleAddRequest(name="other"), await login(h, "root", "rootpw"))
        with pytest.raises(AuthOldRevisionError):
            await m.propose("put", rpc_pb2.PutRequest(key=b"app/a", value=b"2"), auth=old)
        err = errors.to_grpc_error(AuthOldRevisionError())
        assert (err.code, err.message) == (Status.UNKNOWN, "auth: revision in header is old")  # as etcd 3.5.1
        assert m.store.current_revision == 2

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)


async def test_watch_of_a_range_not_readable_is_cancelled_at_once(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await setup_users(h)
        alice = await login(h, "alice", "alicepw")
        call = Call(alice.metadata["token"], requests=[
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"secret", watch_id=7)),
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"app/", range_end=b"app0")),
        ])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h("Watch", "Watch"), call)
            while len(call.sent) < 2:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        denied, created = call.sent
        assert (denied.watch_id, denied.created, denied.canceled, denied.cancel_reason) == (
            7, True, True, "rpc error: code = PermissionDenied desc = etcdserver: permission denied")
        assert created.created and not created.canceled

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)


async def test_lease_revoke_needs_write_on_its_keys_and_expiry_revokes_as_root(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await setup_users(h)
        root, alice = await login(h, "root", "rootpw"), await login(h, "alice", "alicepw")
        lease = await h("Lease", "LeaseGrant")(rpc_pb2.LeaseGrantRequest(TTL=3), root)
        await h("KV", "Put")(rpc_pb2.PutRequest(key=b"config", value=b"x", lease=lease.ID), root)
        await fails(h("Lease", "LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), alice),
                    errors.ErrGRPCPermissionDenied)
        await fails(h("Lease", "LeaseRevoke")(rpc_pb2.LeaseRevokeRequest(ID=lease.ID), ANON),
                    errors.ErrGRPCUserEmpty)
        # Nobody revokes it: the leader does when it expires, with root's rights.
        clock.autojump_threshold = 0
        with trio.fail_after(600):  # virtual seconds: a revoke that timed out meanwhile is proposed again
            while m.lessor.lookup(lease.ID) is not None:
                await trio.sleep(0.2)
        got = await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"config"), root)
        assert got.count == 0

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)


async def test_tokens_expire_after_the_ttl(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await setup_users(h)
        root = await login(h, "root", "rootpw")
        await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), root)
        clock.autojump_threshold = 0
        await trio.sleep(1.5)
        await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), root)  # a use pushes the expiry out
        await trio.sleep(1.5)
        await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), root)
        await trio.sleep(3.5)
        await fails(h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), root), errors.ErrGRPCInvalidAuthToken)

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4", "--auth-token-ttl", "2"), body)


async def test_jwt_tokens_carry_their_auth_revision(tmp_path, clock):
    keys = Path(__file__).resolve().parents[1] / "fixtures" / "jwt"
    opts = f"jwt,pub-key={keys / 'rs.pub'},priv-key={keys / 'rs.key'},sign-method=RS256,ttl=1h"

    async def body(m):
        h = handlers(m)
        await setup_users(h)
        alice = await login(h, "alice", "alicepw")
        assert alice.metadata["token"].count(".") == 2  # header.claims.signature
        await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"config"), alice)
        # Any change of the auth store leaves the token behind: etcd 3.5.1 answers UNKNOWN with its text.
        await h("Auth", "RoleAdd")(rpc_pb2.AuthRoleAddRequest(name="other"), await login(h, "root", "rootpw"))
        with pytest.raises(GrpcError) as info:
            await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"config"), alice)
        assert (info.value.code, info.value.message) == (Status.UNKNOWN, "auth: revision in header is old")
        await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"config"), await login(h, "alice", "alicepw"))
        await fails(h("KV", "Range")(rpc_pb2.RangeRequest(key=b"config"), Call("a.b.c")),
                    errors.ErrGRPCInvalidAuthToken)

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4", "--auth-token", opts), body)


async def test_membership_changes_need_root(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await setup_users(h)
        alice = await login(h, "alice", "alicepw")
        root = await login(h, "root", "rootpw")
        add = rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:45001"], isLearner=True)
        await fails(h("Cluster", "MemberAdd")(add, ANON), errors.ErrGRPCUserEmpty)
        await fails(h("Cluster", "MemberAdd")(add, alice), errors.ErrGRPCPermissionDenied)
        lid = (await h("Cluster", "MemberAdd")(add, root)).member.ID
        for name, req in (("MemberUpdate", rpc_pb2.MemberUpdateRequest(ID=lid, peerURLs=["http://127.0.0.1:45002"])),
                          ("MemberPromote", rpc_pb2.MemberPromoteRequest(ID=lid)),
                          ("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=lid))):
            await fails(h("Cluster", name)(req, alice), errors.ErrGRPCPermissionDenied)
        # Listing needs nobody in particular, as in etcd.
        assert len((await h("Cluster", "MemberList")(rpc_pb2.MemberListRequest(), ANON)).members) == 2
        await h("Cluster", "MemberRemove")(rpc_pb2.MemberRemoveRequest(ID=lid), root)

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)


async def test_with_auth_off_calls_without_a_token_go_straight_and_tokens_are_still_checked(tmp_path, clock):
    async def body(m):
        h = handlers(m)
        await h("KV", "Put")(rpc_pb2.PutRequest(key=b"k", value=b"v"), ANON)
        assert (await h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), ANON)).count == 1
        # etcd refuses a token it does not know even while auth is off.
        for name in ("token", "authorization"):
            await fails(h("KV", "Range")(rpc_pb2.RangeRequest(key=b"k"), Call("garbage", name)),
                        errors.ErrGRPCInvalidAuthToken)
            await fails(h("KV", "Put")(rpc_pb2.PutRequest(key=b"k", value=b"w"), Call("abc.1", name)),
                        errors.ErrGRPCInvalidAuthToken)

    await run_member(make_member(tmp_path / "d", "--bcrypt-cost", "4"), body)
