"""Server memory per idle watcher and per idle watch stream, real etcd 3.5.1 and trietcd side by side.

    python -m benchmarks.watch_memory [--watchers 10000] [--streams 1000]

For each server, two measurements on a fresh member, each as the growth of the server's RSS:
- watchers: `--watchers` watchers on distinct keys, 1000 per watch stream, 10 streams per connection;
- streams: `--streams` watch streams with one watcher each, 100 streams per connection.
The client reads every `created` answer before the figure is taken. etcd's documentation
(op-guide/performance) gives about 350 B per watcher and 18 KB per stream.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from benchmarks.lease_expiry import start  # noqa: E402
from benchmarks.slow_watcher import rss_bytes  # noqa: E402
from benchmarks.unary_noop import _stop  # noqa: E402
from proto.etcdserverpb import rpc_pb2  # noqa: E402

WATCHERS_PER_STREAM = 1000
STREAMS_PER_CONNECTION = 100


class WatchConnection:
    """One HTTP/2 connection carrying `len(keys_per_stream)` Watch calls, each creating a watcher per key."""

    def __init__(self, endpoint: str, keys_per_stream: list[list[bytes]]) -> None:
        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.expected = 0
        self._unsent: dict[int, bytes] = {}
        for keys in keys_per_stream:
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [
                (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.Watch/Watch"),
                (":authority", endpoint), ("content-type", "application/grpc"), ("te", "trailers"),
            ])
            body = bytearray()
            for key in keys:
                msg = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)).SerializeToString()
                body += b"\0" + len(msg).to_bytes(4, "big") + msg
            self._unsent[sid] = bytes(body)
            self.expected += len(keys)
        self._pump()
        self._buffers: dict[int, bytearray] = {}
        self.created = 0

    def _pump(self) -> None:
        """Sends what the flow-control windows allow."""
        for sid, body in list(self._unsent.items()):
            n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            while n > 0:
                self.conn.send_data(sid, body[:n])
                body = body[n:]
                n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if body:
                self._unsent[sid] = body
            else:
                del self._unsent[sid]
        self.sock.sendall(self.conn.data_to_send())

    def read_until_created(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.created < self.expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.created} of {self.expected} watchers created")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    buf = self._buffers.setdefault(ev.stream_id, bytearray())
                    buf += ev.data
                    while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
                        n = int.from_bytes(buf[1:5], "big")
                        resp = rpc_pb2.WatchResponse.FromString(bytes(buf[5:5 + n]))
                        del buf[:5 + n]
                        self.created += resp.created
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    raise ConnectionError(f"stream {ev.stream_id} ended early")
            self._pump()

    def close(self) -> None:
        self.sock.close()


def _open(endpoint: str, streams: list[list[bytes]], per_connection: int) -> list[WatchConnection]:
    conns = [WatchConnection(endpoint, streams[i:i + per_connection]) for i in range(0, len(streams), per_connection)]
    for c in conns:
        c.read_until_created()
    return conns


def _growth(proc, endpoint: str, streams: list[list[bytes]], per_connection: int) -> int:
    time.sleep(1)
    before = rss_bytes(proc.pid)
    conns = _open(endpoint, streams, per_connection)
    time.sleep(2)  # let the server settle (Go's scavenger, Python's arenas)
    after = rss_bytes(proc.pid)
    for c in conns:
        c.close()
    return after - before


def measure(kind: str, watchers: int, streams: int) -> tuple[float, float]:
    tmp = tempfile.mkdtemp(prefix=f"watch-memory-{kind}-")
    try:
        proc, endpoint = start(kind, os.path.join(tmp, "d"))
        try:
            keys = [b"key/%08d" % i for i in range(watchers)]
            by_stream = [keys[i:i + WATCHERS_PER_STREAM] for i in range(0, watchers, WATCHERS_PER_STREAM)]
            per_watcher = _growth(proc, endpoint, by_stream, 10) / watchers
        finally:
            _stop(proc)
        proc, endpoint = start(kind, os.path.join(tmp, "d2"))
        try:
            per_stream = _growth(proc, endpoint, [[b"s/%d" % i] for i in range(streams)], STREAMS_PER_CONNECTION)
            per_stream /= streams
        finally:
            _stop(proc)
        return per_watcher, per_stream
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"| server | RSS per watcher ({args.watchers} watchers) | RSS per stream ({args.streams} streams) |")
    print("| --- | --- | --- |")
    for kind in ("etcd", "trietcd"):
        per_watcher, per_stream = measure(kind, args.watchers, args.streams)
        print(f"| {kind} | {per_watcher:.0f} B | {per_stream / 1024:.1f} KiB |", flush=True)


if __name__ == "__main__":
    main()
