"""`trietcd-benchmark`: etcd's benchmark tool (tools/benchmark, etcd 3.5), same
command shape, flags and output, for any etcd-compatible endpoint.

    trietcd-benchmark --endpoints=127.0.0.1:2379 --conns=100 --clients=1000 \\
        put --key-size=8 --sequential-keys --total=100000 --val-size=256

Global flags may come before or after the sub-command, as with etcd's tool.
Beyond etcd's flags: `--procs N` (worker processes, default: one per CPU,
never more than connections), `--json` (the summary as JSON) and
`--no-progress`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import threading
import time

from trietcd.tools.benchmark import dial, load, messages, streams
from trietcd.tools.benchmark.report import Stats, format_summary, render

__all__ = ["main", "parse_args", "parse_duration"]

_BOOL_FLAGS = (
    "--target-leader", "--insecure-skip-tls-verify", "--precise", "--sequential-keys",
    "--json", "--no-progress", "--check-hashkv",
)
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "500ms", "0"), in seconds."""
    if text in ("0", ""):
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("+"):
        raise argparse.ArgumentTypeError(f"time: invalid duration {text!r}")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _normalize_bools(argv: list[str]) -> list[str]:
    # pflag accepts --flag=true/false for booleans; argparse's store_true does not.
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in _BOOL_FLAGS:
            if value.lower() in ("true", "1", "t"):
                out.append(name)
            elif value.lower() not in ("false", "0", "f"):
                out.append(arg)  # argparse reports it
            continue
        out.append(arg)
    return out


def _global_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    add = parser.add_argument
    add("--endpoints", default=default("127.0.0.1:2379"), help="gRPC endpoints")
    add("--conns", type=int, default=default(1), help="Total number of gRPC connections")
    add("--clients", type=int, default=default(1), help="Total number of gRPC clients")
    add("--precise", action="store_true", default=default(False), help="use full floating point precision")
    add("--cert", default=default(""), help="identify HTTPS client using this SSL certificate file")
    add("--key", default=default(""), help="identify HTTPS client using this SSL key file")
    add("--cacert", default=default(""), help="verify certificates of HTTPS-enabled servers using this CA bundle")
    add("--insecure-skip-tls-verify", action="store_true", default=default(False),
        help="skip server certificate verification")
    add("--user", default=default(""), help="provide username[:password] and prompt if password is not supplied.")
    add("--dial-timeout", type=parse_duration, default=default(0.0), help="dial timeout for client connections")
    add("--target-leader", action="store_true", default=default(False), help="connect only to the leader node")
    add("--procs", type=int, default=default(0), help="worker processes (0: one per CPU, at most --conns)")
    add("--json", action="store_true", default=default(False), help="print the summary as JSON")
    add("--no-progress", action="store_true", default=default(False), help="no progress bar on stderr")


