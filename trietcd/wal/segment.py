"""The WAL's files: segments in `member/wal`, `.snap` files in `member/snap` (wal-and-snap.md §1-§7).

This is the shell around `record` and `snap`. It is plain blocking code; the member calls it from
`trio.to_thread.run_sync`, one call at a time (the raft loop owns the `WAL`). Every OS call goes
through a `Files` object so that tests can substitute a simulated disk that crashes between calls.

What etcd does and we do too:
- a new WAL is written in `<dir>.tmp` and renamed into place, then the parent directory is synced;
- segments are preallocated to 64,000,000 bytes; the next one is prepared as `0.tmp`/`1.tmp` before
  it is needed, and a cut writes its crc, metadata and state records, syncs, renames, syncs the dir;
- `save` syncs (fdatasync) once per call when raft's MustSync says so;
- every open segment holds an exclusive OFD lock, so a second process (etcd or us) cannot open it
  for writing and purge cannot delete it before `release_lock_to`;
- a torn tail in the last segment is repaired by truncation after keeping a `.broken` copy; after a
  clean read the tail past the last record is zeroed (truncate, then re-extend to the old length).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import struct
import time

from proto.raftpb import raft_pb2
from proto.walpb import record_pb2

from . import record, snap
from .record import CorruptError, Decoder, Encoder, ReadResult, Reader, TornWriteError, WalError

__all__ = [
    "SEGMENT_SIZE_BYTES", "Files", "OSFiles", "LockedError", "WalNotFoundError", "WalExistsError",
    "WAL", "Snapshotter", "exists", "read_wal", "valid_snapshot_entries", "purge", "wal_name",
    "parse_wal_name",
]

SEGMENT_SIZE_BYTES = 64 * 1000 * 1000
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
WAL_SUFFIX = ".wal"
_WAL_NAME = re.compile(r"^([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16})\.wal$")


class LockedError(WalError):
    def __init__(self, path: str = "") -> None:
        super().__init__("fileutil: file already locked")
        self.path = path


class WalNotFoundError(WalError):
    def __init__(self) -> None:
        super().__init__("wal: file not found")


class WalExistsError(WalError):
    def __init__(self) -> None:
        super().__init__("file already exists")


def wal_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}{WAL_SUFFIX}"


def parse_wal_name(name: str) -> tuple[int, int] | None:
    m = _WAL_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


# ---- the OS --------------------------------------------------------------------

_FLOCK_WRITE = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)


class Files:
    """The OS calls the WAL makes. `OSFiles` is the real one; tests use a simulated disk."""

    def listdir(self, path: str) -> list[str]: raise NotImplementedError
    def exists(self, path: str) -> bool: raise NotImplementedError
    def makedirs(self, path: str) -> None: raise NotImplementedError
    def rmtree(self, path: str) -> None: raise NotImplementedError
    def rename(self, src: str, dst: str) -> None: raise NotImplementedError
    def remove(self, path: str) -> None: raise NotImplementedError
    def sync_dir(self, path: str) -> None: raise NotImplementedError
    def open(self, path: str, *, create: bool = False, lock: bool = True) -> int: raise NotImplementedError
    def read(self, fd: int) -> bytes: raise NotImplementedError
    def pwrite(self, fd: int, data: bytes | bytearray, offset: int) -> None: raise NotImplementedError
    def size(self, fd: int) -> int: raise NotImplementedError
    def truncate(self, fd: int, size: int) -> None: raise NotImplementedError
    def preallocate(self, fd: int, size: int) -> None: raise NotImplementedError
    def fdatasync(self, fd: int) -> None: raise NotImplementedError
    def fsync(self, fd: int) -> None: raise NotImplementedError
    def close(self, fd: int) -> None: raise NotImplementedError
    def write_file(self, path: str, data: bytes, mode: int) -> None: raise NotImplementedError
    def read_file(self, path: str) -> bytes: raise NotImplementedError
    def copy_file(self, src: str, dst: str) -> None: raise NotImplementedError


class OSFiles(Files):
    def listdir(self, path):
        return sorted(os.listdir(path))

    def exists(self, path):
        return os.path.exists(path)

    def makedirs(self, path):
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)

    def rmtree(self, path):
        shutil.rmtree(path, ignore_errors=False)

    def rename(self, src, dst):
        os.rename(src, dst)

    def remove(self, path):
        os.remove(path)

    def sync_dir(self, path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open(self, path, *, create=False, lock=True):
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
        if lock:
            try:
                _lock(fd)
            except LockedError:
                os.close(fd)
                raise LockedError(path) from None
        return fd

    def read(self, fd):
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, fd, data, offset):
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def size(self, fd):
        return os.fstat(fd).st_size

    def truncate(self, fd, size):
        os.ftruncate(fd, size)

    def preallocate(self, fd, size):
        # etcd: fallocate mode 0 (allocates and extends), ftruncate where unsupported.
        if size <= os.fstat(fd).st_size:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            os.ftruncate(fd, size)

    def fdatasync(self, fd):
        os.fdatasync(fd)

    def fsync(self, fd):
        os.fsync(fd)

    def close(self, fd):
        os.close(fd)

    def write_file(self, path, data, mode):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            self.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()

    def copy_file(self, src, dst):
        shutil.copyfile(src, dst)


def _lock(fd: int) -> None:
    """Exclusive whole-file lock as etcd takes it: an OFD lock (flock where OFD is missing)."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK_WRITE)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise LockedError() from None
        if exc.errno != errno.EINVAL:
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError() from None


