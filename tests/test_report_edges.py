"""The report at its edges, against numbers worked out by hand in this file's comments: attempts
across the range's edges (clipped), one ending exactly as a range begins, a preempted job's
second wait, a late copy, an attempt never sampled, MIG slices, a 2-GPU job, a running one
counted to now, a job still waiting at the range's end, a range of nothing, one in the future
and one given backwards; GPU time with a host away, a paused holder and buckets across the
edges; a day as the clocks go back; hosts whose clocks disagree; and what sharing saved in its
small cases. The metrics of the same state are checked against the report's.

The fleet (times are hours from T; R, the range most checks read, is [1 h, 3 h)):

    job  team/user    slot                               attempt: from -> to, end     util  mem
    1    vision/ann   l4 gpu0 share 0.25                 0.5 -> 1.5 done              40 %  1 GiB
    2    vision/bo    l4 gpu1 whole (submitted 0.75)     1 -> 2 preempted             60 %  2 GiB
                      l4 gpu1 whole                      2.5 -> 3.5 done              90 %  4 GiB
    3    nlp/cy       a100 gpu0 3g.40gb (3/7)            1 -> runs on (submitted 1)   MIG   10 GiB
    4    nlp/cy       a10 gpus 0,1 whole, charge 2       1.5 -> 2.5 failed (sub 1.25) 150 % 8 GiB
    5    speech/di    l4 gpu0 share 0.5 (submitted 2)    2 -> 2.25 cancelled          never sampled
    6    vision/ann   submitted 1.9, its launch lost at 1.95 (requeued); a late copy of
                      that attempt ran on l4 gpu0 (0.25) 2 -> 2.1       20 %  256 MiB;
                      the job cancelled waiting at 2.2
    7    speech/di    submitted 2.75, waits on to the end
    8    speech/ed    l4 gpu1 whole (submitted 0.9)      3.5 -> runs on               50 %  1 GiB
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Dict, List

import pytest

from fractui.metrics.state import MetricsState
from fractui.sched.fleetview import HostView
from fractui.store import open_store
from fractui.store.model import (CANCELLED, DONE, FAILED, PENDING, PLACED, RUNNING, STOPPING,
                                 GpuTime, LateCopy, Sampled, Slot, UsageRecord)
from fractui.store.sqlite import SqliteStore
from fractui.usage.gputime import GpuClock
from fractui.usage.report import build, saving
from fractui.usage.sentences import Coverage
from tests.cli_run import in_process, leaks, store_report, subprocess_run
from tests.test_report_truth import (HALF, MIG, QUARTER, TEAMS, Clock, metric, sampled,
                                     samples)

T = 1_700_006_400.0  # a multiple of 3600
H = 3600.0
WHOLE_L4 = Slot("l4", (1,), None, None, None, 1.0)
TWO_A10 = Slot("a10", (0, 1), None, None, None, 2.0)
MODELS = {"l4": "NVIDIA L4", "a100": "NVIDIA A100-SXM4-80GB", "a10": "NVIDIA A10"}


def _at(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat()


class Fleet:
    """The scenario above, played through the store's own transitions at their times."""

    def __init__(self, tmp_path: Path):
        self.clock = Clock()
        self.store = SqliteStore(str(tmp_path / "store.db"), clock=self.clock)
        self.config = tmp_path / "config.toml"
        self.config.write_text('[store]\nurl = "sqlite://%s"\n' % self.store.where)
        self.ids: Dict[int, int] = {}

    def submit(self, n: int, at: float, queue: str, team: str, user: str) -> None:
        self.clock.t = T + at * H
        self.ids[n] = self.store.submit(queue, team, "job%d" % n, ["x"], {},
                                        "%s@laptop" % user).id

    def run(self, n: int, slot: Slot, at: float) -> None:
        self.clock.t = T + at * H
        self.store.place(self.ids[n], slot, "sched", "fits")
        self.store.started(self.ids[n], "a%d" % n, T + at * H, "sched", "started",
                           model=MODELS[slot.host])

    def end(self, n: int, at: float, state: str, used: Sampled | None) -> None:
        self.clock.t = T + at * H
        self.store.ended(self.ids[n], (RUNNING,), state, None, "sched", state, "end",
                         ended_at=T + at * H, sampled=used)

    def report(self, capfd, *argv: str) -> str:
        code, out, err = in_process(capfd, ["--config", str(self.config), "report", *argv])
        assert code == 0 and not leaks(err), err
        return out


def play(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path)
    s = f.store
    f.submit(1, 0, "quarter", "vision", "ann")
    f.run(1, QUARTER, 0.5)
    f.submit(2, 0.75, "whole", "vision", "bo")
    f.submit(8, 0.9, "whole", "speech", "ed")
    f.submit(3, 1, "mig", "nlp", "cy")
    f.run(3, MIG, 1)
    f.run(2, WHOLE_L4, 1)
    f.submit(4, 1.25, "two", "nlp", "cy")
    f.end(1, 1.5, DONE, sampled(40, 1024))
    f.run(4, TWO_A10, 1.5)
    f.submit(6, 1.9, "quarter", "vision", "ann")
    epoch = s.acquire_lease("sched", 1e9)
    f.clock.t = T + 1.95 * H
    s.place(f.ids[6], QUARTER, "sched", "fits", epoch=epoch)
    s.requeue(f.ids[6], (PLACED,), "sched", "its launch was lost", epoch=epoch)
    f.clock.t = T + 2 * H
    s.stopping(f.ids[2], (RUNNING,), "preempt", "sched", "for a team within its quota")
    s.requeue(f.ids[2], (STOPPING,), "sched", "preempted", sampled=sampled(60, 2048))
    f.submit(5, 2, "half", "speech", "di")
    f.run(5, HALF, 2)
    f.clock.t = T + 2.1 * H
    key = "fractui-%s-%d.0" % (s.uid, f.ids[6])
    s.stop_sent("l4", key, epoch=epoch)
    assert s.copy_ended("l4", key, "sched", epoch=epoch, late=LateCopy(
        f.ids[6], 0, "l4", (0,), MODELS["l4"], None, 5758, 0.25, T + 2 * H, T + 2.1 * H,
        sampled(20, 256)))
    f.clock.t = T + 2.2 * H
    s.ended(f.ids[6], (PENDING,), CANCELLED, "no", "ann", "no", "cancel")
    f.clock.t = T + 2.25 * H
    s.stopping(f.ids[5], (RUNNING,), "cancel", "di", "cancelled by di")
    s.ended(f.ids[5], (STOPPING,), CANCELLED, "cancelled by di", "sched", "cancelled", "end",
            ended_at=T + 2.25 * H)  # no sample was ever read of it
    f.end(4, 2.5, FAILED, sampled(150, 8192))
    f.run(2, WHOLE_L4, 2.5)
    f.submit(7, 2.75, "whole", "speech", "di")
    f.end(2, 3.5, DONE, sampled(90, 4096))
    f.run(8, WHOLE_L4, 3.5)
    f.clock.t = T + 4 * H
    s.keep_usage({(f.ids[3], 0): sampled(None, 10240), (f.ids[8], 0): sampled(50, 1024)},
                 epoch=epoch)
    return f


@pytest.fixture
def fleet(tmp_path):
    f = play(tmp_path)
    yield f
    f.store.close()


R = ["--since", _at(T + H), "--until", _at(T + 3 * H)]


