"""etcd's JSON gateway (grpc-gateway v1 as etcd 3.5.1 configures it) on the client port.

`POST /v3/<route>` with a JSON body calls the registered gRPC handler of that route and answers
JSON, byte for byte as etcd prints it:
- Requests are read like golang/protobuf's jsonpb (AllowUnknownFields): field names as in the
  .proto or in lowerCamelCase, unknown fields ignored, 64-bit integers as numbers or strings,
  enums by name or number, bytes as standard base64, `null` leaves a field unset, only the first
  JSON value of the body counts. Errors read like Go's (`illegal base64 data at input byte 0`).
- Responses use the .proto field names (OrigName), omit zero values, write 64-bit integers as
  strings, bytes as base64 and enums by name, in declaration order, with Go's HTML-safe string
  escaping (`<` -> `\\u003c`).
- A failed call answers `{"error":..,"code":..,"message":..}` with grpc-gateway's HTTP status
  for the gRPC code (INVALID_ARGUMENT -> 400, ...).
- Streaming methods (/v3/watch, /v3/lease/keepalive) take every JSON value of the body as one
  request message and answer a chunked stream of `{"result":{...}}` lines.
- `/v3beta/...` is served as `/v3/...`, as etcd 3.5 does.
"""

import base64
import json
import logging
import math
import re
import struct

import trio
from google.protobuf.descriptor import FieldDescriptor

from proto.gateway_routes import ROUTES
from trietcd.gojson import go_string
from trietcd.metrics import format_float
from trietcd.wire.grpc_call import GrpcError, Registry, Status, parse_timeout
from trietcd.wire.http1 import BodyWriter, HttpApp, Request, Response, StreamingBody, split_target

__all__ = ["gateway_app", "message_to_json", "json_to_message", "JsonDecodeError", "http_status_of"]

log = logging.getLogger("trietcd.api.gateway")

_JSON_HEADERS = (("Content-Type", "application/json"),)
_OK_HEADERS = (("Content-Type", "application/json"), ("Grpc-Metadata-Content-Type", "application/grpc"))
_TEXT_HEADERS = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))

# grpc-gateway v1 runtime.HTTPStatusFromCode.
_HTTP_STATUS = {
    Status.OK: 200, Status.CANCELLED: 408, Status.UNKNOWN: 500, Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504, Status.NOT_FOUND: 404, Status.ALREADY_EXISTS: 409,
    Status.PERMISSION_DENIED: 403, Status.UNAUTHENTICATED: 401, Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400, Status.ABORTED: 409, Status.OUT_OF_RANGE: 400,
    Status.UNIMPLEMENTED: 501, Status.INTERNAL: 500, Status.UNAVAILABLE: 503, Status.DATA_LOSS: 500,
}
_STATUS_TEXT = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout",
}
# HTTP headers grpc-gateway forwards as "grpcgateway-<name>" metadata (isPermanentHTTPHeader).
_PERMANENT_HEADERS = frozenset(
    "accept accept-charset accept-language accept-ranges authorization cache-control content-type cookie "
    "date expect from host if-match if-modified-since if-none-match if-schedule-tag-match "
    "if-unmodified-since max-forwards origin pragma referer user-agent via warning".split()
)


def http_status_of(code: Status) -> int:
    return _HTTP_STATUS.get(code, 500)


# -- protobuf -> JSON (jsonpb Marshaler{OrigName: true}) ----------------------------------------

_INT64_TYPES = frozenset({
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
})
_INT32_TYPES = frozenset({
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
})
_UINT32_TYPES = frozenset({FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32})
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})

def message_to_json(message) -> str:
    parts = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            if not len(value):
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                text = _map_to_json(field, value)
            else:
                text = "[" + ",".join(_value_to_json(field, v) for v in value) + "]"
        elif field.message_type is not None or field.containing_oneof is not None:
            if not message.HasField(field.name):
                continue
            text = _value_to_json(field, value)
        else:
            if value == field.default_value and not (field.type in _FLOAT_TYPES and math.copysign(1, value) < 0):
                continue
            text = _value_to_json(field, value)
        parts.append(f'"{field.name}":{text}')
    return "{" + ",".join(parts) + "}"


def _map_to_json(field, value) -> str:
    value_field = field.message_type.fields_by_name["value"]
    items = sorted(value.items(), key=lambda kv: kv[0])
    return "{" + ",".join(f"{go_string(str(k))}:{_value_to_json(value_field, v)}" for k, v in items) + "}"


