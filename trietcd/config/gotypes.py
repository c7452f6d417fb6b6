"""Go's parsing rules for the value types etcd's flags and config file use.

etcd 3.5.1 is built with Go 1.16; its flag values go through strconv (integers with base prefixes and
underscores, booleans), time.ParseDuration, net/url and net.SplitHostPort. A value that Go accepts must be
accepted here, and one Go rejects must be rejected with the same text, because users see these texts.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "GoError", "parse_int", "parse_uint", "parse_bool", "parse_duration_ns", "format_duration",
    "new_urls", "parse_url", "split_host_port", "parse_ip", "url_host",
]

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


class GoError(ValueError):
    """A Go parse failure; str() is the text Go's error prints."""


class _NumError(GoError):
    def __init__(self, out_of_range: bool):
        super().__init__("value out of range" if out_of_range else "parse error")
        self.out_of_range = out_of_range


def _underscore_ok(s: str) -> bool:
    # Underscores may only separate digits (or follow a base prefix), as in Go source literals.
    saw = "^"
    i = 0
    if s[:1] in ("-", "+"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _parse_digits_base0(s: str) -> int:
    """strconv.ParseUint(s, 0, 64) without the range check; raises _NumError(False) on bad syntax."""
    if s == "":
        raise _NumError(False)
    s0 = s
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "b":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "x":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
    underscores = False
    value = 0
    for c in s:
        if c == "_":
            underscores = True
            continue
        d = "0123456789abcdef".find(c.lower()) if c.isascii() else -1
        if d < 0 or d >= base:
            raise _NumError(False)
        value = value * base + d
    if underscores and not _underscore_ok(s0):
        raise _NumError(False)
    return value


def parse_uint(s: str, bits: int = 64) -> int:
    """strconv.ParseUint(s, 0, bits)."""
    value = _parse_digits_base0(s)
    if value > (1 << bits) - 1:
        raise _NumError(True)
    return value


def parse_int(s: str, bits: int = 64) -> int:
    """strconv.ParseInt(s, 0, bits)."""
    if s == "":
        raise _NumError(False)
    neg = s[0] == "-"
    body = s[1:] if s[0] in "+-" else s
    value = _parse_digits_base0(body)
    limit = 1 << (bits - 1)
    if (not neg and value >= limit) or (neg and value > limit):
        raise _NumError(True)
    return -value if neg else value


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise GoError("parse error")


_UNITS_NS = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}


def parse_duration_ns(text: str) -> int:
    """time.ParseDuration, in nanoseconds. The message is Go's (flag parsing replaces it by "parse error")."""
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise GoError(f'time: invalid duration "{orig}"')
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise GoError(f'time: invalid duration "{orig}"')
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        if whole > INT64_MAX:
            raise GoError(f'time: invalid duration "{orig}"')
        s = s[i:]
        post = False
        frac, scale = 0, 1.0
        if s[:1] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if frac > INT64_MAX // 10:
                        overflow = True  # Go ignores digits it can no longer hold
                    else:
                        frac = frac * 10 + int(s[i])
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise GoError(f'time: invalid duration "{orig}"')
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise GoError(f'time: missing unit in duration "{orig}"')
        unit_name, s = s[:i], s[i:]
        unit = _UNITS_NS.get(unit_name)
        if unit is None:
            raise GoError(f'time: unknown unit "{unit_name}" in duration "{orig}"')
        if whole > INT64_MAX // unit:
            raise GoError(f'time: invalid duration "{orig}"')
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > INT64_MAX:
                raise GoError(f'time: invalid duration "{orig}"')
        total += value
        if total > INT64_MAX:
            raise GoError(f'time: invalid duration "{orig}"')
    return -total if neg else total


