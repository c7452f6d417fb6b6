"""The space quota, as an operator meets it, with real etcdctl 3.5.1 against a trietcd process and an etcd 3.5.1
process: 1 MiB puts until the 16 MiB quota refuses one, `endpoint status -w table`, `alarm list`, `defrag`,
`alarm disarm`, and writes work again. The outputs must agree but for IDs, ports, sizes and raft indexes (how
many 1 MiB puts fit differs from run to run on etcd itself)."""

from __future__ import annotations

import json
import random
import re

from tests.e2e.servers import ETCD_CMD, TRIETCD_CMD, start

QUOTA_BYTES = 16 * 1024 * 1024
VALUE = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=1 << 20))
PUTS_MAX = 40


def table_cells(text: str) -> list[list[str]]:
    """The cells of etcdctl's table, row by row, the volatile ones replaced."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    header = rows[0]
    out = [header]
    for row in rows[1:]:
        cells = dict(zip(header, row))
        for volatile in ("ENDPOINT", "ID", "DB SIZE", "RAFT INDEX", "RAFT APPLIED INDEX"):
            if cells[volatile]:
                cells[volatile] = "<X>"
        cells["ERRORS"] = re.sub(r"memberID:\d+", "memberID:<ID>", cells["ERRORS"])
        out.append([cells[h] for h in header])
    return out


def scenario(server) -> list:
    steps = []
    puts = 0
    while True:
        r = server.etcdctl("put", "key", input=VALUE)
        if r.returncode != 0:
            break
        puts += 1
        assert puts < PUTS_MAX, "the quota never refused a put"
    steps.append(("refused put", r.returncode, r.stderr.splitlines()[-1]))
    r = server.etcdctl("endpoint", "status", "-w", "table")
    steps.append(("status", r.returncode, table_cells(r.stdout)))
    member_id = str(json.loads(server.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]["header"]
                    ["member_id"])
    for argv in (["alarm", "list"], ["defrag"], ["alarm", "disarm"], ["alarm", "list"], ["put", "key", "small"],
                 ["get", "key", "--print-value-only"]):
        r = server.etcdctl(*argv)
        out = r.stdout.replace(member_id, "<ID>").replace(server.client_url, "<URL>")
        steps.append((" ".join(argv), r.returncode, out, r.stderr))
    r = server.etcdctl("endpoint", "status", "-w", "table")
    steps.append(("status after", r.returncode, table_cells(r.stdout)))
    return puts, steps


def test_quota_alarm_defrag_disarm_as_etcd(tmp_path):
    results = {}
    for kind, command in (("etcd", ETCD_CMD), ("trietcd", TRIETCD_CMD)):
        (tmp_path / kind).mkdir()
        server = start(tmp_path / kind, command, f"--quota-backend-bytes={QUOTA_BYTES}")
        try:
            results[kind] = scenario(server)
        finally:
            server.stop()
    (etcd_puts, etcd_steps), (puts, steps) = results["etcd"], results["trietcd"]
    assert 8 <= puts <= 16 and 8 <= etcd_puts <= 16, (puts, etcd_puts)
    assert steps == etcd_steps
    assert steps[0] == ("refused put", 1, "Error: etcdserver: mvcc: database space exceeded")
    assert steps[2][2] == "memberID:<ID> alarm:NOSPACE \n"
    assert steps[3][2] == "Finished defragmenting etcd member[<URL>]\n"
    assert steps[-2][2] == "small\n"
