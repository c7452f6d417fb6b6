"""Page codecs: the 16-byte header, branch and leaf element arrays, errors.

Rules of this module:
- A decoded page is a `Page`: plain lists (`keys`, `vals`, `flags`) and never
  a per-element object. A leaf's `vals` are values; a branch's `vals` are
  child page ids. Mutable nodes (`node.Node`) have the same fields, so cursors
  and lookups read either without caring which one they hold.
- Decoding checks every offset against the buffer and raises `CorruptError`
  naming the page; encoding asserts what it writes and the writer re-decodes
  nothing (the pair is checked by the tests).
"""

from __future__ import annotations

import struct
import sys
from array import array
from functools import lru_cache
from itertools import accumulate, repeat
from operator import add, lshift, lt, or_, sub

PAGE_HEADER_SIZE = 16
ELEMENT_SIZE = 16  # branch and leaf element headers are both 16 bytes
BUCKET_HEADER_SIZE = 16

BRANCH = 0x01
LEAF = 0x02
META = 0x04
FREELIST = 0x10
PAGE_TYPES = {BRANCH: "branch", LEAF: "leaf", META: "meta", FREELIST: "freelist"}

BUCKET_LEAF_FLAG = 0x01  # a leaf element whose value is a bucket header

KEY_SIZE_MAX = 32768
VALUE_SIZE_MAX = (1 << 31) - 2
COUNT_MAX = 0xFFFF  # element counts must stay below this (16-bit field)
NO_FREELIST = 0xFFFFFFFFFFFFFFFF

_header = struct.Struct("<QHHI")
_BIG_ENDIAN = sys.byteorder != "little"  # element tables are filled as native u32 columns, then swapped if needed
assert array("I").itemsize == 4
_bucket_header = struct.Struct("<QQ")
_leaf_element = struct.Struct("<IIII")  # flags, pos, ksize, vsize


# ---- errors --------------------------------------------------------------------


class StorageError(Exception):
    """Base class of every operating error of the page file."""


class CorruptError(StorageError):
    """The file's bytes contradict the format. `pgid` names the page (None: the file as a whole)."""

    def __init__(self, message: str, pgid: int | None = None):
        self.pgid = pgid
        where = f"page {pgid}: " if pgid is not None else ""
        super().__init__(where + message)


class DatabaseNotOpenError(StorageError):
    pass


class TxClosedError(StorageError):
    pass


class TxNotWritableError(StorageError):
    pass


class DatabaseReadOnlyError(StorageError):
    pass


class BucketExistsError(StorageError):
    pass


class BucketNotFoundError(StorageError):
    pass


class BucketNameRequiredError(StorageError):
    pass


class KeyRequiredError(StorageError):
    pass


class KeyTooLargeError(StorageError):
    pass


class ValueTooLargeError(StorageError):
    pass


class IncompatibleValueError(StorageError):
    """A key names a bucket where a value was expected, or the other way round."""


class SequenceOverflowError(StorageError):
    pass


# ---- checksum ------------------------------------------------------------------


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- header --------------------------------------------------------------------


def read_header(buf, offset: int = 0) -> tuple[int, int, int, int]:
    """(id, flags, count, overflow) of the page header at `offset`."""
    return _header.unpack_from(buf, offset)


def pack_header(buf: bytearray, offset: int, pgid: int, flags: int, count: int, overflow: int) -> None:
    _header.pack_into(buf, offset, pgid, flags, count, overflow)


def pack_bucket_header(root: int, sequence: int) -> bytes:
    return _bucket_header.pack(root, sequence)


def unpack_bucket_header(value: bytes, pgid: int | None = None) -> tuple[int, int]:
    if len(value) < BUCKET_HEADER_SIZE:
        raise CorruptError(f"bucket header of {len(value)} bytes", pgid)
    return _bucket_header.unpack_from(value, 0)


# ---- decoded pages ---------------------------------------------------------------


class Page:
    """A decoded branch or leaf page (immutable: it may sit in a cache). Its lists are tuples, which the
    garbage collector stops tracking (a cache of many pages stays cheap for it to scan)."""

    __slots__ = ("pgid", "is_leaf", "keys", "vals", "flags", "overflow", "sizes")

    def __init__(self, pgid, is_leaf, keys, vals, flags, overflow=0, sizes=None):
        self.pgid = pgid
        self.is_leaf = is_leaf
        self.keys = keys
        self.vals = vals
        self.flags = flags  # leaf: element flags; branch: None
        self.overflow = overflow
        # Leaf: (key bytes, value bytes) when every element has keys and values of those sizes and flags 0,
        # else None (`_same_sizes`); such a leaf's element table is known from its count (`leaf_parts`).
        self.sizes = sizes


_zero_flags: dict[int, tuple] = {}


