"""The usage report of a time range: per group (team, queue, user, host, GPU model or GPU) the
GPU-hours held (fractions as charged) and used, memory-hours, waits, jobs by outcome, and the
GPUs' idle hours; for the whole fleet, the headline — the whole GPUs the same jobs would have
needed without sharing, against the GPUs they used — and the same over time for plots.

Definitions (docs/usage.md says them for users):
- an attempt's time in the range is its time holding its slice, clipped to [since, until),
  a running one's up to ``now``; of a range that begins before where the retention forgot
  usage, every number is of the time from there (``start``), and of one all before it none
  is known (``Report.known``): the store keeps only the attempts that ran on past it;
- held: its charge × that time; used: its mean SM utilisation (percent of one GPU) × that
  time, where NVML measured it — on MIG it does not, and that time is counted as unmeasured,
  never as 0; memory: its mean sampled GPU memory × that time (not known, never 0, for a
  group none of whose attempts' memory was sampled) — memory in use, as its agent sampled it:
  an attempt that ended before its first sample, or whose samples were never read, is in
  none of it, so its held GPU-hours are counted apart (``memory_unsampled_h``) and it is
  named (``memory_unsampled``), never read as having used none;
- waits: of the attempts that started in the range, from when each began to wait (a late
  copy aside: it served no one's wait); none of a range not begun (``since`` now or later);
- outcomes: of the attempts that ended in the range (one the store closed whose host's
  clock dated its end at now or after: of the range that reaches now alone, its end read
  as now; none of a range not begun; ``late``: a late
  copy, killed — a launch that reached its agent after the store moved past its attempt,
  charged to its job's team for the time it held its slice); ``running``: those holding a
  slice at its end (now, for a range not over, never one the store closed; none for one not
  begun); ``unstarted``: the jobs that ended in the range (cancelled, failed) waiting, their
  last attempt never having held a slice — in no group, as they have no usage record;
- without sharing, each attempt would have needed a whole GPU of its own for each GPU it used
  (a fraction or a MIG slice: one); the GPUs used at a time are those with an attempt on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from fractui.config import UsageSettings
from fractui.store.model import (CANCELLED, FAILED, OUTCOMES, GpuTime, Job, Spans,
                                 UsageRecord)
from fractui.usage import BY
from fractui.words import count

HOUR = 3600.0
NONE = "(none)"  # the group of attempts with no team (or no model)


@dataclass
class Group:
    """The sums of one group. Hours are GPU-hours (memory: GiB-hours). ``unmeasured_h``: the
    held GPU-hours whose utilisation NVML gave no measure of (MIG slices, or not sampled
    yet). ``online_h``, ``held_online_h`` and ``idle_h``: of the group's GPUs, where a group
    is GPUs (by host, model or GPU) and GPU time is kept of them, else None (not known; the
    total's: of every GPU, in a report of everyone's jobs) — from their GPU time, so the
    part held is of the same buckets as the time online (an attempt's hours while its host
    was away, or outside the buckets read, are in ``held_h`` only). ``memory_unsampled_h``:
    the held GPU-hours of attempts whose memory was never sampled, which ``memory_gib_h``
    leaves out, and ``memory_unsampled`` those attempts, as (job, attempt)."""

    key: str
    held_h: float = 0.0
    used_h: float = 0.0
    unmeasured_h: float = 0.0
    memory_gib_h: float = 0.0
    waits_s: List[float] = field(default_factory=list)
    outcomes: Dict[str, int] = field(default_factory=dict)
    running: int = 0
    online_h: Optional[float] = None
    held_online_h: Optional[float] = None
    idle_h: Optional[float] = None
    memory_sampled: bool = False
    memory_unsampled_h: float = 0.0
    memory_unsampled: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def measured_h(self) -> float:
        return self.held_h - self.unmeasured_h

    @property
    def used(self) -> Optional[float]:
        """``used_h``, or None where none of what the group held was measured (MIG slices,
        attempts not sampled yet): not known, never 0 — the table's dash, --json's null."""
        return None if self.unmeasured_h > 0 and self.measured_h <= 0 else self.used_h

    @property
    def memory(self) -> Optional[float]:
        """``memory_gib_h``, or None where the group held GPUs and no attempt's memory was
        sampled: not known, never 0."""
        return None if self.held_h > 0 and not self.memory_sampled else self.memory_gib_h

    @property
    def wait_median_s(self) -> Optional[float]:
        return percentile(self.waits_s, 50)

    @property
    def wait_p95_s(self) -> Optional[float]:
        return percentile(self.waits_s, 95)

    @property
    def empty(self) -> bool:
        """Whether nothing of the range is in the group: no hour held, no wait, outcome or
        attempt running at its end, and no GPU time — the attempts still open read for a
        range that has not begun. Such a group is none: the table says "no job held a GPU",
        and --json and --csv said the same groups as rows of zeros."""
        return not (self.held_h or self.used_h or self.memory_gib_h or self.waits_s or
                    self.outcomes or self.running) and self.online_h is None

    def record(self, known: bool = True) -> Dict[str, object]:
        """Its sums; ``known`` False (Report.known): every one of what its attempts held is
        null, its GPUs' time as it is (none is kept where the retention forgot)."""
        if not known:
            return dict(self.record(), held_gpu_hours=None, used_gpu_hours=None,
                        unmeasured_gpu_hours=None, memory_gib_hours=None,
                        unsampled_memory_gpu_hours=None, unsampled_memory_attempts=None,
                        waits=None,
                        wait_median_s=None, wait_p95_s=None,
                        outcomes={o: None for o in OUTCOMES}, running=None)
        return {"key": self.key, "held_gpu_hours": round(self.held_h, 6),
                "used_gpu_hours": _rounded(self.used),
                "unmeasured_gpu_hours": round(self.unmeasured_h, 6),
                "memory_gib_hours": _rounded(self.memory),
                "unsampled_memory_gpu_hours": round(self.memory_unsampled_h, 6),
                "unsampled_memory_attempts": len(self.memory_unsampled),
                "waits": len(self.waits_s), "wait_median_s": _rounded(self.wait_median_s),
                "wait_p95_s": _rounded(self.wait_p95_s),
                "outcomes": {o: self.outcomes.get(o, 0) for o in OUTCOMES},
                "running": self.running, "online_gpu_hours": _rounded(self.online_h),
                "held_online_gpu_hours": _rounded(self.held_online_h),
                "idle_gpu_hours": _rounded(self.idle_h)}


