"""``fractui report`` of one hand-made history, on SQLite and on PostgreSQL, by each grouping
a job has (team, queue, user, model, GPU) and its text's headline, against numbers worked out
by hand in this file's comments, not by a second implementation of the report.

Times are hours from T, ten hours before the store's now; the range is [T + 1, T + 5). No GPU
time is kept (the GPUs' own hours are test_report_truth's): its numbers are the jobs'.

    job  queue    team/user   slot                              start -> end        util  mem
    1    quarter  vision/ann  h1 gpu0 share 0.25                0   -> 2 done        40 %  1 GiB
    2    half     vision/bo   h1 gpu0 share 0.5                 1.5 -> 6 done        80 %  2 GiB
    3    mig      nlp/cy      h2 gpu0 3g.40gb (3/7)             2   -> runs on       MIG   10 GiB
    4    pair     nlp/cy      h3 gpu0 and gpu1, whole (2)       3   -> 4 failed     150 %  4 GiB
    5    whole    vision/ann  h1 gpu1, whole                    0.5 -> its host lost,  50 %  8 GiB
                                                                       requeued now

In the range: job 1 1 h, job 2 3.5 h, job 3 3 h, job 4 1 h, job 5 4 h (held until the requeue,
now, after the range: running at its end, its outcome in no range of these). Waits: jobs 2, 3
and 4 start in it, each submitted now, after its start: a wait of 0 (never below).

    held   = 0.25 + 0.5*3.5 + 3/7*3 + 2*1 + 1*4  = 9.285714  (unmeasured: job 3's 1.285714)
    used   = 0.4*1 + 0.8*3.5 + 1.5*1 + 0.5*4     = 6.7
    memory = 1*1 + 2*3.5 + 10*3 + 4*1 + 8*4      = 74 GiB-h

Whole GPUs without sharing (demand) against GPUs in use, over [1, 5):
    [1, 1.5) jobs 1, 5: 2 / 2;  [1.5, 2) + job 2: 3 / 2 (on job 1's GPU);  [2, 3) job 3 for job 1:
    3 / 3;  [3, 4) + job 4 (2 GPUs): 5 / 5;  [4, 5): 3 / 3
    peak 5 / 5; mean (1 + 1.5 + 3 + 5 + 3) / 4 = 3.375 / (1 + 1 + 3 + 5 + 3) / 4 = 3.25
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Dict, Optional

import pytest

from fractui.store import open_store
from fractui.store.model import DONE, FAILED, RUNNING, Slot
from tests.cli_run import in_process, leaks
from tests.test_report_truth import sampled

H = 3600.0
L4, A100 = "NVIDIA L4", "NVIDIA A100-SXM4-80GB"
PLAN = [  # (queue, team, user, slot, model, start, end or None, outcome, util, MiB)
    ("quarter", "vision", "ann", Slot("h1", (0,), None, None, 5758, 0.25), L4, 0, 2, DONE,
     40, 1024),
    ("half", "vision", "bo", Slot("h1", (0,), None, None, 11517, 0.5), L4, 1.5, 6, DONE, 80,
     2048),
    ("mig", "nlp", "cy", Slot("h2", (0,), "3g.40gb", 4, None, 3 / 7), A100, 2, None, None,
     None, 10240),
    ("pair", "nlp", "cy", Slot("h3", (0, 1), None, None, None, 2.0), None, 3, 4, FAILED, 150,
     4096),
    ("whole", "vision", "ann", Slot("h1", (1,), None, None, None, 1.0), L4, 0.5, None, None,
     50, 8192),
]
OUTCOMES0 = {"done": 0, "failed": 0, "cancelled": 0, "requeued": 0, "preempted": 0, "late": 0}


def _group(held: float, used: Optional[float], unmeasured: float, memory: float, waits: int,
           running: int, **outcomes: int) -> Dict:
    return {"held_gpu_hours": round(held, 6), "used_gpu_hours": used,
            "unmeasured_gpu_hours": round(unmeasured, 6), "memory_gib_hours": memory,
            "unsampled_memory_gpu_hours": 0.0, "unsampled_memory_attempts": 0,  # all sampled
            "waits": waits, "wait_median_s": 0.0 if waits else None,
            "wait_p95_s": 0.0 if waits else None, "outcomes": dict(OUTCOMES0, **outcomes),
            "running": running, "online_gpu_hours": None, "held_online_gpu_hours": None,
            "idle_gpu_hours": None}


MIG_H = 3 / 7 * 3
VISION = _group(6.0, 5.2, 0, 40.0, 1, 2, done=1)
NLP = _group(2 + MIG_H, 1.5, MIG_H, 34.0, 2, 1, failed=1)
EXPECTED = {
    "team": {"vision": VISION, "nlp": NLP},
    "queue": {"quarter": _group(0.25, 0.4, 0, 1.0, 0, 0, done=1),
              "half": _group(1.75, 2.8, 0, 7.0, 1, 1),
              "mig": _group(MIG_H, None, MIG_H, 30.0, 1, 1),
              "pair": _group(2.0, 1.5, 0, 4.0, 1, 0, failed=1),
              "whole": _group(4.0, 2.0, 0, 32.0, 0, 1)},
    "user": {"ann": _group(4.25, 2.4, 0, 33.0, 0, 1, done=1),
             "bo": _group(1.75, 2.8, 0, 7.0, 1, 1), "cy": NLP},
    "model": {L4: _group(6.0, 5.2, 0, 40.0, 1, 2, done=1),
              A100: _group(MIG_H, None, MIG_H, 30.0, 1, 1),
              "(none)": _group(2.0, 1.5, 0, 4.0, 1, 0, failed=1)},
    "gpu": {"h1 gpu0": _group(2.0, 3.2, 0, 8.0, 1, 1, done=1),
            "h1 gpu1": _group(4.0, 2.0, 0, 32.0, 0, 1),
            "h2 gpu0": _group(MIG_H, None, MIG_H, 30.0, 1, 1),
            "h3 gpu0": _group(1.0, 0.75, 0, 2.0, 1, 0, failed=1),
            "h3 gpu1": _group(1.0, 0.75, 0, 2.0, 1, 0, failed=1)},
}
TOTAL = _group(8 + MIG_H, 6.7, MIG_H, 74.0, 3, 3, done=1, failed=1)


@pytest.fixture
def history(store_url, tmp_path):
    """The history played through the store's own transitions; the config naming its store,
    and T."""
    store = open_store(store_url)
    try:
        t = math.floor(store.now()) - 10 * H
        for queue, team, user, slot, model, start, end, outcome, util, mib in PLAN:
            job = store.submit(queue, team, "j", ["x"], {}, "%s@laptop" % user)
            store.place(job.id, slot, "sched", "fits")
            store.started(job.id, "a%d" % job.id, t + start * H, "sched", "started",
                          model=model)
            took = sampled(util, mib)
            if end is not None:
                store.ended(job.id, (RUNNING,), outcome, None, "sched", outcome, "end",
                            ended_at=t + end * H, sampled=took)
            elif queue == "whole":
                store.requeue(job.id, (RUNNING,), "sched", "its host was lost",
                              stale_on=slot.host, sampled=took)
            else:
                store.keep_usage({(job.id, 0): took})
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n' % store_url)
    return config, t


def _rounded(value: object) -> object:
    """``value`` with every number to 6 places, as --json rounds them (pytest.approx does not
    compare nested dicts)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 6) if isinstance(value, float) else value


