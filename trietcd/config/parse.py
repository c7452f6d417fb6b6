"""argv + environment (+ config file) -> Config, following etcd 3.5.1's etcdmain and embed packages.

Order of events, as in etcd:
1. Go flag parsing of argv (errors: message + usage on stderr, exit 2; -h: help, exit 0).
2. leftover positional arguments are an error; --version prints and exits 0.
3. the config file is --config-file (or --config), else $ETCD_CONFIG_FILE. With a file, the file alone
   decides: other flags and ETCD_* variables are ignored. Without, ETCD_* fill flags not given.
4. validation (etcd's embed.Config.Validate); errors are logged and exit 1.
5. derived values: initial-cluster from the name, data-dir "<name>.etcd".
Every log line etcd would write on the way is kept, in order, in Config.log or ConfigError.lines.
"""

from __future__ import annotations

import json
import ssl
import sys
from typing import Any, Mapping, TextIO

import attrs

from trietcd.config import texts
from trietcd.config.flags import (
    CONFIG_ALIAS, FLAGS, FlagSet, FlagSyntaxError, HelpRequested, URLsValue, env_key, go_quote,
)
from trietcd.config.gotypes import GoError, new_urls, parse_ip, split_host_port, parse_url
from trietcd.config.model import Config, ConfigError, LogLine, TLSInfo
from trietcd.config.yamlfile import CONFIG_SCHEMA, PROXY_SCHEMA, YamlError, decode, load_json_like
from trietcd.wire.tls import TLSConfigError, check_versions, tls_version

__all__ = ["parse"]

DEFAULT_INITIAL_CLUSTER = "default=http://localhost:2380"
DEFAULT_AP_URL = "http://localhost:2380"
DEFAULT_AC_URL = "http://localhost:2379"
MAX_ELECTION_MS = 50000
MIN_RAFT_TIMEOUT_S = 5.0

ERR_UNSET_ADVERTISE = "--advertise-client-urls is required when --listen-client-urls is set explicitly"
ERR_CONFLICT_BOOTSTRAP = ('multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", '
                          '"discovery" or "discovery-srv"')
ERR_LOG_ROTATION_OUTPUT = "--log-outputs requires a single file path when --log-rotate-config-json is defined"

_ZAP_LEVELS = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")


class _Invalid(Exception):
    """A validation error etcd returns from parse (logged as "failed to verify flags", exit 1)."""


class _Log:
    """Collects the log lines etcd writes while configuring, with the logger in effect at each point."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.level = "info"
        self.outputs: tuple[str, ...] | None = None  # set once etcd's own logger exists

    def production(self, level: str, caller: str, msg: str, *fields: tuple[str, Any]) -> None:
        self.lines.append(LogLine(level, caller, msg, tuple(fields)))

    def configure(self, level: str, log_outputs: tuple[str, ...]) -> None:
        self.level = level.lower() or "info"
        outs = []
        for out in log_outputs:
            outs.append("stderr" if out == "default" else out)
        self.outputs = tuple(outs)

    def emit(self, level: str, caller: str, msg: str, *fields: tuple[str, Any]) -> None:
        """Log with etcd's own logger if it exists yet, else with the bootstrap one."""
        if self.outputs is None:
            self.production(level, caller, msg, *fields)
            return
        if _ZAP_LEVELS.index(level) < _ZAP_LEVELS.index(self.level):
            return
        self.lines.append(LogLine(level, caller, msg, tuple(fields), style="configured", outputs=self.outputs))


