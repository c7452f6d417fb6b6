"""MVCC key-value store with etcd 3.5 semantics (sans-IO)."""

from trietcd.mvcc.errors import (
    CompactedError,
    CorruptError,
    FutureRevError,
    KeyNotFoundError,
    LeaseNotFoundError,
    MvccError,
)
from trietcd.mvcc.key_index import KeyIndex, TreeIndex
from trietcd.mvcc.revision import Revision, bytes_to_revision, revision_to_bytes
from trietcd.mvcc.rows import BackendKeyBucket
from trietcd.mvcc.store import (
    Change,
    Compaction,
    KeyBucket,
    KeyValue,
    KVStore,
    MemoryKeyBucket,
    RangeResult,
    ReadTxn,
    WriteTxn,
)

__all__ = [
    "BackendKeyBucket",
    "Change",
    "Compaction",
    "CompactedError",
    "CorruptError",
    "FutureRevError",
    "KVStore",
    "KeyBucket",
    "KeyIndex",
    "KeyNotFoundError",
    "KeyValue",
    "LeaseNotFoundError",
    "MemoryKeyBucket",
    "MvccError",
    "RangeResult",
    "ReadTxn",
    "Revision",
    "TreeIndex",
    "WriteTxn",
    "bytes_to_revision",
    "revision_to_bytes",
]