@dataclass(frozen=True)
class Saving:
    """Whole GPUs the jobs of the range would have needed without sharing (``demand``) and
    the GPUs they used, at the busiest moment and on average over the range."""

    peak_demand: int
    peak_used: int
    mean_demand: float
    mean_used: float

    @property
    def saved_peak(self) -> int:
        return self.peak_demand - self.peak_used

    @property
    def saved_mean(self) -> float:
        return self.mean_demand - self.mean_used

    def record(self) -> Dict[str, object]:
        return {"peak_demand_gpus": self.peak_demand, "peak_used_gpus": self.peak_used,
                "saved_gpus_at_peak": self.saved_peak,
                "mean_demand_gpus": round(self.mean_demand, 6),
                "mean_used_gpus": round(self.mean_used, 6),
                "saved_gpus_mean": round(self.saved_mean, 6)}


@dataclass(frozen=True)
class Whose:
    """Whose attempts a report counts: one user's (who submitted them, as the audit says),
    one team's (the team charged), both, or (the default) everyone's. The GPUs' own time is
    the fleet's, not any user's or team's, so a report of some jobs leaves it out."""

    user: Optional[str] = None
    team: Optional[str] = None

    @property
    def everyone(self) -> bool:
        return self.user is None and self.team is None

    def has(self, user: str, team: Optional[str]) -> bool:
        """Whether an attempt (or a job) ``user`` submitted, charged to ``team``, is counted."""
        return self.user in (None, user) and self.team in (None, team)

    def words(self) -> str:
        """Whose jobs, as the report's heading says it ("alice's jobs in team vision")."""
        if self.everyone:
            return "every job"
        mine = "%s's jobs" % self.user if self.user is not None else "the jobs"
        return mine + ("" if self.team is None else " in team %s" % self.team)

    def record(self) -> Dict[str, Optional[str]]:
        return {"user": self.user, "team": self.team}


