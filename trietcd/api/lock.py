"""The v3lockpb.Lock service (etcd 3.5.1 `etcdserver/api/v3lock/lock.go`), and `Keys`, the key work it
shares with the Election service (etcd's `client/v3/concurrency` mutex, election and session, which
etcd runs on an in-process client).

Rules, as etcd's:
- A request's lease 0 means a new lease of 60 s (the session TTL) is granted for it and never kept
  alive; any other lease is used as given (an unknown one fails where a put names it).
- A lock `name` is held through the key `name/<lease in hex>`; among the keys under `name/` the one
  with the lowest create revision holds it. Lock writes its key (or finds it already there: the same
  lease holds or waits for the lock already) and, unless it is the holder, waits until every key
  under the prefix created before its own is deleted, one at a time, newest first, each by watching
  it for its deletion. Then its key must still exist ("mutex: session is expired" otherwise).
- A waiter whose call ends (the client went away, its deadline passed) or whose wait failed deletes
  its key, shielded from the cancellation; a failure of that delete is not reported. etcd deletes it
  with its in-process client's own context, which carries no credentials: under auth that delete is
  refused and the key stays until its lease ends. So does this one (it deletes as nobody).
- The key work goes through the KV service's handlers with the caller's `call` (so it is checked as
  the caller's own requests would be), and answers the header the KV service filled.
- Errors of that key work reach the client as etcd's in-process client returns them: an etcd error
  loses its gRPC code (UNKNOWN, same text); any other keeps it. The concurrency package's own errors
  are UNKNOWN too.
"""

from __future__ import annotations

from contextlib import aclosing

import trio

from proto.etcdserverpb import rpc_pb2
from proto.v3lockpb import v3lock_pb2
from trietcd.api import errors
from trietcd.api.lease import LeaseService
from trietcd.mvcc.watch import AUTO_WATCH_ID
from trietcd.wire.grpc_call import GrpcError, Status

__all__ = [
    "SESSION_TTL_S",
    "Keys",
    "LockService",
    "client_error",
    "created_is",
    "delete_if_created",
    "lease_key",
    "prefix_end",
    "unknown",
]

SESSION_TTL_S = 60  # concurrency's defaultSessionTTL

_CREATE = rpc_pb2.Compare.CREATE
_EQUAL = rpc_pb2.Compare.EQUAL
_BY_CREATE = rpc_pb2.RangeRequest.CREATE
_ASCEND = rpc_pb2.RangeRequest.ASCEND
_DESCEND = rpc_pb2.RangeRequest.DESCEND


def client_error(exc: GrpcError) -> GrpcError:
    """The error etcd's in-process client hands the lock and election servers for `exc`: an etcd
    error becomes a plain error (gRPC answers it UNKNOWN with its text); others keep their code."""
    if exc.message in errors.BY_MESSAGE and exc.code != Status.UNKNOWN:
        return GrpcError(Status.UNKNOWN, exc.message)
    return exc


def unknown(message: str) -> GrpcError:
    return GrpcError(Status.UNKNOWN, message)


