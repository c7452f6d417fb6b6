"""A member's data dir: what `NewServer` in etcd 3.5 does with it at start.

Layout (etcd's): `<data-dir>/member/wal/` (or `--wal-dir`) holds the WAL,
`<data-dir>/member/snap/` the raft snapshots (`<term>-<index>.snap`), the
backend `db` and backend images received from a leader (`<index>.snap.db`).

- No WAL: a new member. The WAL is created with the member and cluster IDs in
  its metadata, and the bootstrap entries etcd's `raft.StartNode` writes: one
  ConfChange AddNode per initial member, in ascending ID order, at term 1,
  committed at once (HardState term 1, commit n). A `db` left over from
  before is kept, as etcd keeps it.
- A WAL: a restart. Identity comes from the WAL metadata; the newest `.snap`
  whose (term, index) the WAL lists as valid gives the v2 store and raft's
  snapshot; a backend whose consistent index is behind that snapshot is
  replaced by `<index>.snap.db`; the WAL after the snapshot fills raft's log.
  Initial-cluster flags are ignored, as etcd ignores them.
"""

from __future__ import annotations

import os

import attrs

from proto import gogo
from proto.etcdserverpb import etcdserver_pb2
from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from trietcd.backend import schema
from trietcd.backend.backend import Backend
from trietcd.raft.storage import MemoryStorage
from trietcd.server.errors import BootstrapError
from trietcd.v2store import V2Store
from trietcd.wal import snap as snapcodec
from trietcd.wal.record import encode_metadata
from trietcd.wal.segment import WAL, Snapshotter, valid_snapshot_entries
from trietcd.wal.segment import exists as wal_exists

__all__ = ["Disk", "open_disk"]


@attrs.define
class Disk:
    member_dir: str
    wal_dir: str
    snap_dir: str
    wal: WAL
    snapshotter: Snapshotter
    storage: MemoryStorage  # raft's log: snapshot + entries after it
    snapshot: raft_pb2.Snapshot  # the last raft snapshot (empty if none)
    backend: Backend
    v2: V2Store
    member_id: int
    cluster_id: int
    new: bool  # bootstrapped now (not a restart)

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            self.wal.close()


def open_disk(config, *, bootstrap_members, local_id: int, cluster_id: int, log) -> Disk:
    """Bootstraps or restarts from config.data_dir. `bootstrap_members` (MemberInfo list) and the IDs are used
    only for a new member."""
    member_dir = os.path.join(config.data_dir, "member")
    wal_dir = config.wal_dir or os.path.join(member_dir, "wal")
    snap_dir = os.path.join(member_dir, "snap")
    os.makedirs(member_dir, mode=0o700, exist_ok=True)
    os.makedirs(snap_dir, mode=0o700, exist_ok=True)
    for name in os.listdir(snap_dir):
        if name.startswith("tmp"):  # an incoming snapshot a crash interrupted
            os.remove(os.path.join(snap_dir, name))
    snapshotter = Snapshotter(snap_dir)
    fsync = not config.unsafe_no_fsync
    db_path = os.path.join(snap_dir, "db")
    if not wal_exists(wal_dir):
        if not config.is_new_cluster():
            raise BootstrapError("joining an existing cluster is not supported yet")
        backend = _open_backend(config, db_path)
        try:
            return _bootstrap(config, member_dir, wal_dir, snap_dir, snapshotter, backend, bootstrap_members,
                              local_id, cluster_id, fsync)
        except BaseException:
            backend.close()
            raise
    return _restart(config, member_dir, wal_dir, snap_dir, snapshotter, db_path, fsync, log)


def _force_standalone(wal, hard_state, entries, snapshot, self_id: int, log) -> list:
    """etcd's restartAsStandaloneNode (--force-new-cluster on an existing data dir): the entries past the
    commit index are dropped; ConfChanges adding this member (when it is not one) and removing every other
    member the log and snapshot know are appended at the commit's term, saved to the WAL and counted as
    committed. Applied as the member starts, they leave a cluster of one, with its data."""
    for i, e in enumerate(entries):
        if e.Index > hard_state.commit:
            log.info("discarding uncommitted WAL entries", caller="etcdserver/raft.go",
                     **{"entry-index": e.Index, "commit-index-from-wal": hard_state.commit,
                        "number-of-discarded-entries": len(entries) - i})
            entries = entries[:i]
            break
    ids = set(snapshot.metadata.conf_state.voters)
    for e in entries:
        if e.Type != raft_pb2.EntryConfChange:
            continue
        cc = raft_pb2.ConfChange.FromString(e.Data)
        if cc.type in (raft_pb2.ConfChangeAddNode, raft_pb2.ConfChangeAddLearnerNode):
            ids.add(cc.node_id)
        elif cc.type == raft_pb2.ConfChangeRemoveNode:
            ids.discard(cc.node_id)
    changes = []
    if self_id not in ids:  # always add self first: raft must never be left without voters
        changes.append(raft_pb2.ConfChange(type=raft_pb2.ConfChangeAddNode, node_id=self_id,
                                           context=schema.member_json(self_id, ["http://localhost:2380"])))
    changes += [raft_pb2.ConfChange(type=raft_pb2.ConfChangeRemoveNode, node_id=i)
                for i in sorted(ids) if i != self_id]
    appended = [raft_pb2.Entry(Type=raft_pb2.EntryConfChange, Term=hard_state.term, Index=hard_state.commit + n,
                               Data=gogo.marshal(cc)) for n, cc in enumerate(changes, start=1)]
    wal.save(raft_pb2.HardState(), appended)
    return entries + appended