# ---- directory helpers ---------------------------------------------------------


def _wal_names(files: Files, dirpath: str) -> list[str]:
    if not files.exists(dirpath):
        return []
    return [n for n in files.listdir(dirpath) if parse_wal_name(n) is not None]


def exists(dirpath: str, files: Files | None = None) -> bool:
    """etcd's wal.Exist: the directory holds at least one `*.wal` file."""
    return bool(_wal_names(files or OSFiles(), dirpath))


def _select(names: list[str], index: int) -> int:
    """etcd's selectWALFiles: the last segment starting at or before `index`, contiguous after."""
    for i in range(len(names) - 1, -1, -1):
        if parse_wal_name(names[i])[1] <= index:
            seqs = [parse_wal_name(n)[0] for n in names[i:]]
            if any(b != a + 1 for a, b in zip(seqs, seqs[1:])):
                raise WalNotFoundError()
            return i
    raise WalNotFoundError()


def _join(dirpath: str, name: str) -> str:
    return os.path.join(dirpath, name)


def _read_segments(files: Files, dirpath: str, names: list[str], reader: Reader, fds=None) -> None:
    for i, name in enumerate(names):
        if fds is None:
            fd = files.open(_join(dirpath, name), lock=False)
            try:
                content = files.read(fd)
            finally:
                files.close(fd)
        else:
            content = files.read(fds[i])
        reader.feed(content, segment=name, last=i == len(names) - 1)


def read_wal(dirpath: str, at: record_pb2.Snapshot | None = None, files: Files | None = None) -> ReadResult:
    """Read without locking or repairing (etcd's OpenForRead + ReadAll): a torn tail just ends
    the log."""
    files = files or OSFiles()
    at = at or record_pb2.Snapshot()
    names = _wal_names(files, dirpath)
    if not names:
        raise WalNotFoundError()
    names = names[_select(names, at.index):]
    reader = Reader(at.index, at.term)
    try:
        _read_segments(files, dirpath, names, reader)
    except TornWriteError:
        pass
    return reader.result()


def valid_snapshot_entries(dirpath: str, files: Files | None = None) -> list[record_pb2.Snapshot]:
    """Snapshot records of the whole WAL whose index is committed (etcd's ValidSnapshotEntries)."""
    files = files or OSFiles()
    names = _wal_names(files, dirpath)
    if not names:
        raise WalNotFoundError()
    reader = Reader(0, 0)
    try:
        _read_segments(files, dirpath, names, reader)
    except TornWriteError:
        pass
    commit = reader.hard_state.commit
    return [s for s in reader.snapshots if s.index <= commit]