@dataclass(frozen=True)
class Report:
    since: float
    until: float
    by: str
    groups: List[Group]
    total: Group
    saving: Saving
    start: float
    """Where the store's usage in the range begins (``since``, or later for a younger store)."""
    unstarted: Dict[str, int] = field(default_factory=dict)
    """Jobs that ended in the range without starting, by how (``unstarted_jobs``)."""
    whose: Whose = Whose()
    """Whose jobs it counts (everyone's: the GPUs' time too)."""
    gpu_buckets: FrozenSet[float] = frozenset()
    """The GPU time buckets with time in the range (``bucket_part``) that hold a look at a
    GPU: none, and the GPUs' time is not known (None), never 0."""
    forgotten: bool = False
    """Whether the range begins before where the retention last forgot usage
    (Store.usage_forgotten_before): of its time before that, the store keeps only the
    attempts that ran on past it, so every number is of the time from ``start``."""

    @property
    def known(self) -> bool:
        """Whether what its jobs held, used and waited, how they ended and what sharing saved
        are known: not of a range all before where the retention forgot (``forgotten``),
        of which the store keeps only the attempts that ran on past it (null in --json,
        never 0). One all before a store younger than it is known: no job held a GPU."""
        return not (self.forgotten and self.start >= self.until)

    def ended_waiting(self) -> str:
        """The jobs that ended waiting, in words ("3 jobs (2 cancelled, 1 failed)"), or ""."""
        if not self.unstarted:
            return ""
        return "%s (%s)" % (count(sum(self.unstarted.values()), "job"), ", ".join(
            "%d %s" % (self.unstarted[o], o) for o in UNSTARTED if self.unstarted.get(o)))

    def record(self) -> Dict[str, object]:
        return {"since": self.since, "until": self.until, "start": self.start, "by": self.by,
                "groups": [g.record() for g in self.groups],
                "total": self.total.record(self.known),
                "saving": self.saving.record() if self.known else None,
                "ended_unstarted": {o: self.unstarted.get(o, 0) for o in UNSTARTED},
                "memory_unsampled": [{"job": j, "attempt": a} for j, a in
                                     self.total.memory_unsampled] if self.known else None,
                "whose": self.whose.record()}


def build(records: Iterable[UsageRecord], gpu_time: Iterable[GpuTime], since: float,
          until: float, by: str, now: float, ended: Iterable[Job] = (),
          whose: Whose = Whose(), bucket_s: float = UsageSettings.bucket_s,
          kept_from: Optional[float] = None, forgot: Optional[float] = None) -> Report:
    """The report of [since, until) grouped ``by`` one of BY; ``now`` ends running attempts;
    ``ended``: jobs that ended (any may be given), for ``unstarted_jobs``; ``whose``: the
    attempts and jobs counted (everyone's: the GPUs' time too); ``bucket_s``: the length of
    the GPU time's buckets ([usage] bucket_s), each counted for its part in the range
    (``bucket_part``), as an attempt's held time is clipped to it.
    Its means over time start where the store keeps anything (``start``): a store younger
    than the range (the demo's, a new fleet's) is not averaged with the time before it
    existed — the store's, whoever's jobs are counted. ``kept_from``: where the store's
    oldest usage begins (Store.usage_begins: where the retention forgot, though an attempt
    that ran on past it is read from before); without it, the oldest of what the range holds,
    which, where the store is older than the range and nothing is kept of its first part
    (no job held a GPU, no scheduler looked), averages over the rest alone. ``forgot``:
    where the retention last forgot usage (Store.usage_forgotten_before), None where it
    never did: a range begun before it is counted from ``start``, all of it (its held hours,
    waits, outcomes, as its means) — an attempt that ran on past the cut is kept with its
    time before it, every other attempt of that time is not."""
    if by not in BY:
        raise ValueError("cannot group by %r (one of %s)" % (by, ", ".join(BY)))
    records, gpu_time = list(records), list(gpu_time)
    reach: Dict[float, float] = {}  # each bucket's longest time online of one GPU
    for t in gpu_time:
        reach[t.bucket] = max(reach.get(t.bucket, 0.0), t.online_s)
    parts = [(t, seen_part(t, since, until) if t.seen_to is not None else
              bucket_part(t.bucket, bucket_s, since, until, now, reach[t.bucket]))
             for t in gpu_time]
    in_range = [(t, part) for t, part in parts if part > 0]
    first = earliest(records, [t for t, _ in in_range]) if kept_from is None else kept_from
    start = since if first is None else min(max(since, first), until)
    forgotten = forgot is not None and since < forgot
    counted = start if forgotten else since  # (where the attempts counted begin)
    if not whose.everyone:
        records = [r for r in records if whose.has(r.user, r.team)]
        in_range, ended = [], [j for j in ended if whose.has(j.user, j.team)]
    groups: Dict[str, Group] = {}
    total = Group("total")
    for r in records:
        for key, share in _keys(r, by):
            _add(groups.setdefault(key, Group(key)), r, share, counted, until, now)
        _add(total, r, 1.0, counted, until, now)
    gpu_keys = by in ("host", "model", "gpu")
    for t, part in in_range:
        _add_gpu_time(total, t, part)
        if gpu_keys:
            _add_gpu_time(groups.setdefault(_gpu_key(t, by), Group(_gpu_key(t, by))), t, part)
    # the GPUs' time of a report of some jobs (none of theirs), or of a range where no look
    # at a GPU is kept, stays None: not known, never 0
    kept = [g for g in groups.values() if not g.empty]
    return Report(since, until, by, sorted(kept, key=lambda g: (-g.held_h, g.key)),
                  total, saving(records, start, until, now), start,
                  unstarted_jobs(ended, since, until, now), whose,
                  frozenset(t.bucket for t, _ in in_range), forgotten)


