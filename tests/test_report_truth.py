"""The report and the metrics against raw truth: one small fleet over four hours, every job's
submit, wait, start, preemption, requeue, cancel and end at a known time, one host away for an
hour, and every number ``fractui report`` prints (table, --json, by team and by host) and the
Prometheus metrics give checked against values worked out by hand in this file's comments,
not by a second implementation of the report.

The fleet: host ``l4`` (two L4s, no MIG) and host ``a100`` (one A100 in MIG mode), away from
2 h to 3 h. Times are seconds from T (a bucket's start); GPU time in buckets of an hour, the
lease holder looking every 30 s (the longest gap it counts).

    job  team/user   queue    attempt: slot, from -> to, how it ended      util  mem
    1    vision/ann  quarter  l4 gpu0 share 0.25, 1800 -> 9000, done        40 %  1 GiB
    2    vision/bo   half     l4 gpu0 share 0.5, 3600 -> 7200, preempted   60 %  2 GiB
                              l4 gpu0 share 0.5, 10800 -> 13500, done      90 %  4 GiB
    3    nlp/cy      mig      a100 gpu0 3g.40gb (3/7), 3600 -> still runs  MIG   10 GiB
    4    nlp/cy      quarter  cancelled while pending at 3600
    5    vision/ann  quarter  l4 gpu0 share 0.25, 10800 -> 12600: cancelled while its launch
                              was in flight (the start recorded after the stop was asked)
                                                                            10 %  0.5 GiB
    6    speech/di   whole    submitted at 12600, pending at the end (14400)
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Dict, List

import pytest

from fractui.config import TeamConfig
from fractui.metrics.families import families
from fractui.metrics.state import MetricsState
from fractui.sched.fleetview import HostView
from fractui.store.model import (CANCELLED, DONE, PENDING, PLACED, RUNNING, STOPPING, Sampled,
                                 Slot)
from fractui.store.sqlite import SqliteStore
from fractui.usage.gputime import GpuClock
from tests.cli_run import in_process

T = 1_700_006_400.0  # a multiple of 3600: the first bucket starts at T
H = 3600.0
END = T + 4 * H
QUARTER = Slot("l4", (0,), None, None, 5758, 0.25)
HALF = Slot("l4", (0,), None, None, 11517, 0.5)
MIG = Slot("a100", (0,), "3g.40gb", 4, None, 3 / 7)
TEAMS = (TeamConfig(name="vision", quota_gpus=2.0), TeamConfig(name="nlp", quota_gpus=1.0),
         TeamConfig(name="speech", quota_gpus=1.0))


class Clock:
    t = T

    def __call__(self) -> float:
        return self.t


def sampled(util: float | None, mib: float) -> Sampled:
    return Sampled(samples=10, memory_peak_mib=int(mib), memory_mean_mib=mib,
                   util_samples=0 if util is None else 10, util_mean=util,
                   util_note="not reported by NVML for MIG instances" if util is None else None)


def views(t: float) -> List[HostView]:
    """The hosts as the lease holder sees them at ``t``: a100 away from 2 h to 3 h."""
    l4 = HostView("l4", "online", hello={"gpus": []}, snapshot={"time": t, "gpus": [
        {"index": i, "name": "NVIDIA L4", "memory_mib": 23034, "processes": []}
        for i in (0, 1)]})
    a100 = HostView("a100", "offline" if T + 2 * H <= t < T + 3 * H else "online",
                    hello={"gpus": []}, snapshot={"time": t, "gpus": [
                        {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
                         "mig_mode": True, "processes": []}]})
    return [l4, a100]


class Fleet:
    """The scenario, played through the store's own transitions at their times; the GPU time
    looked at every 30 s, each look before the changes made at its moment (so a look counts
    the 30 s before it as the jobs were during them)."""

    def __init__(self, tmp_path: Path):
        self.clock = Clock()
        self.store = SqliteStore(str(tmp_path / "store.db"), clock=self.clock)
        self.gpus = GpuClock(bucket_s=H)
        self.snapshots: Dict[float, list] = {}
        self.ids: Dict[int, int] = {}

    def at(self, t: float) -> None:
        """Looks at the fleet every 30 s up to ``t`` (that moment's look included)."""
        look = getattr(self, "_next", T)
        while look <= t:
            self.gpus.observe(views(look), self.store.jobs(), look)
            self.snapshots[look] = self.store.jobs()
            look += 30
        self._next = look
        self.clock.t = t

    def submit(self, n: int, queue: str, team: str, user: str) -> None:
        self.ids[n] = self.store.submit(queue, team, "job%d" % n, ["x"], {},
                                        "%s@laptop" % user).id

    def run(self, n: int, slot: Slot, start: float) -> None:
        self.store.place(self.ids[n], slot, "sched", "fits")
        self.store.started(self.ids[n], "a%d" % n, start, "sched", "started",
                           model="NVIDIA L4" if slot.host == "l4" else "NVIDIA A100-SXM4-80GB")


def play(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path)
    s = f.store
    f.at(T)
    f.submit(1, "quarter", "vision", "ann")
    f.submit(2, "half", "vision", "bo")
    f.submit(4, "quarter", "nlp", "cy")
    f.at(T + 1800)
    f.run(1, QUARTER, T + 1800)
    f.at(T + H)
    f.submit(3, "mig", "nlp", "cy")
    f.run(3, MIG, T + H)
    f.run(2, HALF, T + H)
    s.ended(f.ids[4], (PENDING,), CANCELLED, "no", "cy", "no", "cancel")
    f.at(T + 2 * H)
    s.stopping(f.ids[2], (RUNNING,), "preempt", "sched", "for a team within its quota")
    s.requeue(f.ids[2], (STOPPING,), "sched", "preempted", sampled=sampled(60, 2048))
    f.at(T + 2.5 * H)
    s.ended(f.ids[1], (RUNNING,), DONE, None, "sched", "exited 0", "end", exit_code=0,
            ended_at=T + 2.5 * H, sampled=sampled(40, 1024))
    f.at(T + 3 * H)
    f.run(2, HALF, T + 3 * H)
    f.submit(5, "quarter", "vision", "ann")
    s.place(f.ids[5], QUARTER, "sched", "fits")
    s.stopping(f.ids[5], (PLACED,), "cancel", "ann", "cancelled by ann")  # launch in flight
    s.started(f.ids[5], "a5", T + 3 * H, "sched", "started on l4 gpu0")
    f.at(T + 3.5 * H)
    s.ended(f.ids[5], (STOPPING,), CANCELLED, "cancelled by ann", "sched", "cancelled", "end",
            ended_at=T + 3.5 * H, sampled=sampled(10, 512))
    f.submit(6, "whole", "speech", "di")
    f.at(T + 3.75 * H)
    s.ended(f.ids[2], (RUNNING,), DONE, None, "sched", "exited 0", "end", exit_code=0,
            ended_at=T + 3.75 * H, sampled=sampled(90, 4096))
    f.at(END)
    s.keep_usage({(f.ids[3], 0): sampled(None, 10240)})
    s.keep_gpu_time(f.gpus.take())
    return f


@pytest.fixture
def fleet(tmp_path):
    f = play(tmp_path)
    yield f
    f.store.close()


def report(fleet: Fleet, tmp_path: Path, capfd, *args: str) -> str:
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % fleet.store.where)
    span = ["--since", datetime.datetime.fromtimestamp(T).isoformat(),
            "--until", datetime.datetime.fromtimestamp(END).isoformat()]
    code, out, err = in_process(capfd, ["--config", str(config), "report", *span, *args])
    assert code == 0, err
    return out


