"""The watch guarantees against a running member: random concurrent puts, deletes, txns and
compactions through raft, many watch streams (some slow to read) with watchers at random start
revisions (past, present, future), every stream checked against the write history."""

import random

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from tests.server.members import make_member, run_member
from tests.server.watch_checker import (
    NODELETE,
    NOPUT,
    FakeCall,
    History,
    StreamLog,
    WatchSpec,
    check_stream,
)
from trietcd.api.watch import WatchService

KEYS = [b"a", b"b", b"b/1", b"b/2", b"c", b"d"]
RANGES = [(b"a", None), (b"b", None), (b"b/", b"b0"), (b"b", b""), (b"", b""), (b"c", b"e"), (b"b/1", None)]


async def write(member, rng: random.Random, step: int) -> None:
    op = rng.random()
    if op < 0.55:
        await member.propose("put", rpc_pb2.PutRequest(key=rng.choice(KEYS), value=b"v%d" % step,
                                                       prev_kv=rng.random() < 0.3))
    elif op < 0.75:
        key = rng.choice(KEYS)
        end = b"b0" if key.startswith(b"b/") and rng.random() < 0.5 else b""
        await member.propose("delete_range", rpc_pb2.DeleteRangeRequest(key=key[:2] if end else key, range_end=end))
    else:
        ops = []
        for key in rng.sample(KEYS, rng.randint(2, 4)):
            if rng.random() < 0.7:
                ops.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"t%d" % step)))
            else:
                ops.append(rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key)))
        await member.propose("txn", rpc_pb2.TxnRequest(success=ops))


async def writer(member, rng, steps, history, compact_every) -> None:
    for step in range(steps):
        await write(member, rng, step)
        if rng.random() < compact_every:
            cur = member.store.current_revision
            target = cur - rng.randint(0, 30)
            if target > max(history.compactions, default=1):
                history.compactions.append(target)
                await member.propose("compaction", rpc_pb2.CompactionRequest(revision=target,
                                                                           physical=rng.random() < 0.5))
        if rng.random() < 0.2:
            await trio.sleep(rng.random() * 0.005)


def random_spec(rng) -> WatchSpec:
    key, end = rng.choice(RANGES)
    filters = rng.choice([(), (), (), (NOPUT,), (NODELETE,)])
    return WatchSpec(key, end, filters=filters, prev_kv=rng.random() < 0.5, progress_notify=rng.random() < 0.5)


