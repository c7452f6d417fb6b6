"""Sans-IO HTTP/2 server connection (RFC 9113).

Rules of this module:
- `H2Connection` takes bytes (`receive_data`) and the current time (`now`, a float
  given by the shell) and returns events; what it wants to write accumulates in an
  output buffer the shell drains with `data_to_send()`.
- Events are plain tuples, first item the kind:
    (REQUEST, stream_id, headers, end_stream)   headers: tuple of (name, value) bytes;
                                                the same object for repeated blocks
    (DATA, stream_id, data, end_stream)         data may be b"" with end_stream
    (RESET, stream_id, error_code)              the stream is gone (peer reset it, or
                                                we reset it for a stream error)
    (WINDOW_OPENED, 0)                          send windows grew; blocked senders retry
    (GOAWAY_RECEIVED, error_code)
    (CLOSED, error_code, reason)                connection error or timeout: flush, close
- A stream exists in `streams` from its HEADERS until we have sent END_STREAM (or a
  reset). When we end a stream the peer has not half-closed, we also send
  RST_STREAM(NO_ERROR), like grpc-go, so a stream never outlives our side of it.
- Flow control, receive side: bytes count against the windows on arrival and are
  credited back (WINDOW_UPDATE) only when the application acknowledges them, so
  unread data is bounded by the windows we advertise.
- Flow control, send side: DATA waits in the stream's `out_data` until both windows
  allow; trailers queue behind it.
- Every quantity the peer controls is bounded by a field of `H2Limits`.
"""

from __future__ import annotations

import collections
import math

import attrs
import hpack
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.table import HeaderTable

from trietcd.wire import h2_frames as f

REQUEST = 0
DATA = 1
RESET = 2
WINDOW_OPENED = 3
GOAWAY_RECEIVED = 4
CLOSED = 5

KEEPALIVE_PING = b"trietcdK"
# grpc-go: with no active streams and PermitWithoutStream=false, a ping is only
# acceptable once per two hours; more than two strikes ends the connection.
_PING_STRIKES_MAX = 2
_NO_STREAM_PING_INTERVAL_S = 7200.0
_RESET_MEMORY = 256  # recently reset stream ids whose late frames we ignore
_BLOCK_CACHE_MAX = 64  # entries; with _BLOCK_CACHE_BLOCK_MAX, at most 64 KiB per connection
_BLOCK_CACHE_BLOCK_MAX = 1024

_CONNECTION_HEADERS = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
_REQUEST_PSEUDO = frozenset([b":method", b":scheme", b":path", b":authority"])


@attrs.frozen
class H2Limits:
    """Limits of one HTTP/2 server connection; all finite."""

    max_recv_message_bytes: int = 4 * 1024 * 1024  # grpc-go's default receive limit
    max_concurrent_streams: int = 1000
    max_header_list_bytes: int = 64 * 1024  # decoded size, RFC 7541 accounting
    max_header_block_bytes: int = 64 * 1024  # encoded size across CONTINUATION frames
    header_table_bytes: int = 4096
    max_frame_bytes: int = f.DEFAULT_FRAME_BYTES
    stream_window_bytes: int = 1024 * 1024
    connection_window_bytes: int = 8 * 1024 * 1024
    stream_send_buffer_bytes: int = 256 * 1024  # queued DATA before senders wait
    max_pending_output_bytes: int = 4 * 1024 * 1024  # unsent output before senders wait
    max_control_output_bytes: int = 1024 * 1024  # beyond max_pending_output_bytes: control replies fatal
    keepalive_min_time_s: float = 5.0
    keepalive_permit_without_stream: bool = False
    keepalive_interval_s: float = 7200.0
    keepalive_timeout_s: float = 20.0
    handshake_timeout_s: float = 10.0
    send_stall_timeout_s: float = 60.0
    max_resets_per_window: int = 500
    reset_window_s: float = 10.0

    def __attrs_post_init__(self):
        assert f.DEFAULT_FRAME_BYTES <= self.max_frame_bytes <= f.MAX_FRAME_BYTES_LIMIT
        assert 0 < self.stream_window_bytes <= f.MAX_WINDOW_BYTES
        assert f.DEFAULT_WINDOW_BYTES <= self.connection_window_bytes <= f.MAX_WINDOW_BYTES
        assert self.max_concurrent_streams > 0 and self.max_recv_message_bytes > 0


