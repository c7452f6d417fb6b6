"""Throughput of the raft core alone: a 3-node in-memory cluster committing
256-byte proposals in batches.

    python -m benchmarks.raft_bench [--entries 200000] [--batch 256] [--size 256] [--nodes 3]

Messages pass between RawNodes as objects (no encoding), storage is
MemoryStorage, and applying is counting; so this measures raft's own
bookkeeping: proposing, MsgApp/MsgAppResp handling, commit, Ready/Advance.
Each round the leader proposes one batch, then every node handles one Ready
and the messages produced are delivered (pipelined: the next batch goes out
before the previous one is acknowledged). Prints entries committed (applied
on every node) per second and raft messages stepped per second.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from trietcd.raft import Config, MemoryStorage, RawNode, StateType


def build(n: int) -> list:
    ids = list(range(1, n + 1))
    nodes = []
    for i in ids:
        s = MemoryStorage()
        s.snapshot().metadata.conf_state.voters.extend(ids)
        rn = RawNode(Config(id=i, election_tick=10, heartbeat_tick=1, storage=s, rng=random.Random(i),
                            max_size_per_msg=1 << 20, max_committed_size_per_ready=1 << 24,
                            max_inflight_msgs=256))
        nodes.append((rn, s))
    return nodes


class Counter:
    def __init__(self, n: int) -> None:
        self.applied = [0] * n
        self.steps = 0


def round_trip(nodes: list, counter: Counter, inbox: list) -> list:
    """Each node handles its Ready; returns the messages to deliver next."""
    out = []
    for k, (rn, s) in enumerate(nodes):
        if not rn.has_ready():
            continue
        rd = rn.ready()
        if rd.entries:
            s.append(rd.entries)
        hs = rd.hard_state
        if hs.term or hs.commit or hs.vote:
            s.set_hard_state(hs)
        out.extend(rd.messages)
        counter.applied[k] += len(rd.committed_entries)
        rn.advance(rd)
    return out


def deliver(nodes: list, msgs: list, counter: Counter) -> None:
    for m in msgs:
        nodes[m.to - 1][0].step(m)
    counter.steps += len(msgs)


def run(entries: int, batch: int, size: int, n: int) -> dict:
    nodes = build(n)
    counter = Counter(n)
    nodes[0][0].campaign()
    msgs: list = []
    for _ in range(20):
        msgs = round_trip(nodes, counter, msgs)
        deliver(nodes, msgs, counter)
    leader = nodes[0][0]
    assert leader.raft.state is StateType.LEADER
    base = list(counter.applied)
    counter.steps = 0
    payload = os.urandom(size)
    proposed = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while min(a - b for a, b in zip(counter.applied, base)) < entries:
        if proposed < entries:
            leader.propose_many([payload] * batch)
            proposed += batch
        msgs = round_trip(nodes, counter, msgs)
        deliver(nodes, msgs, counter)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    committed = min(a - b for a, b in zip(counter.applied, base))
    return {
        "entries": committed, "seconds": elapsed, "entries_per_s": committed / elapsed,
        "cpu_seconds": cpu, "entries_per_cpu_s": committed / cpu,
        "steps_per_s": counter.steps / elapsed, "batch": batch, "size": size, "nodes": n,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.raft_bench")
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--nodes", type=int, default=3)
    args = p.parse_args(argv)
    load = os.getloadavg()
    r = run(args.entries, args.batch, args.size, args.nodes)
    print(f"{r['nodes']} nodes, batch {r['batch']} x {r['size']} B: {r['entries']} entries committed on every "
          f"node in {r['seconds']:.2f} s = {r['entries_per_s']:,.0f} entries/s, "
          f"{r['steps_per_s']:,.0f} messages stepped/s; per CPU second: {r['entries_per_cpu_s']:,.0f} entries "
          f"(load average before: {load[0]:.2f})")


if __name__ == "__main__":
    main()
