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
from functools import lru_cache
from itertools import accumulate
from operator import add, lt, sub

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
_bucket_header = struct.Struct("<QQ")


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
    """A decoded branch or leaf page (immutable by convention: it may sit in a cache)."""

    __slots__ = ("pgid", "is_leaf", "keys", "vals", "flags", "overflow")

    def __init__(self, pgid, is_leaf, keys, vals, flags, overflow=0):
        self.pgid = pgid
        self.is_leaf = is_leaf
        self.keys = keys
        self.vals = vals
        self.flags = flags  # leaf: element flags; branch: None
        self.overflow = overflow


def decode_page(buf, pgid: int, *, allow_types: int = BRANCH | LEAF) -> Page:
    """Decode a branch or leaf page image (header included). `buf` may hold more than the page."""
    if len(buf) < PAGE_HEADER_SIZE:
        raise CorruptError(f"truncated: {len(buf)} bytes for a page header", pgid)
    _, flags, count, overflow = _header.unpack_from(buf, 0)
    if not flags & allow_types or flags not in PAGE_TYPES:
        raise CorruptError(f"flags {flags:#x} where a branch or leaf page was expected", pgid)
    end = len(buf)
    table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * count
    if table_end > end:
        raise CorruptError(f"{count} elements do not fit in {end} bytes", pgid)
    fields = struct.unpack_from(f"<{4 * count}I", buf, PAGE_HEADER_SIZE)
    keys = [None] * count
    if flags == LEAF:
        vals = [None] * count
        eflags = list(fields[0::4])
        at = PAGE_HEADER_SIZE
        j = 0
        for i in range(count):
            start = at + fields[j + 1]
            kend = start + fields[j + 2]
            vend = kend + fields[j + 3]
            if vend > end or kend == start:
                raise CorruptError(f"leaf element {i} out of bounds or with an empty key", pgid)
            keys[i] = bytes(buf[start:kend])
            vals[i] = bytes(buf[kend:vend])
            at += ELEMENT_SIZE
            j += 4
        _check_sorted(keys, pgid)
        return Page(pgid, True, keys, vals, eflags, overflow)
    vals = [0] * count
    at = PAGE_HEADER_SIZE
    j = 0
    for i in range(count):
        start = at + fields[j]
        kend = start + fields[j + 1]
        if kend > end or kend == start:
            raise CorruptError(f"branch element {i} out of bounds or with an empty key", pgid)
        keys[i] = bytes(buf[start:kend])
        vals[i] = fields[j + 2] | (fields[j + 3] << 32)
        at += ELEMENT_SIZE
        j += 4
    if not count:
        raise CorruptError("empty branch page", pgid)
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


def encode_leaf(pgid: int, keys, vals, flags, page_size: int) -> bytearray:
    """The leaf page image, padded to whole pages (page_size 0: no padding, for inline buckets)."""
    count = len(keys)
    assert count < COUNT_MAX, count
    klens = list(map(len, keys))
    vlens = list(map(len, vals))
    fields = [0] * (4 * count)
    fields[0::4] = flags
    fields[1::4] = _key_offsets(count, map(add, klens, vlens))
    fields[2::4] = klens
    fields[3::4] = vlens
    blobs = [None] * (2 * count)
    blobs[0::2] = keys
    blobs[1::2] = vals
    return _assemble(pgid, LEAF, count, fields, blobs, page_size)


def encode_branch(pgid: int, keys, children, page_size: int) -> bytearray:
    count = len(keys)
    assert count < COUNT_MAX, count
    assert min(children, default=2) > 1, children
    # A branch element is (pos u32, ksize u32, pgid u64): three fields, packed by a per-count struct.
    fields = [0] * (3 * count)
    fields[0::3] = _key_offsets(count, map(len, keys))
    fields[1::3] = map(len, keys)
    fields[2::3] = children
    data = b"".join(keys)
    table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * count
    size = table_end + len(data)
    npages = (size + page_size - 1) // page_size if page_size else 1
    buf = bytearray(npages * page_size if page_size else size)
    _header.pack_into(buf, 0, pgid, BRANCH, count, npages - 1)
    _branch_table(count).pack_into(buf, PAGE_HEADER_SIZE, *fields)
    buf[table_end:size] = data
    return buf


@lru_cache(maxsize=512)
def _branch_table(count: int) -> struct.Struct:
    return struct.Struct("<" + "IIQ" * count)


def _key_offsets(count: int, element_bytes):
    """Each element's key offset from its own 16-byte header, given the key+value bytes of every element."""
    # Element i's data starts after all count headers and the data of elements 0..i-1; its header is 16*i in.
    sizes = element_bytes if type(element_bytes) is list else list(element_bytes)
    if sizes and min(sizes) == max(sizes):  # common (fixed-size keys): an arithmetic run, no sums
        step = sizes[0] - ELEMENT_SIZE
        return range(ELEMENT_SIZE * count, ELEMENT_SIZE * count + step * count, step) if step else \
            [ELEMENT_SIZE * count] * count
    starts = accumulate(sizes, initial=ELEMENT_SIZE * count)
    return list(map(sub, starts, range(0, ELEMENT_SIZE * count, ELEMENT_SIZE)))


def _assemble(pgid, flags, count, fields, blobs, page_size) -> bytearray:
    # One buffer of the final size: header, element table and data are packed into it in place.
    data = b"".join(blobs)
    table_end = PAGE_HEADER_SIZE + ELEMENT_SIZE * count
    size = table_end + len(data)
    npages = (size + page_size - 1) // page_size if page_size else 1
    buf = bytearray(npages * page_size if page_size else size)
    _header.pack_into(buf, 0, pgid, flags, count, npages - 1)
    struct.pack_into(f"<{len(fields)}I", buf, PAGE_HEADER_SIZE, *fields)
    buf[table_end:size] = data
    return buf
