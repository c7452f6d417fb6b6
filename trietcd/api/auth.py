"""The etcdserverpb.Auth service (etcd 3.5.1 `etcdserver/api/v3rpc/auth.go`, `v3_server.go` Auth*).

- Every method is a raft entry, reads too (AuthStatus, UserGet, RoleList, ...), proposed with the caller
  (`server.auth.auth_info(call)`): the apply checks the caller's rights at the entry's turn (root for
  management; UserGet of oneself and RoleGet of one's own role need no root).
- Passwords are hashed here, with bcrypt at --bcrypt-cost, before proposing (UserAdd unless the user has no
  password, UserChangePassword when a password is given): the entry carries the hash only.
- Authenticate checks the password here after a linearizable read barrier, then proposes the login; the apply
  creates the token (`<16 letters>.<entry index>`). If the auth store changed between the check and the
  apply, it checks again.
"""

from __future__ import annotations

from proto.etcdserverpb import raft_internal_pb2, rpc_pb2
from trietcd import auth
from trietcd.api import errors
from trietcd.server.errors import ServerError

__all__ = ["AuthService"]

for _layer, _grpc in (
    (auth.RootUserNotExistError, errors.ErrGRPCRootUserNotExist),
    (auth.RootRoleNotExistError, errors.ErrGRPCRootRoleNotExist),
    (auth.UserAlreadyExistError, errors.ErrGRPCUserAlreadyExist),
    (auth.UserEmptyError, errors.ErrGRPCUserEmpty),
    (auth.UserNotFoundError, errors.ErrGRPCUserNotFound),
    (auth.RoleAlreadyExistError, errors.ErrGRPCRoleAlreadyExist),
    (auth.RoleNotFoundError, errors.ErrGRPCRoleNotFound),
    (auth.RoleEmptyError, errors.ErrGRPCRoleEmpty),
    (auth.AuthFailedError, errors.ErrGRPCAuthFailed),
    (auth.PermissionNotGivenError, errors.ErrGRPCPermissionNotGiven),
    (auth.PermissionDeniedError, errors.ErrGRPCPermissionDenied),
    (auth.RoleNotGrantedError, errors.ErrGRPCRoleNotGranted),
    (auth.PermissionNotGrantedError, errors.ErrGRPCPermissionNotGranted),
    (auth.AuthNotEnabledError, errors.ErrGRPCAuthNotEnabled),
    (auth.InvalidAuthTokenError, errors.ErrGRPCInvalidAuthToken),
    (auth.InvalidAuthMgmtError, errors.ErrGRPCInvalidAuthMgmt),
):
    # The others (an old auth revision, a password for a user without one) reach clients as UNKNOWN with
    # the auth store's text, as in etcd.
    errors.register(_layer, _grpc)

_FAILURES = (ServerError, auth.AuthError)

# method -> InternalRaftRequest field, for the methods that only propose their request.
_PROPOSED = {
    "AuthEnable": "auth_enable",
    "AuthDisable": "auth_disable",
    "AuthStatus": "auth_status",
    "UserGet": "auth_user_get",
    "UserList": "auth_user_list",
    "UserDelete": "auth_user_delete",
    "UserGrantRole": "auth_user_grant_role",
    "UserRevokeRole": "auth_user_revoke_role",
    "RoleAdd": "auth_role_add",
    "RoleGet": "auth_role_get",
    "RoleList": "auth_role_list",
    "RoleDelete": "auth_role_delete",
    "RoleGrantPermission": "auth_role_grant_permission",
    "RoleRevokePermission": "auth_role_revoke_permission",
}


class AuthService:
    """`server` gives: auth (AuthKeeper), propose(field, request, auth=), read_barrier(), header(revision), log."""

    def __init__(self, server) -> None:
        self._server = server
        self._keeper = server.auth

    def handlers(self) -> dict:
        handlers = {name: self._proposer(field) for name, field in _PROPOSED.items()}
        handlers.update(Authenticate=self.Authenticate, UserAdd=self.UserAdd,
                        UserChangePassword=self.UserChangePassword)
        return handlers

    def _proposer(self, field: str):
        async def handler(request, call):
            return await self._propose(field, request, call)

        handler.__name__ = field
        return handler

    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, call) -> rpc_pb2.AuthUserAddResponse:
        if not request.options.no_password:
            hashed = await self._keeper.hash_password(request.password)
            request = _copy(request)
            request.hashedPassword = hashed
            request.password = ""
        return await self._propose("auth_user_add", request, call)

    async def UserChangePassword(self, request: rpc_pb2.AuthUserChangePasswordRequest,
                                 call) -> rpc_pb2.AuthUserChangePasswordResponse:
        if request.password:
            hashed = await self._keeper.hash_password(request.password)
            request = _copy(request)
            request.hashedPassword = hashed
            request.password = ""
        return await self._propose("auth_user_change_password", request, call)

    async def Authenticate(self, request: rpc_pb2.AuthenticateRequest, call) -> rpc_pb2.AuthenticateResponse:
        s = self._server
        keeper = self._keeper
        try:
            await s.read_barrier()
            while True:
                try:
                    checked = await keeper.check_password(request.name, request.password)
                except auth.AuthError as exc:
                    if not isinstance(exc, auth.AuthNotEnabledError):
                        s.log.warn("invalid authentication was requested", caller="etcdserver/v3_server.go",
                                   user=request.name, error=str(exc))
                    raise
                login = raft_internal_pb2.InternalAuthenticateRequest(name=request.name,
                                                                      simple_token=keeper.gen_token_prefix())
                resp = await s.propose("authenticate", login)
                if checked == keeper.store.revision:
                    break
                s.log.info("revision when password checked became stale; retrying", caller="etcdserver/v3_server.go")
        except _FAILURES as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    async def _propose(self, field: str, request, call):
        try:
            info = await self._keeper.auth_info(call)
            resp = await self._server.propose(field, request, auth=info)
        except _FAILURES as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    def _filled(self, resp):
        resp.header.CopyFrom(self._server.header(resp.header.revision or None))
        return resp


def _copy(request):
    out = type(request)()
    out.CopyFrom(request)
    return out
