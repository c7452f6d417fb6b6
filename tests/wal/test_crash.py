"""Crash tests: the WAL on a simulated disk that dies before every mutating call.

`SimFiles` keeps, per file, what the page cache holds and what the disk holds (updated by
fsync/fdatasync), and a directory namespace that becomes durable when its directory is synced.
A crash image keeps the durable state; in "torn" mode it also keeps a prefix of the unsynced
writes and a random subset of the 512-byte sectors of the next one, as a power cut may.

Claims: after a crash at any point, reopening yields every acknowledged batch; with unsynced
writes dropped, exactly the batches whose fsync completed; with torn writes, at most a prefix of
the batch in flight more; never an error, never a record that was not written.
"""

from __future__ import annotations

import os
import random

import pytest

from proto.raftpb import raft_pb2
from trietcd.wal import record, segment
from trietcd.wal.segment import WAL, Files, LockedError

SECTOR = 512


class Crash(Exception):
    pass


class Inode:
    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""
        self.pending: list[tuple] = []  # unsynced ops: ("w", off, bytes) | ("t", size)


class SimFiles(Files):
    def __init__(self, crash_at: int | None = None) -> None:
        self.names: dict[str, Inode] = {}
        self.durable_names: dict[str, Inode] = {}
        self.dirs: set[str] = {"/", "/d", "/d/member"}
        self.fds: dict[int, tuple[str, Inode]] = {}
        self.locked: set[int] = set()  # ids of locked inodes
        self.next_fd = 3
        self.ops = 0
        self.crash_at = crash_at
        self.data_syncs = 0

    def _op(self) -> None:
        self.ops += 1
        if self.crash_at is not None and self.ops >= self.crash_at:
            raise Crash()

    # namespace
    def listdir(self, path):
        path = path.rstrip("/")
        found = {p[len(path) + 1:].split("/")[0] for p in self.names if p.startswith(path + "/")}
        found |= {d[len(path) + 1:].split("/")[0] for d in self.dirs if d.startswith(path + "/")}
        if path not in self.dirs:
            raise FileNotFoundError(path)
        return sorted(found)

    def exists(self, path):
        return path in self.names or path in self.dirs

    def makedirs(self, path):
        self._op()
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))

    def rmtree(self, path):
        self._op()
        for p in [p for p in self.names if p.startswith(path + "/")]:
            del self.names[p]
        self.dirs = {d for d in self.dirs if d != path and not d.startswith(path + "/")}

    def rename(self, src, dst):
        self._op()
        if src in self.dirs:
            for p in [p for p in self.names if p.startswith(src + "/")]:
                self.names[dst + p[len(src):]] = self.names.pop(p)
            self.dirs = {dst + d[len(src):] if d == src or d.startswith(src + "/") else d for d in self.dirs}
        else:
            self.names[dst] = self.names.pop(src)

    def remove(self, path):
        self._op()
        del self.names[path]

    def sync_dir(self, path):
        self._op()
        # Entries under `path` (also inside renamed subdirectories) become durable as they are now.
        for p in [p for p in self.durable_names if p.startswith(path + "/")]:
            del self.durable_names[p]
        for p, inode in self.names.items():
            if p.startswith(path + "/"):
                self.durable_names[p] = inode

    # files
    def open(self, path, *, create=False, lock=True):
        if path not in self.names:
            if not create:
                raise FileNotFoundError(path)
            self._op()
            self.names[path] = Inode()
        inode = self.names[path]
        if lock:
            if id(inode) in self.locked:
                raise LockedError(path)
            self.locked.add(id(inode))
        fd = self.next_fd
        self.next_fd += 1
        self.fds[fd] = (path, inode, lock)
        return fd

    def read(self, fd):
        return bytes(self.fds[fd][1].data)

    def pwrite(self, fd, data, offset):
        self._op()
        inode = self.fds[fd][1]
        data = bytes(data)
        if len(inode.data) < offset:
            inode.data += bytes(offset - len(inode.data))
        inode.data[offset:offset + len(data)] = data
        inode.pending.append(("w", offset, data))

    def size(self, fd):
        return len(self.fds[fd][1].data)

    def truncate(self, fd, size):
        self._op()
        inode = self.fds[fd][1]
        if size < len(inode.data):
            del inode.data[size:]
        else:
            inode.data += bytes(size - len(inode.data))
        inode.pending.append(("t", size))

    def preallocate(self, fd, size):
        inode = self.fds[fd][1]
        if size > len(inode.data):
            self.truncate(fd, size)

    def fdatasync(self, fd):
        self._op()
        inode = self.fds[fd][1]
        inode.durable = bytes(inode.data)
        inode.pending = []
        self.data_syncs += 1

    fsync = fdatasync

    def close(self, fd):
        _, inode, lock = self.fds.pop(fd)
        if lock:
            self.locked.discard(id(inode))

    def write_file(self, path, data, mode):
        fd = self.open(path, create=True, lock=False)
        try:
            self.truncate(fd, 0)
            self.pwrite(fd, data, 0)
            self.fsync(fd)
        finally:
            self.close(fd)

    def read_file(self, path):
        return bytes(self.names[path].data)

    def copy_file(self, src, dst):
        self.write_file(dst, self.read_file(src), 0o644)

    # after the crash
    def crash_image(self, rng: random.Random | None) -> "SimFiles":
        """A fresh disk holding what survived. rng None: unsynced writes are all lost."""
        out = SimFiles()
        out.dirs = set(self.dirs)
        copies: dict[int, Inode] = {}
        for p, inode in self.durable_names.items():
            if id(inode) not in copies:
                new = Inode()
                data = bytearray(inode.durable)
                if rng is not None and inode.pending:
                    keep = rng.randrange(len(inode.pending) + 1)
                    for i, op in enumerate(inode.pending[:keep + 1]):
                        _apply(data, op, rng if i == keep else None)
                new.data = data
                new.durable = bytes(data)
                copies[id(inode)] = new
            out.names[p] = copies[id(inode)]
        out.durable_names = dict(out.names)
        return out


