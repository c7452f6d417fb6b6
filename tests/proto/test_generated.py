"""The generated protobuf modules: up to date, importable, identical in shape to etcd's .proto
files, and byte-compatible with files written by etcd 3.5.1 (tests/fixtures/etcd-3.5.1)."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys

import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import DecodeError

from proto import gateway_routes, gen, gogo
from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2, rpc_pb2
from proto.raftpb import raft_pb2
from proto.snappb import snap_pb2
from proto.walpb import record_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "etcd-3.5.1"

MODULES = {
    "proto.etcdserverpb.rpc_pb2": "etcdserverpb",
    "proto.etcdserverpb.raft_internal_pb2": "etcdserverpb",
    "proto.etcdserverpb.etcdserver_pb2": "etcdserverpb",
    "proto.mvccpb.kv_pb2": "mvccpb",
    "proto.authpb.auth_pb2": "authpb",
    "proto.membershippb.membership_pb2": "membershippb",
    "proto.leasepb.lease_pb2": "leasepb",
    "proto.raftpb.raft_pb2": "raftpb",
    "proto.walpb.record_pb2": "walpb",
    "proto.snappb.snap_pb2": "snappb",
    "proto.v3lockpb.v3lock_pb2": "v3lockpb",
    "proto.v3electionpb.v3election_pb2": "v3electionpb",
}


# --- staleness ----------------------------------------------------------------------------------


def _gencode_version(data: bytes) -> bytes | None:
    m = re.search(rb"^# Protobuf Python Version: (\S+)$", data, re.MULTILINE)
    return m.group(1) if m else None


def test_generated_files_are_up_to_date():
    pytest.importorskip("grpc_tools")
    files = gen.generate()
    stale = []
    for rel, data in files.items():
        path = REPO / rel
        if not path.exists() or path.read_bytes() != data:
            stale.append(rel)
    if stale and all(rel.endswith(("_pb2.py", "_pb2.pyi")) for rel in stale):
        committed = _gencode_version((REPO / stale[0]).read_bytes())
        fresh = _gencode_version(files[stale[0]])
        if committed != fresh:
            pytest.skip(f"installed protoc makes {fresh!r} gencode, committed is {committed!r}")
    assert stale == [], "run `python -m proto.gen`"


def test_gen_check_reports_stale_and_leftover_files(tmp_path):
    pytest.importorskip("grpc_tools")
    shutil.copytree(REPO / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "proto" / "mvccpb" / "kv.proto").write_text("// edited\n")
    (tmp_path / "proto" / "mvccpb" / "old_pb2.py").write_text("")

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "proto.gen", "--check"],
            cwd=tmp_path, capture_output=True, text=True, check=False,
        )

    result = check()
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["stale: proto/mvccpb/kv.proto", "stale: proto/mvccpb/old_pb2.py"]

    fixed = subprocess.run([sys.executable, "-m", "proto.gen"], cwd=tmp_path, capture_output=True,
                           text=True, check=False)
    assert fixed.returncode == 0, fixed.stderr
    assert not (tmp_path / "proto" / "mvccpb" / "old_pb2.py").exists()
    assert check().returncode == 0


def test_strip_keeps_other_options_and_collects_routes():
    source = (
        'syntax = "proto2";\n'
        "package p;\n"
        'import "gogoproto/gogo.proto";\n'
        'import "etcd/api/mvccpb/kv.proto";\n'
        "option (gogoproto.marshaler_all) = true;\n"
        "message M {\n"
        "  option (gogoproto.goproto_getters) = false;\n"
        "  optional uint64 a = 1 [(gogoproto.nullable) = false, deprecated = true];\n"
        '  optional uint64 b = 2 [(gogoproto.customname) = "B"];\n'
        "  message N { optional bool c = 1 [(gogoproto.nullable) = false]; }\n"
        "}\n"
        "service S {\n"
        '  rpc Do(M) returns (M) { option (google.api.http) = { post: "/x" body: "*"\n'
        '    additional_bindings { get: "/y" } }; }\n'
        "}\n"
    )
    analysis = gen.analyse(source)
    assert gen.apply_edits(source, analysis.edits) == (
        'syntax = "proto2";\n'
        "package p;\n"
        'import "proto/mvccpb/kv.proto";\n'
        "message M {\n"
        "  optional uint64 a = 1 [deprecated = true];\n"
        "  optional uint64 b = 2;\n"
        "  message N { optional bool c = 1; }\n"
        "}\n"
        "service S {\n"
        "  rpc Do(M) returns (M) {}\n"
        "}\n"
    )
    assert analysis.non_nullable == ["p.M.a", "p.M.N.c"]
    assert [(r.http_path, r.verb, r.grpc_path) for r in analysis.routes] == [
        ("/x", "POST", "/p.S/Do"), ("/y", "GET", "/p.S/Do")]
    with pytest.raises(gen.GenError, match="unknown import"):
        gen.analyse('import "other.proto";\n')


# --- shape --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports_with_etcd_package_name(name):
    module = importlib.import_module(name)
    assert module.DESCRIPTOR.package == MODULES[name]
    assert module.DESCRIPTOR.name == name.replace(".", "/").removesuffix("_pb2") + ".proto"
    for dep in module.DESCRIPTOR.dependencies:
        assert dep.name.startswith("proto/"), dep.name


def test_no_gogoproto_or_google_api_modules_are_generated():
    generated = {p.relative_to(REPO).as_posix() for p in (REPO / "proto").rglob("*_pb2.py")}
    assert len(generated) == len(MODULES)
    assert not any("gogo" in p or "google" in p or "/etcd/" in p for p in generated)
    assert all(m not in sys.modules for m in ("gogoproto", "etcd", "google.api"))


_SCALARS = {
    getattr(_descriptor.FieldDescriptor, f"TYPE_{name.upper()}"): name
    for name in ("double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool",
                 "string", "bytes", "uint32", "sfixed32", "sfixed64", "sint32", "sint64")
}
_FIELD_RE = re.compile(
    r"^\s*(optional\s+|repeated\s+|required\s+)?([A-Za-z_][\w.]*)\s+(\w+)\s*=\s*(\d+)\b", re.MULTILINE)
_ENUM_RE = re.compile(r"\benum\s+(\w+)\s*\{([^}]*)\}")
_ENUM_VALUE_RE = re.compile(r"(\w+)\s*=\s*(-?\d+)")
_RPC_RE = re.compile(r"\brpc\s+(\w+)\s*\(\s*(stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(stream\s+)?([\w.]+)\s*\)")


def _fields_of(desc: _descriptor.Descriptor, syntax: str):
    """(type, name, number, label) of every field, with the label as the .proto file spells it."""
    for field in desc.fields:
        if field.type in _SCALARS:
            type_name = _SCALARS[field.type]
        else:
            type_name = (field.message_type or field.enum_type).name
        if field.is_repeated:
            label = "repeated"
        else:
            label = "optional" if syntax == "proto2" else ""
        yield type_name, field.name, field.number, label
    for nested in desc.nested_types:
        yield from _fields_of(nested, syntax)


def _enums_of(descs):
    for desc in descs:
        yield from ((e.name, tuple((v.name, v.number) for v in e.values)) for e in desc.enum_types)
        yield from _enums_of(desc.nested_types)


@pytest.mark.parametrize("upstream, target", sorted(gen.FILES.items()))
def test_definitions_match_upstream_source(upstream, target):
    """Every field, enum and rpc of etcd's annotated file appears with the same names, numbers,
    types and labels, and the file keeps its proto2/proto3 syntax. Checked against the upstream
    text directly, independently of the generator's parser."""
    text = re.sub(r"//[^\n]*", "", (gen.UPSTREAM_DIR / upstream).read_text())
    syntax = re.search(r'^syntax = "(proto[23])";', text, re.MULTILINE).group(1)
    assert f'\nsyntax = "{syntax}";\n' in (REPO / target).read_text()
    module = importlib.import_module(target.removesuffix(".proto").replace("/", ".") + "_pb2")
    file = module.DESCRIPTOR
    messages = list(file.message_types_by_name.values())

    expected_fields = sorted(
        (type_name.split(".")[-1], name, int(number), label.strip())
        for label, type_name, name, number in _FIELD_RE.findall(text)
        if type_name not in ("option", "rpc")
    )
    assert sorted(f for m in messages for f in _fields_of(m, syntax)) == expected_fields

    expected_enums = sorted(
        (name, tuple((v, int(n)) for v, n in _ENUM_VALUE_RE.findall(body)))
        for name, body in _ENUM_RE.findall(text)
    )
    top_enums = [(e.name, tuple((v.name, v.number) for v in e.values))
                 for e in file.enum_types_by_name.values()]
    assert sorted(top_enums + list(_enums_of(messages))) == expected_enums

    expected_rpcs = sorted(
        (name, bool(in_stream), in_type.split(".")[-1], bool(out_stream), out_type.split(".")[-1])
        for name, in_stream, in_type, out_stream, out_type in _RPC_RE.findall(text)
    )
    rpcs = sorted(
        (m.name, m.client_streaming, m.input_type.name, m.server_streaming, m.output_type.name)
        for service in file.services_by_name.values()
        for m in service.methods
    )
    assert rpcs == expected_rpcs


