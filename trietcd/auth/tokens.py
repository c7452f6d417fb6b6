"""etcd 3.5.1's simple tokens (`server/auth/simple_token.go`), without IO: time comes in as `now` (seconds),
randomness from the `rng` the shell injects.

- A token is 16 random ASCII letters, a dot and the raft index of the entry that created it; a client that
  presents it is served once this member has applied that index (the shell waits for it).
- Tokens live only in memory, only while auth is enabled; each use pushes its expiry out by the TTL, and
  the shell drops expired ones once a second. Deleting a user or changing its password drops its tokens;
  disabling auth drops them all.
"""

from __future__ import annotations

import random

from trietcd.auth.errors import AuthFailedError

__all__ = ["NopTokens", "SimpleTokens", "TOKEN_LETTERS", "TOKEN_PREFIX_LEN", "token_index"]

TOKEN_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN_PREFIX_LEN = 16
DEFAULT_TTL_S = 300.0


def token_index(token: str) -> int | None:
    """The raft index a well-formed simple token carries; None for anything else (etcd: two dot-separated
    parts, the second a base-10 uint64)."""
    parts = token.split(".")
    if len(parts) != 2:
        return None
    digits = parts[1]
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    n = int(digits)
    return n if n < 1 << 64 else None


class SimpleTokens:
    def __init__(self, ttl_s: float, rng: random.Random) -> None:
        self.ttl_s = ttl_s if ttl_s > 0 else DEFAULT_TTL_S
        self._rng = rng
        self.enabled = False
        self._users: dict[str, str] = {}  # token -> user name
        self._expiry: dict[str, float] = {}  # token -> when it expires; same keys as _users

    def gen_prefix(self) -> str:
        return "".join(self._rng.choice(TOKEN_LETTERS) for _ in range(TOKEN_PREFIX_LEN))

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False
        self._users.clear()
        self._expiry.clear()

    def assign(self, username: str, prefix: str, index: int, now: float, *, revision: int = 0) -> str:
        """The token of a login applied at `index` (`revision`, the auth revision, is for JWT tokens)."""
        token = f"{prefix}.{index}"
        if self.enabled:
            # etcd panics on a reused token: the index of the entry makes it unique.
            assert token not in self._users, token
            self._users[token] = username
            self._expiry[token] = now + self.ttl_s
        return token

    def user_of(self, token: str, now: float) -> str | None:
        """The user a live token was given to (its expiry pushed out), else None."""
        name = self._users.get(token)
        if name is not None:
            self._expiry[token] = now + self.ttl_s
        return name

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, name in self._users.items() if name == username]:
            del self._users[token]
            del self._expiry[token]

    def expire(self, now: float) -> list[str]:
        """Drops the tokens whose time is up; returns them."""
        gone = [t for t, at in self._expiry.items() if now > at]
        for token in gone:
            del self._users[token]
            del self._expiry[token]
        return gone

    def __len__(self) -> int:
        return len(self._users)


class NopTokens:
    """`--auth-token ""`: no tokens at all (etcd's tokenNop): every login fails, every token is invalid."""

    enabled = False

    def gen_prefix(self) -> str:
        return ""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def assign(self, username: str, prefix: str, index: int, now: float, *, revision: int = 0) -> str:
        raise AuthFailedError()

    def user_of(self, token: str, now: float) -> str | None:
        return None

    def invalidate_user(self, username: str) -> None:
        pass

    def expire(self, now: float) -> list[str]:
        return []