def parse(argv: list[str], environ: Mapping[str, str], *, argv0: str = "trietcd",
          default_host: str | None = None, stdout: TextIO | None = None,
          stderr: TextIO | None = None) -> Config:
    """etcd's command line, environment and config file -> Config.

    Raises ConfigError (print `.render()` to stderr, exit `.exit_code`); for --help/--version prints to
    stdout/stderr and raises SystemExit(0). `default_host` is the address etcd would find on the default
    route (used to advertise when listening on 0.0.0.0); None means none was found.
    """
    fs = FlagSet()
    try:
        fs.parse(argv)
    except HelpRequested:
        (stderr or sys.stderr).write(texts.usage_text())
        (stdout or sys.stdout).write(texts.help_text())
        raise SystemExit(0) from None
    except FlagSyntaxError as exc:
        raise ConfigError(str(exc), 2, text=f"{exc}\n" + texts.usage_text()) from None

    log = _Log()
    running = ("args", (argv0, *argv))
    try:
        if fs.args:
            raise _Invalid(f"'{fs.args[0]}' is not a valid flag")
        if fs.get("version"):
            (stdout or sys.stdout).write(texts.version_text())
            raise SystemExit(0)
        config_file = fs.get("config-file") or fs.get(CONFIG_ALIAS)
        if config_file == "":
            config_file = environ.get("ETCD_CONFIG_FILE", "")
        if config_file:
            settings = _from_file(config_file, log)
        else:
            settings = _from_command_line(fs, environ, log)
    except _Invalid as exc:
        log.emit("info", "etcdmain/etcd.go:72", "Running: ", running)
        log.emit("warn", "etcdmain/etcd.go:74", "failed to verify flags", ("error", str(exc)))
        if str(exc) == ERR_UNSET_ADVERTISE:
            log.emit("warn", "etcdmain/etcd.go:77", "advertise client URLs are not set", ("error", str(exc)))
        raise ConfigError(str(exc), 1, lines=tuple(log.lines)) from None

    if settings.get("v2_deprecation", "") == "":
        settings["v2_deprecation"] = "not-yet"
    log.emit("info", "etcdmain/etcd.go:72", "Running: ", running)
    _update_default_cluster(settings, default_host, log)
    if settings["data_dir"] == "":
        settings["data_dir"] = f"{settings['name']}.etcd"
        log.emit("warn", "etcdmain/etcd.go:104", "'data-dir' was empty; using default",
                 ("data-dir", settings["data_dir"]))
    settings["config_file"] = config_file
    settings["log"] = tuple(log.lines)
    return _build(settings)


# --- command line + environment --------------------------------------------------------------------------

def _from_command_line(fs: FlagSet, environ: Mapping[str, str], log: _Log) -> dict[str, Any]:
    env = dict(environ)
    version = env.pop("ETCD_VERSION", "")
    if version != "":
        log.production("warn", "etcdmain/config.go:366", "cannot set special environment variable",
                       ("key", "ETCD_VERSION"), ("value", version))
    _apply_env(fs, env, log)

    settings: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.target:
            settings[flag.target] = fs.get(flag.name)
    for name, caller in (("raft_read_timeout", "etcdmain/config.go:380"),
                         ("raft_write_timeout", "etcdmain/config.go:384")):
        if settings[name] < MIN_RAFT_TIMEOUT_S:
            settings[name] = MIN_RAFT_TIMEOUT_S
            log.production("info", caller, f"{name.replace('_', '-')} increased to minimum value: 5s")
    cors = fs.values["cors"]
    assert isinstance(cors, URLsValue)
    settings["cors"] = cors.get_values()
    settings["config_file"] = ""

    proxy_off = settings["proxy"] == "off"
    may_be_proxy = not proxy_off or (settings["discovery"] != "" and settings["discovery_fallback"] == "proxy")
    if fs.is_set("listen-client-urls") and not fs.is_set("advertise-client-urls") and not may_be_proxy:
        settings["advertise_client_urls"] = None
    if (settings["discovery"] or settings["discovery_srv"] or settings["discovery_srv_name"]) \
            and not fs.is_set("initial-cluster"):
        settings["initial_cluster"] = ""
    try:
        _validate(settings, log)
    except _Invalid as exc:
        if str(exc) == ERR_UNSET_ADVERTISE and may_be_proxy:
            return settings
        raise
    return settings


def _apply_env(fs: FlagSet, env: dict[str, str], log: _Log) -> None:
    """etcd's flags.SetFlagsFromEnv: ETCD_<FLAG> sets each flag not given on the command line."""
    already = {env_key(name) for name in fs.actual}
    used: set[str] = set()
    error: str | None = None
    for name in sorted(fs.values):
        key = env_key(name)
        if key in already:
            continue
        value = env.get(key, "")
        if value == "":
            continue
        used.add(key)
        try:
            if name != CONFIG_ALIAS:   # etcd ignores ETCD_CONFIG, as it ignores --config
                fs.set(name, value)
        except GoError as exc:
            error = f"invalid value {go_quote(value)} for {key}: {exc}"
            continue
        log.production("info", "flags/flag.go:113", "recognized and used environment variable",
                       ("variable-name", key), ("variable-value", value))
    for key, value in env.items():
        if key in used:
            continue
        if key in already:
            log.production("fatal", "flags/flag.go:85",
                           "conflicting environment variable is shadowed by corresponding command-line flag "
                           "(either unset environment variable or disable flag))",
                           ("environment-variable", key))
            raise ConfigError(f"conflicting environment variable {key}", 1, lines=tuple(log.lines))
        if key.startswith("ETCD_"):
            log.production("warn", "flags/flag.go:93", "unrecognized environment variable",
                           ("environment-variable", f"{key}={value}"))
    if error is not None:
        raise _Invalid(error)


