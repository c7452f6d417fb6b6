"""etcd 3.5.1's command-line flags and Go's flag package rules for reading them.

Rules (Go 1.16 `flag`, as etcd uses it):
- `-name value`, `--name value`, `-name=value`, `--name=value` are the same; a non-boolean flag takes the
  next argument whatever it looks like; a boolean flag only takes a value after '='.
- parsing stops at the first argument not starting with '-' (or at "-" or after "--"); etcd then rejects
  any such leftover argument.
- `-h`/`-help` (any number of dashes, any '=value') asks for help, unless defined.
- the first bad flag stops everything; its message and the usage text go to stderr, exit code 2.
- setting a flag's value from the environment (ETCD_*) counts as setting it, as in Go's FlagSet.Set.
"""

from __future__ import annotations

from typing import Any

import attrs

from trietcd.config.gotypes import GoError, new_urls, parse_bool, parse_duration_ns, parse_int, parse_uint

__all__ = ["FlagSpec", "FLAGS", "FlagSet", "FlagSyntaxError", "HelpRequested", "env_key"]


class FlagSyntaxError(Exception):
    """Go's flag package rejected the arguments; str() is its one-line message."""


class HelpRequested(Exception):
    pass


# --- values (flag.Value implementations) ---------------------------------------------------------------

class Value:
    is_bool = False

    def set(self, s: str) -> None:
        raise NotImplementedError

    def get(self) -> Any:
        raise NotImplementedError


class StringValue(Value):
    def __init__(self, default: str):
        self.v = default

    def set(self, s: str) -> None:
        self.v = s

    def get(self) -> str:
        return self.v


class BoolValue(Value):
    is_bool = True

    def __init__(self, default: bool):
        self.v = default

    def set(self, s: str) -> None:
        self.v = parse_bool(s)

    def get(self) -> bool:
        return self.v


class IntValue(Value):
    def __init__(self, default: int, signed: bool):
        self.v = default
        self.signed = signed

    def set(self, s: str) -> None:
        self.v = parse_int(s) if self.signed else parse_uint(s)

    def get(self) -> int:
        return self.v


class DurationValue(Value):
    def __init__(self, default_ns: int):
        self.v = default_ns

    def set(self, s: str) -> None:
        try:
            self.v = parse_duration_ns(s)
        except GoError:
            raise GoError("parse error") from None

    def get(self) -> float:
        return self.v / 1e9


class URLsValue(Value):
    """etcd's flags.UniqueURLs: the parsed list, plus a set of accepted strings that are not URLs."""

    def __init__(self, default: str, exceptions: tuple[str, ...]):
        self.values: dict[str, None] = {}
        self.urls: tuple[str, ...] = ()
        self.allowed = set(exceptions)
        if default:
            self.set(default)

    def set(self, s: str) -> None:
        if s in self.values:
            return
        if s in self.allowed:
            self.values[s] = None  # kept alongside the URLs already there
            return
        urls = new_urls(s.split(","))
        self.values = dict.fromkeys(urls)
        self.urls = urls

    def get(self) -> tuple[str, ...]:
        return self.urls

    def get_values(self) -> tuple[str, ...]:
        return tuple(sorted(self.values))


class StringsValue(Value):
    def __init__(self, default: str):
        self.v: tuple[str, ...] = tuple(default.split(",")) if default else ()

    def set(self, s: str) -> None:
        self.v = tuple(s.split(","))

    def get(self) -> tuple[str, ...]:
        return self.v


class UniqueStringsValue(Value):
    def __init__(self, default: str):
        self.v: tuple[str, ...] = ()
        if default:
            self.set(default)

    def set(self, s: str) -> None:
        self.v = tuple(sorted(set(s.split(","))))

    def get(self) -> tuple[str, ...]:
        return self.v


