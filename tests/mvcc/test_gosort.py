"""go_sort reproduces Go 1.16 sort.Sort: a correct sort, with etcd's tie order."""

import random

import pytest

from trietcd.mvcc.gosort import go_sort, go_sort_reverse


@pytest.mark.parametrize("seed", range(40))
def test_sorts(seed):
    rng = random.Random(seed)
    data = [rng.randint(0, rng.choice([3, 50, 10**6])) for _ in range(rng.randint(0, 300))]
    got = list(data)
    go_sort(got, lambda a, b: a < b)
    assert got == sorted(data)
    got = list(data)
    go_sort_reverse(got, lambda a, b: a < b)
    assert got == sorted(data, reverse=True)


def test_heapsort_fallback_on_adversarial_depth():
    # Many equal and few distinct values push quicksort through every branch.
    data = [(i * 7919) % 13 for i in range(2000)]
    got = list(data)
    go_sort(got, lambda a, b: a < b)
    assert got == sorted(data)


def test_ties_are_not_stable():
    # Go's sort.Sort is not stable; stability here would mean a wrong tie order.
    data = [(i % 3, i) for i in range(40)]
    got = list(data)
    go_sort(got, lambda a, b: a[0] < b[0])
    assert [x[0] for x in got] == sorted(x[0] for x in data)
    assert got != sorted(data, key=lambda x: x[0])
