"""Put latency while a large db is defragmented, real etcd 3.5.1 and trietcd side by side.

    python -m benchmarks.defrag_latency [--gib 1.0] [--value-kib 128]

For each server: fill the db to about `--gib` GiB (keys of `--value-kib` KiB values), delete every other key
and compact, so that half the file is free; then one client puts small keys one at a time while
`etcdctl defrag` runs, and the put latencies during the defrag are compared with the same client's before it.
Prints the db size before and after, the defrag's duration, and put p50/p99/max idle and during.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from benchmarks.lease_expiry import kv_stub, percentile, start  # noqa: E402
from benchmarks.unary_noop import _etcd_bin_dir, _stop  # noqa: E402
from proto.etcdserverpb import rpc_pb2  # noqa: E402


def fill(endpoint: str, gib: float, value_kib: int) -> int:
    """Puts keys until about `gib` GiB are written, deletes every other one, compacts; returns the key count."""
    channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 16 << 20)])
    kv = kv_stub(channel)
    value = os.urandom(value_kib << 10)
    n = int(gib * (1 << 30)) // len(value)
    delete = channel.unary_unary("/etcdserverpb.KV/DeleteRange",
                                 request_serializer=rpc_pb2.DeleteRangeRequest.SerializeToString,
                                 response_deserializer=rpc_pb2.DeleteRangeResponse.FromString)
    compact = channel.unary_unary("/etcdserverpb.KV/Compact",
                                  request_serializer=rpc_pb2.CompactionRequest.SerializeToString,
                                  response_deserializer=rpc_pb2.CompactionResponse.FromString)
    lock = threading.Lock()
    todo = iter(range(n))

    def worker():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            kv.Put(rpc_pb2.PutRequest(key=b"big/%08d" % i, value=value), timeout=60)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(0, n, 2):
        delete(rpc_pb2.DeleteRangeRequest(key=b"big/%08d" % i), timeout=60)
    rev = kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=60).header.revision
    compact(rpc_pb2.CompactionRequest(revision=rev, physical=True), timeout=600)
    channel.close()
    return n


def db_size(endpoint: str) -> int:
    channel = grpc.insecure_channel(endpoint)
    status = channel.unary_unary("/etcdserverpb.Maintenance/Status",
                                 request_serializer=rpc_pb2.StatusRequest.SerializeToString,
                                 response_deserializer=rpc_pb2.StatusResponse.FromString)
    size = status(rpc_pb2.StatusRequest(), timeout=30).dbSize
    channel.close()
    return size


def measure(kind: str, gib: float, value_kib: int) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"defrag-latency-{kind}-")
    proc, endpoint = start(kind, os.path.join(tmp, "d"))
    try:
        fill(endpoint, gib, value_kib)
        before_size = db_size(endpoint)
        kv = kv_stub(grpc.insecure_channel(endpoint))
        idle = []
        for i in range(500):
            t = time.perf_counter()
            kv.Put(rpc_pb2.PutRequest(key=b"small/%d" % (i % 100), value=b"v" * 64), timeout=60)
            idle.append(time.perf_counter() - t)
        during: list[float] = []
        done = threading.Event()

        def putter():
            i = 0
            while not done.is_set():
                t = time.perf_counter()
                kv.Put(rpc_pb2.PutRequest(key=b"small/%d" % (i % 100), value=b"v" * 64), timeout=120)
                during.append(time.perf_counter() - t)
                i += 1

        thread = threading.Thread(target=putter)
        thread.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        out = subprocess.run([os.path.join(_etcd_bin_dir(), "etcdctl"), f"--endpoints={endpoint}",
                              "--command-timeout=600s", "defrag"], capture_output=True, text=True)
        took = time.monotonic() - t0
        time.sleep(0.5)
        done.set()
        thread.join()
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return {"before": before_size, "after": db_size(endpoint), "took": took, "idle": idle, "during": during}
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--value-kib", type=int, default=128)
    args = parser.parse_args(argv)
    print(f"db filled to ~{args.gib} GiB with {args.value_kib} KiB values, half deleted and compacted; "
          "one client putting 64 B values one at a time")
    print("| server | db before | db after | defrag took | puts during | put p50 idle / during | "
          "put p99 idle / during | put max during |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("etcd", "trietcd"):
        r = measure(kind, args.gib, args.value_kib)
        idle, during = r["idle"], r["during"]
        print(f"| {kind} | {r['before'] / 2**20:.0f} MiB | {r['after'] / 2**20:.0f} MiB | {r['took']:.2f} s | "
              f"{len(during)} | {percentile(idle, 0.5) * 1e3:.2f} / {percentile(during, 0.5) * 1e3:.2f} ms | "
              f"{percentile(idle, 0.99) * 1e3:.2f} / {percentile(during, 0.99) * 1e3:.2f} ms | "
              f"{max(during) * 1e3:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
