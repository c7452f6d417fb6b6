"""Shared helpers of the durability tests (test_crash.py, test_datadir.py): which implementation to start, a small
grpcio client, etcdctl views of a member's data, and data-dir copies.

Every test here runs against real etcd 3.5.1 and against trietcd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.e2e import servers

grpc = pytest.importorskip("grpc")

from proto.etcdserverpb import rpc_pb2  # noqa: E402


COMMANDS = {"etcd": servers.ETCD_CMD, "trietcd": servers.TRIETCD_CMD}
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALL_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 20.0


def impl_param(*impls: str, id: str | None = None, marks=()):
    """A pytest.param of implementation names."""
    return pytest.param(*impls, marks=marks, id=id or "-".join(impls))


def start(impl: str, run_dir: Path, data_dir: Path, *extra: str, name: str = "node1",
          wait: bool = True) -> servers.Server:
    """Start `impl` on data_dir; its log and working directory are a new directory under run_dir. Returns once the
    client port accepts, or at once if not `wait`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir = run_dir / f"run{len(list(run_dir.glob('run*')))}-{impl}"
    log_dir.mkdir()
    server = servers.start(log_dir, COMMANDS[impl], *extra, name=name, data_dir=data_dir, wait=wait)
    _started.append(server)
    return server


_started: list[servers.Server] = []


@pytest.fixture(autouse=True)
def kill_leftover_servers():
    """Import into a test module: whatever a test started and left running (it failed midway) is killed after it."""
    yield
    while _started:
        _started.pop().stop(signal.SIGKILL)


def copy_data_dir(source: Path, destination: Path) -> Path:
    """A writable copy (the fixtures are read-only files; etcd rewrites db and appends to the WAL)."""
    shutil.copytree(source, destination, copy_function=shutil.copyfile)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- grpcio ------------------------------------------------------------------


class _Stub:
    """Unary methods of one etcdserverpb service (the repository has messages, no generated grpc stubs); an
    attribute per method, named as etcd names it; the message types follow etcd's <Message>Request/Response."""

    def __init__(self, channel, service: str, **methods: str) -> None:
        for method, message in methods.items():
            call = channel.unary_unary(
                f"/etcdserverpb.{service}/{method}",
                request_serializer=getattr(rpc_pb2, f"{message}Request").SerializeToString,
                response_deserializer=getattr(rpc_pb2, f"{message}Response").FromString,
            )
            setattr(self, method, call)


class Client:
    """Unary etcd calls over one grpcio channel; every call has a deadline."""

    def __init__(self, server: servers.Server, *, wait: bool = True) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.endpoint)
        self.kv = _Stub(self.channel, "KV", Range="Range", Put="Put", DeleteRange="DeleteRange", Txn="Txn",
                        Compact="Compaction")
        self.maintenance = _Stub(self.channel, "Maintenance", HashKV="HashKV", Status="Status")
        if wait:
            self.wait_serving()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_serving(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until a linearizable Range is answered (the member has a leader and caught up with its log). With auth
        enabled the answer is an auth error, which etcd gives only after the read index, so that counts too."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kv.Range(rpc_pb2.RangeRequest(key=b"ready?"), timeout=CALL_TIMEOUT_S, wait_for_ready=True)
                return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return
                if self.server.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.server.endpoint} not serving: {exc}\n{self.server.log()[-4000:]}")
                time.sleep(0.1)

    def put(self, key: bytes, value: bytes) -> int:
        return self.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=CALL_TIMEOUT_S).header.revision

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end)
        return self.kv.DeleteRange(request, timeout=CALL_TIMEOUT_S).header.revision

    def range(self, key: bytes, range_end: bytes = b"", revision: int = 0, **fields) -> rpc_pb2.RangeResponse:
        request = rpc_pb2.RangeRequest(key=key, range_end=range_end, revision=revision, **fields)
        return self.kv.Range(request, timeout=CALL_TIMEOUT_S)

    def txn(self, compare: list, success: list, failure: list = ()) -> rpc_pb2.TxnResponse:
        request = rpc_pb2.TxnRequest(compare=compare, success=success, failure=list(failure))
        return self.kv.Txn(request, timeout=CALL_TIMEOUT_S)

    def ranges(self, requests: list[rpc_pb2.RangeRequest]) -> list[rpc_pb2.RangeResponse]:
        """Many Ranges, batched into read-only Txns (etcd's default --max-txn-ops is 128)."""
        out = []
        for start in range(0, len(requests), 100):
            ops = [rpc_pb2.RequestOp(request_range=r) for r in requests[start:start + 100]]
            out.extend(op.response_range for op in self.txn([], ops).responses)
        return out

    def compact(self, revision: int, physical: bool = False) -> int:
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        return self.kv.Compact(request, timeout=CALL_TIMEOUT_S).header.revision

    def hashkv(self, revision: int = 0) -> rpc_pb2.HashKVResponse:
        return self.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=CALL_TIMEOUT_S)

    def revision(self) -> int:
        return self.range(b"revision?").header.revision


def put_op(key: bytes, value: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


def range_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))


def mod_revision_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL,
                           mod_revision=revision)


def value_is(key: bytes, value: bytes) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=value)


def rpc_error(call) -> tuple[str, str]:
    """The (code, message) a call fails with; ("OK", "") if it does not."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    return "OK", ""


# ---- etcdctl views -------------------------------------------------------------


def etcdctl_json(server: servers.Server, *args: str, user: str | None = None):
    auth = (f"--user={user}",) if user else ()
    done = server.etcdctl(*auth, *args, "-w", "json")
    assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


def view(server: servers.Server, revisions: list[int] = (), user: str | None = None) -> dict:
    """What a client sees of a member's data: every key (etcdctl get "" --prefix), the header fields that come from
    the data dir, and `endpoint hashkv` now and at the given older revisions. Equal views mean equal data."""
    got = etcdctl_json(server, "get", "", "--prefix", user=user)
    header = got["header"]
    out = {
        "kvs": got.get("kvs", []), "count": got.get("count", 0), "revision": header["revision"],
        "cluster_id": header["cluster_id"], "member_id": header["member_id"],
        "hashkv": {0: hashkv_text(server, 0, user)},
    }
    for revision in revisions:
        out["hashkv"][revision] = hashkv_text(server, revision, user)
    return out


def hashkv_text(server: servers.Server, revision: int, user: str | None = None) -> str:
    """`endpoint hashkv --rev` as "<hash> compact=<rev>", or etcdctl's error text."""
    auth = (f"--user={user}",) if user else ()
    done = server.etcdctl(*auth, "endpoint", "hashkv", f"--rev={revision}", "-w", "json")
    if done.returncode != 0:  # the last line is "Error: <message>"; the lines before it name the endpoint
        return "error: " + done.stderr.strip().splitlines()[-1].removeprefix("Error: ")
    (entry,) = json.loads(done.stdout)
    return f"{entry['HashKV']['hash']} compact={entry['HashKV']['compact_revision']}"


def stop(server: servers.Server, sig=signal.SIGTERM) -> None:
    code = server.stop(sig)
    if sig == signal.SIGTERM:
        assert code in (0, -signal.SIGTERM), f"exit {code} on SIGTERM:\n{server.log()[-4000:]}"
