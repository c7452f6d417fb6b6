"""The v3electionpb.Election service (etcd 3.5.1 `etcdserver/api/v3election/election.go` over
`client/v3/concurrency/election.go`). The key work is `trietcd.api.lock.Keys`; its module says how
leases, errors and cleanup behave.

Rules, as etcd's:
- A candidate of election `name` is the key `name/<lease in hex>` holding its value; the leader is the
  key under `name/` with the lowest create revision. Campaign writes the key (a key already there
  with another value gets the new value, if it is still the same key) and waits, as Lock does, until
  every candidate created before it is gone. A Campaign call that ends while waiting resigns (as
  nobody, like Lock's cleanup: under auth the resignation is refused, as etcd's is).
- Proclaim and Resign act on the key of the given LeaderKey only while its create revision is still
  the given `rev`: Proclaim then puts the new value (else "election: not leader"), Resign deletes it
  (else nothing, and no error). Both need the `leader` field. Their lease, 0 included, is a session
  lease as in Lock (0 grants one).
- Leader answers the leader's key-value ("election: no leader" when there is none).
- Observe streams the leader's key-value, then each new value it takes, until it is deleted; then the
  next leader, as it is found. With no leader it waits for the first put under `name/`. A failed
  read or watch ends the stream without an error, as etcd's does.
"""

from __future__ import annotations

from contextlib import aclosing

import trio

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2
from proto.v3electionpb import v3election_pb2 as epb
from trietcd.api.lock import (
    Keys,
    created_is,
    delete_if_created,
    lease_key,
    prefix_end,
    unknown,
)
from trietcd.wire.grpc_call import GrpcError

__all__ = ["ElectionService"]

ERR_MISSING_LEADER_KEY = '"leader" field must be provided'
ERR_NOT_LEADER = "election: not leader"
ERR_NO_LEADER = "election: no leader"


class ElectionService:
    """`server` gives `leases`, `watch_hub` and `header(revision)`; `kv` is the member's KVService."""

    def __init__(self, server, kv) -> None:
        self._server = server
        self._keys = Keys(server, kv)

    def handlers(self) -> dict:
        return {
            "Campaign": self.Campaign,
            "Proclaim": self.Proclaim,
            "Leader": self.Leader,
            "Observe": self.Observe,
            "Resign": self.Resign,
        }

    async def Campaign(self, request: epb.CampaignRequest, call) -> epb.CampaignResponse:
        keys = self._keys
        lease_id = await keys.session_lease(request.lease, call)
        prefix = request.name + b"/"
        key = lease_key(prefix, lease_id)
        resp = await keys.txn(_campaign_request(key, request.value, lease_id), call)
        leader_rev = resp.header.revision
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            leader_rev = kv.create_revision
            if kv.value != request.value:
                try:
                    await self._proclaim(key, leader_rev, lease_id, request.value, call)
                except GrpcError:
                    await self._resign_quietly(key, leader_rev, call)
                    raise
        try:
            await keys.wait_deletes(prefix, leader_rev - 1, call)
        except trio.Cancelled:
            await keys.delete_shielded(key, if_created=leader_rev)
            raise
        leader = epb.LeaderKey(name=request.name, key=key, rev=leader_rev, lease=lease_id)
        return epb.CampaignResponse(header=resp.header, leader=leader)

    async def Proclaim(self, request: epb.ProclaimRequest, call) -> epb.ProclaimResponse:
        if not request.HasField("leader"):
            raise unknown(ERR_MISSING_LEADER_KEY)
        leader = request.leader
        lease_id = await self._keys.session_lease(leader.lease, call)
        resp = await self._proclaim(leader.key, leader.rev, lease_id, request.value, call)
        return epb.ProclaimResponse(header=resp.header)

    async def Resign(self, request: epb.ResignRequest, call) -> epb.ResignResponse:
        if not request.HasField("leader"):
            raise unknown(ERR_MISSING_LEADER_KEY)
        leader = request.leader
        await self._keys.session_lease(leader.lease, call)
        resp = await self._keys.txn(delete_if_created(leader.key, leader.rev), call)
        return epb.ResignResponse(header=resp.header)

    async def Leader(self, request: epb.LeaderRequest, call) -> epb.LeaderResponse:
        resp = await self._keys.first_created(request.name + b"/", call)
        if not resp.kvs:
            raise unknown(ERR_NO_LEADER)
        return epb.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    async def Observe(self, request: epb.LeaderRequest, call) -> None:
        prefix = request.name + b"/"
        try:
            while True:
                header, kv = await self._current_leader(prefix, call)
                await call.send(epb.LeaderResponse(header=header, kv=kv))
                await self._follow(kv.key, header.revision + 1, call)
        except GrpcError:
            return

    # ---- helpers

    async def _proclaim(self, key: bytes, rev: int, lease_id: int, value: bytes, call) -> rpc_pb2.TxnResponse:
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease_id))
        resp = await self._keys.txn(rpc_pb2.TxnRequest(compare=[created_is(key, rev)], success=[put]), call)
        if not resp.succeeded:
            raise unknown(ERR_NOT_LEADER)
        return resp

    async def _resign_quietly(self, key: bytes, rev: int, call) -> None:
        try:
            await self._keys.txn(delete_if_created(key, rev), call)
        except GrpcError:
            pass

    async def _current_leader(self, prefix: bytes, call) -> tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue]:
        """The leader's header and key-value; with no leader, the first key put under the prefix, its
        header at the put's revision."""
        resp = await self._keys.first_created(prefix, call)
        if resp.kvs:
            return resp.header, resp.kvs[0]
        # From the revision after the read's (nothing was under the prefix at it), as Keys.wait_deletes.
        watch = self._keys.watch(prefix, prefix_end(prefix), resp.header.revision + 1)
        async with aclosing(watch) as responses:
            async for wresp in responses:
                for ev in wresp.events:
                    if not ev.deleted:
                        return self._server.header(ev.kv.mod_revision), _key_value(ev.kv)
        raise AssertionError("a watch ends only by an error")

    async def _follow(self, key: bytes, start_revision: int, call) -> None:
        """Sends each new value of the leader's `key` from `start_revision` on; returns once it is
        deleted."""
        async with aclosing(self._keys.watch(key, b"", start_revision)) as responses:
            async for wresp in responses:
                for ev in wresp.events:
                    if ev.deleted:
                        return
                    await call.send(epb.LeaderResponse(header=self._server.header(wresp.revision),
                                                       kv=_key_value(ev.kv)))


def _campaign_request(key: bytes, value: bytes, lease_id: int) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[created_is(key, 0)],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease_id))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )


def _key_value(kv) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=kv.value, lease=kv.lease)
