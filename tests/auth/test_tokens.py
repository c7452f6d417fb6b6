"""Simple tokens: etcd's format, TTL refreshed by use, dropped per user and all at once on disable."""

from __future__ import annotations

import random

import pytest

from trietcd.auth import SimpleTokens, token_index
from trietcd.auth.tokens import TOKEN_LETTERS


def test_prefix_is_sixteen_letters_from_the_injected_rng():
    a = SimpleTokens(300, random.Random(3)).gen_prefix()
    assert len(a) == 16 and set(a) <= set(TOKEN_LETTERS)
    assert a == SimpleTokens(300, random.Random(3)).gen_prefix()


@pytest.mark.parametrize("token, index", [
    ("abcdefghijklmnop.12", 12), ("x.0", 0), ("a.b.1", None), ("abc", None), ("abc.", None), ("abc.-1", None),
    ("abc.+1", None), ("abc.1x", None), (f"abc.{1 << 64}", None), (f"abc.{(1 << 64) - 1}", (1 << 64) - 1),
    ("abc.\u0661", None),  # a non-ASCII digit
])
def test_token_index(token, index):
    assert token_index(token) == index


def test_ttl_is_pushed_out_by_use():
    t = SimpleTokens(10, random.Random(1))
    t.enable()
    token = t.assign("alice", "p" * 16, 5, now=100.0)
    assert token == "pppppppppppppppp.5"
    assert t.expire(109.0) == []
    assert t.user_of(token, 109.0) == "alice"  # used: now lives until 119
    assert t.expire(115.0) == []
    assert t.expire(119.5) == [token]
    assert t.user_of(token, 120.0) is None


def test_nonpositive_ttl_is_etcds_default():
    assert SimpleTokens(0, random.Random(1)).ttl_s == 300


def test_invalidate_user_and_disable():
    t = SimpleTokens(300, random.Random(1))
    assert t.assign("a", "x" * 16, 1, 0.0) == "xxxxxxxxxxxxxxxx.1"
    assert len(t) == 0  # not enabled: not kept
    t.enable()
    a1, a2, b = t.assign("a", "x" * 16, 2, 0.0), t.assign("a", "y" * 16, 3, 0.0), t.assign("b", "z" * 16, 4, 0.0)
    t.invalidate_user("a")
    assert (t.user_of(a1, 1.0), t.user_of(a2, 1.0), t.user_of(b, 1.0)) == (None, None, "b")
    t.disable()
    assert t.user_of(b, 1.0) is None and len(t) == 0
