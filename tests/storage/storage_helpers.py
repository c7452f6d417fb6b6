"""Shared helpers of the storage tests: fixture paths, a recording file layer, whole-db dumps."""

from __future__ import annotations

from pathlib import Path

from storage import DB, MemoryFile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(rel: str) -> Path:
    return FIXTURES / rel


def dump(tx) -> dict:
    """Every bucket as a nested dict: key -> value bytes, or key -> dict for a nested bucket."""
    def walk(b):
        out = {}
        for k, v in b.items():
            out[k] = walk(b.bucket(k)) if v is None else v
        return out
    return {name: walk(tx.bucket(name)) for name in tx.bucket_names()}


def dump_db(db: DB) -> dict:
    with db.view() as tx:
        return dump(tx)


class RecordingFile(MemoryFile):
    """A memory file that logs writes, syncs and truncations (for fsync order and crash tests)."""

    def __init__(self, data: bytes = b""):
        super().__init__(data)
        self.ops: list[tuple] = []

    def write(self, offset, data):
        self.ops.append(("write", offset, bytes(data)))
        super().write(offset, data)

    def sync(self):
        self.ops.append(("sync",))
        super().sync()

    def truncate(self, n):
        self.ops.append(("truncate", n))
        super().truncate(n)


def apply_ops(image: bytes, ops) -> bytes:
    f = MemoryFile(image)
    for op in ops:
        if op[0] == "write":
            f.write(op[1], op[2])
        elif op[0] == "truncate":
            f.truncate(op[1])
    return bytes(f.data)
