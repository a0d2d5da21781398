"""The usage report on a known job stream: every attempt made through the store's own
transitions (with a clock the test sets), then the report's numbers — held, used, unmeasured
and memory hours, waits, outcomes, running attempts, what sharing saved — checked against the
same numbers computed here from the stream itself, by other means (brute force over every
moment the fleet changed, not the report's sweep), and against the store's job records.
``fractui report`` is checked as a user runs it: table, --json, --csv, and bad ranges."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from fractui.store.model import (CANCELLED, DONE, FAILED, PENDING, PLACED, PREEMPTED, RUNNING,
                                 STOPPING, GpuTime, Job, Sampled, Slot, UsageRecord)
from fractui.store.sqlite import SqliteStore
from fractui.usage.report import build, percentile, saving, series
from tests.cli_run import in_process, leaks

TEAMS = ("vision", "nlp", "speech")
USERS = {"vision": ("ann", "bo"), "nlp": ("cy",), "speech": ("di", "ed")}
# (host, gpus, profile, memory MiB, charge, measurable): shares, MIG slices, whole GPUs
SLOTS = (("l4-1", (0,), None, 6144, 0.25, True), ("l4-1", (1,), None, 12288, 0.5, True),
         ("h100-1", (0,), "3g.40gb", None, 3 / 7, False),
         ("h100-1", (1,), "1g.10gb", None, 1 / 7, False),
         ("a10-1", (0,), None, None, 1.0, True), ("a10-1", (0, 1), None, None, 2.0, True))
BASE = 1_700_000_000.0


@dataclass
class Attempt:
    job: int
    team: str
    user: str
    queue: str
    slot: Slot
    measurable: bool
    queued: float
    start: float
    end: Optional[float]
    outcome: Optional[str]
    util: Optional[float]
    memory: float


class Clock:
    def __init__(self) -> None:
        self.t = BASE

    def __call__(self) -> float:
        return self.t


def stream(store: SqliteStore, clock: Clock, n: int, seed: int) -> List[Attempt]:
    """``n`` jobs through the store's transitions: some preempted and run again, some still
    running at the end; what each attempt did, as the test knows it."""
    rng = random.Random(seed)
    attempts: List[Attempt] = []
    for i in range(n):
        team = rng.choice(TEAMS)
        user = rng.choice(USERS[team])
        queue = "q%d" % rng.randrange(3)
        clock.t = BASE + rng.uniform(0, 20_000)
        job = store.submit(queue, team, "j%d" % i, ["x"], {}, "%s@laptop" % user)
        queued = clock.t
        preempt = rng.random() < 0.2
        for attempt in range(2 if preempt else 1):
            host, gpus, profile, memory, charge, measurable = rng.choice(SLOTS)
            slot = Slot(host, gpus, profile, None, memory, charge)
            start = queued + rng.choice((0.0, rng.uniform(1, 3000)))
            end = start + rng.uniform(60, 9000)
            util = rng.uniform(5, 95) * len(gpus) if measurable else None
            used = Sampled(samples=10, memory_peak_mib=int(rng.uniform(1000, 9000)),
                           memory_mean_mib=rng.uniform(500, 900), util_samples=10 if util
                           is not None else 0, util_mean=util,
                           util_note=None if measurable else "not reported by NVML for MIG")
            clock.t = start - 1
            store.place(job.id, slot, "sched", "fits")
            store.started(job.id, "a%d" % i, start, "sched", "started", model=host[:-2])
            last = attempt == (1 if preempt else 0)
            runs_on = last and rng.random() < 0.15
            outcome = None if runs_on else rng.choice((DONE, DONE, FAILED, CANCELLED)) \
                if last else PREEMPTED
            clock.t = end
            if outcome == PREEMPTED:
                store.stopping(job.id, (RUNNING,), "preempt", "sched", "room")
                store.requeue(job.id, (STOPPING,), "sched", "preempted", sampled=used)
            elif outcome == CANCELLED:
                store.stopping(job.id, (RUNNING,), "cancel", user, "enough")
                store.ended(job.id, (STOPPING,), CANCELLED, "enough", "sched", "enough", "end",
                            ended_at=end, sampled=used)
            elif outcome is not None:
                store.ended(job.id, (RUNNING,), outcome, None, "sched", outcome, "end",
                            ended_at=end, sampled=used)
            else:
                store.keep_usage({(job.id, attempt): used})
            attempts.append(Attempt(job.id, team, user, queue, slot, measurable, queued, start,
                                    None if runs_on else end, outcome, util,
                                    used.memory_mean_mib or 0.0))
            queued = end
    return attempts


@pytest.fixture
def known(tmp_path) -> Tuple[SqliteStore, List[Attempt], float]:
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    attempts = stream(store, clock, 80, seed=16)
    now = max(a.end or a.start for a in attempts) + 100
    clock.t = now
    yield store, attempts, now
    store.close()


def overlap(a: Attempt, since: float, until: float, now: float) -> float:
    return max(0.0, min(a.end if a.end is not None else now, until) - max(a.start, since))


def brute_demand(attempts: List[Attempt], since: float, until: float, now: float
                 ) -> Tuple[int, int, float, float]:
    """Peak and mean whole-GPU demand and GPUs in use, by looking at the middle of every
    stretch between two moments anything changed."""
    end = min(until, now)
    moments = sorted({since, end} | {t for a in attempts for t in (a.start, a.end or now)
                                     if since < t < end})
    peak_d = peak_u = 0
    area_d = area_u = 0.0
    for left, right in zip(moments, moments[1:]):
        mid = (left + right) / 2
        on = [a for a in attempts if a.start <= mid < (a.end if a.end is not None else now)]
        demand = sum(max(1, len(a.slot.gpus)) for a in on)
        used = len({(a.slot.host, g) for a in on for g in a.slot.gpus})
        peak_d, peak_u = max(peak_d, demand), max(peak_u, used)
        area_d += demand * (right - left)
        area_u += used * (right - left)
    return peak_d, peak_u, area_d / (end - since), area_u / (end - since)


@pytest.mark.parametrize("cut", [(0.0, 1.0), (0.3, 0.6), (0.55, 2.0)])
def test_the_reports_numbers_are_the_streams_computed_independently(known, cut):
    store, attempts, now = known
    first = min(a.start for a in attempts)
    span = now - first
    since, until = first + cut[0] * span, first + cut[1] * span
    report = build(store.usage(since, until), [], since, until, "team", now)
    groups = {g.key: g for g in report.groups}
    for team in TEAMS:
        mine = [a for a in attempts if a.team == team]
        g = groups[team]
        held = sum(a.slot.charge * overlap(a, since, until, now) for a in mine) / 3600
        used = sum(a.util / 100 * overlap(a, since, until, now) for a in mine
                   if a.util is not None) / 3600
        unmeasured = sum(a.slot.charge * overlap(a, since, until, now) for a in mine
                         if a.util is None) / 3600
        memory = sum(a.memory / 1024 * overlap(a, since, until, now) for a in mine) / 3600
        assert (g.held_h, g.used_h, g.unmeasured_h, g.memory_gib_h) == pytest.approx(
            (held, used, unmeasured, memory), rel=1e-9, abs=1e-9)
        waits = sorted(a.start - a.queued for a in mine if since <= a.start < until)
        assert sorted(g.waits_s) == pytest.approx(waits)
        if waits:  # nearest rank, by hand
            assert g.wait_median_s == pytest.approx(waits[math.ceil(len(waits) / 2) - 1])
            assert g.wait_p95_s == pytest.approx(waits[math.ceil(0.95 * len(waits)) - 1])
        ended: Dict[str, int] = {}
        for a in mine:
            if a.end is not None and since <= a.end < until:
                ended[a.outcome] = ended.get(a.outcome, 0) + 1  # type: ignore[index]
        assert {k: v for k, v in g.outcomes.items() if v} == ended
        assert g.running == sum(1 for a in mine if a.start < min(until, now) <= (
            a.end if a.end is not None else math.inf))
    assert report.total.held_h == pytest.approx(sum(g.held_h for g in report.groups))
    peak_d, peak_u, mean_d, mean_u = brute_demand(attempts, since, until, now)
    s = report.saving
    assert (s.peak_demand, s.peak_used) == (peak_d, peak_u)
    assert (s.mean_demand, s.mean_used) == pytest.approx((mean_d, mean_u))
    assert s.saved_peak == peak_d - peak_u and s.peak_demand > s.peak_used  # sharing saved


def test_the_usage_records_agree_with_the_stores_job_records(known):
    """Each job's last attempt, as the jobs table keeps it, is its last usage record."""
    store, attempts, now = known
    records = store.usage(0, now + 1)
    assert len(records) == len(attempts)
    last = {r.job: r for r in records}
    for job in store.jobs():
        r = last[job.id]
        assert (r.attempt, r.started_at, r.ended_at) == (job.attempt, job.started_at,
                                                         job.ended_at)
        assert (r.host, r.gpus, r.charge) == (job.slot.host, job.slot.gpus, job.slot.charge)
        assert r.outcome == (None if job.state == RUNNING else job.state)


