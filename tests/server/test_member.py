"""The member on a real data dir (temporary), with its real nursery: raft, WAL, applier, backend."""

import shutil
from pathlib import Path

import pytest
import trio
import trio.testing

from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2, rpc_pb2
from proto.raftpb import raft_pb2
from tests.server.members import make_member, run_member
from trietcd.mvcc import CompactedError
from trietcd.server import RequestTooLargeError
from trietcd.wal.segment import read_wal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_FLAGS = [
    "--name", "fx1", "--initial-cluster", "fx1=http://127.0.0.1:22380",
    "--initial-advertise-peer-urls", "http://127.0.0.1:22380", "--initial-cluster-token", "trietcd-fixture",
    "--advertise-client-urls", "http://127.0.0.1:22379",
]


def put(key: bytes, value: bytes) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=value)


def test_header_carries_ids_term_and_current_revision(tmp_path):
    m = make_member(tmp_path / "d")
    try:
        h = m.header()
        assert (h.cluster_id, h.member_id, h.revision) == (0xCDF818194E3A8C32, 0x8E9E05C52164694D, 1)
        assert h.raft_term == m.raft_term == 1  # the bootstrap entries' term; the first election makes it 2
        assert m.header(7).revision == 7
    finally:
        m.disk.close()


def test_header_field_is_the_encoded_header_and_follows_revision_and_term(tmp_path):
    m = make_member(tmp_path / "d")
    try:
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
    finally:
        m.disk.close()


async def test_bootstrap_writes_the_entries_etcd_writes(tmp_path):
    m = make_member(tmp_path / "d", *FIXTURE_FLAGS)

    async def body(m):
        assert m.leader_id == m.id
        assert m.raft_term == 2
        while m.cluster_version != "3.5.0":  # the leader sets it right after the member is published
            await trio.sleep(0.01)

    await run_member(m, body)
    ours = read_wal(str(tmp_path / "d" / "member" / "wal"))
    theirs = read_wal(str(FIXTURES / "etcd-3.5.1" / "datadir" / "member" / "wal"))
    assert ours.metadata == theirs.metadata
    # 1: AddNode self (term 1), 2: the leader's empty entry (term 2), 3: attributes, 4: cluster version.
    assert ours.entries[0] == theirs.entries[0]
    assert ours.entries[1] == theirs.entries[1]
    for i in (2, 3):
        a = etcdserver_pb2.Request.FromString(ours.entries[i].Data)
        b = etcdserver_pb2.Request.FromString(theirs.entries[i].Data)
        a.ID = b.ID = 0
        a.Time = b.Time = 0
        assert a == b
        assert (ours.entries[i].Term, ours.entries[i].Index) == (theirs.entries[i].Term, theirs.entries[i].Index)
    assert m.cluster_version == "3.5.0"
    assert [(x.name, x.client_urls) for x in m.membership.sorted_members()] == [("fx1", ("http://127.0.0.1:22379",))]


async def test_writes_go_through_the_log_and_survive_a_restart(tmp_path):
    data_dir = tmp_path / "d"

    async def write(m):
        first = m.raft_index
        r = await m.propose("put", put(b"k", b"v1"))
        assert r.header.revision == 2
        await m.propose("put", put(b"k", b"v2"))
        r = await m.propose("delete_range", rpc_pb2.DeleteRangeRequest(key=b"gone"))
        assert r.deleted == 0
        assert m.raft_index == m.applied_index == first + 3

    await run_member(make_member(data_dir), write)
    entries = read_wal(str(data_dir / "member" / "wal")).entries
    puts = [raft_internal_pb2.InternalRaftRequest.FromString(e.Data) for e in entries[-3:]]
    assert [p.put.value for p in puts[:2]] == [b"v1", b"v2"]

    async def read(m):
        await m.read_barrier()
        assert m.store.current_revision == 3
        assert [kv.value for kv in m.store.range(b"k").kvs] == [b"v2"]
        assert [kv.value for kv in m.store.range(b"k", rev=2).kvs] == [b"v1"]
        assert m.raft_term == 3  # a new election after the restart

    await run_member(make_member(data_dir), read)


