"""KVService: validation, errors, headers and etcd's Range/Txn semantics.

Expected values marked "etcd 3.5.1" were read from a real etcd 3.5.1 over gRPC
(same requests, see tests/mvcc/etcd_oracle.py for the harness)."""

import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from proto.mvccpb import kv_pb2
from trietcd.api import errors
from trietcd.api.kv import KVService, encode_header_field
from trietcd.mvcc import KVStore
from trietcd.wire.grpc_call import GrpcError, Registry, Status


def header(rev):
    return pb.ResponseHeader(cluster_id=11, member_id=22, raft_term=3, revision=rev)


@pytest.fixture
def kv():
    return KVService(KVStore(), header, max_txn_ops=4)


async def put(kv, key, value=b"", **kw):
    return await kv.Put(pb.PutRequest(key=key, value=value, **kw), None)


async def get(kv, key, range_end=b"", **kw):
    return await kv.Range(pb.RangeRequest(key=key, range_end=range_end, **kw), None)


def op_put(key, value=b"", **kw):
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def op_del(key, range_end=b"", **kw):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end, **kw))


def op_get(key, range_end=b"", **kw):
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=range_end, **kw))


async def expect_error(coro, error_cls):
    with pytest.raises(GrpcError) as info:
        await coro
    assert isinstance(info.value, error_cls)
    assert (info.value.code, info.value.message) == (error_cls.CODE, error_cls.MESSAGE)
    return info.value


def test_handlers_register_with_the_wire_registry(kv):
    registry = Registry()
    registry.add_service(pb.DESCRIPTOR.services_by_name["KV"], kv.handlers())
    method = registry.lookup("/etcdserverpb.KV/Range")
    assert method.handler == kv.Range
    assert method.request_type.DESCRIPTOR.full_name == "etcdserverpb.RangeRequest"
    assert set(kv.handlers()) == {"Range", "Put", "DeleteRange", "Txn", "Compact"}


async def test_header_is_filled_by_the_injected_callable(kv):
    resp = await get(kv, b"nothing")
    assert resp.header == header(1)  # a fresh etcd answers revision 1
    resp = await put(kv, b"a", b"1")
    assert resp.header == header(2)
    # A delete of nothing answers the current revision.
    resp = await kv.DeleteRange(pb.DeleteRangeRequest(key=b"zz"), None)
    assert resp.header == header(2) and resp.deleted == 0


async def test_an_encoded_header_callable_fills_every_response_kind():
    asked = []

    def header_field(rev):
        asked.append(rev)
        return encode_header_field(header(rev))

    kv = KVService(KVStore(), lambda rev: pb.ResponseHeader(), header_field=header_field)
    assert (await put(kv, b"a", b"1")).header == header(2)
    assert (await get(kv, b"a")).header == header(2)
    resp = await kv.DeleteRange(pb.DeleteRangeRequest(key=b"zz"), None)
    assert resp.header == header(2)
    resp = await kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"b"))]), None)
    assert resp.header == header(3)
    assert asked == [2, 2, 2, 3]


async def test_put_prev_kv_and_versions(kv):
    await put(kv, b"k", b"v1")
    resp = await put(kv, b"k", b"v2", prev_kv=True)
    assert resp.prev_kv == kv_pb2.KeyValue(key=b"k", value=b"v1", create_revision=2, mod_revision=2, version=1)
    assert resp.header.revision == 3
    resp = await put(kv, b"new", b"x", prev_kv=True)
    assert not resp.HasField("prev_kv")


async def test_put_ignore_value_and_lease(kv):
    kv2 = KVService(KVStore(), header, lease_exists=lambda lease: lease == 7)
    await put(kv2, b"k", b"v", lease=7)
    resp = await put(kv2, b"k", ignore_value=True, prev_kv=True)
    got = (await get(kv2, b"k")).kvs[0]
    assert (got.value, got.lease, got.version) == (b"v", 0, 2)  # value kept, lease replaced by 0
    await put(kv2, b"k", b"w", lease=7)
    await put(kv2, b"k", b"z", ignore_lease=True)
    got = (await get(kv2, b"k")).kvs[0]
    assert (got.value, got.lease) == (b"z", 7)
    assert resp.prev_kv.lease == 7


