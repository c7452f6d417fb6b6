"""A lean client side of gRPC over HTTP/2, sans-IO, for the benchmark tool.

Rules of this module:
- It never touches sockets, clocks or randomness: bytes go in through
  `receive()`, bytes come out of `data_to_send()`, finished calls come back as
  `(stream_id, grpc_status, detail)` tuples, and the response messages of
  calls started with `collect=True` are queued in `messages`.
- It is independent of the server under test: it imports nothing else from
  trietcd, so a bug in the project's codec cannot hide itself by agreeing
  with itself.
- Request header blocks are encoded once, with static-table references and
  literals that are never indexed, so one block is valid verbatim for every
  call and the decoder's dynamic table on the server never grows from us.
- Response header blocks go through `hpack`. A block whose decoding left the
  dynamic table unchanged decodes the same way until the table changes, so
  such blocks are cached by their bytes; any table change drops the cache.
- Flow control is honoured both ways: our receive windows are opened wide once
  and topped up, our sends respect the server's connection and stream windows.
- A call's request may be one message sent with END_STREAM (unary, and the
  one-shot use of a streaming method), or a stream kept open for more
  messages (`send_message`) until `end_call` or `cancel_call`.
"""

from __future__ import annotations

import collections
import struct
import urllib.parse

import hpack

