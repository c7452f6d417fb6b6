"""etcd 3.5.1's client-port HTTP answers (recorded with curl) from trietcd's http_app, both
called directly and through a real listener."""

import re

import pytest
import trio

from trietcd.api.http import clean_path, http_app
from trietcd.metrics import Registry
from trietcd.wire.conn import ConnectionSet
from trietcd.wire.h2_conn import H2Limits
from trietcd.wire.http1 import Request, Response
from trietcd.wire.listener import serve_url

CORS = (b"Access-Control-Allow-Headers: accept, content-type, authorization\r\n"
        b"Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n"
        b"Access-Control-Allow-Origin: *\r\n")


class State:
    def __init__(self):
        self.healthy = (True, "")
        self.queries = []


@pytest.fixture
def state():
    return State()


@pytest.fixture
def app(state):
    async def health(query):
        state.queries.append(query)
        return state.healthy

    async def gateway(request):
        return Response(200, (("Content-Type", "application/json"),), f"gw {request.target}".encode())

    return http_app(gateway=gateway, health=health, version=lambda: {"etcdserver": "3.5.1", "etcdcluster": "3.5.0"},
                    metrics=Registry())


async def fetch(address, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(raw)
        out = b""
        while data := await stream.receive_some():
            out += data
    # The Date header is the only part that differs between runs.
    return re.sub(rb"Date: [^\r]*\r\n", b"", out)


@pytest.fixture
async def address(nursery, app):
    return await nursery.start(lambda task_status: serve_url(
        "http://127.0.0.1:0", registry=None, http_app=app, h2_limits=H2Limits(), ssl_context=None,
        connections=ConnectionSet(), task_status=task_status))


def get(path, method="GET"):
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


async def test_health_bytes(address, state):
    out = await fetch(address, get("/health"))
    # etcd sets no Content-Type on success: Go sniffs one and writes it after Content-Length.
    assert out == (b"HTTP/1.1 200 OK\r\n" + CORS + b"Content-Length: 29\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                   + b'{"health":"true","reason":""}')
    state.healthy = (False, "RAFT NO LEADER")
    out = await fetch(address, get("/health?exclude=NOSPACE&exclude=CORRUPT&x"))
    assert out == (b"HTTP/1.1 503 Service Unavailable\r\n" + CORS + b"Content-Type: text/plain; charset=utf-8\r\n"
                   b"X-Content-Type-Options: nosniff\r\nContent-Length: 45\r\nConnection: close\r\n\r\n"
                   b'{"health":"false","reason":"RAFT NO LEADER"}\n')
    assert state.queries == [{}, {"exclude": ["NOSPACE", "CORRUPT"], "x": [""]}]


async def test_version_bytes(address):
    out = await fetch(address, get("/version"))
    assert out == (b"HTTP/1.1 200 OK\r\n" + CORS + b"Content-Type: application/json\r\nContent-Length: 44\r\n"
                   b"Connection: close\r\n\r\n" + b'{"etcdserver":"3.5.1","etcdcluster":"3.5.0"}')


@pytest.mark.parametrize("path", ["/health", "/version"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_get_only_endpoints(address, path, method):
    out = await fetch(address, get(path, method))
    assert out == (b"HTTP/1.1 405 Method Not Allowed\r\n" + CORS + b"Allow: GET\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
                   b"Content-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n")


async def test_head_health_is_405_without_body(address):
    out = await fetch(address, get("/health", "HEAD"))
    assert out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert out.endswith(b"Content-Length: 19\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("path", ["/", "/foo", "/v2/keys", "/metrics/foo", "/health/", "/version/", "/foo?x=1",
                                  "/v3beta", "/readyz"])
async def test_not_found_bytes(address, path):
    out = await fetch(address, get(path))
    assert out == (b"HTTP/1.1 404 Not Found\r\n" + CORS + b"Content-Type: text/plain; charset=utf-8\r\n"
                   b"X-Content-Type-Options: nosniff\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
                   b"404 page not found\n")


@pytest.mark.parametrize("path, location", [("/v3", "/v3/"), ("//health", "/health"), ("/v3/../health", "/health"),
                                            ("/v3/./kv/range?x=1", "/v3/kv/range?x=1")])
async def test_redirects_like_go_servemux(address, path, location):
    out = await fetch(address, get(path))
    body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
    assert out == (b"HTTP/1.1 301 Moved Permanently\r\n" + CORS + b"Content-Type: text/html; charset=utf-8\r\n"
                   b"Location: " + location.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                   b"\r\nConnection: close\r\n\r\n" + body)


@pytest.mark.parametrize("path", ["/health", "/v3/kv/range", "/foo", "*"])
async def test_options_is_empty_200(address, path):
    out = await fetch(address, get(path, "OPTIONS"))
    assert out == b"HTTP/1.1 200 OK\r\n" + CORS + b"Content-Length: 0\r\nConnection: close\r\n\r\n"


async def test_gateway_routing(app):
    for target, expected in [("/v3/kv/range", b"gw /v3/kv/range"), ("/v3beta/kv/range", b"gw /v3/kv/range"),
                             ("/v3/", b"gw /v3/")]:
        response = await app(Request("POST", target, (("Host", "x"),), b"{}", ""))
        assert response.body == expected
        assert response.headers[-1] == ("Content-Type", "application/json")


async def test_metrics_any_method_and_health_counters(app, state):
    state.healthy = (False, "ALARM NOSPACE")
    await app(Request("GET", "/health", (), b"", ""))
    for method in ("GET", "POST"):
        response = await app(Request(method, "/metrics", (), b"", ""))
        assert response.status == 200
        assert ("Content-Type", "text/plain; version=0.0.4; charset=utf-8") in response.headers
        assert b"etcd_server_health_failures 1\n" in response.body
        assert b"etcd_server_health_success 0\n" in response.body


async def test_cors_restricted_origins(state):
    async def health(query):
        return True, ""

    app = http_app(gateway=None, health=health, version=dict, metrics=Registry(), cors=("http://a.example",))
    plain = await app(Request("GET", "/health", (), b"", ""))
    assert [h for h in plain.headers if h[0].startswith("Access")] == []
    allowed = await app(Request("GET", "/health", (("Origin", "http://a.example"),), b"", ""))
    assert ("Access-Control-Allow-Origin", "http://a.example") in allowed.headers
    no_gateway = await app(Request("POST", "/v3/kv/range", (), b"", ""))
    assert no_gateway.status == 404


def test_clean_path():
    assert clean_path("") == "/"
    assert clean_path("/a//b/./c/../d/") == "/a/b/d/"
    assert clean_path("/..") == "/"
    assert clean_path("/v3/") == "/v3/"
    assert clean_path("a") == "/a"


async def test_metrics_listener_app():
    from trietcd.api.http import metrics_app

    async def health(query):
        return True, ""

    registry = Registry()
    app = metrics_app(health=health, metrics=registry)
    ok = await app(Request("GET", "/health", (), b"", ""))
    assert (ok.status, ok.headers, ok.body) == (200, (), b'{"health":"true","reason":""}')
    assert (await app(Request("GET", "/metrics", (), b"", ""))).body.startswith(b"# HELP etcd_server_health_failures")
    for method, path, status in [("GET", "/version", 404), ("POST", "/v3/kv/range", 404), ("OPTIONS", "/health", 405),
                                 ("POST", "/health", 405), ("GET", "//health", 301)]:
        response = await app(Request(method, path, (), b"", ""))
        assert response.status == status, (method, path)
        assert not any(name.startswith("Access-Control") for name, _ in response.headers)
