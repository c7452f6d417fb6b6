"""The trietcd process against the etcd 3.5.1 process: signals and exit codes,
--version, flag errors, --config-file, and /health and /version over HTTP.

Outputs are compared with etcd's after masking only timestamps, ports, the
program path and the Date header. TRIETCD_E2E_CMD overrides the trietcd
command; pointing it at the etcd binary is the self-test of this module.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml


from tests.e2e import servers as _conftest  # noqa: E402

ETCD_BIN = _conftest.ETCD_BIN
TRIETCD_CMD = _conftest.TRIETCD_CMD
ETCD_CMD = _conftest.ETCD_CMD
COMMANDS = {"etcd": ETCD_CMD, "trietcd": TRIETCD_CMD}


def both(fn):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, ("etcd", "trietcd")))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


def run(kind: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMANDS[kind], *args], capture_output=True, text=True, env=clean_env(),
                          cwd=cwd, timeout=20)


def normalize_log(text: str) -> str:
    """etcd's early log lines carry a float timestamp and the program path in
    `"args":[...]`; neither says anything about behaviour."""
    text = re.sub(r'"ts":(\d+\.\d+|"[^"]*")', '"ts":<TS>', text)
    return re.sub(r'("args":\[)"[^"]*"', r'\1"<PROGRAM>"', text)


# ---- without a server --------------------------------------------------------


def test_version(tmp_path):
    # Scripts read the first line (`etcd --version | head -1`); the lines after
    # it name the build toolchain, which is not Go here.
    etcd, trietcd = both(lambda kind: run(kind, "--version", cwd=tmp_path))
    assert etcd.stdout.startswith("etcd Version: 3.5.1\n")
    assert (trietcd.returncode, trietcd.stderr) == (etcd.returncode, etcd.stderr)
    assert trietcd.stdout.partition("\n")[0] == "etcd Version: 3.5.1", trietcd.stdout


BAD_ARGS = {
    "unknown-flag": ["--bogus-flag"],
    "unknown-short-flag": ["-bogus"],
    "missing-value": ["--name"],
    "bad-duration-int": ["--heartbeat-interval=abc"],
    "bad-url": ["--listen-client-urls=foo"],
    "bad-choice": ["--initial-cluster-state=weird"],
    "positional-arg": ["extra-arg"],
    "missing-config-file": ["--config-file=/nonexistent/trietcd-e2e.yaml"],
}

# trietcd has no `gateway` or `grpc-proxy` sub-commands, so its usage text
# does not offer them; everything else of etcd's usage is the same.
_ETCD_ONLY_USAGE = re.compile(r"  etcd gateway\n.*?\n\n  etcd grpc-proxy\n.*?\n\n", re.S)


@pytest.mark.parametrize("name", list(BAD_ARGS))
def test_bad_arguments(tmp_path, name):
    etcd, trietcd = both(lambda kind: run(kind, *BAD_ARGS[name], cwd=tmp_path))
    assert etcd.returncode != 0
    etcd_stderr = _ETCD_ONLY_USAGE.sub("", etcd.stderr)
    expected = (etcd.returncode, normalize_log(etcd.stdout), normalize_log(etcd_stderr))
    got = (trietcd.returncode, normalize_log(trietcd.stdout), normalize_log(trietcd.stderr))
    assert got == expected


def test_config_is_an_alias_of_config_file(tmp_path):
    # `trietcd --config node.yaml` is how trietcd's users start it; etcd 3.5.1
    # itself ignores --config, so compare with etcd's --config-file.
    etcd = run("etcd", "--config-file", "node.yaml", cwd=tmp_path)
    trietcd = run("trietcd", "--config", "node.yaml", cwd=tmp_path)
    assert etcd.returncode == 1
    expected = (etcd.returncode, normalize_log(etcd.stderr).replace('"--config-file"', '"--config"'))
    assert (trietcd.returncode, normalize_log(trietcd.stderr)) == expected


def test_bad_log_level(tmp_path):
    # etcd panics here; the exit code and the panic line are what scripts see.
    etcd, trietcd = both(lambda kind: run(kind, "--log-level=nope", cwd=tmp_path))
    first_line = [r.stderr.partition("\n")[0] for r in (etcd, trietcd)]
    assert etcd.returncode == 2 and first_line[0] == 'panic: unrecognized level: "nope"'
    assert (trietcd.returncode, first_line[1]) == (etcd.returncode, first_line[0])


# ---- signals -----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_stops_like_etcd(tmp_path, sig):
    """etcd shuts down and then dies of the signal itself (re-raised with the
    default action), so its parent sees -SIG, not an exit code."""

    def stop(kind: str) -> tuple[int, str]:
        directory = tmp_path / kind
        directory.mkdir()
        server = _conftest.start(directory, COMMANDS[kind])
        try:
            assert server.etcdctl("put", "k", "v").returncode == 0, server.log()
            server.proc.send_signal(sig)
            returncode = server.proc.wait(10)
        finally:
            server.stop(signal.SIGKILL)
        return returncode, server.log()

    (etcd_code, etcd_log), (code, log) = both(stop)
    assert etcd_code == -sig
    assert code == etcd_code, log[-3000:]
    message = '"msg":"received signal; shutting down"'
    assert message in etcd_log and message in log, log[-3000:]


# ---- a server configured by --config-file ------------------------------------


def start_with_config(base: Path, kind: str):
    directory = base / kind
    directory.mkdir()
    client_url = f"http://127.0.0.1:{_conftest.free_port()}"
    peer_url = f"http://127.0.0.1:{_conftest.free_port()}"
    config = {
        "name": "fromyaml",
        "data-dir": str(directory / "data"),
        "listen-client-urls": client_url,
        "advertise-client-urls": client_url,
        "listen-peer-urls": peer_url,
        "initial-advertise-peer-urls": peer_url,
        "initial-cluster": f"fromyaml={peer_url}",
    }
    (directory / "node.yaml").write_text(yaml.safe_dump(config))
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*COMMANDS[kind], "--config-file", str(directory / "node.yaml")],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=directory, start_new_session=True,
        )
    server = _conftest.Server(proc, client_url, peer_url, directory / "data", log_path)
    try:
        _conftest.wait_ready(server)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    base = tmp_path_factory.mktemp("process")
    servers, errors = [], []
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(start_with_config, base, kind) for kind in ("etcd", "trietcd")]:
            try:
                servers.append(future.result())
            except Exception as exc:  # noqa: BLE001 - stop the other one, then fail
                errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield tuple(servers)
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def normalize_server_text(text: str, server) -> str:
    for url, placeholder in ((server.client_url, "<CLIENT_URL>"), (server.peer_url, "<PEER_URL>")):
        text = text.replace(url, placeholder)
    return text


def test_config_file_is_used(configured):
    def session(server) -> list:
        put = server.etcdctl("put", "k", "from-yaml")
        get = server.etcdctl("get", "k", "--print-value-only")
        members = server.etcdctl("member", "list", "-w", "json")
        listing = json.loads(members.stdout)["members"] if members.returncode == 0 else members.stderr
        return [
            (put.returncode, put.stdout, put.stderr),
            (get.returncode, get.stdout, get.stderr),
            normalize_server_text(json.dumps([{k: m[k] for k in ("name", "peerURLs", "clientURLs")}
                                              for m in listing] if isinstance(listing, list) else listing), server),
            # The data dir named in the YAML file is the one in use. (What etcd
            # keeps under member/ arrives with durable storage.)
            server.data_dir.is_dir(),
        ]

    etcd, trietcd = configured
    expected = session(etcd)
    assert expected[1] == (0, "from-yaml\n", "")
    assert '"name": "fromyaml"' in expected[2]
    assert session(trietcd) == expected


# ---- HTTP endpoints ------------------------------------------------------------


def http_get(host_port: str, path: str, method: str = "GET") -> str:
    connection = http.client.HTTPConnection(host_port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    lines = [str(response.status)]
    for name, value in response.getheaders():
        lines.append(f"{name}: {'<DATE>' if name.lower() == 'date' else value}")
    return "\n".join(lines) + "\n\n" + body.decode("utf-8", "replace")


HTTP_CASES = {
    "health": ("client", "GET", "/health"),
    "health-serializable": ("client", "GET", "/health?serializable=true"),
    "version": ("client", "GET", "/version"),
    "version-post": ("client", "POST", "/version"),
    "peer-version": ("peer", "GET", "/version"),
}


@pytest.mark.parametrize("name", list(HTTP_CASES))
def test_http_endpoint(configured, name):
    port, method, path = HTTP_CASES[name]
    texts = []
    for server in configured:
        url = server.client_url if port == "client" else server.peer_url
        texts.append(http_get(url.removeprefix("http://"), path, method))
    expected, got = texts
    assert expected.startswith("200") or name == "version-post"
    assert got == expected, f"etcd:\n{expected}\n\ntrietcd:\n{got}"