# --- config file ----------------------------------------------------------------------------------------

def _file_defaults() -> dict[str, Any]:
    """embed.NewConfig() as the file path starts from; differs from the flag defaults in places."""
    settings: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.target:
            settings[flag.target] = flag.new_value().get()
    settings.update(
        auto_compaction_mode="", auto_compaction_retention="", self_signed_cert_validity=0,
        experimental_distributed_tracing_address="", experimental_distributed_tracing_service_name="",
        v2_deprecation="not-yet", snapshot_catchup_entries=5000, config_file="",
        cors=("*",), host_whitelist=("*",), initial_cluster=DEFAULT_INITIAL_CLUSTER,
    )
    return settings


def _from_file(path: str, log: _Log) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except IsADirectoryError:
        raise _Invalid(f"read {path}: is a directory") from None
    except OSError as exc:
        raise _Invalid(f"open {path}: {_os_error_text(exc)}") from None
    try:
        data = load_json_like(text)
        values = decode(data, CONFIG_SCHEMA, "configYAML", "embed.configYAML")
    except YamlError as exc:
        raise _Invalid(str(exc)) from None

    settings = _file_defaults()
    yaml_urls = {}
    for key in ("listen_peer_urls", "listen_client_urls", "initial_advertise_peer_urls",
                "advertise_client_urls", "listen_metrics_urls", "cors", "host_whitelist"):
        yaml_urls[key] = values.pop(key, "")
    client = values.pop("client_transport_security", {})
    peer = values.pop("peer_transport_security", {})
    settings.update(values)

    for key, label in (("listen_peer_urls", "listen-peer-urls"), ("listen_client_urls", "listen-client-urls"),
                       ("initial_advertise_peer_urls", "initial-advertise-peer-urls"),
                       ("advertise_client_urls", "advertise-peer-urls"),
                       ("listen_metrics_urls", "listen-metrics-urls")):
        if yaml_urls[key] != "":
            try:
                settings[key] = new_urls(yaml_urls[key].split(","))
            except GoError as exc:
                raise ConfigError(str(exc), 1, text=f"unexpected error setting up {label}: {exc}\n") from None
    if yaml_urls["cors"] != "":
        cors = yaml_urls["cors"]
        if cors == "*":
            settings["cors"] = ("*",)
        else:
            try:
                settings["cors"] = new_urls(cors.split(","))
            except GoError as exc:
                raise ConfigError(str(exc), 2, text=f"panic: new UniqueURLs should never fail: {exc}\n") from None
    if yaml_urls["host_whitelist"] != "":
        settings["host_whitelist"] = tuple(sorted(set(yaml_urls["host_whitelist"].split(","))))
    if (settings["discovery"] or settings["discovery_srv"]) and settings["initial_cluster"] == DEFAULT_INITIAL_CLUSTER:
        settings["initial_cluster"] = ""
    if settings["initial_cluster_state"] == "":
        settings["initial_cluster_state"] = "new"
    # The file names only these TLS settings; etcd copies all of them, so the others stay empty.
    for prefix, given in (("client_transport_security.", client), ("peer_transport_security.", peer)):
        for name in ("cert_file", "key_file", "client_cert_file", "client_key_file", "trusted_ca_file"):
            settings[prefix + name] = given.get(name, "")
        for name in ("client_cert_auth", "auto_tls"):
            settings[prefix + name] = given.get(name, False)
    if settings["self_signed_cert_validity"] == 0:
        settings["self_signed_cert_validity"] = 1
    # etcd validates the file before it keeps the logger built from it: errors here use the bootstrap one.
    file_log = _Log()
    file_log.lines = log.lines
    _validate(settings, file_log)
    assert file_log.outputs is not None
    log.configure(file_log.level, file_log.outputs)

    # etcd reads the v2 proxy settings in a second pass.
    loaded = ("info", "etcdmain/config.go:337",
              "loaded server configuration, other configuration command line flags and environment variables "
              "will be ignored if provided", ("path", path))
    try:
        proxy = decode(data, PROXY_SCHEMA, "configProxy", "etcdmain.configProxy")
    except YamlError as exc:
        log.emit(*loaded)
        raise _Invalid(str(exc)) from None
    for key, valids, what in (("discovery_fallback", ("proxy", "exit"), "discovery-fallback flag"),
                              ("proxy", ("off", "readonly", "on"), "proxyFlag")):
        value = proxy.pop(key, "")
        if value != "":
            if value not in valids:
                msg = f"unexpected error setting up {what}: invalid value"
                raise ConfigError(msg, 1, lines=tuple(log.lines) + (LogLine("fatal", "", msg, style="stdlog"),))
            settings[key] = value
    log.emit(*loaded)
    settings.update(proxy)
    return settings


