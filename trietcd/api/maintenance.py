"""etcdserverpb.Maintenance: status, alarms and hashes.

Defragment, Snapshot, MoveLeader and Downgrade are not served yet: the
registry answers them UNIMPLEMENTED.
"""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2
from trietcd.api import errors
from trietcd.mvcc import MvccError
from trietcd.server.errors import ServerError

__all__ = ["MaintenanceService"]


class MaintenanceService:
    def __init__(self, server) -> None:
        self._server = server

    def handlers(self) -> dict:
        return {"Status": self.Status, "Alarm": self.Alarm, "Hash": self.Hash, "HashKV": self.HashKV}

    async def Status(self, request: rpc_pb2.StatusRequest, call) -> rpc_pb2.StatusResponse:
        s = self._server
        return rpc_pb2.StatusResponse(
            header=s.header(),
            version=s.version,
            dbSize=s.db_size_bytes(),
            leader=s.leader_id,
            raftIndex=s.raft_index,
            raftTerm=s.raft_term,
            raftAppliedIndex=s.applied_index,
            errors=[alarm_text(m, a) for m, a in s.alarms.list()],
            dbSizeInUse=s.db_size_in_use_bytes(),
            isLearner=s.membership.local.is_learner,
        )

    async def Hash(self, request: rpc_pb2.HashRequest, call) -> rpc_pb2.HashResponse:
        # The whole backend (less the consistent index and term), after a commit.
        s = self._server
        value = await s.backend_hash()
        return rpc_pb2.HashResponse(header=s.header(), hash=value)

    async def HashKV(self, request: rpc_pb2.HashKVRequest, call) -> rpc_pb2.HashKVResponse:
        s = self._server
        try:
            value, rev, compact_rev = s.store.hash_kv(request.revision)
        except MvccError as exc:
            raise errors.to_grpc_error(exc) from None
        return rpc_pb2.HashKVResponse(header=s.header(rev), hash=value, compact_revision=compact_rev)

    async def Alarm(self, request: rpc_pb2.AlarmRequest, call) -> rpc_pb2.AlarmResponse:
        # Every action goes through raft, GET too, as etcd 3.5 does.
        s = self._server
        try:
            resp = await s.propose("alarm", request)
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None
        resp.header.CopyFrom(s.header())
        return resp


def alarm_text(member_id: int, alarm: int) -> str:
    # etcd formats active alarms in Status.errors as "memberID:<dec> alarm:<NAME> ".
    name = rpc_pb2.AlarmType.Name(alarm)
    return f"memberID:{member_id} alarm:{name} "