__all__ = [
    "PREFACE",
    "ProtocolError",
    "ClientConn",
    "encode_request_headers",
    "split_messages",
    "encode_frame",
    "grpc_message",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

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

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

WINDOW_MAX = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
STREAM_ID_MAX = 2**31 - 1

_FRAME_HEAD = struct.Struct(">BHBBL")  # length is 24 bits: high byte + low 16


class ProtocolError(Exception):
    """The server broke HTTP/2 in a way that makes the connection unusable."""


def encode_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    length = len(payload)
    return (
        _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id)
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(value: bytes) -> bytes:
    return _hpack_int(len(value), 7, 0x00) + value  # never Huffman: plain bytes


def _literal_indexed_name(static_index: int, value: bytes) -> bytes:
    # "Literal Header Field without Indexing -- Indexed Name" (RFC 7541 6.2.2).
    return _hpack_int(static_index, 4, 0x00) + _hpack_str(value)


def _literal_new_name(name: bytes, value: bytes) -> bytes:
    return b"\x00" + _hpack_str(name) + _hpack_str(value)


def encode_request_headers(
    path: str, authority: str, metadata: tuple[tuple[str, str], ...] = (), *, tls: bool = False
) -> bytes:
    """A gRPC request header block that can be sent unchanged on every call."""
    block = [
        b"\x83",  # :method POST (static 3)
        b"\x87" if tls else b"\x86",  # :scheme https (static 7) or http (static 6)
        _literal_indexed_name(4, path.encode()),  # :path
        _literal_indexed_name(1, authority.encode()),  # :authority
        _literal_indexed_name(31, b"application/grpc"),  # content-type
        _literal_new_name(b"te", b"trailers"),
    ]
    for name, value in metadata:
        block.append(_literal_new_name(name.lower().encode(), value.encode()))
    return b"".join(block)


def grpc_message(message: bytes) -> bytes:
    """The 5-byte length-prefixed gRPC framing of one uncompressed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def split_messages(buf: bytearray) -> list[bytes]:
    """Takes the complete gRPC messages off the front of `buf` (in place)."""
    out = []
    pos = 0
    while len(buf) - pos >= 5:
        length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
        if len(buf) - pos - 5 < length:
            break
        if buf[pos]:
            raise ProtocolError("compressed gRPC message, although none was asked for")
        out.append(bytes(buf[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    del buf[:pos]
    return out


class _Stream:
    __slots__ = (
        "status", "grpc_status", "grpc_message", "data_bytes", "send_window",
        "pending", "pending_end", "local_ended", "collected", "recv_consumed_bytes",
    )

    def __init__(self, send_window: int, collect: bool) -> None:
        self.status = ""
        self.grpc_status = ""
        self.grpc_message = ""
        self.data_bytes = 0
        self.send_window = send_window  # the server's window for this stream
        self.pending = b""  # request bytes waiting for window
        self.pending_end = False  # END_STREAM goes with the last pending byte
        self.local_ended = False  # END_STREAM queued (or sent)
        # Response DATA not yet split into messages; None when not collected.
        self.collected: bytearray | None = bytearray() if collect else None
        self.recv_consumed_bytes = 0


class ClientConn:
    """One HTTP/2 connection carrying gRPC calls.

    Usage: `initiate()`, then `start_call(headers_block, message)` per call,
    `receive(bytes)` for what the socket read, `data_to_send()` for what to
    write. A call finishes exactly once, as a tuple in the list `receive()`
    returns: `(stream_id, grpc_status, detail)`, grpc_status -1 meaning a
    transport failure (reset stream, refused by GOAWAY, connection lost);
    a call ended with `cancel_call` never finishes.
    """

    def __init__(self, *, recv_window_refill_bytes: int = 1 << 30) -> None:
        self._out: list[bytes] = []
        self._inbuf = b""
        self._next_stream_id = 1
        self._streams: dict[int, _Stream] = {}
        self._decoder = hpack.Decoder(max_header_list_size=1 << 20)
        self._header_cache: dict[bytes, tuple[str | None, str | None, str | None]] = {}
        self._table_mark = self._table_state()
        # A header block split over CONTINUATION frames: (stream_id, flags, parts).
        self._continuing: tuple[int, int, list[bytes]] | None = None

        # Our receive side: windows opened to the maximum, refilled in bulk.
        self._recv_refill_bytes = recv_window_refill_bytes
        self._recv_consumed_bytes = 0

        # The server's receive side, which bounds what we may send.
        self._send_window = DEFAULT_WINDOW
        self._stream_window_initial = DEFAULT_WINDOW
        self._max_frame_size = DEFAULT_FRAME_SIZE
        self.max_concurrent_streams = 2**32 - 1
        # Streams with request bytes waiting for window, oldest first.
        self._blocked: collections.OrderedDict[int, _Stream] = collections.OrderedDict()

        # Response messages of collected calls, in arrival order: (stream_id, message).
        self.messages: list[tuple[int, bytes]] = []
        self.settings_received = False
        self.goaway_last_stream_id: int | None = None
        self.closed = False

    # ---- sending -----------------------------------------------------------

    def initiate(self) -> None:
        settings = b"".join(
            struct.pack(">HL", key, value)
            for key, value in (
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_MAX),
                (SETTINGS_MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE),
            )
        )
        self._out.append(PREFACE)
        self._out.append(encode_frame(SETTINGS, 0, 0, settings))
        increment = WINDOW_MAX - DEFAULT_WINDOW
        self._out.append(encode_frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big")))

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def can_start_call(self) -> bool:
        return (
            not self.closed
            and self.goaway_last_stream_id is None
            and len(self._streams) < self.max_concurrent_streams
            and self._next_stream_id <= STREAM_ID_MAX
        )

    def start_call(
        self, headers_block: bytes, message: bytes, *, end_stream: bool = True, collect: bool = False
    ) -> int:
        """Queue HEADERS and the DATA of one call; returns its stream id.

        `message` is already gRPC-framed (see `grpc_message`). The caller
        checks `can_start_call()` first. With `end_stream=False` the request
        side stays open for `send_message`; with `collect=True` the response
        messages are queued in `messages`.
        """
        assert self.can_start_call()
        sid = self._next_stream_id
        self._next_stream_id += 2
        stream = _Stream(self._stream_window_initial, collect)
        self._streams[sid] = stream
        length = len(headers_block)
        headers_head = _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, HEADERS, FLAG_END_HEADERS, sid)
        length = len(message)
        if (
            not self._blocked
            and length <= self._send_window
            and length <= stream.send_window
            and length <= self._max_frame_size
        ):
            self._send_window -= length
            stream.send_window -= length
            stream.local_ended = end_stream
            flags = FLAG_END_STREAM if end_stream else 0
            data_head = _FRAME_HEAD.pack(length >> 16, length & 0xFFFF, DATA, flags, sid)
            self._out.append(b"".join((headers_head, headers_block, data_head, message)))
        else:
            self._out.append(headers_head + headers_block)
            self._queue(sid, stream, message, end_stream)
        return sid

    def send_message(self, sid: int, message: bytes, *, end_stream: bool = False) -> None:
        """Another request message (gRPC-framed) on an open call."""
        stream = self._streams[sid]
        assert not stream.local_ended, "request side already ended"
        self._queue(sid, stream, message, end_stream)

    def end_call(self, sid: int) -> None:
        """Half-close: no more request messages on this call."""
        stream = self._streams.get(sid)
        if stream is not None and not stream.local_ended:
            self._queue(sid, stream, b"", True)

    def cancel_call(self, sid: int) -> None:
        """RST_STREAM CANCEL; the call is forgotten and never finishes."""
        if self._streams.pop(sid, None) is not None:
            self._blocked.pop(sid, None)
            self._out.append(encode_frame(RST_STREAM, 0, sid, (8).to_bytes(4, "big")))

    def _queue(self, sid: int, stream: _Stream, message: bytes, end_stream: bool) -> None:
        stream.pending += message
        stream.pending_end = end_stream
        stream.local_ended = end_stream
        self._blocked[sid] = stream
        self._flush_blocked()

    def _flush_blocked(self) -> None:
        for sid in list(self._blocked):
            stream = self._blocked[sid]
            message = stream.pending
            while True:
                chunk = min(len(message), self._send_window, stream.send_window, self._max_frame_size)
                if chunk <= 0 and message:
                    break
                last = chunk == len(message)
                flags = FLAG_END_STREAM if last and stream.pending_end else 0
                if chunk or flags:
                    self._out.append(encode_frame(DATA, flags, sid, bytes(message[:chunk])))
                self._send_window -= chunk
                stream.send_window -= chunk
                message = message[chunk:]
                if not message:
                    break
            stream.pending = message
            if not message:
                stream.pending_end = False
                del self._blocked[sid]
            if self._send_window <= 0:
                break

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ---- receiving ---------------------------------------------------------

    def receive(self, data: bytes) -> list[tuple[int, int, str]]:
        """Feed bytes read from the socket; returns the calls that finished.

        An empty `data` means the server closed the connection. Response
        messages of collected calls go to `messages` first.
        """
        done: list[tuple[int, int, str]] = []
        if not data:
            self._fail_all(done, "connection closed by server")
            return done
        buf = self._inbuf + data if self._inbuf else data
        pos = 0
        end = len(buf)
        unpack = _FRAME_HEAD.unpack_from
        streams = self._streams
        while end - pos >= 9:
            high, low, ftype, flags, sid = unpack(buf, pos)
            length = (high << 16) | low
            start = pos + 9
            if end - start < length:
                break
            pos = start + length
            sid &= 0x7FFFFFFF
            if self._continuing is not None and ftype != CONTINUATION:
                raise ProtocolError("expected CONTINUATION")
            if ftype == DATA:
                self._recv_consumed_bytes += length
                stream = streams.get(sid)
                if stream is not None:
                    stream.data_bytes += length
                    if stream.collected is not None:
                        self._collect(sid, stream, buf, start, pos, flags)
                    if flags & FLAG_END_STREAM:
                        self._finish(done, sid, stream, None)
            elif ftype == HEADERS:
                payload = buf[start:pos]
                if flags & FLAG_PADDED:
                    pad = payload[0]
                    payload = payload[1 : len(payload) - pad]
                if flags & FLAG_PRIORITY:
                    payload = payload[5:]
                if flags & FLAG_END_HEADERS:
                    self._on_headers(done, sid, flags, bytes(payload))
                else:
                    self._continuing = (sid, flags, [bytes(payload)])
            elif ftype == CONTINUATION:
                if self._continuing is None or self._continuing[0] != sid:
                    raise ProtocolError("unexpected CONTINUATION")
                self._continuing[2].append(bytes(buf[start:pos]))
                if flags & FLAG_END_HEADERS:
                    csid, cflags, parts = self._continuing
                    self._continuing = None
                    self._on_headers(done, csid, cflags, b"".join(parts))
            else:
                self._on_control(done, ftype, flags, sid, bytes(buf[start:pos]))
        self._inbuf = bytes(buf[pos:]) if pos < end else b""
        if self._recv_consumed_bytes >= self._recv_refill_bytes:
            increment = self._recv_consumed_bytes
            self._recv_consumed_bytes = 0
            self._out.append(encode_frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big")))
        return done

    def _collect(self, sid: int, stream: _Stream, buf: bytes, start: int, end: int, flags: int) -> None:
        if flags & FLAG_PADDED:
            pad = buf[start]
            start, end = start + 1, end - pad
        stream.collected += buf[start:end]
        for message in split_messages(stream.collected):
            self.messages.append((sid, message))
        # A long-lived stream would exhaust its window some day: top it up.
        stream.recv_consumed_bytes += end - start
        if stream.recv_consumed_bytes >= self._recv_refill_bytes:
            increment = stream.recv_consumed_bytes
            stream.recv_consumed_bytes = 0
            self._out.append(encode_frame(WINDOW_UPDATE, 0, sid, increment.to_bytes(4, "big")))

    def _table_state(self) -> tuple:
        table = self._decoder.header_table
        entries = table.dynamic_entries
        # Holding the newest entry object keeps its identity from being reused.
        return (len(entries), entries[0] if entries else None, table.maxsize)

    def _decode_headers(self, block: bytes) -> tuple[str | None, str | None, str | None]:
        """(:status, grpc-status, grpc-message) of a header block, None where absent."""
        summary = self._header_cache.get(block)
        if summary is not None:
            return summary
        status = grpc_status = grpc_message = None
        for name, value in self._decoder.decode(block):
            if name == ":status":
                status = value
            elif name == "grpc-status":
                grpc_status = value
            elif name == "grpc-message":
                grpc_message = urllib.parse.unquote(value)  # percent-encoded on the wire
        summary = (status, grpc_status, grpc_message)
        mark = self._table_state()
        old = self._table_mark
        if mark[0] == old[0] and mark[1] is old[1] and mark[2] == old[2]:
            if len(self._header_cache) < 256:
                self._header_cache[block] = summary
        else:
            self._table_mark = mark
            self._header_cache.clear()
        return summary

    def _on_headers(self, done: list, sid: int, flags: int, block: bytes) -> None:
        status, grpc_status, grpc_message = self._decode_headers(block)  # always: table in step
        stream = self._streams.get(sid)
        if stream is None:
            return
        if status is not None:
            stream.status = status
        if grpc_status is not None:
            stream.grpc_status = grpc_status
        if grpc_message is not None:
            stream.grpc_message = grpc_message
        if flags & FLAG_END_STREAM:
            self._finish(done, sid, stream, None)

    def _finish(self, done: list, sid: int, stream: _Stream, failure: str | None) -> None:
        del self._streams[sid]
        self._blocked.pop(sid, None)
        if failure is None and stream.collected:
            failure = "response ended inside a gRPC message"
        if failure is not None:
            done.append((sid, -1, failure))
        elif stream.status != "200":
            done.append((sid, -1, f"http status {stream.status or 'missing'}"))
        elif not stream.grpc_status:
            done.append((sid, -1, "missing grpc-status"))
        else:
            code = int(stream.grpc_status)
            done.append((sid, code, "" if code == 0 else stream.grpc_message))

    def _fail_all(self, done: list, why: str) -> None:
        self.closed = True
        for sid, stream in list(self._streams.items()):
            self._finish(done, sid, stream, why)

    def _on_control(self, done: list, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == SETTINGS:
            if flags & FLAG_ACK:
                return
            self._apply_settings(payload)
            self._out.append(encode_frame(SETTINGS, FLAG_ACK, 0, b""))
        elif ftype == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self._send_window += increment
            else:
                stream = self._streams.get(sid)
                if stream is not None:
                    stream.send_window += increment
            if self._blocked:
                self._flush_blocked()
        elif ftype == PING:
            if not flags & FLAG_ACK:
                self._out.append(encode_frame(PING, FLAG_ACK, 0, payload))
        elif ftype == RST_STREAM:
            stream = self._streams.get(sid)
            if stream is not None:
                code = int.from_bytes(payload[:4], "big")
                self._finish(done, sid, stream, f"stream reset by server (code {code})")
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.goaway_last_stream_id = last
            for open_sid, stream in list(self._streams.items()):
                if open_sid > last:
                    self._finish(done, open_sid, stream, f"refused by GOAWAY (code {code})")
        elif ftype == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE although push is disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _apply_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolError("SETTINGS length not a multiple of 6")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self._stream_window_initial
                self._stream_window_initial = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame_size = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_concurrent_streams = value
        self.settings_received = True
        if self._blocked:
            self._flush_blocked()
