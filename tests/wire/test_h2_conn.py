"""The sans-IO HTTP/2 server connection, driven by the `h2` library as the
client (the independent reference) and by raw frames for bad input."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import hyperframe.frame as hf
import pytest

from trietcd.wire import h2_conn as hc
from trietcd.wire import h2_frames as f
from trietcd.wire.h2_conn import H2Connection, H2Limits

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/svc/M"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class Pair:
    """An h2 client and our server connection, bytes carried synchronously."""

    def __init__(self, limits: H2Limits = H2Limits(), one_byte_at_a_time: bool = False):
        self.server = H2Connection(limits, now=0.0)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.one_byte = one_byte_at_a_time
        self.now = 0.0
        self.server_events: list = []
        self.client_events: list = []
        self.exchange()

    def exchange(self) -> None:
        for _ in range(20):
            out = self.client.data_to_send()
            if out:
                self.feed_server(out)
            back = self.server.data_to_send()
            if back:
                self.client_events += self.client.receive_data(back)
            if not out and not back:
                return

    def feed_server(self, data: bytes) -> list:
        if self.one_byte:
            events = []
            for i in range(len(data)):
                events += self.server.receive_data(data[i : i + 1], self.now)
        else:
            events = self.server.receive_data(data, self.now)
        self.server_events += events
        return events

    def raw(self, data: bytes) -> list:
        """Raw bytes from the client, behind h2's back."""
        events = self.feed_server(data)
        return events

    def server_frames(self) -> list:
        data = self.server.data_to_send()
        frames = []
        while data:
            frame, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
            frame.parse_body(memoryview(data[9 : 9 + length]))
            frames.append(frame)
            data = data[9 + length :]
        return frames

    def take(self, kind) -> list:
        got = [e for e in self.server_events if e[0] == kind]
        self.server_events = [e for e in self.server_events if e[0] != kind]
        return got


def _goaway(frames) -> hf.GoAwayFrame:
    (g,) = [x for x in frames if isinstance(x, hf.GoAwayFrame)]
    return g


@pytest.mark.parametrize("one_byte", [False, True])
def test_request_and_response_round_trip(one_byte):
    p = Pair(one_byte_at_a_time=one_byte)
    p.client.send_headers(1, REQUEST)
    p.client.send_data(1, b"\x00\x00\x00\x00\x03abc", end_stream=True)
    p.exchange()
    (req,) = p.take(hc.REQUEST)
    assert req[1] == 1 and (b":path", b"/svc/M") in req[2] and req[3] is False
    datas = p.take(hc.DATA)
    assert b"".join(d[2] for d in datas) == b"\x00\x00\x00\x00\x03abc" and datas[-1][3] is True
    p.server.send_response(1, b"\x88", b"\x00\x00\x00\x00\x01z", b"\x00\x0bgrpc-status\x010")
    p.exchange()
    kinds = [type(e) for e in p.client_events]
    assert h2.events.ResponseReceived in kinds and h2.events.TrailersReceived in kinds
    (data,) = [e for e in p.client_events if isinstance(e, h2.events.DataReceived)]
    assert data.data == b"\x00\x00\x00\x00\x01z"
    (trailers,) = [e for e in p.client_events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers.headers == [(b"grpc-status", b"0")]
    assert 1 not in p.server.streams


def test_settings_are_acknowledged_and_applied():
    p = Pair()
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in p.client_events)
    assert p.client.remote_settings.max_concurrent_streams == 1000
    p.client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 32768})
    p.exchange()
    assert p.server._peer_max_frame == 32768


def test_ping_is_acknowledged():
    p = Pair()
    p.client.ping(b"abcdefgh")
    p.exchange()
    (ack,) = [e for e in p.client_events if isinstance(e, h2.events.PingAckReceived)]
    assert ack.ping_data == b"abcdefgh"


def test_send_side_flow_control_waits_for_window_updates():
    p = Pair()
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    p.exchange()
    p.client.send_headers(1, REQUEST, end_stream=True)
    p.exchange()
    p.server.send_headers(1, b"\x88")
    p.server.send_data(1, b"0123456789abcdef")
    p.server.send_trailers(1, b"\x00\x0bgrpc-status\x010")
    p.exchange()
    got = b"".join(e.data for e in p.client_events if isinstance(e, h2.events.DataReceived))
    assert got == b"0123456789"
    assert p.server.stream_pending_bytes(1) == 6
    assert not any(isinstance(e, h2.events.StreamEnded) for e in p.client_events)
    p.client.increment_flow_control_window(100, stream_id=1)
    p.exchange()
    got = b"".join(e.data for e in p.client_events if isinstance(e, h2.events.DataReceived))
    assert got == b"0123456789abcdef"
    assert any(isinstance(e, h2.events.StreamEnded) for e in p.client_events)
    assert p.take(hc.WINDOW_OPENED)