SERVICES = {
    "etcdserverpb.KV": {"Range": "", "Put": "", "DeleteRange": "", "Txn": "", "Compact": ""},
    "etcdserverpb.Watch": {"Watch": "bidi"},
    "etcdserverpb.Lease": {"LeaseGrant": "", "LeaseRevoke": "", "LeaseKeepAlive": "bidi",
                           "LeaseTimeToLive": "", "LeaseLeases": ""},
    "etcdserverpb.Cluster": {"MemberAdd": "", "MemberRemove": "", "MemberUpdate": "", "MemberList": "",
                             "MemberPromote": ""},
    "etcdserverpb.Maintenance": {"Alarm": "", "Status": "", "Defragment": "", "Hash": "", "HashKV": "",
                                 "Snapshot": "server", "MoveLeader": "", "Downgrade": ""},
    "etcdserverpb.Auth": {name: "" for name in (
        "AuthEnable", "AuthDisable", "AuthStatus", "Authenticate", "UserAdd", "UserGet", "UserList",
        "UserDelete", "UserChangePassword", "UserGrantRole", "UserRevokeRole", "RoleAdd", "RoleGet",
        "RoleList", "RoleDelete", "RoleGrantPermission", "RoleRevokePermission")},
    "v3lockpb.Lock": {"Lock": "", "Unlock": ""},
    "v3electionpb.Election": {"Campaign": "", "Proclaim": "", "Leader": "", "Observe": "server",
                              "Resign": ""},
}


