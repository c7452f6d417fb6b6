"""--enable-log-rotation: the file rotates as etcd's lumberjack writer does (size in MB, backups named by time,
kept by count and age, optionally gzipped)."""

import gzip
import os

from trietcd.log import RotatingFile

LINE = "x" * 1023 + "\n"  # 1 KiB
T0 = 1795500000.0  # 2026-11-24T06:00:00Z


def write_mib(f, mib: float) -> None:
    for _ in range(int(mib * 1024)):
        f.write(LINE)


def test_rotates_past_maxsize_and_names_backups_by_utc_time(tmp_path):
    clock = [T0]
    path = tmp_path / "etcd.log"
    f = RotatingFile(str(path), {"maxsize": 1}, now=lambda: clock[0])
    write_mib(f, 1)
    assert sorted(os.listdir(tmp_path)) == ["etcd.log"]  # exactly 1 MiB: still one file
    f.write(LINE)
    clock[0] += 1.5
    write_mib(f, 1)
    f.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["etcd-2026-11-24T06-00-00.000.log", "etcd-2026-11-24T06-00-01.500.log", "etcd.log"]
    assert os.path.getsize(tmp_path / "etcd-2026-11-24T06-00-00.000.log") == 1 << 20
    assert all(os.path.getsize(tmp_path / n) <= 1 << 20 for n in names)


def test_keeps_maxbackups_and_drops_old_ones_and_compresses(tmp_path):
    clock = [T0]
    path = tmp_path / "m.log"
    f = RotatingFile(str(path), {"MaxSize": 1, "maxbackups": 2, "compress": True}, now=lambda: clock[0])
    for _ in range(4):
        write_mib(f, 1)
        clock[0] += 60
    f.write(LINE)
    f.close()
    backups = sorted(n for n in os.listdir(tmp_path) if n != "m.log")
    assert backups == ["m-2026-11-24T06-03-00.000.log.gz", "m-2026-11-24T06-04-00.000.log.gz"]
    with gzip.open(tmp_path / backups[0], "rt") as g:
        assert g.read() == LINE * 1024

    aged = tmp_path / "aged"
    aged.mkdir()
    clock = [T0]
    f = RotatingFile(str(aged / "a.log"), {"maxsize": 1, "maxage": 1}, now=lambda: clock[0])
    write_mib(f, 1)
    f.write(LINE)  # first backup, at T0
    clock[0] += 2 * 86400
    write_mib(f, 1)  # second backup, two days later: the first is past maxage
    f.close()
    assert sorted(os.listdir(aged)) == ["a-2026-11-26T06-00-00.000.log", "a.log"]


def test_appends_to_an_existing_file_counting_its_size(tmp_path):
    path = tmp_path / "e.log"
    path.write_text(LINE * 1024)
    f = RotatingFile(str(path), {"maxsize": 1}, now=lambda: T0)
    f.write(LINE)
    f.close()
    assert sorted(os.listdir(tmp_path)) == ["e-2026-11-24T06-00-00.000.log", "e.log"]
    assert path.read_text() == LINE