async def test_put_validation_errors(kv):
    await expect_error(put(kv, b""), errors.ErrGRPCEmptyKey)
    await expect_error(put(kv, b"k", b"v", ignore_value=True), errors.ErrGRPCValueProvided)
    await expect_error(put(kv, b"k", lease=5, ignore_lease=True), errors.ErrGRPCLeaseProvided)
    # ignore_* on a missing key: etcd 3.5.1 "etcdserver: key not found", InvalidArgument.
    err = await expect_error(put(kv, b"missing", ignore_value=True), errors.ErrGRPCKeyNotFound)
    assert err.code == Status.INVALID_ARGUMENT
    await expect_error(put(kv, b"missing", ignore_lease=True), errors.ErrGRPCKeyNotFound)
    # No lessor wired in: every lease is unknown (etcd: NotFound "etcdserver: requested lease not found").
    err = await expect_error(put(kv, b"k", lease=5), errors.ErrGRPCLeaseNotFound)
    assert err.code == Status.NOT_FOUND
    assert (await get(kv, b"\x00", b"\x00")).count == 0  # nothing was written
    await expect_error(get(kv, b""), errors.ErrGRPCEmptyKey)
    await expect_error(kv.DeleteRange(pb.DeleteRangeRequest(), None), errors.ErrGRPCEmptyKey)


async def test_range_revision_errors(kv):
    await put(kv, b"a", b"1")
    await put(kv, b"a", b"2")
    err = await expect_error(get(kv, b"a", revision=4), errors.ErrGRPCFutureRev)
    assert (err.code, err.message) == (Status.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    await kv.Compact(pb.CompactionRequest(revision=3), None)
    err = await expect_error(get(kv, b"a", revision=2), errors.ErrGRPCCompacted)
    assert (err.code, err.message) == (Status.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    assert (await get(kv, b"a", revision=3)).kvs[0].value == b"2"


async def test_range_options(kv):
    for k in (b"a", b"b", b"c", b"d"):
        await put(kv, k, k * 2)
    resp = await get(kv, b"a", b"\x00", limit=2)
    assert [x.key for x in resp.kvs] == [b"a", b"b"] and resp.more and resp.count == 4
    resp = await get(kv, b"a", b"\x00", limit=4)
    assert not resp.more
    resp = await get(kv, b"a", b"c", keys_only=True)
    assert [(x.key, x.value) for x in resp.kvs] == [(b"a", b""), (b"b", b"")]
    resp = await get(kv, b"a", b"\x00", count_only=True)
    assert (len(resp.kvs), resp.count) == (0, 4)
    # Filters prune after the count: count stays the number of keys in range.
    resp = await get(kv, b"a", b"\x00", min_mod_revision=3, max_mod_revision=4)
    assert [x.key for x in resp.kvs] == [b"b", b"c"] and resp.count == 4
    resp = await get(kv, b"a", b"\x00", min_create_revision=4, limit=1)
    assert [x.key for x in resp.kvs] == [b"c"] and resp.more


async def _sort_fixture(kv):
    # Key k<i> gets (i*7 % 4)+1 puts of value "abc"[i % 3] (etcd 3.5.1 run of the same).
    for i in range(30):
        for _ in range((i * 7) % 4 + 1):
            await put(kv, b"k%02d" % i, b"abc"[i % 3 : i % 3 + 1])


@pytest.mark.parametrize(
    "order, target, want",
    [
        # etcd 3.5.1: Go's unstable sort decides the order of ties.
        (1, 1, [0, 28, 12, 20, 4, 24, 8, 16, 23, 3, 19, 11, 27, 7, 15, 22, 2, 26, 18, 10, 6, 14, 21, 9, 5, 25, 17, 13, 1, 29]),
        (2, 1, [29, 1, 21, 9, 17, 5, 13, 25, 26, 18, 2, 14, 6, 10, 22, 7, 23, 27, 3, 19, 11, 15, 20, 16, 24, 12, 8, 4, 28, 0]),
        (1, 4, [9, 27, 24, 3, 21, 18, 6, 15, 12, 0, 10, 28, 1, 13, 25, 7, 16, 22, 4, 19, 20, 5, 17, 23, 2, 14, 26, 8, 11, 29]),
        (2, 4, [20, 17, 2, 29, 14, 5, 26, 23, 8, 11, 10, 25, 7, 13, 4, 28, 16, 1, 22, 19, 15, 21, 18, 12, 24, 9, 6, 27, 3, 0]),
        # Target VERSION with order NONE sorts ascending (etcd 3.5.1).
        (0, 1, [0, 28, 12, 20, 4, 24, 8, 16, 23, 3, 19, 11, 27, 7, 15, 22, 2, 26, 18, 10, 6, 14, 21, 9, 5, 25, 17, 13, 1, 29]),
        (2, 0, list(range(29, -1, -1))),
    ],
)
async def test_range_sort_matches_etcd(kv, order, target, want):
    await _sort_fixture(kv)
    resp = await get(kv, b"k", b"l", sort_order=order, sort_target=target)
    assert [int(x.key[1:]) for x in resp.kvs] == want


async def test_range_limit_with_implicit_sort_cuts_before_sorting(kv):
    # Order NONE + target VERSION: etcd fetches limit+1 keys in key order, sorts
    # those by version and cuts to limit (etcd 3.5.1: [0, 4, 3, 2, 1], more, count 30).
    await _sort_fixture(kv)
    resp = await get(kv, b"k", b"l", sort_target=pb.RangeRequest.VERSION, limit=5)
    assert [int(x.key[1:]) for x in resp.kvs] == [0, 4, 3, 2, 1]
    assert resp.more and resp.count == 30
    # With an explicit order the whole range is sorted first.
    resp = await get(kv, b"k", b"l", sort_order=1, sort_target=pb.RangeRequest.VERSION, limit=5)
    assert [int(x.key[1:]) for x in resp.kvs] == [0, 28, 12, 20, 4]


async def test_delete_range_prev_kv_and_prefix(kv):
    for k in (b"a/1", b"a/2", b"b"):
        await put(kv, k, b"v")
    resp = await kv.DeleteRange(pb.DeleteRangeRequest(key=b"a/", range_end=b"a0", prev_kv=True), None)
    assert resp.deleted == 2 and [x.key for x in resp.prev_kvs] == [b"a/1", b"a/2"]
    assert resp.header.revision == 5


async def test_txn_compare_and_branches(kv):
    await put(kv, b"k", b"v")
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"k", target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"v")],
        success=[op_put(b"k", b"v2", prev_kv=True), op_get(b"k")],
        failure=[op_put(b"never")],
    )
    resp = await kv.Txn(txn, None)
    assert resp.succeeded and resp.header == header(3)
    assert resp.responses[0].response_put.header.revision == 3
    assert resp.responses[0].response_put.prev_kv.value == b"v"
    # The range sees the txn's own put; its header carries only the revision.
    rng = resp.responses[1].response_range
    assert rng.kvs[0].value == b"v2" and rng.header == pb.ResponseHeader(revision=3)
    resp = await kv.Txn(txn, None)
    assert not resp.succeeded and resp.header.revision == 4
    assert (await get(kv, b"never")).count == 1