def test_services_and_methods():
    found = {}
    for name in MODULES:
        for service in importlib.import_module(name).DESCRIPTOR.services_by_name.values():
            found[service.full_name] = {
                m.name: {(False, False): "", (True, True): "bidi", (False, True): "server",
                         (True, False): "client"}[(m.client_streaming, m.server_streaming)]
                for m in service.methods
            }
    assert found == SERVICES
    range_method = rpc_pb2.DESCRIPTOR.services_by_name["KV"].methods_by_name["Range"]
    assert range_method.input_type.full_name == "etcdserverpb.RangeRequest"
    assert range_method.output_type.full_name == "etcdserverpb.RangeResponse"


def test_message_full_names():
    assert rpc_pb2.ResponseHeader.DESCRIPTOR.full_name == "etcdserverpb.ResponseHeader"
    assert raft_internal_pb2.InternalRaftRequest.DESCRIPTOR.full_name == "etcdserverpb.InternalRaftRequest"
    assert raft_pb2.Entry.DESCRIPTOR.full_name == "raftpb.Entry"
    assert record_pb2.Record.DESCRIPTOR.full_name == "walpb.Record"
    assert snap_pb2.snapshot.DESCRIPTOR.full_name == "snappb.snapshot"
    kv = rpc_pb2.RangeResponse.DESCRIPTOR.fields_by_name["kvs"].message_type
    assert kv.full_name == "mvccpb.KeyValue"


# --- gateway routes -----------------------------------------------------------------------------


