"""The member: the state one etcd member holds, and the nursery that runs it.

Rules:
- One `trio.run` per process; `Member.run` opens the member's nursery and every long-lived task is its child
  (DESIGN.md "Who owns what"). Cancelling that scope stops the member; the data dir is closed on the way out.
- The raft loop alone touches the RawNode: other tasks hand it ticks, proposals, read requests and campaign
  requests, and wake it. Per Ready it appends entries and the hard state to the WAL (one fsync when raft says
  so), then has the committed entries applied, then advances. So an entry is applied, and its proposer
  answered, only after it is durable in the WAL.
- Where that work runs follows the disk: while its fdatasync is fast (under 2 ms on average) the raft loop
  saves the WAL and applies the batch itself, since a hand-off to a thread or a task costs more than the work
  saved; on a slow disk the save goes to a worker thread and the batch to the applier task, so applying one
  batch overlaps the fsync of the next. Batches never overtake each other.
- The applier alone writes the state (mvcc, alarms, v2 store, membership, backend), one batch of entries at a
  time, holding the backend lock; the committer and the compactor take the same lock, so a backend commit
  never sees half of an entry.
- Linearizable reads wait for a ReadIndex and for the applier to reach it; requests that arrive while one is
  in flight share the next one.
- Snapshots every --snapshot-count applied entries: backend commit, `.snap` file, WAL snapshot record, WAL locks
  released, raft log compacted to 5000 entries behind. WAL, snap and snap.db files beyond --max-wals /
  --max-snapshots are purged every 30 s.
- Clients are served once this member's attributes are published through raft, as etcd does.
- Leases (server/lessor.py): the applier and the lease shell change the lessor, both in the event loop's thread;
  only the leader counts time, from when it has applied the first entry of its term.
"""

from __future__ import annotations

import collections
import ipaddress
import math
import os
import random
import socket
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

import trio

import trietcd
from proto.etcdserverpb import rpc_pb2
from proto.etcdserverpb.raft_internal_pb2 import RequestHeader as _RequestHeader
from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from trietcd.auth import AuthError, AuthKeeper
from trietcd.backend import humanize_bytes
from trietcd.log import Logger, go_duration
from trietcd.log import logger as default_logger
from trietcd.metrics import server_metrics
from trietcd.mvcc import KVStore
from trietcd.mvcc.apply import Applier
from trietcd.mvcc.errors import CompactedError, MvccError
from trietcd.raft import errors as raft_errors
from trietcd.raft.raft import Config as RaftConfig
from trietcd.raft.raft import StateType
from trietcd.raft.rawnode import RawNode
from trietcd.server import autocompact
from trietcd.server.alarms import AlarmStore
from trietcd.server.apply import CompactionResult, EntryApplier, QuotaExceeded
from trietcd.server.corrupt import CorruptionChecker
from trietcd.server.disk import open_disk
from trietcd.server.errors import (
    BootstrapError,
    NoSpaceError,
    ProposalDroppedError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerError,
    StoppedError,
)
from trietcd.server.lessor import LeaseKeeper, new_lessor
from trietcd.server.membership import Membership, verify_bootstrap
from trietcd.server.quota import QUOTA_FIELDS, Quota
from trietcd.server.reqid import IdGenerator
from trietcd.server.watch import WatchHub
from trietcd.v2store import cluster_version_request, publish_request
from trietcd.wal import segment as walseg
from trietcd.wal.record import uvarint

__all__ = ["Member"]

# Raft entries kept in memory behind a snapshot, for followers that lag (etcd's SnapshotCatchUpEntries).
SNAPSHOT_CATCH_UP_ENTRIES = 5000
PURGE_INTERVAL_S = 30.0
READ_INDEX_RETRY_S = 0.5
WAIT_SWEEP_S = 0.1
# While an fdatasync of the WAL takes less than this on average, WAL saves run in the event loop's thread
# (see Member._wal_save).
LEARNER_READY_FRACTION = 0.9  # etcd's readyPercent
WAL_INLINE_SYNC_MAX_S = 0.002
COMPACTION_PAUSE_S = 0.01
WAL_SLOW_SYNC_S = 1.0  # an fdatasync slower than this is logged (etcd's warnSyncDuration)
DEFRAG_CATCH_UP_ROUNDS = 3  # replays of the writes made during a defrag's copy before the last, blocking one
DEFRAG_CATCH_UP_OPS_MIN = 1000  # with fewer writes waiting than this, the last replay takes them
CLUSTER_VERSION = "3.5.0"

ServeTask = Callable[..., Awaitable[None]]


class _Waiter:
    """A proposer waiting for its entry to apply: parked with trio's low-level API (cheaper than an Event and a
    cancel scope per request); `finish` wakes it, the sweeper fails it once its deadline passes."""

    __slots__ = ("task", "result", "done", "deadline")

    def __init__(self) -> None:
        self.task = None
        self.result: object = None
        self.done = False
        self.deadline = math.inf  # set when it is enqueued

    async def wait(self) -> None:
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_):
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def finish(self, result) -> None:
        if self.done:
            return
        self.done = True
        self.result = result
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


class _Taken:
    """`async with _Taken(lock)`: the lock taken without a scheduling round when it is free (`async with lock`
    always yields once: two extra rounds per write at one client, on the raft loop's path)."""

    __slots__ = ("lock",)

    def __init__(self, lock: trio.Lock) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()

    async def __aexit__(self, *exc_info) -> None:
        self.lock.release()


class _Callback(_Waiter):
    """A proposer that is not a task (`Member.propose_soon`): `finish` calls `done(result)` instead of
    waking a task, and forgets the proposal."""

    __slots__ = ("rid", "member", "done_fn")

    def __init__(self, rid: int, member: "Member", done_fn) -> None:
        super().__init__()
        self.rid = rid
        self.member = member
        self.done_fn = done_fn

    def finish(self, result) -> None:
        if self.done:
            return
        self.done = True
        member = self.member
        member._waiters.pop(self.rid, None)
        if isinstance(result, (RequestTimeoutError, ProposalDroppedError)):
            member.metrics.proposals_failed.inc()
        try:
            self.done_fn(result)
        except Exception as exc:  # never into the applier
            member.log.error("answering a proposal failed", error=repr(exc))


