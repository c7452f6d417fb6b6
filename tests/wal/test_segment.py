"""The WAL's file layer on a real directory: layout, cuts, locks, repair, purge, snapshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from trietcd.wal import record, segment, snap
from trietcd.wal.segment import WAL, LockedError, Snapshotter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEG0 = "0000000000000000-0000000000000000.wal"
META = record.encode_metadata(0x4959FA27AA214C35, 0x1E4A5C257EA7C9D4)


def entries(first: int, last: int, term: int = 1, size: int = 100) -> list[raft_pb2.Entry]:
    return [raft_pb2.Entry(Term=term, Index=i, Data=bytes([i % 251]) * size) for i in range(first, last + 1)]


def hs(term: int, commit: int, vote: int = 0) -> raft_pb2.HardState:
    return raft_pb2.HardState(term=term, vote=vote, commit=commit)


@pytest.fixture
def waldir(tmp_path) -> str:
    (tmp_path / "member").mkdir()
    return str(tmp_path / "member" / "wal")


def test_create_writes_etcds_first_records(waldir):
    with WAL.create(waldir, META, segment_size_bytes=1 << 20) as w:
        assert sorted(os.listdir(waldir)) == ["0.tmp", SEG0]
    assert not os.path.exists(waldir + ".tmp")
    content = Path(waldir, SEG0).read_bytes()
    assert len(content) == 1 << 20  # preallocated, zeros after the data
    fixture = (FIXTURES / "etcd-3.4.23/datadir/member/wal" / SEG0).read_bytes()
    assert content[:80] == fixture[:80]  # crc, metadata, snapshot {0,0}: same member, same bytes
    assert not any(content[80:])
    assert sorted(os.listdir(waldir)) == [SEG0]  # the prepared segment goes on close
    assert oct(os.stat(Path(waldir, SEG0)).st_mode & 0o777) == "0o600"
    with pytest.raises(segment.WalExistsError):
        WAL.create(waldir, META)


def test_save_read_all_and_append_again(waldir):
    with WAL.create(waldir, META) as w:
        w.save(hs(1, 1), entries(1, 1))
        w.save(hs(2, 3, vote=7), entries(2, 3, term=2))
        w.save(hs(2, 3, vote=7), [])
        w.save(raft_pb2.HardState(), [])  # writes nothing
    with WAL.open(waldir) as w:
        res = w.read_all()
        assert [e.Index for e in res.entries] == [1, 2, 3]
        assert (res.hard_state.term, res.hard_state.vote, res.hard_state.commit) == (2, 7, 3)
        assert res.metadata == META
        w.save(hs(2, 4, vote=7), entries(4, 4, term=2))
    res = segment.read_wal(waldir)
    assert [e.Index for e in res.entries] == [1, 2, 3, 4]
    assert os.path.getsize(Path(waldir, SEG0)) == segment.SEGMENT_SIZE_BYTES


def test_segments_are_cut_with_crc_metadata_and_state(waldir):
    with WAL.create(waldir, META, segment_size_bytes=2048) as w:
        for i in range(1, 31):
            w.save(hs(3, i, vote=9), entries(i, i, term=3))
        names = w.locked_names
    files = sorted(n for n in os.listdir(waldir) if n.endswith(".wal"))
    assert files == names
    assert len(files) >= 3
    seqs_and_indexes = [segment.parse_wal_name(n) for n in files]
    assert [s for s, _ in seqs_and_indexes] == list(range(len(files)))
    for name in files[1:]:
        content = Path(waldir, name).read_bytes()
        dec = record.Decoder()
        recs = list(dec.records(content))
        assert recs[0][0] == record.METADATA_TYPE and recs[0][1] == META
        assert recs[1][0] == record.STATE_TYPE
        first = raft_pb2.Entry.FromString(recs[2][1])
        assert first.Index == segment.parse_wal_name(name)[1]
    for name in files[:-1]:  # cut segments were truncated to their data
        assert os.path.getsize(Path(waldir, name)) >= 2048
    res = segment.read_wal(waldir)
    assert [e.Index for e in res.entries] == list(range(1, 31))
    # Opening at a snapshot picks the last segment starting at or before it.
    with WAL.create(str(Path(waldir).parent / "other"), META) as w2:
        pass
    with WAL.open(waldir) as w:
        w.read_all()
        w.save_snapshot(record_pb2.Snapshot(index=20, term=3, conf_state=raft_pb2.ConfState(voters=[1])))
    start = max(i for i, (_, idx) in enumerate(seqs_and_indexes) if idx <= 20)
    with WAL.open(waldir, record_pb2.Snapshot(index=20, term=3)) as w:
        assert w.locked_names == files[start:]
        res = w.read_all()
        assert [e.Index for e in res.entries] == list(range(21, 31))


def test_a_second_opener_is_refused_by_the_lock(waldir):
    with WAL.create(waldir, META):
        with pytest.raises(LockedError, match="fileutil: file already locked"):
            WAL.open(waldir)
    with WAL.open(waldir) as w:
        w.read_all()


def test_release_lock_to_and_purge(waldir):
    with WAL.create(waldir, META, segment_size_bytes=1024) as w:
        for i in range(1, 41):
            w.save(hs(1, i), entries(i, i))
        names = w.locked_names
        assert len(names) >= 6
        # Nothing can be purged while the WAL holds every segment.
        assert segment.purge(waldir, ".wal", 2) == []
        idx = [segment.parse_wal_name(n)[1] for n in names]
        w.release_lock_to(idx[4])
        assert w.locked_names == names[3:]  # keeps the segment before the one holding idx[4]
        w.release_lock_to(10**9)
        assert w.locked_names == names[-1:]
        removed = segment.purge(waldir, ".wal", 2)
        assert removed == names[:-2]
        assert sorted(n for n in os.listdir(waldir) if n.endswith(".wal")) == names[-2:]
        assert segment.purge(waldir, ".wal", 0) == []


def test_missing_or_discontiguous_segments(waldir):
    with pytest.raises(segment.WalNotFoundError):
        WAL.open(waldir)
    with WAL.create(waldir, META, segment_size_bytes=1024) as w:
        for i in range(1, 30):
            w.save(hs(1, i), entries(i, i))
        names = w.locked_names
    os.remove(Path(waldir, names[1]))
    with pytest.raises(segment.WalNotFoundError, match="wal: file not found"):
        WAL.open(waldir)


def _damaged_copy(tmp_path, damage) -> tuple[str, int]:
    """A WAL whose last record is entry 10; returns (dir, end of entry 9's state record)."""
    d = tmp_path / "member" / "wal"
    d.parent.mkdir(exist_ok=True)
    with WAL.create(str(d), META) as w:
        for i in range(1, 10):
            w.save(hs(2, i), entries(i, i, term=2))
        good_end = w._offset
        w.save(hs(2, 9), entries(10, 10, term=2, size=700))
    path = d / SEG0
    content = bytearray(path.read_bytes())
    damage(path, content, good_end)
    return str(d), good_end


@pytest.mark.parametrize("how", ["truncated", "zeroed-sector"])
def test_torn_tail_is_repaired_like_etcd(tmp_path, how):
    def damage(path, content, good_end):
        if how == "truncated":
            path.write_bytes(content[:good_end + 300])
        else:
            start = (good_end + 8 + 511) // 512 * 512
            content[start:start + 512] = bytes(512)
            path.write_bytes(content)
    d, good_end = _damaged_copy(tmp_path, damage)
    before = Path(d, SEG0).read_bytes()
    with WAL.open(d) as w:
        res = w.read_all()
        assert [e.Index for e in res.entries] == list(range(1, 10))
        w.save(hs(3, 10), entries(10, 10, term=3))
    assert Path(d, SEG0 + ".broken").read_bytes() == before
    assert [(e.Index, e.Term) for e in segment.read_wal(d).entries][-2:] == [(9, 2), (10, 3)]
    # The repaired segment stays short (etcd does not re-extend it) and grows by appends.
    assert os.path.getsize(Path(d, SEG0)) < 10_000


def test_flipped_byte_in_last_record_is_fatal(tmp_path):
    def damage(path, content, good_end):
        content[good_end + 200] ^= 0x55
        path.write_bytes(content)
    d, good_end = _damaged_copy(tmp_path, damage)
    before = Path(d, SEG0).read_bytes()
    w = WAL.open(d)
    with pytest.raises(record.CorruptError, match="walpb: crc mismatch") as info:
        w.read_all()
    w.close()
    assert info.value.segment == SEG0 and info.value.offset == good_end
    assert Path(d, SEG0).read_bytes() == before
    assert not Path(d, SEG0 + ".broken").exists()


def test_zeroed_length_field_ends_the_log_and_the_tail_is_zeroed(tmp_path):
    def damage(path, content, good_end):
        content[good_end:good_end + 8] = bytes(8)
        path.write_bytes(content)
    d, good_end = _damaged_copy(tmp_path, damage)
    with WAL.open(d) as w:
        assert [e.Index for e in w.read_all().entries] == list(range(1, 10))
    content = Path(d, SEG0).read_bytes()
    assert len(content) == segment.SEGMENT_SIZE_BYTES  # re-extended to its old length
    assert not any(content[good_end:])  # stale bytes of entry 10 are gone


def test_valid_snapshot_entries_keeps_committed_ones():
    d = str(FIXTURES / "etcd-3.5.1/datadir/member/wal")
    snaps = segment.valid_snapshot_entries(d)
    assert [(s.index, s.term) for s in snaps] == [(0, 0), (6, 2), (12, 2), (18, 2), (24, 2), (30, 2), (36, 2)]


def test_snapshotter_on_etcds_snap_dir(tmp_path):
    src = FIXTURES / "etcd-3.5.1/datadir/member/snap"
    d = tmp_path / "snap"
    d.mkdir()
    for f in src.glob("*.snap"):
        shutil.copy(f, d / f.name)
    (d / "db.tmp.123").write_bytes(b"x")
    ss = Snapshotter(str(d))
    newest = ss.load()
    assert (newest.metadata.index, newest.metadata.term) == (36, 2)
    wal_snaps = [record_pb2.Snapshot(index=12, term=2), record_pb2.Snapshot(index=18, term=2)]
    assert ss.load_newest_available(wal_snaps).metadata.index == 18
    assert not (d / "db.tmp.123").exists()
    # A damaged newest file is set aside as .broken and the next one is used.
    name = snap.snap_name(2, 36)
    content = bytearray((d / name).read_bytes())
    content[100] ^= 1
    (d / name).write_bytes(content)
    assert ss.load().metadata.index == 30
    assert (d / (name + ".broken")).exists()
    # Save writes etcd's bytes: re-saving a loaded snapshot reproduces the fixture file.
    out = tmp_path / "out"
    out.mkdir()
    Snapshotter(str(out)).save(newest)
    assert (out / name).read_bytes() == (src / name).read_bytes()
    Snapshotter(str(out)).save(raft_pb2.Snapshot())  # empty: nothing written
    assert os.listdir(out) == [name]
    assert segment.purge(str(d), ".snap", 2) == sorted(n for n in os.listdir(src) if n.endswith(".snap"))[:3]
    with pytest.raises(snap.NoSnapshotError):
        Snapshotter(str(out)).load_newest_available([])


def test_snap_codec_errors():
    with pytest.raises(snap.EmptySnapshotError):
        snap.decode_snap_file(b"")
    with pytest.raises(snap.SnapCorruptError):
        snap.decode_snap_file(b"\x0a\xff")
    good = (FIXTURES / "etcd-3.5.1/restore-1member/member/snap/0000000000000001-0000000000000001.snap").read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(snap.SnapCRCMismatchError, match="snap: crc mismatch"):
        snap.decode_snap_file(bytes(bad))


def test_the_wal_api_rewrites_etcds_fixture_wal_byte_for_byte(tmp_path):
    """Replay the fixture's records as etcd's calls (Create, Save per Ready, SaveSnapshot)."""
    fixture = (FIXTURES / "etcd-3.5.1/datadir/member/wal" / SEG0).read_bytes()
    recs = list(record.Decoder().records(fixture))
    assert recs[0][0] == record.METADATA_TYPE and recs[1][0] == record.SNAPSHOT_TYPE
    d = str(tmp_path / "wal")
    pending: list = []
    with WAL.create(d, recs[0][1]) as w:
        for rec_type, data, _ in recs[2:]:
            if rec_type == record.ENTRY_TYPE:
                pending.append(raft_pb2.Entry.FromString(data))
            elif rec_type == record.STATE_TYPE:
                w.save(raft_pb2.HardState.FromString(data), pending)
                pending = []
            else:
                assert rec_type == record.SNAPSHOT_TYPE
                if pending:
                    w.save(raft_pb2.HardState(), pending)
                    pending = []
                w.save_snapshot(record_pb2.Snapshot.FromString(data))
    content = Path(d, SEG0).read_bytes()
    assert content[:len(fixture)] == fixture
    assert not any(content[len(fixture):])