class _GenerationTable(HeaderTable):
    """The HPACK decoder's dynamic table, counting its changes.

    A header block decodes to the same list whenever the table is in the same
    state, so decoded blocks that did not change the table can be reused while
    `generation` stays the same: clients repeat identical blocks call after call."""

    generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return HeaderTable.maxsize.fget(self)

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, value)


class Stream:
    """One stream's state, owned by the connection."""

    __slots__ = (
        "stream_id",
        "remote_closed",
        "headers_sent",
        "send_window",
        "recv_window",
        "recv_credit",
        "out_data",
        "out_trailers",
        "app",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int):
        self.stream_id = stream_id
        self.remote_closed = False
        self.headers_sent = False
        self.send_window = send_window  # may go negative after a SETTINGS change
        self.recv_window = recv_window  # invariant: >= 0
        self.recv_credit = 0  # consumed bytes not yet returned by WINDOW_UPDATE
        self.out_data = bytearray()
        self.out_trailers: bytes | None = None
        self.app = None  # the shell's per-stream object


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class H2Connection:
    """Server side of one HTTP/2 connection."""

    def __init__(self, limits: H2Limits, now: float = 0.0):
        self.limits = limits
        self.streams: dict[int, Stream] = {}
        self.closed = False
        self.close_reason = ""
        self.last_stream_id = 0  # highest client stream id seen
        self.remote_goaway = False
        self.goaway_sent = False
        self._reader = f.FrameReader(limits.max_frame_bytes)
        self._decoder = hpack.Decoder()
        self._table = self._decoder.header_table = _GenerationTable()
        self._block_cache: dict[bytes, tuple] = {}  # block -> (generation, headers, valid)
        self._decoder.max_allowed_table_size = limits.header_table_bytes
        self._decoder.max_header_list_size = limits.max_header_list_bytes
        self._out = bytearray()
        self._preface_bytes = 0  # how much of the client preface has arrived
        self._settings_seen = False
        self._peer_initial_window = f.DEFAULT_WINDOW_BYTES
        self._peer_max_frame = f.DEFAULT_FRAME_BYTES
        self._send_window = f.DEFAULT_WINDOW_BYTES
        self._recv_window = limits.connection_window_bytes
        self._recv_credit = 0
        self._blocked: dict[int, None] = {}  # streams with DATA waiting for window
        self._recently_reset: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._header_stream_id = 0  # non-zero while a header block awaits CONTINUATION
        self._header_parts: list[bytes] = []
        self._header_bytes = 0
        self._header_end_stream = False
        self._header_priority = None
        self._resets: collections.deque[float] = collections.deque()
        self._ping_strikes = 0
        self._last_ping_at = -math.inf
        self._reset_ping_strikes = False
        self._created_at = now
        self._last_read_at = now
        self._ping_sent_at: float | None = None
        self._stalled_since: float | None = None
        self._events: list = []
        self._initiate()

    # ------------------------------------------------------------ public: input

    def receive_data(self, data: bytes, now: float) -> list:
        """Feeds bytes from the peer; returns events."""
        events = self._events = []
        if self.closed:
            return events
        self._last_read_at = now
        self._ping_sent_at = None  # any traffic proves the peer alive
        try:
            if self._preface_bytes < len(f.PREFACE):
                data = self._receive_preface(data)
                if not data:
                    return events
            self._reader.feed(data)
            frames = self._reader.frames()
            while frames:
                for ftype, flags, sid, payload in frames:
                    self._receive_frame(ftype, flags, sid, payload, now)
                    if self.closed:
                        return events
                frames = self._reader.frames()
        except f.FrameError as exc:
            if exc.stream_id:
                self._stream_error(exc.stream_id, exc.error_code)
            else:
                self._connection_error(exc.error_code, exc.message)
        except _ConnectionError as exc:
            self._connection_error(exc.code, exc.reason)
        self.observe_time(now)
        return events

    def tick(self, now: float) -> list:
        """Timers: handshake, keepalive ping and its timeout, stalled output."""
        events = self._events = []
        if self.closed:
            return events
        lim = self.limits
        self.observe_time(now)
        if not self._settings_seen and now - self._created_at >= lim.handshake_timeout_s:
            self._connection_error(f.PROTOCOL_ERROR, "handshake timeout")
        elif self._ping_sent_at is not None and now - self._ping_sent_at >= lim.keepalive_timeout_s:
            self._connection_error(f.NO_ERROR, "keepalive ping not acknowledged")
        elif self._stalled_since is not None and now - self._stalled_since >= lim.send_stall_timeout_s:
            self._connection_error(f.ENHANCE_YOUR_CALM, "peer stopped reading")
        elif self._ping_sent_at is None and now - self._last_read_at >= lim.keepalive_interval_s:
            self._ping_sent_at = now
            self._out += f.encode_ping(KEEPALIVE_PING, ack=False)
        return events

    @property
    def output_blocked(self) -> bool:
        """Some stream has DATA waiting for flow-control window."""
        return bool(self._blocked)

    def observe_time(self, now: float) -> None:
        """Starts (or stops) the stall clock for output waiting for window."""
        if not self._blocked:
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = now

    def next_deadline(self) -> float:
        """The earliest time `tick` has something to do."""
        lim = self.limits
        if self.closed:
            return math.inf
        if not self._settings_seen:
            return self._created_at + lim.handshake_timeout_s
        if self._ping_sent_at is not None:
            deadline = self._ping_sent_at + lim.keepalive_timeout_s
        else:
            deadline = self._last_read_at + lim.keepalive_interval_s
        if self._stalled_since is not None and self._blocked:
            deadline = min(deadline, self._stalled_since + lim.send_stall_timeout_s)
        return deadline

    # ------------------------------------------------------------ public: output

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def pending_output_bytes(self) -> int:
        return len(self._out)

    def stream_pending_bytes(self, stream_id: int) -> int:
        st = self.streams.get(stream_id)
        return len(st.out_data) if st is not None else 0

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Response headers (or a trailers-only response when end_stream)."""
        st = self.streams.get(stream_id)
        if st is None or self.closed:
            return
        assert not st.headers_sent
        st.headers_sent = True
        self._reset_ping_strikes = True
        self._out += f.encode_headers(stream_id, block, end_stream, self._peer_max_frame)
        if end_stream:
            self._finish_stream(st)

    def send_data(self, stream_id: int, data: bytes) -> None:
        st = self.streams.get(stream_id)
        if st is None or self.closed:
            return
        assert st.headers_sent and st.out_trailers is None
        st.out_data += data
        self._flush_stream(st)

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        st = self.streams.get(stream_id)
        if st is None or self.closed:
            return
        assert st.headers_sent and st.out_trailers is None
        st.out_trailers = block
        self._flush_stream(st)

    def send_response(self, stream_id: int, headers: bytes, data: bytes, trailers: bytes) -> None:
        """Headers, one DATA payload and trailers: the whole unary response."""
        st = self.streams.get(stream_id)
        if st is None or self.closed:
            return
        assert not st.headers_sent
        st.headers_sent = True
        self._reset_ping_strikes = True
        n = len(data)
        if n <= st.send_window and n <= self._send_window and n <= self._peer_max_frame and not st.out_data:
            # Fast path: everything fits the windows and one frame.
            st.send_window -= n
            self._send_window -= n
            out = self._out
            out += f.frame_header(f.HEADERS, f.FLAG_END_HEADERS, stream_id, len(headers))
            out += headers
            out += f.frame_header(f.DATA, 0, stream_id, n)
            out += data
            if len(trailers) <= self._peer_max_frame:
                out += f.frame_header(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, stream_id, len(trailers))
                out += trailers
            else:
                out += f.encode_headers(stream_id, trailers, True, self._peer_max_frame)
            self._finish_stream(st)
            return
        self._out += f.encode_headers(stream_id, headers, False, self._peer_max_frame)
        st.out_data += data
        st.out_trailers = trailers
        self._flush_stream(st)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Resets a stream on the application's behalf (no RESET event)."""
        st = self.streams.pop(stream_id, None)
        if st is None or self.closed:
            return
        self._blocked.pop(stream_id, None)
        self._remember_reset(stream_id)
        self._out += f.encode_rst_stream(stream_id, error_code)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed n bytes of the stream's DATA: credit windows."""
        if n <= 0 or self.closed:
            return
        self._credit_connection(n)
        st = self.streams.get(stream_id)
        if st is None or st.remote_closed:
            return
        st.recv_credit += n
        if st.recv_credit >= self.limits.stream_window_bytes >> 2:
            self._out += f.encode_window_update(stream_id, st.recv_credit)
            st.recv_window += st.recv_credit
            st.recv_credit = 0

    def close_gracefully(self, debug: bytes = b"") -> None:
        """GOAWAY(NO_ERROR): streams already opened finish, new ones are refused."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self._out += f.encode_goaway(self.last_stream_id, f.NO_ERROR, debug)

    # ------------------------------------------------------------ frames

    def _initiate(self) -> None:
        lim = self.limits
        settings = [
            (f.SETTINGS_MAX_CONCURRENT_STREAMS, lim.max_concurrent_streams),
            (f.SETTINGS_INITIAL_WINDOW_SIZE, lim.stream_window_bytes),
            (f.SETTINGS_MAX_HEADER_LIST_SIZE, lim.max_header_list_bytes),
        ]
        if lim.header_table_bytes != 4096:
            settings.append((f.SETTINGS_HEADER_TABLE_SIZE, lim.header_table_bytes))
        if lim.max_frame_bytes != f.DEFAULT_FRAME_BYTES:
            settings.append((f.SETTINGS_MAX_FRAME_SIZE, lim.max_frame_bytes))
        self._out += f.encode_settings(settings)
        extra = lim.connection_window_bytes - f.DEFAULT_WINDOW_BYTES
        if extra:
            self._out += f.encode_window_update(0, extra)

    def _receive_preface(self, data: bytes) -> bytes:
        need = len(f.PREFACE) - self._preface_bytes
        head = data[:need]
        expected = f.PREFACE[self._preface_bytes : self._preface_bytes + len(head)]
        if head != expected:
            raise _ConnectionError(f.PROTOCOL_ERROR, "invalid connection preface")
        self._preface_bytes += len(head)
        return data[need:]

    def _receive_frame(self, ftype: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        if self._header_stream_id:
            if ftype != f.CONTINUATION or sid != self._header_stream_id:
                raise _ConnectionError(f.PROTOCOL_ERROR, "expected CONTINUATION")
            self._receive_continuation(flags, payload)
            return
        if not self._settings_seen:
            if ftype != f.SETTINGS or flags & f.FLAG_ACK:
                raise _ConnectionError(f.PROTOCOL_ERROR, "first frame is not SETTINGS")
            self._settings_seen = True
        if ftype == f.DATA:
            self._receive_data_frame(flags, sid, payload)
        elif ftype == f.HEADERS:
            self._receive_headers_frame(flags, sid, payload)
        elif ftype == f.WINDOW_UPDATE:
            self._receive_window_update(sid, f.parse_window_update(payload, sid))
        elif ftype == f.RST_STREAM:
            self._receive_rst_stream(sid, f.parse_rst_stream(payload, sid), now)
        elif ftype == f.SETTINGS:
            self._receive_settings(f.parse_settings(flags, payload, sid), flags)
        elif ftype == f.PING:
            self._receive_ping(flags, f.parse_ping(payload, sid), now)
        elif ftype == f.PRIORITY:
            f.parse_priority(payload, sid)  # validated, otherwise ignored
        elif ftype == f.GOAWAY:
            last, code, _debug = f.parse_goaway(payload, sid)
            self.remote_goaway = True
            self._events.append((GOAWAY_RECEIVED, code))
        elif ftype == f.CONTINUATION:
            raise _ConnectionError(f.PROTOCOL_ERROR, "unexpected CONTINUATION")
        elif ftype == f.PUSH_PROMISE:
            raise _ConnectionError(f.PROTOCOL_ERROR, "PUSH_PROMISE sent to a server")
        # Unknown frame types are ignored.

    def _receive_data_frame(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(f.PROTOCOL_ERROR, "DATA on stream 0")
        n = len(payload)
        self._recv_window -= n
        if self._recv_window < 0:
            raise _ConnectionError(f.FLOW_CONTROL_ERROR, "connection receive window exceeded")
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_stream_id:
                raise _ConnectionError(f.PROTOCOL_ERROR, "DATA on an idle stream")
            self._credit_connection(n)
            if sid not in self._recently_reset:
                self._stream_error(sid, f.STREAM_CLOSED)
            return
        if st.remote_closed:
            self._credit_connection(n)
            self._stream_error(sid, f.STREAM_CLOSED)
            return
        st.recv_window -= n
        if st.recv_window < 0:
            self._credit_connection(n)
            self._stream_error(sid, f.FLOW_CONTROL_ERROR)
            return
        data = f.strip_padding(flags, payload, sid) if flags & f.FLAG_PADDED else payload
        if len(data) != n:
            self.acknowledge_received_data(sid, n - len(data))  # padding is consumed now
        end_stream = bool(flags & f.FLAG_END_STREAM)
        if end_stream:
            st.remote_closed = True
        self._events.append((DATA, sid, data, end_stream))

    def _receive_headers_frame(self, flags: int, sid: int, payload: bytes) -> None:
        block, priority = f.parse_headers(flags, payload, sid)
        self._header_priority = priority
        self._header_end_stream = bool(flags & f.FLAG_END_STREAM)
        if flags & f.FLAG_END_HEADERS:
            self._receive_header_block(sid, block)
            return
        self._header_stream_id = sid
        self._header_parts = [block]
        self._header_bytes = len(block)
        self._check_header_block_size()

    def _receive_continuation(self, flags: int, payload: bytes) -> None:
        self._header_parts.append(payload)
        self._header_bytes += len(payload)
        self._check_header_block_size()
        if flags & f.FLAG_END_HEADERS:
            sid = self._header_stream_id
            block = b"".join(self._header_parts)
            self._header_stream_id = 0
            self._header_parts = []
            self._receive_header_block(sid, block)

    def _check_header_block_size(self) -> None:
        if self._header_bytes > self.limits.max_header_block_bytes:
            raise _ConnectionError(f.ENHANCE_YOUR_CALM, "header block too large")

    def _receive_header_block(self, sid: int, block: bytes) -> None:
        if len(block) > self.limits.max_header_block_bytes:
            raise _ConnectionError(f.ENHANCE_YOUR_CALM, "header block too large")
        # Decode first, whatever happens to the stream, to keep HPACK state in step.
        table = self._table
        cached = self._block_cache.get(block)
        if cached is not None and cached[0] == table.generation:
            _, headers, valid = cached
        else:
            generation = table.generation
            try:
                headers = tuple(self._decoder.decode(block, raw=True))
            except OversizedHeaderListError:
                raise _ConnectionError(f.ENHANCE_YOUR_CALM, "header list too large") from None
            except (HPACKError, ValueError, IndexError) as exc:
                raise _ConnectionError(f.COMPRESSION_ERROR, f"bad header block: {exc}") from None
            valid = _valid_request_headers(headers)
            if table.generation == generation and len(block) <= _BLOCK_CACHE_BLOCK_MAX:
                if len(self._block_cache) >= _BLOCK_CACHE_MAX:
                    self._block_cache.clear()
                self._block_cache[block] = (generation, headers, valid)
        end_stream = self._header_end_stream
        if sid % 2 == 0:
            raise _ConnectionError(f.PROTOCOL_ERROR, "even stream id from client")
        st = self.streams.get(sid)
        if st is not None:
            self._receive_trailers(st, headers, end_stream)
            return
        if sid <= self.last_stream_id:
            if sid in self._recently_reset:
                return
            raise _ConnectionError(f.STREAM_CLOSED, "HEADERS on a closed stream")
        self.last_stream_id = sid
        priority = self._header_priority
        if priority is not None and priority[0] == sid:
            self._stream_error(sid, f.PROTOCOL_ERROR)
            return
        if self.goaway_sent or len(self.streams) >= self.limits.max_concurrent_streams:
            self._stream_error(sid, f.REFUSED_STREAM)
            return
        if not valid:
            self._stream_error(sid, f.PROTOCOL_ERROR)
            return
        st = Stream(sid, self._peer_initial_window, self.limits.stream_window_bytes)
        st.remote_closed = end_stream
        self.streams[sid] = st
        self._events.append((REQUEST, sid, headers, end_stream))

    def _receive_trailers(self, st: Stream, headers, end_stream: bool) -> None:
        if st.remote_closed:
            self._stream_error(st.stream_id, f.STREAM_CLOSED)
            return
        if not end_stream or any(name[:1] == b":" for name, _ in headers):
            self._stream_error(st.stream_id, f.PROTOCOL_ERROR)
            return
        st.remote_closed = True
        self._events.append((DATA, st.stream_id, b"", True))

    def _receive_window_update(self, sid: int, increment: int) -> None:
        if sid == 0:
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW_BYTES:
                raise _ConnectionError(f.FLOW_CONTROL_ERROR, "connection send window overflow")
            self._stalled_since = None
            for blocked_sid in list(self._blocked):
                st = self.streams.get(blocked_sid)
                if st is not None:
                    self._flush_stream(st)
            self._events.append((WINDOW_OPENED, 0))
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self.last_stream_id:
                raise _ConnectionError(f.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return  # late update for a closed stream
        st.send_window += increment
        if st.send_window > f.MAX_WINDOW_BYTES:
            self._stream_error(sid, f.FLOW_CONTROL_ERROR)
            return
        self._stalled_since = None
        self._flush_stream(st)
        self._events.append((WINDOW_OPENED, sid))

    def _receive_rst_stream(self, sid: int, code: int, now: float) -> None:
        if sid > self.last_stream_id:
            raise _ConnectionError(f.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        resets = self._resets
        resets.append(now)
        horizon = now - self.limits.reset_window_s
        while resets and resets[0] < horizon:
            resets.popleft()
        if len(resets) > self.limits.max_resets_per_window:
            raise _ConnectionError(f.ENHANCE_YOUR_CALM, "too many stream resets")
        st = self.streams.pop(sid, None)
        if st is None:
            return
        self._blocked.pop(sid, None)
        self._remember_reset(sid)
        self._events.append((RESET, sid, code))

    def _receive_settings(self, settings: list[tuple[int, int]], flags: int) -> None:
        if flags & f.FLAG_ACK:
            return
        for ident, value in settings:
            if ident == f.SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > f.MAX_WINDOW_BYTES:
                        raise _ConnectionError(f.FLOW_CONTROL_ERROR, "stream send window overflow")
                if delta > 0:
                    for blocked_sid in list(self._blocked):
                        self._flush_stream(self.streams[blocked_sid])
                    self._events.append((WINDOW_OPENED, 0))
            elif ident == f.SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame = value
            # HEADER_TABLE_SIZE needs nothing: we never index response headers.
        self._queue_control(f.SETTINGS_ACK_FRAME)

    def _receive_ping(self, flags: int, opaque: bytes, now: float) -> None:
        if flags & f.FLAG_ACK:
            if opaque == KEEPALIVE_PING:
                self._ping_sent_at = None
            return
        self._queue_control(f.encode_ping(opaque, ack=True))
        last, self._last_ping_at = self._last_ping_at, now
        if self._reset_ping_strikes:
            self._reset_ping_strikes = False
            self._ping_strikes = 0
            return
        lim = self.limits
        if not self.streams and not lim.keepalive_permit_without_stream:
            if now - last < _NO_STREAM_PING_INTERVAL_S:
                self._ping_strikes += 1
        elif now - last < lim.keepalive_min_time_s:
            self._ping_strikes += 1
        if self._ping_strikes > _PING_STRIKES_MAX:
            raise _ConnectionError(f.ENHANCE_YOUR_CALM, "too_many_pings")

    # ------------------------------------------------------------ helpers

    def _queue_control(self, frame: bytes) -> None:
        # Replies the peer provokes (ACKs, resets) must not pile up when it does
        # not read: that is a flood.
        lim = self.limits
        if len(self._out) > lim.max_pending_output_bytes + lim.max_control_output_bytes:
            raise _ConnectionError(f.ENHANCE_YOUR_CALM, "peer does not read its control frames")
        self._out += frame

    def _credit_connection(self, n: int) -> None:
        self._recv_credit += n
        if self._recv_credit >= self.limits.connection_window_bytes >> 2:
            self._out += f.encode_window_update(0, self._recv_credit)
            self._recv_window += self._recv_credit
            self._recv_credit = 0

    def _flush_stream(self, st: Stream) -> None:
        out_data = st.out_data
        while out_data:
            n = min(len(out_data), st.send_window, self._send_window, self._peer_max_frame)
            if n <= 0:
                self._blocked[st.stream_id] = None  # the stall clock starts at observe_time
                return
            self._out += f.frame_header(f.DATA, 0, st.stream_id, n)
            self._out += out_data[:n]
            del out_data[:n]
            st.send_window -= n
            self._send_window -= n
            self._reset_ping_strikes = True
        self._blocked.pop(st.stream_id, None)
        if not self._blocked:
            self._stalled_since = None
        if st.out_trailers is not None:
            self._out += f.encode_headers(st.stream_id, st.out_trailers, True, self._peer_max_frame)
            self._finish_stream(st)

    def _finish_stream(self, st: Stream) -> None:
        """We sent END_STREAM: the stream is done on our side."""
        del self.streams[st.stream_id]
        self._blocked.pop(st.stream_id, None)
        if not st.remote_closed:
            self._out += f.encode_rst_stream(st.stream_id, f.NO_ERROR)
            self._remember_reset(st.stream_id)

    def _remember_reset(self, sid: int) -> None:
        recent = self._recently_reset
        recent[sid] = None
        if len(recent) > _RESET_MEMORY:
            recent.popitem(last=False)

    def _stream_error(self, sid: int, code: int) -> None:
        st = self.streams.pop(sid, None)
        self._remember_reset(sid)
        self._queue_control(f.encode_rst_stream(sid, code))
        if st is not None:
            self._blocked.pop(sid, None)
            self._events.append((RESET, sid, code))

    def _connection_error(self, code: int, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        if self._preface_bytes >= len(f.PREFACE) or code != f.PROTOCOL_ERROR:
            self._out += f.encode_goaway(self.last_stream_id, code, reason.encode()[:256])
        for sid in list(self.streams):
            self._events.append((RESET, sid, f.CANCEL))
        self.streams.clear()
        self._blocked.clear()
        self._events.append((CLOSED, code, reason))


def _valid_request_headers(headers) -> bool:
    """RFC 9113 section 8.2 and 8.3 checks on a request header list."""
    seen_regular = False
    pseudo = set()
    for name, value in headers:
        if name[:1] == b":":
            if seen_regular or name not in _REQUEST_PSEUDO or name in pseudo:
                return False
            pseudo.add(name)
            continue
        seen_regular = True
        if name.lower() != name or name in _CONNECTION_HEADERS:
            return False
        if name == b"te" and value != b"trailers":
            return False
    return b":method" in pseudo and b":path" in pseudo and b":scheme" in pseudo
