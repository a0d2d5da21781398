"""``fractui report`` of a short history played through the store's own transitions, on SQLite
and on PostgreSQL, against numbers worked out by hand here. The history is seconds long and
real: a store's waits are from its own clock (on PostgreSQL, the server's), so the jobs are
submitted now and their hosts' starts and ends given a few seconds later, and the report is
read once those have passed.

Times are seconds from B, the whole second the first submit falls in (all four submits are
within 1.3 s of it); the range is [B, B + 4 s); GPU time: a look every 0.1 s from 1.5 s to
3.5 s at hosts h1 (two L4s) and h2 (one L4), h2 away for its looks from 2.1 s to 2.6 s (its
look at 2.7 s, back, counts nothing).

    job  team/user  slot                       start -> end     util  mem
    1    vision/ann h1 gpu0 share 0.25         1.9 -> 3.1 done  40 %  1 GiB
    2    vision/bo  h1 gpu0 share 0.5          2.3 -> 3.3 failed 60 % 2 GiB
    3    nlp/cy     h2 gpu0 whole              1.7 -> 2.9 done  never sampled
    4    nlp/cy     cancelled while it waited
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import sqlite3
import time
from dataclasses import replace
from typing import Dict, List

import pytest

from fractui.usage.sentences import local
from fractui.sched.fleetview import HostView
from fractui.store import StoreDamaged, open_store
from fractui.store.sqlite import SqliteStore
from fractui.store.model import CANCELLED, DONE, FAILED, PENDING, RUNNING, GpuTime, Job, Slot
from fractui.usage.gputime import GpuClock
from tests.cli_run import in_process, leaks
from tests.test_report_truth import sampled

H = 3600.0
ONE, HALF, QUARTER = (Slot("h2", (0,), None, None, None, 1.0),
                      Slot("h1", (0,), None, None, 12288, 0.5),
                      Slot("h1", (0,), None, None, 6144, 0.25))


def _at(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat()


def test_the_report_of_a_scripted_history_is_the_hand_worked_one_on_either_store(
        store_url, tmp_path, capfd):
    store = open_store(store_url)
    try:
        b = math.floor(store.now())
        plan = [("vision", "ann", QUARTER, 1.9, 3.1, DONE, sampled(40, 1024)),
                ("vision", "bo", HALF, 2.3, 3.3, FAILED, sampled(60, 2048)),
                ("nlp", "cy", ONE, 1.7, 2.9, DONE, None)]
        jobs = [store.submit("q", team, "j", ["x"], {}, "%s@laptop" % user)
                for team, user, *_ in plan]
        waiting = store.submit("q", "nlp", "j", ["x"], {}, "cy@laptop")
        store.ended(waiting.id, (PENDING,), CANCELLED, None, "cy", "cancel", "cancelled")
        assert max(j.submitted_at for j in jobs) < b + 1.3  # (the history's first start: 1.7)
        for job, (_, _, slot, start, end, outcome, took) in zip(jobs, plan):
            store.place(job.id, slot, "sched", "fits")
            store.started(job.id, "a%d" % job.id, b + start, "sched", "started",
                          model="NVIDIA L4")
            store.ended(job.id, (RUNNING,), outcome, None, "sched", outcome, "end",
                        ended_at=b + end, sampled=took)
        gpus = GpuClock(bucket_s=300)
        for tenth in range(15, 36):
            t = b + tenth / 10
            on = [Job(j.id, "q", p[0], "j", ("x",), {}, RUNNING, 0.0, 0.0, slot=p[2])
                  for j, p in zip(jobs, plan) if b + p[3] <= t < b + p[4]]
            gpus.observe([HostView(host, "offline" if host == "h2" and 21 <= tenth < 27 else
                                   "online", hello={"gpus": []}, snapshot={"gpus": [
                                       {"index": g, "name": "NVIDIA L4", "processes": []}
                                       for g in range(count)]})
                          for host, count in (("h1", 2), ("h2", 1))], on, t)
        store.keep_gpu_time(gpus.take())
        while store.now() < b + 4.05:  # the range ends before the report's now
            time.sleep(0.1)
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % store_url)

    def report(*argv: str) -> Dict:
        code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                            _at(b), "--until", _at(b + 4), "--json", *argv])
        assert code == 0 and not leaks(err), err
        return json.loads(out)

    def seconds(group: Dict, *keys: str) -> List:
        """The group's hours in seconds (None: not known)."""
        return [None if group[k] is None else group[k] * H for k in keys]

    waits = sorted(b + p[3] - j.submitted_at for j, p in zip(jobs, plan))
    got = report()
    teams = {g["key"]: g for g in got["groups"]}
    keys = ("held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours", "memory_gib_hours")
    # vision: 0.25 x 1.2 s + 0.5 x 1.0 s held; 0.4 x 1.2 + 0.6 x 1.0 used; 1 GiB x 1.2 +
    # 2 GiB x 1.0; nlp: 1.2 s of a whole GPU, never sampled: used and memory not known
    assert seconds(teams["vision"], *keys) == pytest.approx([0.8, 1.08, 0, 3.2], abs=0.01)
    assert seconds(teams["nlp"], *keys) == [pytest.approx(1.2, abs=0.01), None,
                                            pytest.approx(1.2, abs=0.01), None]
    total = got["total"]
    assert seconds(total, *keys) == pytest.approx([2.0, 1.08, 1.2, 3.2], abs=0.01)
    # memory is as sampled: job 3 held a whole GPU 1.2 s with no sample of its memory (it
    # ended before its agent's first), so the total's 3.2 GiB·s is vision's alone — said,
    # with the GPU-hours it held and its attempt named, never read as memory it did not use
    unsampled = ("unsampled_memory_gpu_hours", "unsampled_memory_attempts")
    assert [seconds(total, unsampled[0])[0], total[unsampled[1]]] == [
        pytest.approx(1.2, abs=0.01), 1]
    assert (teams["vision"][unsampled[1]], teams["nlp"][unsampled[1]]) == (0, 1)
    assert got["memory_unsampled"] == [{"job": jobs[2].id, "attempt": 0}]
    # GPU time, each look counting the 0.1 s since the last as it finds the GPU: h1's GPUs
    # seen 2.0 s each, h2's 0.5 + 0.8 s; held while online h1 gpu0 0.25 x 1.2 + 0.5 x 1.0,
    # h2 gpu0 0.5 (its looks at 1.7 to 2.0 s and 2.8 s find job 3); idle h1 gpu1 2.0, h1 gpu0
    # 0.3 + 0.3 (looks at 1.6 to 1.8 s, 3.3 to 3.5 s), h2 gpu0 0.1 + 0.7 (1.6 s, 2.9 to 3.5 s)
    assert seconds(total, "online_gpu_hours", "held_online_gpu_hours", "idle_gpu_hours") == \
        pytest.approx([5.3, 1.3, 3.4], abs=0.01)
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (
        3, pytest.approx(waits[1], abs=1e-5), pytest.approx(waits[2], abs=1e-5))
    assert (teams["vision"]["waits"], teams["nlp"]["wait_median_s"]) == (
        2, pytest.approx(b + 1.7 - jobs[2].submitted_at, abs=1e-5))
    assert (total["outcomes"]["done"], total["outcomes"]["failed"], total["running"]) == (
        2, 1, 0)
    assert got["ended_unstarted"] == {"cancelled": 1, "failed": 0}
    assert got["waiting_now"] is None  # a range that ended before now
    # without sharing: 3 GPUs at peak (2.3 -> 2.9 s), 1.2 + 1.2 + 1.0 GPU-s over the 2.5 s
    # from the first look (1.5 s: the store keeps nothing before it); in use h2 gpu0 1.2 s
    # and h1 gpu0 1.4 s, 2 at peak
    assert got["start"] == pytest.approx(b + 1.5)
    assert got["saving"] == {
        "peak_demand_gpus": 3, "peak_used_gpus": 2, "saved_gpus_at_peak": 1,
        "mean_demand_gpus": pytest.approx(3.4 / 2.5, abs=1e-4),
        "mean_used_gpus": pytest.approx(2.6 / 2.5, abs=1e-4),
        "saved_gpus_mean": pytest.approx(0.8 / 2.5, abs=1e-4)}
    hosts = {g["key"]: g for g in report("--by", "host")["groups"]}
    assert {k: seconds(g, "held_gpu_hours", "online_gpu_hours", "held_online_gpu_hours",
                       "idle_gpu_hours") for k, g in hosts.items()} == {
        "h1": pytest.approx([0.8, 4.0, 0.8, 2.6], abs=0.01),
        "h2": pytest.approx([1.2, 1.3, 0.5, 0.8], abs=0.01)}
    span = ["--config", str(config), "report", "--since", _at(b), "--until", _at(b + 4)]
    code, out, err = in_process(capfd, span)
    assert code == 0 and not leaks(err), err
    assert "MEM GiB·h counts memory as sampled: 1 attempt holding 0.00 GPU-h had no sample " \
        "of it (none read yet, or ended before the agent's first): job %d's attempt 0" % (
            jobs[2].id) in out
    code, out, err = in_process(capfd, span + ["--csv"])
    assert code == 0 and not leaks(err), err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][-3:] == ["waiting_now", *unsampled]  # added at the end, as every column
    assert [row[-1] for row in rows[1:]] == ["1", "0", "1"]  # nlp, vision, the total