def leaf_flags(flags) -> tuple:
    """A leaf's element flags as a tuple for its `Page`. All zero (no nested bucket: nearly every leaf), the
    pages of a count share one tuple: less memory per cached page, one object fewer to allocate."""
    count = len(flags)
    if flags.count(0) != count:
        return tuple(flags)
    zeros = _zero_flags.get(count)
    if zeros is None:
        zeros = _zero_flags[count] = (0,) * count
    return zeros


def decode_page(buf, pgid: int, *, allow_types: int = BRANCH | LEAF) -> Page:
    """Decode a branch or leaf page image (header included). `buf` may hold more than the page."""
    if len(buf) < PAGE_HEADER_SIZE:
        raise CorruptError(f"truncated: {len(buf)} bytes for a page header", pgid)
    if type(buf) is not bytes:
        buf = bytes(buf)  # slices of it become the keys and values
    _, flags, count, overflow = _header.unpack_from(buf, 0)
    if not flags & allow_types or flags not in PAGE_TYPES:
        raise CorruptError(f"flags {flags:#x} where a branch or leaf page was expected", pgid)
    end = len(buf)
    table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * count
    if table_end > end:
        raise CorruptError(f"{count} elements do not fit in {end} bytes", pgid)
    if flags == LEAF:
        # Leaves hold few elements: a plain loop beats building column lists here.
        fields = struct.unpack_from(f"<{4 * count}I", buf, PAGE_HEADER_SIZE)
        keys = [None] * count
        vals = [None] * count
        at = PAGE_HEADER_SIZE
        j = 0
        for i in range(count):
            start = at + fields[j + 1]
            kend = start + fields[j + 2]
            vend = kend + fields[j + 3]
            if vend > end or kend == start:
                raise CorruptError(f"leaf element {i} out of bounds or with an empty key", pgid)
            keys[i] = buf[start:kend]
            vals[i] = buf[kend:vend]
            at += ELEMENT_SIZE
            j += 4
        _check_sorted(keys, pgid)
        flags = fields[0::4]
        return Page(pgid, True, tuple(keys), tuple(vals), leaf_flags(flags), overflow,
                    _same_sizes(fields[2::4], fields[3::4], flags))
    if not count:
        raise CorruptError("empty branch page", pgid)
    # Branches hold many elements: offsets are computed a column at a time.
    fields = struct.unpack_from(f"<{4 * count}I", buf, PAGE_HEADER_SIZE)
    klens = fields[1::4]
    starts = list(map(add, fields[0::4], range(PAGE_HEADER_SIZE, table_end, ELEMENT_SIZE)))
    kends = list(map(add, starts, klens))
    if max(kends) > end or not min(klens):
        i = next(i for i in range(count) if kends[i] > end or not klens[i])
        raise CorruptError(f"branch element {i} out of bounds or with an empty key", pgid)
    keys = tuple([buf[a:b] for a, b in zip(starts, kends)])
    highs = fields[3::4]
    if any(highs):
        vals = tuple(map(or_, fields[2::4], map(lshift, highs, repeat(32, count))))
    else:
        vals = fields[2::4]
    _check_sorted(keys, pgid)
    return Page(pgid, False, keys, vals, None, overflow)


def _check_sorted(keys, pgid) -> None:
    # Lookups bisect; a page whose keys are out of order would answer wrongly, not fail.
    if not all(map(lt, keys, keys[1:])):
        raise CorruptError("keys out of order", pgid)


# ---- encoding --------------------------------------------------------------------


def leaf_size(keys, vals) -> int:
    return PAGE_HEADER_SIZE + ELEMENT_SIZE * len(keys) + sum(map(len, keys)) + sum(map(len, vals))


def branch_size(keys) -> int:
    return PAGE_HEADER_SIZE + ELEMENT_SIZE * len(keys) + sum(map(len, keys))


def encode_leaf(pgid: int, keys, vals, flags, page_size: int) -> bytes:
    """The leaf page image, padded to whole pages (page_size 0: no padding, for inline buckets)."""
    parts, size, _ = leaf_parts(keys, vals, flags, None)
    return join_page(parts, size, pgid, LEAF, len(keys), page_size)


def encode_branch(pgid: int, keys, children, page_size: int) -> bytes:
    parts, size = branch_parts(keys, children)
    return join_page(parts, size, pgid, BRANCH, len(keys), page_size)


# A page is encoded in two steps so that a writer learns its size, and so how many pages to allocate, before
# the page id goes into its header: `*_parts` lays out the table, keys and values as a list of pieces with the
# first slot left for the header and the last for the padding, and `join_page` fills both and joins the list
# (one copy of the data, no zeroed buffer copied into).


def _same_sizes(klens, vlens, flags) -> tuple[int, int] | None:
    """(key bytes, value bytes) when every element of a leaf has a key and a value of those sizes (`klens`,
    `vlens`) and flags 0 (no nested bucket), else None."""
    count = len(klens)
    if count and klens.count(klens[0]) == count and vlens.count(vlens[0]) == count and flags.count(0) == count:
        return klens[0], vlens[0]
    return None


