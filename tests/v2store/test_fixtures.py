"""The v2 store against the `.snap` files real etcd wrote: byte-exact round trips, and the same
bytes rebuilt from the operations etcd applied (bootstrap, publish, version, restore)."""

from __future__ import annotations

import struct

import pytest

from proto.raftpb import raft_pb2
from tests.v2store.replay import (
    FIXTURES,
    load_recording,
    replay,
    snap_data,
    wal_entries,
)
from trietcd.v2store import V2Store

SNAPS = sorted(FIXTURES.glob("etcd-*/**/member/snap/*.snap"))
FX1 = 0x4959FA27AA214C35  # the datadir fixtures' member


def msgsnap_data() -> bytes:
    """The v2 JSON inside the captured MsgSnap (a 3-member cluster, etcd 3.5.1)."""
    frame = (FIXTURES / "etcd-3.5.1" / "peer" / "msgsnap-message-frame.bin").read_bytes()
    (length,) = struct.unpack(">Q", frame[:8])
    return raft_pb2.Message.FromString(frame[8:8 + length]).snapshot.data


def test_every_fixture_snapshot_is_found():
    assert len(SNAPS) == 10


@pytest.mark.parametrize("path", SNAPS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_snapshot_json_round_trips_byte_for_byte(path):
    data, _ = snap_data(path)
    assert V2Store.from_json(data).to_json() == data


def test_msgsnap_json_round_trips_byte_for_byte():
    data = msgsnap_data()
    assert V2Store.from_json(data).to_json() == data


@pytest.mark.parametrize("version_dir", ["etcd-3.5.1", "etcd-3.4.23"])
def test_datadir_snapshots_rebuilt_from_the_wal(version_dir, tmp_path):
    """Bootstrap conf change, publish, cluster version: every snapshot etcd wrote, byte-exact
    (the v3 entries in between leave the v2 store alone)."""
    member = FIXTURES / version_dir / "datadir" / "member"
    entries = wal_entries(member, tmp_path)
    snaps = sorted((member / "snap").glob("*.snap"))
    assert snaps
    for path in snaps:
        data, index = snap_data(path)
        store = replay(V2Store.new(), entries, upto=index)
        assert store.to_json() == data, path.name


def test_datadir_snapshot_by_the_contract_operations():
    """The same state through the public operations in the fixture's order."""
    data, _ = snap_data(FIXTURES / "etcd-3.5.1/datadir/member/snap/0000000000000002-0000000000000006.snap")
    store = V2Store.new()
    assert store.members_from_store() == ({}, set())  # validating the bootstrap conf change
    store.add_member(FX1, ["http://127.0.0.1:22380"])
    store.update_attributes(FX1, "fx1", ["http://127.0.0.1:22379"])
    store.set_cluster_version("3.5.0")
    assert store.to_json() == data
    assert store.current_index == 3
    assert store.cluster_version() == "3.5.0"
    (member,) = store.members().values()
    assert (member.id, member.name, member.peer_urls, member.client_urls, member.is_learner) == (
        FX1, "fx1", ("http://127.0.0.1:22380",), ("http://127.0.0.1:22379",), False)


@pytest.mark.parametrize("name, snap, members", [
    ("restore-1member", "0000000000000001-0000000000000001.snap",
     [(0xD6DB3434B0838F1C, "http://127.0.0.1:22780")]),
    ("restore-3member-r1", "0000000000000001-0000000000000003.snap",
     [(0x42E00A14296FA14A, "http://127.0.0.1:22790"), (0xC82DE2AEFA87F719, "http://127.0.0.1:22800"),
      (0xD6DB3434B0838F1C, "http://127.0.0.1:22780")]),
])
def test_restore_snapshot_rebuilt(name, snap, members, tmp_path):
    """`etcdutl snapshot restore` adds the members in ID order, no validation reads, nothing
    else (etcd-3.5-delta.md §5)."""
    data, _ = snap_data(FIXTURES / "etcd-3.5.1" / name / "member" / "snap" / snap)
    store = V2Store.new()
    for member_id, url in members:
        store.add_member(member_id, [url])
    assert store.to_json() == data
    assert store.cluster_version() is None
    assert sorted(store.members()) == [m for m, _ in members]
    # The WAL's conf changes carry the same members.
    entries = wal_entries(FIXTURES / "etcd-3.5.1" / name / "member", tmp_path)
    ids = [raft_pb2.ConfChange.FromString(e.Data).node_id for e in entries]
    assert ids == [m for m, _ in members]


def test_msgsnap_rebuilt_from_a_three_member_bootstrap():
    """Three bootstrap conf changes in ID order, each validated (the reads count: 2 gets
    succeed, 3 fail), the publishes as the members came up, then the version."""
    s1, s2, s3 = 0x1B110ED7C487821A, 0x256627848CB3F32E, 0x0E2371264998747D
    store = V2Store.new()
    for member_id, port in sorted([(s1, 42380), (s2, 42390), (s3, 42400)]):
        store.members_from_store()
        store.add_member(member_id, [f"http://127.0.0.1:{port}"])
    store.update_attributes(s3, "s3", ["http://127.0.0.1:42399"])
    store.update_attributes(s1, "s1", ["http://127.0.0.1:42379"])
    store.update_attributes(s2, "s2", ["http://127.0.0.1:42389"])
    store.set_cluster_version("3.5.0")
    assert store.to_json() == msgsnap_data()


def test_cluster_fixture_membership_history(tmp_path):
    """The 3-member fixture: learner add, publish, promote, update, add and remove; the final
    membership etcd lists after a restart (MANIFEST (c)) and etcd's bookkeeping for it."""
    m1, m2, m3, m4 = 0x98B60FED3613E3F7, 0xEFA4E2C93667074C, 0x25741828780196FC, 0x877C25DC12C9DAE0
    entries = wal_entries(FIXTURES / "etcd-3.5.1" / "cluster" / "m1" / "member", tmp_path)
    store = replay(V2Store.new(), entries)
    members = store.members()
    assert sorted(members) == sorted([m1, m2, m3])
    assert members[m2].peer_urls == ("http://127.0.0.1:32390", "http://127.0.0.1:32391")
    assert members[m2].name == "m2" and members[m2].client_urls == ("http://127.0.0.1:32389",)
    assert not members[m3].is_learner and members[m3].name == "m3"
    assert members[m1].client_urls == ("http://127.0.0.1:32379",)
    assert store.removed_ids() == {m4}
    assert store.cluster_version() == "3.5.0"
    # 5 creates (4 members + the removed mark), 4 sets (3 publishes + version), 2 updates
    # (promote, update), 1 delete; 7 validations: the first finds no /0/members, later ones
    # find /0/members but no /0/removed_members.
    assert store.current_index == 12
    assert {k: v for k, v in store.stats.items() if v} == {
        "getsSuccess": 6, "getsFail": 7, "setsSuccess": 4, "createSuccess": 5,
        "updateSuccess": 2, "deleteSuccess": 1}
    events = store.history.in_order()
    assert [e.action for e in events] == [
        "create", "create", "set", "set", "set", "create", "set", "update", "update", "create",
        "delete", "create"]
    promote = events[7]
    assert promote.node.key == f"/0/members/{m3:x}/raftAttributes"
    assert promote.node.value == '{"peerURLs":["http://127.0.0.1:32400"]}'
    assert promote.prev_node.value == '{"peerURLs":["http://127.0.0.1:32400"],"isLearner":true}'
    assert (promote.node.created_index, promote.node.modified_index) == (6, 8)
    delete = events[10]
    assert (delete.node.key, delete.node.dir, delete.prev_node.dir) == (f"/0/members/{m4:x}", True, True)
    assert store.peek(f"/0/removed_members/{m4:x}").created_index == 12
    # What a snapshot holds reads back to the same store.
    assert V2Store.from_json(store.to_json()).to_json() == store.to_json()


def test_cluster_fixture_restarted_snapshots(tmp_path):
    """The cluster fixture restarted under etcd 3.5.1 (data/make-cluster-restart.sh): with no
    snapshot, Recover reads the empty store (two failed gets), the WAL's 20 entries are applied
    again (a snapshot right after them), then the new term's three publishes replace the
    attributes. Every snapshot byte for byte."""
    entries, snaps = load_recording("cluster-restart.json.gz")
    assert sorted(snaps) == [20, 24, 26]
    assert [e.Data for e in entries[:20]] == [e.Data for e in wal_entries(
        FIXTURES / "etcd-3.5.1" / "cluster" / "m1" / "member", tmp_path)]
    for index, data in snaps.items():
        store = V2Store.new()
        assert store.recover() == (None, {}, set())
        replay(store, entries, upto=index)
        assert store.to_json() == data, index
    restarted = V2Store.from_json(snaps[20])
    assert restarted.stats["getsFail"] == 9 and restarted.stats["getsSuccess"] == 6
