"""Applying committed raft entries to the member's state (etcd 3.5.1 `etcdserver/server.go` apply, `apply.go`,
`apply_v2.go`), without IO: the member's applier task calls `EntryApplier.apply` with each batch.

Rules (see spec raft-log-and-apply.md and etcd-3.5-delta.md §1.2, §1.4, §3.1):
- Entries arrive in index order, each once; `applied_index` follows them.
- The consistent index gates the v3 state: an entry at or below the backend's consistent index is already in
  the backend, so its v3 part (mvcc, alarms, backend rows) is skipped; the v2 store and membership are always
  applied, since they start from the raft snapshot.
- After an entry's effects, (index, term) becomes the backend's consistent index: the backend writes it at its
  next commit, so one commit holds both an entry's effects and its index.
- Membership writes to the backend copy etcd 3.5.1: a member row is written only when none exists yet.
- Results go to the local proposer by request ID: a response, or the exception the request failed with.
"""

from __future__ import annotations

import json
import re

import attrs

import trietcd
from proto import gogo
from proto.etcdserverpb import etcdserver_pb2, raft_internal_pb2, rpc_pb2
from proto.raftpb import raft_pb2
from trietcd.auth import AUTH_KINDS, AuthError, AuthInfo
from trietcd.backend import schema
from trietcd.gojson import go_string
from trietcd.lease import LeaseError
from trietcd.mvcc import MvccError
from trietcd.server.errors import CorruptError, NoSpaceError
from trietcd.server.membership import MemberInfo
from trietcd.server.quota import QUOTA_FIELDS, txn_cost
from trietcd.v2store import is_v2_request
from trietcd.wal.record import uvarint

__all__ = ["EntryApplier", "CompactionResult", "QuotaExceeded", "UnsupportedEntryError"]

_ATTRIBUTES_PATH = re.compile(r"^/0/members/([0-9a-fA-F]{1,16})/attributes")
_VERSION_PATH = "/0/version"

# What a CORRUPT alarm refuses (alarm and auth requests still apply).
_REFUSED_WHEN_CORRUPT = frozenset({"put", "range", "delete_range", "txn", "compaction", "lease_grant",
                                   "lease_revoke"})
_LEASE_KINDS = frozenset({"lease_grant", "lease_revoke", "lease_checkpoint"})

# InternalRaftRequest fields that change nothing: nothing to apply here.
_NO_EFFECT = frozenset({"range"})


class QuotaExceeded(NoSpaceError):
    """A request applied although it did not fit the quota: its proposer gets ErrNoSpace once the member has
    raised the NOSPACE alarm (etcd 3.5.1 does the same)."""


class UnsupportedEntryError(Exception):
    """An entry kind this member cannot apply yet (its effects would be lost)."""


@attrs.frozen
class CompactionResult:
    response: rpc_pb2.CompactionResponse
    compaction: object  # mvcc Compaction, run by the member's compactor
    physical: bool