def test_receive_windows_are_credited_as_data_is_acknowledged():
    limits = H2Limits(stream_window_bytes=1000, connection_window_bytes=65535)
    p = Pair(limits)
    p.client.send_headers(1, REQUEST)
    p.client.send_data(1, b"x" * 1000)
    p.exchange()
    assert p.client.local_flow_control_window(1) == 0
    p.server.acknowledge_received_data(1, 1000)
    p.exchange()
    assert p.client.local_flow_control_window(1) == 1000


def test_receive_window_overrun_resets_the_stream():
    limits = H2Limits(stream_window_bytes=100)
    p = Pair(limits)
    p.client.send_headers(1, REQUEST)
    p.exchange()
    p.server.data_to_send()
    p.raw(f.frame(f.DATA, 0, 1, b"x" * 101))
    assert p.take(hc.RESET) == [(hc.RESET, 1, f.FLOW_CONTROL_ERROR)]
    (rst,) = p.server_frames()
    assert isinstance(rst, hf.RstStreamFrame) and rst.error_code == f.FLOW_CONTROL_ERROR
    assert not p.server.closed


def test_connection_window_overrun_is_a_connection_error():
    limits = H2Limits(stream_window_bytes=1 << 20, connection_window_bytes=65535)
    p = Pair(limits)
    p.client.send_headers(1, REQUEST)
    p.exchange()
    p.server.data_to_send()
    for _ in range(4):
        p.raw(f.frame(f.DATA, 0, 1, b"x" * 16384))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.FLOW_CONTROL_ERROR


def test_padding_is_stripped_and_credited():
    p = Pair(H2Limits(stream_window_bytes=1000))
    p.client.send_headers(1, REQUEST)
    p.client.send_data(1, b"abc", pad_length=20)
    p.exchange()
    (data,) = p.take(hc.DATA)
    assert data[2] == b"abc"
    assert p.server.streams[1].recv_credit == 21  # pad length byte + padding


def test_continuation_frames_are_joined():
    p = Pair()
    enc = hpack.Encoder()
    block = enc.encode(REQUEST + [("x-long", "v" * 100)])
    p.raw(f.frame(f.HEADERS, 0, 1, block[:10]) + f.frame(f.CONTINUATION, 0, 1, block[10:20]))
    assert not p.take(hc.REQUEST)
    p.raw(f.frame(f.CONTINUATION, f.FLAG_END_HEADERS, 1, block[20:]))
    (req,) = p.take(hc.REQUEST)
    assert (b"x-long", b"v" * 100) in req[2]


def test_other_frame_inside_a_header_block_is_a_protocol_error():
    p = Pair()
    p.server.data_to_send()
    p.raw(f.frame(f.HEADERS, 0, 1, b"\x83") + f.encode_ping(b"12345678", ack=False))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.PROTOCOL_ERROR


def test_endless_continuation_is_cut_off():
    p = Pair(H2Limits(max_header_block_bytes=4096))
    p.server.data_to_send()
    p.raw(f.frame(f.HEADERS, 0, 1, b"\x83"))
    for _ in range(10):
        p.raw(f.frame(f.CONTINUATION, 0, 1, b"\x40" * 1000))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.ENHANCE_YOUR_CALM
    assert p.server._reader.buffered_bytes() == 0


def test_hpack_bomb_is_refused():
    # One big entry in the dynamic table, then referenced many times: small on
    # the wire, huge decoded.
    p = Pair(H2Limits(max_header_list_bytes=16 * 1024))
    p.server.data_to_send()
    enc = hpack.Encoder()
    first = enc.encode(REQUEST + [("x-bomb", "b" * 3000)])
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, first))
    assert p.take(hc.REQUEST)
    bomb = enc.encode(REQUEST + [("x-bomb", "b" * 3000)] * 20)
    assert len(bomb) < 200
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, bomb))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.ENHANCE_YOUR_CALM


def test_wrong_preface_closes_without_frames():
    server = H2Connection(H2Limits())
    server.data_to_send()
    events = server.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert events[-1][0] == hc.CLOSED and events[-1][1] == f.PROTOCOL_ERROR
    assert server.closed and server.data_to_send() == b""


