"""The lessor core, with times passed in (etcd 3.5.1 `server/lease/lessor.go` semantics)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from trietcd.backend import LEASE, Backend
from trietcd.lease import (
    FOREVER_TTL_S,
    MAX_LEASE_TTL_S,
    LeaseExistsError,
    LeaseExpiredError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    Lessor,
    NotPrimaryError,
    decode_lease_row,
    encode_lease_row,
    min_lease_ttl_s,
)
from trietcd.mvcc import KVStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def make(*, backend=None, store=None, checkpointing=False, **kw) -> Lessor:
    if store is None:
        store = KVStore(backend=backend) if backend is not None else KVStore()
    return Lessor(min_ttl_s=2, backend=backend, store=store, checkpointing=checkpointing, **kw)


def test_min_ttl_is_one_and_a_half_election_timeouts_rounded_up():
    assert min_lease_ttl_s(10, 100) == 2  # 1.5 s -> 2
    assert min_lease_ttl_s(10, 200) == 3
    assert min_lease_ttl_s(5, 1000) == 7  # (3*5)//2 = 7 ticks of 1 s
    assert min_lease_ttl_s(20, 100) == 3


def test_grant_clamps_to_min_ttl_and_refuses_as_etcd():
    le = make()
    assert le.grant(1, 1, 0.0).ttl == 2
    assert le.grant(2, -5, 0.0).ttl == 2
    assert le.grant(3, MAX_LEASE_TTL_S, 0.0).ttl == MAX_LEASE_TTL_S
    with pytest.raises(LeaseTTLTooLargeError):
        le.grant(4, MAX_LEASE_TTL_S + 1, 0.0)
    with pytest.raises(LeaseExistsError):
        le.grant(1, 10, 0.0)
    with pytest.raises(LeaseNotFoundError):
        le.grant(0, 10, 0.0)  # the ID is chosen before the log; 0 here is refused
    assert sorted(le.leases) == [1, 2, 3]


def test_follower_leases_never_expire_and_report_forever():
    le = make()
    le.grant(7, 10, 0.0)
    assert le.time_to_live(7, 1e6) == (FOREVER_TTL_S, 10, [])
    assert le.expired(1e6, 100) == []
    with pytest.raises(NotPrimaryError):
        le.renew(7, 0.0)


def test_primary_grant_counts_from_now_and_remaining_truncates():
    le = make()
    le.promote(0.0, 1.0)
    le.grant(7, 10, 5.0)
    assert le.time_to_live(7, 5.0)[0] == 10
    assert le.time_to_live(7, 5.5)[0] == 9  # 9.5 s left: etcd's int64(Seconds()) truncates
    assert le.time_to_live(7, 15.4)[0] == 0  # -0.4 s
    assert le.time_to_live(7, 16.5)[0] == -1
    with pytest.raises(LeaseNotFoundError):
        le.time_to_live(8, 0.0)


def test_expiry_found_with_heap_in_order_and_limited():
    le = make()
    le.promote(0.0, 0.0)
    for i, ttl in enumerate([30, 10, 20, 10, 40], start=1):
        le.grant(i, ttl, 0.0)
    assert le.next_expiry() == 10.0
    assert le.expired(9.99, 10) == []
    assert le.expired(10.0, 1) == [2]
    assert le.expired(10.0, 10) == [4]
    # Found leases are looked at again only after the retry interval (their revoke may be in flight).
    assert le.expired(12.9, 10) == []
    assert le.expired(13.0, 10) == [2, 4]
    assert le.expired(15.9, 10) == []
    assert le.expired(16.0, 10) == [2, 4]
    le.revoke(2)
    assert le.expired(18.9, 10) == []
    assert le.expired(19.0, 10) == [4]
    assert le.expired(20.0, 10) == [3]
    assert le.expired(22.5, 10) == [4]


def test_renew_moves_expiry_and_stale_heap_entries_are_skipped():
    le = make()
    le.promote(0.0, 0.0)
    le.grant(1, 10, 0.0)
    for t in range(1, 50):
        assert le.renew(1, float(t)) == 10
    assert le.expired(58.9, 10) == []
    assert le.time_to_live(1, 49.0)[0] == 10
    assert le.expired(59.0, 10) == [1]
    assert len(le._expiry_heap) < 2 * 1 + 64 + 1


def test_renew_of_expired_unrevoked_lease_waits_and_unknown_is_not_found():
    le = make()
    le.promote(0.0, 0.0)
    le.grant(1, 10, 0.0)
    with pytest.raises(LeaseExpiredError):
        le.renew(1, 10.0)
    le.revoke(1)
    with pytest.raises(LeaseNotFoundError):
        le.renew(1, 10.0)


def test_keys_follow_mvcc_changes():
    store = KVStore()
    le = make(store=store)
    le.grant(1, 100, 0.0)
    le.grant(2, 100, 0.0)
    store.put(b"a", b"1", 1)
    store.put(b"b", b"1", 1)
    store.put(b"c", b"1", 0)
    assert le.time_to_live(1, 0.0)[2] == [b"a", b"b"]
    store.put(b"a", b"2", 2)  # moved to lease 2
    assert le.lease_of(b"a") == 2
    assert le.time_to_live(1, 0.0)[2] == [b"b"]
    assert le.time_to_live(2, 0.0)[2] == [b"a"]
    le.check()
    store.put(b"b", b"2", 0)  # no lease any more
    assert le.time_to_live(1, 0.0)[2] == []
    store.delete_range(b"a")
    assert le.time_to_live(2, 0.0)[2] == []
    assert le.lease_of(b"a") == 0
    # A put and a delete of one key in one txn: attached, then detached.
    with store.write() as txn:
        txn.put(b"d", b"x", 1)
        txn.delete_range(b"d")
    assert le.time_to_live(1, 0.0)[2] == []


def test_revoke_deletes_sorted_keys_and_row_in_one_revision():
    backend = Backend.open_memory()
    store = KVStore(backend=backend)
    le = make(backend=backend, store=store)
    le.grant(0x4C35A20BE3E47D06, 600, 0.0)
    lid = 0x4C35A20BE3E47D06
    for k in (b"z", b"m", b"a"):
        store.put(k, b"v", lid)
    store.put(b"other", b"v")
    seen = []
    store.commit_listeners.append(lambda rev, changes: seen.append((rev, [(c.kv.key, c.deleted) for c in changes])))
    rev = store.current_revision
    assert le.revoke(lid) == [b"a", b"m", b"z"]
    assert seen == [(rev + 1, [(b"a", True), (b"m", True), (b"z", True)])]
    assert list(backend.items(LEASE)) == []
    assert store.range(b"a", b"\xff").kvs[0].key == b"other"
    with pytest.raises(LeaseNotFoundError):
        le.revoke(lid)


def test_revoke_without_keys_changes_no_revision():
    store = KVStore()
    le = make(store=store)
    le.grant(5, 10, 0.0)
    rev = store.current_revision
    assert le.revoke(5) == []
    assert store.current_revision == rev


def test_lease_rows_are_byte_exact():
    # backend-schema.md §4's fixture row: ID 5491473492599930118 (0x4c35a20be3e47d06), TTL 600.
    key, value = encode_lease_row(0x4C35A20BE3E47D06, 600)
    assert key == bytes.fromhex("4c35a20be3e47d06")
    assert value == bytes.fromhex("0886fa919fbec1e89a4c10d804")
    backend = Backend.open_memory()
    le = make(backend=backend)
    le.grant(0x4C35A20BE3E47D06, 600, 0.0)
    le.grant(9, 1, 0.0)  # stored after clamping
    assert dict(backend.items(LEASE)) == {key: value, bytes(7) + b"\x09": bytes.fromhex("08091002")}
    # A negative ID (a client may choose one) is a big-endian int64 key.
    le.grant(-2, 5, 0.0)
    assert backend.get(LEASE, bytes.fromhex("fffffffffffffffe")) == encode_lease_row(-2, 5)[1]


def test_recover_from_etcd_fixture():
    db = FIXTURES / "etcd-3.5.1" / "datadir" / "member" / "snap" / "db"
    backend = Backend.open_memory(db.read_bytes())
    rows = [decode_lease_row(v) for _, v in backend.items(LEASE)]
    store = KVStore.open(backend)
    le = Lessor(min_ttl_s=2, backend=backend, store=store)
    got = le.recover()
    assert got.leases == len(rows)
    attached = {k: lid for lid, lease in le.leases.items() for k in lease.keys}
    live = {kv.key: kv.lease for kv in store.range(b"\x00", b"\x00").kvs if kv.lease}
    assert got.keys + got.orphan_keys == len(live)
    assert attached == {k: v for k, v in live.items() if v in le.leases}
    for row in rows:
        assert le.leases[row.ID].ttl == max(row.TTL, 2)
        assert le.leases[row.ID].expiry is None


def test_recover_reads_remaining_ttl_and_clamps():
    backend = Backend.open_memory()
    k, v = encode_lease_row(3, 1, 0)
    backend.put(LEASE, k, v)
    k, v = encode_lease_row(4, 900, 120)
    backend.put(LEASE, k, v)
    store = KVStore(backend=backend)
    store.put(b"x", b"1", 4)
    store.put(b"y", b"1", 99)  # a lease that does not exist: left unattached
    le = Lessor(min_ttl_s=2, backend=backend, store=store)
    got = le.recover()
    assert (got.leases, got.keys, got.orphan_keys) == (2, 1, 1)
    assert le.leases[3].ttl == 2
    assert le.leases[4].remaining_ttl == 120
    le.promote(0.0, 1.0)
    assert le.time_to_live(4, 0.0) == (121, 900, [b"x"])  # the checkpointed remainder counts
    le.check()


def test_promote_extends_and_demote_makes_forever():
    le = make()
    le.grant(1, 10, 0.0)
    le.grant(2, 20, 0.0)
    le.promote(100.0, 1.0)
    assert le.time_to_live(1, 100.0)[0] == 11
    assert le.time_to_live(2, 100.0)[0] == 21
    le.demote()
    assert le.time_to_live(1, 500.0)[0] == FOREVER_TTL_S
    assert le.expired(500.0, 10) == []
    assert le.demotions == 1
    le.promote(600.0, 1.0)  # the full TTL again (no checkpoint): etcd 3.5.1's semantics
    assert le.time_to_live(1, 600.0)[0] == 11


def test_promote_spreads_piled_up_expiries():
    le = make()
    n = 3000
    for i in range(1, n + 1):
        le.grant(i, 10, 0.0)
    le.promote(0.0, 1.0)
    expiries = sorted(lease.expiry for lease in le.leases.values())
    assert expiries[0] == 11.0
    # At most 3/4 of the revoke rate (750) expire within any one second, instead of all 3000 at once.
    per_second = {}
    for e in expiries:
        per_second[int(e)] = per_second.get(int(e), 0) + 1
    assert max(per_second.values()) <= 750
    assert expiries[-1] == pytest.approx(11.0 + n / 750, abs=0.01)
    le.check()


def test_promote_below_revoke_rate_does_not_spread():
    le = make()
    for i in range(1, 999):
        le.grant(i, 10, 0.0)
    le.promote(0.0, 1.0)
    assert {lease.expiry for lease in le.leases.values()} == {11.0}


def test_leases_sorted_by_expiry():
    le = make()
    le.promote(0.0, 0.0)
    le.grant(5, 300, 0.0)
    le.grant(6, 100, 0.0)
    le.grant(7, 200, 0.0)
    assert [lease.id for lease in le.sorted_leases(0.0)] == [6, 7, 5]
    le.renew(6, 99.0)
    assert [lease.id for lease in le.sorted_leases(99.0)] == [6, 7, 5]
    le.renew(6, 150.0)
    assert [lease.id for lease in le.sorted_leases(150.0)] == [7, 6, 5]


def test_checkpoints_due_every_interval_for_long_leases():
    le = make(checkpointing=True)
    le.promote(0.0, 0.0)
    le.grant(1, 900, 0.0)
    le.grant(2, 600, 0.0)
    le.grant(3, 100, 0.0)  # not longer than the interval: never checkpointed
    assert le.due_checkpoints(299.0) == []
    assert le.due_checkpoints(300.0) == [(1, 600), (2, 300)]
    assert le.due_checkpoints(300.0) == []
    le.checkpoint(1, 600, 300.0)
    le.checkpoint(2, 300, 300.0)  # 300 is not above the interval: not scheduled again
    assert le.leases[1].remaining_ttl == 600
    assert le.due_checkpoints(600.0) == [(1, 300)]
    # A renewal first resets the checkpointed remainder through raft.
    assert le.needs_checkpoint_reset(1)
    le.checkpoint(1, 0, 601.0)
    assert not le.needs_checkpoint_reset(1)
    assert le.renew(1, 601.0) == 900
    assert le.time_to_live(1, 601.0)[0] == 900


def test_checkpointed_remainder_survives_leader_change():
    le = make(checkpointing=True)
    le.promote(0.0, 1.0)
    le.grant(1, 3600, 0.0)
    cps = le.due_checkpoints(301.0)
    assert cps == [(1, 3299)]  # granted on the primary at 0: expires at 3600
    for lid, remaining in cps:
        le.checkpoint(lid, remaining, 301.0)
    le.demote()
    le.promote(400.0, 1.0)  # the new leader counts from the checkpoint, not the full TTL
    assert le.time_to_live(1, 400.0)[0] == 3300


def test_checkpoint_rows_not_persisted_unless_asked():
    backend = Backend.open_memory()
    le = make(backend=backend, checkpointing=True)
    le.grant(1, 900, 0.0)
    le.checkpoint(1, 500, 0.0)
    assert decode_lease_row(backend.get(LEASE, encode_lease_row(1, 0)[0])).RemainingTTL == 0
    backend2 = Backend.open_memory()
    le2 = make(backend=backend2, checkpointing=True, persist_checkpoints=True)
    le2.grant(1, 900, 0.0)
    le2.checkpoint(1, 500, 0.0)
    assert backend2.get(LEASE, encode_lease_row(1, 0)[0]) == encode_lease_row(1, 900, 500)[1]


def test_random_ops_against_a_naive_model():
    seed = random.randrange(1 << 32)
    print("seed", seed)
    rng = random.Random(seed)
    store = KVStore()
    le = make(store=store)
    le.promote(0.0, 0.0)
    model_ttl: dict[int, tuple[int, float]] = {}  # lease -> (ttl, expiry)
    model_keys: dict[bytes, int] = {}
    now = 0.0
    for _ in range(2000):
        now += rng.random()
        op = rng.randrange(6)
        lid = rng.randrange(1, 8)
        key = b"k%d" % rng.randrange(10)
        if op == 0:
            ttl = rng.randrange(1, 20)
            if lid in model_ttl:
                with pytest.raises(LeaseExistsError):
                    le.grant(lid, ttl, now)
            else:
                le.grant(lid, ttl, now)
                model_ttl[lid] = (max(ttl, 2), now + max(ttl, 2))
        elif op == 1:
            if lid in model_ttl:
                keys = le.revoke(lid)
                assert keys == sorted(k for k, v in model_keys.items() if v == lid)
                for k in keys:
                    del model_keys[k]
                del model_ttl[lid]
            else:
                with pytest.raises(LeaseNotFoundError):
                    le.revoke(lid)
        elif op == 2:
            use = lid if lid in model_ttl else 0
            store.put(key, b"v", use)
            model_keys[key] = use
        elif op == 3:
            store.delete_range(key)
            model_keys.pop(key, None)
        elif op == 4 and lid in model_ttl:
            ttl, expiry = model_ttl[lid]
            if expiry <= now:
                with pytest.raises(LeaseExpiredError):
                    le.renew(lid, now)
            else:
                assert le.renew(lid, now) == ttl
                model_ttl[lid] = (ttl, now + ttl)
        elif op == 5:
            found = set(le.expired(now, 100))
            assert found <= {i for i, (_, e) in model_ttl.items() if e <= now}
        le.check()
        for i, (ttl, expiry) in model_ttl.items():
            assert le.time_to_live(i, now)[:2] == (int(expiry - now), ttl)
            assert le.time_to_live(i, now)[2] == sorted(k for k, v in model_keys.items() if v == i)


def test_put_with_ignore_lease_keeps_the_key_attached():
    from proto.etcdserverpb import rpc_pb2
    from trietcd.mvcc.apply import Applier

    store = KVStore()
    le = make(store=store)
    kv = Applier(store, le.exists)
    le.grant(3, 100, 0.0)
    kv.put(rpc_pb2.PutRequest(key=b"k", value=b"1", lease=3))
    kv.put(rpc_pb2.PutRequest(key=b"k", value=b"2", ignore_lease=True))
    assert le.time_to_live(3, 0.0)[2] == [b"k"]
    kv.put(rpc_pb2.PutRequest(key=b"k", value=b"3"))  # a plain put takes the key off its lease
    assert le.time_to_live(3, 0.0)[2] == []
    assert le.revoke(3) == []
    assert store.range(b"k").kvs[0].value == b"3"
    le.check()