def _put_flags(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument("--key-size", type=int, default=8, help=f"Key size of {what}")
    sub.add_argument("--val-size", type=int, default=8, help=f"Value size of {what}")
    sub.add_argument("--key-space-size", type=int, default=1, help="Maximum possible keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trietcd-benchmark",
        description="A low-level benchmark tool for etcd3 (etcd's tools/benchmark, in Python).",
    )
    _global_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, suppress=True)
    subs = parser.add_subparsers(dest="command", metavar="command", required=True)

    put = subs.add_parser("put", parents=[common], help="Benchmark put")
    _put_flags(put, "put request")
    put.add_argument("--rate", type=int, default=0, help="Maximum puts per second (0 is no limit)")
    put.add_argument("--total", type=int, default=10000, help="Total number of put requests")
    put.add_argument("--sequential-keys", action="store_true", help="Use sequential keys")
    put.add_argument("--compact-interval", type=parse_duration, default=0.0,
                     help="Interval to compact database (e.g. --compact-interval=5m)")
    put.add_argument("--compact-index-delta", type=int, default=1000,
                     help="Delta between current revision and compact revision")

    rng = subs.add_parser("range", parents=[common], help="Benchmark range", usage="range key [end-range]")
    rng.add_argument("range_key", metavar="key")  # not "key": --key is the TLS key file
    rng.add_argument("range_end", metavar="end-range", nargs="?", default="")
    rng.add_argument("--rate", type=int, default=0, help="Maximum range requests per second (0 is no limit)")
    rng.add_argument("--total", type=int, default=10000, help="Total number of range requests")
    rng.add_argument("--consistency", default="l", help="Linearizable(l) or Serializable(s)")
    rng.add_argument("--limit", type=int, default=0, help="Maximum number of results to return (0 is no limit)")
    rng.add_argument("--count-only", action="store_true", help="Only returns the count of keys")

    txn_put = subs.add_parser("txn-put", parents=[common], help="Benchmark txn-put")
    _put_flags(txn_put, "txn put")
    txn_put.add_argument("--txn-ops", type=int, default=1, help="Number of puts per txn")
    txn_put.add_argument("--rate", type=int, default=0, help="Maximum txns per second (0 is no limit)")
    txn_put.add_argument("--total", type=int, default=10000, help="Total number of txn requests")

    mixed = subs.add_parser("txn-mixed", parents=[common], help="Benchmark a mixed load of txn-put & txn-range.")
    mixed.add_argument("range_key", metavar="key", nargs="?", default="")  # unused, as in etcd's tool
    mixed.add_argument("range_end", metavar="end-range", nargs="?", default="")
    _put_flags(mixed, "mixed txn")
    mixed.add_argument("--rate", type=int, default=0, help="Maximum txns per second (0 is no limit)")
    mixed.add_argument("--total", type=int, default=10000, help="Total number of txn requests")
    mixed.add_argument("--end-key", default="", help="Read operation range end key")
    mixed.add_argument("--limit", type=int, default=1000, help="Read operation range result limit")
    mixed.add_argument("--consistency", default="l", help="Linearizable(l) or Serializable(s)")
    mixed.add_argument("--rw-ratio", type=float, default=1.0, help="Read/write ops ratio")

    lease = subs.add_parser("lease-keepalive", parents=[common], help="Benchmark lease keepalive")
    lease.add_argument("--total", type=int, default=10000, help="Total number of lease keepalive requests")

    streams.add_parsers(subs, common)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(_normalize_bools(argv))
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if getattr(args, "key_space_size", 1) <= 0:
        parser.exit(1, f"expected positive --key-space-size, got ({args.key_space_size})")
    if args.command in ("range", "txn-mixed") and args.consistency not in ("l", "s"):
        parser.print_usage(sys.stderr)
        parser.exit(1)
    if args.command == "txn-put" and args.txn_ops > args.key_space_size:
        parser.exit(1, "expected --txn-ops no larger than --key-space-size, "
                    f"got txn-ops({args.txn_ops}) key-space-size({args.key_space_size})\n")
    return args


def dial_options(args: argparse.Namespace) -> dial.DialOptions:
    return dial.DialOptions(
        timeout_s=args.dial_timeout or None,
        cacert=args.cacert,
        cert=args.cert,
        key=args.key,
        insecure_skip_verify=args.insecure_skip_tls_verify,
    )


def resolve_endpoints(args: argparse.Namespace, options: dial.DialOptions) -> tuple[list[str], dial.DialOptions]:
    """--user (a token for every call) and --target-leader (the leader's URLs)."""
    endpoints = args.endpoints
    if args.user:
        name, colon, password = args.user.partition(":")
        if not colon:
            password = getpass.getpass("Password: ")
        token = dial.authenticate(endpoints[0], options, name, password)
        options = dial.DialOptions(
            timeout_s=options.timeout_s, cacert=options.cacert, cert=options.cert, key=options.key,
            insecure_skip_verify=options.insecure_skip_verify, metadata=(("token", token),),
        )
    if args.target_leader:
        endpoints = dial.leader_endpoints(endpoints[0], options)
    return endpoints, options


