"""Closed-loop gRPC unary load that should not be the bottleneck.

Each client is a closed loop: one call outstanding, the next one sent as soon
as the answer arrives (or, with a rate, as soon as the limiter allows).
Clients are spread over connections round-robin (client i on connection
i mod conns, like etcd's tool), connections over endpoints round-robin, and
connections, clients and the total over `procs` worker processes. Every
process runs one epoll loop over non-blocking sockets with the sans-IO HTTP/2
client of `h2client`; all processes start together after their connections
finished the HTTP/2 handshake, and Total is first start to last finish.

A call counts as a success only if it ended with HTTP status 200 and
grpc-status 0; everything else is counted, by message, in the error
distribution of the report the call belongs to.
"""

from __future__ import annotations

import array
import multiprocessing
import random
import selectors
import ssl
import sys
import threading
import time
from collections.abc import Callable

import attrs

from trietcd.tools.benchmark import dial, h2client, messages
from trietcd.tools.benchmark.report import Stats, summarize

__all__ = [
    "PUT_METHOD",
    "RANGE_METHOD",
    "TXN_METHOD",
    "LEASE_KEEPALIVE_METHOD",
    "Workload",
    "LoadConfig",
    "Progress",
    "run_load",
    "shares_of",
]

PUT_METHOD = "/etcdserverpb.KV/Put"
RANGE_METHOD = "/etcdserverpb.KV/Range"
TXN_METHOD = "/etcdserverpb.KV/Txn"
COMPACT_METHOD = "/etcdserverpb.KV/Compact"
LEASE_GRANT_METHOD = "/etcdserverpb.Lease/LeaseGrant"
LEASE_KEEPALIVE_METHOD = "/etcdserverpb.Lease/LeaseKeepAlive"

_CACHED_MESSAGES_MAX = 1 << 16


@attrs.frozen
class Workload:
    """What the calls carry. Picklable: every worker builds its own source.

    kind:
    - "fixed": `messages` (serialized requests) used in turn;
    - "put": PutRequest of etcd's varint keys, `sequential` or random over
      `key_space_size`, one random value of `val_size` bytes;
    - "txn-put": TxnRequest of `txn_ops` such Puts, keys in sequence;
    - "txn-mixed": TxnRequest of one op: the read `read_message` (a
      RangeRequest) with probability rw_ratio / (1 + rw_ratio), else a Put of
      key i mod key_space_size; reads go to report 0, writes to report 1;
    - "lease-keepalive": LeaseKeepAliveRequest of a lease each connection
      grants itself (TTL 100 s) before the start.
    """

    kind: str = "fixed"
    method: str = PUT_METHOD
    messages: tuple[bytes, ...] = (b"",)
    key_size: int = 8
    val_size: int = 8
    key_space_size: int = 1
    sequential: bool = False
    txn_ops: int = 1
    rw_ratio: float = 1.0
    read_message: bytes = b""
    seed: int = 1
    report_names: tuple[str, ...] = ("",)

    def value(self) -> bytes:
        rng = random.Random(self.seed)
        return rng.randbytes(self.val_size)

    def source(self, offset: int) -> Callable[[], tuple[bytes, int]]:
        """next_request() -> (gRPC-framed request, report index), for calls offset, offset+1, ..."""
        assert self.key_space_size >= 1
        rng = random.Random(f"{self.seed}/{offset}")
        index = offset
        cache: dict[int, bytes] = {}

        def cached(key_index: int, build: Callable[[int], bytes]) -> bytes:
            framed = cache.get(key_index)
            if framed is None:
                framed = h2client.grpc_message(build(key_index))
                if len(cache) < _CACHED_MESSAGES_MAX:
                    cache[key_index] = framed
            return framed

        value = self.value()
        space = self.key_space_size

        def put_of(key_index: int) -> bytes:
            return messages.put_request(messages.benchmark_key(key_index, self.key_size), value)

        if self.kind in ("fixed", "lease-keepalive"):
            table = [h2client.grpc_message(m) for m in self.messages]

            def next_fixed() -> tuple[bytes, int]:
                nonlocal index
                framed = table[index % len(table)]
                index += 1
                return framed, 0

            return next_fixed
        if self.kind == "put":

            def next_put() -> tuple[bytes, int]:
                nonlocal index
                key_index = index % space if self.sequential else rng.randrange(space)
                index += 1
                return cached(key_index, put_of), 0

            return next_put
        if self.kind == "txn-put":
            ops = self.txn_ops

            def txn_of(first: int) -> bytes:
                return messages.txn_request(
                    [messages.request_op_put(put_of((first + j) % space)) for j in range(ops)]
                )

            def next_txn_put() -> tuple[bytes, int]:
                nonlocal index
                first = (index * ops) % space
                index += 1
                return cached(first, txn_of), 0

            return next_txn_put
        if self.kind == "txn-mixed":
            read = h2client.grpc_message(
                messages.txn_request([messages.request_op_range(self.read_message)])
            )
            read_share = self.rw_ratio / (1 + self.rw_ratio)

            def write_of(key_index: int) -> bytes:
                return messages.txn_request([messages.request_op_put(put_of(key_index))])

            def next_mixed() -> tuple[bytes, int]:
                nonlocal index
                key_index = index % space
                index += 1
                if rng.random() < read_share:
                    return read, 0
                return cached(key_index, write_of), 1

            return next_mixed
        raise ValueError(f"unknown workload kind {self.kind!r}")


