"""The lessor: leases, their keys and their expiry, with etcd 3.5.1's semantics (`server/lease/lessor.go`).

Pure: every call that needs the time takes `now` (seconds on any monotonic clock); the member's shell
(`trietcd/server/lessor.py`) owns the clock, proposes revokes and checkpoints, and answers clients.

Rules:
- Every member holds every lease (grants and revokes are raft entries); only the primary (the leader, once it
  has applied the first entry of its term) counts time. Elsewhere a lease's expiry is "forever" (None).
- A lease's keys follow the mvcc changes (`on_commit`, a KVStore commit listener): a put attaches the key to
  its lease and detaches it from the one it had; a delete detaches it. `_item_lease` maps each attached key
  to its lease, so a tombstone (which carries only the key) finds it.
- Expiry is found with a heap of (time, lease id) entries. A lease has at most one live entry: the one whose
  time equals `_expiry_entry[id]`; older entries are skipped when they surface (etcd updates its heap item
  in place; skipping stale entries gives the same order).
- A revoke deletes the lease's keys, sorted, and its row in one mvcc write transaction, so every member
  deletes them in the same order at one revision.
- Persistence: a grant writes the row `leasepb.Lease{ID, TTL}` (TTL after clamping); RemainingTTL (field 3)
  is written only when checkpoints persist (etcd 3.5.2's flag; 3.5.1 never writes it) but always read back.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterable

import attrs

from proto.leasepb import lease_pb2
from trietcd.lease.errors import (
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    NotPrimaryError,
)

__all__ = [
    "FOREVER_TTL_S",
    "LEASE_BUCKET",
    "LEASE_CHECKPOINT_RATE",
    "LEASE_REVOKE_RATE",
    "MAX_CHECKPOINT_BATCH",
    "MAX_LEASE_TTL_S",
    "NO_LEASE",
    "Lease",
    "Lessor",
    "Recovered",
    "decode_lease_row",
    "encode_lease_row",
    "min_lease_ttl_s",
]

LEASE_BUCKET = b"lease"  # backend-schema.md §4 (trietcd/backend/schema.py's LEASE)
NO_LEASE = 0
MAX_LEASE_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL
LEASE_REVOKE_RATE = 1000  # revocations per second the leader proposes at most (etcd's leaseRevokeRate)
LEASE_CHECKPOINT_RATE = 1000
MAX_CHECKPOINT_BATCH = 1000  # checkpoints per raft entry (etcd's maxLeaseCheckpointBatchSize)
CHECKPOINT_INTERVAL_S = 300.0  # etcd 3.5.1's fixed default (no flag sets it)
EXPIRED_RETRY_S = 3.0  # an expired lease not yet revoked is proposed again after this
# What etcd answers as the remaining seconds of a lease that never expires (a follower's): a
# time.Duration of MaxInt64 nanoseconds, in whole seconds.
FOREVER_TTL_S = (2**63 - 1) // 1_000_000_000

_ID = struct.Struct(">q")


def min_lease_ttl_s(election_ticks: int, heartbeat_ms: int) -> int:
    """etcd's minimum TTL: 1.5 election timeouts (the tick product rounded down first), in whole seconds
    rounded up, so a lease outlives a leader election."""
    return math.ceil((3 * election_ticks) // 2 * heartbeat_ms / 1000)


def encode_lease_row(lease_id: int, ttl: int, remaining_ttl: int = 0) -> tuple[bytes, bytes]:
    """(key, value) of a lease's row: the ID as a big-endian int64, `leasepb.Lease` (zero fields left out,
    as gogo writes them)."""
    value = lease_pb2.Lease(ID=lease_id, TTL=ttl, RemainingTTL=remaining_ttl).SerializeToString()
    return _ID.pack(lease_id), value


def decode_lease_row(value: bytes) -> lease_pb2.Lease:
    return lease_pb2.Lease.FromString(value)


class Lease:
    __slots__ = ("id", "ttl", "remaining_ttl", "expiry", "keys")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.id = lease_id
        self.ttl = ttl  # granted, after clamping to the minimum
        self.remaining_ttl = remaining_ttl  # the last checkpoint's; 0: none
        self.expiry: float | None = None  # None: forever (not primary)
        self.keys: dict[bytes, None] = {}  # attached keys, as an ordered set

    def ttl_to_refresh_s(self) -> int:
        """The TTL the next refresh counts from: the checkpointed remainder if there is one."""
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl

    def remaining_s(self, now: float) -> float:
        return math.inf if self.expiry is None else self.expiry - now

    def remaining_whole_s(self, now: float) -> int:
        """Remaining seconds as etcd's TimeToLive answers them (int64 of Duration.Seconds(): toward zero)."""
        if self.expiry is None:
            return FOREVER_TTL_S
        return int(self.expiry - now)

    def expired(self, now: float) -> bool:
        return self.expiry is not None and self.expiry <= now

    def sorted_keys(self) -> list[bytes]:
        return sorted(self.keys)