def bucket_part(bucket: float, bucket_s: float, since: float, until: float, now: float,
                reach_s: float = 0.0) -> float:
    """The part of a GPU time bucket's seconds that is in [since, until): of the time it
    covers (from its start to its end), the part in the range, its seconds taken as spread
    evenly over it — the finest its sums say. Counted whole where they begin in the range
    instead, a range that began mid-bucket lost the bucket's first part, and its GPUs read
    online for less than its jobs held (held time is clipped to the range); one ending
    mid-bucket counted time after its end. A bucket still being filled covers the time its
    sums are known to reach, ``reach_s`` (the longest one GPU was online in it), not all of
    it to ``now``: they are written every FLUSH_S or less, and stop where no scheduler looks
    any more, and spread to ``now`` they read a range ending before now as having had less
    of them than they hold."""
    end = min(bucket + bucket_s, now)
    if end < bucket + bucket_s:
        end = min(end, bucket + reach_s)
    return _spread(((bucket, end),), since, until)


def seen_part(t: GpuTime, since: float, until: float) -> float:
    """The part of a GPU time bucket's seconds that is in [since, until), where it says when
    they were seen: spread over the stretches it was seen (``seen_spans``), or where those
    are not kept from its first look to its last (``seen_from`` to ``seen_to``), not over the
    bucket, so a GPU that came or went within it is counted where it was (bucket_part's
    spread read a GPU gone before a range began as online in it), and one away for a while
    within it is not counted while it was away."""
    if t.seen_spans is not None:
        return _spread(t.seen_spans, since, until)
    assert t.seen_from is not None and t.seen_to is not None
    return _spread(((t.seen_from, t.seen_to),), since, until)


def _spread(spans: Spans, since: float, until: float) -> float:
    """The part of seconds spread evenly over the stretches ``spans`` that is in [since,
    until); all or none of them where that time is a point (a bucket begun at now or after,
    by the holder's clock; a GPU seen once), by whether it is in the range."""
    length = sum(end - start for start, end in spans)
    if length <= 0:
        return 1.0 if any(since <= start < until for start, _ in spans) else 0.0
    return sum(max(0.0, min(end, until) - max(start, since)) for start, end in spans) / length


UNSTARTED = (CANCELLED, FAILED)
"""How a job can end without starting: cancelled while it waited, failed at its launches."""


def unstarted_jobs(jobs: Iterable[Job], since: float, until: float,
                   now: float) -> Dict[str, int]:
    """How many of ``jobs`` ended in [since, until) while waiting (``ended_in``) — their last
    attempt never held a slice, so no usage record has them: without this a range whose jobs
    were all cancelled while they waited reads as one where nothing was asked for."""
    out: Dict[str, int] = {}
    for job in jobs:
        if (job.state in UNSTARTED and job.started_at is None
                and ended_in(job.ended_at, since, until, now)):
            out[job.state] = out.get(job.state, 0) + 1
    return out


def _keys(r: UsageRecord, by: str) -> List[Tuple[str, float]]:
    """The groups an attempt counts in, with the share of it each gets (a k-GPU attempt by
    GPU: 1/k on each)."""
    if by == "gpu":
        return [("%s gpu%d" % (r.host, g), 1.0 / len(r.gpus)) for g in r.gpus] or [
            (r.host, 1.0)]
    value = {"team": r.team, "queue": r.queue, "user": r.user, "host": r.host,
             "model": r.model}[by]
    return [(value or NONE, 1.0)]


