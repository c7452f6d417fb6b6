"""The benchmark's hand-written protobuf encoding agrees with protobuf's own,
and the tool stays an independent client."""

import ast
import pathlib

from hypothesis import given, strategies as st

from proto.etcdserverpb import rpc_pb2
from trietcd.tools.benchmark import messages

TOOL_DIR = pathlib.Path(messages.__file__).parent


@given(st.binary(max_size=40), st.binary(max_size=300), st.integers(0, 2**63 - 1))
def test_put_request(key, value, lease):
    assert messages.put_request(key, value, lease) == rpc_pb2.PutRequest(
        key=key, value=value, lease=lease
    ).SerializeToString()


@given(st.binary(max_size=20), st.binary(max_size=20), st.integers(0, 2**40), st.booleans(), st.booleans())
def test_range_request(key, end, limit, serializable, count_only):
    assert messages.range_request(
        key, end, limit=limit, serializable=serializable, count_only=count_only
    ) == rpc_pb2.RangeRequest(
        key=key, range_end=end, limit=limit, serializable=serializable, count_only=count_only
    ).SerializeToString()


def test_txn_of_puts_and_ranges():
    ours = messages.txn_request([
        messages.request_op_put(messages.put_request(b"k", b"v")),
        messages.request_op_range(messages.range_request(b"\x00", b"\x00", limit=1000, serializable=True)),
    ])
    theirs = rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b"v")),
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(
            key=b"\x00", range_end=b"\x00", limit=1000, serializable=True)),
    ])
    assert rpc_pb2.TxnRequest.FromString(ours) == theirs


def test_other_requests():
    assert messages.compaction_request(42) == rpc_pb2.CompactionRequest(revision=42).SerializeToString()
    assert messages.lease_grant_request(100) == rpc_pb2.LeaseGrantRequest(TTL=100).SerializeToString()
    assert messages.lease_keepalive_request(7 << 60) == rpc_pb2.LeaseKeepAliveRequest(ID=7 << 60).SerializeToString()
    assert messages.authenticate_request("u", "p") == rpc_pb2.AuthenticateRequest(
        name="u", password="p").SerializeToString()
    watch = rpc_pb2.WatchRequest.FromString(messages.watch_create_request(b"a", b"b", 5))
    assert watch.create_request == rpc_pb2.WatchCreateRequest(key=b"a", range_end=b"b", start_revision=5)


def test_reading_responses():
    response = rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=99, member_id=2**64 - 1), count=3)
    assert messages.header_revision(response.SerializeToString()) == 99
    watch = rpc_pb2.WatchResponse(watch_id=3, created=True)
    watch.events.add().kv.key = b"x"
    watch.events.add().kv.key = b"y"
    fields = messages.fields(watch.SerializeToString())
    assert messages.first(fields, 3) == 1 and len(fields[11]) == 2
    assert messages.fields(rpc_pb2.LeaseGrantResponse(ID=-5).SerializeToString())[2] == [2**64 - 5]


def test_benchmark_keys_match_gos_put_varint():
    assert messages.benchmark_key(0, 8) == bytes(8)
    assert messages.benchmark_key(1, 4) == b"\x02\x00\x00\x00"
    assert messages.benchmark_key(300, 3) == b"\xd8\x04\x00"


def test_the_tool_imports_nothing_else_from_the_project():
    # An independent client: not trietcd's codec, not the generated protobuf code.
    for path in TOOL_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in ("proto", "storage"), f"{path.name} imports {name}"
                if top == "trietcd":
                    assert name == "trietcd" or name.startswith("trietcd.tools."), f"{path.name} imports {name}"
