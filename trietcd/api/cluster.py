"""etcdserverpb.Cluster: membership as clients see it and change it (etcd 3.5.1 `v3rpc/member.go` and the
EtcdServer methods behind it).

Adding, removing, updating and promoting a member is a ConfChange through raft, as etcd's `configure`: the
answer comes once it is applied, with the members then. Before proposing, etcd's --strict-reconfig-check rules
(always on here, etcd's default) refuse a change that would leave fewer started members than a quorum, and a
learner is promoted only once its log is within 90% of the leader's. What only the applier can tell (an ID that
exists, is unknown or was removed, a peer URL in use, a second learner) fails at apply with etcd's error.
"""

from __future__ import annotations

import time

from proto.etcdserverpb import rpc_pb2
from proto.raftpb import raft_pb2
from trietcd.api import errors
from trietcd.auth import AuthError
from trietcd.backend import member_json
from trietcd.config.gotypes import GoError, new_urls
from trietcd.raft.raft import StateType
from trietcd.server.apply import MembershipError
from trietcd.server.errors import ServerError
from trietcd.server.membership import compute_member_id

__all__ = ["ClusterService", "member_pb"]

# The applier's validation errors (membership/cluster.go) as etcd's togRPCError maps them.
_MEMBERSHIP_ERRORS = {
    "membership: ID removed": errors.ErrGRPCMemberNotFound,
    "membership: ID not found": errors.ErrGRPCMemberNotFound,
    "membership: ID exists": errors.ErrGRPCMemberExist,
    "membership: peerURL exists": errors.ErrGRPCPeerURLExist,
    "membership: can only promote a learner member": errors.ErrGRPCMemberNotLearner,
    "membership: too many learner members in cluster": errors.ErrGRPCTooManyLearners,
}


def member_pb(info) -> rpc_pb2.Member:
    return rpc_pb2.Member(
        ID=info.id,
        name=info.name,
        peerURLs=list(info.peer_urls),
        clientURLs=list(info.client_urls),
        isLearner=info.is_learner,
    )


class ClusterService:
    def __init__(self, server) -> None:
        self._server = server

    def handlers(self) -> dict:
        return {
            "MemberList": self.MemberList,
            "MemberAdd": self.MemberAdd,
            "MemberRemove": self.MemberRemove,
            "MemberUpdate": self.MemberUpdate,
            "MemberPromote": self.MemberPromote,
        }

    def _header(self) -> rpc_pb2.ResponseHeader:
        # etcd's cluster service fills no revision into its headers.
        return self._server.header(revision=0)

    async def MemberList(self, request: rpc_pb2.MemberListRequest, call) -> rpc_pb2.MemberListResponse:
        s = self._server
        if request.linearizable:
            try:
                await s.read_barrier()
            except ServerError as exc:
                raise errors.to_grpc_error(exc) from None
        members = [member_pb(m) for m in s.membership.sorted_members()]
        return rpc_pb2.MemberListResponse(header=self._header(), members=members)

    async def _check_admin(self, call) -> None:
        # etcd's checkMembershipOperationPermission: a membership change needs root once auth is on.
        auth = self._server.auth
        try:
            auth.store.check_admin(await auth.auth_info(call))
        except AuthError as exc:
            raise errors.to_grpc_error(exc) from None

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, call) -> rpc_pb2.MemberAddResponse:
        try:
            urls = new_urls(list(request.peerURLs))
        except GoError:
            raise errors.ErrGRPCMemberBadURLs() from None
        await self._check_admin(call)
        # A member added at run time: its ID from its peer URLs and the second it was added (no token).
        mid = compute_member_id(urls, "", int(time.time()))
        s = self._server
        if not request.isLearner and not s.membership.ready_to_add_voting_member():
            raise errors.ErrGRPCMemberNotEnoughStarted()
        kind = raft_pb2.ConfChangeAddLearnerNode if request.isLearner else raft_pb2.ConfChangeAddNode
        context = member_json(mid, list(urls), is_learner=request.isLearner)
        members = await self._configure(raft_pb2.ConfChange(type=kind, node_id=mid, context=context))
        return rpc_pb2.MemberAddResponse(
            header=self._header(),
            member=rpc_pb2.Member(ID=mid, peerURLs=list(urls), isLearner=request.isLearner),
            members=members,
        )

    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, call) -> rpc_pb2.MemberRemoveResponse:
        await self._check_admin(call)
        s = self._server
        target = s.membership.members.get(request.ID)
        is_learner = target is not None and target.is_learner
        if not is_learner and not s.membership.ready_to_remove_voting_member(request.ID):
            raise errors.ErrGRPCMemberNotEnoughStarted()
        members = await self._configure(raft_pb2.ConfChange(type=raft_pb2.ConfChangeRemoveNode, node_id=request.ID))
        return rpc_pb2.MemberRemoveResponse(header=self._header(), members=members)

    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest, call) -> rpc_pb2.MemberUpdateResponse:
        # etcd 3.5.1 sends the URLs as given (unchecked, unsorted) and no learner flag: updating a learner
        # makes it a voter in the member list (raft still has it as a learner).
        await self._check_admin(call)
        context = member_json(request.ID, list(request.peerURLs))
        cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeUpdateNode, node_id=request.ID, context=context)
        members = await self._configure(cc)
        return rpc_pb2.MemberUpdateResponse(header=self._header(), members=members)

    async def MemberPromote(self, request: rpc_pb2.MemberPromoteRequest, call) -> rpc_pb2.MemberPromoteResponse:
        await self._check_admin(call)
        s = self._server
        if s.node.raft.state is not StateType.LEADER:
            # etcd forwards a promotion to the leader over the peer port; without one there is nobody to ask.
            raise errors.ErrGRPCNoLeader() if not s.leader_id else errors.ErrGRPCNotLeader()
        if not s.learner_ready(request.ID):
            raise errors.ErrGRPCLearnerNotReady()
        if not s.membership.ready_to_promote_member(request.ID):
            raise errors.ErrGRPCMemberNotEnoughStarted()
        # etcd's ConfigChangeContext{Member{ID}, IsPromote: true} as Go marshals it.
        context = b'{"id":%d,"peerURLs":null,"isPromote":true}' % request.ID
        cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeAddNode, node_id=request.ID, context=context)
        members = await self._configure(cc)
        return rpc_pb2.MemberPromoteResponse(header=self._header(), members=members)

    async def _configure(self, cc: raft_pb2.ConfChange) -> list[rpc_pb2.Member]:
        try:
            members = await self._server.configure(cc)
        except MembershipError as exc:
            raise _MEMBERSHIP_ERRORS.get(str(exc), errors.ErrGRPCMemberNotFound)() from None
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None
        return [member_pb(m) for m in members]