async def test_writes_not_yet_in_the_backend_come_back_from_the_wal(tmp_path):
    # A copy of the data dir taken while the member runs is what a crash leaves: the WAL holds every
    # acknowledged write, the backend only what its last commit held (none here: the batch interval is an hour).
    data_dir, crashed = tmp_path / "d", tmp_path / "crashed"

    async def write(m):
        for i in range(20):
            await m.propose("put", put(b"k%d" % i, b"v%d" % i))
        shutil.copytree(data_dir, crashed)

    await run_member(make_member(data_dir, "--backend-batch-interval", "1h"), write)

    async def check(m):
        assert m.store.current_revision == 21
        assert [kv.value for kv in m.store.range(b"k", b"l").kvs] == sorted(b"v%d" % i for i in range(20))
        assert m.backend.consistent_index()[0] == m.applied_index

    await run_member(make_member(crashed), check)


async def test_compaction_physical_waits_and_survives_restart(tmp_path):
    data_dir = tmp_path / "d"

    async def write(m):
        for i in range(30):
            await m.propose("put", put(b"k", b"v%d" % i))
        await m.propose("compaction", rpc_pb2.CompactionRequest(revision=20, physical=True))
        with pytest.raises(CompactedError):
            await m.propose("compaction", rpc_pb2.CompactionRequest(revision=20))

    await run_member(make_member(data_dir, "--experimental-compaction-batch-limit", "3"), write)

    async def check(m):
        assert m.store.compact_revision == 20
        with pytest.raises(CompactedError):
            m.store.range(b"k", rev=19)
        assert m.store.range(b"k", rev=20).kvs[0].value == b"v18"

    await run_member(make_member(data_dir), check)


async def test_snapshots_are_taken_every_snapshot_count_entries(tmp_path):
    data_dir = tmp_path / "d"

    async def write(m):
        for i in range(25):
            await m.propose("put", put(b"k%d" % i, b"v"))
        assert m.snapshot_index > 0

    await run_member(make_member(data_dir, "--snapshot-count", "10"), write)
    snaps = sorted(p.name for p in (data_dir / "member" / "snap").glob("*.snap"))
    assert len(snaps) >= 2

    async def check(m):
        assert m.store.current_revision == 26
        assert m.applied_index >= int(snaps[-1].split("-")[1].split(".")[0], 16)

    await run_member(make_member(data_dir, "--snapshot-count", "10"), check)


async def test_request_over_max_request_bytes_is_refused_before_the_log(tmp_path):
    async def body(m):
        await m.propose("put", put(b"small", b"s" * 500))
        index = m.raft_index
        with pytest.raises(RequestTooLargeError):
            await m.propose("put", put(b"big", b"b" * 2048))
        assert m.raft_index == index

    await run_member(make_member(tmp_path / "d", "--max-request-bytes", "1024"), body)


async def test_max_request_bytes_counts_the_whole_raft_entry(tmp_path):
    # The limit applies to the InternalRaftRequest (header with the request ID, and the request), as etcd
    # measures it, to the byte. Request IDs carry the member ID's low 16 bits on top, which sets their size.
    async def body(m):
        def entry_size(fill):
            header = raft_internal_pb2.RequestHeader(ID=(m.id & 0xFFFF) << 48 | 1)
            return raft_internal_pb2.InternalRaftRequest(header=header, put=put(b"k", b"v" * fill)).ByteSize()

        fill = next(n for n in range(900, 1024) if entry_size(n) == 1024)
        await m.propose("put", put(b"k", b"v" * fill))
        with pytest.raises(RequestTooLargeError):
            await m.propose("put", put(b"k", b"v" * (fill + 1)))

    await run_member(make_member(tmp_path / "d", "--max-request-bytes", "1024"), body)


async def test_alarms_go_through_raft_persist_and_show_in_health(tmp_path):
    data_dir = tmp_path / "d"

    async def body(m):
        assert await m.health({}) == (True, "")
        await m.propose("alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=m.id,
                                                      alarm=rpc_pb2.NOSPACE))
        assert await m.health({}) == (False, "ALARM NOSPACE")
        assert await m.health({"exclude": ["NOSPACE"]}) == (True, "")

    await run_member(make_member(data_dir), body)

    async def check(m):
        assert m.alarms.list() == [(m.id, rpc_pb2.NOSPACE)]

    await run_member(make_member(data_dir), check)