def _open_backend(config, path: str) -> Backend:
    return Backend.open(path, batch_limit=config.backend_batch_limit or 10_000, fsync=not config.unsafe_no_fsync,
                        lock_timeout_s=10.0)


def _bootstrap(config, member_dir, wal_dir, snap_dir, snapshotter, backend, members, local_id, cluster_id,
               fsync) -> Disk:
    wal = WAL.create(wal_dir, encode_metadata(local_id, cluster_id), unsafe_no_fsync=not fsync)
    entries = []
    for i, m in enumerate(sorted(members, key=lambda m: m.id), start=1):
        cc = raft_pb2.ConfChange(id=0, type=raft_pb2.ConfChangeAddNode, node_id=m.id,
                                 context=schema.member_json(m.id, list(m.peer_urls), name=m.name))
        entries.append(raft_pb2.Entry(Type=raft_pb2.EntryConfChange, Term=1, Index=i, Data=gogo.marshal(cc)))
    hs = raft_pb2.HardState(term=1, vote=0, commit=len(entries))
    wal.save(hs, entries)
    storage = MemoryStorage()
    storage.set_hard_state(hs)
    storage.append(entries)
    return Disk(member_dir, wal_dir, snap_dir, wal, snapshotter, storage, raft_pb2.Snapshot(), backend,
                V2Store.new(), local_id, cluster_id, new=True)


def _restart(config, member_dir, wal_dir, snap_dir, snapshotter, db_path, fsync, log) -> Disk:
    walsnaps = valid_snapshot_entries(wal_dir)
    try:
        snapshot = snapshotter.load_newest_available(walsnaps)
    except snapcodec.NoSnapshotError:
        snapshot = raft_pb2.Snapshot()
    index = snapshot.metadata.index
    # The reads etcd makes at start are counted in the v2 store's Stats, which snapshots carry: make them.
    if index:
        v2 = V2Store.from_json(snapshot.data)
        if not v2.is_meta_store_only():
            log.warn("v2 store has custom content", caller="etcdserver/server.go")
        log.info("recovered v2 store from snapshot", caller="etcdserver/server.go",
                 **{"snapshot-index": index, "snapshot-size": len(snapshot.data)})
    else:
        v2 = V2Store.new()
    v2.recover()
    backend = _open_backend(config, db_path)
    try:
        ci, _ = backend.consistent_index()
        if index and ci < index:
            backend.close()
            snapdb = snapshotter.db_file_path(index)
            if not os.path.exists(snapdb):
                raise BootstrapError(f"failed to recover v3 backend from snapshot: failed to find database "
                                     f"snapshot file ({snapdb}): snap: snapshot file doesn't exist")
            os.replace(snapdb, db_path)
            backend = _open_backend(config, db_path)
        wal = WAL.open(wal_dir, record_pb2.Snapshot(index=index, term=snapshot.metadata.term),
                       unsafe_no_fsync=not fsync)
        try:
            result = wal.read_all()
        except BaseException:
            wal.close()
            raise
    except BaseException:
        backend.close()
        raise
    md = etcdserver_pb2.Metadata.FromString(result.metadata or b"")
    hard_state, entries = result.hard_state, list(result.entries)
    if config.force_new_cluster:
        try:
            entries = _force_standalone(wal, hard_state, entries, snapshot, md.NodeID, log)
        except BaseException:
            wal.close()
            backend.close()
            raise
        if entries:
            hard_state = raft_pb2.HardState(term=hard_state.term, vote=hard_state.vote, commit=entries[-1].Index)
        log.info("forcing restart member", caller="etcdserver/raft.go",
                 **{"cluster-id": f"{md.ClusterID:x}", "local-member-id": f"{md.NodeID:x}",
                    "commit-index": hard_state.commit})
    storage = MemoryStorage()
    if index:
        storage.apply_snapshot(snapshot)
    storage.set_hard_state(hard_state)
    storage.append(entries)
    if not config.force_new_cluster:
        log.info("restarting local member", caller="etcdserver/raft.go",
                 **{"cluster-id": f"{md.ClusterID:x}", "local-member-id": f"{md.NodeID:x}",
                    "commit-index": hard_state.commit})
    return Disk(member_dir, wal_dir, snap_dir, wal, snapshotter, storage, snapshot, backend, v2, md.NodeID,
                md.ClusterID, new=False)
