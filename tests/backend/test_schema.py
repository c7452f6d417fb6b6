"""The backend's byte formats against rows real etcd wrote (fixture dbs) and spec examples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proto.raftpb import raft_pb2
from storage import DB
from trietcd.backend import schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DB_351 = FIXTURES / "etcd-3.5.1/datadir/member/snap/db"
DB_3423 = FIXTURES / "etcd-3.4.23/bbolt/etcd-small.db"  # a copy of that datadir's member/snap/db
DB_351_M1 = FIXTURES / "etcd-3.5.1/cluster/m1/member/snap/db"


def rows_of(src: Path, tmp_path: Path, bucket: bytes) -> dict[bytes, bytes]:
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    with DB.open(copy, read_only=True) as db, db.view() as tx:
        return dict(tx.bucket(bucket).items())


def test_buckets_are_etcds_ten_in_key_order():
    assert schema.BUCKETS == (b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key", b"lease",
                              b"members", b"members_removed", b"meta")


def test_u64_round_trip_and_width():
    assert schema.encode_u64(16) == bytes.fromhex("0000000000000010")
    assert schema.decode_u64(schema.encode_u64((1 << 64) - 1)) == (1 << 64) - 1
    with pytest.raises(ValueError):
        schema.decode_u64(b"\x00" * 7)
    with pytest.raises(AssertionError):
        schema.encode_u64(-1)


def test_conf_state_json_reproduces_the_single_member_fixture(tmp_path):
    stored = rows_of(DB_351, tmp_path, schema.META)[schema.CONF_STATE]
    assert stored == b'{"voters":[5285530685960965173],"auto_leave":false}'
    cs = schema.parse_conf_state_json(stored)
    assert list(cs.voters) == [5285530685960965173] and not cs.auto_leave
    assert schema.conf_state_json(cs) == stored


def test_conf_state_json_reproduces_the_three_member_fixture(tmp_path):
    stored = rows_of(DB_351_M1, tmp_path, schema.META)[schema.CONF_STATE]
    cs = raft_pb2.ConfState(voters=[2698808638792898300, 11004000251015324663, 17268176225074349900])
    assert schema.conf_state_json(cs) == stored


def test_conf_state_json_all_lists_in_go_field_order():
    cs = raft_pb2.ConfState(voters=[1, 2], learners=[3], voters_outgoing=[1], learners_next=[4], auto_leave=True)
    b = schema.conf_state_json(cs)
    assert b == (b'{"voters":[1,2],"learners":[3],"voters_outgoing":[1],"learners_next":[4],'
                 b'"auto_leave":true}')
    assert schema.parse_conf_state_json(b) == cs
    assert schema.conf_state_json(raft_pb2.ConfState()) == b'{"auto_leave":false}'


@pytest.mark.parametrize("bad", [b"[]", b'{"voters":[-1]}', b'{"voters":[1.5]}', b'{"auto_leave":1}', b"{"])
def test_parse_conf_state_json_rejects_garbage(bad):
    with pytest.raises(ValueError):
        schema.parse_conf_state_json(bad)


def test_member_json_reproduces_fixture_rows(tmp_path):
    # etcd 3.4.23 stores the published member; 3.5.1 only the first add (delta §1.4).
    rows = rows_of(DB_3423, tmp_path, schema.MEMBERS)
    assert rows[schema.member_key(0x4959fa27aa214c35)] == schema.member_json(
        5285530685960965173, ["http://127.0.0.1:22380"], "fx1", ["http://127.0.0.1:22379"])
    rows = rows_of(DB_351, tmp_path, schema.MEMBERS)
    assert rows == {b"4959fa27aa214c35": schema.member_json(5285530685960965173, ["http://127.0.0.1:22380"],
                                                            "fx1")}
    rows = rows_of(DB_351_M1, tmp_path, schema.MEMBERS)
    assert rows[b"25741828780196fc"] == schema.member_json(2698808638792898300, ["http://127.0.0.1:32400"],
                                                           is_learner=True)


def test_member_json_escapes_like_go():
    assert schema.member_json(1, [], "a<b>&\"\\\n\x01\u2028é") == (
        '{"id":1,"peerURLs":[],"name":"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u0001\\u2028é"}'.encode())
    assert schema.member_key(0x25741828780196fc) == b"25741828780196fc"
    assert schema.member_key(10) == b"a"


def test_alarm_key_bytes():
    assert schema.alarm_key(1, 2) == bytes.fromhex("08011002")
    assert schema.alarm_key(0x4959fa27aa214c35, 1) == bytes.fromhex("08b59885d1fac4feac491001")
