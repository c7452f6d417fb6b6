"""Encode messages byte-for-byte like etcd's gogoproto marshalers.

etcd's Go code is generated with gogoproto, and fields marked `(gogoproto.nullable) = false` are
plain values there, not pointers: the marshaler writes them every time, zero or not. protobuf
Python writes a proto2 `optional` field only when it has been set, and a singular message field
only when present. So a raftpb.Entry built here as `Entry(Index=1, Term=1)` would miss the
`Type` field etcd writes (`08 00`), and the WAL or peer bytes would differ.

`materialize(msg)` marks every non-nullable field of `msg` (recursively) as present, keeping its
value, so that `msg.SerializeToString()` then equals what etcd writes. `marshal(msg)` does both.
Nullable fields (for example raftpb.Entry.Data, walpb.Snapshot.conf_state) are left alone: etcd
writes them only when non-nil, which is what presence means here.

Messages parsed from etcd's bytes already carry that presence, so they round-trip unchanged.

Decoding, the other way: etcd's generated `Unmarshal` methods accept and refuse bytes by their
own rules, and grpc-go puts their error text in the status etcd answers. `unmarshal_error(cls,
data)` walks `data` by those rules and returns the text etcd would report (None when etcd
accepts the bytes); `parse_like_gogo(cls, data)` returns the message etcd would have decoded,
also where protobuf Python refuses bytes that etcd takes (see its docstring for what differs).
"""

from __future__ import annotations

import attrs
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.message import DecodeError

from proto.gogo_fields import NON_NULLABLE

__all__ = ["NON_NULLABLE", "go_name", "materialize", "marshal", "parse_like_gogo", "unmarshal_error"]

_CPPTYPE_MESSAGE = _descriptor.FieldDescriptor.CPPTYPE_MESSAGE

# Per message type: (fields to mark present, singular message fields to recurse into,
# repeated message fields to recurse into). Built on first use; keyed by full name.
_Plan = tuple[tuple[str, ...], tuple[tuple[str, bool], ...], tuple[str, ...]]
_plans: dict[str, _Plan] = {}


def _plan(desc: _descriptor.Descriptor) -> _Plan:
    plan = _plans.get(desc.full_name)
    if plan is not None:
        return plan
    scalars: list[str] = []
    singular: list[tuple[str, bool]] = []  # (name, non_nullable)
    repeated: list[str] = []
    for field in desc.fields:
        non_nullable = f"{desc.full_name}.{field.name}" in NON_NULLABLE
        is_message = field.cpp_type == _CPPTYPE_MESSAGE
        if field.is_repeated:
            if is_message and not field.message_type.GetOptions().map_entry:
                repeated.append(field.name)
        elif is_message:
            singular.append((field.name, non_nullable))
        elif non_nullable and field.has_presence:
            scalars.append(field.name)
    plan = (tuple(scalars), tuple(singular), tuple(repeated))
    _plans[desc.full_name] = plan
    return plan


def materialize(msg: _message.Message) -> _message.Message:
    """Mark every non-nullable field in `msg` and its submessages present; returns `msg`."""
    scalars, singular, repeated = _plan(msg.DESCRIPTOR)
    for name in scalars:
        if not msg.HasField(name):
            setattr(msg, name, getattr(msg, name))
    for name, non_nullable in singular:
        if non_nullable:
            sub = getattr(msg, name)
            sub.SetInParent()
            materialize(sub)
        elif msg.HasField(name):
            materialize(getattr(msg, name))
    for name in repeated:
        for sub in getattr(msg, name):
            materialize(sub)
    return msg


def marshal(msg: _message.Message) -> bytes:
    """The bytes etcd would write for `msg` (marks non-nullable fields present in place)."""
    return materialize(msg).SerializeToString()


# ---- Unmarshal -------------------------------------------------------------------------------
#
# Rules of the generated code (etcd v3.5.1, gogoproto 1.3), reproduced here:
# - A varint is read into a 64-bit integer, at most 10 bytes; an 11th byte with the
#   continuation bit set is "proto: integer overflow". Bits past 64 are lost.
# - A tag's field number is int32(tag >> 3); wire type 4 is refused first, then numbers <= 0
#   (the text shows the whole tag as "wire type"). A known number with the wrong wire type is
#   refused; repeated scalars take both wire type 0 and a packed run (wire type 2).
# - Lengths are signed 64-bit: negative (or overflowing the offset) is "negative length",
#   past the end is "unexpected EOF". Strings are not checked for UTF-8.
# - A nested message is decoded from its slice alone, and its error is returned as is.
# - An unknown field is skipped by skip<File>(), which nests groups (start/end may pair any
#   field numbers) and refuses wire types 6 and 7.
# - A packed run's elements are read with the message's end as bound, not the run's: a last
#   element that crosses the run's end is read whole and decoding goes on after it.

