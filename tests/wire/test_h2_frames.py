"""The HTTP/2 frame codec: encoders against hyperframe, parsers against bad input,
and the reader fed arbitrary bytes whole and split at every boundary."""

from __future__ import annotations

import hpack
import hyperframe.frame as hf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trietcd.wire import h2_frames as f


def _hyperframe_parse(data: bytes) -> list:
    frames = []
    while data:
        header, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        header.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(header)
        data = data[9 + length :]
    return frames


def test_encoders_agree_with_hyperframe():
    (s,) = _hyperframe_parse(f.encode_settings([(f.SETTINGS_MAX_CONCURRENT_STREAMS, 7), (f.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]))
    assert isinstance(s, hf.SettingsFrame) and s.settings == {3: 7, 4: 1 << 20}
    (p,) = _hyperframe_parse(f.encode_ping(b"12345678", ack=True))
    assert isinstance(p, hf.PingFrame) and p.opaque_data == b"12345678" and "ACK" in p.flags
    (g,) = _hyperframe_parse(f.encode_goaway(9, f.ENHANCE_YOUR_CALM, b"too_many_pings"))
    assert (g.last_stream_id, g.error_code, g.additional_data) == (9, 11, b"too_many_pings")
    (r,) = _hyperframe_parse(f.encode_rst_stream(5, f.CANCEL))
    assert (r.stream_id, r.error_code) == (5, 8)
    (w,) = _hyperframe_parse(f.encode_window_update(3, 1000))
    assert (w.stream_id, w.window_increment) == (3, 1000)


def test_large_header_block_is_split_into_continuations():
    block = bytes(range(256)) * 100  # 25600 bytes
    frames = _hyperframe_parse(f.encode_headers(1, block, True, 16384))
    assert [type(x) for x in frames] == [hf.HeadersFrame, hf.ContinuationFrame]
    assert "END_STREAM" in frames[0].flags and "END_HEADERS" not in frames[0].flags
    assert "END_HEADERS" in frames[1].flags
    assert frames[0].data + frames[1].data == block


def test_hpack_literals_decode_without_touching_the_table():
    d = hpack.Decoder()
    block = f.HPACK_STATUS_200 + f.hpack_literal_indexed_name(f.HPACK_CONTENT_TYPE_INDEX, b"application/grpc")
    block += f.hpack_literal(b"grpc-status", b"0") + f.hpack_literal(b"x" * 200, b"y" * 300)
    assert d.decode(block, raw=True) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"0"),
        (b"x" * 200, b"y" * 300),
    ]
    assert len(d.header_table.dynamic_entries) == 0


def test_reader_rejects_oversized_frames():
    r = f.FrameReader(16384)
    r.feed(f.frame_header(f.DATA, 0, 1, 16385))
    with pytest.raises(f.FrameError) as exc:
        r.frames()
    assert exc.value.error_code == f.FRAME_SIZE_ERROR and exc.value.stream_id == 0