def test_the_reports_numbers_are_the_hand_worked_ones(fleet, tmp_path, capfd):
    got = json.loads(report(fleet, tmp_path, capfd, "--json"))
    assert (got["since"], got["until"], got["start"]) == (T, END, T)
    teams = {g["key"]: g for g in got["groups"]}
    assert [g["key"] for g in got["groups"]] == ["vision", "nlp"]  # most held first
    vision, nlp, total = teams["vision"], teams["nlp"], got["total"]
    # vision: held 0.25*2 + 0.5*1 + 0.5*0.75 + 0.25*0.5 = 1.5; used 0.4*2 + 0.6*1 + 0.9*0.75
    # + 0.1*0.5 = 2.125 (a share's processes may keep more of the GPU busy than its charge);
    # memory 1*2 + 2*1 + 4*0.75 + 0.5*0.5 = 7.25 GiB-h; waits 1800, 3600 (submit -> 1 h),
    # 3600 (preempted at 2 h -> 3 h), 0
    assert (vision["held_gpu_hours"], vision["used_gpu_hours"], vision["unmeasured_gpu_hours"],
            vision["memory_gib_hours"]) == pytest.approx((1.5, 2.125, 0.0, 7.25))
    assert (vision["waits"], vision["wait_median_s"], vision["wait_p95_s"]) == (4, 1800, 3600)
    assert vision["outcomes"] == {"done": 2, "failed": 0, "cancelled": 1, "requeued": 0,
                                  "preempted": 1, "late": 0}
    assert vision["running"] == 0
    # nlp: 3/7 for 3 h (away an hour of it: still held) = 9/7, none of it measurable (MIG)
    assert (nlp["held_gpu_hours"], nlp["unmeasured_gpu_hours"], nlp["memory_gib_hours"]) == \
        pytest.approx((9 / 7, 9 / 7, 30.0))
    assert nlp["used_gpu_hours"] is None  # not known (the table's dash), never 0
    assert (nlp["waits"], nlp["wait_median_s"], nlp["running"]) == (1, 0, 1)
    assert sum(nlp["outcomes"].values()) == 0
    assert (total["held_gpu_hours"], total["used_gpu_hours"], total["unmeasured_gpu_hours"],
            total["memory_gib_hours"]) == pytest.approx((1.5 + 9 / 7, 2.125, 9 / 7, 37.25))
    # five waits 0, 0, 1800, 3600, 3600: nearest rank, the 3rd and the 5th
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (5, 1800, 3600)
    assert got["ended_unstarted"] == {"cancelled": 1, "failed": 0}  # job 4
    # GPU time: the L4s seen all 4 h each; the A100 up to 7170 s (the look at 7200 finds it
    # away; the look as it returns at 10800 counts nothing) and from 10800 to the end.
    # Held while online: l4 gpu0 0.25*1800 + 0.75*3600 + 0.25*1800 + 0.75*1800 + 0.5*900 =
    # 5400 s; a100 3/7 * (3570 + 3600). Idle (nothing on it): l4 gpu0 1800 + 1800 + 900,
    # l4 gpu1 14400, a100 3600 (up to its job's start) = 22500 s
    online = 2 * 4 + (7170 + 3600) / H
    held_online, idle = (5400 + 3 / 7 * 7170) / H, 22500 / H
    assert (total["online_gpu_hours"], total["held_online_gpu_hours"],
            total["idle_gpu_hours"]) == pytest.approx((online, held_online, idle))
    # without sharing: one whole GPU per attempt. Demand over time: 1 (0.5-1 h), 3 (1-2 h),
    # 2 (2-2.5 h), 1 (2.5-3 h), 3 (3-3.5 h), 2 (3.5-3.75 h), 1 (3.75-4 h): peak 3, mean
    # (1800 + 3*3600 + 2*1800 + 1800 + 3*1800 + 2*900 + 900) / 14400 = 1.8125. GPUs in use:
    # 1, 2, 2, 1, 2, 2, 1: peak 2, mean 20700 / 14400 = 1.4375
    assert got["saving"] == pytest.approx({
        "peak_demand_gpus": 3, "peak_used_gpus": 2, "saved_gpus_at_peak": 1,
        "mean_demand_gpus": 1.8125, "mean_used_gpus": 1.4375, "saved_gpus_mean": 0.375})


