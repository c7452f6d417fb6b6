"""The frozen result of configuration, and how configuration reports to the operator.

Field names are etcd 3.5.1's YAML config keys with '-' turned into '_'; settings that etcd only takes as a
flag are named after the flag. URL lists are tuples of URL strings in etcd's order (sorted), durations are
float seconds, millisecond intervals stay int milliseconds as etcd's flags give them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs

__all__ = ["TLSInfo", "Config", "LogLine", "ConfigError", "render_line"]


@attrs.frozen
class TLSInfo:
    cert_file: str = ""
    key_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    client_cert_auth: bool = False
    trusted_ca_file: str = ""
    auto_tls: bool = False
    crl_file: str = ""
    allowed_cn: str = ""
    allowed_hostname: str = ""
    skip_client_san_verify: bool = False

    def empty(self) -> bool:
        """etcd's TLSInfo.Empty: no certificate configured."""
        return self.cert_file == "" and self.key_file == ""


@attrs.frozen
class LogLine:
    """One log line etcd writes while it reads its configuration.

    style "production" is the logger etcd uses before its own is set up (ts as epoch seconds, always to
    stderr); "configured" is the logger built from --logger/--log-outputs (ts as ISO-8601 milliseconds,
    to `outputs`); "stdlog" is Go's standard logger ("2006/01/02 15:04:05 msg", stderr).
    """

    level: str
    caller: str
    msg: str
    fields: tuple[tuple[str, Any], ...] = ()
    style: str = "production"
    outputs: tuple[str, ...] = ("stderr",)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _zap_string(s: str) -> str:
    out = ['"']
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _zap_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_zap_value(x) for x in v) + "]"
    return _zap_string(str(v))


def _iso_ts(ts: float) -> str:
    lt = time.localtime(ts)
    millis = int((ts - int(ts)) * 1000)
    off = lt.tm_gmtoff or 0
    if off == 0:
        zone = "Z"
    else:
        sign = "+" if off > 0 else "-"
        zone = f"{sign}{abs(off) // 3600:02d}{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{millis:03d}" + zone


def render_line(line: LogLine, ts: float) -> str:
    """The text etcd writes for `line` at time `ts`, with its newline."""
    if line.style == "stdlog":
        return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(ts)) + " " + line.msg + "\n"
    ts_text = repr(float(ts)) if line.style == "production" else '"' + _iso_ts(ts) + '"'
    parts = [f'"level":"{line.level}"', f'"ts":{ts_text}', f'"caller":"{line.caller}"',
             f'"msg":{_zap_string(line.msg)}']
    parts += [f"{_zap_string(k)}:{_zap_value(v)}" for k, v in line.fields]
    return "{" + ",".join(parts) + "}\n"


class ConfigError(Exception):
    """Configuration etcd refuses; the process prints `render()` and exits with `exit_code`.

    `text` is plain text written first (e.g. Go's flag error and the usage), then `lines` as log lines.
    """

    def __init__(self, message: str, exit_code: int, *, text: str = "",
                 lines: tuple[LogLine, ...] = ()):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.text = text
        self.lines = lines

    def render(self, ts: float | None = None) -> str:
        now = time.time() if ts is None else ts
        return self.text + "".join(render_line(line, now) for line in self.lines)


def _tls() -> TLSInfo:
    return TLSInfo()


