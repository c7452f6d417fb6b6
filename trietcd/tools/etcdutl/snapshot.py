"""`snapshot status` and `snapshot restore`: what etcdutl 3.5.1 does with a backend image (etcdutl/snapshot).

A snapshot file is a backend db image, usually followed by the 32-byte SHA-256 of the image (what the
Snapshot RPC sends last, and `etcdctl snapshot save` appends). A file whose size is 32 more than a multiple of
512 carries one (pages are multiples of 512 bytes).

Restore makes a data dir a fresh member starts from, as etcd's v3Manager.Restore does:
- `member/snap/db`: the image (its SHA-256 checked unless --skip-hash-check), the `members` and
  `members_removed` rows of the old cluster removed, one `members` row per member of --initial-cluster, and the
  consistent index set to the number of members (term 1);
- the WAL: metadata with this member's and the cluster's IDs, one ConfChange AddNode entry per member in ID
  order at term 1, HardState {term 1, vote: the first member, commit: the last entry}, then a snapshot record
  at that entry;
- `member/snap/<term>-<index>.snap`: a raft snapshot at that entry whose data is the v2 store holding the
  members' raftAttributes.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import attrs

from proto.raftpb import raft_pb2
from proto.walpb import record_pb2
from proto import gogo
from storage import DB, StorageError
from trietcd.backend import (CONSISTENT_INDEX, KEY, MEMBERS, MEMBERS_REMOVED, META, TERM, Backend, encode_u64,
                             member_json, member_key)
from trietcd.backend.backend import hash_tx
from trietcd.config.gotypes import GoError, new_urls
from trietcd.server.errors import BootstrapError
from trietcd.server.member import resolve_url
from trietcd.server.membership import Membership, verify_bootstrap
from trietcd.v2store import V2Store
from trietcd.wal.record import encode_metadata
from trietcd.wal.segment import WAL, Snapshotter

__all__ = ["Status", "RestoreError", "status", "restore", "has_checksum", "SHA256_BYTES"]

SHA256_BYTES = 32


class RestoreError(Exception):
    """A snapshot that cannot be read or restored; str() is etcdutl's text."""


@attrs.frozen
class Status:
    hash: int
    revision: int
    total_key: int
    total_size: int

    def as_json(self) -> dict:
        return {"hash": self.hash, "revision": self.revision, "totalKey": self.total_key,
                "totalSize": self.total_size}


def has_checksum(size: int) -> bool:
    return size % 512 == SHA256_BYTES


def status(path: str) -> Status:
    """etcdutl's Status of a db file: CRC-32C over every bucket name and row, the main revision of the last
    `key` row, the number of rows, the size the file's meta names. Raises OSError or RestoreError."""
    os.stat(path)
    try:
        db = DB.open(path, read_only=True)
    except StorageError:
        raise RestoreError("invalid database") from None
    try:
        with db.view() as tx:
            problems = tx.check()
            if problems:
                raise RestoreError(f"snapshot file integrity check failed. {len(problems)} errors found.\n"
                                   + "\n".join(problems))
            total_key = 0
            revision = 0
            for name in tx.bucket_names():
                for k, v in tx.bucket(name).items():
                    if v is None:
                        continue
                    total_key += 1
                    if name == KEY:
                        revision = int.from_bytes(k[:8], "big")
            return Status(hash=hash_tx(tx, ()), revision=revision, total_key=total_key, total_size=tx.size)
    finally:
        db.close()


@attrs.frozen
class RestoreConfig:
    snapshot_path: str
    name: str = "default"
    data_dir: str = ""  # "": <name>.etcd
    wal_dir: str = ""  # "": <data-dir>/member/wal
    peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_cluster: str = "default=http://localhost:2380"
    initial_cluster_token: str = "etcd-cluster"
    skip_hash_check: bool = False


