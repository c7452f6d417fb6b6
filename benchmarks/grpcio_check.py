"""Cross-check of trietcd-benchmark's counting with grpcio, at concurrency grpcio can carry.

    python -m benchmarks.grpcio_check --endpoints 127.0.0.1:2379 --clients 1 --total 5000

Same closed loop as trietcd-benchmark (each client one call at a time, all clients on one
channel), raw bytes in and out so no protobuf cost is added. Prints the same
summary as trietcd-benchmark; at 1 to 10 clients both should roughly agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

from trietcd.tools.benchmark import messages
from trietcd.tools.benchmark.load import PUT_METHOD
from trietcd.tools.benchmark.report import Stats, format_summary, summarize, to_json_dict


async def _run(endpoint: str, clients: int, total: int, method: str, message: bytes) -> Stats:
    lats: list[float] = []
    errors: dict[str, int] = {}
    remaining = total
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out
        await call(message)  # connect before the clock starts

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    await call(message)
                except grpc.aio.AioRpcError as exc:
                    text = f"rpc error: code = {exc.code().name} desc = {exc.details()}"
                    errors[text] = errors.get(text, 0) + 1
                else:
                    lats.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        total_s = time.perf_counter() - started
    return summarize(lats, errors, total_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpcio_check")
    parser.add_argument("--endpoints", default="127.0.0.1:2379", help="one host:port")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--total", type=int, default=5000)
    parser.add_argument("--method", default=PUT_METHOD)
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--val-size", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    key = messages.benchmark_key(0, args.key_size)
    if args.method == PUT_METHOD:
        message = messages.put_request(key, bytes(args.val_size))
    else:
        message = messages.range_request(key)
    stats = asyncio.run(_run(args.endpoints, args.clients, args.total, args.method, message))
    if args.json:
        print(json.dumps(to_json_dict(stats), indent=2))
    else:
        sys.stdout.write(format_summary(stats))
    return 0 if stats.calls_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
