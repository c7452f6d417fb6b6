"""--log-outputs and --log-level on real processes, trietcd beside etcd 3.5.1."""

import json

import pytest

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("command", [TRIETCD_CMD, ETCD_CMD], ids=["trietcd", "etcd"])
def test_log_outputs_stderr_and_a_file_get_the_same_lines(tmp_path, command):
    path = tmp_path / "server.log"
    server = start(tmp_path, command, "--log-outputs", f"stderr,{path}")
    try:
        assert server.etcdctl("put", "k", "v").returncode == 0
    finally:
        server.stop()
    in_file = _records(path.read_text())
    on_stderr = _records(server.log())
    assert [r["msg"] for r in in_file] == [r["msg"] for r in on_stderr]
    msgs = [r["msg"] for r in in_file]
    for msg in ("starting an etcd server", "now serving peer/client/metrics", "ready to serve client requests",
                "received signal; shutting down", "closed etcd server"):
        assert msg in msgs
    for r in in_file:
        assert list(r)[:2] == ["level", "ts"] and "msg" in r


@pytest.mark.parametrize("command", [TRIETCD_CMD, ETCD_CMD], ids=["trietcd", "etcd"])
def test_log_level_warn_keeps_only_warnings(tmp_path, command):
    server = start(tmp_path, command, "--log-level", "warn")
    server.stop()
    levels = {r["level"] for r in _records(server.log())}
    assert levels <= {"warn", "error"}


def test_starting_line_has_etcds_fields(tmp_path):
    flags = ("--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000", "--snapshot-count", "500")
    lines = {}
    for name, command in (("trietcd", TRIETCD_CMD), ("etcd", ETCD_CMD)):
        (tmp_path / name).mkdir()
        server = start(tmp_path / name, command, *flags)
        server.stop()
        lines[name] = next(r for r in _records(server.log()) if r["msg"] == "starting an etcd server")
    ours, theirs = lines["trietcd"], lines["etcd"]
    go_runtime = {"git-sha", "go-version", "go-os", "go-arch"}
    assert list(ours) == [k for k in theirs if k not in go_runtime]
    differ = {"ts", "data-dir", "member-dir", "initial-advertise-peer-urls", "listen-peer-urls",
              "advertise-client-urls", "listen-client-urls", "initial-cluster"}
    assert {k: v for k, v in ours.items() if k not in differ} == {
        k: v for k, v in theirs.items() if k not in differ | go_runtime}