def purge(dirpath: str, suffix: str, max_count: int, files: Files | None = None) -> list[str]:
    """One round of etcd's PurgeFile: delete the oldest `*suffix` files beyond `max_count`, stopping
    at the first one somebody holds locked. 0 means keep everything. Returns the deleted names."""
    files = files or OSFiles()
    if max_count <= 0 or not files.exists(dirpath):
        return []
    names = sorted(n for n in files.listdir(dirpath) if n.endswith(suffix))
    removed = []
    while len(names) > max_count:
        path = _join(dirpath, names[0])
        try:
            fd = files.open(path, lock=True)
        except LockedError:
            break
        try:
            files.remove(path)
        finally:
            files.close(fd)
        removed.append(names.pop(0))
    return removed


# ---- the WAL -----------------------------------------------------------------------


class WAL:
    """An open WAL. `create` or `open` + `read_all`, then `save`/`save_snapshot`, then `close`.

    Invariants: `_locks` holds (name, fd) of every segment from the oldest still locked to the
    tail, in order; `_offset` is where the next frame goes in the tail; `_encoder.crc` is the
    running CRC after the last frame written.
    """

    def __init__(self, dirpath: str, files: Files, *, unsafe_no_fsync: bool, segment_size_bytes: int) -> None:
        self.dir = dirpath
        self._files = files
        self.unsafe_no_fsync = unsafe_no_fsync
        self.segment_size_bytes = segment_size_bytes
        self._locks: list[tuple[str, int]] = []
        self._start = record_pb2.Snapshot()
        self._encoder: Encoder | None = None
        self._offset = 0
        self._metadata = b""
        self._state = raft_pb2.HardState()
        self._last_index = 0  # etcd's enti: index of the last entry written or read
        self._tmp: tuple[str, int] | None = None  # the prepared next segment
        self._tmp_count = 0
        self._closed = False
        self.last_sync_s = 0.0  # how long the last fdatasync took (the member picks where to save by it)

    # -- construction

    @classmethod
    def create(cls, dirpath: str, metadata: bytes, *, files: Files | None = None, unsafe_no_fsync: bool = False,
               segment_size_bytes: int = SEGMENT_SIZE_BYTES) -> "WAL":
        files = files or OSFiles()
        if exists(dirpath, files):
            raise WalExistsError()
        dirpath = os.path.normpath(dirpath)
        tmpdir = dirpath + ".tmp"
        if files.exists(tmpdir):
            files.rmtree(tmpdir)
        files.makedirs(tmpdir)
        w = cls(dirpath, files, unsafe_no_fsync=unsafe_no_fsync, segment_size_bytes=segment_size_bytes)
        name = wal_name(0, 0)
        fd = files.open(_join(tmpdir, name), create=True, lock=True)
        try:
            files.preallocate(fd, segment_size_bytes)
            w._locks.append((name, fd))
            w._metadata = metadata
            w._encoder = Encoder(0)
            w._encoder.crc_record()
            w._encoder.metadata(metadata)
            w._encoder.snapshot(record_pb2.Snapshot())
            w._flush()
            w._sync()
            if files.exists(dirpath):
                files.rmtree(dirpath)
            files.rename(tmpdir, dirpath)
            files.sync_dir(os.path.dirname(dirpath) or ".")
        except BaseException:
            w._close_fds()
            raise
        w._prepare_next()
        return w

    @classmethod
    def open(cls, dirpath: str, at: record_pb2.Snapshot | None = None, *, files: Files | None = None,
             unsafe_no_fsync: bool = False, segment_size_bytes: int = SEGMENT_SIZE_BYTES) -> "WAL":
        """Lock the segments from the one holding snapshot `at` on; `read_all` must follow."""
        files = files or OSFiles()
        w = cls(os.path.normpath(dirpath), files, unsafe_no_fsync=unsafe_no_fsync,
                segment_size_bytes=segment_size_bytes)
        w._start = at or record_pb2.Snapshot()
        w._lock_segments()
        return w

    def _lock_segments(self) -> None:
        names = _wal_names(self._files, self.dir)
        if not names:
            raise WalNotFoundError()
        names = names[_select(names, self._start.index):]
        try:
            for name in names:
                self._locks.append((name, self._files.open(_join(self.dir, name), lock=True)))
        except BaseException:
            self._close_fds()
            raise

    # -- reading

    def read_all(self) -> ReadResult:
        """etcd's ReadAll in write mode, with the server's one repair of a torn tail."""
        assert self._encoder is None and not self._closed, "read_all runs once, right after open"
        try:
            result = self._read()
        except TornWriteError:
            self._close_fds()
            self._repair()
            self._lock_segments()
            result = self._read()  # a second torn tail is an error (etcd never repairs twice)
        tail_name, tail_fd = self._locks[-1]
        # Zero everything after the last frame: stale frames behind a zero length field must never
        # be read as records once new ones are appended before them.
        size = self._files.size(tail_fd)
        self._files.truncate(tail_fd, result.end_offset)
        self._files.preallocate(tail_fd, size)
        self._offset = result.end_offset
        self._encoder = Encoder(result.crc)
        self._metadata = result.metadata or b""
        self._state = result.hard_state
        self._prepare_next()
        return result

    def _read(self) -> ReadResult:
        reader = Reader(self._start.index, self._start.term)
        fds = [fd for _, fd in self._locks]
        _read_segments(self._files, self.dir, [n for n, _ in self._locks], reader, fds)
        self._last_index = reader.last_index
        return reader.result()

    def _repair(self) -> None:
        """etcd's wal.Repair: keep a `.broken` copy of the last segment, cut it after its last
        good frame. Anything but a torn tail stays an error."""
        names = _wal_names(self._files, self.dir)
        path = _join(self.dir, names[-1])
        fd = self._files.open(path, lock=True)
        try:
            decoder = Decoder()
            try:
                for _ in decoder.records(self._files.read(fd), segment=names[-1], last=True):
                    pass
                return
            except TornWriteError as torn:
                self._files.copy_file(path, path + ".broken")
                self._files.truncate(fd, torn.offset)
                self._files.fsync(fd)
        finally:
            self._files.close(fd)

    # -- writing

    def save(self, hard_state: raft_pb2.HardState, entries) -> None:
        """Append entries and the hard state; one fdatasync when raft's MustSync says so."""
        empty_state = record.is_empty_hard_state(hard_state)
        if empty_state and not entries:
            return
        sync = record.must_sync(hard_state, self._state, len(entries))
        enc = self._encoder
        if entries:
            enc.entries(entries)
            self._last_index = entries[-1].Index
        if not empty_state:
            enc.state(hard_state)
            self._state = hard_state
        self._flush()
        if self._offset < self.segment_size_bytes:
            if sync:
                self._sync()
            return
        self._cut()

    def save_snapshot(self, snapshot: record_pb2.Snapshot) -> None:
        self._encoder.snapshot(snapshot)
        self._last_index = max(self._last_index, snapshot.index)
        self._flush()
        self._sync()

    def sync(self) -> None:
        self._sync()

    def release_lock_to(self, index: int) -> None:
        """Unlock (close) the segments wholly before the one that may hold `index - 1`."""
        smaller = len(self._locks) - 1
        for i, (name, _) in enumerate(self._locks):
            if parse_wal_name(name)[1] >= index:
                smaller = i - 1
                break
        if smaller <= 0:
            return
        for _, fd in self._locks[:smaller]:
            self._files.close(fd)
        del self._locks[:smaller]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._tmp is not None:
                path = _join(self.dir, self._tmp[0])
                self._files.close(self._tmp[1])
                self._tmp = None
                self._files.remove(path)
            if self._encoder is not None and self._locks:
                self._sync()
        finally:
            self._close_fds()

    def __enter__(self) -> "WAL":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def tail_name(self) -> str:
        return self._locks[-1][0]

    @property
    def locked_names(self) -> list[str]:
        return [n for n, _ in self._locks]

    # -- internals

    def _flush(self) -> None:
        data = self._encoder.take()
        if data:
            self._files.pwrite(self._locks[-1][1], data, self._offset)
            self._offset += len(data)

    def _sync(self) -> None:
        if not self.unsafe_no_fsync:
            start = time.perf_counter()
            self._files.fdatasync(self._locks[-1][1])
            self.last_sync_s = time.perf_counter() - start

    def _prepare_next(self) -> None:
        """etcd's file pipeline: the next segment exists, preallocated and locked, before a cut."""
        if self._tmp is not None:
            return
        name = f"{self._tmp_count % 2}.tmp"
        self._tmp_count += 1
        path = _join(self.dir, name)
        fd = self._files.open(path, create=True, lock=True)
        try:
            self._files.truncate(fd, 0)
            self._files.preallocate(fd, self.segment_size_bytes)
        except BaseException:
            self._files.close(fd)
            raise
        self._tmp = (name, fd)

    def _cut(self) -> None:
        tail_fd = self._locks[-1][1]
        self._files.truncate(tail_fd, self._offset)
        self._sync()
        seq = parse_wal_name(self._locks[-1][0])[0]
        name = wal_name(seq + 1, self._last_index + 1)
        self._prepare_next()
        tmp_name, fd = self._tmp
        self._tmp = None
        self._locks.append((tmp_name, fd))
        self._offset = 0
        self._encoder.crc_record()
        self._encoder.metadata(self._metadata)
        if not record.is_empty_hard_state(self._state):
            self._encoder.state(self._state)
        self._flush()
        self._sync()
        self._files.rename(_join(self.dir, tmp_name), _join(self.dir, name))
        self._files.sync_dir(self.dir)
        self._locks[-1] = (name, fd)
        self._prepare_next()

    def _close_fds(self) -> None:
        for _, fd in self._locks:
            self._files.close(fd)
        self._locks = []
        if self._tmp is not None:
            self._files.close(self._tmp[1])
            self._tmp = None


