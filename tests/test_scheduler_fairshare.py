"""Fair share over time with a real scheduler, a real store (both backends) and simulated
hosts: the usage records the store keeps decide which team is served next once [fairshare]
usage_weight counts them. The teams' past is made through the store's own transitions (submit,
place, started, ended) with the times a day of use would have given them."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fractui.config import FairShareSettings, QueueConfig, TeamConfig
from fractui.scheduler import Scheduler
from fractui.store.model import RUNNING, Slot
from fractui.store.sqlite import SqliteStore
from fractui.usage.fairshare import recent_gpus
from tests import localfleet

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)
TEAMS = [TeamConfig("a", quota_gpus=1), TeamConfig("b", quota_gpus=1),
         TeamConfig("c", quota_gpus=1)]
HOUR = 3600.0
FAIR = FairShareSettings(half_life_h=2, window_h=48)


def held_before(f, team: str, hours_ago: float, hours: float) -> None:
    """A job of ``team`` that held a whole GPU for ``hours``, ending ``hours_ago``."""
    now = time.time()
    job = f.submit("whole", team)
    f.store.place(job.id, Slot("gpu-a", (0,), charge=1.0), "test", "the past")
    f.store.started(job.id, "past-%d" % job.id, now - (hours_ago + hours) * HOUR, "test",
                    "the past", model="L4")
    f.store.ended(job.id, (RUNNING,), "done", None, "test", "the past", "end", exit_code=0,
                  ended_at=now - hours_ago * HOUR)


@pytest.mark.parametrize("usage_weight, first, ahead", [
    (0.0, "b", 0.0), (1.0, "a", 0.0), (1.0, "a", -2 * HOUR)])
def test_the_team_with_less_decayed_usage_is_served_first(local_fleet, store_url,
                                                          usage_weight, first, ahead):
    """``ahead``: the scheduler's own clock against the store's, which ended the records
    (on PostgreSQL, the server's): two hours behind, it counted b's hour, ended half an hour
    ago, as not yet begun, and served b first, where ``fractui teams`` ranks a first."""
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE], TEAMS, store_url=store_url)
    f.config = dataclasses.replace(f.config, fairshare=dataclasses.replace(
        FAIR, usage_weight=usage_weight))
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="test",
                            clock=lambda: time.time() + ahead)
    # a and b each held the GPU for an hour: a eight hours ago, b lately
    held_before(f, "a", 7, 1)
    held_before(f, "b", 0.5, 1)
    now = time.time()
    recent = recent_gpus(f.store.usage(now - FAIR.window_s, now), now, FAIR.half_life_s,
                         FAIR.window_s)
    assert 0 < recent["a"] < recent["b"] / 4, recent  # three half-lives and more apart
    # c holds the GPU while b, then a, queue for it: b waits longer
    blocker = f.submit("whole", "c")
    f.until(lambda: f.store.get(blocker.id).state == "running")
    waits_b = f.submit("whole", "b")
    waits_a = f.submit("whole", "a")
    f.until(lambda: f.store.get(waits_a.id).reason is not None)
    f.store.stopping(blocker.id, (RUNNING,), "cancel", "test", "the GPU frees")
    served = {"a": waits_a.id, "b": waits_b.id}
    f.until(lambda: any(f.store.get(j).state == "running" for j in served.values()))
    states = {team: f.store.get(j).state for team, j in served.items()}
    # by weights only (0), equal holdings go by age: b; counting recent usage, a
    assert states[first] == "running", states
    assert states[{"a": "b", "b": "a"}[first]] == "pending", states


class Counting(SqliteStore):
    """The real SQLite store, counting its reads of usage records."""

    usage_reads = 0

    def usage(self, since: float, until: float):
        self.usage_reads += 1
        return super().usage(since, until)


def test_the_scheduler_reads_usage_once_a_minute_on_a_new_lease_and_only_while_it_counts(
        local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [WHOLE], TEAMS)
    f.store.close()
    f.store = store = Counting(str(f.tmp / "store.db"))
    clock = [time.time()]
    config = dataclasses.replace(f.config, fairshare=dataclasses.replace(FAIR,
                                                                         usage_weight=0.5))
    f.scheduler = Scheduler(config, store, f.fleet, name="test", clock=lambda: clock[0],
                            ticks=lambda: clock[0])
    held = f.submit("whole", "a")
    f.until(lambda: store.get(held.id).state == "running")
    waits = f.submit("whole", "b")
    for _ in range(5):
        f.scheduler.step()
    assert store.get(waits.id).state == "pending" and store.usage_reads == 1
    clock[0] += 61
    for _ in range(3):
        f.scheduler.step()
    assert store.usage_reads == 2
    store.release_lease("test")  # the lease is taken anew: read again at once
    f.scheduler.step()
    assert store.usage_reads == 3
    # at weight 0 nothing is read, whatever waits
    f.scheduler.stop()
    f.scheduler = Scheduler(f.config, store, f.fleet, name="plain", clock=lambda: clock[0],
                            ticks=lambda: clock[0])
    clock[0] += 3600
    for _ in range(3):
        f.scheduler.step()
    assert store.usage_reads == 3