class _ReadBatch:
    """Linearizable reads that share one ReadIndex request."""

    __slots__ = ("ctx", "waiters", "done", "index", "sent_at", "first_sent_at", "error")

    def __init__(self, ctx: bytes) -> None:
        self.ctx = ctx
        self.waiters = 0
        self.done = trio.Event()
        self.index = 0
        self.sent_at = 0.0
        self.first_sent_at = 0.0
        self.error: Exception | None = None


class Member:
    def __init__(self, config, *, log: Logger | None = None) -> None:
        self.config = config
        self.log = log or default_logger
        # (mode, retention); an empty retention (a config file without it) is "0", as etcd reads it.
        self._auto_compaction = (config.auto_compaction_mode, config.auto_compaction_retention or "0")
        try:
            autocompact.new_policy(*self._auto_compaction, 0.0)
        except autocompact.RetentionError as exc:
            raise BootstrapError(str(exc)) from None
        boot = None
        if not walseg.exists(config.wal_dir or os.path.join(config.data_dir, "member", "wal")):
            verify_bootstrap(
                name=config.name,
                initial_cluster=config.initial_cluster,
                initial_cluster_map=config.initial_cluster_map(),
                advertise_peer_urls=tuple(config.initial_advertise_peer_urls),
                resolve=resolve_url,
            )
            boot = Membership.bootstrap(
                name=config.name,
                initial_cluster=config.initial_cluster_map(),
                cluster_token=config.initial_cluster_token,
                client_urls=tuple(config.advertise_client_urls),
            )
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)  # as etcd: 0700, refused if not writable
        self.disk = open_disk(
            config,
            bootstrap_members=list(boot.members.values()) if boot else [],
            local_id=boot.local_id if boot else 0,
            cluster_id=boot.cluster_id if boot else 0,
            log=self.log,
        )
        disk = self.disk
        self.backend = disk.backend
        if config.experimental_bootstrap_defrag_threshold_megabytes:
            try:
                maybe_defrag_backend(self.backend, config.experimental_bootstrap_defrag_threshold_megabytes, self.log)
            except BaseException:
                disk.close()
                raise
        self.membership = Membership(cluster_id=disk.cluster_id, local_id=disk.member_id, members={})
        self.quota = Quota(config.quota_backend_bytes, self.backend.size_bytes)
        try:
            self.store = KVStore.open(self.backend)
            self.lessor = new_lessor(config, backend=self.backend, store=self.store)
            self.lessor.recover()  # leases from the lease bucket, their keys from the live KVs
            self.watch_hub = WatchHub(self.store, progress_interval_s=config.experimental_watch_progress_notify_interval)
            self.alarms = AlarmStore.load(self.backend)
            try:
                self.auth = AuthKeeper(self.backend, token_opts=config.auth_token,
                                       token_ttl_s=config.auth_token_ttl, bcrypt_cost=config.bcrypt_cost,
                                       client_cert_auth=config.client_transport_security.client_cert_auth,
                                       wait_applied=self._wait_applied, log=self.log)
            except AuthError as exc:  # --auth-token: etcd does not start either
                raise BootstrapError(str(exc)) from None
            self._applier = EntryApplier(
                store=self.store,
                kv=Applier(self.store, self.lessor.exists),
                backend=self.backend,
                v2=disk.v2,
                membership=self.membership,
                alarms=self.alarms,
                apply_conf_change=self._apply_conf_change,
                log=self.log,
                quota=self.quota,
                lessor=self.lessor,
                lease_now=trio.current_time,
                auth=self.auth.store,
                auth_now=trio.current_time,
            )
            self.leases = LeaseKeeper(self, self.lessor)
        except BaseException:
            disk.close()
            raise
        self.version = trietcd.etcd_version
        snap_meta = disk.snapshot.metadata
        self._conf_state = raft_pb2.ConfState()
        self._conf_state.CopyFrom(snap_meta.conf_state)
        self.node = RawNode(RaftConfig(
            id=disk.member_id,
            election_tick=config.election_ticks(),
            heartbeat_tick=1,
            storage=disk.storage,
            rng=random.Random(),
            applied=snap_meta.index,
            max_size_per_msg=1 << 20,
            max_inflight_msgs=4096 // 8,
            max_uncommitted_entries_size=1 << 30,
            check_quorum=True,
            pre_vote=True,
        ))
        hs = disk.storage.hard_state
        self.raft_term = hs.term
        self.raft_index = hs.commit  # the commit index (etcd's Status.raftIndex)
        self.applied_index = snap_meta.index
        self.snapshot_index = snap_meta.index
        self.leader_id = 0
        self._ids = IdGenerator(disk.member_id, int(time.time() * 1000))
        self._waiters: dict[int, _Waiter] = {}
        self._deadlines: collections.deque[_Waiter] = collections.deque()
        self._proposals: list[tuple[int, bytes]] = []
        # Answers of propose_soon callers held back a scheduling round (see _apply_batch), and their wake-up.
        self._late_answers: list[tuple[_Waiter, object]] = []
        self._late_wake = trio.Event()
        self._conf_proposals: list[raft_pb2.ConfChange] = []  # membership changes, ID set
        # (peer URL, revision) -> PeerHash: a peer's HashKV over the peer port, set by whoever serves it
        # (trietcd/peer/hashkv.py); the corruption checks count peers as unreachable without it.
        self.peer_hash_kv: Callable[[str, int], Awaitable] | None = None
        self._ticks = 0
        self._campaign = False
        self._transferee = 0  # a leadership transfer for the raft loop to start
        self._defrag_lock = trio.Lock()
        self._raft_wake = trio.Event()
        self._read_batch = _ReadBatch(self._read_ctx())
        self._reads_in_flight: dict[bytes, _ReadBatch] = {}
        self._applied_waiters: list[tuple[int, trio.Event]] = []
        self._backend_lock = trio.Lock()
        self._wal_lock = trio.Lock()
        self._backend_taken = _Taken(self._backend_lock)  # the raft loop's and applier's way in
        self._wal_taken = _Taken(self._wal_lock)
        self._wal_sync_s = 0.0  # moving average of the WAL's fdatasync duration
        self._apply_backlog = 0  # batches handed to the applier task and not yet applied
        self._commit_now = trio.Event()
        self._compactions_send, self._compactions_recv = trio.open_memory_channel(float("inf"))
        self._changed = trio.Event()
        self._leader_changed = trio.Event()
        self._applied_term = 0
        self._ready = trio.Event()
        # etcd's request timeout: 5 s plus two election timeouts.
        self.request_timeout_s = 5.0 + 2 * config.election_timeout / 1000
        # (revision, (term, cluster id, member id), encoded fields before and
        # after the revision, the whole field): see header_field.
        self._header_field: tuple = (None, None, (b"", b""), b"")
        # Called when a graceful stop begins (e.g. the gRPC health service
        # turns NOT_SERVING), before listeners close.
        self.on_stop: list[Callable[[], None]] = []
        self._listeners_scope: trio.CancelScope | None = None
        self._member_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._stopping = False
        self.metrics = server_metrics()
        self._live_keys_at = (0, 0)  # (revision, live keys at it)
        self._bind_metrics()

    # --- identity -----------------------------------------------------

    @property
    def id(self) -> int:
        return self.membership.local_id

    @property
    def cluster_id(self) -> int:
        return self.membership.cluster_id

    @property
    def cluster_version(self) -> str:
        v = self._applier.cluster_version
        return v if v else "not_decided"

    def header(self, revision: int | None = None):
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.id,
            revision=self.store.current_revision if revision is None else revision,
            raft_term=self.raft_term,
        )

    def header_field(self, revision: int) -> bytes:
        """`header(revision)` encoded as field 1 of a response (for
        KVService). The last one is kept: responses at one revision and term
        share it, and bytes cannot be changed by whoever receives them."""
        ids = (self.raft_term, self.membership.cluster_id, self.membership.local_id)
        cached = self._header_field
        if cached[0] == revision and cached[1] == ids:
            return cached[3]
        parts = cached[2]
        if cached[1] != ids:
            # The fields around the revision (1, 2 before it, 4 after), each
            # encoded alone: concatenated, they are the header's encoding.
            full = self.header(0)  # revision 0: no field 3
            term, full.raft_term = full.raft_term, 0
            before = full.SerializeToString()
            full.raft_term = term
            parts = (before, full.SerializeToString()[len(before) :])
        body = parts[0] + _varint_field(3, revision) + parts[1]
        # Tag of field 1, wire type 2, and the length (under 128: a header
        # holds four varints).
        field = b"\x0a" + bytes((len(body),)) + body
        self._header_field = (revision, ids, parts, field)
        return field

    # --- writes ---------------------------------------------------------

    async def propose(self, field: str, request, auth=None):
        """One write through raft, as etcd's processInternalRaftRequest: the request travels as an
        InternalRaftRequest with a fresh request ID and, in its header, who proposed it (`auth`, an
        AuthInfo from `self.auth.auth_info(call)`); one larger than --max-request-bytes is refused before it
        reaches the log. Returns what applying it gave, or raises the error it failed with."""
        rid, data = self._entry(field, request, auth)
        if field in QUOTA_FIELDS and not self.quota.available(field, request):
            # etcd's quota check before the log: the alarm is proposed instead of the request.
            await self._raise_nospace()
            raise NoSpaceError()
        result = await self._propose_and_wait(rid, data)
        if isinstance(result, _CompactionWait):
            if result.physical:
                await result.compaction_done.wait()
            return result.response
        return result

    def propose_soon(self, field: str, request, done, auth=None) -> bool:
        """`propose` for a caller that does not wait in a task: `done(result)` is called, from the applier,
        with what applying the write gave or the error it failed with (a ServerError, MvccError, ...).
        Returns False, having proposed nothing, when the write needs `propose` instead (the member is
        stopping, or the quota is short and the alarm is to be raised); raises as `propose` does when the
        request is too large."""
        if self._stopping or (field in QUOTA_FIELDS and not self.quota.available(field, request)):
            return False
        rid, data = self._entry(field, request, auth)
        self._enqueue(rid, _Callback(rid, self, done), data)
        return True

    def _entry(self, field: str, request, auth) -> tuple[int, bytes]:
        """A fresh request ID and the InternalRaftRequest carrying `request`; refuses one larger than
        --max-request-bytes."""
        rid = self._ids.next()
        data = _internal_request(field, request, rid, self.auth.proposer_info(auth))
        if len(data) > self.config.max_request_bytes:
            raise RequestTooLargeError()
        return rid, data

    def _enqueue(self, rid: int, waiter: _Waiter, data: bytes | None, conf_change=None) -> None:
        """Hands a proposal to the raft loop; `waiter` learns its outcome, or fails at the request timeout."""
        waiter.deadline = trio.current_time() + self.request_timeout_s
        self._waiters[rid] = waiter
        self._deadlines.append(waiter)
        if conf_change is not None:
            self._conf_proposals.append(conf_change)
        else:
            self._proposals.append((rid, data))
        self._raft_wake.set()

    def read_ready(self) -> bool:
        """Whether a linearizable read may be served now, without waiting: this member is the only voter,
        leads, and has applied everything committed (what `read_barrier` would find)."""
        raft = self.node.raft
        return (raft.state is StateType.LEADER and len(self._conf_state.voters) == 1
                and not self._conf_state.learners and self.applied_index >= raft.raft_log.committed)

    async def _raise_nospace(self) -> None:
        alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.id, alarm=rpc_pb2.NOSPACE)
        rid = self._ids.next()
        await self._propose_and_wait(rid, _internal_request("alarm", alarm, rid))

    async def _finish_after_nospace(self, rid: int, result) -> None:
        self.log.warn("message exceeded backend quota; raising alarm", caller="etcdserver/server.go",
                      **{"quota-size-bytes": self.config.quota_backend_bytes})
        try:
            await self._raise_nospace()
        finally:
            self._finish(rid, result)

    async def configure(self, cc: raft_pb2.ConfChange):
        """One membership change through raft (etcd's configure): `cc` gets a fresh ID; returns the
        members once it is applied, or raises the error its validation at apply gave."""
        cc.id = self._ids.next()
        error = await self._propose_and_wait(cc.id, None, conf_change=cc)
        if error is not None:
            raise error
        return self.membership.sorted_members()

    def learner_ready(self, member_id: int) -> bool:
        """etcd's isLearnerReady on the leader: a member raft tracks whose match index is under 90% of
        the leader's is not ready (an unknown one is, its promotion fails at apply)."""
        progress = self.node.raft.prs.progress
        pr = progress.get(member_id)
        if pr is None:
            return True
        return pr.match >= progress[self.id].match * LEARNER_READY_FRACTION

    async def _propose_and_wait(self, rid: int, data: bytes | None, *, conf_change=None):
        if self._stopping:
            raise StoppedError()
        waiter = _Waiter()
        self._enqueue(rid, waiter, data, conf_change)
        try:
            await waiter.wait()
        finally:
            self._waiters.pop(rid, None)
        result = waiter.result
        if isinstance(result, BaseException):
            if isinstance(result, (RequestTimeoutError, ProposalDroppedError)):
                self.metrics.proposals_failed.inc()
            raise result
        return result

    async def _sweeper(self) -> None:
        """Fails proposals not applied within the request timeout (their deadlines come in order)."""
        deadlines = self._deadlines
        while True:
            await trio.sleep(WAIT_SWEEP_S)
            now = trio.current_time()
            while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
                w = deadlines.popleft()
                w.finish(RequestTimeoutError())
            for ctx, b in list(self._reads_in_flight.items()):
                if now - b.first_sent_at >= self.request_timeout_s:
                    del self._reads_in_flight[ctx]
                    b.error = RequestTimeoutError()
                    self.metrics.read_indexes_failed.inc()
                    b.done.set()

    # --- reads ----------------------------------------------------------

    async def read_barrier(self) -> None:
        """Returns once this member has applied everything committed before the call (etcd's
        linearizableReadNotify: a ReadIndex through raft, then waiting for the applier)."""
        raft = self.node.raft
        if raft.state is StateType.LEADER and len(self._conf_state.voters) == 1 and not self._conf_state.learners:
            # The only voter leads: nobody else can commit, so its commit index is the read index (raft
            # answers a ReadIndex the same way, one loop turn later).
            await self._wait_applied(raft.raft_log.committed)
            return
        batch = self._read_batch
        batch.waiters += 1
        self._raft_wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        await self._wait_applied(batch.index)

    async def _wait_applied(self, index: int) -> None:
        if self.applied_index >= index:
            return
        ev = trio.Event()
        self._applied_waiters.append((index, ev))
        await ev.wait()

    def _read_ctx(self) -> bytes:
        return struct.pack(">Q", self._ids.next())

    # --- sizes ------------------------------------------------------------

    def db_size_bytes(self) -> int:
        return self.backend.size_bytes()

    def db_size_in_use_bytes(self) -> int:
        return self.backend.size_in_use_bytes()

    async def backend_hash(self) -> tuple[int, int]:
        """Maintenance.Hash: the backend's hash after committing what is pending, and the revision it holds.
        Hashed from a read view in a worker thread: the member serves meanwhile."""
        async with self._backend_lock:
            await self.backend.commit_async()
            snap = self.backend.snapshot()
            revision = self.store.current_revision
        try:
            return await trio.to_thread.run_sync(snap.hash), revision
        finally:
            snap.close()

    # --- maintenance ------------------------------------------------------

    async def snapshot(self):
        """A read view of the backend after committing what is pending (a `backend.Snapshot`; the caller
        closes it). Writes go on while it is read."""
        async with self._backend_lock:
            await self.backend.commit_async()
            return self.backend.snapshot()

    async def defragment(self) -> None:
        """etcd's Defragment, without stopping the member: the copy of the last commit is made in a worker
        thread while reads and writes go on; the writes made meanwhile are replayed on the copy, the last
        ones with writes paused, and the copy is renamed over the db. One defrag at a time."""
        async with self._defrag_lock:
            async with self._backend_lock:
                await self.backend.commit_async()
                job = self.backend.begin_defrag()
            try:
                await trio.to_thread.run_sync(job.copy)
                for _ in range(DEFRAG_CATCH_UP_ROUNDS):
                    if len(job.ops) < DEFRAG_CATCH_UP_OPS_MIN:
                        break
                    await trio.to_thread.run_sync(job.apply, job.take_ops())
                async with self._backend_lock:
                    await self.backend.finish_defrag_async(job)
            except BaseException:
                self.backend.abort_defrag(job)
                raise

    async def move_leader(self, transferee: int, timeout_s: float) -> bool:
        """Hands leadership to `transferee` (a voting member; the caller checked) and waits until it leads;
        False when that took longer than timeout_s."""
        if self.leader_id == transferee:
            return True
        self.log.info("leadership transfer starting", caller="etcdserver/server.go",
                      **{"local-member-id": f"{self.id:x}", "current-leader-member-id": f"{self.leader_id:x}",
                         "transferee-member-id": f"{transferee:x}"})
        self._transferee = transferee
        self._raft_wake.set()
        with trio.move_on_after(timeout_s):
            while self.leader_id != transferee:
                await self._changed.wait()
            return True
        return False

    async def health(self, query: dict[str, list[str]]) -> tuple[bool, str]:
        excluded = {a.upper() for a in query.get("exclude", ())}
        for _, alarm in self.alarms.list():
            name = rpc_pb2.AlarmType.Name(alarm)
            if name not in excluded:
                return False, f"ALARM {name}"
        if self.leader_id == 0:
            return False, "RAFT NO LEADER"
        # etcd 3.5.1's checkV3Health: then a linearizable read, within the request timeout.
        try:
            with trio.fail_after(self.request_timeout_s):
                await self.read_barrier()
        except (trio.TooSlowError, RequestTimeoutError, ProposalDroppedError):
            return False, "RANGE ERROR:etcdserver: request timed out"
        except StoppedError:
            return False, "RANGE ERROR:etcdserver: server stopped"
        return True, ""

    def version_info(self) -> dict[str, str]:
        return {"etcdserver": self.version, "etcdcluster": self.cluster_version}

    # --- tasks ------------------------------------------------------------

    async def run(
        self,
        listeners: Sequence[ServeTask],
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs the member until stopped; started() once every listener is bound."""
        try:
            with trio.CancelScope() as member_scope:
                self._member_scope = member_scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    apply_send, apply_recv = trio.open_memory_channel(16)
                    nursery.start_soon(self._ticker)
                    nursery.start_soon(self._raft_loop, apply_send)
                    nursery.start_soon(self._apply_loop, apply_recv)
                    nursery.start_soon(self._committer)
                    nursery.start_soon(self._compactor)
                    nursery.start_soon(self._purger)
                    nursery.start_soon(self._publisher)
                    nursery.start_soon(self._sweeper)
                    nursery.start_soon(self._late_answerer)
                    nursery.start_soon(self.auth.as_root, self.leases.run)  # expired leases are revoked as root
                    nursery.start_soon(self.auth.run)
                    nursery.start_soon(self.watch_hub.run)
                    nursery.start_soon(self._auto_compactor)
                    if self.store.pending_compaction is not None:
                        self._compactions_send.send_nowait((self.store.pending_compaction, trio.Event()))
                    await self._ready.wait()
                    checker = CorruptionChecker(self)
                    if self.config.experimental_initial_corrupt_check and not self.disk.new:
                        await checker.initial_check()  # before client traffic; a mismatch stops the start
                    if self.config.experimental_corrupt_check_time > 0:
                        nursery.start_soon(checker.monitor, self.config.experimental_corrupt_check_time)
                    listeners_scope = trio.CancelScope()
                    self._listeners_scope = listeners_scope
                    listening = await nursery.start(self._serve_listeners, listeners, listeners_scope)
                    self.log.info("ready to serve client requests", caller="embed/serve.go")
                    task_status.started(listening)
        finally:
            with trio.CancelScope(shield=True):
                async with self._backend_lock:
                    self.disk.close()
            self._stopped.set()

    async def _serve_listeners(self, listeners, scope, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                addresses = [await nursery.start(serve) for serve in listeners]
                task_status.started(addresses)

    async def stop(self, shutdown_connections: Callable[[float], Awaitable[None]], grace_s: float) -> None:
        """Graceful stop: no new connections, GOAWAY, in-flight calls get grace_s."""
        self.log.info(
            "closing etcd server",
            caller="embed/etcd.go",
            name=self.config.name,
            **{"data-dir": self.config.data_dir},
        )
        for hook in self.on_stop:
            hook()
        if self._listeners_scope is not None:
            self._listeners_scope.cancel()
        with trio.move_on_after(grace_s + 1):
            await shutdown_connections(grace_s)
        self._stopping = True
        if self._member_scope is not None:
            self._member_scope.cancel()
        await self._stopped.wait()
        self.log.info("closed etcd server", caller="embed/etcd.go", name=self.config.name)

    def _bind_metrics(self) -> None:
        """Exports this member's state through the scrape-time functions of etcd's families."""
        m = self.metrics
        m.has_leader.set_function(lambda: self.leader_id != 0)
        m.is_leader.set_function(lambda: self.leader_id != 0 and self.leader_id == self.id)
        m.proposals_committed.set_function(lambda: self.raft_index)
        m.proposals_applied.set_function(lambda: self.applied_index)
        m.proposals_pending.set_function(lambda: len(self._waiters))
        m.quota_backend_bytes.set(self.quota.max_bytes)
        m.server_id.labels(f"{self.id:x}").set(1)
        m.server_version.labels(self.version).set(1)
        m.cluster_version_function = lambda: self._applier.cluster_version or ""
        m.db_total_size.set_function(self.db_size_bytes)
        m.db_total_size_in_use.set_function(self.db_size_in_use_bytes)
        m.keys.set_function(self._live_keys)
        m.current_revision.set_function(lambda: self.store.current_revision)
        m.compact_revision.set_function(lambda: max(self.store.compact_revision, 0))
        m.is_learner.set_function(self._is_learner)
        watch = self.watch_hub.core
        m.watchers.set_function(lambda: sum(watch.watcher_counts()))
        m.slow_watchers.set_function(lambda: sum(watch.watcher_counts()[1:]))
        m.watch_streams.set_function(lambda: len(watch.streams))

    def _is_learner(self) -> bool:
        me = self.membership.members.get(self.id)
        return me is not None and me.is_learner

    def _live_keys(self) -> int:
        """etcd_debugging_mvcc_keys_total: keys not deleted. One pass over the index, so counted again only
        when the revision moved since the last scrape."""
        store = self.store
        revision = store.current_revision
        cached = self._live_keys_at
        if cached[0] != revision:
            cached = self._live_keys_at = (revision, store.index.count_revisions(b"", b"", revision))
        return cached[1]

    # ---- the raft loop

    async def _ticker(self) -> None:
        interval = self.config.heartbeat_interval / 1000
        while True:
            await trio.sleep(interval)
            self._ticks += 1
            self._raft_wake.set()

    def _feed_node(self) -> None:
        """Hands the node what other tasks queued for it."""
        node = self.node
        while self._ticks:
            self._ticks -= 1
            node.tick()
        if self._campaign:
            self._campaign = False
            node.campaign()
        if self._transferee:
            node.transfer_leader(self._transferee)
            self._transferee = 0
        # Without a leader, proposals wait for one (or their timeout), as etcd's raft node holds them;
        # a follower without a leader would drop them.
        if self._proposals and self.leader_id:
            proposals, self._proposals = self._proposals, []
            try:
                node.propose_many([data for _, data in proposals])
            except raft_errors.ProposalDroppedError:
                for rid, _ in proposals:
                    self._finish(rid, ProposalDroppedError())
        while self._conf_proposals and self.leader_id:
            cc = self._conf_proposals.pop(0)
            try:
                node.propose_conf_change(cc)
            except raft_errors.ProposalDroppedError:
                self._finish(cc.id, ProposalDroppedError())
        batch = self._read_batch
        if batch.waiters:
            self._read_batch = _ReadBatch(self._read_ctx())
            batch.sent_at = batch.first_sent_at = trio.current_time()
            self._reads_in_flight[batch.ctx] = batch
            node.read_index(batch.ctx)
        if self._reads_in_flight:
            now = trio.current_time()
            for b in self._reads_in_flight.values():
                if now - b.sent_at >= READ_INDEX_RETRY_S:
                    self.metrics.slow_read_indexes.inc()
                    b.sent_at = now
                    node.read_index(b.ctx)

    async def _raft_loop(self, apply_send) -> None:
        node = self.node
        storage = self.disk.storage
        wal = self.disk.wal
        while True:
            await self._raft_wake.wait()
            self._raft_wake = trio.Event()
            self._feed_node()
            while node.has_ready():
                rd = node.ready()
                if rd.soft_state is not None:
                    self._on_soft_state(rd.soft_state)
                hs = rd.hard_state
                if hs.term or hs.commit or hs.vote:
                    self.raft_term = hs.term
                    self.raft_index = hs.commit
                if rd.entries or hs.term or hs.commit or hs.vote:
                    async with self._wal_taken:
                        await self._wal_save(wal, hs, rd.entries)
                    if hs.term or hs.commit or hs.vote:
                        storage.set_hard_state(hs)
                    storage.append(rd.entries)
                for rs in rd.read_states:
                    b = self._reads_in_flight.pop(rs.request_ctx, None)
                    if b is not None:
                        b.index = rs.index
                        b.done.set()
                # rd.messages: a single member has no peers to send to.
                if rd.committed_entries:
                    if self._apply_backlog == 0 and self._wal_sync_s < WAL_INLINE_SYNC_MAX_S:
                        # Nothing queued for the applier and the disk is fast: applying here saves a task
                        # switch per batch and keeps the order (the applier is idle).
                        await self._apply_batch(rd.committed_entries)
                    else:
                        self._apply_backlog += 1
                        await apply_send.send(rd.committed_entries)
                node.advance(rd)
                self._feed_node()

    async def _wal_save(self, wal, hs, entries) -> None:
        """WAL append (and fsync when raft says so). On a disk that syncs fast, in this thread: handing ~0.1 ms
        of work to a worker costs more than it saves. On a slow disk, in a worker thread, so the loop keeps
        serving meanwhile. The choice follows a moving average of the time an fdatasync took."""
        synced_before = wal.last_sync_s
        if self._wal_sync_s < WAL_INLINE_SYNC_MAX_S:
            wal.save(hs, entries)
        else:
            await trio.to_thread.run_sync(wal.save, hs, entries)
        if wal.last_sync_s is not synced_before:  # rebound by each fdatasync
            self.metrics.wal_fsync.observe(wal.last_sync_s)
            if wal.last_sync_s > WAL_SLOW_SYNC_S:
                self.log.warn("slow fdatasync", caller="wal/wal.go:802",
                              took=go_duration(round(wal.last_sync_s * 1e9)),
                              **{"expected-duration": go_duration(round(WAL_SLOW_SYNC_S * 1e9))})
        self._wal_sync_s += (wal.last_sync_s - self._wal_sync_s) / 8

    def _on_soft_state(self, ss) -> None:
        if ss.lead != self.leader_id:
            if ss.lead:
                self.metrics.leader_changes.inc()
                self.log.info("elected leader", caller="raft/raft.go",
                              **{"local-member-id": f"{self.id:x}", "leader": f"{ss.lead:x}",
                                 "term": self.node.raft.term})
            self.leader_id = ss.lead
            ev, self._leader_changed = self._leader_changed, trio.Event()
            ev.set()
            if ss.lead:
                self._raft_wake.set()  # proposals held for a leader can go now
            self.leases.on_leader_change(ss.lead == self.id)
            self._pulse()

    def _apply_conf_change(self, cc):
        cs = self.node.apply_conf_change(cc)
        self._conf_state = cs
        return cs

    # ---- the applier

    async def _apply_loop(self, apply_recv) -> None:
        async for entries in apply_recv:
            await self._apply_batch(entries)
            self._apply_backlog -= 1

    async def _apply_batch(self, entries) -> None:
        applier = self._applier
        watch = self.watch_hub.core
        notified = watch.notified
        async with self._backend_taken:
            results = applier.apply(entries, time.time_ns())
        # A write whose events went to watchers is answered after the watch streams had their turn, as a
        # waiting task would be (etcd's watchers usually see an event before its writer sees the answer).
        late = watch.notified != notified
        last = entries[-1]
        self.applied_index = last.Index
        self._applied_term = last.Term
        self.leases.after_apply()  # promotes the lessor once a new leader applied its first entry
        count = _MVCC_COUNTS.get
        for rid, result in results:
            counter = count(type(result))
            if counter is not None:
                counter(self.metrics, result)
            if isinstance(result, CompactionResult):
                done = trio.Event()
                self._compactions_send.send_nowait((result.compaction, done))
                result = _CompactionWait(result.response, result.physical, done)
            elif isinstance(result, QuotaExceeded) and not self.alarms.has(rpc_pb2.NOSPACE):
                self._nursery.start_soon(self._finish_after_nospace, rid, result)
                continue
            if late and type(self._waiters.get(rid)) is _Callback:
                self._late_answers.append((self._waiters[rid], result))
                self._late_wake.set()
                continue
            self._finish(rid, result)
        self._wake_applied()
        self._pulse()
        if self.backend.pending >= self.backend.batch_limit:
            self._commit_now.set()
        if self.applied_index - self.snapshot_index > self.config.snapshot_count:
            await self._snapshot()
        self._maybe_campaign()

    async def _late_answerer(self) -> None:
        while True:
            await self._late_wake.wait()
            # Woken with the watch streams' tasks: their turn comes first, then their connections' writers'.
            await trio.lowlevel.cancel_shielded_checkpoint()
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._late_wake = trio.Event()
            answers, self._late_answers = self._late_answers, []
            for waiter, result in answers:
                waiter.finish(result)

    def _pulse(self) -> None:
        """Wakes whoever waits for the leader or the applied index to change."""
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    def _finish(self, rid: int, result) -> None:
        waiter = self._waiters.pop(rid, None)
        if waiter is not None:
            waiter.finish(result)

    def _wake_applied(self) -> None:
        if not self._applied_waiters:
            return
        applied = self.applied_index
        keep = []
        for index, ev in self._applied_waiters:
            if index <= applied:
                ev.set()
            else:
                keep.append((index, ev))
        self._applied_waiters = keep

    def _maybe_campaign(self) -> None:
        # A member alone in its cluster need not wait an election timeout to lead (etcd fast-forwards its
        # ticks for the same reason).
        raft = self.node.raft
        if raft.state is not StateType.LEADER and not self.leader_id \
                and list(self._conf_state.voters) == [self.id] and raft.raft_log.committed == self.applied_index:
            self._campaign = True
            self._raft_wake.set()

    async def _snapshot(self) -> None:
        index = self.applied_index
        async with self._backend_lock:
            await self.backend.commit_async()
        snap = self.disk.storage.create_snapshot(index, self._conf_state, self._applier.v2.to_json())
        walsnap = record_pb2.Snapshot(index=index, term=snap.metadata.term)
        walsnap.conf_state.CopyFrom(self._conf_state)
        async with self._wal_lock:
            await trio.to_thread.run_sync(self._save_snapshot, snap, walsnap)
        self.snapshot_index = index
        if index > SNAPSHOT_CATCH_UP_ENTRIES:
            try:
                self.disk.storage.compact(index - SNAPSHOT_CATCH_UP_ENTRIES)
            except raft_errors.CompactedError:
                pass
        self.log.info("saved snapshot", caller="etcdserver/server.go", **{"snapshot-index": index})

    def _save_snapshot(self, snap, walsnap) -> None:
        self.disk.snapshotter.save(snap)
        self.disk.wal.save_snapshot(walsnap)
        self.disk.wal.release_lock_to(walsnap.index)

    # ---- backend maintenance

    async def _committer(self) -> None:
        interval = self.config.backend_batch_interval or 0.1
        while True:
            with trio.move_on_after(interval):
                await self._commit_now.wait()
            self._commit_now = trio.Event()
            if self.backend.pending:
                async with self._backend_lock:
                    started = time.perf_counter()
                    await self.backend.commit_async()
                    self.metrics.backend_commit.observe(time.perf_counter() - started)

    async def _compactor(self) -> None:
        limit = self.config.experimental_compaction_batch_limit or 1000
        async for compaction, done in self._compactions_recv:
            started = time.perf_counter()
            async with self._backend_lock:
                await self.backend.commit_async()  # scheduledCompactRev is durable before any row goes
            while True:
                async with self._backend_lock:
                    finished = compaction.step(limit)
                    await self.backend.commit_async()
                if finished:
                    break
                await trio.sleep(COMPACTION_PAUSE_S)
            self.log.info("finished scheduled compaction", caller="mvcc/kvstore_compaction.go",
                          **{"compact-revision": compaction.revision,
                             "took": go_duration(round((time.perf_counter() - started) * 1e9))})
            done.set()

    async def _auto_compactor(self) -> None:
        """--auto-compaction-*: server/autocompact.py decides, and only while this member leads; the compaction
        goes through raft as a client's Compact would."""
        policy = autocompact.new_policy(*self._auto_compaction, trio.current_time())
        if policy is None:
            return
        kind = policy.kind
        while True:
            policy.sample(self.store.current_revision)
            await trio.sleep(policy.wait_s)
            revision = policy.due(trio.current_time(), self.store.current_revision, paused=self.leader_id != self.id)
            if revision is None:
                continue
            fields = policy.fields(revision, go_duration)
            self.log.info(f"starting auto {kind} compaction", caller=policy.caller_started, **fields)
            started = trio.current_time()
            try:
                await self.propose("compaction", rpc_pb2.CompactionRequest(revision=revision))
            except CompactedError:
                pass  # already compacted that far: a success, as etcd counts it
            except (ServerError, MvccError) as exc:
                policy.finished(revision, trio.current_time(), False)
                self.log.warn(f"failed auto {kind} compaction", caller=policy.caller_failed, **fields,
                              **{"retry-interval": go_duration(round(policy.wait_s * 1e9)),
                                 "error": str(exc) or type(exc).__name__})
                continue
            policy.finished(revision, trio.current_time(), True)
            self.log.info(f"completed auto {kind} compaction", caller=policy.caller_completed, **fields,
                          took=go_duration(round((trio.current_time() - started) * 1e9)))

    async def _purger(self) -> None:
        """etcd's file purge: at start, then every 30 s (the newest --max-wals / --max-snapshots files stay;
        a WAL segment still locked is never removed)."""
        disk = self.disk
        while True:
            for dirpath, suffix, keep in ((disk.wal_dir, ".wal", self.config.max_wals),
                                          (disk.snap_dir, ".snap", self.config.max_snapshots),
                                          (disk.snap_dir, ".snap.db", self.config.max_snapshots)):
                if keep > 0:
                    for name in await trio.to_thread.run_sync(walseg.purge, dirpath, suffix, keep):
                        self.log.info("purged", caller="fileutil/purge.go", path=os.path.join(dirpath, name))
            await trio.sleep(PURGE_INTERVAL_S)

    # ---- publishing this member

    async def _publisher(self) -> None:
        """Proposes this member's attributes until applied and, while leader, the cluster version whenever it
        is unset or older (etcd's publish and monitorVersions). Clients are served once both are applied, so a
        client never sees the version undecided on a single member."""
        published = False
        while True:
            changed = self._changed
            if not self.leader_id:
                await changed.wait()
                continue
            rid = self._ids.next()
            if not published:
                data = publish_request(rid, self.id, self.config.name, list(self.config.advertise_client_urls))
            elif (self.leader_id == self.id and self._applied_term == self.raft_term
                    and self._applier.cluster_version != CLUSTER_VERSION):
                data = cluster_version_request(rid, CLUSTER_VERSION)
            else:
                if not self._ready.is_set() and (self._applier.cluster_version or self.leader_id != self.id):
                    self._ready.set()
                # Settled: nothing to propose until the leader changes (not woken by every applied batch).
                settled = self._ready.is_set() and (
                    self.leader_id != self.id or self._applier.cluster_version == CLUSTER_VERSION)
                await (self._leader_changed if settled else changed).wait()
                continue
            try:
                await self._propose_and_wait(rid, data)
            except (RequestTimeoutError, ProposalDroppedError):
                await trio.sleep(0.1)
                continue
            if not published:
                published = True
                self.log.info("published local member to cluster through raft", caller="etcdserver/server.go",
                              **{"local-member-id": f"{self.id:x}", "cluster-id": f"{self.cluster_id:x}"})


def _count_txn(metrics, response) -> None:
    """etcd's mvcc counters for one applied Txn: every operation it ran, nested ones included, and the txn
    itself when it ran more than one."""
    ops = [0, 0, 0]  # ranges, puts, deletes
    _count_ops(response, ops)
    metrics.ranges_applied += ops[0]
    metrics.puts += ops[1]
    metrics.deletes += ops[2]
    if sum(ops) > 1:
        metrics.txns += 1


def _count_put(metrics, _) -> None:
    metrics.puts += 1


def _count_delete(metrics, _) -> None:
    metrics.deletes += 1


def _count_ops(response, ops: list[int]) -> None:
    for op in response.responses:
        kind = op.WhichOneof("response")
        if kind == "response_range":
            ops[0] += 1
        elif kind == "response_put":
            ops[1] += 1
        elif kind == "response_delete_range":
            ops[2] += 1
        elif kind == "response_txn":
            _count_ops(op.response_txn, ops)


_MVCC_COUNTS = {
    rpc_pb2.PutResponse: _count_put,
    rpc_pb2.DeleteRangeResponse: _count_delete,
    rpc_pb2.TxnResponse: _count_txn,
}


class _CompactionWait:
    """What a compaction's proposer receives: the response, and whether to wait for the compaction."""

    def __init__(self, response, physical: bool, done: trio.Event) -> None:
        self.response = response
        self.physical = physical
        self.compaction_done = done


def maybe_defrag_backend(backend, threshold_mb: int, log) -> None:
    """--experimental-bootstrap-defrag-threshold-megabytes: at start, defrag when that many MB would be freed."""
    size, in_use = backend.size_bytes(), backend.size_in_use_bytes()
    threshold_bytes = threshold_mb * 1024 * 1024
    sizes = {"current-db-size-bytes": size, "current-db-size": humanize_bytes(size),
             "current-db-size-in-use-bytes": in_use, "current-db-size-in-use": humanize_bytes(in_use)}
    if size - in_use < threshold_bytes:
        log.info("Skipping defragmentation", caller="etcdserver/server.go", **sizes,
                 **{"experimental-bootstrap-defrag-threshold-bytes": threshold_bytes,
                    "experimental-bootstrap-defrag-threshold": humanize_bytes(threshold_bytes)})
        return
    log.info("defragmenting", caller="backend/backend.go", path=backend.path or "", **sizes)
    backend.defrag()
    log.info("finished defragmenting directory", caller="backend/backend.go", path=backend.path or "",
             **{"current-db-size-bytes": backend.size_bytes(), "current-db-size-in-use-bytes":
                backend.size_in_use_bytes()})


def _internal_request(field: str, request, rid: int, auth=None) -> bytes:
    """An InternalRaftRequest with the request in `field` and header {ID: rid, username, auth_revision}, encoded
    as gogo does (fields in number order: the request's field, then the header, field 100)."""
    body = request.SerializeToString()
    n = len(body)
    if auth is None:
        header = b"\x08" + uvarint(rid) if rid else b""  # RequestHeader{ID: rid}: field 1, a varint
    else:
        header = _RequestHeader(ID=rid, username=auth.username, auth_revision=auth.revision).SerializeToString()
    h = len(header)
    return b"".join((_FIELD_TAGS[field], bytes((n,)) if n < 0x80 else uvarint(n), body,
                     b"\xa2\x06", bytes((h,)) if h < 0x80 else uvarint(h), header))


def _field_tags() -> dict[str, bytes]:
    from proto.etcdserverpb import raft_internal_pb2

    return {f.name: uvarint(f.number << 3 | 2) for f in raft_internal_pb2.InternalRaftRequest.DESCRIPTOR.fields}


_FIELD_TAGS = _field_tags()


def _varint_field(number: int, value: int) -> bytes:
    """A varint field as proto3 encodes it: nothing for 0."""
    if value == 0:
        return b""
    return bytes((number << 3,)) + uvarint(value)


def resolve_url(url: str) -> str:
    """The URL with its host replaced by the first IPv4 address it resolves
    to, as etcd compares peer URLs; unresolvable hosts stay as written."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return url
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, parts.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return url
    address = infos[0][4][0]
    netloc = f"{address}:{parts.port}" if parts.port is not None else address
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
