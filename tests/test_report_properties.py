"""The report's numbers against what they are defined to be, over histories hypothesis makes:
attempts on GPUs of their own (shares, whole GPUs, two-GPU jobs) that start, end or run on,
and the GPU time the lease holder's clock (usage.gputime.GpuClock, the recorder the scheduler
uses) sums of hosts that go away and come back, and of a scheduler that stops for a while,
at any moment of a bucket. Worked out again
here the plain way — second by second where the report sums spans, event by event where it
sweeps — and checked: a GPU's online time in a range is the time it was seen in it (never
more than the range: never above 100 %), held while online and idle are parts of it, the
total is its groups' sums, and a range cut in two reads as the two halves together."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fractui.sched.fleetview import HostView
from fractui.store.model import OUTCOMES, RUNNING, GpuTime, Job, Sampled, Slot, UsageRecord
from fractui.usage.gputime import GAP_S, GpuClock
from fractui.usage.report import BY, build, earliest

HOSTS = ("a", "b")
GPUS = 3  # per host
LOOK_S = 10.0
END = 1500.0  # the history's last look
H = 3600.0


@dataclass(frozen=True)
class History:
    records: Tuple[UsageRecord, ...]
    away: Dict[str, Tuple[Tuple[float, float], ...]]  # each host's times away, [from, to)
    bucket_s: float
    down: Tuple[float, float]  # no scheduler looks then, [from, to)


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Up to six attempts, each on GPUs of its own (so no GPU is charged more than whole, as
    placement keeps it), and each host away for a few stretches of the looks."""
    free = [(h, g) for h in HOSTS for g in range(GPUS)]
    records = []
    for job in range(1, draw(st.integers(0, 6)) + 1):
        host = draw(st.sampled_from(HOSTS))
        mine = [g for h, g in free if h == host]
        if not mine:
            break
        k = draw(st.integers(1, min(2, len(mine))))
        gpus = tuple(mine[:k])
        free = [f for f in free if f[0] != host or f[1] not in gpus]
        charge = float(k) if k > 1 else draw(st.sampled_from((0.25, 0.5, 3 / 7, 1.0)))
        start = draw(st.integers(0, 140)) * 10.0
        end = draw(st.one_of(st.none(), st.integers(int(start) // 10, 150).map(
            lambda t: t * 10.0)))
        util = draw(st.one_of(st.none(), st.integers(0, 100).map(float)))
        mib = draw(st.one_of(st.none(), st.integers(0, 20000).map(float)))
        sampled = Sampled(samples=0 if mib is None and util is None else 5,
                          memory_mean_mib=mib, util_samples=0 if util is None else 5,
                          util_mean=util)
        records.append(UsageRecord(
            job, 0, draw(st.sampled_from(("vision", "nlp", None))), "q%d" % (job % 2),
            draw(st.sampled_from(("ann", "bo"))), host, gpus, "L4", None, None, charge,
            start - draw(st.integers(0, 50)) * 10.0, start, end,
            None if end is None else draw(st.sampled_from(OUTCOMES)), sampled))
    away = {h: tuple(sorted(draw(st.lists(st.tuples(st.integers(0, 150), st.integers(1, 40))
                                          .map(lambda p: (p[0] * 10.0, p[0] * 10.0 + p[1] * 10))
                                          , max_size=3))))
            for h in HOSTS}
    down = draw(st.integers(0, 150)) * 10.0
    return History(tuple(records), away, draw(st.sampled_from((300.0, 450.0, 1800.0))),
                   (down, down + draw(st.integers(0, 100)) * 10.0))


def online(h: History, host: str, t: float) -> bool:
    return not any(a <= t < b for a, b in h.away[host])


def holding(h: History, t: float) -> List[Job]:
    """The jobs holding their slices at ``t``, as the lease holder's look sees them."""
    return [Job(r.job, r.queue, r.team, "j", ("x",), {}, RUNNING, 0.0, 0.0,
                slot=Slot(r.host, r.gpus, None, None, None, r.charge))
            for r in h.records if r.started_at <= t and (r.ended_at is None or t < r.ended_at)]