def _report(capfd, history, *argv: str) -> str:
    config, t = history
    at = [datetime.datetime.fromtimestamp(t + h * H).isoformat() for h in (1, 5)]
    code, out, err = in_process(capfd, ["--config", str(config), "report", "--since", at[0],
                                        "--until", at[1], *argv])
    assert code == 0 and not leaks(err), err
    return out


@pytest.mark.parametrize("by", sorted(EXPECTED))
def test_each_grouping_reads_as_worked_by_hand_on_either_store(history, capfd, by):
    got = json.loads(_report(capfd, history, "--by", by, "--json"))
    groups = {g.pop("key"): g for g in got["groups"]}
    assert groups == _rounded(EXPECTED[by])
    total = dict(got["total"])
    assert total.pop("key") == "total" and total == _rounded(TOTAL)
    assert got["saving"] == _rounded({
        "peak_demand_gpus": 5, "peak_used_gpus": 5, "saved_gpus_at_peak": 0,
        "mean_demand_gpus": 3.375, "mean_used_gpus": 3.25, "saved_gpus_mean": 0.125})
    assert got["ended_unstarted"] == {"cancelled": 0, "failed": 0}
    assert got["waiting_now"] is None  # (a range that ended before now)


def test_the_headline_says_the_hand_worked_saving(history, capfd):
    out = _report(capfd, history)
    assert "without sharing, these jobs would have needed 5 GPUs at peak (3.38 on average); " \
        "they used 5 (3.25): sharing saved 0 GPUs at peak, 0.13 on average" in out, out
    assert "used 6.70 GPU-h of the 8.00 held where NVML measured it (84 % busy)" in out, out
    assert "NO MEASURE: GPU-hours held where NVML gives no utilisation (MIG slices, or not " \
        "sampled yet): 1.29 of 9.29" in out, out
