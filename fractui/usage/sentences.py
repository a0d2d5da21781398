"""The report's sentences, said alike by ``fractui report`` and the TUI's report screen from
the same numbers (fractui.usage.report): what sharing saved, the GPUs' time and how much of
it is kept, how busy the jobs kept what they held, what was held without a measure, and the
jobs that ended, or still wait, without starting. One place, so the two never say the same
report in different words or with different rounding."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from fractui.cells import cell_len, cut
from fractui.store.model import PENDING, PLACED, Job
from fractui.usage.gputime import FLUSH_S
from fractui.usage.report import NONE, Group, Report
from fractui.words import count, duration, first_of, local_time


def hours(value: Optional[float]) -> str:
    """Hours as the whole report says them, with two decimals (a short range's "0.0" read as
    nothing used); a dash where not known."""
    return "—" if value is None else "%.2f" % value


def as_shown(value: float) -> float:
    """``value`` as the report says it, to two decimals (``hours``)."""
    return float(hours(value))


def reads_zero(value: float) -> bool:
    """Whether ``value`` hours read 0.00 as the report says them. No percentage is given of
    such an amount: "(47 % busy)" beside "used 0.00 of 0.00" says more than the numbers the
    reader can check, and 18 s of one GPU says nothing of how busy it is. The sentences say
    so (TOO_LITTLE); the table's util cell is a dash."""
    return as_shown(value) == 0


TOO_LITTLE = "too little for a percentage"


def busy(g: Group) -> Optional[float]:
    """Percent of the GPU-hours ``g`` held where NVML measured them that its jobs kept busy;
    None where nothing was measured (MIG slices only: not known, never 0), or what was reads
    0.00 (``reads_zero``)."""
    return None if g.measured_h <= 0 or reads_zero(g.measured_h) else (
        100 * g.used_h / g.measured_h)


def local(t: Optional[float]) -> str:
    """``t`` in this machine's local time, with its offset from UTC: a report is sent on to
    people in other zones, and ``--since 2026-12-01T14:00Z`` reads back in local time. To
    the second where it is not on a whole minute: ``--since 20s`` read "from 09:54 to
    09:54", a range of nothing."""
    return "—" if t is None else local_time(t, to_minute=True)


def group_name(key: str, by: str, width: int, mark: str = "…") -> str:
    """A group's name in at most ``width`` cells, ending in ``mark`` where it is cut: by GPU
    ("host gpu3") its host's name is cut and its index kept whole — cut at its end, each GPU
    of a host with a long name (a fully qualified one) read as the same row."""
    host, sep, index = key.rpartition(" gpu")
    kept = cell_len(sep + index)
    if by != "gpu" or not sep or cell_len(key) <= width or width - kept < 2:
        return cut(key, width, mark)
    return cut(host, width - kept, mark) + sep + index


def kept_words(r: Report) -> List[str]:
    """Where the store's usage in the range begins, where that is after the range does (a
    store younger than it, or the retention's [usage] keep_days shorter): where the
    retention forgot, every number is of the time from there (Report.forgotten). None where
    the store keeps the whole range."""
    if r.start >= r.until > r.since:  # (its start is its end: "nothing before" the end)
        return ["the store keeps nothing of this range: %s" % (
            "the retention ([usage] keep_days) forgot it, and all it keeps begins after it"
            if r.forgotten else "what it keeps begins after it")]
    if r.start > r.since:
        return ["the store keeps all of its usage only from %s: the retention ([usage] "
                "keep_days) forgot what ended before; every number here is of the time from "
                "there" % local(r.start) if r.forgotten else
                "the store keeps nothing of it before %s: means over time start there" %
                local(r.start)]
    return []


