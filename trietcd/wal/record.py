"""etcd's WAL record codec: framing, the CRC-32C chain, and the rules etcd's reader applies.

Rules (wal-and-snap.md §3, §4; etcd `wal/encoder.go`, `decoder.go`, `wal.go` ReadAll):

- A frame is an 8-byte little-endian length field, the serialized `walpb.Record`, then zero
  padding to a multiple of 8. The low 56 bits of the length field hold the record length; when
  there is padding, the top byte is `0x80 | padding`.
- Every record's `crc` field is the running CRC-32C after feeding its `data` (empty for crc
  records). A crc record carries the running value into a new segment; a reader starting at that
  segment (running value 0) accepts it as its seed.
- A length field of zero, or the end of the bytes, ends a segment. A record that fails to parse
  or fails its CRC is a torn write only in the last segment and only if one of its 512-byte
  sector chunks is all zeros; anything else is corruption, reported with segment and offset.
- Entries overwrite the suffix of the log from their index on (a new leader replaced it).

Pure: callers hand in bytes and get records, decisions and bytes back. `Encoder.take()` gives
the shell the bytes to write; `Reader.feed()` takes one segment's bytes at a time.
"""

from __future__ import annotations

import struct
from typing import Iterator

import attrs

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2
from proto.raftpb import raft_pb2
from proto.walpb import record_pb2

from google.protobuf.message import DecodeError

try:  # The C implementation (SSE4.2 where present); the table below is the fallback.
    import google_crc32c as _crc_ext

    if _crc_ext.implementation != "c":
        _crc_ext = None
except ImportError:  # pragma: no cover - depends on the environment
    _crc_ext = None

__all__ = [
    "METADATA_TYPE", "ENTRY_TYPE", "STATE_TYPE", "CRC_TYPE", "SNAPSHOT_TYPE",
    "MAX_RECORD_BYTES", "SECTOR_BYTES",
    "WalError", "CorruptError", "TornWriteError", "SnapshotNotFoundError", "SnapshotMismatchError",
    "MetadataConflictError",
    "crc32c", "crc32c_pure", "CRC_IMPLEMENTATION",
    "encode_entry", "encode_hard_state", "encode_snapshot", "encode_metadata", "frame", "uvarint",
    "Encoder", "Decoder", "Reader", "ReadResult", "is_empty_hard_state", "must_sync",
]

METADATA_TYPE = 1
ENTRY_TYPE = 2
STATE_TYPE = 3
CRC_TYPE = 4
SNAPSHOT_TYPE = 5

# etcd refuses to decode records this large (a damaged length field must not make us allocate).
MAX_RECORD_BYTES = 10 * 1024 * 1024
SECTOR_BYTES = 512
FRAME_HEADER_BYTES = 8
_LEN_MASK = (1 << 56) - 1


# ---- errors ------------------------------------------------------------------


class WalError(Exception):
    """Base of the WAL's operating errors; `str()` is etcd's error text."""