def test_grouped_by_user_gpu_and_model_every_group_sums_to_the_total(known):
    store, attempts, now = known
    records = store.usage(0, now + 1)
    for by in ("queue", "user", "host", "model", "gpu"):
        report = build(records, [], 0, now + 1, by, now)
        assert sum(g.held_h for g in report.groups) == pytest.approx(report.total.held_h)
        assert sum(len(g.waits_s) for g in report.groups) >= len(report.total.waits_s)
    by_user = {g.key: g.held_h for g in build(records, [], 0, now + 1, "user", now).groups}
    for user in {a.user for a in attempts}:
        assert by_user[user] == pytest.approx(sum(
            a.slot.charge * overlap(a, 0, now + 1, now) for a in attempts if a.user == user)
            / 3600)


def test_gpu_time_gives_online_and_idle_hours_by_gpu_host_and_model():
    rows = [GpuTime("l4-1", 0, 0.0, "L4", online_s=300, idle_s=100, held_s=50),
            GpuTime("l4-1", 1, 0.0, "L4", online_s=300, idle_s=300),
            GpuTime("h100-1", 0, 300.0, "H100", online_s=120, idle_s=0, held_s=120),
            GpuTime("h100-1", 0, 900.0, "H100", online_s=300, idle_s=300)]
    by_host = {g.key: (g.online_h, g.idle_h) for g in build([], rows, 0, 600, "host", 600)
               .groups}
    assert by_host == {"l4-1": pytest.approx((600 / 3600, 400 / 3600)),
                       "h100-1": pytest.approx((120 / 3600, 0.0))}
    report = build([], rows, 0, 600, "team", 600)
    assert report.groups == []  # no team holds GPU time: only the total has it
    assert (report.total.online_h, report.total.idle_h) == pytest.approx((720 / 3600,
                                                                           400 / 3600))
    assert {g.key for g in build([], rows, 0, 1200, "gpu", 1200).groups} == {
        "l4-1 gpu0", "l4-1 gpu1", "h100-1 gpu0"}


