"""The HTTP/1.1 side of etcd 3.5.1's client port: /health, /version, /metrics and the /v3/ JSON
gateway, routed the way etcd's handler chain does it:

- every response carries the CORS headers for the allowed origin ("*" by default);
- OPTIONS answers 200 with an empty body, for any path;
- `/v3beta/...` becomes `/v3/...`;
- Go's ServeMux rules: an unclean path (`//health`, `/v3/../health`) is redirected (301) to its
  clean form, `/v3` to `/v3/`; unknown paths get "404 page not found";
- /health and /version answer only GET (405 with `Allow: GET` otherwise); /metrics any method.

Header names are written sorted, as Go's net/http writes a handler's headers.
"""

import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

import attrs

from trietcd import metrics as metrics_mod
from trietcd.gojson import go_string
from trietcd.wire.http1 import HttpApp, Request, Response, split_target

__all__ = ["http_app", "metrics_app", "clean_path", "HealthCheck"]

# health(query) -> (healthy, reason); query holds the URL's parameters (e.g. {"exclude": ["NOSPACE"]}).
HealthCheck = Callable[[dict[str, list[str]]], Awaitable[tuple[bool, str]]]

_TEXT = "text/plain; charset=utf-8"
_NOSNIFF = ("X-Content-Type-Options", "nosniff")