def _on_an_l4(store, started_at: float):
    """Vision's job holding a whole L4 of host l4, started at ``started_at``."""
    job = store.submit("q", "vision", "train", ["x"], {}, "ann@laptop")
    store.place(job.id, Slot("l4", (0,), None, None, None, 1.0), "sched", "fits")
    store.started(job.id, "a1", started_at, "sched", "started", model="NVIDIA L4")
    return job


def test_the_range_reads_attempts_clipped_at_its_edges_as_worked_by_hand(fleet, capfd):
    got = json.loads(fleet.report(capfd, *R, "--json"))
    teams = {g["key"]: g for g in got["groups"]}
    vision, nlp, speech, total = teams["vision"], teams["nlp"], teams["speech"], got["total"]
    # vision: job 1 0.25 x 0.5 h (clipped at 1 h) + job 2 1.0 x 1 h + 1.0 x 0.5 h (clipped at
    # 3 h) + the late copy 0.25 x 0.1 h = 1.65; used 0.4 x 0.5 + 0.6 + 0.9 x 0.5 + 0.2 x 0.1 =
    # 1.27; memory 1 x 0.5 + 2 + 4 x 0.5 + 0.25 x 0.1 = 4.525 GiB-h
    assert (vision["held_gpu_hours"], vision["used_gpu_hours"], vision["unmeasured_gpu_hours"],
            vision["memory_gib_hours"]) == pytest.approx((1.65, 1.27, 0.0, 4.525))
    # nlp: the MIG slice 3/7 x 2 h, not measurable (its record says why); the 2-GPU job
    # 2.0 x 1 h, 150 % x 1 h
    [mig] = [r for r in fleet.store.usage(T + H, T + 3 * H) if r.job == fleet.ids[3]]
    assert (mig.sampled.util_mean, mig.sampled.util_note) == (
        None, "not reported by NVML for MIG instances")
    assert (nlp["held_gpu_hours"], nlp["used_gpu_hours"], nlp["unmeasured_gpu_hours"],
            nlp["memory_gib_hours"]) == pytest.approx((6 / 7 + 2, 1.5, 6 / 7, 28.0))
    # speech: job 5 0.5 x 0.25 h, never sampled: held, no measure, no memory — what it used
    # and its memory not known (null, the table's dash), never 0
    assert (speech["held_gpu_hours"], speech["unmeasured_gpu_hours"]) == pytest.approx(
        (0.125, 0.125))
    assert (speech["used_gpu_hours"], speech["memory_gib_hours"]) == (None, None)
    # waits of the attempts that started in R: job 2's first 900 s (from its submit), its
    # second 1800 s (from its preemption at 2 h, not its submit); job 3 0, job 4 900, job 5
    # 0. Not job 1's (it started before R), nor job 8's (waiting at R's end: started at
    # 3.5 h), nor the late copy's (it served no one's wait)
    assert (vision["waits"], vision["wait_median_s"], vision["wait_p95_s"]) == (2, 900, 1800)
    assert (nlp["waits"], nlp["wait_median_s"], nlp["wait_p95_s"]) == (2, 0, 900)
    assert (speech["waits"], speech["wait_median_s"]) == (1, 0)
    # all five: 0, 0, 900, 900, 1800 -> nearest rank 3 and 5; not a mean of the groups'
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (5, 900, 1800)
    assert vision["outcomes"] == {"done": 1, "failed": 0, "cancelled": 0, "requeued": 0,
                                  "preempted": 1, "late": 1}
    assert nlp["outcomes"]["failed"] == 1 and speech["outcomes"]["cancelled"] == 1
    assert (vision["running"], nlp["running"], speech["running"], total["running"]) == (
        1, 1, 0, 2)  # job 2's second attempt and job 3 at 3 h
    assert got["ended_unstarted"] == {"cancelled": 1, "failed": 0}  # job 6, at 2.2 h
    for key in ("held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours",
                "memory_gib_hours", "running", "waits"):
        assert total[key] == pytest.approx(sum(g[key] or 0 for g in got["groups"])), key  # (a
        # group's null: none of it measured, so none of the total's)
    for outcome, n in total["outcomes"].items():
        assert n == sum(g["outcomes"][outcome] for g in got["groups"]), outcome
    # without sharing: 1-1.5 h jobs 1, 2, 3: 3 GPUs of 3 in use; 1.5-2 h 2, 3, 4 (2 GPUs):
    # 4 of 4; 2-2.1 h 3, 4, 5, the late copy: 5 needed, 4 in use (5 and the copy share l4
    # gpu0); 2.1-2.25 h 4 of 4; 2.25-2.5 h 3 of 3; 2.5-3 h 2 of 2. Peak 5 against 4; means
    # (3 x .5 + 4 x .5 + 5 x .1 + 4 x .15 + 3 x .25 + 2 x .5) / 2 = 3.175 and 3.125
    assert got["saving"] == pytest.approx({
        "peak_demand_gpus": 5, "peak_used_gpus": 4, "saved_gpus_at_peak": 1,
        "mean_demand_gpus": 3.175, "mean_used_gpus": 3.125, "saved_gpus_mean": 0.05})

    # the table and --csv say the same numbers
    out = fleet.report(capfd, *R)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in teams.keys() | {"total"}}
    # HELD USED NO-MEASURE MEM WAIT-MED WAIT-P95 DONE FAILED CANCELLED REQUEUED PREEMPTED
    # LATE RUNNING IDLE
    assert rows["vision"] == ["1.65", "1.27", "0.00", "4.53", "15m00s", "30m00s", "1", "0",
                              "0", "0", "1", "1", "1", "—"]
    assert rows["nlp"] == ["2.86", "1.50", "0.86", "28.00", "0s", "15m00s", "0", "1", "0",
                           "0", "0", "0", "1", "—"]
    assert rows["speech"] == ["0.12", "—", "0.12", "—", "0s", "0s", "0", "0", "1", "0",
                              "0", "0", "0", "—"]  # never sampled: used, memory not known
    assert rows["total"][:13] == ["4.63", "2.77", "0.98", "32.52", "15m00s", "30m00s", "1",
                                  "1", "1", "0", "1", "1", "2"]
    assert "would have needed 5 GPUs at peak (3.17 on average); they used 4 (3.12): sharing " \
        "saved 1 GPU at peak" in out, out
    assert "used 2.77 GPU-h of the 3.65 held where NVML measured it (76 % busy)\n" in out, out
    assert "NO MEASURE: GPU-hours held where NVML gives no utilisation (MIG slices, or not " \
        "sampled yet): 0.98 of 4.63" in out, out
    sheet = list(csv.DictReader(io.StringIO(fleet.report(capfd, *R, "--csv"))))
    assert [r["team"] for r in sheet] == [g["key"] for g in got["groups"]] + ["total"]
    for row, g in zip(sheet, got["groups"] + [total]):
        for key in ("held_gpu_hours", "used_gpu_hours", "memory_gib_hours", "waits",
                    "running", "late"):
            value = g["outcomes"][key] if key == "late" else g[key]
            assert (row[key] == "") if value is None else (  # not known: empty, never 0
                float(row[key]) == pytest.approx(float(value), abs=1e-6)), key
    assert (sheet[2]["team"], sheet[2]["used_gpu_hours"], sheet[2]["memory_gib_hours"]) == (
        "speech", "", "")


