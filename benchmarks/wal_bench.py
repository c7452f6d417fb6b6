"""WAL benchmark: codec cost, append throughput per fsync batch size, replay speed.

    python benchmarks/wal_bench.py                      # all, 1M entries replayed
    python benchmarks/wal_bench.py --replay-entries 200000 --dir /some/disk

Entries carry 256 bytes of data. Appends go through `WAL.save` (one fdatasync per call) in a
fresh WAL under --dir; replay is `WAL.open` + `read_all` over a WAL of --replay-entries entries.
The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from proto.raftpb import raft_pb2  # noqa: E402
from trietcd.wal import record, segment  # noqa: E402

ENTRY_BYTES = 256
META = record.encode_metadata(1, 2)


def make_entries(first: int, count: int, term: int = 2) -> list[raft_pb2.Entry]:
    data = bytes(range(256))[:ENTRY_BYTES]
    return [raft_pb2.Entry(Term=term, Index=i, Data=data) for i in range(first, first + count)]


def bench_codec(count: int) -> dict:
    ents = make_entries(1, count)
    enc = record.Encoder()
    # CPU time, not wall time: the machine is shared and the codec does no IO.
    t0 = time.process_time()
    enc.entries(ents)
    buf = enc.take()
    encode_s = time.process_time() - t0
    reader = record.Reader()
    head = record.Encoder()
    head.crc_record()
    head.metadata(META)
    head.snapshot(record.record_pb2.Snapshot())
    seg = bytes(head.take()) + bytes(record.Encoder(head.crc).take())
    enc2 = record.Encoder(head.crc)
    enc2.entries(ents)
    seg = bytes(record.frame(record.CRC_TYPE, 0, None)) + seg[16:] + bytes(enc2.take())
    t0 = time.process_time()
    reader.feed(seg)
    decode_s = time.process_time() - t0
    assert len(reader.result().entries) == count
    return {"encode_us_per_entry": encode_s / count * 1e6, "decode_us_per_entry": decode_s / count * 1e6,
            "frame_bytes_per_entry": len(buf) / count}


def bench_append(root: str, batch: int, calls: int) -> dict:
    d = os.path.join(root, f"append-{batch}", "wal")
    os.makedirs(os.path.dirname(d))
    w = segment.WAL.create(d, META)
    index = 1
    batches = []
    for _ in range(calls):
        batches.append(make_entries(index, batch))
        index += batch
    t0 = time.perf_counter()
    for b in batches:
        w.save(raft_pb2.HardState(term=2, vote=1, commit=b[-1].Index), b)
    elapsed = time.perf_counter() - t0
    w.close()
    shutil.rmtree(os.path.dirname(d))
    n = batch * calls
    return {"batch": batch, "calls": calls, "entries_per_s": n / elapsed, "mb_per_s": n * ENTRY_BYTES / elapsed / 1e6,
            "ms_per_save": elapsed / calls * 1e3}


def bench_replay(root: str, count: int) -> dict:
    d = os.path.join(root, "replay", "wal")
    os.makedirs(os.path.dirname(d))
    w = segment.WAL.create(d, META, unsafe_no_fsync=True)
    step = 1000
    t0 = time.perf_counter()
    for first in range(1, count + 1, step):
        n = min(step, count + 1 - first)
        w.save(raft_pb2.HardState(term=2, vote=1, commit=first + n - 1), make_entries(first, n))
    w.close()
    write_s = time.perf_counter() - t0
    segments = len([n for n in os.listdir(d) if n.endswith(".wal")])
    t0, c0 = time.perf_counter(), time.process_time()
    w = segment.WAL.open(d)
    res = w.read_all()
    replay_s = time.perf_counter() - t0
    replay_cpu_s = time.process_time() - c0
    w.close()
    assert len(res.entries) == count and res.entries[-1].Index == count
    shutil.rmtree(os.path.dirname(d))
    return {"entries": count, "segments": segments, "replay_s": replay_s, "replay_cpu_s": replay_cpu_s, "entries_per_s": count / replay_s,
            "write_entries_per_s_no_fsync": count / write_s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    p.add_argument("--replay-entries", type=int, default=1_000_000)
    p.add_argument("--codec-entries", type=int, default=200_000)
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir)
    try:
        print(f"load average before: {os.getloadavg()}; crc32c: {record.CRC_IMPLEMENTATION}")
        c = bench_codec(args.codec_entries)
        print(f"codec (CPU time): encode {c['encode_us_per_entry']:.2f} us/entry, decode {c['decode_us_per_entry']:.2f} us/entry "
              f"({c['frame_bytes_per_entry']:.0f} bytes/frame)")
        for batch, calls in ((1, 300), (10, 300), (100, 200), (1000, 50)):
            a = bench_append(root, batch, calls)
            print(f"append batch {batch:>4}: {a['entries_per_s']:>9.0f} entries/s  {a['mb_per_s']:6.1f} MB/s  "
                  f"{a['ms_per_save']:.2f} ms per save+fdatasync ({calls} saves)")
        r = bench_replay(root, args.replay_entries)
        print(f"replay {r['entries']} entries in {r['segments']} segments: {r['replay_s']:.2f} s = "
              f"{r['entries_per_s']:.0f} entries/s, CPU {r['replay_cpu_s']:.2f} s = "
              f"{r['entries'] / r['replay_cpu_s']:.0f} entries/CPU-s (written at {r['write_entries_per_s_no_fsync']:.0f} entries/s "
              f"without fsync)")
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
