"""`defrag --data-dir`: etcd's backend defrag of a data dir no member holds (etcdutl DefragData)."""

from __future__ import annotations

import os

from storage import LockTimeoutError
from trietcd.backend import Backend

from .console import humanize_bytes

__all__ = ["defrag_data"]

LOCK_WAIT_NOTICE_S = 1.0  # etcdutl says why it waits for the db's lock after this long


def defrag_data(data_dir: str, log, err) -> None:
    path = os.path.join(data_dir, "member", "snap", "db")
    try:
        backend = Backend.open(path, lock_timeout_s=LOCK_WAIT_NOTICE_S)
    except LockTimeoutError:
        err.write(f'waiting for etcd to close and release its lock on "{path}". '
                  "To defrag a running etcd instance, omit --data-dir.\n")
        err.flush()
        backend = Backend.open(path)
    with backend:
        size, in_use = backend.size_bytes(), backend.size_in_use_bytes()
        log.info("backend/backend.go:481", "defragmenting", {
            "path": path, "current-db-size-bytes": size, "current-db-size": humanize_bytes(size),
            "current-db-size-in-use-bytes": in_use, "current-db-size-in-use": humanize_bytes(in_use)})
        backend.defrag()
        new_size, new_in_use = backend.size_bytes(), backend.size_in_use_bytes()
        log.info("backend/backend.go:539", "finished defragmenting directory", {
            "path": path, "current-db-size-bytes-diff": new_size - size, "current-db-size-bytes": new_size,
            "current-db-size": humanize_bytes(new_size), "current-db-size-in-use-bytes-diff": new_in_use - in_use,
            "current-db-size-in-use-bytes": new_in_use, "current-db-size-in-use": humanize_bytes(new_in_use)})
