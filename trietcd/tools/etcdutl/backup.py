"""`backup`: etcdutl 3.5.1's legacy offline copy of a data dir (etcdutl/etcdutl/backup_command.go).

The copy belongs to a new one-member cluster, to be started with --force-new-cluster:
- a fresh member ID and cluster ID from an ID generator seeded with the time; the member is named
  "etcdctl-v2-backup" with the peer URL "http://use-flag--force-new-cluster:2080";
- the newest `.snap`: its ConfState becomes that member alone, its v2 store loses every member and removed
  member and gets that one member's raftAttributes;
- the WAL after that snapshot is copied entry for entry, with the same metadata and HardState, except that
  ConfChanges, member attribute updates (v2 PUTs of /0/members/<id>/attributes and ClusterMemberAttrSet) and,
  without --with-v3, v3 requests become empty entries of the same index and term (so the consistent index
  stays right);
- with --with-v3 the backend image is copied from a read transaction; then the `cluster` bucket is dropped and
  the `members` rows are replaced by the new member's (the `cluster` bucket comes back
  empty, as etcd creates the membership buckets again). Without it, only that membership and the consistent
  index (the WAL's commit and term) are written into the db file.
"""

from __future__ import annotations

import os
import re
import time

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2
from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from storage import DB, StorageError
from trietcd.backend import CLUSTER, CONSISTENT_INDEX, MEMBERS, MEMBERS_REMOVED, META, TERM, encode_u64, \
    member_json, member_key
from trietcd.v2store.request import is_v2_request
from trietcd.server.reqid import IdGenerator
from trietcd.v2store import V2Store
from trietcd.v2store.members import REMOVED_MEMBERS_PREFIX
from trietcd.wal import snap as snapcodec
from trietcd.wal.segment import WAL, Snapshotter, WalError, WalNotFoundError, read_wal

__all__ = ["BackupError", "backup"]

BACKUP_MEMBER_NAME = "etcdctl-v2-backup"
BACKUP_PEER_URL = "http://use-flag--force-new-cluster:2080"
_MEMBER_ATTRIBUTES_PATH = re.compile(r"/0/members/[0-9A-Fa-f]{1,16}/attributes")


class BackupError(Exception):
    """A step etcdutl ends with a fatal log line: where, what, and its fields (the error among them)."""

    def __init__(self, line: int, msg: str, exc: BaseException, **fields) -> None:
        super().__init__(msg)
        self.caller = f"etcdutl/backup_command.go:{line}"
        self.msg = msg
        self.fields = {**fields, "error": _error_text(exc)}


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        text = os.strerror(exc.errno) if exc.errno else str(exc)
        return f"open {exc.filename}: {text[:1].lower()}{text[1:]}"
    return str(exc)


