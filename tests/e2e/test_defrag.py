"""Defrag end to end: Defragment on a trietcd process while clients write (every write acknowledged before,
during and after it is served afterwards and after a restart, and the db shrinks; etcd 3.5.1 blocks writes for
the whole defrag, trietcd copies while it serves), a member SIGKILLed in the middle of one, and etcd 3.5.1 on a
data dir `trietcdutl defrag` rewrote."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start

grpc = pytest.importorskip("grpc")

from proto.etcdserverpb import rpc_pb2  # noqa: E402

CALL_TIMEOUT_S = 10


class Client:
    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 64 << 20)])

    def call(self, service: str, method: str, request, response_type):
        f = self.channel.unary_unary(f"/etcdserverpb.{service}/{method}",
                                     request_serializer=type(request).SerializeToString,
                                     response_deserializer=response_type.FromString)
        return f(request, timeout=CALL_TIMEOUT_S)

    def put(self, key: bytes, value: bytes) -> int:
        return self.call("KV", "Put", rpc_pb2.PutRequest(key=key, value=value), rpc_pb2.PutResponse).header.revision

    def close(self) -> None:
        self.channel.close()


def db_size(server) -> int:
    return json.loads(server.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]["dbSize"]


def test_writes_go_on_during_a_defrag_and_none_is_lost(tmp_path):
    server = start(tmp_path, TRIETCD_CMD)
    try:
        client = Client(server.endpoint)
        big = b"x" * 50_000
        for i in range(400):
            client.put(b"big/%03d" % (i % 40), big)  # 360 old revisions to compact away
        rev = client.put(b"mark", b"0")
        client.call("KV", "Compact", rpc_pb2.CompactionRequest(revision=rev, physical=True),
                    rpc_pb2.CompactionResponse)
        before = db_size(server)

        acked: dict[bytes, bytes] = {}
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            c = Client(server.endpoint)
            try:
                i = 0
                while not stop.is_set():
                    key, value = b"w%d/%05d" % (n, i), b"v%d" % i
                    c.put(key, value)
                    acked[key] = value
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                c.close()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        while len(acked) < 30 and not errors:  # the writers are under way
            stop.wait(0.01)
        during = len(acked)
        resp = client.call("Maintenance", "Defragment", rpc_pb2.DefragmentRequest(), rpc_pb2.DefragmentResponse)
        during = len(acked) - during
        stop.set()
        for t in threads:
            t.join()
        print(f"puts acknowledged while the defrag ran: {during}")
        assert resp == rpc_pb2.DefragmentResponse()
        assert not errors, errors
        assert acked
        after = db_size(server)
        assert after < before // 2, (before, after)

        def served() -> dict:
            r = client.call("KV", "Range", rpc_pb2.RangeRequest(key=b"w", range_end=b"x"), rpc_pb2.RangeResponse)
            return {kv.key: kv.value for kv in r.kvs}

        assert served() == acked
        client.close()
        server.stop()
        server = start(tmp_path, TRIETCD_CMD, data_dir=server.data_dir)
        client = Client(server.endpoint)
        assert served() == acked
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("kill_after_s", [0.01, 0.03, 0.06])
def test_a_member_killed_during_a_defrag_restarts_with_every_acknowledged_write(tmp_path, kill_after_s):
    big_requests = ("--max-request-bytes", str(16 << 20), "--max-txn-ops", "1000")
    server = start(tmp_path, TRIETCD_CMD, *big_requests)
    try:
        client = Client(server.endpoint)
        acked = {}
        for round_ in range(10):  # 10 versions of 300 keys of 20 kB, in one txn per version
            txn = rpc_pb2.TxnRequest()
            for i in range(300):
                key, value = b"k/%03d" % i, b"y" * 20_000 + b"%d" % round_
                txn.success.add().request_put.CopyFrom(rpc_pb2.PutRequest(key=key, value=value))
                acked[key] = value
            rev = client.call("KV", "Txn", txn, rpc_pb2.TxnResponse).header.revision
        client.call("KV", "Compact", rpc_pb2.CompactionRequest(revision=rev, physical=True),
                    rpc_pb2.CompactionResponse)

        def defrag() -> None:
            try:
                Client(server.endpoint).call("Maintenance", "Defragment", rpc_pb2.DefragmentRequest(),
                                             rpc_pb2.DefragmentResponse)
            except grpc.RpcError:
                pass  # the member is killed under it

        t = threading.Thread(target=defrag)
        t.start()
        threading.Event().wait(kill_after_s)
        server.stop(signal.SIGKILL)
        t.join()
        client.close()
        log = server.log()
        print("killed", "before" if "defragmenting" not in log else
              "after" if "finished defragmenting directory" in log else "during", "the defrag")
        server = start(tmp_path, TRIETCD_CMD, *big_requests, data_dir=server.data_dir)
        client = Client(server.endpoint)
        r = client.call("KV", "Range", rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), rpc_pb2.RangeResponse)
        assert {kv.key: kv.value for kv in r.kvs} == acked
        snap_dir = server.data_dir / "member" / "snap"
        assert [p.name for p in snap_dir.iterdir() if ".tmp." in p.name] == []
        client.put(b"after", b"1")
        client.close()
    finally:
        server.stop()


def test_etcd_serves_a_data_dir_trietcdutl_defragmented(tmp_path):
    (tmp_path / "etcd").mkdir()
    server = start(tmp_path / "etcd", ETCD_CMD)
    try:
        for i in range(300):
            assert server.etcdctl("put", f"k{i % 30}", "v" * 2000 + str(i)).returncode == 0
        assert server.etcdctl("compaction", "300").returncode == 0
        want = server.etcdctl("get", "", "--prefix", "-w", "json").stdout
        hashkv = server.etcdctl("endpoint", "hashkv", "-w", "json").stdout
    finally:
        server.stop()
    db = server.data_dir / "member" / "snap" / "db"
    before = db.stat().st_size
    r = subprocess.run([sys.executable, "-m", "trietcd.tools.etcdutl", "defrag", "--data-dir", str(server.data_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert db.stat().st_size < before
    server = start(tmp_path / "etcd", ETCD_CMD, data_dir=server.data_dir)
    try:
        got = server.etcdctl("get", "", "--prefix", "-w", "json").stdout
        assert json.loads(got)["kvs"] == json.loads(want)["kvs"]
        got_hash = json.loads(server.etcdctl("endpoint", "hashkv", "-w", "json").stdout)[0]["HashKV"]
        assert got_hash["hash"] == json.loads(hashkv)[0]["HashKV"]["hash"]
    finally:
        server.stop()
