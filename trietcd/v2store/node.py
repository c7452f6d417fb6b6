"""The v2 store's values: tree nodes, their external form, events, the event history, errors.

Shapes and JSON names follow etcd's `server/etcdserver/api/v2store` (node.go, node_extern.go,
event.go, event_history.go, event_queue.go, v2error): a `.snap` file carries them as Go JSON
(wal-and-snap.md §7.3), so each type here writes itself exactly like `encoding/json` and reads
back what etcd wrote.
"""

from __future__ import annotations

import attrs

from .gojson import (
    ZERO_TIME_TEXT,
    ZERO_TIME_UNIX_NS,
    GoTime,
    format_time,
    go_string,
    parse_time,
)

__all__ = [
    "DIR_NOT_EMPTY",
    "EVENT_INDEX_CLEARED",
    "KEY_NOT_FOUND",
    "NODE_EXIST",
    "NOT_DIR",
    "NOT_FILE",
    "ROOT_RONLY",
    "TEST_FAILED",
    "CorruptError",
    "Event",
    "EventHistory",
    "Node",
    "NodeExtern",
    "V2Error",
    "ttl_seconds",
]

_NS_PER_S = 1_000_000_000

# v2error codes and texts (etcd server/etcdserver/api/v2error/error.go).
KEY_NOT_FOUND = 100
TEST_FAILED = 101
NOT_FILE = 102
NOT_DIR = 104
NODE_EXIST = 105
ROOT_RONLY = 107
DIR_NOT_EMPTY = 108
EVENT_INDEX_CLEARED = 401

_MESSAGES = {
    KEY_NOT_FOUND: "Key not found",
    TEST_FAILED: "Compare failed",
    NOT_FILE: "Not a file",
    NOT_DIR: "Not a directory",
    NODE_EXIST: "Key already exists",
    ROOT_RONLY: "Root is read only",
    DIR_NOT_EMPTY: "Directory not empty",
    EVENT_INDEX_CLEARED: "The event in requested index is outdated and cleared",
}


class CorruptError(ValueError):
    """The v2 store JSON of a snapshot does not have the shape etcd writes."""


class V2Error(Exception):
    """A v2 store operation failed (etcd's `v2error.Error`): an answer, not a bug."""

    def __init__(self, code: int, cause: str, index: int) -> None:
        self.code = code
        self.message = _MESSAGES[code]
        self.cause = cause
        self.index = index
        super().__init__(f"{self.message} ({cause})")


def ttl_seconds(expire: GoTime, now_ns: int) -> int:
    """etcd's TTL of a node: the remaining time rounded up to whole seconds (Go's truncating
    division and remainder, so an expired node gets 0 or a negative TTL)."""
    left_ns = expire.unix_ns - now_ns
    whole = abs(left_ns) // _NS_PER_S
    if left_ns < 0:
        return -whole
    return whole + (1 if left_ns % _NS_PER_S else 0)


