"""Auto-compaction decisions, as etcd 3.5's v3compactor makes them (pure: the member's task feeds it clock
readings and revisions, sleeps what it says, and proposes the compactions it returns).

Rules (etcd `server/etcdserver/api/v3compactor/{periodic,revision}.go`):
- --auto-compaction-retention "0" disables it. A bare integer is hours in periodic mode and a revision count in
  revision mode (and 0 in any other mode, so off); anything else is a Go duration (in revision mode its
  nanoseconds count as revisions, as etcd). A mode other than those two with a retention on is refused.
- revision mode: every 5 minutes, compact to current revision - retention, unless that is <= 0 or the revision
  last compacted to (so nothing is proposed while no key changed).
- periodic mode with period P: the loop samples the current revision, then waits a retry interval,
  min(P, 1h) / 10. The samples kept span P (P / interval + 1 of them), so the oldest is the revision of one
  period ago. The first compaction comes P after start, the next ones every min(P, 1h) after the last that
  succeeded; a failed one is retried at the next sample.
- Both are paused while this member does not lead: a paused loop keeps its rhythm (periodic keeps sampling) but
  compacts nothing.
- A compaction to a revision already compacted counts as a success (mvcc's ErrCompacted).
"""

from __future__ import annotations

import re

from trietcd.config.gotypes import INT64_MAX as _INT64_MAX
from trietcd.config.gotypes import parse_duration_ns

__all__ = [
    "REVISION_INTERVAL_S",
    "Periodic",
    "RetentionError",
    "Revision",
    "new_policy",
    "parse_go_duration_ns",
    "parse_retention",
]

HOUR_NS = 3_600_000_000_000
REVISION_INTERVAL_S = 300.0  # etcd's revInterval
_RETRY_DIVISOR = 10


class RetentionError(ValueError):
    """--auto-compaction-retention does not parse; the text is etcd's start-up error."""


parse_go_duration_ns = parse_duration_ns  # Go's time.ParseDuration (GoError is a ValueError with Go's message)


def parse_retention(mode: str, text: str) -> int:
    """etcd's parseCompactionRetention: nanoseconds (periodic) or revisions (revision). 0: disabled."""
    if re.fullmatch(r"[+-]?[0-9]+", text) and int(text) >= 0:
        n = int(text)
        if n > _INT64_MAX:
            # Go's Atoi fails on it and the text goes on to ParseDuration, which wants a unit.
            raise RetentionError(f'error parsing CompactionRetention: time: invalid duration "{text}"')
        return {"periodic": n * HOUR_NS, "revision": n}.get(mode, 0)
    try:
        return parse_go_duration_ns(text)
    except ValueError as exc:
        raise RetentionError(f"error parsing CompactionRetention: {exc}") from None


class Periodic:
    """etcd's periodic compactor. The shell loops: `sample(rev)`, sleep `wait_s`, `due(now, ...)`, and when that
    returns a revision, proposes it and reports with `finished(...)`. Time is kept in integer nanoseconds, as Go
    keeps it, so ten sleeps of a tenth of a period add up to exactly one period."""

    caller_started = "v3compactor/periodic.go:134"
    caller_completed = "v3compactor/periodic.go:142"
    caller_failed = "v3compactor/periodic.go:150"
    kind = "periodic"

    def __init__(self, period_ns: int, now_s: float) -> None:
        assert period_ns >= _RETRY_DIVISOR
        self.period_ns = period_ns
        self.compact_interval_ns = min(period_ns, HOUR_NS)
        retry_ns = self.compact_interval_ns // _RETRY_DIVISOR
        self.wait_s = retry_ns / 1e9
        self.retentions = period_ns // retry_ns + 1
        self.revisions: list[int] = []  # invariant: len <= retentions; [0] is the revision one period ago
        self.last_success_ns = _ns(now_s)
        self.base_ns = period_ns  # the first compaction waits a whole period, later ones the interval

    def sample(self, revision: int) -> None:
        self.revisions.append(revision)
        if len(self.revisions) > self.retentions:
            del self.revisions[0]
        assert len(self.revisions) <= self.retentions

    def due(self, now_s: float, current_revision: int, paused: bool) -> int | None:
        """The revision to compact to now, if any (periodic mode compacts to a sampled revision, not to one
        derived from the current)."""
        if paused or _ns(now_s) - self.last_success_ns < self.base_ns:
            return None
        self.base_ns = self.compact_interval_ns
        return self.revisions[0]

    def finished(self, revision: int, now_s: float, ok: bool) -> None:
        if ok:
            self.last_success_ns = _ns(now_s)

    def fields(self, revision: int, duration_text) -> dict:
        """The log fields etcd writes with each message; `duration_text(ns)` spells a Go duration."""
        return {"revision": revision, "compact-period": duration_text(self.period_ns)}


class Revision:
    """etcd's revision compactor: every 5 minutes, to current revision - retention."""

    caller_started = "v3compactor/revision.go:86"
    caller_completed = "v3compactor/revision.go:94"
    caller_failed = "v3compactor/revision.go:101"
    kind = "revision"
    wait_s = REVISION_INTERVAL_S

    def __init__(self, retention: int) -> None:
        assert retention > 0
        self.retention = retention
        self.previous = 0  # the revision last compacted to

    def sample(self, revision: int) -> None:
        pass  # nothing to remember between rounds

    def due(self, now_s: float, current_revision: int, paused: bool) -> int | None:
        if paused:
            return None
        revision = current_revision - self.retention
        if revision <= 0 or revision == self.previous:
            return None
        return revision

    def finished(self, revision: int, now_s: float, ok: bool) -> None:
        if ok:
            self.previous = revision

    def fields(self, revision: int, duration_text) -> dict:
        return {"revision": revision, "revision-compaction-retention": self.retention}


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def new_policy(mode: str, retention_text: str, now_s: float) -> Periodic | Revision | None:
    """The compactor for the flags, or None when auto-compaction is off. Raises RetentionError."""
    retention = parse_retention(mode, retention_text)
    if retention == 0:
        return None
    if mode not in ("periodic", "revision"):
        raise RetentionError(f"unsupported compaction mode {mode}")
    if retention < 0:
        # etcd would panic on a negative ticker (periodic) or fail every compaction with a future revision
        # (revision); refusing the flag at start is kinder.
        raise RetentionError(f'error parsing CompactionRetention: negative retention "{retention_text}"')
    if mode == "revision":
        return Revision(retention)
    if retention < _RETRY_DIVISOR:
        # etcd divides by a zero retry interval there and panics.
        raise RetentionError(f'error parsing CompactionRetention: retention "{retention_text}" under 10ns')
    return Periodic(retention, now_s)
