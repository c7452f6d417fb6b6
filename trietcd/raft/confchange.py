"""Membership changes: simple (one voter at a time) and joint consensus.

Rules:
- A simple change may alter the incoming voters by at most one member.
- enter_joint copies the incoming voters to the outgoing half, then applies
  the changes to the incoming half; quorum then needs a majority of both.
- A voter demoted to learner while joint stays a voter of the outgoing half
  and is recorded in learners_next; leave_joint turns it into a learner.
- Progress of a removed voter lives on while it is still in the outgoing half.
- Changes never mutate the tracker; they return a new (config, progress).
"""

from __future__ import annotations

from proto.raftpb import raft_pb2 as pb

from .errors import ConfigError
from .progress import Inflights, Progress, TrackerConfig
from .quorum import JointConfig

ADD_NODE = pb.ConfChangeAddNode
REMOVE_NODE = pb.ConfChangeRemoveNode
UPDATE_NODE = pb.ConfChangeUpdateNode
ADD_LEARNER_NODE = pb.ConfChangeAddLearnerNode


# ---- ConfChange / ConfChangeV2 helpers -------------------------------------


def as_v2(cc):
    """A ConfChangeV2 equivalent to cc (V1 or V2)."""
    if isinstance(cc, pb.ConfChangeV2):
        return cc
    return pb.ConfChangeV2(
        changes=[pb.ConfChangeSingle(type=cc.type, node_id=cc.node_id)], context=cc.context
    )


def enter_joint(cc) -> bool | None:
    """None when cc is not a joint change, else its auto_leave flag."""
    if cc.transition != pb.ConfChangeTransitionAuto or len(cc.changes) > 1:
        return cc.transition in (pb.ConfChangeTransitionAuto, pb.ConfChangeTransitionJointImplicit)
    return None


def leave_joint(cc) -> bool:
    """The empty ConfChangeV2 (context aside) leaves a joint config."""
    return cc.transition == pb.ConfChangeTransitionAuto and len(cc.changes) == 0


def describe_changes(ccs) -> str:
    names = {ADD_NODE: "v", ADD_LEARNER_NODE: "l", REMOVE_NODE: "r", UPDATE_NODE: "u"}
    return " ".join(f"{names[c.type]}{c.node_id}" for c in ccs)


# ---- the changer ------------------------------------------------------------


class Changer:
    def __init__(self, config: TrackerConfig, progress: dict, max_inflight: int, last_index: int) -> None:
        self.config = config
        self.progress = progress
        self.max_inflight = max_inflight
        self.last_index = last_index

    def enter_joint(self, auto_leave: bool, ccs) -> tuple:
        cfg, prs = self._check_and_copy()
        if cfg.voters.is_joint():
            raise ConfigError("config is already joint")
        if not cfg.voters.incoming:
            # Adding nodes to an empty config is simple; joint needs a quorum to start from.
            raise ConfigError("can't make a zero-voter config joint")
        cfg.voters = JointConfig(cfg.voters.incoming, cfg.voters.incoming)
        incoming = self._apply(cfg, prs, ccs)
        cfg.voters = JointConfig(incoming, cfg.voters.outgoing)
        cfg.auto_leave = auto_leave
        return self._check_and_return(cfg, prs)

    def leave_joint(self) -> tuple:
        cfg, prs = self._check_and_copy()
        if not cfg.voters.is_joint():
            raise ConfigError("can't leave a non-joint config")
        for i in cfg.learners_next:
            cfg.learners.add(i)
            prs[i].is_learner = True
        cfg.learners_next = set()
        for i in cfg.voters.outgoing:
            if i not in cfg.voters.incoming and i not in cfg.learners:
                del prs[i]
        cfg.voters = JointConfig(cfg.voters.incoming)
        cfg.auto_leave = False
        return self._check_and_return(cfg, prs)

    def simple(self, ccs) -> tuple:
        cfg, prs = self._check_and_copy()
        if cfg.voters.is_joint():
            raise ConfigError("can't apply simple config change in joint config")
        before = cfg.voters.incoming
        incoming = self._apply(cfg, prs, ccs)
        if len(before ^ incoming) > 1:
            raise ConfigError("more than one voter changed without entering joint config")
        cfg.voters = JointConfig(incoming, cfg.voters.outgoing)
        return self._check_and_return(cfg, prs)

    # ---- leaves ------------------------------------------------------------

    def _apply(self, cfg: TrackerConfig, prs: dict, ccs) -> frozenset:
        incoming = set(cfg.voters.incoming)
        for cc in ccs:
            if cc.node_id == 0:
                # A change the application chose to void upstream of raft.
                continue
            if cc.type == ADD_NODE:
                self._make_voter(cfg, prs, incoming, cc.node_id)
            elif cc.type == ADD_LEARNER_NODE:
                self._make_learner(cfg, prs, incoming, cc.node_id)
            elif cc.type == REMOVE_NODE:
                self._remove(cfg, prs, incoming, cc.node_id)
            elif cc.type == UPDATE_NODE:
                pass
            else:
                raise ConfigError(f"unexpected conf type {cc.type}")
        if not incoming:
            raise ConfigError("removed all voters")
        return frozenset(incoming)

    def _init_progress(self, cfg, prs, incoming, i: int, is_learner: bool) -> None:
        if is_learner:
            cfg.learners.add(i)
        else:
            incoming.add(i)
        # Probe from the end of the log; a snapshot follows if the peer is
        # far behind. Counted as active so CheckQuorum does not fire before
        # it had a chance to answer.
        prs[i] = Progress(0, max(self.last_index, 1), Inflights(self.max_inflight),
                          is_learner=is_learner, recent_active=True)

    def _make_voter(self, cfg, prs, incoming, i: int) -> None:
        pr = prs.get(i)
        if pr is None:
            self._init_progress(cfg, prs, incoming, i, False)
            return
        pr.is_learner = False
        cfg.learners.discard(i)
        cfg.learners_next.discard(i)
        incoming.add(i)

    def _make_learner(self, cfg, prs, incoming, i: int) -> None:
        pr = prs.get(i)
        if pr is None:
            self._init_progress(cfg, prs, incoming, i, True)
            return
        if pr.is_learner:
            return
        self._remove(cfg, prs, incoming, i)
        prs[i] = pr  # keep its progress
        if i in cfg.voters.outgoing:
            # Still a voter of the outgoing half: demote once that half is gone.
            cfg.learners_next.add(i)
        else:
            pr.is_learner = True
            cfg.learners.add(i)

    def _remove(self, cfg, prs, incoming, i: int) -> None:
        if i not in prs:
            return
        incoming.discard(i)
        cfg.learners.discard(i)
        cfg.learners_next.discard(i)
        if i not in cfg.voters.outgoing:
            del prs[i]

    def _check_and_copy(self) -> tuple:
        cfg = self.config.clone()
        prs = {i: pr.clone() for i, pr in self.progress.items()}
        _check_invariants(cfg, prs)
        return cfg, prs

    def _check_and_return(self, cfg, prs) -> tuple:
        _check_invariants(cfg, prs)
        return cfg, prs