class EntryApplier:
    def __init__(self, *, store, kv, backend, v2, membership, alarms, apply_conf_change, log, quota=None,
                 lessor=None, lease_now=None, auth=None, auth_now=None) -> None:
        self.store = store
        self.auth = auth  # trietcd.auth.AuthStore; auth entries and permission checks need one
        self._auth_now = auth_now  # the token keeper's clock: () -> seconds
        self._entry_index = 0  # the index of the entry being applied (it names the tokens it creates)
        self._entry_info: AuthInfo | None = None  # who proposed it, from its header
        self.lessor = lessor  # trietcd.lease.Lessor; lease entries need one
        self._lease_now = lease_now  # the lessor's clock: () -> seconds
        self.kv = kv  # mvcc Applier
        self.backend = backend
        self.v2 = v2
        self.membership = membership
        self.alarms = alarms
        self.quota = quota
        self._apply_conf_change = apply_conf_change  # raft: ConfChange -> ConfState
        self.log = log
        self.consistent_index, _ = backend.consistent_index()
        self.unsupported_seen: set[str] = set()
        self.refresh_membership()

    # ---- membership as the v2 store records it

    def refresh_membership(self) -> None:
        members = {}
        for mid, rec in self.v2.members().items():
            members[mid] = MemberInfo(id=mid, name=rec.name, peer_urls=tuple(rec.peer_urls),
                                      client_urls=tuple(rec.client_urls), is_learner=rec.is_learner)
        self.membership.members = members
        self.cluster_version = self.v2.cluster_version()

    # ---- entries

    def apply(self, entries, now_ns: int) -> list[tuple[int, object]]:
        """Applies entries in order; returns (request id, result) for each entry a proposer may wait for."""
        results: list[tuple[int, object]] = []
        for e in entries:
            apply_v3 = e.Index > self.consistent_index
            if e.Type == raft_pb2.EntryNormal:
                if e.Data:
                    out = self._apply_normal(e, apply_v3, now_ns)
                    if out is not None:
                        results.append(out)
            elif e.Type == raft_pb2.EntryConfChange:
                out = self._apply_conf(e, apply_v3)
                if out is not None:
                    results.append(out)
            else:
                raise UnsupportedEntryError(f"entry type {e.Type} at index {e.Index}")
            if apply_v3:
                self.consistent_index = e.Index
                self.backend.set_consistent_index(e.Index, e.Term)
        return results

    def _apply_normal(self, e, apply_v3: bool, now_ns: int):
        data = e.Data
        # A raw v2 Request starts with its ID (field 1, varint); etcd 3.5 never writes field 1 of an
        # InternalRaftRequest, so any other first byte is a v3 request.
        if data[0] == 0x08 and is_v2_request(data):
            req = etcdserver_pb2.Request.FromString(data)
            return req.ID, self._apply_v2(req, apply_v3, now_ns)
        irr = gogo.parse_like_gogo(raft_internal_pb2.InternalRaftRequest, data)  # protobuf's parse first
        rid = irr.header.ID or irr.ID
        if not apply_v3:
            return None
        kind = _request_kind(irr, data)
        if kind is None:
            return None
        self._entry_index = e.Index
        h = irr.header
        self._entry_info = AuthInfo(h.username, h.auth_revision) if h.username or h.auth_revision else None
        try:
            return rid, self._apply_guarded(kind, getattr(irr, kind))
        except (MvccError, LeaseError, AuthError) as exc:
            return rid, exc

    def _apply_guarded(self, kind: str, r):
        """etcd's appliers around the request: corrupt (refuses reads and writes), capped (refuses what
        costs space while NOSPACE is raised), quota (applies, then answers ErrNoSpace when the request did
        not fit; the member raises the alarm)."""
        if kind in _REFUSED_WHEN_CORRUPT and self.alarms.has(rpc_pb2.CORRUPT):
            return CorruptError()
        if kind in QUOTA_FIELDS:
            if self.alarms.has(rpc_pb2.NOSPACE) and (kind != "txn" or txn_cost(r) > 0):
                return NoSpaceError()
            self._check_auth(kind, r)
            fits = self.quota is None or self.quota.available(kind, r)
            result = self._apply_v3(kind, r)
            if not fits and not isinstance(result, BaseException):
                return QuotaExceeded()
            return result
        self._check_auth(kind, r)
        return self._apply_v3(kind, r)

    def _check_auth(self, kind: str, r) -> None:
        """etcd's authApplierV3: the proposer's rights, checked again at the entry's turn (raises AuthError)."""
        if self.auth is not None and self.auth.enabled:
            self.auth.check_entry(kind, r, self._entry_info, self._lease_keys)

    def _lease_keys(self, lease_id: int) -> list[bytes]:
        lease = self.lessor.lookup(lease_id) if self.lessor is not None else None
        return lease.sorted_keys() if lease is not None else []

    def _apply_v3(self, kind: str, r):
        if kind == "put":
            return self.kv.put(r)
        if kind == "delete_range":
            return self.kv.delete_range(r)
        if kind == "txn":
            return self.kv.txn(r)
        if kind == "compaction":
            resp, compaction = self.kv.compaction(r)
            return CompactionResult(resp, compaction, r.physical)
        if kind == "alarm":
            return self._apply_alarm(r)
        if kind in _LEASE_KINDS and self.lessor is not None:
            return self._apply_lease(kind, r)
        if kind in AUTH_KINDS and self.auth is not None:
            resp = self.auth.apply(kind, r, index=self._entry_index, now=self._auth_now())
            resp.header.revision = self.store.current_revision
            return resp
        if kind == "downgrade_info_set":
            return self._apply_downgrade(r)
        if kind in _NO_EFFECT:
            return None
        if kind not in self.unsupported_seen:
            self.unsupported_seen.add(kind)
            self.log.warn("applying an entry kind this member does not support yet; its effects are lost",
                          caller="etcdserver/apply.go", kind=kind)
        return UnsupportedEntryError(kind)

    def _apply_downgrade(self, r) -> None:
        # etcd 3.5's DowngradeInfoSet: the `downgrade` row of the cluster bucket, as Go marshals DowngradeInfo.
        target = r.ver if r.enabled else ""
        row = '{"target-version":%s,"enabled":%s}' % (go_string(target), "true" if r.enabled else "false")
        self.backend.put(schema.CLUSTER, schema.DOWNGRADE, row.encode())
        if r.enabled:
            self.log.info("The server is ready to downgrade", caller="membership/cluster.go",
                          **{"target-version": target, "server-version": trietcd.etcd_version})
        return None

    def _apply_lease(self, kind: str, r):
        # Responses carry the revision after the entry (etcd's newHeader); a revoke deletes the lease's keys
        # and its row in one mvcc write transaction (Lessor.revoke).
        lessor = self.lessor
        if kind == "lease_grant":
            lease = lessor.grant(r.ID, r.TTL, self._lease_now())
            resp = rpc_pb2.LeaseGrantResponse(ID=lease.id, TTL=lease.ttl)
        elif kind == "lease_revoke":
            lessor.revoke(r.ID)
            resp = rpc_pb2.LeaseRevokeResponse()
        else:
            now = self._lease_now()
            for cp in r.checkpoints:
                lessor.checkpoint(cp.ID, cp.remaining_TTL, now)
            resp = rpc_pb2.LeaseCheckpointResponse()
        resp.header.revision = self.store.current_revision
        return resp

    def _apply_alarm(self, r: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        if r.action == rpc_pb2.AlarmRequest.ACTIVATE:
            found = self.alarms.activate(r.memberID, r.alarm)
            for m, a in found:
                self.backend.put(schema.ALARM, schema.alarm_key(m, a), b"")
        elif r.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            found = self.alarms.deactivate(r.memberID, r.alarm)
            for m, a in found:
                self.backend.delete(schema.ALARM, schema.alarm_key(m, a))
        else:
            found = self.alarms.list()
        resp = rpc_pb2.AlarmResponse()
        for m, a in found:
            resp.alarms.add(memberID=m, alarm=a)
        return resp

    def _apply_v2(self, req, apply_v3: bool, now_ns: int):
        self.v2.apply_request(req, now_ns)
        if req.Method == "PUT":
            if req.Path == _VERSION_PATH:
                if apply_v3:
                    # What etcd writes: the version as the v2 store normalized it (go-semver's String()).
                    self.backend.put(schema.CLUSTER, schema.CLUSTER_VERSION, self.v2.cluster_version().encode())
                self.log.info("set cluster version", caller="membership/cluster.go",
                              **{"cluster-version": req.Val})
            elif _ATTRIBUTES_PATH.match(req.Path):
                mid = int(_ATTRIBUTES_PATH.match(req.Path).group(1), 16)
                rec = self.v2.members().get(mid)
                if apply_v3 and rec is not None:
                    self._save_member_once(mid, rec.peer_urls, rec.name, rec.client_urls, rec.is_learner)
        self.refresh_membership()
        return None

    # ---- configuration changes

    def _apply_conf(self, e, apply_v3: bool):
        cc = raft_pb2.ConfChange.FromString(e.Data)
        ctx = json.loads(cc.context) if cc.context else {}
        error = self._validate(cc, ctx)
        if error is not None:
            self._apply_conf_change(raft_pb2.ConfChange(id=cc.id, type=cc.type, node_id=0))
            return cc.id, error
        cs = self._apply_conf_change(cc)
        self.backend.set_conf_state(cs)
        nid = cc.node_id
        if cc.type in (raft_pb2.ConfChangeAddNode, raft_pb2.ConfChangeAddLearnerNode):
            peer_urls = ctx.get("peerURLs") or []
            if ctx.get("isPromote"):
                self.v2.promote_member(nid)
            else:
                self.v2.add_member(nid, peer_urls, cc.type == raft_pb2.ConfChangeAddLearnerNode)
                if apply_v3:
                    self._save_member_once(nid, peer_urls, ctx.get("name", ""), ctx.get("clientURLs") or (),
                                           bool(ctx.get("isLearner")))
        elif cc.type == raft_pb2.ConfChangeRemoveNode:
            self.v2.remove_member(nid)
            if apply_v3:
                self.backend.delete(schema.MEMBERS, schema.member_key(nid))
                self.backend.put(schema.MEMBERS_REMOVED, schema.member_key(nid), schema.MEMBER_REMOVED_VALUE)
        elif cc.type == raft_pb2.ConfChangeUpdateNode:
            self.v2.update_raft_attributes(nid, ctx.get("peerURLs") or [], bool(ctx.get("isLearner")))
        self.refresh_membership()
        return cc.id, None

    def _validate(self, cc, ctx) -> Exception | None:
        # etcd's ValidateConfigurationChange, on membership as the v2 store records it (a counted read,
        # as etcd's, so the snapshot's Stats stay equal to etcd's).
        members, removed = self.v2.members_from_store()
        nid = cc.node_id
        if nid in removed:
            return MembershipError("membership: ID removed")
        if cc.type in (raft_pb2.ConfChangeAddNode, raft_pb2.ConfChangeAddLearnerNode):
            if ctx.get("isPromote"):
                if nid not in members:
                    return MembershipError("membership: ID not found")
                if not members[nid].is_learner:
                    return MembershipError("membership: can only promote a learner member")
                return None
            if nid in members:
                return MembershipError("membership: ID exists")
            used = {u for m in members.values() for u in m.peer_urls}
            if any(u in used for u in ctx.get("peerURLs") or []):
                return MembershipError("membership: peerURL exists")
            if ctx.get("isLearner") and any(m.is_learner for m in members.values()):
                return MembershipError("membership: too many learner members in cluster")
            return None
        if nid not in members:
            return MembershipError("membership: ID not found")
        if cc.type == raft_pb2.ConfChangeUpdateNode:
            used = {u for m in members.values() if m.id != nid for u in m.peer_urls}
            if any(u in used for u in ctx.get("peerURLs") or []):
                return MembershipError("membership: peerURL exists")
        return None

    def _save_member_once(self, mid: int, peer_urls, name: str, client_urls, is_learner: bool) -> None:
        key = schema.member_key(mid)
        if self.backend.get(schema.MEMBERS, key) is not None:
            return  # etcd 3.5.1 writes a member row once; later updates are dropped
        self.backend.put(schema.MEMBERS, key, schema.member_json(
            mid, list(peer_urls), name=name, client_urls=tuple(client_urls), is_learner=is_learner))


class MembershipError(Exception):
    pass


def _request_kinds_by_tag() -> dict[bytes, str]:
    return {uvarint(f.number << 3 | 2): f.name for f in raft_internal_pb2.InternalRaftRequest.DESCRIPTOR.fields
            if f.name not in ("header", "ID")}


_KIND_BY_TAG = _request_kinds_by_tag()  # every field number is under 2**11: tags of one or two bytes


def _request_kind(irr, data: bytes) -> str | None:
    # InternalRaftRequest has no oneof: exactly one request field is set. Entries are written in field
    # order, request first for all but the auth and membership fields (after the header, field 100): the
    # first tag names the request without listing the message's fields.
    kind = _KIND_BY_TAG.get(data[:1]) or _KIND_BY_TAG.get(data[:2])
    if kind is not None:
        return kind
    for field, _ in irr.ListFields():
        if field.name not in ("header", "ID"):
            return field.name
    return None
