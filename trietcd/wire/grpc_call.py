"""gRPC over HTTP/2 semantics, pure: statuses, method registry, request header
parsing, message framing and response header blocks.

Texts of errors follow grpc-go (the server etcd uses), so clients see the same
messages from trietcd as from etcd.
"""

from __future__ import annotations

import enum
import struct
from typing import Callable, Mapping

import attrs
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from trietcd.wire import h2_frames as f


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    """Fails a call with a status code and message."""

    def __init__(self, code: Status, message: str = ""):
        super().__init__(code, message)
        self.code = Status(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


# What a fast handler returns when it has taken the call and answers it later with `Call.finish`.
DEFERRED = object()


@attrs.frozen
class Method:
    """A method and its handler: `await handler(request, call)` (or `handler(call)` when the client
    streams) returns the response (a message, or a unary response's bytes already encoded) or raises
    GrpcError.

    A unary method may also have `fast(request, call)`, tried first, in the connection's own task and
    without yielding: it returns the response, or `DEFERRED` after arranging for `call.finish(...)` to
    answer later (a write waiting for its raft entry: no task waits for it), or None to leave the call
    to `handler`, having changed nothing. A bidi method's `fast(request, call)` answers one message at a
    time the same way (a response, or None), until it returns None: the handler then runs, from that
    message on; a stream whose every message it answered ends OK when the client half-closes."""

    path: str
    request_type: type
    response_type: type
    client_streaming: bool
    server_streaming: bool
    handler: Callable
    fast: Callable | None = None


def _unimplemented_handler(name: str, client_streaming: bool) -> Callable:
    # grpc-go's generated Unimplemented*Server answers this way.
    async def unary_request(request, call):
        raise GrpcError(Status.UNIMPLEMENTED, f"method {name} not implemented")

    async def streaming_request(call):
        raise GrpcError(Status.UNIMPLEMENTED, f"method {name} not implemented")

    return streaming_request if client_streaming else unary_request


def _refuse(request_type: type, data: bytes, exc: DecodeError):
    raise exc


class Registry:
    """The gRPC services a server answers.

    `decode_fallback(request_type, data, exc)` runs only when protobuf refused a
    request's bytes with `exc`: it returns the message to use anyway, or raises
    DecodeError with the text the client is to see. The default re-raises `exc`.
    """

    def __init__(self, decode_fallback: Callable | None = None):
        self._methods: dict[str, Method] = {}
        self._services: set[str] = set()
        self._decode_fallback = decode_fallback or _refuse

    def add_service(self, service_descriptor, handlers: Mapping[str, Callable],
                    fast: Mapping[str, Callable] | None = None) -> None:
        service = service_descriptor.full_name
        known = {m.name for m in service_descriptor.methods}
        unknown = (set(handlers) | set(fast or ())) - known
        assert not unknown, f"handlers for methods {sorted(unknown)} not in {service}"
        assert not any(m.client_streaming != m.server_streaming for m in service_descriptor.methods
                       if m.name in (fast or ())), "fast handlers are for unary and bidi methods"
        self._services.add(service)
        for m in service_descriptor.methods:
            handler = handlers.get(m.name) or _unimplemented_handler(m.name, m.client_streaming)
            method = Method(
                path=f"/{service}/{m.name}",
                request_type=message_factory.GetMessageClass(m.input_type),
                response_type=message_factory.GetMessageClass(m.output_type),
                client_streaming=m.client_streaming,
                server_streaming=m.server_streaming,
                handler=handler,
                fast=(fast or {}).get(m.name),
            )
            self._methods[method.path] = method

    def lookup(self, path: str) -> Method | None:
        return self._methods.get(path)

    def undecodable_request(self, method: Method, data: bytes, exc: DecodeError):
        """The request to use after `method.request_type` refused `data`, or the
        GrpcError grpc-go answers for a message its codec cannot unmarshal."""
        try:
            return self._decode_fallback(method.request_type, data, exc)
        except DecodeError as final:
            raise GrpcError(Status.INTERNAL, f"grpc: error unmarshalling request: {final}") from None

    def unknown_method_error(self, path: str) -> GrpcError:
        """The error grpc-go gives for a path no service answers.

        grpc-go drops one leading slash and splits at the last one; a name
        without a slash is refused with RESOURCE_EXHAUSTED (its choice, kept
        because clients see it).
        """
        name = path[1:] if path.startswith("/") else path
        slash = name.rfind("/")
        if slash < 0:
            return GrpcError(Status.RESOURCE_EXHAUSTED, f"malformed method name: {_go_quote(path)}")
        service, name = name[:slash], name[slash + 1 :]
        if service in self._services:
            return GrpcError(Status.UNIMPLEMENTED, f"unknown method {name} for service {service}")
        return GrpcError(Status.UNIMPLEMENTED, f"unknown service {service}")


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- request headers

_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESERVED = frozenset(
    [
        b"content-type",
        b"grpc-message-type",
        b"grpc-encoding",
        b"grpc-message",
        b"grpc-status",
        b"grpc-timeout",
        b"grpc-status-details-bin",
        b"te",
        b"grpc-accept-encoding",
    ]
)


def parse_timeout(value: bytes) -> float:
    """A grpc-timeout value ("1S", "250m", at most 8 digits) in seconds."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 0 < len(digits) <= 8 or not digits.isdigit():
        raise ValueError(f"transport: timeout unit is not recognized: {value.decode('latin-1')!r}")
    return int(digits) * unit


@attrs.define(slots=True)
class RequestHead:
    path: str = ""
    timeout_s: float | None = None
    error: GrpcError | None = None  # the request must be answered with this
    bad_content_type: bool = False
    names: frozenset = frozenset()  # every header name, to tell cheaply whether some metadata was sent


def parse_request_head(headers) -> RequestHead:
    """Path, deadline and problems of a request header list (already valid HTTP/2)."""
    head = RequestHead()
    content_type = b""
    for name, value in headers:
        if name == b":path":
            head.path = value.decode("utf-8", "replace")
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            try:
                head.timeout_s = parse_timeout(value)
            except ValueError as exc:
                head.error = GrpcError(Status.INTERNAL, f"malformed grpc-timeout: {exc}")
        elif name == b"grpc-encoding" and value not in (b"identity", b""):
            head.error = GrpcError(Status.UNIMPLEMENTED, f"grpc: Decompressor is not installed for grpc-encoding {_go_quote(value.decode('latin-1'))}")
    head.names = frozenset(name for name, _ in headers)
    if not (content_type == b"application/grpc" or content_type.startswith((b"application/grpc+", b"application/grpc;"))):
        head.bad_content_type = True
    return head


def metadata_of(headers) -> dict[str, str]:
    """Request metadata: header fields that are neither pseudo nor reserved."""
    md = {}
    for name, value in headers:
        if name[:1] == b":" or name in _RESERVED:
            continue
        md[name.decode("latin-1")] = value.decode("utf-8", "replace")
    return md


# ---------------------------------------------------------------- messages

_PREFIX = struct.Struct(">BI")


def frame_message(payload: bytes) -> bytes:
    """A length-prefixed, uncompressed gRPC message."""
    return _PREFIX.pack(0, len(payload)) + payload


def whole_message(data: bytes, max_message_bytes: int) -> list[bytes] | None:
    """[message] when data is exactly one whole message, [] when empty, None
    otherwise (then a MessageReader is needed)."""
    if len(data) >= 5:
        flag, length = _PREFIX.unpack_from(data)
        if length == len(data) - 5:
            _check_prefix(flag, length, max_message_bytes)
            return [data[5:]]
        return None
    return [] if not data else None


def _check_prefix(flag: int, length: int, max_message_bytes: int) -> None:
    if flag == 1:
        raise GrpcError(Status.INTERNAL, "grpc: compressed flag set with identity or empty encoding")
    if flag != 0:
        raise GrpcError(Status.INTERNAL, f"grpc: received unexpected payload format {flag}")
    if length > max_message_bytes:
        raise GrpcError(
            Status.RESOURCE_EXHAUSTED,
            f"grpc: received message larger than max ({length} vs. {max_message_bytes})",
        )


class MessageReader:
    """Reassembles length-prefixed messages from DATA payloads.

    Raises GrpcError for a compressed message (no compression is negotiated) or a
    message over `max_message_bytes`, before buffering its body."""

    __slots__ = ("_buf", "_need", "max_message_bytes")

    def __init__(self, max_message_bytes: int):
        self._buf = bytearray()
        self._need = 5  # bytes to complete the current prefix or body
        self.max_message_bytes = max_message_bytes

    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Complete messages found by adding `data`."""
        buf = self._buf
        buf += data
        out = []
        while len(buf) >= 5:
            flag, length = _PREFIX.unpack_from(buf)
            self._check(flag, length)
            if len(buf) < 5 + length:
                break
            out.append(bytes(buf[5 : 5 + length]))
            del buf[: 5 + length]
        return out

    def _check(self, flag: int, length: int) -> None:
        _check_prefix(flag, length, self.max_message_bytes)


# ---------------------------------------------------------------- response headers
# Encoded once with static-table references and literals without indexing, so
# the HPACK dynamic table is never involved (see h2_frames.hpack_literal).

_CONTENT_TYPE = f.hpack_literal_indexed_name(f.HPACK_CONTENT_TYPE_INDEX, b"application/grpc")
RESPONSE_HEADERS = f.HPACK_STATUS_200 + _CONTENT_TYPE
OK_TRAILERS = f.hpack_literal(b"grpc-status", b"0")

_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    """grpc-message encoding: UTF-8, bytes outside printable ASCII and '%' as %XX."""
    raw = message.encode("utf-8")
    if all(b in _UNRESERVED for b in raw):
        return raw
    return b"".join(bytes([b]) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def percent_decode(value: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        b = value[i]
        if b == 0x25 and i + 2 < len(value) and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def _metadata_block(metadata: Mapping[str, str] | None) -> bytes:
    if not metadata:
        return b""
    return b"".join(f.hpack_literal(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in metadata.items())


def trailers_block(code: Status, message: str = "", metadata: Mapping[str, str] | None = None) -> bytes:
    if code == Status.OK and not message and not metadata:
        return OK_TRAILERS
    block = f.hpack_literal(b"grpc-status", b"%d" % code)
    if message:
        block += f.hpack_literal(b"grpc-message", percent_encode(message))
    return block + _metadata_block(metadata)


def trailers_only_block(code: Status, message: str = "", metadata: Mapping[str, str] | None = None) -> bytes:
    """A response that is just headers with END_STREAM (an error before any message)."""
    return RESPONSE_HEADERS + trailers_block(code, message, metadata)