def test_the_series_adds_up_to_the_report_over_its_steps(known):
    store, attempts, now = known
    first = min(a.start for a in attempts)
    records = store.usage(first, now)
    s = series(records, first, now, 24, now)
    report = build(records, [], first, now, "team", now)
    for g in report.groups:  # mean GPUs per step x step length = GPU-hours
        assert sum(s.held[g.key]) * s.step_s / 3600 == pytest.approx(g.held_h)
        assert sum(s.used[g.key]) * s.step_s / 3600 == pytest.approx(g.used_h)
    whole = saving(records, first, now, now)
    assert sum(s.demand) / len(s.demand) == pytest.approx(whole.mean_demand)
    assert sum(s.gpus_used) / len(s.gpus_used) == pytest.approx(whole.mean_used)
    assert [w is None for w in s.wait_median_s].count(False) > 0


def test_percentiles_are_by_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 21))), 95) == 19.0


# -- fractui report, as a user runs it --

def _config(tmp_path: Path, store: SqliteStore) -> str:
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "sqlite://%s"\n' % store.where)
    return str(path)


def _at(t: float) -> str:
    """``t`` as --since and --until take it (this machine's local time, to the microsecond)."""
    return datetime.datetime.fromtimestamp(t).isoformat()


def test_fractui_report_prints_json_csv_and_a_table_of_the_same_numbers(known, tmp_path,
                                                                       capfd):
    store, attempts, now = known
    config = _config(tmp_path, store)
    # a range that ends at the stream's now (the CLI's own clock is later: running attempts
    # count up to the range's end, as in the report made here)
    span = ["--since", _at(BASE - 3600), "--until", _at(now)]
    code, out, err = in_process(capfd, ["--config", config, "report", *span, "--json"])
    assert code == 0 and not leaks(err), err
    got = json.loads(out)
    assert got["until"] == pytest.approx(now) and got["since"] == pytest.approx(BASE - 3600)
    expected = build(store.usage(got["since"], got["until"]), [], got["since"], got["until"],
                     "team", got["until"])
    assert got.pop("gpu_time_buckets")["kept"] == 0  # the stream keeps no GPU time
    assert got.pop("waiting_now") is None  # (a range that ended before the CLI's now)
    assert got == json.loads(json.dumps(expected.record()))
    assert got["total"]["held_gpu_hours"] == pytest.approx(sum(
        a.slot.charge * overlap(a, BASE - 3600, now, now) for a in attempts) / 3600)
    code, out, err = in_process(capfd, ["--config", config, "report", *span, "--csv",
                                        "--by", "user"])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[-1]["user"] == "total"
    assert {r["user"] for r in rows[:-1]} == {a.user for a in attempts}
    assert float(rows[-1]["held_gpu_hours"]) == pytest.approx(
        sum(float(r["held_gpu_hours"]) for r in rows[:-1]), rel=1e-5)
    code, out, err = in_process(capfd, ["--config", config, "report", *span])
    assert code == 0, err
    s = expected.saving
    assert "sharing saved %d GPUs at peak" % s.saved_peak in out
    assert all(team in out for team in TEAMS) and out.count("\n") >= len(TEAMS) + 3