def _value_to_json(field, value) -> str:
    t = field.type
    if t == FieldDescriptor.TYPE_MESSAGE or t == FieldDescriptor.TYPE_GROUP:
        return message_to_json(value)
    if t in _INT64_TYPES:
        return f'"{value}"'
    if t in _INT32_TYPES or t in _UINT32_TYPES:
        return str(value)
    if t == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if t == FieldDescriptor.TYPE_STRING:
        return go_string(value)
    if t == FieldDescriptor.TYPE_BYTES:
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if t == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return f'"{enum_value.name}"' if enum_value is not None else str(value)
    if t in _FLOAT_TYPES:
        if math.isnan(value):
            return '"NaN"'
        if math.isinf(value):
            return '"Infinity"' if value > 0 else '"-Infinity"'
        return _go_float(value, 32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    raise AssertionError(f"unhandled field type {t}")


def _go_float(value: float, bits: int) -> str:
    # strconv 'g' with the shortest digits that round-trip at the field's width. (etcd's
    # protos have no float fields; this keeps the marshaler total.)
    if bits == 32:
        exact = struct.unpack("f", struct.pack("f", value))[0]
        for digits in range(1, 10):
            candidate = float(f"{exact:.{digits}g}")
            if struct.unpack("f", struct.pack("f", candidate))[0] == exact:
                return format_float(candidate)
    return format_float(value)


# -- JSON -> protobuf (jsonpb Unmarshaler{AllowUnknownFields: true}) ----------------------------

class JsonDecodeError(Exception):
    """A body the gateway cannot turn into a request; the text is Go's."""


class _Number(str):
    """A JSON number, kept as its source text (Go checks "1e2" against int64 by text)."""


def _go_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    if c.isprintable():
        return f"'{c}'"
    return "'" + c.encode("unicode_escape").decode("ascii") + "'"


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(parse_float=_Number, parse_int=_Number, parse_constant=_reject_constant,
                            object_pairs_hook=dict)


def _reject_constant(name: str):
    raise JsonDecodeError(f"invalid character {_go_char(name[0])} looking for beginning of value")


def decode_json_values(body: bytes, *, first_only: bool) -> list:
    """The JSON values of `body` in order (just the first with `first_only`, as Go's
    json.Decoder reads a unary request); Go's error text for malformed input."""
    text = body.decode("utf-8", errors="replace")
    decoder = _decoder()
    values = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise JsonDecodeError(_go_syntax_error(text, exc)) from None
        values.append(value)
        if first_only:
            return values


def _go_syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    pos = exc.pos
    rest = text[pos:].lstrip(" \t\r\n")
    if not rest:
        return "unexpected EOF"
    c = rest[0]
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {_go_char(c)} looking for beginning of object key string"
    if exc.msg.startswith("Expecting ':'"):
        return f"invalid character {_go_char(c)} after object key"
    if exc.msg.startswith("Expecting ',' delimiter") and text[: pos].rstrip().endswith(("{", ",")) is False:
        return f"invalid character {_go_char(c)} after object key:value pair"
    if c in "nft" and not rest.startswith(("null", "false", "true")):
        literal = "null" if c == "n" else "false" if c == "f" else "true"
        for i, (got, want) in enumerate(zip(rest, literal)):
            if got != want:
                return f"invalid character {_go_char(got)} in literal {literal} (expecting {_go_char(want)})"
        return "unexpected EOF"
    return f"invalid character {_go_char(c)} looking for beginning of value"


def _json_kind(value) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, _Number):
        return "number"
    return "string"


def _cannot(value, go_type: str) -> JsonDecodeError:
    return JsonDecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}")


def json_to_message(value, message) -> None:
    """Fill `message` from the decoded JSON `value` (see the module rules)."""
    if not isinstance(value, dict):
        raise _cannot(value, "map[string]json.RawMessage")
    fields = {}
    for field in message.DESCRIPTOR.fields:
        fields[field.name] = field
        fields.setdefault(field.json_name, field)
    for key, item in value.items():
        field = fields.get(key)
        if field is None or item is None:
            continue
        _set_field(message, field, item)


def _set_field(message, field, item) -> None:
    if field.is_repeated:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _set_map(message, field, item)
            return
        if not isinstance(item, list):
            raise _cannot(item, "[]json.RawMessage")
        target = getattr(message, field.name)
        for element in item:
            if field.message_type is not None:
                json_to_message(element, target.add())
            else:
                target.append(_scalar(field, element))
        return
    if field.message_type is not None:
        sub = getattr(message, field.name)
        sub.SetInParent()
        json_to_message(item, sub)
        return
    setattr(message, field.name, _scalar(field, item))


