"""The scheduler service end to end: a real SQLite store, simulated hosts over the local
transport (real agent daemons, real job processes), the scheduler's passes driven by the test."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from typing import Dict, Iterator, Optional

import pytest

from fractui.config import MetricsSettings, QueueConfig, TeamConfig
from fractui.sched.queueing import waits_at_quota
from fractui.scheduler import Scheduler
from fractui.store import Slot, SqliteStore, open_store
from fractui.words import NO_SCHEDULER
from tests import localfleet
from tests.cli_run import closed_port, reaped
from tests.conftest import REPO, stop_host
from tests.localfleet import POLITE, running, sleeper, wait
from tests.test_job_supervision import fill

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)


def test_a_team_within_quota_is_served_before_a_team_over_it(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE],
                    [TeamConfig("vision", quota_gpus=1), TeamConfig("nlp", quota_gpus=1)])
    early = [f.submit("whole", "nlp") for _ in range(3)]  # nlp came first, with three jobs
    late = f.submit("whole", "vision")
    f.until(lambda: f.states()[late.id] == "running")
    states = f.states()
    assert [states[j.id] for j in early] == ["running", "pending", "pending"]
    waiting = f.store.get(early[1].id)
    assert waiting.reason == "team nlp is at its quota (1.00 of 1.00 GPUs held)"
    assert {j.slot.charge for j in f.store.jobs(["running"])} == {1.0}


def test_a_job_at_its_quota_beside_a_free_gpu_says_its_team_does_not_borrow(local_fleet):
    """An L4 stands idle and the job waits: its WHY says the GPU is free but its team may not
    borrow (over_quota off), not only "at its quota" — what a researcher looking at an idle
    GPU in fractui status asks."""
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE], [TeamConfig("nlp", quota_gpus=1)])
    first, second = f.submit("whole", "nlp"), f.submit("whole", "nlp")
    f.until(lambda: f.states()[first.id] == "running" and
            f.store.get(second.id).reason is not None)
    held = f.store.get(first.id).slot.gpus[0]
    assert f.store.get(second.id).reason == (
        "team nlp is at its quota (1.00 of 1.00 GPUs held); gpu-a gpu%d 23034 MiB is free, but the "
        "team does not borrow past its quota (its over_quota is off)" % (1 - held))


def test_a_job_bigger_than_the_room_its_team_has_left_says_how_much_is_left(local_fleet):
    """A whole GPU asked with 0.25 of a 1-GPU quota held: "at its quota (0.25 of 1.00 GPUs
    held)" alone reads as a wait for nothing to a researcher, who sees 0.75 still hers; the
    reason says what the job's slot charges against what is left."""
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="quarter", gpu=0.25), WHOLE],
                    [TeamConfig("nlp", quota_gpus=1)])
    small = f.submit("quarter", "nlp")
    f.until(lambda: f.states()[small.id] == "running")
    big = f.submit("whole", "nlp")
    f.until(lambda: f.store.get(big.id).reason is not None)
    free = 1 - f.store.get(small.id).slot.gpus[0]
    assert f.store.get(big.id).reason == (
        "team nlp has too little of its quota left (0.25 of 1.00 GPUs held); its slot, gpu-a "
        "gpu%d 23034 MiB, "
        "charges 1.00: more than the 0.75 left; the slot is free, but the team does not borrow "
        "past its quota (its over_quota is off)" % free)


def test_a_team_with_room_left_is_not_said_to_be_at_its_quota(local_fleet):
    """2.00 of a 2.50-GPU quota held and a whole GPU asked: the team is not at its quota, it
    has 0.50 left that the job does not fit, and the reason says so. The words are the same
    pass after pass while nothing changes (the store is not written for nothing), and they
    read as a wait for the team's quota (not starved by the fleet)."""
    f = local_fleet({"gpu-a": "3xL4"}, [WHOLE], [TeamConfig("vision", quota_gpus=2.5)])
    first, second = f.submit("whole", "vision"), f.submit("whole", "vision")
    third = f.submit("whole", "vision")
    f.until(lambda: f.states()[second.id] == "running" and
            f.store.get(third.id).reason is not None)
    free = ({0, 1, 2} - {f.store.get(j.id).slot.gpus[0] for j in (first, second)}).pop()
    reason = f.store.get(third.id).reason
    assert reason == (
        "team vision has too little of its quota left (2.00 of 2.50 GPUs held); its slot, "
        "gpu-a gpu%d 23034 MiB, charges 1.00: more than the 0.50 left; the slot is free, but "
        "the team does not borrow past its quota (its over_quota is off)" % free)
    assert waits_at_quota(reason)
    f.scheduler.step()
    assert f.store.get(third.id).reason == reason


