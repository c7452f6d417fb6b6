"""Health probes: the standard gRPC health service etcd registers, and the HTTP /livez and /readyz of
etcd 3.5.9+.

grpc.health.v1.Health: probes such as grpc-health-probe ask it; etcd 3.5.1 answers SERVING for the
empty service name while it runs and NOT_FOUND "unknown service" for any other name. The messages are
gRPC's own (`grpc/health/v1/health.proto`), described here field for field so no extra generated
module is needed.

/livez and /readyz (etcd 3.5.9's `etcdhttp/health.go`, served beside 3.5.1's /health):
- /livez runs `serializable_read`; /readyz runs `data_corruption` (no CORRUPT alarm), `serializable_read`
  and `linearizable_read` (a ReadIndex through the leader, so it fails without one). Each check also has
  its own path, /readyz/<name>; `?exclude=<name>` skips one (unknown names are ignored).
- 200 "ok\n" (with `?verbose`, one "[+]<name> ok" line per check first); 503 with the
  "[-]<name> failed: <error>" / "[+]<name> ok" lines when a check fails; GET only (405 otherwise).
- etcd runs the checks in Go map order; here they run in the order above.
"""

from __future__ import annotations

import urllib.parse

import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from proto.etcdserverpb import rpc_pb2
from trietcd import metrics as metrics_mod
from trietcd.server.errors import ServerError
from trietcd.wire import GrpcError, Status
from trietcd.wire.http1 import Request, Response

__all__ = ["HEALTH_SERVICE", "NOT_SERVING", "SERVING", "HealthService", "Probes"]

UNKNOWN, SERVING, NOT_SERVING = 0, 1, 2


def _build_service():
    f = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    resp = f.message_type.add(name="HealthCheckResponse")
    status = resp.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        status.value.add(name=name, number=number)
    resp.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
                   type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    svc = f.service.add(name="Health")
    svc.method.add(name="Check", input_type=".grpc.health.v1.HealthCheckRequest",
                   output_type=".grpc.health.v1.HealthCheckResponse")
    svc.method.add(name="Watch", input_type=".grpc.health.v1.HealthCheckRequest",
                   output_type=".grpc.health.v1.HealthCheckResponse", server_streaming=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return pool.FindServiceByName("grpc.health.v1.Health")


HEALTH_SERVICE = _build_service()
_Response = message_factory.GetMessageClass(HEALTH_SERVICE.methods_by_name["Check"].output_type)


class HealthService:
    """Owns the serving status; the member sets NOT_SERVING when it stops."""

    def __init__(self) -> None:
        self._status = SERVING
        self._changed = trio.Event()

    def set_status(self, status: int) -> None:
        if status != self._status:
            self._status = status
            self._changed.set()
            self._changed = trio.Event()

    def handlers(self) -> dict:
        return {"Check": self.Check, "Watch": self.Watch}

    async def Check(self, request, call):
        if request.service:
            raise GrpcError(Status.NOT_FOUND, "unknown service")
        return _Response(status=self._status)

    async def Watch(self, request, call) -> None:
        # grpc-go's health server streams SERVICE_UNKNOWN for unknown names.
        if request.service:
            await call.send(_Response(status=3))
            await trio.sleep_forever()
        while True:
            changed = self._changed
            await call.send(_Response(status=self._status))
            await changed.wait()


# ---- /livez and /readyz ----------------------------------------------------------------------------

_TEXT_HEADERS = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
# etcd's texts for the errors a read can fail with here (api/errors.py maps them for gRPC).
_ERROR_TEXTS = {
    "RequestTimeoutError": "etcdserver: request timed out",
    "StoppedError": "etcdserver: server stopped",
    "ProposalDroppedError": "etcdserver: request timed out",
}


class Probes:
    """The /livez and /readyz handlers of one member."""

    def __init__(self, member, registry: metrics_mod.Registry | None = None) -> None:
        self._member = member
        registry = registry or metrics_mod.default_registry()
        self._gauge = registry.get("etcd_server_healthcheck") or registry.gauge(
            "etcd_server_healthcheck", "The result of each kind of healthcheck.", ["name", "type"])
        self._counter = registry.get("etcd_server_healthchecks_total") or registry.counter(
            "etcd_server_healthchecks_total", "The total number of each kind of healthcheck.",
            ["name", "status", "type"])  # label names sorted, as client_golang writes them
        self._checks = {
            "livez": {"serializable_read": self._serializable_read},
            "readyz": {"data_corruption": self._data_corruption, "serializable_read": self._serializable_read,
                       "linearizable_read": self._linearizable_read},
        }

    def handles(self, path: str) -> bool:
        kind, _, name = path[1:].partition("/")
        checks = self._checks.get(kind)
        return checks is not None and (name == "" and "/" not in path[1:] or name in checks)

    async def serve(self, request: Request, path: str, query: str) -> Response:
        """The answer for a path `handles` accepted."""
        if request.method != "GET":
            return Response(405, (("Allow", "GET"), *_TEXT_HEADERS), b"Method Not Allowed\n")
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        kind, _, only = path[1:].partition("/")
        checks = self._checks[kind]
        if only:
            names = [only]
        else:
            excluded = {e for e in params.get("exclude", ()) if e}
            names = [n for n in checks if n not in excluded]
        lines = []
        ok = True
        for name in names:
            error = await checks[name]()
            status = "success" if error is None else "error"
            self._gauge.labels(name, kind).set(1 if error is None else 0)
            self._counter.labels(name, status, kind).inc()
            if error is None:
                lines.append(f"[+]{name} ok\n")
            else:
                ok = False
                lines.append(f"[-]{name} failed: {error}\n")
        reason = "".join(lines)
        if not ok:
            # http.Error: the text and a newline.
            return Response(503, _TEXT_HEADERS, (reason + "\n").encode())
        body = (reason if "verbose" in params else "") + "ok\n"
        return Response(200, _TEXT_HEADERS, body.encode())

    async def _data_corruption(self) -> str | None:
        if self._member.alarms.has(rpc_pb2.CORRUPT):
            return "alarm activated: CORRUPT"
        return None

    async def _serializable_read(self) -> str | None:
        await trio.lowlevel.checkpoint()
        try:
            self._member.store.range(b"", limit=1)
        except Exception as exc:  # noqa: BLE001 (a read failing for any reason is what the probe reports)
            return str(exc) or type(exc).__name__
        return None

    async def _linearizable_read(self) -> str | None:
        member = self._member
        try:
            with trio.fail_after(member.request_timeout_s):
                await member.read_barrier()
        except trio.TooSlowError:
            return _ERROR_TEXTS["RequestTimeoutError"]
        except ServerError as exc:
            return _ERROR_TEXTS.get(type(exc).__name__) or str(exc) or type(exc).__name__
        return await self._serializable_read()
