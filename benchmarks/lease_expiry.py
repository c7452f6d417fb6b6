"""Many leases expiring at once, real etcd 3.5.1 and trietcd side by side.

    python -m benchmarks.lease_expiry [--leases 10000] [--ttl 6]

For each server: grant N leases (one key each) so that they expire together, then keep a client putting
other keys one at a time, and measure (a) how long the expiry takes (the last leased key gone after the
TTL ran out) and (b) the put latency p50/p99 while it runs, against the same client's idle figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from benchmarks.unary_noop import _etcd_bin_dir, _etcd_style_argv, _repo_root, _stop, free_port  # noqa: E402
from proto.etcdserverpb import rpc_pb2  # noqa: E402


class _Stub:
    """Unary methods of one etcd service over a grpcio channel (no generated grpc modules needed)."""

    def __init__(self, channel, service: str, methods: dict) -> None:
        for name, (req, resp) in methods.items():
            setattr(self, name, channel.unary_unary(f"/etcdserverpb.{service}/{name}",
                                                    request_serializer=req.SerializeToString,
                                                    response_deserializer=resp.FromString))


def kv_stub(channel) -> _Stub:
    return _Stub(channel, "KV", {"Range": (rpc_pb2.RangeRequest, rpc_pb2.RangeResponse),
                                 "Put": (rpc_pb2.PutRequest, rpc_pb2.PutResponse)})


def lease_stub(channel) -> _Stub:
    return _Stub(channel, "Lease", {"LeaseGrant": (rpc_pb2.LeaseGrantRequest, rpc_pb2.LeaseGrantResponse)})


def start(kind: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    client_port, peer_port = free_port(), free_port()
    binary = os.path.join(_etcd_bin_dir(), "etcd") if kind == "etcd" else "trietcd"
    argv = _etcd_style_argv(binary, data_dir, client_port, peer_port)
    if kind == "trietcd":
        argv = [sys.executable, "-m", "trietcd", *argv[1:]]
    proc = subprocess.Popen(argv, cwd=_repo_root(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"127.0.0.1:{client_port}"
    kv = kv_stub(grpc.insecure_channel(endpoint))
    deadline = time.monotonic() + 30
    while True:
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=1)
            return proc, endpoint
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def put_latencies(kv, seconds: float, stop: threading.Event | None = None) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and not (stop and stop.is_set()):
        t = time.perf_counter()
        kv.Put(rpc_pb2.PutRequest(key=b"other/%d" % (i % 100), value=b"v" * 64), timeout=10)
        out.append(time.perf_counter() - t)
        i += 1
    return out


def run(kind: str, leases: int, ttl: int) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"lease-expiry-{kind}-")
    proc, endpoint = start(kind, os.path.join(tmp, "d"))
    try:
        channel = grpc.insecure_channel(endpoint)
        kv = kv_stub(channel)
        lease = lease_stub(channel)
        idle = put_latencies(kv, 3.0)

        def grant_one(i: int) -> None:
            lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=30).ID
            kv.Put(rpc_pb2.PutRequest(key=b"leased/%06d" % i, value=b"v", lease=lid), timeout=30)

        granted_at = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(grant_one, range(leases)))
        grant_s = time.monotonic() - granted_at
        expiry_starts = granted_at + ttl
        time.sleep(max(0.0, expiry_starts - time.monotonic()))  # measure from the first expiry on
        stop = threading.Event()
        during: list[float] = []
        measuring = threading.Thread(target=lambda: during.extend(put_latencies(kv, 120, stop)))
        measuring.start()
        while True:
            left = kv.Range(rpc_pb2.RangeRequest(key=b"leased/", range_end=b"leased0", count_only=True),
                            timeout=10).count
            if left == 0:
                break
            time.sleep(0.5)  # counting 10k keys is work for the server too: poll gently
        done_s = time.monotonic() - expiry_starts
        stop.set()
        measuring.join()
        return {
            "grant_s": grant_s, "expiry_s": done_s,
            "idle_p50_ms": percentile(idle, 0.5) * 1e3, "idle_p99_ms": percentile(idle, 0.99) * 1e3,
            "during_p50_ms": percentile(during, 0.5) * 1e3, "during_p99_ms": percentile(during, 0.99) * 1e3,
        }
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leases", type=int, default=10000)
    ap.add_argument("--ttl", type=int, default=25, help="seconds; at least as long as granting all takes")
    args = ap.parse_args(argv)
    print(f"{args.leases} leases, TTL {args.ttl} s, one key each; put latency of one client while they expire")
    print("| server | grant all (s) | all gone, s after the first expiry | put p50 idle / during (ms) | "
          "put p99 idle / during (ms) | p99 during / idle |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in ("etcd", "trietcd"):
        r = run(kind, args.leases, args.ttl)
        print(f"| {kind} | {r['grant_s']:.1f} | {r['expiry_s']:.1f} | {r['idle_p50_ms']:.2f} / "
              f"{r['during_p50_ms']:.2f} | {r['idle_p99_ms']:.2f} / {r['during_p99_ms']:.2f} | "
              f"{r['during_p99_ms'] / r['idle_p99_ms']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
