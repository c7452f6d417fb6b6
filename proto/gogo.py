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
"""

from __future__ import annotations

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

from proto.gogo_fields import NON_NULLABLE

__all__ = ["NON_NULLABLE", "materialize", "marshal"]

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