@attrs.frozen
class LoadConfig:
    endpoints: tuple[str, ...]  # "host:port"
    conns: int = 1
    clients: int = 1
    total: int = 10000
    procs: int = 1
    workload: Workload = Workload()
    dial_options: dial.DialOptions = dial.DialOptions()
    rate: float = 0.0  # calls per second over all processes, 0 for no limit
    compact_interval_s: float = 0.0
    compact_index_delta: int = 1000
    stall_timeout_s: float = 30.0


class Progress:
    """Calls finished so far, one counter per worker, readable from another thread."""

    def __init__(self, workers: int, ctx=None):
        ctx = ctx or multiprocessing.get_context("spawn")
        self.counters = ctx.RawArray("q", workers)

    def done(self) -> int:
        return sum(self.counters)


# ---- one worker ------------------------------------------------------------------


@attrs.frozen
class _Share:
    config: LoadConfig
    conn_endpoints: tuple[str, ...]  # one entry per connection of this worker
    clients: int
    total: int
    offset: int  # index of this worker's first call in the whole run
    slot: int  # this worker's progress counter


@attrs.frozen
class _ShareResult:
    lats: tuple[bytes, ...]  # per report: array('d') of successful call latencies, seconds
    errors: tuple[dict, ...]  # per report
    started: float  # time.perf_counter(), CLOCK_MONOTONIC: shared by processes
    finished: float
    cpu_s: float  # process CPU time spent in the measured part


class _Conn:
    __slots__ = ("sock", "h2", "block", "idle", "starts", "reports", "pending", "dead", "fixed", "tls", "waiting")

    def __init__(self, link: dial.Link, block: bytes, fixed: bytes | None):
        self.sock = link.sock
        self.h2 = link.h2
        self.block = block
        self.fixed = fixed  # the request every call on this connection carries, if any
        self.tls = isinstance(link.sock, ssl.SSLSocket)
        self.idle = 0  # clients of this connection waiting to send
        self.starts: dict[int, float] = {}
        self.reports: dict[int, int] = {}  # stream id -> report index (several reports only)
        self.pending = b""  # bytes the socket did not take yet
        self.dead = False
        self.waiting = False  # queued for a token of the rate limiter


def _open(endpoint: str, config: LoadConfig, context) -> _Conn:
    link = dial.dial(endpoint, config.dial_options, context)
    workload = config.workload
    fixed = None
    if workload.kind == "lease-keepalive":
        response = link.call(LEASE_GRANT_METHOD, messages.lease_grant_request(100))
        lease_id = messages.first(messages.fields(response), 2)
        fixed = h2client.grpc_message(messages.lease_keepalive_request(lease_id))
    link.sock.setblocking(False)
    return _Conn(link, link.block_for(workload.method), fixed)


def _run_share(share: _Share, progress: Progress, barrier=None) -> _ShareResult:
    config = share.config
    context = config.dial_options.ssl_context() if config.dial_options.tls else None
    conns = [_open(endpoint, config, context) for endpoint in share.conn_endpoints]
    for client in range(share.clients):
        conns[client % len(conns)].idle += 1
    reports = len(config.workload.report_names)
    lats = [array.array("d") for _ in range(reports)]
    errors: list[dict[str, int]] = [{} for _ in range(reports)]
    next_request = config.workload.source(share.offset)
    procs = max(1, min(config.procs, config.conns, config.clients))
    loop = _Loop(conns, next_request, share.total, lats, errors, config.rate / procs)
    loop.progress, loop.slot = progress.counters, share.slot
    if barrier is not None:
        barrier.wait()
    cpu_started = time.process_time()
    started = time.perf_counter()
    loop.run(config.stall_timeout_s)
    finished = time.perf_counter()
    cpu_s = time.process_time() - cpu_started
    for conn in conns:
        conn.sock.close()
    return _ShareResult(tuple(a.tobytes() for a in lats), tuple(errors), started, finished, cpu_s)


