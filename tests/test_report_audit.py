"""A billing admin's edges, played through the store's own transitions and checked on every
surface (``fractui report``'s table, --json and --csv, the report screen, the metrics)
against numbers worked out by hand in this file's comments: a 2-GPU job across the range's
start, two MIG slices sharing an A100, a share moved by hand to another host mid-run and
running at the range's end, a job cancelled while placed, one failed at its launch, a
team with members in two queues, a host down for half an hour and a GPU cordoned for part
of the range. The scenario of tests/test_report_truth.py has none of these but the MIG
slice.

Hosts: ``h1`` (two L4s), ``h2`` (an A100 in MIG mode), ``h3`` (one L4, offline from 3 h to
3.5 h). Times are seconds from T; GPU time in buckets of an hour, looked at every 30 s.
The report's range is [0.5 h, 4 h).

    job  team/user  queue   attempt: slot, from -> to, how it ended            util  mem
    1    vision/ann whole2  h1 gpu0,1 whole (2.0), 0 -> 2 h, done              150   2 GiB
    2    vision/bo  mig     h2 3g.40gb (3/7), 1 h -> runs (submitted 0.5 h)    MIG   10 GiB
    6    nlp/cy     mig     h2 1g.10gb (1/7), 1.5 h -> 3.5 h, done (sub. 1 h)  MIG   5 GiB
    3    nlp/cy     quarter h3 gpu0 0.25, 2.5 h -> 3 h, moved (requeued) (sub. 2 h)
                            h1 gpu0 0.25, 3.25 h -> runs                       40    1 GiB
    4    vision/ann whole1  placed on h1 gpu0 at 2.5 h, cancelled at 2.6 h, never started
    5    nlp/di     whole1  placed on h1 gpu1 at 3 h, failed at its launch at 3.1 h
    7    speech/eve quarter submitted at 3.5 h, waiting at the end (5 h)

h1 gpu1 is cordoned from 2 h to 2.9 h (nothing on it meanwhile).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path
from typing import Dict, List

import pytest

from fractui.metrics.state import MetricsState
from fractui.sched.fleetview import HostView
from fractui.store.model import (CANCELLED, DONE, FAILED, PLACED, RUNNING, STOPPING, Job,
                                 Slot)
from fractui.store.sqlite import SqliteStore
from fractui.usage.gputime import GpuClock
from fractui.usage.sentences import Waiting
from tests.cli_run import in_process, store_report
from tests.test_report_truth import TEAMS, Clock, metric, sampled, samples

T = 1_700_006_400.0  # a multiple of 3600: the first bucket starts at T
H = 3600.0
NOW = T + 5 * H
SINCE, UNTIL = T + 0.5 * H, T + 4 * H
WHOLE2 = Slot("h1", (0, 1), None, None, None, 2.0)
MIG3 = Slot("h2", (0,), "3g.40gb", 4, None, 3 / 7)
MIG1 = Slot("h2", (0,), "1g.10gb", 0, None, 1 / 7)


def share(host: str, gpu: int, charge: float = 0.25) -> Slot:
    return Slot(host, (gpu,), None, None, 5758 if charge < 1 else None, charge)


def views(t: float) -> List[HostView]:
    """The hosts as the lease holder sees them at ``t``: h3 away from 3 h to 3.5 h."""
    def host(name: str, gpus: int, model: str, mig: bool = False) -> HostView:
        away = name == "h3" and T + 3 * H <= t < T + 3.5 * H
        return HostView(name, "offline" if away else "online", hello={"gpus": []},
                        snapshot={"time": t, "gpus": [
                            {"index": i, "name": model, "memory_mib": 23034, "mig_mode": mig,
                             "processes": []} for i in range(gpus)]})
    return [host("h1", 2, "NVIDIA L4"), host("h2", 1, "NVIDIA A100", True),
            host("h3", 1, "NVIDIA L4")]


class Fleet:
    """The scenario's store and GPU time, each look before the changes made at its moment."""

    def __init__(self, path: Path):
        self.clock = Clock()
        self.store = SqliteStore(str(path), clock=self.clock)
        self.gpus = GpuClock(bucket_s=H)
        self.ids: Dict[int, int] = {}
        self.snapshots: Dict[float, List[Job]] = {}
        self._next = T

    def at(self, t: float) -> None:
        while self._next <= t:
            self.gpus.observe(views(self._next), self.store.jobs(), self._next)
            self.snapshots[self._next] = self.store.jobs()
            self._next += 30
        self.clock.t = t

    def submit(self, n: int, queue: str, team: str, user: str) -> None:
        self.ids[n] = self.store.submit(queue, team, "job%d" % n, ["x"], {}, user).id

    def run(self, n: int, slot: Slot, start: float) -> None:
        self.store.place(self.ids[n], slot, "sched", "fits")
        self.store.started(self.ids[n], "a%d" % n, start, "sched", "started",
                           model="NVIDIA A100" if slot.host == "h2" else "NVIDIA L4")


