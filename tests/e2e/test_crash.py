"""Crash safety of a single member: `kill -9` at random moments under concurrent writes, restart on the same data
dir, and nothing acknowledged may be lost or changed. The same tests run against real etcd 3.5.1 (which proves them)
and trietcd.

Clients: THREADS grpcio threads doing Puts and Txns (compare a shared key's mod_revision; success puts that key and
one of the thread's own keys, failure reads the shared key). Every value is unique, so each revision of the history
names the operation that made it. An operation whose call failed (the kill came first) may or may not be applied.

A quarter of the restarts are killed again at a random moment before the member serves (process start and
recovery). The
member runs with --snapshot-count 500, so kills also land around snapshots and WAL/.snap purges.

Checks after every restart: the revision is at least the largest acknowledged one, and the writes acknowledged
since the previous restart read back at their revisions. After the last restart: the whole history, revision by
revision (Range at r with min/max_mod_revision r), is exactly the acknowledged writes at their revisions plus some
of the unsure ones, with no revision empty; HashKV at several revisions is the same across a clean restart. A
second test hands the data dir to real etcd 3.5.1, which must serve the same data and hashes. A third kills the
member right after a Compact and checks that the compaction is complete after the restart.

TRIETCD_CRASH_KILLS (default 20) and TRIETCD_CRASH_SEED set the number of kills and the seed for longer runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import attrs
import pytest

from tests.e2e import workload
from tests.e2e.workload import kill_leftover_servers  # noqa: F401 - an autouse fixture
from tests.e2e.workload import Client, grpc, impl_param, rpc_pb2

KILLS = int(os.environ.get("TRIETCD_CRASH_KILLS", "20"))
SEED = int(os.environ.get("TRIETCD_CRASH_SEED", "20261124"))
THREADS = 4
SHARED_KEYS = 6
OWN_KEYS = 12
PREFIX = b"crash/"
# Quick elections: a single member restarts in a fraction of the default 1 s election timeout.
FLAGS = ("--heartbeat-interval", "20", "--election-timeout", "200")
# Under load: snapshots (and the WAL and .snap purges after them) happen a few times a run, so kills land near them.
LOAD_FLAGS = (*FLAGS, "--snapshot-count", "500")
RECOVERY_KILL_CHANCE = 0.25

IMPLS = [impl_param("etcd"), impl_param("trietcd")]


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


@attrs.define(eq=False)
class Op:
    writes: frozenset  # of (key, value)
    revision: int = 0  # 0: the call failed; the writes may or may not have been applied


class Model:
    """Every write the clients attempted, and what they learned of the shared keys' mod revisions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: dict[frozenset, Op] = {}
        self.acked: list[Op] = []
        self.mod_revisions: dict[bytes, int] = {}
        self.problems: list[str] = []

    def record(self, op: Op) -> None:
        with self.lock:
            self.ops[op.writes] = op
            if op.revision:
                self.acked.append(op)

    def learn(self, key: bytes, mod_revision: int) -> None:
        with self.lock:
            self.mod_revisions[key] = max(self.mod_revisions.get(key, 0), mod_revision)

    def max_acked(self) -> int:
        with self.lock:
            return max((op.revision for op in self.acked), default=1)


def client_thread(client: Client, model: Model, rng: random.Random, name: str, killing: threading.Event) -> None:
    """Write until a call fails: the kill, which is announced by `killing` just before it lands."""
    last = 0
    for n in range(1_000_000):
        own = PREFIX + b"own/%s/%d" % (name.encode(), rng.randrange(OWN_KEYS))
        value = f"{name}.{n}".encode()
        try:
            if rng.random() < 0.5:
                op = Op(frozenset({(own, value)}))
                op.revision = revision = client.put(own, value)
            else:
                shared = PREFIX + b"shared/%d" % rng.randrange(SHARED_KEYS)
                with model.lock:
                    expected = model.mod_revisions.get(shared, 0)
                op = Op(frozenset({(shared, b"s" + value), (own, value)}))
                response = client.txn([workload.mod_revision_is(shared, expected)],
                                      [workload.put_op(shared, b"s" + value), workload.put_op(own, value)],
                                      [workload.range_op(shared)])
                revision = response.header.revision
                if response.succeeded:
                    op.revision = revision
                    model.learn(shared, revision)
                else:
                    kvs = response.responses[0].response_range.kvs
                    seen = kvs[0].mod_revision if kvs else 0
                    if seen == expected or seen > revision:
                        model.problems.append(f"{name}: txn failed on mod_revision {expected}, key has {seen} "
                                              f"at revision {revision}")
                    model.learn(shared, seen)
                    op.writes = frozenset()  # nothing written
        except grpc.RpcError as exc:
            model.record(op)
            # A deadline on a loaded machine leaves the op unsure like the kill does; any other error is a fault.
            if not killing.is_set() and exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                model.problems.append(f"{name}: {exc.code().name} {exc.details()} before the kill")
            return
        if op.writes:
            model.record(op)
        if revision < last or (op.revision and revision == last):
            model.problems.append(f"{name}: revision {revision} after {last}")
        last = revision
        time.sleep(rng.uniform(0, 0.002))


