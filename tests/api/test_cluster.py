"""The Cluster service on a real member (temporary data dir): membership changes through raft with etcd 3.5.1's
rules and errors, what they leave in the WAL, and a member that lost its quorum holding writes for a leader."""

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from proto.raftpb import raft_pb2
from tests.server.members import make_member, run_member
from trietcd.api import errors
from trietcd.api.cluster import ClusterService
from trietcd.server.errors import RequestTimeoutError
from trietcd.wal.segment import read_wal

LEARNER_URL = "http://127.0.0.1:45001"


async def test_learner_added_listed_not_promotable_removed(tmp_path):
    async def body(m):
        svc = ClusterService(m)
        added = await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[LEARNER_URL], isLearner=True), None)
        lid = added.member.ID
        assert added.member == rpc_pb2.Member(ID=lid, peerURLs=[LEARNER_URL], isLearner=True)
        assert [(x.ID, x.isLearner) for x in added.members] == sorted([(m.id, False), (lid, True)])
        assert m.node.raft.prs.config.learners == {lid}
        with trio.fail_after(5):  # a linearizable read through raft's ReadIndex: the only voter answers it
            await m.read_barrier()
        with pytest.raises(errors.ErrGRPCLearnerNotReady):  # it has not caught up (it never will here)
            await svc.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=lid), None)
        with pytest.raises(errors.ErrGRPCTooManyLearners):
            await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:45002"], isLearner=True), None)
        with pytest.raises(errors.ErrGRPCPeerURLExist):
            await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[LEARNER_URL, "http://127.0.0.1:45009"]), None)
        removed = await svc.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=lid), None)
        assert [x.ID for x in removed.members] == [m.id]
        with pytest.raises(errors.ErrGRPCMemberNotFound):  # removed IDs stay removed
            await svc.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=lid), None)
        return lid

    lid = await run_member(make_member(tmp_path / "d"), body)
    # The WAL holds etcd's entries: AddLearnerNode with the member's JSON as etcd marshals it, RemoveNode without
    # context. (The refused changes are in it too: etcd validates them at apply.)
    records = read_wal(str(tmp_path / "d" / "member" / "wal"))
    ccs = [raft_pb2.ConfChange.FromString(e.Data) for e in records.entries if e.Type == raft_pb2.EntryConfChange]
    add = ccs[1]
    assert (add.type, add.node_id) == (raft_pb2.ConfChangeAddLearnerNode, lid)
    assert add.context == b'{"id":%d,"peerURLs":["%s"],"isLearner":true}' % (lid, LEARNER_URL.encode())
    assert [(c.type, c.node_id, c.context) for c in ccs[4:]] == [(raft_pb2.ConfChangeRemoveNode, lid, b"")] * 2


async def test_errors_before_the_log(tmp_path):
    async def body(m):
        svc = ClusterService(m)
        for urls in ([], ["not-a-url"], ["http://127.0.0.1"], ["ftp://127.0.0.1:1"], ["http://127.0.0.1:1/path"]):
            with pytest.raises(errors.ErrGRPCMemberBadURLs):
                await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=urls), None)
        with pytest.raises(errors.ErrGRPCMemberNotEnoughStarted):  # the only voter cannot leave
            await svc.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=m.id), None)
        with pytest.raises(errors.ErrGRPCMemberNotFound):
            await svc.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=1234), None)
        with pytest.raises(errors.ErrGRPCMemberNotFound):
            await svc.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=1234), None)
        with pytest.raises(errors.ErrGRPCMemberNotLearner):
            await svc.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=m.id), None)
        with pytest.raises(errors.ErrGRPCMemberNotFound):
            await svc.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=1234, peerURLs=["http://127.0.0.1:1"]), None)
        own = m.membership.local.peer_urls
        with pytest.raises(errors.ErrGRPCPeerURLExist):
            await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=list(own)), None)

    await run_member(make_member(tmp_path / "d"), body)


async def test_update_changes_urls_and_a_learner_reads_as_a_voter_after(tmp_path):
    async def body(m):
        svc = ClusterService(m)
        lid = (await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[LEARNER_URL], isLearner=True), None)).member.ID
        urls = ["http://127.0.0.1:45013", "http://127.0.0.1:45012"]
        resp = await svc.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=lid, peerURLs=urls), None)
        # etcd 3.5.1: the URLs as sent, and the learner flag dropped from the member list.
        assert [(x.ID, list(x.peerURLs), x.isLearner) for x in resp.members if x.ID == lid] == [(lid, urls, False)]
        listed = await svc.MemberList(rpc_pb2.MemberListRequest(linearizable=True), None)
        assert listed.members == resp.members

    await run_member(make_member(tmp_path / "d"), body)


async def test_a_second_voter_takes_the_quorum_and_writes_wait_for_a_leader(tmp_path):
    async def body(m):
        svc = ClusterService(m)
        resp = await svc.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:45003"]), None)
        assert len(resp.members) == 2 and not resp.member.isLearner
        assert len(m.node.raft.prs.config.voters.incoming) == 2
        # The leader cannot hear from a quorum: it steps down (check quorum), and a put waits for a leader until
        # it times out, as etcd's proposals do (they are not dropped).
        with trio.fail_after(30):
            while m.leader_id:
                await trio.sleep(0.05)
        with pytest.raises(RequestTimeoutError):
            await m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
        # A serializable read still answers from the local member.
        assert m.store.read().range(b"k").count == 0

    member = make_member(tmp_path / "d", "--election-timeout", "100", "--heartbeat-interval", "10")
    member.request_timeout_s = 1.0
    await run_member(member, body)
