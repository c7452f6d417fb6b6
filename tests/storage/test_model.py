"""Random transactions against a dict model (bbolt `simulation_test.go` in spirit).

Puts, deletes, nested buckets, cursor walks both ways, cursor deletes,
rollbacks, reopening, compaction; `Tx.check()` after every commit; readers
opened along the way must keep seeing their snapshot while writers commit.
Hypothesis runs derandomized, so a failure replays.
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from storage import DB, IncompatibleValueError, MemoryFile, compact
from storage_helpers import dump

TOP = [b"a", b"b", b"c"]
NESTED = [b"n1", b"n2"]
KEYS = [b"k%02d" % i for i in range(48)] + [b"n1"]
value_st = st.one_of(st.binary(max_size=40), st.binary(min_size=200, max_size=400),
                     st.builds(lambda n: b"O" * n, st.integers(4000, 9000)))
path_st = st.one_of(st.tuples(st.sampled_from(TOP)),
                    st.tuples(st.sampled_from(TOP), st.sampled_from(NESTED)))
op_st = st.one_of(
    st.tuples(st.just("put"), path_st, st.sampled_from(KEYS), value_st),
    st.tuples(st.just("put_many"), path_st, st.integers(0, 47), st.integers(1, 60)),
    st.tuples(st.just("delete"), path_st, st.sampled_from(KEYS)),
    st.tuples(st.just("delete_range"), path_st, st.integers(0, 47), st.integers(1, 48)),
    st.tuples(st.just("create"), path_st),
    st.tuples(st.just("drop"), path_st),
    st.tuples(st.just("cursor_delete"), path_st, st.integers(0, 3)),
)


def model_bucket(model, path):
    b = model
    for name in path:
        if not isinstance(b.get(name), dict):
            return None
        b = b[name]
    return b


def db_bucket(tx, path):
    b = tx.bucket(path[0])
    for name in path[1:]:
        if b is None:
            return None
        b = b.bucket(name)
    return b


def apply(tx, model, op):
    kind, path = op[0], op[1]
    parent_path, name = path[:-1], path[-1]
    if kind == "create":
        parent = model_bucket(model, parent_path) if parent_path else model
        if parent is None or name in parent:
            return
        parent[name] = {}
        if parent_path:
            db_bucket(tx, parent_path).create_bucket(name)
        else:
            tx.create_bucket(name)
        return
    if kind == "drop":
        parent = model_bucket(model, parent_path) if parent_path else model
        if parent is None or not isinstance(parent.get(name), dict):
            return
        del parent[name]
        if parent_path:
            db_bucket(tx, parent_path).delete_bucket(name)
        else:
            tx.delete_bucket(name)
        return
    m = model_bucket(model, path)
    b = db_bucket(tx, path)
    assert (m is None) == (b is None)
    if m is None:
        return
    if kind == "put":
        key, value = op[2], op[3]
        if isinstance(m.get(key), dict):
            try:
                b.put(key, value)
            except IncompatibleValueError:
                return
            raise AssertionError("put over a bucket was accepted")
        m[key] = value
        b.put(key, value)
    elif kind == "put_many":
        for i in range(op[2], op[2] + op[3]):
            key = b"m%04d" % i
            m[key] = b"v%d" % i * 20
            b.put(key, m[key])
    elif kind == "delete":
        key = op[2]
        if isinstance(m.get(key), dict):
            return
        m.pop(key, None)
        b.delete(key)
    elif kind == "delete_range":
        for key in [b"m%04d" % i for i in range(op[2], op[2] + op[3])] + KEYS[op[2]:op[2] + op[3]]:
            if not isinstance(m.get(key), dict):
                m.pop(key, None)
                b.delete(key)
    elif kind == "cursor_delete":
        # delete every `step`-th plain value while walking (the cursor keeps its place)
        step = op[2] + 1
        c = b.cursor()
        kv = c.first()
        i = 0
        while kv is not None:
            if kv[1] is not None and i % step == 0:
                c.delete()
                del m[kv[0]]
            i += 1
            kv = c.next()


def walk_both_ways(bucket, expected: dict):
    c = bucket.cursor()
    forward = []
    kv = c.first()
    while kv is not None:
        forward.append(kv[0])
        kv = c.next()
    assert forward == sorted(expected)
    backward = []
    kv = c.last()
    while kv is not None:
        backward.append(kv[0])
        kv = c.prev()
    assert backward == forward[::-1]
    for key in expected:
        if isinstance(expected[key], dict):
            walk_both_ways(bucket.bucket(key), expected[key])
        else:
            assert bucket.get(key) == expected[key]
            assert c.seek(key) == (key, expected[key])


def _size_class(model) -> str:
    n = sum(len(v) for v in model.values())
    return "0-9" if n < 10 else "10-99" if n < 100 else "100+"


class PageFileMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.no_sync = False
        self.file = MemoryFile()
        self.db = DB(self.file, page_size=1024)
        self.model: dict = {b"a": {}, b"b": {b"n1": {}}}
        self.readers: list = []
        with self.db.update() as tx:
            tx.create_bucket(b"a")
            tx.create_bucket(b"b").create_bucket(b"n1")

    @rule(ops=st.lists(op_st, min_size=1, max_size=12), commit=st.booleans())
    def write_tx(self, ops, commit):
        model = copy.deepcopy(self.model)
        tx = self.db.begin(writable=True)
        for op in ops:
            apply(tx, model, op)
        if commit:
            tx.commit()
            self.model = model
            with self.db.view() as rtx:
                assert rtx.check() == []
            event(f"keys after commit: {_size_class(model)}")
        else:
            tx.rollback()
        assert self.db.stats()["open_tx_n"] == len(self.readers)

    @precondition(lambda self: len(self.readers) < 3)
    @rule()
    def open_reader(self):
        self.readers.append((self.db.begin(), copy.deepcopy(self.model)))

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 2))
    def close_reader(self, which):
        tx, snapshot = self.readers.pop(which % len(self.readers))
        assert dump(tx) == snapshot
        assert tx.check() == []
        tx.rollback()

    @rule()
    def walk(self):
        with self.db.view() as tx:
            assert tx.bucket_names() == sorted(self.model)
            for name in self.model:
                walk_both_ways(tx.bucket(name), self.model[name])

    def _close_readers(self):
        for tx, snapshot in self.readers:
            assert dump(tx) == snapshot
            tx.rollback()
        self.readers = []

    @rule(no_sync=st.booleans())
    def reopen(self, no_sync):
        self._close_readers()
        self.no_sync = no_sync
        self.file = MemoryFile(bytes(self.file.data))
        self.db = DB(self.file, no_freelist_sync=no_sync)
        with self.db.view() as tx:
            assert tx.check() == []

    @rule()
    def compact(self):
        self._close_readers()
        dst = MemoryFile()
        new = DB(dst, page_size=1024, no_freelist_sync=self.no_sync)
        compact(self.db, new, tx_max_bytes=2000)
        self.db, self.file = new, dst
        with self.db.view() as tx:
            assert tx.check() == []

    @invariant()
    def matches_model(self):
        with self.db.view() as tx:
            assert dump(tx) == self.model

    def teardown(self):
        self._close_readers()


PageFileMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
test_page_file_model = PageFileMachine.TestCase
