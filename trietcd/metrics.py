"""A small Prometheus registry rendering the text exposition format 0.0.4.

Families are written sorted by name and samples sorted by label values, with numbers formatted
the way Go's client_golang does (strconv 'g' shortest: 3.0519296e+07, 0.05, 20000), so a scrape
of trietcd reads like one of etcd. `Registry(process=True)` adds the process collector's metrics
(process_cpu_seconds_total, process_open_fds, ...), read from /proc/self at scrape time.

Every metric is owned by whoever created it; updates are plain attribute changes, safe from any
task of the one trio thread. Values that already live elsewhere (the leader, the applied index, the
db size, the gRPC call counts a connection keeps) are read at scrape time through functions, so the
request path pays nothing for them.

The etcd-named families live here, created once per process in the default registry (as etcd's
package-level collectors): `server_metrics()` for the member's, `register_grpc_metrics` for the
gRPC server's (go-grpc-prometheus' names, which etcd exports).
"""

import math
import os
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "GRPC_CODES",
    "Collector",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
    "ServerMetrics",
    "default_registry",
    "exponential_buckets",
    "format_float",
    "register_grpc_metrics",
    "server_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def format_float(value: float) -> str:
    """`value` as Go's strconv.FormatFloat(value, 'g', -1, 64) writes it, plus Prometheus'
    spellings of the infinities and NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    # Decimal exponent -> position of the decimal point relative to the first digit.
    exp10 = len(text) + exponent - 1
    neg = "-" if sign else ""
    # Go picks %e when the exponent is < -4 or >= 6 (the precision it assumes for 'shortest').
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 < 0:
        return f"{neg}0.{'0' * (-exp10 - 1)}{text}"
    if len(text) <= exp10 + 1:
        return f"{neg}{text}{'0' * (exp10 + 1 - len(text))}"
    return f"{neg}{text[: exp10 + 1]}.{text[exp10 + 1:]}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape_label(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        assert name and all(c.isalnum() or c in "_:" for c in name), name
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            self.labels()  # an unlabelled metric is exported from the start, at zero

    def labels(self, *values: str):
        assert len(values) == len(self.labelnames), (self.name, values)
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _only(self):
        assert not self.labelnames, f"{self.name} has labels; use .labels(...)"
        return self.labels()

    def _new_child(self):
        raise NotImplementedError

    def render_samples(self) -> Iterable[str]:
        for key in sorted(self._children):
            yield from self._render_child(key, self._children[key])

    def _render_child(self, key, child) -> Iterable[str]:
        yield f"{self.name}{_labels_text(self.labelnames, key)} {format_float(child.get())}"


class _Value:
    def __init__(self):
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def get(self) -> float:
        return float(self.function()) if self.function is not None else self.value

    def set_function(self, function: Callable[[], float]) -> None:
        """Compute the value at scrape time (a counter's function must never decrease)."""
        self.function = function


class _CounterChild(_Value):
    def inc(self, amount: float = 1.0) -> None:
        assert amount >= 0, "counters only go up"
        self.value += amount


class _GaugeChild(_Value):
    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Counter(_Family):
    kind = "counter"

    def _new_child(self):
        return _CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._only().set_function(function)

    def get(self) -> float:
        return self._only().get()


class Gauge(_Family):
    kind = "gauge"

    def _new_child(self):
        return _GaugeChild()

    def set(self, value: float) -> None:
        self._only().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._only().set_function(function)

    def get(self) -> float:
        return self._only().get()


class _HistogramChild:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS):
        assert "le" not in labelnames
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        assert bounds == sorted(set(bounds)) and bounds, "buckets must increase"
        self.buckets = tuple(bounds)
        super().__init__(name, help, labelnames)

    def _new_child(self):
        return _HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self._only().observe(value)

    def _render_child(self, key, child) -> Iterable[str]:
        cumulative = 0
        for bound, n in zip(child.buckets, child.counts):
            cumulative += n
            labels = _labels_text(self.labelnames, key, ("le", format_float(bound)))
            yield f"{self.name}_bucket{labels} {cumulative}"
        labels = _labels_text(self.labelnames, key, ("le", "+Inf"))
        yield f"{self.name}_bucket{labels} {child.count}"
        plain = _labels_text(self.labelnames, key)
        yield f"{self.name}_sum{plain} {format_float(child.sum)}"
        yield f"{self.name}_count{plain} {child.count}"


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """client_golang's ExponentialBuckets."""
    return tuple(start * factor**i for i in range(count))


