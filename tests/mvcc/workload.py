"""A seeded random KV workload (requests of every kind and option), shared by the
model tests and the real-etcd oracle (`etcd_oracle.py`)."""

from __future__ import annotations

import random

from proto.etcdserverpb import rpc_pb2
from trietcd.api.kv import KVService
from trietcd.mvcc import KVStore
from trietcd.wire.grpc_call import GrpcError

KEYS = [bytes([c]) for c in b"abcdefghijklmnop"] + [b"a/1", b"a/2", b"a/3", b"b/x", b"foo", b"foo/bar", b"z\x00", b"\x00"]
VALUES = [b"", b"v1", b"v2", b"v3", b"x", b"zz"]


def prefix_end(key: bytes) -> bytes:
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes([key[i] + 1])
    return b"\x00"


def run_sync(coro):
    """Runs a coroutine that never suspends (the KV handlers over a local store)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("handler suspended")


class Workload:
    def __init__(self, seed: int, *, max_txn_ops: int = 8) -> None:
        self.rng = random.Random(seed)
        self.rev = 1
        self.compact_rev = 0
        self.max_txn_ops = max_txn_ops
        self.store = KVStore()
        self.service = KVService(self.store, lambda rev: rpc_pb2.ResponseHeader(revision=rev), max_txn_ops=max_txn_ops)

    # ---- request generation

    def key(self) -> bytes:
        if self.rng.random() < 0.01:
            return b""  # ErrGRPCEmptyKey
        return self.rng.choice(KEYS)

    def range_end(self, key: bytes) -> bytes:
        pick = self.rng.random()
        if pick < 0.4:
            return b""
        if pick < 0.55:
            return b"\x00"
        if pick < 0.8:
            return prefix_end(key)
        return self.rng.choice(KEYS)  # maybe before key: an empty range

    def revision(self) -> int:
        pick = self.rng.random()
        if pick < 0.6:
            return 0
        if pick < 0.9:
            return self.rng.randint(max(self.compact_rev, 1), self.rev)
        return self.rng.randint(-1, self.rev + 2)

    def range_request(self) -> rpc_pb2.RangeRequest:
        rng = self.rng
        key = self.key()
        r = rpc_pb2.RangeRequest(key=key, range_end=self.range_end(key), revision=self.revision())
        if rng.random() < 0.4:
            r.limit = rng.choice([-1, 1, 2, 3, 5, 13])
        if rng.random() < 0.5:
            r.sort_order = rng.randint(0, 2)
            r.sort_target = rng.randint(0, 4)
        r.serializable = rng.random() < 0.3
        r.keys_only = rng.random() < 0.2
        r.count_only = rng.random() < 0.1
        for field in ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"):
            if rng.random() < 0.1:
                setattr(r, field, rng.randint(0, self.rev + 1))
        return r

    def put_request(self) -> rpc_pb2.PutRequest:
        rng = self.rng
        p = rpc_pb2.PutRequest(key=self.key(), value=rng.choice(VALUES), prev_kv=rng.random() < 0.4)
        if rng.random() < 0.03:
            p.lease = rng.randint(1, 1000)  # no lease exists: lease not found
        if rng.random() < 0.1:
            p.ignore_value = True
            if rng.random() < 0.8:
                p.value = b""
        if rng.random() < 0.1:
            p.ignore_lease = True
        return p

    def delete_request(self) -> rpc_pb2.DeleteRangeRequest:
        key = self.key()
        return rpc_pb2.DeleteRangeRequest(key=key, range_end=self.range_end(key), prev_kv=self.rng.random() < 0.5)

    def compare(self) -> rpc_pb2.Compare:
        rng = self.rng
        key = self.key()
        c = rpc_pb2.Compare(key=key, result=rng.randint(0, 3), target=rng.randint(0, 4))
        if rng.random() < 0.2:
            c.range_end = self.range_end(key)
        union = ["version", "create_revision", "mod_revision", "value", "lease"][
            c.target if rng.random() < 0.9 else rng.randint(0, 4)
        ]
        if union == "value":
            c.value = rng.choice(VALUES)
        elif union == "lease":
            c.lease = 0
        else:
            setattr(c, union, rng.randint(0, self.rev + 1))
        return c

    def request_op(self, depth: int) -> rpc_pb2.RequestOp:
        rng = self.rng
        pick = rng.random()
        if pick < 0.02:
            return rpc_pb2.RequestOp()  # empty op
        if pick < 0.3:
            return rpc_pb2.RequestOp(request_range=self.range_request())
        if pick < 0.65:
            return rpc_pb2.RequestOp(request_put=self.put_request())
        if pick < 0.85 or depth >= 2:
            return rpc_pb2.RequestOp(request_delete_range=self.delete_request())
        return rpc_pb2.RequestOp(request_txn=self.txn_request(depth + 1))

    def txn_request(self, depth: int = 0) -> rpc_pb2.TxnRequest:
        rng = self.rng
        most = 3 if rng.random() < 0.95 else self.max_txn_ops + 1
        txn = rpc_pb2.TxnRequest(
            compare=[self.compare() for _ in range(rng.randint(0, 3))],
            success=[self.request_op(depth) for _ in range(rng.randint(0, most))],
            failure=[self.request_op(depth) for _ in range(rng.randint(0, most))],
        )
        if depth == 0:
            avoid_etcd_panic(txn)
        return txn

    def next_request(self):
        pick = self.rng.random()
        if pick < 0.3:
            return self.range_request()
        if pick < 0.65:
            return self.put_request()
        if pick < 0.78:
            return self.delete_request()
        if pick < 0.97:
            return self.txn_request()
        if self.rng.random() < 0.8:
            rev = self.rng.randint(self.compact_rev, self.compact_rev + (self.rev - self.compact_rev) // 4 + 1)
        else:
            rev = self.rng.randint(self.compact_rev - 1, self.rev + 1)
        return rpc_pb2.CompactionRequest(revision=rev, physical=self.rng.random() < 0.5)

    def observe(self, request, result) -> None:
        if isinstance(result, tuple):
            return
        self.rev = result.header.revision
        if isinstance(request, rpc_pb2.CompactionRequest):
            self.compact_rev = request.revision


def _ops(txn: rpc_pb2.TxnRequest):
    for op in (*txn.success, *txn.failure):
        yield op
        if op.WhichOneof("request") == "request_txn":
            yield from _ops(op.request_txn)


def avoid_etcd_panic(txn: rpc_pb2.TxnRequest) -> None:
    """etcd 3.5.1 panics on a txn whose from-key delete removes a key that a
    later put with ignore_value/ignore_lease needs (its duplicate check takes
    range_end "\\0" literally). trietcd answers "key not found" there instead;
    keep such txns away from the real etcd."""
    ops = list(_ops(txn))
    if not any(op.request_put.ignore_value or op.request_put.ignore_lease for op in ops):
        return
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range" and op.request_delete_range.range_end == b"\x00":
            op.request_delete_range.range_end = prefix_end(op.request_delete_range.key)


_HANDLERS = {
    rpc_pb2.RangeRequest: "Range",
    rpc_pb2.PutRequest: "Put",
    rpc_pb2.DeleteRangeRequest: "DeleteRange",
    rpc_pb2.TxnRequest: "Txn",
    rpc_pb2.CompactionRequest: "Compact",
}


def apply_locally(work: Workload, request):
    """The response of trietcd's KV service, or (grpc code, message) on error."""
    handler = getattr(work.service, _HANDLERS[type(request)])
    try:
        return run_sync(handler(request, None))
    except GrpcError as exc:
        return (int(exc.code), exc.message)


def result_bytes(result) -> bytes:
    """A canonical encoding of a response or (code, message) error, for digests."""
    if isinstance(result, tuple):
        return f"error {result[0]} {result[1]}".encode()
    return type(result).__name__.encode() + b" " + result.SerializeToString(deterministic=True)