def saving_words(r: Report) -> str:
    """What sharing saved, that it is not known with the rest (Report.known), or that no job
    held a GPU (a saving of 0 GPUs of no demand says nothing true to act on). The mean saved
    is the difference of the two means as said: each rounded on its own, "1.81 on average;
    they used 1.44 ... saved 0.38" did not add up for the reader who checks it."""
    s = r.saving
    if not r.known:
        return "what its jobs held, used and waited, how they ended and what sharing saved " \
            "are not known: the retention ([usage] keep_days) forgot it"
    if not s.peak_demand:
        return "no job held a GPU in this range"
    return ("without sharing, these jobs would have needed %s at peak (%.2f on average); "
            "they used %d (%.2f): sharing saved %s at peak, %.2f on average" % (
                count(s.peak_demand, "GPU"), s.mean_demand, s.peak_used, s.mean_used,
                count(s.saved_peak, "GPU"), as_shown(s.mean_demand) - as_shown(s.mean_used)))


def online_words(t: Group) -> List[str]:
    """The GPUs' online hours, the part held and the part idle; none where not known."""
    if not t.online_h:
        return []
    held, idle = t.held_online_h or 0.0, t.idle_h or 0.0
    if reads_zero(t.online_h):
        return ["GPUs online %.2f GPU-h, held while online %.2f, idle with nothing on them "
                "%.2f (%s)" % (t.online_h, held, idle, TOO_LITTLE)]
    return ["GPUs online %.2f GPU-h, held while online %.2f (%.0f %%), idle with nothing on "
            "them %.2f (%.0f %%)" % (t.online_h, held, 100 * held / t.online_h, idle,
                                     100 * idle / t.online_h)]


def busy_words(t: Group) -> List[str]:
    """How busy the jobs kept what they held, of what NVML measured: the admin's "how
    utilised"; none where nothing was measured."""
    if t.measured_h <= 0:
        return []
    percent = busy(t)
    return ["used %.2f GPU-h of the %.2f held where NVML measured it (%s)" % (
        t.used_h, t.measured_h, TOO_LITTLE if percent is None else "%.0f %% busy%s" % (
            percent, "; a share's processes may keep its GPU busier than its charge"
            if percent > 100 else ""))]


def unmeasured_words(t: Group, column: str) -> List[str]:
    """The held hours the busy line leaves out, named by the table's ``column`` for them."""
    if not t.unmeasured_h:
        return []
    return ["%s: GPU-hours held where NVML gives no utilisation (MIG slices, or not sampled "
            "yet): %.2f of %.2f" % (column, t.unmeasured_h, t.held_h)]


def unsampled_memory_words(t: Group, column: str) -> List[str]:
    """The attempts ``column`` (memory in use, as sampled) leaves out: those whose memory was
    never sampled — they ended before their agent's first sample (every 5 s), or their
    samples were never read — named, as a job's attempt, so a short job's held hours are
    not read as memory it never used."""
    if not t.memory_unsampled:
        return []
    named = ["job %d's attempt %d" % pair for pair in t.memory_unsampled]
    return ["%s counts memory as sampled: %s holding %.2f GPU-h had no sample of it (none "
            "read yet, or ended before the agent's first): %s" % (
                column, count(len(named), "attempt"), t.memory_unsampled_h,
                first_of(named, UNSAMPLED_NAMED))]


UNSAMPLED_NAMED = 10  # attempts without a memory sample named in one line; the rest counted


def unstarted_words(r: Report) -> List[str]:
    """The jobs the table cannot show: those that ended waiting, never having started."""
    if not r.unstarted:
        return []
    return ["%s ended in this range while waiting to start: waits and outcomes count only "
            "attempts that started" % r.ended_waiting()]


