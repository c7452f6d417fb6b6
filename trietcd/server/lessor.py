"""The member's lease shell: the clock, the leader's expiry and checkpoint loop, and the lease requests
clients make (etcd 3.5.1 `etcdserver/v3_server.go` Lease*, `server.go` revokeExpiredLeases, `lessor.go`
runLoop).

Rules:
- The lessor core (`trietcd/lease`) is changed only in the event loop's thread: by the applier (grants,
  revokes, checkpoints, key changes), by `on_leader_change`/`after_apply` (called from the raft loop and the
  applier) and by keep-alives; each call runs to its end without awaiting, so none sees half of another.
- Time is `trio.current_time()` (monotonic); the applier is handed the same clock.
- Promotion follows etcd: once the leader has applied the first entry of its term (the empty one), every
  lease expires an election timeout after its remaining TTL. Demotion is immediate on losing leadership.
- Every 500 ms the leader proposes a revoke for up to 500 expired leases (etcd's 1000/s), at most
  MAX_PENDING_REVOKES in flight, and, with checkpointing, the checkpoints due (up to 1000 per entry).
- A keep-alive answers from the leader only; one of a lease that expired but is not revoked yet waits for
  the revoke (then the lease is gone: TTL 0) or for a demotion (then it tries again), so a lease the leader
  revokes is never reported renewed after its revoke applied.
"""

from __future__ import annotations

import trio

from proto.etcdserverpb import rpc_pb2
from trietcd.lease import (
    LEASE_CHECKPOINT_RATE,
    LEASE_REVOKE_RATE,
    MAX_CHECKPOINT_BATCH,
    LeaseExpiredError,
    LeaseNotFoundError,
    Lessor,
    NotPrimaryError,
    min_lease_ttl_s,
)
from trietcd.raft.raft import StateType
from trietcd.server.errors import RequestTimeoutError, ServerError

__all__ = ["MAX_PENDING_REVOKES", "REVOKE_INTERVAL_S", "LeaseKeeper"]

REVOKE_INTERVAL_S = 0.5
# etcd keeps 16 revokes in flight (maxPendingRevokes). Here the revokes in flight share the WAL fsyncs of
# one batch, and with 16 a loaded machine revoked only ~420 leases/s; 256 keeps a storm of expiries near the
# 1000/s that `expired`'s limit per round enforces. What a storm costs other clients' put latency:
# `python -m benchmarks.lease_expiry` (64 in flight measured the same).
MAX_PENDING_REVOKES = 256
_ID_MASK = (1 << 63) - 1


def new_lessor(config, *, backend, store) -> Lessor:
    return Lessor(
        min_ttl_s=min_lease_ttl_s(config.election_ticks(), config.heartbeat_interval),
        backend=backend,
        store=store,
        checkpointing=bool(config.experimental_enable_lease_checkpoint),
        persist_checkpoints=bool(config.experimental_enable_lease_checkpoint
                                 and config.experimental_enable_lease_checkpoint_persist),
    )


