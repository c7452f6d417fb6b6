"""The read buffer: the writes of the open batch transaction, as reads must see them (etcd's txReadBuffer).

Rules:
- A bucket's buffer maps key -> value, or key -> None for a delete; the last write of a key wins.
- Reads consult the buffer first and fall back to the read view of the last commit: a key in the
  buffer hides the committed row (None = deleted), other keys come from the view.
- `sorted` is the bucket's buffered keys in order, or None. A range computes it; later writes keep
  it while they only append (the `key` bucket is written in revision order) and drop it otherwise.
- The buffer is cleared only after the batch it mirrors is committed and a read view of that commit
  is in place, so no write is ever invisible.
"""

from __future__ import annotations

from bisect import bisect_left

MISSING = object()  # `BucketBuffer.rows.get(key, MISSING)`: the buffer knows nothing of key


class BucketBuffer:
    __slots__ = ("rows", "sorted")

    def __init__(self):
        self.rows: dict[bytes, bytes | None] = {}
        self.sorted: list[bytes] | None = None  # the keys of rows in order; None = to be computed

    def put(self, key: bytes, value: bytes | None) -> None:
        """Buffer a put (value None: a delete). Keeps the sorted keys only while that is free."""
        rows = self.rows
        keys = self.sorted
        if keys is not None and key not in rows:
            if keys and key < keys[-1]:
                self.sorted = None  # out of order: the next range sorts again
            else:
                keys.append(key)
        rows[key] = value

    def sorted_keys(self) -> list[bytes]:
        keys = self.sorted
        if keys is None:
            keys = self.sorted = sorted(self.rows)
        return keys


class ReadBuffer:
    """The buffered writes of every bucket since the last commit."""

    __slots__ = ("buckets",)

    def __init__(self):
        self.buckets: dict[bytes, BucketBuffer] = {}

    def __len__(self) -> int:
        return sum(len(b.rows) for b in self.buckets.values())

    def bucket(self, name: bytes) -> BucketBuffer:
        """The buffer of bucket `name`, created when missing."""
        buf = self.buckets.get(name)
        if buf is None:
            buf = self.buckets[name] = BucketBuffer()
        return buf

    def put(self, bucket: bytes, key: bytes, value: bytes | None) -> None:
        self.bucket(bucket).put(key, value)

    def get(self, bucket: bytes, key: bytes):
        """The buffered value (None = deleted), or MISSING when the buffer has no write of key."""
        buf = self.buckets.get(bucket)
        if buf is None:
            return MISSING
        return buf.rows.get(key, MISSING)

    def clear(self) -> None:
        self.buckets.clear()  # in place: the backend keeps a reference to the dict


def merge_range(buf: BucketBuffer | None, committed, start: bytes, end: bytes, limit: int = 0) -> list:
    """Rows of [start, end) (end b"" = no upper bound) in key order: `buf` over `committed`.

    `committed` iterates the committed (key, value) rows of [start, end) in key order; it is consumed
    lazily, so a limit stops the walk early. `limit` 0 = no limit.
    """
    assert limit >= 0, limit
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    if buf is None or not buf.rows:
        for kv in committed:
            append(kv)
            if len(out) == limit:
                break
        return out
    keys = buf.sorted_keys()
    rows = buf.rows
    i = bisect_left(keys, start)
    j = bisect_left(keys, end) if end else len(keys)
    nxt = next(committed, None)
    while i < j or nxt is not None:
        if i < j and (nxt is None or keys[i] <= nxt[0]):
            k = keys[i]
            i += 1
            if nxt is not None and nxt[0] == k:
                nxt = next(committed, None)  # shadowed by the buffer
            v = rows[k]
            if v is None:
                continue
            append((k, v))
        else:
            append(nxt)
            nxt = next(committed, None)
        if len(out) == limit:
            break
    return out
