"""progress: the inflights window and the probe/replicate/snapshot states."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from trietcd.raft.progress import Inflights, Progress, ProgressState


def contents(inf: Inflights) -> list:
    return list(inf._buffer)


# ---- Inflights ------------------------------------------------------------------


def test_inflights_add_until_full():
    inf = Inflights(3)
    for i, last in enumerate((4, 7, 9), 1):
        assert not inf.full()
        inf.add(last)
        assert inf.count == i
    assert inf.full()
    assert contents(inf) == [4, 7, 9]


def test_inflights_add_into_full_window_is_refused():
    inf = Inflights(2)
    inf.add(1)
    inf.add(2)
    with pytest.raises(AssertionError, match="cannot add into a Full inflights"):
        inf.add(3)
    assert contents(inf) == [1, 2]


def test_inflights_free_le_releases_a_prefix():
    inf = Inflights(10)
    for last in range(1, 11):
        inf.add(last)
    inf.free_le(0)  # older than everything: nothing freed
    assert inf.count == 10
    inf.free_le(4)
    assert contents(inf) == list(range(5, 11))
    assert not inf.full()
    inf.free_le(8)
    assert contents(inf) == [9, 10]
    inf.free_le(8)  # stale acks free nothing more
    assert contents(inf) == [9, 10]
    inf.free_le(100)
    assert inf.count == 0


def test_inflights_free_le_between_entries():
    """An ack that falls between two message ends frees only the messages it covers."""
    inf = Inflights(5)
    for last in (3, 6, 9):
        inf.add(last)
    inf.free_le(7)
    assert contents(inf) == [9]


def test_inflights_free_first_one_and_reset():
    inf = Inflights(3)
    inf.free_first_one()  # empty: nothing happens
    for last in (5, 6, 7):
        inf.add(last)
    inf.free_first_one()
    assert contents(inf) == [6, 7]
    assert not inf.full()
    inf.reset()
    assert inf.count == 0 and not inf.full()
    inf.add(1)  # usable again after reset
    assert contents(inf) == [1]


def test_inflights_clone_is_independent():
    inf = Inflights(3)
    inf.add(1)
    c = inf.clone()
    c.add(2)
    assert contents(inf) == [1] and contents(c) == [1, 2]


@settings(derandomize=True, max_examples=300, database=None, deadline=None)
@given(st.integers(min_value=1, max_value=8),
       st.lists(st.tuples(st.sampled_from(["add", "free", "one", "reset"]), st.integers(0, 5))))
def test_inflights_matches_a_plain_list(size, ops):
    """The window behaves like a list of increasing indexes capped at `size`."""
    inf, model, last = Inflights(size), [], 0
    for op, n in ops:
        if op == "add":
            if len(model) >= size:
                assert inf.full()
                continue
            last += n + 1
            inf.add(last)
            model.append(last)
        elif op == "free":
            to = last - n
            inf.free_le(to)
            model = [x for x in model if x > to]
        elif op == "one":
            inf.free_first_one()
            model = model[1:]
        else:
            inf.reset()
            model = []
        assert contents(inf) == model
        assert inf.count == len(model)
        assert inf.full() == (len(model) >= size)


# ---- Progress ------------------------------------------------------------------------


def new_progress(state=ProgressState.PROBE, match=0, next=1, size=256, pending=0) -> Progress:
    pr = Progress(match, next, Inflights(size))
    pr.state = state
    pr.pending_snapshot = pending
    return pr


def test_is_paused_by_state():
    probe = new_progress(ProgressState.PROBE)
    assert not probe.is_paused()
    probe.probe_sent = True
    assert probe.is_paused()

    repl = new_progress(ProgressState.REPLICATE, size=1)
    assert not repl.is_paused()
    repl.inflights.add(3)
    assert repl.is_paused()  # only a full window pauses replication

    assert new_progress(ProgressState.SNAPSHOT, pending=10).is_paused()  # always


def test_maybe_update_resumes_a_paused_probe():
    pr = new_progress(match=2, next=5)
    pr.probe_sent = True
    assert pr.maybe_update(3)
    assert (pr.match, pr.next, pr.probe_sent) == (3, 5, False)
    assert not pr.maybe_update(2)  # old news: match never moves back
    assert (pr.match, pr.next) == (3, 5)
    assert pr.maybe_update(7)
    assert (pr.match, pr.next) == (7, 8)  # next follows a match past it


def test_maybe_update_does_not_resume_on_old_news():
    pr = new_progress(match=4, next=5)
    pr.probe_sent = True
    assert not pr.maybe_update(4)
    assert pr.probe_sent


def test_become_probe_from_replicate_restarts_after_match():
    pr = new_progress(ProgressState.REPLICATE, match=1, next=5)
    pr.inflights.add(4)
    pr.become_probe()
    assert (pr.state, pr.match, pr.next, pr.inflights.count) == (ProgressState.PROBE, 1, 2, 0)


def test_become_probe_from_snapshot_starts_after_the_snapshot():
    pr = new_progress(ProgressState.SNAPSHOT, match=1, next=5, pending=10)
    pr.become_probe()
    assert (pr.state, pr.match, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 1, 11, 0)
    # A failed snapshot is reported by clearing pending_snapshot first.
    pr = new_progress(ProgressState.SNAPSHOT, match=1, next=5, pending=0)
    pr.become_probe()
    assert pr.next == 2
    # A match past the snapshot wins.
    pr = new_progress(ProgressState.SNAPSHOT, match=12, next=13, pending=10)
    pr.become_probe()
    assert pr.next == 13


def test_become_replicate_and_snapshot():
    pr = new_progress(match=1, next=5)
    pr.probe_sent = True
    pr.become_replicate()
    assert (pr.state, pr.match, pr.next, pr.probe_sent) == (ProgressState.REPLICATE, 1, 2, False)
    pr.inflights.add(2)
    pr.become_snapshot(10)
    assert (pr.state, pr.match, pr.pending_snapshot, pr.inflights.count) == (ProgressState.SNAPSHOT, 1, 10, 0)


def test_optimistic_update_moves_only_next():
    pr = new_progress(ProgressState.REPLICATE, match=3, next=4)
    pr.optimistic_update(9)
    assert (pr.match, pr.next) == (3, 10)


@pytest.mark.parametrize(
    "state, match, next, rejected, hint, ok, want_next",
    [
        # Replicate: stale rejections (at or below match) are ignored...
        (ProgressState.REPLICATE, 5, 10, 5, 5, False, 10),
        (ProgressState.REPLICATE, 5, 10, 4, 4, False, 10),
        # ...a fresh one restarts right after match, whatever the hint.
        (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),
        (ProgressState.REPLICATE, 0, 10, 9, 2, True, 1),
        # Probe: only a rejection of the last probe (next-1) counts.
        (ProgressState.PROBE, 0, 10, 5, 5, False, 10),
        (ProgressState.PROBE, 0, 10, 9, 9, True, 9),
        (ProgressState.PROBE, 0, 10, 9, 3, True, 4),  # the hint skips ahead
        (ProgressState.PROBE, 0, 10, 9, 20, True, 9),  # never forward of the rejection
        (ProgressState.PROBE, 0, 1, 0, 0, True, 1),  # never below 1
    ],
)
def test_maybe_decr_to(state, match, next, rejected, hint, ok, want_next):
    pr = new_progress(state, match=match, next=next)
    pr.probe_sent = True
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == want_next
    if ok and state is ProgressState.PROBE:
        assert not pr.probe_sent  # a rejection is an answer: probe again