def clean_path(path: str) -> str:
    """Go's net/http cleanPath: rooted, no empty/"."/".." elements, trailing slash kept."""
    if not path:
        return "/"
    if path[0] != "/":
        path = "/" + path
    parts: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if parts:
                parts.pop()
            continue
        parts.append(element)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def _go_error(status: int, text: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    # http.Error: the text plus a newline, as plain text that must not be sniffed.
    return Response(status, extra + (("Content-Type", _TEXT), _NOSNIFF), (text + "\n").encode())


def _redirect(request: Request, location: str) -> Response:
    if request.method in ("GET", "HEAD"):
        # Go's http.Redirect body, printed with Fprintln (hence the second newline).
        body = f'<a href="{_html_escape(location)}">Moved Permanently</a>.\n\n'.encode()
        return Response(301, (("Content-Type", "text/html; charset=utf-8"), ("Location", location)), body)
    return Response(301, (("Location", location),), b"")


def _html_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&#34;").replace("'", "&#39;"))


def _health_handler(health: HealthCheck, metrics: metrics_mod.Registry):
    success = metrics.get("etcd_server_health_success") or metrics.counter(
        "etcd_server_health_success", "The total number of successful health checks")
    failures = metrics.get("etcd_server_health_failures") or metrics.counter(
        "etcd_server_health_failures", "The total number of failed health checks")

    async def serve_health(request: Request, query: str) -> Response:
        if request.method != "GET":
            return _go_error(405, "Method Not Allowed", (("Allow", "GET"),))
        healthy, reason = await health(urllib.parse.parse_qs(query, keep_blank_values=True))
        (success if healthy else failures).inc()
        body = '{"health":"%s","reason":%s}' % ("true" if healthy else "false", go_string(reason))
        if not healthy:
            return _go_error(503, body)
        # etcd sets no Content-Type here: Go sniffs one and writes it last.
        return Response(200, (), body.encode())

    return serve_health


def _sorted_headers(response: Response, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = sorted(extra + response.headers, key=lambda h: h[0].lower())
    return Response(response.status, tuple(headers), response.body)


def metrics_app(*, health: HealthCheck, metrics: metrics_mod.Registry, probes=None) -> HttpApp:
    """What etcd serves on --listen-metrics-urls: /metrics, /health (and /livez, /readyz with `probes`, an
    api.health.Probes), without CORS."""
    serve_health = _health_handler(health, metrics)

    async def route(request: Request) -> Response:
        path, query = split_target(request.target)
        path = urllib.parse.unquote(path)
        if path != "*" and clean_path(path) != path:
            return _redirect(request, clean_path(path) + (f"?{query}" if query else ""))
        if path == "/health":
            return await serve_health(request, query)
        if path == "/metrics":
            return Response(200, (("Content-Type", metrics_mod.CONTENT_TYPE),), metrics.render())
        if probes is not None and probes.handles(path):
            return await probes.serve(request, path, query)
        return _go_error(404, "404 page not found")

    async def app(request: Request) -> Response:
        return _sorted_headers(await route(request))

    return app


def http_app(
    *,
    gateway: HttpApp | None,
    health: HealthCheck,
    version: Callable[[], dict],
    metrics: metrics_mod.Registry,
    cors: Iterable[str] = ("*",),
    probes=None,
    host_whitelist: Iterable[str] = ("*",),
    refuses_gateway_cn: Callable[[], bool] | None = None,
) -> HttpApp:
    """The client port's HTTP app, behind etcd's access controller:
    - `host_whitelist` (--host-whitelist) is checked on every request this app serves, so an https
      listener is to get an app without it: etcd checks the Host header only of requests that did not
      come over TLS;
    - `refuses_gateway_cn()` (True while --client-cert-auth and auth are both on) makes a gateway
      request whose verified client certificate names a CommonName fail with 400, since the gateway
      cannot log its client in by that name."""
    allowed_origins = frozenset(cors)
    allowed_hosts = frozenset(host_whitelist)
    serve_health = _health_handler(health, metrics)

    def cors_headers(request: Request) -> tuple[tuple[str, str], ...]:
        if not allowed_origins or "*" in allowed_origins:
            origin = "*"
        else:
            origin = request.header("origin")
            if origin not in allowed_origins:
                return ()
        return (
            ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
        )

    def serve_version(request: Request) -> Response:
        if request.method != "GET":
            return _go_error(405, "Method Not Allowed", (("Allow", "GET"),))
        body = json.dumps(version(), separators=(",", ":")).encode()
        return Response(200, (("Content-Type", "application/json"),), body)

    async def route(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(200, (), b"")
        path, query = split_target(request.target)
        path = urllib.parse.unquote(path)
        if path.startswith("/v3beta/"):
            path = "/v3/" + path[len("/v3beta/"):]
            request = attrs.evolve(request, target=path + (f"?{query}" if query else ""))
        if path != "*" and clean_path(path) != path:
            return _redirect(request, clean_path(path) + (f"?{query}" if query else ""))
        if path == "/health":
            return await serve_health(request, query)
        if path == "/version":
            return serve_version(request)
        if path == "/metrics":
            return Response(200, (("Content-Type", metrics_mod.CONTENT_TYPE),), metrics.render())
        if probes is not None and probes.handles(path):
            return await probes.serve(request, path, query)
        if path == "/v3" and gateway is not None:
            return _redirect(request, "/v3/" + (f"?{query}" if query else ""))
        if path.startswith("/v3/") and gateway is not None:
            return await gateway(request)
        return _go_error(404, "404 page not found")

    async def app(request: Request) -> Response:
        # etcd's accessController: the Host check comes first, and its refusal has no CORS headers.
        if allowed_hosts and "*" not in allowed_hosts:
            host = go_hostname(request.header("host"))
            if host not in allowed_hosts:
                return _sorted_headers(_go_error(421, _unrecognized_host(host)))
        if request.tls_common_name and refuses_gateway_cn is not None and refuses_gateway_cn():
            path, _ = split_target(request.target)
            if path.startswith(("/v3/", "/v3beta/")):
                return _sorted_headers(_go_error(400, _GATEWAY_CN_IGNORED))
        return _sorted_headers(await route(request), cors_headers(request))

    return app


_GATEWAY_CN_IGNORED = "CommonName of client sending a request against gateway will be ignored and not used as expected"


def go_hostname(host: str) -> str:
    """etcd's httputil.GetHostname of a Host header: the host of net.SplitHostPort, else all of it."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or host[end + 1:end + 2] != ":" or "]" in host[end + 1:] or "[" in host[1:]:
            return host
        return host[1:end]
    colon = host.rfind(":")
    if colon < 0 or ":" in host[:colon] or "[" in host or "]" in host:
        return host
    return host[:colon]


def _unrecognized_host(host: str) -> str:
    # etcd's errCVE20185702 text; its %q of an ASCII host is a Go string literal.
    quoted = '"' + host.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (
        "\netcd received your request, but the Host header was unrecognized.\n\n"
        "To fix this, choose one of the following options:\n"
        "- Enable TLS, then any HTTPS request will be allowed.\n"
        "- Add the hostname you want to use to the whitelist in settings.\n"
        f"  - e.g. etcd --host-whitelist {quoted}\n\n"
        'This requirement has been added to help prevent "DNS Rebinding" attacks (CVE-2018-5702).\n'
    )
