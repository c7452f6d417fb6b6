"""A gRPC unary load generator that should not be the bottleneck.

    python -m benchmarks.h2load --endpoints 127.0.0.1:2379 --conns 10 --clients 100 \
        --total 100000 --procs 2 [--method /etcdserverpb.KV/Put] [--key-size 8 --val-size 256] [--json]

Each client is a closed loop: one call outstanding, the next one sent as soon
as the answer arrives. Clients are spread over connections round-robin, and
connections and clients over `--procs` worker processes. Every process runs
one epoll loop over plain non-blocking sockets with the sans-IO HTTP/2 client
of `benchmarks.grpc_h2`; all processes start together after their
connections finished the HTTP/2 handshake. A call counts as a success only if
it ended with HTTP status 200 and grpc-status 0; everything else is counted,
by message, in the error distribution.
"""

from __future__ import annotations

import argparse
import array
import json
import multiprocessing
import random
import selectors
import socket
import sys
import time

import attrs

from benchmarks import grpc_h2
from benchmarks.report import Stats, format_summary, summarize, to_json_dict

__all__ = ["LoadConfig", "run_load", "put_request", "range_request", "main"]

PUT_METHOD = "/etcdserverpb.KV/Put"
RANGE_METHOD = "/etcdserverpb.KV/Range"

_STATUS_NAMES = (
    "OK Canceled Unknown InvalidArgument DeadlineExceeded NotFound AlreadyExists "
    "PermissionDenied ResourceExhausted FailedPrecondition Aborted OutOfRange "
    "Unimplemented Internal Unavailable DataLoss Unauthenticated"
).split()


@attrs.frozen
class LoadConfig:
    endpoints: tuple[str, ...]  # "host:port"
    conns: int = 1
    clients: int = 1
    total: int = 10000
    procs: int = 1
    method: str = PUT_METHOD
    messages: tuple[bytes, ...] = ()  # serialized requests, used in turn; see message_for
    metadata: tuple[tuple[str, str], ...] = ()
    stall_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value if value else b""


def put_request(key: bytes, value: bytes) -> bytes:
    """A serialized etcdserverpb.PutRequest{key, value}."""
    try:
        from proto.etcdserverpb import rpc_pb2
    except ImportError:
        return _bytes_field(1, key) + _bytes_field(2, value)
    return rpc_pb2.PutRequest(key=key, value=value).SerializeToString()


def range_request(key: bytes) -> bytes:
    """A serialized etcdserverpb.RangeRequest{key}."""
    try:
        from proto.etcdserverpb import rpc_pb2
    except ImportError:
        return _bytes_field(1, key)
    return rpc_pb2.RangeRequest(key=key).SerializeToString()


def benchmark_key(index: int, key_size: int) -> bytes:
    """etcd's benchmark key: the zig-zag varint of the index, zero-padded."""
    encoded = _varint((index << 1) ^ (index >> 63))
    return (encoded + bytes(key_size))[:key_size] if key_size else b""


def make_messages(
    method: str, key_size: int, val_size: int, key_space_size: int, sequential: bool, seed: int
) -> tuple[bytes, ...]:
    rng = random.Random(seed)
    value = bytes(rng.getrandbits(8) for _ in range(val_size))
    count = min(key_space_size, 1 << 16)
    if sequential:
        indexes = range(count)
    else:
        indexes = [rng.randrange(key_space_size) for _ in range(count)]
    out = []
    for index in indexes:
        key = benchmark_key(index, key_size)
        out.append(range_request(key) if method == RANGE_METHOD else put_request(key, value))
    return tuple(out)


# ---- one worker process ------------------------------------------------------


@attrs.frozen
class _Share:
    config: LoadConfig
    conn_endpoints: tuple[str, ...]  # one entry per connection of this worker
    clients: int
    total: int
    message_offset: int


@attrs.frozen
class _ShareResult:
    lats: bytes  # array('d') of successful call latencies, seconds
    errors: dict
    started: float  # time.perf_counter(), CLOCK_MONOTONIC: shared by processes
    finished: float
    cpu_s: float  # process CPU time spent in the measured part


class _Conn:
    __slots__ = ("sock", "h2", "block", "idle", "starts", "pending", "dead", "index")

    def __init__(self, sock: socket.socket, h2: grpc_h2.ClientConn, block: bytes, index: int):
        self.sock = sock
        self.h2 = h2
        self.block = block
        self.idle = 0  # clients of this connection waiting to send
        self.starts: dict[int, float] = {}
        self.pending = b""  # bytes the socket did not take yet
        self.dead = False
        self.index = index


def _error_text(code: int, detail: str) -> str:
    if code < 0:
        return detail
    name = _STATUS_NAMES[code] if code < len(_STATUS_NAMES) else f"Code({code})"
    return f"rpc error: code = {name} desc = {detail}"