def _add_gpu_time(g: Group, t: GpuTime, part: float) -> None:
    """Adds ``part`` of a bucket's seconds (``bucket_part``)."""
    g.online_h = (g.online_h or 0.0) + part * t.online_s / HOUR
    g.held_online_h = (g.held_online_h or 0.0) + part * t.held_s / HOUR
    g.idle_h = (g.idle_h or 0.0) + part * t.idle_s / HOUR


def _gpu_key(t: GpuTime, by: str) -> str:
    return {"host": t.host, "model": t.model or NONE, "gpu": "%s gpu%d" % (t.host, t.gpu)}[by]


def held_s(r: UsageRecord, since: float, until: float, now: float) -> float:
    """Seconds of [since, until) the attempt held its slice, up to ``now``: a running one's,
    and one whose end its host's clock put after the store's now, counted no later than what
    sharing saved counts it (``saving``) and fair share does."""
    end = r.ended_at if r.ended_at is not None else now
    return max(0.0, min(end, until, now) - max(r.started_at, since))


def _add(g: Group, r: UsageRecord, share: float, since: float, until: float,
         now: float) -> None:
    seconds = held_s(r, since, until, now) * share
    hours = seconds / HOUR
    g.held_h += r.charge * hours
    s = r.sampled
    if s.util_mean is not None and s.util_samples:
        g.used_h += s.util_mean / 100 * hours
    else:
        g.unmeasured_h += r.charge * hours
    if s.memory_mean_mib is not None:
        g.memory_gib_h += s.memory_mean_mib / 1024 * hours
        g.memory_sampled = g.memory_sampled or hours > 0
    elif hours > 0:
        g.memory_unsampled_h += r.charge * hours
        g.memory_unsampled.append((r.job, r.attempt))
    if r.waits and dated_in(r.started_at, since, until, now):
        g.waits_s.append(r.waited_s)
    if r.outcome and ended_in(r.ended_at, since, until, now):
        g.outcomes[r.outcome] = g.outcomes.get(r.outcome, 0) + 1
    if running_at_end(r, since, until, now):
        g.running += 1


def reaches_now(since: float, until: float, now: float) -> bool:
    """Whether the range [since, until) has begun by ``now`` and not ended before it: the
    only ranges whose end is now as the report is made, of which the jobs waiting to start
    then are said. One that has not begun has nothing in it yet, running (``running_at_end``)
    or waiting; one that ended before now had waiting jobs the store does not keep."""
    return since < now <= until


def ended_in(ended_at: Optional[float], since: float, until: float, now: float) -> bool:
    """Whether an end the store keeps (None: none yet) is of [since, until) (``dated_in``):
    its host's clock may date it after now, though the store closed it by its own now at the
    latest."""
    return ended_at is not None and dated_in(ended_at, since, until, now)


def dated_in(at: float, since: float, until: float, now: float) -> bool:
    """Whether a moment an attempt's host dated (its start, its end) is of [since, until),
    read as ``min(at, now)``: a host's clock ahead of the store's may date it after now,
    which has not come. Dated in it, or at now in the range that reaches now
    (``reaches_now``: the default's and the TUI's, until now, which Store.usage reads such
    an attempt for); a range not begun (``since`` now or later) has none. Read as dated, a
    moment after now was in no range reaching now (until now: not before it), and one at now
    or after in [..., now) and [now, ...) both: of ranges end to end, each is of one."""
    if now <= since:
        return False
    when = min(at, now)
    return since <= when < until or (when == now and reaches_now(since, until, now))


def running_at_end(r: UsageRecord, since: float, until: float, now: float) -> bool:
    """Whether the attempt held its slice at the range's end — ``now`` for a range not over
    yet; none for a range that has not begun, of which nothing is known. At ``now``, an
    attempt the store holds open is running, even where its host's clock put its start
    later, and one it closed is not, whatever its host's clock put as its end (its outcome is
    the range's, ``ended_in``): each attempt read is one or the other, never both."""
    at = min(until, now)
    if at <= since or ended_in(r.ended_at, since, until, now):
        return False
    if at == now:
        return r.ended_at is None
    return r.started_at < at <= (r.ended_at if r.ended_at is not None else math.inf)