@attrs.frozen
class Recovered:
    leases: int
    keys: int
    orphan_keys: int  # live keys naming a lease that does not exist (etcd logs and leaves them)


class Lessor:
    """`backend`: an object with put/delete/items(bucket) (the member's Backend), or None to keep nothing.
    `store`: the KVStore whose keys leases own, or None (revoke then deletes no keys)."""

    def __init__(
        self,
        *,
        min_ttl_s: int,
        backend=None,
        store=None,
        checkpointing: bool = False,
        persist_checkpoints: bool = False,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        expired_retry_s: float = EXPIRED_RETRY_S,
    ) -> None:
        self.min_ttl_s = min_ttl_s
        self.backend = backend
        self.store = store
        self.checkpointing = checkpointing
        self.persist_checkpoints = persist_checkpoints
        self.checkpoint_interval_s = checkpoint_interval_s
        self.expired_retry_s = expired_retry_s
        self.primary = False
        self.leases: dict[int, Lease] = {}
        self._item_lease: dict[bytes, int] = {}  # attached key -> its lease
        self._expiry_heap: list[tuple[float, int]] = []
        self._expiry_entry: dict[int, float] = {}  # lease id -> time of its live heap entry
        self._checkpoint_heap: list[tuple[float, int]] = []
        # Bumped on every demotion, so a waiter can tell it was demoted (etcd's demotec).
        self.demotions = 0
        if store is not None:
            store.commit_listeners.append(self.on_commit)

    # ---- recovery

    def recover(self) -> Recovered:
        """Loads the leases of the backend's lease bucket, then attaches every live key that names one
        (etcd's initAndRecover, then mvcc's restore). Every lease starts with expiry forever."""
        assert not self.leases
        if self.backend is not None:
            for _, value in self.backend.items(LEASE_BUCKET):
                row = decode_lease_row(value)
                ttl = max(row.TTL, self.min_ttl_s)
                self.leases[row.ID] = Lease(row.ID, ttl, row.RemainingTTL)
        keys = orphans = 0
        if self.store is not None:
            for key, lease_id in _leased_keys(self.store):
                if lease_id in self.leases:
                    self.attach(lease_id, key)
                    keys += 1
                else:
                    orphans += 1
        return Recovered(len(self.leases), keys, orphans)

    # ---- applied entries

    def grant(self, lease_id: int, ttl: int, now: float) -> Lease:
        """Applies a lease_grant. The ID was chosen at proposal time, so 0 here is refused as etcd does."""
        if lease_id == NO_LEASE:
            raise LeaseNotFoundError()
        if ttl > MAX_LEASE_TTL_S:
            raise LeaseTTLTooLargeError()
        if lease_id in self.leases:
            raise LeaseExistsError()
        lease = Lease(lease_id, max(ttl, self.min_ttl_s))
        self.leases[lease_id] = lease
        if self.primary:
            self._refresh(lease, now, 0.0)
            self._schedule_checkpoint(lease, now)
        self._persist(lease)
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Applies a lease_revoke: deletes the lease's keys (sorted) and its row in one mvcc write
        transaction; returns the keys deleted."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        keys = lease.sorted_keys()
        if self.store is not None:
            with self.store.write() as txn:
                for key in keys:
                    txn.delete_range(key)
                # The row goes in the same backend batch as the tombstones: a crash keeps both or neither.
                self._forget(lease)
        else:
            self._forget(lease)
        return keys

    def checkpoint(self, lease_id: int, remaining_ttl: int, now: float) -> None:
        """Applies one LeaseCheckpoint: the remaining TTL counts at the next promotion (and refresh)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl = remaining_ttl
        if self.persist_checkpoints:
            self._persist(lease)
        if self.primary:
            self._schedule_checkpoint(lease, now)

    # ---- keys (KVStore commit listener)

    def on_commit(self, revision: int, changes) -> None:
        for change in changes:
            key = change.kv.key
            old = self._item_lease.get(key, NO_LEASE)
            if old != NO_LEASE:
                self.detach(old, key)
            if not change.deleted and change.kv.lease != NO_LEASE:
                self.attach(change.kv.lease, key)

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self.leases.get(lease_id)
        if lease is None:
            # The applier checks a put's lease before it runs; a key of a missing lease is left unattached,
            # as etcd does when it restores one.
            return
        lease.keys[key] = None
        self._item_lease[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        self._item_lease.pop(key, None)
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.keys.pop(key, None)

    def lease_of(self, key: bytes) -> int:
        return self._item_lease.get(key, NO_LEASE)

    # ---- reads

    def lookup(self, lease_id: int) -> Lease | None:
        return self.leases.get(lease_id)

    def exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def time_to_live(self, lease_id: int, now: float) -> tuple[int, int, list[bytes]]:
        """(remaining seconds as etcd reports them, granted TTL, keys sorted)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        return lease.remaining_whole_s(now), lease.ttl, lease.sorted_keys()

    def sorted_leases(self, now: float) -> list[Lease]:
        """Every lease, soonest expiry first (etcd's Leases sorts by remaining time; its ties come in map
        order, so any tie order is etcd's; here by ID)."""
        return sorted(self.leases.values(), key=lambda lease: (lease.remaining_s(now), lease.id))

    # ---- the primary's work

    def renew(self, lease_id: int, now: float) -> int:
        """A keep-alive on the primary: a fresh expiry of TTL seconds from now; returns the granted TTL.
        Raises NotPrimaryError off the primary, LeaseNotFoundError for an unknown lease and LeaseExpiredError
        for one that expired and is not revoked yet (the caller waits for its revoke, as etcd's Renew does).
        With checkpointing, first have `needs_checkpoint_reset` false (propose a 0 checkpoint)."""
        if not self.primary:
            raise NotPrimaryError()
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        if lease.expired(now):
            raise LeaseExpiredError()
        self._refresh(lease, now, 0.0)
        return lease.ttl

    def needs_checkpoint_reset(self, lease_id: int) -> bool:
        """A renewed lease must drop its checkpointed remainder first, through raft (so at most two checkpoint
        entries per lease per interval)."""
        lease = self.leases.get(lease_id)
        return self.checkpointing and lease is not None and lease.remaining_ttl > 0

    def promote(self, now: float, extend_s: float) -> None:
        """This member leads: every lease expires its remaining TTL plus `extend_s` (an election timeout) from
        now. With many leases, a pile of expiries at one time is spread so that under 3/4 of the revoke rate
        falls in any second (etcd 3.5's Promote)."""
        self.primary = True
        for lease in self.leases.values():
            self._refresh(lease, now, extend_s)
            self._schedule_checkpoint(lease, now)
        if len(self.leases) < LEASE_REVOKE_RATE:
            return
        leases = self.sorted_leases(now)
        base = leases[0].remaining_s(now)
        next_window = base + 1.0
        expires = 0
        target = (3 * LEASE_REVOKE_RATE) // 4
        for lease in leases:
            remaining = lease.remaining_s(now)
            if remaining > next_window:
                base = remaining
                next_window = base + 1.0
                expires = 1
                continue
            expires += 1
            if expires <= target:
                continue
            # Leases already `remaining - base` ahead of the window move only by the rest of the delay.
            delay = expires / target - (remaining - base)
            next_window = base + delay
            self._refresh(lease, now, delay + extend_s)
            self._schedule_checkpoint(lease, now)

    def demote(self) -> None:
        """This member no longer leads: nothing expires here any more."""
        self.primary = False
        for lease in self.leases.values():
            lease.expiry = None
        self._expiry_heap.clear()
        self._expiry_entry.clear()
        self._checkpoint_heap.clear()
        self.demotions += 1

    def expired(self, now: float, limit: int) -> list[int]:
        """Up to `limit` expired leases for the leader to revoke. Each found is looked at again only after
        `expired_retry_s`, so a revoke in flight is not proposed twice meanwhile (etcd's findExpiredLeases)."""
        found: list[int] = []
        if not self.primary:
            return found
        heap = self._expiry_heap
        while heap and len(found) < limit:
            at, lease_id = heap[0]
            if self._expiry_entry.get(lease_id) != at or lease_id not in self.leases:
                heapq.heappop(heap)  # stale: renewed, re-registered or revoked since
                continue
            if now < at:
                break
            heapq.heappop(heap)
            self._register_expiry(lease_id, now + self.expired_retry_s)
            if self.leases[lease_id].expired(now):
                found.append(lease_id)
        return found

    def next_expiry(self) -> float | None:
        """When `expired` may next find something (None: nothing registered)."""
        heap = self._expiry_heap
        while heap and (self._expiry_entry.get(heap[0][1]) != heap[0][0] or heap[0][1] not in self.leases):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due_checkpoints(self, now: float, limit: int = MAX_CHECKPOINT_BATCH) -> list[tuple[int, int]]:
        """(lease id, remaining whole seconds rounded up) of leases whose checkpoint is due, at most `limit`
        (etcd's findDueScheduledCheckpoints). Empty unless checkpointing and primary."""
        out: list[tuple[int, int]] = []
        if not self.checkpointing or not self.primary:
            return out
        heap = self._checkpoint_heap
        while heap and len(out) < limit:
            at, lease_id = heap[0]
            if at > now:
                break
            heapq.heappop(heap)
            lease = self.leases.get(lease_id)
            if lease is None or lease.expiry is None or now >= lease.expiry:
                continue
            remaining = math.ceil(lease.expiry - now)
            if remaining >= lease.ttl:
                continue
            out.append((lease_id, remaining))
        return out

    def check(self) -> None:
        """Asserts the lessor's invariants (tests call it after each step)."""
        for key, lease_id in self._item_lease.items():
            assert key in self.leases[lease_id].keys, (key, lease_id)
        for lease in self.leases.values():
            assert lease.ttl >= self.min_ttl_s, lease.id  # clamped at grant and at recovery
            assert (lease.expiry is not None) == self.primary, lease.id
            for key in lease.keys:
                assert self._item_lease[key] == lease.id, (key, lease.id)
        assert self._expiry_entry.keys() <= self.leases.keys()
        if self.primary:
            assert self._expiry_entry.keys() == self.leases.keys()

    # ---- internals

    def _refresh(self, lease: Lease, now: float, extend_s: float) -> None:
        lease.expiry = now + extend_s + lease.ttl_to_refresh_s()
        self._register_expiry(lease.id, lease.expiry)

    def _register_expiry(self, lease_id: int, at: float) -> None:
        self._expiry_entry[lease_id] = at
        heapq.heappush(self._expiry_heap, (at, lease_id))
        if len(self._expiry_heap) > 2 * len(self._expiry_entry) + 64:
            # Renewals leave stale entries behind; rebuild from the live ones now and then.
            self._expiry_heap = [(t, i) for i, t in self._expiry_entry.items()]
            heapq.heapify(self._expiry_heap)

    def _schedule_checkpoint(self, lease: Lease, now: float) -> None:
        if self.checkpointing and lease.ttl_to_refresh_s() > self.checkpoint_interval_s:
            heapq.heappush(self._checkpoint_heap, (now + self.checkpoint_interval_s, lease.id))

    def _forget(self, lease: Lease) -> None:
        del self.leases[lease.id]
        self._expiry_entry.pop(lease.id, None)
        for key in lease.keys:
            if self._item_lease.get(key) == lease.id:
                del self._item_lease[key]
        lease.keys.clear()
        if self.backend is not None:
            self.backend.delete(LEASE_BUCKET, _ID.pack(lease.id))

    def _persist(self, lease: Lease) -> None:
        if self.backend is None:
            return
        remaining = lease.remaining_ttl if self.persist_checkpoints else 0
        key, value = encode_lease_row(lease.id, lease.ttl, remaining)
        self.backend.put(LEASE_BUCKET, key, value)


def _leased_keys(store) -> Iterable[tuple[bytes, int]]:
    """(key, lease) of every live key with a lease, in key order."""
    return ((kv.key, kv.lease) for kv in store.live() if kv.lease != NO_LEASE)