def _connect(endpoint: str, config: LoadConfig, index: int) -> _Conn:
    host, _, port = endpoint.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=config.connect_timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    h2 = grpc_h2.ClientConn()
    h2.initiate()
    sock.sendall(h2.data_to_send())
    while not h2.settings_received:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"{endpoint}: closed during the HTTP/2 handshake")
        h2.receive(data)
        out = h2.data_to_send()
        if out:
            sock.sendall(out)
    sock.setblocking(False)
    block = grpc_h2.encode_request_headers(config.method, endpoint, config.metadata)
    return _Conn(sock, h2, block, index)


def _run_share(share: _Share, barrier=None) -> _ShareResult:
    config = share.config
    conns = [_connect(endpoint, config, i) for i, endpoint in enumerate(share.conn_endpoints)]
    for client in range(share.clients):
        conns[client % len(conns)].idle += 1
    messages = [grpc_h2.grpc_message(m) for m in config.messages]
    if barrier is not None:
        barrier.wait()
    lats = array.array("d")
    errors: dict[str, int] = {}
    cpu_started = time.process_time()
    started = time.perf_counter()
    state = _Loop(conns, messages, share.message_offset, share.total, lats, errors)
    state.run(config.stall_timeout_s)
    finished = time.perf_counter()
    cpu_s = time.process_time() - cpu_started
    for conn in conns:
        conn.sock.close()
    return _ShareResult(lats.tobytes(), errors, started, finished, cpu_s)


class _Loop:
    """The epoll loop of one worker: closed-loop clients over its connections."""

    def __init__(self, conns, messages, message_offset, total, lats, errors):
        self.conns = conns
        self.messages = messages
        self.message_next = message_offset % len(messages)
        self.to_issue = total
        self.in_flight = 0
        self.lats = lats
        self.errors = errors
        self.selector = selectors.DefaultSelector()
        for conn in conns:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def run(self, stall_timeout_s: float) -> None:
        for conn in self.conns:
            self._issue(conn)
            self._send(conn)
        select = self.selector.select
        while self.in_flight:
            events = select(stall_timeout_s)
            if not events:
                for conn in self.conns:
                    self._kill(conn, f"no progress for {stall_timeout_s:g}s")
                break
            for key, mask in events:
                conn = key.data
                if conn.dead:
                    continue
                if mask & selectors.EVENT_WRITE:
                    self._send(conn)
                if mask & selectors.EVENT_READ:
                    self._read(conn)
        if self.to_issue:
            self._count_error("not sent: every connection failed", self.to_issue)
            self.to_issue = 0

    def _count_error(self, text: str, count: int = 1) -> None:
        self.errors[text] = self.errors.get(text, 0) + count

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as exc:
            self._kill(conn, f"connection error: {exc}")
            return
        try:
            done = conn.h2.receive(data)
        except grpc_h2.ProtocolError as exc:
            self._kill(conn, f"protocol error: {exc}")
            return
        if done:
            now = time.perf_counter()
            starts = conn.starts
            lats_append = self.lats.append
            for sid, code, detail in done:
                elapsed = now - starts.pop(sid)
                if code == 0:
                    lats_append(elapsed)
                else:
                    self._count_error(_error_text(code, detail))
            self.in_flight -= len(done)
            conn.idle += len(done)
        if conn.h2.closed:
            self._kill(conn, "connection closed by server")
            return
        self._issue(conn)
        self._send(conn)

    def _issue(self, conn: _Conn) -> None:
        h2 = conn.h2
        if not self.to_issue or not conn.idle or not h2.can_start_call():
            return
        messages = self.messages
        count = len(messages)
        index = self.message_next
        issued = []
        while conn.idle and self.to_issue and h2.can_start_call():
            issued.append(h2.start_call(conn.block, messages[index]))
            index = index + 1 if index + 1 < count else 0
            conn.idle -= 1
            self.to_issue -= 1
        self.message_next = index
        self.in_flight += len(issued)
        now = time.perf_counter()
        starts = conn.starts
        for sid in issued:
            starts[sid] = now

    def _send(self, conn: _Conn) -> None:
        out = conn.h2.data_to_send()
        if conn.pending:
            out = conn.pending + out
        if not out:
            return
        try:
            sent = conn.sock.send(out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._kill(conn, f"connection error: {exc}")
            return
        was_pending = bool(conn.pending)
        conn.pending = out[sent:]
        if bool(conn.pending) != was_pending:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
            self.selector.modify(conn.sock, events, conn)

    def _kill(self, conn: _Conn, why: str) -> None:
        if conn.dead:
            return
        conn.dead = True
        self.selector.unregister(conn.sock)
        if conn.starts:
            self._count_error(why, len(conn.starts))
            self.in_flight -= len(conn.starts)
            conn.starts.clear()
        # Its clients are gone; the calls they would have made go to the others.
        conn.idle = 0
        if all(c.dead for c in self.conns):
            return
        for other in self.conns:
            if not other.dead and not other.starts and other.idle:
                self._issue(other)
                self._send(other)


def _worker_main(share: _Share, barrier, pipe) -> None:
    try:
        result = _run_share(share, barrier)
    except BaseException as exc:  # reported to the parent, which fails loudly
        barrier.abort()
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        pipe.send(("ok", result))
    pipe.close()


# ---- splitting the work and collecting results ---------------------------------


def _split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def _shares(config: LoadConfig) -> list[_Share]:
    procs = max(1, min(config.procs, config.conns, config.clients))
    conn_endpoints = [config.endpoints[i % len(config.endpoints)] for i in range(config.conns)]
    conns_split = _split(config.conns, procs)
    clients_split = _split(config.clients, procs)
    totals = _split(config.total, procs)
    shares = []
    conn_at = 0
    message_offset = 0
    for proc in range(procs):
        endpoints = tuple(conn_endpoints[conn_at : conn_at + conns_split[proc]])
        conn_at += conns_split[proc]
        shares.append(_Share(config, endpoints, clients_split[proc], totals[proc], message_offset))
        message_offset += totals[proc]
    return shares


def run_load(config: LoadConfig) -> Stats:
    """Run the whole load and return its statistics (errors included)."""
    if not config.messages:
        config = attrs.evolve(config, messages=(put_request(b"\x00", b""),))
    if config.total < 1 or config.conns < 1 or config.clients < 1:
        raise ValueError("--total, --conns and --clients must be at least 1")
    shares = _shares(config)
    if len(shares) == 1:
        results = [_run_share(shares[0])]
    else:
        results = _run_processes(shares)
    lats = array.array("d")
    errors: dict[str, int] = {}
    for result in results:
        lats.frombytes(result.lats)
        for text, count in result.errors.items():
            errors[text] = errors.get(text, 0) + count
    total_s = max(r.finished for r in results) - min(r.started for r in results)
    cpu_s = sum(r.cpu_s for r in results)
    return summarize(lats.tolist(), errors, total_s, cpu_s)


def _run_processes(shares: list[_Share]) -> list[_ShareResult]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(shares))
    workers = []
    for share in shares:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, args=(share, barrier, child_end), daemon=True)
        proc.start()
        child_end.close()
        workers.append((proc, parent_end))
    results, failures = [], []
    for proc, pipe in workers:
        try:
            kind, payload = pipe.recv()
        except EOFError:
            kind, payload = "error", f"worker {proc.pid} died (exit code {proc.exitcode})"
        if kind == "ok":
            results.append(payload)
        else:
            failures.append(payload)
    for proc, _ in workers:
        proc.join()
    if failures:
        raise RuntimeError("; ".join(failures))
    return results


