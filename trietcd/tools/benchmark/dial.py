"""Opening connections for the benchmark: TCP or TLS (ALPN h2), the HTTP/2
handshake, and blocking unary calls for setup work (authenticate, find the
leader, grant leases, compact) before a socket joins an epoll loop.
"""

from __future__ import annotations

import socket
import ssl

import attrs

from trietcd.tools.benchmark import h2client, messages

__all__ = [
    "DialOptions",
    "DialError",
    "CallError",
    "Link",
    "dial",
    "authenticate",
    "leader_endpoints",
    "split_endpoint",
    "send_nowait",
    "recv_nowait",
    "STATUS_NAMES",
    "error_text",
]

STATUS_NAMES = (
    "OK Canceled Unknown InvalidArgument DeadlineExceeded NotFound AlreadyExists "
    "PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange "
    "Unimplemented Internal Unavailable DataLoss Unauthenticated"
).split()


def error_text(code: int, detail: str) -> str:
    """grpc-go's error text, which etcd's tool prints in its error distribution."""
    if code < 0:
        return detail
    name = STATUS_NAMES[code] if code < len(STATUS_NAMES) else f"Code({code})"
    return f"rpc error: code = {name} desc = {detail}"


class DialError(Exception):
    """A connection could not be opened (refused, timed out, TLS, handshake)."""


class CallError(Exception):
    """A setup call ended with a non-OK status."""

    def __init__(self, code: int, detail: str):
        super().__init__(error_text(code, detail))
        self.code = code
        self.detail = detail


@attrs.frozen
class DialOptions:
    """Everything needed to open a connection; picklable for worker processes."""

    timeout_s: float | None = None  # None: the OS's connect timeout
    cacert: str = ""
    cert: str = ""
    key: str = ""
    insecure_skip_verify: bool = False
    metadata: tuple[tuple[str, str], ...] = ()  # e.g. the auth token

    @property
    def tls(self) -> bool:
        return bool(self.cacert or self.cert or self.key or self.insecure_skip_verify)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cacert or None)
        if self.cert:
            context.load_cert_chain(self.cert, self.key or None)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        return context


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """host:port, also accepting etcd's http:// and https:// forms."""
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme):]
    host, _, port = endpoint.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise DialError(f"bad endpoint {endpoint!r}: want host:port")
    return host.strip("[]"), int(port)


class Link:
    """One connection: a socket and its HTTP/2 client state.

    Blocking until `setblocking(False)` is called by the epoll loop that
    takes it over; `call()` only works while blocking.
    """

    def __init__(self, sock: socket.socket, h2: h2client.ClientConn, endpoint: str, options: DialOptions):
        self.sock = sock
        self.h2 = h2
        self.endpoint = endpoint
        self.options = options

    def block_for(self, path: str) -> bytes:
        return h2client.encode_request_headers(path, self.endpoint, self.options.metadata, tls=self.options.tls)

    def call(self, path: str, message: bytes, timeout_s: float = 10.0) -> bytes:
        """A blocking unary call; returns the response message or raises CallError."""
        h2 = self.h2
        sid = h2.start_call(self.block_for(path), h2client.grpc_message(message), collect=True)
        self.sock.settimeout(timeout_s)
        self.sock.sendall(h2.data_to_send())
        response = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError as exc:
                raise DialError(f"{self.endpoint}: {exc}") from exc
            done = h2.receive(data)
            out = h2.data_to_send()
            if out:
                self.sock.sendall(out)
            for got_sid, message_bytes in h2.messages:
                if got_sid == sid:
                    response = message_bytes
            h2.messages.clear()
            for got_sid, code, detail in done:
                if got_sid == sid:
                    if code != 0:
                        raise CallError(code, detail)
                    return response

    def close(self) -> None:
        self.sock.close()


def send_nowait(sock: socket.socket, out: bytes) -> bytes:
    """Sends what a non-blocking (TLS) socket takes now; returns the rest. Raises OSError."""
    try:
        sent = sock.send(out)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0
    return out[sent:]


def recv_nowait(sock: socket.socket) -> bytes | None:
    """What a non-blocking (TLS) socket has; None if nothing yet, b"" at EOF. Raises OSError.

    A TLS socket may hold decrypted bytes that epoll cannot see: callers
    read again while `sock.pending()`.
    """
    try:
        return sock.recv(262144)
    except (BlockingIOError, ssl.SSLWantReadError):
        return None


def dial(endpoint: str, options: DialOptions, context: ssl.SSLContext | None = None) -> Link:
    """Connect, finish TLS and the HTTP/2 handshake; returns a blocking Link."""
    host, port = split_endpoint(endpoint)
    try:
        sock = socket.create_connection((host, port), timeout=options.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if options.tls:
            context = context or options.ssl_context()
            sock = context.wrap_socket(sock, server_hostname=host)
            if sock.selected_alpn_protocol() != "h2":
                raise DialError(f"{endpoint}: the server did not agree to HTTP/2 over TLS (ALPN)")
        h2 = h2client.ClientConn()
        h2.initiate()
        sock.sendall(h2.data_to_send())
        while not h2.settings_received:
            data = sock.recv(65536)
            if not data:
                raise DialError(f"{endpoint}: closed during the HTTP/2 handshake")
            h2.receive(data)
            out = h2.data_to_send()
            if out:
                sock.sendall(out)
    except (OSError, h2client.ProtocolError) as exc:
        raise DialError(f"dial error: {endpoint}: {exc}") from exc
    return Link(sock, h2, endpoint, options)


def authenticate(endpoint: str, options: DialOptions, name: str, password: str) -> str:
    """Auth/Authenticate; returns the token etcd wants in the `token` metadata."""
    link = dial(endpoint, options)
    try:
        response = link.call("/etcdserverpb.Auth/Authenticate", messages.authenticate_request(name, password))
    finally:
        link.close()
    return messages.first(messages.fields(response), 2, b"").decode()


def leader_endpoints(endpoint: str, options: DialOptions) -> list[str]:
    """The client URLs of the leader, found like etcd's tool: Status, then MemberList."""
    link = dial(endpoint, options)
    try:
        status = messages.fields(link.call("/etcdserverpb.Maintenance/Status", b""))
        leader = messages.first(status, 4)  # StatusResponse.leader
        members = messages.fields(link.call("/etcdserverpb.Cluster/MemberList", b""))
    finally:
        link.close()
    for member_bytes in members.get(2, []):
        member = messages.fields(member_bytes)
        if messages.first(member, 1) == leader:
            return [url.decode() for url in member.get(4, [])]
    raise DialError("failed to find a leader endpoint")
