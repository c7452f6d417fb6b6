"""The etcdserverpb.KV service (etcd 3.5.1 `etcdserver/api/v3rpc/key.go`).

Handlers validate a request as etcd's checkXxxRequest do, hand it to an
`_apply_*` method and fill the response header. The `_apply_*` methods are the
seam between the API and the store: they apply to the store directly (each
call runs to its end without yielding, so it is atomic) or, with a member, take
writes through its raft log and reads after its read barrier.

`fast_handlers()` are the same calls without a task (trietcd.wire.Method.fast):
reads served at once when they need not wait, writes proposed with the member's
`propose_soon` and answered by its callback. Anything else falls back to the
handlers, so both always answer alike (tests/api/test_kv_fast.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from proto.etcdserverpb import rpc_pb2
from trietcd.api import errors
from trietcd.auth import AuthError, AuthOldRevisionError
from trietcd.mvcc import KVStore, MvccError
from trietcd.mvcc.apply import Applier, is_txn_readonly, is_txn_serializable
from trietcd.wire import DEFERRED

MAX_TXN_OPS_DEFAULT = 128  # etcd's --max-txn-ops default

HeaderFn = Callable[[int], rpc_pb2.ResponseHeader]
HeaderFieldFn = Callable[[int], bytes]
ProposeFn = Callable[[str, object], Awaitable[object]]
# propose_soon(field, request, done) -> proposed: a write through raft whose outcome `done(result)` is given.
ProposeSoonFn = Callable[[str, object, Callable[[object], None]], bool]


def header_field_of(header: HeaderFn) -> HeaderFieldFn:
    """A HeaderFieldFn from a HeaderFn: field 1 (the header) of a response,
    encoded, for the response at that revision."""

    def header_field(revision: int) -> bytes:
        return encode_header_field(header(revision))

    return header_field


def encode_header_field(header: rpc_pb2.ResponseHeader) -> bytes:
    body = header.SerializeToString()
    # Tag of field 1, wire type 2; a ResponseHeader is at most 44 bytes, so its
    # length is a one-byte varint.
    assert len(body) < 0x80
    return b"\x0a" + bytes((len(body),)) + body


class KVService:
    """`header(revision)` returns the full ResponseHeader (cluster_id, member_id,
    raft_term and the given revision) for a response at that revision.
    `header_field(revision)`, when given, returns the same header already
    encoded as field 1 of a response (see `encode_header_field`); the member
    caches it, which spares building a header message per response."""

    def __init__(
        self,
        store: KVStore,
        header: HeaderFn,
        *,
        max_txn_ops: int = MAX_TXN_OPS_DEFAULT,
        lease_exists: Callable[[int], bool] | None = None,
        propose: ProposeFn | None = None,
        read_barrier: Callable[[], Awaitable[None]] | None = None,
        header_field: HeaderFieldFn | None = None,
        auth=None,
        propose_soon: ProposeSoonFn | None = None,
        read_ready: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        # The member's AuthKeeper (trietcd/auth/keeper.py): who calls, and what they may read. Writes are
        # proposed with the caller and checked when they apply. Without it nothing is checked.
        self._auth = auth
        self._applier = Applier(store, lease_exists)
        # propose(InternalRaftRequest field, request) takes a write through
        # the member's raft log and returns what applying it gave. Without a
        # member, writes apply to the store at once.
        self._propose = propose or self._apply_now
        # Awaited before a linearizable read: returns once everything
        # committed before it is applied.
        self._read_barrier = read_barrier or _no_barrier
        # Whether the barrier would pass at once (the fast handlers serve only then).
        self._read_ready = read_ready or (_always if read_barrier is None else _never)
        self._propose_soon = propose_soon
        self._header = header
        self._header_field = header_field or header_field_of(header)
        self._max_txn_ops = max_txn_ops

    def handlers(self) -> dict[str, Callable]:
        """For Registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], ...)."""
        return {
            "Range": self.Range,
            "Put": self.Put,
            "DeleteRange": self.DeleteRange,
            "Txn": self.Txn,
            "Compact": self.Compact,
        }

    def fast_handlers(self) -> dict[str, Callable]:
        """For Registry.add_service(..., fast=...): reads served and writes proposed in the connection's
        task, without a call task (trietcd.wire.Method.fast). Each leaves the call to its handler when it
        would have to wait (a read barrier not yet passed) or check a caller (auth)."""
        fast = {"Range": self.range_now, "Txn": self.txn_soon}
        if self._propose_soon is not None:
            fast.update(Put=self.put_soon, DeleteRange=self.delete_range_soon)
        return fast

    def range_now(self, request: rpc_pb2.RangeRequest, call):
        check_range_request(request)
        if not self._may_serve(call, request.serializable):
            return None
        try:
            return self._encoded(self._applier.range(request))
        except MvccError as exc:
            raise errors.to_grpc_error(exc) from None

    def put_soon(self, request: rpc_pb2.PutRequest, call):
        check_put_request(request)
        return self._write_soon("put", request, call)

    def delete_range_soon(self, request: rpc_pb2.DeleteRangeRequest, call):
        check_delete_request(request)
        return self._write_soon("delete_range", request, call)

    def txn_soon(self, request: rpc_pb2.TxnRequest, call):
        check_txn_request(request, self._max_txn_ops)
        check_intervals(request.success)
        check_intervals(request.failure)
        if not is_txn_readonly(request):
            return self._write_soon("txn", request, call) if self._propose_soon is not None else None
        if not self._may_serve(call, is_txn_serializable(request)):
            return None
        try:
            return self._encoded(self._applier.txn(request))
        except MvccError as exc:
            raise errors.to_grpc_error(exc) from None

    def _may_serve(self, call, serializable: bool) -> bool:
        return (serializable or self._read_ready()) and (self._auth is None or self._auth.is_open(call))

    def _write_soon(self, field: str, request, call):
        if self._auth is not None and not self._auth.is_open(call):
            return None
        encoded = self._encoded

        def done(result) -> None:
            call.finish(errors.to_grpc_error(result) if isinstance(result, BaseException) else encoded(result))

        return DEFERRED if self._propose_soon(field, request, done) else None

    # ---- handlers

    # Range and Put, the busiest, inline _run: one coroutine less per call.

    async def Range(self, request: rpc_pb2.RangeRequest, call: object) -> rpc_pb2.RangeResponse:
        check_range_request(request)
        try:
            resp = await self._apply_range(request, call)
        except MvccError as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    async def Put(self, request: rpc_pb2.PutRequest, call: object) -> rpc_pb2.PutResponse:
        check_put_request(request)
        try:
            resp = await self._apply_put(request, call)
        except (MvccError, AuthError) as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, call: object) -> rpc_pb2.DeleteRangeResponse:
        check_delete_request(request)
        return self._filled(await self._run(self._apply_delete_range, request, call))

    async def Txn(self, request: rpc_pb2.TxnRequest, call: object) -> rpc_pb2.TxnResponse:
        check_txn_request(request, self._max_txn_ops)
        # Overlap checks come after the op count check, so a huge txn is refused
        # before the quadratic-looking work.
        check_intervals(request.success)
        check_intervals(request.failure)
        return self._filled(await self._run(self._apply_txn, request, call))

    async def Compact(self, request: rpc_pb2.CompactionRequest, call: object) -> rpc_pb2.CompactionResponse:
        return self._filled(await self._run(self._apply_compaction, request, call))

    # ---- the seam to the member: writes through raft, reads after a barrier

    async def _apply_range(self, request: rpc_pb2.RangeRequest, call=None) -> rpc_pb2.RangeResponse:
        if not request.serializable:
            await self._read_barrier()
        if self._auth is None or self._auth.is_open(call):
            return self._applier.range(request)
        return await self._serialized(call, lambda store, info: store.check_range(info, request.key, request.range_end),
                                      self._applier.range, request)

    async def _apply_put(self, request: rpc_pb2.PutRequest, call=None) -> rpc_pb2.PutResponse:
        return await self._write("put", request, call)

    async def _apply_delete_range(self, request: rpc_pb2.DeleteRangeRequest, call=None) -> rpc_pb2.DeleteRangeResponse:
        return await self._write("delete_range", request, call)

    async def _apply_txn(self, request: rpc_pb2.TxnRequest, call=None) -> rpc_pb2.TxnResponse:
        # A read-only txn is served like a range, without a raft entry.
        if is_txn_readonly(request):
            if not is_txn_serializable(request):
                await self._read_barrier()
            if self._auth is None or self._auth.is_open(call):
                return self._applier.txn(request)
            return await self._serialized(call, lambda store, info: store.check_txn(info, request),
                                          self._applier.txn, request)
        return await self._write("txn", request, call)

    async def _apply_compaction(self, request: rpc_pb2.CompactionRequest, call=None) -> rpc_pb2.CompactionResponse:
        return await self._write("compaction", request, call)

    async def _write(self, field: str, request, call):
        if self._auth is None or self._auth.is_open(call):
            return await self._propose(field, request)
        return await self._propose(field, request, auth=await self._auth_info(call))

    async def _serialized(self, call, check, read, request):
        """etcd's doSerialize: a read served here, checked for the caller at the store's auth revision; an
        auth change between the check and the read fails it."""
        info = await self._auth_info(call)
        store = self._auth.store
        try:
            check(store, info)
            resp = read(request)
            if info is not None and info.revision != 0 and info.revision != store.revision:
                raise AuthOldRevisionError()
        except AuthError as exc:
            raise errors.to_grpc_error(exc) from None
        return resp

    async def _auth_info(self, call):
        try:
            return await self._auth.auth_info(call)
        except AuthError as exc:
            raise errors.to_grpc_error(exc) from None

    async def _apply_now(self, field: str, request, auth=None):
        """Applies a write to the store directly (no member: tests, tools)."""
        if field == "compaction":
            resp, compaction = self._applier.compaction(request)
            while not compaction.step(1000):
                pass
            return resp
        return getattr(self._applier, field)(request)

    # ---- helpers

    async def _run(self, apply, request, call=None):
        try:
            return await apply(request, call)
        except (MvccError, AuthError) as exc:
            raise errors.to_grpc_error(exc) from None

    def _encoded(self, resp) -> bytes:
        """`_filled(resp)`, encoded: the cached header field, then the rest of the response (every field
        after the header, field 1, so the bytes are protobuf's own order) — no header is merged or
        re-encoded per response."""
        rev = resp.header.revision or self._store.current_revision
        resp.ClearField("header")
        return self._header_field(rev) + resp.SerializeToString()

    def _filled(self, resp):
        # etcd's header.fill: the response's own revision, else the current one.
        # Merging the encoded header sets every header field; the revision
        # already set (if any) is the one merged in.
        rev = resp.header.revision or self._store.current_revision
        resp.MergeFromString(self._header_field(rev))
        return resp


async def _no_barrier() -> None:
    pass


def _always() -> bool:
    return True


def _never() -> bool:
    return False


# ---- request validation (etcd's checkXxxRequest), before anything is applied


def check_range_request(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.ErrGRPCEmptyKey()


def check_put_request(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise errors.ErrGRPCEmptyKey()
    if r.ignore_value and r.value:
        raise errors.ErrGRPCValueProvided()
    if r.ignore_lease and r.lease != 0:
        raise errors.ErrGRPCLeaseProvided()


def check_delete_request(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.ErrGRPCEmptyKey()


def check_txn_request(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    # Each of compares, success and failure may hold max_txn_ops entries; a
    # nested txn gets what its parent leaves.
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise errors.ErrGRPCTooManyOps()
    for c in r.compare:
        if not c.key:
            raise errors.ErrGRPCEmptyKey()
    for op in (*r.success, *r.failure):
        _check_request_op(op, max_txn_ops - opc)


def _check_request_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range_request(op.request_range)
    elif kind == "request_put":
        check_put_request(op.request_put)
    elif kind == "request_delete_range":
        check_delete_request(op.request_delete_range)
    elif kind == "request_txn":
        check_txn_request(op.request_txn, max_txn_ops)
    else:
        raise errors.ErrGRPCKeyNotFound()  # an empty op, as etcd answers it


class _Deletes:
    """Delete ranges of a txn level as [begin, end) intervals; end b"" is
    unbounded and a single-key delete is [k, k+"\\0"). A range_end of "\\0" is
    taken literally here (etcd's check does so too), so a from-key delete never
    overlaps a put."""

    def __init__(self) -> None:
        self.intervals: list[tuple[bytes, bytes]] = []

    def add(self, begin: bytes, end: bytes) -> None:
        self.intervals.append((begin, end))

    def extend(self, other: _Deletes) -> None:
        self.intervals.extend(other.intervals)

    def covers(self, key: bytes) -> bool:
        for begin, end in self.intervals:
            if begin <= key and (not end or key < end):
                return True
        return False


def check_intervals(ops: Iterable[rpc_pb2.RequestOp]) -> tuple[set[bytes], _Deletes]:
    """etcd's checkIntervals: in one txn, no key may be put twice or be both put
    and deleted; the success and failure branches of a nested txn may put the
    same key, since only one of them runs. Returns (puts, deletes) of this level."""
    ops = list(ops)
    dels = _Deletes()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.add(d.key, d.range_end if d.range_end else d.key + b"\x00")

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = check_intervals(op.request_txn.success)
        puts_else, dels_else = check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or dels.covers(k):
                raise errors.ErrGRPCDuplicateKey()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or dels.covers(k):
                raise errors.ErrGRPCDuplicateKey()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)

    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or dels.covers(k):
            raise errors.ErrGRPCDuplicateKey()
        puts.add(k)
    return puts, dels