class LeaseKeeper:
    """The lessor of one member and the requests on it. Of the member it uses: config, propose(field, request),
    the request-id generator, the raft node (state, term, commit index), the applied index and term,
    `_wait_applied(index)`, request_timeout_s and log."""

    def __init__(self, member, lessor: Lessor) -> None:
        self.member = member
        self.lessor = lessor
        self.extend_s = member.config.election_ticks() * member.config.heartbeat_interval / 1000
        self._changed = trio.Event()
        self.promoted_at: float | None = None  # when this member's lessor last became primary

    @staticmethod
    def now() -> float:
        return trio.current_time()

    # ---- leadership (called by the member, never awaiting)

    def on_leader_change(self, leading: bool) -> None:
        if not leading and self.lessor.primary:
            self.lessor.demote()
        self._pulse()

    def after_apply(self) -> None:
        """Promotes once this member leads and has applied an entry of its term (the first is the empty
        entry a new leader appends, as etcd promotes when applying it)."""
        m = self.member
        if (not self.lessor.primary and m.node.raft.state is StateType.LEADER
                and m._applied_term == m.node.raft.term):
            self.promoted_at = self.now()
            self.lessor.promote(self.promoted_at, self.extend_s)
        self._pulse()

    def _pulse(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    # ---- client requests

    async def grant(self, request: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if request.ID == 0:
            # The server picks the ID at proposal time, so the log holds it (a positive int64).
            r = rpc_pb2.LeaseGrantRequest()
            r.CopyFrom(request)
            while r.ID == 0:
                r.ID = self.member._ids.next() & _ID_MASK
            request = r
        return await self.member.propose("lease_grant", request)

    async def revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        return await self.member.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id))

    def renew_now(self, lease_id: int) -> int | None:
        """`renew`'s common case, without waiting: the granted TTL, None when the renewal has to wait (not
        primary yet, the commit not applied, a checkpoint to reset, the lease just expired); raises
        LeaseNotFoundError."""
        lessor = self.lessor
        if lessor.primary and self._applied_commit() and not lessor.needs_checkpoint_reset(lease_id):
            try:
                return lessor.renew(lease_id, self.now())
            except (LeaseExpiredError, NotPrimaryError):
                pass
        return None

    async def renew(self, lease_id: int) -> int:
        """A keep-alive: the granted TTL, or raises LeaseNotFoundError (the service answers TTL 0)."""
        ttl = self.renew_now(lease_id)
        if ttl is not None:  # the common case answers at once, without a timeout scope
            return ttl
        with trio.move_on_after(self.member.request_timeout_s):
            while True:
                changed = self._changed
                if not self.lessor.primary:
                    await changed.wait()
                    continue
                await self._wait_applied_commit()
                if self.lessor.needs_checkpoint_reset(lease_id):
                    # Through raft, so every member forgets the checkpointed remainder; a failure leaves it,
                    # and the renewal goes on as etcd's does.
                    try:
                        await self.member.propose("lease_checkpoint", _checkpoints([(lease_id, 0)]))
                    except ServerError:
                        pass
                try:
                    return self.lessor.renew(lease_id, self.now())
                except (LeaseExpiredError, NotPrimaryError):
                    await changed.wait()
        raise RequestTimeoutError()

    async def time_to_live(self, lease_id: int, keys: bool) -> rpc_pb2.LeaseTimeToLiveResponse:
        """Raises LeaseNotFoundError for an unknown lease."""
        with trio.move_on_after(self.member.request_timeout_s):
            while not self.lessor.primary:
                await self._changed.wait()
            await self._wait_applied_commit()
            ttl, granted, attached = self.lessor.time_to_live(lease_id, self.now())
            resp = rpc_pb2.LeaseTimeToLiveResponse(ID=lease_id, TTL=ttl, grantedTTL=granted)
            if keys:
                resp.keys.extend(attached)
            return resp
        raise RequestTimeoutError()

    def leases(self) -> rpc_pb2.LeaseLeasesResponse:
        resp = rpc_pb2.LeaseLeasesResponse()
        for lease in self.lessor.sorted_leases(self.now()):
            resp.leases.add(ID=lease.id)
        return resp

    def _applied_commit(self) -> bool:
        m = self.member
        return m.applied_index >= m.node.raft.raft_log.committed

    async def _wait_applied_commit(self) -> None:
        # A new leader answers only after applying what it committed (etcd's waitAppliedIndex), so a revoke
        # committed before is not missed.
        m = self.member
        await m._wait_applied(m.node.raft.raft_log.committed)

    # ---- the leader's loop

    async def run(self) -> None:
        limiter = trio.CapacityLimiter(MAX_PENDING_REVOKES)
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(REVOKE_INTERVAL_S)
                if not self.lessor.primary:
                    continue
                for lease_id in self.lessor.expired(self.now(), LEASE_REVOKE_RATE // 2):
                    # A fresh borrower each: a lease whose revoke is still in flight may be found again.
                    borrower = object()
                    await limiter.acquire_on_behalf_of(borrower)
                    nursery.start_soon(self._revoke_expired, lease_id, limiter, borrower)
                await self._checkpoint_due()

    async def _revoke_expired(self, lease_id: int, limiter: trio.CapacityLimiter, borrower: object) -> None:
        try:
            await self.revoke(lease_id)
        except (LeaseNotFoundError, ServerError) as exc:
            # Revoked meanwhile, or not applied: proposed again once the retry interval passes.
            self.member.log.warn("failed to revoke lease", caller="etcdserver/server.go",
                                 **{"lease-id": f"{lease_id:016x}", "error": str(exc)})
        finally:
            limiter.release_on_behalf_of(borrower)

    async def _checkpoint_due(self) -> None:
        for _ in range(LEASE_CHECKPOINT_RATE // 2):
            due = self.lessor.due_checkpoints(self.now(), MAX_CHECKPOINT_BATCH)
            if due:
                try:
                    await self.member.propose("lease_checkpoint", _checkpoints(due))
                except ServerError:
                    return
            if len(due) < MAX_CHECKPOINT_BATCH:
                return


def _checkpoints(items) -> rpc_pb2.LeaseCheckpointRequest:
    req = rpc_pb2.LeaseCheckpointRequest()
    for lease_id, remaining in items:
        req.checkpoints.add(ID=lease_id, remaining_TTL=remaining)
    return req
