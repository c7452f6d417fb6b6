"""etcd's v2 store as an etcd 3.5 member keeps it: a tree of nodes with its own modification
counter, the history of the last 1000 changes and operation counters, all written into every
raft snapshot (wal-and-snap.md §7.3) and rebuilt on start from the snapshot plus the WAL.

Rules kept from etcd (server/etcdserver/api/v2store/store.go):

* `current_index` is the store's own counter, raised by exactly one per successful change
  (create, set, update, compare-and-swap, delete, compare-and-delete, each expired key); a
  changed node's created/modified index take its new value.
* "/", "/0" and "/1" are read only. Set and Create make missing parent directories on the way,
  stamped with the coming index, without an event of their own.
* Every successful change appends its event to the history. Reads (`get`) count in the stats.
* The stats count what etcd counts, oddities included: a Set or Create whose parent walk fails
  counts `setsFail` (and the Create also `createFail`); some failures etcd returns without
  recording (read-only root for update/CAS/delete, not-a-file and compare failures of
  compare-and-delete, not-a-file of update) count as successes.

The tree's order is deterministic: children are listed in key order where etcd uses Go's random
map order. Times come from the caller (`now_ns`), never from a clock.
"""

from __future__ import annotations

import json

from .apply import Response, apply_request
from .gojson import GoTime
from .members import (
    CLUSTER_PREFIX,
    KEYS_PREFIX,
    MEMBERS_PREFIX,
    REMOVED_MEMBERS_PREFIX,
    VERSION_KEY,
    MemberRecord,
    UnknownMemberError,
    attributes_json,
    member_from_values,
    member_key,
    normalize_version,
    raft_attributes_json,
)
from .node import (
    DIR_NOT_EMPTY,
    KEY_NOT_FOUND,
    NODE_EXIST,
    NOT_DIR,
    NOT_FILE,
    ROOT_RONLY,
    TEST_FAILED,
    CorruptError,
    Event,
    EventHistory,
    Node,
    NodeExtern,
    V2Error,
    new_event,
)

__all__ = ["STATS_FIELDS", "V2Store", "clean_path"]

_READ_ONLY = frozenset(("/", CLUSTER_PREFIX, KEYS_PREFIX))
_MIN_EXPIRE_NS = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z: earlier means permanent
HISTORY_CAPACITY = 1000
CURRENT_VERSION = 2

# The JSON names of etcd's Stats struct, in its field order.
STATS_FIELDS = (
    "getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail",
    "updateSuccess", "updateFail", "createSuccess", "createFail", "compareAndSwapSuccess",
    "compareAndSwapFail", "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount",
    "watchers",
)


def clean_path(p: str) -> str:
    """Go's `path.Clean(path.Join("/", p))`: an absolute path without empty, `.` or `..` parts."""
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _split(p: str) -> tuple[str, str]:
    """Go's `path.Split`: everything up to and including the last slash, and the rest."""
    i = p.rfind("/")
    return p[: i + 1], p[i + 1:]


