"""Compact text forms of raft values, for transcripts and debugging."""

from __future__ import annotations

from proto.raftpb import raft_pb2 as pb

from .confchange import as_v2, describe_changes


def describe_entry(e) -> str:
    t = pb.EntryType.Name(e.Type)
    if e.Type == pb.EntryConfChange:
        payload = describe_changes(as_v2(pb.ConfChange.FromString(e.Data)).changes)
    elif e.Type == pb.EntryConfChangeV2:
        cc = pb.ConfChangeV2.FromString(e.Data)
        payload = describe_changes(cc.changes)
        if cc.transition:
            payload += f" {pb.ConfChangeTransition.Name(cc.transition)}"
    else:
        payload = repr(e.Data.decode("utf-8", "backslashreplace"))
    return f"{e.Term}/{e.Index} {t} {payload}".rstrip()


def describe_conf_state(cs) -> str:
    def ids(xs):
        return "(" + " ".join(str(x) for x in xs) + ")"

    out = f"Voters:{ids(cs.voters)} VotersOutgoing:{ids(cs.voters_outgoing)} Learners:{ids(cs.learners)} " \
          f"LearnersNext:{ids(cs.learners_next)} AutoLeave:{str(cs.auto_leave).lower()}"
    return out


def describe_snapshot(s) -> str:
    m = s.metadata
    return f"Index:{m.index} Term:{m.term} ConfState:{describe_conf_state(m.conf_state)}"


def describe_message(m) -> str:
    frm = getattr(m, "from")
    out = f"{frm}->{m.to} {pb.MessageType.Name(m.type)} Term:{m.term} Log:{m.logTerm}/{m.index}"
    if m.reject:
        out += f" Rejected (Hint: {m.rejectHint})"
    if m.commit:
        out += f" Commit:{m.commit}"
    if m.context:
        out += f" Context:{m.context.decode('utf-8', 'backslashreplace')}"
    if m.entries:
        out += " Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]"
    if m.snapshot.metadata.index:
        out += " Snapshot: " + describe_snapshot(m.snapshot)
    return out


def describe_hard_state(hs) -> str:
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_ready(rd) -> list:
    """One line per part of a Ready that is not empty."""
    lines = []
    if rd.soft_state is not None:
        lines.append(f"Lead:{rd.soft_state.lead} State:{rd.soft_state.raft_state.value}")
    hs = rd.hard_state
    if hs.term or hs.vote or hs.commit:
        lines.append("HardState " + describe_hard_state(hs))
    if rd.read_states:
        lines.append("ReadStates: " + ", ".join(
            f"{rs.index}:{rs.request_ctx.decode('utf-8', 'backslashreplace')}" for rs in rd.read_states))
    if rd.entries:
        lines.append("Entries:")
        lines.extend("  " + describe_entry(e) for e in rd.entries)
    if rd.snapshot.metadata.index:
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    if rd.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend("  " + describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        lines.append("Messages:")
        lines.extend("  " + describe_message(m) for m in rd.messages)
    return lines
