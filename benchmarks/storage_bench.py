"""Storage benchmark: batched puts, point gets, cursor scans, bytes written per commit, defrag size.

    python benchmarks/storage_bench.py --keys 100000            # on a file in a temp dir, fsync on
    python benchmarks/storage_bench.py --keys 1000000 --no-fsync
    python benchmarks/storage_bench.py --server-gc   # the garbage collector tuned as the trietcd command runs it

Figures are wall-clock on a shared machine: note the load (printed) when quoting them. The rates in brackets
divide by this process's CPU time instead: steadier when other work competes for the cores (fsync waits are
not CPU time, so they count in the wall-clock rate only).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from storage import DB, compact  # noqa: E402

VALUE = b"v" * 256
BATCH = 1000


def load(db: DB, keys: list[bytes]) -> dict:
    start = time.perf_counter()
    cpu_start = time.process_time()
    before = db.stats()["written_bytes"]
    commits = 0
    for i in range(0, len(keys), BATCH):
        with db.update() as tx:
            b = tx.bucket(b"bench")
            for k in keys[i:i + BATCH]:
                b.put(k, VALUE)
        commits += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    written = db.stats()["written_bytes"] - before
    return {"puts_per_s": len(keys) / elapsed, "puts_per_cpu_s": len(keys) / cpu,
            "bytes_per_commit": written / commits, "seconds": elapsed}


def gets(db: DB, keys: list[bytes], n: int, rng: random.Random) -> tuple[float, float]:
    sample = [keys[rng.randrange(len(keys))] for _ in range(n)]
    with db.view() as tx:
        b = tx.bucket(b"bench")
        start = time.perf_counter()
        cpu_start = time.process_time()
        for k in sample:
            if b.get(k) is None:
                raise AssertionError(k)
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu_start)


def scan(db: DB) -> tuple[int, float]:
    with db.view() as tx:
        start = time.perf_counter()
        c = tx.bucket(b"bench").cursor()
        n = 0
        kv = c.first()
        while kv is not None:
            n += 1
            kv = c.next()
        return n, time.perf_counter() - start


def run(keys_n: int, order: str, fsync: bool, workdir: str) -> None:
    rng = random.Random(1)
    keys = [b"key%010d" % i for i in range(keys_n)]
    if order == "random":
        rng.shuffle(keys)
    path = os.path.join(workdir, f"bench-{order}.db")
    db = DB.open(path, fsync=fsync, no_freelist_sync=True)
    with db.update() as tx:
        tx.create_bucket(b"bench")
    put = load(db, keys)
    get_rate, get_cpu_rate = gets(db, keys, min(200_000, keys_n), rng)
    scanned, scan_s = scan(db)
    assert scanned == keys_n
    size = db.stats()["size_bytes"]
    dst_path = os.path.join(workdir, f"bench-{order}.compact.db")
    dst = DB.open(dst_path, fsync=fsync, no_freelist_sync=True)
    start = time.perf_counter()
    compact(db, dst, tx_max_bytes=10 << 20)
    compact_s = time.perf_counter() - start
    live = keys_n * (len(keys[0]) + len(VALUE))
    dsize = dst.stats()["size_bytes"]
    print(f"{keys_n:>8} keys {order:>10}: {put['puts_per_s']:>8.0f} puts/s [{put['puts_per_cpu_s']:>7.0f}] "
          f"(1k/commit), {put['bytes_per_commit'] / 1024:>7.0f} KiB written/commit, "
          f"{get_rate:>8.0f} gets/s [{get_cpu_rate:>7.0f}], "
          f"scan {scan_s:5.2f} s ({scanned / scan_s:>8.0f} keys/s), file {size / 2**20:6.1f} MiB, "
          f"after compact {dsize / 2**20:6.1f} MiB = {dsize / live:4.2f}x live ({compact_s:5.1f} s)")
    db.close()
    dst.close()
    os.unlink(path)
    os.unlink(dst_path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, nargs="+", default=[100_000])
    p.add_argument("--order", choices=["sequential", "random"], nargs="+", default=["sequential", "random"])
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--dir", default=None, help="directory for the db files (default: a temp dir)")
    p.add_argument("--server-gc", action="store_true",
                   help="collect garbage with the thresholds the trietcd command sets, not CPython's defaults")
    args = p.parse_args()
    if args.server_gc:
        from trietcd.cli import GC_THRESHOLDS
        gc.set_threshold(*GC_THRESHOLDS)
    print(f"load average {os.getloadavg()}, fsync {'off' if args.no_fsync else 'on'}, python {sys.version.split()[0]}, "
          f"gc thresholds {gc.get_threshold()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as workdir:
        for n in args.keys:
            for order in args.order:
                run(n, order, not args.no_fsync, workdir)


if __name__ == "__main__":
    main()
