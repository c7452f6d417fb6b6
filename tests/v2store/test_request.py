"""Raw v2 Request entries: the bytes etcd writes, and telling them apart from v3 entries."""

from __future__ import annotations

import pytest

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2
from tests.v2store.replay import FIXTURES, wal_entries
from trietcd.v2store import (
    cluster_version_request,
    decode_v2_request,
    encode_v2_request,
    is_v2_request,
    publish_request,
)

WAL_MEMBERS = sorted(p.parent for p in FIXTURES.glob("etcd-*/**/member/wal"))

# raft-log-and-apply.md §4: fixture entries 3 and 4 (etcd 3.4.23), byte for byte.
ENTRY_3 = bytes.fromhex(
    "0882fa919fbec1e89a4c"
    "1203505554"
    "1a262f302f6d656d626572732f343935396661323761613231346333352f61747472696275746573"
    "22367b226e616d65223a22667831222c22636c69656e7455524c73223a5b22687474703a2f2f3132372e302e302e"
    "313a3232333739225d7d"
    "2800320038004800500058006000680070007800800100")
ENTRY_4 = bytes.fromhex(
    "0884fa919fbec1e89a4c12035055541a0a2f302f76657273696f6e2205332e342e30"
    "2800320038004800500058006000680070007800800100")


def entries_by_index(member: str, tmp_path):
    return {e.Index: e for e in wal_entries(FIXTURES / member, tmp_path)}


def test_spec_bytes_are_the_fixture_entries(tmp_path):
    entries = entries_by_index("etcd-3.4.23/datadir/member", tmp_path)
    assert entries[3].Data == ENTRY_3
    assert entries[4].Data == ENTRY_4


@pytest.mark.parametrize("member, version", [
    ("etcd-3.4.23/datadir/member", "3.4.0"), ("etcd-3.5.1/datadir/member", "3.5.0")])
def test_publish_and_version_requests_match_etcd(member, version, tmp_path):
    entries = entries_by_index(member, tmp_path)
    publish, set_version = entries[3].Data, entries[4].Data
    assert publish_request(decode_v2_request(publish).ID, 0x4959FA27AA214C35, "fx1",
                           ["http://127.0.0.1:22379"]) == publish
    assert cluster_version_request(decode_v2_request(set_version).ID, version) == set_version


def test_cluster_publishes_match_etcd(tmp_path):
    entries = entries_by_index("etcd-3.5.1/cluster/m1/member", tmp_path)
    for index, member_id, name, port in [(4, 0xEFA4E2C93667074C, "m2", 32389),
                                          (5, 0x98B60FED3613E3F7, "m1", 32379),
                                          (12, 0x25741828780196FC, "m3", 32399)]:
        data = entries[index].Data
        assert publish_request(decode_v2_request(data).ID, member_id, name,
                               [f"http://127.0.0.1:{port}"]) == data
    assert cluster_version_request(decode_v2_request(entries[6].Data).ID) == entries[6].Data


def test_encode_writes_every_non_nullable_field():
    data = encode_v2_request(7, "SYNC", "", time_ns=1_700_000_000_123_456_789)
    req = etcdserver_pb2.Request.FromString(data)
    assert (req.ID, req.Method, req.Time) == (7, "SYNC", 1_700_000_000_123_456_789)
    assert not req.HasField("PrevExist") and not req.HasField("Refresh")
    assert data.endswith(b"\x80\x01\x00")  # Stream = false, written all the same
    assert b"\x50\x00" in data  # Wait = false
    with_options = encode_v2_request(8, "PUT", "/1/k", "v", prev_exist=False, refresh=True)
    req = etcdserver_pb2.Request.FromString(with_options)
    assert req.HasField("PrevExist") and not req.PrevExist and req.Refresh
    assert bytes.fromhex("4000") in with_options  # PrevExist written when set, even false


@pytest.mark.parametrize("member", WAL_MEMBERS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_is_v2_request_on_every_fixture_entry(member, tmp_path):
    """Exactly the publish and cluster-version entries are v2, and the rule agrees with etcd's
    own decision (InternalRaftRequest refused by the gogo decoder) on every entry."""
    for entry in wal_entries(member, tmp_path):
        if entry.Type != 0 or not entry.Data:
            assert not (entry.Type == 0 and is_v2_request(entry.Data))
            continue
        v2 = is_v2_request(entry.Data)
        etcd_says_v2 = gogo.unmarshal_error(raft_internal_pb2.InternalRaftRequest, entry.Data) is not None
        assert v2 == etcd_says_v2, entry.Index
        if v2:
            req = decode_v2_request(entry.Data)
            assert req.Method == "PUT"
            assert req.Path == "/0/version" or req.Path.endswith("/attributes")


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "QGET", "SYNC", "GET", "HEAD"])
def test_every_method_is_v2_and_refused_by_gogo_as_v3(method):
    data = encode_v2_request(1, method, "/1/x", "v")
    assert is_v2_request(data)
    if method != "GET" and method != "HEAD":  # the methods etcd writes
        assert gogo.unmarshal_error(raft_internal_pb2.InternalRaftRequest, data) is not None


def test_v3_requests_and_garbage_are_not_v2():
    put = raft_internal_pb2.InternalRaftRequest()
    put.header.ID = 5
    put.put.key = b"PUT"
    assert not is_v2_request(gogo.marshal(put))
    wrapped = raft_internal_pb2.InternalRaftRequest(ID=3)
    wrapped.v2.Method = "PUT"  # the v2 field: an embedded Request, not a method string
    assert not is_v2_request(wrapped.SerializeToString())
    assert not is_v2_request(b"")
    assert not is_v2_request(ENTRY_4[:-1])  # truncated in the last field
    assert not is_v2_request(b"\x12\x03PUT")  # no ID
    assert not is_v2_request(b"\x0a\x01x\x12\x03PUT")  # field 1 not a varint
    assert not is_v2_request(b"\x08\x01\x12\x03GOT")