def test_first_frame_must_be_settings():
    server = H2Connection(H2Limits())
    server.data_to_send()
    events = server.receive_data(f.PREFACE + f.encode_ping(b"12345678", ack=False), 0.0)
    assert events[-1][:2] == (hc.CLOSED, f.PROTOCOL_ERROR)


def test_frames_on_idle_streams_are_connection_errors():
    for frame in (f.frame(f.DATA, 0, 5, b"x"), f.encode_rst_stream(5, 0), f.encode_window_update(5, 1)):
        p = Pair()
        p.server.data_to_send()
        p.raw(frame)
        assert p.server.closed
        assert _goaway(p.server_frames()).error_code == f.PROTOCOL_ERROR


def test_data_on_a_closed_stream_is_a_stream_error():
    p = Pair()
    p.client.send_headers(1, REQUEST, end_stream=True)
    p.exchange()
    p.server.send_headers(1, b"\x88", end_stream=True)  # both sides ended: closed
    p.server.data_to_send()
    p.raw(f.frame(f.DATA, 0, 1, b"late"))
    (rst,) = p.server_frames()
    assert isinstance(rst, hf.RstStreamFrame) and rst.error_code == f.STREAM_CLOSED
    assert not p.server.closed


def test_data_after_end_stream_is_stream_closed():
    p = Pair()
    p.client.send_headers(1, REQUEST, end_stream=True)
    p.exchange()
    p.server.data_to_send()
    p.raw(f.frame(f.DATA, 0, 1, b"more"))
    assert p.take(hc.RESET) == [(hc.RESET, 1, f.STREAM_CLOSED)]
    assert not p.server.closed


def test_headers_on_a_closed_stream_is_a_connection_error():
    p = Pair()
    p.client.send_headers(1, REQUEST, end_stream=True)
    p.exchange()
    p.server.send_headers(1, b"\x88", end_stream=True)
    p.server.data_to_send()
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, hpack.Encoder().encode(REQUEST)))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.STREAM_CLOSED


def test_late_frames_on_a_stream_we_reset_are_ignored():
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.exchange()
    p.server.reset_stream(1, f.CANCEL)
    p.server.data_to_send()
    p.raw(f.frame(f.DATA, 0, 1, b"late"))
    assert p.server_frames() == [] and not p.server.closed


def test_finishing_before_the_client_half_closes_sends_rst_no_error():
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.exchange()
    p.server.send_headers(1, b"\x88", end_stream=True)
    frames = p.server_frames()
    assert isinstance(frames[-1], hf.RstStreamFrame) and frames[-1].error_code == f.NO_ERROR


def test_streams_over_the_limit_are_refused():
    p = Pair(H2Limits(max_concurrent_streams=2))
    enc = hpack.Encoder()
    p.server.data_to_send()
    for sid in (1, 3, 5):
        p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, enc.encode(REQUEST)))
    assert [e[1] for e in p.take(hc.REQUEST)] == [1, 3]
    (rst,) = p.server_frames()
    assert rst.stream_id == 5 and rst.error_code == f.REFUSED_STREAM
    # The refused block was still decoded: the next request decodes fine.
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 7, enc.encode(REQUEST)))
    p.server.reset_stream(1, f.CANCEL)
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 9, enc.encode(REQUEST)))
    assert [e[1] for e in p.take(hc.REQUEST)] == [9]


@pytest.mark.parametrize(
    "headers",
    [
        [(":method", "POST"), (":scheme", "http"), (":authority", "a")],  # no :path
        [(":method", "POST"), ("x", "1"), (":path", "/a/b"), (":scheme", "http")],  # pseudo after regular
        REQUEST + [("connection", "close")],
        REQUEST + [("te", "gzip")],
        REQUEST + [("X-Upper", "1")],
        REQUEST + [(":status", "200")],
    ],
)
def test_malformed_requests_are_stream_errors(headers):
    p = Pair()
    p.server.data_to_send()
    block = hpack.Encoder().encode(headers)
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 1, block))
    assert not p.take(hc.REQUEST)
    (rst,) = p.server_frames()
    assert rst.error_code == f.PROTOCOL_ERROR and not p.server.closed


def test_priority_is_validated_and_ignored():
    p = Pair()
    p.server.data_to_send()
    p.raw(f.frame(f.PRIORITY, 0, 3, b"\x00\x00\x00\x01\x10"))
    assert p.server_frames() == [] and not p.server.closed
    p.raw(f.frame(f.PRIORITY, 0, 3, b"\x00\x00\x00\x03\x10"))
    (rst,) = p.server_frames()
    assert rst.stream_id == 3 and rst.error_code == f.PROTOCOL_ERROR