def looks(h: History) -> List[float]:
    """When the lease holder looks: every 10 s, but while no scheduler runs."""
    return [t for t in (i * LOOK_S for i in range(int(END / LOOK_S) + 1))
            if not h.down[0] <= t < h.down[1]]


def gpu_time(h: History) -> List[GpuTime]:
    """What the lease holder writes of this history: each host's GPUs looked at while it is
    online."""
    clock = GpuClock(h.bucket_s)
    for t in looks(h):
        clock.observe([HostView(host, "online" if online(h, host, t) else "offline",
                                hello={"gpus": []}, snapshot={"gpus": [
                                    {"index": g, "name": "L4", "processes": []}
                                    for g in range(GPUS)]}) for host in HOSTS],
                      holding(h, t), t)
    return clock.take()


def seen(h: History, host: str, since: float, until: float) -> float:
    """Seconds of [since, until) a GPU of ``host`` was seen online: between two looks that
    both found its host online, no further apart than GAP_S."""
    out = 0.0
    times = looks(h)
    for before, now in zip(times, times[1:]):
        if online(h, host, before) and online(h, host, now) and now - before <= GAP_S:
            out += max(0.0, min(now, until) - max(before, since))
    return out


def report(h: History, since: float, until: float, by: str = "team", now: float = 2000.0):
    """The report of [since, until) as ``fractui report`` makes it: of the records and GPU
    time the store reads for it, its means from where the store keeps anything."""
    kept = gpu_time(h)
    read = [r for r in h.records if r.started_at < until and (
        r.ended_at is None or r.ended_at >= since)]  # (the store's rule)
    return build(read, [t for t in kept if since - h.bucket_s <= t.bucket < until], since,
                 until, by, now, bucket_s=h.bucket_s, kept_from=earliest(h.records, kept))


RANGE = st.tuples(st.integers(0, 150), st.integers(1, 150)).map(
    lambda p: (p[0] * 10.0, p[0] * 10.0 + p[1] * 10.0))


@settings(max_examples=150)
@given(histories(), RANGE)
def test_a_gpus_online_time_in_a_range_is_the_time_it_was_seen_in_it(h, span):
    """By GPU: online hours are exactly the time the GPU was seen in the range, whatever its
    host's comings and goings within a bucket — so never more than the range (100 %) — and
    held while online and idle are parts of them."""
    since, until = span
    made = report(h, since, until, "gpu")
    groups = {g.key: g for g in made.groups}
    for host in HOSTS:
        for gpu in range(GPUS):
            g = groups.get("%s gpu%d" % (host, gpu))
            expect = seen(h, host, since, until)
            got = 0.0 if g is None or g.online_h is None else g.online_h * H
            assert got == pytest.approx(expect, abs=1e-6), (host, gpu, h)
            if g is not None and g.online_h is not None:
                assert g.online_h * H <= until - since + 1e-6
                assert g.held_online_h + g.idle_h <= g.online_h + 1e-9, g


@settings(max_examples=150)
@given(histories(), RANGE, st.sampled_from(BY))
def test_the_total_is_its_groups_sums(h, span, by):
    since, until = span
    made = report(h, since, until, by)
    t = made.total
    for field in ("held_h", "used_h", "unmeasured_h", "memory_gib_h"):
        assert sum(getattr(g, field) for g in made.groups) == pytest.approx(
            getattr(t, field), abs=1e-9), field
    if by in ("host", "model", "gpu"):
        for field in ("online_h", "held_online_h", "idle_h"):
            assert sum(getattr(g, field) or 0.0 for g in made.groups) == pytest.approx(
                getattr(t, field) or 0.0, abs=1e-9), field
    if by != "gpu":  # by GPU a 2-GPU attempt's wait and outcome are on each of its rows
        assert Counter(w for g in made.groups for w in g.waits_s) == Counter(t.waits_s)
        assert sum((Counter(g.outcomes) for g in made.groups), Counter()) == Counter(
            t.outcomes)
        assert sum(g.running for g in made.groups) == t.running