class Node:
    """One entry of the tree: a directory (`children` is a dict) or a key (`children` is None)."""

    __slots__ = (
        "children",
        "created_index",
        "expire_time",
        "modified_index",
        "parent",
        "path",
        "value",
    )

    def __init__(self, path: str, created_index: int, parent: Node | None,
                 expire_time: GoTime | None, value: str = "", is_dir: bool = False) -> None:
        self.path = path
        self.created_index = created_index
        self.modified_index = created_index
        self.parent = parent
        self.expire_time = expire_time  # None: permanent (Go's zero time)
        self.value = value
        self.children: dict[str, Node] | None = {} if is_dir else None

    def is_dir(self) -> bool:
        return self.children is not None

    def is_permanent(self) -> bool:
        return self.expire_time is None

    def is_hidden(self) -> bool:
        return self.path.rsplit("/", 1)[-1].startswith("_")

    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def expiration_and_ttl(self, now_ns: int) -> tuple[GoTime | None, int]:
        if self.expire_time is None:
            return None, 0
        return GoTime(self.expire_time.unix_ns, 0), ttl_seconds(self.expire_time, now_ns)

    def repr(self, recursive: bool, now_ns: int) -> NodeExtern:
        """etcd's `node.Repr` (children always in key order: Go's map order is random)."""
        out = NodeExtern(key=self.path, modified_index=self.modified_index,
                         created_index=self.created_index)
        if self.children is not None:
            out.dir = True
            if recursive:
                out.nodes = [c.repr(True, now_ns) for _, c in sorted(self.children.items())
                             if not c.is_hidden()]
        else:
            out.value = self.value
        out.expiration, out.ttl = self.expiration_and_ttl(now_ns)
        return out

    def load_into(self, out: NodeExtern, recursive: bool, now_ns: int) -> None:
        """etcd's `NodeExtern.loadInternalNode`: what a Get answers and a Set's prevNode holds."""
        if self.children is not None:
            out.dir = True
            out.nodes = [c.repr(recursive, now_ns) for _, c in sorted(self.children.items())
                         if not c.is_hidden()]
        else:
            out.value = self.value
        out.expiration, out.ttl = self.expiration_and_ttl(now_ns)

    # Go JSON: {"Path","CreatedIndex","ModifiedIndex","ExpireTime","Value","Children"}.
    def write_json(self, out: list[str]) -> None:
        """Appends the subtree's JSON to `out`. Iterative: v2 keys may nest deeper than Python's
        recursion limit."""
        todo: list[Node | str] = [self]
        while todo:
            item = todo.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            expire = ZERO_TIME_TEXT if item.expire_time is None else format_time(item.expire_time)
            out.append(f'{{"Path":{go_string(item.path)},"CreatedIndex":{item.created_index},'
                       f'"ModifiedIndex":{item.modified_index},"ExpireTime":"{expire}",'
                       f'"Value":{go_string(item.value)},"Children":')
            if item.children is None:
                out.append("null}")
                continue
            out.append("{")
            later: list[Node | str] = []
            for i, (name, child) in enumerate(sorted(item.children.items())):
                later.append(("," if i else "") + go_string(name) + ":")
                later.append(child)
            later.append("}}")
            todo.extend(reversed(later))

    @classmethod
    def from_obj(cls, obj, parent: Node | None) -> Node:
        _need(isinstance(obj, dict), "node is not an object")
        node = cls(_str(obj, "Path"), _uint(obj, "CreatedIndex"), parent,
                   _time_or_none(obj.get("ExpireTime")), _str(obj, "Value"))
        node.modified_index = _uint(obj, "ModifiedIndex")
        children = obj.get("Children")
        if children is not None:
            _need(isinstance(children, dict), "Children is not an object")
            node.children = {name: cls.from_obj(c, node) for name, c in children.items()}
        return node


@attrs.define
class NodeExtern:
    """etcd's `NodeExtern`, the node as events carry it (every field `omitempty`)."""

    key: str = ""
    value: str | None = None
    dir: bool = False
    expiration: GoTime | None = None
    ttl: int = 0
    nodes: list[NodeExtern] | None = None
    modified_index: int = 0
    created_index: int = 0

    def write_json(self, out: list[str]) -> None:
        fields: list[str] = []
        if self.key:
            fields.append('"key":' + go_string(self.key))
        if self.value is not None:
            fields.append('"value":' + go_string(self.value))
        if self.dir:
            fields.append('"dir":true')
        if self.expiration is not None:
            fields.append(f'"expiration":"{format_time(self.expiration)}"')
        if self.ttl:
            fields.append(f'"ttl":{self.ttl}')
        if self.nodes:
            parts: list[str] = []
            for i, n in enumerate(self.nodes):
                if i:
                    parts.append(",")
                n.write_json(parts)
            fields.append('"nodes":[' + "".join(parts) + "]")
        if self.modified_index:
            fields.append(f'"modifiedIndex":{self.modified_index}')
        if self.created_index:
            fields.append(f'"createdIndex":{self.created_index}')
        out.append("{" + ",".join(fields) + "}")

    @classmethod
    def from_obj(cls, obj) -> NodeExtern:
        _need(isinstance(obj, dict), "event node is not an object")
        value = obj.get("value")
        _need(value is None or isinstance(value, str), "value is not a string")
        nodes = obj.get("nodes")
        _need(nodes is None or isinstance(nodes, list), "nodes is not an array")
        expiration = obj.get("expiration")
        return cls(
            key=_str(obj, "key"), value=value, dir=_bool(obj, "dir"),
            expiration=None if expiration is None else _time(expiration),
            ttl=_int(obj, "ttl"),
            nodes=None if nodes is None else [cls.from_obj(n) for n in nodes],
            modified_index=_uint(obj, "modifiedIndex"), created_index=_uint(obj, "createdIndex"))


@attrs.define
class Event:
    """etcd's `Event`: action, node, prevNode (when the change replaced something), refresh."""

    action: str
    node: NodeExtern
    prev_node: NodeExtern | None = None
    refresh: bool = False

    def index(self) -> int:
        return self.node.modified_index

    def write_json(self, out: list[str]) -> None:
        out.append('{"action":')
        out.append(go_string(self.action))
        out.append(',"node":')
        self.node.write_json(out)
        if self.prev_node is not None:
            out.append(',"prevNode":')
            self.prev_node.write_json(out)
        out.append(',"refresh":true}' if self.refresh else "}")

    @classmethod
    def from_obj(cls, obj) -> Event:
        _need(isinstance(obj, dict), "event is not an object")
        node = obj.get("node")
        prev = obj.get("prevNode")
        return cls(action=_str(obj, "action"),
                   node=NodeExtern() if node is None else NodeExtern.from_obj(node),
                   prev_node=None if prev is None else NodeExtern.from_obj(prev),
                   refresh=_bool(obj, "refresh"))


