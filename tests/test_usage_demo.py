"""End to end: ``fractui demo``'s fleet runs its job stream (local agents, real job processes,
the real scheduler as a child process), then ``fractui report`` pointed at the demo's store is
checked against what is computed here independently — each attempt's slice and charge from the
store's audit of its decisions, its start and end from its host's agent, its wait from the
job's submission or its last requeue — not from the usage records the report reads."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pytest

from fractui.demo import Demo
from fractui.store.model import CANCELLED, DONE, FAILED, PREEMPTED, REQUEUED
from tests.conftest import REPO

# The demo runs until some of its jobs ended and some run (they run 15 to 60 s), and for
# at least MIN_RUN_S; by LONGEST_S it has.
MIN_RUN_S = 30.0
LONGEST_S = 120.0
# What of a run its GPUs' online time may leave uncounted: the lease holder's start and its
# first look, which counts nothing (about 6 s, more on a busy machine), and the time since
# the last write (the demo writes GPU time every 10 s, of the looks made every 5 s): up to
# about 21 s, and 20.6 s was seen.
SLACK_S = 30.0


@dataclass
class Attempt:
    job: int
    attempt: int
    team: str
    charge: float
    host: str
    gpus: Tuple[int, ...]
    queued: float
    start: float
    end: Optional[float]
    outcome: Optional[str]


def attempts_of(demo: Demo, until: float) -> List[Attempt]:
    """Every attempt that started before ``until``, from the store's jobs and audit and the
    agents' job records."""
    store = demo.store
    uid = store.uid
    ran: Dict[str, dict] = {}
    for host, answer in demo.source.fleet.fan_out("job.list", {}, 30).items():
        assert isinstance(answer, dict), (host, answer)
        for rec in answer["jobs"]:
            if rec.get("key", "").startswith("fractui-%s-" % uid):
                ran[rec["key"]] = rec
    out = []
    for job in store.jobs():
        slots: List[dict] = []  # each decision's slot, in order: one per attempt placed
        requeues: List[float] = []
        preempted: List[bool] = []
        asked_preempt = False
        for e in store.audit_log(job.id, limit=10_000):
            if e.action in ("decide", "place"):
                slots.append(dict(e.detail["slot"], at=len(requeues)))
            elif e.action == "preempt":
                asked_preempt = True
            elif e.action == "requeued":
                requeues.append(e.time)
                preempted.append(asked_preempt)
                asked_preempt = False
        for n in range(job.attempt + 1):
            rec = ran.get(job.key(uid).rsplit(".", 1)[0] + ".%d" % n)
            if rec is None or rec.get("started_at") is None or rec["started_at"] >= until:
                continue
            slot = [s for s in slots if s["at"] == n][-1]
            if n < job.attempt:
                end, outcome = requeues[n], PREEMPTED if preempted[n] else REQUEUED
            elif job.state in (DONE, FAILED, CANCELLED):
                end, outcome = job.ended_at, job.state
            else:
                end, outcome = None, None
            if end is not None and end >= until:
                end, outcome = None, None
            queued = job.submitted_at if n == 0 else requeues[n - 1]
            out.append(Attempt(job.id, n, job.team, slot["charge"], slot["host"],
                               tuple(slot["gpus"]), queued, rec["started_at"], end, outcome))
    return out


def nearest_rank(values: List[float], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * p // 100)) - 1]


def _at(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat()


@pytest.fixture
def demo_run():
    """The demo, started, and when it started."""
    demo = Demo(gpus=4, seed=3)
    started = time.time()
    demo.start()
    try:
        yield demo, started
    finally:
        demo.stop()


def test_the_demos_report_is_what_its_jobs_did(demo_run):
    demo, started = demo_run
    while True:  # until some ended, some run
        time.sleep(1)
        until = time.time() - 1
        if until - started < MIN_RUN_S:
            continue
        attempts = attempts_of(demo, until)
        ended = [a for a in attempts if a.outcome is not None]
        if len(ended) >= 2 and len(attempts) > len(ended):
            break
        assert until - started < LONGEST_S, attempts
    since = until - 3600
    run = subprocess.run([sys.executable, "-m", "fractui", "--config",
                          os.path.join(demo.root, "config.toml"), "report", "--since",
                          _at(since), "--until", _at(until), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    groups = {g["key"]: g for g in report["groups"]}
    assert set(groups) == {a.team for a in attempts}
    for team, g in groups.items():
        mine = [a for a in attempts if a.team == team]
        held = sum(a.charge * ((a.end or until) - a.start) for a in mine) / 3600
        assert g["held_gpu_hours"] == pytest.approx(held, abs=1e-6), (team, g, mine)
        waits = [a.start - a.queued for a in mine]
        assert g["waits"] == len(waits)
        assert g["wait_median_s"] == pytest.approx(nearest_rank(waits, 50), abs=1e-3)
        assert g["wait_p95_s"] == pytest.approx(nearest_rank(waits, 95), abs=1e-3)
        outcomes = {o: sum(1 for a in mine if a.outcome == o) for o in g["outcomes"]}
        assert g["outcomes"] == outcomes, (team, g["outcomes"], mine)
        assert g["running"] == sum(1 for a in mine if a.end is None)
    # what sharing saved: brute force over every moment anything started or ended
    moments = sorted({a.start for a in attempts} | {a.end for a in attempts if a.end} |
                     {until})
    peak_demand = peak_used = 0
    for left, right in zip(moments, moments[1:]):
        mid = (left + right) / 2
        on = [a for a in attempts if a.start <= mid < (a.end or until)]
        peak_demand = max(peak_demand, sum(max(1, len(a.gpus)) for a in on))
        peak_used = max(peak_used, len({(a.host, g) for a in on for g in a.gpus}))
    saving = report["saving"]
    assert (saving["peak_demand_gpus"], saving["peak_used_gpus"]) == (peak_demand, peak_used)
    assert saving["saved_gpus_at_peak"] == peak_demand - peak_used
    # use, as the agents sampled it (its plumbing is checked exactly in test_scheduler_usage)
    total = report["total"]
    assert 0 < total["used_gpu_hours"] and 0 < total["memory_gib_hours"]
    # GPU time: the 4 GPUs seen online for the run, but for what SLACK_S leaves uncounted
    online, run_s = report["total"]["online_gpu_hours"], until - started
    assert 4 * (run_s - SLACK_S) / 3600 <= online <= 4 * run_s / 3600, (online, run_s)
    assert 0 <= report["total"]["idle_gpu_hours"] <= online


def test_the_demos_report_command_is_one_a_shell_runs_where_its_path_has_a_space(tmp_path):
    """The command the demo prints, and its report screen shows, to paste into another shell:
    under a TMPDIR with a space (or a quote) in it, ``fractui report --config /tmp/my
    dir/fractui-demo-…/config.toml`` was two words to the shell, and the report refused a
    config ``/tmp/my``. Pasted as shown, it reports the demo's store."""
    root = os.path.join(str(tmp_path), "my dir's")
    os.mkdir(root)
    demo = Demo(gpus=2, seed=3, root=root)
    try:
        run = subprocess.run(["bash", "-c", demo.source.report_command + " --since 1h --json"],
                             capture_output=True, text=True, cwd=REPO, timeout=120,
                             env=dict(os.environ, PYTHONPATH=REPO))
    finally:
        demo.store.close()
    assert run.returncode == 0, (demo.source.report_command, run.stderr)
    assert "groups" in json.loads(run.stdout)