@pytest.mark.parametrize("argv,said", [
    (["--since", "1h", "--until", "2h"], "--since"),
    (["--since", "yesterday"], "must be now, a time ago"),
    (["--since", "30sec"], "a whole number then s, m, h, d or w: 90s, 30m"),
    (["--since", "30 s"], "a whole number then s, m, h, d or w"),
    (["--since", "9999999w"], "'9999999w' is before 1970-01-01"),  # was read as year -189627
    (["--since", "0001-01-01"], "'0001-01-01' is before 1970-01-01"),
    (["--until", "1969-12-31T23:59"], "is before 1970-01-01"),
    (["--until", "9999-12-31T23:59:59-14:00", "--csv"], "'9999-12-31T23:59:59-14:00' is not "
     "a time this machine can use: year 10000 is out of range"),  # (local time: 10000-01-01)
    (["--by", "colour"], "invalid choice"),
    (["--json", "--csv"], "not allowed with"),
])
def test_fractui_report_refuses_a_bad_range_or_grouping_with_exit_2(known, tmp_path, capfd,
                                                                    argv, said):
    store, _, _ = known
    code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report", *argv])
    assert code == 2 and said in err and not leaks(err), err


def test_a_time_ago_in_seconds_is_a_range_of_that_many_seconds(known, tmp_path, capfd):
    """The last 90 s of a demo, as an admin types it, beside the other units."""
    store, _, _ = known
    config = _config(tmp_path, store)
    for since, seconds in (("90s", 90), ("30s", 30), ("2m", 120)):
        code, out, err = in_process(capfd, ["--config", config, "report", "--since", since,
                                            "--json"])
        assert code == 0 and not leaks(err), err
        got = json.loads(out)
        assert got["until"] - got["since"] == seconds, (since, got["since"], got["until"])


def test_a_range_of_seconds_is_said_to_the_second_and_one_of_minutes_to_the_minute(
        known, tmp_path, capfd):
    """``--since 20s`` read "from 09:54 to 09:54", a range of nothing; a time given to the
    minute is said to the minute."""
    store, _, _ = known
    config = _config(tmp_path, store)
    code, out, err = in_process(capfd, ["--config", config, "report", "--since", "20s"])
    assert code == 0, err
    said = re.match(r"usage from (\S+ \S+) \S+ to (\S+ \S+) \S+, by team", out)
    assert said, out

    def read(text: str) -> datetime.datetime:  # (now may fall on a whole minute)
        return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M" + (
            ":%S" if text.count(":") == 2 else ""))
    assert (read(said.group(2)) - read(said.group(1))).total_seconds() == 20, out
    code, out, err = in_process(capfd, ["--config", config, "report", "--since",
                                        "2023-11-14T14:00", "--until", "2023-11-14T14:01"])
    assert code == 0 and re.match(
        r"usage from 2023-11-14 14:00 \S+ to 2023-11-14 14:01 \S+, by team", out), out


def test_an_empty_store_says_nothing_ran(tmp_path, capfd):
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report"])
    finally:
        store.close()
    assert code == 0 and "no job held a GPU in this range" in out, (out, err)


def test_one_attempt_ending_as_the_next_starts_on_its_gpu_is_never_counted_twice():
    from fractui.store.model import UsageRecord

    def on(start: float, end: float, gpus: Tuple[int, ...] = (0,)) -> UsageRecord:
        return UsageRecord(1, 0, "t", "q", "u", "h", gpus, None, None, 100, 0.5, start, start,
                           end, DONE)
    s = saving([on(0, 100), on(100, 200), on(50, 150, (1,))], 0, 200, 200)
    assert (s.peak_demand, s.peak_used) == (2, 2)
    assert (s.mean_demand, s.mean_used) == pytest.approx((1.5, 1.5))


def _done(start: float, end: float) -> UsageRecord:
    """An attempt of a whole GPU from ``start`` to ``end``, done, sampled."""
    return UsageRecord(1, 0, "t", "q", "u", "h", (0,), None, None, None, 1.0, start, start,
                       end, DONE, Sampled(samples=3, memory_mean_mib=1024.0, util_samples=3,
                                          util_mean=50.0))


@pytest.mark.parametrize("until", [1000.0, 500.0])
@pytest.mark.parametrize("end", [500.0, 510.0])
def test_an_attempt_the_store_closed_by_now_is_done_not_running_and_held_no_later(end, until):
    """A range that reaches now (now 500; until 1000, or until now, as `fractui report` by
    default and the TUI's report screen make it): an attempt that ended as the report is
    made, or whose host's clock put its end after the store's now, is one of the outcomes and
    not RUNNING too (the table says each attempt is either), and holds nothing past now, as
    what sharing saved counts it: 400 s, not 410."""
    r = build([_done(100.0, end)], [], 0.0, until, "team", 500.0)
    assert (r.total.outcomes, r.total.running) == ({DONE: 1}, 0)
    assert r.total.held_h * 3600 == pytest.approx(400.0)
    assert r.total.used_h * 3600 == pytest.approx(200.0)
    assert r.total.memory_gib_h * 3600 == pytest.approx(400.0)
    assert r.saving.mean_demand * (500.0 - r.start) == pytest.approx(400.0)  # from 100 s
    held = series([_done(100.0, end)], 0.0, until, 5, 500.0).held["t"]
    assert sum(held) * 100 == pytest.approx(400.0)  # five steps of 100 s up to now
    # a range that ended before now had it running at its end; one not begun, nothing
    before = build([_done(100.0, end)], [], 0.0, 300.0, "team", 500.0).total
    assert (before.outcomes, before.running) == ({}, 1)
    assert build([_done(100.0, end)], [], 600.0, 1000.0, "team", 500.0).total.empty


