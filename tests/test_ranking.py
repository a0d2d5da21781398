"""The per-class host ranking answers exactly what a scan of every host in tie order would,
however hosts change, classes come and go, and the kept heaps are dropped and rebuilt."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fractui.sched.ranking import Ranking


def scan(order, score, fits):
    best = None
    for i in order:
        s = score(i)
        if s is not None and fits(i) and (best is None or s > best[1]):
            best = (i, s)
    return best


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000), keep=st.integers(1, 3),
       steps=st.integers(1, 120))
def test_the_ranking_answers_as_a_scan_would(n, seed, keep, steps):
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    ranking = Ranking(order, keep=keep)
    state = [rng.randrange(5) for _ in range(n)]  # a host's state, as the caller sees it
    room = [rng.randrange(3) for _ in range(n)]  # what the class does not fix (the RAM)
    for _ in range(steps):
        if rng.random() < 0.4:
            i = rng.randrange(n)
            state[i] = rng.randrange(5)
            room[i] = rng.randrange(3)
            ranking.changed(i)
            continue
        cls = rng.randrange(4)
        need = rng.randrange(3)

        def score(i, cls=cls):  # None: the class cannot go there
            v = (state[i] * (cls + 1) + cls) % 7
            return None if v == 0 else v

        def fits(i, need=need):
            return room[i] >= need

        got = ranking.best(cls, lambda i: None if score(i) is None else (score(i), i),
                           fits)
        want = scan(order, score, fits)
        assert (None if got is None else (got, score(got))) == want


def test_a_long_run_of_changes_stays_bounded_and_right():
    """More changes than the log keeps: heaps far behind are rebuilt, the answer stays right."""
    n = 5
    order = [3, 1, 4, 0, 2]
    ranking = Ranking(order, keep=2)
    value = [1] * n
    for step in range(5000):
        i = step % n
        value[i] = (step * 7) % 11
        ranking.changed(i)
        if step % 97 == 0:
            got = ranking.best("c", lambda j: (value[j], j), lambda j: True)
            assert got is not None
            best = max(value)
            assert got == min((j for j in range(n) if value[j] == best), key=order.index)
    assert len(ranking._log) <= 2 * n + 1024