def test_gateway_routes():
    routes = gateway_routes.ROUTES
    assert routes["/v3/kv/range"] == "/etcdserverpb.KV/Range"
    assert routes["/v3/kv/compaction"] == "/etcdserverpb.KV/Compact"
    assert routes["/v3/watch"] == "/etcdserverpb.Watch/Watch"
    assert routes["/v3/lock/lock"] == "/v3lockpb.Lock/Lock"
    assert routes["/v3/election/observe"] == "/v3electionpb.Election/Observe"
    assert routes["/v3/maintenance/transfer-leadership"] == "/etcdserverpb.Maintenance/MoveLeader"
    # additional_bindings
    assert routes["/v3/lease/revoke"] == routes["/v3/kv/lease/revoke"] == "/etcdserverpb.Lease/LeaseRevoke"
    assert routes["/v3/kv/lease/timetolive"] == "/etcdserverpb.Lease/LeaseTimeToLive"
    assert routes["/v3/kv/lease/leases"] == "/etcdserverpb.Lease/LeaseLeases"
    # Hash and HashKV share a path upstream; etcd 3.5.1's gateway serves Hash there.
    assert routes["/v3/maintenance/hash"] == "/etcdserverpb.Maintenance/Hash"
    assert "/etcdserverpb.Maintenance/HashKV" not in routes.values()
    assert len(routes) == 50
    assert set(gateway_routes.HTTP_VERBS) == set(routes)
    assert set(gateway_routes.HTTP_VERBS.values()) == {"POST"}
    # every route names a method that exists
    for path in routes.values():
        service, method = path.removeprefix("/").split("/")
        assert method in SERVICES[service]


# --- bytes written by etcd 3.5.1 ----------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


def wal_records(data: bytes) -> list[bytes]:
    """The serialized walpb.Record of each frame (8-byte LE length, record, zero padding)."""
    records = []
    offset = 0
    while offset + 8 <= len(data):
        (length_field,) = struct.unpack_from("<Q", data, offset)
        if length_field == 0:
            break
        size = length_field & ((1 << 56) - 1)
        pad = (length_field >> 56) & 0x7 if length_field >> 63 else 0
        body = data[offset + 8 : offset + 8 + size]
        assert len(body) == size and (8 + size + pad) % 8 == 0
        records.append(body)
        offset += 8 + size + pad
    assert offset == len(data)  # fixtures are cut at the end of their last record
    return records


def without_forced_fields(msg):
    """A copy of `msg` with the gogo non-nullable fields left unset where they are zero, as a
    message built in Python usually is."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    _clear(copy)
    return copy


def _clear(msg):
    for field, value in msg.ListFields():
        full = f"{msg.DESCRIPTOR.full_name}.{field.name}"
        if field.cpp_type == field.CPPTYPE_MESSAGE:
            for sub in value if field.is_repeated else [value]:
                _clear(sub)
            if not field.is_repeated and full in gogo.NON_NULLABLE and not value.ListFields():
                msg.ClearField(field.name)
        elif full in gogo.NON_NULLABLE and not field.is_repeated and not value:
            msg.ClearField(field.name)


def assert_etcd_bytes(msg_type, data: bytes):
    """Parse, round-trip, and check gogo.marshal rebuilds etcd's bytes from a sparse message."""
    msg = msg_type.FromString(data)
    assert msg.SerializeToString() == data
    sparse = without_forced_fields(msg)
    assert gogo.marshal(sparse) == data
    return msg


def decode_entry_data(data: bytes):
    """Like etcd's applier: InternalRaftRequest, else a v2 Request."""
    try:
        return raft_internal_pb2.InternalRaftRequest.FromString(data)
    except DecodeError:
        return etcdserver_pb2.Request.FromString(data)



WAL_RECORD_TYPES = {
    1: etcdserver_pb2.Metadata,
    2: raft_pb2.Entry,
    3: raft_pb2.HardState,
    5: record_pb2.Snapshot,
}


def read_wal(rel: str):
    """(type, message) of every record of a fixture WAL, checking etcd's bytes and CRC chain."""
    out = []
    crc = 0
    for body in wal_records((FIXTURES / rel).read_bytes()):
        record = assert_etcd_bytes(record_pb2.Record, body)
        if record.type == 4:  # crc record: the chain so far
            assert record.crc == crc
            continue
        crc = crc32c(record.data, crc)
        assert record.crc == crc
        out.append((record.type, assert_etcd_bytes(WAL_RECORD_TYPES[record.type], record.data)))
    return out


def entries(records):
    return [msg for kind, msg in records if kind == 2]