class CorruptError(WalError):
    """Bytes that are not a WAL etcd would have written, anywhere but a torn tail."""

    def __init__(self, reason: str, *, segment: str = "", offset: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segment = segment
        self.offset = offset

    def __str__(self) -> str:
        if not self.segment:
            return self.reason
        return f"{self.reason} (segment {self.segment}, offset {self.offset})"


class TornWriteError(CorruptError):
    """etcd's io.ErrUnexpectedEOF: the last segment ends inside a record. `offset` is the end of
    the last valid frame there; repair truncates the segment at it."""


class SnapshotNotFoundError(WalError):
    def __init__(self) -> None:
        super().__init__("wal: snapshot not found")


class SnapshotMismatchError(WalError):
    def __init__(self) -> None:
        super().__init__("wal: snapshot mismatch")


class MetadataConflictError(WalError):
    def __init__(self) -> None:
        super().__init__("wal: conflicting metadata found")


# ---- CRC-32C -----------------------------------------------------------------

_POLY = 0x82F63B78  # Castagnoli, reflected


def _tables() -> list[list[int]]:
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


_T = _tables()


def crc32c_pure(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Streaming CRC-32C, slicing-by-8 (continues `crc`; crc32c_pure(0, b"") == 0)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    c = crc ^ 0xFFFFFFFF
    n = len(data)
    end8 = n - n % 8
    words = struct.unpack_from(f"<{end8 // 4}I", data) if end8 else ()
    for i in range(0, len(words), 2):
        lo = words[i] ^ c
        hi = words[i + 1]
        c = (t7[lo & 0xFF] ^ t6[(lo >> 8) & 0xFF] ^ t5[(lo >> 16) & 0xFF] ^ t4[lo >> 24]
             ^ t3[hi & 0xFF] ^ t2[(hi >> 8) & 0xFF] ^ t1[(hi >> 16) & 0xFF] ^ t0[hi >> 24])
    for b in bytes(data[end8:]):
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


if _crc_ext is not None:
    CRC_IMPLEMENTATION = "google_crc32c"
    crc32c = _crc_ext.extend
else:  # pragma: no cover - depends on the environment
    CRC_IMPLEMENTATION = "pure"
    crc32c = crc32c_pure


# ---- payload encoders (gogoproto's bytes, written by hand for the hot path) --

_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def uvarint(n: int) -> bytes:
    """n as a protobuf varint (a negative int64 as its ten-byte two's complement)."""
    if n < 0x80:
        if n >= 0:
            return _SMALL_VARINTS[n]
        n &= (1 << 64) - 1  # int64/enum: two's complement, ten bytes
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, (n >> 14) & 0x7F | 0x80, n >> 21))
    if n < 0x800000000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, (n >> 14) & 0x7F | 0x80,
                      (n >> 21) & 0x7F | 0x80, n >> 28))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_entry(entry: raft_pb2.Entry) -> bytes:
    """`raftpb.Entry` as etcd marshals it: Type, Term, Index always, Data when set."""
    head = b"\x08" + uvarint(entry.Type) + b"\x10" + uvarint(entry.Term) + b"\x18" + uvarint(entry.Index)
    if not entry.HasField("Data"):
        return head
    data = entry.Data
    return head + b"\x22" + uvarint(len(data)) + data


def encode_hard_state(hs: raft_pb2.HardState) -> bytes:
    return b"\x08" + uvarint(hs.term) + b"\x10" + uvarint(hs.vote) + b"\x18" + uvarint(hs.commit)


def encode_snapshot(snap: record_pb2.Snapshot) -> bytes:
    """`walpb.Snapshot`; etcd 3.5 requires a ConfState on every record past index 0."""
    if snap.index > 0 and not snap.HasField("conf_state"):
        raise ValueError("wal: snapshot record at index > 0 needs a conf_state")
    copy = record_pb2.Snapshot()
    copy.CopyFrom(snap)
    return gogo.marshal(copy)


def encode_metadata(node_id: int, cluster_id: int) -> bytes:
    return gogo.marshal(etcdserver_pb2.Metadata(NodeID=node_id, ClusterID=cluster_id))


def is_empty_hard_state(hs: raft_pb2.HardState) -> bool:
    return hs.term == 0 and hs.vote == 0 and hs.commit == 0


def must_sync(hs: raft_pb2.HardState, prev: raft_pb2.HardState, entry_count: int) -> bool:
    """etcd raft's MustSync: a commit-only change is written but need not be synced."""
    return entry_count != 0 or hs.vote != prev.vote or hs.term != prev.term


# ---- framing -----------------------------------------------------------------

_PADS = [bytes(n) for n in range(8)]


def frame(rec_type: int, crc: int, data: bytes | None) -> bytes:
    """One framed record (length field, record, padding)."""
    buf = bytearray()
    _append_frame(buf, rec_type, crc, data)
    return bytes(buf)


def _append_frame(buf: bytearray, rec_type: int, crc: int, data: bytes | None) -> None:
    assert 0 < rec_type < 0x80
    head = b"\x08" + _SMALL_VARINTS[rec_type] + b"\x10" + uvarint(crc)
    if data is not None:
        head += b"\x1a" + uvarint(len(data))
        rec_bytes = len(head) + len(data)
    else:
        rec_bytes = len(head)
    pad = -rec_bytes & 7
    length_field = rec_bytes | ((0x80 | pad) << 56) if pad else rec_bytes
    buf += length_field.to_bytes(8, "little")
    buf += head
    if data is not None:
        buf += data
    if pad:
        buf += _PADS[pad]