def test_by_gpu_a_2_gpu_attempt_is_half_on_each_and_counted_once_in_the_total(fleet, capfd):
    got = json.loads(fleet.report(capfd, *R, "--json", "--by", "gpu"))
    gpus = {g["key"]: g for g in got["groups"]}
    for key in ("a10 gpu0", "a10 gpu1"):  # job 4: 2.0 x 1 h, 150 % of one GPU, split
        assert (gpus[key]["held_gpu_hours"], gpus[key]["used_gpu_hours"]) == pytest.approx(
            (1.0, 0.75))
        assert (gpus[key]["outcomes"]["failed"], gpus[key]["waits"]) == (1, 1)
    assert sum(g["held_gpu_hours"] for g in got["groups"]) == pytest.approx(
        got["total"]["held_gpu_hours"])
    assert got["total"]["outcomes"]["failed"] == 1  # one attempt, though on two GPUs' rows
    assert sum(g["outcomes"]["failed"] for g in got["groups"]) == 2


def test_an_attempt_ending_as_a_range_begins_has_its_outcome_there_on_either_store(store_url):
    """Ranges are [since, until): an attempt that ends exactly at ``since`` held nothing of
    it, yet its end is the range's (the range before ends just short of it); it was read by
    neither, its outcome counted nowhere."""
    store = open_store(store_url)
    try:
        t0 = store.now()
        job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
        store.place(job.id, QUARTER, "sched", "fits")
        store.started(job.id, "a1", t0 - 200, "sched", "started")
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=t0 - 100)
        before = build(store.usage(t0 - 300, t0 - 100), [], t0 - 300, t0 - 100, "team", t0)
        after = build(store.usage(t0 - 100, t0), [], t0 - 100, t0, "team", t0)
        assert (before.total.held_h, after.total.held_h) == pytest.approx((0.25 * 100 / H, 0))
        assert (before.total.outcomes, after.total.outcomes) == ({}, {"done": 1})
        # held up to the end of the first: running at its end, ended in the next (each
        # attempt read is the one or the other)
        assert (before.total.running, after.total.running) == (1, 0)
    finally:
        store.close()


def test_a_frozen_fleets_report_screen_reads_its_range_as_the_store_does():
    """The TUI's source of a fleet given its usage records (no store) reads a range by the
    store's rule: the attempt ending at ``since`` too."""
    from fractui.tui.source import Source

    ended = rec("h", (0,), 1.0, start=0.0, end=100.0)
    assert Source([], usage=[ended]).read_usage(100.0, 200.0) == ([ended], [])
    assert Source([], usage=[ended]).read_usage(101.0, 200.0) == ([], [])


def test_a_running_attempt_counts_up_to_now_and_the_metrics_say_the_same_now(fleet):
    """[3 h, 5 h) read at 4 h: job 2 held l4 gpu1 3 -> 3.5 h, job 8 from 3.5 h to now, job 3
    all of it: 1 x 0.5 + 1 x 0.5 + 3/7 x 1 GPU-h; running now: jobs 3 and 8, which the
    metrics of the same moment show, and sharing saves nothing now (two jobs, two GPUs)."""
    now = T + 4 * H
    store = fleet.store
    report = build(store.usage(T + 3 * H, T + 5 * H), [], T + 3 * H, T + 5 * H, "team", now)
    teams = {g.key: g for g in report.groups}
    assert report.total.held_h == pytest.approx(1 + 3 / 7)
    assert (teams["speech"].held_h, teams["speech"].running, teams["nlp"].running) == (
        pytest.approx(0.5), 1, 1)
    assert teams["speech"].waits_s == [pytest.approx(2.6 * H)]  # job 8: from 0.9 h to 3.5 h
    # two jobs on two GPUs all along [3 h, now): the mean is over that, not up to 5 h
    assert (report.saving.mean_demand, report.saving.mean_used) == pytest.approx((2, 2))
    views = [HostView(h, "online", hello={"gpus": []}, snapshot={"time": now, "gpus": [
        {"index": i, "name": MODELS[h], "memory_mib": 81920, "processes": []}
        for i in ((0, 1) if h != "a100" else (0,))]}) for h in MODELS]
    found = samples(MetricsState(now=now, holder="h", hosts=views, jobs=store.jobs(),
                                 teams=TEAMS, queues=["quarter", "half", "mig", "whole", "two"],
                                 lease_held=True, store_reachable=True))
    series = [k for k in found if k[0] == "fractui_job_allocated_gpus"]
    assert len(series) == report.total.running == 2
    at_now = build(store.usage(now - 1, now), [], now - 1, now, "team", now).saving
    assert metric(found, "fractui_sharing_demand_gpus") == at_now.peak_demand == 2
    assert metric(found, "fractui_sharing_used_gpus") == at_now.peak_used == 2
    assert metric(found, "fractui_team_allocated_gpus", team="speech") == 1.0
    # job 7 still waits, since 2.75 h: the queue's gauge, and in no report's waits yet
    assert metric(found, "fractui_queue_oldest_wait_seconds", queue="whole") == 1.25 * H


def test_a_range_of_nothing_one_in_the_future_and_one_backwards(fleet, capfd):
    out = fleet.report(capfd, "--since", _at(T - 2 * H), "--until", _at(T - H))
    assert "no job held a GPU in this range, and no GPU time was kept" in out, out
    got = json.loads(fleet.report(capfd, "--since", _at(T - 2 * H), "--until", _at(T - H),
                                  "--json"))
    assert (got["groups"], got["total"]["waits"], got["total"]["wait_median_s"]) == (
        [], 0, None)
    # nothing of a range to come has happened: jobs 3 and 8 run now, not "at its end"
    future = ["--since", "2099-01-01", "--until", "2099-01-02"]
    got = json.loads(fleet.report(capfd, *future, "--json"))
    assert (got["total"]["running"], got["total"]["held_gpu_hours"]) == (0, 0)
    assert got["saving"]["peak_demand_gpus"] == 0
    assert "no job held a GPU in this range" in fleet.report(capfd, *future)
    for since, until in ((T + 3 * H, T + H), (T + H, T + H)):
        code, out, err = in_process(capfd, ["--config", str(fleet.config), "report",
                                            "--since", _at(since), "--until", _at(until)])
        assert (code, out) == (2, "") and "must be before --until" in err, err
        assert not leaks(err), err


