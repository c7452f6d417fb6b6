"""The two meta pages: codec, validation and the choice of the current one.

A meta is valid iff magic, version and checksum agree (bbolt also accepts a
zero checksum; we never write one). The current meta is the valid one with
the larger txid. Its fields must also make sense together (root and freelist
below the high-water mark); a meta that passes the checksum but not that is
corrupt, and the older meta is used instead.
"""

from __future__ import annotations

import struct

from .page import META, NO_FREELIST, PAGE_HEADER_SIZE, CorruptError, fnv1a64, pack_header, read_header

MAGIC = 0xED0CDAED
VERSION = 2
META_SIZE = 64  # bytes after the page header, checksum included
_meta = struct.Struct("<IIIIQQQQQ")  # magic version page_size flags root sequence freelist pgid txid
_checksum = struct.Struct("<Q")


class Meta:
    __slots__ = ("page_size", "flags", "root", "sequence", "freelist", "pgid", "txid")

    def __init__(self, page_size, root, freelist, pgid, txid, sequence=0, flags=0):
        self.page_size = page_size
        self.flags = flags
        self.root = root  # root bucket's root page id (never 0)
        self.sequence = sequence
        self.freelist = freelist  # page id or NO_FREELIST
        self.pgid = pgid  # high-water mark: first never-allocated page id
        self.txid = txid

    def copy(self) -> "Meta":
        return Meta(self.page_size, self.root, self.freelist, self.pgid, self.txid, self.sequence, self.flags)

    def __repr__(self):
        return (f"Meta(txid={self.txid}, root={self.root}, freelist={self.freelist:#x}, pgid={self.pgid}, "
                f"page_size={self.page_size})")

    def encode(self, page_id: int) -> bytes:
        """A whole meta page (page_size bytes) for page `page_id` (0 or 1)."""
        self.assert_sane()
        buf = bytearray(self.page_size)
        pack_header(buf, 0, page_id, META, 0, 0)
        _meta.pack_into(buf, PAGE_HEADER_SIZE, MAGIC, VERSION, self.page_size, self.flags, self.root,
                        self.sequence, self.freelist, self.pgid, self.txid)
        body_end = PAGE_HEADER_SIZE + _meta.size
        _checksum.pack_into(buf, body_end, fnv1a64(buf[PAGE_HEADER_SIZE:body_end]))
        return bytes(buf)

    def assert_sane(self):
        assert self.pgid >= 3, self
        assert 2 <= self.root < self.pgid, self
        assert self.freelist == NO_FREELIST or 2 <= self.freelist < self.pgid, self


def decode_meta(buf, pgid: int) -> Meta:
    """The meta in a page image; CorruptError when it is not a valid meta."""
    if len(buf) < PAGE_HEADER_SIZE + META_SIZE:
        raise CorruptError("truncated meta", pgid)
    _, flags, _, _ = read_header(buf, 0)
    magic, version, page_size, mflags, root, sequence, freelist, pgid_hw, txid = _meta.unpack_from(
        buf, PAGE_HEADER_SIZE)
    if magic != MAGIC:
        raise CorruptError("invalid meta magic", pgid)
    if version != VERSION:
        raise CorruptError(f"meta version {version}", pgid)
    body_end = PAGE_HEADER_SIZE + _meta.size
    (checksum,) = _checksum.unpack_from(buf, body_end)
    if checksum != 0 and checksum != fnv1a64(bytes(buf[PAGE_HEADER_SIZE:body_end])):
        raise CorruptError("meta checksum mismatch", pgid)
    if flags != META:
        raise CorruptError(f"meta page flags {flags:#x}", pgid)
    meta = Meta(page_size, root, freelist, pgid_hw, txid, sequence, mflags)
    if page_size < 1024 or page_size & (page_size - 1) or page_size > 1 << 16:
        raise CorruptError(f"meta page size {page_size}", pgid)
    if pgid_hw < 3 or not 2 <= root < pgid_hw or not (freelist == NO_FREELIST or 2 <= freelist < pgid_hw):
        raise CorruptError(f"meta fields out of range: {meta!r}", pgid)
    return meta


def choose_meta(metas: list[Meta | CorruptError]) -> Meta:
    """The current meta of [meta0, meta1] (each a Meta or the error decoding it raised)."""
    valid = [m for m in metas if isinstance(m, Meta)]
    if not valid:
        raise metas[0]
    return max(valid, key=lambda m: m.txid)


def page_size_hint(first_page: bytes, default: int) -> int:
    """Page size from meta 0 if it is valid, else `default` (bbolt: the OS page size)."""
    try:
        return decode_meta(first_page, 0).page_size
    except CorruptError:
        return default
