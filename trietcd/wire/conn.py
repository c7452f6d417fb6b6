"""The trio shell around `H2Connection`: one task reads, one writes, one keeps
time, and each gRPC call runs as a child task of the connection's call nursery
— unless its method's fast handler serves it in the reading task (answered at
once, or deferred and answered later through `Call.finish` by whoever finishes
it: no task waits for it).

Rules:
- The connection task owns the `H2Connection`; call tasks touch it only between
  awaits (trio runs one task at a time), then wake the writer.
- The writer drains everything queued since its last wake-up into ONE `send_all`,
  so the output of all streams coalesces.
- A stream reset by the client, or the connection going away, cancels the call's
  task; a deadline (grpc-timeout) cancels it and answers DEADLINE_EXCEEDED. A
  deferred call has no task: the timer task answers its deadline, and a late
  `Call.finish` (after a reset, the deadline or the connection's end) does nothing.
"""

from __future__ import annotations

import collections
import heapq
import logging
import math
import os
import time

import outcome
import trio
from google.protobuf.message import DecodeError

from trietcd.wire import grpc_call as g
from trietcd.wire import h2_conn as hc
from trietcd.wire import h2_frames as f
from trietcd.wire.grpc_call import GrpcError, Registry, Status
from trietcd.wire.h2_conn import H2Connection, H2Limits
from trietcd.wire.tls import common_name as tls_common_name

log = logging.getLogger("trietcd.wire")

_READ_BYTES = 65536
_FINAL_FLUSH_S = 1.0
_IDLE_WORKERS_MAX = 16  # idle call tasks a connection keeps for reuse (memory per connection)


class MethodStats:
    """Counters of one gRPC method (what go-grpc-prometheus exports as grpc_server_*), bumped by the
    connections and read when metrics are scraped: plain ints, no formatting on the call path."""

    __slots__ = ("service", "method", "grpc_type", "preregistered", "started", "msg_received", "msg_sent",
                 "handled", "handling", "handling_sum_s")

    def __init__(self, path: str, client_streaming: bool, server_streaming: bool, preregistered: bool):
        self.service, _, self.method = path[1:].rpartition("/")
        self.grpc_type = ("bidi_stream" if server_streaming else "client_stream") if client_streaming else (
            "server_stream" if server_streaming else "unary")
        self.preregistered = preregistered
        self.started = 0
        self.msg_received = 0
        self.msg_sent = 0
        self.handled = [0] * 17  # by status code
        self.handling: list[int] = []  # calls per handling-time bucket (not cumulative), when timed
        self.handling_sum_s = 0.0


