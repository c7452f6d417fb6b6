"""Page codecs against a naive twin: one struct.pack per element, as the format describes them."""

from __future__ import annotations

import random
import struct

import pytest

from storage import DB, IncompatibleValueError, MemoryFile
from storage.page import BRANCH, LEAF, CorruptError, decode_page, encode_branch, encode_leaf


def naive_leaf(pgid, keys, vals, flags, page_size):
    n = len(keys)
    table = b""
    data = b""
    for i, (k, v, f) in enumerate(zip(keys, vals, flags)):
        pos = 16 * n + len(data) - 16 * i  # from this element's own header to its key
        table += struct.pack("<IIII", f, pos, len(k), len(v))
        data += k + v
    return naive_page(pgid, LEAF, n, table + data, page_size)


def naive_branch(pgid, keys, children, page_size):
    n = len(keys)
    table = b""
    data = b""
    for i, (k, c) in enumerate(zip(keys, children)):
        table += struct.pack("<IIQ", 16 * n + len(data) - 16 * i, len(k), c)
        data += k
    return naive_page(pgid, BRANCH, n, table + data, page_size)


def naive_page(pgid, flags, count, body, page_size):
    size = 16 + len(body)
    npages = -(-size // page_size) if page_size else 1
    out = struct.pack("<QHHI", pgid, flags, count, npages - 1) + body
    return out + bytes((npages * page_size if page_size else size) - len(out))


def random_elements(rng: random.Random, n: int):
    fixed_key = rng.choice([None, rng.randrange(1, 40)])
    keys = sorted({rng.randbytes(fixed_key or rng.randrange(1, 30)) for _ in range(n)})
    fixed_val = rng.choice([None, 0, 16, 17, 256])
    vals = [rng.randbytes(fixed_val if fixed_val is not None else rng.choice([0, 1, 5, 300])) for _ in keys]
    flags = [0] * len(keys) if rng.random() < 0.7 else [rng.choice([0, 1]) for _ in keys]
    return keys, vals, flags


@pytest.mark.parametrize("seed", range(4))
def test_leaf_and_branch_encoding_equal_the_naive_twin_and_decode_back(seed):
    rng = random.Random(seed)
    print("seed", seed)
    for _ in range(300):
        keys, vals, flags = random_elements(rng, rng.randrange(0, 160))
        page_size = rng.choice([0, 1024, 4096])
        pgid = rng.randrange(0, 1 << 40)
        image = encode_leaf(pgid, keys, vals, flags, page_size)
        assert bytes(image) == naive_leaf(pgid, keys, vals, flags, page_size)
        page = decode_page(bytes(image), pgid)
        assert (list(page.keys), list(page.vals), list(page.flags)) == (keys, vals, flags)
        if not keys:
            continue
        children = [rng.choice([rng.randrange(2, 1 << 20), rng.randrange(2, 1 << 63)]) for _ in keys]
        image = encode_branch(pgid, keys, children, page_size)
        assert bytes(image) == naive_branch(pgid, keys, children, page_size)
        page = decode_page(memoryview(bytes(image)), pgid)
        assert (page.is_leaf, list(page.keys), list(page.vals)) == (False, keys, children)


def test_decode_names_the_first_bad_element():
    keys = [b"a%02d" % i for i in range(20)]
    image = bytearray(encode_branch(7, keys, list(range(2, 22)), 4096))
    struct.pack_into("<I", image, 16 + 16 * 5 + 4, 0)  # element 5: empty key
    struct.pack_into("<I", image, 16 + 16 * 9, 1 << 20)  # element 9: key far past the end
    with pytest.raises(CorruptError, match="page 7: branch element 5 out of bounds or with an empty key"):
        decode_page(bytes(image), 7)
    image = bytearray(encode_leaf(8, keys, [b"v"] * 20, [0] * 20, 4096))
    struct.pack_into("<I", image, 16 + 16 * 3 + 12, 1 << 20)  # element 3: value far past the end
    with pytest.raises(CorruptError, match="page 8: leaf element 3 out of bounds or with an empty key"):
        decode_page(bytes(image), 8)


def test_cache_keeps_recently_used_pages_and_counts_overflow():
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        b = tx.create_bucket(b"b")
        for i in range(3000):
            b.put(b"%05d" % i, bytes(100))
        b.put(b"big", bytes(5 * 4096))  # a leaf with overflow pages

    def misses(cache_pages):
        reopened = DB(MemoryFile(f.data), cache_pages=cache_pages)
        with reopened.view() as tx:
            b = tx.bucket(b"b")
            for i in range(0, 3000, 7):
                assert b.get(b"%05d" % i) == bytes(100)
                assert b.get(b"00000") == bytes(100)  # used again after every other leaf
            assert b.get(b"big") == bytes(5 * 4096)
        return reopened, reopened.stats()["cache_miss_n"]

    _, unbounded = misses(100_000)
    small, bounded = misses(16)
    assert bounded == unbounded  # every page read once: key 00000's leaf and the root were never evicted
    s = small.stats()
    assert s["cache_pages"] <= 16
    assert s["cache_pages"] > len(small._cache)  # the big leaf counts as 1 + its overflow pages


def test_pages_written_by_commits_equal_their_fresh_encoding():
    """A leaf node remembers while all its elements share one key size and one value size with no bucket flag
    (its table then follows from the count); every edit that breaks that must make it forget. Each branch and
    leaf page the commits write must equal the encoding of its own decoded content."""
    from storage.check import reachable_pages
    from storage.page import read_header

    def drop(b, key):
        b.delete(key) if b.bucket(key) is None else b.delete_bucket(key)

    rng = random.Random(11)
    f = MemoryFile()
    db = DB(f)
    with db.update() as tx:
        tx.create_bucket(b"b")
    for commit in range(60):
        with db.update() as tx:
            b = tx.bucket(b"b")
            if commit % 4 == 3:
                # Most keys of a range go: leaves fall under a quarter page and merge with their siblings.
                start = rng.randrange(3000)
                for i in range(start, start + 400):
                    if rng.random() < 0.85:
                        drop(b, b"k%05d" % i)
                        drop(b, b"k%05dx" % i)
            for _ in range(rng.randrange(1, 300)):
                key = b"k%05d" % rng.randrange(3000) + (b"x" if rng.random() < 0.01 else b"")
                roll = rng.random()
                if roll < 0.8:
                    value = b"v" * (100 if rng.random() < 0.98 else rng.choice([0, 99, 101, 700]))
                    try:
                        b.put(key, value)
                    except IncompatibleValueError:
                        pass
                elif roll < 0.97:
                    drop(b, key)
                elif b.get(key) is None and b.bucket(key) is None:
                    b.create_bucket(key).put(b"a", b"1")
        with db.view() as tx:
            assert tx.check() == []
            pages = reachable_pages(tx)
        for pgid in sorted(pages):
            head = bytes(f.data[pgid * 4096:pgid * 4096 + 16])
            _, flags, _, overflow = read_header(head)
            if flags not in (BRANCH, LEAF):
                continue
            image = bytes(f.data[pgid * 4096:(pgid + overflow + 1) * 4096])
            page = decode_page(image, pgid)
            if page.is_leaf:
                assert image == naive_leaf(pgid, page.keys, page.vals, page.flags, 4096), pgid
            else:
                assert image == naive_branch(pgid, page.keys, page.vals, 4096), pgid