def new_event(action: str, key: str, modified_index: int, created_index: int) -> Event:
    return Event(action, NodeExtern(key=key, modified_index=modified_index,
                                    created_index=created_index))


class EventHistory:
    """The watcher hub's ring of the last `capacity` events (etcd keeps 1000).

    Invariants: 0 <= size <= capacity; back == (front + size) % capacity; the `size` slots from
    `front` hold events, the others None; start_index/last_index are the indexes of the oldest
    and newest event (0 while empty)."""

    __slots__ = ("back", "capacity", "events", "front", "last_index", "size", "start_index")

    def __init__(self, capacity: int = 1000) -> None:
        assert capacity > 0
        self.events: list[Event | None] = [None] * capacity
        self.size = 0
        self.front = 0
        self.back = 0
        self.capacity = capacity
        self.start_index = 0
        self.last_index = 0

    def add(self, event: Event) -> None:
        self.events[self.back] = event
        self.back = (self.back + 1) % self.capacity
        if self.size == self.capacity:
            self.front = (self.front + 1) % self.capacity
        else:
            self.size += 1
        self.last_index = event.index()
        front = self.events[self.front]
        assert front is not None
        self.start_index = front.index()
        assert self.back == (self.front + self.size) % self.capacity

    def in_order(self) -> list[Event]:
        """The events held, oldest first."""
        out = []
        for i in range(self.size):
            event = self.events[(self.front + i) % self.capacity]
            assert event is not None
            out.append(event)
        return out

    def write_json(self, out: list[str]) -> None:
        out.append('{"Queue":{"Events":[')
        for i, event in enumerate(self.events):
            if i:
                out.append(",")
            if event is None:
                out.append("null")
            else:
                event.write_json(out)
        out.append(f'],"Size":{self.size},"Front":{self.front},"Back":{self.back},'
                   f'"Capacity":{self.capacity}}},'
                   f'"StartIndex":{self.start_index},"LastIndex":{self.last_index}}}')

    @classmethod
    def from_obj(cls, obj) -> EventHistory:
        _need(isinstance(obj, dict), "EventHistory is not an object")
        queue = obj.get("Queue")
        _need(isinstance(queue, dict), "Queue is not an object")
        capacity = _uint(queue, "Capacity")
        events = queue.get("Events")
        _need(isinstance(events, list) and len(events) == capacity and capacity > 0,
              "Events does not have Capacity slots")
        h = cls(capacity)
        h.events = [None if e is None else Event.from_obj(e) for e in events]
        h.size, h.front, h.back = _uint(queue, "Size"), _uint(queue, "Front"), _uint(queue, "Back")
        _need(h.size <= capacity and h.front < capacity and h.back < capacity
              and h.back == (h.front + h.size) % capacity, "queue positions are inconsistent")
        _need(all(h.events[(h.front + i) % capacity] is not None for i in range(h.size)),
              "queue holds an empty slot")
        h.start_index, h.last_index = _uint(obj, "StartIndex"), _uint(obj, "LastIndex")
        return h


# Readers of decoded JSON: a missing field is Go's zero value, a wrong type is corruption.

def _need(ok: bool, what: str) -> None:
    if not ok:
        raise CorruptError(f"v2 store json: {what}")


def _str(obj: dict, name: str) -> str:
    v = obj.get(name, "")
    _need(isinstance(v, str), f"{name} is not a string")
    return v


def _bool(obj: dict, name: str) -> bool:
    v = obj.get(name, False)
    _need(isinstance(v, bool), f"{name} is not a bool")
    return v


def _int(obj: dict, name: str) -> int:
    v = obj.get(name, 0)
    _need(isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < (1 << 63),
          f"{name} is not an int64")
    return v


def _uint(obj: dict, name: str) -> int:
    v = obj.get(name, 0)
    _need(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << 64),
          f"{name} is not a uint64")
    return v


def _time(v) -> GoTime:
    _need(isinstance(v, str), "time is not a string")
    try:
        return parse_time(v)
    except ValueError as e:
        raise CorruptError(f"v2 store json: {e}") from None


def _time_or_none(v) -> GoTime | None:
    """A node's ExpireTime: None for Go's zero time (a permanent node) or when missing."""
    if v is None:
        return None
    t = _time(v)
    return None if t.unix_ns == ZERO_TIME_UNIX_NS else t