class V2Store:
    """The store. Operations raise `V2Error` for the answers etcd gives as errors."""

    def __init__(self) -> None:
        self.root = Node("/", 0, None, None, is_dir=True)
        self.current_index = 0
        self.stats: dict[str, int] = dict.fromkeys(STATS_FIELDS, 0)
        self.history = EventHistory(HISTORY_CAPACITY)
        self.current_version = CURRENT_VERSION
        # Nodes with an expire time, by identity (etcd's ttlKeyHeap).
        self._ttl_nodes: dict[int, Node] = {}

    @classmethod
    def new(cls) -> V2Store:
        """A fresh store with the two namespaces etcd creates: /0 (cluster) and /1 (keys)."""
        store = cls()
        for name in (CLUSTER_PREFIX, KEYS_PREFIX):
            store.root.children[name[1:]] = Node(name, 0, store.root, None, is_dir=True)
        return store

    # --- snapshot JSON --------------------------------------------------------------------

    def to_json(self) -> bytes:
        """The store as etcd's `store.SaveNoCopy` writes it (Go encoding/json, compact)."""
        out: list[str] = ['{"Root":']
        self.root.write_json(out)
        out.append(',"WatcherHub":{"EventHistory":')
        self.history.write_json(out)
        out.append(f'}},"CurrentIndex":{self.current_index},"Stats":{{')
        out.append(",".join(f'"{name}":{self.stats[name]}' for name in STATS_FIELDS))
        out.append(f'}},"CurrentVersion":{self.current_version}}}')
        return "".join(out).encode()

    @classmethod
    def from_json(cls, data: bytes) -> V2Store:
        """The store from a raft snapshot's `data` (etcd's `store.Recovery`); CorruptError if it
        is not the JSON etcd writes."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or not isinstance(obj.get("Root"), dict):
                raise CorruptError("v2 store json: no Root object")
            root = Node.from_obj(obj["Root"], None)
        except RecursionError:
            # Python's json nests by recursion: a tree some 450 levels deep does not load.
            raise CorruptError("v2 store json: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as e:
            if isinstance(e, CorruptError):
                raise
            raise CorruptError(f"v2 store json: {e}") from None
        store = cls()
        store.root = root
        if not store.root.is_dir():
            raise CorruptError("v2 store json: Root is not a directory")
        hub = obj.get("WatcherHub")
        if not isinstance(hub, dict) or "EventHistory" not in hub:
            raise CorruptError("v2 store json: no WatcherHub.EventHistory")
        store.history = EventHistory.from_obj(hub["EventHistory"])
        store.current_index = _uint_field(obj, "CurrentIndex")
        stats = obj.get("Stats")
        if not isinstance(stats, dict):
            raise CorruptError("v2 store json: Stats is not an object")
        for name in STATS_FIELDS:
            store.stats[name] = _uint_field(stats, name)
        store.current_version = _uint_field(obj, "CurrentVersion")
        store._collect_ttl_nodes(store.root)
        return store

    def _collect_ttl_nodes(self, node: Node) -> None:
        if not node.is_permanent():
            self._ttl_nodes[id(node)] = node
        if node.children is not None:
            for child in node.children.values():
                self._collect_ttl_nodes(child)

    # --- reads ----------------------------------------------------------------------------

    def _lookup(self, node_path: str) -> Node:
        """etcd's internalGet: the node at `node_path`, or V2Error key-not-found / not-a-dir."""
        node = self.root
        for name in clean_path(node_path).split("/")[1:]:
            if not name:
                break
            if node.children is None:
                raise V2Error(NOT_DIR, node.path, self.current_index)
            child = node.children.get(name)
            if child is None:
                raise V2Error(KEY_NOT_FOUND, clean_path(node.path + "/" + name),
                              self.current_index)
            node = child
        return node

    def peek(self, node_path: str) -> Node | None:
        """The node at `node_path` without counting a read (None if there is none)."""
        try:
            return self._lookup(node_path)
        except V2Error:
            return None

    def get(self, node_path: str, recursive: bool = False, sorted_: bool = False, *,
            now_ns: int = 0) -> Event:
        """etcd's Get: counted in the stats (getsSuccess / getsFail)."""
        try:
            node = self._lookup(node_path)
        except V2Error:
            self.stats["getsFail"] += 1
            raise
        event = new_event("get", node_path, node.modified_index, node.created_index)
        node.load_into(event.node, recursive, now_ns)
        self.stats["getsSuccess"] += 1
        return event

    def has_ttl_keys(self) -> bool:
        """Whether the leader should propose SYNC requests (etcd's HasTTLKeys)."""
        return bool(self._ttl_nodes)

    # --- changes --------------------------------------------------------------------------

    def _check_dir(self, parent: Node, name: str) -> Node:
        node = parent.children.get(name)
        if node is not None:
            if node.is_dir():
                return node
            raise V2Error(NOT_DIR, node.path, self.current_index)
        node = Node(clean_path(parent.path + "/" + name), self.current_index + 1, parent, None,
                    is_dir=True)
        parent.children[name] = node
        return node

    def _create_node(self, node_path: str, is_dir: bool, value: str, unique: bool,
                     replace: bool, expire_time: GoTime | None, action: str,
                     now_ns: int) -> Event:
        """etcd's internalCreate, shared by Create and Set."""
        curr_index, next_index = self.current_index, self.current_index + 1
        if unique:
            node_path += "/" + str(next_index).rjust(20, "0")
        node_path = clean_path(node_path)
        if node_path in _READ_ONLY:
            raise V2Error(ROOT_RONLY, "/", curr_index)
        if expire_time is not None and expire_time.unix_ns < _MIN_EXPIRE_NS:
            expire_time = None
        dir_name, name = _split(node_path)
        parent = self.root
        try:
            for part in dir_name.split("/")[1:]:
                if not part:
                    break
                parent = self._check_dir(parent, part)
        except V2Error as err:
            self.stats["setsFail"] += 1  # etcd counts this for Create too
            err.index = curr_index
            raise
        event = new_event(action, node_path, next_index, next_index)
        existing = parent.children.get(name)
        if existing is not None:
            if not replace:
                raise V2Error(NODE_EXIST, node_path, curr_index)
            if existing.is_dir():
                raise V2Error(NOT_FILE, node_path, curr_index)
            event.prev_node = existing.repr(False, now_ns)
            self._remove(existing, False, False)
        node = Node(node_path, next_index, parent, expire_time, "" if is_dir else value, is_dir)
        if is_dir:
            event.node.dir = True
        else:
            event.node.value = value
        parent.children[name] = node
        if not node.is_permanent():
            self._ttl_nodes[id(node)] = node
            event.node.expiration, event.node.ttl = node.expiration_and_ttl(now_ns)
        self.current_index = next_index
        return event

    def create(self, node_path: str, is_dir: bool = False, value: str = "", unique: bool = False,
               expire_time: GoTime | None = None, *, now_ns: int = 0) -> Event:
        try:
            event = self._create_node(node_path, is_dir, value, unique, False, expire_time,
                                      "create", now_ns)
        except V2Error:
            self.stats["createFail"] += 1
            raise
        self.history.add(event)
        self.stats["createSuccess"] += 1
        return event

    def set(self, node_path: str, is_dir: bool = False, value: str = "",
            expire_time: GoTime | None = None, refresh: bool = False, *, now_ns: int = 0) -> Event:
        try:
            prev = self._lookup(node_path)
        except V2Error as err:
            if err.code != KEY_NOT_FOUND or refresh:
                self.stats["setsFail"] += 1
                raise
            prev = None
        if refresh:
            value = prev.value
        try:
            event = self._create_node(node_path, is_dir, value, False, True, expire_time, "set",
                                      now_ns)
        except V2Error:
            self.stats["setsFail"] += 1
            raise
        if prev is not None:
            event.prev_node = NodeExtern(key=node_path, modified_index=prev.modified_index,
                                         created_index=prev.created_index)
            prev.load_into(event.prev_node, False, now_ns)
        event.refresh = refresh
        self.history.add(event)
        self.stats["setsSuccess"] += 1
        return event

    def update(self, node_path: str, value: str = "", expire_time: GoTime | None = None,
               refresh: bool = False, *, now_ns: int = 0) -> Event:
        node_path = clean_path(node_path)
        if node_path in _READ_ONLY:
            self.stats["updateSuccess"] += 1  # sic: etcd returns this error unrecorded
            raise V2Error(ROOT_RONLY, "/", self.current_index)
        next_index = self.current_index + 1
        try:
            node = self._lookup(node_path)
        except V2Error:
            self.stats["updateFail"] += 1
            raise
        if node.is_dir():
            # A directory cannot take a value; without one, etcd's node.Write still refuses it.
            self.stats["updateSuccess"] += 1  # sic, as above
            raise V2Error(NOT_FILE, node_path if value else "", self.current_index)
        if refresh:
            value = node.value
        event = new_event("update", node_path, next_index, node.created_index)
        event.prev_node = node.repr(False, now_ns)
        node.value = value
        node.modified_index = next_index
        event.node.value = value
        self._update_ttl(node, expire_time)
        event.node.expiration, event.node.ttl = node.expiration_and_ttl(now_ns)
        event.refresh = refresh
        self.history.add(event)
        self.current_index = next_index
        self.stats["updateSuccess"] += 1
        return event

    def compare_and_swap(self, node_path: str, prev_value: str, prev_index: int, value: str,
                         expire_time: GoTime | None = None, refresh: bool = False, *,
                         now_ns: int = 0) -> Event:
        node_path = clean_path(node_path)
        if node_path in _READ_ONLY:
            self.stats["compareAndSwapSuccess"] += 1  # sic
            raise V2Error(ROOT_RONLY, "/", self.current_index)
        try:
            node = self._lookup(node_path)
            if node.is_dir():
                raise V2Error(NOT_FILE, node_path, self.current_index)
            _compare(node, prev_value, prev_index, self.current_index)
        except V2Error:
            self.stats["compareAndSwapFail"] += 1
            raise
        if refresh:
            value = node.value
        self.current_index += 1
        event = new_event("compareAndSwap", node_path, self.current_index, node.created_index)
        event.prev_node = node.repr(False, now_ns)
        node.value = value
        node.modified_index = self.current_index
        self._update_ttl(node, expire_time)
        event.node.value = value
        event.node.expiration, event.node.ttl = node.expiration_and_ttl(now_ns)
        event.refresh = refresh
        self.history.add(event)
        self.stats["compareAndSwapSuccess"] += 1
        return event

    def delete(self, node_path: str, is_dir: bool = False, recursive: bool = False, *,
               now_ns: int = 0) -> Event:
        node_path = clean_path(node_path)
        if node_path in _READ_ONLY:
            self.stats["deleteSuccess"] += 1  # sic
            raise V2Error(ROOT_RONLY, "/", self.current_index)
        if recursive:
            is_dir = True
        try:
            node = self._lookup(node_path)
            event = new_event("delete", node_path, self.current_index + 1, node.created_index)
            event.prev_node = node.repr(False, now_ns)
            if node.is_dir():
                event.node.dir = True
            self._remove(node, is_dir, recursive)
        except V2Error:
            self.stats["deleteFail"] += 1
            raise
        self.current_index += 1
        self.history.add(event)
        self.stats["deleteSuccess"] += 1
        return event

    def compare_and_delete(self, node_path: str, prev_value: str, prev_index: int, *,
                           now_ns: int = 0) -> Event:
        node_path = clean_path(node_path)
        try:
            node = self._lookup(node_path)
        except V2Error:
            self.stats["compareAndDeleteFail"] += 1
            raise
        if node.is_dir():
            self.stats["compareAndDeleteSuccess"] += 1  # sic
            raise V2Error(NOT_FILE, node_path, self.current_index)
        try:
            _compare(node, prev_value, prev_index, self.current_index)
        except V2Error:
            self.stats["compareAndDeleteSuccess"] += 1  # sic
            raise
        self.current_index += 1
        event = new_event("compareAndDelete", node_path, self.current_index, node.created_index)
        event.prev_node = node.repr(False, now_ns)
        self._remove(node, False, False)
        self.history.add(event)
        self.stats["compareAndDeleteSuccess"] += 1
        return event

    def delete_expired_keys(self, cutoff_ns: int, *, now_ns: int | None = None) -> list[Event]:
        """etcd's DeleteExpiredKeys (a SYNC entry): every node expiring at or before the cutoff,
        soonest first (ties by path), one `expire` event and index each."""
        now_ns = cutoff_ns if now_ns is None else now_ns
        events = []
        while self._ttl_nodes:
            node = min(self._ttl_nodes.values(), key=lambda n: (n.expire_time.unix_ns, n.path))
            if node.expire_time.unix_ns > cutoff_ns:
                break
            self.current_index += 1
            event = new_event("expire", node.path, self.current_index, node.created_index)
            event.prev_node = node.repr(False, now_ns)
            if node.is_dir():
                event.node.dir = True
            del self._ttl_nodes[id(node)]
            self._remove(node, True, True)
            self.stats["expireCount"] += 1
            self.history.add(event)
            events.append(event)
        return events

    def _remove(self, node: Node, is_dir: bool, recursive: bool) -> None:
        """etcd's node.Remove: detach `node`; a directory takes everything under it along (an
        explicit stack: v2 keys may nest deeper than Python's recursion limit)."""
        if node.children is not None:
            if not is_dir:
                raise V2Error(NOT_FILE, node.path, self.current_index)
            if node.children and not recursive:
                raise V2Error(DIR_NOT_EMPTY, node.path, self.current_index)
            below = list(node.children.values())
            while below:
                child = below.pop()
                self._ttl_nodes.pop(id(child), None)
                if child.children:
                    below.extend(child.children.values())
                    child.children.clear()
            node.children.clear()
        parent = node.parent
        name = node.name()
        if parent is not None and parent.children.get(name) is node:
            del parent.children[name]
            self._ttl_nodes.pop(id(node), None)
        elif node.children is None:
            self._ttl_nodes.pop(id(node), None)

    def _update_ttl(self, node: Node, expire_time: GoTime | None) -> None:
        """etcd's node.UpdateTTL: None (Go's zero time) makes the node permanent."""
        node.expire_time = expire_time
        if expire_time is None:
            self._ttl_nodes.pop(id(node), None)
        else:
            self._ttl_nodes[id(node)] = node

    # --- the cluster namespace (etcd's membership/store.go and cluster.go effects) ----------

    def add_member(self, id: int, peer_urls, is_learner: bool = False) -> None:
        """Create `/0/members/<id>/raftAttributes` (a member added by a conf change or at
        bootstrap). An existing node is left alone, as etcd 3.5 does when its backend has it."""
        try:
            self.create(member_key(id) + "/raftAttributes", False,
                        raft_attributes_json(peer_urls, is_learner))
        except V2Error as err:
            if err.code != NODE_EXIST:
                raise

    def update_raft_attributes(self, id: int, peer_urls, is_learner: bool = False) -> None:
        """Update `raftAttributes` (a member update or promotion)."""
        self.update(member_key(id) + "/raftAttributes", raft_attributes_json(peer_urls, is_learner))

    def promote_member(self, id: int) -> None:
        """Make a learner a voter, keeping its peer URLs (etcd's PromoteMember)."""
        member = self.members()[id]
        self.update_raft_attributes(id, member.peer_urls, False)

    def update_attributes(self, id: int, name: str, client_urls) -> None:
        """Set `attributes` of a member (its publish request). A removed member is ignored; one
        the store never had raises UnknownMemberError (etcd panics)."""
        if self.peek(member_key(id)) is None:
            if id in self.removed_ids():
                return
            raise UnknownMemberError(f"failed to update; member unknown: {id:x}")
        self.set(member_key(id) + "/attributes", False, attributes_json(name, client_urls))

    def remove_member(self, id: int) -> None:
        """Delete `/0/members/<id>` and record `/0/removed_members/<id>`. A member already gone
        from /0/members is left as it is (etcd stops at the failed delete)."""
        try:
            self.delete(member_key(id), True, True)
        except V2Error as err:
            if err.code == KEY_NOT_FOUND:
                return
            raise
        self.create(f"{REMOVED_MEMBERS_PREFIX}/{id:x}", False, "")

    def set_cluster_version(self, version: str) -> None:
        """Set `/0/version` to `version` normalized like go-semver (`3.5` is refused)."""
        self.set(VERSION_KEY, False, normalize_version(version))

    def members(self) -> dict[int, MemberRecord]:
        """The members under /0/members (not counted as a read)."""
        out: dict[int, MemberRecord] = {}
        members = self.peek(MEMBERS_PREFIX)
        if members is None or members.children is None:
            return out
        for name, node in sorted(members.children.items()):
            raft = node.children.get("raftAttributes") if node.children else None
            attributes = node.children.get("attributes") if node.children else None
            out[int(name, 16)] = member_from_values(
                int(name, 16), None if raft is None else raft.value,
                None if attributes is None else attributes.value)
        return out

    def removed_ids(self) -> set[int]:
        removed = self.peek(REMOVED_MEMBERS_PREFIX)
        if removed is None or removed.children is None:
            return set()
        return {int(name, 16) for name in removed.children}

    def cluster_version(self) -> str | None:
        node = self.peek(VERSION_KEY)
        return None if node is None or node.is_dir() else node.value

    def members_from_store(self) -> tuple[dict[int, MemberRecord], set[int]]:
        """etcd's membersFromStore, reads counted: a Get of /0/members and, if that exists, of
        /0/removed_members. etcd runs it to validate every conf change and in Recover (start,
        snapshot apply); call it at the same points to keep the snapshot's Stats equal."""
        try:
            self.get(MEMBERS_PREFIX, True, True)
        except V2Error as err:
            if err.code == KEY_NOT_FOUND:
                return {}, set()
            raise
        members = self.members()
        try:
            self.get(REMOVED_MEMBERS_PREFIX, True, True)
        except V2Error as err:
            if err.code == KEY_NOT_FOUND:
                return members, set()
            raise
        return members, self.removed_ids()

    def cluster_version_from_store(self) -> str | None:
        """etcd's clusterVersionFromStore, the read counted (Recover does it before
        membersFromStore)."""
        try:
            return self.get(VERSION_KEY).node.value
        except V2Error as err:
            if err.code == KEY_NOT_FOUND:
                return None
            raise

    def is_meta_store_only(self) -> bool:
        """etcd's IsMetaStoreOnly, the read counted: whether nothing but /0 has content (etcd
        checks it right after loading a snapshot, at start and on a received snapshot; more
        content only draws a warning at the default --v2-deprecation)."""
        root = self.get("/", True)
        return all(n.key == CLUSTER_PREFIX or not n.nodes for n in root.node.nodes or ())

    def recover(self) -> tuple[str | None, dict[int, MemberRecord], set[int]]:
        """etcd's RaftCluster.Recover, reads counted: (cluster version, members, removed IDs).

        etcd runs it at start after loading the snapshot (or on the empty store when there is
        no snapshot but a WAL) and after applying a received snapshot; in both snapshot cases
        `is_meta_store_only` comes first. Replayed entries are applied after it."""
        version = self.cluster_version_from_store()
        members, removed = self.members_from_store()
        return version, members, removed

    def apply_request(self, req, now_ns: int) -> Response:
        """Apply a raw v2 `etcdserverpb.Request` entry (raft-log-and-apply §4.1): see
        `apply.apply_request`."""
        return apply_request(self, req, now_ns)


def _compare(node: Node, prev_value: str, prev_index: int, index: int) -> None:
    index_ok = prev_index == 0 or node.modified_index == prev_index
    value_ok = prev_value == "" or node.value == prev_value
    if index_ok and value_ok:
        return
    if index_ok:
        cause = f"[{prev_value} != {node.value}]"
    elif value_ok:
        cause = f"[{prev_index} != {node.modified_index}]"
    else:
        cause = f"[{prev_value} != {node.value}] [{prev_index} != {node.modified_index}]"
    raise V2Error(TEST_FAILED, cause, index)


def _uint_field(obj: dict, name: str) -> int:
    v = obj.get(name, 0)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << 64):
        raise CorruptError(f"v2 store json: {name} is not a uint64")
    return v
