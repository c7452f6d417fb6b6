"""The gRPC server over the trio shell: an `h2` client over memory streams for
precise protocol checks, and grpcio over real TCP as the real client."""

from __future__ import annotations

import contextlib
import functools
import threading

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import hyperframe.frame as hf
import pytest
import trio
import trio.testing
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from trietcd.wire import ConnectionSet, GrpcError, H2Limits, Registry, Status, serve_h2
from trietcd.wire import grpc_call as g
from trietcd.wire import h2_frames as f


def _build():
    fdp = descriptor_pb2.FileDescriptorProto(name="trietcd_test_echo.proto", package="trietcdtest", syntax="proto3")
    msg = fdp.message_type.add(name="Msg")
    msg.field.add(name="text", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    msg.field.add(name="n", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64, label=1)
    svc = fdp.service.add(name="Echo")
    for name, cs, ss in (("Unary", False, False), ("Server", False, True), ("Client", True, False), ("Bidi", True, True)):
        svc.method.add(
            name=name,
            input_type=".trietcdtest.Msg",
            output_type=".trietcdtest.Msg",
            client_streaming=cs,
            server_streaming=ss,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    fd = pool.FindFileByName(fdp.name)
    return fd.services_by_name["Echo"], message_factory.GetMessageClass(fd.message_types_by_name["Msg"])


ECHO_SERVICE, Msg = _build()

REQUEST_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "test"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class H2Client:
    """A gRPC client made of `h2` plus hand-made message framing."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses: dict[int, dict] = {}
        self.events: list = []
        self.eof = False

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def open(self, path: str, extra=(), end_stream=False) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = {"headers": None, "data": b"", "trailers": None, "reset": None, "ended": False}
        self.conn.send_headers(sid, [(":path", path)] + REQUEST_HEADERS + list(extra), end_stream=end_stream)
        await self.flush()
        return sid

    async def send(self, sid: int, payload: bytes, end_stream=False) -> None:
        self.conn.send_data(sid, payload, end_stream=end_stream)
        await self.flush()

    async def send_message(self, sid: int, message, end_stream=False) -> None:
        await self.send(sid, g.frame_message(message.SerializeToString()), end_stream)

    async def receive(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            r = self.responses.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                r["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                r["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                r["data"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                r["reset"] = ev.error_code
        await self.flush()

    async def wait(self, sid: int) -> dict:
        r = self.responses[sid]
        while not (r["ended"] or r["reset"] is not None or self.eof):
            await self.receive()
        return r

    async def call(self, path: str, message, extra=()) -> dict:
        sid = await self.open(path, extra)
        await self.send_message(sid, message, end_stream=True)
        return await self.wait(sid)


def status_of(r: dict) -> tuple[int, str]:
    """(grpc-status, grpc-message) of a finished response (trailers-only or not)."""
    fields = r["trailers"] if r["trailers"] is not None else r["headers"]
    return int(fields[b"grpc-status"]), g.percent_decode(fields.get(b"grpc-message", b""))


def messages_of(r: dict) -> list:
    reader = g.MessageReader(1 << 30)
    return [Msg.FromString(m) for m in reader.feed(r["data"])]


class Recorder:
    def __init__(self):
        self.cancelled: list[str] = []
        self.peers: list[str] = []


def echo_registry(rec: Recorder) -> Registry:
    async def unary(req, call):
        rec.peers.append(call.peer)
        if req.text == "fail":
            raise GrpcError(Status.NOT_FOUND, "nope ü 100%")
        if req.text == "boom":
            raise ValueError("kaput")
        if req.text == "meta":
            return Msg(text=call.metadata.get("token", "-"))
        if req.text == "trail":
            call.set_trailing_metadata({"x-extra": "yes"})
        if req.text == "sleep":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                rec.cancelled.append("unary")
                raise
        if req.text == "slow":
            await trio.sleep(1.0)
        if req.text == "wrong-type":
            return "not a message"
        return Msg(text=req.text, n=req.n + 1)

    async def server(req, call):
        for i in range(req.n):
            await call.send(Msg(text=req.text, n=i))
        if req.text == "then-fail":
            raise GrpcError(Status.ABORTED, "stopped")
        if req.text == "forever":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                rec.cancelled.append("server")
                raise

    async def client(call):
        total = 0
        async for req in call.requests():
            total += req.n
        return Msg(text="sum", n=total)

    async def bidi(call):
        async for req in call.requests():
            await call.send(Msg(text=req.text.upper(), n=req.n))

    reg = Registry()
    reg.add_service(ECHO_SERVICE, {"Unary": unary, "Server": server, "Client": client, "Bidi": bidi})
    return reg


@contextlib.asynccontextmanager
async def served(limits: H2Limits = H2Limits(), rec: Recorder | None = None, pair=trio.testing.memory_stream_pair):
    rec = rec or Recorder()
    client_stream, server_stream = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(serve_h2, server_stream, echo_registry(rec), limits, peer="ipv4:127.0.0.1:5555")
        )
        client = H2Client(client_stream)
        await client.start()
        yield client
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ h2 client


async def test_unary_call():
    rec = Recorder()
    async with served(rec=rec) as c:
        r = await c.call("/trietcdtest.Echo/Unary", Msg(text="hi", n=41))
        assert r["headers"][b":status"] == b"200"
        assert r["headers"][b"content-type"] == b"application/grpc"
        assert status_of(r) == (0, "")
        assert messages_of(r) == [Msg(text="hi", n=42)]
    assert rec.peers == ["ipv4:127.0.0.1:5555"]


async def test_many_concurrent_unary_calls_on_one_connection():
    async with served() as c:
        sids = []
        for i in range(50):
            sid = await c.open("/trietcdtest.Echo/Unary")
            await c.send_message(sid, Msg(text="x", n=i), end_stream=True)
            sids.append(sid)
        for i, sid in enumerate(sids):
            r = await c.wait(sid)
            assert messages_of(r) == [Msg(text="x", n=i + 1)]


@pytest.mark.parametrize(
    "path, code, message",
    [
        ("/trietcdtest.Nope/Unary", 12, "unknown service trietcdtest.Nope"),
        ("/trietcdtest.Echo/Nope", 12, "unknown method Nope for service trietcdtest.Echo"),
    ],
)
async def test_unknown_methods_are_trailers_only(path, code, message):
    async with served() as c:
        r = await c.call(path, Msg())
        assert r["trailers"] is None and r["data"] == b""
        assert status_of(r) == (code, message)


async def test_handler_errors():
    async with served() as c:
        assert status_of(await c.call("/trietcdtest.Echo/Unary", Msg(text="fail"))) == (5, "nope ü 100%")
        assert status_of(await c.call("/trietcdtest.Echo/Unary", Msg(text="boom"))) == (2, "kaput")
        code, message = status_of(await c.call("/trietcdtest.Echo/Unary", Msg(text="wrong-type")))
        assert code == 13


async def test_metadata_and_trailing_metadata():
    async with served() as c:
        r = await c.call("/trietcdtest.Echo/Unary", Msg(text="meta"), extra=[("token", "secret")])
        assert messages_of(r)[0].text == "secret"
        r = await c.call("/trietcdtest.Echo/Unary", Msg(text="trail"))
        assert r["trailers"][b"x-extra"] == b"yes" and status_of(r) == (0, "")


async def test_compressed_message_is_internal():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send(sid, b"\x01\x00\x00\x00\x02ab", end_stream=True)
        r = await c.wait(sid)
        assert status_of(r) == (13, "grpc: compressed flag set with identity or empty encoding")


async def test_oversized_message_is_resource_exhausted():
    async with served(H2Limits(max_recv_message_bytes=100)) as c:
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send_message(sid, Msg(text="x" * 200), end_stream=True)
        r = await c.wait(sid)
        assert status_of(r) == (8, "grpc: received message larger than max (203 vs. 100)")


async def test_malformed_protobuf_is_internal():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send(sid, g.frame_message(b"\x0a\x05ab"), end_stream=True)  # truncated string
        r = await c.wait(sid)
        code, message = status_of(r)
        assert code == 13 and message.startswith("grpc: error unmarshalling request: ")


async def test_unary_message_split_over_frames():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Unary")
        payload = g.frame_message(Msg(text="split" * 10, n=1).SerializeToString())
        for i in range(0, len(payload), 7):
            await c.send(sid, payload[i : i + 7])
        await c.send(sid, b"", end_stream=True)
        r = await c.wait(sid)
        assert messages_of(r) == [Msg(text="split" * 10, n=2)]


async def test_end_stream_without_a_message():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Unary", end_stream=True)
        r = await c.wait(sid)
        assert status_of(r)[0] == 13


async def test_bad_content_type_is_reset():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Unary", extra=[])
        c.conn.send_headers(3, [(":path", "/trietcdtest.Echo/Unary"), (":method", "POST"), (":scheme", "http"),
                                (":authority", "x"), ("content-type", "text/plain")], end_stream=True)
        c.responses[3] = {"headers": None, "data": b"", "trailers": None, "reset": None, "ended": False}
        await c.flush()
        r = await c.wait(3)
        assert r["reset"] == f.PROTOCOL_ERROR
        c.conn.reset_stream(sid)
        await c.flush()


async def test_malformed_grpc_timeout():
    async with served() as c:
        r = await c.call("/trietcdtest.Echo/Unary", Msg(), extra=[("grpc-timeout", "soon")])
        code, message = status_of(r)
        assert code == 13 and message.startswith("malformed grpc-timeout")


async def test_deadline_exceeded(autojump_clock):
    rec = Recorder()
    async with served(rec=rec) as c:
        start = trio.current_time()
        r = await c.call("/trietcdtest.Echo/Unary", Msg(text="sleep"), extra=[("grpc-timeout", "1500m")])
        assert status_of(r) == (4, "context deadline exceeded")
        assert trio.current_time() - start == pytest.approx(1.5)
    assert rec.cancelled == ["unary"]


async def test_client_reset_cancels_the_handler():
    rec = Recorder()
    async with served(rec=rec) as c:
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send_message(sid, Msg(text="sleep"), end_stream=True)
        await trio.testing.wait_all_tasks_blocked()
        c.conn.reset_stream(sid, f.CANCEL)
        await c.flush()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.cancelled == ["unary"]
        r = await c.call("/trietcdtest.Echo/Unary", Msg(text="still", n=1))
        assert messages_of(r) == [Msg(text="still", n=2)]


async def test_server_streaming():
    async with served() as c:
        r = await c.call("/trietcdtest.Echo/Server", Msg(text="s", n=3))
        assert messages_of(r) == [Msg(text="s", n=0), Msg(text="s", n=1), Msg(text="s", n=2)]
        assert status_of(r) == (0, "")
        r = await c.call("/trietcdtest.Echo/Server", Msg(text="then-fail", n=2))
        assert len(messages_of(r)) == 2 and status_of(r) == (10, "stopped")


async def test_client_streaming():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Client")
        for n in range(1, 11):
            await c.send_message(sid, Msg(n=n))
        await c.send(sid, b"", end_stream=True)
        r = await c.wait(sid)
        assert messages_of(r) == [Msg(text="sum", n=55)]


async def test_bidi_streaming_interleaves():
    async with served() as c:
        sid = await c.open("/trietcdtest.Echo/Bidi")
        for i, word in enumerate(["a", "b", "c"]):
            await c.send_message(sid, Msg(text=word, n=i))
            while len(messages_of(c.responses[sid])) < i + 1:
                await c.receive()
        await c.send(sid, b"", end_stream=True)
        r = await c.wait(sid)
        assert [m.text for m in messages_of(r)] == ["A", "B", "C"] and status_of(r) == (0, "")


async def test_slow_reader_backpressure_is_bounded(autojump_clock):
    # The client never grants window: the handler blocks in send() with a
    # bounded queue, and the stalled connection is closed after the timeout.
    rec = Recorder()
    limits = H2Limits(stream_send_buffer_bytes=1000, send_stall_timeout_s=30.0)
    async with served(limits, rec=rec) as c:
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        await c.flush()
        sid = await c.open("/trietcdtest.Echo/Server")
        await c.send_message(sid, Msg(text="y" * 100, n=1_000_000), end_stream=True)
        with trio.move_on_after(60):
            while not c.eof:
                await c.receive()
        assert c.eof
        assert isinstance(c.events[-1], h2.events.ConnectionTerminated)
        assert c.events[-1].error_code == f.ENHANCE_YOUR_CALM
        assert trio.current_time() == pytest.approx(30.0)


async def test_peer_that_sends_but_never_reads(autojump_clock):
    # Lockstep streams: the server's send_all waits for a reader that never
    # comes. The server must stop reading too (bounded output), then give up
    # after the stall timeout.
    limits = H2Limits(max_pending_output_bytes=4096, send_stall_timeout_s=30.0)
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    done = trio.Event()
    sent = 0

    async def serve():
        await serve_h2(server_stream, echo_registry(Recorder()), limits)
        done.set()

    async def flood(client):
        nonlocal sent
        with contextlib.suppress(trio.BrokenResourceError):  # once the server gives up
            for i in range(2000):
                sid = 1 + 2 * i
                client.conn.send_headers(sid, [(":path", "/trietcdtest.Echo/Unary")] + REQUEST_HEADERS)
                client.conn.send_data(sid, g.frame_message(Msg(n=i).SerializeToString()), end_stream=True)
                await client.flush()
                sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        c = H2Client(client_stream)
        c.conn.initiate_connection()
        nursery.start_soon(flood, c)
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < sent < 2000  # the server stopped reading
        with trio.move_on_after(31):
            await done.wait()
        assert done.is_set()
        assert trio.current_time() == pytest.approx(30.0)
        nursery.cancel_scope.cancel()


async def test_silent_connection_is_closed(autojump_clock):
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await serve_h2(server_stream, echo_registry(Recorder()), H2Limits(handshake_timeout_s=10.0))
    assert trio.current_time() == pytest.approx(10.0)


async def test_connection_close_cancels_handlers():
    rec = Recorder()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_h2, server_stream, echo_registry(rec), H2Limits())
        c = H2Client(client_stream)
        await c.start()
        await c.open("/trietcdtest.Echo/Server")
        await c.send_message(1, Msg(text="forever", n=1), end_stream=True)
        while not messages_of(c.responses[1]):
            await c.receive()
        await client_stream.aclose()
    assert rec.cancelled == ["server"]


async def test_wrong_preface_ends_the_connection():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_h2, server_stream, echo_registry(Recorder()), H2Limits())
        await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await client_stream.receive_some(65536):
            data += chunk
        assert data.startswith(b"\x00\x00")  # our SETTINGS, then the close


async def test_initial_bytes_from_a_sniffer():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        c = H2Client(client_stream)
        c.conn.initiate_connection()
        first = c.conn.data_to_send()
        nursery.start_soon(
            functools.partial(serve_h2, server_stream, echo_registry(Recorder()), H2Limits(), initial_bytes=first[:10])
        )
        await client_stream.send_all(first[10:])
        r = await c.call("/trietcdtest.Echo/Unary", Msg(n=1))
        assert messages_of(r) == [Msg(n=2)]
        nursery.cancel_scope.cancel()


def _raw_frames(data: bytes) -> list:
    frames = []
    while data:
        frame, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


async def test_graceful_shutdown_lets_in_flight_calls_finish(autojump_clock):
    # h2 refuses frames after GOAWAY, so this client reads raw frames.
    connections = ConnectionSet()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connections.serve_h2, server_stream, echo_registry(Recorder()), H2Limits())
        c = H2Client(client_stream)
        await c.start()
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send_message(sid, Msg(text="slow", n=1), end_stream=True)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(connections.shutdown, 5.0)
        data = b""
        while chunk := await client_stream.receive_some(65536):
            data += chunk
        assert trio.current_time() == pytest.approx(1.0)
    frames = _raw_frames(data)
    kinds = [type(x).__name__ for x in frames]
    assert kinds.index("GoAwayFrame") < kinds.index("DataFrame")
    (payload,) = [x.data for x in frames if isinstance(x, hf.DataFrame)]
    assert Msg.FromString(payload[5:]) == Msg(text="slow", n=2)
    trailers = [x for x in frames if isinstance(x, hf.HeadersFrame)][-1]
    assert "END_STREAM" in trailers.flags
    assert hpack.Decoder().decode(trailers.data, raw=True) == [(b"grpc-status", b"0")]
    assert len(connections) == 0


async def test_graceful_shutdown_cancels_calls_after_the_grace_period(autojump_clock):
    connections = ConnectionSet()
    rec = Recorder()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connections.serve_h2, server_stream, echo_registry(rec), H2Limits())
        c = H2Client(client_stream)
        await c.start()
        sid = await c.open("/trietcdtest.Echo/Unary")
        await c.send_message(sid, Msg(text="sleep"), end_stream=True)
        await trio.testing.wait_all_tasks_blocked()
        assert len(connections) == 1
        nursery.start_soon(connections.shutdown, 5.0)
        while not any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events):
            await c.receive()
        goaway = [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)][0]
        assert goaway.error_code == 0 and goaway.last_stream_id == sid
        while not c.eof:
            await c.receive()
    assert rec.cancelled == ["unary"]  # the grace period ran out
    assert len(connections) == 0


# ------------------------------------------------------------------ grpcio


@pytest.fixture(scope="module")
def grpcio_target():
    rec = Recorder()
    port = []
    stop = threading.Event()

    async def main():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port.append(listeners[0].socket.getsockname()[1])

        async def handle(stream):
            host, p = stream.socket.getpeername()[:2]
            await serve_h2(stream, echo_registry(rec), H2Limits(max_recv_message_bytes=1000), peer=f"ipv4:{host}:{p}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            while not stop.is_set():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    while not port:
        stop.wait(0.01)
    channel = grpc.insecure_channel(f"127.0.0.1:{port[0]}")
    yield channel, rec
    channel.close()
    stop.set()
    thread.join(5)


def _stub(channel, name, kind="unary_unary"):
    return getattr(channel, kind)(f"/trietcdtest.Echo/{name}", request_serializer=Msg.SerializeToString,
                                  response_deserializer=Msg.FromString)


def test_grpcio_unary(grpcio_target):
    channel, rec = grpcio_target
    assert _stub(channel, "Unary")(Msg(text="a", n=1), timeout=10) == Msg(text="a", n=2)
    assert rec.peers[-1].startswith("ipv4:127.0.0.1:")
    assert _stub(channel, "Unary")(Msg(text="meta"), metadata=[("token", "t0k")], timeout=10).text == "t0k"


def test_grpcio_errors(grpcio_target):
    channel, _ = grpcio_target
    with pytest.raises(grpc.RpcError) as exc:
        _stub(channel, "Unary")(Msg(text="fail"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and exc.value.details() == "nope ü 100%"
    with pytest.raises(grpc.RpcError) as exc:
        channel.unary_unary("/etcdserverpb.KV/Put")(b"", timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert exc.value.details() == "unknown service etcdserverpb.KV"
    with pytest.raises(grpc.RpcError) as exc:
        _stub(channel, "Unary")(Msg(text="x" * 2000), timeout=10)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.value.details() == "grpc: received message larger than max (2003 vs. 1000)"


def test_grpcio_deadline(grpcio_target):
    channel, rec = grpcio_target
    with pytest.raises(grpc.RpcError) as exc:
        _stub(channel, "Unary")(Msg(text="sleep"), timeout=0.2)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_grpcio_streams(grpcio_target):
    channel, _ = grpcio_target
    got = list(_stub(channel, "Server", "unary_stream")(Msg(text="s", n=5), timeout=10))
    assert [m.n for m in got] == [0, 1, 2, 3, 4]
    total = _stub(channel, "Client", "stream_unary")(iter([Msg(n=i) for i in range(100)]), timeout=10)
    assert total == Msg(text="sum", n=4950)
    echoed = list(_stub(channel, "Bidi", "stream_stream")(iter([Msg(text=w) for w in "xyz"]), timeout=10))
    assert [m.text for m in echoed] == ["X", "Y", "Z"]


def test_grpcio_large_streamed_response(grpcio_target):
    channel, _ = grpcio_target
    got = list(_stub(channel, "Server", "unary_stream")(Msg(text="z" * 900, n=500), timeout=30))
    assert len(got) == 500 and all(len(m.text) == 900 for m in got)


def test_grpcio_cancel_reaches_the_handler(grpcio_target):
    channel, rec = grpcio_target
    future = _stub(channel, "Unary").future(Msg(text="sleep"), timeout=30)
    import time

    deadline = time.monotonic() + 5
    before = rec.cancelled.count("unary")
    time.sleep(0.2)
    future.cancel()
    while rec.cancelled.count("unary") == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.cancelled.count("unary") == before + 1