def test_by_host_the_gpu_time_is_each_hosts(fleet, tmp_path, capfd):
    got = json.loads(report(fleet, tmp_path, capfd, "--json", "--by", "host"))
    hosts = {g["key"]: g for g in got["groups"]}
    assert (hosts["l4"]["held_gpu_hours"], hosts["a100"]["held_gpu_hours"]) == pytest.approx(
        (1.5, 9 / 7))
    assert (hosts["l4"]["online_gpu_hours"], hosts["l4"]["held_online_gpu_hours"],
            hosts["l4"]["idle_gpu_hours"]) == pytest.approx((8.0, 1.5, 18900 / H))
    assert (hosts["a100"]["online_gpu_hours"], hosts["a100"]["held_online_gpu_hours"],
            hosts["a100"]["idle_gpu_hours"]) == pytest.approx((10770 / H, 3 / 7 * 7170 / H,
                                                               1.0))


def test_the_table_prints_the_same_numbers(fleet, tmp_path, capfd):
    out = report(fleet, tmp_path, capfd)
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("vision", "nlp", "total")}
    # GROUP HELD USED NO-MEASURE MEM WAIT-MED WAIT-P95 DONE FAILED CANCELLED REQUEUED
    # PREEMPTED LATE RUNNING IDLE
    assert rows["vision"][1:] == ["1.50", "2.12", "0.00", "7.25", "30m00s", "1h00m", "2", "0",
                                  "1", "0", "1", "0", "0", "—"]
    assert rows["nlp"][1:] == ["1.29", "—", "1.29", "30.00", "0s", "0s", "0", "0", "0",
                               "0", "0", "0", "1", "—"]  # MIG only: used is not known
    assert rows["total"][1:] == ["2.79", "2.12", "1.29", "37.25", "30m00s", "1h00m", "2", "0",
                                 "1", "0", "1", "0", "1", "6.25"]
    # (the mean saved as the two means are said: 1.81 - 1.44, though --json's is 0.375)
    assert "without sharing, these jobs would have needed 3 GPUs at peak (1.81 on average); " \
        "they used 2 (1.44): sharing saved 1 GPU at peak, 0.37 on average" in out, out
    # how busy the jobs kept what they held, of what was measured: 2.125 of 1.5 (vision's
    # quarter shares kept their GPU busier than their charge)
    assert "used 2.12 GPU-h of the 1.50 held where NVML measured it (142 % busy; a share's " \
        "processes may keep its GPU busier than its charge)" in out, out
    # 39570 s online, 8472.9 s held (21 %), 22500 s idle (57 %)
    assert "GPUs online 10.99 GPU-h, held while online 2.35 (21 %), idle with nothing on " \
        "them 6.25 (57 %)" in out, out
    assert "1 job (1 cancelled) ended in this range while waiting to start" in out, out