class Collector(_Family):
    """A family whose samples `collect()` yields at scrape time as (label values, value); for a histogram
    the value is (count per bucket, not cumulative, the last for +Inf; sum; count)."""

    def __init__(self, name: str, help: str, kind: str, labelnames: Sequence[str],
                 collect: Callable[[], Iterable[tuple[Sequence[str], float]]], buckets: Sequence[float] = ()):
        assert kind in ("counter", "gauge", "histogram"), kind
        assert (kind == "histogram") == bool(buckets)
        self.kind = kind
        self.buckets = tuple(buckets)
        self._collect = collect
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._children = {}

    def render_samples(self) -> Iterable[str]:
        rows = sorted(((tuple(v), x) for v, x in self._collect()), key=lambda row: row[0])
        if self.kind != "histogram":
            for values, value in rows:
                yield f"{self.name}{_labels_text(self.labelnames, values)} {format_float(value)}"
            return
        for values, (counts, total, count) in rows:
            cumulative = 0
            for bound, n in zip(self.buckets, counts):
                cumulative += n
                labels = _labels_text(self.labelnames, values, ("le", format_float(bound)))
                yield f"{self.name}_bucket{labels} {cumulative}"
            yield f"{self.name}_bucket{_labels_text(self.labelnames, values, ('le', '+Inf'))} {count}"
            plain = _labels_text(self.labelnames, values)
            yield f"{self.name}_sum{plain} {format_float(total)}"
            yield f"{self.name}_count{plain} {count}"


