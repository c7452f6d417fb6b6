"""The auth store (etcd 3.5.1 `server/auth/store.go`, `etcdserver/apply_auth.go`): users, roles and their key
permissions in the backend, exactly as etcd keeps them, and the checks made on requests. No IO of its own: the
backend is handed in, time comes in as `now`, password hashing is the shell's (`hash_password`).

Rules:
- Buckets and encodings are etcd's: `authUsers` maps a user name to an authpb.User, `authRoles` a role name to
  an authpb.Role, the `auth` bucket holds `authEnabled` (one byte, 1 or 0) and `authRevision` (8 bytes, big
  endian). A store opened on a backend without a revision writes revision 1, as etcd does.
- `revision` goes up by one with every change of users, roles or permissions and with AuthDisable (not with
  AuthEnable, nor with a change that changes nothing). A request checked at an older revision than the
  store's is refused (`AuthOldRevisionError`), so a permission taken away is never used again.
- Users and roles are also kept in memory (the API checks requests between entries without touching the
  backend); each change writes both.
- With auth enabled, the root user and the root role cannot be taken apart; AuthEnable needs a root user
  that has the root role.
- Passwords are bcrypt hashes made by the API layer before proposing; apply only decodes them.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable

import attrs

from proto.authpb import auth_pb2
from proto.etcdserverpb import rpc_pb2
from trietcd.auth import errors
from trietcd.auth.perms import READ, WRITE, UserPerms, merge_perms
from trietcd.backend import schema

__all__ = ["AuthInfo", "AuthStore", "ADMIN_KINDS", "ROOT_USER", "ROOT_ROLE"]

ROOT_USER = "root"
ROOT_ROLE = "root"
_ENABLED = b"\x01"
_DISABLED = b"\x00"

# InternalRaftRequest fields that need the root role while auth is enabled (etcd's needAdminPermission).
ADMIN_KINDS = frozenset({
    "auth_enable", "auth_disable", "auth_status", "auth_user_add", "auth_user_delete",
    "auth_user_change_password", "auth_user_grant_role", "auth_user_revoke_role", "auth_role_add",
    "auth_role_grant_permission", "auth_role_revoke_permission", "auth_role_delete", "auth_user_list",
    "auth_role_list",
})


@attrs.frozen
class AuthInfo:
    """Who is calling: a user name and the auth revision the caller was checked at."""

    username: str
    revision: int


class AuthStore:
    def __init__(self, backend, tokens, *, hash_password: Callable[[bytes], bytes] | None = None) -> None:
        """`tokens` is the token provider (SimpleTokens); `hash_password(plain) -> bcrypt hash` serves entries
        proposed with a plain password (older etcd members propose those)."""
        self._backend = backend
        self.tokens = tokens
        self._hash_password = hash_password
        self.users: dict[str, auth_pb2.User] = {}
        self.roles: dict[str, auth_pb2.Role] = {}
        self._perms: dict[str, UserPerms] = {}  # etcd's rangePermCache: user name -> merged permissions
        self.enabled = False
        self.revision = 0
        self.recover()
        if self.revision == 0:
            self._commit_revision()

    def recover(self) -> None:
        """Reads everything from the backend: the auth state is the backend's (a member that installs another
        backend image builds a new store on it)."""
        b = self._backend
        self.enabled = b.get(schema.AUTH, schema.AUTH_ENABLED) == _ENABLED
        stored = b.get(schema.AUTH, schema.AUTH_REVISION)
        self.revision = schema.decode_u64(stored) if stored is not None else 0
        self.users = {k.decode(): auth_pb2.User.FromString(v) for k, v in b.items(schema.AUTH_USERS)}
        self.roles = {k.decode(): auth_pb2.Role.FromString(v) for k, v in b.items(schema.AUTH_ROLES)}
        self._perms.clear()
        if self.enabled:
            self.tokens.enable()

    # ---- rows

    def _commit_revision(self) -> None:
        self.revision += 1
        self._backend.put(schema.AUTH, schema.AUTH_REVISION, schema.encode_u64(self.revision))

    def _put_user(self, user: auth_pb2.User) -> None:
        self.users[user.name.decode()] = user
        self._backend.put(schema.AUTH_USERS, user.name, user.SerializeToString())

    def _put_role(self, role: auth_pb2.Role) -> None:
        self.roles[role.name.decode()] = role
        self._backend.put(schema.AUTH_ROLES, role.name, role.SerializeToString())

    def _user(self, name: str) -> auth_pb2.User | None:
        return self.users.get(name)

    @staticmethod
    def _listed(names) -> list[str]:
        # etcd reads every row in ["\x00", "\xff"): a name starting with byte 0xff is left out.
        encoded = sorted(n.encode() for n in names)
        return [n.decode() for n in encoded if n[:1] != b"\xff"]

    def _password(self, password: str, hashed: str) -> bytes:
        """etcd's selectPassword."""
        if password and not hashed:
            assert self._hash_password is not None, "a plain password in an entry needs hash_password"
            return self._hash_password(password.encode())
        try:
            return base64.b64decode(hashed.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise errors.NoPasswordUserError() from None

    # ---- enable / disable / login

    def auth_enable(self) -> None:
        if self.enabled:
            return
        user = self._user(ROOT_USER)
        if user is None:
            raise errors.RootUserNotExistError()
        if not _has_root_role(user):
            raise errors.RootRoleNotExistError()
        self._backend.put(schema.AUTH, schema.AUTH_ENABLED, _ENABLED)
        self.enabled = True
        self.tokens.enable()
        self._perms.clear()

    def auth_disable(self) -> None:
        if not self.enabled:
            return
        self._backend.put(schema.AUTH, schema.AUTH_ENABLED, _DISABLED)
        self._commit_revision()
        self.enabled = False
        self.tokens.disable()

    def authenticate(self, name: str, prefix: str, index: int, now: float) -> str:
        """Applies an Authenticate entry (the password was checked before proposing): a new token."""
        if not self.enabled:
            raise errors.AuthNotEnabledError()
        user = self._user(name)
        if user is None or user.options.no_password:
            raise errors.AuthFailedError()
        return self.tokens.assign(name, prefix, index, now, revision=self.revision)

    def password_of(self, name: str) -> tuple[bytes, int]:
        """etcd's CheckPassword before the hash comparison: the user's hash and the revision it was read at."""
        if not self.enabled:
            raise errors.AuthNotEnabledError()
        user = self._user(name)
        if user is None:
            raise errors.AuthFailedError()
        if user.options.no_password:
            raise errors.NoPasswordUserError()
        return user.password, self.revision

    # ---- users

    def user_add(self, r: rpc_pb2.AuthUserAddRequest) -> None:
        if not r.name:
            raise errors.UserEmptyError()
        if self._user(r.name) is not None:
            raise errors.UserAlreadyExistError()
        user = auth_pb2.User(name=r.name.encode())
        user.options.SetInParent()  # etcd always stores the options, empty or not
        user.options.CopyFrom(r.options)
        if not r.options.no_password:
            user.password = self._password(r.password, r.hashedPassword)
        self._put_user(user)
        self._commit_revision()

    def user_delete(self, r: rpc_pb2.AuthUserDeleteRequest) -> None:
        if self.enabled and r.name == ROOT_USER:
            raise errors.InvalidAuthMgmtError()
        if self._user(r.name) is None:
            raise errors.UserNotFoundError()
        del self.users[r.name]
        self._backend.delete(schema.AUTH_USERS, r.name.encode())
        self._commit_revision()
        self._perms.pop(r.name, None)
        self.tokens.invalidate_user(r.name)

    def user_change_password(self, r: rpc_pb2.AuthUserChangePasswordRequest) -> None:
        user = self._user(r.name)
        if user is None:
            raise errors.UserNotFoundError()
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        updated.password = b""
        if not user.options.no_password:
            updated.password = self._password(r.password, r.hashedPassword)
        self._put_user(updated)
        self._commit_revision()
        self._perms.pop(r.name, None)
        self.tokens.invalidate_user(r.name)

    def user_grant_role(self, r: rpc_pb2.AuthUserGrantRoleRequest) -> None:
        user = self._user(r.user)
        if user is None:
            raise errors.UserNotFoundError()
        if r.role != ROOT_ROLE and r.role not in self.roles:
            raise errors.RoleNotFoundError()
        roles = list(user.roles)
        i = bisect.bisect_left(roles, r.role)
        if i < len(roles) and roles[i] == r.role:
            return  # granted already: nothing changes, not even the revision
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        del updated.roles[:]
        updated.roles.extend(sorted([*roles, r.role], key=str.encode))
        self._put_user(updated)
        self._perms.pop(r.user, None)
        self._commit_revision()

    def user_get(self, r: rpc_pb2.AuthUserGetRequest) -> rpc_pb2.AuthUserGetResponse:
        user = self._user(r.name)
        if user is None:
            raise errors.UserNotFoundError()
        return rpc_pb2.AuthUserGetResponse(roles=list(user.roles))

    def user_list(self, r: rpc_pb2.AuthUserListRequest | None = None) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(users=self._listed(self.users))

    def user_revoke_role(self, r: rpc_pb2.AuthUserRevokeRoleRequest) -> None:
        if self.enabled and r.name == ROOT_USER and r.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmtError()
        user = self._user(r.name)
        if user is None:
            raise errors.UserNotFoundError()
        kept = [role for role in user.roles if role != r.role]
        if len(kept) == len(user.roles):
            raise errors.RoleNotGrantedError()
        updated = auth_pb2.User()
        updated.CopyFrom(user)
        del updated.roles[:]
        updated.roles.extend(kept)
        self._put_user(updated)
        self._perms.pop(r.name, None)
        self._commit_revision()

    # ---- roles

    def role_add(self, r: rpc_pb2.AuthRoleAddRequest) -> None:
        if not r.name:
            raise errors.RoleEmptyError()
        if r.name in self.roles:
            raise errors.RoleAlreadyExistError()
        self._put_role(auth_pb2.Role(name=r.name.encode()))
        self._commit_revision()

    def role_get(self, r: rpc_pb2.AuthRoleGetRequest) -> rpc_pb2.AuthRoleGetResponse:
        role = self.roles.get(r.role)
        if role is None:
            raise errors.RoleNotFoundError()
        resp = rpc_pb2.AuthRoleGetResponse()
        resp.perm.extend(role.keyPermission)
        return resp

    def role_list(self, r: rpc_pb2.AuthRoleListRequest | None = None) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(roles=self._listed(self.roles))

    def role_grant_permission(self, r: rpc_pb2.AuthRoleGrantPermissionRequest) -> None:
        if not r.HasField("perm"):
            raise errors.PermissionNotGivenError()
        role = self.roles.get(r.name)
        if role is None:
            raise errors.RoleNotFoundError()
        updated = auth_pb2.Role()
        updated.CopyFrom(role)
        perms = updated.keyPermission
        # etcd looks only at the first permission whose key is not below the new one's.
        i = bisect.bisect_left([p.key for p in perms], r.perm.key)
        if i < len(perms) and perms[i].key == r.perm.key and perms[i].range_end == r.perm.range_end:
            perms[i].permType = r.perm.permType
        else:
            merged = [*perms, auth_pb2.Permission(key=r.perm.key, range_end=r.perm.range_end,
                                                  permType=r.perm.permType)]
            merged.sort(key=lambda p: p.key)
            del perms[:]
            perms.extend(merged)
        self._put_role(updated)
        self._perms.clear()
        self._commit_revision()

    def role_revoke_permission(self, r: rpc_pb2.AuthRoleRevokePermissionRequest) -> None:
        role = self.roles.get(r.role)
        if role is None:
            raise errors.RoleNotFoundError()
        kept = [p for p in role.keyPermission if p.key != r.key or p.range_end != r.range_end]
        if len(kept) == len(role.keyPermission):
            raise errors.PermissionNotGrantedError()
        self._put_role(auth_pb2.Role(name=role.name, keyPermission=kept))
        self._perms.clear()
        self._commit_revision()

    def role_delete(self, r: rpc_pb2.AuthRoleDeleteRequest) -> None:
        if self.enabled and r.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmtError()
        if r.role not in self.roles:
            raise errors.RoleNotFoundError()
        del self.roles[r.role]
        self._backend.delete(schema.AUTH_ROLES, r.role.encode())
        for name in self._listed(self.users):
            user = self.users[name]
            kept = [role for role in user.roles if role != r.role]
            if len(kept) == len(user.roles):
                continue
            updated = auth_pb2.User()
            updated.CopyFrom(user)
            del updated.roles[:]
            updated.roles.extend(kept)
            self._put_user(updated)
            self._perms.pop(name, None)
        self._commit_revision()

    # ---- checks

    def has_role(self, username: str, role: str) -> bool:
        user = self._user(username)
        return user is not None and role in user.roles

    def check_admin(self, info: AuthInfo | None) -> None:
        """etcd's IsAdminPermitted (no revision check)."""
        if not self.enabled:
            return
        if info is None or not info.username:
            raise errors.UserEmptyError()
        user = self._user(info.username)
        if user is None:
            raise errors.UserNotFoundError()
        if not _has_root_role(user):
            raise errors.PermissionDeniedError()

    def check_put(self, info: AuthInfo | None, key: bytes) -> None:
        self._check_op(info, key, b"", WRITE)

    def check_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._check_op(info, key, range_end, READ)

    def check_delete_range(self, info: AuthInfo | None, key: bytes, range_end: bytes) -> None:
        self._check_op(info, key, range_end, WRITE)

    def _check_op(self, info: AuthInfo | None, key: bytes, range_end: bytes, perm_type: int) -> None:
        if not self.enabled:
            return
        if info is None or info.revision == 0:
            raise errors.UserEmptyError()
        if info.revision < self.revision:
            raise errors.AuthOldRevisionError()
        user = self._user(info.username)
        if user is None:
            raise errors.PermissionDeniedError()
        if _has_root_role(user):
            return
        perms = self._perms.get(info.username)
        if perms is None:
            perms = merge_perms(self.roles[name] for name in user.roles if name in self.roles)
            self._perms[info.username] = perms
        if not perms.allows(key, range_end, perm_type):
            raise errors.PermissionDeniedError()

    def check_txn(self, info: AuthInfo | None, r: rpc_pb2.TxnRequest) -> None:
        """etcd's checkTxnAuth: every compare is a read; then both branches, op by op. A nested txn is
        checked the same way: etcd 3.5.1 does not look into it, which lets a user write keys it has no
        permission on through one (fixed in later etcd releases); here it is refused."""
        for c in r.compare:
            self.check_range(info, c.key, c.range_end)
        self._check_ops(info, r.success)
        self._check_ops(info, r.failure)

    def _check_ops(self, info: AuthInfo | None, ops) -> None:
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.check_range(info, op.request_range.key, op.request_range.range_end)
            elif kind == "request_put":
                self.check_put(info, op.request_put.key)
            elif kind == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    self.check_range(info, d.key, d.range_end)
                self.check_delete_range(info, d.key, d.range_end)
            elif kind == "request_txn":
                self.check_txn(info, op.request_txn)

    def check_entry(self, kind: str, r, info: AuthInfo | None, lease_keys: Callable[[int], list[bytes]]) -> None:
        """etcd's authApplierV3: the checks an entry passes before it applies. `lease_keys(id)` lists the keys
        attached to a lease (none for an unknown one)."""
        if kind in ADMIN_KINDS:
            self.check_admin(info)
        elif kind == "put":
            self.check_put(info, r.key)
            self._check_lease_puts(info, r.lease, lease_keys)
            if r.prev_kv:
                self.check_range(info, r.key, b"")
        elif kind == "range":
            self.check_range(info, r.key, r.range_end)
        elif kind == "delete_range":
            self.check_delete_range(info, r.key, r.range_end)
            if r.prev_kv:
                self.check_range(info, r.key, r.range_end)
        elif kind == "txn":
            self.check_txn(info, r)
        elif kind == "lease_revoke":
            self._check_lease_puts(info, r.ID, lease_keys)
        elif kind == "auth_user_get":
            try:
                self.check_admin(info)
            except errors.AuthError:
                if info is None or r.name != info.username:
                    raise
        elif kind == "auth_role_get":
            try:
                self.check_admin(info)
            except errors.AuthError:
                if not self.has_role(info.username if info else "", r.role):
                    raise

    def _check_lease_puts(self, info: AuthInfo | None, lease_id: int, lease_keys) -> None:
        if not lease_id:
            return
        for key in lease_keys(lease_id):
            self.check_put(info, key)

    # ---- entries

    def apply(self, kind: str, r, *, index: int, now: float):
        """Applies one auth entry; returns its response (header left to the caller) or raises AuthError."""
        if kind == "auth_enable":
            self.auth_enable()
            return rpc_pb2.AuthEnableResponse()
        if kind == "auth_disable":
            self.auth_disable()
            return rpc_pb2.AuthDisableResponse()
        if kind == "auth_status":
            return rpc_pb2.AuthStatusResponse(enabled=self.enabled, authRevision=self.revision)
        if kind == "authenticate":
            return rpc_pb2.AuthenticateResponse(token=self.authenticate(r.name, r.simple_token, index, now))
        method, resp_type = _APPLY[kind]
        resp = getattr(self, method)(r)
        return resp if resp is not None else resp_type()


_APPLY = {
    "auth_user_add": ("user_add", rpc_pb2.AuthUserAddResponse),
    "auth_user_delete": ("user_delete", rpc_pb2.AuthUserDeleteResponse),
    "auth_user_change_password": ("user_change_password", rpc_pb2.AuthUserChangePasswordResponse),
    "auth_user_grant_role": ("user_grant_role", rpc_pb2.AuthUserGrantRoleResponse),
    "auth_user_get": ("user_get", rpc_pb2.AuthUserGetResponse),
    "auth_user_list": ("user_list", rpc_pb2.AuthUserListResponse),
    "auth_user_revoke_role": ("user_revoke_role", rpc_pb2.AuthUserRevokeRoleResponse),
    "auth_role_add": ("role_add", rpc_pb2.AuthRoleAddResponse),
    "auth_role_get": ("role_get", rpc_pb2.AuthRoleGetResponse),
    "auth_role_list": ("role_list", rpc_pb2.AuthRoleListResponse),
    "auth_role_grant_permission": ("role_grant_permission", rpc_pb2.AuthRoleGrantPermissionResponse),
    "auth_role_revoke_permission": ("role_revoke_permission", rpc_pb2.AuthRoleRevokePermissionResponse),
    "auth_role_delete": ("role_delete", rpc_pb2.AuthRoleDeleteResponse),
}

AUTH_KINDS = frozenset({"auth_enable", "auth_disable", "auth_status", "authenticate", *_APPLY})


def _has_root_role(user: auth_pb2.User) -> bool:
    return ROOT_ROLE in user.roles