def unshared(gpus: Sequence[int]) -> int:
    """Whole GPUs an attempt on ``gpus`` would have needed without sharing: one of its own
    for each GPU it used (a share or a MIG slice: one)."""
    return max(1, len(gpus))


def gpus_in_use(host: str, gpus: Sequence[int]) -> List[Tuple[str, int]]:
    """The GPUs an attempt keeps in use, as (host, index); a record with none names its host."""
    return [(host, g) for g in gpus or (-1,)]


def saving(records: Sequence[UsageRecord], since: float, until: float, now: float) -> Saving:
    """Whole-GPU demand without sharing against the GPUs used, peak and time-weighted mean
    over [since, until) (a range still running is averaged up to ``now``)."""
    end = min(until, now)
    events: List[Tuple[float, int, UsageRecord]] = []
    for r in records:
        start, stop = max(r.started_at, since), min(r.ended_at if r.ended_at is not None
                                                    else now, end)
        if stop > start:
            events += [(start, 1, r), (stop, -1, r)]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same moment
    demand = 0
    on: Dict[Tuple[str, int], int] = {}
    peak_demand = peak_used = 0
    area_demand = area_used = 0.0
    last = since
    for t, step, r in events:
        area_demand += demand * (t - last)
        area_used += len(on) * (t - last)
        last = t
        demand += step * unshared(r.gpus)
        for key in gpus_in_use(r.host, r.gpus):
            on[key] = on.get(key, 0) + step
            if on[key] == 0:
                del on[key]
        peak_demand, peak_used = max(peak_demand, demand), max(peak_used, len(on))
    span = end - since
    if span <= 0:
        return Saving(peak_demand, peak_used, 0.0, 0.0)
    return Saving(peak_demand, peak_used, area_demand / span, area_used / span)


@dataclass(frozen=True)
class Series:
    """The range cut into ``len(starts)`` steps: per step, each team's mean GPUs held, held by
    attempts whose utilisation was measured (``measured``: so a plot of utilisation leaves out
    what NVML could not measure, never drawing it as 0) and used (measured only), the mean
    whole-GPU demand and GPUs used, and the median wait of the attempts that started in it
    (None where none did)."""

    starts: List[float]
    step_s: float
    held: Dict[str, List[float]]
    used: Dict[str, List[float]]
    demand: List[float]
    gpus_used: List[float]
    wait_median_s: List[Optional[float]]
    measured: Dict[str, List[float]]


def series(records: Sequence[UsageRecord], since: float, until: float, steps: int,
           now: float, by: str = "team") -> Series:
    """What ``build`` sums, over time: ``steps`` equal steps of [since, min(until, now))."""
    end = min(until, now)
    steps = max(1, steps)
    step = max(1e-9, (end - since) / steps)
    starts = [since + i * step for i in range(steps)]
    keys = sorted({k for r in records for k, _ in _keys(r, by)})
    held = {k: [0.0] * steps for k in keys}
    used = {k: [0.0] * steps for k in keys}
    measured = {k: [0.0] * steps for k in keys}
    demand, gpus_used, waits = [], [], []
    for i, t in enumerate(starts):
        for r in records:
            seconds = held_s(r, t, t + step, now)
            if seconds <= 0:
                continue
            for key, share in _keys(r, by):
                held[key][i] += r.charge * seconds * share / step
                if r.sampled.util_mean is not None and r.sampled.util_samples:
                    used[key][i] += r.sampled.util_mean / 100 * seconds * share / step
                    measured[key][i] += r.charge * seconds * share / step
        s = saving(records, t, t + step, now)
        demand.append(s.mean_demand)
        gpus_used.append(s.mean_used)
        waits.append(percentile([r.waited_s for r in records
                                 if r.waits and dated_in(r.started_at, t, t + step, now)],
                                50))
    return Series(starts, step, held, used, demand, gpus_used, waits, measured)


def earliest(records: Iterable[UsageRecord], gpu_time: Iterable[GpuTime]) -> Optional[float]:
    """When the oldest usage kept begins (an attempt's start, a GPU's first look in its time
    bucket, or the bucket's start where that is not known): where a range of "all that is
    kept" starts. None when nothing is kept."""
    return min([r.started_at for r in records] + [
        t.bucket if t.seen_from is None else t.seen_from for t in gpu_time], default=None)


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """The nearest-rank ``p``-th percentile, None of nothing."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)