def backup(data_dir: str, backup_dir: str, wal_dir: str, backup_wal_dir: str, with_v3: bool, log,
           now_ms: int | None = None) -> None:
    src_snap = os.path.join(data_dir, "member", "snap")
    dst_snap = os.path.join(backup_dir, "member", "snap")
    src_wal = wal_dir or os.path.join(data_dir, "member", "wal")
    dst_wal = backup_wal_dir or os.path.join(backup_dir, "member", "wal")
    try:
        os.makedirs(dst_snap, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackupError(118, "failed creating backup snapshot dir", exc, **{"dest-snap": dst_snap}) from None
    ids = IdGenerator(0, int(time.time() * 1000) if now_ms is None else now_ms)
    node_id = ids.next()
    cluster_id = ids.next()
    conf_state = raft_pb2.ConfState(voters=[node_id])

    walsnap = record_pb2.Snapshot()
    try:
        snapshot = Snapshotter(src_snap).load()
    except snapcodec.NoSnapshotError:
        snapshot = None
    except OSError as exc:
        raise BackupError(154, "saveSnap(Snapshoter.Load) failed", exc) from None
    if snapshot is not None:
        walsnap.index, walsnap.term = snapshot.metadata.index, snapshot.metadata.term
        walsnap.conf_state.CopyFrom(conf_state)
        snapshot.metadata.conf_state.CopyFrom(conf_state)
        snapshot.data = _translate_v2(snapshot.data, node_id)
        try:
            Snapshotter(dst_snap).save(snapshot)
        except OSError as exc:
            raise BackupError(162, "saveSnap(Snapshoter.SaveSnap) failed", exc) from None

    try:
        result = read_wal(src_wal, walsnap)
    except (OSError, WalNotFoundError) as exc:
        raise BackupError(191, "wal.OpenForRead failed", exc) from None
    except WalError as exc:
        raise BackupError(201, "unexpected error while reading WAL", exc) from None
    entries = [_translate_entry(e, with_v3, log) for e in result.entries]
    _save_db(os.path.join(src_snap, "db"), os.path.join(dst_snap, "db"), result.hard_state, node_id, with_v3)
    try:
        wal = WAL.create(dst_wal, result.metadata or b"")
    except (OSError, WalError) as exc:
        raise BackupError(131, "wal.Create failed", exc) from None
    try:
        wal.save(result.hard_state, entries)
        wal.save_snapshot(walsnap)
    finally:
        wal.close()


def _translate_v2(data: bytes, node_id: int) -> bytes:
    v2 = V2Store.from_json(data)
    members, removed = v2.members_from_store()
    for mid in sorted(members):
        v2.delete(f"/0/members/{mid:x}", True, True)
    for mid in sorted(removed):
        v2.delete(f"{REMOVED_MEMBERS_PREFIX}/{mid:x}", True, True)
    v2.add_member(node_id, [BACKUP_PEER_URL])
    return v2.to_json()


def _translate_entry(e, with_v3: bool, log):
    noop = raft_pb2.Entry(Term=e.Term, Index=e.Index, Type=raft_pb2.EntryNormal)
    if e.Type == raft_pb2.EntryConfChange:
        log.info("etcdutl/backup_command.go:216", "ignoring EntryConfChange raft entry", {})
        return noop
    if e.Type != raft_pb2.EntryNormal or not e.Data:
        return e
    v2 = None
    irr = None
    if is_v2_request(e.Data):
        v2 = etcdserver_pb2.Request.FromString(e.Data)
    else:
        irr = gogo.parse_like_gogo(raft_internal_pb2.InternalRaftRequest, e.Data)
        if irr.HasField("v2"):
            v2 = irr.v2
    if v2 is not None and v2.Method == "PUT" and _MEMBER_ATTRIBUTES_PATH.search(v2.Path):
        log.info("etcdutl/backup_command.go:231", "ignoring member attribute update on", {"v2Req.Path": v2.Path})
        return noop
    if irr is not None and irr.HasField("cluster_member_attr_set"):
        log.info("etcdutl/backup_command.go:243", "ignoring cluster_member_attr_set", {})
        return noop
    if with_v3 or irr is None or not irr.HasField("header"):
        return e
    log.info("etcdutl/backup_command.go:252", "ignoring v3 raft entry", {})
    return noop


def _save_db(src_path: str, dst_path: str, hard_state, node_id: int, with_v3: bool) -> None:
    if with_v3:
        try:
            src = DB.open(src_path, read_only=True)
        except (OSError, StorageError) as exc:
            raise BackupError(277, "bolt.Open FAILED", exc) from None
        try:
            with src.view() as tx, open(dst_path, "wb") as out:
                tx.write_to(out)
        finally:
            src.close()
    db = DB.open(dst_path, no_freelist_sync=True)
    try:
        with db.update() as tx:
            # etcd drops the cluster bucket, then creates it again empty with the membership buckets.
            if tx.bucket(CLUSTER) is not None:
                tx.delete_bucket(CLUSTER)
            tx.create_bucket(CLUSTER)
            for name in (MEMBERS, MEMBERS_REMOVED):
                b = tx.bucket(name) or tx.create_bucket(name)
                for k, v in list(b.items()):
                    if v is not None:
                        b.delete(k)
            tx.bucket(MEMBERS).put(member_key(node_id),
                                   member_json(node_id, [BACKUP_PEER_URL], name=BACKUP_MEMBER_NAME))
            if not with_v3:
                meta = tx.bucket(META) or tx.create_bucket(META)
                meta.put(CONSISTENT_INDEX, encode_u64(hard_state.commit))
                meta.put(TERM, encode_u64(hard_state.term))
    finally:
        db.close()
