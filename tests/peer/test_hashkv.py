"""`/members/hashkv` on the peer port as etcd 3.5.1 answers it (bodies and statuses observed from etcd 3.5.1
after `put a 1; put a 2; compaction 2`), the client end over a real loopback listener, and the corruption
checks of trietcd/server/corrupt.py with peers that agree, differ, or cannot answer."""

from __future__ import annotations

import functools

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from tests.server.members import make_member, run_member
from trietcd.api.cluster import ClusterService
from trietcd.peer import peer_http_app
from trietcd.peer.hashkv import fetch_hash_kv, parse_request
from trietcd.server.corrupt import (CorruptionChecker, PeerHash, PeerHashError, compare_initial,
                                    compare_periodic)
from trietcd.server.errors import BootstrapError
from trietcd.server.membership import MemberInfo
from trietcd.wire.http1 import Request
from trietcd.wire.conn import ConnectionSet
from trietcd.wire.h2_conn import H2Limits
from trietcd.wire.listener import serve_url


def request(method: str, body: bytes) -> Request:
    return Request(method=method, target="/members/hashkv", headers=(), body=body, peer="127.0.0.1:1")


async def _compacted_member(m):
    await m.propose("put", rpc_pb2.PutRequest(key=b"a", value=b"1"))
    await m.propose("put", rpc_pb2.PutRequest(key=b"a", value=b"2"))
    await m.propose("compaction", rpc_pb2.CompactionRequest(revision=2, physical=True))


async def test_answers_as_etcd(tmp_path):
    async def body(m):
        await _compacted_member(m)
        app = peer_http_app(m)
        h = m.store.hash_kv(0)[0]
        out = {}
        for b in (b"", b"{}", b'{"revision":3}', b'{"revision":1}', b'{"revision":9}', b"xx", b'{"revision":"3"}',
                  b'{"Revision":3,"other":1}', b"null", b'{"revision":3.0}', b'{"revision":NaN}'):
            out[b] = await app(request("GET", b))
        out["post"] = await app(request("POST", b"{}"))
        return h, out

    h, out = await run_member(make_member(tmp_path / "d"), body)
    ok = b'{"header":{"revision":3},"hash":%d,"compact_revision":2}' % h
    for b in (b"{}", b'{"revision":3}', b'{"Revision":3,"other":1}', b"null"):
        assert (out[b].status, out[b].body) == (200, ok), b
        assert dict(out[b].headers)["Content-Type"] == "application/json"
    assert (out[b'{"revision":1}'].status, out[b'{"revision":1}'].body) == (
        400, b"mvcc: required revision has been compacted\n")
    assert (out[b'{"revision":9}'].status, out[b'{"revision":9}'].body) == (
        400, b"mvcc: required revision is a future revision\n")
    for b in (b"", b"xx", b'{"revision":"3"}', b'{"revision":3.0}', b'{"revision":NaN}'):
        assert (out[b].status, out[b].body) == (400, b"error unmarshalling request\n"), b
    assert (out["post"].status, out["post"].body, dict(out["post"].headers)["Allow"]) == (
        405, b"Method Not Allowed\n", "GET")


def test_request_parsing_follows_go_json():
    assert parse_request(b'{"revision":5}') == 5
    assert parse_request(b'{"REVISION":5,"revision":null}') == 5
    assert parse_request(b'{"revision":-1}') == -1
    for bad in (b"[]", b'"x"', b'{"revision":true}', b'{"revision":9223372036854775808}', b"\xff"):
        with pytest.raises(ValueError):
            parse_request(bad)


async def test_the_client_reads_what_the_endpoint_answers(tmp_path):
    async def body(m):
        await _compacted_member(m)
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(functools.partial(
                serve_url, "http://127.0.0.1:0", registry=None, http_app=peer_http_app(m), h2_limits=H2Limits(),
                ssl_context=None, connections=ConnectionSet()))
            url = f"http://127.0.0.1:{addr[1]}"
            got = await fetch_hash_kv(url, 3)
            with pytest.raises(PeerHashError) as compacted:
                await fetch_hash_kv(url, 1)
            with pytest.raises(PeerHashError) as future:
                await fetch_hash_kv(url, 99)
            nursery.cancel_scope.cancel()
        return got, compacted.value, future.value, m.store.hash_kv(3)

    got, compacted, future, (h, rev, crev) = await run_member(make_member(tmp_path / "d"), body)
    assert got == PeerHash(member_id=0, revision=rev, hash=h, compact_revision=crev)
    assert compacted.compacted and not compacted.future
    assert future.future and not future.compacted


