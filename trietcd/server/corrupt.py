"""etcd 3.5.1's corruption checks (`etcdserver/corrupt.go`): the member's HashKV against its peers'.

- `--experimental-initial-corrupt-check`: on a restart (not a new member), before client traffic, the hash of
  the whole key space at the current revision is compared with each peer's at that revision; a peer with the
  same compacted revision and another hash is a mismatch, and any mismatch stops the start with
  "<id> found data inconsistency with peers".
- `--experimental-corrupt-check-time`: every interval, on the leader only: the hash, the peers' hashes, a
  linearizable read, the hash again. The local hash changing while the revision did not, or a peer ahead of
  the leader (revision or compacted revision), or a peer with the leader's compacted revision and another
  hash, raises the CORRUPT alarm through raft (once per check) for the member at fault.

Peers are asked over the peer port (`GET /members/hashkv`, trietcd/peer/hashkv.py): the member's
`peer_hash_kv(url, revision)` is set by whoever wires the listeners; without it, peers count as unreachable.
A single member has no peers: both checks compare it with itself, as etcd's do.
"""

from __future__ import annotations

import attrs
import trio

from proto.etcdserverpb import rpc_pb2
from trietcd.log import go_duration
from trietcd.mvcc import CompactedError, FutureRevError
from trietcd.server.errors import BootstrapError, ServerError

__all__ = ["PeerHash", "PeerHashError", "CorruptionChecker", "compare_initial", "compare_periodic"]


@attrs.frozen
class PeerHash:
    """A peer's answer (its header carries only the revision, as etcd's handler fills it)."""

    member_id: int
    revision: int
    hash: int
    compact_revision: int


class PeerHashError(Exception):
    """A peer that could not tell its hash; `compacted` / `future` as etcd's ErrCompacted / ErrFutureRev."""

    def __init__(self, text: str, *, compacted: bool = False, future: bool = False) -> None:
        super().__init__(text)
        self.compacted = compacted
        self.future = future


def compare_initial(local_hash: int, local_compact: int, peers: list[PeerHash]) -> list[tuple[str, PeerHash]]:
    """(warning, peer) for each peer whose hash differs; the warning says whether it counts as a mismatch."""
    out = []
    for p in peers:
        if p.hash != local_hash:
            if p.compact_revision == local_compact:
                out.append(("found different hash values from remote peer", p))
            else:
                out.append(("found different compact revision values from remote peer", p))
    return out


def compare_periodic(before: tuple[int, int, int], after: tuple[int, int, int], local_id: int,
                     peers: list[PeerHash]) -> list[tuple[str, int]]:
    """(warning, member at fault) of a periodic check; `before`/`after` are (hash, revision, compacted
    revision) around the linearizable read, the peers' answers were fetched in between."""
    h, rev, crev = before
    h2, rev2, crev2 = after
    out = []
    if h2 != h and rev2 == rev and crev == crev2:
        out.append(("found hash mismatch", local_id))
    for p in peers:
        if p.revision > rev2:
            out.append(("revision from follower must be less than or equal to leader's", p.member_id))
        if p.compact_revision > crev2:
            out.append(("compact revision from follower must be less than or equal to leader's", p.member_id))
        if p.compact_revision == crev and p.hash != h:
            out.append(("same compact revision then hashes must match", p.member_id))
    return out


