"""The wal_recovery fuzz target on its seed corpus and on seeded random mutations of it."""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "fuzz/corpus/wal_recovery").iterdir())


TARGET = importlib.import_module("fuzz.wal_recovery")


def test_corpus_is_made_of_etcd_wals():
    assert len(CORPUS) >= 6
    assert all(p.stat().st_size <= 8192 for p in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_seed(path):
    TARGET.test_one_input(path.read_bytes())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del buf[pos:]
        elif kind == 2:
            buf[pos:pos + rng.randrange(1, 700)] = bytes(rng.randrange(1, 700))
        elif kind == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randrange(1, 200)]
        else:
            buf[pos:pos + 8] = rng.randbytes(8)
    return bytes(buf)


def test_random_mutations(request):
    seed = 20240605
    rng = random.Random(seed)
    for i in range(300):
        data = _mutate(rng, rng.choice(CORPUS).read_bytes())
        try:
            TARGET.test_one_input(data)
        except BaseException:
            print(f"seed {seed} mutation {i}: {data.hex()}")
            raise
