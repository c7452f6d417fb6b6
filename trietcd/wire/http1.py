"""HTTP/1.1 server protocol, sans-IO (in the manner of h11): bytes in, events and bytes out.

Rules of this module:
- One request at a time. `next_event()` returns NEED_DATA, CONTINUE (send `CONTINUE_BYTES`),
  a complete `Request` (head and whole body), or CLOSED. After a `Request` the caller must answer
  it with `send_response` (+ `send_body`/`end_response` for a streamed body) before asking for
  the next event; pipelined bytes stay buffered meanwhile.
- Whatever a peer controls is bounded by `Limits`: head bytes, header count, body bytes, chunk
  line length. A violation raises `HttpError` carrying the status to answer with; the caller
  sends `error_response(err)` and closes.
- Bodies: Content-Length or `Transfer-Encoding: chunked` (which wins over Content-Length, as in
  Go's net/http). A response with a streamed body (async iterator or `StreamingBody`) uses
  chunked encoding on HTTP/1.1 and is delimited by closing the connection on HTTP/1.0.
- Persistence: HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes unless
  `Connection: keep-alive`.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import attrs

__all__ = [
    "Request",
    "Response",
    "StreamingBody",
    "BodyWriter",
    "HttpApp",
    "Limits",
    "HttpError",
    "ServerConnection",
    "NEED_DATA",
    "CONTINUE",
    "CLOSED",
    "CONTINUE_BYTES",
    "split_target",
    "reason_phrase",
]


@attrs.frozen
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: str
    # The Subject CN of the verified client certificate when the connection is TLS, else None.
    tls_common_name: str | None = None

    def header(self, name: str, default: str = "") -> str:
        """The first value of header `name` (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default


class BodyWriter(Protocol):
    """What a `StreamingBody` writes with (provided by the connection shell)."""

    def set_head(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        """Replace the response's status and headers; only before the first `write`."""

    async def write(self, data: bytes) -> None:
        """Send `data` as body bytes (the head goes out before the first write)."""


@attrs.frozen
class StreamingBody:
    """A body produced by a coroutine run in the connection's task: `await run(writer)`.
    Framed like an async-iterator body (chunked on HTTP/1.1). Unlike an async generator, `run`
    may open nurseries and cancel scopes freely; if it has not written when it decides the
    request failed, it may still change the status with `writer.set_head`."""

    run: Callable[[BodyWriter], Awaitable[None]]


@attrs.frozen
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | AsyncIterator[bytes] | StreamingBody = b""


HttpApp = Callable[[Request], Awaitable[Response]]


@attrs.frozen
class Limits:
    # Go's net/http default: 1 MiB of request line + headers, plus 4 KiB of slack.
    head_bytes_max: int = (1 << 20) + 4096
    header_count_max: int = 256
    body_bytes_max: int = 4 << 20
    chunk_line_bytes_max: int = 4096


class HttpError(Exception):
    """A request the server refuses; `status` is what to answer before closing."""

    def __init__(self, status: int, detail: str = ""):
        super().__init__(f"{status} {reason_phrase(status)}" + (f": {detail}" if detail else ""))
        self.status = status
        self.detail = detail


class _Sentinel:
    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
CONTINUE = _Sentinel("CONTINUE")
CLOSED = _Sentinel("CLOSED")
CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Request Entity Too Large", 421: "Misdirected Request", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def sniff_content_type(body: bytes) -> str:
    """The Content-Type Go's http.DetectContentType gives the bodies servers
    here send: HTML, text or opaque bytes."""
    text = bytes(body[:512]).lstrip(b"\t\n\x0c\r ")
    if text[:1] == b"<" and text[1:2].isalpha():
        return "text/html; charset=utf-8"
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B) for b in text):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target in origin form ("/a?b") or absolute form
    ("http://host/a?b"); "*" gives ("*", "")."""
    if "://" in target and not target.startswith("/"):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = "/" if slash < 0 else rest[slash:]
    path, _, query = target.partition("?")
    return path, query


# States of one request/response cycle.
_IDLE = "idle"  # reading a request head
_BODY = "body"  # reading its body
_WAIT_RESPONSE = "wait-response"  # request delivered, response not started
_SEND_BODY = "send-body"  # streaming a response body
_CLOSED = "closed"


@attrs.define
class _Head:
    method: str
    target: str
    http10: bool
    headers: tuple[tuple[str, str], ...]
    keep_alive: bool
    chunked: bool
    content_length: int
    expect_continue: bool


class ServerConnection:
    def __init__(self, limits: Limits = Limits(), *, peer: str = "", tls_common_name: str | None = None):
        self.limits = limits
        self.peer = peer
        self.tls_common_name = tls_common_name
        self._buf = bytearray()
        self._eof = False
        self._state = _IDLE
        self._head: _Head | None = None
        # Chunked decoding progress: decoded bytes so far, and whether the last chunk was seen.
        self._body = bytearray()
        self._chunk_left = 0  # data bytes of the current chunk still to read; -1: read its CRLF
        self._trailers = False
        self._continue_sent = False
        self._scan_from = 0
        self._response_chunked = False
        self._response_keep_alive = True

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def state(self) -> str:
        return self._state

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    @property
    def keep_alive(self) -> bool:
        return self._state != _CLOSED and self._response_keep_alive

    def next_event(self):
        assert self._state not in (_WAIT_RESPONSE, _SEND_BODY), "answer the request first"
        if self._state == _CLOSED:
            return CLOSED
        if self._state == _IDLE:
            head = self._parse_head()
            if head is None:
                if self._eof:
                    self._state = _CLOSED
                    return CLOSED
                return NEED_DATA
            self._head = head
            self._body = bytearray()
            self._chunk_left = 0
            self._trailers = False
            self._continue_sent = False
            self._state = _BODY
        return self._next_body_event()

    def _next_body_event(self):
        head = self._head
        assert head is not None
        done = self._read_chunked() if head.chunked else self._read_fixed(head.content_length)
        if not done:
            if self._eof:
                self._state = _CLOSED
                return CLOSED
            if head.expect_continue and not self._continue_sent:
                self._continue_sent = True
                return CONTINUE
            return NEED_DATA
        self._state = _WAIT_RESPONSE
        self._response_keep_alive = head.keep_alive
        return Request(
            method=head.method,
            target=head.target,
            headers=head.headers,
            body=bytes(self._body),
            peer=self.peer,
            tls_common_name=self.tls_common_name,
        )

    def _parse_head(self) -> _Head | None:
        # Tolerate empty lines before a request line (RFC 9112 section 2.2).
        while self._buf[:2] == b"\r\n" or self._buf[:1] == b"\n":
            del self._buf[: 2 if self._buf[:1] == b"\r" else 1]
            self._scan_from = 0
        end, sep = _find_head_end(self._buf, self._scan_from)
        if end < 0:
            if len(self._buf) > self.limits.head_bytes_max:
                raise HttpError(431)
            # The separator is at most 4 bytes: resume the search just before the new bytes.
            self._scan_from = max(0, len(self._buf) - 3)
            return None
        self._scan_from = 0
        if end > self.limits.head_bytes_max:
            raise HttpError(431)
        raw = bytes(self._buf[:end])
        del self._buf[: end + sep]
        lines = raw.split(b"\n")
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        method, target, http10 = _parse_request_line(lines[0])
        if len(lines) - 1 > self.limits.header_count_max:
            raise HttpError(431)
        headers = tuple(_parse_header_line(line) for line in lines[1:])
        return self._interpret_head(method, target, http10, headers)

    def _interpret_head(self, method, target, http10, headers) -> _Head:
        def values(name):
            return [v for k, v in headers if k.lower() == name]

        if not http10 and not values("host"):
            raise HttpError(400, "missing required Host header")
        connection = {t.strip().lower() for v in values("connection") for t in v.split(",")}
        keep_alive = ("keep-alive" in connection) if http10 else ("close" not in connection)
        chunked = False
        te = values("transfer-encoding")
        if te:
            if http10:
                raise HttpError(400, "unsupported transfer encoding")
            if len(te) != 1 or te[0].strip().lower() != "chunked":
                raise HttpError(501, "unsupported transfer encoding")
            chunked = True
        content_length = 0
        cl = {v.strip() for v in values("content-length")}
        if cl and not chunked:
            if len(cl) != 1:
                raise HttpError(400)  # Go answers a bare "400 Bad Request" here
            text = cl.pop()
            if not text.isdigit() or not text.isascii() or len(text) > 18:
                raise HttpError(400)
            content_length = int(text)
            if content_length > self.limits.body_bytes_max:
                raise HttpError(413)
        expect = values("expect")
        expect_continue = (
            not http10
            and any(v.strip().lower() == "100-continue" for v in expect)
            and (chunked or content_length > 0)
        )
        return _Head(method, target, http10, headers, keep_alive, chunked, content_length, expect_continue)

    def _read_fixed(self, length: int) -> bool:
        if len(self._buf) < length:
            return False
        self._body = bytearray(self._buf[:length])
        del self._buf[:length]
        return True

    def _read_chunked(self) -> bool:
        """Decode as much of a chunked body as has arrived; True when it is complete."""
        while True:
            if self._trailers:
                line = self._take_line(self.limits.head_bytes_max)
                if line is None:
                    return False
                if not line:
                    return True
                continue
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(self._buf))
                self._body += self._buf[:take]
                del self._buf[:take]
                self._chunk_left -= take
                if self._chunk_left > 0:
                    return False
                self._chunk_left = -1
            if self._chunk_left == -1:
                # The data must be followed by CRLF (or a bare LF).
                if self._buf[:1] == b"\n":
                    del self._buf[:1]
                elif self._buf[:2] == b"\r\n":
                    del self._buf[:2]
                elif self._buf[:1] in (b"", b"\r") and len(self._buf) < 2:
                    return False
                else:
                    raise HttpError(400, "malformed chunked encoding")
                self._chunk_left = 0
            line = self._take_line(self.limits.chunk_line_bytes_max)
            if line is None:
                return False
            size_text = line.split(b";", 1)[0].strip().decode("latin-1")
            if not size_text or not set(size_text) <= _HEX_CHARS or len(size_text) > 16:
                raise HttpError(400, "malformed chunked encoding")
            size = int(size_text, 16)
            if len(self._body) + size > self.limits.body_bytes_max:
                raise HttpError(413)
            if size == 0:
                self._trailers = True
            else:
                self._chunk_left = size

    def _take_line(self, max_bytes: int) -> bytes | None:
        end = self._buf.find(b"\n", 0, max_bytes + 2)
        if end < 0:
            if len(self._buf) > max_bytes + 1:
                raise HttpError(400, "malformed chunked encoding")
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    # -- output --------------------------------------------------------------------------

    def send_response(self, response: Response, *, date: str = "") -> bytes:
        """Bytes of the response head, plus the whole body when it is bytes (which completes
        the cycle). For an async-iterator body, follow with `send_body`/`end_response`."""
        assert self._state == _WAIT_RESPONSE, self._state
        head = self._head
        assert head is not None
        streamed = not isinstance(response.body, (bytes, bytearray))
        lines = [f"{'HTTP/1.0' if head.http10 else 'HTTP/1.1'} {response.status} {reason_phrase(response.status)}"]
        # Go's net/http writes the handler's headers sorted by name, then the
        # ones it adds itself: Date, Content-Length, a sniffed Content-Type,
        # Connection, Transfer-Encoding. Clients that compare bytes see the same.
        has_type = False
        for name, value in sorted(response.headers, key=lambda item: item[0]):
            assert name.lower() not in ("content-length", "transfer-encoding", "connection"), name
            has_type = has_type or name.lower() == "content-type"
            lines.append(f"{name}: {value}")
        if date:
            lines.append(f"Date: {date}")
        no_body = response.status < 200 or response.status in (204, 304)
        if not streamed and not no_body:
            lines.append(f"Content-Length: {len(response.body)}")
            if not has_type and response.body:
                lines.append(f"Content-Type: {sniff_content_type(response.body)}")
        if streamed:
            if head.http10:
                self._response_keep_alive = False
            self._response_chunked = not head.http10
        if not self._response_keep_alive and not head.http10:
            lines.append("Connection: close")
        elif self._response_keep_alive and head.http10:
            lines.append("Connection: keep-alive")
        if streamed and not head.http10 and not no_body:
            lines.append("Transfer-Encoding: chunked")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if streamed:
            self._state = _SEND_BODY
            if head.method == "HEAD" or no_body:
                self._response_chunked = False
            return out
        if head.method != "HEAD" and not no_body:
            out += bytes(response.body)
        self._finish_cycle()
        return out

    def send_body(self, data: bytes) -> bytes:
        assert self._state == _SEND_BODY, self._state
        assert self._head is not None
        if not data or self._head.method == "HEAD":
            return b""
        if self._response_chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return bytes(data)

    def end_response(self) -> bytes:
        assert self._state == _SEND_BODY, self._state
        out = b"0\r\n\r\n" if self._response_chunked else b""
        self._finish_cycle()
        return out

    def _finish_cycle(self) -> None:
        self._head = None
        self._body = bytearray()
        self._state = _IDLE if self._response_keep_alive else _CLOSED

    def close(self) -> None:
        """Stop the cycle, e.g. after a response body could not be completed."""
        self._state = _CLOSED


def error_response(err: HttpError) -> bytes:
    """Bytes of the answer to a refused request, in the form Go's net/http uses (the detail
    joins the status line and the plain-text body); the connection closes after it."""
    text = f"{err.status} {reason_phrase(err.status)}" + (f": {err.detail}" if err.detail else "")
    return (
        f"HTTP/1.1 {text}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n{text}"
    ).encode("latin-1")


__all__.append("error_response")


def _find_head_end(buf: bytearray, start: int) -> tuple[int, int]:
    """Index where the head's last line ends and the length of the blank-line separator
    (it may use CRLF or bare LF); (-1, 0) when incomplete."""
    best = (-1, 0)
    for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n", b"\r\n\n"):
        i = buf.find(sep, start)
        if i >= 0 and (best[0] < 0 or i < best[0]):
            best = (i, len(sep))
    return best


def _parse_request_line(line: bytes) -> tuple[str, str, bool]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method_b, target_b, version = parts
    try:
        method = method_b.decode("ascii")
        target = target_b.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "malformed request line") from None
    if not method or not set(method) <= _TOKEN_CHARS:
        raise HttpError(400, "invalid method")
    if not target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        raise HttpError(400, "invalid request target")
    if len(version) != 8 or version[:5] != b"HTTP/" or version[6:7] != b"." \
            or not version[5:6].isdigit() or not version[7:8].isdigit():
        raise HttpError(400, "malformed HTTP version")
    if version[5:6] != b"1":
        raise HttpError(505)
    return method, target, version[7:8] == b"0"


def _parse_header_line(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding")
    name_b, colon, value_b = line.partition(b":")
    if not colon:
        raise HttpError(400, "malformed MIME header line")
    name = name_b.decode("latin-1")
    if not name or not set(name) <= _TOKEN_CHARS:
        raise HttpError(400, "invalid header name")
    value = value_b.strip(b" \t").decode("latin-1")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise HttpError(400, "invalid header value")
    return name, value
