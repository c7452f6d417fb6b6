import pytest
import trio
import trio.testing

from trietcd.api.health import HEALTH_SERVICE, NOT_SERVING, SERVING, HealthService
from trietcd.wire import GrpcError, Registry, Status



def _request(service: str = ""):
    registry = Registry()
    registry.add_service(HEALTH_SERVICE, HealthService().handlers())
    return registry.lookup("/grpc.health.v1.Health/Check").request_type(service=service)


async def test_check_serves_the_empty_name_and_refuses_others_like_etcd():
    # Observed from etcd 3.5.1: "" -> SERVING; "foo" -> NOT_FOUND "unknown service".
    health = HealthService()
    assert (await health.Check(_request(), None)).status == SERVING
    with pytest.raises(GrpcError) as info:
        await health.Check(_request("foo"), None)
    assert (info.value.code, info.value.message) == (Status.NOT_FOUND, "unknown service")


async def test_watch_streams_changes():
    health = HealthService()
    sent = []

    class Call:
        async def send(self, msg):
            sent.append(msg.status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(health.Watch, _request(), Call())
        await trio.testing.wait_all_tasks_blocked()
        health.set_status(NOT_SERVING)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert sent == [SERVING, NOT_SERVING]
