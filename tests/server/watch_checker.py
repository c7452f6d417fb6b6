"""Checks watch streams against the write history: etcd's watch guarantees (Ordered, Unique,
Reliable, Atomic, Resumable, Bookmarkable), prev_kv, filters and is-create.

The history is what the store committed, in order (a commit listener): one entry per revision,
each a list of (key, KeyValue or None for a delete).
"""

from __future__ import annotations

import bisect
import math

import attrs
import trio

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2

NOPUT, NODELETE = 0, 1


class FakeCall:
    """A bidi gRPC call in memory. `capacity` responses fit before send() blocks (0: each send
    waits for the reader, like a client that has no flow-control window left)."""

    def __init__(self, capacity: float = math.inf) -> None:
        self._req_send, self._req_recv = trio.open_memory_channel(math.inf)
        self._out_send, self.out = trio.open_memory_channel(capacity)
        self.metadata: dict[str, str] = {}
        self.peer = "ipv4:127.0.0.1:1"
        self.deadline = math.inf
        self._pending: list[rpc_pb2.WatchResponse] = []

    def request(self, req: rpc_pb2.WatchRequest) -> None:
        self._req_send.send_nowait(req)

    def close_requests(self) -> None:
        self._req_send.close()

    async def requests(self):
        async for req in self._req_recv:
            yield req

    async def send(self, msg) -> None:
        await self._out_send.send(msg)

    # The real call's streaming writes (trietcd/wire/conn.py Call.write/flush): the service hands
    # over encoded responses, which must be byte for byte what protobuf makes of them.
    def write(self, *payloads: bytes) -> bool:
        for data in payloads:
            msg = rpc_pb2.WatchResponse.FromString(data)
            assert msg.SerializeToString() == data, (msg, data)
            self._pending.append(msg)
        return self._out_send.statistics().max_buffer_size == math.inf

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for msg in pending:
            await self._out_send.send(msg)
        await trio.lowlevel.checkpoint()


class History:
    def __init__(self) -> None:
        self.log: list[tuple[int, list[tuple[bytes, kv_pb2.KeyValue | None]]]] = []
        self.by_key: dict[bytes, list[tuple[int, kv_pb2.KeyValue | None]]] = {}
        self.compactions: list[int] = []

    def listener(self, rev, changes) -> None:
        entry = []
        for c in changes:
            kv = None
            if not c.deleted:
                k = c.kv
                kv = kv_pb2.KeyValue(key=k.key, create_revision=k.create_revision, mod_revision=k.mod_revision,
                                     version=k.version, value=k.value, lease=k.lease)
            entry.append((c.kv.key, kv))
            self.by_key.setdefault(c.kv.key, []).append((rev, kv))
        self.log.append((rev, entry))

    def value_at(self, key: bytes, rev: int) -> kv_pb2.KeyValue | None:
        revs = self.by_key.get(key, [])
        i = bisect.bisect_right([r for r, _ in revs], rev)
        return revs[i - 1][1] if i else None

    def expected(self, spec: WatchSpec) -> list[tuple[int, bytes, bool]]:
        out = []
        for rev, entry in self.log:
            if rev < spec.start:
                continue
            for key, kv in entry:
                if not spec.contains(key):
                    continue
                deleted = kv is None
                if deleted and NODELETE in spec.filters or not deleted and NOPUT in spec.filters:
                    continue
                out.append((rev, key, deleted))
        return out


@attrs.define
class WatchSpec:
    key: bytes
    end: bytes | None  # None: one key; b"": from key on
    start: int = 0  # effective start revision, once the created response is seen
    filters: tuple[int, ...] = ()
    prev_kv: bool = False
    progress_notify: bool = False

    def contains(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return self.key <= key and (not self.end or key < self.end)

    def request(self, start_revision: int) -> rpc_pb2.WatchRequest:
        range_end = b"" if self.end is None else (self.end or b"\x00")
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=range_end, start_revision=start_revision, filters=list(self.filters),
            prev_kv=self.prev_kv, progress_notify=self.progress_notify))


class StreamLog:
    """What one stream received, and the watch IDs its create requests got, in order."""

    def __init__(self) -> None:
        self.specs: list[tuple[WatchSpec, int]] = []  # (spec, requested start revision) per create
        self.responses: list[rpc_pb2.WatchResponse] = []

    def watchers(self) -> dict[int, WatchSpec]:
        """watch ID -> spec (start filled in), from the created responses in order."""
        out = {}
        created = [r for r in self.responses if r.created]
        for (spec, start), resp in zip(self.specs, created):
            assert not resp.canceled, resp
            spec.start = start if start != 0 else resp.header.revision + 1
            out[resp.watch_id] = spec
        return out


