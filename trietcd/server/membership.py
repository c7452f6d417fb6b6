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
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["MemberInfo", "Membership", "compute_member_id", "compute_cluster_id"]


def compute_member_id(peer_urls: Iterable[str], cluster_token: str, now_unix: int | None = None) -> int:
    data = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    if now_unix is not None:
        data += struct.pack(">q", now_unix)
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
