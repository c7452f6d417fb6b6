"""Replaying what etcd's apply loop does to the v2 store: conf changes (with the membership
reads etcd's validation makes) and raw v2 Request entries."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from pathlib import Path

from proto.raftpb import raft_pb2
from trietcd.v2store import V2Store, decode_v2_request, is_v2_request
from trietcd.wal.segment import read_wal
from trietcd.wal.snap import decode_snap_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DATA = Path(__file__).resolve().parent / "data"

ADD, REMOVE, UPDATE, ADD_LEARNER = (raft_pb2.ConfChangeAddNode, raft_pb2.ConfChangeRemoveNode,
                                    raft_pb2.ConfChangeUpdateNode, raft_pb2.ConfChangeAddLearnerNode)


def wal_entries(member_dir: Path, tmp_path: Path) -> list:
    """The entries of a fixture member's WAL, read from a copy."""
    copy = tmp_path / "wal-copy"
    shutil.copytree(member_dir / "wal", copy)
    return list(read_wal(str(copy)).entries)


def load_recording(name: str) -> tuple[list, dict[int, bytes]]:
    """(WAL entries, {raft index: v2 JSON of the .snap there}) of a run recorded in data/ (the
    make-*.sh scripts next to them say how)."""
    raw = json.loads(gzip.decompress((DATA / name).read_bytes()))
    entries = [raft_pb2.Entry(Index=i, Term=t, Type=ty, Data=bytes.fromhex(d))
               for i, t, ty, d in raw["entries"]]
    return entries, {int(k): base64.b64decode(v) for k, v in raw["snapshots"].items()}


def snap_data(path: Path) -> tuple[bytes, int]:
    """(v2 store JSON, raft index) of a `.snap` file."""
    snapshot = decode_snap_file(path.read_bytes())
    return snapshot.data, snapshot.metadata.index


def apply_conf_change(store: V2Store, cc) -> bool:
    """etcd's ValidateConfigurationChange + the membership change; False when invalid."""
    members, removed = store.members_from_store()
    if cc.node_id in removed:
        return False
    ctx = json.loads(cc.context) if cc.context else {}
    if cc.type in (ADD, ADD_LEARNER):
        if ctx.get("isPromote"):
            if cc.node_id not in members or not members[cc.node_id].is_learner:
                return False
            store.promote_member(cc.node_id)
            return True
        used = {u for m in members.values() for u in m.peer_urls}
        if cc.node_id in members or used & set(ctx.get("peerURLs") or ()):
            return False
        if ctx.get("isLearner") and any(m.is_learner for m in members.values()):
            return False
        store.add_member(cc.node_id, ctx.get("peerURLs"), bool(ctx.get("isLearner")))
        return True
    if cc.node_id not in members:
        return False
    if cc.type == REMOVE:
        store.remove_member(cc.node_id)
        return True
    assert cc.type == UPDATE
    used = {u for m in members.values() if m.id != cc.node_id for u in m.peer_urls}
    if used & set(ctx.get("peerURLs") or ()):
        return False
    store.update_raft_attributes(cc.node_id, ctx.get("peerURLs"), bool(ctx.get("isLearner")))
    return True


def replay(store: V2Store, entries, upto: int | None = None, now_ns: int = 0) -> V2Store:
    for entry in entries:
        if upto is not None and entry.Index > upto:
            break
        if entry.Type == raft_pb2.EntryConfChange:
            apply_conf_change(store, raft_pb2.ConfChange.FromString(entry.Data))
        elif entry.Data and is_v2_request(entry.Data):
            store.apply_request(decode_v2_request(entry.Data), now_ns)
    return store
