"""The streaming sub-commands of etcd's benchmark tool: `watch` and `watch-latency`.

Both run in one process over one epoll loop (`Reactor`), with watch streams
kept open on the HTTP/2 client core (`start_call(..., end_stream=False,
collect=True)` and `send_message`).

- watch: every stream creates its watchers one after the other (etcd's
  client waits for each `created` answer; that wait is the creation latency),
  then `--clients` closed-loop clients Put the watched keys `--put-total`
  times, and the run ends when every watcher got its events; "events
  received" counts events per second, as etcd's tool does.
- watch-latency: each connection opens one watch stream carrying its share of
  the `--clients` watchers of one key; one more connection Puts the key
  `--total` times at `--put-rate`; each latency runs from the Put's answer to
  a watcher's event (0 if the event came first), as in etcd's tool.
"""

from __future__ import annotations

import argparse
import random
import selectors
import ssl
import sys
import time

from trietcd.tools.benchmark import dial, h2client, messages
from trietcd.tools.benchmark.report import render, summarize

__all__ = ["COMMANDS", "add_parsers", "run", "Reactor", "count_events"]

COMMANDS = ("watch", "watch-latency")
WATCH_METHOD = "/etcdserverpb.Watch/Watch"
PUT_METHOD = "/etcdserverpb.KV/Put"


def add_parsers(subs, common: argparse.ArgumentParser) -> None:
    watch = subs.add_parser("watch", parents=[common], help="Benchmark watch")
    watch.add_argument("--streams", type=int, default=10, help="Total watch streams")
    watch.add_argument("--watch-per-stream", type=int, default=100, help="Total watchers per stream")
    watch.add_argument("--watched-key-total", type=int, default=1, help="Total number of keys to be watched")
    watch.add_argument("--put-rate", type=int, default=0, help="Number of keys to put per second (0 is no limit)")
    watch.add_argument("--put-total", type=int, default=1000, help="Number of put requests")
    watch.add_argument("--key-size", type=int, default=32, help="Key size of watch request")
    watch.add_argument("--key-space-size", type=int, default=1, help="Maximum possible keys")
    watch.add_argument("--sequential-keys", action="store_true", help="Use sequential keys")

    latency = subs.add_parser("watch-latency", parents=[common], help="Benchmark watch latency")
    latency.add_argument("--total", type=int, default=10000, help="Total number of put requests")
    latency.add_argument("--put-rate", type=int, default=100, help="Number of keys to put per second")
    latency.add_argument("--key-size", type=int, default=32, help="Key size of watch response")
    latency.add_argument("--val-size", type=int, default=32, help="Value size of watch response")


def count_events(response: bytes) -> tuple[bool, int]:
    """(created, number of events) of one WatchResponse."""
    fields = messages.fields(response)
    if messages.first(fields, 4):
        reason = messages.first(fields, 6, b"").decode(errors="replace")
        raise dial.CallError(-1, f"watch canceled by the server: {reason}")
    return bool(messages.first(fields, 3)), len(fields.get(11, ()))


class Conn:
    __slots__ = ("link", "sock", "h2", "pending", "tls")

    def __init__(self, link: dial.Link):
        self.link = link
        self.sock = link.sock
        self.h2 = link.h2
        self.pending = b""
        self.tls = isinstance(link.sock, ssl.SSLSocket)


class Reactor:
    """One epoll loop over connections; hands messages and finished calls to `on_read`."""

    def __init__(self, endpoints: list[str], count: int, options: dial.DialOptions):
        context = options.ssl_context() if options.tls else None
        self.conns = [Conn(dial.dial(endpoints[i % len(endpoints)], options, context)) for i in range(count)]
        self.selector = selectors.DefaultSelector()
        for conn in self.conns:
            conn.sock.setblocking(False)
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.sock.close()
        self.selector.close()

    def send(self, conn: Conn) -> None:
        out = conn.h2.data_to_send()
        if conn.pending:
            out = conn.pending + out
        if not out:
            return
        had = bool(conn.pending)
        conn.pending = dial.send_nowait(conn.sock, out)
        if bool(conn.pending) != had:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
            self.selector.modify(conn.sock, events, conn)

    def poll(self, timeout_s: float, on_read) -> bool:
        """Waits up to timeout_s; calls on_read(conn, messages, finished). False if nothing happened."""
        events = self.selector.select(timeout_s)
        for key, mask in events:
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                self.send(conn)
            if mask & selectors.EVENT_READ:
                self._read(conn, on_read)
        return bool(events)

    def _read(self, conn: Conn, on_read) -> None:
        while True:
            try:
                data = dial.recv_nowait(conn.sock)
            except OSError as exc:
                raise dial.DialError(f"connection error: {exc}") from exc
            if data is None:
                return
            if not data:
                raise dial.DialError("connection closed by server")
            done = conn.h2.receive(data)
            got = conn.h2.messages
            conn.h2.messages = []
            on_read(conn, got, done)
            self.send(conn)
            if not conn.tls or not conn.sock.pending():
                return


