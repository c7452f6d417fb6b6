"""Apply KV requests (etcdserverpb Range/Put/DeleteRange/Txn/Compaction) to a
KVStore, with etcd 3.5.1's semantics (`etcdserver/apply.go` applierV3backend).

Pure: the server's applier calls these for committed entries, and serializable
reads call `range` directly. Responses carry only `header.revision`; the API
layer fills the rest of the header. Errors are `MvccError` subclasses.

Rules worth knowing:

- Range: with a sort order or a min/max revision filter, the store returns all
  matching keys, then they are filtered, sorted and cut to `limit`; otherwise the
  store returns limit+1 keys (for `more`). `count` is the number of keys in range
  before filters and limit. A sort target other than KEY with order NONE sorts
  ascending, but only after the limit+1 cut (etcd decides the cut on the order
  field, the sort on the effective order). Sorting is Go's unstable sort.Sort,
  so ties come out as etcd gives them.
- Put with ignore_value/ignore_lease needs an existing key (KeyNotFoundError);
  the header revision of a put is the put's revision.
- A delete that deletes nothing keeps the header at the current revision.
- Txn: all compares (of nested txns too) are evaluated first against the state
  before the txn; then puts and ranges of the chosen branches are checked; only
  then does anything change, all at one revision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from proto.etcdserverpb import rpc_pb2
from trietcd.mvcc.errors import CompactedError, FutureRevError, KeyNotFoundError, LeaseNotFoundError, MvccError
from trietcd.mvcc.gosort import go_sort, go_sort_reverse
from trietcd.mvcc.store import Compaction, KeyValue, KVStore, ReadTxn, WriteTxn

RangeRequest = rpc_pb2.RangeRequest
Compare = rpc_pb2.Compare

_NONE, _ASCEND, _DESCEND = RangeRequest.NONE, RangeRequest.ASCEND, RangeRequest.DESCEND

_SORT_LESS: dict[int, Callable[[KeyValue, KeyValue], bool]] = {
    RangeRequest.KEY: lambda a, b: a.key < b.key,
    RangeRequest.VERSION: lambda a, b: a.version < b.version,
    RangeRequest.CREATE: lambda a, b: a.create_revision < b.create_revision,
    RangeRequest.MOD: lambda a, b: a.mod_revision < b.mod_revision,
    RangeRequest.VALUE: lambda a, b: a.value < b.value,
}

Txn = ReadTxn | WriteTxn


def is_txn_readonly(rt: rpc_pb2.TxnRequest) -> bool:
    """Only range ops in both branches (a nested txn counts as a write)."""
    return all(op.WhichOneof("request") == "request_range" for op in (*rt.success, *rt.failure))


def is_txn_serializable(rt: rpc_pb2.TxnRequest) -> bool:
    return all(
        op.WhichOneof("request") == "request_range" and op.request_range.serializable
        for op in (*rt.success, *rt.failure)
    )


class Applier:
    """Applies KV requests to one store. `lease_exists(id)` says whether a lease
    is granted (until a lessor is wired in, no lease exists)."""

    def __init__(self, store: KVStore, lease_exists: Callable[[int], bool] | None = None) -> None:
        self.store = store
        self._lease_exists = lease_exists or (lambda lease_id: False)

    # ---- Range

    def range(self, r: rpc_pb2.RangeRequest, txn: Txn | None = None) -> rpc_pb2.RangeResponse:
        if txn is None:
            txn = self.store.read()
        filtered = bool(r.min_mod_revision or r.max_mod_revision or r.min_create_revision or r.max_create_revision)
        if not r.range_end and not r.count_only:
            # One key: limit and sort cannot change one kv; count is before filters.
            return self._range_one(r, txn, filtered)
        limit = r.limit
        if r.sort_order != _NONE or filtered:
            limit = 0  # fetch everything; filter, sort and cut afterwards
        if limit > 0:
            limit += 1  # one more than asked tells whether there is more
        rr = txn.range(r.key, r.range_end, rev=r.revision, limit=limit, count_only=r.count_only)
        kvs = rr.kvs
        if filtered:
            kvs = [kv for kv in kvs if _passes_filters(r, kv)]

        order = r.sort_order
        if r.sort_target != RangeRequest.KEY and order == _NONE:
            order = _ASCEND
        if order != _NONE:
            less = _SORT_LESS.get(r.sort_target)
            if less is not None:
                if order == _ASCEND:
                    go_sort(kvs, less)
                elif order == _DESCEND:
                    go_sort_reverse(kvs, less)

        resp = rpc_pb2.RangeResponse()
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
            resp.more = True
        resp.header.revision = rr.rev
        resp.count = rr.count
        add = resp.kvs.add
        keys_only = r.keys_only
        for kv in kvs:
            add(
                key=kv.key,
                create_revision=kv.create_revision,
                mod_revision=kv.mod_revision,
                version=kv.version,
                value=b"" if keys_only else kv.value,
                lease=kv.lease,
            )
        return resp

    def _range_one(self, r: rpc_pb2.RangeRequest, txn: Txn, filtered: bool) -> rpc_pb2.RangeResponse:
        kv = txn.get(r.key, r.revision)
        resp = rpc_pb2.RangeResponse()
        resp.header.revision = txn.rev
        if kv is not None:
            resp.count = 1
            if not filtered or _passes_filters(r, kv):
                resp.kvs.add(
                    key=kv.key,
                    create_revision=kv.create_revision,
                    mod_revision=kv.mod_revision,
                    version=kv.version,
                    value=b"" if r.keys_only else kv.value,
                    lease=kv.lease,
                )
        return resp

    # ---- Put

    def put(self, p: rpc_pb2.PutRequest, txn: WriteTxn | None = None) -> rpc_pb2.PutResponse:
        if txn is None:
            if p.lease and not self._lease_exists(p.lease):
                raise LeaseNotFoundError
            with self.store.write() as own:
                return self._put(p, own)
        return self._put(p, txn)

    def _put(self, p: rpc_pb2.PutRequest, txn: WriteTxn) -> rpc_pb2.PutResponse:
        value, lease = p.value, p.lease
        prev = None
        if p.ignore_value or p.ignore_lease or p.prev_kv:
            prev = txn.get(p.key)
        if p.ignore_value or p.ignore_lease:
            if prev is None:
                raise KeyNotFoundError
            if p.ignore_value:
                value = prev.value
            if p.ignore_lease:
                lease = prev.lease
        resp = rpc_pb2.PutResponse()
        if p.prev_kv and prev is not None:
            _set_kv(resp.prev_kv, prev)
        resp.header.revision = txn.put(p.key, value, lease)
        return resp

    # ---- DeleteRange

    def delete_range(self, dr: rpc_pb2.DeleteRangeRequest, txn: WriteTxn | None = None) -> rpc_pb2.DeleteRangeResponse:
        if txn is None:
            with self.store.write() as own:
                return self._delete_range(dr, own)
        return self._delete_range(dr, txn)

    def _delete_range(self, dr: rpc_pb2.DeleteRangeRequest, txn: WriteTxn) -> rpc_pb2.DeleteRangeResponse:
        resp = rpc_pb2.DeleteRangeResponse()
        if dr.prev_kv:
            for kv in txn.range(dr.key, dr.range_end).kvs:
                _set_kv(resp.prev_kvs.add(), kv)
        resp.deleted, resp.header.revision = txn.delete_range(dr.key, dr.range_end)
        return resp

    # ---- Txn

    def txn(self, rt: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        is_write = not is_txn_readonly(rt)
        view = self.store.read()
        path = compare_to_path(view, rt)
        if is_write:
            self._check_requests(view, rt, iter(path), self._check_put)
        self._check_requests(view, rt, iter(path), self._check_range)
        if not is_write:
            resp = self._apply_txn(view, rt, iter(path))
            resp.header.revision = view.rev
            return resp
        txn = self.store.write()
        try:
            resp = self._apply_txn(txn, rt, iter(path))
        except MvccError:
            # The checks above look at the state before the txn, so an op can
            # still fail on what an earlier op of the same txn did (a put with
            # ignore_value of a key a from-key delete removed). etcd 3.5.1 panics
            # there; answer the error and keep the txn all-or-nothing instead.
            txn.abort()
            raise
        resp.header.revision = txn.rev
        txn.end()
        return resp

    def _apply_txn(self, txn: Txn, rt: rpc_pb2.TxnRequest, path: Iterator[bool]) -> rpc_pb2.TxnResponse:
        succeeded = next(path)
        resp = rpc_pb2.TxnResponse(succeeded=succeeded)
        resp.header.SetInParent()  # etcd always sends a header, empty in nested txns
        for op in rt.success if succeeded else rt.failure:
            out = resp.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                out.response_range.CopyFrom(self.range(op.request_range, txn))
            elif kind == "request_put":
                assert isinstance(txn, WriteTxn)
                out.response_put.CopyFrom(self._put(op.request_put, txn))
            elif kind == "request_delete_range":
                assert isinstance(txn, WriteTxn)
                out.response_delete_range.CopyFrom(self._delete_range(op.request_delete_range, txn))
            elif kind == "request_txn":
                # A nested txn's response header stays empty, as in etcd.
                out.response_txn.CopyFrom(self._apply_txn(txn, op.request_txn, path))
            # An empty op gives an empty ResponseOp (the API layer rejects those first).
        return resp

    def _check_requests(
        self, view: ReadTxn, rt: rpc_pb2.TxnRequest, path: Iterator[bool], check: Callable[[ReadTxn, object], None]
    ) -> None:
        succeeded = next(path)
        for op in rt.success if succeeded else rt.failure:
            if op.WhichOneof("request") == "request_txn":
                self._check_requests(view, op.request_txn, path, check)
            else:
                check(view, op)

    def _check_put(self, view: ReadTxn, op: rpc_pb2.RequestOp) -> None:
        if op.WhichOneof("request") != "request_put":
            return
        p = op.request_put
        if (p.ignore_value or p.ignore_lease) and view.get(p.key) is None:
            raise KeyNotFoundError
        if p.lease and not self._lease_exists(p.lease):
            raise LeaseNotFoundError

    def _check_range(self, view: ReadTxn, op: rpc_pb2.RequestOp) -> None:
        if op.WhichOneof("request") != "request_range":
            return
        rev = op.request_range.revision
        if rev == 0:
            return
        if rev > view.rev:
            raise FutureRevError
        if rev < view.first_rev:
            raise CompactedError

    # ---- Compaction

    def compaction(self, r: rpc_pb2.CompactionRequest) -> tuple[rpc_pb2.CompactionResponse, Compaction]:
        """Compacts the store's index now and returns the compaction whose steps
        delete the rows (already done on an in-memory store); a `physical`
        request answers once it is done."""
        compaction = self.store.compact(r.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = self.store.current_revision
        return resp, compaction


def _passes_filters(r: rpc_pb2.RangeRequest, kv: KeyValue) -> bool:
    if r.max_mod_revision and kv.mod_revision > r.max_mod_revision:
        return False
    if r.min_mod_revision and kv.mod_revision < r.min_mod_revision:
        return False
    if r.max_create_revision and kv.create_revision > r.max_create_revision:
        return False
    if r.min_create_revision and kv.create_revision < r.min_create_revision:
        return False
    return True


def _set_kv(out, kv: KeyValue) -> None:
    out.key = kv.key
    out.create_revision = kv.create_revision
    out.mod_revision = kv.mod_revision
    out.version = kv.version
    out.value = kv.value
    out.lease = kv.lease


def compare_to_path(view: Txn, rt: rpc_pb2.TxnRequest) -> list[bool]:
    """Outcome of this txn's compares, then of the nested txns of the chosen
    branch, depth first (etcd's txnPath)."""
    ok = all(apply_compare(view, c) for c in rt.compare)
    path = [ok]
    for op in rt.success if ok else rt.failure:
        if op.WhichOneof("request") == "request_txn":
            path.extend(compare_to_path(view, op.request_txn))
    return path


def apply_compare(view: Txn, c: rpc_pb2.Compare) -> bool:
    try:
        kvs = view.range(c.key, c.range_end).kvs
    except (CompactedError, FutureRevError):
        return False
    if not kvs:
        if c.target == Compare.VALUE:
            # A missing key has no value to compare (an empty value is a value).
            return False
        return compare_kv(c, KeyValue(key=b""))
    return all(compare_kv(c, kv) for kv in kvs)


_TARGET_FIELDS = {
    Compare.VERSION: ("version", "version"),
    Compare.CREATE: ("create_revision", "create_revision"),
    Compare.MOD: ("mod_revision", "mod_revision"),
    Compare.VALUE: ("value", "value"),
    Compare.LEASE: ("lease", "lease"),
}


def compare_kv(c: rpc_pb2.Compare, kv: KeyValue) -> bool:
    fields = _TARGET_FIELDS.get(c.target)
    if fields is None:
        result = 0
    else:
        union_field, kv_field = fields
        # A union value set for another target counts as the zero value.
        if c.WhichOneof("target_union") == union_field:
            want = getattr(c, union_field)
        else:
            want = b"" if c.target == Compare.VALUE else 0
        have = getattr(kv, kv_field)
        result = (have > want) - (have < want)
    if c.result == Compare.EQUAL:
        return result == 0
    if c.result == Compare.NOT_EQUAL:
        return result != 0
    if c.result == Compare.GREATER:
        return result > 0
    if c.result == Compare.LESS:
        return result < 0
    return True
