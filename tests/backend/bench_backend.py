"""Rough throughput of the backend's put/get paths (not a test): python tests/backend/bench_backend.py [N]

Puts as the mvcc store makes them (`key` bucket, ascending revision keys, ~100-byte values), a
commit every `batch_limit` puts; gets of rows still in the buffer and of committed rows.
"""

from __future__ import annotations

import random
import sys
import time

from trietcd.backend import KEY, Backend


def revision_bytes(main: int) -> bytes:
    return main.to_bytes(8, "big") + b"_" + bytes(8)


def main(n: int) -> None:
    b = Backend.open_memory(fsync=False)
    keys = [revision_bytes(r) for r in range(2, n + 2)]
    value = b"\x0a\x10" + b"k" * 16 + b"\x10\x02\x18\x02\x20\x01\x2a\x40" + b"v" * 64

    t = time.perf_counter()
    for k in keys:
        b.put(KEY, k, value)
        if b.pending >= b.batch_limit:
            b.commit()
    put_s = time.perf_counter() - t
    print(f"put (commits included): {n / put_s:,.0f}/s")

    b.commit()
    sample = random.Random(1).choices(keys, k=n)
    t = time.perf_counter()
    for k in sample:
        b.get(KEY, k)
    get_s = time.perf_counter() - t
    print(f"get committed rows: {n / get_s:,.0f}/s")

    buffered = [revision_bytes(r) for r in range(n + 2, n + 2 + 5000)]
    for k in buffered:
        b.put(KEY, k, value)
    sample = random.Random(2).choices(buffered, k=n)
    t = time.perf_counter()
    for k in sample:
        b.get(KEY, k)
    get_s = time.perf_counter() - t
    print(f"get buffered rows: {n / get_s:,.0f}/s")

    t = time.perf_counter()
    for i in range(n // 10):
        start = keys[i * 7 % len(keys)]
        b.range(KEY, start, b"", limit=10)
    print(f"range of 10 rows: {n // 10 / (time.perf_counter() - t):,.0f}/s")
    b.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