def _check_invariants(cfg: TrackerConfig, prs: dict) -> None:
    for ids in (cfg.voters.ids(), cfg.learners, cfg.learners_next):
        for i in ids:
            if i not in prs:
                raise ConfigError(f"no progress for {i}")
    for i in cfg.learners_next:
        if i not in cfg.voters.outgoing:
            raise ConfigError(f"{i} is in LearnersNext, but not Voters[1]")
        if prs[i].is_learner:
            raise ConfigError(f"{i} is in LearnersNext, but is already marked as learner")
    for i in cfg.learners:
        if i in cfg.voters.outgoing:
            raise ConfigError(f"{i} is in Learners and Voters[1]")
        if i in cfg.voters.incoming:
            raise ConfigError(f"{i} is in Learners and Voters[0]")
        if not prs[i].is_learner:
            raise ConfigError(f"{i} is in Learners, but is not marked as learner")
    if not cfg.voters.is_joint():
        if cfg.learners_next:
            raise ConfigError("cfg.LearnersNext must be nil when not joint")
        if cfg.auto_leave:
            raise ConfigError("AutoLeave must be false when not joint")


def restore(changer: Changer, cs) -> tuple:
    """Build (config, progress) for ConfState cs from an empty tracker, by
    replaying it as the changes that would have produced it."""
    outgoing = [pb.ConfChangeSingle(type=ADD_NODE, node_id=i) for i in cs.voters_outgoing]
    incoming = [pb.ConfChangeSingle(type=REMOVE_NODE, node_id=i) for i in cs.voters_outgoing]
    incoming += [pb.ConfChangeSingle(type=ADD_NODE, node_id=i) for i in cs.voters]
    incoming += [pb.ConfChangeSingle(type=ADD_LEARNER_NODE, node_id=i) for i in cs.learners]
    incoming += [pb.ConfChangeSingle(type=ADD_LEARNER_NODE, node_id=i) for i in cs.learners_next]
    cfg, prs = changer.config, changer.progress
    step = Changer(cfg, prs, changer.max_inflight, changer.last_index)
    if not outgoing:
        for cc in incoming:
            cfg, prs = step.simple([cc])
            step = Changer(cfg, prs, changer.max_inflight, changer.last_index)
        return cfg, prs
    for cc in outgoing:
        cfg, prs = step.simple([cc])
        step = Changer(cfg, prs, changer.max_inflight, changer.last_index)
    return step.enter_joint(cs.auto_leave, incoming)