def test_a_job_of_several_gpus_says_no_host_has_that_many_free_not_that_no_gpu_has_room(
        local_fleet):
    """Two L4s stand idle, on two hosts, and a job of 2 GPUs waits: "no GPU in the fleet has
    a free slice for it" is false of each idle GPU the researcher sees in fractui status; what
    holds it back is that a job's GPUs are on one host."""
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xL4"}, [WHOLE, QueueConfig(name="two", gpus=2)])
    held = f.submit("whole")
    f.until(lambda: f.states()[held.id] == "running")
    host = f.store.get(held.id).slot.host
    assert host == "gpu-a"  # where it packs best: gpu-b alone could never hold the pair
    pair = f.submit("two")
    f.until(lambda: f.store.get(pair.id).reason is not None)
    assert f.store.get(pair.id).reason == (
        "no room: a job's GPUs are all on one host and of one model, and no host has 2 such "
        "GPUs free for it at once")


def test_a_job_of_several_gpus_takes_gpus_of_one_model_never_an_a100_beside_an_l4(
        local_fleet, store_url):
    """gpu-a has an A100 in MIG mode and an L4, idle; gpu-b, two L4s, is cordoned. A job of 2
    GPUs books one size of memory on each: it waits, saying why, and the A100 keeps its MIG
    mode (no reset for a launch the L4 would refuse); uncordoned, it runs on gpu-b's pair."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig,1xL4", "gpu-b": "2xL4"},
                    [QueueConfig(name="two", gpus=2)], store_url=store_url)
    f.store.cordon("gpu-b", None, "cordon", "ops@head", "")
    pair = f.submit("two")
    f.until(lambda: f.store.get(pair.id).reason is not None)
    for _ in range(3):
        f.scheduler.step()
    assert (f.store.get(pair.id).state, f.store.get(pair.id).reason) == (
        "pending", "no room: a job's GPUs are all on one host and of one model, and no host "
        "has 2 such GPUs in service free for it at once (out of service: gpu-b)")
    assert [g["mig_mode"] for g in f.fleet.session("gpu-a").call("inventory")["gpus"]] == [
        True, False]
    f.store.uncordon("gpu-b", None, "ops@head", "")
    f.until(lambda: f.states()[pair.id] == "running")
    assert (f.store.get(pair.id).slot.host, f.store.get(pair.id).slot.gpus) == ("gpu-b", (0, 1))


def test_a_job_whose_slot_charges_more_than_its_teams_whole_quota_says_so(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="10g", memory_gib=10)],
                    [TeamConfig("nlp", quota_gpus=0.4)])
    job = f.submit("10g", "nlp")
    f.until(lambda: f.store.get(job.id).reason is not None)
    assert f.store.get(job.id).reason == (
        "team nlp has too little of its quota left (0.00 of 0.40 GPUs held); its slot, gpu-a "
        "gpu0 10240 MiB, "
        "charges 0.45: more than the whole quota")


def test_a_job_whose_best_slot_charges_past_its_quota_takes_one_within_it(local_fleet):
    """10 GiB charges 0.45 of an L4, where it packs best, and 0.13 of an A100: a team with 0.4
    of quota gets the A100's, not a wait for good."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xA100-80GB"},
                    [QueueConfig(name="10g", memory_gib=10)], [TeamConfig("nlp", quota_gpus=0.4)])
    job = f.submit("10g", "nlp")
    f.until(lambda: f.store.get(job.id).state == "running")
    slot = f.store.get(job.id).slot
    assert (slot.host, slot.profile, slot.memory_mib, slot.charge) == ("gpu-b", None, 10240, 0.125)


def test_a_flooding_teams_waiting_jobs_never_keep_another_team_from_preempting_its_borrowed(
        local_fleet, store_url):
    """Speech floods: one quarter within its 0.3 GPUs, one borrowed, four waiting of four
    sizes that no room would let within its quota, ranked first (its share is the lowest).
    Vision, within its quota, finds no room for a quarter: it preempts speech's borrowed
    quarter, however many of speech's jobs wait ahead of it."""
    sizes = {"quarter": 0.25, "fifth": 0.2, "eighth": 0.125, "tenth": 0.1}
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name=q, gpu=g) for q, g in sizes.items()],
                    [TeamConfig("vision", quota_gpus=2),
                     TeamConfig("speech", quota_gpus=0.3, over_quota=True)],
                    store_url=store_url)
    own = [f.submit("quarter", "vision") for _ in range(2)]
    f.until(lambda: running(f) == 2)
    speech = [f.submit("quarter", "speech") for _ in range(2)]
    f.until(lambda: running(f) == 4)
    lent = next(j for j in speech if f.store.get(j.id).preemptible)
    flood = [f.submit(q, "speech") for q in sizes]
    needy = f.submit("quarter", "vision")
    f.until(lambda: f.states()[needy.id] == "running")
    assert f.store.get(lent.id).state == "pending"
    assert {f.states()[j.id] for j in own + flood} == {"running", "pending"}
    assert [f.states()[j.id] for j in flood] == ["pending"] * 4