async def test_starts_on_a_data_dir_written_by_etcd(tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(FIXTURES / "etcd-3.5.1" / "datadir", data_dir)

    async def check(m):
        assert (m.id, m.cluster_id) == (0x4959FA27AA214C35, 0x1E4A5C257EA7C9D4)
        assert m.store.range(b"foo").kvs[0].value == b"bar3"
        assert m.store.hash_kv(0)[0] == m.store.hash_kv(m.store.current_revision)[0]

    await run_member(make_member(data_dir, "--name", "fx1"), check)


async def test_run_starts_listeners_and_stop_cancels_everything(tmp_path):
    m = make_member(tmp_path / "d")
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


def test_internal_request_bytes_equal_protobuf_encoding():
    import random

    from trietcd.server.member import _internal_request

    rng = random.Random(7)
    for _ in range(500):
        rid = rng.getrandbits(64)
        r = rpc_pb2.PutRequest(key=b"k" * rng.randrange(1, 40), value=b"x" * rng.randrange(0, 300),
                               lease=rng.randrange(3), prev_kv=rng.random() < 0.5)
        expected = raft_internal_pb2.InternalRaftRequest(header=raft_internal_pb2.RequestHeader(ID=rid), put=r)
        assert _internal_request("put", r, rid) == expected.SerializeToString()
        c = rpc_pb2.CompactionRequest(revision=rng.randrange(1 << 40), physical=True)
        expected = raft_internal_pb2.InternalRaftRequest(header=raft_internal_pb2.RequestHeader(ID=rid), compaction=c)
        assert _internal_request("compaction", c, rid) == expected.SerializeToString()


async def test_old_snapshot_files_are_purged(tmp_path, monkeypatch):
    import trietcd.server.member as member_module

    monkeypatch.setattr(member_module, "PURGE_INTERVAL_S", 0.05)
    data_dir = tmp_path / "d"

    async def write(m):
        for i in range(40):
            await m.propose("put", put(b"k%d" % i, b"v"))
        await trio.sleep(0.2)
        assert len(list((data_dir / "member" / "snap").glob("*.snap"))) == 2

    await run_member(make_member(data_dir, "--snapshot-count", "5", "--max-snapshots", "2"), write)


async def test_quota_raises_nospace_before_the_log_and_caps_writes(tmp_path):
    from trietcd.server.errors import NoSpaceError

    async def body(m):
        index = m.raft_index
        with pytest.raises(NoSpaceError):
            await m.propose("put", put(b"a", b"1"))
        # The alarm took the request's place in the log.
        assert m.raft_index == index + 1
        assert m.alarms.list() == [(m.id, rpc_pb2.NOSPACE)]
        r = await m.propose("delete_range", rpc_pb2.DeleteRangeRequest(key=b"a"))
        assert r.deleted == 0
        # etcd 3.5.1 checks even a txn without puts (cost 0) against the quota before the log.
        with pytest.raises(NoSpaceError):
            await m.propose("txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))]))

    await run_member(make_member(tmp_path / "d", "--quota-backend-bytes", "1"), body)


async def test_nospace_alarm_caps_puts_at_apply(tmp_path):
    from trietcd.server.errors import NoSpaceError

    async def body(m):
        await m.propose("alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=m.id,
                                                      alarm=rpc_pb2.NOSPACE))
        index = m.raft_index
        with pytest.raises(NoSpaceError):
            await m.propose("put", put(b"a", b"1"))
        assert m.raft_index == index + 1  # in the log, refused when applied
        assert m.store.current_revision == 1
        # While capped, a txn without puts still applies.
        await m.propose("txn", rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
            request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))]))
        assert m.raft_index == index + 2
        await m.propose("alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=m.id,
                                                      alarm=rpc_pb2.NOSPACE))
        assert (await m.propose("put", put(b"a", b"1"))).header.revision == 2

    await run_member(make_member(tmp_path / "d"), body)