class Registry:
    def __init__(self, *, process: bool = False):
        self._families: dict[str, _Family] = {}
        if process:
            _add_process_metrics(self)

    def register(self, family: _Family) -> _Family:
        assert family.name not in self._families, f"duplicate metric {family.name}"
        self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self.register(Gauge(name, help, labelnames))

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets))

    def collector(self, name: str, help: str, kind: str, labelnames: Sequence[str],
                  collect: Callable[[], Iterable[tuple[Sequence[str], float]]],
                  buckets: Sequence[float] = ()) -> Collector:
        return self.register(Collector(name, help, kind, labelnames, collect, buckets))

    def get(self, name: str) -> _Family | None:
        return self._families.get(name)

    def render(self) -> bytes:
        lines: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            samples = list(family.render_samples())
            if not samples:
                continue  # client_golang omits families without any sample
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            lines.extend(samples)
        return ("\n".join(lines) + "\n").encode() if lines else b""


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry (with the process collector), like client_golang's default
    registerer: what a process serves on /metrics and where its features add their metrics."""
    global _default
    if _default is None:
        _default = Registry(process=True)
    return _default


# -- process collector (Linux /proc) --------------------------------------------------------

_UNLIMITED = float(2**64 - 1)  # Go prints RLIM_INFINITY as 1.8446744073709552e+19


def _proc_stat() -> list[str]:
    with open("/proc/self/stat") as f:
        text = f.read()
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _boot_time_s() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _limit(name: str) -> float:
    with open("/proc/self/limits") as f:
        for line in f:
            if line.startswith(name):
                soft = line[len(name) :].split()[0]
                return _UNLIMITED if soft == "unlimited" else float(soft)
    return _UNLIMITED


def _add_process_metrics(registry: Registry) -> None:
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    page_bytes = os.sysconf("SC_PAGESIZE")
    # Fields after the command name, 0-based: state=0 ... utime=11 stime=12 starttime=19
    # vsize=20 rss=21 (proc(5) numbers them 3.. and 14, 15, 22, 23, 24).
    start_s = _boot_time_s() + float(_proc_stat()[19]) / ticks_per_s

    def cpu_s() -> float:
        fields = _proc_stat()
        return (int(fields[11]) + int(fields[12])) / ticks_per_s

    registry.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.") \
        .set_function(cpu_s)
    registry.gauge("process_max_fds", "Maximum number of open file descriptors.") \
        .set_function(lambda: _limit("Max open files"))
    registry.gauge("process_open_fds", "Number of open file descriptors.") \
        .set_function(lambda: len(os.listdir("/proc/self/fd")))
    registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.") \
        .set_function(lambda: int(_proc_stat()[21]) * page_bytes)
    registry.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.") \
        .set(start_s)
    registry.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.") \
        .set_function(lambda: int(_proc_stat()[20]))
    registry.gauge("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.") \
        .set_function(lambda: _limit("Max address space"))



# -- etcd's families ----------------------------------------------------------------------------

# etcd_disk_*_duration_seconds: 1 ms to 8.192 s.
DISK_BUCKETS = exponential_buckets(0.001, 2, 14)

# gRPC status codes by number, as go-grpc-prometheus spells them in grpc_code.
GRPC_CODES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)


class ServerMetrics:
    """etcd 3.5.1's server, mvcc and disk families. The member binds the scrape-time functions to itself
    when it starts (the last member started in a process is the one exported, as with etcd's globals) and
    bumps the few counters that have no state to read."""

    def __init__(self, registry: Registry):
        r = registry
        gauge, counter = r.gauge, r.counter
        self.has_leader = gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.")
        self.is_leader = gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.")
        self.is_learner = gauge("etcd_server_is_learner",
                                "Whether or not this member is a learner. 1 if is, 0 otherwise.")
        self.leader_changes = counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.")
        self.proposals_committed = gauge("etcd_server_proposals_committed_total",
                                         "The total number of consensus proposals committed.")
        self.proposals_applied = gauge("etcd_server_proposals_applied_total",
                                       "The total number of consensus proposals applied.")
        self.proposals_pending = gauge("etcd_server_proposals_pending",
                                       "The current number of pending proposals to commit.")
        self.proposals_failed = counter("etcd_server_proposals_failed_total",
                                        "The total number of failed proposals seen.")
        self.read_indexes_failed = counter("etcd_server_read_indexes_failed_total",
                                           "The total number of failed read indexes seen.")
        self.slow_read_indexes = counter(
            "etcd_server_slow_read_indexes_total",
            "The total number of pending read indexes not in sync with leader's or timed out read index requests.")
        # A member here has no peers to send heartbeats to, nor snapshots to receive: these stay at zero.
        counter("etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).")
        gauge("etcd_server_snapshot_apply_in_progress_total",
              "1 if the server is applying the incoming snapshot. 0 if none.")
        self.quota_backend_bytes = gauge("etcd_server_quota_backend_bytes",
                                         "Current backend storage quota size in bytes.")
        self.server_id = gauge("etcd_server_id",
                               "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                               ["server_id"])
        self.server_version = gauge("etcd_server_version",
                                    "Which version is running. 1 for 'server_version' label with current version.",
                                    ["server_version"])
        self.cluster_version_function: Callable[[], str] = lambda: ""
        r.collector("etcd_cluster_version",
                    "Which version is running. 1 for 'cluster_version' label with current cluster version",
                    "gauge", ["cluster_version"], self._cluster_version)
        gauge("os_fd_used", "The number of used file descriptors.") \
            .set_function(lambda: len(os.listdir("/proc/self/fd")))
        gauge("os_fd_limit", "The file descriptor limit.").set_function(lambda: _limit("Max open files"))

        self.db_total_size = gauge("etcd_mvcc_db_total_size_in_bytes",
                                   "Total size of the underlying database physically allocated in bytes.")
        self.db_total_size_in_use = gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
                                          "Total size of the underlying database logically in use in bytes.")
        self.keys = gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.")
        self.current_revision = gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.")
        self.compact_revision = gauge("etcd_debugging_mvcc_compact_revision",
                                      "The revision of the last compaction in store.")
        self.watchers = gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.")
        self.watch_streams = gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.")
        self.slow_watchers = gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.")
        # Bumped once per applied entry: plain ints (a Counter's inc costs twenty times more), read at scrape.
        self.puts = self.deletes = self.txns = 0
        # Ranges run by applied txns (counted by the member) plus those served outside raft (a function of
        # the gRPC counters, set where both are known).
        self.ranges_applied = 0
        self.ranges_served: Callable[[], float] = lambda: 0
        counter("etcd_mvcc_put_total", "Total number of puts seen by this member.").set_function(lambda: self.puts)
        counter("etcd_mvcc_range_total", "Total number of ranges seen by this member.") \
            .set_function(lambda: self.ranges_applied + self.ranges_served())
        counter("etcd_mvcc_delete_total", "Total number of deletes seen by this member.") \
            .set_function(lambda: self.deletes)
        counter("etcd_mvcc_txn_total", "Total number of txns seen by this member.").set_function(lambda: self.txns)

        self.wal_fsync = r.histogram("etcd_disk_wal_fsync_duration_seconds",
                                     "The latency distributions of fsync called by WAL.", buckets=DISK_BUCKETS)
        self.backend_commit = r.histogram("etcd_disk_backend_commit_duration_seconds",
                                          "The latency distributions of commit called by backend.",
                                          buckets=DISK_BUCKETS)

    def _cluster_version(self):
        version = self.cluster_version_function()
        parts = version.split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
            return []  # not decided yet: etcd exports no sample
        return [((f"{parts[0]}.{parts[1]}",), 1.0)]


_server: ServerMetrics | None = None


def server_metrics() -> ServerMetrics:
    """The etcd server families of the default registry, created on first use."""
    global _server
    if _server is None:
        _server = ServerMetrics(default_registry())
    return _server


def register_grpc_metrics(registry: Registry, stats) -> None:
    """grpc_server_{started,handled,msg_received,msg_sent}_total and etcd_network_client_grpc_*_bytes_total,
    read at scrape time from `stats` (trietcd.wire.conn's GrpcStats: per method path, plain counters the
    connections bump). Methods registered before serving are exported at zero, for every code, as
    go-grpc-prometheus does; methods first seen later, from their first call and with the codes seen."""
    if registry.get("grpc_server_started_total") is not None:
        return

    def per_method(attribute: str):
        def collect():
            for m in list(stats.methods.values()):
                yield (m.method, m.service, m.grpc_type), getattr(m, attribute)
        return collect

    def handled():
        for m in list(stats.methods.values()):
            for code, n in enumerate(m.handled):
                if n or m.preregistered:
                    yield (GRPC_CODES[code], m.method, m.service, m.grpc_type), n

    labels = ["grpc_method", "grpc_service", "grpc_type"]
    registry.collector("grpc_server_started_total", "Total number of RPCs started on the server.", "counter",
                       labels, per_method("started"))
    registry.collector("grpc_server_handled_total",
                       "Total number of RPCs completed on the server, regardless of success or failure.", "counter",
                       ["grpc_code"] + labels, handled)
    registry.collector("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.",
                       "counter", labels, per_method("msg_received"))
    registry.collector("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.",
                       "counter", labels, per_method("msg_sent"))
    if stats.handling_buckets:
        empty = [0] * (len(stats.handling_buckets) + 1)

        def handling():
            for m in list(stats.methods.values()):
                if m.preregistered or m.handling:
                    yield (m.method, m.service, m.grpc_type), (m.handling or empty, m.handling_sum_s,
                                                               sum(m.handling))

        registry.collector("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that "
                           "had been application-level handled by the server.", "histogram", labels, handling,
                           stats.handling_buckets)
    registry.collector("etcd_server_client_requests_total", "The total number of client requests per client version.",
                       "counter", ["client_api_version", "type"],
                       lambda: [((version, kind), n) for (kind, version), n in list(stats.client_requests.items())])
    registry.counter("etcd_network_client_grpc_received_bytes_total",
                     "The total number of bytes received from grpc clients.").set_function(lambda: stats.received_bytes)
    registry.counter("etcd_network_client_grpc_sent_bytes_total",
                     "The total number of bytes sent to grpc clients.").set_function(lambda: stats.sent_bytes)