async def test_txn_compare_targets(kv):
    await put(kv, b"k", b"v")  # create 2, mod 2, version 1
    cases = [
        (pb.Compare(key=b"k", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=1), True),
        (pb.Compare(key=b"k", target=pb.Compare.CREATE, result=pb.Compare.LESS, create_revision=3), True),
        (pb.Compare(key=b"k", target=pb.Compare.MOD, result=pb.Compare.GREATER, mod_revision=2), False),
        (pb.Compare(key=b"k", target=pb.Compare.LEASE, result=pb.Compare.EQUAL, lease=0), True),
        (pb.Compare(key=b"k", target=pb.Compare.VALUE, result=pb.Compare.NOT_EQUAL, value=b"w"), True),
        # A missing key compares as all zeros, except that a value compare fails.
        (pb.Compare(key=b"nope", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=0), True),
        (pb.Compare(key=b"nope", target=pb.Compare.VALUE, result=pb.Compare.NOT_EQUAL, value=b"x"), False),
        # A union value for another target counts as zero.
        (pb.Compare(key=b"k", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, mod_revision=1), False),
        # Over a range every key must match.
        (pb.Compare(key=b"a", range_end=b"\x00", target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0), True),
    ]
    for compare, want in cases:
        resp = await kv.Txn(pb.TxnRequest(compare=[compare]), None)
        assert resp.succeeded is want, compare
        assert resp.header.revision == 2  # read-only: no new revision