def _os_error_text(exc: OSError) -> str:
    import errno
    texts_by_errno = {errno.ENOENT: "no such file or directory", errno.EACCES: "permission denied",
                      errno.EISDIR: "is a directory", errno.ENOTDIR: "not a directory"}
    return texts_by_errno.get(exc.errno or 0, (exc.strerror or str(exc)).lower())


# --- validation (embed.Config.Validate) ---------------------------------------------------------------

def _validate(s: dict[str, Any], log: _Log) -> None:
    _setup_logging(s, log)
    for key in ("listen_peer_urls", "listen_client_urls", "listen_metrics_urls"):
        _check_bind_urls(s[key])
    for key, flag in (("initial_advertise_peer_urls", "--initial-advertise-peer-urls"),
                      ("advertise_client_urls", "--advertise-client-urls")):
        urls = s[key] or ()
        problem = _check_host_urls(urls)
        if problem:
            raise _Invalid(f'{flag} {go_quote(",".join(urls))} must be "host:port" ({problem})')
    bootstrap_sources = sum(1 for v in (s["discovery"], s["initial_cluster"], s["discovery_srv"]) if v != "")
    if s["initial_cluster_state"] not in ("new", "existing"):
        raise _Invalid(f"unexpected clusterState {go_quote(s['initial_cluster_state'])}")
    if bootstrap_sources > 1:
        raise _Invalid(ERR_CONFLICT_BOOTSTRAP)
    tick, election = s["heartbeat_interval"], s["election_timeout"]
    if tick == 0:
        raise _Invalid(f"--heartbeat-interval must be >0 (set to {tick}ms)")
    if election == 0:
        raise _Invalid(f"--election-timeout must be >0 (set to {election}ms)")
    if 5 * tick > election:
        raise _Invalid(f"--election-timeout[{election}ms] should be at least as 5 times as "
                       f"--heartbeat-interval[{tick}ms]")
    if election > MAX_ELECTION_MS:
        raise _Invalid(f"--election-timeout[{election}ms] is too long, and should be set less than "
                       f"{MAX_ELECTION_MS}ms")
    if s["listen_client_urls"] is not None and s["advertise_client_urls"] is None:
        raise _Invalid(ERR_UNSET_ADVERTISE)
    if s["auto_compaction_mode"] not in ("", "revision", "periodic"):
        raise _Invalid(f"unknown auto-compaction-mode {go_quote(s['auto_compaction_mode'])}")
    # etcd 3.5.10's checks of its TLS version flags (cipher suite names are checked at start-up).
    try:
        check_versions(s["tls_min_version"], s["tls_max_version"], ())
    except TLSConfigError as exc:
        raise _Invalid(str(exc)) from None
    if tls_version(s["tls_min_version"]) == ssl.TLSVersion.TLSv1_3 and s["cipher_suites"]:
        raise _Invalid("cipher suites cannot be configured when only TLS1.3 is enabled")


def _setup_logging(s: dict[str, Any], log: _Log) -> None:
    logger = s["logger"]
    if logger == "capnslog":
        raise _Invalid("--logger=capnslog is removed in v3.5")
    if logger != "zap":
        raise _Invalid(f"unknown logger option {go_quote(logger)}")
    outputs = tuple(s["log_outputs"]) or ("default",)
    s["log_outputs"] = outputs
    if len(outputs) > 1 and "default" in outputs:
        raise _Invalid('multi logoutput for "default" is not supported yet')
    if s["enable_log_rotation"]:
        _check_log_rotation(outputs, s["log_rotation_config_json"])
    level = s["log_level"]
    if level.lower() not in _ZAP_LEVELS and level not in ("",):
        # etcd panics here (zap refuses the level); Go's runtime exits 2.
        raise ConfigError(f"unrecognized level: {go_quote(level)}", 2,
                          text=f"panic: unrecognized level: {go_quote(level)}\n", lines=tuple(log.lines))
    if "systemd/journal" in outputs and len(outputs) > 1:
        raise _Invalid("running with systemd/journal but other '--log-outputs' values "
                       f"({_go_string_list(outputs)}) are configured with 'default'; "
                       "override 'default' value with something else")
    log.configure(level, outputs)


