"""The load engine end to end against a grpcio server (counting, not timing)."""

import collections
import concurrent.futures
import pathlib
import socket
import threading

import grpc
import pytest

from benchmarks import unary_noop
from proto.etcdserverpb import rpc_pb2
from trietcd.tools.benchmark import load, messages
from trietcd.tools.benchmark.report import summarize


class KVServer:
    """A grpcio server with a KV/Put that records requests; some keys fail."""

    def __init__(self):
        self.requests = collections.Counter()
        self.lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(self.put)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("etcdserverpb.KV", {"Put": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def put(self, request_bytes, context):
        request = rpc_pb2.PutRequest.FromString(request_bytes)
        with self.lock:
            self.requests[(request.key, request.value)] += 1
        if request.key.startswith(b"\x02"):  # key index 1 (zig-zag varint 2)
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return rpc_pb2.PutResponse().SerializeToString()

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(None)


def config(port, **overrides):
    values = dict(
        endpoints=(f"127.0.0.1:{port}",),
        conns=3,
        clients=7,
        total=300,
        workload=load.Workload(kind="put", val_size=16),
        stall_timeout_s=20.0,
    )
    values.update(overrides)
    return load.LoadConfig(**values)


def run(config):
    (stats,) = load.run_load(config)
    return stats


def test_every_call_is_counted_and_sent_as_a_put_request():
    with KVServer() as server:
        stats = run(config(server.port))
    assert stats.calls_ok == 300 and stats.calls_failed == 0
    assert len(server.requests) == 1
    ((key, value), count), = server.requests.items()
    assert count == 300 and key == bytes(8) and len(value) == 16
    assert stats.fastest_s <= stats.percentile_s(50.0) <= stats.slowest_s


def test_failed_calls_are_counted_by_status():
    workload = load.Workload(kind="put", val_size=0, key_space_size=3, sequential=True)  # keys 0, 1, 2
    with KVServer() as server:
        stats = run(config(server.port, workload=workload))
    assert sum(server.requests.values()) == 300
    assert stats.calls_ok == 200
    assert stats.errors == (("rpc error: code = NotFound desc = no such thing", 100),)


def test_several_worker_processes_share_the_total():
    with KVServer() as server:
        stats = run(config(server.port, procs=2, total=101))
    assert stats.calls_ok == 101
    assert sum(server.requests.values()) == 101


def test_connections_and_clients_are_split_over_processes():
    shares = load.shares_of(config(1, conns=5, clients=11, total=1000, procs=2))
    assert [len(s.conn_endpoints) for s in shares] == [3, 2]
    assert [s.clients for s in shares] == [6, 5]
    assert [s.total for s in shares] == [500, 500]
    assert [s.offset for s in shares] == [0, 500]
    # Never more processes than connections.
    assert len(load.shares_of(config(1, conns=1, clients=10, procs=4))) == 1


def test_a_server_that_hangs_up_gives_errors_not_a_hang():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        # Answer the handshake with an empty SETTINGS frame, then hang up.
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        stats = run(config(port, conns=2, clients=2, total=50))
    finally:
        thread.join(timeout=10)
        listener.close()
    assert stats.calls_ok == 0
    assert stats.calls_failed == 50


def test_side_by_side_table_lists_each_target_and_ratio():
    results = {
        (1, 1): {
            "etcd": summarize([0.001] * 100, {}, 1.0),
            "noop": summarize([0.002] * 250, {"x": 1}, 1.0),
        }
    }
    targets = [unary_noop.Target("etcd", "a:1"), unary_noop.Target("noop", "b:2")]
    table = unary_noop.format_table(targets, results)
    assert table.splitlines()[0] == (
        "| clients / conns | etcd calls/s | p50 ms | p99 ms | noop calls/s | p50 ms | p99 ms | noop/etcd |"
    )
    assert table.splitlines()[2] == "| 1 / 1 | 100 | 1.00 | 1.00 | 250 (1 failed) | 2.00 | 2.00 | 2.50 |"


def test_unary_noop_measures_a_given_target_at_every_shape(capsys):
    with KVServer() as server:
        code = unary_noop.main(
            ["--no-etcd", "--no-noop", "--target", f"g=127.0.0.1:{server.port}", "--total", "30"]
        )
        assert code == 0
        assert sum(server.requests.values()) == 90
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| clients / conns | g calls/s | p50 ms | p99 ms |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1 / 1", "| 100 / 10", "| 1000 / 100"]


def test_unary_noop_starts_and_stops_etcd(capsys):
    etcd = pathlib.Path(unary_noop._etcd_bin_dir()) / "etcd"
    if not etcd.exists():
        pytest.skip("etcd 3.5.1 binary not installed")
    with unary_noop.Servers() as servers:
        target = servers.start_etcd_style("etcd", str(etcd))
        stats = run(config(target.endpoint.rpartition(":")[2], total=50))
        assert stats.calls_ok == 50
        proc = servers._procs[0]
    assert proc.poll() is not None  # stopped on exit
