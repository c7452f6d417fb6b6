"""--force-new-cluster on a member of a three-member etcd 3.5.1 cluster (tests/fixtures/etcd-3.5.1/cluster): the
member restarts alone with the cluster's data, as etcd's restartAsStandaloneNode does, and stays alone after
a restart without the flag."""

import shutil
from pathlib import Path

import trio

from proto.etcdserverpb import rpc_pb2
from proto.raftpb import raft_pb2
from tests.server.members import make_member, run_member
from trietcd.wal.segment import read_wal

CLUSTER = Path(__file__).resolve().parents[1] / "fixtures" / "etcd-3.5.1" / "cluster"
M1, M2, M3 = 0x98B60FED3613E3F7, 0xEFA4E2C93667074C, 0x25741828780196FC
HASH_KV_REV7 = 3510018732  # the fixture's HashKV at its current revision


async def _leader(m) -> None:
    with trio.fail_after(10):
        while m.leader_id != m.id:
            await trio.sleep(0.01)


async def test_a_member_of_three_restarts_alone_with_the_clusters_data(tmp_path):
    data = tmp_path / "m1"
    shutil.copytree(CLUSTER / "m1", data)

    async def alone(m):
        await _leader(m)
        assert [x.id for x in m.membership.sorted_members()] == [M1]
        assert m.node.raft.prs.config.voters.incoming == {M1}
        assert m.store.hash_kv(0) == (HASH_KV_REV7, 7, 5)
        assert [kv.key for kv in m.store.read().range(b"", b"\0").kvs] == [b"b", b"c", b"with-lease"]
        resp = await m.propose("put", rpc_pb2.PutRequest(key=b"d", value=b"4"))
        return resp.header.revision

    assert await run_member(make_member(data, "--name", "m1", "--force-new-cluster"), alone) == 8
    # The log now ends with the removal of the two others, at the commit's term, after entry 20.
    wal = read_wal(str(data / "member" / "wal"))
    removals = [(e.Index, e.Term, raft_pb2.ConfChange.FromString(e.Data)) for e in wal.entries
                if e.Type == raft_pb2.EntryConfChange and e.Index > 20]
    assert [(i, t, c.type, c.node_id, c.context) for i, t, c in removals] == [
        (21, 4, raft_pb2.ConfChangeRemoveNode, M3, b""), (22, 4, raft_pb2.ConfChangeRemoveNode, M2, b"")]

    async def still_alone(m):
        await _leader(m)
        assert [x.id for x in m.membership.sorted_members()] == [M1]
        return [kv.key for kv in m.store.read().range(b"", b"\0").kvs]

    assert await run_member(make_member(data, "--name", "m1"), still_alone) == [b"b", b"c", b"d", b"with-lease"]


async def test_without_the_flag_the_member_waits_for_its_peers(tmp_path):
    data = tmp_path / "m1"
    shutil.copytree(CLUSTER / "m1", data)
    member = make_member(data, "--name", "m1", "--election-timeout", "100", "--heartbeat-interval", "10")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(member.run, [])  # never ready: it cannot publish without a quorum
            await trio.sleep(3)  # many election timeouts: one vote of three elects nobody
            assert (member.leader_id, len(member.membership.sorted_members())) == (0, 3)
            nursery.cancel_scope.cancel()
