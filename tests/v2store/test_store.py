"""The store's operations, bookkeeping and JSON, case by case (etcd's v2store semantics)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trietcd.v2store import (
    CorruptError,
    GoTime,
    UnknownMemberError,
    V2Error,
    V2Store,
    decode_v2_request,
    encode_v2_request,
)
from trietcd.v2store.gojson import format_time, go_string, parse_time
from trietcd.v2store.node import (
    DIR_NOT_EMPTY,
    KEY_NOT_FOUND,
    NODE_EXIST,
    NOT_DIR,
    NOT_FILE,
    ROOT_RONLY,
    TEST_FAILED,
)

S = 1_000_000_000
T0 = 1_795_000_000 * S  # a wall clock in 2026


def counts(store: V2Store) -> dict[str, int]:
    return {k: v for k, v in store.stats.items() if v}


def put(store, path, val="", **kw):
    now = kw.pop("now_ns", T0)
    return store.apply_request(decode_v2_request(encode_v2_request(1, "PUT", path, val, **kw)), now)


# --- Go JSON ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, go", [
    ("plain", '"plain"'),
    ('<a href="x">&amp;</a>', r'"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e"'),
    ("tab\tnl\ncr\rbs\\", r'"tab\tnl\ncr\rbs\\"'),
    ("\x00\x01\x08\x0c\x1f\x7f", r'"\u0000\u0001\u0008\u000c\u001f' + '\x7f"'),
    ("é ☃ \U0001f600", '"é ☃ \U0001f600"'),
    ("\u2028\u2029", r'"\u2028\u2029"'),
    ("lone \ud800", r'"lone \ufffd"'),
])
def test_go_string_escaping(text, go):
    assert go_string(text) == go


@pytest.mark.parametrize("text", [
    "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2026-11-24T09:16:00.735774381Z",
    "2026-11-24T09:16:00.7Z", "2000-02-29T23:59:59.000000001+05:30", "1969-12-31T23:59:59.5-08:00",
])
def test_time_round_trip(text):
    assert format_time(parse_time(text)) == text


def test_time_from_unix_ns():
    assert format_time(GoTime(0)) == "1970-01-01T00:00:00Z"
    assert format_time(GoTime(1_795_511_760_735_774_381)) == "2026-11-24T09:16:00.735774381Z"
    assert format_time(GoTime(-1)) == "1969-12-31T23:59:59.999999999Z"
    with pytest.raises(ValueError):
        parse_time("2026-02-30T00:00:00Z")
    with pytest.raises(ValueError):
        parse_time("2026-01-01 00:00:00Z")


# --- a fresh store ----------------------------------------------------------------------------

def test_new_store_json():
    assert V2Store.new().to_json().startswith(
        b'{"Root":{"Path":"/","CreatedIndex":0,"ModifiedIndex":0,"ExpireTime":"0001-01-01T00:00:00Z",'
        b'"Value":"","Children":{"0":{"Path":"/0","CreatedIndex":0,"ModifiedIndex":0,'
        b'"ExpireTime":"0001-01-01T00:00:00Z","Value":"","Children":{}},"1":{"Path":"/1",')
    assert V2Store.new().to_json().endswith(
        b'"Size":0,"Front":0,"Back":0,"Capacity":1000},"StartIndex":0,"LastIndex":0}},"CurrentIndex":0,'
        b'"Stats":{"getsSuccess":0,"getsFail":0,"setsSuccess":0,"setsFail":0,"deleteSuccess":0,'
        b'"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":0,"createFail":0,'
        b'"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,'
        b'"compareAndDeleteFail":0,"expireCount":0,"watchers":0},"CurrentVersion":2}')


@pytest.mark.parametrize("path", ["/", "/0", "/1", "/1/..", "//0/"])
def test_namespaces_are_read_only(path):
    store = V2Store.new()
    for op in (lambda: store.set(path, value="x"), lambda: store.create(path, value="x"),
               lambda: store.update(path, "x"), lambda: store.delete(path, True, True),
               lambda: store.compare_and_swap(path, "", 1, "x")):
        with pytest.raises(V2Error) as err:
            op()
        assert (err.value.code, err.value.cause) == (ROOT_RONLY, "/")
    assert store.current_index == 0
    # etcd records the failed set and create, but counts update, delete and CAS as successes.
    assert counts(store) == {"setsFail": 1, "createFail": 1, "updateSuccess": 1,
                             "deleteSuccess": 1, "compareAndSwapSuccess": 1}


# --- writes and their bookkeeping -------------------------------------------------------------

def test_set_creates_parents_and_replaces_with_prev_node():
    store = V2Store.new()
    first = store.set("/1/a/b/c", value="v1")
    assert (first.action, first.node.key, first.node.created_index, first.prev_node) == (
        "set", "/1/a/b/c", 1, None)
    assert store.peek("/1/a").created_index == 1 and store.peek("/1/a/b").is_dir()
    second = store.set("/1/a/b/c", value="v2")
    assert second.prev_node.value == "v1" and second.prev_node.modified_index == 1
    assert (second.node.created_index, second.node.modified_index) == (2, 2)
    assert store.current_index == 2 and counts(store) == {"setsSuccess": 2}


def test_create_through_a_key_also_counts_a_set_failure():
    store = V2Store.new()
    store.set("/1/k", value="v")
    with pytest.raises(V2Error) as err:
        store.set("/1/k/child", value="x")
    assert (err.value.code, err.value.cause, err.value.index) == (NOT_DIR, "/1/k", 1)
    with pytest.raises(V2Error) as err:
        store.create("/1/k/child", value="x")
    assert err.value.code == NOT_DIR
    # The set fails reading the path; the create fails walking to the parent, which etcd
    # records as a failed set as well as a failed create.
    assert counts(store) == {"setsSuccess": 1, "setsFail": 2, "createFail": 1}


def test_set_refuses_to_replace_a_directory():
    store = V2Store.new()
    store.set("/1/d", True)
    with pytest.raises(V2Error) as err:
        store.set("/1/d", value="x")
    assert (err.value.code, err.value.cause) == (NOT_FILE, "/1/d")


def test_create_unique_names_and_existing_keys():
    store = V2Store.new()
    store.set("/1/q", True)
    job = store.create("/1/q", value="j", unique=True)
    assert job.node.key == "/1/q/00000000000000000002"
    with pytest.raises(V2Error) as err:
        store.create("/1/q/00000000000000000002", value="again")
    assert (err.value.code, err.value.index) == (NODE_EXIST, 2)


def test_update_compare_and_swap_and_their_failures():
    store = V2Store.new()
    store.set("/1/k", value="a")
    upd = store.update("/1/k", "b")
    assert (upd.action, upd.prev_node.value, upd.node.value, upd.node.modified_index) == (
        "update", "a", "b", 2)
    with pytest.raises(V2Error) as err:
        store.compare_and_swap("/1/k", "zzz", 7, "c")
    assert (err.value.code, err.value.cause) == (TEST_FAILED, "[zzz != b] [7 != 2]")
    cas = store.compare_and_swap("/1/k", "b", 2, "c")
    assert (cas.action, cas.node.value, cas.node.created_index, cas.node.modified_index) == (
        "compareAndSwap", "c", 1, 3)
    with pytest.raises(V2Error):
        store.update("/1/missing", "x")
    store.set("/1/d", True)
    with pytest.raises(V2Error) as err:
        store.update("/1/d", "")  # etcd's node.Write refuses a directory
    assert err.value.code == NOT_FILE
    assert counts(store) == {"setsSuccess": 2, "updateSuccess": 2, "updateFail": 1,
                             "compareAndSwapSuccess": 1, "compareAndSwapFail": 1}
    assert store.current_index == 4


def test_deletes():
    store = V2Store.new()
    store.set("/1/d/k", value="v")
    with pytest.raises(V2Error) as err:
        store.delete("/1/d")
    assert (err.value.code, err.value.cause) == (NOT_FILE, "/1/d")
    with pytest.raises(V2Error) as err:
        store.delete("/1/d", is_dir=True)
    assert err.value.code == DIR_NOT_EMPTY
    event = store.delete("/1/d", recursive=True)
    assert (event.node.dir, event.node.modified_index, event.prev_node.dir) == (True, 2, True)
    assert store.peek("/1/d") is None
    with pytest.raises(V2Error) as err:
        store.delete("/1/d")
    assert (err.value.code, err.value.cause) == (KEY_NOT_FOUND, "/1/d")
    store.set("/1/k", value="v")
    with pytest.raises(V2Error):
        store.compare_and_delete("/1/k", "other", 0)  # counted as a success, as etcd does
    cad = store.compare_and_delete("/1/k", "v", 3)
    assert (cad.action, cad.node.modified_index, cad.prev_node.value) == ("compareAndDelete", 4, "v")
    assert counts(store) == {"setsSuccess": 2, "deleteSuccess": 1, "deleteFail": 3,
                             "compareAndDeleteSuccess": 2}


def test_hidden_keys_are_left_out_of_reads():
    store = V2Store.new()
    store.set("/1/d/_h", value="h")
    store.set("/1/d/v", value="v")
    listing = store.get("/1/d", recursive=True, sorted_=True)
    assert [n.key for n in listing.node.nodes] == ["/1/d/v"]
    assert store.get("/1/d/_h").node.value == "h"


# --- TTLs ------------------------------------------------------------------------------------

def test_ttl_keys_expire_at_sync_in_order():
    store = V2Store.new()
    store.set("/1/late", value="l", expire_time=GoTime(T0 + 10 * S), now_ns=T0)
    event = store.set("/1/soon", value="s", expire_time=GoTime(T0 + 2 * S), now_ns=T0)
    assert event.node.ttl == 2 and event.node.expiration == GoTime(T0 + 2 * S)
    store.set("/1/old", value="o", expire_time=GoTime(946_684_799 * S))  # before 2000: permanent
    assert store.peek("/1/old").is_permanent() and store.has_ttl_keys()
    sync = encode_v2_request(9, "SYNC", "", time_ns=T0 + 2 * S)
    store.apply_request(decode_v2_request(sync), T0 + 2 * S + 500_000_000)
    assert store.peek("/1/soon") is None and store.peek("/1/late") is not None
    expired = store.history.in_order()[-1]
    assert (expired.action, expired.node.key, expired.node.modified_index) == ("expire", "/1/soon", 4)
    assert expired.prev_node.ttl == 0  # -0.5 s truncates to 0
    store.delete_expired_keys(T0 + 20 * S, now_ns=T0 + 21 * S)
    assert store.history.in_order()[-1].prev_node.ttl == -11
    assert not store.has_ttl_keys() and store.stats["expireCount"] == 2


def test_update_without_expiration_makes_a_key_permanent_and_refresh_keeps_the_value():
    store = V2Store.new()
    store.set("/1/k", value="v", expire_time=GoTime(T0 + 100 * S), now_ns=T0)
    refreshed = store.update("/1/k", "", GoTime(T0 + 200 * S), refresh=True, now_ns=T0 + S)
    assert refreshed.refresh and refreshed.node.value == "v" and refreshed.prev_node.ttl == 99
    store.update("/1/k", "w")
    assert store.peek("/1/k").is_permanent() and not store.has_ttl_keys()
    store.set("/1/d", True, expire_time=GoTime(T0 + S))
    store.set("/1/d/k", value="x", expire_time=GoTime(T0 + 5 * S))
    store.delete("/1/d", recursive=True)
    assert not store.has_ttl_keys()


# --- the cluster namespace ----------------------------------------------------------------------

def test_member_lifecycle():
    store = V2Store.new()
    store.add_member(0xA, ["http://h:1"], is_learner=True)
    store.add_member(0xA, ["http://h:1"])  # already there: left alone
    assert store.peek("/0/members/a/raftAttributes").value == '{"peerURLs":["http://h:1"],"isLearner":true}'
    store.update_attributes(0xA, "n&<", ["http://c:1"])
    assert store.peek("/0/members/a/attributes").value == '{"name":"n\\u0026\\u003c","clientURLs":["http://c:1"]}'
    store.promote_member(0xA)
    member = store.members()[0xA]
    assert (member.is_learner, member.name, member.peer_urls) == (False, "n&<", ("http://h:1",))
    store.update_raft_attributes(0xA, ["http://h:2", "http://h:3"])
    assert store.members()[0xA].peer_urls == ("http://h:2", "http://h:3")
    store.remove_member(0xA)
    assert store.members() == {} and store.removed_ids() == {0xA}
    assert store.peek("/0/removed_members/a").value == ""
    store.update_attributes(0xA, "late", [])  # a removed member's publish is ignored
    store.remove_member(0xB)  # never a member: the delete fails, nothing else happens
    assert store.removed_ids() == {0xA}
    with pytest.raises(UnknownMemberError):
        store.update_attributes(0xC, "x", [])
    assert store.current_index == 6  # create, set, update, update, delete, create


def test_members_from_store_counts_reads_like_etcd():
    store = V2Store.new()
    assert store.members_from_store() == ({}, set())
    assert counts(store) == {"getsFail": 1}
    store.add_member(1, ["http://a"])
    store.members_from_store()
    assert counts(store) == {"getsFail": 2, "getsSuccess": 1, "createSuccess": 1}
    store.remove_member(1)
    assert store.members_from_store() == ({}, {1})
    assert store.recover() == (None, {}, {1})
    assert store.is_meta_store_only()
    store.set("/1/user", value="data")
    assert not store.is_meta_store_only()


def test_cluster_version_is_normalized_and_validated():
    store = V2Store.new()
    put(store, "/0/version", "3.05.00")
    assert store.cluster_version() == "3.5.0"
    with pytest.raises(ValueError):
        put(store, "/0/version", "3.5")
    assert store.current_index == 1


def test_apply_put_variants():
    store = V2Store.new()
    store.add_member(0x1F, ["http://p"])
    assert put(store, "/0/members/1f/attributes", '{"Name":"m","clientURLs":null,"x":1}').event is None
    assert store.members()[0x1F].name == "m"
    assert store.peek("/0/members/1f/attributes").value == '{"name":"m"}'
    assert put(store, "/1/k", "v").event.action == "set"
    assert put(store, "/1/k", "w", prev_exist=True).event.action == "update"
    assert put(store, "/1/k", "x", prev_exist=True, prev_value="w").event.action == "compareAndSwap"
    assert put(store, "/1/k", "y", prev_index=5).event.action == "compareAndSwap"
    assert put(store, "/1/k", "z", prev_exist=False).error.code == NODE_EXIST
    assert put(store, "/1/new", "n", prev_exist=False).event.action == "create"
    with pytest.raises(UnknownMemberError):
        put(store, "/0/members/ff/attributes", '{"name":"x"}')
    with pytest.raises(ValueError):
        put(store, "/0/members/1f/attributes", "not json")
    unknown = store.apply_request(decode_v2_request(encode_v2_request(1, "GET", "/1/k")), T0)
    assert str(unknown.error) == "etcdserver: unknown method"


# --- snapshots --------------------------------------------------------------------------------

def test_history_wraps_at_capacity():
    store = V2Store.new()
    for i in range(1003):
        store.set("/1/k", value=str(i))
    h = store.history
    assert (h.size, h.front, h.back, h.start_index, h.last_index) == (1000, 3, 3, 4, 1003)
    reloaded = V2Store.from_json(store.to_json())
    assert reloaded.to_json() == store.to_json()
    reloaded.set("/1/k", value="next")
    store.set("/1/k", value="next")
    assert reloaded.to_json() == store.to_json()


@pytest.mark.parametrize("data", [
    b"", b"[]", b'{"Root":null}', b'{"Root":{"Path":"/","Children":null}}',
    (b'{"Root":{"Path":"/","Children":{}},"WatcherHub":{"EventHistory":{"Queue":{"Events":[null],'
    b'"Size":2,"Front":0,"Back":0,"Capacity":1}}}}'),
    b'{"Root":{"Path":"/","Children":{},"CreatedIndex":-1}}',
    b'{"Root":{"Path":"/","Children":{},"ExpireTime":"yesterday"}}',
])
def test_corrupt_json_is_refused(data):
    with pytest.raises(CorruptError):
        V2Store.from_json(data)


OPS = st.lists(st.tuples(
    st.sampled_from(["set", "set_dir", "create", "post", "update", "cas", "delete", "rdelete",
                     "cad", "sync", "ttl"]),
    st.sampled_from(["/1/a", "/1/a/b", "/1/c", "/1/a/_h", "/0/x", "/1"]),
    st.sampled_from(["", "v", "w", "<&>"]),
    st.integers(0, 4)), max_size=40)


def run_ops(store: V2Store, ops, now_ns: int) -> None:
    for op, path, val, n in ops:
        try:
            if op == "set":
                store.set(path, value=val, now_ns=now_ns)
            elif op == "set_dir":
                store.set(path, True, now_ns=now_ns)
            elif op == "create":
                store.create(path, value=val, now_ns=now_ns)
            elif op == "post":
                store.create(path, value=val, unique=True, now_ns=now_ns)
            elif op == "update":
                store.update(path, val, now_ns=now_ns)
            elif op == "cas":
                store.compare_and_swap(path, val, n, "new", now_ns=now_ns)
            elif op == "delete":
                store.delete(path, now_ns=now_ns)
            elif op == "rdelete":
                store.delete(path, recursive=True, now_ns=now_ns)
            elif op == "cad":
                store.compare_and_delete(path, val, n, now_ns=now_ns)
            elif op == "sync":
                store.delete_expired_keys(now_ns + n * S, now_ns=now_ns)
            else:
                store.set(path, value=val, expire_time=GoTime(now_ns + n * S), now_ns=now_ns)
        except V2Error:
            pass


@settings(max_examples=150, deadline=None)
@given(OPS, OPS)
def test_a_reloaded_snapshot_behaves_like_the_store(first, then):
    """Everything the store keeps survives its JSON: a reloaded copy answers the same later
    operations the same way, down to the bytes of the next snapshot."""
    store = V2Store.new()
    run_ops(store, first, T0)
    data = store.to_json()
    copy = V2Store.from_json(data)
    assert copy.to_json() == data
    run_ops(store, then, T0 + 2 * S)
    run_ops(copy, then, T0 + 2 * S)
    assert copy.to_json() == store.to_json()
    assert copy.current_index == len(store.history.in_order()) or store.history.size == 1000


def test_seeded_random_workload_indexes():
    """Each change raises the index by one and its event carries it; failures change nothing."""
    rng = random.Random(7)
    store = V2Store.new()
    for _ in range(500):
        before = store.current_index
        path = rng.choice(["/1/a", "/1/a/b", "/1/b", "/1/a/b/c"])
        op = rng.choice(["set", "delete", "rdelete", "create", "update"])
        try:
            if op == "set":
                event = store.set(path, value=str(rng.random()))
            elif op == "delete":
                event = store.delete(path)
            elif op == "rdelete":
                event = store.delete(path, recursive=True)
            elif op == "create":
                event = store.create(path, value="c")
            else:
                event = store.update(path, "u")
        except V2Error:
            assert store.current_index == before
            continue
        assert store.current_index == before + 1 == event.index()
        assert store.history.in_order()[-1] is event


def test_deep_keys():
    """etcd takes keys nested thousands deep; writing the snapshot and deleting them must not
    hit Python's recursion limit (loading one that deep is refused as corrupt)."""
    store = V2Store.new()
    deep = "/1/" + "/".join(["d"] * 1500)
    store.set(deep, value="x", expire_time=GoTime(T0 + S), now_ns=T0)
    assert store.to_json().count(b'"Path":') == 3 + 1500
    with pytest.raises(CorruptError):
        V2Store.from_json(store.to_json())
    store.delete("/1/d", recursive=True)
    assert not store.has_ttl_keys() and store.peek("/1").children == {}
    shallow = V2Store.new()
    shallow.set("/1/" + "/".join(["d"] * 200), value="x")
    assert V2Store.from_json(shallow.to_json()).to_json() == shallow.to_json()