async def driver(member, rng, call: FakeCall, log: StreamLog, watchers: int, finished: list) -> None:
    """Creates the stream's watchers at random times, with a progress request now and then."""
    for i in range(watchers):
        if i >= 3:  # half at once, the rest while the writes go on
            await trio.sleep(rng.random() * 0.3)
        spec = random_spec(rng)
        cur = member.store.current_revision
        start = rng.choice([0, rng.randint(1, cur), max(1, cur - rng.randint(0, 10)), cur + rng.randint(1, 40)])
        log.specs.append((spec, start))
        call.request(spec.request(start))
        if rng.random() < 0.3:
            call.request(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    finished.append(call)


async def reader(rng, call: FakeCall, log: StreamLog, slow: bool) -> None:
    async for resp in call.out:
        log.responses.append(resp)
        if slow and rng.random() < 0.3:
            await trio.sleep(rng.random() * 0.02)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_watch_guarantees_under_concurrent_writes_and_compactions(tmp_path, seed):
    rng = random.Random(seed)
    print("seed", seed)
    member = make_member(tmp_path / "d", "--experimental-watch-progress-notify-interval", "100ms")
    history = History()
    member.store.commit_listeners.insert(0, history.listener)
    streams_n, watchers_n, steps = 10, 6, 150

    async def body(member):
        hub = member.watch_hub.core
        hub.capacity = 8  # small stream queues, so slow readers make victims
        service = WatchService(member.watch_hub, member.header, max_request_bytes=member.config.max_request_bytes)
        calls = [FakeCall(capacity=rng.choice([0, 0, 4])) for _ in range(streams_n)]
        logs = [StreamLog() for _ in range(streams_n)]
        finished = []
        async with trio.open_nursery() as watch_nursery:
            for i, call in enumerate(calls):
                watch_nursery.start_soon(service.Watch, call)
                watch_nursery.start_soon(reader, random.Random(rng.random()), call, logs[i], i % 3 == 0)
                watch_nursery.start_soon(driver, member, random.Random(rng.random()), call, logs[i], watchers_n,
                                         finished)
            async with trio.open_nursery() as writers:
                for w in range(3):
                    writers.start_soon(writer, member, random.Random(rng.random()), steps, history, 0.03)
            # One more compaction, and a watcher below it: a compacted response for sure.
            target = member.store.current_revision - 5
            if target > max(history.compactions, default=1):
                history.compactions.append(target)
                await member.propose("compaction", rpc_pb2.CompactionRequest(revision=target))
            spec = random_spec(rng)
            logs[0].specs.append((spec, 1))
            calls[0].request(spec.request(1))
            # And one starting in the past above the compaction: it catches up in a sync pass for sure.
            spec = random_spec(rng)
            past = member.store.current_revision - 2
            logs[1].specs.append((spec, past))
            calls[1].request(spec.request(past))
            final = member.store.current_revision
            # Bookmarkable, and the end of the run: once every watcher is created, a progress
            # request answered at the final revision means every event of the stream's watchers
            # has been sent.
            with trio.fail_after(60):
                while len(finished) < streams_n:
                    await trio.sleep(0.01)
                for call, log in zip(calls, logs):
                    while True:
                        call.request(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
                        await trio.sleep(0.05)
                        if any(r.watch_id == -1 and r.header.revision == final and not r.events
                               for r in log.responses):
                            break
            watch_nursery.cancel_scope.cancel()
        assert hub.watcher_counts() == (0, 0, 0)  # the closed streams left
        assert hub.victims_made and hub.sync_passes and hub.compacted_sent
        return calls, logs, final

    _, logs, final = await run_member(member, body)
    totals = {"events": 0, "bookmarks": 0, "compacted": 0, "prev_kv": 0}
    for log in logs:
        for k, v in check_stream(log, history).items():
            totals[k] += v
    print(totals, "final revision", final)
    assert totals["events"] > 500 and totals["bookmarks"] >= streams_n and totals["prev_kv"] > 50
    assert history.compactions


async def test_resumable_from_any_revision_seen(tmp_path):
    """Resumable: a watcher started at (a revision it saw) + 1 gets the rest of the history,
    or the compacted response when that revision is gone."""
    rng = random.Random(7)
    member = make_member(tmp_path / "d")
    history = History()
    member.store.commit_listeners.insert(0, history.listener)

    async def body(member):
        service = WatchService(member.watch_hub, member.header, max_request_bytes=member.config.max_request_bytes)
        for step in range(120):
            await write(member, rng, step)
        await member.propose("compaction", rpc_pb2.CompactionRequest(revision=40, physical=True))
        history.compactions.append(40)
        final = member.store.current_revision
        logs = []
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                spec = random_spec(rng)
                resume = rng.randint(30, final + 1)
                call, log = FakeCall(), StreamLog()
                log.specs.append((spec, resume))
                call.request(spec.request(resume))
                call.request(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
                nursery.start_soon(service.Watch, call)
                nursery.start_soon(reader, rng, call, log, False)
                logs.append(log)
            with trio.fail_after(30):
                while not all(any(r.watch_id == -1 for r in log.responses) for log in logs):
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        return logs

    logs = await run_member(member, body)
    compacted = 0
    for log in logs:
        counts = check_stream(log, history)
        compacted += counts["compacted"]
        _, resume = log.specs[0]
        if resume >= 40:
            assert counts["compacted"] == 0  # the compacted revision itself is still readable
    assert compacted >= 1
