"""Errors the raft core raises to its caller (the member's raft loop)."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every operating error of the raft layer."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first index."""

    def __init__(self) -> None:
        super().__init__("requested index is unavailable due to compaction")


class SnapOutOfDateError(RaftError):
    """A snapshot older than the one the storage holds was offered."""

    def __init__(self) -> None:
        super().__init__("requested index is older than the existing snapshot")


class UnavailableError(RaftError):
    """The requested index is past what the storage holds."""

    def __init__(self) -> None:
        super().__init__("requested entry at index is unavailable")


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage is still building a snapshot; ask again later."""

    def __init__(self) -> None:
        super().__init__("snapshot is temporarily unavailable")


class ProposalDroppedError(RaftError):
    """The node could not take the proposal (no leader, transfer under way, quota)."""

    def __init__(self) -> None:
        super().__init__("raft proposal dropped")


class StepLocalMsgError(RaftError):
    """A message type only the node itself may generate was stepped from outside."""

    def __init__(self) -> None:
        super().__init__("raft: cannot step raft local message")


class StepPeerNotFoundError(RaftError):
    """A response arrived from a peer the node does not track."""

    def __init__(self) -> None:
        super().__init__("raft: cannot step as peer not found")


class ConfigError(RaftError):
    """The Config is unusable, or a configuration change cannot be applied."""