@pytest.mark.parametrize("until", [1000.0, 500.0])
def test_a_job_ended_waiting_by_a_clock_ahead_of_the_stores_is_of_the_range_reaching_now(
        until):
    """A job that failed at its launches, its end dated by a clock ahead of the store's now,
    ended waiting in the range that reaches now, whatever its end (until now, as the
    default's: not before it): the store knows it ended."""
    job = Job(id=1, queue="q", team="t", name="j", argv=("true",), request={}, state=FAILED,
              submitted_at=50.0, updated_at=510.0, ended_at=510.0)
    assert build([], [], 0.0, until, "team", 500.0, [job]).unstarted == {FAILED: 1}
    assert build([], [], 0.0, 300.0, "team", 500.0, [job]).unstarted == {}


def test_an_end_dated_after_now_is_the_outcome_of_one_range_only():
    """Now 500: an attempt its host's clock ended at 510 (or one ended at now) is the outcome
    of [0, 500), which reaches now, and not of [500, 1000) too, which has not begun; so is
    the end of a job that ended waiting, and a range not begun counts no wait either: a start
    its host dated after now is, as an end, of the range that reaches now alone."""
    for end in (500.0, 510.0):
        a = build([_done(100.0, end)], [], 0.0, 500.0, "team", 500.0).total
        b = build([_done(100.0, end)], [], 500.0, 1000.0, "team", 500.0).total
        assert a.outcomes.get(DONE, 0) + b.outcomes.get(DONE, 0) == 1
        assert b.empty
        job = Job(id=1, queue="q", team="t", name="j", argv=("true",), request={},
                  state=CANCELLED, submitted_at=50.0, updated_at=end, ended_at=end)
        assert [build([], [], since, until, "team", 500.0, [job]).unstarted for since, until
                in ((0.0, 500.0), (500.0, 1000.0))] == [{CANCELLED: 1}, {}]
    late = replace(_done(510.0, 520.0), queued_at=500.0)  # a start its host dated after now
    assert late.waits and late.waited_s == 10.0
    assert [build([late], [], since, until, "team", 500.0).total.waits_s for since, until in
            ((0.0, 500.0), (500.0, 1000.0))] == [[10.0], []]
    assert [series([late], since, until, 1, 500.0).wait_median_s for since, until in
            ((0.0, 500.0), (500.0, 1000.0))] == [[10.0], [None]]