class _Loop:
    """The epoll loop of one worker: closed-loop clients over its connections."""

    def __init__(self, conns, next_request, total, lats, errors, rate):
        self.conns = conns
        self.next_request = next_request
        self.to_issue = total
        self.in_flight = 0
        self.finished = 0
        self.lats = lats
        self.errors = errors
        self.several = len(lats) > 1
        self.interval_s = 1.0 / rate if rate > 0 else 0.0
        self.token_at = 0.0  # the rate limiter allows the next call from this time
        self.waiting: list[_Conn] = []  # connections with idle clients held by the limiter
        self.progress = None
        self.slot = 0
        self.selector = selectors.DefaultSelector()
        for conn in conns:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def run(self, stall_timeout_s: float) -> None:
        for conn in self.conns:
            self._issue(conn)
            self._send(conn)
        select = self.selector.select
        last_progress = time.perf_counter()
        while self.in_flight or (self.to_issue and self.waiting):
            timeout = stall_timeout_s
            if self.waiting:
                timeout = min(timeout, max(0.0, self.token_at - time.perf_counter()))
            events = select(timeout)
            now = time.perf_counter()
            if events:
                last_progress = now
            elif self.in_flight and now - last_progress >= stall_timeout_s:
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
            if self.waiting and time.perf_counter() >= self.token_at:
                self._release_waiting()
        if self.to_issue:
            self._count_error(0, "not sent: every connection failed", self.to_issue)
            self.to_issue = 0

    def _count_error(self, report: int, text: str, count: int = 1) -> None:
        errors = self.errors[report]
        errors[text] = errors.get(text, 0) + count

    def _read(self, conn: _Conn) -> None:
        while True:
            try:
                data = dial.recv_nowait(conn.sock)
            except OSError as exc:
                self._kill(conn, f"connection error: {exc}")
                return
            if data is None:
                return
            self._received(conn, data)
            if conn.dead or not conn.tls or not conn.sock.pending():
                return

    def _received(self, conn: _Conn, data: bytes) -> None:
        try:
            done = conn.h2.receive(data)
        except h2client.ProtocolError as exc:
            self._kill(conn, f"protocol error: {exc}")
            return
        if done:
            now = time.perf_counter()
            starts = conn.starts
            reports = conn.reports
            several = self.several
            lats = self.lats
            for sid, code, detail in done:
                elapsed = now - starts.pop(sid)
                report = reports.pop(sid) if several else 0
                if code == 0:
                    lats[report].append(elapsed)
                else:
                    self._count_error(report, dial.error_text(code, detail))
            self.in_flight -= len(done)
            self.finished += len(done)
            conn.idle += len(done)
            if self.progress is not None:
                self.progress[self.slot] = self.finished
        if conn.h2.closed:
            self._kill(conn, "connection closed by server")
            return
        self._issue(conn)
        self._send(conn)

    def _issue(self, conn: _Conn) -> None:
        h2 = conn.h2
        if not self.to_issue or not conn.idle or not h2.can_start_call():
            return
        next_request = self.next_request
        fixed = conn.fixed
        issued = []
        limited = self.interval_s > 0
        while conn.idle and self.to_issue and h2.can_start_call():
            if limited and not self._take_token(conn):
                break
            message, report = next_request()
            sid = h2.start_call(conn.block, fixed or message)
            issued.append(sid)
            if self.several:
                conn.reports[sid] = report
            conn.idle -= 1
            self.to_issue -= 1
        self.in_flight += len(issued)
        now = time.perf_counter()
        starts = conn.starts
        for sid in issued:
            starts[sid] = now

    def _take_token(self, conn: _Conn) -> bool:
        # A token bucket of one token, like the Go tool's rate.NewLimiter(rate, 1).
        now = time.perf_counter()
        if now >= self.token_at:
            self.token_at = max(self.token_at, now - self.interval_s) + self.interval_s
            return True
        if not conn.waiting:
            conn.waiting = True
            self.waiting.append(conn)
        return False

    def _release_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for conn in waiting:
            conn.waiting = False
        for conn in waiting:
            if not conn.dead:
                self._issue(conn)
                self._send(conn)

    def _send(self, conn: _Conn) -> None:
        out = conn.h2.data_to_send()
        if conn.pending:
            out = conn.pending + out
        if not out:
            return
        was_pending = bool(conn.pending)
        try:
            conn.pending = dial.send_nowait(conn.sock, out)
        except OSError as exc:
            self._kill(conn, f"connection error: {exc}")
            return
        if bool(conn.pending) != was_pending:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
            self.selector.modify(conn.sock, events, conn)

    def _kill(self, conn: _Conn, why: str) -> None:
        if conn.dead:
            return
        conn.dead = True
        self.selector.unregister(conn.sock)
        for sid in conn.starts:
            self._count_error(conn.reports.get(sid, 0), why)
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