def test_gpu_time_counts_whole_buckets_and_nothing_while_away_or_unseen(tmp_path, capfd):
    """Two L4s, GPU 0 held whole by one job from T to 2 h, GPU 1 idle; buckets of 30 min,
    looks every 30 s; the host away 0.5 -> 0.75 h (the look as it returns counts nothing),
    the holder paused 1 h -> 1 h 2 min (the look after the pause counts nothing).
    [0.25 h, 1.75 h) counts each bucket's time where it was seen: 0 h (seen 0 -> 29.5 min, the
    look at 30 min away: 870 s of it in the range), 0.5 h (seen 0.75 -> 1 h: 900 s), 1 h (1680
    s: 120 s unseen), 1.5 h (seen all of it: its first 900 s) — 4350 s each GPU; the job's
    HELD is its 1.5 h in the range exactly, its host away or not."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = _on_an_l4(store, T)
        running = [store.get(job.id)]
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 7201, 30):
            if H < look < H + 120:
                continue  # the holder paused
            state = "offline" if 1800 <= look < 2700 else "online"
            gpus.observe([HostView("l4", state, hello={"gpus": []}, snapshot={"gpus": [
                {"index": i, "name": "NVIDIA L4", "processes": []} for i in (0, 1)]})],
                running, T + look)
        store.keep_gpu_time(gpus.take())
        clock.t = T + 2 * H
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=T + 2 * H)
        config = tmp_path / "config.toml"
        config.write_text('[store]\nurl = "sqlite://%s"\n[usage]\nbucket_s = 1800\n'
                          % store.where)
        span = ["--since", _at(T + 0.25 * H), "--until", _at(T + 1.75 * H)]
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span,
                                            "--json", "--by", "gpu"])
        assert code == 0, err
        got = json.loads(out)
        gpu = {g["key"]: g for g in got["groups"]}
        assert (gpu["l4 gpu0"]["online_gpu_hours"], gpu["l4 gpu0"]["held_online_gpu_hours"],
                gpu["l4 gpu0"]["idle_gpu_hours"]) == pytest.approx((4350 / H, 4350 / H, 0))
        assert (gpu["l4 gpu1"]["online_gpu_hours"], gpu["l4 gpu1"]["held_online_gpu_hours"],
                gpu["l4 gpu1"]["idle_gpu_hours"]) == pytest.approx((4350 / H, 0, 4350 / H))
        assert got["total"]["held_gpu_hours"] == pytest.approx(1.5)
        assert got["total"]["online_gpu_hours"] == pytest.approx(8700 / H)
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span])
        assert code == 0, err
        assert "GPUs online 2.42 GPU-h, held while online 1.21 (50 %), idle with nothing on " \
            "them 1.21 (50 %)" in out, out
    finally:
        store.close()


def test_a_model_whose_gpus_came_or_went_within_the_first_bucket_is_counted_where_it_was(
        tmp_path, capfd):
    """One bucket of 30 min, read from its middle, [15 min, 30 min), by model: an L4 seen all
    of it is online 15 min of the range; an A10 seen only from 20 min on (no GPU of its model
    at the range's start) all its 10 min; a V100 seen only until 10 min (gone before the range
    began) none of it, and has no group. Spread over the whole bucket, the A10 read 5 min and
    the V100 a group of 5 min online in a range it was never in."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 1801, 30):
            hosts = [("l4", "NVIDIA L4")] + [("v100", "Tesla V100")] * (look <= 600) + [
                ("a10", "NVIDIA A10")] * (look >= 1200)
            gpus.observe([HostView(h, "online", hello={"gpus": []}, snapshot={"gpus": [
                {"index": 0, "name": name, "processes": []}]}) for h, name in hosts], [],
                T + look)
        store.keep_gpu_time(gpus.take())
        report = store_report(capfd, tmp_path, store.where, "[usage]\nbucket_s = 1800\n")
        got = json.loads(report("--since", _at(T + 900), "--until", _at(T + 1800), "--json",
                                "--by", "model"))
        online = {g["key"]: g["online_gpu_hours"] * H for g in got["groups"]}
        assert online == pytest.approx({"NVIDIA L4": 900, "NVIDIA A10": 600}, abs=0.01), online
    finally:
        store.close()


def test_a_gpu_seen_in_two_parts_of_a_bucket_counts_only_when_it_was_seen(store_url, tmp_path,
                                                                         capfd):
    """One bucket of 30 min; two idle L4s on hosts a and b looked at every 30 s; host a away
    from 10 to 20 min (its look at 20 min, back, counts nothing): a's GPU was seen [0, 9.5
    min) and [20, 30 min), 1170 s; b's all 1800 s. Worked by hand, per range: [10, 20 min),
    the gap, a 0 (none of it: a's group is none) and b 600; [0, 15 min) a 570, b 900; [15,
    30 min) a 600, b 900; [5, 25 min) a 270 + 300 = 570, b 1200 — on both stores, and the
    ranges end to end add up to the whole. Spread from its first look to its last, a's
    seconds read 390 s online in the gap, 585 in each half and 780 in [5, 25 min)."""
    store = open_store(store_url)
    try:
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 1801, 30):
            gpus.observe([HostView(h, "offline" if h == "a" and 600 <= look < 1200 else
                                   "online", hello={"gpus": []}, snapshot={"gpus": [
                                       {"index": 0, "name": "NVIDIA L4", "processes": []}]})
                          for h in ("a", "b")], [], T + look)
        store.keep_gpu_time(gpus.take())
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n\n[usage]\nbucket_s = 1800\n' % store_url)

    def online(since: float, until: float) -> Dict[str, float]:
        code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                            _at(T + since), "--until", _at(T + until),
                                            "--json", "--by", "gpu"])
        assert code == 0 and not leaks(err), err
        got = json.loads(out)
        for g in got["groups"] + [got["total"]]:
            assert g["online_gpu_hours"] == pytest.approx(g["idle_gpu_hours"]), g
        return {g["key"]: g["online_gpu_hours"] * H for g in got["groups"] + [got["total"]]}

    assert online(600, 1200) == pytest.approx({"b gpu0": 600, "total": 600}, abs=0.01)
    assert online(0, 900) == pytest.approx({"a gpu0": 570, "b gpu0": 900, "total": 1470},
                                           abs=0.01)
    assert online(900, 1800) == pytest.approx({"a gpu0": 600, "b gpu0": 900, "total": 1500},
                                              abs=0.01)
    assert online(300, 1500) == pytest.approx({"a gpu0": 570, "b gpu0": 1200, "total": 1770},
                                              abs=0.01)
    assert online(0, 1800) == pytest.approx({"a gpu0": 1170, "b gpu0": 1800, "total": 2970},
                                             abs=0.01)


def test_a_local_day_as_the_clocks_go_back_is_25_hours(tmp_path, capfd, berlin):
    """In Berlin 2026-10-25 has 25 hours (03:00 summer time is 02:00 again): a whole GPU held
    from the day before to the day after counts 25 GPU-hours of it, and the range is said
    with each end's own offset. An hour that happens twice is read as its first (summer
    time's) unless an offset says which."""
    clock = Clock()
    start = datetime.datetime(2026, 10, 24, 12).timestamp()
    clock.t = start
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = _on_an_l4(store, start)
        end = datetime.datetime(2026, 10, 27, 12).timestamp()
        clock.t = end
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=end)
        report = store_report(capfd, tmp_path, store.where)

        day = ["--since", "2026-10-25", "--until", "2026-10-26"]
        assert json.loads(report(*day, "--json"))["total"]["held_gpu_hours"] == \
            pytest.approx(25.0)
        assert report(*day).startswith("usage from 2026-10-25 00:00 +0200 to 2026-10-26 "
                                       "00:00 +0100, by team"), report(*day)
        twice = json.loads(report("--since", "2026-10-25T02:30", "--until",
                                  "2026-10-25T02:30+01:00", "--json"))
        assert twice["until"] - twice["since"] == H  # the first 02:30 to the second
        assert twice["total"]["held_gpu_hours"] == pytest.approx(1.0)
    finally:
        store.close()