def play(path: Path) -> Fleet:
    f = Fleet(path)
    s = f.store
    f.at(T)
    f.submit(1, "whole2", "vision", "ann")
    f.run(1, WHOLE2, T)
    f.at(T + 0.5 * H)
    f.submit(2, "mig", "vision", "bo")
    f.at(T + H)
    f.run(2, MIG3, T + H)
    f.submit(6, "mig", "nlp", "cy")
    f.submit(4, "whole1", "vision", "ann")
    f.at(T + 1.5 * H)
    f.run(6, MIG1, T + 1.5 * H)
    f.at(T + 2 * H)
    s.ended(f.ids[1], (RUNNING,), DONE, None, "sched", "exited 0", "end", exit_code=0,
            ended_at=T + 2 * H, sampled=sampled(150, 2048))
    s.cordon("h1", 1, "cordon", "admin", "fan check")
    f.submit(3, "quarter", "nlp", "cy")
    f.at(T + 2.5 * H)
    f.run(3, share("h3", 0), T + 2.5 * H)
    s.place(f.ids[4], share("h1", 0, 1.0), "sched", "fits")
    f.at(T + 2.6 * H)
    s.ended(f.ids[4], (PLACED,), CANCELLED, "cancelled by ann", "ann", "cancel", "cancel")
    f.at(T + 2.9 * H)
    s.uncordon("h1", 1, "admin", "fan fine")
    f.at(T + 3 * H)
    f.submit(5, "whole1", "nlp", "di")
    s.place(f.ids[5], share("h1", 1, 1.0), "sched", "fits")
    s.stopping(f.ids[3], (RUNNING,), "requeue", "admin", "moved by hand")
    s.requeue(f.ids[3], (STOPPING,), "sched", "moved", sampled=sampled(40, 1024))
    f.at(T + 3.1 * H)
    s.ended(f.ids[5], (PLACED,), FAILED, "launch failed", "sched", "launch failed", "end")
    f.at(T + 3.25 * H)
    f.run(3, share("h1", 0), T + 3.25 * H)
    f.at(T + 3.5 * H)
    s.ended(f.ids[6], (RUNNING,), DONE, None, "sched", "exited 0", "end", exit_code=0,
            ended_at=T + 3.5 * H, sampled=sampled(None, 5120))
    f.submit(7, "quarter", "speech", "eve")
    f.at(NOW)
    s.keep_usage({(f.ids[2], 0): sampled(None, 10240), (f.ids[3], 1): sampled(40, 1024)})
    s.keep_gpu_time(f.gpus.take())
    return f


@pytest.fixture
def fleet(tmp_path):
    f = play(tmp_path / "store.db")
    yield f
    f.store.close()


def report(fleet: Fleet, tmp_path: Path, capfd, *args: str) -> str:
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[usage]\nbucket_s = 3600\n'
                      % fleet.store.where)
    span = ["--since", datetime.datetime.fromtimestamp(SINCE).isoformat(),
            "--until", datetime.datetime.fromtimestamp(UNTIL).isoformat()]
    code, out, err = in_process(capfd, ["--config", str(config), "report", *span, *args])
    assert code == 0, err
    return out