def test_means_over_time_start_where_the_store_keeps_anything_not_where_the_range_does(
        store_url, tmp_path, capfd):
    """The store keeps an attempt of a whole GPU from 3000 s ago to 2900 s ago, and one from
    1000 s ago to 900 s ago (no GPU time: no scheduler looked); [2000 s ago, now): the store
    keeps usage from before the range, so its means are over all of it — 100 GPU-s of demand
    over 2000 s, 0.05 — and no line says it keeps nothing before; they started at the range's
    first attempt (1000 s ago: 0.1, and "the store keeps nothing of it before" then), as if
    the store were younger than the range. The report screen's day alike."""
    from fractui.tui.report_view import Span, compute
    from fractui.tui.source import Source

    store = open_store(store_url)
    try:
        t0 = math.floor(store.now())
        for start in (3000, 1000):
            job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
            store.place(job.id, ONE, "sched", "fits")
            store.started(job.id, "a%d" % job.id, t0 - start, "sched", "started")
            store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end",
                        ended_at=t0 - start + 100)
        source = Source([])
        source.store = store
        screen = compute(source, Span("x", "x", 2000.0, 10, "2000s"), "team", t0, 300)
        assert screen is not None
        assert (screen.report.start, screen.report.saving.mean_demand) == (
            t0 - 2000, pytest.approx(0.05))
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % store_url)
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                        _at(t0 - 2000), "--until", _at(t0), "--json"])
    assert code == 0 and not leaks(err), err
    got = json.loads(out)
    assert (got["start"], got["saving"]["mean_demand_gpus"]) == (t0 - 2000, 0.05)
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                        _at(t0 - 2000), "--until", _at(t0)])
    assert "keeps nothing" not in out, out
    # a range that ended before anything kept: it was "nothing of it before" its own end
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                        _at(t0 - 5000), "--until", _at(t0 - 4000)])
    assert code == 0 and out.splitlines()[1:4] == [
        "(the store keeps nothing of this range: what it keeps begins after it)",
        "no job held a GPU in this range, and no GPU time was kept",
        "GPUs online, held while online and idle: not known. GPU time is kept per bucket of "
        "[usage] bucket_s (300 s), each counted for its part in a range; the store keeps none "
        "of this one's: what it keeps begins after it"], (out, err)  # (not "none of this "
    # one's holds a look at a GPU yet", as of a range not over, written at the next write)


