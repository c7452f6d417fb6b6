"""The in-memory key index: key -> generations of revisions (etcd's treeIndex).

Rules (etcd 3.5 `mvcc/key_index.go`, `mvcc/index.go`):

- A key's life is a list of generations. A generation starts with the put that
  creates the key and ends with its tombstone (a delete); after a tombstone an
  empty generation is appended, so the last generation is the live one, or empty
  when the key is deleted.
- `version` is the number of changes in the generation so far; the tombstone
  counts too, which is why a recreated key starts again at version 1.
- A key's revisions strictly increase (`modified` is the last one).
- Compaction at C keeps, per key, the latest revision <= C of the generation that
  is live at C, drops it too when it is a tombstone, drops every older
  generation, and drops keys that end up empty.

Ranges take `end`: None for the single key, b"" for "to the end of the key space",
otherwise the exclusive end key (the store translates etcd's "\\0" to b"").
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from trietcd.mvcc.revision import Revision


_NO_REVISION = Revision(0, 0)  # a tuple: one shared instance serves every empty field


class RevisionNotFound(Exception):
    """The key has no live revision at the requested revision (internal)."""


class Generation:
    __slots__ = ("ver", "created", "revs")

    def __init__(self) -> None:
        self.ver = 0
        self.created = _NO_REVISION
        self.revs: list[Revision] = []

    def is_empty(self) -> bool:
        return not self.revs

    def latest_at(self, at_rev: int) -> int:
        """Index of the newest revision with main <= at_rev, or -1."""
        revs = self.revs
        for i in range(len(revs) - 1, -1, -1):
            if revs[i].main <= at_rev:
                return i
        return -1

    def describe(self) -> str:
        revs = " ".join(f"{r.main}.{r.sub}" for r in self.revs)
        return f"g(created={self.created.main}.{self.created.sub} ver={self.ver} revs=[{revs}])"


class KeyIndex:
    __slots__ = ("key", "modified", "generations")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified = _NO_REVISION  # invariant: the last revision in generations
        self.generations: list[Generation] = []

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and self.generations[0].is_empty()

    def put(self, rev: Revision) -> None:
        assert rev > self.modified, (self.key, rev, self.modified)
        if not self.generations:
            self.generations.append(Generation())
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def tombstone(self, rev: Revision) -> None:
        assert self.generations and not self.is_empty(), self.key
        if self.generations[-1].is_empty():
            raise RevisionNotFound
        self.put(rev)
        self.generations.append(Generation())

    def undo(self, rev: Revision) -> None:
        """Take back the last change (a put or a tombstone at rev), for an aborted
        write transaction. Leaves an empty index when the key's first put goes."""
        gens = self.generations
        assert rev == self.modified, (self.key, rev, self.modified)
        if not gens[-1].revs and len(gens) > 1:
            gens.pop()  # the empty generation a tombstone appended
        g = gens[-1]
        assert g.revs and g.revs[-1] == rev, (self.key, rev)
        g.revs.pop()
        g.ver -= 1
        if not g.revs:
            g.created = _NO_REVISION
        self.modified = _NO_REVISION
        for g in reversed(gens):
            if g.revs:
                self.modified = g.revs[-1]
                break

    def restore(self, created: Revision, modified: Revision, ver: int) -> None:
        """Rebuild a live key from its latest row (used when loading a backend)."""
        assert not self.generations
        g = Generation()
        g.created, g.ver, g.revs = created, ver, [modified]
        self.generations.append(g)
        self.modified = modified

    def find_generation(self, at_rev: int) -> Generation | None:
        """The generation live at at_rev, or None when the key did not exist then."""
        last = len(self.generations) - 1
        for gi in range(last, -1, -1):
            g = self.generations[gi]
            if not g.revs:
                continue
            if gi != last and g.revs[-1].main <= at_rev:
                return None  # deleted by this generation's tombstone at or before at_rev
            if g.revs[0].main <= at_rev:
                return g
        return None

    def get(self, at_rev: int) -> tuple[Revision, Revision, int]:
        """(modified, created, version) of the key at at_rev."""
        assert self.generations and not self.is_empty(), self.key
        g = self.find_generation(at_rev)
        if g is None:
            raise RevisionNotFound
        n = g.latest_at(at_rev)
        if n == -1:
            raise RevisionNotFound
        return g.revs[n], g.created, g.ver - (len(g.revs) - n - 1)

    def since(self, rev: int) -> list[Revision]:
        """Revisions with main >= rev, the last one per main revision (for watch)."""
        since = Revision(rev, 0)
        gi = len(self.generations) - 1
        while gi > 0:
            g = self.generations[gi]
            if g.revs and since > g.created:
                break
            gi -= 1
        out: list[Revision] = []
        last = 0
        for g in self.generations[gi:]:
            for r in g.revs:
                if since > r:
                    continue
                if r.main == last:
                    out[-1] = r
                    continue
                out.append(r)
                last = r.main
        return out

    def _compact_point(self, at_rev: int, available: set[Revision]) -> tuple[int, int]:
        """(generation index, revision index) of what compaction at at_rev keeps;
        adds that revision to available."""
        gi = 0
        while gi < len(self.generations) - 1:
            if self.generations[gi].revs[-1].main > at_rev:
                break
            gi += 1
        ri = self.generations[gi].latest_at(at_rev)
        if ri != -1:
            available.add(self.generations[gi].revs[ri])
        return gi, ri

    def compact(self, at_rev: int, available: set[Revision]) -> None:
        assert self.generations and not self.is_empty(), self.key
        gi, ri = self._compact_point(at_rev, available)
        g = self.generations[gi]
        if g.revs:
            if ri != -1:
                del g.revs[:ri]
            if len(g.revs) == 1 and gi != len(self.generations) - 1:
                # Only the tombstone is left: the whole generation goes.
                available.discard(g.revs[0])
                gi += 1
        del self.generations[:gi]

    def keep(self, at_rev: int, available: set[Revision]) -> None:
        """What compact(at_rev) would keep, without changing anything."""
        if self.is_empty():
            return
        gi, ri = self._compact_point(at_rev, available)
        g = self.generations[gi]
        if g.revs and ri == len(g.revs) - 1 and gi != len(self.generations) - 1:
            available.discard(g.revs[ri])

    def describe(self) -> str:
        gens = " ".join(g.describe() for g in self.generations)
        return f"{self.key!r} modified={self.modified.main}.{self.modified.sub} {gens}"