class GrpcStats:
    """Per-method counters and the bytes of messages received and sent (payloads, as grpc-go's codec sees
    them), for every connection of the process."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}
        self.received_bytes = 0
        self.sent_bytes = 0
        # Calls by ("unary" or "stream", the client-api-version metadata or "unknown"), as etcd counts them.
        self.client_requests: dict[tuple[str, str], int] = {}
        # Upper bounds of the handling-time histogram; () leaves calls untimed (etcd's --metrics basic).
        self.handling_buckets: tuple[float, ...] = ()

    def time_handling(self, buckets) -> None:
        """Times every call from its start to its status (etcd's --metrics extensive)."""
        self.handling_buckets = tuple(buckets)

    def register(self, path: str, client_streaming: bool, server_streaming: bool) -> None:
        """Exports a method before its first call (at zero)."""
        if path not in self.methods:
            self.methods[path] = MethodStats(path, client_streaming, server_streaming, True)

    def of(self, method) -> MethodStats:
        stats = self.methods.get(method.path)
        if stats is None:
            stats = self.methods[method.path] = MethodStats(method.path, method.client_streaming,
                                                            method.server_streaming, False)
        return stats


# The process' counters, as go-grpc-prometheus keeps its own in the default registry.
grpc_stats = GrpcStats()


class Call:
    """One gRPC call as its handler sees it."""

    __slots__ = (
        "peer",
        "tls_common_name",
        "deadline",
        "path",
        "_shell",
        "_stream_id",
        "_headers",
        "_metadata",
        "_method",
        "_reader",
        "_queue",
        "_queued_bytes",
        "_deferred_bytes",
        "_ended",
        "_error",
        "_arrived",
        "_scope",
        "_started",
        "_done",
        "_trailing",
        "_stats",
        "_started_s",
        "_request",
        "_names",
        "_begun",
    )

    def __init__(self, shell: "_Connection", stream_id: int, headers, method, deadline: float, path: str,
                 names: frozenset = frozenset()):
        self.peer = shell.peer
        # The Subject CN of the verified client certificate of a TLS connection, else None.
        self.tls_common_name = shell.tls_common_name
        self.deadline = deadline
        self.path = path
        self._shell = shell
        self._stream_id = stream_id
        self._headers = headers
        self._metadata = None
        self._method = method
        self._reader: g.MessageReader | None = None  # made when a message spans frames
        self._queue: collections.deque[bytes] | None = None  # streaming requests only
        self._queued_bytes = 0
        self._deferred_bytes = 0  # received, not yet credited to the peer
        self._ended = False  # the client half-closed
        self._error: GrpcError | None = None
        self._arrived: trio.lowlevel.ParkingLot | None = None
        self._scope: trio.CancelScope | None = None
        self._started = False  # the handler task exists
        self._done = False  # our END_STREAM (or a reset) is queued
        self._trailing = None
        self._stats: MethodStats | None = None  # set while the call is counted as started, not yet handled
        self._started_s = 0.0  # when it started, if calls are timed
        self._request = None  # the decoded request, when a fast handler left the call to the handler
        self._names = names  # the request's header names
        self._begun = False  # counted as started (see _Connection._begin)

    @property
    def metadata(self) -> dict[str, str]:
        if self._metadata is None:
            self._metadata = g.metadata_of(self._headers)
        return self._metadata

    def has_metadata(self, *names: bytes) -> bool:
        """Whether any of the metadata `names` (lower-case) was sent, without decoding the metadata."""
        return not self._names.isdisjoint(names)

    def finish(self, result) -> None:
        """Answers a call its fast handler deferred: `result` is the response, or the exception to answer
        with (a GrpcError's status; any other as UNKNOWN with its text). Does nothing once the call is over
        (reset by the client, past its deadline, or its connection gone)."""
        self._shell._finish_deferred(self, result)

    def set_trailing_metadata(self, metadata: dict[str, str]) -> None:
        self._trailing = dict(metadata)

    async def send(self, message) -> None:
        """Sends one response message; waits while too much output is queued."""
        if not self.write(message.SerializeToString()):
            while self._over_limits():
                await self._shell.send_space.park()
        await trio.lowlevel.checkpoint()

    def write(self, *payloads: bytes) -> bool:
        """Queues encoded response messages without waiting (a streaming handler with several ready
        writes them together, in one run of DATA frames, then flushes once). Returns whether the
        output buffers still have room; when not, the handler must `flush` before writing more."""
        if self._done:
            raise trio.ClosedResourceError("call already finished")
        shell = self._shell
        conn = shell.conn
        sid = self._stream_id
        st = conn.streams.get(sid)
        if st is None:
            raise GrpcError(Status.CANCELLED, "stream closed")
        if not st.headers_sent:
            conn.send_headers(sid, g.RESPONSE_HEADERS)
        if len(payloads) == 1:
            conn.send_data(sid, g.frame_message(payloads[0]))
        else:
            conn.send_data(sid, b"".join(map(g.frame_message, payloads)))
        if self._stats is not None:
            self._stats.msg_sent += len(payloads)
            grpc_stats.sent_bytes += sum(map(len, payloads))
        shell.wake_writer()
        return not self._over_limits()

    async def flush(self) -> None:
        """Waits until the queued output fits the connection's limits; a checkpoint either way."""
        while self._over_limits():
            await self._shell.send_space.park()
        await trio.lowlevel.checkpoint()

    def _over_limits(self) -> bool:
        conn = self._shell.conn
        lim = self._shell.limits
        return (
            conn.stream_pending_bytes(self._stream_id) > lim.stream_send_buffer_bytes
            or conn.pending_output_bytes() > lim.max_pending_output_bytes
        )

    async def requests(self):
        """The request messages, decoded, until the client half-closes."""
        method = self._method
        while True:
            if self._queue:
                raw = self._queue.popleft()
                self._consumed(len(raw) + 5)
                if self._stats is not None:
                    self._stats.msg_received += 1
                    grpc_stats.received_bytes += len(raw)
                try:
                    request = method.request_type.FromString(raw)
                except DecodeError as exc:
                    request = self._shell.registry.undecodable_request(method, raw, exc)
                yield request
            elif self._error is not None:
                raise self._error
            elif self._ended:
                return
            else:
                await self._arrived.park()

    # -------------------------------------------------------- shell side

    def _consumed(self, n: int) -> None:
        self._queued_bytes -= n
        if self._deferred_bytes and self._queued_bytes <= self._shell.limits.stream_window_bytes:
            self._shell.conn.acknowledge_received_data(self._stream_id, self._deferred_bytes)
            self._deferred_bytes = 0
            self._shell.wake_writer()


class _Connection:
    def __init__(self, stream: trio.abc.Stream, registry: Registry, limits: H2Limits, peer: str):
        self.stream = stream
        self.registry = registry
        self.limits = limits
        self.peer = peer
        self.tls_common_name = tls_common_name(stream) if isinstance(stream, trio.SSLStream) else None
        self.conn = H2Connection(limits, trio.current_time())
        self.calls: dict[int, Call] = {}
        self.send_space = trio.lowlevel.ParkingLot()
        self._want_write = trio.Event()
        self._write_pending = False  # _want_write is set
        # A plain TCP connection's socket, for answers sent without waking the writer (see _send_now).
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._sending = False  # the writer is inside send_all
        self._unsent = b""  # taken from the connection by _send_now, not yet sent: the writer sends it first
        self._writer_done = trio.Event()
        self._finished = trio.Event()
        self._no_calls = trio.Event()
        self._closing = False
        self._shutting_down = False
        self._calls_nursery: trio.Nursery | None = None
        self._idle_workers: list = []  # call tasks waiting for their next call
        self._read_scope = trio.CancelScope()
        self._last_headers = None  # the request head of the last header list, reused
        self._last_head = None
        self._version_headers = None  # the client-api-version of the last header list, reused
        self._version = "unknown"
        self._timer_scope: trio.CancelScope | None = None
        self._deferred_deadlines: list = []  # heap of (deadline, stream id, call) of deferred calls

    # -------------------------------------------------------- lifecycle

    async def run(self, initial_bytes: bytes) -> None:
        try:
            async with trio.open_nursery() as io:
                io.start_soon(self._write_loop)
                io.start_soon(self._timer_loop)
                async with trio.open_nursery() as calls:
                    self._calls_nursery = calls
                    if initial_bytes:
                        self._receive(initial_bytes)
                    with self._read_scope:
                        await self._read_loop()
                    calls.cancel_scope.cancel()
                self._closing = True
                self.wake_writer()
                with trio.move_on_after(_FINAL_FLUSH_S):
                    await self._writer_done.wait()
                io.cancel_scope.cancel()
        except Exception:
            # A bad client never takes the server down.
            log.exception("h2 connection from %s failed", self.peer)
        finally:
            self._finished.set()
            for call in list(self.calls.values()):  # deferred calls nobody will answer now
                self._drop(call)
            self._no_calls.set()
            await trio.aclose_forcefully(self.stream)

    def begin_shutdown(self) -> None:
        """GOAWAY now; the connection ends once its calls are done."""
        self._shutting_down = True
        self.conn.close_gracefully()
        self.wake_writer()
        if not self.calls:
            self._no_calls.set()
            self._read_scope.cancel()

    def abort(self) -> None:
        self._read_scope.cancel()

    def wake_writer(self) -> None:
        if not self._write_pending:
            self._write_pending = True
            self._want_write.set()

    async def _read_loop(self) -> None:
        receive_some = self.stream.receive_some
        conn = self.conn
        limit = self.limits.max_pending_output_bytes
        while not conn.closed:
            # A peer that sends but does not read stops being read: the output
            # it provokes stays bounded (and the stall timeout ends it).
            while conn.pending_output_bytes() > limit and not conn.closed:
                await self.send_space.park()
            try:
                data = await receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self._receive(data)

    async def _write_loop(self) -> None:
        conn = self.conn
        try:
            while True:
                await self._want_write.wait()
                if self.calls:
                    # One more scheduling round lets the call tasks woken with
                    # us finish first, so their output leaves in this same
                    # send_all. Without calls in flight it would only add latency.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                self._want_write = trio.Event()
                self._write_pending = False
                data = conn.data_to_send()
                if self._unsent:
                    data, self._unsent = self._unsent + data, b""
                if conn.output_blocked:
                    conn.observe_time(trio.current_time())
                    self._lower_timer_deadline()
                if data:
                    self._sending = True
                    try:
                        with trio.move_on_after(self.limits.send_stall_timeout_s) as scope:
                            await self.stream.send_all(data)
                    finally:
                        self._sending = False
                    if scope.cancelled_caught:
                        log.debug("h2 connection from %s: peer stopped reading", self.peer)
                        self._read_scope.cancel()
                        return
                    self.send_space.unpark_all()
                if self._closing and not conn.pending_output_bytes():
                    return
                if conn.closed:
                    self._read_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._read_scope.cancel()
        finally:
            self._writer_done.set()

    async def _timer_loop(self) -> None:
        conn = self.conn
        while True:
            with trio.CancelScope(deadline=self._next_deadline()) as self._timer_scope:
                await trio.sleep_forever()
            now = trio.current_time()
            self._handle(conn.tick(now))
            self._expire_deferred(now)
            if conn.pending_output_bytes():
                self.wake_writer()

    def _next_deadline(self) -> float:
        due = self.conn.next_deadline()
        if self._deferred_deadlines:
            due = min(due, self._deferred_deadlines[0][0])
        return due

    def _keep_deadline(self, call: Call) -> None:
        """Answers a call that has no task at its grpc-timeout (see _expire_deferred)."""
        if call.deadline != math.inf and not call._done:
            heapq.heappush(self._deferred_deadlines, (call.deadline, call._stream_id, call))
            self._lower_timer_deadline()

    def _expire_deferred(self, now: float) -> None:
        """Deferred calls have no task for a cancel scope to end: their deadlines are kept here."""
        heap = self._deferred_deadlines
        while heap and (heap[0][2]._done or heap[0][0] <= now):
            call = heapq.heappop(heap)[2]
            if not call._done and call._scope is None:  # a call with a task: its cancel scope answers
                self._finish_error(call, Status.DEADLINE_EXCEEDED, "context deadline exceeded")

    # -------------------------------------------------------- events

    def _receive(self, data: bytes) -> None:
        conn = self.conn
        self._handle(conn.receive_data(data, trio.current_time()))
        if conn.pending_output_bytes():
            self.wake_writer()
        self._lower_timer_deadline()

    def _lower_timer_deadline(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            deadline = self._next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    def _handle(self, events: list) -> None:
        for ev in events:
            kind = ev[0]
            if kind == hc.DATA:
                self._on_data(ev[1], ev[2], ev[3])
            elif kind == hc.REQUEST:
                self._on_request(ev[1], ev[2], ev[3])
            elif kind == hc.RESET:
                self._on_reset(ev[1])
            elif kind == hc.WINDOW_OPENED:
                self.send_space.unpark_all()
            elif kind == hc.GOAWAY_RECEIVED:
                pass  # the client finishes its calls, then closes
            elif kind == hc.CLOSED:
                log.debug("h2 connection from %s closed: %s", self.peer, ev[2])
                self._read_scope.cancel()
                self.wake_writer()

    def _on_request(self, sid: int, headers, end_stream: bool) -> None:
        if headers is self._last_headers:
            head = self._last_head
        else:
            head = g.parse_request_head(headers)
            self._last_headers, self._last_head = headers, head
        conn = self.conn
        if head.bad_content_type:
            conn.reset_stream(sid, f.PROTOCOL_ERROR)
            return
        if head.error is not None:
            self._answer_error(sid, head.error.code, head.error.message)
            return
        method = self.registry.lookup(head.path)
        if method is None:
            err = self.registry.unknown_method_error(head.path)
            self._answer_error(sid, err.code, err.message)
            return
        deadline = trio.current_time() + head.timeout_s if head.timeout_s is not None else math.inf
        call = Call(self, sid, headers, method, deadline, head.path, head.names)
        self.calls[sid] = call
        self._no_calls = trio.Event() if self._no_calls.is_set() else self._no_calls
        conn.streams[sid].app = call
        if method.client_streaming:
            call._queue = collections.deque()
            call._arrived = trio.lowlevel.ParkingLot()
            if method.fast is None:
                call._started = True
                self._start_call(call, None)
            elif not self._begin(call, None):
                return
            else:
                self._keep_deadline(call)
        if end_stream:
            self._on_data(sid, b"", True)

    def _on_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        call = self.calls.get(sid)
        if call is None or call._done:
            self.conn.acknowledge_received_data(sid, len(data))
            return
        try:
            if call._reader is None:
                messages = g.whole_message(data, self.limits.max_recv_message_bytes)
                if messages is None:
                    call._reader = g.MessageReader(self.limits.max_recv_message_bytes)
                    messages = call._reader.feed(data)
            else:
                messages = call._reader.feed(data)
        except GrpcError as exc:
            self.conn.acknowledge_received_data(sid, len(data))
            self._fail_input(call, exc)
            return
        if call._queue is None:
            self._on_unary_data(call, len(data), messages, end_stream)
            return
        if not call._started:  # a stream whose messages the fast handler serves, so far
            messages = self._run_fast_messages(call, messages)
            if call._done:
                self.conn.acknowledge_received_data(sid, len(data))
                return
            if end_stream and not call._started:
                self.conn.acknowledge_received_data(sid, len(data))
                self._finish_ok(call, None)
                return
        for m in messages:
            call._queue.append(m)
            call._queued_bytes += len(m) + 5
        if call._queued_bytes <= self.limits.stream_window_bytes:
            self.conn.acknowledge_received_data(sid, len(data))
        else:
            call._deferred_bytes += len(data)
        if end_stream:
            call._ended = True
        if messages or end_stream:
            call._arrived.unpark_all()

    def _on_unary_data(self, call: Call, n: int, messages, end_stream: bool) -> None:
        self.conn.acknowledge_received_data(call._stream_id, n)
        if messages and not call._started:
            call._started = True
            if call._method.fast is None or not self._run_fast(call, messages[0]):
                self._start_call(call, messages[0])
        elif end_stream and not call._started:
            self._finish_error(call, Status.INTERNAL, "grpc: error while receiving request: EOF")

    def _fail_input(self, call: Call, exc: GrpcError) -> None:
        if call._queue is not None:
            call._error = exc
            call._arrived.unpark_all()
        else:
            if call._scope is not None:
                call._scope.cancel()
            self._finish_error(call, exc.code, exc.message)

    def _on_reset(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        _count_handled(call, Status.CANCELLED)
        call._done = True
        self._forget(call)
        if call._scope is not None:
            call._scope.cancel()
        elif call._arrived is not None:
            call._arrived.unpark_all()

    def _forget(self, call: Call) -> None:
        self.calls.pop(call._stream_id, None)
        if not self.calls:
            self._no_calls.set()
            if self._shutting_down:
                self._read_scope.cancel()

    # -------------------------------------------------------- calls

    def _start_call(self, call: Call, request_raw: bytes | None) -> None:
        """Runs the call in an idle call task, or a new one. Reusing a task
        costs a reschedule where spawning one costs several times that; each
        running call still has a task of its own, child of the connection."""
        if self._idle_workers:
            trio.lowlevel.reschedule(self._idle_workers.pop(), outcome.Value((call, request_raw)))
        else:
            self._calls_nursery.start_soon(self._call_task, call, request_raw)

    async def _call_task(self, call: Call, request_raw: bytes | None) -> None:
        # A call task runs one call at a time, so one cancel scope serves all its
        # calls: `call._scope` is set only while the call runs, cancelling it
        # cancels exactly that call, and a cancelled scope is replaced. Entering
        # a scope per call would cost as much as the rest of a no-op call.
        task = trio.lowlevel.current_task()
        idle = self._idle_workers

        def abort(_raise_cancel):
            idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        while True:
            with trio.CancelScope() as scope:
                while True:
                    call._scope = scope
                    if scope.deadline != call.deadline:
                        scope.deadline = call.deadline
                    await self._run_call(call, request_raw)
                    call._scope = None
                    if scope.cancel_called:
                        break
                    if scope.deadline != math.inf:
                        scope.deadline = math.inf
                    if len(idle) >= _IDLE_WORKERS_MAX:
                        return
                    idle.append(task)
                    call, request_raw = await trio.lowlevel.wait_task_rescheduled(abort)
            call._scope = None
            if scope.cancelled_caught:
                self._call_cancelled(call)
            if len(idle) >= _IDLE_WORKERS_MAX:
                return
            idle.append(task)
            call, request_raw = await trio.lowlevel.wait_task_rescheduled(abort)

    async def _run_call(self, call: Call, request_raw: bytes | None) -> None:
        """Runs the handler and answers; trio.Cancelled passes through."""
        if call._done:  # reset before the task got to it
            return
        method = call._method
        request = call._request
        if not call._begun and not self._begin(call, request_raw):
            return
        try:
            if method.client_streaming:
                result = await method.handler(call)
            else:
                if request is None:
                    request = self._decode(method, request_raw)
                result = await method.handler(request, call)
            self._finish_ok(call, result)
        except Exception as exc:
            self._finish_failed(call, exc)

    def _run_fast(self, call: Call, request_raw: bytes) -> bool:
        """Tries the method's fast handler in this task; False leaves the call (begun, its request
        decoded) to a call task."""
        if not self._begin(call, request_raw):
            return True
        method = call._method
        try:
            request = self._decode(method, request_raw)
            result = method.fast(request, call)
            if result is None:
                call._request = request
                return False
            if result is g.DEFERRED:
                self._keep_deadline(call)
            else:
                self._finish_ok(call, result)
        except Exception as exc:
            self._finish_failed(call, exc)
        return True

    def _run_fast_messages(self, call: Call, messages: list) -> list:
        """A client stream's messages through its method's fast handler, in this task, until one needs the
        ordinary handler (or the output is over its limits): the call task then starts, and the messages from
        that one on are returned to be queued for it."""
        method = call._method
        stats = call._stats
        for i, raw in enumerate(messages):
            try:
                request = self._decode(method, raw)
                result = method.fast(request, call)
                if result is not None:
                    if stats is not None:
                        stats.msg_received += 1
                        grpc_stats.received_bytes += len(raw)
                    if call.write(result if isinstance(result, bytes) else result.SerializeToString()):
                        continue
                    i += 1  # answered, but the task is to wait for the output to drain
            except Exception as exc:
                self._finish_failed(call, exc)
                return []
            call._started = True
            self._start_call(call, None)
            return messages[i:]
        return []

    def _finish_failed(self, call: Call, exc: Exception, *, logged: bool = True) -> None:
        """Answers what a handler raised: a GrpcError with its status, anything else UNKNOWN with its text
        (logged, as a bug, unless the handler chose to answer with it)."""
        if isinstance(exc, GrpcError):
            self._finish_error(call, exc.code, exc.message)
            return
        if logged:
            log.error("handler of %s failed", call.path, exc_info=exc)
        self._finish_error(call, Status.UNKNOWN, str(exc))

    def _finish_deferred(self, call: Call, result) -> None:
        if call._done:
            return
        if self._finished.is_set():
            self._drop(call)
            return
        # The writer is woken only if _send_now leaves it something: woken for an answer sent here, it would
        # run a scheduling round for nothing.
        hold = not self._write_pending
        self._write_pending = True  # wake_writer does nothing meanwhile
        try:
            if isinstance(result, BaseException):
                self._finish_failed(call, result, logged=False)
            else:
                try:
                    self._finish_ok(call, result)
                except GrpcError as exc:
                    self._finish_error(call, exc.code, exc.message)
        finally:
            if hold:
                self._write_pending = False
        if not self.calls and self._send_now() and not self._closing and not self.conn.closed:
            return
        if hold:
            self.wake_writer()

    def _send_now(self) -> bool:
        """Sends the queued output at once, if the socket takes it without waiting and the writer is idle: the
        last answer of a connection goes out without a task switch (one client waiting on one call). Returns
        whether nothing is left for the writer: what the socket does not take, errors included, is its."""
        if self._socket is None or self._sending or self._unsent:
            return False
        fd = self._socket.fileno()  # -1 once closed (never a descriptor reused since)
        data = self.conn.data_to_send()
        if not data:
            return True
        try:
            sent = os.write(fd, data) if fd >= 0 else 0
        except OSError:  # would block, or the peer is gone: the writer finds out
            sent = 0
        if sent < len(data):
            self._unsent = data[sent:]
            return False
        self.send_space.unpark_all()
        return True

    def _drop(self, call: Call) -> None:
        """Ends a call the client can no longer be answered on (counted as cancelled)."""
        if not call._done:
            _count_handled(call, Status.CANCELLED)
            call._done = True
        self.calls.pop(call._stream_id, None)

    def _begin(self, call: Call, request_raw: bytes | None) -> bool:
        """Counts the call as started; answers DEADLINE_EXCEEDED (and returns False) when it is late."""
        call._begun = True
        stats = call._stats = grpc_stats.of(call._method)
        stats.started += 1
        headers = call._headers
        if headers is not self._version_headers:
            self._version_headers, self._version = headers, _client_api_version(headers)
        key = ("unary" if stats.grpc_type == "unary" else "stream", self._version)
        requests = grpc_stats.client_requests
        requests[key] = requests.get(key, 0) + 1
        if grpc_stats.handling_buckets:
            call._started_s = time.perf_counter()
        if request_raw is not None:
            stats.msg_received += 1
            grpc_stats.received_bytes += len(request_raw)
        if call.deadline != math.inf and trio.current_time() >= call.deadline:
            self._finish_error(call, Status.DEADLINE_EXCEEDED, "context deadline exceeded")
            return False
        return True

    def _decode(self, method, request_raw: bytes):
        try:
            return method.request_type.FromString(request_raw)
        except DecodeError as exc:
            return self.registry.undecodable_request(method, request_raw, exc)

    def _call_cancelled(self, call: Call) -> None:
        if call._done:
            return
        if self.conn.closed:
            _count_handled(call, Status.CANCELLED)  # the client is gone: counted as cancelled
            return
        if trio.current_time() >= call.deadline:
            self._finish_error(call, Status.DEADLINE_EXCEEDED, "context deadline exceeded")
        else:
            _count_handled(call, Status.CANCELLED)
            call._done = True
            self._forget(call)
            self.conn.reset_stream(call._stream_id, f.CANCEL)
            self.wake_writer()

    def _finish_ok(self, call: Call, result) -> None:
        if call._done:
            return
        method = call._method
        trailers = g.OK_TRAILERS if call._trailing is None else g.trailers_block(Status.OK, "", call._trailing)
        sid = call._stream_id
        conn = self.conn
        if method.server_streaming:
            st = conn.streams.get(sid)
            if st is not None and not st.headers_sent:
                conn.send_headers(sid, g.RESPONSE_HEADERS)
            conn.send_trailers(sid, trailers)
        else:
            if isinstance(result, bytes):
                payload = result  # already encoded
            elif isinstance(result, method.response_type):
                payload = result.SerializeToString()
            else:
                raise GrpcError(Status.INTERNAL, f"handler returned {type(result).__name__}, not {method.response_type.__name__}")
            conn.send_response(sid, g.RESPONSE_HEADERS, g.frame_message(payload), trailers)
            if call._stats is not None:
                call._stats.msg_sent += 1
                grpc_stats.sent_bytes += len(payload)
        _count_handled(call, Status.OK)
        call._done = True
        self._forget(call)
        self.wake_writer()

    def _finish_error(self, call: Call, code: Status, message: str) -> None:
        if call._done:
            return
        sid = call._stream_id
        st = self.conn.streams.get(sid)
        if st is not None:
            if st.headers_sent:
                self.conn.send_trailers(sid, g.trailers_block(code, message, call._trailing))
            else:
                self.conn.send_headers(sid, g.trailers_only_block(code, message, call._trailing), end_stream=True)
        _count_handled(call, code)
        call._done = True
        self._forget(call)
        self.wake_writer()

    def _answer_error(self, sid: int, code: Status, message: str) -> None:
        """Trailers-only answer for a request that never reaches a handler."""
        self.conn.send_headers(sid, g.trailers_only_block(code, message), end_stream=True)


def _client_api_version(headers) -> str:
    for name, value in headers:
        if name == b"client-api-version":
            return value.decode("utf-8", "replace")
    return "unknown"


def _count_handled(call: Call, code: Status) -> None:
    stats = call._stats
    if stats is not None:
        call._stats = None
        stats.handled[code] += 1
        buckets = grpc_stats.handling_buckets
        if buckets:
            _observe_handling(stats, buckets, time.perf_counter() - call._started_s)


def _observe_handling(stats: MethodStats, buckets: tuple[float, ...], seconds: float) -> None:
    if not stats.handling:
        stats.handling = [0] * (len(buckets) + 1)  # the last one is +Inf
    i = 0
    while i < len(buckets) and seconds > buckets[i]:
        i += 1
    stats.handling[i] += 1
    stats.handling_sum_s += seconds


async def serve_h2(
    stream: trio.abc.Stream,
    registry: Registry,
    limits: H2Limits,
    *,
    initial_bytes: bytes = b"",
    peer: str = "",
) -> None:
    """Serves one HTTP/2 (gRPC) connection until it closes."""
    await _Connection(stream, registry, limits, peer).run(initial_bytes)


class ConnectionSet:
    """Live HTTP/2 connections, for a graceful stop."""

    def __init__(self):
        self._connections: set[_Connection] = set()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._connections)

    async def serve_h2(
        self,
        stream: trio.abc.Stream,
        registry: Registry,
        limits: H2Limits,
        *,
        initial_bytes: bytes = b"",
        peer: str = "",
    ) -> None:
        c = _Connection(stream, registry, limits, peer)
        self._connections.add(c)
        try:
            if self._shutting_down:
                c.begin_shutdown()
            await c.run(initial_bytes)
        finally:
            self._connections.discard(c)

    async def shutdown(self, grace_s: float) -> None:
        """GOAWAY to all; wait up to grace_s for in-flight calls; then close all."""
        self._shutting_down = True
        for c in list(self._connections):
            c.begin_shutdown()
        with trio.move_on_after(grace_s):
            for c in list(self._connections):
                await c._no_calls.wait()
        for c in list(self._connections):
            c.abort()
        for c in list(self._connections):
            await c._finished.wait()
