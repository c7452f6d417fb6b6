"""Cluster membership: member and cluster IDs the way etcd derives them.

A bootstrapping etcd member computes every member's ID from its sorted peer
URLs and the initial cluster token (SHA-1, first 8 bytes big-endian), and
the cluster ID from the sorted member IDs. Deriving them identically keeps
IDs stable across restarts and equal to what a real etcd member of the same
cluster computes, which the peer protocol checks on every request.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping

import attrs

from trietcd.server.errors import BootstrapError

__all__ = ["MemberInfo", "Membership", "compute_member_id", "compute_cluster_id", "verify_bootstrap"]


def compute_member_id(peer_urls: Iterable[str], cluster_token: str, now_unix: int | None = None) -> int:
    data = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    if now_unix is not None:
        data += str(now_unix).encode()  # a member added at run time: its second, in decimal
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def compute_cluster_id(member_ids: Iterable[int]) -> int:
    data = b"".join(struct.pack(">Q", mid) for mid in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


@attrs.frozen
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


@attrs.define
class Membership:
    """The members of one cluster, keyed by ID. Owned by the member's applier."""

    cluster_id: int
    local_id: int
    members: dict[int, MemberInfo]

    @classmethod
    def bootstrap(
        cls,
        *,
        name: str,
        initial_cluster: Mapping[str, tuple[str, ...]],
        cluster_token: str,
        client_urls: tuple[str, ...],
    ) -> "Membership":
        members: dict[int, MemberInfo] = {}
        local_id = 0
        for member_name, peer_urls in initial_cluster.items():
            mid = compute_member_id(peer_urls, cluster_token)
            is_local = member_name == name
            members[mid] = MemberInfo(
                id=mid,
                name=member_name,
                peer_urls=tuple(peer_urls),
                client_urls=client_urls if is_local else (),
            )
            if is_local:
                local_id = mid
        assert local_id, "the local member must be part of the initial cluster"
        return cls(cluster_id=compute_cluster_id(members), local_id=local_id, members=members)

    @property
    def local(self) -> MemberInfo:
        return self.members[self.local_id]

    def sorted_members(self) -> list[MemberInfo]:
        # etcd sorts members by ID in MemberList and /members.
        return [self.members[mid] for mid in sorted(self.members)]

    # etcd's --strict-reconfig-check rules (RaftCluster.IsReadyTo...): a member has started once it has
    # published its name.

    def _voting(self) -> list[MemberInfo]:
        return [m for m in self.members.values() if not m.is_learner]

    def ready_to_add_voting_member(self) -> bool:
        voting = self._voting()
        started = sum(1 for m in voting if m.name)
        if started == 1 and len(voting) == 1:
            return True  # growing a one-member cluster (the documented way to restore one)
        members = len(voting) + 1
        return started >= members // 2 + 1

    def ready_to_remove_voting_member(self, member_id: int) -> bool:
        rest = [m for m in self._voting() if m.id != member_id]
        started = sum(1 for m in rest if m.name)
        return started >= len(rest) // 2 + 1

    def ready_to_promote_member(self, member_id: int) -> bool:
        voting = self._voting()
        members = len(voting) + 1  # the learner counts, as started
        started = sum(1 for m in voting if m.name) + 1
        return started >= members // 2 + 1


def verify_bootstrap(
    *,
    name: str,
    initial_cluster: str,
    initial_cluster_map: Mapping[str, tuple[str, ...]],
    advertise_peer_urls: tuple[str, ...],
    resolve: Callable[[str], str],
) -> None:
    """etcd's checks of a new member's bootstrap configuration, in etcd's order
    and with its texts; raises BootstrapError. `resolve` maps a URL to the URL
    with its host resolved to an address (hostnames may name the same peer)."""
    if name not in initial_cluster_map:
        raise BootstrapError(f'couldn\'t find local name "{name}" in the initial cluster configuration')
    _advertise_matches_cluster(name, initial_cluster_map[name], advertise_peer_urls, resolve)
    seen: set[str] = set()
    for urls in initial_cluster_map.values():
        for url in urls:
            if url in seen:
                raise BootstrapError(f"initial cluster {initial_cluster} has duplicate url")
            seen.add(url)


def _advertise_matches_cluster(name, cluster_urls, advertise_urls, resolve) -> None:
    urls, apurls = sorted(cluster_urls), sorted(advertise_urls)
    mismatch = _urls_mismatch(apurls, urls, resolve)
    if mismatch is None:
        return
    missing = [u for u in urls if u not in apurls]
    if missing:
        have = ",".join(f"{name}={u}" for u in missing)
        raise BootstrapError(
            f"--initial-cluster has {have} but missing from --initial-advertise-peer-urls={','.join(apurls)} "
            f"({mismatch})"
        )
    extra = [u for u in apurls if u not in urls]
    own = ",".join(f"{name}={u}" for u in apurls)  # types.URLsMap.String()
    if extra:
        raise BootstrapError(
            f"--initial-advertise-peer-urls has {','.join(extra)} but missing from --initial-cluster={own}"
        )
    raise BootstrapError(f"failed to resolve {','.join(apurls)} to match --initial-cluster={own} ({mismatch})")


def _urls_mismatch(a: list[str], b: list[str], resolve) -> str | None:
    """None when both lists name the same URLs after resolving hosts; else the
    reason in the words of etcd's netutil.URLStringsEqual."""
    if len(a) != len(b):
        return f"len({_go_quote_list(a)}) != len({_go_quote_list(b)})"
    resolved_a = sorted((resolve(u), u) for u in a)
    resolved_b = sorted((resolve(u), u) for u in b)
    for (ra, ua), (rb, ub) in zip(resolved_a, resolved_b):
        if ra != rb:
            return f'"{ra}"(resolved from "{ua}") != "{rb}"(resolved from "{ub}")'
    return None


def _go_quote_list(items: list[str]) -> str:
    return "[" + " ".join(f'"{item}"' for item in items) + "]"