def test_a_job_done_by_a_host_clock_ahead_is_an_outcome_not_running_in_the_default_report(
        tmp_path, capfd):
    """`fractui report` as run, --until now: a job whose host's clock, a minute ahead of the
    store's, dated its end after the report's now is done in it, and not RUNNING, held up
    to now."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", "vision", "train", ["x"], {}, "ann@laptop")
        store.place(job.id, Slot("h", (0,), None, None, None, 1.0), "sched", "fits")
        now = store.now()
        store.started(job.id, "a1", now - 600, "sched", "started", model="L4")
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=now + 60)
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                            "--json"])
        assert code == 0, err
        total = json.loads(out)["total"]
        assert (total["running"], total["outcomes"]["done"]) == (0, 1)
        assert 600 <= total["held_gpu_hours"] * 3600 < 660  # up to the report's now
    finally:
        store.close()


def test_a_damaged_usage_record_is_said_with_where_and_left_as_it_was(known, tmp_path, capfd):
    import sqlite3

    store, _, _ = known
    db = sqlite3.connect(store.where)
    db.execute("UPDATE usage SET gpus = 'not json' WHERE job = 3")
    db.commit()
    db.close()
    code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                        "--since", "2023-01-01"])
    assert code == 1 and not leaks(err), err
    assert store.where in err and "usage record of job 3" in err and "not json" in err, err
    check = sqlite3.connect(store.where)
    assert check.execute("SELECT gpus FROM usage WHERE job = 3").fetchone() == ("not json",)
    check.close()


def test_a_fleet_that_ran_nothing_says_so_and_still_shows_its_gpu_time(tmp_path, capfd):
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        store.keep_gpu_time([GpuTime("l4-1", 0, store.now() - 1800, "L4", online_s=300,
                                     idle_s=300)])
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report"])
    finally:
        store.close()
    assert code == 0, err
    assert "no job held a GPU in this range" in out and "no GPU time was kept" not in out
    assert "GPUs online 0.08 GPU-h, held while online 0.00 (0 %), idle with nothing on them 0.08 " \
        "(100 %)" in out


def test_the_part_of_gpu_time_held_is_of_the_time_online_even_while_a_host_was_away(
        tmp_path, capfd):
    """One whole GPU held by one job for an hour, its host away for the middle quarter: the
    job held 1.0 GPU-h, yet the GPU was seen online 2690 s (looks every 5 s; the look as the
    host returns counts nothing) and held all of those — 100 % of the time online, never
    134 %. (The hour starts on a bucket's start: GPU time counts by the buckets that begin in
    the range.)"""
    from fractui.sched.fleetview import HostView
    from fractui.usage.gputime import GpuClock

    clock = Clock()
    start = BASE + 100  # a multiple of 300
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = store.submit("q", "vision", "train", ["x"], {}, "ann@laptop")
        store.place(job.id, Slot("h", (0,), None, None, None, 1.0), "sched", "fits")
        store.started(job.id, "a1", start, "sched", "started", model="L4")
        running = [store.get(job.id)]
        gpus = GpuClock(bucket_s=300)
        for step in range(720):
            t = start + 5 * step
            state = "offline" if start + 1800 <= t < start + 2700 else "online"
            gpus.observe([HostView("h", state, hello={"gpus": []}, snapshot={"gpus": [
                {"index": 0, "name": "L4", "processes": [{"pid": 7}]}]})], running, t)
        store.keep_gpu_time(gpus.take())
        clock.t = start + 3600
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=start + 3600)
        span = ["--since", _at(start), "--until", _at(start + 3600)]
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                            *span, "--json"])
        assert code == 0, err
        total = json.loads(out)["total"]
        assert total["held_gpu_hours"] == pytest.approx(1.0)
        assert total["online_gpu_hours"] == pytest.approx(2690 / 3600)
        assert total["held_online_gpu_hours"] == pytest.approx(2690 / 3600)
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                            *span])
        assert code == 0, err
        assert "GPUs online 0.75 GPU-h, held while online 0.75 (100 %), idle with nothing on " \
            "them 0.00 (0 %)" in out, out
        assert "(MIG slices, or not sampled yet): 1.00 of 1.00\n" in out, out
        assert out.endswith("MEM GiB·h counts memory as sampled: 1 attempt holding 1.00 GPU-h "
                            "had no sample of it (none read yet, or ended before the agent's "
                            "first): job 1's attempt 0\n"), out  # (docs/usage.md, MEM)
    finally:
        store.close()


def test_the_range_is_said_with_its_offset_from_utc(known, tmp_path, capfd, monkeypatch):
    """--since 14:00 UTC read back on a machine in India is 19:30 there: the header says
    which zone its times are in."""
    import time

    store, _, _ = known
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        code, out, err = in_process(capfd, [
            "--config", _config(tmp_path, store), "report", "--since", "2023-11-14T14:00Z",
            "--until", "2023-11-15T14:00+00:00"])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert code == 0, err
    assert out.startswith("usage from 2023-11-14 19:30 +0530 to 2023-11-15 19:30 +0530, by "
                          "team"), out


def test_a_time_in_utc_is_read_on_every_python_fractui_runs_on():
    """``2026-12-01T14:00Z``, as ``report --help`` writes it: Python 3.10's fromisoformat
    refuses the "Z" that 3.11 takes, and fractui runs on 3.10."""
    from fractui.arguments import moment

    assert moment("2026-12-01T14:00Z").at == moment("2026-12-01T14:00+00:00").at == \
        datetime.datetime(2026, 12, 1, 14, tzinfo=datetime.timezone.utc).timestamp()


def test_jobs_that_ended_while_waiting_are_said_though_no_usage_record_has_them(tmp_path,
                                                                              capfd):
    """In the range: one job ran and is done; two were cancelled while they waited (one of
    them after a preemption sent it back), one failed at its launches, one was cancelled
    before the range. The table's outcomes count one done attempt and one preempted; the
    three that ended waiting are said under it, never as nothing."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    slot = Slot("h", (0,), None, None, None, 1.0)
    try:
        early = store.submit("q", "vision", "early", ["x"], {}, "ann@laptop")
        store.ended(early.id, (PENDING,), CANCELLED, "no", "ann", "no", "cancel")
        clock.t = BASE + 100
        ran = store.submit("q", "vision", "ran", ["x"], {}, "ann@laptop")
        waits = store.submit("q", "vision", "waits", ["x"], {}, "ann@laptop")
        back = store.submit("q", "nlp", "back", ["x"], {}, "cy@laptop")
        refused = store.submit("q", "nlp", "refused", ["x"], {}, "cy@laptop")
        store.place(ran.id, slot, "sched", "fits")
        store.started(ran.id, "a1", BASE + 100, "sched", "started")
        store.place(back.id, Slot("h", (1,), None, None, None, 1.0), "sched", "fits")
        store.started(back.id, "a2", BASE + 100, "sched", "started")
        clock.t = BASE + 200
        store.stopping(back.id, (RUNNING,), "preempt", "sched", "room")
        store.requeue(back.id, (STOPPING,), "sched", "preempted")
        store.place(refused.id, slot, "sched", "fits")
        store.ended(refused.id, (PLACED,), FAILED, "refused 3 times", "sched", "no", "failed")
        clock.t = BASE + 300
        store.ended(waits.id, (PENDING,), CANCELLED, "too long", "ann", "no", "cancel")
        store.ended(back.id, (PENDING,), CANCELLED, "too long", "cy", "no", "cancel")
        store.ended(ran.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=BASE + 400)
        clock.t = BASE + 500
        span = ["--since", _at(BASE + 50), "--until", _at(BASE + 500)]
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                            *span, "--json"])
        assert code == 0, err
        got = json.loads(out)
        assert got["ended_unstarted"] == {"cancelled": 2, "failed": 1}
        assert {k: v for k, v in got["total"]["outcomes"].items() if v} == {"done": 1,
                                                                             "preempted": 1}
        code, out, err = in_process(capfd, ["--config", _config(tmp_path, store), "report",
                                            *span])
        assert code == 0, err
        assert "3 jobs (2 cancelled, 1 failed) ended in this range while waiting to start: " \
               "waits and outcomes count only attempts that started" in out, out
    finally:
        store.close()


