"""Classify a client connection from its first bytes (pure: no IO).

The client port speaks several protocols on one socket, like etcd's cmux: a TLS ClientHello, the
HTTP/2 connection preface, or an HTTP/1.x request line. `classify` looks at what arrived so far
and answers one `Kind`; NEED_MORE means the prefix is still ambiguous and the caller should read
more bytes (bounded by `SNIFF_MAX_BYTES`, after which a still-ambiguous prefix is GARBAGE).

Rules, in order:
- TLS: a handshake record header, 0x16 0x03 0x00..0x04 (SSL 3.0 to TLS 1.3 record versions).
- HTTP/2: exactly the 24-byte preface. "PRI * HTTP/2.0" also parses as a request line, so the
  preface is checked before HTTP/1.
- HTTP/1: a request line `METHOD SP TARGET SP HTTP/1.<digit>` ending in LF (CRLF or bare LF).
  The method must be a token; the target has no control characters or spaces.
- anything else: GARBAGE.
"""

import enum

__all__ = ["Kind", "classify", "H2_PREFACE", "SNIFF_MAX_BYTES"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The longest request line the sniffer waits for (Go's cmux reads up to 4096 bytes).
SNIFF_MAX_BYTES = 4096

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Kind(enum.Enum):
    NEED_MORE = "need-more"
    TLS = "tls"
    H2 = "h2"
    HTTP1 = "http1"
    GARBAGE = "garbage"


def classify(data: bytes) -> Kind:
    if not data:
        return Kind.NEED_MORE
    if data[0] == 0x16:
        return _classify_tls(data)
    if H2_PREFACE.startswith(data[: len(H2_PREFACE)]):
        if len(data) < len(H2_PREFACE):
            return Kind.NEED_MORE
        return Kind.H2
    return _classify_http1(data)


def _classify_tls(data: bytes) -> Kind:
    if len(data) >= 2 and data[1] != 0x03:
        return Kind.GARBAGE
    if len(data) >= 3 and data[2] > 0x04:
        return Kind.GARBAGE
    return Kind.TLS if len(data) >= 3 else Kind.NEED_MORE


def _classify_http1(data: bytes) -> Kind:
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    # Check the method as soon as it arrives, so garbage is dropped without waiting.
    method_end = line.find(b" ")
    method = line if method_end < 0 else line[:method_end]
    if not all(c in _TOKEN_CHARS for c in method):
        return Kind.GARBAGE
    if end < 0:
        if len(data) >= SNIFF_MAX_BYTES:
            return Kind.GARBAGE
        if method_end >= 0 and any(c < 0x21 and c != 0x20 or c == 0x7F for c in line):
            return Kind.GARBAGE
        return Kind.NEED_MORE
    return Kind.HTTP1 if is_request_line(line) else Kind.GARBAGE


def is_request_line(line: bytes) -> bool:
    """True for `METHOD SP TARGET SP HTTP/1.d` (no CR/LF in `line`)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return False
    method, target, version = parts
    if not method or not all(c in _TOKEN_CHARS for c in method):
        return False
    if not target or any(c < 0x21 or c == 0x7F for c in target):
        return False
    return len(version) == 8 and version[:7] == b"HTTP/1." and version[7:8].isdigit()
