"""Fuzz target: reading and recovering a WAL segment made of arbitrary bytes.

The input is the content of `member/wal/0000000000000000-0000000000000000.wal`. Claims:

- the record decoder never raises anything but a WalError and never hangs;
- every record it returns is one a naive twin (its own framing, pure-Python CRC) also finds at
  that offset with a matching CRC chain, and the two stop at the same place;
- opening the WAL for writing (read_all with etcd's repair) either raises a WalError or yields
  exactly the records the decoder returned before the damage, and leaves a directory that reads
  back the same and accepts an append.

    python fuzz/wal_recovery.py fuzz/corpus/wal_recovery/*           # each input once
    python fuzz/wal_recovery.py fuzz/corpus/wal_recovery -atheris_runs=20000

Without atheris installed, or when every argument is a file, each file given is run once;
otherwise the arguments go to libFuzzer.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fuzz import harness  # noqa: E402

from google.protobuf.message import DecodeError  # noqa: E402

from proto.raftpb import raft_pb2  # noqa: E402
from proto.walpb import record_pb2  # noqa: E402
from trietcd.wal import record, segment  # noqa: E402

SEG0 = "0000000000000000-0000000000000000.wal"
_SCRATCH = tempfile.mkdtemp(prefix="wal-fuzz-")


def _naive(buf: bytes) -> list[tuple[int, bytes, int]]:
    """The records a straightforward reading accepts, up to the first bad frame."""
    out = []
    off = 0
    crc = 0
    while off + 8 <= len(buf):
        lf = int.from_bytes(buf[off:off + 8], "little")
        if lf == 0:
            break
        n = lf & ((1 << 56) - 1)
        pad = (lf >> 56) & 7 if lf >> 63 else 0
        if n + pad >= record.MAX_RECORD_BYTES or off + 8 + n + pad > len(buf):
            break
        try:
            rec = record_pb2.Record.FromString(buf[off + 8:off + 8 + n])
        except DecodeError:
            break
        if rec.type == record.CRC_TYPE:
            if crc != 0 and rec.crc != crc:
                break
            crc = rec.crc
        else:
            crc = record.crc32c_pure(crc, rec.data)
            if rec.crc != crc:
                break
            out.append((rec.type, rec.data, off))
        off += 8 + n + pad
    return out


def _decode(buf: bytes) -> tuple[list, record.WalError | None]:
    dec = record.Decoder()
    got = []
    try:
        for item in dec.records(buf, segment=SEG0, last=True):
            got.append(item)
    except record.WalError as exc:
        return got, exc
    return got, None


def _recover(buf: bytes, decoded: list, error: record.WalError | None) -> None:
    root = os.path.join(_SCRATCH, "d")
    shutil.rmtree(root, ignore_errors=True)
    waldir = os.path.join(root, "member", "wal")
    os.makedirs(waldir)
    with open(os.path.join(waldir, SEG0), "wb") as fh:
        fh.write(buf)
    try:
        w = segment.WAL.open(waldir, segment_size_bytes=4096)
    except record.WalError:
        return
    try:
        try:
            res = w.read_all()
        except record.WalError:
            return
        # Recovery keeps exactly the records before the damage.
        want_entries = [raft_pb2.Entry.FromString(d) for t, d, _ in decoded if t == record.ENTRY_TYPE]
        have = [e.SerializeToString() for e in res.entries]
        assert have == [e.SerializeToString() for e in _apply_overwrites(want_entries)]
        nxt = (res.entries[-1].Index if res.entries else 0) + 1
        w.save(raft_pb2.HardState(term=res.hard_state.term, commit=nxt), [raft_pb2.Entry(Term=1, Index=nxt)])
    finally:
        w.close()
    again = segment.read_wal(waldir)
    assert [e.SerializeToString() for e in again.entries][:-1] == have
    assert again.entries[-1].Index == nxt


def _apply_overwrites(entries: list) -> list:
    out: list = []
    for e in entries:
        if e.Index == 0:
            continue
        pos = e.Index - 1
        del out[pos:]
        out.append(e)
    return out


def test_one_input(data: bytes) -> None:
    got, error = _decode(data)
    naive = _naive(data)
    assert [(t, bytes(d), o) for t, d, o in got] == [(t, bytes(d), o) for t, d, o in naive[:len(got)]]
    if error is None:
        assert len(got) == len(naive)
    _recover(data, got, error)


def main() -> None:
    try:
        harness.main(test_one_input)
    finally:
        shutil.rmtree(_SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
