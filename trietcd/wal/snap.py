"""etcd's `.snap` file codec (wal-and-snap.md §7; etcd `etcdserver/api/snap/snapshotter.go`).

A `.snap` file is one `snappb.snapshot {crc, data}` where `data` is a serialized
`raftpb.Snapshot` and `crc` the CRC-32C of `data` from 0. Files are named
`<term>-<index>.snap` in 16 lowercase hex digits each. Pure: bytes in, messages out.
"""

from __future__ import annotations

import re

from google.protobuf.message import DecodeError

from proto import gogo
from proto.raftpb import raft_pb2
from proto.snappb import snap_pb2

from .record import crc32c

__all__ = [
    "SNAP_SUFFIX", "SnapError", "NoSnapshotError", "EmptySnapshotError", "SnapCRCMismatchError",
    "SnapCorruptError", "encode_snap_file", "decode_snap_file", "snap_name", "parse_snap_name",
    "is_empty_snap",
]

SNAP_SUFFIX = ".snap"
_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapError(Exception):
    """Base of the snapshot files' errors; `str()` is etcd's error text."""


class NoSnapshotError(SnapError):
    def __init__(self) -> None:
        super().__init__("snap: no available snapshot")


class EmptySnapshotError(SnapError):
    def __init__(self) -> None:
        super().__init__("snap: empty snapshot")


class SnapCRCMismatchError(SnapError):
    def __init__(self) -> None:
        super().__init__("snap: crc mismatch")


class SnapCorruptError(SnapError):
    """The container or the raft snapshot inside does not parse."""


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}{SNAP_SUFFIX}"


def parse_snap_name(name: str) -> tuple[int, int] | None:
    m = _SNAP_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def is_empty_snap(snapshot: raft_pb2.Snapshot) -> bool:
    return snapshot.metadata.index == 0


def encode_snap_file(snapshot: raft_pb2.Snapshot) -> bytes:
    """The file bytes etcd writes for `snapshot` (the message is not modified)."""
    copy = raft_pb2.Snapshot()
    copy.CopyFrom(snapshot)
    data = gogo.marshal(copy)
    return gogo.marshal(snap_pb2.snapshot(crc=crc32c(0, data), data=data))


def decode_snap_file(content: bytes) -> raft_pb2.Snapshot:
    """etcd's snap.Read on the bytes of a file."""
    if not content:
        raise EmptySnapshotError()
    try:
        container = snap_pb2.snapshot.FromString(content)
    except DecodeError as exc:
        raise SnapCorruptError(f"snap: {exc}") from None
    if not container.data or container.crc == 0:
        raise EmptySnapshotError()
    if crc32c(0, container.data) != container.crc:
        raise SnapCRCMismatchError()
    try:
        return raft_pb2.Snapshot.FromString(container.data)
    except DecodeError as exc:
        raise SnapCorruptError(f"snap: {exc}") from None