# Held in [0.5 h, 4 h): job 1 2.0 x 1.5 h = 3; job 2 3/7 x 3 h = 9/7; job 6 1/7 x 2 h = 2/7;
# job 3 0.25 x 0.5 h + 0.25 x 0.75 h = 0.3125. Used: job 1 1.5 x 1.5 h = 2.25; job 3 0.4 x
# 1.25 h = 0.5; MIG unmeasured. Memory: 2 x 1.5 + 10 x 3 = 33 (vision); 5 x 2 + 1 x 1.25 =
# 11.25 (nlp). Waits of the attempts started in the range: job 2 1800, job 6 1800, job 3
# 1800 then 900 (from the move at 3 h): nearest rank, median 1800, p95 1800.
VISION = (3 + 9 / 7, 2.25, 9 / 7, 33.0)
NLP = (2 / 7 + 0.3125, 0.5, 2 / 7, 11.25)
# GPU time: every GPU online 0.5 h of bucket 0 and 3 h after, but h3 not from the look
# before 3 h (the look at 3 h finds it away) to 3.5 h (its first look back counts nothing):
# 1830 s less. Held while online: h1 gpu0 1 x 1.5 h + 0.25 x 0.75 h; h1 gpu1 1 x 1.5 h; h2
# 11/7 (as HELD); h3 0.25 x 1770 s. Idle: h1 gpu0 (2 h - 2.5 h, 2.6 h - 3.25 h) 4140 s; h1
# gpu1 (2 h - 3 h, 3.1 h - 4 h: cordoned or not, nothing was on it) 6840 s; h2 0.5 h; h3
# 0.5 + 1 + 0.5 + 0.5 h.
ONLINE = 4 * 3.5 - 1830 / H
HELD_ONLINE = 1.5 + 0.1875 + 1.5 + 11 / 7 + 0.25 * 1770 / H
IDLE = (4140 + 6840) / H + 0.5 + 2.5
# Without sharing (one GPU per GPU an attempt uses; the 2-GPU job 2): demand 2 (0.5-1 h), 3
# (1-1.5), 4 (1.5-2), 2 (2-2.5), 3 (2.5-3), 2 (3-3.25), 3 (3.25-3.5), 2 (3.5-4); GPUs in
# use 2, 3, 3, 1, 2, 1, 2, 2: peaks 4 and 3, means 9.25 / 3.5 and 7.25 / 3.5.
SAVING = {"peak_demand_gpus": 4, "peak_used_gpus": 3, "saved_gpus_at_peak": 1,
          "mean_demand_gpus": 9.25 / 3.5, "mean_used_gpus": 7.25 / 3.5,
          "saved_gpus_mean": 2 / 3.5}


def test_the_edges_read_as_worked_by_hand(fleet, tmp_path, capfd):
    got = json.loads(report(fleet, tmp_path, capfd, "--json"))
    teams = {g["key"]: g for g in got["groups"]}
    assert list(teams) == ["vision", "nlp"]  # speech's job only waits: no record of it
    for name, want in (("vision", VISION), ("nlp", NLP)):
        g = teams[name]
        assert (g["held_gpu_hours"], g["used_gpu_hours"], g["unmeasured_gpu_hours"],
                g["memory_gib_hours"]) == pytest.approx(want, abs=1e-6)
    assert (teams["vision"]["waits"], teams["nlp"]["waits"]) == (1, 3)
    assert teams["nlp"]["outcomes"]["requeued"] == 1  # the move
    assert (teams["vision"]["running"], teams["nlp"]["running"]) == (1, 1)
    total = got["total"]
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (4, 1800, 1800)
    assert (total["outcomes"]["done"], total["running"]) == (2, 2)
    assert got["ended_unstarted"] == {"cancelled": 1, "failed": 1}  # jobs 4 and 5
    assert (total["online_gpu_hours"], total["held_online_gpu_hours"],
            total["idle_gpu_hours"]) == pytest.approx((ONLINE, HELD_ONLINE, IDLE), abs=1e-6)
    assert got["saving"] == pytest.approx(SAVING, abs=1e-6)
    assert got["waiting_now"] is None  # the range ended before now
    # by GPU: the cordoned GPU's hours are online and idle (docs/usage.md)
    gpus = {g["key"]: g for g in json.loads(report(fleet, tmp_path, capfd, "--by", "gpu",
                                                   "--json"))["groups"]}
    assert (gpus["h1 gpu1"]["online_gpu_hours"], gpus["h1 gpu1"]["idle_gpu_hours"]) == \
        pytest.approx((3.5, 6840 / H))


