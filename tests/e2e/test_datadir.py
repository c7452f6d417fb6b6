"""Data-dir compatibility with etcd 3.5.1, both ways: what one implementation wrote and stopped (SIGTERM), the other
starts on (a copy of the dir) and serves identically, writes more and stops; the first starts again and serves that.
"Identically": the same `etcdctl get "" --prefix -w json` (kvs, count, header revision, cluster and member ID, which
both come from the WAL) and the same `etcdctl endpoint hashkv` now and at older revisions (compacted ones included:
then the error text must match).

(writer, reader) runs over (etcd, trietcd), (trietcd, etcd) and (etcd, etcd); the last proves the harness. A variant
with --snapshot-count 50 has .snap files and WAL snapshot records. Then the checked-in fixtures written by etcd
3.5.1 and 3.4.23 and an `etcdutl snapshot restore` result: etcd on one copy, the implementation under test on
another, the same views, and the hashes the MANIFESTs recorded.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import attrs
import pytest

from tests.e2e import workload
from tests.e2e.servers import ETCD_BIN
from tests.e2e.workload import kill_leftover_servers  # noqa: F401 - an autouse fixture
from tests.e2e.workload import Client, impl_param

FLAGS = ("--heartbeat-interval", "20", "--election-timeout", "200")

PAIRS = [impl_param("etcd", "trietcd"), impl_param("trietcd", "etcd"), impl_param("etcd", "etcd")]


# ---- the workload ----------------------------------------------------------------


def write_first(client: Client) -> list[int]:
    """Several hundred revisions: puts, overwrites, deletes (one by one and by range), txns taking either branch, a
    value spanning pages, a compaction, and writes after it. The revisions worth hashing at."""
    for i in range(300):
        client.put(b"dd/k%03d" % i, b"v%d-" % i * (i % 7 + 1))
    for i in range(0, 300, 3):
        client.put(b"dd/k%03d" % i, b"overwritten %d" % i)
    for i in range(1, 100, 2):
        client.delete(b"dd/k%03d" % i)
    client.delete(b"dd/k2", b"dd/k21")
    for i in range(20):
        key = b"dd/k%03d" % (100 + i)
        expected = b"overwritten %d" % (100 + i)  # true for every third key
        client.txn([workload.value_is(key, expected)],
                   [workload.put_op(key, b"txn-success"), workload.put_op(b"dd/txn/%d" % i, b"s")],
                   [workload.put_op(b"dd/txn/%d" % i, b"f"),
                    workload.rpc_pb2.RequestOp(request_delete_range=workload.rpc_pb2.DeleteRangeRequest(key=key))])
    client.put(b"dd/big", bytes(range(256)) * 40)
    client.put(b"dd/\x00\xff binary", b"\x00\x01")
    compact_at = client.revision() - 60
    client.compact(compact_at)
    for i in range(20):
        client.put(b"dd/after/%d" % (i % 5), b"a%d" % i)
    current = client.revision()
    return [compact_at - 1, compact_at, compact_at + 1, (compact_at + current) // 2, current - 1]


def write_more(client: Client) -> list[int]:
    """What the reader adds: more puts, overwrites, a delete, a txn and a second compaction."""
    start = client.revision()
    for i in range(100):
        client.put(b"dd/more/%02d" % (i % 40), b"m%d" % i)
    client.delete(b"dd/k000")
    client.txn([workload.mod_revision_is(b"dd/more/00", 0)], [], [workload.put_op(b"dd/more/00", b"txn")])
    compact_at = start + 50
    client.compact(compact_at)
    client.put(b"dd/last", b"1")
    current = client.revision()
    return [start, compact_at, compact_at + 1, current - 1]


def served(impl: str, run_dir: Path, data_dir: Path, revisions: list[int], *flags: str, name: str = "node1",
           user: str | None = None, then=None) -> dict:
    """Start impl on data_dir, take its view, run then(client) (more revisions to view), stop it with SIGTERM."""
    server = workload.start(impl, run_dir, data_dir, *FLAGS, *flags, name=name)
    try:
        with Client(server) as client:
            seen = workload.view(server, revisions, user=user)
            if then:
                more = then(client)
                seen = (seen, workload.view(server, more, user=user), more)
    finally:
        workload.stop(server)
    return seen


@pytest.mark.parametrize("snapshot_count", [None, 50], ids=["default", "snapshot-count-50"])
@pytest.mark.parametrize("writer, reader", PAIRS)
def test_written_by_one_served_by_the_other(writer, reader, snapshot_count, tmp_path):
    flags = ("--snapshot-count", str(snapshot_count)) if snapshot_count else ()
    first = tmp_path / "first"
    server = workload.start(writer, tmp_path / writer, first, *FLAGS, *flags)
    try:
        with Client(server) as client:
            revisions = write_first(client)
        written = workload.view(server, revisions)
    finally:
        workload.stop(server)
    if snapshot_count:
        assert list((first / "member" / "snap").glob("*.snap")), "no .snap file: the snapshot path is not covered"

    second = workload.copy_data_dir(first, tmp_path / "second")
    seen, after, more = served(reader, tmp_path / reader, second, revisions, *flags, then=write_more)
    assert seen == written, f"{reader} serves {writer}'s data dir differently"

    third = workload.copy_data_dir(second, tmp_path / "third")
    again = served(writer, tmp_path / writer, third, more, *flags)
    assert again == after, f"{writer} serves the data dir {reader} wrote to differently"
    assert {key["key"] for key in written["kvs"]} - {key["key"] for key in again["kvs"]} == {"ZGQvazAwMA=="}


# ---- the fixtures -------------------------------------------------------------------

FIXTURES = workload.FIXTURES
ROOT = "root:rootpw"


def restored_db(destination: Path) -> None:
    """restore-1member's db (not checked in): `etcdutl snapshot restore` is deterministic, so make it again with
    the MANIFEST's command and check it is the same file."""
    scratch = destination.parent / "restore-scratch"
    done = subprocess.run(
        [str(ETCD_BIN / "etcdutl"), "snapshot", "restore", str(FIXTURES / "etcd-3.5.1" / "snapshot.db"),
         "--name", "r1", "--initial-cluster", "r1=http://127.0.0.1:22780", "--initial-cluster-token",
         "trietcd-restore", "--initial-advertise-peer-urls", "http://127.0.0.1:22780", "--data-dir", str(scratch)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shutil.copyfile(scratch / "member" / "snap" / "db", destination)
    shutil.rmtree(scratch)


@attrs.frozen
class Fixture:
    data_dir: Path
    name: str  # --name and --initial-cluster-token as in the MANIFEST
    token: str
    user: str | None  # auth is enabled
    db_sha256: str  # member/snap/db as the MANIFEST lists it
    make_db: object  # writes the db to a path when it is not checked in
    member_id: int
    hashes: dict  # {revision: `endpoint hashkv` as the MANIFEST measured it}; 0 is the current revision


FIXTURE_CASES = {
    "etcd-3.5.1": Fixture(
        FIXTURES / "etcd-3.5.1" / "datadir", "fx1", "trietcd-fixture", ROOT,
        "d91ec7e0ac9e0284eb632db184c92def119989bb51fdc72dc3445a854ef8201c", None, 5285530685960965173,
        {0: "1625769479 compact=4", 10: "1625769479 compact=4", 5: "2893437533 compact=4",
         6: "2515663991 compact=4", 7: "2291723110 compact=4", 8: "4278292545 compact=4",
         9: "2833289231 compact=4"},
    ),
    "etcd-3.4.23": Fixture(
        FIXTURES / "etcd-3.4.23" / "datadir", "fx1", "trietcd-fixture", None,
        "85aca896514549c0cd7903e7024be6225b83917e871739c2361df6415221e115",
        # bbolt/etcd-small.db is a copy of datadir/member/snap/db (the same sha256 in the MANIFEST)
        lambda db: shutil.copyfile(FIXTURES / "etcd-3.4.23" / "bbolt" / "etcd-small.db", db), 5285530685960965173,
        {0: "3687147342 compact=4", 5: "3014433230 compact=4", 6: "3684700848 compact=4",
         7: "3687147342 compact=4"},
    ),
    "restore-1member": Fixture(
        FIXTURES / "etcd-3.5.1" / "restore-1member", "r1", "trietcd-restore", ROOT,
        "28447b506bdc30b8b184d494a2606fb66a7c0558b6f6174d6aba9a98ad3f911d", restored_db, 15482025544920567580,
        {0: "1625769479 compact=4"},
    ),
}


def fixture_copy(case: str, destination: Path) -> Path:
    fixture = FIXTURE_CASES[case]
    workload.copy_data_dir(fixture.data_dir, destination)
    db = destination / "member" / "snap" / "db"
    if not db.exists():
        fixture.make_db(db)
    assert workload.sha256(db) == fixture.db_sha256, f"{case}: db is not the one the MANIFEST describes"
    return destination


def _fixture_params():
    for case, fixture in FIXTURE_CASES.items():
        for impl in ("etcd", "trietcd"):
            yield pytest.param(impl, case, id=f"{impl}-{case}")


@pytest.mark.parametrize("impl, case", list(_fixture_params()))
def test_fixture_served_like_etcd(impl, case, tmp_path):
    fixture = FIXTURE_CASES[case]
    revisions = sorted(set(fixture.hashes) - {0} | {4, 11})  # 4 is compacted, 11 is in the future
    flags = ("--initial-cluster-token", fixture.token)
    expected = served("etcd", tmp_path / "etcd", fixture_copy(case, tmp_path / "etcd-copy"), revisions, *flags,
                      name=fixture.name, user=fixture.user)
    measured = {rev: expected["hashkv"][rev] for rev in fixture.hashes}
    assert (expected["member_id"], measured) == (fixture.member_id, fixture.hashes), "not what the MANIFEST says"
    assert expected["hashkv"][4] == "error: etcdserver: mvcc: required revision has been compacted"
    assert expected["hashkv"][11] == "error: etcdserver: mvcc: required revision is a future revision"

    got = served(impl, tmp_path / impl, fixture_copy(case, tmp_path / "copy"), revisions, *flags,
                 name=fixture.name, user=fixture.user)
    assert got == expected
