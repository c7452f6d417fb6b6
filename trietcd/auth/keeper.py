"""The member's auth shell: the AuthStore core with the IO around it (bcrypt in a worker thread, the token
TTL ticker, waiting for a token's raft index, reading who is calling from a gRPC call).

`auth_info(call)` is the one place that decides who a call comes from: the token in metadata `token`, else
`authorization` (etcd's two names); without one, with --client-cert-auth, the verified client certificate's
CommonName (not through the JSON gateway, as etcd). The API services pass what it returns to the checks
(`store.check_*`) and to the member's proposals, whose entries carry it (the user name and the auth
revision) so the apply checks again.
"""

from __future__ import annotations

import base64
import contextvars
import random
import time
from collections.abc import Awaitable, Callable

import bcrypt
import trio

from trietcd.auth import errors
from trietcd.auth.jwt import JwtTokens, parse_token_opts
from trietcd.auth.store import ROOT_USER, AuthInfo, AuthStore
from trietcd.auth.tokens import NopTokens, SimpleTokens, token_index

__all__ = ["AuthKeeper", "BCRYPT_MIN_COST", "BCRYPT_MAX_COST", "BCRYPT_DEFAULT_COST"]

TOKEN_TTL_RESOLUTION_S = 1.0
BCRYPT_MIN_COST = 4
BCRYPT_MAX_COST = 31
BCRYPT_DEFAULT_COST = 10
BCRYPT_PASSWORD_MAX_BYTES = 72  # what bcrypt reads of a password; Go's bcrypt ignores the rest

# Set in tasks of the member that act with root's rights (etcd's WithRoot: the leader revoking expired leases).
_AS_ROOT: contextvars.ContextVar[bool] = contextvars.ContextVar("trietcd_auth_as_root", default=False)


