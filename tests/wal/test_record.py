"""The WAL record codec against the WAL files real etcd wrote (tests/fixtures, MANIFEST.md)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2
from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from trietcd.wal import record
from trietcd.wal.record import (
    CRC_TYPE, ENTRY_TYPE, METADATA_TYPE, SNAPSHOT_TYPE, STATE_TYPE,
    CorruptError, Decoder, Encoder, Reader, TornWriteError,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEG0 = "0000000000000000-0000000000000000.wal"
WAL_35 = FIXTURES / "etcd-3.5.1/datadir/member/wal" / SEG0
WAL_34 = FIXTURES / "etcd-3.4.23/datadir/member/wal" / SEG0
ALL_WALS = sorted(FIXTURES.glob("etcd-*/**/*.wal"))
FX1_ID = 0x4959FA27AA214C35
FX1_CLUSTER = 0x1E4A5C257EA7C9D4


def read_all(path: Path, start_index: int = 0, start_term: int = 0) -> record.ReadResult:
    reader = Reader(start_index, start_term)
    reader.feed(path.read_bytes(), segment=path.name, last=True)
    return reader.result()


def raw_records(buf: bytes) -> list[tuple[int, int, bytes | None, int]]:
    """(type, crc, data, frame offset) of every frame, parsed independently of the codec."""
    out = []
    off = 0
    while off + 8 <= len(buf):
        lf = int.from_bytes(buf[off:off + 8], "little")
        if lf == 0:
            break
        n = lf & ((1 << 56) - 1)
        pad = (lf >> 56) & 7 if lf >> 63 else 0
        rec = record_pb2.Record.FromString(buf[off + 8:off + 8 + n])
        out.append((rec.type, rec.crc, rec.data if rec.HasField("data") else None, off))
        off += 8 + n + pad
    assert off == len(buf)
    return out


# ---- CRC ---------------------------------------------------------------------


def test_crc32c_check_values():
    assert record.crc32c(0, b"123456789") == 0xE3069283
    assert record.crc32c_pure(0, b"123456789") == 0xE3069283
    assert record.crc32c(0, b"") == 0
    # Worked values of wal-and-snap.md §3.3.
    meta = bytes.fromhex("08b59885d1fac4feac49 10d4939ff5d78497a51e".replace(" ", ""))
    assert record.crc32c(0, meta) == 0x6357C550
    assert record.crc32c(0x6357C550, bytes.fromhex("08001000")) == 0x7CD068D2


def test_pure_crc_matches_the_extension():
    rng = random.Random(5)
    for n in list(range(40)) + [255, 256, 257, 4096, 10001]:
        data = rng.randbytes(n)
        seed = rng.getrandbits(32)
        assert record.crc32c_pure(seed, data) == record.crc32c(seed, data), n
        assert record.crc32c_pure(record.crc32c_pure(seed, data[:n // 3]), data[n // 3:]) == record.crc32c(seed, data)


# ---- framing -----------------------------------------------------------------


@pytest.mark.parametrize("n, field", [
    (4, "0400000000000084"), (30, "1e00000000000082"), (16, "1000000000000000"), (111, "6f00000000000081"),
])
def test_length_field_examples(n, field):
    # A crc record (4 bytes with crc 0) or a record with data making it n bytes.
    data = None if n == 4 else bytes(n - 6)
    out = record.frame(CRC_TYPE if data is None else METADATA_TYPE, 0, data)
    assert out[:8].hex() == field
    assert len(out) % 8 == 0


def test_fixture_bytes_of_first_frames():
    buf = WAL_34.read_bytes()
    assert buf[:16].hex() == "0400000000000084" "0804100000000000"
    assert buf[16:56] == record.frame(METADATA_TYPE, 0x6357C550, record.encode_metadata(FX1_ID, FX1_CLUSTER))
    assert buf[56:80] == record.frame(SNAPSHOT_TYPE, 0x7CD068D2, bytes.fromhex("08001000"))


@pytest.mark.parametrize("path", ALL_WALS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_reencoding_every_fixture_wal_gives_its_bytes(path):
    """Decode each record into its message, encode it again with the codec: same file."""
    buf = path.read_bytes()
    enc = Encoder()
    for rec_type, crc, data, _ in raw_records(buf):
        if rec_type == CRC_TYPE:
            assert crc == enc.crc
            enc.crc_record()
        elif rec_type == ENTRY_TYPE:
            enc.entry(raft_pb2.Entry.FromString(data))
        elif rec_type == STATE_TYPE:
            enc.state(raft_pb2.HardState.FromString(data))
        elif rec_type == METADATA_TYPE:
            md = etcdserver_pb2.Metadata.FromString(data)
            enc.metadata(record.encode_metadata(md.NodeID, md.ClusterID))
        elif rec_type == SNAPSHOT_TYPE:
            snap = record_pb2.Snapshot.FromString(data)
            if snap.HasField("conf_state") or snap.index == 0:
                enc.snapshot(snap)
            else:  # etcd 3.4 wrote none; 3.5 refuses to
                enc.record(SNAPSHOT_TYPE, gogo.marshal(snap))
        assert enc.crc == crc
    assert bytes(enc.take()) == buf


def test_entry_encoding_matches_gogo_marshal():
    rng = random.Random(7)
    for _ in range(500):
        e = raft_pb2.Entry(Term=rng.getrandbits(rng.choice([1, 7, 8, 35, 64])),
                           Index=rng.getrandbits(rng.choice([1, 7, 8, 35, 64])))
        if rng.random() < 0.5:
            e.Type = rng.choice([0, 1, 2])
        if rng.random() < 0.7:
            e.Data = rng.randbytes(rng.choice([0, 1, 127, 128, 300, 20000]))
        expect = gogo.marshal(raft_pb2.Entry.FromString(e.SerializeToString()))
        assert record.encode_entry(e) == expect
        hs = raft_pb2.HardState(term=rng.getrandbits(40), commit=rng.getrandbits(20))
        assert record.encode_hard_state(hs) == gogo.marshal(raft_pb2.HardState(term=hs.term, commit=hs.commit))


def test_batch_encoding_equals_one_by_one():
    rng = random.Random(11)
    ents = [raft_pb2.Entry(Term=rng.getrandbits(40), Index=i, Type=rng.choice([0, 1]),
                           Data=rng.randbytes(rng.choice([0, 5, 256, 3000])))
            for i in range(1, 200)]
    ents[7].ClearField("Data")  # no Data field at all
    one, batch = Encoder(0x1234), Encoder(0x1234)
    for e in ents:
        one.entry(e)
    batch.entries(ents)
    assert one.crc == batch.crc and bytes(one.take()) == bytes(batch.take())


def test_snapshot_record_needs_conf_state_past_zero():
    with pytest.raises(ValueError):
        record.encode_snapshot(record_pb2.Snapshot(index=6, term=2))
    snap = record_pb2.Snapshot(index=6, term=2, conf_state=raft_pb2.ConfState(voters=[FX1_ID]))
    assert record.encode_snapshot(snap).hex() == "080610021a0c08b59885d1fac4feac492800"
    assert record.encode_snapshot(record_pb2.Snapshot()).hex() == "08001000"


# ---- fixtures read back with the manifest's contents ---------------------------


def test_etcd_351_datadir_wal_matches_manifest():
    res = read_all(WAL_35)
    md = etcdserver_pb2.Metadata.FromString(res.metadata)
    assert (md.NodeID, md.ClusterID) == (FX1_ID, FX1_CLUSTER)
    assert (res.hard_state.term, res.hard_state.vote, res.hard_state.commit) == (2, FX1_ID, 40)
    assert [e.Index for e in res.entries] == list(range(1, 41))
    assert [e.Term for e in res.entries] == [1] + [2] * 39
    assert [(s.index, s.term) for s in res.snapshots] == [(0, 0)] + [(i, 2) for i in (6, 12, 18, 24, 30, 36)]
    assert not res.snapshots[0].HasField("conf_state")
    assert all(list(s.conf_state.voters) == [FX1_ID] for s in res.snapshots[1:])
    e1 = res.entries[0]
    assert e1.Type == raft_pb2.EntryConfChange
    cc = raft_pb2.ConfChange.FromString(e1.Data)
    assert (cc.type, cc.node_id) == (raft_pb2.ConfChangeAddNode, FX1_ID)
    assert json.loads(cc.context) == {"id": FX1_ID, "peerURLs": ["http://127.0.0.1:22380"], "name": "fx1"}
    assert not res.entries[1].HasField("Data")  # the leader's empty entry
    v2 = etcdserver_pb2.Request.FromString(res.entries[3].Data)
    assert (v2.Method, v2.Path, v2.Val) == ("PUT", "/0/version", "3.5.0")
    reqs = {e.Index: raft_internal_pb2.InternalRaftRequest.FromString(e.Data) for e in res.entries[4:]}
    assert (reqs[5].put.key, reqs[5].put.value) == (b"foo", b"bar")
    assert (reqs[6].lease_grant.TTL, reqs[6].lease_grant.ID) == (600, 0x4C35A20C009E9406)
    assert reqs[7].put.lease == 0x4C35A20C009E9406
    assert reqs[10].delete_range.key == b"to-delete"
    assert reqs[12].compaction.revision == 4
    assert reqs[19].auth_role_add.name == "r1"
    assert reqs[29].put.key == b"/app/k1" and reqs[29].header.username == "u1"
    assert reqs[40].HasField("authenticate")
    assert res.crc == raw_records(WAL_35.read_bytes())[-1][1]


def test_etcd_3423_datadir_wal_matches_spec():
    res = read_all(WAL_34)
    assert [e.Index for e in res.entries] == list(range(1, 17))
    assert (res.hard_state.term, res.hard_state.vote, res.hard_state.commit) == (2, FX1_ID, 16)
    assert [(s.index, s.term) for s in res.snapshots] == [(0, 0), (6, 2), (12, 2)]
    assert all(not s.HasField("conf_state") for s in res.snapshots)
    assert res.crc == 0x4A70AA6C and res.end_offset == 1744
    v2 = etcdserver_pb2.Request.FromString(res.entries[3].Data)
    assert (v2.Path, v2.Val) == ("/0/version", "3.4.0")


def test_cluster_and_restore_fixtures_match_manifest():
    cluster = FIXTURES / "etcd-3.5.1/cluster"
    ids = {"m1": 0x98B60FED3613E3F7, "m2": 0xEFA4E2C93667074C, "m3": 0x25741828780196FC}
    for name, node_id in ids.items():
        res = read_all(cluster / name / "member/wal" / SEG0)
        md = etcdserver_pb2.Metadata.FromString(res.metadata)
        assert (md.NodeID, md.ClusterID) == (node_id, 0x37D9D467B8E12CB8)
        assert [e.Index for e in res.entries] == list(range(1, 21))
        assert [e.Term for e in res.entries] == [1, 1] + [4] * 18
        vote = 0 if name == "m3" else ids["m2"]
        assert (res.hard_state.term, res.hard_state.vote, res.hard_state.commit) == (4, vote, 20)
        cc = raft_pb2.ConfChange.FromString(res.entries[16].Data)
        assert (cc.type, cc.node_id, cc.HasField("context")) == (raft_pb2.ConfChangeRemoveNode, 0x877C25DC12C9DAE0, False)
    r3 = read_all(FIXTURES / "etcd-3.5.1/restore-3member-r1/member/wal" / SEG0)
    order = [raft_pb2.ConfChange.FromString(e.Data).node_id for e in r3.entries]
    assert order == [0x42E00A14296FA14A, 0xC82DE2AEFA87F719, 0xD6DB3434B0838F1C]
    assert (r3.hard_state.term, r3.hard_state.vote, r3.hard_state.commit) == (1, 0x42E00A14296FA14A, 3)
    assert [(s.index, s.term) for s in r3.snapshots] == [(0, 0), (3, 1)]
    assert list(r3.snapshots[1].conf_state.voters) == order


def test_reading_from_a_snapshot_skips_older_entries():
    res = read_all(WAL_35, 36, 2)
    assert [e.Index for e in res.entries] == [37, 38, 39, 40]
    with pytest.raises(record.SnapshotNotFoundError, match="wal: snapshot not found"):
        read_all(WAL_35, 37, 2)
    with pytest.raises(record.SnapshotMismatchError, match="wal: snapshot mismatch"):
        read_all(WAL_35, 36, 3)


# ---- reader rules on synthetic logs --------------------------------------------


def entry(index: int, term: int, data: bytes = b"x") -> raft_pb2.Entry:
    return raft_pb2.Entry(Term=term, Index=index, Data=data)


def new_log(meta: bytes = b"\x08\x01\x10\x02") -> Encoder:
    enc = Encoder()
    enc.crc_record()
    enc.metadata(meta)
    enc.snapshot(record_pb2.Snapshot())
    return enc


def test_later_entries_overwrite_a_conflicting_suffix():
    enc = new_log()
    enc.entries([entry(i, 1) for i in range(1, 6)])
    enc.entries([entry(3, 2, b"new3"), entry(4, 2, b"new4")])
    enc.state(raft_pb2.HardState(term=2, commit=4))
    reader = Reader()
    reader.feed(bytes(enc.take()))
    res = reader.result()
    assert [(e.Index, e.Term) for e in res.entries] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert res.entries[2].Data == b"new3"


def test_an_entry_beyond_the_end_is_an_error():
    enc = new_log()
    enc.entries([entry(1, 1), entry(3, 1)])
    reader = Reader()
    with pytest.raises(CorruptError, match="slice bounds out of range"):
        reader.feed(bytes(enc.take()), segment="s")


def test_conflicting_metadata_is_an_error():
    enc = new_log()
    enc.metadata(b"\x08\x09")
    with pytest.raises(record.MetadataConflictError):
        Reader().feed(bytes(enc.take()))


def test_crc_chains_across_segments():
    enc = new_log()
    enc.entries([entry(i, 1) for i in range(1, 4)])
    seg0 = bytes(enc.take())
    enc.crc_record()
    enc.metadata(b"\x08\x01\x10\x02")
    enc.entries([entry(4, 1)])
    seg1 = bytes(enc.take())
    reader = Reader()
    reader.feed(seg0, segment="0", last=False)
    reader.feed(seg1, segment="1", last=True)
    assert [e.Index for e in reader.result().entries] == [1, 2, 3, 4]
    # A segment whose leading crc record does not continue the chain.
    bad = bytearray(seg1)
    bad[8 + 3] ^= 0x01  # inside the crc varint of the crc record
    reader = Reader()
    reader.feed(seg0, segment="0", last=False)
    with pytest.raises(CorruptError, match="wal: crc mismatch"):
        reader.feed(bytes(bad), segment="1", last=True)
    # Reading can start at segment 1 alone: its crc record seeds the chain.
    dec = Decoder()
    assert [t for t, _, _ in dec.records(seg1)] == [METADATA_TYPE, ENTRY_TYPE]


def torn_setup() -> tuple[bytes, int]:
    enc = new_log()
    enc.entries([entry(1, 1, bytes(range(256)) * 4)])
    good = bytes(enc.take())
    enc.entries([entry(2, 1, b"\xff" * 1500)])
    return good + bytes(enc.take()), len(good)


def test_truncated_last_record_is_a_torn_write():
    buf, good_end = torn_setup()
    for cut in (good_end + 3, good_end + 8, good_end + 100, len(buf) - 1):
        with pytest.raises(TornWriteError) as info:
            Reader().feed(buf[:cut], segment="s", last=True)
        assert info.value.offset == good_end
        with pytest.raises(CorruptError) as info:
            Reader().feed(buf[:cut], segment="s", last=False)
        assert not isinstance(info.value, TornWriteError)


def test_zeroed_sector_is_torn_but_a_flipped_byte_is_corruption():
    buf, good_end = torn_setup()
    zeroed = bytearray(buf)
    zeroed[1536:2048] = bytes(512)  # a whole sector inside the last record
    assert good_end < 1536 and 2048 < len(buf)
    with pytest.raises(TornWriteError) as info:
        Reader().feed(bytes(zeroed), segment="s", last=True)
    assert info.value.offset == good_end
    with pytest.raises(CorruptError) as info:
        Reader().feed(bytes(zeroed), segment="s", last=False)
    assert not isinstance(info.value, TornWriteError)
    flipped = bytearray(buf)
    flipped[len(buf) - 20] ^= 0x40
    with pytest.raises(CorruptError, match="walpb: crc mismatch") as info:
        Reader().feed(bytes(flipped), segment="0000-0000.wal", last=True)
    assert not isinstance(info.value, TornWriteError)
    assert info.value.offset == good_end and "0000-0000.wal" in str(info.value)


def test_zero_length_field_ends_the_segment():
    buf, good_end = torn_setup()
    cut = bytearray(buf)
    cut[good_end:good_end + 8] = bytes(8)
    reader = Reader()
    reader.feed(bytes(cut))
    assert [e.Index for e in reader.result().entries] == [1]
    assert reader.decoder.end_offset == good_end


def test_huge_length_field_is_refused_without_allocating():
    buf, good_end = torn_setup()
    bad = bytearray(buf)
    bad[good_end:good_end + 8] = (0x7F << 56 | (1 << 55)).to_bytes(8, "little")
    with pytest.raises(CorruptError, match="max entry size limit exceeded") as info:
        Reader().feed(bytes(bad), segment="s")
    assert info.value.offset == good_end


def test_unknown_record_type_is_an_error():
    enc = new_log()
    enc.record(9, b"zz")
    with pytest.raises(CorruptError, match="unexpected block type 9"):
        Reader().feed(bytes(enc.take()))