def _set_map(message, field, item) -> None:
    if not isinstance(item, dict):
        raise _cannot(item, "map[string]json.RawMessage")
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    target = getattr(message, field.name)
    for key, element in item.items():
        k = key if key_field.type == FieldDescriptor.TYPE_STRING else _scalar(key_field, _Number(key))
        if value_field.message_type is not None:
            json_to_message(element, target[k])
        else:
            target[k] = _scalar(value_field, element)


_INT_RANGES = {
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
}
_INT_RE = re.compile(r"-?(0|[1-9][0-9]*)\Z")


def _go_int_type(field) -> str:
    t = field.type
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return "uint64"
    if t in _INT64_TYPES:
        return "int64"
    if t in _UINT32_TYPES:
        return "uint32"
    return "int32"


def _scalar(field, item):
    t = field.type
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum(field, item)
    if t in _INT64_TYPES or t in _INT32_TYPES or t in _UINT32_TYPES:
        return _integer(_go_int_type(field), item)
    if t in _FLOAT_TYPES:
        go_type = "float32" if t == FieldDescriptor.TYPE_FLOAT else "float64"
        if isinstance(item, str) and not isinstance(item, _Number):
            if item in ("NaN", "Infinity", "-Infinity"):
                return float(item.replace("Infinity", "inf"))
            item = _number_in_quotes(item)
        if not isinstance(item, _Number):
            raise _cannot(item, go_type)
        return float(item)
    if t == FieldDescriptor.TYPE_BOOL:
        if not isinstance(item, bool):
            raise _cannot(item, "bool")
        return item
    if t == FieldDescriptor.TYPE_STRING:
        if not isinstance(item, str) or isinstance(item, _Number):
            raise _cannot(item, "string")
        return item
    if t == FieldDescriptor.TYPE_BYTES:
        if not isinstance(item, str) or isinstance(item, _Number):
            raise _cannot(item, "[]uint8")
        return go_base64_decode(item)
    raise AssertionError(f"unhandled field type {t}")


def _number_in_quotes(text: str) -> _Number:
    # jsonpb strips the quotes of a quoted number and parses what is inside as JSON.
    try:
        value, end = _decoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise JsonDecodeError(_go_syntax_error(text, exc)) from None
    if end != len(text):
        raise JsonDecodeError(f"invalid character {_go_char(text[end])} after top-level value")
    if not isinstance(value, _Number):
        raise _cannot(value, "int64")
    return value


def _integer(go_type: str, item) -> int:
    if isinstance(item, str) and not isinstance(item, _Number):
        item = _number_in_quotes(item)
    if not isinstance(item, _Number):
        raise _cannot(item, go_type)
    low, high = _INT_RANGES[go_type]
    if not _INT_RE.match(item) or not low <= int(item) <= high:
        raise JsonDecodeError(f"json: cannot unmarshal number {item} into Go value of type {go_type}")
    return int(item)


def _enum(field, item) -> int:
    if isinstance(item, str) and not isinstance(item, _Number):
        value = field.enum_type.values_by_name.get(item)
        if value is None:
            quoted = json.dumps(item)
            raise JsonDecodeError(f"unknown value {json.dumps(quoted)} for enum {field.enum_type.full_name}")
        return value.number
    return _integer("int32", item)


_B64_ALPHABET = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


_STRICT_B64_RE = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def go_base64_decode(text: str) -> bytes:
    """Standard padded base64 as Go's base64.StdEncoding decodes it (CR and LF ignored), with
    its error text, e.g. "illegal base64 data at input byte 4"."""
    if len(text) % 4 == 0 and _STRICT_B64_RE.match(text):
        return base64.b64decode(text)  # the common, well-formed case, at C speed
    src = text.encode("utf-8")
    out = bytearray()
    si = 0
    n = len(src)
    while True:
        quantum = []
        while len(quantum) < 4:
            if si == n:
                if not quantum:
                    return bytes(out)
                raise JsonDecodeError(f"illegal base64 data at input byte {si - len(quantum)}")
            c = chr(src[si])
            si += 1
            if c in "\r\n":
                continue
            if c in _B64_ALPHABET:
                quantum.append(_B64_ALPHABET[c])
                continue
            if c != "=" or len(quantum) < 2:
                raise JsonDecodeError(f"illegal base64 data at input byte {si - 1}")
            # Padding: "==" after two symbols, "=" after three, then only newlines may follow.
            if len(quantum) == 2:
                while si < n and src[si] in b"\r\n":
                    si += 1
                if si == n:
                    raise JsonDecodeError(f"illegal base64 data at input byte {n}")
                if src[si] != ord("="):
                    raise JsonDecodeError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < n and src[si] in b"\r\n":
                si += 1
            if si < n:
                raise JsonDecodeError(f"illegal base64 data at input byte {si}")
            bits = 0
            for i, v in enumerate(quantum):
                bits |= v << (18 - 6 * i)
            out += bits.to_bytes(3, "big")[: len(quantum) - 1]
            return bytes(out)
        bits = (quantum[0] << 18) | (quantum[1] << 12) | (quantum[2] << 6) | quantum[3]
        out += bits.to_bytes(3, "big")


