"""etcdserverpb.Maintenance: status and alarms.

Defragment, Hash, HashKV, Snapshot, MoveLeader and Downgrade arrive with the
durable backend and clustering; until then the registry answers them
UNIMPLEMENTED.
"""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2

__all__ = ["MaintenanceService"]


class MaintenanceService:
    def __init__(self, server) -> None:
        self._server = server

    def handlers(self) -> dict:
        return {"Status": self.Status, "Alarm": self.Alarm}

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

    async def Alarm(self, request: rpc_pb2.AlarmRequest, call) -> rpc_pb2.AlarmResponse:
        s = self._server
        action = request.action
        if action == rpc_pb2.AlarmRequest.GET:
            found = s.alarms.list()
        elif action == rpc_pb2.AlarmRequest.ACTIVATE:
            found = s.alarms.activate(request.memberID, request.alarm)
        elif action == rpc_pb2.AlarmRequest.DEACTIVATE:
            found = s.alarms.deactivate(request.memberID, request.alarm)
        else:
            found = []
        alarms = [rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in found]
        return rpc_pb2.AlarmResponse(header=s.header(), alarms=alarms)


def alarm_text(member_id: int, alarm: int) -> str:
    # etcd formats active alarms in Status.errors as "memberID:<dec> alarm:<NAME> ".
    name = rpc_pb2.AlarmType.Name(alarm)
    return f"memberID:{member_id} alarm:{name} "
