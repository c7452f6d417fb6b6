"""Fuzz target: the HTTP/2 frame codec and the sans-IO server connection.

Any input, after the client preface, must give events or a clean connection
error — never an exception, never a stream count or buffer beyond its limit.

    python fuzz/h2_frames.py fuzz/corpus/h2_frames/*           # each input once
    python fuzz/h2_frames.py fuzz/corpus/h2_frames -atheris_runs=20000
    python fuzz/h2_frames.py fuzz/corpus/h2_frames -max_total_time=60

Without atheris installed, or when every argument is a file, each file given
is run once (that is what CI does); otherwise the arguments go to libFuzzer.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fuzz import harness  # noqa: E402

from trietcd.wire import h2_conn as hc  # noqa: E402
from trietcd.wire import h2_frames as f  # noqa: E402

LIMITS = hc.H2Limits(
    max_concurrent_streams=8,
    max_header_list_bytes=4096,
    max_header_block_bytes=4096,
    stream_window_bytes=4096,
    connection_window_bytes=65535,
    max_pending_output_bytes=8192,
    max_control_output_bytes=8192,
    max_resets_per_window=16,
)


def _frames(data: bytes) -> None:
    reader = f.FrameReader()
    reader.feed(data)
    try:
        while frames := reader.frames():
            for ftype, flags, sid, payload in frames:
                try:
                    f.parse_frame(ftype, flags, sid, payload)
                except f.FrameError as exc:
                    assert exc.error_code <= f.HTTP_1_1_REQUIRED
    except f.FrameError as exc:
        assert exc.error_code == f.FRAME_SIZE_ERROR


def _connection(data: bytes) -> None:
    conn = hc.H2Connection(LIMITS, now=0.0)
    # The first byte picks where the input is split, so the incremental paths
    # get their share; answers to requests exercise the send side too.
    cut = data[0] if data else 0
    now = 0.0
    for chunk in (f.PREFACE + data[1 : 1 + cut], data[1 + cut :]):
        now += 1.0
        events = conn.receive_data(chunk, now)
        for ev in events:
            if ev[0] == hc.REQUEST and ev[1] in conn.streams:
                conn.send_response(ev[1], b"\x88", b"\x00\x00\x00\x00\x01x", b"\x00\x0bgrpc-status\x010")
            elif ev[0] == hc.DATA:
                conn.acknowledge_received_data(ev[1], len(ev[2]))
        assert len(conn.streams) <= LIMITS.max_concurrent_streams
        # Control replies stop at the limits; responses are bounded by the input.
        bound = LIMITS.max_pending_output_bytes + LIMITS.max_control_output_bytes + 64 * len(chunk)
        assert conn.pending_output_bytes() <= bound
        conn.tick(now)
        conn.data_to_send()
        if conn.closed:
            assert conn.receive_data(b"more", now) == []
            break


def test_one_input(data: bytes) -> None:
    _frames(data)
    _connection(data)


def main() -> None:
    harness.main(test_one_input)


if __name__ == "__main__":
    main()
