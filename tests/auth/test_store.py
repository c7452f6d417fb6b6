"""The auth store core on an in-memory backend: etcd 3.5.1's rules, errors, revisions and byte formats
(checked against a snapshot etcd 3.5.1 wrote)."""

from __future__ import annotations

import base64
import random
import shutil
from pathlib import Path

import bcrypt
import pytest

from proto.authpb import auth_pb2
from proto.etcdserverpb import rpc_pb2
from trietcd import auth
from trietcd.auth import AuthInfo, AuthStore, SimpleTokens
from trietcd.backend import AUTH, AUTH_ENABLED, AUTH_REVISION, AUTH_ROLES, AUTH_USERS, Backend, encode_u64

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
P = auth_pb2.Permission


def hashed(password: str) -> str:
    return base64.b64encode(bcrypt.hashpw(password.encode(), bcrypt.gensalt(4, prefix=b"2a"))).decode()


def new_store(backend=None) -> AuthStore:
    return AuthStore(backend or Backend.open_memory(), SimpleTokens(300, random.Random(7)))


def add_user(s: AuthStore, name: str, password: str = "pw", *roles: str) -> None:
    s.user_add(rpc_pb2.AuthUserAddRequest(name=name, hashedPassword=hashed(password)))
    for role in roles:
        s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user=name, role=role))


def grant(s: AuthStore, role: str, key: bytes, range_end: bytes = b"", perm_type=P.READWRITE) -> None:
    s.role_grant_permission(rpc_pb2.AuthRoleGrantPermissionRequest(
        name=role, perm=P(key=key, range_end=range_end, permType=perm_type)))


def enabled_store() -> AuthStore:
    s = new_store()
    add_user(s, "root", "rootpw", "root")
    s.auth_enable()
    return s


def test_fresh_store_writes_revision_one():
    b = Backend.open_memory()
    s = new_store(b)
    assert (s.revision, s.enabled) == (1, False)
    assert b.get(AUTH, AUTH_REVISION) == encode_u64(1)
    assert b.get(AUTH, AUTH_ENABLED) is None
    assert new_store(b).revision == 1  # reopened: not written again


def test_the_same_requests_make_the_rows_etcd_made(tmp_path):
    # tests/fixtures/etcd-3.5.1/snapshot.db: the MANIFEST's auth steps on etcd 3.5.1.
    shutil.copy(FIXTURES / "etcd-3.5.1" / "snapshot.db", tmp_path / "db")
    theirs = Backend.open(str(tmp_path / "db"))
    try:
        etcd = {bucket: dict(theirs.items(bucket)) for bucket in (AUTH, AUTH_USERS, AUTH_ROLES)}
        loaded = new_store(theirs)
        assert (loaded.enabled, loaded.revision) == (True, 9)
        assert sorted(loaded.users) == ["root", "u1"] and loaded.users["u1"].roles == ["r1"]
    finally:
        theirs.close()
    # Go's bcrypt hashes check with this one.
    assert bcrypt.checkpw(b"rootpw", auth_pb2.User.FromString(etcd[AUTH_USERS][b"root"]).password)
    assert bcrypt.checkpw(b"u1pass", auth_pb2.User.FromString(etcd[AUTH_USERS][b"u1"]).password)

    b = Backend.open_memory()
    s = new_store(b)
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="r1"))
    grant(s, "r1", b"/app/", b"/app0")
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="root"))
    add_user(s, "root", "rootpw", "root")
    add_user(s, "u1", "u1pw", "r1")
    s.user_change_password(rpc_pb2.AuthUserChangePasswordRequest(name="u1", hashedPassword=hashed("u1pass")))
    s.auth_enable()
    ours = {bucket: dict(b.items(bucket)) for bucket in (AUTH, AUTH_USERS, AUTH_ROLES)}
    assert ours[AUTH] == etcd[AUTH]
    assert ours[AUTH_ROLES] == etcd[AUTH_ROLES]
    for name in (b"root", b"u1"):
        mine, theirs_user = auth_pb2.User.FromString(ours[AUTH_USERS][name]), auth_pb2.User.FromString(
            etcd[AUTH_USERS][name])
        mine.password = theirs_user.password = b""  # salted
        assert mine.SerializeToString() == theirs_user.SerializeToString()
    assert ours[AUTH_USERS][b"u1"].endswith(b'"\x00')  # empty options are written, as gogo writes them