def test_header_block_with_self_dependency_is_decoded_then_refused():
    p = Pair()
    enc = hpack.Encoder()
    p.server.data_to_send()
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_PRIORITY, 1, b"\x00\x00\x00\x01\x10" + enc.encode(REQUEST)))
    (rst,) = p.server_frames()
    assert rst.error_code == f.PROTOCOL_ERROR
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, enc.encode(REQUEST)))
    assert [e[1] for e in p.take(hc.REQUEST)] == [3]


def test_rapid_reset_is_cut_off():
    limits = H2Limits(max_resets_per_window=10, reset_window_s=10.0)
    p = Pair(limits)
    enc = hpack.Encoder()
    for i in range(10):
        sid = 1 + 2 * i
        p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, enc.encode(REQUEST)) + f.encode_rst_stream(sid, f.CANCEL))
        assert not p.server.closed
        p.now += 0.001
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 21, enc.encode(REQUEST)) + f.encode_rst_stream(21, f.CANCEL))
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.ENHANCE_YOUR_CALM


def test_resets_spread_over_time_are_fine():
    limits = H2Limits(max_resets_per_window=10, reset_window_s=10.0)
    p = Pair(limits)
    enc = hpack.Encoder()
    for i in range(50):
        sid = 1 + 2 * i
        p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, sid, enc.encode(REQUEST)) + f.encode_rst_stream(sid, f.CANCEL))
        p.now += 2.0
    assert not p.server.closed
    assert len(p.take(hc.RESET)) == 50


def test_ping_flood_without_streams_is_too_many_pings():
    p = Pair()
    p.server.data_to_send()
    for i in range(3):
        p.raw(f.encode_ping(b"%08d" % i, ack=False))
        p.now += 60.0
    assert not p.server.closed
    p.raw(f.encode_ping(b"00000004", ack=False))
    assert p.server.closed
    g = _goaway(p.server_frames())
    assert g.error_code == f.ENHANCE_YOUR_CALM and g.additional_data == b"too_many_pings"


def test_pings_at_min_time_with_active_streams_are_fine():
    p = Pair(H2Limits(keepalive_min_time_s=5.0))
    p.client.send_headers(1, REQUEST)
    p.exchange()
    for i in range(10):
        p.raw(f.encode_ping(b"%08d" % i, ack=False))
        p.now += 5.0
    assert not p.server.closed


def test_pings_reset_by_our_data_are_fine():
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.exchange()
    p.server.send_headers(1, b"\x88")
    for i in range(10):
        p.server.send_data(1, b"x")
        p.raw(f.encode_ping(b"%08d" % i, ack=False))
    assert not p.server.closed


def test_settings_flood_from_a_peer_that_does_not_read():
    p = Pair(H2Limits(max_pending_output_bytes=1000, max_control_output_bytes=1000))
    for _ in range(300):  # nobody drains the output
        p.raw(f.encode_settings([]))
    assert p.server.closed
    assert p.server.close_reason == "peer does not read its control frames"


def test_keepalive_ping_and_timeout():
    p = Pair(H2Limits(keepalive_interval_s=100.0, keepalive_timeout_s=20.0))
    p.server.data_to_send()
    assert p.server.next_deadline() == 100.0
    assert p.server.tick(99.0) == []
    p.server.tick(100.0)
    (ping,) = p.server_frames()
    assert isinstance(ping, hf.PingFrame) and ping.opaque_data == hc.KEEPALIVE_PING
    assert p.server.next_deadline() == 120.0
    p.now = 110.0
    p.raw(f.encode_ping(hc.KEEPALIVE_PING, ack=True))
    assert p.server.next_deadline() == 210.0
    p.server.tick(210.0)
    p.server.data_to_send()
    events = p.server.tick(230.0)
    assert events[-1][0] == hc.CLOSED and p.server.closed


def test_silent_connection_hits_the_handshake_timeout():
    server = H2Connection(H2Limits(handshake_timeout_s=10.0), now=0.0)
    server.receive_data(f.PREFACE[:5], 1.0)
    assert server.next_deadline() == 10.0
    assert server.tick(10.0)[-1][0] == hc.CLOSED


def test_zero_window_reader_stalls_out():
    p = Pair(H2Limits(send_stall_timeout_s=60.0, keepalive_interval_s=1e6))
    p.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    p.client.send_headers(1, REQUEST, end_stream=True)
    p.exchange()
    p.server.send_headers(1, b"\x88")
    p.server.send_data(1, b"x" * 100)
    p.server.observe_time(5.0)  # the shell reports when it saw the output wait
    assert p.server.next_deadline() == 65.0
    assert p.server.tick(64.0) == []
    events = p.server.tick(65.0)
    assert events[-1][:2] == (hc.CLOSED, f.ENHANCE_YOUR_CALM)


