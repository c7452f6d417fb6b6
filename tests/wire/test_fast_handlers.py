"""Fast handlers (`Method.fast`): unary calls served in the connection's task, answered at once or
later through `Call.finish`, or left to the ordinary handler."""

from __future__ import annotations

import contextlib
import functools

import pytest
import trio
import trio.testing

from tests.wire.test_grpc_server import ECHO_SERVICE, H2Client, Msg, messages_of, status_of
from trietcd.wire import DEFERRED, ConnectionSet, GrpcError, H2Limits, Registry, Status, serve_h2
from trietcd.wire import grpc_call as g
from trietcd.wire import h2_frames as f
from trietcd.wire.conn import grpc_stats

UNARY = "/trietcdtest.Echo/Unary"


class Deferring:
    """A fast handler that answers "now" at once, defers "later*", refuses "bad" and leaves anything else
    to the ordinary handler."""

    def __init__(self):
        self.deferred: list = []
        self.handled: list[Msg] = []  # requests the ordinary handler got

    def fast(self, request, call):
        if request.text == "now":
            return Msg(text="fast", n=request.n + 1)
        if request.text == "encoded":
            return Msg(text="bytes", n=request.n + 1).SerializeToString()
        if request.text.startswith("later"):
            self.deferred.append((request, call))
            return DEFERRED
        if request.text == "bad":
            raise GrpcError(Status.FAILED_PRECONDITION, "refused fast")
        return None

    async def unary(self, request, call):
        self.handled.append(request)
        return Msg(text="slow", n=request.n + 1)

    def fast_message(self, request, call):
        if request.text == "refuse":
            raise GrpcError(Status.PERMISSION_DENIED, "no")
        return Msg(text="fast:" + request.text) if request.text.startswith("quick") else None

    async def bidi(self, call):
        async for request in call.requests():
            self.handled.append(request)
            await call.send(Msg(text="task:" + request.text))

    def registry(self) -> Registry:
        reg = Registry()
        reg.add_service(ECHO_SERVICE, {"Unary": self.unary, "Bidi": self.bidi},
                        fast={"Unary": self.fast, "Bidi": self.fast_message})
        return reg


@contextlib.asynccontextmanager
async def served(h: Deferring, connections: ConnectionSet | None = None, limits: H2Limits = H2Limits()):
    client_stream, server_stream = trio.testing.memory_stream_pair()
    serve = connections.serve_h2 if connections is not None else serve_h2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve, server_stream, h.registry(), limits))
        client = H2Client(client_stream)
        await client.start()
        yield client
        nursery.cancel_scope.cancel()


async def _send(c: H2Client, msg: Msg, extra=()) -> int:
    sid = await c.open(UNARY, extra)
    await c.send_message(sid, msg, end_stream=True)
    await trio.testing.wait_all_tasks_blocked()
    return sid


async def test_answered_at_once_without_the_handler():
    h = Deferring()
    async with served(h) as c:
        r = await c.call(UNARY, Msg(text="now", n=1))
        assert status_of(r) == (0, "") and messages_of(r) == [Msg(text="fast", n=2)]
    assert h.handled == []


async def test_answered_with_encoded_bytes():
    async with served(Deferring()) as c:
        r = await c.call(UNARY, Msg(text="encoded", n=1))
        assert status_of(r) == (0, "") and messages_of(r) == [Msg(text="bytes", n=2)]


async def test_none_leaves_the_call_to_the_handler_with_the_decoded_request():
    h = Deferring()
    path_stats = grpc_stats.of(h.registry().lookup(UNARY))
    started = path_stats.started
    async with served(h) as c:
        r = await c.call(UNARY, Msg(text="other", n=5))
        assert messages_of(r) == [Msg(text="slow", n=6)]
    assert h.handled == [Msg(text="other", n=5)]
    assert path_stats.started == started + 1  # counted once, not once per path tried


async def test_a_fast_error_is_the_status():
    async with served(Deferring()) as c:
        assert status_of(await c.call(UNARY, Msg(text="bad"))) == (9, "refused fast")