def leaf_parts(keys, vals, flags, sizes: tuple[int, int] | None) -> tuple[list, int, tuple[int, int] | None]:
    """The pieces of a leaf page (see above), its size in bytes (padding excluded) and its element sizes as
    `Page.sizes`. `sizes`: those sizes when the caller knows them (then no element is measured; a wrong one is
    caught by `join_page`'s size check when the pieces add up to a different total), None to measure."""
    count = len(keys)
    assert count < COUNT_MAX, count
    parts = [None] * (2 * count + 3)
    parts[2:-1:2] = keys
    parts[3:-1:2] = vals
    if sizes is None:
        klens = list(map(len, keys))
        vlens = list(map(len, vals))
        sizes = _same_sizes(klens, vlens, flags)
    if sizes is not None:
        # Same-size elements and no bucket: the table depends on the count and sizes alone.
        ksize, vsize = sizes
        parts[1] = _fixed_leaf_table(count, ksize, vsize)
        return parts, PAGE_HEADER_SIZE + count * (ELEMENT_SIZE + ksize + vsize), sizes
    # The element table, an element at a time: (flags, pos, ksize, vsize), pos counted from the element's own
    # header to its key (a plain loop measures cheaper here than filling u32 columns).
    table = []
    pos = ELEMENT_SIZE * count
    for flag, ksize, vsize in zip(flags, klens, vlens):
        table.append(_leaf_element.pack(flag, pos, ksize, vsize))
        pos += ksize + vsize - ELEMENT_SIZE
    parts[1] = b"".join(table)
    return parts, PAGE_HEADER_SIZE + ELEMENT_SIZE * count + pos, None


def branch_parts(keys, children) -> tuple[list, int]:
    """The pieces of a branch page (see above) and its size in bytes, padding excluded."""
    count = len(keys)
    assert 0 < count < COUNT_MAX, count
    assert min(children) > 1, children
    klens = list(map(len, keys))
    # A branch element is (pos u32, ksize u32, pgid u64): four u32 columns, the pgid's high half usually 0.
    if not _BIG_ENDIAN and klens.count(klens[0]) == count:
        table = array("I", _fixed_branch_table(count, klens[0]))  # pgid columns still zero
    else:
        table = array("I", bytes(ELEMENT_SIZE * count))
        table[0::4] = _key_offsets(count, klens)
        table[1::4] = array("I", klens)
    try:
        table[2::4] = array("I", children)
    except OverflowError:  # a page id past 32 bits: the high halves too
        table[2::4] = array("I", [c & 0xFFFFFFFF for c in children])
        table[3::4] = array("I", [c >> 32 for c in children])
    if _BIG_ENDIAN:
        table.byteswap()
    parts = [None, table.tobytes()]
    parts += keys
    parts.append(None)
    return parts, PAGE_HEADER_SIZE + ELEMENT_SIZE * count + sum(klens)


def join_page(parts: list, size: int, pgid: int, flags: int, count: int, page_size: int) -> bytes:
    """The page image from `*_parts`' pieces: header, pieces, padding to whole pages (page_size 0: none)."""
    npages = (size + page_size - 1) // page_size if page_size else 1
    parts[0] = _header.pack(pgid, flags, count, npages - 1)
    parts[-1] = bytes(npages * page_size - size) if page_size else b""
    image = b"".join(parts)
    assert len(image) == (npages * page_size if page_size else size), (len(image), size, npages)
    return image


@lru_cache(maxsize=1024)
def _fixed_leaf_table(count: int, ksize: int, vsize: int) -> bytes:
    step = ksize + vsize - ELEMENT_SIZE
    fields = [0] * (4 * count)
    fields[1::4] = range(ELEMENT_SIZE * count, ELEMENT_SIZE * count + step * count, step) if step else \
        [ELEMENT_SIZE * count] * count
    fields[2::4] = [ksize] * count
    fields[3::4] = [vsize] * count
    return struct.pack(f"<{4 * count}I", *fields)


@lru_cache(maxsize=1024)
def _fixed_branch_table(count: int, ksize: int) -> bytes:
    """The table of `count` branch elements with `ksize`-byte keys, child page ids left zero."""
    step = ksize - ELEMENT_SIZE
    fields = [0] * (4 * count)
    fields[0::4] = range(ELEMENT_SIZE * count, ELEMENT_SIZE * count + step * count, step) if step else \
        [ELEMENT_SIZE * count] * count
    fields[1::4] = [ksize] * count
    return struct.pack(f"<{4 * count}I", *fields)


def _key_offsets(count: int, element_bytes) -> array:
    """Each element's key offset from its own 16-byte header, given the key+value bytes of every element."""
    # Element 0's data starts right after the count headers; each next element's header is 16 bytes further on
    # and its data `element_bytes` further on, so its offset grows by (element bytes - 16).
    return array("I", accumulate(map(sub, element_bytes, repeat(ELEMENT_SIZE, count - 1)),
                                 initial=ELEMENT_SIZE * count))

