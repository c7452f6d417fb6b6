"""The auth store's operating errors (etcd 3.5.1 `server/auth/store.go`). str() is etcd's own text: an
error etcd does not map to a gRPC status reaches the client as UNKNOWN with exactly this text
(`api/errors.py` maps the others)."""

from __future__ import annotations

__all__ = [
    "AuthError", "RootUserNotExistError", "RootRoleNotExistError", "UserAlreadyExistError", "UserEmptyError",
    "UserNotFoundError", "RoleAlreadyExistError", "RoleNotFoundError", "RoleEmptyError", "PermissionNotGivenError",
    "AuthFailedError", "NoPasswordUserError", "PermissionDeniedError", "RoleNotGrantedError",
    "PermissionNotGrantedError", "AuthNotEnabledError", "AuthOldRevisionError", "InvalidAuthTokenError",
    "InvalidAuthOptsError", "InvalidAuthMgmtError", "MissingKeyError", "KeyMismatchError", "VerifyOnlyError",
]


class AuthError(Exception):
    TEXT = "auth: error"

    def __init__(self) -> None:
        super().__init__(self.TEXT)


def _error(name: str, text: str) -> type[AuthError]:
    return type(name, (AuthError,), {"TEXT": text, "__module__": __name__})


RootUserNotExistError = _error("RootUserNotExistError", "auth: root user does not exist")
RootRoleNotExistError = _error("RootRoleNotExistError", "auth: root user does not have root role")
UserAlreadyExistError = _error("UserAlreadyExistError", "auth: user already exists")
UserEmptyError = _error("UserEmptyError", "auth: user name is empty")
UserNotFoundError = _error("UserNotFoundError", "auth: user not found")
RoleAlreadyExistError = _error("RoleAlreadyExistError", "auth: role already exists")
RoleNotFoundError = _error("RoleNotFoundError", "auth: role not found")
RoleEmptyError = _error("RoleEmptyError", "auth: role name is empty")
PermissionNotGivenError = _error("PermissionNotGivenError", "auth: permission not given")
AuthFailedError = _error("AuthFailedError", "auth: authentication failed, invalid user ID or password")
NoPasswordUserError = _error("NoPasswordUserError",
                             "auth: authentication failed, password was given for no password user")
PermissionDeniedError = _error("PermissionDeniedError", "auth: permission denied")
RoleNotGrantedError = _error("RoleNotGrantedError", "auth: role is not granted to the user")
PermissionNotGrantedError = _error("PermissionNotGrantedError", "auth: permission is not granted to the role")
AuthNotEnabledError = _error("AuthNotEnabledError", "auth: authentication is not enabled")
AuthOldRevisionError = _error("AuthOldRevisionError", "auth: revision in header is old")
InvalidAuthTokenError = _error("InvalidAuthTokenError", "auth: invalid auth token")
InvalidAuthOptsError = _error("InvalidAuthOptsError", "auth: invalid auth options")
InvalidAuthMgmtError = _error("InvalidAuthMgmtError", "auth: invalid auth management")
MissingKeyError = _error("MissingKeyError", "auth: missing key data")
KeyMismatchError = _error("KeyMismatchError", "auth: public and private keys don't match")
VerifyOnlyError = _error("VerifyOnlyError", "auth: token signing attempted with verify-only key")
