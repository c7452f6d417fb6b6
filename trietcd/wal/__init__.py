"""etcd's write-ahead log and `.snap` files (wal-and-snap.md).

Cores (pure): `record` (framing, CRC chain, ReadAll rules), `snap` (`.snap` codec).
Shell: `segment` (segment files, locks, fsync, purge; `WAL`, `Snapshotter`).
"""

from .record import (
    CorruptError,
    Decoder,
    Encoder,
    MetadataConflictError,
    ReadResult,
    Reader,
    SnapshotMismatchError,
    SnapshotNotFoundError,
    TornWriteError,
    WalError,
    crc32c,
    encode_entry,
    encode_hard_state,
    encode_metadata,
)
from .snap import (
    EmptySnapshotError,
    NoSnapshotError,
    SnapCorruptError,
    SnapCRCMismatchError,
    SnapError,
    decode_snap_file,
    encode_snap_file,
)

__all__ = [
    "record", "snap",
    "CorruptError", "Decoder", "Encoder", "MetadataConflictError", "ReadResult", "Reader",
    "SnapshotMismatchError", "SnapshotNotFoundError", "TornWriteError", "WalError", "crc32c",
    "encode_entry", "encode_hard_state", "encode_metadata",
    "EmptySnapshotError", "NoSnapshotError", "SnapCorruptError", "SnapCRCMismatchError", "SnapError",
    "decode_snap_file", "encode_snap_file",
]