def test_user_errors_and_revisions():
    s = new_store()
    with pytest.raises(auth.UserEmptyError):
        s.user_add(rpc_pb2.AuthUserAddRequest(name=""))
    add_user(s, "alice")
    assert s.revision == 2
    with pytest.raises(auth.UserAlreadyExistError):
        add_user(s, "alice")
    with pytest.raises(auth.RoleNotFoundError):
        s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="nope"))
    with pytest.raises(auth.UserNotFoundError):
        s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="nobody", role="root"))
    s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="root"))  # root needs no role row
    assert s.revision == 3
    s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="root"))
    assert s.revision == 3  # granted already: nothing changes
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="app"))
    s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="app"))
    assert list(s.user_get(rpc_pb2.AuthUserGetRequest(name="alice")).roles) == ["app", "root"]
    with pytest.raises(auth.RoleNotGrantedError):
        s.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="other"))
    s.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="root"))
    s.user_delete(rpc_pb2.AuthUserDeleteRequest(name="alice"))
    with pytest.raises(auth.UserNotFoundError):
        s.user_delete(rpc_pb2.AuthUserDeleteRequest(name="alice"))
    with pytest.raises(auth.UserNotFoundError):
        s.user_get(rpc_pb2.AuthUserGetRequest(name="alice"))
    assert s.revision == 7


def test_user_list_is_in_byte_order():
    s = new_store()
    for name in ("b", "a", "\u00ff", "\U0001f600", "B"):
        add_user(s, name)
    assert list(s.user_list().users) == ["B", "a", "b", "\u00ff", "\U0001f600"]


def test_no_password_user():
    s = new_store()
    s.user_add(rpc_pb2.AuthUserAddRequest(name="np", options=auth_pb2.UserAddOptions(no_password=True)))
    add_user(s, "root", "rootpw", "root")
    s.auth_enable()
    with pytest.raises(auth.NoPasswordUserError):
        s.password_of("np")
    with pytest.raises(auth.AuthFailedError):
        s.authenticate("np", "x" * 16, 20, 0.0)
    with pytest.raises(auth.AuthFailedError):
        s.password_of("nobody")


def test_bad_base64_hash_is_a_no_password_error():
    s = new_store()
    with pytest.raises(auth.NoPasswordUserError):
        s.user_add(rpc_pb2.AuthUserAddRequest(name="x", hashedPassword="not base64!"))


def test_enable_needs_root_with_root_role():
    s = new_store()
    with pytest.raises(auth.RootUserNotExistError):
        s.auth_enable()
    add_user(s, "root")
    with pytest.raises(auth.RootRoleNotExistError):
        s.auth_enable()
    s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    rev = s.revision
    s.auth_enable()
    s.auth_enable()
    assert (s.enabled, s.revision) == (True, rev)  # enabling does not count
    s.auth_disable()
    assert (s.enabled, s.revision) == (False, rev + 1)
    s.auth_disable()
    assert s.revision == rev + 1


def test_root_cannot_be_taken_apart_while_enabled():
    s = enabled_store()
    with pytest.raises(auth.InvalidAuthMgmtError):
        s.user_delete(rpc_pb2.AuthUserDeleteRequest(name="root"))
    with pytest.raises(auth.InvalidAuthMgmtError):
        s.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root"))
    with pytest.raises(auth.InvalidAuthMgmtError):
        s.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="root"))
    s.auth_disable()
    s.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root"))
    s.user_delete(rpc_pb2.AuthUserDeleteRequest(name="root"))


def test_role_permissions_sorted_updated_revoked():
    s = new_store()
    with pytest.raises(auth.RoleEmptyError):
        s.role_add(rpc_pb2.AuthRoleAddRequest(name=""))
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="r"))
    with pytest.raises(auth.RoleAlreadyExistError):
        s.role_add(rpc_pb2.AuthRoleAddRequest(name="r"))
    with pytest.raises(auth.PermissionNotGivenError):
        s.role_grant_permission(rpc_pb2.AuthRoleGrantPermissionRequest(name="r"))
    with pytest.raises(auth.RoleNotFoundError):
        grant(s, "nobody", b"k")
    grant(s, "r", b"m", b"", P.READ)
    grant(s, "r", b"a", b"c", P.WRITE)
    grant(s, "r", b"m", b"", P.READWRITE)  # the same key and range: the type changes
    perms = s.role_get(rpc_pb2.AuthRoleGetRequest(role="r")).perm
    assert [(p.key, p.range_end, p.permType) for p in perms] == [(b"a", b"c", P.WRITE), (b"m", b"", P.READWRITE)]
    with pytest.raises(auth.PermissionNotGrantedError):
        s.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"a"))
    s.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"a", range_end=b"c"))
    assert len(s.role_get(rpc_pb2.AuthRoleGetRequest(role="r")).perm) == 1
    add_user(s, "u", "pw", "r")
    s.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="r"))
    assert list(s.user_get(rpc_pb2.AuthUserGetRequest(name="u")).roles) == []
    with pytest.raises(auth.RoleNotFoundError):
        s.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="r"))


