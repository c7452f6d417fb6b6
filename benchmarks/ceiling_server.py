"""The cheapest possible gRPC responder, to measure the load generator's own ceiling.

    python -m benchmarks.ceiling_server --listen 127.0.0.1:PORT

One epoll loop; every request stream that ends gets the same pre-encoded
answer (HEADERS :status 200, an empty message, trailers grpc-status 0). It
checks nothing and keeps no stream state, so it is no server to test against:
it only shows how many calls per second `trietcd-benchmark` can drive when the
server costs next to nothing. It does keep HTTP/2 honest towards the client:
SETTINGS are acknowledged, PINGs answered and every byte of request DATA is
given back in connection WINDOW_UPDATEs.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import struct

from trietcd.tools.benchmark.h2client import (
    DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PING, PREFACE, SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_MAX, WINDOW_UPDATE, encode_frame,
)

_FRAME_HEAD = struct.Struct(">BHBBL")
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10\x10application/grpc"  # :status 200, content-type
_TRAILERS = b"\x00\x0bgrpc-status\x010"
_EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


def answer(stream_id: int) -> bytes:
    return (
        encode_frame(HEADERS, FLAG_END_HEADERS, stream_id, _RESPONSE_HEADERS)
        + encode_frame(DATA, 0, stream_id, _EMPTY_MESSAGE)
        + encode_frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream_id, _TRAILERS)
    )


def respond(buf: bytes) -> tuple[bytes, int]:
    """Answers for the complete frames in `buf`; returns (bytes to send, bytes used)."""
    pos = len(PREFACE) if buf.startswith(PREFACE) else 0
    out = []
    data_bytes = 0
    while len(buf) - pos >= 9:
        high, low, ftype, flags, stream_id = _FRAME_HEAD.unpack_from(buf, pos)
        length = high << 16 | low
        if len(buf) - pos - 9 < length:
            break
        if ftype == DATA:
            data_bytes += length
            if flags & FLAG_END_STREAM:
                out.append(answer(stream_id))
        elif ftype == SETTINGS and not flags & FLAG_ACK:
            out.append(encode_frame(SETTINGS, FLAG_ACK, 0, b""))
        elif ftype == PING and not flags & FLAG_ACK:
            out.append(encode_frame(PING, FLAG_ACK, 0, buf[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    if data_bytes:
        out.append(encode_frame(WINDOW_UPDATE, 0, 0, data_bytes.to_bytes(4, "big")))
    return b"".join(out), pos


def greeting() -> bytes:
    settings = struct.pack(">HL", SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_MAX)
    return encode_frame(SETTINGS, 0, 0, settings)


def serve(listener: socket.socket) -> None:
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    unparsed: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.sendall(greeting())
                conn.setblocking(False)
                unparsed[conn] = b""
                selector.register(conn, selectors.EVENT_READ, conn)
                continue
            conn = key.data
            try:
                data = conn.recv(262144)
            except OSError:
                data = b""
            if not data:
                selector.unregister(conn)
                del unparsed[conn]
                conn.close()
                continue
            buf = unparsed[conn] + data
            out, used = respond(buf)
            unparsed[conn] = buf[used:]
            if out:
                conn.setblocking(True)  # rare backpressure: just wait for the socket
                conn.sendall(out)
                conn.setblocking(False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:23795", help="host:port")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    with socket.create_server((host, int(port)), backlog=1024) as listener:
        try:
            serve(listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
