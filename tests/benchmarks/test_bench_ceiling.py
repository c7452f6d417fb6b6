"""The ceiling server answers like a gRPC server, and the load engine's flow control holds up."""

import socket
import subprocess
import sys
import time

import hpack
import pytest

from benchmarks import ceiling_server, unary_noop
from trietcd.tools.benchmark import h2client as grpc_h2
from trietcd.tools.benchmark import load


def test_answer_decodes_as_a_grpc_success():
    client = grpc_h2.ClientConn()
    client.initiate()
    sid = client.start_call(grpc_h2.encode_request_headers("/a.B/C", "h:1"), grpc_h2.grpc_message(b""))
    out, used = ceiling_server.respond(client.data_to_send())
    assert used > 0
    assert client.receive(ceiling_server.greeting() + out) == [(sid, 0, "")]
    decoder = hpack.Decoder()
    assert decoder.decode(ceiling_server._RESPONSE_HEADERS) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
    ]
    assert decoder.decode(ceiling_server._TRAILERS) == [("grpc-status", "0")]


def test_partial_frames_wait_for_the_rest():
    frame = grpc_h2.encode_frame(grpc_h2.DATA, grpc_h2.FLAG_END_STREAM, 1, b"\x00" * 5)
    assert ceiling_server.respond(frame[:7]) == (b"", 0)
    out, used = ceiling_server.respond(frame)
    assert used == len(frame) and out.startswith(ceiling_server.answer(1))


@pytest.fixture
def ceiling_endpoint():
    port = unary_noop.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ceiling_server", "--listen", f"127.0.0.1:{port}"],
        cwd=unary_noop._repo_root(),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "ceiling server did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_load_needs_and_gets_connection_window_updates(ceiling_endpoint):
    # 400 calls of ~1 KiB exceed the 65,535-byte initial connection window many
    # times over: without honouring WINDOW_UPDATE the run would stall.
    config = load.LoadConfig(
        endpoints=(ceiling_endpoint,), conns=2, clients=20, total=400,
        workload=load.Workload(kind="put", val_size=1024), stall_timeout_s=20.0,
    )
    (stats,) = load.run_load(config)
    assert (stats.calls_ok, stats.calls_failed) == (400, 0)