def test_single_member_wal():
    records = read_wal("datadir/member/wal/0000000000000000-0000000000000000.wal")
    kind, metadata = records[0]
    assert kind == 1
    assert (metadata.NodeID, metadata.ClusterID) == (0x4959FA27AA214C35, 0x1E4A5C257EA7C9D4)
    snapshots = [(m.index, m.term, m.HasField("conf_state")) for k, m in records if k == 5]
    assert snapshots == [(0, 0, False)] + [(i, 2, True) for i in (6, 12, 18, 24, 30, 36)]
    first_snapshot = next(m for k, m in records if k == 5 and m.index == 6)
    assert first_snapshot.SerializeToString().hex() == "080610021a0c08b59885d1fac4feac492800"
    last_state = [m for k, m in records if k == 3][-1]
    assert (last_state.term, last_state.vote, last_state.commit) == (2, 0x4959FA27AA214C35, 40)

    by_index = {e.Index: e for e in entries(records)}
    assert sorted(by_index) == list(range(1, 41))
    assert by_index[1].Type == raft_pb2.EntryConfChange and by_index[1].Term == 1
    change = assert_etcd_bytes(raft_pb2.ConfChange, by_index[1].Data)
    assert change.type == raft_pb2.ConfChangeAddNode and change.node_id == 0x4959FA27AA214C35
    assert json.loads(change.context)["name"] == "fx1"
    assert by_index[2].Data == b"" and not by_index[2].HasField("Data")

    requests = {i: decode_entry_data(e.Data) for i, e in by_index.items() if e.Index > 2}
    for i, request in requests.items():
        assert request.SerializeToString() == by_index[i].Data
    v2 = {i for i, r in requests.items() if isinstance(r, etcdserver_pb2.Request)}
    assert v2 == {3, 4}
    assert requests[4].Method == "PUT" and requests[4].Path == "/0/version" and requests[4].Val == "3.5.0"
    assert gogo.marshal(without_forced_fields(requests[3])) == by_index[3].Data
    assert requests[5].put.key == b"foo" and requests[5].put.value == b"bar"
    assert requests[6].lease_grant.TTL == 600 and requests[6].lease_grant.ID == 0x4C35A20C009E9406
    assert requests[7].put.lease == 0x4C35A20C009E9406
    assert requests[11].HasField("txn") and len(requests[11].txn.success) == 2
    assert requests[12].compaction.revision == 4
    assert requests[13].alarm.action == rpc_pb2.AlarmRequest.ACTIVATE
    assert requests[13].alarm.alarm == rpc_pb2.NOSPACE
    assert requests[20].auth_role_grant_permission.perm.key == b"/app/"
    assert requests[26].HasField("auth_user_change_password")
    assert requests[29].header.username == "u1" and requests[29].header.auth_revision == 9


@pytest.mark.parametrize("member, first_vote", [("m1", 0xEFA4E2C93667074C), ("m2", 0xEFA4E2C93667074C),
                                                ("m3", 0)])
def test_cluster_wals(member, first_vote):
    records = read_wal(f"cluster/{member}/member/wal/0000000000000000-0000000000000000.wal")
    by_index = {e.Index: e for e in entries(records)}
    assert sorted(by_index) == list(range(1, 21))
    last_state = [m for k, m in records if k == 3][-1]
    assert (last_state.term, last_state.vote, last_state.commit) == (4, first_vote, 20)
    changes = {i: assert_etcd_bytes(raft_pb2.ConfChange, e.Data)
               for i, e in by_index.items() if e.Type == raft_pb2.EntryConfChange}
    assert sorted(changes) == [1, 2, 11, 13, 15, 16, 17]
    assert changes[11].type == raft_pb2.ConfChangeAddLearnerNode
    assert json.loads(changes[11].context)["isLearner"] is True
    assert json.loads(changes[13].context)["isPromote"] is True
    assert changes[15].type == raft_pb2.ConfChangeUpdateNode
    assert changes[17].type == raft_pb2.ConfChangeRemoveNode and not changes[17].HasField("context")
    requests = {i: decode_entry_data(e.Data) for i, e in by_index.items()
                if e.Type == raft_pb2.EntryNormal and e.Data}
    assert {i for i, r in requests.items() if isinstance(r, etcdserver_pb2.Request)} == {4, 5, 6, 12}
    for i, request in requests.items():
        assert request.SerializeToString() == by_index[i].Data
    assert requests[19].HasField("txn") and requests[20].compaction.revision == 5