class LostWrite(AssertionError):
    """An acknowledged write is gone after a restart."""


@contextlib.contextmanager
def etcd_may_lose_writes(impl: str):
    """etcd 3.5.0-3.5.2 can lose the last acknowledged writes when killed under load: the backend could commit the
    consistent index ahead of the entries' own changes, and the restarted member skips them (etcd-io/etcd#13766,
    fixed in 3.5.3). These tests hit it now and then (a few times in a thousand kills here). Only that outcome, only for
    etcd, is an expected failure; anything else fails as usual."""
    try:
        yield
    except LostWrite as exc:
        if impl == "etcd":
            pytest.xfail(f"etcd 3.5.1's own lost-write bug (etcd-io/etcd#13766): {exc}")
        raise


def check_acked(client: Client, ops: list[Op]) -> None:
    """Each write of ops reads back at its revision."""
    requests, expected = [], []
    for op in ops:
        for key, value in sorted(op.writes):
            requests.append(rpc_pb2.RangeRequest(key=key, revision=op.revision))
            expected.append((key, value, op.revision))
    got = [(r.kvs[0].key, r.kvs[0].value, r.kvs[0].mod_revision) if len(r.kvs) == 1 else r.kvs
           for r in client.ranges(requests)]
    lost = [(e, g) for e, g in zip(expected, got) if e != g]
    if lost:
        raise LostWrite(f"{len(lost)} acknowledged writes lost or changed (expected, got): {lost[:5]}")


def check_history(client: Client, model: Model, current: int) -> None:
    """Revisions 2..current are, one by one, the acknowledged writes and some of the unsure ones."""
    revisions = range(2, current + 1)
    requests = [rpc_pb2.RangeRequest(key=PREFIX, range_end=prefix_end(PREFIX), revision=r,
                                     min_mod_revision=r, max_mod_revision=r) for r in revisions]
    found: dict[int, int] = {}
    for r, response in zip(revisions, client.ranges(requests)):
        writes = frozenset((kv.key, kv.value) for kv in response.kvs)
        op = model.ops.get(writes)
        assert op is not None, f"revision {r} holds {sorted(writes)}: no client wrote that"
        assert op.revision in (0, r), f"revision {r} holds the writes acknowledged at {op.revision}"
        assert id(op) not in found, f"revisions {found[id(op)]} and {r} hold the same writes"
        found[id(op)] = r
    missing = [op for op in model.acked if id(op) not in found]
    if missing:
        raise LostWrite(f"acknowledged but not in the history: {missing[:5]}")


def hashes(client: Client, revisions: list[int]) -> dict[int, tuple[int, int]]:
    out = {}
    for revision in revisions:
        response = client.hashkv(revision)
        out[revision] = (response.hash, response.compact_revision)
    return out


def crash_run(impl: str, base: Path, kills: int, seed: int) -> tuple[workload.servers.Server, Client, Model]:
    """Kill -9 `kills` times under load, and now and then once more while the member recovers; the server and
    client after the last restart, and the model."""
    data_dir = base / "data"
    model = Model()
    rng = random.Random(seed)
    server = workload.start(impl, base, data_dir, *LOAD_FLAGS)
    client = Client(server)
    restart_s = 0.5  # from spawn to serving, measured at each restart: recovery kills land within it
    for round_ in range(kills):
        acked_before = len(model.acked)
        killing = threading.Event()
        threads = [threading.Thread(target=client_thread, daemon=True,
                                    args=(client, model, random.Random(rng.random()), f"{round_}.{i}", killing))
                   for i in range(THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.5))
        killing.set()
        server.stop(signal.SIGKILL)
        for thread in threads:
            thread.join(workload.CALL_TIMEOUT_S + 5)
        client.close()
        assert not model.problems, "\n".join(model.problems)

        if rng.random() < RECOVERY_KILL_CHANCE:
            server = workload.start(impl, base, data_dir, *LOAD_FLAGS, wait=False)
            time.sleep(rng.uniform(0, restart_s))
            server.stop(signal.SIGKILL)
        started = time.monotonic()
        server = workload.start(impl, base, data_dir, *LOAD_FLAGS)
        client = Client(server)
        restart_s = time.monotonic() - started
        revision = client.revision()
        if revision < model.max_acked():
            raise LostWrite(f"restart {round_ + 1}: revision {revision} < {model.max_acked()} acknowledged")
        check_acked(client, model.acked[acked_before:])
    assert len(model.acked) >= kills, f"only {len(model.acked)} writes acknowledged in {kills} rounds"
    return server, client, model


