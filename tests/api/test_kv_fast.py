"""KVService's fast handlers (served in the connection's task, see trietcd.wire.Method.fast) answer exactly
what its ordinary handlers answer, and decline what they must not serve."""

import pytest

from proto.etcdserverpb import rpc_pb2 as pb
from trietcd.api import errors
from trietcd.api.kv import KVService
from trietcd.mvcc import KVStore
from trietcd.mvcc.apply import Applier
from trietcd.wire import DEFERRED
from trietcd.wire.grpc_call import GrpcError


def header(rev):
    return pb.ResponseHeader(cluster_id=11, member_id=22, raft_term=3, revision=rev)


class FakeCall:
    def __init__(self, token=False):
        self.token = token
        self.answers = []

    def has_metadata(self, *names):
        return self.token

    def finish(self, result):
        self.answers.append(result)


class OpenAuth:
    """An AuthKeeper with auth off: a call without a token needs no auth work."""

    def is_open(self, call):
        return not call.token


class Pair:
    """Two services over two stores fed the same requests: `slow` through the handlers, `fast` through
    the fast handlers, its writes proposed through a stand-in for the member that applies at once."""

    def __init__(self):
        self.slow = KVService(KVStore(), header, max_txn_ops=8)
        store = KVStore()
        applier = Applier(store)
        self.ready = True
        self.proposed = []

        def propose_soon(field, request, done):
            self.proposed.append(field)
            try:
                done(getattr(applier, field)(request))
            except Exception as exc:  # what the member's applier hands back
                done(exc)
            return True

        async def barrier():
            pass

        self.fast = KVService(store, header, max_txn_ops=8, propose_soon=propose_soon, read_barrier=barrier,
                              read_ready=lambda: self.ready, auth=OpenAuth())
        self.handlers = self.fast.fast_handlers()

    async def both(self, method: str, request):
        """(slow answer, fast answer); an answer is the response or the GrpcError."""
        try:
            slow = await getattr(self.slow, method)(request, None)
        except GrpcError as exc:
            slow = exc
        call = FakeCall()
        try:
            fast = self.handlers[method](request, call)
        except GrpcError as exc:
            fast = exc
        if fast is DEFERRED:
            (fast,) = call.answers
        if isinstance(fast, bytes):  # the encoded response
            fast = RESPONSES[method].FromString(fast)
        return slow, fast


RESPONSES = {"Range": pb.RangeResponse, "Put": pb.PutResponse, "DeleteRange": pb.DeleteRangeResponse,
             "Txn": pb.TxnResponse}


def same(a, b):
    if isinstance(a, GrpcError):
        return type(a) is type(b) and (a.code, a.message) == (b.code, b.message)
    return a == b


REQUESTS = [
    ("Put", pb.PutRequest(key=b"a", value=b"1")),
    ("Put", pb.PutRequest(key=b"b", value=b"2", prev_kv=True)),
    ("Put", pb.PutRequest(key=b"b", value=b"3", prev_kv=True)),
    ("Put", pb.PutRequest(key=b"", value=b"x")),  # empty key
    ("Put", pb.PutRequest(key=b"c", value=b"x", lease=99)),  # lease not found, at apply
    ("Put", pb.PutRequest(key=b"a", ignore_value=True, value=b"v")),  # value provided
    ("Range", pb.RangeRequest(key=b"a", range_end=b"z")),
    ("Range", pb.RangeRequest(key=b"a", range_end=b"z", limit=1, sort_order=pb.RangeRequest.DESCEND)),
    ("Range", pb.RangeRequest(key=b"b", revision=2, serializable=True)),
    ("Range", pb.RangeRequest(key=b"b", revision=99)),  # future revision
    ("Range", pb.RangeRequest(key=b"")),
    ("Txn", pb.TxnRequest(compare=[pb.Compare(key=b"a", target=pb.Compare.VALUE, value=b"1")],
                          success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"b"))])),  # read-only
    ("Txn", pb.TxnRequest(compare=[pb.Compare(key=b"a", target=pb.Compare.VALUE, value=b"1")],
                          success=[pb.RequestOp(request_put=pb.PutRequest(key=b"t", value=b"1"))],
                          failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"a"))])),
    ("Txn", pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"d", value=b"1")),
                                   pb.RequestOp(request_put=pb.PutRequest(key=b"d", value=b"2"))])),  # duplicate
    ("Txn", pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k%d" % i)) for i in range(9)])),
    ("DeleteRange", pb.DeleteRangeRequest(key=b"a", range_end=b"c", prev_kv=True)),
    ("DeleteRange", pb.DeleteRangeRequest(key=b"")),
    ("Range", pb.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)),
]


async def test_fast_answers_equal_the_handlers_answers():
    pair = Pair()
    for method, request in REQUESTS:
        slow, fast = await pair.both(method, request)
        assert same(slow, fast), (method, request, slow, fast)
        if not isinstance(slow, GrpcError):  # the same bytes, too
            assert fast.SerializeToString() == slow.SerializeToString()
    assert pair.proposed == ["put", "put", "put", "put", "txn", "delete_range"]


async def test_linearizable_reads_wait_for_the_handler_until_the_barrier_is_passed():
    pair = Pair()
    pair.ready = False
    rng = pair.handlers["Range"]
    assert rng(pb.RangeRequest(key=b"a"), FakeCall()) is None
    assert pb.RangeResponse.FromString(rng(pb.RangeRequest(key=b"a", serializable=True), FakeCall())).count == 0
    ro = pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a"))])
    assert pair.handlers["Txn"](ro, FakeCall()) is None
    ro.success[0].request_range.serializable = True
    assert pb.TxnResponse.FromString(pair.handlers["Txn"](ro, FakeCall())).succeeded


async def test_calls_carrying_a_token_go_to_the_handlers():
    pair = Pair()
    call = FakeCall(token=True)
    for method, request in [("Range", pb.RangeRequest(key=b"a", serializable=True)),
                            ("Put", pb.PutRequest(key=b"a")),
                            ("DeleteRange", pb.DeleteRangeRequest(key=b"a")),
                            ("Txn", pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"a"))]))]:
        assert pair.handlers[method](request, call) is None
    assert pair.proposed == [] and call.answers == []


def test_without_a_member_only_reads_are_fast():
    kv = KVService(KVStore(), header)
    assert set(kv.fast_handlers()) == {"Range", "Txn"}
    write = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"a"))])
    assert kv.fast_handlers()["Txn"](write, FakeCall()) is None


def test_a_declined_write_reaches_the_handler():
    declined = []
    kv = KVService(KVStore(), header, propose_soon=lambda f, r, done: declined.append(f) or False)
    assert kv.put_soon(pb.PutRequest(key=b"a"), FakeCall()) is None
    assert declined == ["put"]
    with pytest.raises(errors.ErrGRPCEmptyKey):
        kv.put_soon(pb.PutRequest(key=b""), FakeCall())
