"""etcd 3.5.1's JWT tokens (`server/auth/jwt.go`, `options.go`), without IO: key files come in as bytes,
time as `now` (seconds since the epoch).

`--auth-token jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`:
- sign methods: RS256/384/512 (PKCS#1 v1.5), PS256/384/512 (PSS, salt as long as the hash), ES256/384/512
  (the signature is r || s, each as long as the curve's order), HS256/384/512 (the key is the priv-key
  file's bytes). ttl defaults to 5 minutes.
- A token is `base64url(header).base64url(claims).base64url(signature)`, unpadded; the header is
  `{"alg":..,"typ":"JWT"}` and the claims `{"exp":..,"revision":..,"username":..}`, keys sorted as Go's
  encoding/json writes a map, so tokens made here and by etcd are alike, and each verifies the other's.
- With only a public key the provider verifies tokens but cannot make them (`VerifyOnlyError` on assign).
- A token verifies when its algorithm is the configured one, the signature holds, and `exp`, `nbf`, `iat`,
  when present, allow `now` (jwt-go's MapClaims.Valid). etcd does not check the revision against the auth
  store's here; the apply does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from trietcd.auth.errors import AuthError, InvalidAuthOptsError, KeyMismatchError, MissingKeyError, VerifyOnlyError
from trietcd.config.gotypes import GoError, parse_duration_ns

__all__ = [
    "JwtTokens", "parse_token_opts", "parse_go_duration", "MissingKeyError", "KeyParseError",
    "KeyMismatchError", "VerifyOnlyError", "DEFAULT_TTL_S",
]

DEFAULT_TTL_S = 300.0
KNOWN_OPTIONS = frozenset({"sign-method", "pub-key", "priv-key", "ttl"})


class KeyParseError(AuthError):
    """A key file that is not the PEM key its sign method needs (jwt-go's own texts)."""

    def __init__(self, text: str) -> None:
        Exception.__init__(self, text)


def parse_token_opts(optstr: str) -> tuple[str, dict[str, str]]:
    """`--auth-token` split as etcd's decomposeOpts: the type, then `key=value` pairs; a pair without exactly
    one `=`, or a key given twice, is InvalidAuthOptsError."""
    parts = optstr.split(",")
    opts: dict[str, str] = {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2 or pair[0] in opts:
            raise InvalidAuthOptsError()
        opts[pair[0]] = pair[1]
    return parts[0], opts


_HASHES = {"256": (hashes.SHA256, hashlib.sha256), "384": (hashes.SHA384, hashlib.sha384),
           "512": (hashes.SHA512, hashlib.sha512)}
_CURVE_BYTES = {"256": 32, "384": 48, "512": 66}  # ES512 is P-521: 66-byte r and s


class JwtTokens:
    """The token provider for `--auth-token jwt,...`: `opts` as parse_token_opts gives them, `key_files` the
    contents of the files they name (path -> bytes; the shell reads them)."""

    def __init__(self, opts: dict[str, str], key_files: dict[str, bytes]) -> None:
        self.unknown_options = sorted(k for k in opts if k not in KNOWN_OPTIONS)
        ttl = opts.get("ttl", "")
        self.ttl_s = parse_go_duration(ttl) if ttl else DEFAULT_TTL_S
        method = opts.get("sign-method", "")
        family, bits = method[:2], method[2:]
        if family not in ("RS", "PS", "ES", "HS") or bits not in _HASHES:
            # etcd's option parsing fails with ErrInvalidAuthMethod, which it reports as invalid options.
            raise InvalidAuthOptsError()
        self.alg = method
        self._family = family
        self._hash, self._digest = _HASHES[bits]
        self._curve_bytes = _CURVE_BYTES[bits]
        private = key_files.get(opts["priv-key"], b"") if opts.get("priv-key") else b""
        public = key_files.get(opts["pub-key"], b"") if opts.get("pub-key") else b""
        self._private = self._public = None
        self._secret = b""
        if family == "HS":
            if not private:
                raise MissingKeyError()
            self._secret = private
        else:
            kind = rsa if family in ("RS", "PS") else ec
            priv = _load_private(private, kind) if private else None
            pub = _load_public(public, kind) if public else None
            if priv is None and pub is None:
                raise MissingKeyError()
            if priv is not None and pub is not None and _mismatch(priv.public_key(), pub, kind):
                raise KeyMismatchError()
            self._private = priv
            self._public = priv.public_key() if priv is not None else pub
        self.verify_only = family != "HS" and self._private is None

    # ---- tokens

    def assign(self, username: str, revision: int, now: float) -> str:
        if self.verify_only:
            raise VerifyOnlyError()
        header = _b64(_go_json({"alg": self.alg, "typ": "JWT"}))
        claims = _b64(_go_json({"exp": math.floor(now + self.ttl_s), "revision": revision, "username": username}))
        signing_input = f"{header}.{claims}"
        return f"{signing_input}.{_b64(self._sign(signing_input.encode()))}"

    def info(self, token: str, now: float) -> tuple[str, int] | None:
        """(user name, auth revision) of a valid token, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != self.alg:
            return None
        if not self._verify(f"{parts[0]}.{parts[1]}".encode(), signature):
            return None
        if not _claims_valid(claims, now):
            return None
        username, revision = claims.get("username"), claims.get("revision")
        # etcd type-asserts both (a token without them makes it panic); here such a token is just invalid.
        if not isinstance(username, str) or isinstance(revision, bool) or not isinstance(revision, int | float):
            return None
        if revision < 0 or revision != revision:
            return None
        return username, int(revision)

    # ---- signatures

    def _sign(self, data: bytes) -> bytes:
        fam = self._family
        if fam == "HS":
            return hmac.new(self._secret, data, self._digest).digest()
        if fam == "RS":
            return self._private.sign(data, padding.PKCS1v15(), self._hash())
        if fam == "PS":
            pss = padding.PSS(mgf=padding.MGF1(self._hash()), salt_length=padding.PSS.DIGEST_LENGTH)
            return self._private.sign(data, pss, self._hash())
        r, s = decode_dss_signature(self._private.sign(data, ec.ECDSA(self._hash())))
        n = self._curve_bytes
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")

    def _verify(self, data: bytes, signature: bytes) -> bool:
        fam = self._family
        if fam == "HS":
            return hmac.compare_digest(hmac.new(self._secret, data, self._digest).digest(), signature)
        try:
            if fam == "RS":
                self._public.verify(signature, data, padding.PKCS1v15(), self._hash())
            elif fam == "PS":
                pss = padding.PSS(mgf=padding.MGF1(self._hash()), salt_length=padding.PSS.AUTO)
                self._public.verify(signature, data, pss, self._hash())
            else:
                n = self._curve_bytes
                if len(signature) != 2 * n:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:n], "big"), int.from_bytes(signature[n:], "big"))
                self._public.verify(der, data, ec.ECDSA(self._hash()))
        except InvalidSignature:
            return False
        return True


def _claims_valid(claims: dict, now: float) -> bool:
    # jwt-go's MapClaims.Valid: exp must be in the future, iat and nbf not (each only when present).
    def number(name):
        v = claims.get(name)
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None

    exp, iat, nbf = number("exp"), number("iat"), number("nbf")
    if "exp" in claims and (exp is None or int(now) >= exp):
        return False
    if "iat" in claims and (iat is None or int(now) < iat):
        return False
    if "nbf" in claims and (nbf is None or int(now) < nbf):
        return False
    return True


def _load_private(pem: bytes, kind):
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyParseError(_NOT_PEM[kind]) from None
    if not isinstance(key, rsa.RSAPrivateKey if kind is rsa else ec.EllipticCurvePrivateKey):
        raise KeyParseError(_NOT_KIND[kind])
    return key


def _load_public(pem: bytes, kind):
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:  # jwt-go also takes a certificate's public key
            from cryptography import x509

            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise KeyParseError(_NOT_PEM[kind]) from None
    if not isinstance(key, rsa.RSAPublicKey if kind is rsa else ec.EllipticCurvePublicKey):
        raise KeyParseError(_NOT_KIND[kind].replace("private", "public"))
    return key


# jwt-go's errors for a key file it cannot use.
_NOT_PEM = {rsa: "Invalid Key: Key must be PEM encoded PKCS1 or PKCS8 private key",
            ec: "Invalid Key: Key must be PEM encoded PKCS1 or PKCS8 private key"}  # for public keys too
_NOT_KIND = {rsa: "Key is not a valid RSA private key", ec: "Key is not a valid ECDSA private key"}


def _mismatch(from_private, public, kind) -> bool:
    if kind is rsa:
        a, b = from_private.public_numbers(), public.public_numbers()
        # etcd's check: `pub.E != priv.E && pub.N.Cmp(priv.N) != 0` (both must differ).
        return a.e != b.e and a.n != b.n
    a, b = from_private.public_numbers(), public.public_numbers()
    # etcd's check for EC keys: curve, X and Y must all differ.
    return a.curve.name != b.curve.name and a.x != b.x and a.y != b.y


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _go_json(obj: dict) -> bytes:
    # encoding/json on a map: keys sorted, no spaces, HTML-safe escapes (none occur in these claims but names).
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).replace(
        "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds; InvalidAuthOptsError when malformed (etcd reports any bad option so)."""
    try:
        return parse_duration_ns(text) / 1e9
    except GoError:
        raise InvalidAuthOptsError() from None
