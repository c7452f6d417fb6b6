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
from trietcd.api.kv import HeaderFieldFn, header_field_of
from trietcd.auth import AuthError
from trietcd.mvcc import MvccError
from trietcd.mvcc.rows import encode_kv
from trietcd.mvcc.watch import WatchResponse, WatchStream
from trietcd.wal.record import uvarint

__all__ = ["GRPC_OVERHEAD_BYTES", "WatchService", "fragments"]

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd's grpcOverheadBytes, added to --max-request-bytes

HeaderFn = Callable[[int], rpc_pb2.ResponseHeader]

_EVENT_CACHE_MAX = 4096
WRITE_BATCH_BYTES = 256 * 1024  # encoded responses gathered for one write
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

    def __init__(self, hub, header: HeaderFn, *, max_request_bytes: int, auth=None,
                 header_field: HeaderFieldFn | None = None) -> None:
        self._hub = hub
        self._auth = auth  # the member's AuthKeeper: a watch needs read permission on its range
        self._header = header
        self._header_field = header_field or header_field_of(header)
        # id(event) -> (event, its field bytes): the events of the last writes, shared by their
        # watchers (prev_kv is read for each response, as etcd does).
        self._event_cache: dict[int, tuple[object, bytes]] = {}
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
        # The range as it will be watched (an empty key is "\x00"). etcd 3.5.1 turns a range end "\x00" (every
        # key from key on) into none before its check, so such a watch needs read permission on its first key
        # only and then sees every key after it; here it needs read permission on all of them, as a Range.
        key = c.key or b"\x00"
        range_end = c.range_end
        try:
            info = await self._auth.auth_info(call)
            self._auth.store.check_range(info, key, range_end)
        except AuthError:
            return False
        return True

    async def _send_loop(self, stream: WatchStream, call, ctrl_space: _Flag) -> None:
        ready = _Flag()
        stream.on_ready = ready.set
        write = getattr(call, "write", None)  # the gateway's calls take messages
        batch: list[bytes] = []  # encoded responses for one write, in order
        batch_bytes = 0
        while True:
            resp = stream.take()
            if resp is None:
                await ready.wait()
                continue
            ctrl_space.set()
            data = self.encode(stream, resp)
            if resp.watch_id in stream.fragment and len(data) >= self._fragment_bytes:
                for part in fragments(rpc_pb2.WatchResponse.FromString(data), self._fragment_bytes):
                    await call.send(part)
            elif write is None:
                await call.send(rpc_pb2.WatchResponse.FromString(data))
            else:
                # Everything ready goes out in one write and one wake-up of the connection's writer.
                batch.append(data)
                batch_bytes += len(data)
                if stream.queue and batch_bytes < WRITE_BATCH_BYTES and not self._fragmenting(stream):
                    continue
                write(*batch)
                batch.clear()
                batch_bytes = 0
                await call.flush()

    @staticmethod
    def _fragmenting(stream: WatchStream) -> bool:
        # The next response may need fragments, sent as messages of their own: what is batched goes first.
        return bool(stream.fragment) and stream.queue[0][0].watch_id in stream.fragment

    def encode(self, stream: WatchStream, resp: WatchResponse) -> bytes:
        """The response as etcdserverpb.WatchResponse bytes, field by field in number order, as
        protobuf serializes it. An event's bytes are made once for all the watchers it goes to."""
        out = [self._header_field(resp.revision)]
        if resp.watch_id:
            out.append(b"\x10" + uvarint(resp.watch_id))
        if resp.created:
            out.append(b"\x18\x01")
        if resp.canceled:
            out.append(b"\x20\x01")
        if resp.compact_revision:
            out.append(b"\x28" + uvarint(resp.compact_revision))
        if resp.cancel_reason:
            reason = resp.cancel_reason.encode()
            out.append(b"\x32" + uvarint(len(reason)) + reason)
        if resp.events:
            if resp.watch_id in stream.prev_kv:
                read = self._hub.store.read()
                out += [_event_field(ev, _prev_of(read, ev)) for ev in resp.events]
            else:
                cache = self._event_cache
                if len(cache) > _EVENT_CACHE_MAX:
                    cache.clear()
                for ev in resp.events:
                    hit = cache.get(id(ev))
                    if hit is None or hit[0] is not ev:
                        hit = cache[id(ev)] = (ev, _event_field(ev, None))
                    out.append(hit[1])
        return b"".join(out)


def _prev_of(read, ev):
    """The row before the event (etcd's prev_kv): none for a create, nor when compacted."""
    if ev.is_create:
        return None
    try:
        return read.get(ev.kv.key, ev.kv.mod_revision - 1)
    except MvccError:
        return None


def _event_field(ev, prev) -> bytes:
    """Field 11 of a WatchResponse: one mvccpb.Event (type, kv, prev_kv)."""
    kv = encode_kv(ev.kv)
    body = (b"\x08\x01" if ev.deleted else b"") + b"\x12" + uvarint(len(kv)) + kv
    if prev is not None:
        prev_bytes = encode_kv(prev)
        body += b"\x1a" + uvarint(len(prev_bytes)) + prev_bytes
    return b"\x5a" + uvarint(len(body)) + body


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
