"""Watchers over the store: etcd 3.5's watchableStore and watchStream (`mvcc/watchable_store.go`,
`mvcc/watcher.go`, `mvcc/watcher_group.go`), sans-IO.

Rules:
- A watcher is *synced* when it has seen every revision up to the store's current one: it gets
  the events of each write transaction when the transaction ends (`notify`, a commit listener,
  so at apply time), one response per revision.
- A watcher whose start revision is at or below the current revision is *unsynced*: the shell
  calls `sync_watchers` (etcd: every 100 ms), which reads the store's rows for up to
  MAX_WATCHERS_PER_SYNC watchers at a time, at most SYNC_ROWS_MAX rows per pass (whole
  revisions), and sends each watcher at most WATCH_BATCH_MAX_REVS revisions per response. A
  watcher whose start revision is below the compacted revision gets one response with
  `compact_revision` instead, and is dropped from the hub (it stays on its stream, as in etcd).
- A watcher whose stream holds CHAN_BUF_LEN responses (or max_pending_bytes) cannot take its
  response: it becomes a *victim* holding that response; `move_victims` (etcd: every 10 ms)
  offers it again. Nothing ever waits for a stream, so a slow client never blocks the applier.
  A victim catches up from the store afterwards, so memory per watcher is one response.
- Within a response every event is of one watcher, in revision order; a watcher's responses
  are queued in revision order, and `min_rev` (the next revision it has not seen) only grows.
- Streams number their watchers: a client-chosen ID, or (ID 0, AUTO_WATCH_ID) the stream's next
  free one from 0 on. IDs of cancelled watchers are not reused by the automatic numbering.

A stream's responses go out in the order they were queued: control responses (created,
cancelled) and watchers' responses share one queue, so a watcher's created response precedes its
events; only watchers' responses count against the stream's capacity. A cancel drops the queued
responses of that watcher, since etcd never sends a response of a watcher after its cancel
response.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator

import attrs

from trietcd.mvcc.revision import Revision
from trietcd.mvcc.rows import KeyValue
from trietcd.mvcc.store import Change, KVStore

__all__ = [
    "AUTO_WATCH_ID",
    "CHAN_BUF_LEN",
    "ERR_DUPLICATE_WATCH_ID",
    "ERR_EMPTY_WATCHER_RANGE",
    "ERR_TOO_MANY_WATCHERS",
    "FILTER_NODELETE",
    "FILTER_NOPUT",
    "INVALID_WATCH_ID",
    "Event",
    "WatchResponse",
    "WatchStream",
    "WatchableStore",
    "Watcher",
]

AUTO_WATCH_ID = 0
INVALID_WATCH_ID = -1
CHAN_BUF_LEN = 128  # responses a stream queues before its watchers become victims (etcd's chanBufLen)
CTRL_BUF_LEN = 16  # control responses queued before the stream stops reading requests
MAX_WATCHERS_PER_SYNC = 512
WATCH_BATCH_MAX_REVS = 1000
SYNC_ROWS_MAX = 10_000
MAX_PENDING_BYTES_DEFAULT = 64 << 20
# etcd sets no limit on watchers per stream; this one only guards memory (about 1 KB each).
WATCHERS_PER_STREAM_MAX_DEFAULT = 100_000

FILTER_NOPUT = 0  # WatchCreateRequest.FilterType
FILTER_NODELETE = 1

ERR_EMPTY_WATCHER_RANGE = "mvcc: watcher range is empty"
ERR_DUPLICATE_WATCH_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_TOO_MANY_WATCHERS = "mvcc: too many watchers on the stream"  # trietcd's own: etcd has no such limit

_ALL_ROWS = 1 << 62


@attrs.frozen(slots=True)
class Event:
    """A put (kv is the new row) or a delete (kv has the key and the delete's mod_revision)."""

    kv: KeyValue
    deleted: bool = False

    @property
    def is_create(self) -> bool:
        return not self.deleted and self.kv.create_revision == self.kv.mod_revision


@attrs.frozen(slots=True)
class WatchResponse:
    """One response of a stream. `revision` is the header revision (0: no revision)."""

    watch_id: int
    events: tuple[Event, ...] = ()
    revision: int = 0
    compact_revision: int = 0
    created: bool = False
    canceled: bool = False
    cancel_reason: str = ""

    def size_bytes(self) -> int:
        return 64 + sum(48 + len(e.kv.key) + len(e.kv.value) for e in self.events)


class WatchError(Exception):
    """A watch create that etcd refuses; str() is etcd's text."""


class _Batch:
    """A watcher's events of one pass, at most WATCH_BATCH_MAX_REVS revisions (etcd's eventBatch);
    more_rev is the first revision left out (0: none)."""

    __slots__ = ("events", "more_rev", "revs")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.revs = 0
        self.more_rev = 0

    def add(self, ev: Event) -> None:
        if self.more_rev:
            return
        if self.events:
            if ev.kv.mod_revision > self.events[-1].kv.mod_revision:
                if self.revs >= WATCH_BATCH_MAX_REVS:
                    self.more_rev = ev.kv.mod_revision
                    return
                self.revs += 1
        else:
            self.revs = 1
        self.events.append(ev)


class Watcher:
    __slots__ = ("compacted", "end", "id", "key", "min_rev", "no_delete", "no_put", "stream", "victim")

    def __init__(self, key: bytes, end: bytes | None, min_rev: int, watch_id: int, stream: WatchStream,
                 filters: Iterable[int]) -> None:
        self.key = key
        self.end = end  # None: the key alone; b"": every key from key on; else exclusive end
        self.min_rev = min_rev  # invariant: the watcher has seen every revision below it
        self.id = watch_id
        self.stream = stream
        filters = set(filters)
        self.no_put = FILTER_NOPUT in filters
        self.no_delete = FILTER_NODELETE in filters
        self.victim = False
        self.compacted = False

    def contains(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return self.key <= key and (not self.end or key < self.end)

    def send(self, resp: WatchResponse) -> bool:
        """Queue resp (filters applied) on the stream; False when the stream is full. A response
        whose events are all filtered out counts as sent."""
        if resp.events and (self.no_put or self.no_delete):
            kept = tuple(e for e in resp.events if not (e.deleted and self.no_delete or not e.deleted and self.no_put))
            if not kept:
                return True
            resp = attrs.evolve(resp, events=kept)
        return self.stream.push(resp)

    def __repr__(self) -> str:
        return f"Watcher(id={self.id}, key={self.key!r}, end={self.end!r}, min_rev={self.min_rev})"


class WatcherGroup:
    """Watchers by key: single keys in a dict, ranges by (key, end), the distinct ranges scanned
    per key (watchers of one prefix cost one comparison). Dicts keep insertion order, so
    iteration is deterministic."""

    def __init__(self) -> None:
        self._keys: dict[bytes, dict[Watcher, None]] = {}
        self._ranges: dict[tuple[bytes, bytes], dict[Watcher, None]] = {}
        self._all: dict[Watcher, None] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, w: Watcher) -> bool:
        return w in self._all

    def __iter__(self) -> Iterator[Watcher]:
        return iter(self._all)

    def add(self, w: Watcher) -> None:
        self._all[w] = None
        if w.end is None:
            self._keys.setdefault(w.key, {})[w] = None
        else:
            self._ranges.setdefault((w.key, w.end), {})[w] = None

    def delete(self, w: Watcher) -> bool:
        if self._all.pop(w, 0) == 0:
            return False
        table, index = (self._keys, w.key) if w.end is None else (self._ranges, (w.key, w.end))
        ws = table[index]
        del ws[w]
        if not ws:
            del table[index]
        return True

    def matching(self, key: bytes) -> list[Watcher]:
        found = list(self._keys.get(key, ()))
        for (start, end), ws in self._ranges.items():
            if start <= key and (not end or key < end):
                found.extend(ws)
        return found


class WatchStream:
    """The watchers of one client stream and the responses queued for it. The shell sets
    `on_ready`, called whenever a response is queued."""

    def __init__(self, hub: WatchableStore, capacity: int, max_pending_bytes: int, watchers_max: int) -> None:
        self.hub = hub
        self.capacity = capacity
        self.max_pending_bytes = max_pending_bytes
        self.watchers_max = watchers_max
        self.watchers: dict[int, Watcher] = {}
        self.next_id = 0
        # (response, its size_bytes(), or -1 for one that does not count against capacity), in
        # send order
        self.queue: collections.deque[tuple[WatchResponse, int]] = collections.deque()
        self.data_count = 0  # invariant: entries of queue that count against capacity
        self.ctrl_count = 0  # the others
        self.pending_bytes = 0  # invariant: sum of size_bytes() over those that count
        # Per watcher ID: True when a progress notification is due at the next tick (etcd's
        # sws.progress), and the IDs that asked for prev_kv and fragment.
        self.progress: dict[int, bool] = {}
        self.prev_kv: set[int] = set()
        self.fragment: set[int] = set()
        self.deferred_progress = False  # a progress request waits for the watchers to sync
        self.on_ready: Callable[[], None] | None = None
        self.closed = False

    def rev(self) -> int:
        return self.hub.store.current_revision

    # ---- requests

    def create(self, key: bytes, range_end: bytes, start_revision: int, *, watch_id: int = AUTO_WATCH_ID,
               filters: Iterable[int] = (), prev_kv: bool = False, progress_notify: bool = False,
               fragment: bool = False) -> WatchResponse:
        """A WatchCreateRequest, as etcd's recvLoop: queues and returns the created response
        (cancelled, with etcd's reason, when refused)."""
        if not key:
            key = b"\x00"  # the smallest key
        end: bytes | None = range_end if range_end else None
        if end == b"\x00":
            end = b""  # every key from key on
        wsrev = self.rev()
        rev = start_revision if start_revision != 0 else wsrev + 1
        try:
            wid = self._watch(watch_id, key, end, rev, filters)
        except WatchError as exc:
            resp = WatchResponse(INVALID_WATCH_ID, revision=wsrev, created=True, canceled=True,
                                 cancel_reason=str(exc))
        else:
            if progress_notify:
                self.progress[wid] = True
            if prev_kv:
                self.prev_kv.add(wid)
            if fragment:
                self.fragment.add(wid)
            resp = WatchResponse(wid, revision=wsrev, created=True)
        self._push_ctrl(resp)
        return resp

    def _watch(self, watch_id: int, key: bytes, end: bytes | None, start_rev: int, filters) -> int:
        if end and key >= end:
            raise WatchError(ERR_EMPTY_WATCHER_RANGE)
        if self.closed:
            raise WatchError(ERR_EMPTY_WATCHER_RANGE)
        if (watch_id == AUTO_WATCH_ID or watch_id not in self.watchers) and len(self.watchers) >= self.watchers_max:
            raise WatchError(ERR_TOO_MANY_WATCHERS)
        if watch_id == AUTO_WATCH_ID:
            while self.next_id in self.watchers:
                self.next_id += 1
            watch_id = self.next_id
            self.next_id += 1
        elif watch_id in self.watchers:
            raise WatchError(ERR_DUPLICATE_WATCH_ID)
        self.watchers[watch_id] = self.hub.watch(self, watch_id, key, end, start_rev, filters)
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        """A WatchCancelRequest: True (and the cancel response queued) when the watcher existed."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self.hub.cancel(w)
        self._drop_queued(watch_id)
        self._push_ctrl(WatchResponse(watch_id, revision=self.rev(), canceled=True))
        self.progress.pop(watch_id, None)
        self.prev_kv.discard(watch_id)
        self.fragment.discard(watch_id)
        return True

    def request_progress(self) -> None:
        """A WatchProgressRequest: a response with no events, watch ID -1 and the current
        revision, once every watcher of the stream is synced (at once when they are), queued
        behind the events already queued, so every event up to that revision is delivered first."""
        if not self.hub.progress_all(self):
            self.deferred_progress = True

    # ---- the send side

    def ctrl_full(self) -> bool:
        return self.ctrl_count >= CTRL_BUF_LEN

    def full(self) -> bool:
        return self.data_count >= self.capacity

    def take(self) -> WatchResponse | None:
        """The next response to send, or None."""
        if not self.queue:
            return None
        resp, size = self.queue.popleft()
        if size >= 0:
            self.data_count -= 1
            self.pending_bytes -= size
            if resp.events and self.progress.get(resp.watch_id):
                self.progress[resp.watch_id] = False  # events were sent: skip the next notification
        else:
            self.ctrl_count -= 1
        return resp

    def push(self, resp: WatchResponse, *, force: bool = False, size: int = -1) -> bool:
        """Queue a watcher's response (`size`: its size_bytes() when the caller knows it); False when the
        stream cannot take more (unless force)."""
        if self.closed:
            return True
        if not force and self.data_count >= self.capacity:
            return False  # checked first: victims retry often, and sizing a big response costs
        if size < 0:
            size = resp.size_bytes()
        if not force and self.data_count and self.pending_bytes + size > self.max_pending_bytes:
            return False
        self.queue.append((resp, size))
        self.data_count += 1
        self.pending_bytes += size
        if self.on_ready is not None:
            self.on_ready()
        return True

    def _push_ctrl(self, resp: WatchResponse) -> None:
        self.queue.append((resp, -1))
        self.ctrl_count += 1
        if self.on_ready is not None:
            self.on_ready()

    def _drop_queued(self, watch_id: int) -> None:
        if any(size >= 0 and r.watch_id == watch_id for r, size in self.queue):
            kept = [(r, size) for r, size in self.queue if not (size >= 0 and r.watch_id == watch_id)]
            self.queue = collections.deque(kept)
            self.data_count = sum(1 for _, size in kept if size >= 0)
            self.pending_bytes = sum(size for _, size in kept if size >= 0)

    def close(self) -> None:
        if self.closed:
            return
        for w in self.watchers.values():
            self.hub.cancel(w)
        self.watchers.clear()
        self.queue.clear()
        self.data_count = self.ctrl_count = self.pending_bytes = 0
        self.closed = True
        self.hub.streams.pop(self, None)


class WatchableStore:
    """The watch hub over one KVStore (etcd's watchableStore)."""

    def __init__(self, store: KVStore, *, capacity: int = CHAN_BUF_LEN,
                 max_pending_bytes: int = MAX_PENDING_BYTES_DEFAULT, sync_rows_max: int = SYNC_ROWS_MAX,
                 watchers_per_sync_max: int = MAX_WATCHERS_PER_SYNC,
                 watchers_per_stream_max: int = WATCHERS_PER_STREAM_MAX_DEFAULT) -> None:
        self.store = store
        self.watchers_per_stream_max = watchers_per_stream_max
        self.capacity = capacity
        self.max_pending_bytes = max_pending_bytes
        self.sync_rows_max = sync_rows_max
        self.watchers_per_sync_max = watchers_per_sync_max
        self.synced = WatcherGroup()
        self.unsynced = WatcherGroup()
        self.victims: list[dict[Watcher, _Batch]] = []
        self.streams: dict[WatchStream, None] = {}
        # Called when victims are added (etcd's victimc), so the shell retries them soon.
        self.on_victims: Callable[[], None] | None = None
        # Counts since start, for statistics and tests.
        self.victims_made = 0
        self.notified = 0  # revisions whose events went to some synced watcher
        self.compacted_sent = 0
        self.sync_passes = 0
        store.commit_listeners.append(self.notify)

    def new_stream(self) -> WatchStream:
        s = WatchStream(self, self.capacity, self.max_pending_bytes, self.watchers_per_stream_max)
        self.streams[s] = None
        return s

    def watch(self, stream: WatchStream, watch_id: int, key: bytes, end: bytes | None, start_rev: int,
              filters: Iterable[int]) -> Watcher:
        cur = self.store.current_revision
        synced = start_rev > cur or start_rev == 0
        w = Watcher(key, end, max(start_rev, cur + 1) if synced else start_rev, watch_id, stream, filters)
        (self.synced if synced else self.unsynced).add(w)
        return w

    def cancel(self, w: Watcher) -> None:
        if self.unsynced.delete(w) or self.synced.delete(w):
            return
        if w.victim:
            for batch in self.victims:
                batch.pop(w, None)
            w.victim = False

    def watcher_counts(self) -> tuple[int, int, int]:
        """(synced, unsynced, victims)."""
        return len(self.synced), len(self.unsynced), sum(len(b) for b in self.victims)

    # ---- apply time

    def notify(self, rev: int, changes: list[Change]) -> None:
        """Commit listener: the events of revision rev to the synced watchers."""
        synced = self.synced
        if not len(synced):
            return
        if len(changes) == 1:
            self._notify_one(rev, changes[0])
            return
        batches: dict[Watcher, list[Event]] = {}
        for change in changes:
            kv = change.kv
            ws = synced.matching(kv.key)
            if not ws:
                continue
            self.notified += 1
            ev = Event(KeyValue(kv.key, mod_revision=rev), True) if change.deleted else Event(kv)
            for w in ws:
                if w.min_rev <= rev:
                    batches.setdefault(w, []).append(ev)
        victims: dict[Watcher, _Batch] = {}
        for w, events in batches.items():
            if not w.send(WatchResponse(w.id, tuple(events), rev)):
                self._victim_of_notify(w, events, rev, victims)
        self._add_victims(victims)

    def _notify_one(self, rev: int, change: Change) -> None:
        # The common revision of one change: one event, its tuple and size shared by every watcher of it.
        kv = change.kv
        ws = self.synced.matching(kv.key)
        if not ws:
            return
        self.notified += 1
        ev = Event(KeyValue(kv.key, mod_revision=rev), True) if change.deleted else Event(kv)
        events = (ev,)
        size = WatchResponse(0, events).size_bytes()
        victims: dict[Watcher, _Batch] = {}
        for w in ws:
            if w.min_rev > rev:
                continue
            resp = WatchResponse(w.id, events, rev)
            sent = w.send(resp) if w.no_put or w.no_delete else w.stream.push(resp, size=size)
            if not sent:
                self._victim_of_notify(w, [ev], rev, victims)
        self._add_victims(victims)

    def _victim_of_notify(self, w: Watcher, events: list[Event], rev: int, victims: dict[Watcher, _Batch]) -> None:
        # A synced watcher whose stream could not take revision rev's events: it holds them and leaves synced.
        w.min_rev = rev + 1
        w.victim = True
        batch = _Batch()
        batch.events, batch.revs = events, 1
        victims[w] = batch
        self.synced.delete(w)

    def _add_victims(self, victims: dict[Watcher, _Batch]) -> None:
        if victims:
            self.victims_made += len(victims)
            self.victims.append(victims)
            if self.on_victims is not None:
                self.on_victims()

    # ---- periodic work (the shell's loops)

    def sync_watchers(self) -> int:
        """One catch-up pass over up to watchers_per_sync_max unsynced watchers; returns how many
        stay unsynced."""
        unsynced = self.unsynced
        if not len(unsynced):
            return 0
        cur, compact = self.store.current_revision, self.store.compact_revision
        group = WatcherGroup()
        min_rev = cur + 1
        for w in list(itertools.islice(unsynced, self.watchers_per_sync_max)):
            assert w.min_rev <= cur, w
            if w.min_rev < compact:
                if w.stream.push(WatchResponse(w.id, compact_revision=compact, canceled=True)):
                    w.compacted = True
                    self.compacted_sent += 1
                    unsynced.delete(w)
                continue  # else: offered again next pass
            group.add(w)
            min_rev = min(min_rev, w.min_rev)
        if len(group):
            self.sync_passes += 1
            self._sync_group(group, min_rev, cur)
        self.flush_deferred_progress()
        return len(unsynced)

    def _sync_group(self, group: WatcherGroup, min_rev: int, cur: int) -> None:
        rows, upto = self._history(min_rev, cur)
        batches: dict[Watcher, _Batch] = {}
        for rev, kv, tombstone in rows:
            ws = group.matching(kv.key)
            if not ws:
                continue
            ev = Event(KeyValue(kv.key, mod_revision=rev.main), True) if tombstone else Event(kv)
            for w in ws:
                if rev.main >= w.min_rev:
                    batch = batches.get(w)
                    if batch is None:
                        batch = batches[w] = _Batch()
                    batch.add(ev)
        victims: dict[Watcher, _Batch] = {}
        for w in group:
            w.min_rev = max(w.min_rev, upto + 1)
            batch = batches.get(w)
            if batch is None:
                if upto == cur:
                    self.unsynced.delete(w)
                    self.synced.add(w)
                continue
            if batch.more_rev:
                w.min_rev = batch.more_rev
            if not w.send(WatchResponse(w.id, tuple(batch.events), cur)):
                w.victim = True
                victims[w] = batch
                self.unsynced.delete(w)
                continue
            if batch.more_rev or upto < cur:
                continue  # more to read: stays unsynced
            self.unsynced.delete(w)
            self.synced.add(w)
        self._add_victims(victims)

    def _history(self, min_rev: int, cur: int) -> tuple[list, int]:
        """Rows with main in [min_rev, cur], whole revisions only, at most sync_rows_max of them
        unless one revision alone holds more; returns (rows, the last revision read)."""
        bucket = self.store.bucket
        limit = self.sync_rows_max
        rows = bucket.rows(Revision(min_rev, 0), cur, limit)
        if len(rows) < limit:
            return rows, cur
        last = rows[-1][0].main
        while rows and rows[-1][0].main == last:
            rows.pop()
        if rows:
            return rows, last - 1
        return bucket.rows(Revision(last, 0), last, _ALL_ROWS), last

    def move_victims(self) -> int:
        """Offers each victim's response again; returns how many were taken. A victim whose
        response went out is unsynced (or synced when it has seen the current revision)."""
        victims, self.victims = self.victims, []
        moved = 0
        again: dict[Watcher, _Batch] = {}
        for batches in victims:
            for w, batch in batches.items():
                if w.stream.full():
                    again[w] = batch
                    continue
                if w.send(WatchResponse(w.id, tuple(batch.events), w.min_rev - 1)):
                    moved += 1
                else:
                    again[w] = batch
            cur = self.store.current_revision
            for w, batch in batches.items():
                if w in again:
                    continue
                w.victim = False
                if batch.more_rev:
                    w.min_rev = batch.more_rev
                (self.unsynced if w.min_rev <= cur else self.synced).add(w)
        if again:
            self.victims.append(again)
        self.flush_deferred_progress()
        return moved

    def progress_tick(self) -> None:
        """The progress-notify tick (etcd: per stream, every --experimental-watch-progress-notify-
        interval): a watcher that asked for progress_notify and got no events since the last tick
        gets a response with no events at the current revision, if it is synced."""
        for stream in list(self.streams):
            self.progress_stream(stream)

    def progress_stream(self, stream: WatchStream) -> None:
        for wid, due in stream.progress.items():
            w = stream.watchers.get(wid)
            if due and w is not None and w in self.synced:
                w.send(WatchResponse(wid, revision=self.store.current_revision))
            stream.progress[wid] = True

    def progress_all(self, stream: WatchStream) -> bool:
        """Queues a progress response (watch ID -1) for the stream if all its live watchers are
        synced; False when it has to wait."""
        for w in stream.watchers.values():
            if not w.compacted and w not in self.synced:
                return False
        if stream.full():
            return False
        return stream.push(WatchResponse(INVALID_WATCH_ID, revision=self.store.current_revision), force=True)

    def flush_deferred_progress(self) -> None:
        for stream in self.streams:
            if stream.deferred_progress and self.progress_all(stream):
                stream.deferred_progress = False