def _apply(data: bytearray, op: tuple, rng: random.Random | None) -> None:
    if op[0] == "t":
        size = op[1]
        if rng is not None and rng.random() < 0.5:
            return
        if size < len(data):
            del data[size:]
        else:
            data += bytes(size - len(data))
        return
    _, off, chunk = op
    if len(data) < off + len(chunk):
        data += bytes(off + len(chunk) - len(data))
    pos = off
    while pos < off + len(chunk):
        end = min((pos // SECTOR + 1) * SECTOR, off + len(chunk))
        if rng is None or rng.random() < 0.5:
            data[pos:end] = chunk[pos - off:end - off]
        pos = end


WAL_DIR = "/d/member/wal"
META = record.encode_metadata(11, 22)
SEGMENT_BYTES = 3000


def batches(rng: random.Random, count: int) -> list[list[raft_pb2.Entry]]:
    out = []
    index = 1
    for _ in range(count):
        n = rng.choice([1, 1, 2, 5, 10])
        out.append([raft_pb2.Entry(Term=1, Index=index + i, Data=rng.randbytes(rng.choice([0, 30, 256, 700])))
                    for i in range(n)])
        index += n
    return out


def run_until_crash(files: SimFiles, work: list[list[raft_pb2.Entry]]):
    """Returns (acknowledged batches, the batch in flight or None, syncs before it)."""
    acked = []
    inflight = None
    syncs_before = 0
    try:
        w = WAL.create(WAL_DIR, META, files=files, segment_size_bytes=SEGMENT_BYTES)
        for batch in work:
            inflight, syncs_before = batch, files.data_syncs
            w.save(raft_pb2.HardState(term=1, commit=batch[-1].Index), batch)
            acked.append(batch)
            inflight = None
        w.close()
    except Crash:
        return acked, inflight, syncs_before, True
    return acked, inflight, syncs_before, False


def reopen(files: SimFiles) -> list[raft_pb2.Entry] | None:
    if not segment.exists(WAL_DIR, files):
        return None
    with WAL.open(WAL_DIR, files=files, segment_size_bytes=SEGMENT_BYTES) as w:
        res = w.read_all()
        # The log stays appendable after recovery.
        nxt = (res.entries[-1].Index if res.entries else 0) + 1
        w.save(raft_pb2.HardState(term=2, commit=nxt), [raft_pb2.Entry(Term=2, Index=nxt, Data=b"after")])
    again = segment.read_wal(WAL_DIR, files=files).entries
    assert [(e.Index, e.Term, e.Data) for e in again] == [(e.Index, e.Term, e.Data) for e in res.entries] + [(nxt, 2, b"after")]
    return res.entries


def key(entries) -> list[tuple]:
    return [(e.Index, e.Term, e.Data) for e in entries]


def total_ops(work) -> int:
    files = SimFiles()
    run_until_crash(files, work)
    return files.ops


@pytest.mark.parametrize("seed", [1, 2])
def test_crash_dropping_unsynced_writes_keeps_exactly_the_synced_batches(seed):
    rng = random.Random(seed)
    work = batches(rng, 25)
    n = total_ops(work)
    for crash_at in range(1, n + 1):
        files = SimFiles(crash_at)
        acked, inflight, syncs_before, crashed = run_until_crash(files, work)
        assert crashed
        got = reopen(files.crash_image(None))
        if got is None:
            assert not acked, f"seed {seed} crash_at {crash_at}: WAL lost"
            continue
        expect = [e for b in acked for e in b]
        if inflight is not None and files.data_syncs > syncs_before:
            expect += inflight  # its fdatasync ran (or the cut's), so it is durable
        assert key(got) == key(expect), f"seed {seed} crash_at {crash_at}"


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_crash_with_torn_writes_keeps_acked_batches_and_a_prefix_of_the_next(seed):
    rng = random.Random(seed)
    work = batches(rng, 20)
    n = total_ops(work)
    for crash_at in range(1, n + 1):
        for trial in range(3):
            files = SimFiles(crash_at)
            acked, inflight, _, _ = run_until_crash(files, work)
            image = files.crash_image(random.Random(seed * 100003 + crash_at * 7 + trial))
            got = reopen(image)
            if got is None:
                assert not acked
                continue
            acked_entries = [e for b in acked for e in b]
            allowed = acked_entries + (inflight or [])
            assert key(got) == key(allowed[:len(got)]), f"seed {seed} crash_at {crash_at} trial {trial}"
            assert len(got) >= len(acked_entries), f"seed {seed} crash_at {crash_at} trial {trial}"


def test_sim_disk_self_check():
    # The simulation must be able to lose data, or the tests above could not fail.
    files = SimFiles()
    fd = files.open("/d/f", create=True)
    files.pwrite(fd, b"abc", 0)
    files.sync_dir("/d")
    assert files.crash_image(None).read_file("/d/f") == b""
    files.fdatasync(fd)
    files.pwrite(fd, b"x" * 2000, 3)
    assert files.crash_image(None).read_file("/d/f") == b"abc"
    fd2 = files.open("/d/g", create=True)
    files.fdatasync(fd2)
    assert not files.crash_image(None).exists("/d/g")  # its directory entry was never synced
    with pytest.raises(LockedError):
        files.open("/d/f")
