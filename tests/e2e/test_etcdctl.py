"""etcdctl 3.5.1 against real etcd 3.5.1 and trietcd, side by side.

One server of each kind per module, both seeded with the same writes through
etcdctl; every test runs the same etcdctl invocations on both and compares
exit code, stdout and stderr after masking only what differs between any two
etcd members (see ../../../shared/conformance/README.md, "Normalization"):
member and cluster IDs (derived from the random ports), ports, raft term and
index, database sizes, the server version in `endpoint status`, durations,
timestamps and Go pointers in etcdctl's log lines. Revisions, counts, keys,
values, error texts and exit codes are compared as printed.

Both sides see the same sequence of writes whatever subset of tests runs, so
revisions stay comparable; read-only scenarios come first so that a write
that diverges does not spoil them.

TRIETCD_E2E_CMD overrides the trietcd command (split like a shell would);
pointing it at the etcd binary is the self-test of this module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


from tests.e2e import servers as _conftest  # noqa: E402

ETCD_BIN = _conftest.ETCD_BIN
TRIETCD_CMD = _conftest.TRIETCD_CMD
ETCD_CMD = _conftest.ETCD_CMD


class Side:
    """One server plus what is needed to normalize what etcdctl prints about it."""

    def __init__(self, server) -> None:
        self.server = server
        self.member_id = 0
        self.cluster_id = 0
        self.client_port = server.client_url.rsplit(":", 1)[1]
        self.peer_port = server.peer_url.rsplit(":", 1)[1]

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        return subprocess.run(
            [str(ETCD_BIN / "etcdctl"), f"--endpoints={self.server.client_url}", *args],
            capture_output=True, env=env, timeout=20,
        )

    def learn_ids(self) -> None:
        done = self.etcdctl("member", "list", "-w", "json")
        if done.returncode == 0:
            reply = json.loads(done.stdout)
            self.member_id = reply["header"]["member_id"]
            self.cluster_id = reply["header"]["cluster_id"]

    def wait_healthy(self, attempts: int = 40) -> None:
        for _ in range(attempts):
            if self.etcdctl("endpoint", "health", "--command-timeout=1s").returncode == 0:
                return
        raise AssertionError(f"not healthy:\n{self.server.log()[-3000:]}")


# ---- normalization -----------------------------------------------------------

_MASKS = [
    # etcdctl's own log lines
    (re.compile(r'"ts":"[^"]*"'), '"ts":"<TS>"'),
    (re.compile(r"0xc[0-9a-f]{6,}"), "<PTR>"),
    # durations
    (re.compile(r"took = \S+"), "took = <DURATION>"),
    (re.compile(r'"took":"[^"]*"'), '"took":"<DURATION>"'),
    (re.compile(r'^"Took" : \S+$', re.M), '"Took" : <DURATION>'),
    # raft term and index, db sizes, server version (json and fields)
    (re.compile(r'"(raft_term|raftTerm)":\d+'), r'"\1":<TERM>'),
    (re.compile(r'"(raftIndex|raftAppliedIndex)":\d+'), r'"\1":<RAFT_INDEX>'),
    (re.compile(r'"(dbSize|dbSizeInUse)":\d+'), r'"\1":<SIZE>'),
    (re.compile(r'"version":"[^"]*"'), '"version":"<VERSION>"'),
    (re.compile(r'^"RaftTerm" : \d+$', re.M), '"RaftTerm" : <TERM>'),
    (re.compile(r'^"(RaftIndex|RaftAppliedIndex)" : \d+$', re.M), r'"\1" : <RAFT_INDEX>'),
    (re.compile(r'^"(DBSize|DBSizeInUse)" : \d+$', re.M), r'"\1" : <SIZE>'),
    (re.compile(r'^"Version" : "[^"]*"$', re.M), '"Version" : "<VERSION>"'),
    # endpoint status, simple: endpoint, id, version, size, leader, learner, term, index, applied, errors
    (re.compile(r"^(\S+, \S+), [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, ", re.M),
     r"\1, <VERSION>, <SIZE>, \2, \3, <TERM>, <RAFT_INDEX>, <RAFT_INDEX>, "),
]
_TABLE_MASKS = {
    "VERSION": "<VERSION>", "DB SIZE": "<SIZE>", "RAFT TERM": "<TERM>", "RAFT INDEX": "<RAFT_INDEX>",
    "RAFT APPLIED INDEX": "<RAFT_INDEX>", "TOOK": "<DURATION>",
}


def normalize_text(text: str, side: Side) -> str:
    for value, placeholder in ((side.member_id, "<MEMBER_ID>"), (side.cluster_id, "<CLUSTER_ID>")):
        if value:
            text = re.sub(rf"\b({value}|{value:x}|{value:016x})\b", placeholder, text)
    text = re.sub(rf"\b{side.client_port}\b", "<CLIENT_PORT>", text)
    text = re.sub(rf"\b{side.peer_port}\b", "<PEER_PORT>", text)
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return _normalize_tables(text)


def _normalize_tables(text: str) -> str:
    """Re-render tables as `| a | b |` rows (widths follow the masked values)
    and mask the volatile columns by header name."""
    out, header = [], None
    for line in text.split("\n"):
        if re.fullmatch(r"\+[-+]+\+", line):
            out.append("+")
            continue
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if header is None:
                header = cells
            else:
                cells = [_TABLE_MASKS.get(h, c) if c else c for h, c in zip(header, cells)]
            out.append("| " + " | ".join(cells) + " |")
            continue
        header = None
        out.append(line)
    return "\n".join(out)


def _protobuf_class(args: tuple[str, ...]):
    from proto.etcdserverpb import rpc_pb2

    commands = {"get": rpc_pb2.RangeResponse, "put": rpc_pb2.PutResponse, "del": rpc_pb2.DeleteRangeResponse,
                "member": rpc_pb2.MemberListResponse}
    return commands.get(args[0])


def normalize_protobuf(data: bytes, args: tuple[str, ...], side: Side) -> str:
    """`-w protobuf` prints the raw response message: decode it and mask the
    same fields as in the other formats."""
    from google.protobuf import text_format

    cls = _protobuf_class(args)
    if cls is None or not data:
        return repr(data)
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - the failure is the observation
        return f"undecodable {cls.__name__}: {exc}: {data!r}"
    ids = {side.member_id: 1, side.cluster_id: 2}
    header = msg.header
    header.cluster_id = ids.get(header.cluster_id, header.cluster_id)
    header.member_id = ids.get(header.member_id, header.member_id)
    header.raft_term = 0
    for member in getattr(msg, "members", ()):
        member.ID = ids.get(member.ID, member.ID)
    return normalize_text(text_format.MessageToString(msg, as_utf8=True), side)


def transcript(side: Side, args: tuple[str, ...]) -> str:
    done = side.etcdctl(*args)
    if "protobuf" in args and done.returncode == 0:
        stdout = normalize_protobuf(done.stdout, args, side)
    else:
        stdout = normalize_text(done.stdout.decode("utf-8", "replace"), side)
    stderr = normalize_text(done.stderr.decode("utf-8", "replace"), side)
    return f"$ etcdctl {shlex.join(args)}\nexit {done.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"


# ---- the two servers ---------------------------------------------------------

SEED = [
    ("put", "a", "1"), ("put", "b", "2"), ("put", "c", "3"),
    ("put", "foo", "bar"), ("put", "foo/1", "x"), ("put", "foo/2", "y"), ("put", "fop", "z"),
    ("put", "a", "1b"), ("put", "sp", "hello world"), ("put", "\u00fc", "\u00e4"), ("put", "b", "0"),
]


def _start(base: Path, kind: str) -> Side:
    directory = base / kind
    directory.mkdir()
    command = ETCD_CMD if kind == "etcd" else TRIETCD_CMD
    return Side(_conftest.start(directory, command))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("etcdctl")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_start, base, kind) for kind in ("etcd", "trietcd")]
        sides, errors = [], []
        for future in futures:
            try:
                sides.append(future.result())
            except Exception as exc:  # noqa: BLE001 - stop the other one, then fail
                errors.append(exc)
    try:
        if errors:
            raise errors[0]
        etcd, trietcd = sides
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Side.wait_healthy, sides))
            list(pool.map(Side.learn_ids, sides))
            for args in SEED:
                list(pool.map(lambda s: s.etcdctl(*args), sides))
        yield etcd, trietcd
    finally:
        for side in sides:
            side.server.stop(signal.SIGKILL)


def compare(pair, *commands: tuple[str, ...]) -> None:
    etcd, trietcd = pair
    with ThreadPoolExecutor(2) as pool:
        for args in commands:
            expected, got = pool.map(lambda s: transcript(s, args), (etcd, trietcd))
            assert got == expected, f"etcd:\n{expected}\n\ntrietcd:\n{got}"


# ---- scenarios ---------------------------------------------------------------

READS = {
    "get": [("get", "a")],
    "get-json": [("get", "a", "-w", "json")],
    "get-fields": [("get", "a", "-w", "fields")],
    "get-protobuf": [("get", "a", "-w", "protobuf")],
    "get-table-unsupported": [("get", "a", "-w", "table")],
    "get-utf8": [("get", "\u00fc"), ("get", "\u00fc", "-w", "json")],
    "get-hex": [("get", "sp", "--hex"), ("get", "sp", "--hex", "-w", "fields")],
    "get-missing": [("get", "nope"), ("get", "nope", "-w", "json"), ("get", "nope", "-w", "fields")],
    "get-prefix": [("get", "--prefix", "foo")],
    "get-prefix-json": [("get", "--prefix", "foo", "-w", "json")],
    "get-from-key": [("get", "--from-key", "fo")],
    "get-from-key-empty": [("get", "--from-key", "", "--keys-only")],
    "get-range": [("get", "a", "c")],
    "get-range-json": [("get", "a", "foo/2", "-w", "json")],
    "get-keys-only": [("get", "--prefix", "", "--keys-only"), ("get", "--prefix", "f", "--keys-only", "-w", "json")],
    "get-print-value-only": [("get", "--prefix", "foo", "--print-value-only")],
    "get-limit": [("get", "--prefix", "", "--limit", "2"), ("get", "--prefix", "", "--limit", "2", "-w", "json")],
    "get-limit-fields": [("get", "--prefix", "", "--limit", "3", "-w", "fields")],
    "get-count-only": [("get", "--prefix", "", "--count-only", "-w", "fields"), ("get", "--prefix", "", "--count-only")],
    "get-sort-modify-descend": [("get", "--prefix", "", "--sort-by=MODIFY", "--order=DESCEND")],
    "get-sort-value": [("get", "--prefix", "", "--sort-by=VALUE")],
    "get-sort-create-json": [("get", "--prefix", "", "--sort-by=CREATE", "--order=DESCEND", "-w", "json")],
    "get-sort-version": [("get", "--prefix", "", "--sort-by=VERSION", "--order=DESCEND", "--keys-only")],
    "get-order-descend": [("get", "--prefix", "", "--order=DESCEND")],
    "get-sort-limit": [("get", "--prefix", "", "--sort-by=KEY", "--order=DESCEND", "--limit", "3")],
    "get-sort-bad": [("get", "a", "--sort-by=SIZE"), ("get", "a", "--order=UP")],
    "get-rev": [("get", "a", "--rev", "2"), ("get", "a", "--rev", "2", "-w", "json")],
    "get-rev-prefix": [("get", "--prefix", "", "--rev", "5")],
    "get-rev-current": [("get", "a", "--rev", "-1")],
    "get-serializable": [("get", "a", "--consistency=s", "-w", "json")],
    "get-future-rev": [("get", "a", "--rev", "1000")],
    "get-empty-key": [("get", "")],
    "get-no-args": [("get",)],
    "get-too-many-args": [("get", "a", "b", "c")],
    "endpoint-status": [("endpoint", "status")],
    "endpoint-status-json": [("endpoint", "status", "-w", "json")],
    "endpoint-status-fields": [("endpoint", "status", "-w", "fields")],
    "endpoint-status-table": [("endpoint", "status", "-w", "table")],
    "endpoint-status-protobuf": [("endpoint", "status", "-w", "protobuf")],
    "endpoint-health": [("endpoint", "health")],
    "endpoint-health-json": [("endpoint", "health", "-w", "json")],
    "endpoint-health-fields": [("endpoint", "health", "-w", "fields")],
    "endpoint-health-table": [("endpoint", "health", "-w", "table")],
    "member-list": [("member", "list")],
    "member-list-json": [("member", "list", "-w", "json")],
    "member-list-fields": [("member", "list", "-w", "fields")],
    "member-list-table": [("member", "list", "-w", "table")],
    "member-list-protobuf": [("member", "list", "-w", "protobuf")],
    "version": [("version",)],
    "unknown-command": [("frob",)],
    "unknown-flag": [("get", "a", "--frob")],
}

WRITES = {
    "put": [("put", "w/put", "v"), ("get", "w/put", "-w", "json")],
    "put-json": [("put", "w/json", "v", "-w", "json"), ("put", "w/json", "v2", "-w", "fields")],
    "put-protobuf": [("put", "w/pb", "v", "-w", "protobuf")],
    "put-prev-kv": [("put", "w/prev", "v1"), ("put", "w/prev", "v2", "--prev-kv"),
                    ("put", "w/prev", "v3", "--prev-kv", "-w", "json")],
    "put-prev-kv-new-key": [("put", "w/prev-new", "v", "--prev-kv"), ("put", "w/prev-new2", "v", "--prev-kv", "-w", "json")],
    "put-ignore-value": [("put", "w/iv", "v"), ("put", "w/iv", "--ignore-value"), ("get", "w/iv", "-w", "json"),
                         ("put", "w/iv-missing", "--ignore-value")],
    "put-ignore-value-with-value": [("put", "w/iv2", "v", "--ignore-value")],
    "put-missing-lease": [("put", "w/lease", "v", "--lease=123")],
    "put-empty-key": [("put", "", "x")],
    "put-no-value": [("put", "w/novalue")],
    "put-extra-arg": [("put", "w/extra", "v", "extra"), ("get", "w/extra")],
    "put-empty-value": [("put", "w/empty", ""), ("get", "w/empty", "-w", "json")],
    "del": [("put", "d/1", "v"), ("del", "d/1"), ("get", "d/1", "-w", "json")],
    "del-missing": [("del", "d/none"), ("del", "d/none", "-w", "json")],
    "del-prefix": [("put", "dp/1", "a"), ("put", "dp/2", "b"), ("put", "dpx", "c"), ("del", "--prefix", "dp/"),
                   ("get", "--prefix", "dp", "--keys-only")],
    "del-prev-kv": [("put", "dk/1", "a"), ("put", "dk/2", "b"), ("del", "--prefix", "dk/", "--prev-kv"),
                    ("put", "dk/3", "c"), ("del", "dk/3", "--prev-kv", "-w", "json")],
    "del-range": [("put", "dr/a", "1"), ("put", "dr/b", "2"), ("put", "dr/c", "3"), ("del", "dr/a", "dr/c"),
                  ("get", "--prefix", "dr/", "--keys-only")],
    "del-from-key": [("put", "zz/1", "1"), ("put", "zz/2", "2"), ("del", "--from-key", "zz/", "-w", "fields"),
                     ("get", "--from-key", "zz", "--keys-only")],
    "del-protobuf": [("put", "dpb", "1"), ("del", "dpb", "-w", "protobuf")],
    "del-empty-key": [("del", "")],
    "put-large-value": [("put", "w/large", "x" * 100_000), ("get", "w/large", "--print-value-only")],
    "get-after-writes": [("get", "--prefix", "", "--keys-only", "-w", "json"), ("get", "--prefix", "w/", "--rev", "13")],
}


@pytest.mark.parametrize("name", list(READS))
def test_read(pair, name):
    compare(pair, *READS[name])


@pytest.mark.parametrize("name", list(WRITES))
def test_write(pair, name):
    compare(pair, *WRITES[name])


def test_normalization_keeps_what_matters():
    side = Side.__new__(Side)
    side.member_id, side.cluster_id, side.client_port, side.peer_port = 0xBDAE9BBC11DD390D, 15118495548433857066, "40001", "40002"
    text = ('{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,'
            '"revision":3,"raft_term":2},"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":2,"version":1}]}')
    assert normalize_text(text, side) == (
        '{"header":{"cluster_id":<CLUSTER_ID>,"member_id":<MEMBER_ID>,'
        '"revision":3,"raft_term":<TERM>},"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":2,"version":1}]}')
    line = "http://127.0.0.1:40001, bdae9bbc11dd390d, 3.5.1, 20 kB, true, false, 2, 6, 6, \n"
    assert normalize_text(line, side) == (
        "http://127.0.0.1:<CLIENT_PORT>, <MEMBER_ID>, <VERSION>, <SIZE>, true, false, <TERM>, <RAFT_INDEX>, "
        "<RAFT_INDEX>, \n")
    # another member's ID, a revision or an error text is not masked
    assert normalize_text('"member_id":123,"revision":7 Error: x', side) == '"member_id":123,"revision":7 Error: x'