def test_checks_follow_users_roles_and_revisions():
    s = enabled_store()
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="app"))
    grant(s, "app", b"app/", b"app0")
    add_user(s, "alice", "pw", "app")
    alice = AuthInfo("alice", s.revision)
    s.check_put(alice, b"app/x")
    s.check_range(alice, b"app/", b"app0")
    with pytest.raises(auth.PermissionDeniedError):
        s.check_put(alice, b"other")
    with pytest.raises(auth.PermissionDeniedError):
        s.check_range(alice, b"app/", b"")  # "app/" itself is inside; a range beyond is not
        s.check_range(alice, b"a", b"b")
    with pytest.raises(auth.UserEmptyError):
        s.check_range(None, b"k", b"")
    with pytest.raises(auth.UserEmptyError):
        s.check_range(AuthInfo("", 0), b"k", b"")
    with pytest.raises(auth.PermissionDeniedError):
        s.check_put(AuthInfo("ghost", s.revision), b"app/x")
    s.check_put(AuthInfo("root", s.revision), b"anything")
    # A permission taken away: checks made at the old revision fail as old.
    s.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="app", key=b"app/", range_end=b"app0"))
    with pytest.raises(auth.AuthOldRevisionError):
        s.check_put(alice, b"app/x")
    with pytest.raises(auth.PermissionDeniedError):
        s.check_put(AuthInfo("alice", s.revision), b"app/x")


def test_admin_checks():
    s = enabled_store()
    add_user(s, "bob")
    s.check_admin(AuthInfo("root", 1))  # no revision check for admin
    with pytest.raises(auth.UserEmptyError):
        s.check_admin(None)
    with pytest.raises(auth.UserNotFoundError):
        s.check_admin(AuthInfo("ghost", s.revision))
    with pytest.raises(auth.PermissionDeniedError):
        s.check_admin(AuthInfo("bob", s.revision))
    bob = AuthInfo("bob", s.revision)
    s.check_entry("auth_user_get", rpc_pb2.AuthUserGetRequest(name="bob"), bob, lambda _: [])
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("auth_user_get", rpc_pb2.AuthUserGetRequest(name="root"), bob, lambda _: [])
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="mine"))
    s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user="bob", role="mine"))
    s.check_entry("auth_role_get", rpc_pb2.AuthRoleGetRequest(role="mine"), bob, lambda _: [])
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("auth_role_get", rpc_pb2.AuthRoleGetRequest(role="root"), bob, lambda _: [])
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("auth_user_list", rpc_pb2.AuthUserListRequest(), bob, lambda _: [])


def test_entry_checks_of_kv_and_leases():
    s = enabled_store()
    s.role_add(rpc_pb2.AuthRoleAddRequest(name="w"))
    grant(s, "w", b"a", b"", P.WRITE)
    grant(s, "w", b"b", b"", P.READWRITE)
    add_user(s, "u", "pw", "w")
    u = AuthInfo("u", s.revision)
    keys = {7: [b"a"], 8: [b"a", b"z"]}.get
    s.check_entry("put", rpc_pb2.PutRequest(key=b"a", lease=7), u, lambda i: keys(i, []))
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("put", rpc_pb2.PutRequest(key=b"a", lease=8), u, lambda i: keys(i, []))
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("put", rpc_pb2.PutRequest(key=b"a", prev_kv=True), u, lambda i: [])
    s.check_entry("put", rpc_pb2.PutRequest(key=b"b", prev_kv=True), u, lambda i: [])
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=8), u, lambda i: keys(i, []))
    s.check_entry("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=9), u, lambda i: keys(i, []))
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("delete_range", rpc_pb2.DeleteRangeRequest(key=b"a", prev_kv=True), u, lambda i: [])
    txn = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"b")],
                             success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a"))],
                             failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"b"))])
    s.check_entry("txn", txn, u, lambda i: [])
    txn.compare.add(key=b"a")  # a compare reads
    with pytest.raises(auth.PermissionDeniedError):
        s.check_entry("txn", txn, u, lambda i: [])


def test_authenticate_makes_tokens_only_while_enabled():
    s = new_store()
    add_user(s, "root", "rootpw", "root")
    with pytest.raises(auth.AuthNotEnabledError):
        s.authenticate("root", "a" * 16, 5, 0.0)
    s.auth_enable()
    token = s.authenticate("root", "abcdefghijklmnop", 12, 0.0)
    assert token == "abcdefghijklmnop.12"
    assert s.tokens.user_of(token, 1.0) == "root"
    with pytest.raises(auth.AuthFailedError):
        s.authenticate("ghost", "a" * 16, 13, 0.0)
    s.user_change_password(rpc_pb2.AuthUserChangePasswordRequest(name="root", hashedPassword=hashed("x")))
    assert s.tokens.user_of(token, 1.0) is None  # a new password drops the user's tokens
    token = s.authenticate("root", "b" * 16, 14, 0.0)
    s.auth_disable()
    assert s.tokens.user_of(token, 1.0) is None


def test_apply_answers_the_responses():
    s = new_store()
    resp = s.apply("auth_status", rpc_pb2.AuthStatusRequest(), index=3, now=0.0)
    assert (resp.enabled, resp.authRevision) == (False, 1)
    assert isinstance(s.apply("auth_role_add", rpc_pb2.AuthRoleAddRequest(name="r"), index=4, now=0.0),
                      rpc_pb2.AuthRoleAddResponse)
    assert list(s.apply("auth_role_list", rpc_pb2.AuthRoleListRequest(), index=5, now=0.0).roles) == ["r"]