def workload_of(args: argparse.Namespace) -> load.Workload:
    command = args.command
    if command == "put":
        return load.Workload(
            kind="put", method=load.PUT_METHOD, key_size=args.key_size, val_size=args.val_size,
            key_space_size=args.key_space_size, sequential=args.sequential_keys,
        )
    if command == "range":
        request = messages.range_request(
            args.range_key.encode(), args.range_end.encode(), limit=args.limit,
            serializable=args.consistency == "s", count_only=args.count_only,
        )
        return load.Workload(kind="fixed", method=load.RANGE_METHOD, messages=(request,))
    if command == "txn-put":
        return load.Workload(
            kind="txn-put", method=load.TXN_METHOD, key_size=args.key_size, val_size=args.val_size,
            key_space_size=args.key_space_size, txn_ops=args.txn_ops,
        )
    if command == "txn-mixed":
        # etcd's tool reads with OpGet("", WithPrefix(), ...): key and end both "\0", every key.
        read = messages.range_request(
            b"\x00", b"\x00", limit=args.limit, serializable=args.consistency == "s"
        )
        return load.Workload(
            kind="txn-mixed", method=load.TXN_METHOD, key_size=args.key_size, val_size=args.val_size,
            key_space_size=args.key_space_size, rw_ratio=args.rw_ratio, read_message=read,
            report_names=("read", "write"),
        )
    if command == "lease-keepalive":
        return load.Workload(kind="lease-keepalive", method=load.LEASE_KEEPALIVE_METHOD)
    raise AssertionError(command)


class ProgressBar:
    """etcd's tool draws `pb` with the format "Bom !"; this draws the same on stderr."""

    WIDTH = 60

    def __init__(self, total: int, count, enabled: bool):
        self._total = total
        self._count = count  # callable: calls finished so far
        self._enabled = enabled
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True) if enabled else None

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._draw(final=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        done = min(self._count(), self._total)
        fill = self.WIDTH * done // self._total if self._total else self.WIDTH
        percent = 100.0 * done / self._total if self._total else 100.0
        elapsed = int(time.monotonic() - self._started)
        bar = "o" * fill + " " * (self.WIDTH - fill)
        sys.stderr.write(f"\r{done} / {self._total} B{bar}! {percent:.2f}% {elapsed}s" + ("\n" if final else ""))
        sys.stderr.flush()


def emit(args: argparse.Namespace, stats: Stats, title: str = "") -> None:
    sys.stdout.write(render(stats, as_json=args.json, precise=args.precise, name=title))


def run_unary(args: argparse.Namespace, endpoints: list[str], options: dial.DialOptions) -> None:
    procs = args.procs or os.cpu_count() or 1
    if args.clients == 1:
        procs = 1
    rate = getattr(args, "rate", 0)
    config = load.LoadConfig(
        endpoints=tuple(endpoints), conns=args.conns, clients=args.clients, total=args.total,
        procs=procs, workload=workload_of(args), dial_options=options, rate=float(rate),
        compact_interval_s=getattr(args, "compact_interval", 0.0),
        compact_index_delta=getattr(args, "compact_index_delta", 1000),
    )
    if args.command in ("range", "txn-mixed") and not args.json:
        kind = "linearizable" if args.consistency == "l" else "serializable"
        print(f"bench with {kind} range", flush=True)
    progress = load.Progress(len(load.shares_of(config)))
    with ProgressBar(args.total, progress.done, not args.no_progress):
        reports = load.run_load(config, progress)
    if args.command == "txn-mixed":
        read, write = reports
        if args.json:
            emit(args, read, "read")
            emit(args, write, "write")
            return
        sys.stdout.write(f"Total Read Ops: {read.calls_ok + read.calls_failed}\nDetails:")
        sys.stdout.write(format_summary(read, args.precise) + "\n")
        sys.stdout.write(f"Total Write Ops: {write.calls_ok + write.calls_failed}\nDetails:")
        sys.stdout.write(format_summary(write, args.precise) + "\n")
        return
    emit(args, reports[0])
    if args.command in ("put", "txn-put") and not args.json:
        sys.stdout.write("\n")  # etcd's tool prints these summaries with Println


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        endpoints, options = resolve_endpoints(args, dial_options(args))
        if args.command in streams.COMMANDS:
            streams.run(args, endpoints, options, ProgressBar)
        else:
            run_unary(args, endpoints, options)
    except (dial.DialError, dial.CallError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
