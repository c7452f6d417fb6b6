"""What `--help`, `--version` and a flag error print.

The layout follows etcd 3.5.1 (sections, flag names, defaults as etcd shows them); the descriptions are
written for trietcd.
"""

from __future__ import annotations

import platform

import trietcd

__all__ = ["help_text", "usage_text", "version_text"]

# (section, [(flag, shown default, description lines)]); shown default None prints no default.
_SECTIONS: list[tuple[str, list[tuple[str, str | None, list[str]]]]] = [
    ("Member", [
        ("name", "'default'", ["Human-readable name of this member."]),
        ("data-dir", "'${name}.etcd'", ["Directory holding the member's data."]),
        ("wal-dir", "''", ["Separate directory for the write-ahead log (empty: inside data-dir)."]),
        ("snapshot-count", "'100000'", ["Committed transactions between two snapshots to disk."]),
        ("heartbeat-interval", "'100'", ["Heartbeat interval, in milliseconds."]),
        ("election-timeout", "'1000'", ["Election timeout, in milliseconds; at least 5 heartbeat intervals."]),
        ("initial-election-tick-advance", "'true'", ["Fast-forward election ticks at boot to elect sooner."]),
        ("listen-peer-urls", "'http://localhost:2380'", ["URLs to listen on for peer traffic."]),
        ("listen-client-urls", "'http://localhost:2379'", ["URLs to listen on for client traffic."]),
        ("max-snapshots", "'5'", ["Snapshot files to keep (0 keeps all)."]),
        ("max-wals", "'5'", ["WAL files to keep (0 keeps all)."]),
        ("quota-backend-bytes", "'0'", ["Backend size that raises the NOSPACE alarm (0: the default quota)."]),
        ("backend-bbolt-freelist-type", "'map'", ["Free page list kind of the backend ('array' or 'map')."]),
        ("backend-batch-interval", "''", ["Longest time before the backend commits its batch."]),
        ("backend-batch-limit", "'0'", ["Most operations before the backend commits its batch."]),
        ("max-txn-ops", "'128'", ["Most operations allowed in one transaction."]),
        ("max-request-bytes", "'1572864'", ["Largest client request accepted, in bytes."]),
        ("grpc-keepalive-min-time", "'5s'", ["Shortest interval a client may ping the server at."]),
        ("grpc-keepalive-interval", "'2h'", ["Interval of server-to-client pings (0 disables)."]),
        ("grpc-keepalive-timeout", "'20s'", ["How long to wait for a ping answer before closing (0 disables)."]),
        ("socket-reuse-port", "'false'", ["Set SO_REUSEPORT on listeners."]),
        ("socket-reuse-address", "'false'", ["Set SO_REUSEADDR on listeners."]),
    ]),
    ("Clustering", [
        ("initial-advertise-peer-urls", "'http://localhost:2380'", ["Peer URLs of this member told to the cluster."]),
        ("initial-cluster", "'default=http://localhost:2380'", ["Cluster members for bootstrapping (name=URL,...)."]),
        ("initial-cluster-state", "'new'", ["State of the cluster at start ('new' or 'existing')."]),
        ("initial-cluster-token", "'etcd-cluster'", ["Token that tells this cluster apart during bootstrap."]),
        ("advertise-client-urls", "'http://localhost:2379'", [
            "Client URLs of this member told to clients.",
            "Clients must be able to reach them."]),
        ("discovery", "''", ["Discovery URL to bootstrap the cluster with."]),
        ("discovery-fallback", "'proxy'", ["What to do when discovery fails ('exit' or 'proxy')."]),
        ("discovery-proxy", "''", ["HTTP proxy for talking to the discovery service."]),
        ("discovery-srv", "''", ["DNS SRV domain to bootstrap the cluster with."]),
        ("discovery-srv-name", "''", ["Suffix of the DNS SRV name queried at bootstrap."]),
        ("strict-reconfig-check", "'true'", ["Refuse membership changes that would lose quorum."]),
        ("pre-vote", "'true'", ["Run the raft pre-vote phase before elections."]),
        ("auto-compaction-retention", "'0'", ["How much history auto compaction keeps (0 disables)."]),
        ("auto-compaction-mode", "'periodic'", [
            "How to read auto-compaction-retention: 'periodic' (a duration, hours if no unit)",
            "or 'revision' (a number of revisions)."]),
        ("enable-v2", "'false'", ["Serve the v2 API (deprecated)."]),
        ("v2-deprecation", "'not-yet'", [
            "Stage of the v2store deprecation.",
            "Values: 'not-yet', 'write-only', 'write-only-drop-data', 'gone'."]),
    ]),
    ("Security", [
        ("cert-file", "''", ["TLS certificate for client connections."]),
        ("key-file", "''", ["TLS key for client connections."]),
        ("client-cert-auth", "'false'", ["Require client certificates."]),
        ("client-crl-file", "''", ["Certificate revocation list for client certificates."]),
        ("client-cert-allowed-hostname", "''", ["Hostname client certificates must carry."]),
        ("trusted-ca-file", "''", ["CA bundle that client certificates must chain to."]),
        ("auto-tls", "'false'", ["Serve clients with a generated self-signed certificate."]),
        ("peer-cert-file", "''", ["TLS certificate for peer connections."]),
        ("peer-key-file", "''", ["TLS key for peer connections."]),
        ("peer-client-cert-auth", "'false'", ["Require peer client certificates."]),
        ("peer-trusted-ca-file", "''", ["CA bundle that peer certificates must chain to."]),
        ("peer-cert-allowed-cn", "''", ["Common name peer certificates must carry."]),
        ("peer-cert-allowed-hostname", "''", ["Hostname peer certificates must carry."]),
        ("peer-auto-tls", "'false'", ["Serve peers with a generated certificate when none is given."]),
        ("self-signed-cert-validity", "'1'", ["Validity of generated certificates, in years."]),
        ("peer-crl-file", "''", ["Certificate revocation list for peer certificates."]),
        ("cipher-suites", "''", ["Comma-separated TLS cipher suites (empty: the defaults)."]),
        ("tls-min-version", "'TLS1.2'", ["Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3."]),
        ("tls-max-version", "''", [
            "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty: TLS1.2, as etcd 3.5.1)."]),
        ("cors", "'*'", ["Comma-separated allowed CORS origins (empty or * allows all)."]),
        ("host-whitelist", "'*'", ["Comma-separated accepted Host names on insecure listeners (empty or * allows all)."]),
    ]),
    ("Auth", [
        ("auth-token", "'simple'", ["Auth token type and options ('simple' or 'jwt,...')."]),
        ("bcrypt-cost", "10", ["bcrypt cost for password hashes (4 to 31)."]),
        ("auth-token-ttl", "300", ["Lifetime of a simple auth token, in seconds."]),
    ]),
    ("Profiling and Monitoring", [
        ("enable-pprof", "'false'", ["Serve profiling data under the client URL's /debug/pprof/."]),
        ("metrics", "'basic'", ["Metrics detail: 'basic' or 'extensive' (adds gRPC histograms)."]),
        ("listen-metrics-urls", "''", ["Extra URLs serving /metrics and /health."]),
    ]),
    ("Logging", [
        ("logger", "'zap'", ["Logger to use; only 'zap'."]),
        ("log-outputs", "'default'", ["Where logs go: 'stderr', 'stdout', or comma-separated file paths."]),
        ("log-level", "'info'", ["Log level: debug, info, warn, error, panic or fatal."]),
        ("enable-log-rotation", "'false'", ["Rotate the single log file given in log-outputs."]),
        ("log-rotation-config-json", "'{\"maxsize\": 100, \"maxage\": 0, \"maxbackups\": 0, "
         "\"localtime\": false, \"compress\": false}'", ["Rotation settings as JSON."]),
    ]),
    ("Experimental distributed tracing", [
        ("experimental-enable-distributed-tracing", "'false'", ["Export traces."]),
        ("experimental-distributed-tracing-address", "'localhost:4317'", ["Trace collector address."]),
        ("experimental-distributed-tracing-service-name", "'etcd'", ["Service name in traces."]),
        ("experimental-distributed-tracing-instance-id", "''", ["Instance ID in traces, unique per member."]),
    ]),
    ("v2 Proxy (to be deprecated in v3.6)", [
        ("proxy", "'off'", ["Proxy mode ('off', 'readonly' or 'on')."]),
        ("proxy-failure-wait", "5000", ["Milliseconds a failed endpoint stays failed."]),
        ("proxy-refresh-interval", "30000", ["Milliseconds between endpoint refreshes."]),
        ("proxy-dial-timeout", "1000", ["Dial timeout in milliseconds."]),
        ("proxy-write-timeout", "5000", ["Write timeout in milliseconds."]),
        ("proxy-read-timeout", "0", ["Read timeout in milliseconds."]),
    ]),
    ("Experimental feature", [
        ("experimental-initial-corrupt-check", "'false'", ["Check data for corruption before serving."]),
        ("experimental-corrupt-check-time", "'0s'", ["Interval between cluster corruption checks."]),
        ("experimental-enable-v2v3", "''", ["Serve v2 requests from the v3 store under this prefix (deprecated)."]),
        ("experimental-enable-lease-checkpoint", "'true'", ["Checkpoint remaining lease TTLs through raft."]),
        ("experimental-enable-lease-checkpoint-persist", "'false'", ["Also persist checkpointed TTLs, so restarts keep them."]),
        ("experimental-compaction-batch-limit", "1000", ["Most revisions deleted per compaction batch."]),
        ("experimental-peer-skip-client-san-verification", "'false'", ["Do not check SANs of peer client certificates."]),
        ("experimental-watch-progress-notify-interval", "'10m'", ["Interval of watch progress notifications."]),
        ("experimental-warning-apply-duration", "'100ms'", ["Warn about applies slower than this."]),
        ("experimental-txn-mode-write-with-shared-buffer", "'true'", ["Let write transactions read through the shared buffer."]),
        ("experimental-bootstrap-defrag-threshold-megabytes", None, ["Defragment at boot when it frees at least this many megabytes (0 disables)."]),
    ]),
    ("Unsafe feature", [
        ("force-new-cluster", "'false'", ["Start a new one-member cluster from the existing data."]),
        ("unsafe-no-fsync", "'false'", ["Never fsync; data can be lost."]),
    ]),
]

_USAGE = """Usage:

  etcd [flags]
    Start an etcd server.

  etcd --version
    Show the version of etcd.

  etcd -h | --help
    Show the help information about etcd.

  etcd --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.
"""


def usage_text() -> str:
    """What etcd writes to stderr after a flag error or for --help."""
    return _USAGE + "\n"


def help_text() -> str:
    """The flag list --help writes to stdout."""
    out = [""]
    for section, flags in _SECTIONS:
        out.append(f"{section}:")
        for name, shown, lines in flags:
            out.append(f"  --{name}" + (f" {shown}" if shown is not None else ""))
            out.extend(f"    {line}" for line in lines)
        out.append("")
    out.append("CAUTIOUS with unsafe flag! It may break the guarantees given by the consensus protocol!")
    out.append("")
    return "\n".join(out) + "\n"


def version_text() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(machine, machine)
    # etcd's own first line first: scripts read `etcd --version | head -1`.
    return (f"etcd Version: {trietcd.etcd_version}\n"
            f"trietcd Version: {trietcd.__version__}\n"
            f"Git SHA: Not provided\n"
            f"Python Version: {platform.python_version()}\n"
            f"OS/Arch: {platform.system().lower()}/{arch}\n")