class SortedKeys:
    """Distinct byte strings in order, as a list of sorted chunks of at most 2 × CHUNK keys and the last key
    of each. Adding or removing a key moves the entries of one chunk, where a single sorted list moves half
    of all keys (~120 µs at a million keys)."""

    CHUNK = 512

    __slots__ = ("_chunks", "_lasts", "_len")

    def __init__(self, keys=()) -> None:
        """`keys` sorted, without repeats."""
        keys = list(keys)
        n = self.CHUNK
        self._chunks = [keys[i:i + n] for i in range(0, len(keys), n)]
        self._lasts = [c[-1] for c in self._chunks]
        self._len = len(keys)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def add(self, key: bytes) -> None:
        """Adds a key not yet present."""
        chunks, lasts = self._chunks, self._lasts
        self._len += 1
        if not lasts:
            chunks.append([key])
            lasts.append(key)
            return
        i = bisect.bisect_left(lasts, key)
        if i == len(lasts):
            i -= 1
            chunk = chunks[i]
            chunk.append(key)
            lasts[i] = key
        else:
            chunk = chunks[i]
            bisect.insort(chunk, key)
        if len(chunk) > 2 * self.CHUNK:
            half = len(chunk) // 2
            chunks[i:i + 1] = [chunk[:half], chunk[half:]]
            lasts[i:i + 1] = [chunk[half - 1], chunk[-1]]

    def remove(self, key: bytes) -> None:
        """Removes a key that is present."""
        chunks, lasts = self._chunks, self._lasts
        i = bisect.bisect_left(lasts, key)
        chunk = chunks[i]
        j = bisect.bisect_left(chunk, key)
        assert chunk[j] == key
        del chunk[j]
        self._len -= 1
        if not chunk:
            del chunks[i]
            del lasts[i]
        elif j == len(chunk):
            lasts[i] = chunk[-1]

    def between(self, key: bytes, end: bytes) -> Iterator[bytes]:
        """The keys k with key <= k < end (end b"": unbounded), in order."""
        chunks, lasts = self._chunks, self._lasts
        i = bisect.bisect_left(lasts, key)
        if i == len(lasts):
            return
        j = bisect.bisect_left(chunks[i], key)
        for chunk in chunks[i:]:
            if end and chunk[-1] >= end:
                yield from chunk[j:bisect.bisect_left(chunk, end, j)]
                return
            yield from chunk[j:] if j else chunk
            j = 0


