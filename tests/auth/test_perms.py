"""Key permissions merged over roles: table cases of etcd's semantics, and the checks against a naive twin
(the union of the permitted intervals, merged, covers the requested one)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proto.authpb import auth_pb2
from trietcd.auth import merge_perms
from trietcd.auth.perms import READ, READWRITE, WRITE

P = auth_pb2.Permission


def role(*perms) -> auth_pb2.Role:
    return auth_pb2.Role(name=b"r", keyPermission=[P(key=k, range_end=e, permType=t) for k, e, t in perms])


def test_range_needs_contiguous_cover():
    perms = merge_perms([role((b"a", b"c", READ), (b"x", b"z", READ))])
    assert not perms.allows(b"a", b"z", READ)
    assert perms.allows(b"a", b"c", READ)
    assert perms.allows(b"b", b"c", READ)
    assert not perms.allows(b"b", b"d", READ)
    perms = merge_perms([role((b"a", b"f", READ), (b"c", b"d", READ), (b"f", b"z", READ))])
    assert perms.allows(b"a", b"z", READ)  # [a,f) and [f,z) touch
    perms = merge_perms([role((b"a", b"d", READ), (b"a", b"b", READ), (b"c", b"f", READ))])
    assert perms.allows(b"a", b"f", READ)


def test_single_key_touching_any_interval():
    perms = merge_perms([role((b"a", b"d", READ), (b"c", b"f", READ))])
    assert perms.allows(b"d", b"", READ)
    assert not perms.allows(b"f", b"", READ)
    assert not perms.allows(b"g", b"", READ)


def test_single_key_permission_and_prefix_and_from_key():
    perms = merge_perms([role((b"k1", b"", READ), (b"p/", b"p0", READWRITE), (b"x", b"\x00", READ))])
    assert perms.allows(b"k1", b"", READ)
    assert not perms.allows(b"k10", b"", READ)
    assert not perms.allows(b"k1", b"k2", READ)  # a range beyond the single key
    assert perms.allows(b"k1", b"k1\x00", READ)  # the range of the key alone
    assert perms.allows(b"p/x", b"", WRITE)
    assert perms.allows(b"p/", b"p0", WRITE)
    assert not perms.allows(b"p/", b"p1", WRITE)
    assert perms.allows(b"zzz", b"", READ)
    assert perms.allows(b"x", b"\x00", READ)  # from-key query: [x, +inf)
    assert perms.allows(b"y", b"\x00", READ)
    assert not perms.allows(b"w", b"\x00", READ)
    assert not perms.allows(b"w", b"", READ)
    assert not perms.allows(b"zzz", b"", WRITE)


def test_read_and_write_are_apart():
    perms = merge_perms([role((b"r", b"", READ), (b"w", b"", WRITE), (b"rw", b"", READWRITE))])
    assert perms.allows(b"r", b"", READ) and not perms.allows(b"r", b"", WRITE)
    assert perms.allows(b"w", b"", WRITE) and not perms.allows(b"w", b"", READ)
    assert perms.allows(b"rw", b"", READ) and perms.allows(b"rw", b"", WRITE)


def test_roles_merge():
    perms = merge_perms([role((b"a", b"c", READ)), role((b"c", b"e", READ))])
    assert perms.allows(b"a", b"e", READ)


# ---- the naive twin

_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 3 + 0x61 if x % 4 else 0 for x in b) or b"a")


def _interval(key: bytes, end: bytes) -> tuple[bytes, bytes | None]:
    # None: +inf
    if not end:
        return key, key + b"\x00"
    return key, None if end == b"\x00" else end


def _lt(a: bytes | None, b: bytes | None) -> bool:
    if a is None:
        return False
    return b is None or a < b


def _naive_allows(perms, key: bytes, end: bytes) -> bool:
    if not end:
        # a key alone: inside some interval
        return any(not _lt(key, b) and _lt(key, e) for b, e in perms)
    begin, stop = _interval(key, end)
    merged: list[list] = []
    for b, e in sorted(perms, key=lambda iv: iv[0]):
        if merged and not _lt(merged[-1][1], b):  # touches or overlaps the last one
            if _lt(merged[-1][1], e):
                merged[-1][1] = e
        else:
            merged.append([b, e])
    return any(not _lt(begin, b) and not _lt(e, stop) for b, e in merged)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_keys, st.one_of(st.just(b""), st.just(b"\x00"), _keys)), max_size=5),
       _keys, st.one_of(st.just(b""), st.just(b"\x00"), _keys))
def test_checks_match_the_naive_twin(grants, key, end):
    grants = [(k, e) for k, e in grants if not e or e == b"\x00" or k < e]
    if end and end != b"\x00" and key >= end:
        return
    perms = merge_perms([role(*[(k, e, READ) for k, e in grants])])
    assert perms.allows(key, end, READ) == _naive_allows([_interval(k, e) for k, e in grants], key, end)
