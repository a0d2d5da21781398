"""``fractui report`` of a history scripted through the SQLite store's own transitions at
chosen store times, against numbers worked out by hand: ranges that cut attempts in half, an
attempt still running on a MIG slice (never measured), a job that never started, one
preempted and started again (its second wait from its requeue), and a team since removed
from the config. Times are seconds from T, 10,000 s before now; the report's now is now.

    job  team/user  slot                   submit  start -> end         util  mem
    1    vision/ann h1 gpu0 share 0.5      0       100 -> 1100 done     50 %  2 GiB
    2    vision/bo  h1 gpu0 share 0.25     0       300 -> 700 failed    20 %  1 GiB
    3    nlp/cy     h2 gpu0 MIG 3g.40gb    200     400 -> running       (MIG: no measure)
    4    nlp/cy     cancelled at 800, waiting since 500
    5    old/di     h1 gpu1 whole          0       600 -> 1600 done     80 %  4 GiB
    6    vision/ann waiting since 900
    7    speech/ed  h2 gpu1 whole          1000    1100 -> 1250 preempted, 1500 -> running
"""

from __future__ import annotations

import datetime
import json
import math
import time
from typing import Dict, List

import pytest

from fractui.store.model import CANCELLED, DONE, FAILED, PENDING, RUNNING, STOPPING, Slot
from fractui.store.sqlite import SqliteStore
from tests.cli_run import in_process, store_report
from tests.test_report_truth import sampled

H = 3600.0
MIG = Slot("h2", (0,), "3g.40gb", 4, None, 3 / 7)


def _history(path: str) -> float:
    """Plays the history above into the store at ``path``; returns T."""
    t0 = math.floor(time.time()) - 10000
    clock = [float(t0)]
    store = SqliteStore(path, clock=lambda: clock[0])

    def at(t: float) -> None:
        clock[0] = t0 + t

    plan = [("vision", "ann", 0, Slot("h1", (0,), None, None, 12288, 0.5), 100, 1100, DONE,
             sampled(50, 2048)),
            ("vision", "bo", 0, Slot("h1", (0,), None, None, 6144, 0.25), 300, 700, FAILED,
             sampled(20, 1024)),
            ("nlp", "cy", 200, MIG, 400, None, None, None),
            ("old", "di", 0, Slot("h1", (1,), None, None, None, 1.0), 600, 1600, DONE,
             sampled(80, 4096))]
    try:
        jobs = []
        for team, user, submit, *_ in plan:
            at(submit)
            jobs.append(store.submit("q", team, "j", ["x"], {}, "%s@laptop" % user))
        at(500)
        unstarted = store.submit("q", "nlp", "j", ["x"], {}, "cy@laptop")
        at(800)
        store.ended(unstarted.id, (PENDING,), CANCELLED, None, "cy", "cancel", "cancelled")
        at(900)
        store.submit("q", "vision", "j", ["x"], {}, "ann@laptop")
        for job, (_, _, _, slot, start, end, outcome, took) in zip(jobs, plan):
            at(start - 1)
            store.place(job.id, slot, "sched", "fits")
            at(start)
            store.started(job.id, "a%d" % job.id, t0 + start, "sched", "started")
            if end is not None:
                at(end)
                store.ended(job.id, (RUNNING,), outcome, None, "sched", outcome, "end",
                            ended_at=t0 + end, sampled=took)
        whole = Slot("h2", (1,), None, None, None, 1.0)
        at(1000)
        again = store.submit("q", "speech", "j", ["x"], {}, "ed@laptop")
        for start in (1100, 1500):
            at(start - 1)
            store.place(again.id, whole, "sched", "fits")
            at(start)
            store.started(again.id, "a%d" % start, t0 + start, "sched", "started")
            if start == 1100:
                at(1200)
                store.stopping(again.id, (RUNNING,), "preempt", "sched", "preempt")
                at(1250)
                store.requeue(again.id, (STOPPING,), "sched", "preempted")
    finally:
        store.close()
    return float(t0)


