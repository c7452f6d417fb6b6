"""The member's write path without the network: N tasks each proposing puts to a member on a temp data dir.

    python benchmarks/member_bench.py [--clients 1000] [--total 50000] [--profile out.prof]

Prints puts/s; what is left to reach the transport's figures is the member's (raft, WAL, apply, backend).
"""

from __future__ import annotations

import argparse
import cProfile
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


async def bench(data_dir: str, clients: int, total: int, fsync: bool) -> float:
    argv = ["--data-dir", data_dir] + ([] if fsync else ["--unsafe-no-fsync"])
    member = Member(parse(argv, {}), log=Logger(level="error"))
    per_client = total // clients
    value = b"v" * 256

    async def client(i: int) -> None:
        for j in range(per_client):
            await member.propose("put", rpc_pb2.PutRequest(key=b"%08d" % (i * per_client + j), value=value))

    async def no_connections(grace_s: float) -> None:
        pass

    async with trio.open_nursery() as nursery:
        await nursery.start(member.run, [])
        start = time.perf_counter()
        async with trio.open_nursery() as clients_nursery:
            for i in range(clients):
                clients_nursery.start_soon(client, i)
        elapsed = time.perf_counter() - start
        await member.stop(no_connections, 0.1)
    return per_client * clients / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--total", type=int, default=50000)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--profile")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = lambda: trio.run(bench, os.path.join(tmp, "d"), args.clients, args.total, not args.no_fsync)  # noqa: E731
        if args.profile:
            prof = cProfile.Profile()
            rate = prof.runcall(run)
            prof.dump_stats(args.profile)
        else:
            rate = run()
    print(f"{rate:,.0f} puts/s ({args.clients} clients, {args.total} puts)")


if __name__ == "__main__":
    main()