@pytest.mark.parametrize("impl", IMPLS)
def test_kill_9_under_load(impl, tmp_path):
    with etcd_may_lose_writes(impl):
        server, client, model = crash_run(impl, tmp_path, KILLS, SEED)
    try:
        current = client.revision()
        check_acked(client, model.acked)
        check_history(client, model, current)

        revisions = sorted({0, current, current // 2, 2})
        before = hashes(client, revisions)
        client.close()
        workload.stop(server)
        server = workload.start(impl, tmp_path, tmp_path / "data", *LOAD_FLAGS)
        client = Client(server)
        assert client.revision() == current
        assert hashes(client, revisions) == before
    finally:
        client.close()
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("impl", IMPLS)
def test_etcd_serves_the_crashed_data_dir(impl, tmp_path):
    """After kills and a clean stop, real etcd 3.5.1 on a copy of the data dir serves the same keys and hashes."""
    with etcd_may_lose_writes(impl):
        server, client, model = crash_run(impl, tmp_path / impl, 3, SEED + 1)
    try:
        current = client.revision()
        check_history(client, model, current)
        revisions = [current // 2, current - 1]
        expected = workload.view(server, revisions)
    finally:
        client.close()
        workload.stop(server)
    copy = workload.copy_data_dir(tmp_path / impl / "data", tmp_path / "copy")
    etcd = workload.start("etcd", tmp_path / "etcd", copy, *FLAGS)
    try:
        Client(etcd).close()
        assert workload.view(etcd, revisions) == expected
    finally:
        etcd.stop(signal.SIGKILL)


# ---- a kill right after Compact ------------------------------------------------

COMPACT_KEYS = 100
COMPACT_TXNS = 100
COMPACTION_STARTS = 4


def compact_model_value(txn: int, key: int) -> bytes:
    return b"%d-%d" % (txn, key)


def read_compaction_state(db_path: Path) -> tuple[bytes | None, bytes | None, int]:
    """(scheduledCompactRev, finishedCompactRev, rows below the scheduled revision) of a stopped member's db."""
    import storage

    db = storage.DB.open(str(db_path), read_only=True)
    try:
        with db.view() as tx:
            meta = tx.bucket(b"meta")
            scheduled = meta.get(b"scheduledCompactRev")
            finished = meta.get(b"finishedCompactRev")
            below = sum(1 for key, _ in tx.bucket(b"key").items() if scheduled and key[:17] < scheduled)
    finally:
        db.close()
    return scheduled, finished, below


@pytest.mark.parametrize("impl", IMPLS)
def test_kill_9_right_after_compact(impl, tmp_path):
    """COMPACT_TXNS txns each rewrite the same COMPACT_KEYS keys; Compact(physical=False) in the middle, kill -9 as
    soon as it returns. After the restart the compaction holds and completes: the compacted revision is refused,
    everything from it on reads as written, and the db keeps no row older than it (every key was rewritten at it)."""
    data_dir = tmp_path / "data"
    server = workload.start(impl, tmp_path, data_dir, *FLAGS)
    client = Client(server)
    try:
        first = None
        for txn in range(COMPACT_TXNS):
            ops = [workload.put_op(b"cmp/%03d" % key, compact_model_value(txn, key)) for key in range(COMPACT_KEYS)]
            revision = client.txn([], ops).header.revision
            first = first or revision
        compact_at = first + COMPACT_TXNS * 2 // 3
        client.compact(compact_at, physical=False)
        server.stop(signal.SIGKILL)
        client.close()

        server = workload.start(impl, tmp_path, data_dir, *FLAGS)
        client = Client(server)
        assert client.revision() == revision
        compacted = ("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")
        assert workload.rpc_error(lambda: client.compact(compact_at)) == compacted
        assert workload.rpc_error(lambda: client.range(b"cmp/000", revision=compact_at - 1)) == compacted
        assert client.hashkv(0).compact_revision == compact_at
        for r in (compact_at, compact_at + 1, revision):
            kvs = client.range(b"cmp/", b"cmp0", revision=r).kvs
            expected = [(b"cmp/%03d" % key, compact_model_value(r - first, key), r, first, r - first + 1)
                        for key in range(COMPACT_KEYS)]
            assert [(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.version) for kv in kvs] == expected
        before = hashes(client, [0, compact_at + 1, revision - 1])

        # The resumed compaction runs in the background and no call tells its end: look at the db after a clean
        # stop, and give it another start (and a little time) while it is unfinished.
        mark = compact_at.to_bytes(8, "big") + b"_" + bytes(8)
        for attempt in range(COMPACTION_STARTS):
            time.sleep(0.5)
            client.close()
            workload.stop(server)
            state = read_compaction_state(data_dir / "member" / "snap" / "db")
            server = workload.start(impl, tmp_path, data_dir, *FLAGS)
            client = Client(server)
            if state[1] is not None:
                break
        assert state == (mark, mark, 0), "(scheduledCompactRev, finishedCompactRev, rows below it)"
        assert hashes(client, [0, compact_at + 1, revision - 1]) == before
    finally:
        client.close()
        server.stop(signal.SIGKILL)