def _fail_on_error(done) -> None:
    for _sid, code, detail in done:
        raise dial.CallError(code, detail)


def run(args: argparse.Namespace, endpoints: list[str], options: dial.DialOptions, progress_bar) -> None:
    if args.command == "watch":
        if args.key_space_size <= 0:
            raise dial.DialError(f"expected positive --key-space-size, got ({args.key_space_size})")
        run_watch(args, endpoints, options, progress_bar)
    else:
        run_watch_latency(args, endpoints, options, progress_bar)


def _emit(args, stats, title: str = "") -> None:
    if title and not args.json:
        sys.stdout.write(f"{title}:\n")
    sys.stdout.write(render(stats, as_json=args.json, precise=args.precise, name=title))


def watched_keys(count: int, key_size: int, key_space_size: int, sequential: bool, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [
        messages.benchmark_key(i % key_space_size if sequential else rng.randrange(key_space_size), key_size)
        for i in range(count)
    ]


def run_watch(args, endpoints, options, progress_bar) -> None:
    conns_n = min(args.conns, args.clients)
    if conns_n < 1 + args.streams // 100:
        sys.stderr.write(
            f"warning: grpc limits 100 streams per client connection, have {conns_n} "
            f"but need {1 + args.streams // 100}\n"
        )
    keys = watched_keys(args.watched_key_total, args.key_size, args.key_space_size, args.sequential_keys)
    reactor = Reactor(endpoints, args.conns, options)
    try:
        watchers_n = args.streams * args.watch_per_stream
        watchers_of_key: dict[bytes, int] = {}
        for i in range(watchers_n):
            watchers_of_key[keys[i % len(keys)]] = watchers_of_key.get(keys[i % len(keys)], 0) + 1
        created = _create_watches(args, reactor, keys, progress_bar)
        _emit(args, created, "Watch creation summary")
        events_total = sum(watchers_of_key.get(keys[i % len(keys)], 0) for i in range(args.put_total))
        received = _put_and_receive(args, reactor, keys, events_total, progress_bar)
        _emit(args, received, "Watch events received summary")
    finally:
        reactor.close()


def _create_watches(args, reactor: Reactor, keys: list[bytes], progress_bar):
    """Every stream creates its watchers one at a time; returns the creation Stats."""
    lats: list[float] = []
    streams = {}  # (conn index, sid) -> [watchers left to create, sent at, next key index]
    block_of = {}
    next_key = 0
    started = time.perf_counter()
    for s in range(args.streams):
        conn = reactor.conns[(s % args.clients) % len(reactor.conns)]
        block = block_of.setdefault(id(conn), conn.link.block_for(WATCH_METHOD))
        request = h2client.grpc_message(messages.watch_create_request(keys[next_key % len(keys)]))
        next_key += 1
        sid = conn.h2.start_call(block, request, end_stream=False, collect=True)
        streams[(id(conn), sid)] = [args.watch_per_stream - 1, time.perf_counter()]
    for conn in reactor.conns:
        reactor.send(conn)
    creating = args.streams * args.watch_per_stream
    reactor.watch_streams = list(streams)

    def on_read(conn, got, done):
        nonlocal next_key, creating
        _fail_on_error(done)
        now = time.perf_counter()
        for sid, message in got:
            was_created, _ = count_events(message)
            state = streams.get((id(conn), sid))
            if not was_created or state is None:
                continue
            lats.append(now - state[1])
            creating -= 1
            if state[0] > 0:
                state[0] -= 1
                state[1] = now
                request = h2client.grpc_message(messages.watch_create_request(keys[next_key % len(keys)]))
                next_key += 1
                conn.h2.send_message(sid, request)

    total = args.streams * args.watch_per_stream
    with progress_bar(total, lambda: total - creating, not args.no_progress):
        while creating > 0:
            if not reactor.poll(30.0, on_read):
                raise dial.DialError("watch creation: no progress for 30s")
    return summarize(lats, {}, time.perf_counter() - started)


def _put_and_receive(args, reactor: Reactor, keys: list[bytes], events_total: int, progress_bar):
    lats: list[float] = []
    remaining = events_total
    puts_left = args.put_total
    interval_s = 1.0 / args.put_rate if args.put_rate > 0 else 0.0
    token_at = time.perf_counter()
    put_index = 0
    idle = [0] * len(reactor.conns)
    for client in range(args.clients):
        idle[client % len(reactor.conns)] += 1
    blocks = [conn.link.block_for(PUT_METHOD) for conn in reactor.conns]
    index_of = {id(conn): i for i, conn in enumerate(reactor.conns)}

    def issue(i: int) -> None:
        nonlocal puts_left, put_index, token_at
        conn = reactor.conns[i]
        while idle[i] and puts_left:
            if interval_s:
                now = time.perf_counter()
                if now < token_at:
                    return
                token_at = max(token_at, now - interval_s) + interval_s
            request = messages.put_request(keys[put_index % len(keys)], b"data")
            conn.h2.start_call(blocks[i], h2client.grpc_message(request))
            put_index += 1
            puts_left -= 1
            idle[i] -= 1
        reactor.send(conn)

    def on_read(conn, got, done):
        nonlocal remaining
        i = index_of[id(conn)]
        for _sid, code, detail in done:
            if code != 0:
                raise dial.CallError(code, detail)
            idle[i] += 1
        started = time.perf_counter()
        for _sid, message in got:
            _, events = count_events(message)
            for _ in range(events):
                lats.append(time.perf_counter() - started)
            remaining -= events
        issue(i)

    started = time.perf_counter()
    with progress_bar(events_total, lambda: events_total - remaining, not args.no_progress):
        for i in range(len(reactor.conns)):
            issue(i)
        last = time.perf_counter()
        while remaining > 0:
            timeout = max(0.0, token_at - time.perf_counter()) if interval_s and puts_left else 30.0
            if reactor.poll(timeout, on_read):
                last = time.perf_counter()
            elif time.perf_counter() - last > 30.0:
                raise dial.DialError(f"watch: {remaining} events still missing after 30s without progress")
            if interval_s and puts_left:
                for i in range(len(reactor.conns)):
                    issue(i)
    return summarize(lats, {}, time.perf_counter() - started)


def run_watch_latency(args, endpoints, options, progress_bar) -> None:
    rng = random.Random(1)
    key, value = rng.randbytes(args.key_size), rng.randbytes(args.val_size)
    reactor = Reactor(endpoints, args.conns + 1, options)  # the last one only Puts
    put_conn = reactor.conns[-1]
    watch_conns = reactor.conns[:-1]
    try:
        watchers_of = [0] * len(watch_conns)
        for client in range(args.clients):
            watchers_of[client % len(watch_conns)] += 1
        pending_created = 0
        for conn, count in zip(watch_conns, watchers_of):
            if not count:
                continue
            request = h2client.grpc_message(messages.watch_create_request(key))
            sid = conn.h2.start_call(conn.link.block_for(WATCH_METHOD), request, end_stream=False, collect=True)
            for _ in range(count - 1):
                conn.h2.send_message(sid, request)
            pending_created += count
            reactor.send(conn)
        state = {"created": 0, "events": 0, "put_done": None, "arrivals": []}

        def on_read(conn, got, done):
            for _sid, code, detail in done:
                if code != 0:
                    raise dial.CallError(code, detail)
                if conn is put_conn:
                    state["put_done"] = time.perf_counter()
            now = time.perf_counter()
            for _sid, message in got:
                was_created, events = count_events(message)
                state["created"] += was_created
                state["arrivals"] += [now] * events

        while state["created"] < pending_created:
            if not reactor.poll(30.0, on_read):
                raise dial.DialError("watch-latency: watches not created after 30s")
        lats: list[float] = []
        put_block = put_conn.link.block_for(PUT_METHOD)
        put_request = h2client.grpc_message(messages.put_request(key, value))
        interval_s = 1.0 / args.put_rate if args.put_rate > 0 else 0.0
        # The Go tool's limiter has a burst of --put-rate tokens.
        tokens = float(max(args.put_rate, 1))
        refilled = time.perf_counter()
        started = time.perf_counter()
        with progress_bar(args.total, lambda: len(lats) // max(args.clients, 1), not args.no_progress):
            for _ in range(args.total):
                if interval_s:
                    now = time.perf_counter()
                    tokens = min(float(args.put_rate), tokens + (now - refilled) / interval_s)
                    refilled = now
                    if tokens < 1:
                        time.sleep((1 - tokens) * interval_s)
                        tokens, refilled = 1.0, time.perf_counter()
                    tokens -= 1
                state["put_done"], state["arrivals"] = None, []
                put_conn.h2.start_call(put_block, put_request)
                reactor.send(put_conn)
                while state["put_done"] is None or len(state["arrivals"]) < args.clients:
                    if not reactor.poll(30.0, on_read):
                        raise dial.DialError("watch-latency: no progress for 30s")
                put_done = state["put_done"]
                lats += [max(0.0, arrival - put_done) for arrival in state["arrivals"][: args.clients]]
        _emit(args, summarize(lats, {}, time.perf_counter() - started))
    finally:
        reactor.close()
