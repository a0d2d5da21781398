"""A job that has waited past ``reserve_after_s`` holds its team's quota (the pure pass): a whole
GPU job is not starved by its own team's stream of quarter jobs backfilling every quarter of
quota that frees up; nothing is held before the bound, after the job starts or is cancelled,
for a job bigger than the whole quota, or against another team."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional

import pytest

from fractui.config import QueueConfig, TeamConfig
from fractui.sched.fleetview import HostView
from fractui.sched.queueing import Kept, PassResult, Reserve, schedule, waits_at_quota
from fractui.store.model import CANCELLED, DONE, PENDING, RUNNING, Job, Slot

QUARTER, WHOLE = QueueConfig("quarter", gpu=0.25), QueueConfig("whole", gpus=1)
QUEUES = (QUARTER, WHOLE)
TEAMS = (TeamConfig("nlp", quota_gpus=1.0), TeamConfig("vision", quota_gpus=2.0))
BOUND = 300.0


def view(name: str = "h", gpus: int = 2) -> HostView:
    """A host of L4s, as an agent with nothing running answers."""
    records = [{"index": i, "uuid": "GPU-%s-%d" % (name, i), "name": "L4", "memory_mib": 23034,
                "mig_mode": False, "instances": [], "layout_version": "v0", "processes": []}
               for i in range(gpus)]
    hello = {"cpus": 64, "memory_mib": 512 * 1024, "privileges": {"mig_changes": True},
             "gpus": records}
    return HostView(name, "online", hello, {"gpus": records}, {})


def job(i: int, queue: QueueConfig, team: str = "nlp", at: float = 0.0) -> Job:
    return Job(i, queue.name, team, "n", ("x",), queue.request(), PENDING, at, at)


class Stream:
    """Jobs and a pure pass over them: what a pass decides is taken as started."""

    def __init__(self, jobs: List[Job], teams=TEAMS, views: Optional[List[HostView]] = None):
        self.jobs: Dict[int, Job] = {j.id: j for j in jobs}
        self.teams, self.views = teams, views or [view()]

    def run(self, now: float, after_s: float = BOUND) -> PassResult:
        result = schedule(self.views, list(self.jobs.values()), QUEUES, self.teams, "u",
                          reserve=Reserve(after_s, now))
        for d in result.decisions:
            self.jobs[d.job] = replace(self.jobs[d.job], state=RUNNING, slot=d.slot,
                                       started_at=now, preemptible=d.preemptible)
        return result

    def end(self, i: int, state: str = DONE) -> None:
        self.jobs[i] = replace(self.jobs[i], state=state, slot=None)

    def state(self, i: int) -> str:
        return self.jobs[i].state


def busy_nlp(teams=TEAMS, quarters: int = 4) -> Stream:
    """nlp's quota (1 GPU) held by four running quarter jobs (1-4), or with ``quarters`` the
    fleet's room; its whole-GPU job 50 waits, submitted at 0, with its quarter job 51 after
    it."""
    s = Stream([job(i, QUARTER, at=i - 100.0) for i in range(1, quarters + 1)], teams)
    s.run(-5.0)
    assert [s.state(i) for i in range(1, quarters + 1)] == [RUNNING] * quarters
    s.jobs[50], s.jobs[51] = job(50, WHOLE, at=0.0), job(51, QUARTER, at=1.0)
    return s


@pytest.mark.parametrize("teams, quarters", [
    (TEAMS, 4),  # nlp's quota of 1 GPU is what its quarter jobs fill
    ((TeamConfig("nlp", quota_gpus=100.0),), 8)])  # the fleet's 2 GPUs are
def test_a_stream_of_quarter_jobs_starves_a_whole_gpu_job_without_a_reservation(teams,
                                                                                 quarters):
    """Each time one quarter job ends, the next quarter job backfills its quarter (of quota,
    or of a GPU) that the whole-GPU job first in line does not fit in: with no reservation
    it never starts; with one, the room drains to it once it has waited past the bound."""
    def stream(after_s: float) -> Optional[float]:
        s = busy_nlp(teams, quarters)
        next_id = 200
        for step in range(1, 40):  # one quarter ends every 30 s, a new one is submitted
            now = step * 30.0
            oldest = min(i for i, j in s.jobs.items() if j.state == RUNNING)
            s.end(oldest)
            s.jobs[next_id] = job(next_id, QUARTER, at=now)
            next_id += 1
            s.run(now, after_s)
            if s.state(50) == RUNNING:
                return now
        return None

    assert stream(0.0) is None  # off: starved for all of the stream's 20 minutes
    started = stream(BOUND)
    # it holds the room from its pass past the bound (330 s): the quarters still running
    # where it waits end one by one, and nothing of its team takes their room meanwhile
    assert started is not None and BOUND < started <= BOUND + quarters * 30.0, started


def test_later_jobs_of_the_team_wait_for_what_is_held_and_say_for_whom():
    s = busy_nlp()
    s.end(1)
    result = s.run(BOUND + 1)
    assert s.state(51) == PENDING and s.state(50) == PENDING
    assert result.waiting[51] == (
        "team nlp's free quota is held for job 50, waiting over 5m00s for 1.00 GPUs of it "
        "(0.25 of 1.00 free); this job's slot charges 0.25: it takes only what is left "
        "beside that")
    assert result.waiting[50].startswith(
        "team nlp has too little of its quota left (0.75 of 1.00 GPUs held)")
    assert result.waiting[50].endswith("; 1.00 of the team's quota is held for it (waiting over "
                                      "5m00s), so the team's later jobs take only what is "
                                      "left beside it")
    # both wait for their own team's quota: neither reads as starved by the fleet
    assert waits_at_quota(result.waiting[50]) and waits_at_quota(result.waiting[51])


def test_nothing_is_held_before_the_bound_or_with_reservations_off():
    for now, after_s in ((BOUND - 1, BOUND), (BOUND * 10, 0.0)):
        s = busy_nlp()
        s.end(1)
        result = s.run(now, after_s)
        assert s.state(51) == RUNNING and s.state(50) == PENDING
        assert "is held for it" not in result.waiting[50]


def test_the_hold_ends_when_the_job_starts_or_is_cancelled():
    for ends in ("started", "cancelled"):
        s = busy_nlp()
        s.end(1)
        s.run(BOUND + 1)
        assert s.state(51) == PENDING  # held for job 50
        if ends == "started":
            for i in range(2, 5):
                s.end(i)
            s.run(BOUND + 2)
            assert s.state(50) == RUNNING and s.state(51) == PENDING  # it took the whole quota
            s.end(50)
        else:  # jobs 2-4 run on: the quarter left is job 51's
            s.end(50, CANCELLED)
        result = s.run(BOUND + 3)
        assert s.state(51) == RUNNING, result.waiting


def test_no_hold_for_a_job_bigger_than_the_whole_quota():
    """A whole GPU never fits a quota of 0.75: it says so and holds nothing (else its team's
    other jobs would wait for ever behind it)."""
    teams = (TeamConfig("nlp", quota_gpus=0.75),)
    s = Stream([job(50, WHOLE, at=0.0), job(51, QUARTER, at=1.0)], teams)
    result = s.run(BOUND * 10)
    assert s.state(51) == RUNNING and s.state(50) == PENDING
    assert "more than the whole quota" in result.waiting[50] \
        and "is held for it" not in result.waiting[50]


def test_another_teams_jobs_are_not_held():
    s = busy_nlp()
    s.jobs[52] = job(52, QUARTER, team="vision", at=2.0)
    s.end(1)
    result = s.run(BOUND + 1)
    assert s.state(52) == RUNNING and s.state(51) == PENDING, result.waiting


def test_a_job_waiting_for_room_holds_the_least_it_could_charge_and_the_roomiest_host():
    """On a full fleet the whole-GPU job finds no room at all: it holds one GPU of its team's
    quota (the least a whole GPU charges) and the host where most of a GPU is free (h: half
    of gpu1), which its team's later jobs keep off (one goes to g's last quarter, the next
    waits) while the room there frees up; another team's job still goes there."""
    teams = (TeamConfig("nlp", quota_gpus=2.0), TeamConfig("vision", quota_gpus=4.0))
    quarters = [("h", 0)] * 4 + [("h", 1)] * 2 + [("g", 0)] * 4 + [("g", 1)] * 3
    running = [replace(job(i, QUARTER, team="vision", at=-100.0), state=RUNNING,
                       slot=Slot(host, (gpu,), memory_mib=23034 // 4, charge=0.25))
               for i, (host, gpu) in enumerate(quarters, 1)]
    s = Stream(running + [job(20, WHOLE, at=0.0), job(21, QUARTER, at=1.0),
                          job(22, QUARTER, at=2.0), job(23, QUARTER, team="vision", at=3.0)],
               teams, [view("h"), view("g")])
    result = s.run(BOUND + 1)
    assert s.state(20) == PENDING
    assert result.waiting[20].startswith("no room: no GPU in the fleet has a free slice")
    assert result.waiting[20].endswith("; 1.00 of the team's quota and its room on h is held "
                                       "for it (waiting over 5m00s), so the team's later "
                                       "jobs take only what is left beside it")
    assert s.state(21) == RUNNING and s.jobs[21].slot.host == "g"
    assert s.state(22) == PENDING and result.waiting[22] == (
        "team nlp's room on h is held for job 20, waiting over 5m00s for room there; this job "
        "finds none elsewhere")
    assert waits_at_quota(result.waiting[22])  # its own team's: not starved by the fleet
    assert s.state(23) == RUNNING and s.jobs[23].slot.host == "h"  # vision is not held


def test_a_kept_pass_compares_the_jobs_past_the_bound_not_the_time():
    s = busy_nlp()
    s.end(1)
    kept = Kept()
    jobs = list(s.jobs.values())

    def decide(now: float) -> PassResult:
        return schedule(s.views, jobs, QUEUES, TEAMS, "u", kept=kept,
                        reserve=Reserve(BOUND, now))

    first = decide(10.0)
    assert decide(20.0) is first  # nothing new: the same jobs are short of the bound
    assert [d.job for d in first.decisions] == [51]
    past = decide(BOUND + 1)  # job 50 passed it: decided anew
    assert past is not first and past.decisions == [] and 51 in past.waiting


def test_a_later_job_of_the_team_preempts_nothing_on_the_host_held_for_another():
    """Both GPUs of h and g are full; a borrowed quarter job on each of h's GPUs could make
    room for nlp's quarter job, but not for its whole-GPU job that holds h: the quarter job
    preempts nothing there (the room would go to it, not to the job h is held for)."""
    teams = (TeamConfig("nlp", quota_gpus=2.0),
             TeamConfig("vision", quota_gpus=3.5, over_quota=True))
    quarters = [("h", 0, False)] * 3 + [("h", 0, True)] + [("h", 1, False)] * 3 + \
        [("h", 1, True)] + [("g", 0, False)] * 4 + [("g", 1, False)] * 4
    running = [replace(job(i, QUARTER, team="vision", at=-100.0), state=RUNNING,
                       started_at=-50.0 + i, preemptible=borrowed,
                       slot=Slot(host, (gpu,), memory_mib=23034 // 4, charge=0.25))
               for i, (host, gpu, borrowed) in enumerate(quarters, 1)]
    jobs = running + [job(20, WHOLE, at=0.0), job(21, QUARTER, at=1.0)]
    result = schedule([view("h"), view("g")], jobs, QUEUES, teams, "u",
                      reserve=Reserve(BOUND, BOUND + 1))
    assert "its room on h is held for it" in result.waiting[20]
    assert result.waiting[21].startswith("no room")
    assert result.preemptions == []
    # with nothing held, the quarter job preempts a borrowed job on h for itself
    off = schedule([view("h"), view("g")], jobs, QUEUES, teams, "u")
    assert [p.for_job for p in off.preemptions] == [21]


@pytest.mark.parametrize("queue", [
    QueueConfig("big", memory_gib=40),  # 40 GiB never fits an L4 (23 GiB)
    QueueConfig("big", gpu=0.5, cpus=32)])  # nor 32 CPUs a host of 16
def test_a_job_holds_no_host_it_never_fits(queue):
    """h's A100s are full; "small" is idle but the job waiting for room never fits it: it
    holds h, where its room can come, not "small" (which is where most is free), so its
    team's later job runs on "small" rather than wait beside its idle GPUs."""
    idle = view("small")
    if queue.cpus:
        idle.hello["cpus"] = 16
    queues = (QUARTER, queue)
    teams = (TeamConfig("nlp", quota_gpus=2.0), TeamConfig("vision", quota_gpus=4.0))
    running = [replace(job(i, QueueConfig("half", gpu=0.5), team="vision", at=-100.0),
                       state=RUNNING, slot=Slot("h", (gpu,), memory_mib=40960, charge=0.5))
               for i, gpu in enumerate((0, 0, 1, 1), 1)]
    a100 = view("h")
    for g in a100.hello["gpus"]:
        g.update(name="A100-80GB", memory_mib=81920)
    jobs = running + [job(20, queue, at=0.0), job(21, QUARTER, at=1.0)]
    result = schedule([a100, idle], jobs, queues, teams, "u", reserve=Reserve(BOUND, BOUND + 1))
    assert "its room on h is held for it" in result.waiting[20], result.waiting[20]
    assert [(d.job, d.slot.host) for d in result.decisions] == [(21, "small")], result.waiting


def test_a_job_no_host_can_take_holds_nothing_at_its_teams_quota():
    """nlp is at its quota; its oldest job books 128 CPUs, more than any host has: it can
    never start, so it holds nothing (its reason said it held a quarter of the quota); the
    whole-GPU job after it holds the quota instead."""
    big = QueueConfig("bigcpu", gpu=0.25, cpus=128)
    s = busy_nlp()
    s.jobs[49] = job(49, big, at=-1.0)
    result = schedule(s.views, list(s.jobs.values()), QUEUES + (big,), TEAMS, "u",
                      reserve=Reserve(BOUND, BOUND + 10))
    assert result.waiting[49] == "team nlp is at its quota (1.00 of 1.00 GPUs held)"
    assert result.waiting[50].endswith("; 1.00 of the team's quota is held for it (waiting "
                                       "over 5m00s), so the team's later jobs take only what "
                                       "is left beside it"), result.waiting[50]


def test_the_host_held_is_one_the_teams_own_jobs_ending_frees():
    """a: half a GPU free, the other half vision's for good; b: nlp's four quarters, one of
    them ending every 30 s while nlp submits another. Held for its whole-GPU job (past the
    bound), a, where most is free, never drains: nlp's quarters kept off it refilled b's
    every quarter, and the job never started. Held, b drains to it as nlp's quarters end."""
    teams = (TeamConfig("nlp", quota_gpus=10.0), TeamConfig("vision", quota_gpus=10.0))
    quarter = Slot("a", (0,), memory_mib=23034 // 4, charge=0.25)
    vision = [replace(job(i, QUARTER, team="vision", at=-900.0), state=RUNNING,
                      started_at=-900.0, slot=quarter) for i in (1, 2)]
    nlp = [replace(job(i, QUARTER, at=-800.0 + i), state=RUNNING, started_at=-800.0 + i,
                   slot=replace(quarter, host="b")) for i in range(3, 7)]
    s = Stream(vision + nlp + [job(50, WHOLE, at=-BOUND)], teams, [view("a", 1), view("b", 1)])
    for step in range(1, 21):  # 10 minutes
        now = step * 30.0
        ending = min((j for j in s.jobs.values() if j.state == RUNNING and j.team == "nlp"
                      and j.id != 50), key=lambda j: j.started_at)
        s.end(ending.id)
        s.jobs[100 + step] = job(100 + step, QUARTER, at=now)
        result = s.run(now)
        if s.state(50) == RUNNING:
            break
    assert s.state(50) == RUNNING, result.waiting[50]
    assert s.jobs[50].slot.host == "b" and now <= 4 * 30.0, now


def test_a_job_of_two_gpus_holds_no_host_whose_gpus_are_of_two_models():
    """mix, idle, has an A100 and an L4; vision fills b's two L4s. nlp's 2-GPU job, past the
    bound, never fits mix (a job's GPUs are of one model): it holds b, where its room can
    come, not mix (where most is free), and nlp's quarter job runs on mix rather than wait
    beside its idle GPUs."""
    two = QueueConfig("two", gpus=2)
    teams = (TeamConfig("nlp", quota_gpus=4.0), TeamConfig("vision", quota_gpus=4.0))
    mix = view("mix")
    mix.hello["gpus"][0].update(name="A100-80GB", memory_mib=81920)
    busy = [replace(job(i, WHOLE, team="vision", at=-100.0), state=RUNNING, started_at=-50.0,
                    slot=Slot("b", (i - 1,), memory_mib=23034, charge=1.0)) for i in (1, 2)]
    result = schedule([view("b"), mix], busy + [job(20, two, at=0.0), job(21, QUARTER, at=1.0)],
                      (QUARTER, two), teams, "u", reserve=Reserve(BOUND, BOUND + 1))
    assert "its room on b is held for it" in result.waiting[20], result.waiting[20]
    assert [(d.job, d.slot.host) for d in result.decisions] == [(21, "mix")], result.waiting


def test_a_cpu_only_job_within_its_quota_preempts_a_borrowed_job_for_cpus():
    """Speech's borrowed quarter books 60 of h's 64 CPUs; vision's CPU-only job asks 8. It
    charges no GPU, so its quota affords it: it preempts the borrowed job, as any job within
    its quota that finds no room does (it was left out of the starved, its least charge
    being none)."""
    big, cpu = QueueConfig("big", gpu=0.25, cpus=60), QueueConfig("cpu", cpus=8)
    teams = (TeamConfig("vision", quota_gpus=2.0),
             TeamConfig("speech", quota_gpus=0.0, over_quota=True))
    lent = replace(job(1, big, team="speech", at=-100.0), state=RUNNING, started_at=-50.0,
                   preemptible=True, slot=Slot("h", (0,), memory_mib=23034 // 4, charge=0.25))
    result = schedule([view()], [lent, job(2, cpu, team="vision")], (big, cpu), teams, "u")
    assert [(p.victim, p.for_job) for p in result.preemptions] == [(1, 2)], result.waiting


def test_a_borrowed_job_whose_start_is_not_known_is_preempted_as_the_newest():
    """Speech borrows both of h's GPUs: #1 started at 1000, #2 runs with its start not known
    (a start its agent holds, a launch answered ``starting``). Preemption took the newest
    first by reading no start as 0, the oldest, so #1's run was stopped before #2, which a
    quota cut (past_quota_jobs) lends first as the newest: both read it as the newest now."""
    teams = (TeamConfig("vision", quota_gpus=2.0),
             TeamConfig("speech", quota_gpus=0.0, over_quota=True))
    lent = [replace(job(i, WHOLE, team="speech", at=-100.0), state=RUNNING, started_at=at,
                    preemptible=True, slot=Slot("h", (i - 1,), memory_mib=23034, charge=1.0))
            for i, at in ((1, 1000.0), (2, None))]
    result = schedule([view()], lent + [job(3, WHOLE, team="vision")], (WHOLE,), teams, "u")
    assert [(p.victim, p.for_job) for p in result.preemptions] == [(2, 3)], result.waiting


def test_a_container_job_preempts_only_where_a_runtime_runs_it_and_asks_apart_from_others():
    """h, no container runtime, holds speech's four borrowed quarters; c, with podman, is full
    of vision's own. Vision's job of an image finds no room: it preempts nothing on h, where
    it would never run (a borrowed job stopped for nothing, placed again, stopped again). Its
    plain twin, asking the same of the GPUs, is no job alike: it preempts on h."""
    teams = (TeamConfig("vision", quota_gpus=4.0),
             TeamConfig("speech", quota_gpus=0.0, over_quota=True))
    h, c = view("h", 1), view("c", 1)
    c.hello["runtimes"] = {"podman": "/usr/bin/podman"}
    quarter = Slot("h", (0,), memory_mib=23034 // 4, charge=0.25)
    running = [replace(job(i, QUARTER, team="speech", at=-100.0), state=RUNNING,
                       started_at=-50.0 + i, preemptible=True, slot=quarter)
               for i in range(1, 5)] + [
        replace(job(i, QUARTER, team="vision", at=-100.0), state=RUNNING, started_at=-50.0,
                slot=replace(quarter, host="c")) for i in range(11, 15)]
    boxed = replace(job(30, QUARTER, team="vision", at=0.0), image="docker.io/library/x")
    alone = schedule([h, c], running + [boxed], (QUARTER,), teams, "u")
    assert alone.waiting[30].startswith("no room") and alone.preemptions == []
    both = schedule([h, c], running + [boxed, job(31, QUARTER, team="vision", at=1.0)],
                    (QUARTER,), teams, "u")
    assert [(p.victim, p.for_job) for p in both.preemptions] == [(4, 31)], both.waiting


def test_a_cpu_only_job_is_told_what_it_asks_for_not_gpus_or_a_quota_it_does_not_charge():
    """h's 64 CPUs are all booked by nlp's own quarter jobs, within its quota of 1 GPU (at it):
    nlp's CPU-only job asks 8 CPUs and finds no room. It charges no GPU, so its team's quota
    is not what it waits for, nor a GPU slice: it waits for CPUs and RAM. Nothing is
    preemptible, so it preempts nothing."""
    big, cpu = QueueConfig("big", gpu=0.25, cpus=16), QueueConfig("cpu", cpus=8, memory=4)
    own = [replace(job(i, big, at=-100.0), state=RUNNING, started_at=-50.0,
                   slot=Slot("h", (i % 2,), memory_mib=23034 // 4, charge=0.25))
           for i in range(1, 5)]
    result = schedule([view()], own + [job(5, cpu)], (big, cpu), TEAMS, "u")
    assert result.waiting[5] == "no room: no host in the fleet has 8 CPUs and 4 GiB RAM free " \
                                "for it", result.waiting
    assert not waits_at_quota(result.waiting[5]) and result.preemptions == []


def test_a_cpu_only_job_is_not_held_back_by_the_quota_its_team_holds_for_another():
    """A quarter of nlp's quota frees up; nlp holds its quota for whole-GPU job 50, waiting
    past the bound, so its quarter job 51 takes only what is left beside that (nothing); its
    CPU-only job 52 charges no GPU: it starts."""
    s = busy_nlp()
    s.end(1)
    s.jobs[52] = job(52, QueueConfig("cpu", cpus=8), at=2.0)
    result = schedule(s.views, list(s.jobs.values()), QUEUES + (QueueConfig("cpu", cpus=8),),
                      TEAMS, "u", reserve=Reserve(BOUND, BOUND + 1))
    assert "is held for it" in result.waiting[50] and HELD_51 in result.waiting[51]
    assert [d.job for d in result.decisions] == [52], result.waiting


HELD_51 = "team nlp's free quota is held for job 50"