def test_waiting_jobs_no_preemption_helps_never_keep_a_later_one_from_preempting(
        local_fleet, store_url):
    """Vision fills gpu-b, and four more of its jobs wait for gpu-b alone, where nothing is
    borrowed; speech borrows the rest of gpu-a. Vision's next quarter, which may go anywhere,
    preempts one of speech's borrowed quarters, however many jobs alike wait ahead of it."""
    queues = [QueueConfig(name="quarter", gpu=0.25),
              QueueConfig(name="b", gpu=0.25, hosts=("gpu-b",))]
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, queues,
                    [TeamConfig("vision", quota_gpus=3),
                     TeamConfig("speech", quota_gpus=0.25, over_quota=True)],
                    store_url=store_url)
    [f.submit("b", "vision") for _ in range(4)]
    f.until(lambda: running(f) == 4)
    lent = [f.submit("quarter", "speech") for _ in range(4)]
    f.until(lambda: running(f) == 8)
    behind = [f.submit("b", "vision") for _ in range(4)]
    needy = f.submit("quarter", "vision")
    f.until(lambda: f.states()[needy.id] == "running")
    assert [f.states()[j.id] for j in lent].count("pending") == 1
    assert [f.states()[j.id] for j in behind] == ["pending"] * 4


def test_over_quota_jobs_borrow_idle_capacity_and_are_marked_preemptible(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE],
                    [TeamConfig("vision", quota_gpus=1),
                     TeamConfig("nlp", quota_gpus=1, over_quota=True)])
    jobs = [f.submit("whole", "nlp") for _ in range(2)]
    f.until(lambda: all(s == "running" for s in f.states().values()))
    first, second = (f.store.get(j.id) for j in jobs)
    assert (first.preemptible, second.preemptible) == (False, True)
    assert {first.slot.gpus, second.slot.gpus} == {(0,), (1,)}


def test_a_team_within_quota_preempts_a_borrower_with_grace_and_the_borrower_is_requeued(
        local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [WHOLE],
                    [TeamConfig("vision", quota_gpus=1),
                     TeamConfig("nlp", quota_gpus=1, over_quota=True)])
    own = f.submit("whole", "nlp", sleeper(600))
    borrower = f.submit("whole", "nlp", POLITE)
    f.until(lambda: set(f.states().values()) == {"running"})
    f.until_up(borrower)
    assert f.store.get(borrower.id).preemptible
    victim_host_job = f.store.get(borrower.id)
    needy = f.submit("whole", "vision")
    f.until(lambda: f.states()[needy.id] == "running")
    back = f.store.get(borrower.id)
    assert (back.state, back.attempt) == ("pending", 1)
    why = "preempted: team vision (within quota) needs room for job %d" % needy.id
    requeued = [e for e in f.store.audit_log(borrower.id) if e.action == "requeued"]
    assert [e.why for e in requeued] == [why]
    assert back.reason.startswith("team nlp is at its quota")  # and now waits to borrow again
    assert f.store.get(own.id).state == "running"  # within its quota: never preempted
    assert f.store.get(needy.id).slot.gpus == victim_host_job.slot.gpus
    # SIGTERM first, and the job had its grace to finish by itself
    ended = next(j for j in f.agent_jobs() if j["id"] == victim_host_job.agent_job)
    assert ended["state"] == "killed" and "preempted" in ended["reason"]
    logs = f.fleet.session("gpu-a").call("job.logs", {"job": victim_host_job.agent_job})
    assert logs["lines"] == ["up", "got SIGTERM"]
    actions = [(e.action, e.job) for e in f.store.audit_log()]
    assert ("preempt", borrower.id) in actions and ("requeued", borrower.id) in actions


