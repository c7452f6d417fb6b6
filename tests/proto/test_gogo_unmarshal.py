"""proto.gogo.unmarshal_error / parse_like_gogo: etcd's decoding rules and error texts.

Every row of CASES was sent to a real etcd 3.5.1 (grpcio, identity serializer, on free
loopback ports) and its status text, after grpc-go's "grpc: error unmarshalling request: ",
was exactly the expected text here (None: etcd decoded the request and went on to answer).
The WatchCreateRequest rows follow the generated code (Watch is a stream; not sent).
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import gogo
from proto.authpb import auth_pb2
from proto.etcdserverpb import rpc_pb2
from proto.v3electionpb import v3election_pb2

EOF_ = "unexpected EOF"
OVERFLOW = "proto: integer overflow"
NEGATIVE = "proto: negative length found during unmarshaling"


def _len(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _nested_txn(depth: int) -> bytes:
    """TxnRequest{success: [RequestOp{request_txn: ...}]} `depth` times over."""
    data = b""
    for _ in range(depth):
        op = b"\x22" + _len(len(data)) + data
        data = b"\x12" + _len(len(op)) + op
    return data


R = rpc_pb2.RangeRequest
CASES = [
    (R, "", None),
    (R, "0a0161", None),
    # truncated
    (R, "ffffff", EOF_),
    (R, "0a056162", EOF_),
    (R, "0a", EOF_),
    (R, "0a016180", EOF_),
    (R, "8080808008", EOF_),
    # tags
    (R, "08", "proto: wrong wireType = 0 for field Key"),
    (R, "0b0c", "proto: wrong wireType = 3 for field Key"),
    (R, "0a01611d00", "proto: wrong wireType = 5 for field Limit"),
    (R, "07", "proto: RangeRequest: illegal tag 0 (wire type 7)"),
    (R, "0c", "proto: RangeRequest: wiretype end group for non-group"),
    (R, "a401", "proto: RangeRequest: wiretype end group for non-group"),
    (R, "ff" * 10 + "01", OVERFLOW),
    (R, "80" * 9 + "01", "proto: RangeRequest: illegal tag 0 (wire type 9223372036854775808)"),
    (R, "808080808001", "proto: RangeRequest: illegal tag 0 (wire type 34359738368)"),
    (R, "8080808040", "proto: RangeRequest: illegal tag -2147483648 (wire type 17179869184)"),
    (R, "808080800800", None),  # field 2**28, unknown, skipped
    (R, "8a8080808001" + "0161", None),  # field 2**32 + 1 is field 1 after int32(): Key
    # lengths
    (R, "0a" + "ff" * 9 + "01", NEGATIVE),
    (R, "0a" + "ff" * 8 + "7f", NEGATIVE),  # offset + length overflows
    (R, "0a" + "80" * 10 + "01", OVERFLOW),
    # values
    (R, "28" + "ff" * 9 + "7f", None),  # bits past 64 are dropped
    (R, "28" + "ff" * 10 + "01", OVERFLOW),
    (R, "3802", None),
    (R, "18" + "ff" * 9 + "01", None),
    # unknown fields (skipRpc)
    (R, "a601", "proto: illegal wireType 6"),
    (R, "a701", "proto: illegal wireType 7"),
    (R, "ab01", EOF_),
    (R, "ab01ab01ac01", EOF_),
    (R, "ab01b401", None),  # a group's end may name another field
    (R, "ab01a401", None),
    (R, "ab010801ac01", None),
    (R, "ab010000ac01", None),  # field 0 inside a group is not checked
    (R, "a10100", EOF_),
    (R, "a101" + "00" * 8, None),
    (R, "a201" + "ff" * 9 + "01", NEGATIVE),
    (R, "a201" + "ff" * 8 + "7f", NEGATIVE),
    # nested messages: their errors come out unchanged
    (rpc_pb2.TxnRequest, "0a010c", "proto: Compare: wiretype end group for non-group"),
    (rpc_pb2.TxnRequest, "12020a00", None),
    (rpc_pb2.TxnRequest, "12030a0108", "proto: wrong wireType = 0 for field Key"),
    (rpc_pb2.TxnRequest, "12030a010a", EOF_),
    (rpc_pb2.TxnRequest, "120222001a022200", None),
    (rpc_pb2.TxnRequest, _nested_txn(150).hex(), None),  # deeper than protobuf Python goes
    (rpc_pb2.AuthUserAddRequest, "0a01ff", None),  # strings are not checked for UTF-8
    (rpc_pb2.AuthUserAddRequest, "0a01", EOF_),
    (rpc_pb2.AuthUserAddRequest, "1a020801", None),
    (rpc_pb2.AuthUserAddRequest, "1a010c", "proto: UserAddOptions: wiretype end group for non-group"),
    (v3election_pb2.ProclaimRequest, "0a0220ff", EOF_),
    (v3election_pb2.ProclaimRequest, "0a010b", "proto: wrong wireType = 3 for field Name"),
    (rpc_pb2.AlarmRequest, "1809", None),
    (rpc_pb2.AlarmRequest, "11", "proto: wrong wireType = 1 for field MemberID"),
    (rpc_pb2.LeaseTimeToLiveRequest, "0a", "proto: wrong wireType = 2 for field ID"),
]

W = rpc_pb2.WatchCreateRequest
WATCH_CASES = [
    (W, "28012802", None),  # filters, one by one
    (W, "2a020001", None),  # filters, packed
    (W, "2a018001", None),  # the last packed element may cross the run's end
    (W, "2a0280", EOF_),
    (W, "2d", "proto: wrong wireType = 5 for field Filters"),
    (W, "30" + "80", EOF_),
    (W, "32", "proto: wrong wireType = 2 for field PrevKv"),
]


@pytest.mark.parametrize(("cls", "hexdata", "expected"), CASES + WATCH_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_unmarshal_error(cls, hexdata, expected):
    assert gogo.unmarshal_error(cls, bytes.fromhex(hexdata)) == expected


@pytest.mark.parametrize(("cls", "hexdata", "expected"), CASES + WATCH_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_parse_like_gogo_accepts_and_refuses_as_etcd(cls, hexdata, expected):
    if expected is None:
        assert isinstance(gogo.parse_like_gogo(cls, bytes.fromhex(hexdata)), cls)
        return
    try:
        python_parse = cls.FromString(bytes.fromhex(hexdata))
    except DecodeError:
        with pytest.raises(DecodeError) as info:
            gogo.parse_like_gogo(cls, bytes.fromhex(hexdata))
        assert str(info.value) == expected
    else:
        # The known gap (a known field number with another wire type, "0b0c"): protobuf
        # Python accepts it as an unknown field, and parse_like_gogo keeps that result.
        assert gogo.parse_like_gogo(cls, bytes.fromhex(hexdata)) == python_parse


def test_go_names_follow_protoc_gen_gogo():
    # Checked against every "wrong wireType ... for field X" of etcd 3.5.1's rpc.pb.go,
    # kv.pb.go, auth.pb.go, v3lock.pb.go and v3election.pb.go (252 fields, all equal).
    assert [gogo.go_name(n) for n in ("range_end", "ID", "TTL", "memberID", "prev_kv", "peerURLs", "permType")] == [
        "RangeEnd", "ID", "TTL", "MemberID", "PrevKv", "PeerURLs", "PermType",
    ]
    assert [gogo.go_name(n) for n in ("_x", "a_1", "a__b", "x_y_z2")] == ["XX", "A_1", "A_B", "XYZ2"]


# ---- what protobuf Python refuses and etcd accepts -------------------------------------------


def test_field_number_wrapping_to_a_known_field():
    assert gogo.parse_like_gogo(R, bytes.fromhex("8a80808080010161")) == R(key=b"a")


def test_invalid_utf8_string_becomes_replacement_character():
    msg = gogo.parse_like_gogo(rpc_pb2.AuthUserAddRequest, b"\x0a\x03a\xffb\x12\x01p")
    assert msg == rpc_pb2.AuthUserAddRequest(name="a\ufffdb", password="p")


def test_group_with_other_end_is_skipped():
    assert gogo.parse_like_gogo(R, bytes.fromhex("0a0161ab01b4011801")) == R(key=b"a", limit=1)


def test_nesting_deeper_than_protobuf_python():
    data = _nested_txn(150)
    with pytest.raises(DecodeError):
        rpc_pb2.TxnRequest.FromString(data)
    msg = gogo.parse_like_gogo(rpc_pb2.TxnRequest, data)
    depth = 0
    while msg.success:
        msg = msg.success[0].request_txn
        depth += 1
    assert depth == 150


def test_oneof_message_is_replaced_plain_message_is_merged():
    # RequestOp.request_range twice: gogo keeps only the second; ProclaimRequest.leader
    # twice: the second merges into the first. Decoded by the walk parse_like_gogo uses
    # after protobuf Python refused the bytes.
    op = rpc_pb2.RequestOp()
    gogo._walk(gogo._decoder(op.DESCRIPTOR), bytes.fromhex("0a021801" + "0a022002"), op)
    assert op == rpc_pb2.RequestOp(request_range=R(revision=2))
    p = v3election_pb2.ProclaimRequest()
    gogo._walk(gogo._decoder(p.DESCRIPTOR), bytes.fromhex("0a030a0101" + "0a021803"), p)
    assert p.leader == v3election_pb2.LeaderKey(name=b"\x01", rev=3)


# ---- random inputs ---------------------------------------------------------------------------

KNOWN_RANGE_FIELDS = frozenset(range(1, 14))


def _tag(number: int, wire_type: int) -> bytes:
    return _len(number << 3 | wire_type)


@st.composite
def _field(draw, depth: int = 0):
    number = draw(st.sampled_from([1, 2, 3, 5, 7, 9, 13, 14, 20, 300]))
    wire_type = draw(st.integers(0, 7))
    if wire_type == 0:
        return _tag(number, 0) + _len(draw(st.integers(0, 2**64 - 1)))
    if wire_type == 1:
        return _tag(number, 1) + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 2:
        payload = draw(st.binary(max_size=6))
        return _tag(number, 2) + _len(len(payload)) + payload
    if wire_type == 3 and depth < 2:
        inner = b"".join(draw(st.lists(_field(depth + 1), max_size=2)))
        return _tag(number, 3) + inner + _tag(number, 4)
    if wire_type == 5:
        return _tag(number, 5) + draw(st.binary(min_size=4, max_size=4))
    return _tag(number, wire_type)  # 3 too deep, 4 stray, 6 and 7 illegal


@st.composite
def _range_bytes(draw):
    data = b"".join(draw(st.lists(_field(), max_size=5)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _known_field_kept_unknown(msg) -> bool:
    from google.protobuf.unknown_fields import UnknownFieldSet

    return any(f.field_number in KNOWN_RANGE_FIELDS for f in UnknownFieldSet(msg))


@settings(max_examples=400, derandomize=True)
@given(_range_bytes())
def test_accepts_what_protobuf_accepts_minus_misplaced_known_fields(data):
    """Reference: protobuf Python's parser. On RangeRequest (no strings, no nested messages)
    built from well-formed groups and small field numbers, etcd accepts exactly the bytes
    protobuf Python accepts without turning a known field into an unknown one (protobuf
    Python files a known number with another wire type as unknown; gogo refuses it). When
    both accept, the values agree."""
    try:
        reference = R.FromString(data)
    except DecodeError:
        reference = None
    accepted = reference is not None and not _known_field_kept_unknown(reference)
    assert (gogo.unmarshal_error(R, data) is None) == accepted, data.hex()
    if accepted:
        built = R()
        gogo._walk(gogo._decoder(R.DESCRIPTOR), data, built)
        reference.DiscardUnknownFields()
        assert built == reference, data.hex()
