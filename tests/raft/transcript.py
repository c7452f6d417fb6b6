"""Transcript tests for the raft core: commands in, state and messages out.

A transcript file (testdata/*.txt) is a sequence of blocks separated by blank
lines. A block is optional `#` comment lines, one `> command` line, and the
output the command printed. Rewrite every file from the current behaviour
(then review the diff) with:

    python -m tests.raft.transcript --rewrite

Commands (ids are node ids):
    add-nodes N [voters=1,2,3] [learners=4] [index=I] [pre-vote] [check-quorum]
              [lease] [inflight=K] [max-size=B] [max-uncommitted=B]
        N new nodes; a node starts from a snapshot at index I (term 1) holding
        the voters/learners given (default: no snapshot, the new nodes as voters).
    campaign i | propose i DATA | read-index i CTX | transfer-leader i TO
    propose-conf-change i [cc-v2] [transition=auto|implicit|explicit] v4 l5 r2 ...
        (one change without `cc-v2` is a ConfChange, otherwise a ConfChangeV2)
    tick i [n] | report-unreachable i j | report-snapshot i j ok|fail
    isolate i | recover        drop every message to or from i / stop dropping
    compact i INDEX            snapshot at INDEX on i's storage, then compact
    process-ready i | deliver-msgs i | stabilize | status i | raft-log i | raft-state
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from proto.raftpb import raft_pb2 as pb
from trietcd.raft import (
    Config, MemoryStorage, RaftError, RawNode, ReadOnlyOption, SnapshotStatus, StateType,
)
from trietcd.raft.describe import describe_conf_state, describe_message, describe_ready

TESTDATA = Path(__file__).resolve().parent / "testdata"
CHANGE_TYPES = {"v": pb.ConfChangeAddNode, "l": pb.ConfChangeAddLearnerNode, "r": pb.ConfChangeRemoveNode,
                "u": pb.ConfChangeUpdateNode}
TRANSITIONS = {"auto": pb.ConfChangeTransitionAuto, "implicit": pb.ConfChangeTransitionJointImplicit,
               "explicit": pb.ConfChangeTransitionJointExplicit}


def _ids(text: str) -> list:
    return [int(x) for x in text.split(",") if x]


class Env:
    def __init__(self) -> None:
        self.nodes: dict = {}  # id -> RawNode
        self.storage: dict = {}
        self.inbox: dict = {}
        self.isolated: set = set()
        self.out: list = []

    def p(self, line: str) -> None:
        self.out.append(line)

    # ---- commands ------------------------------------------------------------

    def run(self, line: str) -> list:
        self.out = []
        cmd, *args = line.split()
        getattr(self, "cmd_" + cmd.replace("-", "_"))(*args)
        return self.out or ["ok"]

    def cmd_add_nodes(self, n, *args) -> None:
        opts = dict(a.split("=", 1) if "=" in a else (a, "") for a in args)
        start = max(self.nodes, default=0) + 1
        new = list(range(start, start + int(n)))
        learners = _ids(opts.get("learners", ""))
        voters = _ids(opts["voters"]) if "voters" in opts else [i for i in new if i not in learners]
        index = int(opts.get("index", 0))
        for i in new:
            s = MemoryStorage()
            if index:
                snap = pb.Snapshot()
                snap.metadata.index = index
                snap.metadata.term = 1
                snap.metadata.conf_state.voters.extend(voters)
                snap.metadata.conf_state.learners.extend(learners)
                s.apply_snapshot(snap)
            elif "voters" in opts or "learners" in opts or True:
                cs = s.snapshot().metadata.conf_state
                cs.voters.extend(voters)
                cs.learners.extend(learners)
            cfg = Config(
                id=i, election_tick=10, heartbeat_tick=1, storage=s, rng=random.Random(i),
                pre_vote="pre-vote" in opts, check_quorum="check-quorum" in opts or "lease" in opts,
                read_only_option=ReadOnlyOption.LEASE_BASED if "lease" in opts else ReadOnlyOption.SAFE,
                max_inflight_msgs=int(opts.get("inflight", 256)),
                max_size_per_msg=int(opts.get("max-size", 1 << 20)),
                max_committed_size_per_ready=1 << 20,
                max_uncommitted_entries_size=int(opts.get("max-uncommitted", 0)),
            )
            self.nodes[i] = RawNode(cfg)
            self.storage[i] = s
            self.inbox[i] = []
            self.p(f"node {i}: {describe_conf_state(self.nodes[i].raft.prs.conf_state())}")

    def cmd_campaign(self, i) -> None:
        self._call(lambda: self.nodes[int(i)].campaign())

    def cmd_propose(self, i, data) -> None:
        self._call(lambda: self.nodes[int(i)].propose(data.encode()))

    def cmd_read_index(self, i, ctx) -> None:
        self._call(lambda: self.nodes[int(i)].read_index(ctx.encode()))

    def cmd_transfer_leader(self, i, to) -> None:
        self._call(lambda: self.nodes[int(i)].transfer_leader(int(to)))

    def cmd_propose_conf_change(self, i, *args) -> None:
        v2 = "cc-v2" in args
        transition = pb.ConfChangeTransitionAuto
        changes = []
        for a in args:
            if a.startswith("transition="):
                transition = TRANSITIONS[a.split("=", 1)[1]]
                v2 = True
            elif a != "cc-v2":
                changes.append(pb.ConfChangeSingle(type=CHANGE_TYPES[a[0]], node_id=int(a[1:])))
        if v2 or len(changes) != 1:
            cc = pb.ConfChangeV2(transition=transition, changes=changes)
        else:
            cc = pb.ConfChange(type=changes[0].type, node_id=changes[0].node_id)
        self._call(lambda: self.nodes[int(i)].propose_conf_change(cc))

    def cmd_tick(self, i, n="1") -> None:
        for _ in range(int(n)):
            self.nodes[int(i)].tick()

    def cmd_report_unreachable(self, i, j) -> None:
        self.nodes[int(i)].report_unreachable(int(j))

    def cmd_report_snapshot(self, i, j, status) -> None:
        self.nodes[int(i)].report_snapshot(int(j), SnapshotStatus.FINISH if status == "ok" else SnapshotStatus.FAILURE)

    def cmd_isolate(self, i) -> None:
        self.isolated.add(int(i))

    def cmd_recover(self) -> None:
        self.isolated = set()

    def cmd_compact(self, i, index) -> None:
        i, index = int(i), int(index)
        s = self.storage[i]
        s.create_snapshot(index, self.nodes[i].raft.prs.conf_state(), b"snap")
        s.compact(index)
        self.p(f"storage of {i}: first index {s.first_index()}, last index {s.last_index()}")

    def cmd_process_ready(self, i) -> None:
        self._process_ready(int(i))

    def cmd_deliver_msgs(self, i) -> None:
        self._deliver(int(i))

    def cmd_stabilize(self) -> None:
        while True:
            busy = False
            for i in sorted(self.nodes):
                if self.nodes[i].has_ready():
                    self._process_ready(i)
                    busy = True
            for i in sorted(self.nodes):
                if self.inbox[i]:
                    self._deliver(i)
                    busy = True
            if not busy:
                return

    def cmd_status(self, i) -> None:
        st = self.nodes[int(i)].status()
        for j, pr in sorted(st.progress.items()):
            self.p(f"{j}: {pr.describe()}")
        if not st.progress:
            self.p(f"{st.id} is {st.soft_state.raft_state.value}, no progress known")

    def cmd_raft_log(self, i) -> None:
        from trietcd.raft.describe import describe_entry

        s = self.storage[int(i)]
        ents = s.entries(s.first_index(), s.last_index() + 1) if s.last_index() >= s.first_index() else []
        for e in ents:
            self.p(describe_entry(e))
        if not ents:
            self.p(f"log is empty: first index={s.first_index()}, last index={s.last_index()}")

    def cmd_raft_state(self) -> None:
        for i in sorted(self.nodes):
            r = self.nodes[i].raft
            kind = "(Learner)" if r.is_learner else "(Voter)"
            self.p(f"{i}: {r.state.value} {kind} Term:{r.term} Lead:{r.lead}")

    # ---- leaves --------------------------------------------------------------

    def _call(self, fn) -> None:
        try:
            fn()
        except RaftError as e:
            self.p(f"error: {e}")

    def _process_ready(self, i: int) -> None:
        rn, s = self.nodes[i], self.storage[i]
        rd = rn.ready()
        self.p(f"> {i} handling Ready")
        self.out.extend("  " + line for line in describe_ready(rd))
        if rd.snapshot.metadata.index:
            s.apply_snapshot(rd.snapshot)
        if rd.entries:
            s.append(rd.entries)
        if rd.hard_state.term or rd.hard_state.vote or rd.hard_state.commit:
            s.set_hard_state(rd.hard_state)
        for m in rd.messages:
            if i in self.isolated or m.to in self.isolated:
                continue
            self.inbox[m.to].append(m)
        for e in rd.committed_entries:
            if e.Type == pb.EntryConfChange:
                cs = rn.apply_conf_change(pb.ConfChange.FromString(e.Data))
            elif e.Type == pb.EntryConfChangeV2:
                cs = rn.apply_conf_change(pb.ConfChangeV2.FromString(e.Data))
            else:
                continue
            self.p(f"  INFO {i} switched to configuration {describe_conf_state(cs)}")
        rn.advance(rd)

    def _deliver(self, i: int) -> None:
        msgs, self.inbox[i] = self.inbox[i], []
        self.p(f"> {i} receiving messages")
        for m in msgs:
            self.p("  " + describe_message(m))
            try:
                self.nodes[i].step(m)
            except RaftError as e:
                self.p(f"  error: {e}")


# ---- the file format ---------------------------------------------------------------


def parse(text: str) -> list:
    """[(comments, command, expected output lines)]"""
    blocks = []
    for chunk in text.strip("\n").split("\n\n"):
        lines = chunk.split("\n")
        comments = [ln for ln in lines if ln.startswith("#")]
        rest = [ln for ln in lines if not ln.startswith("#")]
        if not rest:
            blocks.append((comments, None, []))
            continue
        assert rest[0].startswith("> "), f"a block must start with '> command': {rest[0]!r}"
        blocks.append((comments, rest[0][2:], rest[1:]))
    return blocks


def render(blocks) -> str:
    out = []
    for comments, cmd, output in blocks:
        lines = list(comments)
        if cmd is not None:
            lines.append("> " + cmd)
            lines.extend(output)
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def run_file(path: Path) -> tuple:
    """(expected text, actual text) of one transcript."""
    text = path.read_text()
    env = Env()
    blocks = []
    for comments, cmd, _ in parse(text):
        blocks.append((comments, cmd, env.run(cmd) if cmd is not None else []))
    return text, render(blocks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.raft.transcript")
    p.add_argument("--rewrite", action="store_true", help="store the current output as expected")
    p.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    paths = [Path(f) for f in args.files] or sorted(TESTDATA.glob("*.txt"))
    bad = 0
    for path in paths:
        want, got = run_file(path)
        if want != got:
            if args.rewrite:
                path.write_text(got)
                print(f"rewrote {path.name}")
            else:
                print(f"DIFFERS {path.name}")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
