"""The member's write path without the network: N tasks each proposing puts to a member on a temp data dir.

    python benchmarks/member_bench.py [--clients 1000] [--total 50000] [--soon] [--profile out.prof]

Prints puts/s; what is left to reach the transport's figures is the member's (raft, WAL, apply, backend).
Clients are tasks awaiting `Member.propose`, or with --soon callbacks of `Member.propose_soon` (each
proposing its next put when the last is answered: the path the KV fast handlers take, no task per put).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proto.etcdserverpb import rpc_pb2  # noqa: E402
from trietcd.config import parse  # noqa: E402
from trietcd.log import Logger  # noqa: E402
from trietcd.server import Member  # noqa: E402


async def bench(data_dir: str, clients: int, total: int, fsync: bool, soon: bool = False) -> float:
    argv = ["--data-dir", data_dir] + ([] if fsync else ["--unsafe-no-fsync"])
    member = Member(parse(argv, {}), log=Logger(level="error"))
    per_client = total // clients
    value = b"v" * 256

    async def client(i: int) -> None:
        for j in range(per_client):
            await member.propose("put", rpc_pb2.PutRequest(key=b"%08d" % (i * per_client + j), value=value))

    all_done = trio.Event()
    running = [clients]

    def client_soon(i: int, j: int) -> None:
        def done(result) -> None:
            if isinstance(result, BaseException):
                raise result
            if j + 1 < per_client:
                client_soon(i, j + 1)
            else:
                running[0] -= 1
                if not running[0]:
                    all_done.set()

        request = rpc_pb2.PutRequest(key=b"%08d" % (i * per_client + j), value=value)
        assert member.propose_soon("put", request, done)

    async def no_connections(grace_s: float) -> None:
        pass

    async with trio.open_nursery() as nursery:
        await nursery.start(member.run, [])
        start = time.perf_counter()
        if soon:
            for i in range(clients):
                client_soon(i, 0)
            await all_done.wait()
        else:
            async with trio.open_nursery() as clients_nursery:
                for i in range(clients):
                    clients_nursery.start_soon(client, i)
        elapsed = time.perf_counter() - start
        await member.stop(no_connections, 0.1)
    return per_client * clients / elapsed


def main() -> None:
    from trietcd.cli import GC_THRESHOLDS

    gc.set_threshold(*GC_THRESHOLDS)  # as the trietcd command runs
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--total", type=int, default=50000)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--soon", action="store_true", help="callbacks of Member.propose_soon instead of tasks")
    ap.add_argument("--profile")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = lambda: trio.run(bench, os.path.join(tmp, "d"), args.clients, args.total, not args.no_fsync, args.soon)  # noqa: E731
        if args.profile:
            prof = cProfile.Profile()
            rate = prof.runcall(run)
            prof.dump_stats(args.profile)
        else:
            rate = run()
    print(f"{rate:,.0f} puts/s ({args.clients} clients, {args.total} puts)")


if __name__ == "__main__":
    main()