def test_hosts_whose_clocks_disagree_never_make_a_number_negative(tmp_path):
    """A host 10 minutes ahead of the store's clock: its job's start is later than the
    requeue the store wrote (nothing held, nothing negative, the next wait from the requeue
    or none), and a job running now that its host says started in 5 minutes is running now
    (as the metrics count it), holding nothing yet."""
    clock = Clock()
    clock.t = T
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
        store.place(job.id, QUARTER, "sched", "fits")
        store.started(job.id, "a1", T + 600, "sched", "started")  # its host's clock
        clock.t = T + 60
        store.stopping(job.id, (RUNNING,), "preempt", "sched", "room")
        store.requeue(job.id, (STOPPING,), "sched", "preempted")
        store.place(job.id, QUARTER, "sched", "fits")
        store.started(job.id, "a2", T + 300, "sched", "started")  # 240 s after the requeue
        now = T + 120
        second, first = store.usage(T - H, T + H)  # by start: the host's clock's order
        # (the second queued at the requeue: the earlier of it and its start)
        assert (first.waited_s, second.waited_s) == (600, 240)
        report = build([first, second], [], T - H, now, "team", now)
        t = report.total
        assert (t.held_h, t.used_h, t.unmeasured_h, t.memory_gib_h) == (0, 0, 0, 0)
        assert (t.running, t.outcomes) == (1, {"preempted": 1})
        assert report.saving == saving([], T - H, now, now)  # nothing held: none needed
    finally:
        store.close()


def rec(host: str, gpus: tuple, charge: float, profile: str | None = None,
        start: float = 0.0, end: float = 100.0) -> UsageRecord:
    return UsageRecord(1, 0, "t", "q", "u", host, gpus, None, profile, None, charge, start,
                       start, end, DONE)


@pytest.mark.parametrize("records,needed,used", [
    ([rec("h", (0,), 1.0)], 1, 1),  # one job on a GPU saves nothing
    ([rec("h", (0,), 0.25)], 1, 1),  # nor does a lone share: it would need the GPU anyway
    ([rec("h", (0, 1), 2.0)], 2, 2),  # a 2-GPU job needs its two
    ([rec("h", (0,), 3 / 7, "3g.40gb"), rec("h", (0,), 2 / 7, "2g.20gb"),
      rec("h", (0,), 1 / 7, "1g.10gb"), rec("h", (1,), 1 / 7, "1g.10gb")], 4, 2),
    ([rec("h", (0,), 0.5), rec("h", (0,), 0.25), rec("h", (0,), 0.125)], 3, 1),  # sizes
    ([rec("h", (0,), 0.5, start=0, end=50), rec("h", (0,), 0.5, start=50, end=100)], 1, 1),
    ([rec("a", (0,), 0.5), rec("b", (0,), 0.5)], 2, 2),  # GPU 0 of two hosts: two GPUs
])
def test_what_sharing_saved_is_whole_gpus_needed_less_gpus_used(records: List[UsageRecord],
                                                                 needed: int, used: int):
    s = saving(records, 0, 100, 100)
    assert (s.peak_demand, s.peak_used) == (needed, used)
    assert s.saved_peak == needed - used >= 0


def test_a_range_whose_gpu_time_is_not_kept_says_not_known_never_0(fleet, capfd):
    """The fleet's store keeps no GPU time (no scheduler looked at its GPUs): its online and
    idle hours are not known — null, a dash, and why — not 0.00 beside the jobs' hours."""
    got = json.loads(fleet.report(capfd, *R, "--json"))
    assert [got["total"][k] for k in ("online_gpu_hours", "held_online_gpu_hours",
                                      "idle_gpu_hours")] == [None] * 3
    # [1 h, 3 h): 24 buckets of 300 s begin in it, all written by now (the CLI's clock, long
    # after), none kept
    assert got["gpu_time_buckets"] == {"bucket_s": 300, "begin": 24, "due": 24, "kept": 0}
    out = fleet.report(capfd, *R)
    [total] = [line.split() for line in out.splitlines() if line.startswith("total")]
    assert total[-1] == "—", out
    assert "GPUs online, held while online and idle: not known. GPU time is kept per bucket " \
        "of [usage] bucket_s (300 s), each counted for its part in a range; none of this " \
        "one's holds a look at a GPU: no scheduler looked at a reachable GPU" in out, out
    sheet = list(csv.DictReader(io.StringIO(fleet.report(capfd, *R, "--csv"))))
    assert sheet[-1]["team"] == "total" and sheet[-1]["idle_gpu_hours"] == "", sheet