def prefix_end(prefix: bytes) -> bytes:
    """clientv3's GetPrefixRangeEnd: the first key after every key starting with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every byte was 0xff: to the end of the keyspace


def lease_key(prefix: bytes, lease_id: int) -> bytes:
    return prefix + f"{lease_id:x}".encode()


class Keys:
    """The key work of etcd's concurrency package on this member. `server` gives what LeaseService
    takes and `watch_hub`; `kv` is the KVService whose handlers do reads and writes."""

    def __init__(self, server, kv) -> None:
        self._lease = LeaseService(server)
        self._hub = server.watch_hub
        self._kv = kv
        # A cleanup outlives its call's cancellation for at most this long: a proposal that the
        # member, stopping meanwhile, never answers must not hold the call's task forever.
        self._cleanup_timeout_s = server.request_timeout_s

    # ---- sessions

    async def session_lease(self, lease_id: int, call) -> int:
        """concurrency.NewSession(WithLease(lease_id)): lease 0 grants a new one, as the caller (a bad
        auth token fails here, before anything is granted)."""
        if lease_id != 0:
            return lease_id
        try:
            resp = await self._lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=SESSION_TTL_S), call)
        except GrpcError as exc:
            raise client_error(exc) from None
        return resp.ID

    # ---- KV through the KV service

    async def txn(self, request: rpc_pb2.TxnRequest, call) -> rpc_pb2.TxnResponse:
        try:
            return await self._kv.Txn(request, call)
        except GrpcError as exc:
            raise client_error(exc) from None

    async def range(self, request: rpc_pb2.RangeRequest, call) -> rpc_pb2.RangeResponse:
        try:
            return await self._kv.Range(request, call)
        except GrpcError as exc:
            raise client_error(exc) from None

    async def delete(self, key: bytes, call) -> rpc_pb2.DeleteRangeResponse:
        try:
            return await self._kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key), call)
        except GrpcError as exc:
            raise client_error(exc) from None

    async def first_created(self, prefix: bytes, call) -> rpc_pb2.RangeResponse:
        """The key under `prefix` created first (clientv3 WithFirstCreate)."""
        return await self.range(first_created_request(prefix), call)

    async def delete_shielded(self, key: bytes, *, if_created: int | None = None) -> None:
        """Deletes `key` even while the call is being cancelled, as nobody (etcd cleans up with its
        in-process client's own context, not the request's); only if its create revision is
        `if_created` when given. Errors are dropped, as etcd drops them."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self._cleanup_timeout_s):
            try:
                if if_created is None:
                    await self.delete(key, None)
                else:
                    await self.txn(delete_if_created(key, if_created), None)
            except GrpcError:
                pass

    # ---- waiting

    async def wait_deletes(self, prefix: bytes, max_create_rev: int, call) -> rpc_pb2.ResponseHeader:
        """concurrency's waitDeletes: returns once no key under `prefix` has a create revision at or
        below `max_create_rev`, waiting for the newest such key's deletion each turn."""
        request = rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1,
                                       sort_target=_BY_CREATE, sort_order=_DESCEND,
                                       max_create_revision=max_create_rev)
        while True:
            resp = await self.range(request, call)
            if not resp.kvs:
                return resp.header
            # etcd watches from the read's revision; the key exists at that revision, so its deletion
            # comes later, and a watcher from the next revision on is synced at once (etcd's waits for
            # the next pass of the hub's sync loop, up to 100 ms, before it sees anything).
            await self.wait_delete(resp.kvs[0].key, resp.header.revision + 1)

    async def wait_delete(self, key: bytes, revision: int) -> None:
        """concurrency's waitDelete: returns at the first deletion of `key` at `revision` or later.
        Call it with no checkpoint since the read that found the key, so no write comes between."""
        async with aclosing(self.watch(key, b"", revision)) as responses:
            async for resp in responses:
                if any(ev.deleted for ev in resp.events):
                    return

    async def watch(self, key: bytes, range_end: bytes, start_revision: int):
        """The responses of one watcher on the member's watch hub (those with events, in order), until
        the caller stops iterating; iterate it inside `aclosing`, so the watcher goes away at once.
        A compacted start revision fails as clientv3's Err() does."""
        stream = self._hub.new_stream()
        ready = trio.Event()

        def on_ready() -> None:
            ready.set()

        stream.on_ready = on_ready
        try:
            stream.create(key, range_end, start_revision, watch_id=AUTO_WATCH_ID)
            while True:
                resp = stream.take()
                if resp is None:
                    await ready.wait()
                    ready = trio.Event()
                    continue
                if resp.compact_revision:
                    raise unknown("etcdserver: mvcc: required revision has been compacted")
                if resp.canceled:
                    raise unknown(resp.cancel_reason or "lost watcher waiting for delete")
                if resp.events:
                    yield resp
        finally:
            self._hub.close_stream(stream)


def first_created_request(prefix: bytes) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1,
                                sort_target=_BY_CREATE, sort_order=_ASCEND)


def created_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key, target=_CREATE, result=_EQUAL, create_revision=revision)


def delete_if_created(key: bytes, revision: int) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[created_is(key, revision)],
        success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))],
    )


class LockService:
    """`server` gives `leases`, `watch_hub`; `kv` is the member's KVService."""

    def __init__(self, server, kv) -> None:
        self._keys = Keys(server, kv)

    def handlers(self) -> dict:
        return {"Lock": self.Lock, "Unlock": self.Unlock}

    async def Lock(self, request: v3lock_pb2.LockRequest, call) -> v3lock_pb2.LockResponse:
        keys = self._keys
        lease_id = await keys.session_lease(request.lease, call)
        prefix = request.name + b"/"
        my_key = lease_key(prefix, lease_id)
        resp = await keys.txn(_acquire_request(my_key, prefix, lease_id), call)
        my_rev = resp.header.revision
        if not resp.succeeded:
            my_rev = resp.responses[0].response_range.kvs[0].create_revision
        owner = resp.responses[1].response_range.kvs
        if not owner or owner[0].create_revision == my_rev:
            return v3lock_pb2.LockResponse(header=resp.header, key=my_key)
        try:
            await keys.wait_deletes(prefix, my_rev - 1, call)
            mine = await keys.range(rpc_pb2.RangeRequest(key=my_key), call)
        except BaseException:
            # trio.Cancelled included: the call ended while waiting.
            await keys.delete_shielded(my_key)
            raise
        if not mine.kvs:
            raise unknown("mutex: session is expired")
        return v3lock_pb2.LockResponse(header=mine.header, key=my_key)

    async def Unlock(self, request: v3lock_pb2.UnlockRequest, call) -> v3lock_pb2.UnlockResponse:
        resp = await self._keys.delete(request.key, call)
        return v3lock_pb2.UnlockResponse(header=resp.header)


def _acquire_request(my_key: bytes, prefix: bytes, lease_id: int) -> rpc_pb2.TxnRequest:
    """Mutex.tryAcquire's txn: put the key unless it exists, else read it; both read the holder."""
    owner = rpc_pb2.RequestOp(request_range=first_created_request(prefix))
    return rpc_pb2.TxnRequest(
        compare=[created_is(my_key, 0)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=my_key, lease=lease_id)), owner],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=my_key)), owner],
    )
