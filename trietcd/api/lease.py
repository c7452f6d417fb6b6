"""The etcdserverpb.Lease service (etcd 3.5.1 `etcdserver/api/v3rpc/lease.go`, `v3_server.go` Lease*).

- LeaseGrant with ID 0 gets its ID at proposal time (the member's `leases.grant`); the response carries
  the revision at which the grant applied.
- LeaseKeepAlive serves one request at a time per stream, for any number of leases. Each response's header
  is taken before the renewal (so a keep-alive answered at revision r renewed a lease that was alive at r);
  an unknown or revoked lease is answered with TTL 0; the stream ends when the client half-closes.
- LeaseTimeToLive of an unknown lease answers TTL -1 (not an error), as etcd does.
"""

from __future__ import annotations

from proto.etcdserverpb import rpc_pb2
from trietcd import lease
from trietcd.api import errors
from trietcd.auth import AuthError
from trietcd.server.errors import ServerError

__all__ = ["LeaseService"]

errors.register(lease.LeaseNotFoundError, errors.ErrGRPCLeaseNotFound)
errors.register(lease.LeaseExistsError, errors.ErrGRPCLeaseExist)
errors.register(lease.LeaseTTLTooLargeError, errors.ErrGRPCLeaseTTLTooLarge)
errors.register(lease.NotPrimaryError, errors.ErrGRPCNotLeader)

_FAILURES = (ServerError, lease.LeaseError, AuthError)


class LeaseService:
    """`server` gives: `leases` (trietcd/server/lessor.py LeaseKeeper), `header(revision=None)` and `store`."""

    def __init__(self, server) -> None:
        self._server = server
        self._leases = server.leases
        self._auth = getattr(server, "auth", None)  # the member's AuthKeeper

    def handlers(self) -> dict:
        return {
            "LeaseGrant": self.LeaseGrant,
            "LeaseRevoke": self.LeaseRevoke,
            "LeaseKeepAlive": self.LeaseKeepAlive,
            "LeaseTimeToLive": self.LeaseTimeToLive,
            "LeaseLeases": self.LeaseLeases,
        }

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, call) -> rpc_pb2.LeaseGrantResponse:
        try:
            await self._caller(call)  # a bad token fails the call, as any proposal's
            resp = await self._leases.grant(request)
        except _FAILURES as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, call) -> rpc_pb2.LeaseRevokeResponse:
        try:
            if self._auth is None:
                resp = await self._leases.revoke(request.ID)
            else:
                # Proposed with the caller: the revoke needs write permission on the lease's keys.
                resp = await self._server.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=request.ID),
                                                  auth=await self._caller(call))
        except _FAILURES as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    def fast_handlers(self) -> dict:
        """For Registry.add_service(..., fast=...): keep-alives renewed in the connection's task while the
        renewal needs no waiting (trietcd.wire.Method.fast); the first that does hands the stream to
        LeaseKeepAlive."""
        return {"LeaseKeepAlive": self.keep_alive_now}

    def keep_alive_now(self, req: rpc_pb2.LeaseKeepAliveRequest, call):
        header = self._server.header()  # before the renewal, as LeaseKeepAlive takes it
        try:
            ttl = self._leases.renew_now(req.ID)
        except lease.LeaseNotFoundError:
            ttl = 0
        if ttl is None:
            return None
        return rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, header=header, TTL=ttl)

    async def LeaseKeepAlive(self, call) -> None:
        async for req in call.requests():
            # The header first: its revision is at most the one at which the lease was renewed.
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, header=self._server.header())
            try:
                resp.TTL = await self._leases.renew(req.ID)
            except lease.LeaseNotFoundError:
                resp.TTL = 0
            except _FAILURES as exc:
                raise errors.to_grpc_error(exc) from None
            await call.send(resp)

    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest, call) -> rpc_pb2.LeaseTimeToLiveResponse:
        try:
            resp = await self._leases.time_to_live(request.ID, request.keys)
        except lease.LeaseNotFoundError:
            resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        except _FAILURES as exc:
            raise errors.to_grpc_error(exc) from None
        return self._filled(resp)

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, call) -> rpc_pb2.LeaseLeasesResponse:
        return self._filled(self._leases.leases())

    async def _caller(self, call):
        return None if self._auth is None else await self._auth.auth_info(call)

    def _filled(self, resp):
        # etcd's header.fill: the response's revision if it has one, else the current one.
        resp.header.CopyFrom(self._server.header(resp.header.revision or None))
        return resp