def _go_string_list(items: tuple[str, ...]) -> str:
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def _check_log_rotation(outputs: tuple[str, ...], config_json: str) -> None:
    files = sum(1 for out in outputs if out not in ("default", "stderr", "stdout"))
    if (len(outputs) == 1 and files == 0) or files > 1:
        raise _Invalid(ERR_LOG_ROTATION_OUTPUT)
    try:
        value = json.loads(config_json)
    except ValueError as exc:
        raise _Invalid(f"improperly formatted log rotation config: {exc}") from None
    kinds = {"maxsize": int, "maxage": int, "maxbackups": int, "localtime": bool, "compress": bool}
    if isinstance(value, dict):
        for key in sorted(value):
            want = kinds.get(key.lower())
            got = value[key]
            if want is None or got is None:
                continue
            ok = isinstance(got, bool) if want is bool else (isinstance(got, int) and not isinstance(got, bool))
            if not ok:
                raise _Invalid(f"invalid log rotation config: json: cannot unmarshal {_json_kind(got)} into "
                               f"Go struct field logRotationConfig.{key} of type {want.__name__}")


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _check_bind_urls(urls: tuple[str, ...] | None) -> None:
    for url in urls or ():
        u = parse_url(url)
        if u.scheme in ("unix", "unixs"):
            continue
        try:
            host, _ = split_host_port(u.host)
        except GoError as exc:
            raise _Invalid(str(exc)) from None
        if host == "localhost":
            continue
        if not parse_ip(host):
            raise _Invalid(f"expected IP in URL for binding ({url})")


def _check_host_urls(urls: tuple[str, ...]) -> str:
    for url in urls:
        try:
            host, _ = split_host_port(parse_url(url).host)
        except GoError as exc:
            return str(exc)
        if host == "":
            return f"unexpected empty host ({url})"
    return ""


# --- derived values ---------------------------------------------------------------------------------

def _update_default_cluster(s: dict[str, Any], default_host: str | None, log: _Log) -> None:
    """etcd's UpdateDefaultClusterFromName: a named member bootstraps alone, on its advertised peer URLs."""
    used = False
    if default_host:
        lp = parse_url(s["listen_peer_urls"][0])
        if s["initial_advertise_peer_urls"] == (DEFAULT_AP_URL,) and _hostname(lp.host) == "0.0.0.0":
            s["initial_advertise_peer_urls"] = (f"http://{default_host}:{_port(lp.host)}",)
            used = True
    if s["name"] != "default" and s["initial_cluster"] == DEFAULT_INITIAL_CLUSTER:
        s["initial_cluster"] = ",".join(f"{s['name'] or 'default'}={u}" for u in s["initial_advertise_peer_urls"])
    if default_host:
        lc = parse_url(s["listen_client_urls"][0])
        if s["advertise_client_urls"] == (DEFAULT_AC_URL,) and _hostname(lc.host) == "0.0.0.0":
            s["advertise_client_urls"] = (f"http://{default_host}:{_port(lc.host)}",)
            used = True
    if used:
        log.emit("info", "etcdmain/etcd.go:93", "detected default host for advertise", ("host", default_host))


def _hostname(hostport: str) -> str:
    try:
        return split_host_port(hostport)[0]
    except GoError:
        return hostport


def _port(hostport: str) -> str:
    try:
        return split_host_port(hostport)[1]
    except GoError:
        return ""


def _build(s: dict[str, Any]) -> Config:
    fields = {a.name for a in attrs.fields(Config)}
    client = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("client_transport_security.")}
    peer = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("peer_transport_security.")}
    kwargs = {k: v for k, v in s.items() if k in fields}
    if client:
        kwargs["client_transport_security"] = TLSInfo(**client)
    if peer:
        kwargs["peer_transport_security"] = TLSInfo(**peer)
    if kwargs.get("advertise_client_urls") is None:
        kwargs["advertise_client_urls"] = ()
    return Config(**kwargs)