def test_gpu_time_kept_for_part_of_a_range_or_none_of_a_short_one_is_said(tmp_path, capfd):
    """One idle L4 looked at every 30 s from T to 2 h (buckets of 30 min), and no more: read
    later, [0, 4 h) has 4 of its 8 buckets kept and says its GPU time is of those; [0, 2 h)
    all; [0.1 h, 0.4 h), in one bucket, that bucket's part (0.3 of its 0.5 h); [2.1 h, 2.4 h),
    in a bucket that holds no look: not known, never 0. A bucket not yet written (a minute
    after its end) is no gap."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 7201, 30):
            gpus.observe([HostView("l4", "online", hello={"gpus": []}, snapshot={"gpus": [
                {"index": 0, "name": "NVIDIA L4", "processes": []}]})], [], T + look)
        store.keep_gpu_time(gpus.take())
        clock.t = T + 5 * H
        config = tmp_path / "config.toml"
        config.write_text('[store]\nurl = "sqlite://%s"\n\n[usage]\nbucket_s = 1800\n'
                          % store.where)

        def report(since: float, until: float, *argv: str) -> str:
            code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                                _at(T + since * H), "--until",
                                                _at(T + until * H), *argv])
            assert code == 0 and not leaks(err), err
            return out

        got = json.loads(report(0, 4, "--json"))
        assert got["gpu_time_buckets"] == {"bucket_s": 1800, "begin": 8, "due": 8, "kept": 4}
        assert got["total"]["online_gpu_hours"] == pytest.approx(2.0)
        assert "GPU time is kept for 4 of the 8 buckets of 1800 s that began in this range " \
            "and are written: in the rest no scheduler looked at a reachable GPU (none " \
            "held the lease, or every host was away), and the GPUs' online, held and idle " \
            "hours leave them out" in report(0, 4)
        assert "GPUs online 2.00 GPU-h" in report(0, 2) and "kept for" not in report(0, 2)
        by_gpu = report(0, 2, "--by", "gpu")  # the GPU's row, and no job: nothing to share
        assert "no job held a GPU in this range" in by_gpu and "would have" not in by_gpu
        got = json.loads(report(0.1, 0.4, "--json"))
        assert (got["total"]["online_gpu_hours"], got["gpu_time_buckets"]["begin"]) == (
            pytest.approx(0.3), 0)
        got = json.loads(report(2.1, 2.4, "--json"))
        assert (got["total"]["online_gpu_hours"], got["gpu_time_buckets"]["begin"]) == (
            None, 0)
        assert "GPUs online, held while online and idle: not known. GPU time is kept per " \
            "bucket of [usage] bucket_s (1800 s), each counted for its part in a range; the " \
            "one it falls in holds no look at a GPU: not written yet (a scheduler holding " \
            "the lease writes them every 60 s), or no scheduler looked at a reachable GPU" \
            in report(2.1, 2.4)
        # [4.9 h, 5.5 h) read at 5 h (the CLI reads at the store's now, long after): the
        # bucket of 5 h has begun and is not written yet, nor is that of 4.5 h all written
        late = build([], store.gpu_time(T, T + 6 * H), T + 4.9 * H, T + 5.5 * H, "team",
                     T + 5 * H, bucket_s=1800)
        assert Coverage.of(late, 1800, T + 5 * H) == Coverage(1800, 1, 0, 0)
        assert Coverage.of(late, 1800, T + 5 * H).words(late) == [
            "GPUs online, held while online and idle: not known. GPU time is kept per bucket "
            "of [usage] bucket_s (1800 s), each counted for its part in a range; "
            "none of this one's holds a look at a GPU yet (a scheduler holding the lease "
            "writes them every 60 s)"]
        # [0, 4 h) read at 2.5 h + 59 s: the buckets of 0 to 1.5 h are written; that of 2 h
        # is not yet (it ended 59 s ago, and a scheduler writes every 60 s), a second later it
        # is, and none of it is kept: a gap
        now = T + 2.5 * H + 59
        early = build([], store.gpu_time(T, T + 6 * H), T, T + 4 * H, "team", now,
                      bucket_s=1800)
        assert Coverage.of(early, 1800, now) == Coverage(1800, 8, 4, 4)
        assert Coverage.of(early, 1800, now).words(early) == []
        assert Coverage.of(early, 1800, now + 1) == Coverage(1800, 8, 5, 4)
    finally:
        store.close()


CSV_COLUMNS = [
    "team", "held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours", "memory_gib_hours",
    "waits", "wait_median_s", "wait_p95_s", "running", "online_gpu_hours",
    "held_online_gpu_hours", "idle_gpu_hours", "done", "failed", "cancelled", "requeued",
    "preempted", "late", "whose_user", "whose_team", "since", "until", "waiting_now",
    "unsampled_memory_gpu_hours", "unsampled_memory_attempts"]
"""--csv's columns in their order: a sheet's consumers read them by position, so a new one
is only ever appended here (waiting_now came after since and until; the two of memory not
sampled, after it)."""


def test_every_csv_row_says_its_range_after_the_columns_it_had(fleet, capfd, berlin):
    """A sheet saved to a file still says what period it is of: ``since`` and ``until`` in ISO
    8601 with the offset, on every row; its columns are those it had, in their places, and a
    new one comes after them all (waiting_now, put before whose_user, moved the last four)."""
    sheet = fleet.report(capfd, "--since", _at(T + H), "--until", _at(T + 3 * H), "--csv")
    header = sheet.splitlines()[0].split(",")
    assert header == CSV_COLUMNS, header
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert [r["team"] for r in rows] == ["nlp", "vision", "speech", "total"], rows
    for row in rows:
        since = datetime.datetime.fromisoformat(row["since"])
        until = datetime.datetime.fromisoformat(row["until"])
        assert (since.timestamp(), until.timestamp()) == (T + H, T + 3 * H), row
        assert since.utcoffset() == datetime.timedelta(hours=1), row  # Berlin, in November


def test_a_group_none_of_whose_time_was_measured_reads_used_not_known(fleet, capfd):
    """By host, the A100's one attempt is a MIG slice (NVML measures none): its USED is a
    dash, not 0.00 beside what it held; the L4s' was measured (and the A10s')."""
    out = fleet.report(capfd, *R, "--by", "host")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    assert rows["a100"][:3] == ["0.86", "—", "0.86"], out
    assert rows["l4"][1] == "1.27" and rows["a10"][1] == "1.50", out  # vision's; job 4's


def test_the_tables_own_marks_keep_their_cell_where_stdout_is_ascii(fleet):
    """Where stdout is ASCII, the table's own marks are each one cell it holds: the dash of
    what is not known, the "·" of its header (escaped, each drew six cells for the one the
    table counted, and the columns after it moved)."""
    done = subprocess_run(["--config", str(fleet.config), "report", *R, "--by", "host"],
                          {"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and not leaks(done.stderr), done.stderr
    assert "\\" not in done.stdout, done.stdout
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("GROUP"))
    a100 = next(line for line in lines if line.startswith("a100"))
    assert "MEM GiB.h" in header and a100.split()[1:4] == ["0.86", "-", "0.86"], done.stdout
    assert a100[header.index("USED")] == "-" and a100[header.index("WAIT MED") - 1] == " " \
        and a100[header.index("WAIT MED")] != " ", done.stdout


def test_jobs_still_waiting_are_said_under_a_range_that_reaches_now(tmp_path, capfd):
    """WAIT counts a wait once it ends in a start: a team whose jobs all still wait read as
    one that waited for nothing. A range that reaches now says the jobs waiting to start,
    by group where they have one, and the longest wait so far; a range that ended before
    now says nothing of them (who waited then is not kept), and --json says null. (The
    report's now is the wall clock's: the waits are whole minutes before it, said to the
    minute.)"""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    now = int(time.time()) // 60 * 60.0  # the minute the report is made in
    try:
        report = store_report(capfd, tmp_path, store.where, first=["--since", _at(now - 3 * H)])
        clock.t = now - 2 * H
        stuck = store.submit("q", "vision", "stuck", ["x"], {}, "ann@laptop").id
        ran = store.submit("q", "vision", "ran", ["x"], {}, "ann@laptop").id
        store.place(ran, QUARTER, "sched", "fits")
        store.started(ran, "a1", clock.t, "sched", "started")
        clock.t = now - H - 600
        placed = store.submit("q", "nlp", "placed", ["x"], {}, "bo@laptop").id
        store.place(placed, QUARTER, "sched", "fits")  # placed, not started: still waiting
        store.ended(ran, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=clock.t)
        assert report().splitlines()[-1] == (
            "2 jobs waiting to start now (nlp 1, vision 1), the longest for 2h00m (job %d): "
            "WAIT counts a wait once it ends in a start" % stuck)
        assert report("--team", "nlp").splitlines()[-1] == (
            "1 job waiting to start now (nlp 1), the longest for 1h10m (job %d): WAIT counts "
            "a wait once it ends in a start" % placed)
        assert report("--by", "host").splitlines()[-1].startswith(
            "2 jobs waiting to start now, the longest")  # (no host is theirs yet)
        waiting = json.loads(report("--json", "--by", "user"))["waiting_now"]
        assert waiting == {"jobs": 2, "groups": {"ann": 1, "bo": 1}, "longest_job": stuck,
                           "longest_wait_s": pytest.approx(2 * H, abs=60)}
        past = report("--until", _at(now - H))
        assert "waiting to start" not in past, past
        assert json.loads(report("--until", _at(now - H), "--json"))["waiting_now"] is None

        def sheet(by: str = "team") -> Dict[str, Dict[str, str]]:
            return {row[by]: row for row in csv.DictReader(io.StringIO(report(
                "--csv", "--by", by)))}
        # --csv says them per group as --json's waiting_now does: nlp's only job waits, so
        # its row is of nothing held; by host no waiting job has a group; none in the past
        teams = sheet()
        assert {k: (r["waiting_now"], r["held_gpu_hours"]) for k, r in teams.items()} == {
            "vision": ("1", teams["vision"]["held_gpu_hours"]), "nlp": ("1", "0.0"),
            "total": ("2", teams["total"]["held_gpu_hours"])}, teams
        assert float(teams["vision"]["held_gpu_hours"]) > 0
        assert {k: r["waiting_now"] for k, r in sheet("host").items()} == {
            QUARTER.host: "", "total": "2"}
        assert {r["waiting_now"] for r in csv.DictReader(io.StringIO(report(
            "--csv", "--until", _at(now - H))))} == {""}
    finally:
        store.close()


def test_a_team_known_only_by_its_waiting_jobs_is_known_in_any_range(tmp_path, capfd):
    """A team out of the config whose only jobs wait: --team names it for a range not begun
    (or one that ended) as for one that reaches now — none of its jobs held a GPU there,
    exit 0 — where it was an unknown team (exit 2) but for the ranges that reach now. A typo
    of it is said with it as the close name, as one of a team only usage names: it was
    "unknown team 'ghots' (known: vision)", the one --team takes left out."""
    store = SqliteStore(str(tmp_path / "store.db"))
    now = int(time.time()) // 60 * 60.0
    try:
        store.submit("q", "ghost", "waits", ["x"], {}, "ann@laptop")
        report = store_report(capfd, tmp_path, store.where,
                              '[[teams]]\nname = "vision"\nquota_gpus = 1\n')
        for span in (("--since", _at(now + H), "--until", _at(now + 2 * H)),
                     ("--since", _at(now - 2 * H), "--until", _at(now - H)), ()):
            out = report("--team", "ghost", *span)
            assert "none of the jobs in team ghost held a GPU in this range" in out, (span, out)
        code, out, err = in_process(capfd, ["--config", str(tmp_path / "config.toml"),
                                            "report", "--team", "ghots"])
        assert (code, out) == (2, "") and "unknown team 'ghots' (did you mean 'ghost'? " \
            "known: vision, ghost)" in err, err
    finally:
        store.close()


def test_the_store_keeps_gpu_time_from_its_first_look_not_from_its_bucket(tmp_path, capfd):
    """Buckets of 1 h; the one GPU first looked at 50 min into the bucket 3 h ago, seen to
    its end, then nothing for the next; [4 h ago, 1 h ago): the store keeps anything from
    that look (where means over time start), not from the bucket's start 50 min earlier, and
    the bucket after it, kept for none of its hour, is said: 0 of the 1 bucket written from
    there (counted from the bucket's start, the first one read as 1 of 1: nothing said)."""
    store = SqliteStore(str(tmp_path / "store.db"))
    hour = store.now() // H * H
    try:
        store.keep_gpu_time([GpuTime("l4", 0, hour - 3 * H, "NVIDIA L4", 600, 600,
                                     seen_from=hour - 3 * H + 3000, seen_to=hour - 2 * H)])
        report = store_report(capfd, tmp_path, store.where, "[usage]\nbucket_s = 3600\n",
                              first=["--since", _at(hour - 4 * H), "--until", _at(hour - H)])
        got = json.loads(report("--json"))
        assert got["start"] == hour - 3 * H + 3000, (got["start"] - hour) / H
        assert got["gpu_time_buckets"] == {"bucket_s": 3600, "begin": 3, "due": 1, "kept": 0}
        assert got["total"]["online_gpu_hours"] == pytest.approx(600 / H, abs=1e-6)
        assert ("GPU time is kept for 0 of the 1 bucket of 3600 s that began in this range "
                "and is written: in the rest") in report(), report()
    finally:
        store.close()


@pytest.mark.parametrize("damage, said", [
    ("seen_from = NULL", "was seen from None to"),
    ("seen_spans = '[[1, 2], [0, 3]]'", "was seen '[[1, 2], [0, 3]]': each stretch from no "
     "later than to, in order, none overlapping the next"),
    ("seen_spans = '[1, 2]'", "was seen '[1, 2]', not a JSON list of [from, to] pairs"),
    ("seen_spans = '[[0, 1]]'", "was seen '[[0, 1]]', not within from"),
    ("seen_spans = '[[NaN, NaN]]'", "was seen '[[NaN, NaN]]', not a JSON list of [from, to] "
     "pairs"),
    ("seen_spans = '[[\"1e9\", true]]'", "was seen '[[\"1e9\", true]]', not a JSON list of "
     "[from, to] pairs"),
    ("seen_spans = '%s'" % ("[" * 100000), "not a JSON list of [from, to] pairs")])
def test_a_gpu_time_row_seen_only_from_or_to_is_said_damaged(tmp_path, capfd, damage, said):
    """A bucket's row with one end of when it was seen and not the other (fractui writes
    both or neither), or stretches seen out of order, not pairs of numbers (NaN, which JSON
    as Python reads it takes, read as within any first and last look and made the report's
    hours nan; text; a list nested past Python's recursion, a traceback), or outside its
    first and last look: the report names the row and exits 1 — where it stopped on an
    assertion, exit 70, "a bug in fractui", or counted them."""
    store = SqliteStore(str(tmp_path / "store.db"))
    now = store.now()
    store.keep_gpu_time([GpuTime("l4", 0, now // 300 * 300 - 600, "L4", 90, 90,
                                 seen_from=now - 590, seen_to=now - 500,
                                 seen_spans=((now - 590, now - 500),))])
    store.close()
    db = sqlite3.connect(str(tmp_path / "store.db"))
    db.execute("UPDATE gpu_time SET " + damage)
    db.commit()
    db.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since", "1h"])
    assert code == 1 and "is damaged: the GPU time of l4 gpu 0 at" in err, (code, err)
    assert said in err and not leaks(err), err


def test_a_team_known_only_by_its_jobs_that_ended_waiting_is_known(tmp_path, capfd):
    """A team taken out of the config, its one job cancelled while it waited: --team names it
    (exit 0, its cancelled job said) as everyone's report counts that job — where it was an
    unknown team (exit 2) though the store holds its job, ended in the range."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", "ghost", "waits", ["x"], {}, "ann@laptop")
        store.ended(job.id, (PENDING,), CANCELLED, None, "ann@laptop", "cancelled", "cancel")
        report = store_report(capfd, tmp_path, store.where,
                              '[[teams]]\nname = "vision"\nquota_gpus = 1\n')
        said = "1 job (1 cancelled) ended in this range while waiting to start"
        assert said in report("--since", "1h"), said
        out = report("--team", "ghost", "--since", "1h")
        assert "none of the jobs in team ghost held a GPU in this range" in out, out
        assert said in out, out
    finally:
        store.close()


def test_a_report_of_some_jobs_starts_where_the_store_keeps_anything(tmp_path, capfd):
    """GPU time kept from 3 h ago, ann's only attempt from 1 h ago: --user ann's means start
    where everyone's do, 3 h ago (the store's, whoever's jobs: docs/usage.md), not at her
    attempt, which left the GPU time unread and averaged her hour over itself alone."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    now = int(time.time()) // 3600 * 3600.0
    try:
        store.keep_gpu_time([GpuTime("l4", 0, now - 3 * H, "NVIDIA L4", online_s=300,
                                     idle_s=300)])
        clock.t = now - H
        job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop").id
        store.place(job, QUARTER, "sched", "fits")
        store.started(job, "a1", clock.t, "sched", "started", model="NVIDIA L4")
        report = store_report(capfd, tmp_path, store.where,
                              first=["--since", _at(now - 4 * H), "--json"])
        everyone, ann = json.loads(report()), json.loads(report("--user", "ann"))
        assert everyone["start"] == ann["start"] == now - 3 * H, (everyone, ann)
        assert ann["saving"]["mean_demand_gpus"] == pytest.approx(  # (read a moment apart)
            everyone["saving"]["mean_demand_gpus"], abs=1e-3)
    finally:
        store.close()


def test_an_attempt_ended_as_the_range_begins_is_in_its_table_and_held_nothing(tmp_path,
                                                                                capfd):
    """One job, ended at --since: the table has its outcome (DONE 1), and the range says no
    job held a GPU in it, not that it would have needed 0 GPUs and sharing saved 0."""
    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
        store.place(job.id, QUARTER, "sched", "fits")
        store.started(job.id, "a1", T, "sched", "started")
        clock.t = T + H
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=T + H)
        config = tmp_path / "config.toml"
        config.write_text('[store]\nurl = "sqlite://%s"\n' % store.where)
        clock.t = T + 3 * H
        code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                            _at(T + H), "--until", _at(T + 2 * H)])
        assert code == 0 and not leaks(err), err
        [total] = [line.split() for line in out.splitlines() if line.startswith("total")]
        assert total[1:8] == ["0.00", "0.00", "0.00", "0.00", "—", "—", "1"], out  # DONE 1
        assert "no job held a GPU in this range" in out and "would have needed" not in out
        code, out, err = in_process(capfd, ["--config", str(config), "report", "--since",
                                            _at(T), "--until", _at(T + H)])
        assert code == 0 and "would have needed 1 GPU at peak (1.00 on average); they used 1 " \
            "(1.00): sharing saved 0 GPUs at peak, 0.00 on average" in out, out
    finally:
        store.close()


