"""Active alarms of the cluster, keyed by (member ID, alarm type).

Owned by the applier. etcd keeps alarms in the backend's `alarm` bucket and
lists them ordered by member ID then type; the durable backend will persist
them, this keeps the same rules in memory.
"""

from __future__ import annotations

import attrs

__all__ = ["AlarmStore", "ALARM_NONE"]

ALARM_NONE = 0


@attrs.define
class AlarmStore:
    _active: set[tuple[int, int]] = attrs.field(factory=set)

    @classmethod
    def load(cls, backend) -> "AlarmStore":
        """The alarms recorded in the backend's `alarm` bucket (keys are marshalled AlarmMembers)."""
        from proto.etcdserverpb import rpc_pb2
        from trietcd.backend import schema

        store = cls()
        for key, _ in backend.items(schema.ALARM):
            am = rpc_pb2.AlarmMember.FromString(key)
            store._active.add((am.memberID, am.alarm))
        return store

    def list(self) -> list[tuple[int, int]]:
        return sorted(self._active)

    def activate(self, member_id: int, alarm: int) -> list[tuple[int, int]]:
        """Returns the alarm, also when it was active already (etcd 3.5.1
        answers a repeated ACTIVATE with the alarm); NONE activates nothing."""
        if alarm == ALARM_NONE:
            return []
        key = (member_id, alarm)
        self._active.add(key)
        return [key]

    def deactivate(self, member_id: int, alarm: int) -> list[tuple[int, int]]:
        key = (member_id, alarm)
        if key not in self._active:
            return []
        self._active.discard(key)
        return [key]

    def has(self, alarm: int) -> bool:
        # Asked for every write applied: most of the time there is no alarm at all.
        return bool(self._active) and any(a == alarm for _, a in self._active)
