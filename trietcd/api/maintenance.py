"""etcdserverpb.Maintenance: status, alarms, hashes, snapshots, defrag, leader moves, downgrades.

Snapshot streams the backend image as etcd 3.5.1 does: 32 KiB messages, each with the bytes still to come,
then one message holding the image's SHA-256 (what `etcdutl snapshot restore` checks). The image is read from
a read view in a worker thread, so writes go on while a client downloads it.

Downgrade answers as etcd 3.5.1: VALIDATE; ENABLE (after the same validation) and CANCEL as DowngradeInfoSet
entries through raft, which write etcd's `cluster`/`downgrade` row (read back by `_downgrade_enabled`).
"""

from __future__ import annotations

import hashlib
import json
import re

import trio

from proto.etcdserverpb import rpc_pb2
from proto.membershippb import membership_pb2
from trietcd.api import errors
from trietcd.auth import AuthError
from trietcd.backend import CLUSTER, DOWNGRADE, humanize_bytes
from trietcd.mvcc import MvccError
from trietcd.server.errors import ServerError
from trietcd.wire.grpc_call import GrpcError, Status

__all__ = ["MaintenanceService", "parse_downgrade_version"]

SNAPSHOT_SEND_BUFFER_BYTES = 32 * 1024  # etcd's snapshotSendBufferSize: the blob of every message but the last
SNAPSHOT_READ_BYTES = 32 * SNAPSHOT_SEND_BUFFER_BYTES  # read per worker-thread step
ERR_TIMEOUT_LEADER_TRANSFER = "etcdserver: request timed out, leader transfer took too long"
ERR_UNKNOWN_METHOD = "etcdserver: unknown method"