def _worker_main(share: _Share, progress: Progress, barrier, pipe) -> None:
    try:
        result = _run_share(share, progress, barrier)
    except BaseException as exc:  # reported to the parent, which fails loudly
        barrier.abort()
        pipe.send(("error", f"{exc}"))
    else:
        pipe.send(("ok", result))
    pipe.close()


# ---- splitting the work and collecting results ---------------------------------------


def _split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def shares_of(config: LoadConfig) -> list[_Share]:
    """The work of each process: never more processes than connections or clients."""
    procs = max(1, min(config.procs, config.conns, config.clients))
    conn_endpoints = [config.endpoints[i % len(config.endpoints)] for i in range(config.conns)]
    conns_split = _split(config.conns, procs)
    clients_split = _split(config.clients, procs)
    totals = _split(config.total, procs)
    shares = []
    conn_at = 0
    offset = 0
    for proc in range(procs):
        endpoints = tuple(conn_endpoints[conn_at : conn_at + conns_split[proc]])
        conn_at += conns_split[proc]
        shares.append(_Share(config, endpoints, clients_split[proc], totals[proc], offset, proc))
        offset += totals[proc]
    return shares


def run_load(config: LoadConfig, progress: Progress | None = None) -> list[Stats]:
    """Run the whole load; returns one Stats per report of the workload."""
    if config.total < 1 or config.conns < 1 or config.clients < 1:
        raise ValueError("--total, --conns and --clients must be at least 1")
    shares = shares_of(config)
    progress = progress or Progress(len(shares))
    compactor = _Compactor(config) if config.compact_interval_s > 0 else None
    try:
        if len(shares) == 1:
            results = [_run_share(shares[0], progress)]
        else:
            results = _run_processes(shares, progress)
    finally:
        if compactor is not None:
            compactor.stop()
    total_s = max(r.finished for r in results) - min(r.started for r in results)
    cpu_s = sum(r.cpu_s for r in results)
    out = []
    for report in range(len(config.workload.report_names)):
        lats = array.array("d")
        errors: dict[str, int] = {}
        for result in results:
            lats.frombytes(result.lats[report])
            for text, count in result.errors[report].items():
                errors[text] = errors.get(text, 0) + count
        out.append(summarize(lats.tolist(), errors, total_s, cpu_s))
    return out


def _run_processes(shares: list[_Share], progress: Progress) -> list[_ShareResult]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(shares))
    workers = []
    for share in shares:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, args=(share, progress, barrier, child_end), daemon=True)
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
        raise dial.DialError("; ".join(dict.fromkeys(failures)))
    return results


class _Compactor:
    """etcd's --compact-interval: every interval, Range "foo" for the current
    revision, then Compact to revision - delta. A thread with its own blocking
    connection; it wakes once per interval, so it costs the load nothing."""

    def __init__(self, config: LoadConfig):
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compactor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        config = self._config
        try:
            link = dial.dial(config.endpoints[0], config.dial_options)
            try:
                while not self._stop.wait(config.compact_interval_s):
                    response = link.call(RANGE_METHOD, messages.range_request(b"foo"), timeout_s=5.0)
                    revision = max(0, messages.header_revision(response) - config.compact_index_delta)
                    link.call(COMPACT_METHOD, messages.compaction_request(revision), timeout_s=5.0)
            finally:
                link.close()
        except (dial.DialError, dial.CallError) as exc:
            # etcd's tool panics here; the load goes on, the reason is shown.
            sys.stderr.write(f"compaction stopped: {exc}\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
