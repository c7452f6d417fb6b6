"""The member: the state one etcd member holds, and the nursery that runs it.

Rules:
- One `trio.run` per process; `Member.run` opens the member's nursery and
  every long-lived task is its child. Cancelling that scope stops the member.
- The member owns membership, alarms and the key-value store. Request
  handlers reach them through the methods here, never behind its back.
- Raft arrives in a later layer. Until then a single member commits each
  write at once, and reports the raft term and index a fresh single-member
  etcd reports: term 2 after its first election, index 4 after the bootstrap
  entries (conf change, leader's empty entry, attributes, cluster version),
  one more per applied write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import ipaddress
import socket
import urllib.parse

import trio

import trietcd
from trietcd.log import Logger, logger as default_logger
from trietcd.mvcc import KVStore
from trietcd.server.alarms import AlarmStore
from trietcd.server.errors import RequestTooLargeError
from trietcd.server.membership import Membership, verify_bootstrap

__all__ = ["Member", "BOOTSTRAP_RAFT_INDEX", "BOOTSTRAP_RAFT_TERM"]

BOOTSTRAP_RAFT_TERM = 2
BOOTSTRAP_RAFT_INDEX = 4
# An upper bound on what an InternalRaftRequest adds to the request it
# carries: the header field (2-byte tag, length, RequestHeader of one 64-bit
# ID: 14 bytes) and the request's own tag (at most 3 bytes) and length (5).
_ENTRY_OVERHEAD = 22

ServeTask = Callable[..., Awaitable[None]]


class Member:
    def __init__(self, config, *, log: Logger | None = None) -> None:
        self.config = config
        self.log = log or default_logger
        verify_bootstrap(
            name=config.name,
            initial_cluster=config.initial_cluster,
            initial_cluster_map=config.initial_cluster_map(),
            advertise_peer_urls=tuple(config.initial_advertise_peer_urls),
            resolve=resolve_url,
        )
        self.membership = Membership.bootstrap(
            name=config.name,
            initial_cluster=config.initial_cluster_map(),
            cluster_token=config.initial_cluster_token,
            client_urls=tuple(config.advertise_client_urls),
        )
        self.store = KVStore()
        self.alarms = AlarmStore()
        self.version = trietcd.etcd_version
        self.cluster_version = trietcd.etcd_cluster_version
        self.raft_term = BOOTSTRAP_RAFT_TERM
        # Invariant: applied_index <= raft_index.
        self.raft_index = BOOTSTRAP_RAFT_INDEX
        self.applied_index = BOOTSTRAP_RAFT_INDEX
        # etcd's request IDs: member ID's low 16 bits on top, a counter below.
        self._request_id = (self.id & 0xFFFF) << 48
        # (revision, (term, cluster id, member id), encoded fields before and
        # after the revision, the whole field): see header_field.
        self._header_field: tuple = (None, None, (b"", b""), b"")
        # Called when a graceful stop begins (e.g. the gRPC health service
        # turns NOT_SERVING), before listeners close.
        self.on_stop: list[Callable[[], None]] = []
        self._listeners_scope: trio.CancelScope | None = None
        self._member_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    # --- identity -----------------------------------------------------

    @property
    def id(self) -> int:
        return self.membership.local_id

    @property
    def cluster_id(self) -> int:
        return self.membership.cluster_id

    @property
    def leader_id(self) -> int:
        return self.membership.local_id

    def header(self, revision: int | None = None):
        from proto.etcdserverpb import rpc_pb2

        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.id,
            revision=self.store.current_revision if revision is None else revision,
            raft_term=self.raft_term,
        )

    def header_field(self, revision: int) -> bytes:
        """`header(revision)` encoded as field 1 of a response (for
        KVService). The last one is kept: responses at one revision and term
        share it, and bytes cannot be changed by whoever receives them."""
        ids = (self.raft_term, self.membership.cluster_id, self.membership.local_id)
        cached = self._header_field
        if cached[0] == revision and cached[1] == ids:
            return cached[3]
        parts = cached[2]
        if cached[1] != ids:
            # The fields around the revision (1, 2 before it, 4 after), each
            # encoded alone: concatenated, they are the header's encoding.
            full = self.header(0)  # revision 0: no field 3
            term, full.raft_term = full.raft_term, 0
            before = full.SerializeToString()
            full.raft_term = term
            parts = (before, full.SerializeToString()[len(before) :])
        body = parts[0] + _revision_field(revision) + parts[1]
        # Tag of field 1, wire type 2, and the length (under 128: a header
        # holds four varints).
        field = b"\x0a" + bytes((len(body),)) + body
        self._header_field = (revision, ids, parts, field)
        return field

    # --- writes ---------------------------------------------------------

    def propose(self, field: str, request) -> None:
        """Takes one write into the log as etcd's processInternalRaftRequest does.

        The request travels as an InternalRaftRequest with a fresh request ID;
        one larger than --max-request-bytes is refused before it reaches the
        log. A single member commits the entry at once.
        """
        self._request_id += 1
        limit = self.config.max_request_bytes
        # The entry adds at most _ENTRY_OVERHEAD bytes to the request: only a
        # request near the limit needs the entry built to be measured.
        if request.ByteSize() + _ENTRY_OVERHEAD > limit and self._entry_size(field, request) > limit:
            raise RequestTooLargeError()
        self.raft_index += 1
        self.applied_index = self.raft_index
        assert self.applied_index <= self.raft_index

    def _entry_size(self, field: str, request) -> int:
        from proto.etcdserverpb import raft_internal_pb2

        entry = raft_internal_pb2.InternalRaftRequest(header=raft_internal_pb2.RequestHeader(ID=self._request_id))
        getattr(entry, field).CopyFrom(request)
        return entry.ByteSize()

    # --- sizes ------------------------------------------------------------

    def db_size_bytes(self) -> int:
        # No page file yet: report the size a bbolt file holding this data
        # would have, rounded to whole 4 KiB pages (a fresh etcd reports 20480).
        return 20480 + _round_up(self.store.size_bytes(), 4096)

    def db_size_in_use_bytes(self) -> int:
        return 16384 + _round_up(self.store.size_bytes(), 4096)

    async def health(self, query: dict[str, list[str]]) -> tuple[bool, str]:
        excluded = {a.upper() for a in query.get("exclude", ())}
        for _, alarm in self.alarms.list():
            from proto.etcdserverpb import rpc_pb2

            name = rpc_pb2.AlarmType.Name(alarm)
            if name not in excluded:
                return False, f"ALARM {name}"
        return True, ""

    def version_info(self) -> dict[str, str]:
        return {"etcdserver": self.version, "etcdcluster": self.cluster_version}

    # --- tasks ------------------------------------------------------------

    async def run(
        self,
        listeners: Sequence[ServeTask],
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs the member until stopped; started() once every listener is bound."""
        with trio.CancelScope() as member_scope:
            self._member_scope = member_scope
            async with trio.open_nursery() as nursery:
                listeners_scope = trio.CancelScope()
                self._listeners_scope = listeners_scope
                listening = await nursery.start(self._serve_listeners, listeners, listeners_scope)
                self.log.info("ready to serve client requests", caller="embed/serve.go")
                task_status.started(listening)
        self._stopped.set()

    async def _serve_listeners(self, listeners, scope, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                addresses = [await nursery.start(serve) for serve in listeners]
                task_status.started(addresses)

    async def stop(self, shutdown_connections: Callable[[float], Awaitable[None]], grace_s: float) -> None:
        """Graceful stop: no new connections, GOAWAY, in-flight calls get grace_s."""
        self.log.info(
            "closing etcd server",
            caller="embed/etcd.go",
            name=self.config.name,
            **{"data-dir": self.config.data_dir},
        )
        for hook in self.on_stop:
            hook()
        if self._listeners_scope is not None:
            self._listeners_scope.cancel()
        with trio.move_on_after(grace_s + 1):
            await shutdown_connections(grace_s)
        if self._member_scope is not None:
            self._member_scope.cancel()
        self.log.info("closed etcd server", caller="embed/etcd.go", name=self.config.name)


def resolve_url(url: str) -> str:
    """The URL with its host replaced by the first IPv4 address it resolves
    to, as etcd compares peer URLs; unresolvable hosts stay as written."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return url
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, parts.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return url
    address = infos[0][4][0]
    netloc = f"{address}:{parts.port}" if parts.port is not None else address
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _revision_field(revision: int) -> bytes:
    """Field 3 (varint) of a ResponseHeader; nothing for 0, as proto3 encodes."""
    if revision == 0:
        return b""
    out = bytearray(b"\x18")
    n = revision & 0xFFFFFFFFFFFFFFFF  # int64: a negative one takes ten bytes
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step if n > 0 else 0