def test_graceful_goaway_refuses_new_streams():
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.exchange()
    assert p.take(hc.REQUEST)
    p.server.close_gracefully()
    g = _goaway(p.server_frames())
    assert g.error_code == f.NO_ERROR and g.last_stream_id == 1
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS, 3, hpack.Encoder().encode(REQUEST)))
    assert not p.take(hc.REQUEST)
    (rst,) = p.server_frames()
    assert rst.error_code == f.REFUSED_STREAM


def test_client_reset_is_reported():
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.client.reset_stream(1, f.CANCEL)
    p.exchange()
    assert p.take(hc.RESET) == [(hc.RESET, 1, f.CANCEL)]
    assert 1 not in p.server.streams


def test_repeated_header_blocks_reuse_the_decoded_list():
    p = Pair()
    literals = b"".join(f.hpack_literal(k.encode(), v.encode()) for k, v in REQUEST)
    blocks = [literals] * 3
    for i, block in enumerate(blocks):
        p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1 + 2 * i, block))
    reqs = p.take(hc.REQUEST)
    assert reqs[1][2] is reqs[2][2]
    assert dict(reqs[0][2])[b":path"] == b"/svc/M"


def test_dynamic_table_changes_invalidate_cached_blocks():
    # `ref` refers to dynamic table entries; an insert between its two uses
    # shifts them, so the same bytes mean other headers the second time.
    p = Pair()
    enc = hpack.Encoder()
    blocks = [enc.encode(REQUEST + [("x-a", "1")])]
    ref = enc.encode(REQUEST + [("x-a", "1")])
    blocks += [ref, enc.encode(REQUEST + [("x-b", "2")]), ref]
    reference = hpack.Decoder()
    expected = [tuple(reference.decode(b, raw=True)) for b in blocks]
    assert expected[1] != expected[3]
    p.server.data_to_send()
    for i, block in enumerate(blocks):
        p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1 + 2 * i, block))
    got = {e[1]: e[2] for e in p.take(hc.REQUEST)}
    assert got[3] == expected[1]
    if hc._valid_request_headers(expected[3]):
        assert got[7] == expected[3]
    else:
        assert 7 not in got
        assert [x.stream_id for x in p.server_frames() if isinstance(x, hf.RstStreamFrame)] == [7]


def test_oversized_frame_is_a_frame_size_error():
    p = Pair()
    p.server.data_to_send()
    p.raw(f.frame_header(f.DATA, 0, 1, 16385) + b"x" * 100)
    assert p.server.closed
    assert _goaway(p.server_frames()).error_code == f.FRAME_SIZE_ERROR


def test_settings_initial_window_change_applies_to_open_streams():
    p = Pair()
    p.raw(f.encode_settings([(f.SETTINGS_INITIAL_WINDOW_SIZE, 5)]))
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, hpack.Encoder().encode(REQUEST)))
    p.server.data_to_send()
    p.server.send_headers(1, b"\x88")
    p.server.send_data(1, b"0123456789")
    assert p.server.stream_pending_bytes(1) == 5
    p.raw(f.encode_settings([(f.SETTINGS_INITIAL_WINDOW_SIZE, 10)]))
    assert p.server.stream_pending_bytes(1) == 0
    data = [x.data for x in p.server_frames() if isinstance(x, hf.DataFrame)]
    assert data == [b"01234", b"56789"]
    p.raw(f.encode_settings([(f.SETTINGS_INITIAL_WINDOW_SIZE, 2**31 - 1)]))
    assert not p.server.closed


def test_stall_clock_stops_when_the_blocked_stream_goes_away():
    p = Pair(H2Limits(send_stall_timeout_s=60.0, keepalive_interval_s=1e6))
    p.raw(f.encode_settings([(f.SETTINGS_INITIAL_WINDOW_SIZE, 0)]))
    p.raw(f.frame(f.HEADERS, f.FLAG_END_HEADERS | f.FLAG_END_STREAM, 1, hpack.Encoder().encode(REQUEST)))
    p.server.send_headers(1, b"\x88")
    p.server.send_data(1, b"x" * 100)
    p.server.observe_time(1.0)
    assert p.server.next_deadline() == 61.0
    p.now = 2.0
    p.raw(f.encode_rst_stream(1, f.CANCEL))
    assert p.server.next_deadline() == 1e6 + 2.0
    assert p.server.tick(61.0) == [] and not p.server.closed