async def test_deferred_calls_are_answered_by_finish_in_any_order():
    h = Deferring()
    async with served(h) as c:
        sids = [await _send(c, Msg(text=f"later{i}", n=i)) for i in range(3)]
        assert all(c.responses[s]["headers"] is None for s in sids)
        (_, c0), (_, c1), (_, c2) = h.deferred
        c2.finish(Msg(text="two"))
        c0.finish(GrpcError(Status.NOT_FOUND, "gone"))
        c1.finish(ValueError("kaput"))
        assert messages_of(await c.wait(sids[2])) == [Msg(text="two")]
        assert status_of(await c.wait(sids[0])) == (5, "gone")
        assert status_of(await c.wait(sids[1])) == (2, "kaput")
        c2.finish(Msg(text="again"))  # a second answer is ignored
        r = await c.call(UNARY, Msg(text="now"))
        assert messages_of(r) == [Msg(text="fast", n=1)]
    assert h.handled == []


async def test_deferred_call_past_its_deadline(autojump_clock):
    h = Deferring()
    async with served(h) as c:
        start = trio.current_time()
        sid = await _send(c, Msg(text="later"), extra=[("grpc-timeout", "1500m")])
        r = await c.wait(sid)
        assert status_of(r) == (4, "context deadline exceeded")
        assert trio.current_time() - start == pytest.approx(1.5)
        h.deferred[0][1].finish(Msg(text="too late"))  # ignored
        r = await c.call(UNARY, Msg(text="now"))
        assert status_of(r) == (0, "")


async def test_deferred_call_reset_by_the_client():
    h = Deferring()
    async with served(h) as c:
        sid = await _send(c, Msg(text="later"))
        c.conn.reset_stream(sid, f.CANCEL)
        await c.flush()
        await trio.testing.wait_all_tasks_blocked()
        h.deferred[0][1].finish(Msg(text="nobody listens"))
        r = await c.call(UNARY, Msg(text="now", n=3))
        assert messages_of(r) == [Msg(text="fast", n=4)]


async def test_deferred_call_whose_connection_closed():
    h = Deferring()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_h2, server_stream, h.registry(), H2Limits())
        c = H2Client(client_stream)
        await c.start()
        await _send(c, Msg(text="later"))
        await client_stream.aclose()
    call = h.deferred[0][1]
    call.finish(Msg(text="after the end"))  # neither raises nor answers
    assert call._done