class SelectiveValue(Value):
    def __init__(self, valids: tuple[str, ...]):
        self.valids = valids
        self.v = valids[0]

    def set(self, s: str) -> None:
        if s not in self.valids:
            raise GoError("invalid value")
        self.v = s

    def get(self) -> str:
        return self.v


class SelectiveStringsValue(Value):
    def __init__(self, valids: tuple[str, ...]):
        self.valids = valids
        self.v: list[str] = []

    def set(self, s: str) -> None:
        for item in s.split(","):
            if item not in self.valids:
                raise GoError(f'invalid value "{item}"')
            self.v.append(item)
        self.v.sort()

    def get(self) -> str:
        return ",".join(self.v)


class IgnoredValue(Value):
    """A flag older etcd had; accepted (as a boolean-style flag) and ignored."""

    is_bool = True

    def set(self, s: str) -> None:
        pass

    def get(self) -> None:
        return None


# --- the flag table ------------------------------------------------------------------------------------

@attrs.frozen
class FlagSpec:
    name: str
    kind: str            # str bool uint uint64 int int64 duration urls strings ustrings choice choices ignored
    target: str          # Config field ("client_transport_security.cert_file" for TLS) or "" for none
    default: Any = None  # flag default (durations as Go duration text)
    extra: tuple[str, ...] = ()  # choice values / URL exceptions

    def new_value(self) -> Value:
        k = self.kind
        if k == "str":
            return StringValue(self.default)
        if k == "bool":
            return BoolValue(self.default)
        if k in ("uint", "uint64", "int", "int64"):
            return IntValue(self.default, signed=k.startswith("int"))
        if k == "duration":
            return DurationValue(parse_duration_ns(self.default))
        if k == "urls":
            return URLsValue(self.default, self.extra)
        if k == "strings":
            return StringsValue(self.default)
        if k == "ustrings":
            return UniqueStringsValue(self.default)
        if k == "choice":
            return SelectiveValue(self.extra)
        if k == "choices":
            return SelectiveStringsValue(self.extra)
        if k == "ignored":
            return IgnoredValue()
        raise AssertionError(k)


_C = "client_transport_security."
_P = "peer_transport_security."

FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("config-file", "str", "config_file", ""),
    # member
    FlagSpec("data-dir", "str", "data_dir", ""),
    FlagSpec("wal-dir", "str", "wal_dir", ""),
    FlagSpec("listen-peer-urls", "urls", "listen_peer_urls", "http://localhost:2380", ("",)),
    FlagSpec("listen-client-urls", "urls", "listen_client_urls", "http://localhost:2379", ("",)),
    FlagSpec("listen-metrics-urls", "urls", "listen_metrics_urls", "", ("",)),
    FlagSpec("max-snapshots", "uint", "max_snapshots", 5),
    FlagSpec("max-wals", "uint", "max_wals", 5),
    FlagSpec("name", "str", "name", "default"),
    FlagSpec("snapshot-count", "uint64", "snapshot_count", 100000),
    FlagSpec("heartbeat-interval", "uint", "heartbeat_interval", 100),
    FlagSpec("election-timeout", "uint", "election_timeout", 1000),
    FlagSpec("initial-election-tick-advance", "bool", "initial_election_tick_advance", True),
    FlagSpec("quota-backend-bytes", "int64", "quota_backend_bytes", 0),
    FlagSpec("backend-bbolt-freelist-type", "str", "backend_bbolt_freelist_type", ""),
    FlagSpec("backend-batch-interval", "duration", "backend_batch_interval", "0"),
    FlagSpec("backend-batch-limit", "int", "backend_batch_limit", 0),
    FlagSpec("max-txn-ops", "uint", "max_txn_ops", 128),
    FlagSpec("max-request-bytes", "uint", "max_request_bytes", 1572864),
    FlagSpec("grpc-keepalive-min-time", "duration", "grpc_keepalive_min_time", "5s"),
    FlagSpec("grpc-keepalive-interval", "duration", "grpc_keepalive_interval", "2h"),
    FlagSpec("grpc-keepalive-timeout", "duration", "grpc_keepalive_timeout", "20s"),
    FlagSpec("socket-reuse-port", "bool", "socket_reuse_port", False),
    FlagSpec("socket-reuse-address", "bool", "socket_reuse_address", False),
    FlagSpec("raft-read-timeout", "duration", "raft_read_timeout", "5s"),
    FlagSpec("raft-write-timeout", "duration", "raft_write_timeout", "5s"),
    # clustering
    FlagSpec("initial-advertise-peer-urls", "urls", "initial_advertise_peer_urls", "http://localhost:2380", ("",)),
    FlagSpec("advertise-client-urls", "urls", "advertise_client_urls", "http://localhost:2379", ("",)),
    FlagSpec("discovery", "str", "discovery", ""),
    FlagSpec("discovery-fallback", "choice", "discovery_fallback", None, ("proxy", "exit")),
    FlagSpec("discovery-proxy", "str", "discovery_proxy", ""),
    FlagSpec("discovery-srv", "str", "discovery_srv", ""),
    FlagSpec("discovery-srv-name", "str", "discovery_srv_name", ""),
    FlagSpec("initial-cluster", "str", "initial_cluster", "default=http://localhost:2380"),
    FlagSpec("initial-cluster-token", "str", "initial_cluster_token", "etcd-cluster"),
    FlagSpec("initial-cluster-state", "choice", "initial_cluster_state", None, ("new", "existing")),
    FlagSpec("strict-reconfig-check", "bool", "strict_reconfig_check", True),
    FlagSpec("pre-vote", "bool", "pre_vote", True),
    FlagSpec("enable-v2", "bool", "enable_v2", False),
    FlagSpec("experimental-enable-v2v3", "str", "experimental_enable_v2v3", ""),
    FlagSpec("v2-deprecation", "choices", "v2_deprecation", None,
             ("not-yet", "write-only", "write-only-drop-data", "gone")),
    # v2 proxy
    FlagSpec("proxy", "choice", "proxy", None, ("off", "readonly", "on")),
    FlagSpec("proxy-failure-wait", "uint", "proxy_failure_wait", 5000),
    FlagSpec("proxy-refresh-interval", "uint", "proxy_refresh_interval", 30000),
    FlagSpec("proxy-dial-timeout", "uint", "proxy_dial_timeout", 1000),
    FlagSpec("proxy-write-timeout", "uint", "proxy_write_timeout", 5000),
    FlagSpec("proxy-read-timeout", "uint", "proxy_read_timeout", 0),
    # security
    FlagSpec("cert-file", "str", _C + "cert_file", ""),
    FlagSpec("key-file", "str", _C + "key_file", ""),
    FlagSpec("client-cert-file", "str", _C + "client_cert_file", ""),
    FlagSpec("client-key-file", "str", _C + "client_key_file", ""),
    FlagSpec("client-cert-auth", "bool", _C + "client_cert_auth", False),
    FlagSpec("client-crl-file", "str", _C + "crl_file", ""),
    FlagSpec("client-cert-allowed-hostname", "str", _C + "allowed_hostname", ""),
    FlagSpec("trusted-ca-file", "str", _C + "trusted_ca_file", ""),
    FlagSpec("auto-tls", "bool", _C + "auto_tls", False),
    FlagSpec("peer-cert-file", "str", _P + "cert_file", ""),
    FlagSpec("peer-key-file", "str", _P + "key_file", ""),
    FlagSpec("peer-client-cert-file", "str", _P + "client_cert_file", ""),
    FlagSpec("peer-client-key-file", "str", _P + "client_key_file", ""),
    FlagSpec("peer-client-cert-auth", "bool", _P + "client_cert_auth", False),
    FlagSpec("peer-trusted-ca-file", "str", _P + "trusted_ca_file", ""),
    FlagSpec("peer-auto-tls", "bool", _P + "auto_tls", False),
    FlagSpec("self-signed-cert-validity", "uint", "self_signed_cert_validity", 1),
    FlagSpec("peer-crl-file", "str", _P + "crl_file", ""),
    FlagSpec("peer-cert-allowed-cn", "str", _P + "allowed_cn", ""),
    FlagSpec("peer-cert-allowed-hostname", "str", _P + "allowed_hostname", ""),
    FlagSpec("cipher-suites", "strings", "cipher_suites", ""),
    # etcd 3.5.10's flags (3.5.1 has none): the TLS version range of client and peer listeners.
    FlagSpec("tls-min-version", "str", "tls_min_version", "TLS1.2"),
    FlagSpec("tls-max-version", "str", "tls_max_version", ""),
    FlagSpec("experimental-peer-skip-client-san-verification", "bool", _P + "skip_client_san_verify", False),
    FlagSpec("cors", "urls", "cors", "*", ("*",)),
    FlagSpec("host-whitelist", "ustrings", "host_whitelist", "*"),
    # logging
    FlagSpec("logger", "str", "logger", "zap"),
    FlagSpec("log-outputs", "ustrings", "log_outputs", "default"),
    FlagSpec("log-level", "str", "log_level", "info"),
    FlagSpec("enable-log-rotation", "bool", "enable_log_rotation", False),
    FlagSpec("log-rotation-config-json", "str", "log_rotation_config_json",
             '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}'),
    FlagSpec("version", "bool", "", False),
    FlagSpec("auto-compaction-retention", "str", "auto_compaction_retention", "0"),
    FlagSpec("auto-compaction-mode", "str", "auto_compaction_mode", "periodic"),
    FlagSpec("enable-pprof", "bool", "enable_pprof", False),
    FlagSpec("metrics", "str", "metrics", "basic"),
    FlagSpec("experimental-enable-distributed-tracing", "bool", "experimental_enable_distributed_tracing", False),
    FlagSpec("experimental-distributed-tracing-address", "str", "experimental_distributed_tracing_address",
             "localhost:4317"),
    FlagSpec("experimental-distributed-tracing-service-name", "str",
             "experimental_distributed_tracing_service_name", "etcd"),
    FlagSpec("experimental-distributed-tracing-instance-id", "str",
             "experimental_distributed_tracing_instance_id", ""),
    # auth
    FlagSpec("auth-token", "str", "auth_token", "simple"),
    FlagSpec("bcrypt-cost", "uint", "bcrypt_cost", 10),
    FlagSpec("auth-token-ttl", "uint", "auth_token_ttl", 300),
    FlagSpec("enable-grpc-gateway", "bool", "enable_grpc_gateway", True),
    # experimental
    FlagSpec("experimental-initial-corrupt-check", "bool", "experimental_initial_corrupt_check", False),
    FlagSpec("experimental-corrupt-check-time", "duration", "experimental_corrupt_check_time", "0"),
    # On by default, unlike etcd 3.5.1: the leader checkpoints the remaining TTL of leases longer than 5 minutes
    # through raft, so a new leader does not hand them a full TTL again. etcd 3.4/3.5 members apply those
    # entries, and the lease rows stay {ID, TTL} as 3.5.1 writes them; `=false` gives 3.5.1's behaviour.
    FlagSpec("experimental-enable-lease-checkpoint", "bool", "experimental_enable_lease_checkpoint", True),
    # etcd 3.5.2's flag (3.5.1 has none): checkpoints also write the remaining TTL into the lease row, so a
    # restart keeps it too. Off by default, as in etcd: rows then stay byte-equal to 3.5.1's.
    FlagSpec("experimental-enable-lease-checkpoint-persist", "bool",
             "experimental_enable_lease_checkpoint_persist", False),
    FlagSpec("experimental-compaction-batch-limit", "int", "experimental_compaction_batch_limit", 0),
    FlagSpec("experimental-watch-progress-notify-interval", "duration",
             "experimental_watch_progress_notify_interval", "0"),
    FlagSpec("experimental-downgrade-check-time", "duration", "experimental_downgrade_check_time", "5s"),
    FlagSpec("experimental-warning-apply-duration", "duration", "experimental_warning_apply_duration", "100ms"),
    FlagSpec("experimental-memory-mlock", "bool", "experimental_memory_mlock", False),
    FlagSpec("experimental-txn-mode-write-with-shared-buffer", "bool",
             "experimental_txn_mode_write_with_shared_buffer", True),
    FlagSpec("experimental-bootstrap-defrag-threshold-megabytes", "uint",
             "experimental_bootstrap_defrag_threshold_megabytes", 0),
    # unsafe
    FlagSpec("unsafe-no-fsync", "bool", "unsafe_no_fsync", False),
    FlagSpec("force-new-cluster", "bool", "force_new_cluster", False),
) + tuple(
    FlagSpec(name, "ignored", "")
    for name in ("cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
                 "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval",
                 "peer-election-timeout", "retry-interval", "snapshot", "v", "vv",
                 "test.coverprofile", "test.outputdir")
)

