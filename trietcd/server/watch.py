"""The watch hub's shell: the periodic work of etcd's watchableStore and of its watch streams'
progress tickers, around the sans-IO `WatchableStore` (trietcd/mvcc/watch.py).

- Unsynced watchers catch up every 100 ms; a pass that made progress and left work is followed
  by a pause as long as the pass took (etcd's syncWatchersLoop), so catching up takes at most
  about half the loop's time.
- Victims are retried every 10 ms while there are any, and at once when new ones appear.
- Progress notifications: each stream ticks every --experimental-watch-progress-notify-interval
  (10 min by default, at least 100 ms) plus up to a tenth of it as jitter, counted from the
  stream's start, as etcd's per-stream ticker.

The core runs in this task and in the applier (commit listener); both are in the trio thread and
each call runs to its end, so the core needs no lock.
"""

from __future__ import annotations

import math
import random
import time

import trio

from trietcd.mvcc import KVStore
from trietcd.mvcc.watch import MAX_PENDING_BYTES_DEFAULT, WatchableStore, WatchStream

__all__ = ["WatchHub"]

SYNC_INTERVAL_S = 0.1
VICTIM_INTERVAL_S = 0.01
PROGRESS_INTERVAL_DEFAULT_S = 600.0
PROGRESS_INTERVAL_MIN_S = 0.1


class WatchHub:
    def __init__(self, store: KVStore, *, progress_interval_s: float = 0.0,
                 max_pending_bytes: int = MAX_PENDING_BYTES_DEFAULT, rng: random.Random | None = None) -> None:
        self.core = WatchableStore(store, max_pending_bytes=max_pending_bytes)
        if progress_interval_s <= 0:
            progress_interval_s = PROGRESS_INTERVAL_DEFAULT_S
        self.progress_interval_s = max(progress_interval_s, PROGRESS_INTERVAL_MIN_S)
        self._rng = rng or random.Random()
        self._victims_added = trio.Event()
        self.core.on_victims = self._victims_added.set
        # Per stream: (next tick, its period); the period is drawn once per stream, as etcd's
        # per-stream ticker.
        self._progress_due: dict[WatchStream, tuple[float, float]] = {}
        self._progress_changed = trio.Event()
        self._next_due = math.inf  # when the progress loop wakes next

    @property
    def store(self) -> KVStore:
        return self.core.store

    def new_stream(self) -> WatchStream:
        stream = self.core.new_stream()
        period = self._progress_period()
        due = trio.current_time() + period
        self._progress_due[stream] = (due, period)
        if due < self._next_due:
            self._progress_changed.set()
        return stream

    def close_stream(self, stream: WatchStream) -> None:
        stream.close()
        self._progress_due.pop(stream, None)

    def _progress_period(self) -> float:
        interval = self.progress_interval_s
        return interval + self._rng.uniform(0, interval / 10)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sync_loop)
            nursery.start_soon(self._victim_loop)
            nursery.start_soon(self._progress_loop)

    async def _sync_loop(self) -> None:
        core = self.core
        while True:
            before = len(core.unsynced)
            start = time.perf_counter()
            if before:
                left = core.sync_watchers()
            else:
                left = 0
                core.flush_deferred_progress()
            wait_s = SYNC_INTERVAL_S
            if left and left < before:
                wait_s = time.perf_counter() - start
            await trio.sleep(wait_s)

    async def _victim_loop(self) -> None:
        core = self.core
        while True:
            added = self._victims_added = trio.Event()
            core.on_victims = added.set
            while core.move_victims():
                pass
            if core.victims:
                with trio.move_on_after(VICTIM_INTERVAL_S):
                    await added.wait()
            else:
                await added.wait()

    async def _progress_loop(self) -> None:
        while True:
            now = trio.current_time()
            next_due = now + self.progress_interval_s
            for stream, (due, period) in list(self._progress_due.items()):
                if stream.closed:
                    del self._progress_due[stream]
                    continue
                if due <= now:
                    self.core.progress_stream(stream)
                    while due <= now:  # a ticker: ticks missed while busy are dropped
                        due += period
                    self._progress_due[stream] = (due, period)
                next_due = min(next_due, due)
            self._next_due = next_due
            with trio.move_on_at(next_due):
                await self._progress_changed.wait()
                self._progress_changed = trio.Event()
