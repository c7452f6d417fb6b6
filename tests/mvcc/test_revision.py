import pytest

from trietcd.mvcc import CorruptError, Revision, bytes_to_revision, revision_to_bytes


def test_revision_bytes_layout():
    # backend-schema §2.1: main(8 BE) '_' sub(8 BE) [+ 't'].
    b = revision_to_bytes(Revision(7, 1))
    assert b == bytes.fromhex("0000000000000007") + b"_" + bytes.fromhex("0000000000000001")
    assert bytes_to_revision(b) == (Revision(7, 1), False)
    t = revision_to_bytes(Revision(6, 0), tombstone=True)
    assert len(t) == 18 and t.endswith(b"t")
    assert bytes_to_revision(t) == (Revision(6, 0), True)


def test_byte_order_is_revision_order():
    revs = [Revision(1, 0), Revision(1, 1), Revision(2, 0), Revision(256, 0), Revision(256, 3)]
    assert sorted(revs, key=revision_to_bytes) == sorted(revs)


@pytest.mark.parametrize(
    "data",
    [b"", b"x" * 17, revision_to_bytes(Revision(1, 1)) + b"x", revision_to_bytes(Revision(1)) + b"tt", b"\x80" + b"\0" * 7 + b"_" + b"\0" * 8],
)
def test_corrupt_revision_keys(data):
    with pytest.raises(CorruptError):
        bytes_to_revision(data)