# etcd 3.5.1 ignores `--config`; trietcd's users write `--config node.yaml`, so it names the config file here.
CONFIG_ALIAS = "config"

_BY_NAME = {f.name: f for f in FLAGS}
assert len(_BY_NAME) == len(FLAGS)


def env_key(name: str) -> str:
    return "ETCD_" + name.replace("-", "_").upper()


class FlagSet:
    """Go's flag.FlagSet over FLAGS: values, which were set, and the leftover arguments."""

    def __init__(self) -> None:
        self.values: dict[str, Value] = {f.name: f.new_value() for f in FLAGS}
        self.values[CONFIG_ALIAS] = StringValue("")
        self.actual: list[str] = []   # names set, in order (command line, then environment)
        self.args: list[str] = []

    def is_set(self, name: str) -> bool:
        return name in self.actual

    def get(self, name: str) -> Any:
        return self.values[name].get()

    def set(self, name: str, value: str) -> None:
        """FlagSet.Set: raises GoError from the value."""
        self.values[name].set(value)
        if name not in self.actual:
            self.actual.append(name)

    def parse(self, arguments: list[str]) -> None:
        args = list(arguments)
        while args:
            s = args[0]
            if len(s) < 2 or s[0] != "-":
                break
            minuses = 2 if s[1] == "-" else 1
            if minuses == 2 and len(s) == 2:
                args.pop(0)
                break
            name = s[minuses:]
            if name == "" or name[0] in "-=":
                raise FlagSyntaxError(f"bad flag syntax: {s}")
            args.pop(0)
            name, has_value, value = name.partition("=")
            flag = self.values.get(name)
            if flag is None:
                if name in ("help", "h"):
                    raise HelpRequested()
                raise FlagSyntaxError(f"flag provided but not defined: -{name}")
            if flag.is_bool:
                if has_value:
                    try:
                        flag.set(value)
                    except GoError as exc:
                        raise FlagSyntaxError(f"invalid boolean value {go_quote(value)} for -{name}: {exc}") from None
                else:
                    flag.set("true")
            else:
                if not has_value and args:
                    value = args.pop(0)
                    has_value = "="
                if not has_value:
                    raise FlagSyntaxError(f"flag needs an argument: -{name}")
                try:
                    flag.set(value)
                except GoError as exc:
                    raise FlagSyntaxError(f"invalid value {go_quote(value)} for flag -{name}: {exc}") from None
            if name not in self.actual:
                self.actual.append(name)
        self.args = args


def _go_quote(s: str) -> str:
    """The inside of Go's %q for s (strconv.Quote without the outer quotes)."""
    out = []
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out)


def go_quote(s: str) -> str:
    return '"' + _go_quote(s) + '"'


def spec(name: str) -> FlagSpec:
    return _BY_NAME[name]