def test_the_csv_and_table_say_the_json_and_round_each_number_alone(fleet, tmp_path, capfd):
    """The CSV's groups add up to its total to its six decimals; the table's total is the
    sum rounded, not the rounded groups' sum: vision 4.29 and nlp 0.60 over a total of
    4.88 (4.2857 + 0.5982 = 4.8839), as docs/usage.md says."""
    rows = list(csv.DictReader(io.StringIO(report(fleet, tmp_path, capfd, "--csv"))))
    assert [r["team"] for r in rows] == ["vision", "nlp", "total"]
    for column in ("held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours",
                   "memory_gib_hours", "done", "requeued", "running"):
        assert float(rows[2][column]) == pytest.approx(
            sum(float(r[column]) for r in rows[:2]), abs=2e-6), column
    table = report(fleet, tmp_path, capfd).splitlines()
    cells = {line.split()[0]: line.split()[1:5] for line in table[2:5]}
    assert cells == {"vision": ["4.29", "2.25", "1.29", "33.00"],
                     "nlp": ["0.60", "0.50", "0.29", "11.25"],
                     "total": ["4.88", "2.75", "1.57", "44.25"]}


def test_the_metrics_say_the_reports_peak_at_its_moment(fleet):
    """At 1.75 h: the 2-GPU job (2 GPUs needed without sharing) and both MIG slices on one
    A100 (2 more, 1 GPU): demand 4 on 3 GPUs, the report's peak; vision holds 2 + 3/7."""
    at = T + 1.75 * H
    found = samples(MetricsState(now=at, holder="h", hosts=views(at),
                                 jobs=fleet.snapshots[at], teams=TEAMS,
                                 queues=["whole2", "mig", "quarter", "whole1"],
                                 lease_held=True, store_reachable=True))
    assert metric(found, "fractui_sharing_demand_gpus") == SAVING["peak_demand_gpus"]
    assert metric(found, "fractui_sharing_used_gpus") == SAVING["peak_used_gpus"]
    assert metric(found, "fractui_team_allocated_gpus", team="vision") == round(2 + 3 / 7, 6)
    assert metric(found, "fractui_team_allocated_gpus", team="nlp") == round(1 / 7, 6)
    # at 2.55 h job 4 is placed, its launch under way: out of its queue's metric, among the
    # report's jobs waiting to start (docs/metrics.md)
    at = T + 2.55 * H
    jobs = fleet.snapshots[at]
    found = samples(MetricsState(now=at, holder="h", hosts=views(at), jobs=jobs, teams=TEAMS,
                                 queues=["whole1"], lease_held=True, store_reachable=True))
    assert metric(found, "fractui_queue_pending_jobs", queue="whole1") == 0
    assert Waiting.of([j for j in jobs if j.state in Waiting.STATES], "queue", at).groups == \
        {"whole1": 1}


def test_the_report_screen_reads_all_kept_as_worked_by_hand(fleet):
    """The screen's "all kept" at 5 h: [0, 5 h). Held 4 + 3/7 x 4 + 2/7 + 0.125 + 0.4375;
    online 10 + 5 + (5 h - 1830 s); idle 1.15 + 2.9 + 1 + 4 h; demand means (2 x 0.5 +
    9.25 + 2) / 5 and (2 x 0.5 + 7.25 + 2) / 5; five waits 0, 900, 1800, 1800, 1800."""
    from fractui.tui.report_view import SPANS, compute, headline, table_rows
    from fractui.usage.report import UNSTARTED

    store = fleet.store

    class Source:  # what the screen reads of its source
        def read_usage(self, since, until, bucket_s=0.0, to_now=False):
            return store.usage(since, until, to_now), store.gpu_time(since - bucket_s, until)

        def read_ended(self, since):
            return store.jobs(UNSTARTED, ended_since=since)

        def read_waiting(self):
            return store.jobs(Waiting.STATES)

        def read_usage_begins(self):
            return store.usage_begins()

        def read_usage_forgotten_before(self):
            return store.usage_forgotten_before()

    computed = compute(Source(), SPANS[3], "team", NOW, H)
    t = computed.report.total
    assert (computed.report.since, computed.report.start) == (T, T)
    assert (t.held_h, t.online_h, t.idle_h) == pytest.approx(
        (4 + 12 / 7 + 2 / 7 + 0.125 + 0.4375, 15 + 5 - 1830 / H, 1.15 + 2.9 + 1 + 4))
    assert (computed.report.saving.mean_demand, computed.report.saving.mean_used) == \
        pytest.approx((12.25 / 5, 10.25 / 5))
    assert (t.wait_median_s, len(t.waits_s)) == (1800, 5)
    lines = headline(computed).plain.splitlines()
    assert lines[0] == ("without sharing, these jobs would have needed 4 GPUs at peak (2.45 "
                        "on average); they used 3 (2.05): sharing saved 1 GPU at peak, 0.40 "
                        "on average")
    assert lines[-2:] == [
        "2 jobs (1 cancelled, 1 failed) ended in this range while waiting to start: waits "
        "and outcomes count only attempts that started",
        "1 job waiting to start now (speech 1), the longest for 1h30m (job %d): WAIT counts "
        "a wait once it ends in a start" % fleet.ids[7]]
    assert table_rows(computed.report, 200)[1][-1][:2] == ["total", "6.56"]


