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


# ---- /livez and /readyz (etcd 3.5.9+) ---------------------------------------------------------------

from proto.etcdserverpb import rpc_pb2
from trietcd.api.health import Probes
from trietcd.api.http import http_app, metrics_app
from trietcd.metrics import Registry as MetricsRegistry
from trietcd.server.errors import RequestTimeoutError
from trietcd.wire.http1 import Request


class FakeAlarms:
    def __init__(self):
        self.active = set()

    def has(self, alarm):
        return alarm in self.active


class FakeStore:
    def __init__(self):
        self.broken = None

    def range(self, key, range_end=b"", *, limit=0):
        if self.broken:
            raise self.broken


class FakeMember:
    request_timeout_s = 7.0

    def __init__(self):
        self.alarms = FakeAlarms()
        self.store = FakeStore()
        self.leader = True
        self.reads = 0

    async def read_barrier(self):
        self.reads += 1
        if not self.leader:
            await trio.sleep_forever()  # a ReadIndex nobody answers

    async def health(self, query):
        return True, ""


def _apps(member, metrics):
    probes = Probes(member, metrics)
    client = http_app(gateway=None, health=member.health, version=dict, metrics=metrics, probes=probes)
    return client, metrics_app(health=member.health, metrics=metrics, probes=probes)


async def _get(app, target, method="GET"):
    response = await app(Request(method, target, (), b"", ""))
    return response.status, dict(response.headers).get("Content-Type"), response.body


async def test_livez_and_readyz_ok_with_verbose_lines():
    member, metrics = FakeMember(), MetricsRegistry()
    for app in _apps(member, metrics):
        assert await _get(app, "/livez") == (200, "text/plain; charset=utf-8", b"ok\n")
        assert await _get(app, "/readyz") == (200, "text/plain; charset=utf-8", b"ok\n")
        assert (await _get(app, "/livez?verbose"))[2] == b"[+]serializable_read ok\nok\n"
        assert (await _get(app, "/readyz?verbose"))[2] == (
            b"[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n")
        assert (await _get(app, "/readyz/linearizable_read?verbose"))[2] == b"[+]linearizable_read ok\nok\n"
        assert (await _get(app, "/readyz?exclude=linearizable_read&exclude=nope&verbose"))[2] == (
            b"[+]data_corruption ok\n[+]serializable_read ok\nok\n")
    assert member.reads == 2 * 3
    text = metrics.render().decode()
    assert 'etcd_server_healthcheck{name="linearizable_read",type="readyz"} 1' in text
    assert 'etcd_server_healthchecks_total{name="serializable_read",status="success",type="livez"} 4' in text


async def test_unknown_check_paths_are_404_and_only_get_is_allowed():
    client, _ = _apps(FakeMember(), MetricsRegistry())
    for path in ("/livez/", "/livez/linearizable_read", "/readyz/nope", "/readyz/"):
        assert (await _get(client, path))[0] == 404, path
    status, _, body = await _get(client, "/readyz", "POST")
    assert (status, body) == (405, b"Method Not Allowed\n")


async def test_readyz_fails_on_corrupt_alarm_and_without_leader(autojump_clock):
    member = FakeMember()
    client, _ = _apps(member, MetricsRegistry())
    member.alarms.active.add(rpc_pb2.CORRUPT)
    assert await _get(client, "/livez") == (200, "text/plain; charset=utf-8", b"ok\n")
    assert await _get(client, "/readyz") == (503, "text/plain; charset=utf-8", (
        b"[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n"
        b"[+]linearizable_read ok\n\n"))
    member.alarms.active.clear()
    member.leader = False
    start = trio.current_time()
    status, _, body = await _get(client, "/readyz")
    assert trio.current_time() - start == pytest.approx(member.request_timeout_s)
    assert (status, body) == (503, (b"[+]data_corruption ok\n[+]serializable_read ok\n"
                                    b"[-]linearizable_read failed: etcdserver: request timed out\n\n"))
    assert (await _get(client, "/readyz?exclude=linearizable_read"))[0] == 200


async def test_livez_fails_when_the_store_cannot_be_read():
    member = FakeMember()
    client, _ = _apps(member, MetricsRegistry())
    member.store.broken = RequestTimeoutError()
    status, _, body = await _get(client, "/livez")
    assert (status, body) == (503, b"[-]serializable_read failed: RequestTimeoutError\n\n")
