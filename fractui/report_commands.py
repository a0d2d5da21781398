"""``fractui report``: what the fleet's jobs held and used over a time range, and what sharing
saved, from the store's usage records (fractui.usage.report): a table, ``--json`` or
``--csv``."""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from fractui.checked_store import open_checked_store
from fractui.config import Config
from fractui.outcome import UsageError
from fractui.store.model import OUTCOMES, PENDING, PLACED, Job
from fractui.terminal import print_json, table, width
from fractui.usage.gputime import FLUSH_S
from fractui.usage.report import NONE, UNSTARTED, Group, Report, Whose, build
from fractui.words import count, duration

HEADER = ("GROUP", "HELD", "USED", "NO MEASURE", "MEM GiB·h", "WAIT MED", "WAIT P95") + tuple(
    o.upper() for o in OUTCOMES) + ("RUNNING", "IDLE")
CAPS = (32, 9, 9, 10, 10, 8, 8, 6, 6, 9, 8, 9, 4, 7)


def report(config: Config, args: argparse.Namespace) -> int:
    """``--me``/``--user U`` and ``--team T`` count only those jobs: as ``jobs --me`` does, who
    you are is the store's word (Store.identity), and anyone who may read the store reads
    everyone's usage (access: only a job's output, READ, is its team's to read)."""
    store = open_checked_store(config, hear=False, make=False)
    try:
        now = store.now()
        since, until = args.since.resolve(now), args.until.resolve(now)
        if since >= until:
            raise UsageError("--since (%s) must be before --until (%s)" % (
                _local(since), _local(until)))
        whose = Whose(store.identity().user if args.me else args.user, args.team)
        records = store.usage(since, until)
        waits = [j for j in store.jobs(Waiting.STATES) if whose.has(j.user, j.team)] if (
            until >= now) else None
        if whose.team is not None and not waits and all(r.team != whose.team
                                                        for r in records):
            config.team(whose.team)  # a typo is said with the close name (a team since
            # left out of the config is still reported while the store keeps its usage)
        made = build(records, store.gpu_time(since, until) if whose.everyone else [],
                     since, until, args.by, now, store.jobs(UNSTARTED, ended_since=since),
                     whose)
        waiting = None if waits is None else Waiting.of(waits, args.by, now)
    finally:
        store.close()
    kept = Coverage.of(made, config.usage.bucket_s, now) if made.whose.everyone else None
    if args.json:
        print_json(dict(made.record(), gpu_time_buckets=None if kept is None else kept.record(),
                        waiting_now=None if waiting is None else waiting.record()))
    elif args.csv:
        _csv(made)
    else:
        for line in lines(made, kept) + (waiting.words() if waiting else []):
            print(line)
    return 0


@dataclass(frozen=True)
class Waiting:
    """The jobs counted that wait to start as the report is made, for a range that reaches
    now: their waits are in no WAIT column until they start (WAIT counts the waits that
    ended in a start), so a team whose jobs all still wait would read as one that waited
    for nothing. By the report's group where a waiting job has one (team, queue, user; a
    job has no host or GPU yet), and the longest wait so far."""

    STATES = (PENDING, PLACED)
    groups: Dict[str, int]
    jobs: int
    longest_s: Optional[float]
    longest_job: Optional[int]

    @classmethod
    def of(cls, jobs: Sequence[Job], by: str, now: float) -> "Waiting":
        groups: Dict[str, int] = {}
        for job in jobs:
            key = {"team": job.team, "queue": job.queue, "user": job.user}.get(by, "")
            if key != "":
                groups[key or NONE] = groups.get(key or NONE, 0) + 1
        first = min(jobs, key=lambda j: (j.waiting_since, j.id), default=None)
        return cls(dict(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))), len(jobs),
                   None if first is None else max(0.0, now - first.waiting_since),
                   None if first is None else first.id)

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
    says so already) and, of these, those that hold a look at a GPU (``kept``). A bucket with
    none is time when no scheduler looked at a reachable GPU (none held the lease, every host
    was away, or the holder was paused): the GPUs' online and idle hours leave it out."""

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
                   sum(1 for b in r.gpu_buckets if b <= written))

    def record(self) -> Dict[str, float]:
        return {"bucket_s": self.bucket_s, "begin": self.begin, "due": self.due,
                "kept": self.kept}

    def words(self, r: Report) -> List[str]:
        """What the report cannot say of the GPUs' time, and why; [] where it is all kept."""
        every = "GPU time is kept per bucket of [usage] bucket_s (%g s) and counted by the " \
            "buckets that begin in a range" % self.bucket_s
        if not r.gpu_buckets:
            if not self.begin:
                why = "none begins in this one"
            elif not self.due:
                why = ("none of this one's holds a look at a GPU yet (a scheduler holding the "
                       "lease writes them every %g s)" % min(FLUSH_S, self.bucket_s))
            else:
                why = "none of this one's holds a look at a GPU: %s" % UNSEEN
            return ["GPUs online, held while online and idle: not known. %s; %s" % (every,
                                                                                     why)]
        if self.kept >= self.due:
            return []
        return ["GPU time is kept for %d of the %d buckets of %g s that began in this range "
                "and are written: in the others %s, and the GPUs' online, held and idle hours "
                "leave them out" % (self.kept, self.due, self.bucket_s, UNSEEN)]