def test_weighted_fair_share_between_teams_within_quota(local_fleet):
    quarter = QueueConfig(name="quarter", gpu=0.25)
    f = local_fleet({"gpu-a": "2xL4"}, [quarter],
                    [TeamConfig("big", quota_gpus=10, weight=2),
                     TeamConfig("small", quota_gpus=10, weight=1)])
    for _ in range(8):  # both teams ask for more than the 8 quarters there are
        f.submit("quarter", "big")
        f.submit("quarter", "small")
    f.until(lambda: list(f.states().values()).count("running") == 8)
    running = f.store.jobs(["running"])
    by_team = {t: sum(1 for j in running if j.team == t) for t in ("big", "small")}
    assert by_team == {"big": 5, "small": 3}  # 2:1 of 8 slices is 5 1/3 : 2 2/3


def test_a_manual_placement_runs_exactly_where_it_was_recorded(local_fleet):
    mig = QueueConfig(name="small", mig="1g.10gb")
    f = local_fleet({"gpu-a": "1xA100-80GB:mig", "gpu-b": "1xL4"}, [mig])
    job = f.submit("small")
    placed = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "1g.10gb", "--start",
                       "3")
    assert placed.returncode == 0, placed.stderr
    assert f.store.get(job.id).manual
    f.until(lambda: f.states()[job.id] == "running")
    record = next(j for j in f.agent_jobs() if j["key"] == f.store.get(job.id).key(f.store.uid))
    assert (record["host"], record["gpus"], record["mig"]["profile"], record["mig"]["start"]) == (
        "gpu-a", [0], "1g.10gb", 3)
    audit = [e for e in f.store.audit_log(job.id) if e.action == "place"]
    assert audit and audit[0].why == "placed by hand on gpu-a gpu0 1g.10gb at slot 3"
    # the scheduler made no decision of its own for it
    assert not [e for e in f.store.audit_log(job.id) if e.action == "decide"]


@pytest.mark.parametrize("idle", [False, True], ids=["empty", "beside an idle instance"])
def test_a_manual_placement_that_leaves_the_start_open_runs_and_others_are_placed(local_fleet,
                                                                                  idle):
    """`place JOB HOST GPU --profile P` leaves the start to the live GPU: until it is launched
    a pass books it where the agent's planner puts it. (Every pass failed on such a decision,
    so it was never launched and nothing else was placed.)"""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="3g", mig="3g.40gb")])
    if idle:
        f.fleet.session("gpu-a").call("mig.apply", {"gpu": 0, "profile": "3g.40gb", "start": 4})
    job = f.submit("3g")
    placed = f.fractui("place", str(job.id), "gpu-a", "0", "--profile", "3g.40gb")
    assert placed.returncode == 0, placed.stderr
    assert f.store.get(job.id).slot.start is None
    other = f.submit("3g")
    f.until(lambda: [f.states()[j.id] for j in (job, other)] == ["running", "running"])
    records = [next(r for r in f.agent_jobs() if r["key"] == f.store.get(j.id).key(f.store.uid))
               for j in (job, other)]
    assert sorted(r["mig"]["start"] for r in records) == [0, 4]


def test_a_manual_placement_the_gpu_cannot_take_goes_back_to_its_queue_with_the_reason(
        local_fleet):
    f = local_fleet({"gpu-b": "1xL4"}, [QueueConfig(name="small", mig="1g.10gb")])
    job = f.submit("small")
    f.store.place(job.id, Slot("gpu-b", (0,), "1g.10gb", 0), "test", "by hand", manual=True)
    f.until(lambda: f.store.get(job.id).attempt == 1)
    back = f.store.get(job.id)
    assert back.state == "pending"
    words = "gpu-b: GPU 0 of gpu-b has MIG off: it takes memory shares, not 1g.10gb"
    assert back.reason == "refused by " + words
    assert [(r.host, r.kind) for r in back.refusals] == [("gpu-b", "capacity")]
    f.scheduler.step()  # a later pass finds no room elsewhere, and keeps the refusal's words
    assert f.store.get(job.id).reason == ("no room outside the hosts that refused it lately "
                                          "(gpu-b); last refused by " + words)