class CorruptionChecker:
    """The checks on one member (trietcd/server/member.py)."""

    def __init__(self, member) -> None:
        self._m = member

    @property
    def _id(self) -> str:
        return f"{self._m.id:x}"

    async def _peer_hashes(self, revision: int) -> list[PeerHash | PeerHashError]:
        """One answer per peer with peer URLs: the first of its URLs that answers, else the last error."""
        m = self._m
        fetch = m.peer_hash_kv
        out: list[PeerHash | PeerHashError] = []
        for member in m.membership.sorted_members():
            if member.id == m.id or not member.peer_urls:
                continue
            answer: PeerHash | PeerHashError = PeerHashError("no peer transport")
            for url in member.peer_urls:
                try:
                    if fetch is None:
                        raise PeerHashError("no peer transport")
                    with trio.fail_after(m.request_timeout_s):
                        answer = await fetch(url, revision)
                    break
                except (PeerHashError, OSError, trio.TooSlowError) as exc:
                    answer = exc if isinstance(exc, PeerHashError) else PeerHashError(str(exc) or type(exc).__name__)
                    m.log.warn("failed hash kv request", caller="etcdserver/corrupt.go",
                               **{"local-member-id": self._id, "requested-revision": revision,
                                  "remote-peer-endpoint": url, "error": str(answer)})
            out.append(answer)
        return out

    async def initial_check(self) -> None:
        """Raises BootstrapError on a mismatch (the member must not start)."""
        m = self._m
        m.log.info("starting initial corruption check", caller="etcdserver/corrupt.go",
                   **{"local-member-id": self._id, "timeout": go_duration(int(m.request_timeout_s * 1e9))})
        try:
            h, rev, crev = m.store.hash_kv(0)
        except (CompactedError, FutureRevError) as exc:
            raise BootstrapError(f"{self._id} failed to fetch hash ({exc})") from None
        answers = await self._peer_hashes(rev)
        peers = [a for a in answers if isinstance(a, PeerHash)]
        differing = compare_initial(h, crev, peers)
        for warning, p in differing:
            m.log.warn(warning, caller="etcdserver/corrupt.go", **{
                "local-member-id": self._id, "local-member-revision": rev,
                "local-member-compact-revision": crev, "local-member-hash": h,
                "remote-peer-id": f"{p.member_id:x}", "remote-peer-revision": p.revision,
                "remote-peer-compact-revision": p.compact_revision, "remote-peer-hash": p.hash})
        for a in answers:
            if isinstance(a, PeerHashError) and (a.future or a.compacted):
                text = ("cannot fetch hash from slow remote peer" if a.future
                        else "cannot fetch hash from remote peer; local member is behind")
                m.log.warn(text, caller="etcdserver/corrupt.go",
                           **{"local-member-id": self._id, "local-member-revision": rev,
                              "local-member-compact-revision": crev, "local-member-hash": h, "error": str(a)})
        if any(w == "found different hash values from remote peer" for w, _ in differing):
            raise BootstrapError(f"{self._id} found data inconsistency with peers")
        m.log.info("initial corruption checking passed; no corruption", caller="etcdserver/corrupt.go",
                   **{"local-member-id": self._id})

    async def monitor(self, interval_s: float) -> None:
        m = self._m
        m.log.info("enabled corruption checking", caller="etcdserver/corrupt.go",
                   **{"local-member-id": self._id, "interval": go_duration(int(interval_s * 1e9))})
        async with trio.open_nursery() as nursery:  # alarms go in the background, as etcd's GoAttach
            while True:
                await trio.sleep(interval_s)
                if m.leader_id != m.id:
                    continue
                try:
                    await self.check_hash_kv(nursery)
                except (ServerError, CompactedError, FutureRevError, trio.TooSlowError) as exc:
                    m.log.warn("failed to check hash KV", caller="etcdserver/corrupt.go", error=str(exc) or "timeout")

    async def check_hash_kv(self, nursery=None) -> None:
        """One periodic check; the alarm is raised in `nursery` when given, else before returning."""
        m = self._m
        before = m.store.hash_kv(0)
        answers = await self._peer_hashes(before[1])
        with trio.fail_after(m.request_timeout_s):
            await m.read_barrier()
        after = m.store.hash_kv(0)
        peers = [a for a in answers if isinstance(a, PeerHash)]
        found = compare_periodic(before, after, m.id, peers)
        for warning, member_id in found:
            m.log.warn(warning, caller="etcdserver/corrupt.go",
                       **{"leader-revision": after[1], "leader-compact-revision": after[2], "leader-hash": after[0],
                          "member-id": f"{member_id:x}"})
        if found:
            # etcd raises one alarm per check, for the first member found at fault, in the background.
            alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=found[0][1],
                                         alarm=rpc_pb2.CORRUPT)
            if nursery is not None:
                nursery.start_soon(self._raise_alarm, alarm)
            else:
                await self._raise_alarm(alarm)
        m.log.info("finished peer corruption check", caller="etcdserver/corrupt.go",
                   **{"number-of-peers-checked": len(peers)})

    async def _raise_alarm(self, alarm) -> None:
        try:
            await self._m.propose("alarm", alarm)
        except ServerError as exc:
            self._m.log.warn("failed to raise CORRUPT alarm", caller="etcdserver/corrupt.go", error=str(exc))
