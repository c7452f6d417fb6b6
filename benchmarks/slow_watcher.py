"""A watch client that stops reading, real etcd 3.5.1 and trietcd side by side.

    python -m benchmarks.slow_watcher [--watchers 100] [--puts 2000] [--val-size 1024]

For each server: one client puts a key `--puts` times, one at a time, and records each put's latency;
first with nobody watching, then while a second connection holds `--watchers` watchers on that key
and never reads a byte (its socket's receive buffer is small, so the server's writes stall at once).
Every put then makes `--watchers` events that cannot be delivered: a server that queued them would
grow by puts × watchers × val-size bytes. Prints put p50/p99 idle and stalled, and the server's RSS
growth during the stalled phase.

`StalledWatch` is also what tests/e2e/test_watch_slow_consumer.py uses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.settings  # noqa: E402

from benchmarks.lease_expiry import kv_stub, percentile, start  # noqa: E402
from benchmarks.unary_noop import _stop  # noqa: E402
from proto.etcdserverpb import rpc_pb2  # noqa: E402

__all__ = ["StalledWatch", "rss_bytes", "put_latencies"]

_WINDOW_MAX = 2**31 - 1
_RECEIVE_BUFFER_BYTES = 4096


class StalledWatch:
    """`watchers` watchers on `key`, created on one HTTP/2 connection that then never reads.

    The connection opens every flow-control window to the maximum, so only TCP stops the server:
    what it does not send, it must hold or drop."""

    def __init__(self, endpoint: str, key: bytes, watchers: int) -> None:
        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window TCP advertises stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
        self.sock.connect((host, int(port)))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW_MAX})
        conn.increment_flow_control_window(_WINDOW_MAX - 65535)
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.Watch/Watch"),
            (":authority", endpoint), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        body = b"".join(
            _grpc_frame(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)).SerializeToString())
            for _ in range(watchers)
        )
        conn.send_data(stream_id, body)
        self.sock.sendall(conn.data_to_send())
        self._conn = conn

    def close(self) -> None:
        self.sock.close()


def _grpc_frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def put_latencies(kv, key: bytes, value: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start_s = time.perf_counter()
        kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=30)
        out.append(time.perf_counter() - start_s)
    return out


def measure(kind: str, watchers: int, puts: int, val_size: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix=f"slow-watcher-{kind}-")
    proc, endpoint = start(kind, os.path.join(data_dir, "d"))
    try:
        kv = kv_stub(grpc.insecure_channel(endpoint))
        value = os.urandom(val_size)
        put_latencies(kv, b"k", value, 200)  # warm up
        idle = put_latencies(kv, b"k", value, puts)
        before = rss_bytes(proc.pid)
        stalled_watch = StalledWatch(endpoint, b"k", watchers)
        time.sleep(0.5)
        stalled = put_latencies(kv, b"k", value, puts)
        after = rss_bytes(proc.pid)
        stalled_watch.close()
        return {"idle": idle, "stalled": stalled, "rss_growth": after - before}
    finally:
        _stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=1024)
    args = parser.parse_args(argv)
    print(f"{args.watchers} stalled watchers on the key, {args.puts} puts of {args.val_size} B, one at a time")
    print("| server | put p50 idle | put p99 idle | put p50 stalled | put p99 stalled | p99 ratio | RSS growth |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("etcd", "trietcd"):
        r = measure(kind, args.watchers, args.puts, args.val_size)
        idle50, idle99 = statistics.median(r["idle"]), percentile(r["idle"], 0.99)
        st50, st99 = statistics.median(r["stalled"]), percentile(r["stalled"], 0.99)
        print(f"| {kind} | {idle50 * 1e3:.2f} ms | {idle99 * 1e3:.2f} ms | {st50 * 1e3:.2f} ms | "
              f"{st99 * 1e3:.2f} ms | {st99 / idle99:.2f} | {r['rss_growth'] / 2**20:.1f} MiB |", flush=True)


if __name__ == "__main__":
    main()