async def test_graceful_shutdown_waits_for_deferred_calls(autojump_clock):
    h = Deferring()
    connections = ConnectionSet()
    async with served(h, connections) as c:
        await _send(c, Msg(text="later"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connections.shutdown, 5.0)
            await trio.sleep(1.0)
            assert len(connections) == 1
            h.deferred[0][1].finish(Msg(text="in time"))
            await trio.testing.wait_all_tasks_blocked()
            assert len(connections) == 0
        assert trio.current_time() == pytest.approx(1.0)
        data = b""
        while chunk := await c.stream.receive_some(65536):
            data += chunk
        assert Msg(text="in time").SerializeToString() in data


@contextlib.asynccontextmanager
async def served_over_tcp(h: Deferring):
    """The same server on a real loopback TCP connection (the last answer is then written straight to the
    socket, without the writer task)."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, functools.partial(_serve_stream, h), 0)
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = H2Client(stream)
        await client.start()
        yield client
        nursery.cancel_scope.cancel()


async def _serve_stream(h: Deferring, stream) -> None:
    await serve_h2(stream, h.registry(), H2Limits())


async def test_deferred_answers_over_tcp_direct_and_through_the_writer(monkeypatch):
    import os
    import types

    from trietcd.wire import conn as conn_module

    direct = []

    def write(fd, data):
        direct.append(len(data))
        return os.write(fd, data)

    monkeypatch.setattr(conn_module, "os", types.SimpleNamespace(write=write))
    h = Deferring()
    async with served_over_tcp(h) as c:
        first = await _send(c, Msg(text="later-1"))
        second = await _send(c, Msg(text="later-2"))
        (_, call1), (_, call2) = h.deferred
        call1.finish(Msg(text="one"))  # another call in flight: the writer sends it
        assert messages_of(await c.wait(first)) == [Msg(text="one")]
        assert direct == []
        await trio.testing.wait_all_tasks_blocked()  # the writer is out of its send
        call2.finish(Msg(text="two"))  # the last one: written at once
        assert len(direct) == 1
        assert not call2._shell._write_pending  # and the writer was not woken for it
        assert messages_of(await c.wait(second)) == [Msg(text="two")]
        big = Msg(text="x" * 200_000)  # more than a socket takes at once: the writer sends the rest
        sid = await _send(c, Msg(text="later-3"))
        h.deferred[2][1].finish(big)
        shell = h.deferred[2][1]._shell
        assert shell._write_pending == bool(shell._unsent)  # what the socket did not take is the writer's
        r = await c.wait(sid)
        assert status_of(r) == (0, "") and messages_of(r) == [big]


BIDI = "/trietcdtest.Echo/Bidi"


async def _stream(c: H2Client, *texts: str, end=True) -> int:
    sid = await c.open(BIDI, end_stream=end and not texts)
    for i, text in enumerate(texts):
        await c.send_message(sid, Msg(text=text), end_stream=end and i == len(texts) - 1)
    return sid


async def test_a_stream_answered_message_by_message_without_a_task():
    h = Deferring()
    async with served(h) as c:
        r = await c.wait(await _stream(c, "quick-a", "quick-b"))
        assert status_of(r) == (0, "")
        assert [m.text for m in messages_of(r)] == ["fast:quick-a", "fast:quick-b"]
        r = await c.wait(await _stream(c))  # half-closed at once: nothing to answer
        assert status_of(r) == (0, "") and messages_of(r) == []
    assert h.handled == []


async def test_a_stream_handed_to_its_handler_from_the_first_message_it_declines():
    h = Deferring()
    async with served(h) as c:
        sid = await _stream(c, "quick-a", "other", "quick-b", end=False)
        await trio.testing.wait_all_tasks_blocked()
        await c.send_message(sid, Msg(text="quick-c"), end_stream=True)
        r = await c.wait(sid)
        assert status_of(r) == (0, "")
        assert [m.text for m in messages_of(r)] == ["fast:quick-a", "task:other", "task:quick-b", "task:quick-c"]
    assert [m.text for m in h.handled] == ["other", "quick-b", "quick-c"]


async def test_a_stream_fast_error_ends_the_call():
    async with served(Deferring()) as c:
        r = await c.wait(await _stream(c, "quick-a", "refuse", "quick-b"))
        assert status_of(r) == (7, "no")
        assert [m.text for m in messages_of(r)] == ["fast:quick-a"]


async def test_a_stream_without_a_task_past_its_deadline(autojump_clock):
    async with served(Deferring()) as c:
        sid = await c.open(BIDI, [("grpc-timeout", "2S")])
        await c.send_message(sid, Msg(text="quick-a"))
        r = await c.wait(sid)
        assert status_of(r) == (4, "context deadline exceeded")
        assert [m.text for m in messages_of(r)] == ["fast:quick-a"]


async def test_a_stream_over_its_output_limit_is_handed_to_its_handler():
    # Each answer is bigger than the output the connection may queue: the first is written, and the
    # handler, which can wait for the output to drain, takes the stream from the next message on.
    h = Deferring()
    big = "quick" + "x" * 3000
    async with served(h, limits=H2Limits(max_pending_output_bytes=1000)) as c:
        sid = await c.open(BIDI)
        for i in "123":  # in one write: the server reads them together, before any output drains
            c.conn.send_data(sid, g.frame_message(Msg(text=big + i).SerializeToString()), end_stream=i == "3")
        await c.flush()
        r = await c.wait(sid)
        assert status_of(r) == (0, "")
        assert [m.text for m in messages_of(r)] == ["fast:" + big + "1", "task:" + big + "2", "task:" + big + "3"]
    assert [m.text for m in h.handled] == [big + "2", big + "3"]