async def test_nested_txn(kv):
    await put(kv, b"k", b"v")
    inner = pb.TxnRequest(
        compare=[pb.Compare(key=b"k", target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"nope")],
        success=[op_put(b"x", b"1")],
        failure=[op_put(b"y", b"1")],
    )
    resp = await kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=inner), op_put(b"z")]), None)
    nested = resp.responses[0].response_txn
    assert resp.succeeded and not nested.succeeded
    # etcd leaves a nested txn's header empty (but present).
    assert nested.HasField("header") and nested.header == pb.ResponseHeader()
    assert nested.responses[0].response_put.header.revision == 3
    assert [x.key for x in (await get(kv, b"\x00", b"\x00")).kvs] == [b"k", b"y", b"z"]


async def test_txn_validation(kv):
    # --max-txn-ops 4 here: each of compare/success/failure may hold 4.
    await expect_error(kv.Txn(pb.TxnRequest(success=[op_put(b"%d" % i) for i in range(5)]), None), errors.ErrGRPCTooManyOps)
    await kv.Txn(pb.TxnRequest(success=[op_put(b"%d" % i) for i in range(4)], failure=[op_put(b"f%d" % i) for i in range(4)]), None)
    await expect_error(kv.Txn(pb.TxnRequest(success=[op_put(b"a"), op_put(b"a")]), None), errors.ErrGRPCDuplicateKey)
    await expect_error(
        kv.Txn(pb.TxnRequest(success=[op_put(b"a/1"), op_del(b"a/", b"a0")]), None), errors.ErrGRPCDuplicateKey
    )
    # A from-key delete ("\0") never counts as overlapping (etcd compares the raw "\0").
    await kv.Txn(pb.TxnRequest(success=[op_put(b"b"), op_del(b"a", b"\x00")]), None)
    # The branches of a nested txn may put the same key: only one of them runs.
    inner = pb.TxnRequest(success=[op_put(b"q")], failure=[op_put(b"q")])
    await kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=inner)]), None)
    await expect_error(
        kv.Txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=inner), op_put(b"q")]), None), errors.ErrGRPCDuplicateKey
    )
    await expect_error(kv.Txn(pb.TxnRequest(success=[pb.RequestOp()]), None), errors.ErrGRPCKeyNotFound)
    await expect_error(kv.Txn(pb.TxnRequest(compare=[pb.Compare()]), None), errors.ErrGRPCEmptyKey)
    await expect_error(kv.Txn(pb.TxnRequest(failure=[op_get(b"")]), None), errors.ErrGRPCEmptyKey)


async def test_txn_checks_before_applying(kv):
    await put(kv, b"a", b"1")
    rev = kv._store.current_revision
    # The second op would fail: nothing of the txn is applied.
    txn = pb.TxnRequest(success=[op_put(b"b"), op_put(b"missing", ignore_value=True)])
    await expect_error(kv.Txn(txn, None), errors.ErrGRPCKeyNotFound)
    await expect_error(kv.Txn(pb.TxnRequest(success=[op_put(b"b"), op_get(b"a", revision=9)]), None), errors.ErrGRPCFutureRev)
    assert kv._store.current_revision == rev and (await get(kv, b"b")).count == 0


async def test_txn_failing_after_a_from_key_delete_is_all_or_nothing(kv):
    # etcd 3.5.1 panics on this txn (the delete removes the key the put needs,
    # and the "\0" range end slips past the overlap check); trietcd refuses it
    # and leaves the store untouched.
    await put(kv, b"d", b"1")
    await put(kv, b"foo", b"1")
    txn = pb.TxnRequest(success=[op_del(b"d", b"\x00"), op_put(b"foo", ignore_value=True)])
    await expect_error(kv.Txn(txn, None), errors.ErrGRPCKeyNotFound)
    assert [x.key for x in (await get(kv, b"\x00", b"\x00")).kvs] == [b"d", b"foo"]
    assert (await put(kv, b"e")).header.revision == 4


async def test_compact(kv):
    for v in (b"1", b"2", b"3"):
        await put(kv, b"k", v)
    resp = await kv.Compact(pb.CompactionRequest(revision=3, physical=True), None)
    assert resp.header == header(4)
    await expect_error(kv.Compact(pb.CompactionRequest(revision=3), None), errors.ErrGRPCCompacted)
    await expect_error(kv.Compact(pb.CompactionRequest(revision=5), None), errors.ErrGRPCFutureRev)
