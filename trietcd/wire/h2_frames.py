"""HTTP/2 frame codec (RFC 9113 section 4 and 6), pure.

Rules of this module:
- `FrameReader` cuts a byte stream into raw frames `(type, flags, stream_id, payload)`;
  it checks only the frame length against the receive limit.
- `parse_*` functions validate one frame's payload and raise `FrameError` carrying the
  RFC 9113 error code and whether the error is a stream or a connection error.
- `encode_*` functions return complete frames as bytes.
- Nothing here keeps connection state; `h2_conn` does.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# Error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

# Settings identifiers.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW_BYTES = 65535
DEFAULT_FRAME_BYTES = 16384
MAX_FRAME_BYTES_LIMIT = (1 << 24) - 1
MAX_WINDOW_BYTES = (1 << 31) - 1

_HEADER = struct.Struct(">HBBBI")  # 24-bit length as (high 16, low 8), type, flags, stream id
_U32 = struct.Struct(">I")
_U32U32 = struct.Struct(">II")
_SETTING = struct.Struct(">HI")


class FrameError(Exception):
    """A frame violates RFC 9113. `stream_id` is 0 for connection errors."""

    def __init__(self, error_code: int, message: str, stream_id: int = 0):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.stream_id = stream_id


def _conn_error(code: int, message: str) -> FrameError:
    return FrameError(code, message, 0)


class FrameReader:
    """Cuts bytes into raw frames. Frames longer than `max_frame_bytes` are a
    connection FRAME_SIZE_ERROR (we never buffer more than one frame beyond it)."""

    __slots__ = ("_buf", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_FRAME_BYTES):
        assert DEFAULT_FRAME_BYTES <= max_frame_bytes <= MAX_FRAME_BYTES_LIMIT
        self._buf = bytearray()
        self.max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered_bytes(self) -> int:
        return len(self._buf)

    def take(self, n: int) -> bytes:
        """Removes and returns the first n buffered bytes (for the preface)."""
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """All complete frames buffered so far, in order. An oversized frame
        raises once the frames before it have been returned."""
        buf = self._buf
        size = len(buf)
        pos = 0
        out = []
        limit = self.max_frame_bytes
        unpack = _HEADER.unpack_from
        while size - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(buf, pos)
            length = (hi << 8) | lo
            if length > limit:
                if out:
                    break  # frames before the bad one first; it raises next time
                del buf[:pos]
                raise _conn_error(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds {limit}")
            end = pos + 9 + length
            if end > size:
                break
            out.append((ftype, flags, sid & 0x7FFFFFFF, bytes(buf[pos + 9 : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def strip_padding(flags: int, payload: bytes, stream_id: int) -> bytes:
    """Payload without padding (DATA, HEADERS)."""
    if not flags & FLAG_PADDED:
        return payload
    if not payload:
        raise _conn_error(FRAME_SIZE_ERROR, "padded frame without pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise _conn_error(PROTOCOL_ERROR, "padding longer than payload")
    return payload[1 : len(payload) - pad]


def parse_headers(flags: int, payload: bytes, stream_id: int) -> tuple[bytes, tuple[int, bool, int] | None]:
    """(header block fragment, priority) of a HEADERS frame; priority is
    (depends_on, exclusive, weight) when the PRIORITY flag is set."""
    if stream_id == 0:
        raise _conn_error(PROTOCOL_ERROR, "HEADERS on stream 0")
    body = strip_padding(flags, payload, stream_id)
    priority = None
    if flags & FLAG_PRIORITY:
        if len(body) < 5:
            raise _conn_error(FRAME_SIZE_ERROR, "HEADERS too short for priority")
        dep = _U32.unpack_from(body)[0]
        priority = (dep & 0x7FFFFFFF, bool(dep >> 31), body[4] + 1)
        body = body[5:]
    # A self-dependency is a stream error, checked by the caller after it has
    # decoded the block (HPACK state must stay in step).
    return body, priority


def parse_priority(payload: bytes, stream_id: int) -> tuple[int, bool, int]:
    if stream_id == 0:
        raise _conn_error(PROTOCOL_ERROR, "PRIORITY on stream 0")
    if len(payload) != 5:
        raise FrameError(FRAME_SIZE_ERROR, "PRIORITY length is not 5", stream_id)
    dep = _U32.unpack_from(payload)[0]
    depends_on = dep & 0x7FFFFFFF
    if depends_on == stream_id:
        raise FrameError(PROTOCOL_ERROR, "stream depends on itself", stream_id)
    return depends_on, bool(dep >> 31), payload[4] + 1


def parse_rst_stream(payload: bytes, stream_id: int) -> int:
    if stream_id == 0:
        raise _conn_error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
    if len(payload) != 4:
        raise _conn_error(FRAME_SIZE_ERROR, "RST_STREAM length is not 4")
    return _U32.unpack(payload)[0]


def parse_settings(flags: int, payload: bytes, stream_id: int) -> list[tuple[int, int]]:
    """Validated (identifier, value) pairs; empty for an ACK."""
    if stream_id != 0:
        raise _conn_error(PROTOCOL_ERROR, "SETTINGS on a stream")
    if flags & FLAG_ACK:
        if payload:
            raise _conn_error(FRAME_SIZE_ERROR, "SETTINGS ACK with payload")
        return []
    if len(payload) % 6:
        raise _conn_error(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
    out = []
    for pos in range(0, len(payload), 6):
        ident, value = _SETTING.unpack_from(payload, pos)
        if ident == SETTINGS_ENABLE_PUSH and value > 1:
            raise _conn_error(PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        if ident == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW_BYTES:
            raise _conn_error(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
        if ident == SETTINGS_MAX_FRAME_SIZE and not DEFAULT_FRAME_BYTES <= value <= MAX_FRAME_BYTES_LIMIT:
            raise _conn_error(PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
        out.append((ident, value))
    return out


def parse_ping(payload: bytes, stream_id: int) -> bytes:
    if stream_id != 0:
        raise _conn_error(PROTOCOL_ERROR, "PING on a stream")
    if len(payload) != 8:
        raise _conn_error(FRAME_SIZE_ERROR, "PING length is not 8")
    return payload


def parse_goaway(payload: bytes, stream_id: int) -> tuple[int, int, bytes]:
    """(last_stream_id, error_code, debug_data)."""
    if stream_id != 0:
        raise _conn_error(PROTOCOL_ERROR, "GOAWAY on a stream")
    if len(payload) < 8:
        raise _conn_error(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
    last, code = _U32U32.unpack_from(payload)
    return last & 0x7FFFFFFF, code, payload[8:]


def parse_window_update(payload: bytes, stream_id: int) -> int:
    if len(payload) != 4:
        raise _conn_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4")
    increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
    if increment == 0:
        if stream_id == 0:
            raise _conn_error(PROTOCOL_ERROR, "WINDOW_UPDATE with zero increment")
        raise FrameError(PROTOCOL_ERROR, "WINDOW_UPDATE with zero increment", stream_id)
    return increment


def parse_frame(ftype: int, flags: int, stream_id: int, payload: bytes):
    """Validates one frame in isolation and returns its decoded payload
    (used by tests and the fuzz target; the connection uses the parsers above)."""
    if ftype == DATA:
        if stream_id == 0:
            raise _conn_error(PROTOCOL_ERROR, "DATA on stream 0")
        return strip_padding(flags, payload, stream_id)
    if ftype == HEADERS:
        block, priority = parse_headers(flags, payload, stream_id)
        if priority is not None and priority[0] == stream_id:
            raise FrameError(PROTOCOL_ERROR, "stream depends on itself", stream_id)
        return block, priority
    if ftype == PRIORITY:
        return parse_priority(payload, stream_id)
    if ftype == RST_STREAM:
        return parse_rst_stream(payload, stream_id)
    if ftype == SETTINGS:
        return parse_settings(flags, payload, stream_id)
    if ftype == PUSH_PROMISE:
        raise _conn_error(PROTOCOL_ERROR, "PUSH_PROMISE sent to a server")
    if ftype == PING:
        return parse_ping(payload, stream_id)
    if ftype == GOAWAY:
        return parse_goaway(payload, stream_id)
    if ftype == WINDOW_UPDATE:
        return parse_window_update(payload, stream_id)
    if ftype == CONTINUATION:
        if stream_id == 0:
            raise _conn_error(PROTOCOL_ERROR, "CONTINUATION on stream 0")
        return payload
    return None  # unknown frame types are ignored (RFC 9113 section 4.1)


# ---------------------------------------------------------------- encoding


def frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return _HEADER.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def frame_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    return _HEADER.pack(length >> 8, length & 0xFF, ftype, flags, stream_id)


def encode_settings(settings: list[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(i, v) for i, v in settings))


SETTINGS_ACK_FRAME = frame(SETTINGS, FLAG_ACK, 0, b"")


def encode_ping(opaque: bytes, ack: bool) -> bytes:
    assert len(opaque) == 8
    return frame(PING, FLAG_ACK if ack else 0, 0, opaque)


def encode_goaway(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32U32.pack(last_stream_id, error_code) + debug)


def encode_rst_stream(stream_id: int, error_code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(error_code))


def encode_window_update(stream_id: int, increment: int) -> bytes:
    assert 0 < increment <= MAX_WINDOW_BYTES
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def encode_headers(stream_id: int, block: bytes, end_stream: bool, max_frame_bytes: int) -> bytes:
    """HEADERS (+ CONTINUATION frames when the block exceeds the peer's frame size)."""
    flags = FLAG_END_STREAM if end_stream else 0
    if len(block) <= max_frame_bytes:
        return frame(HEADERS, flags | FLAG_END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame_bytes] for i in range(0, len(block), max_frame_bytes)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    for part in parts[1:-1]:
        out.append(frame(CONTINUATION, 0, stream_id, part))
    out.append(frame(CONTINUATION, FLAG_END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


# ---------------------------------------------------------------- HPACK literals
# Response header blocks use only static-table references and literals without
# indexing, so they never touch the HPACK dynamic table and can be encoded once.


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A 'literal header field without indexing — new name' (RFC 7541 6.2.2)."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


def hpack_literal_indexed_name(name_index: int, value: bytes) -> bytes:
    """A 'literal header field without indexing — indexed name'."""
    return _hpack_int(name_index, 4, 0) + _hpack_int(len(value), 7, 0) + value


HPACK_STATUS_200 = b"\x88"  # static table index 8
HPACK_CONTENT_TYPE_INDEX = 31