def restore(cfg: RestoreConfig, log) -> None:
    """Writes a new data dir from the snapshot (see the module's rules). Raises RestoreError, OSError."""
    try:
        peer_urls = new_urls(list(cfg.peer_urls))
        cluster_map = initial_cluster_map(cfg.initial_cluster)
    except GoError as exc:
        raise RestoreError(str(exc)) from None
    try:
        verify_bootstrap(name=cfg.name, initial_cluster=cfg.initial_cluster, initial_cluster_map=cluster_map,
                         advertise_peer_urls=peer_urls, resolve=resolve_url)
    except BootstrapError as exc:
        raise RestoreError(str(exc)) from None
    cluster = Membership.bootstrap(name=cfg.name, initial_cluster=cluster_map,
                                   cluster_token=cfg.initial_cluster_token, client_urls=())
    data_dir = cfg.data_dir or cfg.name + ".etcd"
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise RestoreError(f'data-dir "{data_dir}" not empty or could not be read')
    wal_dir = cfg.wal_dir
    if not wal_dir:
        wal_dir = os.path.join(data_dir, "member", "wal")
    elif os.path.exists(wal_dir):
        raise RestoreError(f'wal-dir "{wal_dir}" exists')
    snap_dir = os.path.join(data_dir, "member", "snap")
    fields = {"path": cfg.snapshot_path, "wal-dir": wal_dir, "data-dir": data_dir, "snap-dir": snap_dir}
    log.info("snapshot/v3_snapshot.go:251", "restoring snapshot", fields)
    db_path = os.path.join(snap_dir, "db")
    copy_and_verify(cfg.snapshot_path, db_path, cfg.skip_hash_check)
    members = sorted(cluster.members.values(), key=lambda m: m.id)
    try:
        backend = Backend.open(db_path)
    except StorageError as exc:  # etcd panics here ("failed to open database")
        raise RestoreError(f"failed to open database {db_path}: {exc}") from None
    with backend:
        log.info("membership/store.go:141", "Trimming membership information from the backend...", {})
        for bucket in (MEMBERS, MEMBERS_REMOVED):
            for k, _ in list(backend.items(bucket)):
                backend.delete(bucket, k)
        v2 = V2Store.new()
        for m in members:
            v2.add_member(m.id, m.peer_urls)
            backend.put(MEMBERS, member_key(m.id), member_json(m.id, list(m.peer_urls), name=m.name))
            log.info("membership/cluster.go:421", "added member",
                     {"cluster-id": f"{cluster.cluster_id:x}", "local-member-id": "0",
                      "added-peer-id": f"{m.id:x}", "added-peer-peer-urls": list(m.peer_urls)})
        commit, term = save_wal_and_snap(wal_dir, snap_dir, cluster, members, v2)
        # etcd sets the consistent index to the restored log's end outright, even below what the image held.
        backend.set_consistent_index(commit, term)
        backend.put(META, CONSISTENT_INDEX, encode_u64(commit))
        backend.put(META, TERM, encode_u64(term))
        backend.commit()
    log.info("snapshot/v3_snapshot.go:272", "restored snapshot",
             {"path": cfg.snapshot_path, "wal-dir": wal_dir, "data-dir": data_dir, "snap-dir": snap_dir})


def initial_cluster_map(text: str) -> dict[str, tuple[str, ...]]:
    """etcd's types.NewURLsMap: name=url pairs, a name's URLs gathered and sorted. Raises GoError."""
    grouped: dict[str, list[str]] = {}
    for item in text.split(","):
        if item == "":
            continue
        name, _, url = item.partition("=")
        grouped.setdefault(name, []).append(url)
    return {name: new_urls(urls) for name, urls in grouped.items()}


def copy_and_verify(src_path: str, db_path: str, skip_hash_check: bool) -> None:
    """Copies the image to db_path, drops the trailing SHA-256 and checks it (etcd's copyAndVerifyDB)."""
    with open(src_path, "rb") as src:
        src.seek(0, os.SEEK_END)
        if src.tell() < SHA256_BYTES:
            raise RestoreError(f"seek {src_path}: invalid argument")
        src.seek(-SHA256_BYTES, os.SEEK_END)
        want = src.read(SHA256_BYTES)
        src.seek(0)
        os.makedirs(os.path.dirname(db_path), mode=0o700, exist_ok=True)
        with open(db_path, "wb") as dst:
            os.chmod(db_path, 0o600)
            shutil.copyfileobj(src, dst, 1 << 20)
    size = os.path.getsize(db_path)
    with_hash = has_checksum(size)
    if with_hash:
        os.truncate(db_path, size - SHA256_BYTES)
    elif not skip_hash_check:
        raise RestoreError("snapshot missing hash but --skip-hash-check=false")
    if with_hash and not skip_hash_check:
        digest = hashlib.sha256()
        with open(db_path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        got = digest.digest()
        if got != want:
            raise RestoreError(f"expected sha256 {_go_bytes(want)}, got {_go_bytes(got)}")


def _go_bytes(b: bytes) -> str:
    return "[" + " ".join(str(x) for x in b) + "]"


def save_wal_and_snap(wal_dir: str, snap_dir: str, cluster: Membership, members, v2) -> tuple[int, int]:
    """The WAL and the .snap file of a restored member (etcd's saveWALAndSnap); returns (commit, term)."""
    os.makedirs(os.path.dirname(os.path.normpath(wal_dir)) or ".", mode=0o700, exist_ok=True)
    entries = []
    for i, m in enumerate(members, start=1):
        cc = raft_pb2.ConfChange(id=0, type=raft_pb2.ConfChangeAddNode, node_id=m.id,
                                 context=member_json(m.id, list(m.peer_urls), name=m.name))
        entries.append(raft_pb2.Entry(Type=raft_pb2.EntryConfChange, Term=1, Index=i, Data=gogo.marshal(cc)))
    commit, term = len(entries), 1
    hs = raft_pb2.HardState(term=term, vote=members[0].id, commit=commit)
    conf_state = raft_pb2.ConfState(voters=[m.id for m in members])
    wal = WAL.create(wal_dir, encode_metadata(cluster.local_id, cluster.cluster_id))
    try:
        wal.save(hs, entries)
        snap = raft_pb2.Snapshot(data=v2.to_json())
        snap.metadata.index = commit
        snap.metadata.term = term
        snap.metadata.conf_state.CopyFrom(conf_state)
        Snapshotter(snap_dir).save(snap)
        walsnap = record_pb2.Snapshot(index=commit, term=term)
        walsnap.conf_state.CopyFrom(conf_state)
        wal.save_snapshot(walsnap)
    finally:
        wal.close()
    return commit, term