def test_no_percentage_is_given_of_hours_that_read_0_00(fleet, capfd):
    """A range of 10 s: jobs 1 and 2 held 0.0035 GPU-h where NVML measured them, which reads
    0.00, and "(80 % busy)" beside "used 0.00 of 0.00" read as nonsense; the sentence says
    it is too little for one, and the report screen's util cell is a dash, as the table's
    numbers give nothing to check a percentage against. GPUs online for 0.00 GPU-h likewise;
    a percentage of hours that read more than that stays (0.01 held: 80 % busy)."""
    from fractui.tui.report_view import util
    from fractui.usage.report import Group
    from fractui.usage.sentences import busy_words, online_words

    def busy_line(seconds: float) -> str:
        out = fleet.report(capfd, "--since", _at(T + 1.2 * H), "--until",
                           _at(T + 1.2 * H + seconds))
        return next(line for line in out.splitlines() if line.startswith("used "))

    assert busy_line(10) == ("used 0.00 GPU-h of the 0.00 held where NVML measured it (too "
                             "little for a percentage)")
    assert busy_line(40).endswith("of the 0.01 held where NVML measured it (80 % busy)")
    since = T + 1.2 * H
    report = build(fleet.store.usage(T, T + 4 * H), [], since, since + 10, "team", T + 4 * H)
    assert busy_words(report.total) == [busy_line(10)]
    assert {util(g) for g in report.groups + [report.total]} == {"—"}
    tiny = Group("total", online_h=0.004, held_online_h=0.002, idle_h=0.002)
    assert online_words(tiny) == ["GPUs online 0.00 GPU-h, held while online 0.00, idle with "
                                  "nothing on them 0.00 (too little for a percentage)"]
    assert online_words(Group("total", online_h=0.01, held_online_h=0.005, idle_h=0.005)) == [
        "GPUs online 0.01 GPU-h, held while online 0.01 (50 %), idle with nothing on them "
        "0.01 (50 %)"]