def format_duration(ns: int) -> str:
    """time.Duration.String(), e.g. 5000000000 -> "5s", 5400000000000 -> "1h30m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        for unit, name in ((1, "ns"), (1_000, "\u00b5s"), (1_000_000, "ms")):
            if u < unit * 1000:
                return sign + _fraction(u, unit) + name
    h, rem = divmod(u, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    out = _fraction(rem, 1_000_000_000) + "s"
    if h or m:
        out = f"{m}m" + out
    if h:
        out = f"{h}h" + out
    return sign + out


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + str(frac).rjust(digits, "0").rstrip("0")


# --- net/url -------------------------------------------------------------------------------------------

_HOST_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]<>\"%")


def _url_error(raw: str, msg: str) -> GoError:
    return GoError(f'parse "{raw}": {msg}')


def _valid_optional_port(port: str) -> bool:
    if port == "":
        return True
    return port[0] == ":" and all("0" <= c <= "9" for c in port[1:])


def _check_host(raw: str, host: str) -> None:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise _url_error(raw, "missing ']' in host")
        port = host[end + 1:]
        if not _valid_optional_port(port):
            raise _url_error(raw, f'invalid port "{port}" after host')
    else:
        colon = host.rfind(":")
        if colon != -1 and not _valid_optional_port(host[colon:]):
            raise _url_error(raw, f'invalid port "{host[colon:]}" after host')
    for c in host:
        if c.isascii() and c not in _HOST_OK:
            raise _url_error(raw, f'invalid character "{c}" in host name')


class URL:
    """The parts of a net/url.URL that etcd looks at."""

    __slots__ = ("scheme", "opaque", "userinfo", "host", "path", "query", "fragment", "has_authority")

    def __init__(self) -> None:
        self.scheme = self.opaque = self.userinfo = self.host = self.path = ""
        self.query: str | None = None
        self.fragment: str | None = None
        self.has_authority = False

    def __str__(self) -> str:
        out = ""
        if self.scheme:
            out += self.scheme + ":"
        if self.opaque:
            out += self.opaque
        else:
            if self.scheme or self.host or self.userinfo:
                if self.host or self.path or self.userinfo:
                    out += "//"
                if self.userinfo:
                    out += self.userinfo + "@"
                out += self.host
            out += self.path
        if self.query is not None and self.query != "":
            out += "?" + self.query
        if self.fragment:
            out += "#" + self.fragment
        return out


def parse_url(raw: str) -> URL:
    """url.Parse for the absolute URLs etcd takes; raises GoError with Go's text."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise _url_error(raw, "net/url: invalid control character in URL")
    u = URL()
    rest, sep, frag = raw.partition("#")
    if sep:
        u.fragment = frag
    if rest == "*":
        u.path = "*"
        return u
    # scheme
    scheme = ""
    for i, c in enumerate(rest):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                raise _url_error(raw, "missing protocol scheme")
            scheme, rest = rest[:i], rest[i + 1:]
        break
    u.scheme = scheme.lower()
    if "?" in rest:
        rest, _, u.query = rest.partition("?")
    if not rest.startswith("/"):
        if u.scheme:
            u.opaque = rest
            return u
        if ":" in rest.split("/", 1)[0]:
            raise _url_error(raw, "first path segment in URL cannot contain colon")
    if rest.startswith("//") and (u.scheme or not rest.startswith("///")):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        at = authority.rfind("@")
        host = authority[at + 1:]
        _check_host(raw, host)
        u.userinfo = authority[:at] if at >= 0 else ""
        u.host = host
        u.has_authority = True
    u.path = rest
    return u


def split_host_port(hostport: str) -> tuple[str, str]:
    """net.SplitHostPort; raises GoError("address ...: ...")."""
    def err(msg: str) -> GoError:
        return GoError(f"address {hostport}: {msg}")

    i = hostport.rfind(":")
    if i < 0:
        raise err("missing port in address")
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise err("missing ']' in address")
        if end + 1 == len(hostport):
            raise err("missing port in address")
        if end + 1 != i:
            raise err("too many colons in address" if hostport[end + 1] == ":" else "missing port in address")
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise err("too many colons in address")
    if "[" in hostport[j:]:
        raise err("unexpected '[' in address")
    if "]" in hostport[k:]:
        raise err("unexpected ']' in address")
    return host, hostport[i + 1:]


def url_host(u: URL) -> str:
    """url.Hostname(): the host without port and brackets."""
    try:
        return split_host_port(u.host)[0]
    except GoError:
        return u.host.strip("[]")


def parse_ip(text: str) -> bool:
    """Whether net.ParseIP (Go 1.16: IPv4 fields may carry leading zeros) accepts text."""
    if "." in text and ":" not in text:
        parts = text.split(".")
        return len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts)
    if ":" in text and "%" not in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    return False


def new_urls(items: list[str]) -> tuple[str, ...]:
    """etcd's types.NewURLs: each item trimmed, checked, and the result sorted by its string form."""
    if not items:
        raise GoError("no valid URLs given")
    out = []
    for item in items:
        item = item.strip()
        u = parse_url(item)
        if u.scheme not in ("http", "https", "unix", "unixs"):
            raise GoError(f"URL scheme must be http, https, unix, or unixs: {item}")
        try:
            split_host_port(u.host)
        except GoError:
            raise GoError(f'URL address does not have the form "host:port": {item}') from None
        if u.path != "":
            raise GoError(f"URL must not contain a path: {item}")
        out.append(str(u))
    return tuple(sorted(out))