# -- the HTTP app ------------------------------------------------------------------------------

def error_body(code: int, message: str) -> bytes:
    # grpc-gateway v1's errorBody {error, code, message} through jsonpb: empty strings omitted.
    parts = []
    if message:
        parts.append(f'"error":{go_string(message)}')
    if code:
        parts.append(f'"code":{code}')
    if message:
        parts.append(f'"message":{go_string(message)}')
    return ("{" + ",".join(parts) + "}").encode()


def _error_response(exc: GrpcError) -> Response:
    return Response(http_status_of(exc.code), _JSON_HEADERS, error_body(int(exc.code), exc.message))


def _stream_error_chunk(exc: GrpcError) -> bytes:
    status = http_status_of(exc.code)
    parts = [f'"grpc_code":{int(exc.code)}', f'"http_code":{status}']
    if exc.message:
        parts.append(f'"message":{go_string(exc.message)}')
    parts.append(f'"http_status":{go_string(_STATUS_TEXT.get(status, ""))}')
    return ('{"error":{' + ",".join(parts) + "}}").encode()


class GatewayCall:
    """The `call` a handler gets when reached through the gateway (same surface as an HTTP/2
    call: metadata, peer, deadline, send, requests, set_trailing_metadata, tls_common_name).

    `tls_common_name` is always None: etcd's gateway reaches the gRPC server as a client of its
    own, so no certificate of the HTTP client ever names the caller (etcd refuses such requests
    outright when client certificate auth and auth are on: see http.py)."""

    tls_common_name: str | None = None

    def __init__(self, *, metadata: dict[str, str], peer: str, deadline: float, requests: list, send=None):
        self.metadata = metadata
        self.peer = peer
        self.deadline = deadline
        self._requests = requests
        self._send = send
        self.trailing_metadata: dict[str, str] = {}

    async def send(self, message) -> None:
        assert self._send is not None, "send() on a unary call"
        await self._send(message)

    async def requests(self):
        for request in self._requests:
            await trio.lowlevel.checkpoint()
            yield request

    def set_trailing_metadata(self, metadata: dict[str, str]) -> None:
        self.trailing_metadata = dict(metadata)


def metadata_of(request: Request) -> dict[str, str]:
    """gRPC metadata grpc-gateway v1 derives from the HTTP request (runtime.AnnotateContext)."""
    metadata: dict[str, str] = {}
    host = ""
    for name, value in request.headers:
        key = name.lower()
        if key == "host":
            host = value
        if key == "authorization":
            metadata["authorization"] = value
        if key in _PERMANENT_HEADERS:
            metadata[f"grpcgateway-{key}"] = value
        elif key.startswith("grpc-metadata-"):
            metadata[key[len("grpc-metadata-"):]] = value
    if host:
        metadata["x-forwarded-host"] = host
    peer_ip = _peer_ip(request.peer)
    if peer_ip:
        forwarded = request.header("x-forwarded-for")
        metadata["x-forwarded-for"] = f"{forwarded}, {peer_ip}" if forwarded else peer_ip
    return metadata


def _peer_ip(peer: str) -> str:
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]")
    return ""


def _deadline_of(request: Request) -> float:
    value = request.header("grpc-timeout")
    if not value:
        return math.inf
    try:
        return trio.current_time() + parse_timeout(value.encode("latin-1"))
    except Exception:
        return math.inf


