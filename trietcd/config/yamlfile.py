"""etcd's YAML config file, read the way etcd 3.5.1 reads it.

etcd converts the YAML document to JSON (go-yaml v2 typing, keys sorted) and decodes that JSON into its
config struct with Go's encoding/json. So:
- keys match the struct's JSON names exactly or, failing that, ignoring case; unknown keys are ignored;
- a value of the wrong JSON type is an error naming the field, reported for the first such key in sorted
  order; `null` leaves the default;
- durations are integers of nanoseconds (a string like "5s" is a type error);
- URL lists are one comma-separated string; `log-outputs` and `cipher-suites` are YAML lists.
Plain scalars are typed as go-yaml v2 types them (e.g. `yes`, `on`, `y` are booleans, `1e3` is a number).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import yaml

from trietcd.config.gotypes import parse_int, parse_uint, GoError

__all__ = ["YamlError", "load_json_like", "decode", "CONFIG_SCHEMA", "SECURITY_SCHEMA", "PROXY_SCHEMA"]


class YamlError(Exception):
    """Text of the error etcd reports for a config file it cannot decode."""


# --- YAML -> JSON-like values (go-yaml v2 scalar typing) -------------------------------------------------

_BOOL_NULL = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("~", "null", "Null", "NULL"), None),
}
_SPECIAL_FLOATS = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf,
                   "+.Inf": math.inf, "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf,
                   "-.INF": -math.inf, ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_FLOAT = re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$")


def _resolve_plain(text: str) -> Any:
    if text == "":
        return None
    if text in _BOOL_NULL:
        return _BOOL_NULL[text]
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    first = text[0]
    if first == "." and _GO_FLOAT.match(text):
        return float(text)
    if first.isdigit() or first in "+-":
        plain = text.replace("_", "")
        try:
            return parse_int(plain)
        except GoError:
            pass
        try:
            return parse_uint(plain)
        except GoError:
            pass
        if _YAML_FLOAT.match(plain):
            return float(plain)
        for prefix, sign in (("0b", 1), ("-0b", -1)):
            if plain.startswith(prefix):
                digits = plain[len(prefix):]
                if digits and set(digits) <= {"0", "1"}:
                    return sign * int(digits, 2)
    return text


def _node_value(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        if node.style is None and node.tag == "tag:yaml.org,2002:str" and not getattr(node, "_explicit", False):
            return _resolve_plain(node.value)
        if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                        "tag:yaml.org,2002:null"):
            return _resolve_plain(node.value)
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [_node_value(item) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            out[_key_text(_node_value(key_node))] = _node_value(value_node)
        return out
    raise AssertionError(node)


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, float):
        return go_float_literal(key)
    return str(key)


class _Loader(yaml.BaseLoader):
    """Composes nodes only; scalars are typed by _resolve_plain, like go-yaml v2 does."""


def load_json_like(text: str) -> Any:
    """YAML text -> dict/list/str/int/float/bool/None as etcd's YAML-to-JSON step sees it."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlError(f"error converting YAML to JSON: yaml: line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"error converting YAML to JSON: yaml: {exc}") from None
    if node is None:
        return None
    value = _node_value(node)
    _check_finite(value)
    return value


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        raise YamlError(f"error converting YAML to JSON: json: unsupported value: {shown}")
    if isinstance(value, list):
        for item in value:
            _check_finite(item)
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item)


