"""A job past ``reserve_after_s`` holds its team's quota, with a real scheduler, store and
simulated hosts: before the bound the team's quarter jobs backfill the quota that frees up
ahead of its whole-GPU job; past it they wait, saying for whom, until that job has started.
A wait is counted to the store's clock, which dated it, whatever the scheduler's own clock
says (its head node an hour ahead of the store's server, or behind)."""

from __future__ import annotations

import time
from typing import List

import pytest

from fractui.config import QueueConfig, TeamConfig
from fractui.sched.queueing import waits_at_quota
from fractui.store.model import RUNNING, Hold
from tests import localfleet

local_fleet = localfleet.local_fleet
QUEUES = [QueueConfig("quarter", gpu=0.25), QueueConfig("whole", gpus=1)]
TEAMS = [TeamConfig("nlp", quota_gpus=1.25)]
BOUND = 300.0
HOUR = 3600.0


def on_clocks(f: "localfleet.LocalFleet", scheduler_ahead: float) -> List[float]:
    """The fleet's store on a clock the test moves (how far it runs ahead of real time:
    the list's one item; a wait passes as it moves), and its scheduler on its own clock,
    ``scheduler_ahead`` of real time."""
    store_ahead = [0.0]
    f.on_clocks(lambda: time.time() + store_ahead[0], lambda: time.time() + scheduler_ahead)
    return store_ahead


def test_a_whole_gpu_job_past_the_bound_gets_the_quota_its_teams_quarter_jobs_free(
        local_fleet):
    f = local_fleet({"gpu-a": "3xL4"}, QUEUES, TEAMS, reserve_after_s=BOUND)
    store_ahead = on_clocks(f, 0.0)
    quarters = [f.submit("quarter", "nlp") for _ in range(5)]
    f.until(lambda: all(f.store.get(q.id).state == RUNNING for q in quarters))
    whole = f.submit("whole", "nlp")
    later = [f.submit("quarter", "nlp") for _ in range(2)]

    def cancel(job) -> None:
        f.store.stopping(job.id, (RUNNING,), "cancel", "test", "its quarter frees")

    # before the bound: the quarter freed goes to the next quarter job, as it always did
    cancel(quarters[0])
    f.until(lambda: f.store.get(later[0].id).state == RUNNING)
    assert "is held for it" not in (f.store.get(whole.id).reason or "")
    # past it: the next quarter freed is held for the whole-GPU job
    store_ahead[0] = BOUND + 60
    cancel(quarters[1])
    f.until(lambda: "is held for it" in (f.store.get(whole.id).reason or "")
            and f.store.get(quarters[1].id).state == "cancelled")
    # kept in the store for fractui teams and the TUI: the quota held, for which job
    f.until(lambda: f.store.team_holds() == {"nlp": Hold(whole.id, 1.0)})
    f.until(lambda: f.store.get(later[1].id).reason is not None
            and "held for job %d" % whole.id in f.store.get(later[1].id).reason)
    for _ in range(3):
        f.scheduler.step()
    assert f.store.get(later[1].id).state == "pending"
    assert waits_at_quota(f.store.get(later[1].id).reason)
    # once the rest of the quarters end, it starts; the hold goes with it
    for q in quarters[2:]:
        cancel(q)
    f.until(lambda: f.store.get(whole.id).state == RUNNING)
    assert f.store.get(later[1].id).state == "pending"  # 1.25 held: job 6 and the whole GPU
    cancel(later[0])
    f.until(lambda: f.store.get(later[1].id).state == RUNNING)
    f.until(lambda: f.store.team_holds() == {})  # none waits: nothing is held


@pytest.mark.parametrize("scheduler_ahead", [HOUR, -HOUR], ids=["ahead", "behind"])
def test_the_bound_counts_a_wait_to_the_stores_clock_not_the_schedulers(local_fleet,
                                                                         scheduler_ahead):
    """A head node an hour ahead of the store's clock (on PostgreSQL, the server's) counted a
    job submitted a moment ago as an hour past the bound, and held its team's quota for it at
    once, while ``fractui teams`` and the metrics said it had waited seconds; one an hour
    behind held a job past the bound an hour late. Both hold it as the store's clock passes
    the bound, not before."""
    f = local_fleet({"gpu-a": "2xL4"}, QUEUES, TEAMS, reserve_after_s=BOUND)
    store_ahead = on_clocks(f, scheduler_ahead)
    quarters = [f.submit("quarter", "nlp") for _ in range(5)]  # the team's quota, all held
    f.until(lambda: all(f.store.get(q.id).state == RUNNING for q in quarters))
    whole = f.submit("whole", "nlp")
    f.until(lambda: waits_at_quota(f.store.get(whole.id).reason))
    for _ in range(3):
        f.scheduler.step()
    assert "is held for it" not in f.store.get(whole.id).reason, f.store.get(whole.id).reason
    assert f.store.team_holds() == {}
    store_ahead[0] = BOUND + 60  # the wait passes the bound
    f.submit("quarter", "nlp")  # (news: the jobs are read again)
    f.until(lambda: "is held for it" in (f.store.get(whole.id).reason or ""))
    assert f.store.team_holds() == {"nlp": Hold(whole.id, 1.0)}