def gateway_app(registry: Registry, *, routes: dict[str, str] | None = None,
                max_recv_message_bytes: int | None = None) -> HttpApp:
    """An HttpApp answering etcd's /v3/ (and /v3beta/) JSON gateway routes.

    etcd's gateway forwards each request over gRPC to its own server, whose receive limit is
    --max-request-bytes plus 512 KiB; `max_recv_message_bytes` applies the same limit to the
    encoded request (RESOURCE_EXHAUSTED, HTTP 429, with grpc-go's text)."""
    table = ROUTES if routes is None else routes

    def check_size(message) -> None:
        size = message.ByteSize()
        if max_recv_message_bytes is not None and size > max_recv_message_bytes:
            raise GrpcError(Status.RESOURCE_EXHAUSTED,
                            f"grpc: received message larger than max ({size} vs. {max_recv_message_bytes})")

    async def app(request: Request) -> Response:
        path, _ = split_target(request.target)
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/"):]
        grpc_path = table.get(path)
        if grpc_path is None:
            return Response(404, _TEXT_HEADERS, b"Not Found\n")
        if request.method != "POST":
            return Response(405, _TEXT_HEADERS, b"Method Not Allowed\n")
        method = registry.lookup(grpc_path)
        if method is None:
            return _error_response(registry.unknown_method_error(grpc_path))
        if method.client_streaming:
            return _streaming_request_call(method, request, check_size)
        try:
            values = decode_json_values(request.body, first_only=True)
            message = method.request_type()
            if values:
                json_to_message(values[0], message)
            check_size(message)
        except JsonDecodeError as exc:
            return _error_response(GrpcError(Status.INVALID_ARGUMENT, str(exc)))
        except GrpcError as exc:
            return _error_response(exc)
        call_kwargs = dict(metadata=metadata_of(request), peer=request.peer, deadline=_deadline_of(request))
        if method.server_streaming:
            return _stream_response(method, [message], call_kwargs, unary_request=True)
        call = GatewayCall(requests=[], **call_kwargs)
        try:
            with trio.move_on_at(call.deadline) as scope:
                response = await method.handler(message, call)
            if scope.cancelled_caught:
                raise GrpcError(Status.DEADLINE_EXCEEDED, "context deadline exceeded")
        except GrpcError as exc:
            return _error_response(exc)
        except Exception as exc:
            log.exception("gateway handler for %s failed", grpc_path)
            return _error_response(GrpcError(Status.UNKNOWN, str(exc)))
        return Response(200, _OK_HEADERS, message_to_json(response).encode())

    return app


def _streaming_request_call(method, request: Request, check_size) -> Response:
    # Every JSON value of the body is one request message. A first message that does not
    # decode fails the call, as grpc-gateway's first Decode error does (UNKNOWN -> 500); a
    # later one just ends the request stream there.
    messages = []
    try:
        for value in decode_json_values(request.body, first_only=False):
            message = method.request_type()
            json_to_message(value, message)
            check_size(message)
            messages.append(message)
    except JsonDecodeError as exc:
        if not messages:
            return _error_response(GrpcError(Status.UNKNOWN, str(exc)))
    except GrpcError as exc:
        return _error_response(exc)
    call_kwargs = dict(metadata=metadata_of(request), peer=request.peer, deadline=_deadline_of(request))
    if method.server_streaming:
        return _stream_response(method, messages, call_kwargs, unary_request=False)

    async def unary_result(writer: BodyWriter) -> None:
        call = GatewayCall(requests=messages, **call_kwargs)
        try:
            response = await method.handler(call)
        except GrpcError as exc:
            await _write_stream_error(writer, exc, wrote=False)
            return
        except Exception as exc:
            log.exception("gateway handler for %s failed", method.path)
            await _write_stream_error(writer, GrpcError(Status.UNKNOWN, str(exc)), wrote=False)
            return
        await writer.write(b'{"result":' + message_to_json(response).encode() + b"}\n")

    return Response(200, _OK_HEADERS, StreamingBody(unary_result))


def _stream_response(method, messages: list, call_kwargs: dict, *, unary_request: bool) -> Response:
    async def run(writer: BodyWriter) -> None:
        wrote = False

        async def send(message) -> None:
            nonlocal wrote
            wrote = True
            await writer.write(b'{"result":' + message_to_json(message).encode() + b"}\n")

        call = GatewayCall(requests=[] if unary_request else messages, send=send, **call_kwargs)
        try:
            with trio.move_on_at(call.deadline) as scope:
                if unary_request:
                    await method.handler(messages[0], call)
                else:
                    await method.handler(call)
            if scope.cancelled_caught:
                raise GrpcError(Status.DEADLINE_EXCEEDED, "context deadline exceeded")
        except GrpcError as exc:
            await _write_stream_error(writer, exc, wrote=wrote)
        except Exception as exc:
            log.exception("gateway stream handler for %s failed", method.path)
            await _write_stream_error(writer, GrpcError(Status.UNKNOWN, str(exc)), wrote=wrote)

    return Response(200, _OK_HEADERS, StreamingBody(run))


async def _write_stream_error(writer: BodyWriter, exc: GrpcError, *, wrote: bool) -> None:
    # Before anything was written the HTTP status still follows the error, as in grpc-gateway.
    if not wrote:
        writer.set_head(http_status_of(exc.code), _JSON_HEADERS)
    await writer.write(_stream_error_chunk(exc))
