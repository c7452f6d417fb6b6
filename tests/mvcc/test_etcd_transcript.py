"""The random KV workload of `workload.py`, replayed against trietcd, must give
byte for byte the responses a real etcd 3.5.1 gave.

The digests were recorded by running `python -m tests.mvcc.etcd_oracle --seed S
--ops N [--max-txn-ops M]` against etcd 3.5.1, which compares every response
(and every error code and text) with trietcd's and prints the digest of the
sequence. When this test fails, run the oracle with the same arguments to see
the first differing request.
"""

import hashlib

import pytest

from tests.mvcc.workload import Workload, apply_locally, result_bytes

RECORDED = [
    # (seed, ops, max_txn_ops, sha256 of the responses, final revision)
    (11, 1200, 8, "1cbf9c15b2362f036deb036c59f3be19c9c879fcc66434e79e79f0e637f1a4ad", 480),
    (12, 1200, 8, "16a6bf85152ee7d6217ee5a26a0f2c6d25741e2f85038feca02123970b1e8c06", 521),
    (13, 1200, 8, "ffefc36387ddafd0141f46cd4e2dd9480e9069dcf8d56ff9c45169fde5f11caf", 492),
    (21, 1500, 3, "650bb05f2ed6ef409c4ad535161e76ef8ecea896e39fbcbefe614aa5d3244541", 579),
]


@pytest.mark.parametrize("seed, ops, max_txn_ops, digest, final_rev", RECORDED)
def test_workload_matches_etcd(seed, ops, max_txn_ops, digest, final_rev):
    print(f"seed={seed}")
    work = Workload(seed, max_txn_ops=max_txn_ops)
    h = hashlib.sha256()
    for _ in range(ops):
        req = work.next_request()
        got = apply_locally(work, req)
        work.observe(req, got)
        h.update(result_bytes(got))
    assert work.rev == final_rev
    assert h.hexdigest() == digest