# ---- snapshots ---------------------------------------------------------------------

_VALID_NON_SNAP = frozenset({"db"})


class Snapshotter:
    """`member/snap`: raft snapshots in `<term>-<index>.snap` files (etcd's snap.Snapshotter)."""

    def __init__(self, dirpath: str, files: Files | None = None) -> None:
        self.dir = dirpath
        self._files = files or OSFiles()

    def save(self, snapshot: raft_pb2.Snapshot) -> None:
        if snap.is_empty_snap(snapshot):
            return
        m = snapshot.metadata
        path = _join(self.dir, snap.snap_name(m.term, m.index))
        content = snap.encode_snap_file(snapshot)
        try:
            self._files.write_file(path, content, 0o666)
        except BaseException:
            try:
                self._files.remove(path)
            except OSError:
                pass
            raise

    def load(self) -> raft_pb2.Snapshot:
        """The newest readable snapshot; raises NoSnapshotError."""
        return self._load_matching(lambda s: True)

    def load_newest_available(self, wal_snaps: list[record_pb2.Snapshot]) -> raft_pb2.Snapshot:
        """The newest readable snapshot whose (term, index) the WAL lists as valid."""
        valid = {(s.term, s.index) for s in wal_snaps}
        return self._load_matching(lambda s: (s.metadata.term, s.metadata.index) in valid)

    def db_file_path(self, index: int) -> str:
        return _join(self.dir, f"{index:016x}.snap.db")

    def snap_names(self) -> list[str]:
        """`.snap` names, newest first; removes orphaned `db.tmp*` files like etcd."""
        names = []
        for name in self._files.listdir(self.dir):
            if name.startswith("db.tmp"):
                self._files.remove(_join(self.dir, name))
            elif name.endswith(snap.SNAP_SUFFIX):
                names.append(name)
        names.sort(reverse=True)
        return names

    def _load_matching(self, match) -> raft_pb2.Snapshot:
        for name in self.snap_names():
            path = _join(self.dir, name)
            try:
                loaded = snap.decode_snap_file(self._files.read_file(path))
            except snap.SnapError:
                self._files.rename(path, path + ".broken")
                continue
            if match(loaded):
                return loaded
        raise snap.NoSnapshotError()