class MaintenanceService:
    def __init__(self, server) -> None:
        self._server = server

    def handlers(self) -> dict:
        return {"Status": self.Status, "Alarm": self.Alarm, "Hash": self.Hash, "HashKV": self.HashKV,
                "Snapshot": self.Snapshot, "Defragment": self.Defragment, "MoveLeader": self.MoveLeader,
                "Downgrade": self.Downgrade}

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

    async def _check_admin(self, call) -> None:
        # etcd's authMaintenanceServer: Snapshot, Defragment, Hash and HashKV need root once auth is on. It
        # returns the auth store's error as it is, so clients see UNKNOWN with the store's text
        # ("auth: permission denied"), not the mapped etcdserver error the other services answer.
        auth = getattr(self._server, "auth", None)
        if auth is None:
            return
        try:
            auth.store.check_admin(await auth.auth_info(call))
        except AuthError as exc:
            raise GrpcError(Status.UNKNOWN, str(exc)) from None

    async def Hash(self, request: rpc_pb2.HashRequest, call) -> rpc_pb2.HashResponse:
        # The whole backend (less the consistent index and term), after a commit.
        await self._check_admin(call)
        s = self._server
        value, revision = await s.backend_hash()
        return rpc_pb2.HashResponse(header=s.header(revision), hash=value)

    async def HashKV(self, request: rpc_pb2.HashKVRequest, call) -> rpc_pb2.HashKVResponse:
        await self._check_admin(call)
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


    async def Snapshot(self, request: rpc_pb2.SnapshotRequest, call) -> None:
        await self._check_admin(call)
        s = self._server
        snap = await s.snapshot()
        try:
            total = snap.size
            s.log.info("sending database snapshot to client", caller="v3rpc/maintenance.go",
                       **{"total-bytes": total, "size": humanize_bytes(total)})
            start = trio.current_time()
            digest = hashlib.sha256()
            chunks = snap.chunks(SNAPSHOT_READ_BYTES)
            sent = 0
            rest = b""
            while True:
                data = await trio.to_thread.run_sync(_next_hashed, chunks, digest)
                if data is None:
                    break
                buf = rest + data if rest else data
                off = 0
                while len(buf) - off >= SNAPSHOT_SEND_BUFFER_BYTES:
                    sent += SNAPSHOT_SEND_BUFFER_BYTES
                    await call.send(rpc_pb2.SnapshotResponse(remaining_bytes=total - sent,
                                                             blob=buf[off:off + SNAPSHOT_SEND_BUFFER_BYTES]))
                    off += SNAPSHOT_SEND_BUFFER_BYTES
                rest = buf[off:]
            if rest:
                sent += len(rest)
                await call.send(rpc_pb2.SnapshotResponse(remaining_bytes=total - sent, blob=rest))
            assert sent == total, (sent, total)
            sha = digest.digest()
            s.log.info("sending database sha256 checksum to client", caller="v3rpc/maintenance.go",
                       **{"total-bytes": total, "checksum-size": len(sha)})
            await call.send(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=sha))
            s.log.info("successfully sent database snapshot to client", caller="v3rpc/maintenance.go",
                       **{"total-bytes": total, "size": humanize_bytes(total),
                          "took": f"{trio.current_time() - start:.3f}s"})
        except (GrpcError, trio.Cancelled, trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception as exc:
            raise GrpcError(Status.UNKNOWN, str(exc)) from None
        finally:
            snap.close()

    async def Defragment(self, request: rpc_pb2.DefragmentRequest, call) -> rpc_pb2.DefragmentResponse:
        await self._check_admin(call)
        s = self._server
        s.log.info("starting defragment", caller="v3rpc/maintenance.go")
        size, in_use = s.db_size_bytes(), s.db_size_in_use_bytes()
        start = trio.current_time()
        s.log.info("defragmenting", caller="backend/backend.go", path=s.backend.path or "",
                   **{"current-db-size-bytes": size, "current-db-size": humanize_bytes(size),
                      "current-db-size-in-use-bytes": in_use, "current-db-size-in-use": humanize_bytes(in_use)})
        try:
            await s.defragment()
        except Exception as exc:
            s.log.warn("failed to defragment", caller="v3rpc/maintenance.go", error=str(exc))
            raise GrpcError(Status.UNKNOWN, str(exc)) from None
        new_size, new_in_use = s.db_size_bytes(), s.db_size_in_use_bytes()
        s.log.info("finished defragmenting directory", caller="backend/backend.go", path=s.backend.path or "",
                   **{"current-db-size-bytes-diff": new_size - size, "current-db-size-bytes": new_size,
                      "current-db-size": humanize_bytes(new_size),
                      "current-db-size-in-use-bytes-diff": new_in_use - in_use,
                      "current-db-size-in-use-bytes": new_in_use, "current-db-size-in-use": humanize_bytes(new_in_use),
                      "took": f"{trio.current_time() - start:.3f}s"})
        s.log.info("finished defragment", caller="v3rpc/maintenance.go")
        return rpc_pb2.DefragmentResponse()

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, call) -> rpc_pb2.MoveLeaderResponse:
        s = self._server
        if s.id != s.leader_id:
            raise errors.ErrGRPCNotLeader()
        member = s.membership.members.get(request.targetID)
        if member is None or member.is_learner:
            raise errors.ErrGRPCBadLeaderTransferee()
        timeout_s = min(call.deadline - trio.current_time(), s.request_timeout_s)
        if not await s.move_leader(request.targetID, timeout_s):
            raise GrpcError(Status.UNKNOWN, ERR_TIMEOUT_LEADER_TRANSFER)
        return rpc_pb2.MoveLeaderResponse()

    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, call) -> rpc_pb2.DowngradeResponse:
        s = self._server
        action = request.action
        if action == rpc_pb2.DowngradeRequest.VALIDATE:
            resp = await self._downgrade_validate(request.version)
        elif action == rpc_pb2.DowngradeRequest.ENABLE:
            await self._downgrade_validate(request.version)
            major, minor = parse_downgrade_version(request.version)
            resp = await self._set_downgrade(membership_pb2.DowngradeInfoSetRequest(
                enabled=True, ver=f"{major}.{minor}.0"))
        elif action == rpc_pb2.DowngradeRequest.CANCEL:
            await self._linearizable()
            if not self._downgrade_enabled():
                raise errors.ErrGRPCNoInflightDowngrade()
            resp = await self._set_downgrade(membership_pb2.DowngradeInfoSetRequest(enabled=False))
        else:
            raise GrpcError(Status.UNKNOWN, ERR_UNKNOWN_METHOD)
        resp.header.CopyFrom(s.header())
        return resp

    async def _downgrade_validate(self, version: str) -> rpc_pb2.DowngradeResponse:
        target = parse_downgrade_version(version)
        if target is None:
            raise errors.ErrGRPCWrongDowngradeVersionFormat()
        await self._linearizable()
        cv = self._server.cluster_version
        if cv == "not_decided":
            raise errors.ErrGRPCClusterVersionUnavailable()
        cv_version = parse_downgrade_version(cv)
        assert cv_version is not None, cv
        resp = rpc_pb2.DowngradeResponse(version=f"{cv_version[0]}.{cv_version[1]}.0")
        if target != (cv_version[0], cv_version[1] - 1):
            raise errors.ErrGRPCInvalidDowngradeTargetVersion()
        if self._downgrade_enabled():
            raise errors.ErrGRPCDowngradeInProcess()
        return resp

    async def _set_downgrade(self, request) -> rpc_pb2.DowngradeResponse:
        # Through raft; the answer names the cluster version (not the target). etcd 3.5.1 applies the same
        # entry but never answers (its applier gives no result for it, so the caller times out); later
        # releases answer as here.
        try:
            await self._server.propose("downgrade_info_set", request)
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None
        return rpc_pb2.DowngradeResponse(version=self._server.cluster_version)

    async def _linearizable(self) -> None:
        try:
            await self._server.read_barrier()
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None

    def _downgrade_enabled(self) -> bool:
        # etcd keeps {"target-version": ..., "enabled": ...} in the cluster bucket (a data dir etcd wrote may
        # hold one).
        raw = self._server.backend.get(CLUSTER, DOWNGRADE)
        if not raw:
            return False
        try:
            return bool(json.loads(raw).get("enabled"))
        except (ValueError, AttributeError):
            return False


def _next_hashed(chunks, digest):
    data = next(chunks, None)
    if data is not None:
        digest.update(data)
    return data


_SEMVER_IDENT = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$")


def parse_downgrade_version(v: str) -> tuple[int, int] | None:
    """(major, minor) of a downgrade target as etcd's convertToClusterVersion reads it: a semantic version
    (go-semver: three dotted integers, optional -pre and +meta), or major.minor; None when neither."""
    for text in (v, v + ".0"):
        parsed = _go_semver(text)
        if parsed is not None:
            return parsed
    return None


def _go_semver(text: str) -> tuple[int, int] | None:
    text, _, meta = text.partition("+")
    text, _, pre = text.partition("-")
    parts = text.split(".", 2)
    if len(parts) != 3:
        return None
    for ident in (pre, meta):
        if ident and not _SEMVER_IDENT.match(ident):
            return None
    nums = []
    for p in parts:
        if not re.fullmatch(r"[+-]?[0-9]+", p):  # strconv.ParseInt(p, 10, 64)
            return None
        n = int(p)
        if not -(1 << 63) <= n < (1 << 63):
            return None
        nums.append(n)
    return nums[0], nums[1]


def alarm_text(member_id: int, alarm: int) -> str:
    # etcd formats active alarms in Status.errors as "memberID:<dec> alarm:<NAME> ".
    name = rpc_pb2.AlarmType.Name(alarm)
    return f"memberID:{member_id} alarm:{name} "
