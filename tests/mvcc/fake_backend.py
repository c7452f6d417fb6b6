"""A dict backend with the methods the store uses, for crash tests: writes go to a
buffer, `commit` makes them durable, `image()` is what a crash leaves on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from storage import DB

MISSING = object()


class FakeBackend:
    def __init__(self, committed: dict[bytes, dict[bytes, bytes]] | None = None) -> None:
        self.committed = {b: dict(rows) for b, rows in (committed or {}).items()}
        self.buffer: dict[tuple[bytes, bytes], bytes | None] = {}
        self.commits = 0

    # ---- writes

    def put(self, bucket: bytes, key: bytes, value: bytes) -> None:
        assert isinstance(value, bytes)
        self.buffer[bucket, key] = value

    def delete(self, bucket: bytes, key: bytes) -> None:
        self.buffer[bucket, key] = None

    def commit(self) -> None:
        for (bucket, key), value in self.buffer.items():
            rows = self.committed.setdefault(bucket, {})
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
        self.buffer.clear()
        self.commits += 1

    @property
    def pending(self) -> int:
        return len(self.buffer)

    # ---- reads: the buffer over the last commit

    def get(self, bucket: bytes, key: bytes) -> bytes | None:
        value = self.buffer.get((bucket, key), MISSING)
        if value is not MISSING:
            return value
        return self.committed.get(bucket, {}).get(key)

    def _view(self, bucket: bytes) -> dict[bytes, bytes]:
        rows = dict(self.committed.get(bucket, {}))
        for (b, key), value in self.buffer.items():
            if b != bucket:
                continue
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
        return rows

    def range(self, bucket: bytes, start: bytes, end: bytes, limit: int = 0) -> list[tuple[bytes, bytes]]:
        rows = sorted((k, v) for k, v in self._view(bucket).items() if k >= start and (not end or k < end))
        return rows[:limit] if limit > 0 else rows

    def items(self, bucket: bytes):
        return iter(sorted(self._view(bucket).items()))

    # ---- crashes

    def image(self) -> FakeBackend:
        """A backend holding only what was committed."""
        return FakeBackend(self.committed)


def load_db(path: Path, tmp_path: Path) -> FakeBackend:
    """Every bucket of a bbolt file (read from a copy) as a committed FakeBackend."""
    copy = tmp_path / (path.name + ".copy")
    shutil.copyfile(path, copy)
    db = DB.open(str(copy), no_freelist_sync=True)
    try:
        with db.view() as tx:
            committed = {name: dict(tx.bucket(name).items()) for name in tx.bucket_names()}
    finally:
        db.close()
    return FakeBackend(committed)