def _at(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat()


def _seconds(group: Dict, *keys: str) -> List:
    return [None if group[k] is None else group[k] * H for k in keys]


HOURS = ("held_gpu_hours", "used_gpu_hours", "unmeasured_gpu_hours", "memory_gib_hours")


def test_a_scripted_history_reads_as_worked_by_hand(tmp_path, capfd):
    path = str(tmp_path / "store.db")
    t0 = _history(path)
    report = store_report(capfd, tmp_path, path, '[[teams]]\nname = "vision"\nquota_gpus = 2\n'
                          '[[teams]]\nname = "nlp"\nquota_gpus = 1\n')

    def ranged(since: float, until: float, *argv: str) -> str:
        return report("--since", _at(t0 + since), "--until", _at(t0 + until), *argv)

    # [200, 1000): #1 800 s x 0.5, #2 400 s x 0.25, #3 600 s x 3/7 (unmeasured), #5 400 s;
    # used 0.5 x 800 + 0.2 x 400 + 0.8 x 400; memory 2 x 800 + 1 x 400 + 4 x 400 GiB-s
    got = json.loads(ranged(200, 1000, "--json"))
    total, teams = got["total"], {g["key"]: g for g in got["groups"]}
    assert _seconds(total, *HOURS) == pytest.approx([1157.142857, 800, 257.142857, 3600],
                                                    abs=0.01)
    assert _seconds(teams["vision"], *HOURS) == pytest.approx([500, 480, 0, 2000], abs=0.01)
    assert _seconds(teams["nlp"], *HOURS) == [pytest.approx(257.142857, abs=0.01), None,
                                              pytest.approx(257.142857, abs=0.01), None]
    assert _seconds(teams["old"], *HOURS) == pytest.approx([400, 320, 0, 1600], abs=0.01)
    # waits of the attempts started in it: #2 300 s, #3 200 s, #5 600 s (#1 started before)
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (3, 300.0, 600.0)
    # #2 failed in it; #1, #3 and #5 held their slices at its end; #4 ended waiting
    assert (total["outcomes"]["failed"], total["outcomes"]["done"], total["running"]) == (
        1, 0, 3)
    assert got["ended_unstarted"] == {"cancelled": 1, "failed": 0}
    # whole GPUs: 1 (200-300), 2 (300-400), 3 (400-600), 4 (600-700), 3 (700-1000): 2200
    # GPU-s over 800 s; GPUs in use 1, 1, 2, 3, 3: 1800
    assert got["saving"] == {"peak_demand_gpus": 4, "peak_used_gpus": 3,
                             "saved_gpus_at_peak": 1, "mean_demand_gpus": 2.75,
                             "mean_used_gpus": 2.25, "saved_gpus_mean": 0.5}
    lines = ranged(200, 1000).splitlines()
    assert lines[2].split()[:3] == ["vision", "0.14", "0.13"] and "without sharing, these " \
        "jobs would have needed 4 GPUs at peak (2.75 on average); they used 3 (2.25): sharing " \
        "saved 1 GPU at peak, 0.50 on average" in lines and "used 0.22 GPU-h of the 0.25 held " \
        "where NVML measured it (89 % busy)" in lines, lines
    # [1000, 2000): #1 100 s x 0.5, #5 600 s, #3 1000 s x 3/7, #7 150 s then 500 s; #7's
    # waits 100 s (from its submit) and 250 s (from its preemption's requeue)
    got = json.loads(ranged(1000, 2000, "--json"))
    total = got["total"]
    assert _seconds(total, "held_gpu_hours", "unmeasured_gpu_hours") == pytest.approx(
        [1728.571429, 1078.571429], abs=0.01)
    assert (total["waits"], total["wait_median_s"], total["wait_p95_s"]) == (2, 100.0, 250.0)
    assert (total["outcomes"]["done"], total["outcomes"]["preempted"], total["running"]) == (
        2, 1, 2)
    # 3 (1000-1100), 3, 2 (1250-1500), 3, 2 (1600-2000) whole GPUs, each on a GPU of its own
    assert (got["saving"]["peak_demand_gpus"], got["saving"]["mean_demand_gpus"],
            got["saving"]["saved_gpus_mean"]) == (3, 2.35, 0.0)
    # a team no longer in the config is reported on its usage, alone: 600 s of a whole GPU
    got = json.loads(ranged(1000, 2000, "--team", "old", "--json"))
    assert [g["key"] for g in got["groups"]] == ["old"] and _seconds(
        got["total"], "held_gpu_hours") == pytest.approx([600], abs=0.01)


def test_a_typo_of_a_team_the_config_no_longer_names_is_said_with_the_close_name(tmp_path,
                                                                                capfd):
    """vision renamed cv in the config: ``--team vision`` is reported on the usage that names
    it, but ``--team visoin`` was "unknown team 'visoin' (known: cv, nlp)" — no close name,
    and a list without the one the admin meant, though the report takes it. The teams the
    range's usage and ended jobs name are known beside the config's."""
    path = str(tmp_path / "store.db")
    t0 = _history(path)
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[teams]]\nname = "cv"\nquota_gpus = 2\n'
                      '[[teams]]\nname = "nlp"\nquota_gpus = 1\n' % path)
    span = ["--since", _at(t0 + 200), "--until", _at(t0 + 1000)]
    code, out, err = in_process(capfd, ["--config", str(config), "report", *span, "--team",
                                        "vision", "--json"])
    assert code == 0 and [g["key"] for g in json.loads(out)["groups"]] == ["vision"], err
    code, out, err = in_process(capfd, ["--config", str(config), "report", *span, "--team",
                                        "visoin"])
    assert (code, out) == (2, "") and "unknown team 'visoin' (did you mean 'vision'? known: " \
        "cv, nlp, old, vision)" in err, err
