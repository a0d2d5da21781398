"""``fractui report``: what the fleet's jobs held and used over a time range, and what sharing
saved, from the store's usage records (fractui.usage.report): a table, ``--json`` or
``--csv``."""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
import time
from typing import List, Optional, Tuple

from fractui.arguments import Moment, known_user
from fractui.checked_store import open_checked_store
from fractui.config import Config
from fractui.outcome import UsageError
from fractui.store.model import OUTCOMES
from fractui.terminal import own, print_json, table, width
from fractui.usage.report import UNSTARTED, Group, Report, Whose, build, reaches_now
from fractui.usage.sentences import (Coverage, Waiting, busy_words, group_name, hours,
                                     kept_words, local, online_words, saving_words,
                                     unmeasured_words, unsampled_memory_words,
                                     unstarted_words)
from fractui.words import duration, printable

MEM = "MEM GiB·h"  # (its column's name, which the line under the table of what it leaves says)
HEADER = ("GROUP", "HELD", "USED", "NO MEASURE", MEM, "WAIT MED", "WAIT P95") + tuple(
    o.upper() for o in OUTCOMES) + ("RUNNING", "IDLE")
CAPS = (32,) + (None,) * (len(HEADER) - 2)  # the group's name may be cut; a number never
# is (terminal.table), and IDLE, the last, takes what is left


def _range(since: Moment, until: Moment, now: float) -> Tuple[float, float]:
    """``--since`` and ``--until`` as of ``now``; a UsageError where since is not before
    until (checked before the store is opened where now cannot change that order)."""
    start, end = since.resolve(now), until.resolve(now)
    if start >= end:
        raise UsageError("--since (%s) must be before --until (%s)" % (local(start), local(end)))
    return start, end


def report(config: Config, args: argparse.Namespace) -> int:
    """``--me``/``--user U`` and ``--team T`` count only those jobs: as ``jobs --me`` does, who
    you are is the store's word (Store.identity), and anyone who may read the store reads
    everyone's usage (access: only a job's output, READ, is its team's to read)."""
    if (args.since.ago_s is None) == (args.until.ago_s is None):  # both ago, or both dates:
        _range(args.since, args.until, time.time())  # their order is now's whatever now is
    store = open_checked_store(config, hear=False, make=False)
    try:
        now = store.now()
        since, until = _range(args.since, args.until, now)
        whose = Whose(store.identity().user if args.me else args.user, args.team)
        records = store.usage(since, until, reaches_now(since, until, now))
        every_waiting = store.jobs(Waiting.STATES)
        waiting_jobs = [j for j in every_waiting if whose.has(j.user, j.team)]
        waits = waiting_jobs if reaches_now(since, until, now) else None
        ended = store.jobs(UNSTARTED, ended_since=since)
        if args.user is not None and all(j.user != args.user for j in (
                *records, *waiting_jobs, *ended)):
            known_user(args.user, store, config.teams)  # a typo, said with the close name
        if whose.team is not None and all(j.team != whose.team for j in (
                *records, *waiting_jobs, *ended)):
            config.team(whose.team, [printable(t) for t in {j.team for j in (
                *records, *every_waiting, *ended)} if t])  # a typo is said with the close
            # name, among the teams the range's usage and the jobs waiting or ended waiting
            # name too, printable (names from the store): a team since left out of the
            # config is still reported while the store keeps its usage, its jobs wait or
            # ended waiting, whatever the range (one not begun has none of them)
        bucket_s = config.usage.bucket_s  # (the bucket begun before since has time in it;
        # read for a report of some jobs too: where the store's usage begins is the store's)
        made = build(records, store.gpu_time(since - bucket_s, until), since, until, args.by,
                     now, ended, whose, bucket_s, store.usage_begins(),
                     store.usage_forgotten_before())
        waiting = None if waits is None else Waiting.of(waits, args.by, now)
    finally:
        store.close()
    kept = Coverage.of(made, config.usage.bucket_s, now) if made.whose.everyone else None
    if args.json:
        print_json(dict(made.record(), gpu_time_buckets=None if kept is None else kept.record(),
                        waiting_now=None if waiting is None else waiting.record()))
    elif args.csv:
        _csv(made, waiting)
    else:
        for line in lines(made, kept) + (waiting.words() if waiting else []):
            print(line)
    return 0


