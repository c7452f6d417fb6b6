"""Client-port listener: accept, sniff, and hand each connection to HTTP/2 (gRPC) or HTTP/1.1.

One task per connection; every connection task catches and logs its own failure, so a bad
client never takes the listener down. Per connection:

1. Read until `sniff.classify` decides, within `sniff_timeout_s` (silent clients are dropped).
2. On a secure listener (an `ssl_context` is given) a TLS ClientHello starts TLS; the handshake
   must finish within `sniff_timeout_s`; a `tls.ServerTLS` then checks the client certificate
   (CRL, allowed CN or hostname). The ALPN choice decides ("h2" -> HTTP/2, "http/1.1" ->
   HTTP/1.1, none -> sniff again inside). Anything that is not TLS on a secure listener, plain
   HTTP included, is closed without an answer: etcd 3.5.1 finishes the handshake in its TLS
   listener before any HTTP server sees the bytes, so Go's "Client sent an HTTP request to an
   HTTPS server." reply never happens there. Every refusal is logged as "rejected connection".
3. The HTTP/2 preface goes to `connections.serve_h2` (when a registry is given), an HTTP/1.x
   request line to `serve_http1` (when an HTTP app is given); garbage is closed.

URLs follow etcd: `http://host:port`, `https://host:port`, and `unix://path` / `unixs://path`
where the socket path is everything after "//" (so etcd's `unix://localhost:2379` is the file
"localhost:2379" in the working directory). A stale socket file is removed before binding and
the file is removed again when the listener stops, as etcd's unix listener does.
"""

import email.utils
import logging
import math
import os
import socket as _stdlib_socket
import ssl
import urllib.parse

import trio

from trietcd.log import logger as etcd_logger
from trietcd.wire import http1, sniff
from trietcd.wire.tls import ServerTLS, TLSConfigError, TLSRejected, client_san_error, common_name
from trietcd.wire.grpc_call import Registry
from trietcd.wire.h2_conn import H2Limits

__all__ = ["serve_url", "serve_http1", "ListenError", "PrefixedStream", "parse_url"]

log = logging.getLogger("trietcd.wire.listener")

# HTTP/1.1 keep-alive connections with no request in flight are closed after this long.
IDLE_TIMEOUT_S = 300.0
# Once a request's first byte arrived, its head and body must be complete within this.
REQUEST_TIMEOUT_S = 60.0
# A response write that makes no progress for this long drops the connection.
SEND_STALL_TIMEOUT_S = 60.0
# How long a TLS close_notify may take before the socket is just closed.
TLS_CLOSE_TIMEOUT_S = 1.0
# Bytes of pipelined requests read (and held) while a streamed response is being sent.
PIPELINE_BUFFER_BYTES_MAX = 64 * 1024


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream that first yields `prefix` (bytes already read by the sniffer), then the rest of
    `inner`."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes):
        self.inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def parse_url(url: str) -> tuple[str, str, int | None]:
    """(scheme, host-or-socket-path, port) of a listen URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("unix", "unixs"):
        path = parts.netloc + parts.path
        if not path:
            raise ValueError(f"unix socket URL without a path: {url!r}")
        return scheme, path, None
    if scheme not in ("http", "https"):
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {url}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in URL {url!r}") from None
    if port is None:
        raise ValueError(f"missing port in address {url!r}")
    return scheme, parts.hostname or "", port


async def serve_url(
    url: str,
    *,
    registry: Registry | None,
    http_app: http1.HttpApp | None,
    h2_limits: H2Limits,
    ssl_context: ssl.SSLContext | ServerTLS | None,
    connections,
    sniff_timeout_s: float = 10.0,
    http1_limits: http1.Limits = http1.Limits(),
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `url` until cancelled; `task_status.started` gets the bound address:
    (host, port) for TCP, the socket path for unix URLs."""
    scheme, host, port = parse_url(url)
    if scheme in ("https", "unixs") and ssl_context is None:
        raise ValueError(f"{url}: a TLS certificate is needed for {scheme}")
    if scheme in ("http", "unix"):
        # etcd ignores key and cert files for a plain http:// URL.
        ssl_context = None
    try:
        if port is None:
            listeners = [_open_unix_listener(host)]
            address = host
        else:
            listeners = await trio.open_tcp_listeners(port, host=host or None)
            address = listeners[0].socket.getsockname()[:2]
    except OSError as exc:
        network, where = ("unix", host) if port is None else ("tcp", f"{host}:{port}")
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(f"listen {network} {where}: bind: {reason}") from exc

    async def handle(stream: trio.abc.Stream) -> None:
        peer = _peer_of(stream)
        try:
            await _serve_connection(
                stream,
                peer=peer,
                registry=registry,
                http_app=http_app,
                h2_limits=h2_limits,
                ssl_context=ssl_context,
                connections=connections,
                sniff_timeout_s=sniff_timeout_s,
                http1_limits=http1_limits,
            )
        except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
            log.debug("connection from %s broke: %s", peer, group.exceptions[0])
        except* Exception:
            log.exception("connection from %s failed", peer)
        finally:
            await trio.aclose_forcefully(stream)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(address)
    finally:
        if port is None:
            _remove_socket_file(host)


