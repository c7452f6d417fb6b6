import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from trietcd.config import parse
from trietcd.server import Member, RequestTooLargeError
from trietcd.server.member import BOOTSTRAP_RAFT_INDEX


def make_member(*argv: str) -> Member:
    return Member(parse(list(argv), {}))


def test_header_carries_ids_term_and_current_revision():
    m = make_member()
    h = m.header()
    assert (h.cluster_id, h.member_id, h.revision, h.raft_term) == (0xCDF818194E3A8C32, 0x8E9E05C52164694D, 1, 2)
    assert m.header(7).revision == 7


def test_header_field_is_the_encoded_header_and_follows_revision_and_term():
    m = make_member()
    resp = rpc_pb2.RangeResponse()
    resp.MergeFromString(m.header_field(5))
    assert resp.header == m.header(5)
    assert m.header_field(5) == m.header_field(5)
    assert rpc_pb2.RangeResponse.FromString(m.header_field(6)).header.revision == 6
    m.raft_term = 3
    assert rpc_pb2.RangeResponse.FromString(m.header_field(6)).header.raft_term == 3
    for rev in (0, 1, 127, 128, 2**35, 2**63 - 1, -1):
        assert m.header_field(rev) == rpc_pb2.RangeResponse(header=m.header(rev)).SerializeToString()
    m.raft_term = 0
    assert m.header_field(3) == rpc_pb2.RangeResponse(header=m.header(3)).SerializeToString()


def test_each_write_takes_one_raft_entry():
    m = make_member()
    m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
    m.propose("delete_range", rpc_pb2.DeleteRangeRequest(key=b"k"))
    assert m.raft_index == m.applied_index == BOOTSTRAP_RAFT_INDEX + 2


def test_request_over_max_request_bytes_is_refused_before_the_log():
    m = make_member("--max-request-bytes", "1024")
    m.propose("put", rpc_pb2.PutRequest(key=b"small", value=b"s" * 500))
    with pytest.raises(RequestTooLargeError):
        m.propose("put", rpc_pb2.PutRequest(key=b"big", value=b"b" * 2048))
    assert m.raft_index == BOOTSTRAP_RAFT_INDEX + 1


def test_max_request_bytes_counts_the_whole_raft_entry():
    # The limit applies to the InternalRaftRequest (header with the request
    # ID, and the request), as etcd measures it, to the byte.
    from proto.etcdserverpb import raft_internal_pb2

    m = make_member("--max-request-bytes", "1024")

    def entry_size(fill):
        header = raft_internal_pb2.RequestHeader(ID=m._request_id + 1)
        put = rpc_pb2.PutRequest(key=b"k", value=b"v" * fill)
        return raft_internal_pb2.InternalRaftRequest(header=header, put=put).ByteSize()

    fill = next(n for n in range(900, 1024) if entry_size(n) == 1024)
    m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v" * fill))
    with pytest.raises(RequestTooLargeError):
        m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v" * (fill + 1)))
    assert m.raft_index == BOOTSTRAP_RAFT_INDEX + 1


async def test_health_reports_active_alarms_unless_excluded():
    m = make_member()
    assert await m.health({}) == (True, "")
    m.alarms.activate(m.id, rpc_pb2.NOSPACE)
    assert await m.health({}) == (False, "ALARM NOSPACE")
    assert await m.health({"exclude": ["NOSPACE"]}) == (True, "")


async def test_run_starts_listeners_and_stop_cancels_everything():
    m = make_member()
    stopped_connections = []

    async def listener(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started("addr")
        await trio.sleep_forever()

    async def shutdown(grace_s: float) -> None:
        stopped_connections.append(grace_s)

    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(m.run, [listener, listener])
        assert addresses == ["addr", "addr"]
        await m.stop(shutdown, 3.0)
    assert stopped_connections == [3.0]