class AuthKeeper:
    def __init__(self, backend, *, token_opts: str = "simple", token_ttl_s: float = 300, bcrypt_cost: int = 10,
                 client_cert_auth: bool = False, wait_applied: Callable[[int], Awaitable[None]] | None = None,
                 log=None) -> None:
        if not BCRYPT_MIN_COST <= bcrypt_cost <= BCRYPT_MAX_COST:
            if log is not None:
                log.warn("use default bcrypt cost instead of the invalid given cost", caller="auth/store.go",
                         **{"min-cost": BCRYPT_MIN_COST, "max-cost": BCRYPT_MAX_COST,
                            "default-cost": BCRYPT_DEFAULT_COST, "given-cost": bcrypt_cost})
            bcrypt_cost = BCRYPT_DEFAULT_COST
        self.bcrypt_cost = bcrypt_cost
        self.client_cert_auth = client_cert_auth
        self._wait_applied = wait_applied
        self._rng = random.SystemRandom()  # token prefixes are secrets
        self.tokens = _token_provider(token_opts, token_ttl_s, self._rng, log)
        self.store = AuthStore(backend, self.tokens, hash_password=self._hash_now)

    # ---- tasks

    async def run(self) -> None:
        """Drops expired tokens once a second (etcd's TTL keeper)."""
        while True:
            await trio.sleep(TOKEN_TTL_RESOLUTION_S)
            self.tokens.expire(trio.current_time())

    async def as_root(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Runs fn with root's rights: its proposals carry the root user while auth is enabled."""
        token = _AS_ROOT.set(True)
        try:
            await fn()
        finally:
            _AS_ROOT.reset(token)

    # ---- who is calling

    async def auth_info(self, call) -> AuthInfo | None:
        """The caller of a gRPC call, or None (anonymous); raises InvalidAuthTokenError for a token that is
        not (or no longer) valid. A call of None (made in process, not over gRPC) is anonymous."""
        if call is None:
            return None
        md = call.metadata
        token = md.get("token")
        if token is None:
            token = md.get("authorization")
        if token is None:
            return self._info_from_tls(call, md)
        if isinstance(self.tokens, _JwtProvider):
            found = self.tokens.jwt.info(token, time.time())
            if found is None:
                raise errors.InvalidAuthTokenError()
            return AuthInfo(*found)  # the revision the token was made at: the apply checks it
        index = token_index(token)
        if index is None:
            raise errors.InvalidAuthTokenError()
        if self._wait_applied is not None:
            await self._wait_applied(index)
        name = self.tokens.user_of(token, trio.current_time())
        if name is None:
            raise errors.InvalidAuthTokenError()
        return AuthInfo(name, self.store.revision)

    def _info_from_tls(self, call, md) -> AuthInfo | None:
        if not self.client_cert_auth:
            return None
        cn = getattr(call, "tls_common_name", None)
        if not cn or "grpcgateway-accept" in md:
            return None
        return AuthInfo(cn, self.store.revision)

    def is_open(self, call) -> bool:
        """True when a call needs no auth work: auth is off and the call carries no token (etcd refuses an
        invalid token even then). The common case, checked without decoding the call's metadata."""
        if self.store.enabled:
            return False
        if call is None:
            return True
        has = getattr(call, "has_metadata", None)
        if has is not None:
            return not has(b"token", b"authorization")
        md = call.metadata
        return "token" not in md and "authorization" not in md

    def proposer_info(self, info: AuthInfo | None) -> AuthInfo | None:
        """What a proposal's header carries: the caller, or root in a task acting as root."""
        if info is None and _AS_ROOT.get() and self.store.enabled:
            return AuthInfo(ROOT_USER, self.store.revision)
        return info

    # ---- passwords

    async def hash_password(self, password: str) -> str:
        """A bcrypt hash at --bcrypt-cost, base64 as etcd proposes it (`hashedPassword`)."""
        hashed = await trio.to_thread.run_sync(self._hash_now, password.encode())
        return base64.b64encode(hashed).decode()

    def _hash_now(self, password: bytes) -> bytes:
        salt = bcrypt.gensalt(self.bcrypt_cost, prefix=b"2a")  # Go's bcrypt writes $2a$
        return bcrypt.hashpw(password[:BCRYPT_PASSWORD_MAX_BYTES], salt)

    async def check_password(self, name: str, password: str) -> int:
        """etcd's CheckPassword: the auth revision at which the password was right; raises AuthError."""
        hashed, revision = self.store.password_of(name)
        ok = await trio.to_thread.run_sync(_matches, hashed, password.encode())
        if not ok:
            raise errors.AuthFailedError()
        return revision

    def gen_token_prefix(self) -> str:
        return self.tokens.gen_prefix()


def _matches(hashed: bytes, password: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:BCRYPT_PASSWORD_MAX_BYTES], hashed)
    except ValueError:  # not a bcrypt hash (a user added without a password hash)
        return False


def _token_provider(token_opts: str, ttl_s: float, rng: random.Random, log):
    """etcd's NewTokenProvider for `--auth-token`: "simple", "jwt,<options>" or "" (no tokens)."""
    kind, opts = parse_token_opts(token_opts)
    if kind == "simple":
        if log is not None:
            log.warn("simple token is not cryptographically signed", caller="auth/store.go")
        return SimpleTokens(ttl_s, rng)
    if kind == "jwt":
        files = {}
        for name in ("priv-key", "pub-key"):
            path = opts.get(name)
            if path:
                try:
                    with open(path, "rb") as f:
                        files[path] = f.read()
                except OSError:
                    raise errors.InvalidAuthOptsError() from None
        jwt = JwtTokens(opts, files)
        if jwt.unknown_options and log is not None:
            log.warn("unknown JWT options", caller="auth/jwt.go", keys=jwt.unknown_options)
        return _JwtProvider(jwt)
    if kind == "":
        return NopTokens()
    if log is not None:
        log.warn("unknown token type", caller="auth/store.go", type=kind, error=str(errors.InvalidAuthOptsError()))
    raise errors.InvalidAuthOptsError()


class _JwtProvider(NopTokens):
    """JWT tokens as the auth store uses a token provider: signed with the wall clock's time (their `exp` is
    seconds since the epoch), kept nowhere, so enabling, disabling and user changes drop none (the rest of
    the provider is the no-token one's)."""

    enabled = True

    def __init__(self, jwt: JwtTokens) -> None:
        self.jwt = jwt

    def assign(self, username: str, prefix: str, index: int, now: float, *, revision: int = 0) -> str:
        return self.jwt.assign(username, revision, time.time())