def _sum(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


@settings(max_examples=150)
@given(histories(), st.lists(st.integers(0, 160), min_size=3, max_size=3, unique=True))
def test_a_range_cut_in_two_reads_as_its_halves_together(h, cuts):
    """[a, c) against [a, b) and [b, c), all ended before now: hours, waits and outcomes add
    up, the GPUs' time too, the peaks are the greater of the halves', and the means over
    time the halves' weighted by the time each is of (from where the store keeps anything:
    where that is in the first half, the second is of all of its time — its means began at
    its first attempt or look instead, and [a, c) read as other than its halves)."""
    a, b, c = sorted(t * 10.0 for t in cuts)
    whole, first, second = report(h, a, c), report(h, a, b), report(h, b, c)
    for field in ("held_h", "used_h", "unmeasured_h", "memory_gib_h"):
        assert getattr(whole.total, field) == pytest.approx(
            getattr(first.total, field) + getattr(second.total, field), abs=1e-9), field
    for field in ("online_h", "held_online_h", "idle_h"):
        got, halves = getattr(whole.total, field), _sum(getattr(first.total, field),
                                                          getattr(second.total, field))
        assert (got is None) == (halves is None), field
        assert (got or 0.0) == pytest.approx(halves or 0.0, abs=1e-9), field
    assert Counter(whole.total.waits_s) == Counter(first.total.waits_s + second.total.waits_s)
    assert Counter(whole.total.outcomes) == Counter(first.total.outcomes) + Counter(
        second.total.outcomes)
    s, s1, s2 = whole.saving, first.saving, second.saving
    assert s.peak_demand == max(s1.peak_demand, s2.peak_demand)
    assert s.peak_used == max(s1.peak_used, s2.peak_used)
    assert second.start == max(b, whole.start) and first.start == min(whole.start, b)
    assert s.mean_demand * (c - whole.start) == pytest.approx(
        s1.mean_demand * (b - first.start) + s2.mean_demand * (c - second.start), abs=1e-6)
    assert s.mean_used * (c - whole.start) == pytest.approx(
        s1.mean_used * (b - first.start) + s2.mean_used * (c - second.start), abs=1e-6)


def demand_and_used(records: Sequence[UsageRecord], t: float, now: float) -> Tuple[int, int]:
    """Whole GPUs needed without sharing, and GPUs in use, at the moment ``t``."""
    on = [r for r in records if r.started_at <= t < (r.ended_at if r.ended_at is not None
                                                      else now)]
    return sum(max(1, len(r.gpus)) for r in on), len({(r.host, g) for r in on for g in r.gpus})


@settings(max_examples=150)
@given(histories(), RANGE)
def test_what_sharing_saved_is_the_demand_and_use_second_by_second(h, span):
    """Peak and mean whole-GPU demand and GPUs used, worked out 10 s by 10 s (every moment
    of these histories is a multiple of 10 s) from where the store keeps anything to the
    range's end, or now where it has not ended: the sweep's numbers."""
    since, until = span
    now = 1700.0
    made = report(h, since, until, now=now)
    end = min(until, now)
    moments = [demand_and_used(h.records, t + 5.0, now) for t in range(int(made.start),
                                                                       int(end), 10)]
    # (each step's middle: nothing starts or ends inside one)
    peak_demand = max((d for d, _ in moments), default=0)
    peak_used = max((u for _, u in moments), default=0)
    assert (made.saving.peak_demand, made.saving.peak_used) == (peak_demand, peak_used)
    if end > made.start:
        assert made.saving.mean_demand == pytest.approx(
            sum(d for d, _ in moments) * 10 / (end - made.start), abs=1e-9)
        assert made.saving.mean_used == pytest.approx(
            sum(u for _, u in moments) * 10 / (end - made.start), abs=1e-9)
