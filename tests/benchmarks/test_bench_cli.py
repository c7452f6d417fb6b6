"""Smoke tests: trietcd-benchmark and the side-by-side harness end to end
against real etcd 3.5.1 processes, with tiny totals. They check that every
command runs and prints etcd's output shape, never how fast anything is."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from benchmarks import compare, unary_noop
from trietcd.tools.benchmark import cli, dial

ETCD_BIN = pathlib.Path(unary_noop._etcd_bin_dir())
pytestmark = pytest.mark.skipif(not (ETCD_BIN / "etcd").exists(), reason="etcd 3.5.1 not installed")

SUMMARY = re.compile(
    r"\nSummary:\n  Total:\t\d+\.\d{4} secs\.\n  Slowest:\t\d+\.\d{4} secs\.\n  Fastest:\t\d+\.\d{4} secs\.\n"
    r"  Average:\t\d+\.\d{4} secs\.\n  Stddev:\t\d+\.\d{4} secs\.\n  Requests/sec:\t\d+\.\d{4}\n"
    r"\nResponse time histogram:\n(  \d+\.\d{4} \[\d+\]\t\|\u220e*\n){11}"
    r"\nLatency distribution:\n(  [\d.]+% in \d+\.\d{4} secs\.\n)*"
)


def start_etcd(tmp: pathlib.Path, name: str, scheme: str = "http", extra: tuple = ()):
    client = f"{scheme}://127.0.0.1:{unary_noop.free_port()}"
    peer = f"http://127.0.0.1:{unary_noop.free_port()}"
    argv = [
        str(ETCD_BIN / "etcd"), "--name", name, "--data-dir", str(tmp / f"{name}.data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}", "--log-level", "error", *extra,
    ]
    log = open(tmp / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, client


def etcdctl(client: str, *args: str, tls: tuple = ()) -> None:
    subprocess.run([str(ETCD_BIN / "etcdctl"), f"--endpoints={client}", *tls, *args], check=True,
                   capture_output=True, timeout=30)


def wait_for(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-etcd")
    proc, client = start_etcd(tmp, "plain")
    endpoint = client.removeprefix("http://")
    try:
        wait_for(lambda: etcdctl(client, "put", "foo", "bar"))
        yield endpoint
    finally:
        unary_noop._stop(proc)


def run_cli(capsys, *argv):
    code = cli.main(["--no-progress", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    return captured.out


def test_put_prints_etcds_summary(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "--conns=2", "--clients=5", "put", "--total=50",
                  "--key-size=8", "--val-size=256", "--sequential-keys", "--key-space-size=10")
    assert SUMMARY.fullmatch(out.removesuffix("\n")), out
    assert "Error distribution" not in out


def test_global_flags_also_after_the_command(etcd, capsys):
    out = run_cli(capsys, "range", "foo", f"--endpoints={etcd}", "--clients=3", "--total=30", "--consistency=s",
                  "--limit=1", "--json")
    lines = out.splitlines()
    assert json.loads(lines[0])["calls_ok"] == 30  # no "bench with" line in JSON mode


def test_range_says_which_consistency(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "range", "a", "z", "--total=20")
    assert out.startswith("bench with linearizable range\n")
    assert SUMMARY.fullmatch(out.split("\n", 1)[1]), out


def test_txn_put_and_txn_mixed(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "txn-put", "--total=20", "--txn-ops=2", "--key-space-size=4")
    assert SUMMARY.fullmatch(out.removesuffix("\n")), out
    out = run_cli(capsys, f"--endpoints={etcd}", "--clients=4", "txn-mixed", "--total=200", "--rw-ratio=1",
                  "--consistency=s")
    reads = int(re.search(r"Total Read Ops: (\d+)\nDetails:\nSummary", out).group(1))
    writes = int(re.search(r"Total Write Ops: (\d+)\nDetails:\nSummary", out).group(1))
    assert reads + writes == 200 and reads > 0 and writes > 0


def test_lease_keepalive(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "--conns=2", "--clients=4", "--json", "lease-keepalive",
                  "--total=40")
    assert json.loads(out)["calls_ok"] == 40


def test_watch_counts_every_event(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "--conns=2", "--clients=2", "--json", "watch",
                  "--streams=3", "--watch-per-stream=4", "--watched-key-total=2", "--put-total=10",
                  "--sequential-keys", "--key-space-size=2")
    created, received = (json.loads(line) for line in out.splitlines())
    assert created["name"] == "Watch creation summary" and created["calls_ok"] == 12
    # Keys alternate over 2 keys, 6 watchers each: 10 puts give 60 events.
    assert received["name"] == "Watch events received summary" and received["calls_ok"] == 60


def test_watch_latency(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "--conns=2", "--clients=3", "--json", "watch-latency",
                  "--total=5", "--put-rate=1000")
    assert json.loads(out)["calls_ok"] == 15


def test_compaction_runs_during_put(etcd, capsys):
    out = run_cli(capsys, f"--endpoints={etcd}", "--clients=2", "--json", "put", "--total=300", "--rate=1000",
                  "--compact-interval=50ms", "--compact-index-delta=10")
    assert json.loads(out)["calls_ok"] == 300
    response = subprocess.run([str(ETCD_BIN / "etcdctl"), f"--endpoints={etcd}", "get", "x", "--rev=1"],
                              capture_output=True, text=True)
    assert "required revision has been compacted" in response.stderr


def test_console_script_draws_progress_on_stderr(etcd):
    proc = subprocess.run(
        [sys.executable, "-m", "trietcd.tools.benchmark", f"--endpoints={etcd}", "put", "--total=30"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stderr.endswith("30 / 30 B" + "o" * cli.ProgressBar.WIDTH + "! 100.00% 0s\n")
    assert "Summary:" in proc.stdout


def test_unreachable_endpoint_is_a_dial_error(capsys):
    code = cli.main(["--endpoints=127.0.0.1:1", "--dial-timeout=1s", "put", "--total=1"])
    assert code == 1
    assert "dial error: 127.0.0.1:1" in capsys.readouterr().err


def test_parse_duration_like_go():
    assert cli.parse_duration("1m30s") == 90.0
    assert cli.parse_duration("250ms") == 0.25
    assert cli.parse_duration("0") == 0.0
    with pytest.raises(Exception):
        cli.parse_duration("5")


def test_bool_flags_take_go_style_values():
    args = cli.parse_args(["--target-leader=false", "put", "--sequential-keys=true"])
    assert args.target_leader is False and args.sequential_keys is True


@pytest.fixture(scope="module")
def tls_auth_etcd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "server.key", "-out", "server.crt", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, cwd=tmp,
    )
    proc, client = start_etcd(tmp, "tls", "https", (
        "--cert-file", str(tmp / "server.crt"), "--key-file", str(tmp / "server.key"),
    ))
    tls = (f"--cacert={tmp / 'server.crt'}",)
    try:
        wait_for(lambda: etcdctl(client, "user", "add", "root:secret", tls=tls))
        etcdctl(client, "auth", "enable", tls=tls)
        yield client.removeprefix("https://"), str(tmp / "server.crt")
    finally:
        unary_noop._stop(proc)


def test_tls_and_user(tls_auth_etcd, capsys):
    endpoint, cacert = tls_auth_etcd
    out = run_cli(capsys, f"--endpoints={endpoint}", f"--cacert={cacert}", "--user=root:secret", "--json",
                  "--target-leader", "put", "--total=20")
    assert json.loads(out)["calls_ok"] == 20
    # Without a token etcd refuses the Puts: the errors are counted, not hidden.
    out = run_cli(capsys, f"--endpoints={endpoint}", "--insecure-skip-tls-verify", "--json", "put", "--total=5")
    result = json.loads(out)
    assert result["calls_ok"] == 0
    assert result["errors"] == {"rpc error: code = InvalidArgument desc = etcdserver: user name is empty": 5}


def test_wrong_password_is_reported(tls_auth_etcd, capsys):
    endpoint, cacert = tls_auth_etcd
    assert cli.main([f"--endpoints={endpoint}", f"--cacert={cacert}", "--user=root:nope", "put"]) == 1
    assert "authentication failed" in capsys.readouterr().err


def test_harness_reference_run_prints_the_side_by_side_table(capsys):
    code = compare.main(["--reference-only", "--scale=0.002", "--only=put-1-1,range-s-1-1,lease-keepalive-10-100",
                         "--no-save"])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"- machine: nproc \d+, .*; load average", out)
    assert "etcd 3.5.1, trietcd " in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| scenario | unit | etcd | etcd-2 | etcd-2/etcd |")
    assert set(table[1].split()) == {"|", "---"}
    names = [row.split(" | ")[0].removeprefix("| ") for row in table[2:]]
    assert names == ["put-1-1", "range-s-1-1", "lease-keepalive-10-100"]
    for row in table[2:]:
        cells = row.split(" | ")
        assert re.fullmatch(r"[\d,]+", cells[2]) and re.fullmatch(r"[\d,]+", cells[3]), row
        assert re.fullmatch(r"\d+\.\d\d", cells[4]), row


def test_harness_shows_what_a_server_cannot_serve():
    failed = compare.Measurement(None, reason="rpc error: code = Unimplemented desc = x")
    ok = compare.Measurement(1000.0, p99_s=0.002)
    keepalive = next(s for s in compare.SCENARIOS if s.name == "lease-keepalive-10-100")
    table = compare.format_table(("etcd", "trietcd"), [(keepalive, ok, failed)])
    row = table.splitlines()[2]
    assert "| 1,000 | n/a (rpc error: code = Unimplemented desc = x) | - |" in row


def test_latency_scenarios_show_p50_p99_and_compare_p99s():
    latency = next(s for s in compare.SCENARIOS if s.name == "watch-latency-100")
    etcd = compare.Measurement(5000.0, p99_s=0.001, p50_s=0.0)
    ours = compare.Measurement(5000.0, p99_s=0.0015, p50_s=0.0002)
    row = compare.format_table(("etcd", "trietcd"), [(latency, etcd, ours)]).splitlines()[2]
    assert "| p50 / p99 ms | 0.00 / 1.00 | 0.20 / 1.50 | 1.50 |" in row
    slow = compare.Measurement(9000.0, p99_s=0.004)
    assert compare.best([slow, ours], compare.LATENCY) is ours  # the lowest p99, not the highest rate


def test_dial_options_need_tls_only_when_asked():
    assert not dial.DialOptions().tls
    assert dial.DialOptions(cacert="x").tls and dial.DialOptions(insecure_skip_verify=True).tls