def test_a_researcher_reports_their_own_jobs_and_their_teams(tmp_path, capfd):
    """``report --me`` counts only the jobs the store's user submitted (held hours, waits,
    outcomes, the jobs that ended waiting), ``--user U`` another's, ``--team T`` a team's,
    both together one's jobs in a team; the GPUs' own time (the fleet's) is left out of
    them, and said so. Where none held a GPU the report says whose. A mistyped team is
    answered with the close name; an empty name, or --me with --user, is exit 2."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    me = store.identity().user
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[teams]]\nname = "vision"\n'
                      '[[teams]]\nname = "nlp"\n' % store.where)

    def ran(team: str, user: str, gpu: int, start: float, end: float) -> None:
        clock.t = start - 600  # each waited 10 minutes
        job = store.submit("q", team, "j", ["x"], {}, "%s@laptop" % user)
        clock.t = start
        store.place(job.id, Slot("h", (gpu,), None, None, None, 1.0), "sched", "fits")
        store.started(job.id, "a%d" % job.id, start, "sched", "started")
        clock.t = end
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=end)

    try:
        ran("vision", me, 0, BASE, BASE + 3600)  # 1 GPU-hour of mine in vision
        ran("nlp", me, 1, BASE, BASE + 1800)  # half an hour of mine in nlp
        ran("vision", "ann", 2, BASE, BASE + 7200)  # 2 of ann's in vision
        clock.t = BASE + 100
        mine = store.submit("q", "vision", "gave up", ["x"], {}, "%s@laptop" % me)
        store.ended(mine.id, (PENDING,), CANCELLED, "no", me, "no", "cancel")
        clock.t = BASE + 8000
        store.keep_gpu_time([GpuTime("h", 0, BASE, "m", online_s=3600.0, held_s=3600.0)])
        span = ["--since", _at(BASE - 3600), "--until", _at(BASE + 8000)]

        def report(*argv: str) -> Dict[str, object]:
            code, out, err = in_process(capfd, ["--config", str(config), "report", *span,
                                                "--json", *argv])
            assert code == 0 and not leaks(err), err
            return json.loads(out)

        everyone = report()
        assert everyone["total"]["held_gpu_hours"] == pytest.approx(3.5)
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span, "--csv"])
        header = out.split("\n", 1)[0].split(",")
        assert code == 0 and header[-7:-5] == ["whose_user", "whose_team"], err
        assert {(r["whose_user"], r["whose_team"]) for r in csv.DictReader(io.StringIO(out))
                } == {("", "")}  # everyone's
        assert everyone["total"]["online_gpu_hours"] == pytest.approx(1.0)
        for argv, held, done, groups, whose in (
                (["--me"], 1.5, 2, {"vision": 1.0, "nlp": 0.5}, {"user": me, "team": None}),
                (["--user", "ann"], 2.0, 1, {"vision": 2.0}, {"user": "ann", "team": None}),
                (["--team", "vision", "--by", "user"], 3.0, 2, {me: 1.0, "ann": 2.0},
                 {"user": None, "team": "vision"}),
                (["--me", "--team", "vision"], 1.0, 1, {"vision": 1.0},
                 {"user": me, "team": "vision"})):
            got = report(*argv)
            assert got["whose"] == whose, argv
            assert got["total"]["held_gpu_hours"] == pytest.approx(held), argv
            assert got["total"]["outcomes"]["done"] == done, argv
            assert got["total"]["wait_median_s"] == pytest.approx(600), argv
            assert {g["key"]: g["held_gpu_hours"] for g in got["groups"]} == pytest.approx(
                groups), argv
            assert [got["total"][k] for k in ("online_gpu_hours", "held_online_gpu_hours",
                                              "idle_gpu_hours")] == [None] * 3, argv  # the
            # fleet's, not theirs: not known of their jobs, never 0
            assert got["gpu_time_buckets"] is None, argv  # nor how much of it is kept
            assert got["start"] == everyone["start"], argv  # the store's, whoever's jobs
            assert got["ended_unstarted"]["cancelled"] == (0 if "ann" in argv else 1), argv
            code, out, err = in_process(capfd, ["--config", str(config), "report", *span,
                                                "--csv", *argv])
            assert code == 0, err  # (a sheet says whose too, in columns that never move)
            rows = list(csv.DictReader(io.StringIO(out)))
            assert [(r["whose_user"], r["whose_team"]) for r in rows] == [
                (whose["user"] or "", whose["team"] or "")] * (len(groups) + 1), argv
            assert out.split("\n", 1)[0].split(",")[1:] == header[1:], argv
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span, "--me"])
        assert code == 0, err
        assert out.startswith("usage of %s's jobs from " % me), out
        assert "(the GPUs' own time — online, idle — is the fleet's, not %s's jobs" % me in out
        assert "GPUs online" not in out
        total = next(line for line in out.splitlines() if line.startswith("total "))
        assert total.endswith(" —"), total  # its IDLE: not known, never 0.00
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span,
                                            "--user", "bo"])  # a name no one goes by: a typo
        assert (code, out) == (2, "") and "--user 'bo': no user of that name is known in " \
            "this store" in err, (out, err)
        for argv, said in ((["--team", "visoin"], "unknown team 'visoin' (did you mean "
                            "'vision'?"),
                           (["--me", "--user", "ann"], "not allowed with"),
                           (["--user", ""], "argument --user: takes a user's name"),
                           (["--team", ""], "argument --team: takes a team's name")):
            code, out, err = in_process(capfd, ["--config", str(config), "report", *argv])
            assert (code, out) == (2, "") and said in err and not leaks(err), (argv, err)
    finally:
        store.close()


def test_the_tables_numbers_are_never_cut_however_large():
    """1000 whole GPUs held for 90 days: 2,160,000 GPU-hours, "2160000.00", was cut to the
    HELD column's 9 characters, "2160000.…" — another number. A report's numbers are never
    cut (terminal.table); only the group's name may be."""
    from fractui.report_commands import lines
    day = 86400.0
    records = [UsageRecord(i, 0, "vision", "q", "ann", "h%d" % i, (0,), None, None, None,
                           1.0, BASE, BASE, BASE + 90 * day, DONE) for i in range(1000)]
    made = build(records, [], BASE, BASE + 91 * day, "team", BASE + 100 * day)
    rows = [line.split() for line in lines(made) if line.startswith(("vision", "total"))]
    assert [row[:2] for row in rows] == [["vision", "2160000.00"], ["total", "2160000.00"]]
    assert rows[1][7] == "1000", rows  # DONE


