"""The pagefile_recovery fuzz target on its seed corpus and on seeded random mutations of it."""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "fuzz/corpus/pagefile_recovery").iterdir())


TARGET = importlib.import_module("fuzz.pagefile_recovery")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_seed(path):
    TARGET.test_one_input(path.read_bytes())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        if not buf:
            break
        pos = rng.randrange(len(buf))
        if kind == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            buf[pos] = rng.choice([0, 1, 2, 3, 4, 0x10, 0xFF])
        elif kind == 2:
            n = rng.randrange(1, 64)
            buf[pos:pos + n] = bytes(n)
        else:
            del buf[pos:]
    return bytes(buf)


@pytest.mark.parametrize("seed", range(4))
def test_mutations(seed):
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in CORPUS]
    for _ in range(300):
        TARGET.test_one_input(_mutate(rng, rng.choice(seeds)))


def test_cyclic_branch_is_corrupt_not_a_hang():
    """A branch page that names itself as its child."""
    from storage import DB, CorruptError, MemoryFile
    from storage.page import encode_branch

    f = MemoryFile()
    db = DB(f, page_size=1024, no_freelist_sync=True)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(100):
            b.put(b"k%03d" % i, bytes(30))
    with db.view() as tx:
        root = tx.bucket(b"b").root
        page = tx.page(root)
    assert not page.is_leaf
    looped = encode_branch(root, page.keys, [root] * len(page.keys), 1024)
    image = bytearray(f.data)
    image[root * 1024:root * 1024 + len(looped)] = looped
    with pytest.raises(CorruptError, match=f"page {root}"):
        DB(MemoryFile(image), no_freelist_sync=True)
    ro = DB(MemoryFile(image), read_only=True)
    with ro.view() as tx:
        with pytest.raises(CorruptError):
            list(tx.bucket(b"b").items())
        with pytest.raises(CorruptError):
            tx.bucket(b"b").get(b"k050")
        problems = tx.check()
    assert any("multiple references" in p for p in problems)
