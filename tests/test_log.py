import io
import json
import re

import pytest

from trietcd.log import Logger, go_duration


def test_lines_have_zaps_keys_in_order():
    out = io.StringIO()
    Logger(out=out).info("starting auto periodic compaction", caller="v3compactor/periodic.go:134",
                         revision=4, **{"compact-period": "1s"})
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == ["level", "ts", "caller", "msg", "revision", "compact-period"]
    assert record["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert (record["msg"], record["revision"], record["compact-period"]) == (
        "starting auto periodic compaction", 4, "1s")
    assert '"msg":"starting auto periodic compaction"' in line  # compact separators, as zap writes


def test_non_ascii_is_written_as_utf8():
    out = io.StringIO()
    Logger(out=out).info("took", took=go_duration(1500))
    assert '"took":"1.5µs"' in out.getvalue()


@pytest.mark.parametrize("level, shown", [
    ("debug", ["debug", "info", "warn", "error"]), ("INFO", ["info", "warn", "error"]),
    ("", ["info", "warn", "error"]), ("warn", ["warn", "error"]), ("error", ["error"]),
])
def test_level_threshold_like_zap(level, shown):
    out = io.StringIO()
    log = Logger(out=out, level=level)
    for name in ("debug", "info", "warn", "error"):
        getattr(log, name)(name)
    assert [json.loads(line)["level"] for line in out.getvalue().splitlines()] == shown


def test_unknown_level_is_a_bug():
    with pytest.raises(KeyError):
        Logger(level="loud")


def test_every_output_gets_every_line_and_named_loggers_share_them():
    a, b = io.StringIO(), io.StringIO()
    log = Logger()
    log.set_outputs([a, b])
    log.warn("one")  # noqa: G010 (etcd's logger, not the logging module)
    log.named("raft").info("two")
    assert a.getvalue() == b.getvalue()
    records = [json.loads(line) for line in a.getvalue().splitlines()]
    assert [(r["msg"], r.get("logger")) for r in records] == [("one", None), ("two", "raft")]


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (1, "1ns"), (999, "999ns"), (1500, "1.5µs"), (1_111_044, "1.111044ms"), (132_949, "132.949µs"),
    (10**9, "1s"), (1_500_000_000, "1.5s"), (61 * 10**9, "1m1s"), (5400 * 10**9, "1h30m0s"),
    (12 * 3600 * 10**9, "12h0m0s"), (-2 * 10**6, "-2ms"),
])
def test_durations_as_go_prints_them(ns, text):
    assert go_duration(ns) == text


def test_set_output_none_is_stderr_and_single_output_round_trips():
    import sys

    log = Logger()
    assert log.outputs == (sys.stderr,) and log._out is None
    out = io.StringIO()
    saved = log._out
    log.set_output(out)
    assert log.outputs == (out,)
    log.set_output(saved)
    assert log.outputs == (sys.stderr,)


async def test_member_logs_compaction_time_and_slow_fdatasync_as_etcd(tmp_path):
    from proto.etcdserverpb import rpc_pb2
    from tests.server.members import run_member
    from trietcd.config import parse
    from trietcd.server import Member

    out = io.StringIO()
    member = Member(parse(["--data-dir", str(tmp_path / "d")], {}), log=Logger(out=out))
    wal = member.disk.wal
    save = wal.save

    def slow_save(*args):
        save(*args)
        wal.last_sync_s = 1.5 + 0.0  # as if that fdatasync took 1.5 s

    async def body(m):
        await m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"v"))
        wal.save = slow_save
        await m.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"w"))
        wal.save = save
        await m.propose("compaction", rpc_pb2.CompactionRequest(revision=2, physical=True))

    await run_member(member, body)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    slow = [r for r in records if r["msg"] == "slow fdatasync"]
    assert [(r["level"], r["took"], r["expected-duration"]) for r in slow][:1] == [("warn", "1.5s", "1s")]
    done = [r for r in records if r["msg"] == "finished scheduled compaction"]
    assert [r["compact-revision"] for r in done] == [2]
    assert re.fullmatch(r"[0-9.]+(ns|µs|ms|s)", done[0]["took"])