@attrs.define
class Encoder:
    """Appends framed records to `buf`, keeping the running CRC. The shell writes `take()`."""

    crc: int = 0
    buf: bytearray = attrs.field(factory=bytearray)

    def record(self, rec_type: int, data: bytes | None) -> None:
        if data is not None:
            self.crc = crc32c(self.crc, data)
        _append_frame(self.buf, rec_type, self.crc, data)

    def entry(self, entry: raft_pb2.Entry) -> None:
        data = encode_entry(entry)
        self.crc = crc32c(self.crc, data)
        _append_frame(self.buf, ENTRY_TYPE, self.crc, data)

    def entries(self, entries) -> None:
        """The hot path: one entry record per entry, written piecewise into the buffer (the
        entry's bytes are never joined; the CRC is fed its head and its data in turn). Entries of one
        batch mostly share their type and term: that part of the head is encoded once per run."""
        buf = self.buf
        crc = self.crc
        uv = uvarint
        ext = crc32c
        pads = _PADS
        kind = term = -1
        prefix = b""
        for e in entries:
            if e.Type != kind or e.Term != term:
                kind, term = e.Type, e.Term
                prefix = b"\x08" + uv(kind) + b"\x10" + uv(term) + b"\x18"
            data = e.Data
            if data or e.HasField("Data"):
                head = prefix + uv(e.Index) + b"\x22" + uv(len(data))
                crc = ext(ext(crc, head), data)
            else:
                head = prefix + uv(e.Index)
                crc = ext(crc, head)
            entry_bytes = len(head) + len(data)
            rec_head = b"\x08\x02\x10" + uv(crc) + b"\x1a" + uv(entry_bytes)
            rec_bytes = len(rec_head) + entry_bytes
            pad = -rec_bytes & 7
            buf += (rec_bytes | ((0x80 | pad) << 56) if pad else rec_bytes).to_bytes(8, "little")
            buf += rec_head
            buf += head
            buf += data
            if pad:
                buf += pads[pad]
        self.crc = crc

    def state(self, hs: raft_pb2.HardState) -> None:
        self.record(STATE_TYPE, encode_hard_state(hs))

    def metadata(self, data: bytes) -> None:
        self.record(METADATA_TYPE, data)

    def snapshot(self, snap: record_pb2.Snapshot) -> None:
        self.record(SNAPSHOT_TYPE, encode_snapshot(snap))

    def crc_record(self) -> None:
        """The crc record a segment starts with: it carries the running CRC, no data."""
        self.record(CRC_TYPE, None)

    def take(self) -> bytearray:
        """The bytes encoded since the last take (ownership passes to the caller)."""
        out = self.buf
        self.buf = bytearray()
        return out


# ---- decoding ----------------------------------------------------------------

_unpack_u64 = struct.Struct("<Q").unpack_from
_parse_record = record_pb2.Record.FromString


def _is_torn(body: bytes | memoryview, file_offset: int) -> bool:
    """etcd's isTornEntry: some sector-aligned chunk of the frame body is all zeros."""
    pos = 0
    n = len(body)
    while pos < n:
        chunk = min(SECTOR_BYTES - (file_offset % SECTOR_BYTES), n - pos)
        if not any(body[pos:pos + chunk]):
            return True
        pos += chunk
        file_offset += chunk
    return False


class Decoder:
    """Walks framed records segment by segment, checking the CRC chain.

    `records()` yields (type, data, offset) for every metadata, entry, state and snapshot
    record whose CRC holds; crc records are consumed here. It stops at a zero length field or at
    the end of the bytes; `end_offset` is then the end of the last valid frame.
    """

    def __init__(self, crc: int = 0) -> None:
        self.crc = crc
        self.end_offset = 0

    def records(self, buf: bytes | memoryview, *, segment: str = "", last: bool = True
                ) -> Iterator[tuple[int, bytes, int]]:
        n = len(buf)
        off = 0
        self.end_offset = 0
        crc = self.crc
        while True:
            if n - off < FRAME_HEADER_BYTES:
                if off == n:
                    return
                self._eof("wal: partial length field", segment, off, last)
            (length_field,) = _unpack_u64(buf, off)
            if length_field == 0:
                return
            rec_bytes = length_field & _LEN_MASK
            pad = (length_field >> 56) & 7 if length_field >> 63 else 0
            if rec_bytes >= MAX_RECORD_BYTES - pad:
                raise CorruptError("wal: max entry size limit exceeded", segment=segment, offset=off)
            start = off + FRAME_HEADER_BYTES
            end = start + rec_bytes + pad
            if end > n:
                self._eof("wal: segment ends inside a record", segment, off, last)
            try:
                rec = _parse_record(buf[start:start + rec_bytes])
            except DecodeError:
                self._bad(buf, start, end, "wal: record does not parse", segment, off, last)
            rec_type = rec.type
            if rec_type == CRC_TYPE:
                if crc != 0 and rec.crc != crc:
                    raise CorruptError("wal: crc mismatch", segment=segment, offset=off)
                crc = rec.crc
                self.crc = crc
                off = end
                self.end_offset = off
                continue
            data = rec.data
            crc = crc32c(crc, data)
            if rec.crc != crc:
                self._bad(buf, start, end, "walpb: crc mismatch", segment, off, last)
            self.crc = crc
            yield rec_type, data, off
            off = end
            self.end_offset = off

    def _eof(self, reason: str, segment: str, off: int, last: bool):
        # A short read: torn if it is the last segment, else a hole in the middle of the log.
        if last:
            raise TornWriteError("unexpected EOF", segment=segment, offset=self.end_offset)
        raise CorruptError(reason, segment=segment, offset=off)

    def _bad(self, buf, start: int, end: int, reason: str, segment: str, off: int, last: bool):
        if last and _is_torn(buf[start:end], start):
            raise TornWriteError("unexpected EOF", segment=segment, offset=self.end_offset)
        raise CorruptError(reason, segment=segment, offset=off)


