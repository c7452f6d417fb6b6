"""How etcd's membership code lays members out in the v2 store's cluster namespace `/0`
(etcd server/etcdserver/api/membership/store.go, member.go):

    /0/members/<id hex>/raftAttributes   {"peerURLs":[...]} (+ "isLearner":true)
    /0/members/<id hex>/attributes       {"name":...,"clientURLs":[...]} (each omitted if empty)
    /0/removed_members/<id hex>          ""
    /0/version                           "3.5.0"

Member IDs print as lowercase hex without padding (etcd's types.ID). The JSON values are Go's
`json.Marshal` of etcd's structs; reading them follows `json.Unmarshal` (field names matched
case-insensitively, unknown fields ignored).
"""

from __future__ import annotations

import json
import re

import attrs

from .gojson import go_string, go_string_list
from .node import CorruptError

__all__ = [
    "CLUSTER_PREFIX",
    "KEYS_PREFIX",
    "MEMBERS_PREFIX",
    "REMOVED_MEMBERS_PREFIX",
    "VERSION_KEY",
    "MemberRecord",
    "UnknownMemberError",
    "attributes_json",
    "member_from_values",
    "member_key",
    "normalize_version",
    "parse_attributes",
    "raft_attributes_json",
]

CLUSTER_PREFIX = "/0"          # etcd's StoreClusterPrefix
KEYS_PREFIX = "/1"             # etcd's StoreKeysPrefix (the v2 API's keys)
MEMBERS_PREFIX = "/0/members"
REMOVED_MEMBERS_PREFIX = "/0/removed_members"
VERSION_KEY = "/0/version"


class UnknownMemberError(Exception):
    """An attributes update for a member the store never had (etcd panics: the log and the
    store disagree)."""


@attrs.frozen
class MemberRecord:
    id: int
    peer_urls: tuple[str, ...]
    is_learner: bool = False
    name: str = ""
    client_urls: tuple[str, ...] = ()


def member_key(member_id: int) -> str:
    """`/0/members/<id hex>`."""
    return f"{MEMBERS_PREFIX}/{member_id:x}"


def raft_attributes_json(peer_urls, is_learner: bool = False) -> str:
    """etcd's RaftAttributes as Go JSON: `peerURLs` (null when None), `isLearner` only if true."""
    text = '{"peerURLs":' + go_string_list(None if peer_urls is None else list(peer_urls))
    return text + (',"isLearner":true}' if is_learner else "}")


def attributes_json(name: str, client_urls) -> str:
    """etcd's Attributes as Go JSON: `name` and `clientURLs`, each only when not empty."""
    fields = []
    if name:
        fields.append('"name":' + go_string(name))
    if client_urls:
        fields.append('"clientURLs":' + go_string_list(list(client_urls)))
    return "{" + ",".join(fields) + "}"


def parse_attributes(text: str) -> tuple[str, tuple[str, ...]]:
    """(name, client URLs) from an attributes JSON value (a publish request's `Val`)."""
    obj = _json_object(text, "attributes")
    return _go_field(obj, "name", str) or "", tuple(_go_field(obj, "clientURLs", list) or ())


def member_from_values(member_id: int, raft_attributes: str | None,
                       attributes: str | None) -> MemberRecord:
    """A member from its two v2 values (etcd's nodeToMember); `attributes` may be missing."""
    if raft_attributes is None:
        raise CorruptError(f"member {member_id:x}: raftAttributes key doesn't exist")
    raft = _json_object(raft_attributes, "raftAttributes")
    name, client_urls = parse_attributes(attributes) if attributes is not None else ("", ())
    return MemberRecord(
        id=member_id,
        peer_urls=tuple(_go_field(raft, "peerURLs", list) or ()),
        is_learner=bool(_go_field(raft, "isLearner", bool)),
        name=name,
        client_urls=client_urls,
    )


_SEMVER_PART = re.compile(r"[+-]?[0-9]+")


def normalize_version(text: str) -> str:
    """go-semver's `NewVersion(text).String()`: `major.minor.patch[-pre][+meta]`; ValueError
    where go-semver refuses the text (etcd panics on such a cluster version entry)."""
    version, plus, metadata = text.partition("+")
    version, dash, pre = version.partition("-")
    parts = version.split(".", 2)
    if len(parts) != 3 or not all(_SEMVER_PART.fullmatch(p) for p in parts):
        raise ValueError(f"{text} is not in dotted-tri format")
    out = ".".join(str(int(p)) for p in parts)
    if dash and pre:
        out += "-" + pre
    if plus and metadata:
        out += "+" + metadata
    return out


def _json_object(text: str, what: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise CorruptError(f"unmarshal {what} error: {e}") from None
    if not isinstance(obj, dict):
        raise CorruptError(f"unmarshal {what} error: not an object")
    return obj


def _go_field(obj: dict, name: str, kind: type):
    """A field as Go's json.Unmarshal finds it: keys matched case-insensitively, the last one
    wins; null is the zero value (None here)."""
    value = None
    for key, v in obj.items():
        if key.lower() == name.lower():
            value = v
    if value is None:
        return None
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok or (kind is list and not all(isinstance(u, str) for u in value)):
        raise CorruptError(f"json: cannot unmarshal {name}")
    return value
