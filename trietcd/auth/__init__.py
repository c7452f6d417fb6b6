"""Authentication and authorization (etcd 3.5.1 `server/auth`): users, roles and key permissions over etcd's
`auth*` buckets (the sans-IO `AuthStore`, `merge_perms`, `SimpleTokens`), and the member's shell around them
(`AuthKeeper`: passwords, token expiry, who is calling)."""

from trietcd.auth.errors import (
                                 AuthError,
                                 AuthFailedError,
                                 AuthNotEnabledError,
                                 AuthOldRevisionError,
                                 InvalidAuthMgmtError,
                                 InvalidAuthOptsError,
                                 InvalidAuthTokenError,
                                 NoPasswordUserError,
                                 PermissionDeniedError,
                                 PermissionNotGivenError,
                                 PermissionNotGrantedError,
                                 RoleAlreadyExistError,
                                 RoleEmptyError,
                                 RoleNotFoundError,
                                 RoleNotGrantedError,
                                 RootRoleNotExistError,
                                 RootUserNotExistError,
                                 UserAlreadyExistError,
                                 UserEmptyError,
                                 UserNotFoundError,
)
from trietcd.auth.keeper import AuthKeeper
from trietcd.auth.perms import UserPerms, merge_perms
from trietcd.auth.store import ADMIN_KINDS, AUTH_KINDS, ROOT_ROLE, ROOT_USER, AuthInfo, AuthStore
from trietcd.auth.tokens import SimpleTokens, token_index

__all__ = [
    "ADMIN_KINDS", "AUTH_KINDS", "ROOT_ROLE", "ROOT_USER", "AuthError", "AuthFailedError", "AuthInfo", "AuthKeeper",
    "AuthNotEnabledError", "AuthOldRevisionError", "AuthStore", "InvalidAuthMgmtError", "InvalidAuthOptsError",
    "InvalidAuthTokenError", "NoPasswordUserError", "PermissionDeniedError", "PermissionNotGivenError",
    "PermissionNotGrantedError", "RoleAlreadyExistError", "RoleEmptyError", "RoleNotFoundError",
    "RoleNotGrantedError", "RootRoleNotExistError", "RootUserNotExistError", "SimpleTokens", "UserAlreadyExistError",
    "UserEmptyError", "UserNotFoundError", "UserPerms", "merge_perms", "token_index",
]
