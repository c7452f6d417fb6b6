"""etcdserverpb.Cluster: membership as clients see it.

Member changes (add, remove, update, promote) go through raft and arrive
with clustering; until then those methods answer UNIMPLEMENTED through the
registry, and MemberList serves the bootstrapped membership.
"""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2

__all__ = ["ClusterService", "member_pb"]


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
        return {"MemberList": self.MemberList}

    async def MemberList(self, request: rpc_pb2.MemberListRequest, call) -> rpc_pb2.MemberListResponse:
        # A linearizable list waits for the applied index to reach a read
        # index; a single member that applies synchronously is always there.
        members = [member_pb(m) for m in self._server.membership.sorted_members()]
        # etcd's cluster service fills no revision into its headers.
        return rpc_pb2.MemberListResponse(header=self._server.header(revision=0), members=members)
