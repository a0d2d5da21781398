"""Usage records and GPU time in SQL, inside the SQL core's transactions (fractui.store.sql).

An attempt's record is opened by the transition that starts it and closed by the one that ends
it or sends it back to wait, in the same transaction, so the records never disagree with the
jobs. What the agent sampled is kept on the open record by the lease holder, and the last of it
with the close. ``run`` is the core's ``_run`` (one statement on the transaction's connection).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Iterable, Optional, Sequence

from fractui.store.model import (LATE, OUTCOMES, GpuTime, Job, LateCopy, Sampled, Spans,
                                 UsageRecord, spans_over, submitter)
from fractui.store.rows import INT, NUM, TEXT, Unreadable, check, maybe, named

log = logging.getLogger("fractui.store")
Run = Callable[[Any, str, Sequence[Any]], Any]
_SAMPLED = ("samples", "sampled_from", "sampled_until", "memory_peak_mib", "memory_mean_mib",
            "util_samples", "util_mean", "util_note")


USAGE_COLUMNS = {
    "job": INT, "attempt": INT, "team": maybe(TEXT), "queue": TEXT, "user_name": TEXT,
    "host": TEXT, "gpus": TEXT, "model": maybe(TEXT), "profile": maybe(TEXT),
    "memory_mib": maybe(INT), "charge": NUM, "queued_at": NUM, "started_at": NUM,
    "ended_at": maybe(NUM), "outcome": maybe(TEXT), "samples": INT, "sampled_from": maybe(NUM),
    "sampled_until": maybe(NUM), "memory_peak_mib": maybe(INT), "memory_mean_mib": maybe(NUM),
    "util_samples": INT, "util_mean": maybe(NUM), "util_note": maybe(TEXT)}
GPU_TIME_COLUMNS = {"host": TEXT, "gpu": INT, "bucket": NUM, "model": maybe(TEXT),
                    "online_s": NUM, "idle_s": NUM, "held_s": NUM, "util_s": NUM,
                    "measured_s": NUM, "seen_from": maybe(NUM), "seen_to": maybe(NUM),
                    "seen_spans": maybe(TEXT)}


def open_attempt(run: Run, db: Any, job: Job, started_at: float,
                 model: Optional[str]) -> None:
    """The record of ``job``'s current attempt (placed, its slot set) starting now: who
    submitted it (the audit's submit, which a team member cannot forge), and since when it
    waited: since its last attempt let go of its slice (a preemption, a requeue, a lost
    host), or since its submission. A placement that was refused or undone before it started
    held nothing, so the wait goes on through it."""
    slot = job.slot
    if slot is None:
        return
    user = _user(run, db, job.id)
    queued_at = job.waiting_since  # (its requeue set it as it closed the last one's record)
    run(db, "INSERT INTO usage (job, attempt, team, queue, user_name, host, gpus, model, "
            "profile, memory_mib, charge, queued_at, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job, attempt) DO NOTHING",
        (job.id, job.attempt, job.team, job.queue, user, slot.host,
         json.dumps(list(slot.gpus)), model, slot.profile, slot.memory_mib, slot.charge,
         min(queued_at, started_at), started_at))


def add_late(run: Run, db: Any, job: Job, late: LateCopy) -> bool:
    """The record of a late copy of ``job``'s ``late.attempt``, ended (LATE), unless that
    attempt has one (it held its slice as the store's: charged once). Its wait is none: it
    counts among no waits (UsageRecord.waits). Returns whether it was added."""
    return run(db, "INSERT INTO usage (job, attempt, team, queue, user_name, host, gpus, "
                   "model, profile, memory_mib, charge, queued_at, started_at, ended_at, "
                   "outcome, %s) VALUES (%s) ON CONFLICT (job, attempt) DO NOTHING" % (
                       ", ".join(_SAMPLED), ", ".join(["?"] * (15 + len(_SAMPLED)))),
               [job.id, late.attempt, job.team, job.queue, _user(run, db, job.id), late.host,
                json.dumps(list(late.gpus)), late.model, late.profile, late.memory_mib,
                late.charge, late.started_at, late.started_at, late.ended_at, LATE] +
               _sampled_values(late.sampled)).rowcount > 0


def _user(run: Run, db: Any, job_id: int) -> str:
    """Who submitted the job, as its audit's submit says (which a team member cannot forge)."""
    row = run(db, "SELECT actor FROM audit WHERE job = ? AND action = 'submit' "
                  "ORDER BY id LIMIT 1", (job_id,)).fetchone()
    return submitter(row["actor"]) if row is not None else "(unknown)"


def close_attempt(run: Run, db: Any, job: Job, ended_at: float, outcome: str,
                  sampled: Optional[Sampled]) -> None:
    """The record of ``job``'s current attempt ends at ``ended_at`` as ``outcome``; the last
    of what its agent sampled kept with it, when there is any."""
    if outcome not in OUTCOMES:
        raise ValueError("%r is not an outcome (%s)" % (outcome, ", ".join(OUTCOMES)))
    sets, args = ["ended_at = ?", "outcome = ?"], [ended_at, outcome]  # type: list[str], list
    if sampled is not None:
        sets += ["%s = ?" % c for c in _SAMPLED]
        args += _sampled_values(sampled)
    run(db, "UPDATE usage SET %s WHERE job = ? AND attempt = ? AND ended_at IS NULL"
        % ", ".join(sets), args + [job.id, job.attempt])


def keep_sampled(run: Run, db: Any, job: int, attempt: int, sampled: Sampled) -> None:
    """What the agent sampled so far of an attempt that still runs."""
    run(db, "UPDATE usage SET %s WHERE job = ? AND attempt = ? AND ended_at IS NULL"
        % ", ".join("%s = ?" % c for c in _SAMPLED),
        _sampled_values(sampled) + [job, attempt])


def _sampled_values(s: Sampled) -> list[Any]:
    return [s.samples, s.since, s.until, s.memory_peak_mib, s.memory_mean_mib,
            s.util_samples, s.util_mean, s.util_note]


def read(run: Run, db: Any, since: float, until: float, to_now: bool = False
         ) -> list[UsageRecord]:
    """Every attempt that held its slice at some time in [since, until), or ended at
    ``since`` (its outcome is of the range that starts there), by start; ``to_now``, a range
    that reaches now (usage.report.reaches_now): also those its host's clock dated as started
    at ``until`` or after, ahead of the store's, of that range (usage.report.dated_in)."""
    starts = "" if to_now else "started_at < ? AND "
    return [_record(r) for r in run(
        db, "SELECT * FROM usage WHERE %s(ended_at IS NULL OR ended_at >= ?) "
            "ORDER BY started_at, job, attempt" % starts,
        (since,) if to_now else (until, since))]


def add_gpu_time(run: Run, db: Any, rows: Iterable[GpuTime], locked: str = "") -> None:
    """Adds each row's seconds to its GPU's bucket (so two holders in turn, each adding what
    it saw, never overwrite each other's), and widens when in the bucket they were seen
    (gputime.seen_over) and joins the stretches they were seen (model.spans_over): not
    known where either is not. The stretches kept are read first, in this transaction (a
    write's: no other writer between), and parsed only for the rows written: another GPU's
    row damaged stops none of them being kept (its own write is refused, naming it).
    ``locked`` (Dialect.locked) holds them until the commit: a write by hand outside the
    write lock (an admin's DELETE on psql) is waited for, not joined as it was before it.
    A write of one host's (the lease holder's, host by host where one's value is refused)
    reads and holds that host's only."""
    rows = list(rows)
    if not rows:
        return
    where, args = "bucket >= ? AND bucket <= ?", [min(r.bucket for r in rows),
                                                   max(r.bucket for r in rows)]
    hosts = {r.host for r in rows}
    if len(hosts) == 1:  # (no range of names: the store's collation may order them as
        # Python does not; no list of them: SQLite before 3.32 takes 999 values at most)
        where += " AND host = ?"
        args.extend(hosts)
    stored = {(k["host"], int(k["gpu"]), float(k["bucket"])): k for k in run(
        db, "SELECT host, gpu, bucket, seen_spans FROM gpu_time WHERE " + where + locked,
        args)}
    kept: dict[tuple[str, int, float], Optional[Spans]] = {}
    for r in rows:
        key = (r.host, r.gpu, r.bucket)
        if key not in kept and key in stored:
            kept[key] = _spans(stored[key], _what(stored[key]))
        spans = spans_over(kept[key], r.seen_spans) if key in kept else r.seen_spans
        kept[key] = spans
        run(db, "INSERT INTO gpu_time (host, gpu, bucket, model, online_s, idle_s, held_s, "
                "util_s, measured_s, seen_from, seen_to, seen_spans) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (host, gpu, bucket) DO UPDATE SET model = excluded.model, "
                "online_s = gpu_time.online_s + excluded.online_s, "
                "idle_s = gpu_time.idle_s + excluded.idle_s, "
                "held_s = gpu_time.held_s + excluded.held_s, "
                "util_s = gpu_time.util_s + excluded.util_s, "
                "measured_s = gpu_time.measured_s + excluded.measured_s, "
                "seen_from = CASE WHEN gpu_time.seen_to IS NULL OR excluded.seen_to IS NULL "
                "THEN NULL WHEN excluded.seen_from < gpu_time.seen_from THEN excluded.seen_from "
                "ELSE gpu_time.seen_from END, "
                "seen_to = CASE WHEN gpu_time.seen_from IS NULL OR excluded.seen_from IS NULL "
                "THEN NULL WHEN excluded.seen_to > gpu_time.seen_to THEN excluded.seen_to "
                "ELSE gpu_time.seen_to END, seen_spans = excluded.seen_spans",
            (r.host, r.gpu, r.bucket, r.model, r.online_s, r.idle_s, r.held_s, r.util_s,
             r.measured_s, r.seen_from, r.seen_to,
             None if spans is None else json.dumps([list(s) for s in spans])))


def read_gpu_time(run: Run, db: Any, since: float, until: float) -> list[GpuTime]:
    """The buckets that start in [since, until), by time, host and GPU."""
    return [_gpu_time(r) for r in run(db, "SELECT * FROM gpu_time WHERE bucket >= ? AND "
                                          "bucket < ? ORDER BY bucket, host, gpu",
                                          (since, until))]


def _what(r: Any) -> str:
    return "the GPU time of %s gpu %s at %s" % (named(r["host"]), named(r["gpu"]),
                                                named(r["bucket"]))


def _gpu_time(r: Any) -> GpuTime:
    what = _what(r)
    check(what, r, GPU_TIME_COLUMNS)
    if (r["seen_from"] is None) != (r["seen_to"] is None) or (
            r["seen_from"] is not None and r["seen_from"] > r["seen_to"]):
        raise Unreadable("%s was seen from %r to %r: both or neither are written, the first "
                         "no later than the last" % (what, r["seen_from"], r["seen_to"]))
    spans = _spans(r, what)
    if spans is not None and (r["seen_from"] is None or not spans or
                              spans[0][0] < r["seen_from"] or spans[-1][1] > r["seen_to"]):
        raise Unreadable("%s was seen %r, not within from %r to %r" % (
            what, r["seen_spans"], r["seen_from"], r["seen_to"]))
    return GpuTime(r["host"], int(r["gpu"]), float(r["bucket"]), r["model"],
                   float(r["online_s"]), float(r["idle_s"]), float(r["held_s"]),
                   float(r["util_s"]), float(r["measured_s"]),
                   None if r["seen_from"] is None else float(r["seen_from"]),
                   None if r["seen_to"] is None else float(r["seen_to"]), spans)


def _spans(r: Any, what: str) -> Optional[Spans]:
    """The stretches of its bucket a row's GPU was seen (``seen_spans``: a JSON list of [from,
    to] pairs in order, apart), or None where they are not kept (a row from before SQLite
    migration 0020, PostgreSQL 0037)."""
    text = r["seen_spans"]
    if text is None:
        return None
    try:  # (Python's JSON takes NaN, which no comparison refuses, and nesting past its stack)
        pairs = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        pairs = None
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                for t in p) for p in pairs):
        raise Unreadable("%s was seen %r, not a JSON list of [from, to] pairs" % (what, text))
    spans = tuple((float(a), float(b)) for a, b in pairs)
    if any(a > b for a, b in spans) or any(
            spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
        raise Unreadable("%s was seen %r: each stretch from no later than to, in order, "
                         "none overlapping the next" % (what, text))
    return spans


FORGOTTEN = "usage_forgotten_before"
"""The meta key of where the retention last forgot usage (``prune``): before it, the store
keeps only attempts that ran on past it, not all that held a GPU."""


def begins(run: Run, db: Any) -> Optional[float]:
    """When the oldest usage kept begins (Store.usage_begins): the first attempt's start or
    the oldest bucket's first look, whichever is earlier — or where the retention forgot
    usage, where that is later: an attempt that ran on past it (one running, never forgotten)
    keeps its start, but of the time before it the store keeps no other attempt and no GPU
    time. None where nothing is kept. Each read by its index: a bucket's looks are within
    it, so the first is in the oldest one."""
    started = run(db, "SELECT min(started_at) AS t FROM usage").fetchone()["t"]
    looked = run(db, "SELECT min(coalesce(seen_from, bucket)) AS t FROM gpu_time WHERE "
                     "bucket = (SELECT min(bucket) FROM gpu_time)").fetchone()["t"]
    kept = min((float(t) for t in (started, looked) if t is not None), default=None)
    forgot = forgotten(run, db)
    return forgot if forgot is not None and (kept is None or kept < forgot) else kept


def prune(run: Run, db: Any, before: float, now: float) -> int:
    """Forgets the records of attempts that ended, and the buckets that began, before
    ``before``; returns how many rows went. Where any went, ``before`` is kept as where the
    retention forgot (FORGOTTEN; never moved back): a report's means over time start there.
    Never past the store's ``now``: a cut past it is a lease holder's clock run ahead, and
    nothing after now was forgotten; one kept past it (a clock set back since) is now, and
    one not a time (a hand's) this cut, said in the log."""
    gone = run(db, "DELETE FROM usage WHERE ended_at IS NOT NULL AND ended_at < ?",
               (before,)).rowcount
    gone += run(db, "DELETE FROM gpu_time WHERE bucket < ?", (before,)).rowcount
    cut = min(before, now)
    keep: Optional[float]
    try:
        forgot = forgotten(run, db)
    except Unreadable as err:  # (a hand's edit: the scheduler stops on a damaged store, for
        # a mark only reports read)
        log.warning("%s: this prune's cut (%r) is kept there", err, cut)
        keep = cut
    else:  # past now: of the time before now, it keeps only what was written since the clock
        # was set back
        keep = now if forgot is not None and forgot > now else cut if gone and (
            forgot is None or forgot < cut) else None
    if keep is not None:
        run(db, "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value", (FORGOTTEN, repr(keep)))
    return gone


def forgotten(run: Run, db: Any) -> Optional[float]:
    """Where the retention last forgot usage (FORGOTTEN; Store.usage_forgotten_before), or
    None where it never did."""
    row = run(db, "SELECT value FROM meta WHERE key = ?", (FORGOTTEN,)).fetchone()
    if row is None:
        return None
    try:
        forgot = float(row["value"])
    except (TypeError, ValueError):
        forgot = math.nan
    if not math.isfinite(forgot):
        raise Unreadable("the store's meta %s holds %r, not a time" % (FORGOTTEN, row["value"]))
    return forgot


def _record(r: Any) -> UsageRecord:
    what = "the usage record of job %s attempt %s" % (named(r["job"]), named(r["attempt"]))
    check(what, r, USAGE_COLUMNS)
    try:
        gpus = tuple(int(g) for g in json.loads(r["gpus"]))
    except (TypeError, ValueError) as err:
        raise Unreadable("%s holds GPUs %r, not a JSON list of numbers" % (what, r["gpus"])) \
            from err
    if r["outcome"] is not None and r["outcome"] not in OUTCOMES:
        raise Unreadable("%s ended as %r, not one of %s" % (what, r["outcome"],
                                                         ", ".join(OUTCOMES)))
    return UsageRecord(
        job=int(r["job"]), attempt=int(r["attempt"]), team=r["team"], queue=r["queue"],
        user=r["user_name"], host=r["host"], gpus=gpus, model=r["model"],
        profile=r["profile"], memory_mib=r["memory_mib"], charge=float(r["charge"]),
        queued_at=float(r["queued_at"]), started_at=float(r["started_at"]),
        ended_at=None if r["ended_at"] is None else float(r["ended_at"]),
        outcome=r["outcome"],
        sampled=Sampled(samples=int(r["samples"]), since=r["sampled_from"],
                        until=r["sampled_until"], memory_peak_mib=r["memory_peak_mib"],
                        memory_mean_mib=r["memory_mean_mib"],
                        util_samples=int(r["util_samples"]), util_mean=r["util_mean"],
                        util_note=r["util_note"]))