def test_submit_refuses_what_no_gpu_could_ever_hold_and_queues_the_rest(local_fleet):
    # (what no GPU of a sim spec could hold is refused when the config loads: test_cli.py)
    f = local_fleet({"gpu-b": "2xL4"},
                    [QueueConfig(name="many-cpus", gpu=0.5, cpus=4096),
                     QueueConfig(name="much-ram", gpus=1, memory=65536),
                     QueueConfig(name="half", gpu=0.5, cpus=1)])
    f.scheduler.step()  # the leader keeps what each host could ever hold: submit judges by it
    refused = f.fractui("submit", "--queue", "many-cpus", "--", "python", "train.py")
    assert refused.returncode == 2
    path = f.write_config()
    at = open(path).read().split("\n").index('name = "many-cpus"') + 2  # its gpu = 0.5
    assert refused.stderr == (
        "fractui: %s:%d: no GPU in the fleet could ever hold what queue many-cpus asks for "
        "(0.5 GPU, isolation any, 4096 CPUs); the fleet has 2x L4; at most %g CPUs and %d GiB "
        "RAM on a host\n" % (path, at, f.fleet.session("gpu-b").status.hello["cpus"],
                             f.fleet.session("gpu-b").status.hello["memory_mib"] // 1024))
    assert f.fractui("submit", "--queue", "much-ram", "--", "x").returncode == 2
    assert f.store.jobs() == []  # nothing recorded for a refused submit
    done = f.fractui("submit", "--queue", "half", "--name", "n1", "--json", "--", "python",
                     "train.py", "--lr", "0.1")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["state"], record["argv"], record["name"]) == (
        "pending", ["python", "train.py", "--lr", "0.1"], "n1")
    assert f.store.get(record["id"]).request["gpu"] == 0.5
    unknown = f.fractui("submit", "--queue", "nope", "--", "x")
    assert unknown.returncode == 2 and (
        "unknown queue 'nope' (known: many-cpus, much-ram, half)" in unknown.stderr)


def _submit(config, queue: str) -> subprocess.CompletedProcess:
    """``fractui submit`` to ``queue`` with a config file the test wrote."""
    return subprocess.run([sys.executable, "-m", "fractui", "--config", str(config), "submit",
                           "--queue", queue, "--", "x"], capture_output=True, text=True,
                          cwd=localfleet.REPO, timeout=120)


def _decisions_by(store: SqliteStore) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for e in store.audit_log(limit=10_000):
        if e.action == "decide":
            out[e.actor] = out.get(e.actor, 0) + 1
    return out


def test_two_schedulers_on_one_store_only_one_places_and_the_other_takes_over(local_fleet):
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="quarter", gpu=0.25)], lease_s=2.0)
    first = f.scheduler_process("one")
    with reaped(first):
        wait(lambda: f.store.lease_holder() is not None, f.states, alive=first)
        second = f.scheduler_process("two")
        with reaped(second, signal.SIGTERM):
            for _ in range(3):
                f.submit("quarter")
            wait(lambda: running(f) == 3, f.states)
            assert _decisions_by(f.store) == {"one": 3}
            assert f.store.lease_holder()[0] == "one"
            first.send_signal(signal.SIGKILL)  # no clean release: the lease must expire
            first.wait(10)
            for _ in range(2):
                f.submit("quarter")
            wait(lambda: running(f) == 5, f.states)
            assert _decisions_by(f.store) == {"one": 3, "two": 2}
            assert f.store.lease_holder()[0] == "two"


def test_a_scheduler_killed_mid_way_leaves_every_job_placed_once(local_fleet):
    f = local_fleet({"gpu-a": "2xL4", "gpu-b": "1xA100-80GB:mig"},
                    [QueueConfig(name="quarter", gpu=0.25)], lease_s=1.0)
    jobs = [f.submit("quarter") for _ in range(10)]
    run = f.scheduler_process("first")
    wait(lambda: running(f) > 0, f.states, alive=run, step_s=0.01)
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    at_kill = f.states()
    assert set(at_kill.values()) - {"running"}, "all done before the kill: not mid-way"
    again = f.scheduler_process("second")
    with reaped(again, signal.SIGTERM):
        wait(lambda: running(f) == len(jobs), f.states, timeout_s=60, alive=again)
    records = [r for r in f.agent_jobs() if r["key"].startswith("fractui-%s-" % f.store.uid)]
    keys = sorted(r["key"] for r in records)
    assert keys == sorted(f.store.get(j.id).key(f.store.uid) for j in jobs)  # one launch each
    assert {r["state"] for r in records} == {"running"}