@attrs.frozen
class Config:
    # member
    name: str = "default"
    data_dir: str = "default.etcd"
    wal_dir: str = ""
    snapshot_count: int = 100000
    snapshot_catchup_entries: int = 5000
    max_snapshots: int = 5
    max_wals: int = 5
    heartbeat_interval: int = 100          # milliseconds
    election_timeout: int = 1000           # milliseconds
    initial_election_tick_advance: bool = True
    listen_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    listen_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    listen_metrics_urls: tuple[str, ...] = ()
    quota_backend_bytes: int = 0
    backend_bbolt_freelist_type: str = ""
    backend_batch_interval: float = 0.0    # seconds; 0 = backend default
    backend_batch_limit: int = 0           # 0 = backend default
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    grpc_keepalive_min_time: float = 5.0
    grpc_keepalive_interval: float = 7200.0
    grpc_keepalive_timeout: float = 20.0
    socket_reuse_port: bool = False
    socket_reuse_address: bool = False
    raft_read_timeout: float = 5.0
    raft_write_timeout: float = 5.0
    # clustering
    initial_advertise_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    advertise_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    initial_cluster: str = "default=http://localhost:2380"
    initial_cluster_token: str = "etcd-cluster"
    initial_cluster_state: str = "new"
    discovery: str = ""
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    strict_reconfig_check: bool = True
    pre_vote: bool = True
    auto_compaction_retention: str = "0"
    auto_compaction_mode: str = "periodic"
    enable_v2: bool = False
    v2_deprecation: str = "not-yet"
    experimental_enable_v2v3: str = ""
    # security
    client_transport_security: TLSInfo = attrs.field(factory=_tls)
    peer_transport_security: TLSInfo = attrs.field(factory=_tls)
    self_signed_cert_validity: int = 1
    cipher_suites: tuple[str, ...] = ()
    tls_min_version: str = "TLS1.2"         # etcd 3.5.10's flag
    tls_max_version: str = ""               # etcd 3.5.10's flag; "" = TLS 1.2, as 3.5.1 caps it
    cors: tuple[str, ...] = ("*",)
    host_whitelist: tuple[str, ...] = ("*",)
    # auth
    auth_token: str = "simple"
    bcrypt_cost: int = 10
    auth_token_ttl: int = 300
    # profiling and monitoring
    enable_pprof: bool = False
    metrics: str = "basic"
    # logging
    logger: str = "zap"
    log_outputs: tuple[str, ...] = ("default",)
    log_level: str = "info"
    enable_log_rotation: bool = False
    log_rotation_config_json: str = (
        '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}')
    # distributed tracing
    experimental_enable_distributed_tracing: bool = False
    experimental_distributed_tracing_address: str = "localhost:4317"
    experimental_distributed_tracing_service_name: str = "etcd"
    experimental_distributed_tracing_instance_id: str = ""
    # v2 proxy
    proxy: str = "off"
    proxy_failure_wait: int = 5000         # milliseconds
    proxy_refresh_interval: int = 30000
    proxy_dial_timeout: int = 1000
    proxy_write_timeout: int = 5000
    proxy_read_timeout: int = 0
    # gateway and experimental
    enable_grpc_gateway: bool = True
    experimental_initial_corrupt_check: bool = False
    experimental_corrupt_check_time: float = 0.0
    experimental_enable_lease_checkpoint: bool = True  # etcd 3.5.1: False; see flags.py
    experimental_enable_lease_checkpoint_persist: bool = False  # etcd 3.5.2's flag
    experimental_compaction_batch_limit: int = 0
    experimental_watch_progress_notify_interval: float = 0.0
    experimental_warning_apply_duration: float = 0.1
    experimental_downgrade_check_time: float = 5.0
    experimental_memory_mlock: bool = False
    experimental_txn_mode_write_with_shared_buffer: bool = True
    experimental_bootstrap_defrag_threshold_megabytes: int = 0
    # unsafe
    unsafe_no_fsync: bool = False
    force_new_cluster: bool = False
    # where this came from
    config_file: str = ""
    log: tuple[LogLine, ...] = ()

    def initial_cluster_map(self) -> dict[str, tuple[str, ...]]:
        """initial-cluster as name -> sorted URLs (etcd's types.NewURLsMap); ValueError with etcd's text."""
        from trietcd.config.gotypes import GoError, new_urls

        grouped: dict[str, list[str]] = {}
        for item in self.initial_cluster.split(","):
            if item == "":
                continue
            name, _, url = item.partition("=")
            grouped.setdefault(name, []).append(url)
        try:
            return {name: new_urls(urls) for name, urls in grouped.items()}
        except GoError as exc:
            raise ValueError(str(exc)) from None

    def is_new_cluster(self) -> bool:
        return self.initial_cluster_state == "new"

    def election_ticks(self) -> int:
        return self.election_timeout // self.heartbeat_interval
