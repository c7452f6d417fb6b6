"""The etcdserverpb.Watch service (etcd 3.5.1 `etcdserver/api/v3rpc/watch.go`).

One `WatchStream` of the hub per gRPC stream; two tasks per stream, as etcd's recvLoop and
sendLoop:
- the receive loop turns each request into a call on the stream: create (the created response,
  or a cancelled one with etcd's reason), cancel (a cancel response only for a watcher that
  exists), progress (a response with watch ID -1 at the current revision, sent once every watcher
  of the stream is synced and after the events already queued: etcd 3.5.1 answers at once, which
  can announce a revision whose events are still on their way; etcd 3.5.8 on waits like this,
  and the answer is the same whenever the watchers are synced). It stops reading while
  CTRL_BUF_LEN control responses wait to be sent. When the client half-closes, the stream stays
  open until the client goes away, as in etcd.
- the send loop takes the stream's responses in order and sends them: prev_kv read from the store
  at mod_revision - 1 when the watcher asked for it (not for a create event, nor when that
  revision is compacted), split into fragments when it asked for fragment and the response is
  at least --max-request-bytes + 512 KiB. A send blocks on HTTP/2 flow control; meanwhile the
  stream's queue fills and its watchers become victims, so the applier never waits for a client.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2
from trietcd.auth import AuthError
from trietcd.mvcc import MvccError
from trietcd.mvcc.watch import WatchResponse, WatchStream

__all__ = ["GRPC_OVERHEAD_BYTES", "WatchService", "fragments"]

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd's grpcOverheadBytes, added to --max-request-bytes

HeaderFn = Callable[[int], rpc_pb2.ResponseHeader]

_DELETE = kv_pb2.Event.DELETE
_PERMISSION_DENIED = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


class _Flag:
    """A reusable wake-up: set() wakes the waiter; wait() returns at once if set since the last
    wait."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class WatchService:
    """`hub` is the server's WatchHub (trietcd/server/watch.py): new_stream(), close_stream(),
    store."""

    def __init__(self, hub, header: HeaderFn, *, max_request_bytes: int, auth=None) -> None:
        self._hub = hub
        self._auth = auth  # the member's AuthKeeper: a watch needs read permission on its range
        self._header = header
        self._fragment_bytes = max_request_bytes + GRPC_OVERHEAD_BYTES

    def handlers(self) -> dict[str, Callable]:
        return {"Watch": self.Watch}

    async def Watch(self, call) -> None:
        stream = self._hub.new_stream()
        ctrl_space = _Flag()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, stream, call, ctrl_space)
                await self._recv_loop(stream, call, ctrl_space)
                await trio.sleep_forever()
        finally:
            self._hub.close_stream(stream)

    async def _recv_loop(self, stream: WatchStream, call, ctrl_space: _Flag) -> None:
        async for req in call.requests():
            while stream.ctrl_full():
                await ctrl_space.wait()
            kind = req.WhichOneof("request_union")
            if kind == "create_request":
                c = req.create_request
                if self._auth is not None and not await self._permitted(call, c):
                    # etcd answers created and cancelled at once, with the requested ID.
                    stream._push_ctrl(WatchResponse(c.watch_id, revision=stream.rev(), created=True, canceled=True,
                                                    cancel_reason=_PERMISSION_DENIED))
                    continue
                stream.create(
                    c.key,
                    c.range_end,
                    c.start_revision,
                    watch_id=c.watch_id,
                    filters=list(c.filters),
                    prev_kv=c.prev_kv,
                    progress_notify=c.progress_notify,
                    fragment=c.fragment,
                )
            elif kind == "cancel_request":
                stream.cancel(req.cancel_request.watch_id)
            elif kind == "progress_request":
                stream.request_progress()
            # anything else is ignored, as etcd does

    async def _permitted(self, call, c) -> bool:
        # etcd checks the range as it will watch it: an empty key is "\x00" and a range end "\x00" (every key
        # from key on) becomes none at all, so such a watch needs read permission on its first key only.
        key = c.key or b"\x00"
        range_end = b"" if c.range_end == b"\x00" else c.range_end
        try:
            info = await self._auth.auth_info(call)
            self._auth.store.check_range(info, key, range_end)
        except AuthError:
            return False
        return True

    async def _send_loop(self, stream: WatchStream, call, ctrl_space: _Flag) -> None:
        ready = _Flag()
        stream.on_ready = ready.set
        while True:
            resp = stream.take()
            if resp is None:
                await ready.wait()
                continue
            ctrl_space.set()
            msg = self._message(stream, resp)
            if resp.watch_id in stream.fragment:
                for part in fragments(msg, self._fragment_bytes):
                    await call.send(part)
            else:
                await call.send(msg)

    def _message(self, stream: WatchStream, resp: WatchResponse) -> rpc_pb2.WatchResponse:
        msg = rpc_pb2.WatchResponse(
            header=self._header(resp.revision),
            watch_id=resp.watch_id,
            created=resp.created,
            canceled=resp.canceled,
            compact_revision=resp.compact_revision,
            cancel_reason=resp.cancel_reason,
        )
        if resp.events:
            need_prev = resp.watch_id in stream.prev_kv
            read = self._hub.store.read() if need_prev else None
            for ev in resp.events:
                pe = msg.events.add()
                _fill_kv(pe.kv, ev.kv)
                if ev.deleted:
                    pe.type = _DELETE
                if need_prev and not ev.is_create:
                    try:
                        prev = read.get(ev.kv.key, ev.kv.mod_revision - 1)
                    except MvccError:
                        prev = None
                    if prev is not None:
                        _fill_kv(pe.prev_kv, prev)
        return msg


def _fill_kv(m, kv) -> None:
    m.key = kv.key
    if kv.create_revision:
        m.create_revision = kv.create_revision
    if kv.mod_revision:
        m.mod_revision = kv.mod_revision
    if kv.version:
        m.version = kv.version
    if kv.value:
        m.value = kv.value
    if kv.lease:
        m.lease = kv.lease


def fragments(msg: rpc_pb2.WatchResponse, max_bytes: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's sendFragments: a response of at least max_bytes with two events or more becomes
    several, each as many events as fit under max_bytes (at least one), all but the last marked
    fragment."""
    if msg.ByteSize() < max_bytes or len(msg.events) < 2:
        return [msg]
    events = list(msg.events)
    base = rpc_pb2.WatchResponse()
    base.CopyFrom(msg)
    del base.events[:]
    base.fragment = True
    base_bytes = base.ByteSize()
    out = []
    idx = 0
    while True:
        cur = rpc_pb2.WatchResponse()
        cur.CopyFrom(base)
        size = base_bytes
        for ev in events[idx:]:
            ev_bytes = _field_bytes(ev.ByteSize())
            if cur.events and size + ev_bytes >= max_bytes:
                break
            cur.events.append(ev)
            size += ev_bytes
            idx += 1
        if idx == len(events):
            cur.fragment = False
        out.append(cur)
        if not cur.fragment:
            return out


def _field_bytes(n: int) -> int:
    # A length-delimited field of n bytes: a one-byte tag, the length as a varint, the bytes.
    varint = 1
    rest = n
    while rest >= 0x80:
        rest >>= 7
        varint += 1
    return 1 + varint + n