def test_means_over_time_start_where_the_retention_forgot_not_at_a_running_attempt_kept(
        store_url, tmp_path, capfd):
    """Whole GPUs: A on h2 from 2500 s ago, running; B on h1 from 2900 s to 2100 s ago; C on
    h1 from 1500 s to 1000 s ago; h2's GPU time kept in buckets of 300 s up to now. The
    retention then forgets what ended, and the buckets that began, before 2000 s ago: B and
    the older buckets go; A's record, running, stays. Of [2500 s ago, now), the store keeps
    all usage from 2000 s ago only, so the means start there: A's 2000 s and C's 500 s over
    2000 s, a demand of 1.25; and the GPU time is kept for every bucket from there. They
    started at A's start, as if the store kept everything since: 1.2 (A's 2500 s and C's 500
    over 2500 s; B's 400 s of them were forgotten, and the demand was 1.36), and the buckets
    the retention forgot were said to be time when no scheduler looked. Every other number is
    of the same time from 2000 s ago: A's held hours before then, without B's, were counted
    (0.83 GPU-h of 2500 s, as if A had held a GPU alone), its wait among the waits; and a
    range all before the cut read 0 GPU-hours held, no wait, no outcome, though nothing of
    it is known: those are null in --json, said not known in text."""
    store = open_store(store_url)
    try:
        t0 = math.floor(store.now())
        for slot, start, end in ((ONE, 2500, None), (QUARTER, 2900, 2100), (QUARTER, 1500, 1000)):
            job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
            store.place(job.id, replace(slot, charge=1.0), "sched", "fits")
            store.started(job.id, "a%d" % job.id, t0 - start, "sched", "started")
            if end is not None:
                store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end",
                            ended_at=t0 - end)
        first = math.floor((t0 - 3000) / 300) * 300
        store.keep_gpu_time([GpuTime("h2", 0, b, "NVIDIA L4", online_s=min(300, t0 - b),
                                     idle_s=0.0, held_s=min(300, t0 - b), seen_from=b,
                                     seen_to=min(b + 300, t0))
                             for b in range(first, t0, 300)])
        assert store.prune_usage(t0 - 2000) > 0
        assert store.prune_usage(t0 - 2500) == 0  # (forgets nothing: where it forgot stays)
        assert store.usage_begins() == t0 - 2000
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[usage]\nbucket_s = 300\n' % store_url)
    span = ["report", "--since", _at(t0 - 2500), "--until", _at(t0)]
    code, out, err = in_process(capfd, ["--config", str(config), *span, "--json"])
    assert code == 0 and not leaks(err), err
    got = json.loads(out)
    kept = got["gpu_time_buckets"]
    assert (got["start"], got["saving"]["mean_demand_gpus"], kept["kept"]) == (
        t0 - 2000, 1.25, kept["due"]), got
    # from 2000 s ago: A's 2000 s and C's 500 s held; C's wait only (A began before); C
    # done, A running
    total = got["total"]
    assert (total["held_gpu_hours"], total["waits"], total["outcomes"]["done"],
            total["running"]) == (pytest.approx(2500 / H, abs=1e-6), 1, 1, 1), total
    code, out, err = in_process(capfd, ["--config", str(config), *span])
    assert code == 0 and "(the store keeps all of its usage only from %s: the retention " \
        "([usage] keep_days) forgot what ended before; every number here is of the time " \
        "from there)" % local(t0 - 2000) in out.splitlines(), out
    assert "no scheduler looked" not in out, out
    unknown = ("what its jobs held, used and waited, how they ended and what sharing saved "
               "are not known: the retention ([usage] keep_days) forgot it")
    # [2500 s ago, 2100 s ago) and [3000 s ago, 2600 s ago), all of it before the cut: of
    # the first the store keeps A's 400 s, B's and the others' forgotten; of the second
    # nothing. Neither is known: every number of what the jobs held is null, never 0 (the
    # first read A's 0.11 GPU-h as the range's, the second 0) and no job "held no GPU"
    for ago in (2500, 3000):
        before = ["--config", str(config), "report", "--since", _at(t0 - ago), "--until",
                  _at(t0 - ago + 400)]
        code, out, err = in_process(capfd, before + ["--json"])
        got = json.loads(out)
        total = got["total"]
        assert code == 0 and got["saving"] is None and got["groups"] == [], out
        assert [total[k] for k in ("held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours",
                                   "memory_gib_hours", "waits", "wait_median_s", "running",
                                   "online_gpu_hours")] == [None] * 8, total
        assert set(total["outcomes"].values()) == {None}, total
        code, out, err = in_process(capfd, before + ["--csv"])
        assert code == 0 and out.splitlines()[1].split(",")[1:4] == ["", "", ""], out
        for whose in ([], ["--user", "ann"]):
            code, out, err = in_process(capfd, before + whose)
            lines = out.splitlines()
            assert code == 0 and "held a GPU" not in out and lines[1] == (
                "(the store keeps nothing of this range: the retention ([usage] keep_days) "
                "forgot it, and all it keeps begins after it)") and unknown in lines and (
                "vision" not in out), out