def samples(state: MetricsState) -> Dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families(state) for s in family.samples}


def metric(found: Dict[tuple, float], name: str, **labels: str) -> float:
    return found[name, tuple(sorted(labels.items()))]


def test_the_metrics_at_two_moments_are_the_hand_worked_ones(fleet):
    """At 3 h 10 m: job 2 runs on l4 gpu0 (0.5), job 5 is in its stop's grace there (0.25:
    it still holds its share), job 3 runs on the A100 (3/7). At the end: job 3 only, and
    job 6 has waited 1800 s in queue whole."""
    mid = T + 3 * H + 600
    jobs = fleet.snapshots[mid]
    found = samples(MetricsState(now=mid, holder="h", hosts=views(mid), jobs=jobs,
                                 teams=TEAMS, queues=["quarter", "half", "mig", "whole"],
                                 lease_held=True, store_reachable=True))
    assert metric(found, "fractui_gpu_allocated_ratio", host="l4", gpu="0") == 0.75
    assert metric(found, "fractui_gpu_allocated_ratio", host="l4", gpu="1") == 0.0
    assert metric(found, "fractui_gpu_allocated_ratio", host="a100", gpu="0") == round(3 / 7, 6)
    assert metric(found, "fractui_team_allocated_gpus", team="vision") == 0.75
    assert metric(found, "fractui_team_allocated_gpus", team="nlp") == round(3 / 7, 6)
    assert metric(found, "fractui_team_borrowed_gpus", team="vision") == 0.0
    held = {}
    for (name, labels), value in found.items():
        if name == "fractui_job_allocated_gpus":
            team = dict(labels)["team"]
            held[team] = held.get(team, 0.0) + value
    # the jobs' series sum to what each team holds (the docs' first PromQL)
    assert held == pytest.approx({"vision": 0.75, "nlp": 3 / 7})
    assert metric(found, "fractui_queue_pending_jobs", queue="whole") == 0
    # the sharing saved now: three attempts on two GPUs
    assert metric(found, "fractui_sharing_demand_gpus") == 3
    assert metric(found, "fractui_sharing_used_gpus") == 2

    jobs = fleet.store.jobs(["pending", "placed", "running", "stopping"])
    found = samples(MetricsState(now=END, holder="h", hosts=views(END), jobs=jobs,
                                 teams=TEAMS, queues=["quarter", "half", "mig", "whole"],
                                 lease_held=True, store_reachable=True))
    assert metric(found, "fractui_queue_pending_jobs", queue="whole") == 1
    assert metric(found, "fractui_queue_oldest_wait_seconds", queue="whole") == 1800
    assert metric(found, "fractui_queue_oldest_wait_seconds", queue="quarter") == 0
    assert metric(found, "fractui_team_allocated_gpus", team="vision") == 0.0
    assert metric(found, "fractui_job_allocated_gpus", job=str(fleet.ids[3]), team="nlp",
                  queue="mig", host="a100", gpu="0", slice="3g.40gb") == 3 / 7
    assert metric(found, "fractui_sharing_demand_gpus") == 1
    assert metric(found, "fractui_sharing_used_gpus") == 1


