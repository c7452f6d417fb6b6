"""A page file with a copy-on-write B+tree in bbolt's on-disk format (knows nothing of etcd).

    db = DB.open(path)                  # or DB(MemoryFile()) / DB(any file layer)
    with db.update() as tx:             # one writer; commits at the end of the block
        b = tx.create_bucket_if_not_exists(b"k")
        b.put(b"a", b"1")
    with db.view() as tx:               # many readers, each on its own snapshot
        tx.bucket(b"k").get(b"a")
"""

from .bucket import Bucket, BucketStats
from .cursor import Cursor
from .file import DB, LockTimeoutError, MemoryFile, OsFile, compact, compact_tx
from .page import (BucketExistsError, BucketNameRequiredError, BucketNotFoundError, CorruptError,
                   DatabaseNotOpenError, DatabaseReadOnlyError, IncompatibleValueError, KeyRequiredError,
                   KeyTooLargeError, SequenceOverflowError, StorageError, TxClosedError, TxNotWritableError,
                   ValueTooLargeError)
from .tx import Tx

__all__ = [
    "DB", "Tx", "Bucket", "BucketStats", "Cursor", "MemoryFile", "OsFile", "compact", "compact_tx",
    "StorageError", "CorruptError", "DatabaseNotOpenError", "DatabaseReadOnlyError", "TxClosedError",
    "TxNotWritableError", "BucketExistsError", "BucketNotFoundError", "BucketNameRequiredError",
    "KeyRequiredError", "KeyTooLargeError", "ValueTooLargeError", "IncompatibleValueError",
    "SequenceOverflowError", "LockTimeoutError",
]