_MASK64 = (1 << 64) - 1
_INT_OVERFLOW = "proto: integer overflow"
_NEGATIVE_LENGTH = "proto: negative length found during unmarshaling"
_UNEXPECTED_EOF = "unexpected EOF"
_END_OF_GROUP = "proto: unexpected end of group"

_FD = _descriptor.FieldDescriptor
_VARINT_TYPES = frozenset(
    (_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_INT32, _FD.TYPE_UINT32, _FD.TYPE_BOOL, _FD.TYPE_ENUM)
)
_LENGTH_TYPES = frozenset((_FD.TYPE_BYTES, _FD.TYPE_STRING, _FD.TYPE_MESSAGE))


class _Refused(Exception):
    """etcd's Unmarshal returns this text."""


def _int64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def go_name(field_name: str) -> str:
    """The Go field name protoc-gen-gogo gives a .proto field (its CamelCase rule)."""
    out = []
    i = 0
    if field_name.startswith("_"):
        out.append("X")
        i = 1
    n = len(field_name)
    while i < n:
        c = field_name[i]
        if c == "_" and i + 1 < n and field_name[i + 1].islower():
            i += 1
            continue
        if c.isdigit():
            out.append(c)
            i += 1
            continue
        out.append(c.upper() if "a" <= c <= "z" else c)
        i += 1
        while i < n and "a" <= field_name[i] <= "z":
            out.append(field_name[i])
            i += 1
    return "".join(out)


def _go_type_name(desc: _descriptor.Descriptor) -> str:
    names = []
    while desc is not None:
        names.append(desc.name)
        desc = desc.containing_type
    return "_".join(reversed(names))


@attrs.frozen
class _Field:
    name: str  # Python attribute
    go_name: str
    type: int
    repeated: bool
    in_oneof: bool
    message: "_Decoder | None"


@attrs.define
class _Decoder:
    go_type_name: str = ""
    fields: dict[int, _Field] = attrs.Factory(dict)


_decoders: dict[str, _Decoder] = {}


def _decoder(desc: _descriptor.Descriptor) -> _Decoder:
    dec = _decoders.get(desc.full_name)
    if dec is not None:
        return dec
    dec = _Decoder(_go_type_name(desc))
    _decoders[desc.full_name] = dec  # before the fields: messages may contain themselves
    for f in desc.fields:
        if f.type not in _VARINT_TYPES and f.type not in _LENGTH_TYPES:
            raise TypeError(f"{desc.full_name}.{f.name}: field type {f.type} is not used by etcd's messages")
        if f.type == _FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            raise TypeError(f"{desc.full_name}.{f.name}: map fields are not used by etcd's requests")
        sub = _decoder(f.message_type) if f.type == _FD.TYPE_MESSAGE else None
        dec.fields[f.number] = _Field(
            f.name, go_name(f.name), f.type, f.is_repeated, f.containing_oneof is not None, sub
        )
    return dec


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if shift >= 64:
            raise _Refused(_INT_OVERFLOW)
        if i >= end:
            raise _Refused(_UNEXPECTED_EOF)
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _MASK64, i
        shift += 7


def _span(data: bytes, i: int, end: int) -> tuple[int, int]:
    """A length-prefixed run: (start, end) of its bytes."""
    length, i = _varint(data, i, end)
    length = _int64(length)
    if length < 0 or i + length >= 1 << 63:
        raise _Refused(_NEGATIVE_LENGTH)
    if i + length > end:
        raise _Refused(_UNEXPECTED_EOF)
    return i, i + length


def _skip(data: bytes, start: int, end: int) -> int:
    """skip<File>(data[start:end]): the length of the unknown field at `start`."""
    i = start
    depth = 0
    while i < end:
        tag, i = _varint(data, i, end)
        wire_type = tag & 7
        if wire_type == 0:
            _, i = _varint(data, i, end)
        elif wire_type == 1:
            i += 8
        elif wire_type == 2:
            length, i = _varint(data, i, end)
            length = _int64(length)
            if length < 0:
                raise _Refused(_NEGATIVE_LENGTH)
            i += length
        elif wire_type == 3:
            depth += 1
        elif wire_type == 4:
            if depth == 0:
                raise _Refused(_END_OF_GROUP)
            depth -= 1
        elif wire_type == 5:
            i += 4
        else:
            raise _Refused(f"proto: illegal wireType {wire_type}")
        if i - start >= 1 << 63:
            raise _Refused(_NEGATIVE_LENGTH)
        if depth == 0:
            return i - start
    raise _Refused(_UNEXPECTED_EOF)