@pytest.mark.parametrize("rel, term, index", [
    ("datadir/member/snap/0000000000000002-0000000000000024.snap", 2, 0x24),
    ("restore-1member/member/snap/0000000000000001-0000000000000001.snap", 1, 1),
    ("restore-3member-r1/member/snap/0000000000000001-0000000000000003.snap", 1, 3),
])
def test_snap_files(rel, term, index):
    wrapper = assert_etcd_bytes(snap_pb2.snapshot, (FIXTURES / rel).read_bytes())
    assert wrapper.crc == crc32c(wrapper.data)
    snapshot = assert_etcd_bytes(raft_pb2.Snapshot, wrapper.data)
    assert (snapshot.metadata.term, snapshot.metadata.index) == (term, index)
    assert snapshot.metadata.conf_state.voters
    assert "CurrentIndex" in json.loads(snapshot.data)


@pytest.mark.parametrize("rel", [
    "restore-1member/member/wal/0000000000000000-0000000000000000.wal",
    "restore-3member-r1/member/wal/0000000000000000-0000000000000000.wal",
])
def test_restored_wals(rel):
    records = read_wal(rel)
    assert [k for k, _ in records][:2] == [1, 5]


def test_peer_msgsnap_message():
    frame = (FIXTURES / "peer/msgsnap-message-frame.bin").read_bytes()
    (size,) = struct.unpack_from(">Q", frame)
    assert size == len(frame) - 8 == 0x2331
    message = assert_etcd_bytes(raft_pb2.Message, frame[8:])
    assert message.type == raft_pb2.MsgSnap and message.term == 3
    assert (message.to, getattr(message, "from")) == (0xE2371264998747D, 0x1B110ED7C487821A)
    metadata = message.snapshot.metadata
    assert (metadata.index, metadata.term) == (5310, 3)
    assert sorted(metadata.conf_state.voters) == sorted(
        [0xE2371264998747D, 0x1B110ED7C487821A, 0x256627848CB3F32E])
    assert json.loads(message.snapshot.data)["CurrentIndex"] == 7


# --- gogo encoding of messages built here -------------------------------------------------------


def test_marshal_writes_non_nullable_fields_like_etcd():
    assert gogo.marshal(raft_pb2.Entry(Term=1, Index=1)).hex() == "080010011801"
    assert gogo.marshal(raft_pb2.HardState()).hex() == "080010001800"
    assert gogo.marshal(record_pb2.Record(type=4)).hex() == "08041000"
    # walpb.Snapshot.conf_state is nullable: absent unless set
    assert gogo.marshal(record_pb2.Snapshot()).hex() == "08001000"
    metadata = etcdserver_pb2.Metadata(NodeID=0x4959FA27AA214C35, ClusterID=0x1E4A5C257EA7C9D4)
    assert gogo.marshal(metadata).hex() == "08b59885d1fac4feac4910d4939ff5d78497a51e"
    assert crc32c(bytes.fromhex("08001000"), crc32c(gogo.marshal(metadata))) == 0x7CD068D2
    # Entry.Data is nullable: written when set, even empty
    assert gogo.marshal(raft_pb2.Entry(Data=b"")).hex() == "0800100018002200"
    # a non-nullable message field is written even when empty, with its own forced fields
    message = raft_pb2.Message(type=raft_pb2.MsgHeartbeat, to=2, term=5, commit=3)
    setattr(message, "from", 1)
    data = gogo.marshal(message)
    assert data.hex() == "0808100218012005280030004003" + "4a0a12080a022800100018005000" + "5800"
    assert raft_pb2.Message.FromString(data).SerializeToString() == data


def test_marshal_leaves_proto3_messages_alone():
    put = rpc_pb2.PutRequest(key=b"k")
    assert gogo.marshal(put) == put.SerializeToString() == b"\n\x01k"
    request = raft_internal_pb2.InternalRaftRequest(ID=7, put=put)
    assert gogo.marshal(request) == request.SerializeToString()