def test_quota_costs_are_etcds():
    from trietcd.server.quota import Quota, cost

    assert cost("put", put(b"k", b"vv")) == 256 + 3
    txn = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=put(b"a", b"1")), rpc_pb2.RequestOp(request_put=put(b"b", b"2"))],
        failure=[rpc_pb2.RequestOp(request_put=put(b"c", b"x" * 100))])
    assert cost("txn", txn) == max(2 * 258, 357)
    assert cost("lease_grant", rpc_pb2.LeaseGrantRequest(TTL=5)) == 64
    assert Quota(1000, lambda: 700).available("put", put(b"k", b"")) is True   # 700 + 257 < 1000
    assert Quota(1000, lambda: 744).available("put", put(b"k", b"")) is False  # 1001
    assert Quota(-1, lambda: 10**12).available("put", put(b"k", b"")) is True
    assert Quota(0, lambda: 0).max_bytes == 2 * 1024**3


async def test_propose_soon_answers_through_its_callback_in_log_order(tmp_path):
    from trietcd.mvcc import LeaseNotFoundError

    async def body(m):
        results = []
        applied = trio.Event()

        def done(result):
            results.append(result)
            if len(results) == 3:
                applied.set()

        index = m.raft_index
        assert m.propose_soon("put", put(b"k", b"v1"), done)
        assert m.propose_soon("put", rpc_pb2.PutRequest(key=b"k", value=b"v2", lease=12345), done)  # fails when it applies
        assert m.propose_soon("delete_range", rpc_pb2.DeleteRangeRequest(key=b"k"), done)
        await applied.wait()
        first, failed, deleted = results
        assert first.header.revision == 2
        assert isinstance(failed, LeaseNotFoundError)
        assert deleted.deleted == 1 and deleted.header.revision == 3
        assert m.raft_index == index + 3
        assert m.read_ready()
        assert not m._waiters  # answered proposals are forgotten

    await run_member(make_member(tmp_path / "d"), body)


async def test_propose_soon_leaves_what_it_cannot_do_to_propose(tmp_path):
    async def body(m):
        index = m.raft_index
        with pytest.raises(RequestTooLargeError):
            m.propose_soon("put", put(b"big", b"b" * 2048), lambda r: None)
        assert m.raft_index == index and not m._proposals

    await run_member(make_member(tmp_path / "d", "--max-request-bytes", "1024"), body)

    async def over_quota(m):
        # The alarm is raised by `propose`, which waits: the fast path declines.
        assert not m.propose_soon("put", put(b"a", b"1"), lambda r: None)
        assert not m._proposals and not m.alarms.list()

    await run_member(make_member(tmp_path / "q", "--quota-backend-bytes", "1"), over_quota)


async def test_propose_soon_times_out_like_propose(tmp_path):
    from trietcd.server.errors import RequestTimeoutError

    async def body(m):
        m.request_timeout_s = 0.2
        m._proposals = _Lost()  # the entry never reaches the log
        results = []
        assert m.propose_soon("put", put(b"k", b"v"), results.append)
        await trio.sleep(0.5)
        assert len(results) == 1 and isinstance(results[0], RequestTimeoutError)
        assert not m._waiters

    await run_member(make_member(tmp_path / "d"), body)


class _Lost(list):
    def append(self, item):
        pass


async def test_a_write_watchers_saw_is_answered_after_their_streams_ran(tmp_path):
    async def body(m):
        order = []
        core = m.watch_hub.core
        stream = core.new_stream()

        async def stream_task():  # stands for a watch stream's sender, woken by on_ready
            await ready.wait()
            order.append(("event", stream.take().revision))

        ready = trio.Event()
        stream.on_ready = ready.set
        core.watch(stream, 1, b"watched", None, 0, ())
        done = trio.Event()

        def answered(result):
            order.append(("answer", result.header.revision))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_task)
            await trio.testing.wait_all_tasks_blocked()
            assert m.propose_soon("put", put(b"watched", b"v"), answered)
            await done.wait()
        rev = order[0][1]
        assert order == [("event", rev), ("answer", rev)]
        # Without watchers the answer comes from the applier itself.
        results = []
        assert m.propose_soon("put", put(b"unwatched", b"v"), results.append)
        while not results:
            await trio.sleep(0.01)
        assert not m._late_answers

    await run_member(make_member(tmp_path / "d"), body)
