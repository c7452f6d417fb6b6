"""grpc.health.v1.Health: the standard gRPC health service etcd registers.

Probes such as grpc-health-probe ask it; etcd 3.5.1 answers SERVING for the
empty service name while it runs and NOT_FOUND "unknown service" for any
other name. The messages are gRPC's own (`grpc/health/v1/health.proto`),
described here field for field so no extra generated module is needed.
"""

from __future__ import annotations

import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from trietcd.wire import GrpcError, Status

__all__ = ["HealthService", "HEALTH_SERVICE", "SERVING", "NOT_SERVING"]

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