def test_a_range_that_begins_and_ends_mid_bucket_counts_online_as_it_counts_held(tmp_path,
                                                                                  capfd):
    """One L4 held whole by one job from T to 2 h, looked at every 30 s, buckets of 30 min.
    [0.25 h, 1.1 h) held it 0.85 h; its GPU time counted the bucket that begins in it, whole
    (0.5 h): online 0.5 beside 0.85 held. Each bucket counts its part in the range, as held
    time is clipped to it (0.25 of the first, all of the second, 0.1 of the third): online,
    held while online and held all 0.85; on the report screen alike."""
    from fractui.tui.report_view import Span, compute
    from fractui.tui.source import Source

    clock = Clock()
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = _on_an_l4(store, T)
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 7201, 30):
            gpus.observe([HostView("l4", "online", hello={"gpus": []}, snapshot={"gpus": [
                {"index": 0, "name": "NVIDIA L4", "processes": []}]})],
                [store.get(job.id)], T + look)
        store.keep_gpu_time(gpus.take())
        clock.t = T + 2 * H
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=T + 2 * H)
        clock.t = T + 5 * H
        config = tmp_path / "config.toml"
        config.write_text('[store]\nurl = "sqlite://%s"\n\n[usage]\nbucket_s = 1800\n'
                          % store.where)
        span = ["--since", _at(T + 0.25 * H), "--until", _at(T + 1.1 * H)]
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span,
                                            "--json"])
        assert code == 0, err
        total = json.loads(out)["total"]
        assert (total["held_gpu_hours"], total["online_gpu_hours"],
                total["held_online_gpu_hours"], total["idle_gpu_hours"]) == pytest.approx(
                    (0.85, 0.85, 0.85, 0.0))
        code, out, err = in_process(capfd, ["--config", str(config), "report", *span])
        assert "GPUs online 0.85 GPU-h, held while online 0.85 (100 %), idle with nothing on " \
            "them 0.00 (0 %)" in out, out
        # the screen's range ends now: its last 1.25 h at 2.5 h, [1.25 h, 2.5 h), held 0.75
        # h; the bucket that begins in it, 0.5 h online
        source = Source([])
        source.store = store
        screen = compute(source, Span("x", "x", 1.25 * H, 10, "75m"), "team", T + 2.5 * H, 1800)
        assert screen is not None
        t = screen.report.total
        assert (t.held_h, t.online_h, t.held_online_h) == pytest.approx((0.75, 0.75, 0.75))
    finally:
        store.close()


def test_a_bucket_still_being_filled_counts_over_the_time_its_sums_reach(store_url):
    """One L4 looked at every 30 s from T to 0.75 h, buckets of 30 min, when its scheduler
    stopped; read at 0.95 h, the bucket of 0.5 h is still being filled and holds 0.25 h, all
    of it from 0.5 h to 0.75 h. [0, 0.6 h) had the GPU online all along: 0.6 h. Spread over
    the bucket's time to now (0.45 h), its part before 0.6 h read 0.06 h, not 0.1; spread
    over the 0.25 h its sums reach, 0.1. A range from after they reach has none of them."""
    store = open_store(store_url)
    try:
        gpus = GpuClock(bucket_s=1800)
        for look in range(0, 2701, 30):
            gpus.observe([HostView("l4", "online", hello={"gpus": []}, snapshot={"gpus": [
                {"index": 0, "name": "NVIDIA L4", "processes": []}]})], [], T + look)
        store.keep_gpu_time(gpus.take())
        now = T + 0.95 * H
        kept = store.gpu_time(T - 1800, now)
        made = build([], kept, T, T + 0.6 * H, "team", now, bucket_s=1800)
        assert made.total.online_h == pytest.approx(0.6)
        late = build([], kept, T + 0.8 * H, now, "team", now, bucket_s=1800)
        assert (late.total.online_h, late.gpu_buckets) == (None, frozenset())
    finally:
        store.close()