def test_comparisons_as_etcd():
    same = PeerHash(2, 10, 111, 5)
    assert compare_initial(111, 5, [same]) == []
    other_hash = PeerHash(2, 10, 222, 5)
    other_compact = PeerHash(3, 10, 222, 4)
    assert [w for w, _ in compare_initial(111, 5, [other_hash, other_compact])] == [
        "found different hash values from remote peer", "found different compact revision values from remote peer"]
    # Periodic: the local hash moved without a write; a peer ahead; a peer with the leader's compaction but
    # another hash.
    assert compare_periodic((1, 10, 5), (2, 10, 5), 7, []) == [("found hash mismatch", 7)]
    assert compare_periodic((1, 10, 5), (2, 11, 5), 7, []) == []  # a write came in between: not a mismatch
    assert [m for _, m in compare_periodic((1, 10, 5), (1, 10, 5), 7, [PeerHash(8, 11, 1, 5)])] == [8]
    assert [m for _, m in compare_periodic((1, 10, 5), (1, 10, 5), 7, [PeerHash(8, 10, 1, 6)])] == [8]
    assert [m for _, m in compare_periodic((1, 10, 5), (1, 10, 5), 7, [PeerHash(8, 10, 9, 5)])] == [8]
    assert compare_periodic((1, 10, 5), (1, 10, 5), 7, [PeerHash(8, 9, 9, 4)]) == []


def _with_peer(m, peer_id=0xABC):
    m.membership.members[peer_id] = MemberInfo(id=peer_id, name="p", peer_urls=("http://127.0.0.1:1",))


async def test_initial_check_passes_alone_and_with_agreeing_peers_fails_on_a_mismatch(tmp_path):
    async def body(m):
        await _compacted_member(m)
        checker = CorruptionChecker(m)
        await checker.initial_check()  # no peers: passes
        h, rev, crev = m.store.hash_kv(0)
        _with_peer(m)

        async def agreeing(url, revision):
            return PeerHash(0, revision, h, crev)

        async def differing(url, revision):
            return PeerHash(0, revision, h + 1, crev)

        async def unreachable(url, revision):
            raise OSError("connection refused")

        m.peer_hash_kv = agreeing
        await checker.initial_check()
        m.peer_hash_kv = unreachable
        await checker.initial_check()  # an unreachable peer is not a mismatch
        m.peer_hash_kv = differing
        with pytest.raises(BootstrapError, match="found data inconsistency with peers"):
            await checker.initial_check()

    await run_member(make_member(tmp_path / "d"), body)


async def test_periodic_check_raises_corrupt_for_the_member_at_fault(tmp_path):
    async def body(m):
        await _compacted_member(m)
        checker = CorruptionChecker(m)
        await checker.check_hash_kv()
        assert m.alarms.list() == []
        h, rev, crev = m.store.hash_kv(0)
        _with_peer(m, 0xABC)

        async def ahead(url, revision):
            return PeerHash(0xABC, rev + 5, h, crev)

        m.peer_hash_kv = ahead
        await checker.check_hash_kv()
        return m.alarms.list()

    alarms = await run_member(make_member(tmp_path / "d"), body)
    assert alarms == [(0xABC, rpc_pb2.CORRUPT)]


async def test_a_restarted_member_checks_before_serving_and_monitors(tmp_path):
    data = tmp_path / "d"

    async def first(m):
        await _compacted_member(m)
        add = rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True)
        await ClusterService(m).MemberAdd(add, None)

    await run_member(make_member(data), first)
    m = make_member(data, "--experimental-initial-corrupt-check", "--experimental-corrupt-check-time", "100ms")
    asked = []

    async def peer(url, revision):
        asked.append((url, revision))
        raise OSError("no such peer")

    m.peer_hash_kv = peer

    async def body(member):
        assert asked == [("http://127.0.0.1:1", 3)]  # the initial check, before the member serves
        with trio.fail_after(10):
            while len(asked) < 3:  # then one every interval, on the leader
                await trio.sleep(0.05)
        return list(asked)

    assert set(await run_member(m, body)) == {("http://127.0.0.1:1", 3)}
