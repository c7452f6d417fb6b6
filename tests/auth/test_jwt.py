"""JWT tokens as etcd 3.5.1 makes and checks them: tokens etcd made (tests/fixtures/jwt) verify here, tokens made
here with the same key are etcd's byte for byte (RS256 and HS256 signatures are deterministic), and every way a
token can be wrong is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trietcd.auth.errors import InvalidAuthOptsError
from trietcd.auth.jwt import (JwtTokens, KeyMismatchError, KeyParseError, MissingKeyError, VerifyOnlyError,
                              parse_go_duration, parse_token_opts)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "jwt"
TOKENS = json.loads((FIXTURES / "etcd-3.5.1-tokens.json").read_text())
FAMILY_KEY = {"RS": "rs", "PS": "rs", "ES": "es", "HS": "hs"}


def files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in FIXTURES.iterdir()}


def provider(alg: str, *, pub=True, priv=True, ttl="10m") -> JwtTokens:
    k = FAMILY_KEY[alg[:2]]
    opts = {"sign-method": alg, "ttl": ttl}
    if priv:
        opts["priv-key"] = f"{k}.key"
    if pub and k != "hs":
        opts["pub-key"] = f"{k}.pub"
    return JwtTokens(opts, files())


@pytest.mark.parametrize("alg", sorted(TOKENS))
def test_tokens_etcd_made_verify_until_they_expire(alg):
    t = TOKENS[alg]
    p = provider(alg)
    assert p.info(t["token"], t["created_at"]) == ("alice", 5)
    assert p.info(t["token"], t["created_at"] + 599) == ("alice", 5)
    assert p.info(t["token"], t["created_at"] + 600) is None  # exp is created + 10m: expired at exp
    # A public key alone verifies them too.
    if alg[:2] != "HS":
        assert provider(alg, priv=False).info(t["token"], t["created_at"]) == ("alice", 5)


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
def test_deterministic_signatures_match_etcds_byte_for_byte(alg):
    t = TOKENS[alg]
    claims = json.loads(base64.urlsafe_b64decode(t["token"].split(".")[1] + "=="))
    issued = claims["exp"] - 600
    assert provider(alg).assign("alice", 5, issued + 0.9) == t["token"]


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_randomized_signatures_have_etcds_header_and_claims_and_verify(alg):
    t = TOKENS[alg]
    claims = json.loads(base64.urlsafe_b64decode(t["token"].split(".")[1] + "=="))
    ours = provider(alg).assign("alice", 5, claims["exp"] - 600)
    assert ours.split(".")[:2] == t["token"].split(".")[:2]
    assert ours != t["token"]  # a fresh random signature
    assert provider(alg, priv=False).info(ours, t["created_at"]) == ("alice", 5)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS384", "PS512", "HS384", "HS512"])
def test_other_hash_sizes_round_trip(alg):
    p = provider(alg)
    token = p.assign("bob", 7, 1000.0)
    assert p.info(token, 1000.0) == ("bob", 7)
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")) == {"alg": alg, "typ": "JWT"}


@pytest.mark.parametrize("curve,alg", [(ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")])
def test_larger_curves_round_trip(curve, alg):
    key = ec.generate_private_key(curve)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    p = JwtTokens({"sign-method": alg, "priv-key": "k"}, {"k": pem})
    token = p.assign("bob", 1, 50.0)
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 2 * (48 if alg == "ES384" else 66)
    assert p.info(token, 50.0) == ("bob", 1)


def _tamper_claims(token: str, **changes) -> str:
    head, claims, sig = token.split(".")
    c = json.loads(base64.urlsafe_b64decode(claims + "=="))
    c.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(c, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


def test_bad_tokens_are_refused():
    t = TOKENS["RS256"]
    p = provider("RS256")
    now = t["created_at"]
    good = t["token"]
    attempts = [
        "", "abc", "a.b", "a.b.c.d", good + "x", good[:-2], _tamper_claims(good, username="root"),
        _tamper_claims(good, revision=99), good.replace(good.split(".")[2], ""),
        TOKENS["ES256"]["token"],  # another algorithm
        TOKENS["HS256"]["token"], TOKENS["PS256"]["token"],
        "\u00e9." + good.split(".", 1)[1],
    ]
    # alg "none", and an HS256 token signed with the RSA public key (the classic confusion attack).
    head_none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    attempts.append(head_none + "." + good.split(".")[1] + ".")
    confused = JwtTokens({"sign-method": "HS256", "priv-key": "rs.pub"}, files()).assign("alice", 5, now)
    attempts.append(confused)
    assert [a for a in attempts if p.info(a, now) is not None] == []


def test_claims_rules_of_jwt_go():
    p = JwtTokens({"sign-method": "HS256", "priv-key": "hs.key"}, files())
    token = p.assign("u", 3, 100.0)
    assert p.info(token, 100.0) == ("u", 3)
    # nbf / iat in the future, exp missing: built by hand with the same secret.
    import hashlib
    import hmac

    secret = (FIXTURES / "hs.key").read_bytes()

    def signed(claims: dict) -> str:
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"

    assert p.info(signed({"username": "u", "revision": 1}), 100.0) == ("u", 1)  # no exp: never expires
    assert p.info(signed({"username": "u", "revision": 1, "nbf": 101}), 100.0) is None
    assert p.info(signed({"username": "u", "revision": 1, "iat": 101}), 100.0) is None
    assert p.info(signed({"username": "u", "revision": 1, "exp": "soon"}), 100.0) is None
    assert p.info(signed({"username": 5, "revision": 1}), 100.0) is None
    assert p.info(signed({"username": "u"}), 100.0) is None
    assert p.info(signed({"username": "u", "revision": 2.0}), 100.0) == ("u", 2)


def test_options_like_etcd():
    assert parse_token_opts("simple") == ("simple", {})
    assert parse_token_opts("jwt,sign-method=RS256,ttl=1h") == ("jwt", {"sign-method": "RS256", "ttl": "1h"})
    assert parse_token_opts("") == ("", {})
    for bad in ["jwt,sign-method", "jwt,a=b=c", "jwt,ttl=1m,ttl=2m", "jwt,"]:
        with pytest.raises(InvalidAuthOptsError):
            parse_token_opts(bad)
    assert parse_go_duration("5m") == 300 and parse_go_duration("1h30m") == 5400
    assert parse_go_duration("1.5s") == 1.5 and parse_go_duration("0") == 0
    for bad in ["", "5", "m", "1x", "1..2s"]:
        with pytest.raises(InvalidAuthOptsError):
            parse_go_duration(bad)
    assert provider("RS256", ttl="").ttl_s == 300  # etcd's default


def test_key_errors_like_etcd():
    f = files()
    with pytest.raises(InvalidAuthOptsError):
        JwtTokens({"sign-method": "XX256", "priv-key": "rs.key"}, f)
    with pytest.raises(InvalidAuthOptsError):
        JwtTokens({"sign-method": "RS256", "priv-key": "rs.key", "ttl": "forever"}, f)
    with pytest.raises(MissingKeyError):
        JwtTokens({"sign-method": "RS256"}, f)
    with pytest.raises(MissingKeyError):
        JwtTokens({"sign-method": "HS256", "pub-key": "hs.key"}, f)
    with pytest.raises(KeyParseError):
        JwtTokens({"sign-method": "RS256", "priv-key": "hs.key"}, f)
    with pytest.raises(KeyParseError):
        JwtTokens({"sign-method": "ES256", "priv-key": "rs.key"}, f)
    other = rsa.generate_private_key(public_exponent=3, key_size=1024)
    f["other.pub"] = other.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyMismatchError):
        JwtTokens({"sign-method": "RS256", "priv-key": "rs.key", "pub-key": "other.pub"}, f)
    verify_only = provider("RS256", priv=False)
    assert verify_only.verify_only
    with pytest.raises(VerifyOnlyError):
        verify_only.assign("alice", 1, 0.0)