def test_the_report_screen_shows_the_same_numbers(fleet):
    """The TUI's report screen (its last 24 h, by team), read at the end of the scenario: its
    headline and table are the hand-worked numbers too."""
    from fractui.tui.report_view import SPANS, compute, headline, table_rows
    from fractui.usage.report import UNSTARTED
    from fractui.usage.sentences import Waiting, local

    class Source:  # what the screen reads of its source: the store's usage and jobs
        def read_usage(self, since, until, bucket_s=0.0, to_now=False):
            return (fleet.store.usage(since, until, to_now),
                    fleet.store.gpu_time(since, until))

        def read_ended(self, since):
            return fleet.store.jobs(UNSTARTED, ended_since=since)

        def read_waiting(self):
            return fleet.store.jobs(Waiting.STATES)

        def read_usage_begins(self):
            return fleet.store.usage_begins()

        def read_usage_forgotten_before(self):
            return fleet.store.usage_forgotten_before()

    computed = compute(Source(), SPANS[1], "team", END, H)
    assert computed.report.start == T  # the means start where the store's usage does
    # fractui report's sentences, word for word (test_the_table_prints_the_same_numbers),
    # where the store's usage begins in the last 24 h (as fractui report --since 24h says
    # it), and the job still waiting at the end
    assert headline(computed).plain.splitlines() == [
        "without sharing, these jobs would have needed 3 GPUs at peak (1.81 on average); they "
        "used 2 (1.44): sharing saved 1 GPU at peak, 0.37 on average",
        "the store keeps nothing of it before %s: means over time start there" % local(T),
        "GPUs online 10.99 GPU-h, held while online 2.35 (21 %), idle with nothing on them "
        "6.25 (57 %)",
        "used 2.12 GPU-h of the 1.50 held where NVML measured it (142 % busy; a share's "
        "processes may keep its GPU busier than its charge)",
        "no measure: GPU-hours held where NVML gives no utilisation (MIG slices, or not "
        "sampled yet): 1.29 of 2.79",
        "1 job (1 cancelled) ended in this range while waiting to start: waits and outcomes "
        "count only attempts that started",
        "1 job waiting to start now (speech 1), the longest for 30m00s (job 6): WAIT counts a "
        "wait once it ends in a start"]
    titles, rows = table_rows(computed.report, 200)
    assert titles[:4] == ["team", "held GPU-h", "used GPU-h", "util"]
    assert [r[:4] for r in rows] == [["vision", "1.50", "2.12", "142%"],
                                     ["nlp", "1.29", "—", "—"],
                                     ["total", "2.79", "2.12", "142%"]]
