"""The consensus core: etcd raft semantics, pure and deterministic.

The member's raft loop drives a RawNode: tick, step peer messages, propose,
then persist/send/apply each Ready and advance.
"""

from .errors import (
    CompactedError, ConfigError, ProposalDroppedError, RaftError, SnapOutOfDateError,
    SnapshotTemporarilyUnavailableError, StepLocalMsgError, StepPeerNotFoundError, UnavailableError,
)
from .progress import Inflights, Progress, ProgressState, ProgressTracker
from .quorum import JointConfig, MajorityConfig, VoteResult
from .raft import NONE, Config, Raft, SoftState, StateType
from .rawnode import RawNode, Ready, SnapshotStatus, Status
from .read_only import ReadOnlyOption, ReadState
from .storage import NO_LIMIT, MemoryStorage

__all__ = [
    "NONE", "NO_LIMIT",
    "RawNode", "Raft", "Config", "Ready", "Status", "SoftState", "StateType", "SnapshotStatus",
    "ReadState", "ReadOnlyOption", "MemoryStorage",
    "Progress", "ProgressState", "ProgressTracker", "Inflights",
    "MajorityConfig", "JointConfig", "VoteResult",
    "RaftError", "CompactedError", "SnapOutOfDateError", "UnavailableError",
    "SnapshotTemporarilyUnavailableError", "ProposalDroppedError", "StepLocalMsgError",
    "StepPeerNotFoundError", "ConfigError",
]
