"""Lease TTLs across a restart, trietcd and etcd 3.5.1 side by side (the same etcdctl steps on both).

etcd 3.5.1 does not keep a lease's expiry: after a restart every lease counts its full TTL again from the
moment the new leader applies its first entry, plus an election timeout. Remaining TTLs are read as etcdctl
prints them, in whole seconds, so the steps leave a second of slack around each reading."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

from tests.e2e import servers

TTL_S = 10
_TTL_LINE = re.compile(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\), attached keys\(\[(.*)\]\)")


def timetolive(server, lease: str):
    out = server.etcdctl("lease", "timetolive", lease, "--keys").stdout
    m = _TTL_LINE.search(out)
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else out.strip().split(" ", 2)[-1]


def scenario(tmp_path, command):
    server = servers.start(tmp_path, command)
    try:
        lease = server.etcdctl("lease", "grant", str(TTL_S)).stdout.split()[1]
        assert server.etcdctl("put", "k", "v", f"--lease={lease}").returncode == 0
        time.sleep(4)
        before = timetolive(server, lease)
        server.stop()
        server = servers.start(tmp_path, command, data_dir=server.data_dir)
        after = timetolive(server, lease)
        time.sleep(TTL_S + 1 + 1.5)  # the full TTL, the election timeout, the revoke loop's period and slack
        gone = timetolive(server, lease), server.etcdctl("get", "k").stdout
        return before, after, gone
    finally:
        server.stop()


def test_restart_gives_leases_their_full_ttl_again_like_etcd(tmp_path):
    (tmp_path / "etcd").mkdir()
    (tmp_path / "trietcd").mkdir()
    with ThreadPoolExecutor(2) as pool:
        etcd = pool.submit(scenario, tmp_path / "etcd", servers.ETCD_CMD)
        ours = pool.submit(scenario, tmp_path / "trietcd", servers.TRIETCD_CMD)
        results = {"etcd": etcd.result(), "trietcd": ours.result()}
    for name, (before, after, gone) in results.items():
        assert before[0] == TTL_S and before[2] == "k" and TTL_S - 6 <= before[1] <= TTL_S - 4, name
        # Counted afresh: the full TTL plus an election timeout (1 s), less the time to answer.
        assert after[0] == TTL_S and after[2] == "k" and TTL_S - 1 <= after[1] <= TTL_S, (name, after)
        assert gone == ("already expired", ""), (name, gone)
    assert results["etcd"][2] == results["trietcd"][2]