def _scalar(field: _Field, v: int):
    t = field.type
    if t == _FD.TYPE_BOOL:
        return v != 0
    if t == _FD.TYPE_INT64:
        return _int64(v)
    if t == _FD.TYPE_UINT32:
        return v & 0xFFFFFFFF
    if t == _FD.TYPE_UINT64:
        return v
    return _int32(v)  # int32, enum


def _walk(dec: _Decoder, data: bytes, msg: _message.Message | None) -> None:
    """Decodes `data` as etcd does, into `msg` when given; raises _Refused with etcd's text.

    Iterative, so that nesting as deep as etcd accepts needs no Python recursion. Each frame
    is (decoder, end of its bytes, message being filled or None).
    """
    stack = [(dec, len(data), msg)]
    i = 0
    while stack:
        dec, end, msg = stack[-1]
        if i >= end:
            stack.pop()  # i == end: a nested message ends where its length said
            continue
        start = i
        tag, i = _varint(data, i, end)
        number = _int32(tag >> 3)
        wire_type = tag & 7
        if wire_type == 4:
            raise _Refused(f"proto: {dec.go_type_name}: wiretype end group for non-group")
        if number <= 0:
            raise _Refused(f"proto: {dec.go_type_name}: illegal tag {number} (wire type {tag})")
        field = dec.fields.get(number)
        if field is None:
            n = _skip(data, start, end)
            if start + n >= 1 << 63:
                raise _Refused(_NEGATIVE_LENGTH)
            if start + n > end:
                raise _Refused(_UNEXPECTED_EOF)
            i = start + n
            continue
        if field.type in _LENGTH_TYPES:
            if wire_type != 2:
                raise _Refused(f"proto: wrong wireType = {wire_type} for field {field.go_name}")
            lo, hi = _span(data, i, end)
            i = hi
            if field.message is not None:
                sub = None if msg is None else _submessage(msg, field)
                stack.append((field.message, hi, sub))
                i = lo
            elif msg is not None:
                _set(msg, field, _text(field, data[lo:hi]))
        elif wire_type == 0:
            v, i = _varint(data, i, end)
            if msg is not None:
                _set(msg, field, _scalar(field, v))
        elif wire_type == 2 and field.repeated:
            lo, hi = _span(data, i, end)
            i = lo
            while i < hi:
                v, i = _varint(data, i, end)
                if msg is not None:
                    _set(msg, field, _scalar(field, v))
        else:
            raise _Refused(f"proto: wrong wireType = {wire_type} for field {field.go_name}")


def _text(field: _Field, raw: bytes):
    if field.type != _FD.TYPE_STRING:
        return raw
    # Go keeps any bytes in a string; a Python str cannot hold invalid UTF-8.
    return raw.decode("utf-8", errors="replace")


def _set(msg: _message.Message, field: _Field, value) -> None:
    if field.repeated:
        getattr(msg, field.name).append(value)
    else:
        setattr(msg, field.name, value)


def _submessage(msg: _message.Message, field: _Field) -> _message.Message:
    if field.repeated:
        return getattr(msg, field.name).add()
    if field.in_oneof:
        # gogo replaces a oneof's message; a plain message field is merged into.
        msg.ClearField(field.name)
    sub = getattr(msg, field.name)
    sub.SetInParent()
    return sub


def unmarshal_error(message_class, data: bytes) -> str | None:
    """The error etcd's generated Unmarshal returns for `data`, or None if it accepts it."""
    try:
        _walk(_decoder(message_class.DESCRIPTOR), data, None)
    except _Refused as exc:
        return str(exc)
    return None


def parse_like_gogo(message_class, data: bytes) -> _message.Message:
    """`data` decoded as etcd decodes it; raises DecodeError with etcd's text when it refuses.

    protobuf Python parses first. Where it refuses bytes etcd accepts (a string that is not
    UTF-8, a group whose end tag names another field, a field number past 2**29 - 1, nesting
    deeper than protobuf's limit), the message is built by walking the bytes as etcd does. That
    message differs from etcd's in two ways: invalid UTF-8 in a string becomes U+FFFD, and
    unknown fields are dropped (etcd keeps them in XXX_unrecognized).

    Bytes protobuf Python accepts are taken as it decodes them, even where etcd refuses them
    (a known field number with another wire type is an unknown field to protobuf Python);
    `unmarshal_error` tells those apart, at the cost of a second pass in Python.
    """
    try:
        return message_class.FromString(data)
    except DecodeError:
        pass
    msg = message_class()
    try:
        _walk(_decoder(message_class.DESCRIPTOR), data, msg)
    except _Refused as exc:
        raise DecodeError(str(exc)) from None
    return msg