def test_a_local_time_the_clocks_skip_is_read_with_the_offset_before_the_change(
        tmp_path, capfd, berlin):
    """In Berlin 2026-03-29 has 23 hours (02:00 winter time is 03:00 summer time); 02:30
    that day is no time on the clocks, and is read as 02:30+01:00, which they call 03:30 —
    the heading says so. (A time that happens twice is read as its first, with the same
    rule: the offset before the change; tests/test_report_edges.py.)"""
    clock = Clock()
    start = datetime.datetime(2026, 3, 28, 12).timestamp()
    clock.t = start
    store = SqliteStore(str(tmp_path / "store.db"), clock=clock)
    try:
        job = store.submit("q", "vision", "train", ["x"], {}, "ann")
        store.place(job.id, share("h1", 0, 1.0), "sched", "fits")
        store.started(job.id, "a1", start, "sched", "started", model="NVIDIA L4")
        clock.t = end = datetime.datetime(2026, 3, 30, 12).timestamp()
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=end)
        report = store_report(capfd, tmp_path, store.where)

        day = json.loads(report("--since", "2026-03-29", "--until", "2026-03-30", "--json"))
        assert day["total"]["held_gpu_hours"] == pytest.approx(23.0)
        skipped = ["--since", "2026-03-29T02:30", "--until", "2026-03-29T04:00"]
        assert report(*skipped).startswith("usage from 2026-03-29 03:30 +0200 to 2026-03-29 "
                                           "04:00 +0200, by team")
        got = json.loads(report(*skipped, "--json"))
        assert got["since"] == datetime.datetime.fromisoformat(
            "2026-03-29T02:30+01:00").timestamp()
        assert got["total"]["held_gpu_hours"] == pytest.approx(0.5)
    finally:
        store.close()


def test_a_range_not_begun_says_no_job_waiting_in_it(tmp_path, capfd):
    """A range in the future has nothing in it yet: no attempt runs at its end (RUNNING 0),
    no job waits in it — the jobs waiting now are said under a range that reaches now only
    (its end now or later, its start before now), in every form — and the attempt running
    now, which the store reads for it (still open), is no group of zeros in --json and
    --csv where the table says no job held a GPU."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        store.submit("q", "speech", "waits", ["x"], {}, "eve")
        runs = store.submit("q", "vision", "runs", ["x"], {}, "ann")
        store.place(runs.id, share("h1", 0), "sched", "fits")
        store.started(runs.id, "a1", store.now(), "sched", "started", model="NVIDIA L4")
        report = store_report(capfd, tmp_path, store.where)
        later = datetime.datetime.fromtimestamp(store.now() + 7 * 86400).date()
        future = ["--since", later.isoformat(), "--until",
                  (later + datetime.timedelta(days=1)).isoformat()]
        table = report(*future)
        assert "waiting to start" not in table and "no job held a GPU" in table, table
        got = json.loads(report(*future, "--json"))
        assert (got["waiting_now"], got["groups"], got["total"]["running"]) == (None, [], 0)
        assert [r["waiting_now"] for r in csv.DictReader(io.StringIO(report(
            *future, "--csv")))] == [""]
        # (the same job under a range that reaches now)
        assert json.loads(report("--since", "1h", "--until", future[1],
                                 "--json"))["waiting_now"]["jobs"] == 1
    finally:
        store.close()