def test_where_the_retention_forgot_is_never_past_the_stores_own_time(store_url, tmp_path,
                                                                      capfd):
    """A lease holder whose clock ran two days ahead, with [usage] keep_days = 1, prunes with
    its cut a day past the store's now: what ended is forgotten (all of it, as it would be a
    day on), but no usage after the store's now was. Where it forgot was kept as that cut, a
    day on: every report up to then read as of a time the retention forgot ("the store keeps
    nothing of this range"), an attempt started since counted as one that ran on past it."""
    store = open_store(store_url)
    try:
        t0 = math.floor(store.now())
        for start, end in ((900, 800), (600, None)):
            job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
            store.place(job.id, ONE, "sched", "fits")
            store.started(job.id, "a%d" % job.id, t0 - start, "sched", "started")
            if end is not None:
                store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end",
                            ended_at=t0 - end)
        assert store.prune_usage(t0 + 86400) == 1
        assert store.usage_begins() <= store.now()
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % store_url)
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                        _at(t0 - 300), "--until", _at(t0 + 60), "--json"])
    got = json.loads(out)
    assert code == 0 and got["start"] < got["until"] and got["saving"] is not None, out


def test_where_the_retention_forgot_comes_back_with_a_clock_set_back(tmp_path):
    """SQLite's time is its machine's: a clock run two days ahead there (keep_days = 1) kept
    where it forgot a day past the time it was set back to, and the prune never moved it
    back; the next prune puts it at the store's now, not past it."""
    clock = [time.time() + 2 * 86400]
    store = SqliteStore(str(tmp_path / "store.db"), clock=lambda: clock[0])
    try:
        job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
        store.place(job.id, ONE, "sched", "fits")
        store.started(job.id, "a", clock[0] - 86600, "sched", "started")
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end",
                    ended_at=clock[0] - 86500)
        assert store.prune_usage(clock[0] - 86400) == 1
        clock[0] -= 2 * 86400
        assert store.prune_usage(clock[0] - 86400) == 0
        assert store.usage_begins() == clock[0]
    finally:
        store.close()