def test_by_gpu_a_long_named_hosts_gpus_keep_their_index():
    """By GPU, a host named past the GROUP column's 32 cells (a fully qualified name of 41)
    had each of its GPUs' rows cut to one name, "gpu-node-0001.datacenter-west.e…", read
    alike; and on the report screen (24 cells) too. The host's name is cut, the GPU's index
    never: "gpu-node-0001.datacenter-w… gpu0", then "… gpu1"."""
    from fractui.report_commands import lines
    from fractui.tui.report_view import table_rows
    host = "gpu-node-0001.datacenter-west.example.com"
    records = [UsageRecord(i, 0, "vision", "q", "ann", host, (i,), None, None, None, 1.0,
                           BASE, BASE, BASE + 3600, DONE) for i in range(2)]
    made = build(records, [], BASE, BASE + 7200, "gpu", BASE + 7200)
    shown = [line[:32].rstrip() for line in lines(made) if line.startswith("gpu-node")]
    assert shown == ["gpu-node-0001.datacenter-w… gpu0", "gpu-node-0001.datacenter-w… gpu1"]
    _, rows = table_rows(made, 200)
    assert [row[0] for row in rows] == ["gpu-node-0001.data… gpu0",
                                        "gpu-node-0001.data… gpu1", "total"], rows
