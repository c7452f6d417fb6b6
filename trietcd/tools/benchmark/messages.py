"""The etcd API messages the benchmark sends and reads, in protobuf wire format.

Written by hand on purpose: the tool must not share the server's encoder, so a
mistake in the project's generated code or `.proto` copies cannot hide by
agreeing with itself (tests compare these bytes with protobuf's own). Only
the fields the benchmark needs are encoded; `fields()` reads any message
into {field number: [values]} (varints as int, length-delimited as bytes).
"""

from __future__ import annotations

__all__ = [
    "varint",
    "benchmark_key",
    "put_request",
    "range_request",
    "txn_request",
    "request_op_put",
    "request_op_range",
    "compaction_request",
    "lease_grant_request",
    "lease_keepalive_request",
    "watch_create_request",
    "authenticate_request",
    "fields",
    "first",
    "header_revision",
    "DecodeError",
]


class DecodeError(ValueError):
    """A response is not valid protobuf wire format."""


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value if value else b""


def _int_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""


def _bool_field(number: int, value: bool) -> bytes:
    return bytes([number << 3, 1]) if value else b""


def benchmark_key(index: int, key_size: int) -> bytes:
    """etcd benchmark's key: Go's binary.PutVarint (zig-zag) of the index, zero-padded."""
    encoded = varint((index << 1) ^ (index >> 63))
    return (encoded + bytes(key_size))[:key_size] if key_size else b""


def put_request(key: bytes, value: bytes, lease: int = 0) -> bytes:
    """etcdserverpb.PutRequest{key=1, value=2, lease=3}."""
    return _bytes_field(1, key) + _bytes_field(2, value) + _int_field(3, lease)


def range_request(
    key: bytes, range_end: bytes = b"", *, limit: int = 0, serializable: bool = False,
    count_only: bool = False,
) -> bytes:
    """etcdserverpb.RangeRequest{key=1, range_end=2, limit=3, serializable=7, count_only=9}."""
    return (
        _bytes_field(1, key) + _bytes_field(2, range_end) + _int_field(3, limit)
        + _bool_field(7, serializable) + _bool_field(9, count_only)
    )


def request_op_range(range_request_bytes: bytes) -> bytes:
    """etcdserverpb.RequestOp{request_range=1}."""
    return varint(1 << 3 | 2) + varint(len(range_request_bytes)) + range_request_bytes


def request_op_put(put_request_bytes: bytes) -> bytes:
    """etcdserverpb.RequestOp{request_put=2}."""
    return varint(2 << 3 | 2) + varint(len(put_request_bytes)) + put_request_bytes


def txn_request(success_ops: list[bytes]) -> bytes:
    """etcdserverpb.TxnRequest{success=2 (repeated RequestOp)}, no compare, no failure ops."""
    return b"".join(varint(2 << 3 | 2) + varint(len(op)) + op for op in success_ops)


def compaction_request(revision: int, physical: bool = False) -> bytes:
    """etcdserverpb.CompactionRequest{revision=1, physical=2}."""
    return _int_field(1, revision) + _bool_field(2, physical)


def lease_grant_request(ttl_s: int, lease_id: int = 0) -> bytes:
    """etcdserverpb.LeaseGrantRequest{TTL=1, ID=2}."""
    return _int_field(1, ttl_s) + _int_field(2, lease_id)


def lease_keepalive_request(lease_id: int) -> bytes:
    """etcdserverpb.LeaseKeepAliveRequest{ID=1}."""
    return _int_field(1, lease_id)


def watch_create_request(key: bytes, range_end: bytes = b"", start_revision: int = 0) -> bytes:
    """etcdserverpb.WatchRequest{create_request=1: WatchCreateRequest{key=1, range_end=2, start_revision=3}}."""
    create = _bytes_field(1, key) + _bytes_field(2, range_end) + _int_field(3, start_revision)
    return varint(1 << 3 | 2) + varint(len(create)) + create


def authenticate_request(name: str, password: str) -> bytes:
    """etcdserverpb.AuthenticateRequest{name=1, password=2}."""
    return _bytes_field(1, name.encode()) + _bytes_field(2, password.encode())


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes) -> dict[int, list]:
    """Every field of one message: varints as int, length-delimited as bytes."""
    out: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise DecodeError("length-delimited field runs past the message")
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire_type == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire_type == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        if pos > len(buf):
            raise DecodeError("fixed-size field runs past the message")
        out.setdefault(number, []).append(value)
    return out


def first(message: dict[int, list], number: int, default=0):
    values = message.get(number)
    return values[-1] if values else default  # protobuf: the last one wins


def header_revision(response: bytes) -> int:
    """ResponseHeader.revision (field 3) of any response whose header is field 1."""
    header = first(fields(response), 1, b"")
    return first(fields(header), 3)