# ---- command line ---------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.h2load",
        description="Closed-loop gRPC unary load over lean HTTP/2 connections.",
    )
    parser.add_argument("--endpoints", default="127.0.0.1:2379", help="comma-separated host:port")
    parser.add_argument("--conns", type=int, default=1, help="total HTTP/2 connections")
    parser.add_argument("--clients", type=int, default=1, help="total closed-loop clients")
    parser.add_argument("--total", type=int, default=10000, help="total calls")
    parser.add_argument("--procs", type=int, default=1, help="worker processes")
    parser.add_argument("--method", default=PUT_METHOD, help="full gRPC method path")
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--val-size", type=int, default=8)
    parser.add_argument("--key-space-size", type=int, default=1)
    parser.add_argument("--sequential-keys", action="store_true")
    parser.add_argument("--body-hex", default="", help="raw request message (other methods)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.key_space_size < 1:
        parser.error("--key-space-size must be at least 1")
    return args


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    if args.body_hex:
        messages = (bytes.fromhex(args.body_hex),)
    elif args.method in (PUT_METHOD, RANGE_METHOD):
        messages = make_messages(
            args.method, args.key_size, args.val_size, args.key_space_size,
            args.sequential_keys, args.seed,
        )
    else:
        messages = (b"",)
    return LoadConfig(
        endpoints=tuple(e.strip() for e in args.endpoints.split(",") if e.strip()),
        conns=args.conns,
        clients=args.clients,
        total=args.total,
        procs=args.procs,
        method=args.method,
        messages=messages,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stats = run_load(config_from_args(args))
    if args.json:
        print(json.dumps(to_json_dict(stats), indent=2))
    else:
        sys.stdout.write(format_summary(stats))
    return 0 if stats.calls_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