def go_float_literal(f: float) -> str:
    """How Go's encoding/json writes a float64."""
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mant, _, exp = f"{f!r}".partition("e")
        if not exp:
            mant, _, exp = f"{f:e}".partition("e")
            mant = mant.rstrip("0").rstrip(".")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-").lstrip("0") or "0"
        return f"{mant}e{sign}{digits}"
    text = format(Decimal(repr(f)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# --- JSON-like -> typed fields (encoding/json rules) -----------------------------------------------------

# json name -> (target, Go type); time.Duration values come out as float seconds. Go types: string bool uint uint64 int int64 time.Duration []string
# embed.securityConfig config.V2DeprecationEnum
CONFIG_SCHEMA: dict[str, tuple[str, str]] = {
    "name": ("name", "string"),
    "data-dir": ("data_dir", "string"),
    "wal-dir": ("wal_dir", "string"),
    "snapshot-count": ("snapshot_count", "uint64"),
    "SnapshotCatchUpEntries": ("snapshot_catchup_entries", "uint64"),
    "max-snapshots": ("max_snapshots", "uint"),
    "max-wals": ("max_wals", "uint"),
    "heartbeat-interval": ("heartbeat_interval", "uint"),
    "election-timeout": ("election_timeout", "uint"),
    "initial-election-tick-advance": ("initial_election_tick_advance", "bool"),
    "backend-batch-interval": ("backend_batch_interval", "time.Duration"),
    "backend-batch-limit": ("backend_batch_limit", "int"),
    "backend-bbolt-freelist-type": ("backend_bbolt_freelist_type", "string"),
    "quota-backend-bytes": ("quota_backend_bytes", "int64"),
    "max-txn-ops": ("max_txn_ops", "uint"),
    "max-request-bytes": ("max_request_bytes", "uint"),
    "self-signed-cert-validity": ("self_signed_cert_validity", "uint"),
    "cipher-suites": ("cipher_suites", "[]string"),
    "tls-min-version": ("tls_min_version", "string"),
    "tls-max-version": ("tls_max_version", "string"),
    "initial-cluster-state": ("initial_cluster_state", "string"),
    "discovery-srv": ("discovery_srv", "string"),
    "discovery-srv-name": ("discovery_srv_name", "string"),
    "discovery-proxy": ("discovery_proxy", "string"),
    "discovery": ("discovery", "string"),
    "initial-cluster": ("initial_cluster", "string"),
    "initial-cluster-token": ("initial_cluster_token", "string"),
    "strict-reconfig-check": ("strict_reconfig_check", "bool"),
    "enable-v2": ("enable_v2", "bool"),
    "auto-compaction-mode": ("auto_compaction_mode", "string"),
    "auto-compaction-retention": ("auto_compaction_retention", "string"),
    "grpc-keepalive-min-time": ("grpc_keepalive_min_time", "time.Duration"),
    "grpc-keepalive-interval": ("grpc_keepalive_interval", "time.Duration"),
    "grpc-keepalive-timeout": ("grpc_keepalive_timeout", "time.Duration"),
    "pre-vote": ("pre_vote", "bool"),
    "auth-token": ("auth_token", "string"),
    "bcrypt-cost": ("bcrypt_cost", "uint"),
    "auth-token-ttl": ("auth_token_ttl", "uint"),
    "experimental-initial-corrupt-check": ("experimental_initial_corrupt_check", "bool"),
    "experimental-corrupt-check-time": ("experimental_corrupt_check_time", "time.Duration"),
    "experimental-enable-v2v3": ("experimental_enable_v2v3", "string"),
    "experimental-enable-lease-checkpoint": ("experimental_enable_lease_checkpoint", "bool"),
    "experimental-enable-lease-checkpoint-persist": ("experimental_enable_lease_checkpoint_persist", "bool"),
    "experimental-compaction-batch-limit": ("experimental_compaction_batch_limit", "int"),
    "experimental-watch-progress-notify-interval": ("experimental_watch_progress_notify_interval",
                                                    "time.Duration"),
    "experimental-warning-apply-duration": ("experimental_warning_apply_duration", "time.Duration"),
    "experimental-bootstrap-defrag-threshold-megabytes": ("experimental_bootstrap_defrag_threshold_megabytes",
                                                          "uint"),
    "force-new-cluster": ("force_new_cluster", "bool"),
    "enable-pprof": ("enable_pprof", "bool"),
    "metrics": ("metrics", "string"),
    "listen-metrics-urls": ("listen_metrics_urls", "string"),
    "experimental-enable-distributed-tracing": ("experimental_enable_distributed_tracing", "bool"),
    "experimental-distributed-tracing-address": ("experimental_distributed_tracing_address", "string"),
    "experimental-distributed-tracing-service-name": ("experimental_distributed_tracing_service_name",
                                                      "string"),
    "experimental-distributed-tracing-instance-id": ("experimental_distributed_tracing_instance_id",
                                                     "string"),
    "logger": ("logger", "string"),
    "log-level": ("log_level", "string"),
    "log-outputs": ("log_outputs", "[]string"),
    "enable-log-rotation": ("enable_log_rotation", "bool"),
    "log-rotation-config-json": ("log_rotation_config_json", "string"),
    "enable-grpc-gateway": ("enable_grpc_gateway", "bool"),
    "unsafe-no-fsync": ("unsafe_no_fsync", "bool"),
    "experimental-downgrade-check-time": ("experimental_downgrade_check_time", "time.Duration"),
    "experimental-memory-mlock": ("experimental_memory_mlock", "bool"),
    "experimental-txn-mode-write-with-shared-buffer": ("experimental_txn_mode_write_with_shared_buffer", "bool"),
    "v2-deprecation": ("v2_deprecation", "config.V2DeprecationEnum"),
    "listen-peer-urls": ("listen_peer_urls", "string"),
    "listen-client-urls": ("listen_client_urls", "string"),
    "initial-advertise-peer-urls": ("initial_advertise_peer_urls", "string"),
    "advertise-client-urls": ("advertise_client_urls", "string"),
    "cors": ("cors", "string"),
    "host-whitelist": ("host_whitelist", "string"),
    "client-transport-security": ("client_transport_security", "embed.securityConfig"),
    "peer-transport-security": ("peer_transport_security", "embed.securityConfig"),
}

SECURITY_SCHEMA: dict[str, tuple[str, str]] = {
    "cert-file": ("cert_file", "string"),
    "key-file": ("key_file", "string"),
    "client-cert-file": ("client_cert_file", "string"),
    "client-key-file": ("client_key_file", "string"),
    "client-cert-auth": ("client_cert_auth", "bool"),
    "trusted-ca-file": ("trusted_ca_file", "string"),
    "auto-tls": ("auto_tls", "bool"),
}

PROXY_SCHEMA: dict[str, tuple[str, str]] = {
    "proxy-failure-wait": ("proxy_failure_wait", "uint"),
    "proxy-refresh-interval": ("proxy_refresh_interval", "uint"),
    "proxy-dial-timeout": ("proxy_dial_timeout", "uint"),
    "proxy-write-timeout": ("proxy_write_timeout", "uint"),
    "proxy-read-timeout": ("proxy_read_timeout", "uint"),
    "proxy": ("proxy", "string"),
    "discovery-fallback": ("discovery_fallback", "string"),
}

_NESTED = {"embed.securityConfig": ("securityConfig", SECURITY_SCHEMA)}

_INT_BITS = {"uint": (False, 64), "uint64": (False, 64), "int": (True, 64), "int64": (True, 64),
             "time.Duration": (True, 64)}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _number_literal(value: int | float) -> str:
    return str(value) if isinstance(value, int) else go_float_literal(value)


def _lookup(schema: dict[str, tuple[str, str]], key: str) -> tuple[str, tuple[str, str]] | None:
    if key in schema:
        return key, schema[key]
    folded = key.lower()
    for name, entry in schema.items():
        if name.lower() == folded:
            return name, entry
    return None


class _Decoder:
    def __init__(self) -> None:
        self.first_error: str | None = None

    def fail(self, kind: str, struct: str, path: str, go_type: str) -> None:
        if self.first_error is None:
            self.first_error = (f"json: cannot unmarshal {kind} into Go struct field {struct}.{path} "
                                f"of type {go_type}")

    def struct(self, data: dict[str, Any], schema: dict[str, tuple[str, str]], struct: str,
               prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in sorted(data, key=lambda k: k.encode()):
            found = _lookup(schema, key)
            if found is None:
                continue
            name, (target, go_type) = found
            value = data[key]
            if value is None:
                continue
            path = prefix + name
            decoded = self.value(value, go_type, struct, path)
            if decoded is not _SKIP:
                out[target] = decoded
        return out

    def value(self, value: Any, go_type: str, struct: str, path: str) -> Any:
        kind = _json_kind(value)
        if go_type in ("string", "config.V2DeprecationEnum"):
            if kind != "string":
                self.fail(kind, struct, path, go_type)
                return _SKIP
            return value
        if go_type == "bool":
            if kind != "bool":
                self.fail(kind, struct, path, go_type)
                return _SKIP
            return value
        if go_type in _INT_BITS:
            if kind != "number":
                self.fail(kind, struct, path, go_type)
                return _SKIP
            literal = _number_literal(value)
            signed, bits = _INT_BITS[go_type]
            try:
                number = parse_int(literal, bits) if signed else parse_uint(literal, bits)
            except GoError:
                self.fail("number " + literal, struct, path, go_type)
                return _SKIP
            return number / 1e9 if go_type == "time.Duration" else number
        if go_type == "[]string":
            if kind != "array":
                self.fail(kind, struct, path, go_type)
                return _SKIP
            items = []
            for item in value:
                if item is None:
                    items.append("")
                elif _json_kind(item) != "string":
                    self.fail(_json_kind(item), struct, path, "string")
                    items.append("")
                else:
                    items.append(item)
            return tuple(items)
        if go_type in _NESTED:
            if kind != "object":
                self.fail(kind, struct, path, go_type)
                return _SKIP
            inner_struct, inner_schema = _NESTED[go_type]
            return self.struct(value, inner_schema, inner_struct, path + ".")
        raise AssertionError(go_type)


_SKIP = object()


def decode(data: Any, schema: dict[str, tuple[str, str]], struct: str, go_type: str) -> dict[str, Any]:
    """Decode a JSON-like document into {target: value}; YamlError with etcd's text on the first type error."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise YamlError("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                        f"{_json_kind(data)} into Go value of type {go_type}")
    decoder = _Decoder()
    out = decoder.struct(data, schema, struct, "")
    if decoder.first_error is not None:
        raise YamlError("error unmarshaling JSON: while decoding JSON: " + decoder.first_error)
    return out
