"""``fractui report``: what the fleet's jobs held and used over a time range, and what sharing
saved, from the store's usage records (fractui.usage.report): a table, ``--json`` or
``--csv``."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from typing import List, Optional

from fractui.checked_store import open_checked_store
from fractui.config import Config
from fractui.outcome import UsageError
from fractui.store.model import OUTCOMES
from fractui.terminal import print_json, table, width
from fractui.usage.report import UNSTARTED, Group, Report, Whose, build
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
        if whose.team is not None and all(r.team != whose.team for r in records):
            config.team(whose.team)  # a typo is said with the close name (a team since
            # left out of the config is still reported while the store keeps its usage)
        made = build(records, store.gpu_time(since, until) if whose.everyone else [],
                     since, until, args.by, now, store.jobs(UNSTARTED, ended_since=since),
                     whose)
    finally:
        store.close()
    if args.json:
        print_json(made.record())
    elif args.csv:
        _csv(made)
    else:
        for line in lines(made):
            print(line)
    return 0


def lines(r: Report) -> List[str]:
    """The report as a person reads it: the range, the table, and the headline. GPU-hours
    have the table's two decimals everywhere (one read a short range's as "0.0 of 0.0")."""
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
    if not r.groups and not t.online_h:
        out.append("no job held a GPU in this range, and no GPU time was kept")
        return out + _unstarted(r)
    if t.held_h or t.running or r.by in ("host", "model", "gpu"):
        gpus = r.by in ("host", "model", "gpu")
        rows = [_row(g, gpus) for g in r.groups] + [_row(t, True)]
        out += table(HEADER, rows, CAPS, width())
        out.append("")
        out.append("without sharing, these jobs would have needed %s at peak (%.1f on "
                   "average); they used %d (%.1f): sharing saved %s at peak, %.1f on "
                   "average" % (count(s.peak_demand, "GPU"), s.mean_demand, s.peak_used,
                                s.mean_used, count(s.saved_peak, "GPU"), s.saved_mean))
    else:
        out.append("no job held a GPU in this range")
    if t.online_h:
        held, idle = t.held_online_h or 0.0, t.idle_h or 0.0
        out.append("GPUs online %.2f GPU-h, held while online %.2f (%.0f %%), idle with "
                   "nothing on them %.2f (%.0f %%)" % (t.online_h, held, 100 * held / t.online_h,
                                                     idle, 100 * idle / t.online_h))
    if not r.whose.everyone:
        out.append("(the GPUs' own time — online, idle — is the fleet's, not %s: fractui "
                   "report without --me, --user or --team says it)" % r.whose.words())
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
    outcome = [str(g.outcomes.get(o, 0)) for o in OUTCOMES]
    idle = "—" if not gpus or g.idle_h is None else "%.2f" % g.idle_h
    return [g.key, "%.2f" % g.held_h, "%.2f" % g.used_h, "%.2f" % g.unmeasured_h,
            "%.1f" % g.memory_gib_h, duration(g.wait_median_s), duration(g.wait_p95_s)] + \
        outcome + [str(g.running), idle]


def _csv(r: Report) -> None:
    """One row per group, then the total; each row ends with whose jobs it counts
    (``whose_user``, ``whose_team``: empty for any, as --json's ``whose`` has null), so a
    sheet pasted or joined from several reports still says it, in columns that never move."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    rows = [g.record() for g in r.groups + [r.total]]
    columns = [k for k in rows[0] if k != "outcomes"] if rows else []
    outcomes = list(rows[0]["outcomes"]) if rows else []
    whose = ["" if v is None else v for v in r.whose.record().values()]
    out.writerow([r.by] + columns[1:] + outcomes + ["whose_%s" % k for k in r.whose.record()])
    for row in rows:
        out.writerow([row[c] for c in columns] + [row["outcomes"][o] for o in outcomes] +
                     whose)


def _local(t: Optional[float]) -> str:
    """``t`` in this machine's local time, with its offset from UTC: a report is sent on to
    people in other zones, and ``--since 2026-12-01T14:00Z`` reads back in local time."""
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M %z", time.localtime(t))