def lines(r: Report, kept: Optional[Coverage] = None) -> List[str]:
    """The report as a person reads it: the range, the table, and the headline. GPU-hours
    have the table's two decimals everywhere (one read a short range's as "0.0 of 0.0");
    ``kept``: how much of the range the GPUs' time is kept for (None: a report of some
    jobs, which leaves the GPUs' time out)."""
    out = ["usage %sfrom %s to %s, by %s (GPU-hours; fractions as charged)" % (
        "" if r.whose.everyone else "of %s " % r.whose.words(), _local(r.since),
        _local(r.until), r.by)]
    if r.start > r.since:
        out.append("(the store keeps nothing of it before %s: means over time start there)"
                   % _local(r.start))
    s, t = r.saving, r.total
    if not r.whose.everyone and not r.groups:
        out.append("none of %s held a GPU in this range" % r.whose.words())
        return out + _unstarted(r)
    gaps = kept.words(r) if kept else []
    if not r.groups and not t.online_h:
        out.append("no job held a GPU in this range, and no GPU time was kept")
        return out + gaps + _unstarted(r)
    gpus = r.by in ("host", "model", "gpu")
    if t.held_h or t.running or any(t.outcomes.values()) or gpus:  # (an attempt that ended
        # as the range began held none of it, and its outcome is the range's)
        rows = [_row(g, gpus) for g in r.groups] + [_row(t, True)]
        out += table(HEADER, rows, CAPS, width())
        out.append("")
    if s.peak_demand:
        out.append("without sharing, these jobs would have needed %s at peak (%.2f on "
                   "average); they used %d (%.2f): sharing saved %s at peak, %.2f on "
                   "average" % (count(s.peak_demand, "GPU"), s.mean_demand, s.peak_used,
                                s.mean_used, count(s.saved_peak, "GPU"), s.saved_mean))
    else:
        out.append("no job held a GPU in this range")
    if t.online_h:
        held, idle = t.held_online_h or 0.0, t.idle_h or 0.0
        out.append("GPUs online %.2f GPU-h, held while online %.2f (%.0f %%), idle with "
                   "nothing on them %.2f (%.0f %%)" % (t.online_h, held, 100 * held / t.online_h,
                                                     idle, 100 * idle / t.online_h))
    out += gaps
    if not r.whose.everyone:
        out.append("(the GPUs' own time — online, idle — is the fleet's, not %s: fractui "
                   "report without --me, --user or --team says it)" % r.whose.words())
    if t.measured_h > 0:  # how busy the jobs kept what they held: the admin's "how utilised"
        busy = 100 * t.used_h / t.measured_h
        out.append("used %.2f GPU-h of the %.2f held where NVML measured it (%.0f %% busy%s)" % (
            t.used_h, t.measured_h, busy, "; a share's processes may keep its GPU busier than "
            "its charge" if busy > 100 else ""))
    if t.unmeasured_h:
        out.append("NO MEASURE: GPU-hours held where NVML gives no utilisation (MIG slices, or "
                   "not sampled yet): %.2f of %.2f" % (t.unmeasured_h, t.held_h))
    return out + _unstarted(r)


def _unstarted(r: Report) -> List[str]:
    """The jobs the table cannot show: those that ended waiting, never having started."""
    if not r.unstarted:
        return []
    return ["%s ended in this range while waiting to start: waits and outcomes count only "
            "attempts that started" % r.ended_waiting()]


def _row(g: Group, gpus: bool) -> List[str]:
    """A group's cells: what it used is not known (a dash, never 0.00) where none of what it
    held was measured (MIG slices, attempts not sampled yet), as the report screen says; so
    is its memory where none was sampled (Group.used, Group.memory: --json's null)."""
    outcome = [str(g.outcomes.get(o, 0)) for o in OUTCOMES]
    idle = g.idle_h if gpus else None
    return [g.key] + [_hours(v) for v in (g.held_h, g.used, g.unmeasured_h, g.memory)] + [
        duration(g.wait_median_s), duration(g.wait_p95_s)] + outcome + [str(g.running),
                                                                          _hours(idle)]


def _hours(value: Optional[float]) -> str:
    """Hours as the whole report says them, with two decimals (a short range's "0.0" read as
    nothing used); a dash where not known."""
    return "—" if value is None else "%.2f" % value


def _csv(r: Report) -> None:
    """One row per group, then the total; each row ends with whose jobs it counts
    (``whose_user``, ``whose_team``: empty for any, as --json's ``whose`` has null) and the
    range, ``since`` and ``until`` (ISO 8601 with the offset from UTC), so a sheet saved,
    pasted or joined from several reports still says what and when it is of, in columns that
    never move. A number not known (the GPUs' time of a report of some jobs) is empty."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    rows = [g.record() for g in r.groups + [r.total]]
    columns = [k for k in rows[0] if k != "outcomes"] if rows else []
    outcomes = list(rows[0]["outcomes"]) if rows else []
    whose = ["" if v is None else v for v in r.whose.record().values()]
    out.writerow([r.by] + columns[1:] + outcomes + ["whose_%s" % k for k in r.whose.record()]
                 + ["since", "until"])
    for row in rows:
        out.writerow([row[c] for c in columns] + [row["outcomes"][o] for o in outcomes] +
                     whose + [_iso(r.since), _iso(r.until)])


def _iso(t: float) -> str:
    """``t`` in ISO 8601, local time with its offset (``2026-12-01T15:00:00+01:00``), as a
    spreadsheet reads a date and time without being told which zone."""
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _local(t: Optional[float]) -> str:
    """``t`` in this machine's local time, with its offset from UTC: a report is sent on to
    people in other zones, and ``--since 2026-12-01T14:00Z`` reads back in local time."""
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M %z", time.localtime(t))
