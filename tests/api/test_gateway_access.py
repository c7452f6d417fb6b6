"""etcd 3.5.1's access control on the client port's HTTP side (--host-whitelist, --cors): the answers
were recorded with curl from `etcd --host-whitelist good.com,127.0.0.1 --cors http://a.com:80`."""

from trietcd.api.http import go_hostname, http_app
from trietcd.metrics import Registry
from trietcd.wire.http1 import Request, Response

REFUSED_EVIL = (
    "\netcd received your request, but the Host header was unrecognized.\n\n"
    "To fix this, choose one of the following options:\n"
    "- Enable TLS, then any HTTPS request will be allowed.\n"
    "- Add the hostname you want to use to the whitelist in settings.\n"
    '  - e.g. etcd --host-whitelist "evil.com"\n\n'
    'This requirement has been added to help prevent "DNS Rebinding" attacks (CVE-2018-5702).\n\n'
)
CORS_A = (
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "http://a.com:80"),
)


def make_app(**kwargs):
    async def health(query):
        return True, ""

    async def gateway(request):
        return Response(200, (("Content-Type", "application/json"),), b"{}")

    return http_app(gateway=gateway, health=health, version=dict, metrics=Registry(), **kwargs)


def get(path, host, *extra, method="GET"):
    return Request(method, path, (("Host", host), *extra), b"", "ipv4:127.0.0.1:40000")


def test_go_hostname():
    assert [go_hostname(h) for h in ("evil.com:99", "good.com", "[::1]:80", "[::1]", "a:b:c", "")] == [
        "evil.com", "good.com", "::1", "[::1]", "a:b:c", ""]


async def test_an_unlisted_host_is_refused_on_every_path():
    app = make_app(host_whitelist=("good.com", "127.0.0.1"), cors=("http://a.com:80",))
    for path, method in (("/health", "GET"), ("/v3/kv/range", "POST"), ("/metrics", "GET"), ("/nowhere", "OPTIONS")):
        response = await app(get(path, "evil.com:99", ("Origin", "http://a.com:80"), method=method))
        assert response.status == 421
        assert response.headers == (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
        assert response.body.decode() == REFUSED_EVIL
    refused = await app(get("/health", "[::1]:80"))
    assert (refused.status, b'whitelist "::1"' in refused.body) == (421, True)


async def test_a_listed_host_is_served_with_cors_for_a_listed_origin():
    app = make_app(host_whitelist=("good.com", "127.0.0.1"), cors=("http://a.com:80",))
    response = await app(get("/health", "good.com", ("Origin", "http://a.com:80")))
    assert (response.status, response.body) == (200, b'{"health":"true","reason":""}')
    assert response.headers == CORS_A
    other_origin = await app(get("/v3/kv/range", "127.0.0.1:2379", ("Origin", "http://b.com:80"), method="POST"))
    assert (other_origin.status, other_origin.headers) == (200, (("Content-Type", "application/json"),))


async def test_an_empty_or_star_whitelist_allows_every_host():
    for whitelist in ((), ("*",), ("*", "good.com")):
        response = await make_app(host_whitelist=whitelist)(get("/health", "evil.com"))
        assert response.status == 200


async def test_a_gateway_request_with_a_certificate_name_is_refused_while_cert_auth_and_auth_are_on():
    auth_on = [True]
    app = make_app(refuses_gateway_cn=lambda: auth_on[0])

    def with_cn(path, cn="alice"):
        return Request("POST", path, (("Host", "x"),), b"{}", "ipv4:127.0.0.1:40000", tls_common_name=cn)

    for path in ("/v3/kv/range", "/v3beta/kv/range"):
        response = await app(with_cn(path))
        assert (response.status, response.body) == (
            400, b"CommonName of client sending a request against gateway will be ignored and not used as expected\n")
        assert response.headers == (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    assert (await app(with_cn("/health"))).status == 405  # served as ever (POST): only the gateway is refused
    assert (await app(with_cn("/v3/kv/range", cn=None))).status == 200
    auth_on[0] = False
    assert (await app(with_cn("/v3/kv/range"))).status == 200