def test_a_damaged_mark_of_where_the_retention_forgot_does_not_stop_the_prune(tmp_path):
    """A hand's edit of meta's usage_forgotten_before (not a time) is the store's damage to a
    report, said with the key; to the lease holder's prune it was too, and the scheduler
    stops on a damaged store (service: StoreDamaged), every job's placement with it, for a
    mark only reports read. The prune says it in the log and keeps its own cut there."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        store.keep_gpu_time([GpuTime("h", 0, 0.0, None, online_s=300.0)])
        assert store.prune_usage(600.0) == 1
        with sqlite3.connect(str(tmp_path / "store.db")) as db:
            db.execute("UPDATE meta SET value = 'soon' WHERE key = 'usage_forgotten_before'")
        with pytest.raises(StoreDamaged, match="usage_forgotten_before holds 'soon'"):
            store.usage_begins()
        assert store.prune_usage(900.0) == 0 and store.usage_forgotten_before() == 900.0
    finally:
        store.close()


def test_a_job_started_by_a_host_clock_ahead_waits_and_runs_in_the_range_reaching_now(
        store_url, tmp_path, capfd):
    """`fractui report` as run, --until now, and the TUI's report screen: a job whose host's
    clock, a minute ahead of the store's, dated its start after the report's now is read,
    started at now: its wait and its RUNNING are of the range that reaches now, it held
    nothing yet, and it is of no range that has not begun."""
    from fractui.tui.report_view import Span, compute
    from fractui.tui.source import Source
    from fractui.usage.report import build
    store = open_store(store_url)
    try:
        job = store.submit("q", "vision", "train", ["x"], {}, "ann@laptop")
        store.place(job.id, ONE, "sched", "fits")
        now = store.now()
        store.started(job.id, "a1", now + 60, "sched", "started", model="L4")
        waited = store.get(job.id).started_at - job.submitted_at
        source = Source([])
        source.store = store
        screen = compute(source, Span("x", "x", 3600.0, 10, "1h"), "team", now, 300)
        assert screen is not None
        assert (screen.report.total.running, screen.report.total.waits_s) == (
            1, [pytest.approx(waited)])
        frozen = Source([], usage=store.usage(0, now + 3600))  # a frozen fleet's records
        assert compute(frozen, Span("x", "x", 3600.0, 10, "1h"), "team", now, 300
                       ).report.total.running == 1  # type: ignore[union-attr]
        later = build(store.usage(now, now + 3600), [], now, now + 3600, "team", now).total
        assert later.empty
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % store_url)
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--json"])
    assert code == 0 and not leaks(err), err
    total = json.loads(out)["total"]
    assert (total["running"], total["held_gpu_hours"]) == (1, 0)
    assert total["wait_median_s"] == pytest.approx(waited)
    code, out, err = in_process(capfd, ["--config", str(config), "report"])  # the table
    assert code == 0 and not leaks(err) and "vision" in out, err
