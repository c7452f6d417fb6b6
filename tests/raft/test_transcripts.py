"""Run every transcript in testdata/ (rewrite: python -m tests.raft.transcript --rewrite)."""

from __future__ import annotations

import difflib

import pytest

from tests.raft.transcript import TESTDATA, run_file


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path):
    want, got = run_file(path)
    if want != got:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "expected", "actual"))
        pytest.fail(f"{path.name} differs (python -m tests.raft.transcript --rewrite, then review):\n{diff}")


def test_transcripts_exist():
    names = {p.stem for p in TESTDATA.glob("*.txt")}
    assert {"prevote", "checkquorum", "leader_transfer", "read_index", "learners", "joint_consensus",
            "snapshot", "flow_control"} <= names