def check_stream(log: StreamLog, history: History) -> dict[str, int]:
    """Checks every watcher of the stream; returns counts of what was checked."""
    counts = {"events": 0, "bookmarks": 0, "compacted": 0, "prev_kv": 0}
    watchers = log.watchers()
    seen: dict[int, list[tuple[int, bytes, bool]]] = {wid: [] for wid in watchers}
    revs_by_response: dict[int, set[int]] = {wid: set() for wid in watchers}
    compacted: set[int] = set()
    announced: set[int] = set()
    bookmarks: list[tuple[int, int, int]] = []  # (watch ID, revision, events seen before it)
    for resp in log.responses:
        wid = resp.watch_id
        if resp.created:
            announced.add(wid)
            continue
        if not resp.events and not resp.compact_revision:  # a progress notification
            counts["bookmarks"] += 1
            for w in (announced if wid == -1 else {wid}):
                bookmarks.append((w, resp.header.revision, len(seen[w])))
            continue
        assert wid in announced, f"response before created: {resp}"
        if resp.compact_revision:
            assert resp.canceled and not resp.events
            assert watchers[wid].start < resp.compact_revision
            compacted.add(wid)
            counts["compacted"] += 1
            continue
        assert wid not in compacted, "events after the compacted response"
        spec = watchers[wid]
        revs = {ev.kv.mod_revision for ev in resp.events}
        # Atomic: a revision's events all in one response.
        assert not (revs & revs_by_response[wid]), f"revision split across responses: {sorted(revs)}"
        revs_by_response[wid] |= revs
        for ev in resp.events:
            deleted = ev.type == kv_pb2.Event.DELETE
            rev, key = ev.kv.mod_revision, ev.kv.key
            seen[wid].append((rev, key, deleted))
            counts["events"] += 1
            assert spec.contains(key)
            truth = history.value_at(key, rev)
            if deleted:
                assert truth is None and ev.kv == kv_pb2.KeyValue(key=key, mod_revision=rev)
            else:
                assert ev.kv == truth, (ev.kv, truth)
                assert (ev.kv.version == 1) == (ev.kv.create_revision == ev.kv.mod_revision)
            check_prev_kv(ev, spec, history, counts)
    # Bookmarkable: after a progress notification at revision P, no event at or below P follows
    # (with Reliable, every event up to P came before it).
    for wid, rev, before in bookmarks:
        later = [e for e in seen[wid][before:] if e[0] <= rev]
        assert not later, f"watcher {wid}: {later[:3]} after a progress notification at {rev}"
    for wid, spec in watchers.items():
        events = seen[wid]
        # Ordered and Unique: strictly increasing (revision, position in the revision).
        positions = [position(history, e) for e in events]
        assert positions == sorted(set(positions)), f"watcher {wid}: out of order or repeated"
        # Reliable: the whole history from the start revision (filters applied).
        try:
            check_history(events, history.expected(spec), history.compactions, wid in compacted)
        except AssertionError as exc:
            raise AssertionError(f"watcher {wid} {spec}: {len(events)} events, last {events[-1:]}: {exc}") from None
    return counts


def position(history: History, event) -> tuple[int, int]:
    rev, key, _ = event
    first = history.log[0][0]
    rev_, entry = history.log[rev - first]  # one entry per revision, consecutive
    assert rev_ == rev
    for i, (k, _) in enumerate(entry):
        if k == key:
            return rev, i
    raise AssertionError(f"no such change {event}")


def check_prev_kv(ev, spec: WatchSpec, history: History, counts) -> None:
    rev = ev.kv.mod_revision
    is_create = ev.type == kv_pb2.Event.PUT and ev.kv.create_revision == ev.kv.mod_revision
    has = ev.HasField("prev_kv")
    if not spec.prev_kv or is_create:
        assert not has
        return
    truth = history.value_at(ev.kv.key, rev - 1)
    if has:
        assert ev.prev_kv == truth, (ev.prev_kv, truth)
        counts["prev_kv"] += 1
    elif truth is not None:
        # Only when the previous revision was compacted by the time it was read.
        assert any(c > rev - 1 for c in history.compactions), f"missing prev_kv at {rev}"


def check_history(events, expected, compactions, compacted) -> None:
    """events is expected, except: a delete at a compaction's revision may be missing (the
    compaction removed its tombstone row; etcd reads the same rows), and a watcher that got the
    compacted response misses everything from some point on."""
    i = 0
    for e in expected:
        if i < len(events) and events[i] == e:
            i += 1
        elif e[2] and e[0] in compactions:
            continue
        elif compacted:
            break
        else:
            raise AssertionError(f"missing {e}; got {events[i:i + 3]}")
    assert i == len(events), f"unexpected {events[i:i + 3]}"