@dataclass(frozen=True)
class Waiting:
    """The jobs counted that wait to start as the report is made, for a range that reaches
    now: their waits are in no WAIT column until they start (WAIT counts the waits that
    ended in a start), so a team whose jobs all still wait would read as one that waited
    for nothing. By the report's group where a waiting job has one (team, queue, user; a
    job has no host or GPU yet), and the longest wait so far. ``grouped``: whether the
    report's grouping is one a waiting job has."""

    STATES = (PENDING, PLACED)
    BY = ("team", "queue", "user")
    groups: Dict[str, int]
    jobs: int
    longest_s: Optional[float]
    longest_job: Optional[int]
    grouped: bool

    @classmethod
    def of(cls, jobs: Sequence[Job], by: str, now: float) -> "Waiting":
        groups: Dict[str, int] = {}
        for job in jobs if by in cls.BY else ():
            key = getattr(job, by) or NONE
            groups[key] = groups.get(key, 0) + 1
        first = min(jobs, key=lambda j: (j.waiting_since, j.id), default=None)
        return cls(dict(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))), len(jobs),
                   None if first is None else first.waited(now),
                   None if first is None else first.id, by in cls.BY)

    def of_group(self, key: str) -> Optional[int]:
        """How many of them are of the report's group ``key``; None where the grouping is
        one no waiting job has (host, model, GPU)."""
        return self.groups.get(key, 0) if self.grouped else None

    def record(self) -> Dict[str, object]:
        return {"jobs": self.jobs, "groups": self.groups,
                "longest_wait_s": None if self.longest_s is None else round(self.longest_s, 6),
                "longest_job": self.longest_job}

    def words(self) -> List[str]:
        """The line under the report; none where no job waits."""
        if not self.jobs:
            return []
        groups = ", ".join("%s %d" % kv for kv in self.groups.items())
        return ["%s waiting to start now%s, the longest for %s (job %d): WAIT counts a wait "
                "once it ends in a start" % (count(self.jobs, "job"), " (%s)" % groups if (
                    groups) else "", duration(self.longest_s), self.longest_job)]


UNSEEN = "no scheduler looked at a reachable GPU (none held the lease, or every host was away)"


@dataclass(frozen=True)
class Coverage:
    """How much of a range the GPUs' time is kept for, in buckets of [usage] ``bucket_s``:
    of those that begin in it (``begin``), those written by now (``due``: ended a write
    interval ago) where the store keeps anything (``Report.start``: before it, the report
    says so already) and, of these, those that hold a look at a GPU (``kept``); the bucket
    it begins in, or the one the store's first look is in, counted for its part, is not one
    of them. A bucket with none is time when no scheduler looked at a reachable GPU (none
    held the lease, every host was away, or the holder was paused): the GPUs' online and
    idle hours leave it out."""

    bucket_s: float
    begin: int
    due: int
    kept: int

    @classmethod
    def of(cls, r: Report, bucket_s: float, now: float) -> "Coverage":
        written = now - bucket_s - min(FLUSH_S, bucket_s)  # a bucket begun by then is written
        end = math.ceil(r.until / bucket_s)  # the n-th bucket starts at n * bucket_s
        return cls(bucket_s, max(0, end - math.ceil(r.since / bucket_s)),
                   max(0, min(end, math.floor(written / bucket_s) + 1) -
                       math.ceil(r.start / bucket_s)),
                   sum(1 for b in r.gpu_buckets if r.start <= b <= written))

    def record(self) -> Dict[str, float]:
        return {"bucket_s": self.bucket_s, "begin": self.begin, "due": self.due,
                "kept": self.kept}

    def words(self, r: Report) -> List[str]:
        """What the report cannot say of the GPUs' time, and why; [] where it is all kept."""
        every = "GPU time is kept per bucket of [usage] bucket_s (%g s), each counted for " \
            "its part in a range" % self.bucket_s
        if not r.gpu_buckets:
            if r.start >= r.until:  # (a range of before the store: none due, none to come)
                why = "the store keeps none of this one's: what it keeps begins after it"
            elif not self.begin:
                why = ("the one it falls in holds no look at a GPU: not written yet (a "
                       "scheduler holding the lease writes them every %g s), or %s" % (
                           min(FLUSH_S, self.bucket_s), UNSEEN))
            elif not self.due:
                why = ("none of this one's holds a look at a GPU yet (a scheduler holding the "
                       "lease writes them every %g s)" % min(FLUSH_S, self.bucket_s))
            else:
                why = "none of this one's holds a look at a GPU: %s" % UNSEEN
            return ["GPUs online, held while online and idle: not known. %s; %s" % (every,
                                                                                     why)]
        if self.kept >= self.due:
            return []
        return ["GPU time is kept for %d of the %s of %g s that began in this range "
                "and %s written: in the rest %s, and the GPUs' online, held and idle hours "
                "leave them out" % (self.kept, count(self.due, "bucket"), self.bucket_s,
                                    "is" if self.due == 1 else "are", UNSEEN)]
