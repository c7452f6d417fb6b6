"""Majority and joint quorums.

A joint configuration (during a membership change) consists of the incoming
and the outgoing voter sets; a decision needs a majority of *each*, so that
neither the old nor the new configuration can decide on its own. An empty
outgoing half behaves as if it agreed with everything.
"""

from __future__ import annotations

import enum

INFINITE_INDEX = (1 << 64) - 1


class VoteResult(enum.Enum):
    PENDING = 1  # the outcome still depends on missing votes
    LOST = 2
    WON = 3


class MajorityConfig(frozenset):
    """A set of voter ids."""

    def describe(self) -> str:
        return "(" + " ".join(str(i) for i in sorted(self)) + ")"

    def committed_index(self, acked) -> int:
        """The largest index acked by a majority; `acked(id)` returns the
        voter's acknowledged index or None."""
        n = len(self)
        if n == 0:
            # Lets the empty half of a joint config defer to the other half.
            return INFINITE_INDEX
        if n == 1:  # a single voter: its own index, nothing to sort
            for i in self:
                return acked(i) or 0
        srt = sorted(acked(i) or 0 for i in self)
        return srt[n - (n // 2 + 1)]

    def vote_result(self, votes: dict) -> VoteResult:
        if not self:
            return VoteResult.WON  # by convention, like an empty joint half
        yes = no = missing = 0
        for i in self:
            v = votes.get(i)
            if v is None:
                missing += 1
            elif v:
                yes += 1
            else:
                no += 1
        q = len(self) // 2 + 1
        if yes >= q:
            return VoteResult.WON
        if yes + missing >= q:
            return VoteResult.PENDING
        return VoteResult.LOST


EMPTY = MajorityConfig()


class JointConfig:
    """(incoming, outgoing) voter sets; outgoing is empty outside a change."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming=EMPTY, outgoing=EMPTY) -> None:
        self.incoming = MajorityConfig(incoming)
        self.outgoing = MajorityConfig(outgoing)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, JointConfig)
            and self.incoming == other.incoming
            and self.outgoing == other.outgoing
        )

    def ids(self) -> frozenset:
        return self.incoming | self.outgoing

    def is_joint(self) -> bool:
        return bool(self.outgoing)

    def describe(self) -> str:
        if self.outgoing:
            return self.incoming.describe() + "&&" + self.outgoing.describe()
        return self.incoming.describe()

    def committed_index(self, acked) -> int:
        return min(self.incoming.committed_index(acked), self.outgoing.committed_index(acked))

    def vote_result(self, votes: dict) -> VoteResult:
        r1 = self.incoming.vote_result(votes)
        r2 = self.outgoing.vote_result(votes)
        if r1 == r2:
            return r1
        if VoteResult.LOST in (r1, r2):
            return VoteResult.LOST
        return VoteResult.PENDING