class ListenError(OSError):
    """A URL that cannot be bound; the message reads like Go's net.Listen error."""


def _open_unix_listener(path: str) -> trio.SocketListener:
    _remove_socket_file(path)
    sock = trio.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
    try:
        sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
        # Binding a unix socket does not block on the network; do it synchronously.
        sock._sock.bind(path)
        sock.listen(_stdlib_socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _remove_socket_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _peer_of(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return ""
    try:
        name = sock.getpeername()
    except OSError:
        return ""
    if sock.family == _stdlib_socket.AF_INET:
        return f"ipv4:{name[0]}:{name[1]}"
    if sock.family == _stdlib_socket.AF_INET6:
        return f"ipv6:[{name[0]}]:{name[1]}"
    return f"unix:{name}" if name else "unix:"


async def _sniff(stream: trio.abc.Stream, timeout_s: float) -> tuple[sniff.Kind, bytes]:
    """Read until the protocol is known; (GARBAGE, data) on silence, EOF or nonsense."""
    data = b""
    with trio.move_on_after(timeout_s):
        while True:
            kind = sniff.classify(data)
            if kind != sniff.Kind.NEED_MORE:
                return kind, data
            chunk = await stream.receive_some(sniff.SNIFF_MAX_BYTES)
            if not chunk:
                return sniff.Kind.GARBAGE, data
            data += chunk
    return sniff.Kind.GARBAGE, data


async def _serve_connection(stream, *, peer, registry, http_app, h2_limits, ssl_context, connections,
                            sniff_timeout_s, http1_limits) -> None:
    kind, data = await _sniff(stream, sniff_timeout_s)
    if ssl_context is not None:
        if kind != sniff.Kind.TLS:
            # Go's words: a client that sends nothing (a TCP probe) ends in EOF.
            reason = "tls: first record does not look like a TLS handshake" if data else "EOF"
            _rejected(peer, reason)
            return
        tls_stream = await _handshake(stream, data, ssl_context, peer=peer, timeout_s=sniff_timeout_s)
        if tls_stream is None:
            return
        try:
            alpn = tls_stream.selected_alpn_protocol()
            if alpn == "h2":
                kind, data = sniff.Kind.H2, b""
            elif alpn == "http/1.1":
                kind, data = sniff.Kind.HTTP1, b""
            else:
                kind, data = await _sniff(tls_stream, sniff_timeout_s)
            await _dispatch(tls_stream, kind, data, peer=peer, registry=registry, http_app=http_app,
                            h2_limits=h2_limits, connections=connections, http1_limits=http1_limits)
        finally:
            # Say goodbye with close_notify, as Go's tls.Conn.Close does; bounded, even when
            # the connection is being cancelled.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + TLS_CLOSE_TIMEOUT_S):
                try:
                    await tls_stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        return
    await _dispatch(stream, kind, data, peer=peer, registry=registry, http_app=http_app, h2_limits=h2_limits,
                    connections=connections, http1_limits=http1_limits)


async def _handshake(stream, data: bytes, ssl_context, *, peer: str, timeout_s: float) -> trio.SSLStream | None:
    """The TLS stream after a finished handshake whose client certificate passed the checks;
    None (logged) when the handshake fails, stalls past `timeout_s`, or the certificate is refused."""
    server_tls = ssl_context if isinstance(ssl_context, ServerTLS) else None
    try:
        context = server_tls.context() if server_tls is not None else ssl_context
    except TLSConfigError as exc:
        # A certificate being rotated may be unreadable for a moment; etcd fails that handshake.
        _rejected(peer, str(exc))
        return None
    tls_stream = trio.SSLStream(PrefixedStream(stream, data), context, server_side=True)
    with trio.move_on_after(timeout_s) as scope:
        try:
            await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            _rejected(peer, _handshake_error(exc))
            await _send_alert(stream, tls_stream)
            return None
    if scope.cancelled_caught:
        _rejected(peer, "TLS handshake timed out")
        return None
    if server_tls is not None:
        try:
            server_tls.check(tls_stream)
            await _check_client_san(server_tls, tls_stream, stream)
        except TLSRejected as exc:
            _rejected(peer, str(exc))
            with trio.CancelScope(shield=True, deadline=trio.current_time() + TLS_CLOSE_TIMEOUT_S):
                try:
                    await tls_stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            return None
    return tls_stream


# A peer certificate names at most this many DNS SANs worth resolving, each within this long.
SAN_LOOKUPS_MAX = 8
SAN_LOOKUP_TIMEOUT_S = 5.0


async def _check_client_san(server_tls: ServerTLS, tls_stream: trio.SSLStream, raw_stream) -> None:
    """etcd's peer rule: the client certificate's SANs must name the address it connects from."""
    sans = server_tls.client_sans(tls_stream)
    if sans is None:
        return
    ips, dns_names = sans
    sock = getattr(raw_stream, "socket", None)
    if sock is None or sock.family not in (_stdlib_socket.AF_INET, _stdlib_socket.AF_INET6):
        return  # a unix socket has no address to match
    host = sock.getpeername()[0]
    addresses_of: dict[str, list[str]] = {}
    if not any(ip == host for ip in ips):
        for name in dns_names[:SAN_LOOKUPS_MAX]:
            if name.startswith("*."):
                continue
            with trio.move_on_after(SAN_LOOKUP_TIMEOUT_S):
                try:
                    infos = await trio.socket.getaddrinfo(name, None, type=_stdlib_socket.SOCK_STREAM)
                except OSError:
                    continue
                addresses_of[name] = [info[4][0] for info in infos]
    error = client_san_error(host, ips, dns_names, addresses_of)
    if error is not None:
        raise TLSRejected(error)


async def _send_alert(stream, tls_stream: trio.SSLStream) -> None:
    """Send the alert OpenSSL wrote when it failed the handshake (trio drops it), so the client
    reads "bad certificate" as from Go rather than a bare EOF."""
    outgoing = getattr(tls_stream, "_outgoing", None)  # trio's MemoryBIO; absent in other versions
    if outgoing is None or not outgoing.pending:
        return
    with trio.move_on_after(TLS_CLOSE_TIMEOUT_S):
        try:
            await stream.send_all(outgoing.read())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _rejected(peer: str, error: str) -> None:
    """etcd's "rejected connection" line (embed/config_logging.go), with Go's remote address."""
    kind, _, address = peer.partition(":")
    remote = address if kind in ("ipv4", "ipv6", "unix") else peer
    etcd_logger.warn("rejected connection", caller="embed/config_logging.go:169",
                     **{"remote-addr": remote, "server-name": "", "error": error})


# OpenSSL's reasons for a failed server handshake -> Go's words for the same failure.
_GO_HANDSHAKE_ERRORS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "tls: client didn't provide a certificate",
    "NO_SHARED_CIPHER": "tls: no cipher suite supported by both client and server",
    "UNSUPPORTED_PROTOCOL": "tls: client offered only unsupported versions",
    "SSLV3_ALERT_BAD_CERTIFICATE": "remote error: tls: bad certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "remote error: tls: bad certificate",
}
# OpenSSL's verify results for a client certificate -> Go's x509 error.
_GO_VERIFY_ERRORS = {
    2: "x509: certificate signed by unknown authority",   # unable to get issuer certificate
    10: "x509: certificate has expired or is not yet valid",
    9: "x509: certificate has expired or is not yet valid",
    18: "x509: certificate signed by unknown authority",  # self-signed leaf
    19: "x509: certificate signed by unknown authority",  # self-signed in chain
    20: "x509: certificate signed by unknown authority",  # unable to get local issuer
    26: "x509: certificate specifies an incompatible key usage",  # unsupported purpose
}


def _handshake_error(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        text = _GO_VERIFY_ERRORS.get(cause.verify_code, cause.verify_message)
        return f"tls: failed to verify client certificate: {text}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return _GO_HANDSHAKE_ERRORS.get(cause.reason, cause.reason.lower().replace("_", " "))
    return str(cause)


async def _dispatch(stream, kind, data, *, peer, registry, http_app, h2_limits, connections, http1_limits) -> None:
    if kind == sniff.Kind.H2 and registry is not None:
        await connections.serve_h2(stream, registry, h2_limits, initial_bytes=data, peer=peer)
    elif kind == sniff.Kind.HTTP1 and http_app is not None:
        cn = common_name(stream) if isinstance(stream, trio.SSLStream) else None
        await serve_http1(stream, http_app, http1_limits, initial_bytes=data, peer=peer, tls_common_name=cn)


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """send_all, but a peer that stops reading for SEND_STALL_TIMEOUT_S loses the connection
    (a cancelled send leaves the stream unusable, so this counts as broken)."""
    with trio.move_on_after(SEND_STALL_TIMEOUT_S):
        await stream.send_all(data)
        return
    raise trio.BrokenResourceError("peer stopped reading")


def _http_date() -> str:
    return email.utils.formatdate(usegmt=True)


async def serve_http1(
    stream: trio.abc.Stream,
    app: http1.HttpApp,
    limits: http1.Limits = http1.Limits(),
    *,
    initial_bytes: bytes = b"",
    peer: str = "",
    tls_common_name: str | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> None:
    """Serve HTTP/1.1 requests on `stream` until the peer or the protocol closes it."""
    conn = http1.ServerConnection(limits, peer=peer, tls_common_name=tls_common_name)
    if initial_bytes:
        conn.receive_data(initial_bytes)
    request_deadline = math.inf
    while True:
        try:
            event = conn.next_event()
        except http1.HttpError as err:
            await _send_all(stream, http1.error_response(err))
            return
        if event is http1.NEED_DATA:
            if conn.buffered_bytes == 0 and conn.state == "idle":
                deadline = trio.current_time() + idle_timeout_s
                request_deadline = math.inf
            else:
                if request_deadline == math.inf:
                    request_deadline = trio.current_time() + request_timeout_s
                deadline = request_deadline
            with trio.move_on_at(deadline):
                conn.receive_data(await _receive(stream))
                continue
            return  # slow or silent client
        if event is http1.CONTINUE:
            await _send_all(stream, http1.CONTINUE_BYTES)
            continue
        if event is http1.CLOSED:
            return
        request_deadline = math.inf
        response = await _call_app_while_peer_stays(stream, conn, app, event)
        if response is None:
            return  # the client went away: its handler was cancelled, as Go's server cancels its context
        if not await _send_response(stream, conn, event, response):
            return
        if not conn.keep_alive:
            return


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def _while_peer_stays(stream, conn: http1.ServerConnection, work) -> bool:
    """Runs `await work()` while reading the connection, as Go's server does: False when the client closed it
    first (the work is cancelled, as Go cancels the request's context). Bytes the client pipelines meanwhile
    are kept for the next request, up to a bound."""
    peer_stayed = True
    async with trio.open_nursery() as nursery:
        async def watch_peer() -> None:
            nonlocal peer_stayed
            while conn.buffered_bytes < PIPELINE_BUFFER_BYTES_MAX:
                data = await _receive(stream)
                if not data:
                    peer_stayed = False
                    nursery.cancel_scope.cancel()
                    return
                conn.receive_data(data)
            await trio.sleep_forever()

        nursery.start_soon(watch_peer)
        await work()
        nursery.cancel_scope.cancel()
    return peer_stayed


async def _call_app_while_peer_stays(stream, conn: http1.ServerConnection, app: http1.HttpApp,
                                     request: http1.Request) -> http1.Response | None:
    """The app's response; None when the client closed the connection first (the call is cancelled)."""
    response = None

    async def call() -> None:
        nonlocal response
        response = await _call_app(app, request)

    return response if await _while_peer_stays(stream, conn, call) else None


async def _call_app(app: http1.HttpApp, request: http1.Request) -> http1.Response:
    try:
        return await app(request)
    except Exception:
        log.exception("HTTP handler failed for %s %s", request.method, request.target)
        return http1.Response(500, (("Content-Type", "text/plain; charset=utf-8"),), b"Internal Server Error\n")


async def _send_response(stream, conn: http1.ServerConnection, request: http1.Request,
                         response: http1.Response) -> bool:
    """Write `response`; False when the connection must be dropped (peer gone mid-stream)."""
    if isinstance(response.body, (bytes, bytearray)):
        await _send_all(stream, conn.send_response(response, date=_http_date()))
        return True
    writer = _Writer(stream, conn, response)
    peer_gone = False
    try:
        if request.method != "HEAD":
            async def stream_body() -> None:
                if isinstance(response.body, http1.StreamingBody):
                    await response.body.run(writer)
                else:
                    async for chunk in response.body:
                        await writer.write(chunk)

            try:
                # Reading on while streaming, so a client that goes away ends the stream.
                peer_gone = not await _while_peer_stays(stream, conn, stream_body)
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                peer_gone = True
    finally:
        aclose = getattr(response.body, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
    if peer_gone:
        conn.close()
        return False
    await writer.write(b"")  # the head, if nothing was written
    await _send_all(stream, conn.end_response())
    return True


class _Writer:
    """`http1.BodyWriter` of one streamed response: the head goes out with the first write."""

    def __init__(self, stream, conn: http1.ServerConnection, response: http1.Response):
        self._stream = stream
        self._conn = conn
        self._response = response
        self._head_sent = False

    def set_head(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        assert not self._head_sent, "the head is already sent"
        self._response = http1.Response(status, headers, self._response.body)

    async def write(self, data: bytes) -> None:
        out = b""
        if not self._head_sent:
            self._head_sent = True
            out = self._conn.send_response(self._response, date=_http_date())
        out += self._conn.send_body(data)
        if out:
            await _send_all(self._stream, out)
