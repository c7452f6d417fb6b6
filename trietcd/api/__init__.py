"""etcd's client API: one module per gRPC service, the JSON gateway, errors.

`build_registry(server)` registers every etcd v3 service with the handlers
that exist; a method without one answers UNIMPLEMENTED, as a server that
does not know it would.
"""

from __future__ import annotations

from proto import gogo
from proto.etcdserverpb import rpc_pb2
from proto.v3electionpb import v3election_pb2
from proto.v3lockpb import v3lock_pb2
from trietcd.api.health import HEALTH_SERVICE, NOT_SERVING, HealthService
from trietcd.server.errors import ServerError
from trietcd.wire import Registry

__all__ = ["build_registry"]


def build_registry(server) -> Registry:
    from trietcd.api.auth import AuthService
    from trietcd.api.cluster import ClusterService
    from trietcd.api.election import ElectionService
    from trietcd.api.kv import KVService
    from trietcd.api.lease import LeaseService
    from trietcd.api.lock import LockService
    from trietcd.api.maintenance import MaintenanceService
    from trietcd.api.watch import WatchService

    kv = KVService(
        server.store,
        server.header,
        max_txn_ops=server.config.max_txn_ops,
        propose=_proposer(server),
        read_barrier=server.read_barrier,
        header_field=server.header_field,
        auth=server.auth,
        propose_soon=_proposer_soon(server),
        read_ready=server.read_ready,
    )
    leases = LeaseService(server)
    services = {
        "KV": kv.handlers(),
        "Watch": WatchService(
            server.watch_hub, server.header, max_request_bytes=server.config.max_request_bytes,
            header_field=server.header_field, auth=server.auth,
        ).handlers(),
        "Lease": leases.handlers(),
        "Cluster": ClusterService(server).handlers(),
        "Maintenance": MaintenanceService(server).handlers(),
        "Auth": AuthService(server).handlers(),
    }
    fast = {"KV": kv.fast_handlers(), "Lease": leases.fast_handlers()}
    registry = Registry(decode_fallback=_decode_like_etcd)
    for name, handlers in services.items():
        registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name[name], handlers, fast.get(name))
    grpc_health = HealthService()
    server.on_stop.append(lambda: grpc_health.set_status(NOT_SERVING))
    registry.add_service(HEALTH_SERVICE, grpc_health.handlers())
    registry.add_service(v3lock_pb2.DESCRIPTOR.services_by_name["Lock"], LockService(server, kv).handlers())
    registry.add_service(v3election_pb2.DESCRIPTOR.services_by_name["Election"],
                         ElectionService(server, kv).handlers())
    return registry


def _decode_like_etcd(request_type, data: bytes, exc):
    # Only after protobuf refused `data`: etcd's own decoder may still accept it,
    # and when it does not, its error text is what etcd's clients see.
    return gogo.parse_like_gogo(request_type, data)


def _proposer(server):
    from trietcd.api import errors

    async def propose(field: str, request, auth=None):
        try:
            return await server.propose(field, request, auth=auth)
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None

    return propose


def _proposer_soon(server):
    from trietcd.api import errors

    def propose_soon(field: str, request, done) -> bool:
        try:
            return server.propose_soon(field, request, done)
        except ServerError as exc:
            raise errors.to_grpc_error(exc) from None

    return propose_soon