@pytest.mark.parametrize(
    "ftype, flags, sid, payload, code, stream_error",
    [
        (f.DATA, 0, 0, b"x", f.PROTOCOL_ERROR, False),
        (f.DATA, f.FLAG_PADDED, 1, b"\x05abc", f.PROTOCOL_ERROR, False),
        (f.DATA, f.FLAG_PADDED, 1, b"", f.FRAME_SIZE_ERROR, False),
        (f.HEADERS, 0, 0, b"", f.PROTOCOL_ERROR, False),
        (f.HEADERS, f.FLAG_PRIORITY, 1, b"\x00\x00", f.FRAME_SIZE_ERROR, False),
        (f.HEADERS, f.FLAG_PRIORITY, 3, b"\x00\x00\x00\x03\x10", f.PROTOCOL_ERROR, True),
        (f.PRIORITY, 0, 1, b"\x00\x00\x00\x00", f.FRAME_SIZE_ERROR, True),
        (f.PRIORITY, 0, 0, b"\x00\x00\x00\x03\x10", f.PROTOCOL_ERROR, False),
        (f.PRIORITY, 0, 5, b"\x00\x00\x00\x05\x10", f.PROTOCOL_ERROR, True),
        (f.RST_STREAM, 0, 0, b"\x00\x00\x00\x08", f.PROTOCOL_ERROR, False),
        (f.RST_STREAM, 0, 1, b"\x00\x08", f.FRAME_SIZE_ERROR, False),
        (f.SETTINGS, 0, 1, b"", f.PROTOCOL_ERROR, False),
        (f.SETTINGS, f.FLAG_ACK, 0, b"\x00\x01\x00\x00\x00\x00", f.FRAME_SIZE_ERROR, False),
        (f.SETTINGS, 0, 0, b"\x00\x01\x00", f.FRAME_SIZE_ERROR, False),
        (f.SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x02", f.PROTOCOL_ERROR, False),
        (f.SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00", f.FLOW_CONTROL_ERROR, False),
        (f.SETTINGS, 0, 0, b"\x00\x05\x00\x00\x10\x00", f.PROTOCOL_ERROR, False),
        (f.PUSH_PROMISE, 0, 1, b"\x00\x00\x00\x02", f.PROTOCOL_ERROR, False),
        (f.PING, 0, 1, b"12345678", f.PROTOCOL_ERROR, False),
        (f.PING, 0, 0, b"1234567", f.FRAME_SIZE_ERROR, False),
        (f.GOAWAY, 0, 0, b"\x00\x00\x00", f.FRAME_SIZE_ERROR, False),
        (f.GOAWAY, 0, 1, b"\x00" * 8, f.PROTOCOL_ERROR, False),
        (f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00", f.PROTOCOL_ERROR, False),
        (f.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00", f.PROTOCOL_ERROR, True),
        (f.WINDOW_UPDATE, 0, 1, b"\x00\x00\x01", f.FRAME_SIZE_ERROR, False),
        (f.CONTINUATION, 0, 0, b"", f.PROTOCOL_ERROR, False),
    ],
)
def test_parse_frame_rejects(ftype, flags, sid, payload, code, stream_error):
    with pytest.raises(f.FrameError) as exc:
        f.parse_frame(ftype, flags, sid, payload)
    assert exc.value.error_code == code
    assert (exc.value.stream_id != 0) == stream_error


def test_parse_frame_accepts_valid_frames():
    assert f.parse_frame(f.DATA, f.FLAG_PADDED, 1, b"\x02abcxx") == b"abc"
    block, prio = f.parse_frame(f.HEADERS, f.FLAG_PRIORITY | f.FLAG_PADDED, 3, b"\x01\x80\x00\x00\x01\x0fAB\x00")
    assert block == b"AB" and prio == (1, True, 16)
    assert f.parse_frame(f.SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64") == [(3, 100)]
    assert f.parse_frame(f.GOAWAY, 0, 0, b"\x00\x00\x00\x07\x00\x00\x00\x00dbg") == (7, 0, b"dbg")
    assert f.parse_frame(0xEE, 0, 9, b"unknown") is None


def _decode_all(chunks: list[bytes]) -> tuple[list, str | None]:
    """Frames and their parse results (or the codec error) for a split input."""
    reader = f.FrameReader(16384)
    out = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while frames := reader.frames():
                for ftype, flags, sid, payload in frames:
                    try:
                        parsed = f.parse_frame(ftype, flags, sid, payload)
                    except f.FrameError as exc:
                        parsed = ("error", exc.error_code, exc.stream_id)
                    out.append((ftype, flags, sid, payload, parsed))
    except f.FrameError as exc:
        return out, f"{exc.error_code}"
    return out, None


_frames = st.builds(
    lambda t, fl, sid, body: f.frame(t, fl, sid, body),
    st.integers(0, 10),
    st.integers(0, 255),
    st.integers(0, 2**31 - 1),
    st.binary(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_frames, st.binary(max_size=30)), max_size=6).map(b"".join))
def test_reader_same_events_for_any_split(data):
    whole = _decode_all([data])
    for cut in range(len(data) + 1):
        assert _decode_all([data[:cut], data[cut:]]) == whole
    assert _decode_all([data[i : i + 1] for i in range(len(data))]) == whole