def lines(r: Report, kept: Optional[Coverage] = None) -> List[str]:
    """The report as a person reads it: the range, the table, and the headline. GPU-hours
    have the table's two decimals everywhere (one read a short range's as "0.0 of 0.0");
    ``kept``: how much of the range the GPUs' time is kept for (None: a report of some
    jobs, which leaves the GPUs' time out)."""
    out = ["usage %sfrom %s to %s, by %s (GPU-hours; fractions as charged)" % (
        "" if r.whose.everyone else "of %s " % r.whose.words(), local(r.since),
        local(r.until), r.by)]
    out += ["(%s)" % line for line in kept_words(r)]
    t = r.total
    if not r.whose.everyone and not r.groups:
        out.append("none of %s held a GPU in this range" % r.whose.words() if r.known
                   else saving_words(r))  # (the retention forgot what they held)
        return out + unstarted_words(r)
    gaps = kept.words(r) if kept else []
    if not r.groups and not t.online_h:
        out.append("no job held a GPU in this range, and no GPU time was kept"
                   if r.known else saving_words(r))
        return out + gaps + unstarted_words(r)
    gpus = r.by in ("host", "model", "gpu")
    if t.held_h or t.running or any(t.outcomes.values()) or gpus:  # (an attempt that ended
        # as the range began held none of it, and its outcome is the range's)
        rows = [_row(g, gpus, group_name(g.key, r.by, CAPS[0], own("…"))) for g in r.groups]
        rows.append(_row(t, True, t.key))
        out += table(HEADER, rows, CAPS, width())
        out.append("")
    out += [saving_words(r)] + online_words(t) + gaps
    if not r.whose.everyone:
        out.append("(the GPUs' own time — online, idle — is the fleet's, not %s: fractui "
                   "report without --me, --user or --team says it)" % r.whose.words())
    return out + busy_words(t) + unmeasured_words(t, "NO MEASURE") + unsampled_memory_words(
        t, own(MEM)) + unstarted_words(r)


def _row(g: Group, gpus: bool, name: str) -> List[str]:
    """A group's cells, under its ``name`` (``group_name``): what it used is not known (a
    dash, never 0.00) where none of what it held was measured (MIG slices, attempts not
    sampled yet), as the report screen says; so is its memory where none was sampled
    (Group.used, Group.memory: --json's null). The dashes are fractui's own, as stdout's
    encoding holds them (``own``); the group's name is not."""
    outcome = [str(g.outcomes.get(o, 0)) for o in OUTCOMES]
    idle = g.idle_h if gpus else None
    held = [hours(v) for v in (g.held_h, g.used, g.unmeasured_h, g.memory)]
    waits = [duration(g.wait_median_s), duration(g.wait_p95_s)]
    return [name] + [own(c) for c in held + waits + outcome + [str(g.running), hours(idle)]]


def _csv(r: Report, waiting: Optional[Waiting]) -> None:
    """One row per group, then the total; after the outcomes, whose jobs it counts
    (``whose_user``, ``whose_team``: empty for any, as --json's ``whose`` has null) and the
    range, ``since`` and ``until`` (ISO 8601 with the offset from UTC), so a sheet saved,
    pasted or joined from several reports still says what and when it is of; then
    ``waiting_now``: the group's jobs waiting to start now (--json's ``waiting_now``; the
    total's: all of them), empty for a range that ended before now or a grouping no waiting
    job has (host, model, GPU) — and a group whose jobs only wait has its row, of nothing
    held. A column is only ever added at the end, so a sheet's consumers
    that read columns by position keep reading the same ones (``LATER``, after
    ``waiting_now``). A number not known (the GPUs' time of a report of some jobs, all of a
    range the retention forgot) is empty."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    held = {g.key for g in r.groups}
    groups = r.groups + [Group(k) for k in (waiting.groups if waiting else ()) if k not in held]
    rows = [(g.record(), None if waiting is None else waiting.of_group(g.key)) for g in groups]
    rows.append((r.total.record(r.known), None if waiting is None else waiting.jobs))
    columns = [k for k in rows[0][0] if k != "outcomes" and k not in LATER]
    outcomes = list(rows[0][0]["outcomes"])
    whose = ["" if v is None else v for v in r.whose.record().values()]
    out.writerow([r.by] + columns[1:] + outcomes + ["whose_%s" % k for k in r.whose.record()]
                 + ["since", "until", "waiting_now"] + list(LATER))
    for row, waits in rows:
        out.writerow([row[c] for c in columns] + [row["outcomes"][o] for o in outcomes] +
                     whose + [_iso(r.since), _iso(r.until), "" if waits is None else waits] +
                     [row[c] for c in LATER])


LATER = ("unsampled_memory_gpu_hours", "unsampled_memory_attempts")
"""The columns added after ``waiting_now``, in the order they were."""


def _iso(t: float) -> str:
    """``t`` in ISO 8601, local time with its offset (``2026-12-01T15:00:00+01:00``), as a
    spreadsheet reads a date and time without being told which zone."""
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