def test_cancel_requeue_jobs_logs_and_audit_through_the_cli(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    assert f.fractui("jobs").stdout == "no active jobs (--all lists ended ones too)\n"
    talk = [sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(600)"]
    first, second, third = (f.submit("quarter", argv=talk) for _ in range(3))
    f.until(lambda: set(f.states().values()) == {"running"})
    assert f.fractui("cancel", str(first.id)).stdout == "%d stopping (the scheduler stops it)\n" % (
        first.id)
    requeued = f.fractui("requeue", str(second.id))
    assert requeued.returncode == 0, requeued.stderr
    f.until(lambda: f.states()[first.id] == "cancelled"
            and f.store.get(second.id).attempt == 1 and f.states()[second.id] == "running")
    asked = [e for e in f.store.audit_log(limit=1000) if e.action == "cancel"]
    again = f.fractui("cancel", str(first.id))  # a retry: answered as the first, nothing added
    assert (again.returncode, again.stdout, again.stderr) == (0, "%d cancelled\n" % first.id, "")
    assert [e for e in f.store.audit_log(limit=1000) if e.action == "cancel"] == asked
    assert f.fractui("cancel", "gpu-a/j1").returncode == 2  # host jobs are stopped with stop
    killed = {r["key"]: r for r in f.agent_jobs()}
    assert killed[f.store.get(first.id).key(f.store.uid)]["reason"].startswith("cancelled by ")
    assert killed[second.key(f.store.uid)]["state"] == "killed"  # attempt 0, stopped
    assert killed[f.store.get(second.id).key(f.store.uid)]["state"] == "running"  # attempt 1

    listed = json.loads(f.fractui("jobs", "--json").stdout)["jobs"]
    assert [(j["ref"], j["state"]) for j in listed] == [
        (str(second.id), "running"), (str(third.id), "running")]
    everything = json.loads(f.fractui("jobs", "--all", "--json").stdout)["jobs"]
    assert [j["ref"] for j in everything] == [str(first.id), str(second.id), str(third.id)]
    wait(lambda: f.fractui("logs", str(third.id)).stdout == "hello\n", f.states)

    audit = json.loads(f.fractui("audit", str(second.id), "--json").stdout)["audit"]
    assert [e["action"] for e in audit] == ["submit", "decide", "launch", "requeue", "requeued",
                                           "decide", "launch"]
    assert audit[3]["why"].startswith("requeued by ")
    text = f.fractui("audit").stdout
    assert "cancel" in text and "lease" in text
    assert f.fractui("preempt", str(third.id)).returncode == 0
    f.until(lambda: f.store.get(third.id).attempt == 1 and f.states()[third.id] == "running")
    assert [e.action for e in f.store.audit_log(third.id)][-4:] == [
        "preempt", "requeued", "decide", "launch"]


def test_following_the_logs_of_a_waiting_job_waits_for_it_to_start(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE])
    job = f.submit("whole", argv=[sys.executable, "-c", "print('hello', flush=True)"])
    follow = subprocess.Popen([sys.executable, "-m", "fractui", "--config", f.write_config(),
                               "logs", str(job.id), "-f"], cwd=localfleet.REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follow.stderr.readline() == "fractui: job %d is pending; waiting for it to " \
                                           "start\n" % job.id  # it waits, rather than refuse
        f.until(lambda: f.states()[job.id] == "done")
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert (follow.returncode, out) == (0, "hello\n"), err
    # (found started before it printed: it says so, then follows)
    assert re.fullmatch(r"(fractui: job %d has printed nothing yet \(running on gpu-a since "
                        r"[-\d]+ [:\d]+\); following it\n)?fractui: job %d ended: exited 0\n"
                        % (job.id, job.id), err), err


def test_submit_queues_what_only_a_host_the_store_keeps_nothing_of_might_hold(local_fleet):
    f = local_fleet({"gpu-b": "2xL4"}, [QueueConfig(name="many-cpus", gpu=0.5, cpus=4096),
                                        QueueConfig(name="b-only", gpu=0.5, cpus=4096,
                                                    hosts=("gpu-b",))])
    f.scheduler.step()  # the leader keeps what gpu-b could ever hold
    with socket.socket() as s:  # a loopback port nothing listens on: a host never kept
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = f.tmp / "with-a-down-host.toml"
    config.write_text(open(f.write_config()).read() + "[ssh]\nconnect_timeout = 2\n"
                      "[[hosts]]\nname = \"gpu-down\"\nhost = \"127.0.0.1\"\nport = %d\n" % port)

    queued = _submit(config, "many-cpus")
    assert queued.returncode == 0, queued.stderr
    assert queued.stderr.startswith("fractui: warning: no GPU of the hosts heard from could "
                                    "ever hold what queue many-cpus asks for (0.5 GPU, ")
    assert queued.stderr.endswith("; queued all the same: the store keeps nothing of "
                                  "gpu-down\n")
    assert [j.queue for j in f.store.jobs()] == ["many-cpus"]
    only_b = _submit(config, "b-only")  # the host never kept is not one it may use
    assert only_b.returncode == 2 and "no GPU in the fleet could ever hold" in only_b.stderr
    assert len(f.store.jobs()) == 1


def test_submit_checks_against_the_kept_inventory_without_reaching_the_fleet(local_fleet):
    f = local_fleet({"gpu-b": "2xL4"}, [QueueConfig(name="half", gpu=0.5),
                                        QueueConfig(name="many-cpus", gpu=0.5, cpus=4096)])
    # The same host, but at a state dir no agent runs in: reaching it would start one there.
    unstarted = f.tmp / "unstarted"
    config = f.tmp / "elsewhere.toml"
    config.write_text(open(f.write_config()).read().replace(
        json.dumps(f.config.hosts[0].state_dir), json.dumps(str(unstarted))))
    # Nothing kept yet: queued, the check left to the scheduler, no host reached.
    first = _submit(config, "many-cpus")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ("fractui: note: the store keeps no inventory of gpu-b yet (a "
                            "scheduler records a host once it reaches it), so whether a GPU "
                            "can hold "
                            "queue many-cpus is left to the scheduler: once one has looked "
                            "at the job, fractui jobs says why it waits\n"
                            "fractui: %s\n" % NO_SCHEDULER)  # (none has run yet)
    f.store.ended(f.store.jobs()[0].id, ("pending",), "cancelled", "clean up", "test",
                  "clean up", "cancel")
    f.scheduler.step()  # the leader keeps what each host could ever hold
    assert [g["name"] for g in f.store.inventory()["gpu-b"]["gpus"]] == ["NVIDIA L4"] * 2
    seen = sqlite3.connect(f.store.path).execute(
        "SELECT seen_at FROM inventory").fetchall()
    f.scheduler.step()
    assert sqlite3.connect(f.store.path).execute(
        "SELECT seen_at FROM inventory").fetchall() == seen  # unchanged facts: not rewritten
    try:
        queued = _submit(config, "half")
        assert (queued.returncode, queued.stderr) == (0, "")
        refused = _submit(config, "many-cpus")  # refused on what the lease holder kept
        assert refused.returncode == 2 and "the fleet has 2x L4" in refused.stderr
        assert not unstarted.exists()  # no host was reached, either time
    finally:
        stop_host(str(unstarted))
    assert [j.queue for j in f.store.jobs()] == ["many-cpus", "half"]


def test_failing_passes_are_said_in_the_store_for_jobs_and_the_tui_until_one_goes_through(
        local_fleet, monkeypatch):
    """A pass that fails (a bug of ours: here the placement core raising) places nothing, and
    every pending job would read as waiting for room: the lease holder keeps what fails its
    passes in the store, where it stays while they fail (five turns watched), `jobs` and the
    TUI's header say it, and the next pass that goes through clears it. (A scheduler that has
    just taken the lease.)"""
    from fractui.scheduler import service
    from fractui.tui.header import Header
    from fractui.words import failing_passes
    from tests.tui_frozen import pilot_test, screen_lines
    from tests.tui_live import live_app, until

    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    real = service.schedule

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the placement core")

    monkeypatch.setattr(service, "schedule", broken)
    job = f.submit("quarter")
    f.scheduler.stop(release=True)
    turns: list = []
    store = open_store(f.config.store.url)
    second = Scheduler(f.config, store, f.fleet, name="second", on_turn=turns.append)
    said = "ZeroDivisionError: a bug in the placement core"

    @pilot_test
    async def header():
        async with live_app(f) as (app, pilot):
            shown = app.fleet.query_one(Header)
            await until(pilot, lambda: shown.info is not None and shown.info.note ==
                        failing_passes(said, "its"), "the header says it")
            await pilot.pause()
            assert any("scheduler: second · its passes fail: " + said in line
                       for line in screen_lines(app)), screen_lines(app)[:6]

    try:
        second.start()
        wait(lambda: f.store.trouble() == said, f.states)
        seen = len(turns)
        wait(lambda: len(turns) >= seen + 5, lambda: turns)
        assert f.store.trouble() == said  # still said: the passes still fail
        done = f.fractui("jobs")
        assert done.returncode == 0 and done.stderr == "fractui: %s\n" % failing_passes(said)
        header()
        monkeypatch.setattr(service, "schedule", real)
        wait(lambda: f.store.trouble() is None and f.states()[job.id] == "running", f.states)
        assert f.fractui("jobs").stderr == ""
    finally:
        second.stop()
        store.close()


@contextlib.contextmanager
def headless(f, env: Optional[Dict[str, str]] = None) -> Iterator[subprocess.Popen]:
    """A real ``fractui scheduler --name svc`` on ``f``'s config, once it has said its first
    line; whatever the test leaves of it is killed (a failed test leaves nothing running)."""
    run = subprocess.Popen([sys.executable, "-m", "fractui", "--config", f.write_config(),
                            "scheduler", "--name", "svc"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(run):
        line = run.stdout.readline()  # type: ignore
        assert line.startswith("scheduler svc: store "), (line, run.communicate(timeout=30))
        yield run


@pytest.mark.parametrize("service", [True, False])
def test_a_scheduler_run_as_a_service_says_its_local_hosts_end_with_it(local_fleet, service):
    """systemd's stop of a service ends its whole control group: a local host's agent daemon,
    its shims and its jobs are the scheduler's descendants, so they end with the service
    (docs/scheduler.md). The scheduler says so as it starts under systemd (INVOCATION_ID),
    and says nothing of it run by hand."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    env = dict(os.environ)
    env.pop("INVOCATION_ID", None)
    if service:
        env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
    with headless(f, env) as run:
        run.terminate()
        _, err = run.communicate(timeout=30)
    said = "fractui: gpu-a is local (transport = \"local\"): under this systemd service its " \
        "agent daemon and jobs are the service's own processes, so stopping or restarting " \
        "the service ends them and their jobs fail"
    assert (said in err) == service, err
    assert run.returncode == 0, err


def test_a_headless_scheduler_says_what_it_does_on_stderr_with_its_time(local_fleet):
    """What the scheduler logs at INFO (where it serves its metrics, that it stands by, a stop
    an agent took late) reaches its stderr, journald's or the TUI's scheduler log, each line
    with its time, level and logger. Left to Python's defaults only WARNING and above showed,
    and docs/scheduler.md's "it logs that it stands by" was said to no one."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    port = closed_port()
    f.config = dataclasses.replace(f.config, metrics=MetricsSettings(
        listen="127.0.0.1:%d" % port))
    with headless(f) as run:
        job = f.submit("quarter")
        wait(lambda: f.states()[job.id] == "running", f.states, alive=run)
        run.terminate()
        _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    serving = [line for line in err.splitlines() if line.endswith(
        "INFO fractui.metrics: metrics: serving http://127.0.0.1:%d/metrics while this "
        "scheduler holds the lease" % port)]
    assert len(serving) == 1, err
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO ", serving[0]), err


def test_a_scheduler_whose_log_is_on_a_full_disk_schedules_all_the_same(local_fleet, small_fs):
    """A scheduler's output to a file on a real filesystem full to the last byte (a TUI's child
    writes into its log in the admin's state dir; the store may be elsewhere): its first line
    is lost, and it schedules all the same: a job submitted runs, and it stops cleanly when
    told. Before, the failed first line ended it at once, exit 1, its reason lost with the
    line: a TUI's jobs then waited with no scheduler, the disk full or not."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    filler = small_fs / "filler"
    with open(small_fs / "scheduler.log", "wb") as log:
        fill(filler)
        run = subprocess.Popen([sys.executable, "-m", "fractui", "--config", f.write_config(),
                                "scheduler", "--name", "full"], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT)
    with reaped(run):  # (a failed test leaves nothing running)
        job = f.submit("quarter")
        wait(lambda: run.poll() is not None or f.states()[job.id] == "running", f.states)
        assert run.poll() is None, "the scheduler ended: exit %s" % run.returncode
        filler.unlink()  # room again, for what it says as it stops
        run.terminate()
        assert run.wait(timeout=30) == 0


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """Sends ``sig`` to one thread of another process (glibc's tgkill)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill %d/%d" % (pid, tid))


def test_a_scheduler_ends_on_a_sigterm_the_kernel_gave_to_another_of_its_threads(local_fleet):
    """The kernel hands a process's signal to any of its threads; CPython then only flags it
    for the main thread, which an untimed wait never looks at. A scheduler whose SIGTERM
    landed on its store watcher's or a host's thread waited on until systemd's SIGKILL."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    with headless(f) as run:
        others = [int(t) for t in os.listdir("/proc/%d/task" % run.pid) if int(t) != run.pid]
        assert others, "the scheduler runs threads besides its main one"
        _tgkill(run.pid, others[0], signal.SIGTERM)
        _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err


def test_a_clean_stop_ends_what_it_served_before_it_hands_the_lease_over(local_fleet):
    """A standby takes the lease as soon as it is released, and opens the metrics port at
    once: the old holder's exporter must have let it go by then, or the new one says it
    cannot listen."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    f.scheduler.stop(release=True)
    events: list = []
    store = open_store(f.config.store.url)
    released = store.release_lease
    store.release_lease = lambda holder: (events.append("released"), released(holder))[1]
    holder = Scheduler(f.config, store, f.fleet, name="first", on_turn=lambda report: events.append(
        "held" if report.held else "served no more"))
    try:
        holder.start()
        wait(lambda: "held" in events, lambda: events)
    finally:
        holder.stop()
        store.close()
    assert events[-2:] == ["served no more", "released"], events