class TreeIndex:
    """All keys, in byte order, each with its KeyIndex."""

    def __init__(self) -> None:
        self._keys = SortedKeys()  # the same keys as _index
        self._index: dict[bytes, KeyIndex] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def key_index(self, key: bytes) -> KeyIndex | None:
        return self._index.get(key)

    def live_generation(self, key: bytes) -> Generation | None:
        """key's current generation while the key is live (its latest state), else None."""
        ki = self._index.get(key)
        if ki is None:
            return None
        g = ki.generations[-1]
        return g if g.revs else None

    def put(self, key: bytes, rev: Revision) -> None:
        ki = self._index.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._index[key] = ki
            self._keys.add(key)
        ki.put(rev)

    def load(self, key_indexes: dict[bytes, KeyIndex]) -> None:
        """Take the key indexes a restore built (the index must be empty)."""
        assert not self._index
        self._index = dict(key_indexes)
        self._keys = SortedKeys(sorted(self._index))

    def insert(self, ki: KeyIndex) -> None:
        assert ki.key not in self._index
        self._index[ki.key] = ki
        self._keys.add(ki.key)

    def tombstone(self, key: bytes, rev: Revision) -> None:
        ki = self._index.get(key)
        if ki is None:
            raise RevisionNotFound
        ki.tombstone(rev)

    def undo(self, key: bytes, rev: Revision) -> None:
        ki = self._index[key]
        ki.undo(rev)
        if not any(g.revs for g in ki.generations):
            del self._index[key]
            self._keys.remove(key)

    def get(self, key: bytes, at_rev: int) -> tuple[Revision, Revision, int]:
        ki = self._index.get(key)
        if ki is None:
            raise RevisionNotFound
        if at_rev >= ki.modified.main:  # unchanged since at_rev: its latest state
            g = ki.generations[-1]
            if not g.revs:
                raise RevisionNotFound
            return g.revs[-1], g.created, g.ver
        return ki.get(at_rev)

    def latest(self, key: bytes, at_rev: int) -> Revision | None:
        """The revision of key's state at at_rev, None when it was not live."""
        ki = self._index.get(key)
        if ki is None:
            return None
        if at_rev >= ki.modified.main:  # unchanged since at_rev (see revisions)
            return ki.modified if ki.generations[-1].revs else None
        try:
            return ki.get(at_rev)[0]
        except RevisionNotFound:
            return None

    def visit(self, key: bytes, end: bytes) -> Iterator[KeyIndex]:
        """KeyIndexes with key <= k < end (end b"" = unbounded), in key order."""
        index = self._index
        for k in self._keys.between(key, end):
            yield index[k]

    def revisions(self, key: bytes, end: bytes | None, at_rev: int, limit: int) -> tuple[list[Revision], int]:
        """Latest revisions of the live keys in range (at most limit if > 0) and
        the number of all live keys in range."""
        if end is None:
            try:
                return [self.get(key, at_rev)[0]], 1
            except RevisionNotFound:
                return [], 0
        revs: list[Revision] = []
        total = 0
        want = limit if limit > 0 else len(self._keys)
        for ki in self.visit(key, end):
            # Fast path: nothing changed the key after at_rev, so its latest
            # state is the one at at_rev.
            if at_rev >= ki.modified.main:
                if not ki.generations[-1].revs:
                    continue
                rev = ki.modified
            else:
                try:
                    rev = ki.get(at_rev)[0]
                except RevisionNotFound:
                    continue
            if total < want:
                revs.append(rev)
            total += 1
        return revs, total

    def count_revisions(self, key: bytes, end: bytes | None, at_rev: int) -> int:
        if end is None:
            return self.revisions(key, end, at_rev, 1)[1]
        total = 0
        for ki in self.visit(key, end):
            if at_rev >= ki.modified.main:
                total += bool(ki.generations[-1].revs)
            else:
                try:
                    ki.get(at_rev)
                except RevisionNotFound:
                    continue
                total += 1
        return total

    def range(self, key: bytes, end: bytes | None, at_rev: int) -> tuple[list[bytes], list[Revision]]:
        if end is None:
            try:
                return [key], [self.get(key, at_rev)[0]]
            except RevisionNotFound:
                return [], []
        keys: list[bytes] = []
        revs: list[Revision] = []
        for ki in self.visit(key, end):
            try:
                rev = ki.get(at_rev)[0]
            except RevisionNotFound:
                continue
            keys.append(ki.key)
            revs.append(rev)
        return keys, revs

    def range_since(self, key: bytes, end: bytes | None, rev: int) -> list[Revision]:
        if end is None:
            ki = self._index.get(key)
            return [] if ki is None else ki.since(rev)
        out: list[Revision] = []
        for ki in self.visit(key, end):
            out.extend(ki.since(rev))
        out.sort()
        return out

    def compact(self, rev: int) -> set[Revision]:
        available: set[Revision] = set()
        emptied: list[bytes] = []
        for key in self._keys:
            ki = self._index[key]
            ki.compact(rev, available)
            if ki.is_empty():
                emptied.append(key)
        if emptied:
            gone = set(emptied)
            for key in emptied:
                del self._index[key]
            self._keys = SortedKeys(k for k in self._keys if k not in gone)
        return available

    def keep(self, rev: int) -> set[Revision]:
        available: set[Revision] = set()
        for key in self._keys:
            self._index[key].keep(rev, available)
        return available

    def describe(self) -> str:
        return "\n".join(self._index[k].describe() for k in self._keys)