@attrs.frozen
class ReadResult:
    metadata: bytes | None
    hard_state: raft_pb2.HardState
    entries: list  # of raftpb.Entry, starting right after the snapshot index
    snapshots: list  # every walpb.Snapshot record seen, in order
    crc: int  # running CRC at the end (the encoder continues from it)
    end_offset: int  # end of the last valid frame of the last segment fed


class Reader:
    """etcd's ReadAll over segments fed in order, from the one holding `start_index`.

    Entries at or below the snapshot index are skipped; an entry at index i truncates the list
    after position i - start_index - 1 (a conflict resolved by a later leader).
    """

    def __init__(self, start_index: int = 0, start_term: int = 0) -> None:
        self.start_index = start_index
        self.start_term = start_term
        self.decoder = Decoder()
        self.metadata: bytes | None = None
        self.hard_state = raft_pb2.HardState()
        self.entries: list = []
        self.snapshots: list = []
        self.snapshot_found = False
        self.last_index = 0  # index of the last entry record read (etcd's enti)

    def feed(self, buf: bytes | memoryview, *, segment: str = "", last: bool = True) -> None:
        """Decode one whole segment. Raises CorruptError (TornWriteError for a torn tail)."""
        entries = self.entries
        start = self.start_index
        parse_entry = raft_pb2.Entry.FromString
        for rec_type, data, off in self.decoder.records(buf, segment=segment, last=last):
            if rec_type == ENTRY_TYPE:
                try:
                    entry = parse_entry(data)
                except DecodeError:
                    raise CorruptError("wal: entry does not parse", segment=segment, offset=off) from None
                index = entry.Index
                if index > start:
                    pos = index - start - 1
                    if pos < len(entries):
                        del entries[pos:]
                    elif pos > len(entries):
                        raise CorruptError("wal: slice bounds out of range", segment=segment, offset=off)
                    entries.append(entry)
                self.last_index = index
            elif rec_type == STATE_TYPE:
                self.hard_state = self._parse(raft_pb2.HardState, data, segment, off)
            elif rec_type == METADATA_TYPE:
                if self.metadata is not None and self.metadata != data:
                    raise MetadataConflictError()
                self.metadata = data
            elif rec_type == SNAPSHOT_TYPE:
                snap = self._parse(record_pb2.Snapshot, data, segment, off)
                self.snapshots.append(snap)
                if snap.index == start:
                    if snap.term != self.start_term:
                        raise SnapshotMismatchError()
                    self.snapshot_found = True
            else:
                raise CorruptError(f"unexpected block type {rec_type}", segment=segment, offset=off)

    @staticmethod
    def _parse(cls, data: bytes, segment: str, off: int):
        try:
            return cls.FromString(data)
        except DecodeError:
            raise CorruptError(f"wal: {cls.DESCRIPTOR.name} does not parse", segment=segment, offset=off) from None

    def result(self) -> ReadResult:
        """What ReadAll returns; raises SnapshotNotFoundError if the start record was missing."""
        if not self.snapshot_found:
            raise SnapshotNotFoundError()
        return ReadResult(self.metadata, self.hard_state, self.entries, self.snapshots,
                          self.decoder.crc, self.decoder.end_offset)
