"""A standby that takes the lease goes on from what the holder before it kept in the store: a
lost-host clock keeps running across the failover (not started again), a stop already sent is
not sent again, and a holder killed with SIGKILL in the middle of a pass leaves nothing placed
or launched twice, and no write of its epoch lands after the take. On both backends, on real
simulated hosts (local transport, real agents and job processes)."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
from dataclasses import replace
from typing import List

import psycopg
import pytest

from fractui.config import QueueConfig
from fractui.fleet.fleet import Fleet
from fractui.scheduler import Scheduler
from fractui.store import LeaseLost, Store, open_store
from fractui.store.intents import Asker, ask_stop
from fractui.store_url import sqlite_path
from tests import localfleet
from tests.localfleet import wait

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet
WHOLE = QueueConfig(name="whole", gpus=1)
QUARTER = QueueConfig(name="quarter", gpu=0.25)
HOUR = 3600.0
# A job that says each SIGTERM it gets and never ends by itself (its grace ends it).
STUBBORN = [sys.executable, "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('got SIGTERM', flush=True))\n"
            "print('up', flush=True)\nwhile True:\n    time.sleep(1)"]


def on_clock(store: Store, now: List[float]) -> Store:
    """``store`` (either backend) as its lease holders read its clock (``Store.now``, their
    lead on it): the test's ``now``, so time passes for the lost-host clocks, which they date
    by it, as the test moves it (host_lost_s would otherwise take a minute). What the store
    dates in its own writes (the lease's expiry) stays on its own clock."""
    store.now = lambda: now[0]  # type: ignore[method-assign]
    return store


def test_a_standby_that_takes_over_goes_on_with_the_lost_host_clock(local_fleet, store_url):
    """A host lost for 40 s of a 60 s host_lost_s under the first holder has its job requeued
    by the second 21 s later, not 60 s later; a host seen back clears its clock; a pass with
    nothing new writes no clock. The clocks kept are the store's: the second holder, on a
    machine an hour ahead of the first, counted the first's clock to its own and requeued
    the job at once (one an hour behind: an hour late). The lease lapses by the store's own
    clock."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [WHOLE], host_lost_s=60.0,
                    lease_s=2.0, store_url=store_url)
    job = f.submit("whole")
    f.until(lambda: f.store.get(job.id).state == "running")
    f.scheduler.stop()  # hands the lease over
    lost = f.store.get(job.id).slot.host
    kept = next(h for h in f.config.hosts if h.name != lost)
    # the host is unreachable for the schedulers below: a config without it (a host that left
    # the config counts as unreachable, docs/scheduler.md), each its own store client
    config = replace(f.config, hosts=(kept,))
    fleet = Fleet(config, reconnect_max_s=0.5).start()
    fleet.wait_settled(60)
    now = [1000.0]
    first_store, second_store = (on_clock(open_store(store_url), now) for _ in range(2))
    writes: List[tuple] = []
    keep = first_store.keep_lost_clocks
    first_store.keep_lost_clocks = lambda *a, **k: (writes.append(a), keep(*a, **k))[1]
    first = Scheduler(config, first_store, fleet, name="first", clock=lambda: now[0])
    second = Scheduler(config, second_store, fleet, name="second",
                       clock=lambda: now[0] + HOUR)  # another machine, set an hour ahead
    try:
        assert first.step()
        assert f.store.holder_memory().hosts_away == {lost: 1000.0}
        # a holder that sees the host back clears its clock
        first_store.release_lease("first")  # handed over (as a clean shutdown does)
        back = Scheduler(f.config, f.store, f.fleet, name="back")
        assert back.step() and back.settle()
        assert f.store.holder_memory().hosts_away == {}
        back.stop()

        now[0] = 2000.0
        assert first.step()  # the lease anew: the clock starts again
        assert f.store.holder_memory().hosts_away == {lost: 2000.0}
        assert len(writes) == 2  # set, then set again (the clear was back's)
        for now[0] in (2020.0, 2040.0):
            assert first.step() and first.settle()
        assert len(writes) == 2  # passes with nothing new wrote no clock
        assert f.store.get(job.id).state == "running"  # lost for 40 s of 60

        # the first holder stops without a word; its lease lapses; the second takes over
        wait(lambda: f.store.lease_holder() is None, f.states)
        assert second.step() and second.epoch == first.epoch + 1
        now[0] = 2059.0
        assert second.step() and second.settle()
        assert f.store.get(job.id).state == "running"  # 59 s: not yet
        now[0] = 2061.0
        assert second.step()
        requeued = [e for e in f.store.audit_log(job.id) if e.action == "requeued"]
        assert [(e.actor, e.why) for e in requeued] == [
            ("second", "host %s no longer in the config for 61 s" % lost)]
        wait(lambda: second.step() and second.settle() and
             f.store.get(job.id).state == "running", f.states)
        assert f.store.get(job.id).slot.host == kept.name
        assert f.store.holder_memory().hosts_away == {}  # the host holds nothing: not timed
        with pytest.raises(LeaseLost):  # the first holder's clock writes land no more
            first_store.keep_lost_clocks({lost: 1.0}, {}, epoch=first.epoch)
        assert f.store.holder_memory().hosts_away == {}
    finally:
        for sched in (first, second):
            sched.stop(release=False)
        fleet.stop()
        first_store.close()
        second_store.close()


def _move_to_gpu(store_url: str, job_id: int, gpu: int) -> None:
    """The store says the job runs on ``gpu``, which its host does not report (as when a GPU
    is gone): no transition moves a running job, so the test writes the row itself."""
    path = sqlite_path(store_url)
    if path is not None:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE jobs SET gpus = ? WHERE id = ?", ("[%d]" % gpu, job_id))
    else:
        with psycopg.connect(store_url, autocommit=True) as db:
            db.execute("UPDATE jobs SET gpus = %s WHERE id = %s", ("[%d]" % gpu, job_id))


def test_a_standby_that_takes_over_goes_on_with_a_missing_gpus_clock(local_fleet, store_url):
    """The same for a job whose GPU its (reachable) host no longer reports: missing for 40 s
    of 60 under the first holder, requeued by the second, on a machine an hour behind, at
    61 s (before: an hour late)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], host_lost_s=60.0, lease_s=2.0,
                    store_url=store_url)
    job = f.submit("quarter")
    f.until(lambda: f.store.get(job.id).state == "running")
    f.scheduler.stop()
    _move_to_gpu(store_url, job.id, 1)
    now = [1000.0]
    first_store, second_store = (on_clock(open_store(store_url), now) for _ in range(2))
    first = Scheduler(f.config, first_store, f.fleet, name="first", clock=lambda: now[0])
    second = Scheduler(f.config, second_store, f.fleet, name="second",
                       clock=lambda: now[0] - HOUR)  # another machine, set an hour behind
    try:
        assert first.step() and first.settle()
        now[0] = 1040.0
        assert first.step() and first.settle()
        assert f.store.holder_memory().gpus_gone == {job.id: 1000.0}
        assert f.store.get(job.id).state == "running"
        wait(lambda: f.store.lease_holder() is None, f.states)
        now[0] = 1059.0
        assert second.step() and second.settle()
        assert f.store.get(job.id).state == "running"  # 59 s: not yet
        now[0] = 1061.0
        assert second.step()
        requeued = [e for e in f.store.audit_log(job.id) if e.action == "requeued"]
        assert [(e.actor, e.why) for e in requeued] == [
            ("second", "GPU 1 of gpu-a gone for 61 s")]
        assert f.store.holder_memory().gpus_gone == {}  # requeued: timed no more
    finally:
        for sched in (first, second):
            sched.stop(release=False)
        first_store.close()
        second_store.close()


def test_a_stop_sent_by_the_first_holder_is_not_sent_again_by_the_next(local_fleet, store_url):
    """A job asked to stop (its grace running) when the holder fails over: the next holder's
    passes find it still running and stopping, and send no second SIGTERM (a second SIGTERM
    cuts many programs' clean shutdown short)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], lease_s=2.0, preempt_grace_s=120.0,
                    store_url=store_url)
    job = f.submit("quarter", argv=STUBBORN)
    f.until(lambda: f.store.get(job.id).state == "running")
    f.until_up(job)
    ask_stop(f.store, f.store.get(job.id), "cancel", Asker("test"))
    assert f.scheduler.step() and f.scheduler.settle()
    wait(lambda: "got SIGTERM" in f.said(job), lambda: f.said(job))
    key = f.store.get(job.id).key(f.store.uid)
    assert f.store.holder_memory().stops_sent == {("gpu-a", key)}
    wait(lambda: f.store.lease_holder() is None, f.states)  # the first says nothing more
    store = open_store(store_url)
    second = Scheduler(f.config, store, f.fleet, name="second")
    try:
        for _ in range(5):
            assert second.step() and second.settle()
        assert second.epoch == f.scheduler.epoch + 1
        assert f.store.get(job.id).state == "stopping"
        assert [j["state"] for j in f.agent_jobs() if j["key"] == key] == ["running"]
        assert f.said(job) == ["up", "got SIGTERM"]
    finally:
        second.stop()
        store.close()


def _deciding(f) -> bool:
    """The holder is recording its decisions: some jobs placed, others still pending (all fit
    at once, so one pass places them all)."""
    return {"placed", "pending"} <= set(f.states().values())


def _launching(f) -> bool:
    """The holder's lanes are launching: a job is still placed, and the agents hold a launch
    the store does not record as running (under way, or answered and not yet recorded)."""
    states = list(f.states().values())
    return "placed" in states and len(f.agent_jobs()) > states.count("running")


# When in its pass the holder is killed.
MOMENTS = {"deciding": _deciding, "launching": _launching}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_a_lease_holder_killed_mid_pass_is_taken_over_within_the_lease_and_nothing_runs_twice(
        local_fleet, store_url, moment):
    """A real `fractui scheduler` killed with SIGKILL in the middle of a pass (``moment``) that
    places 8 jobs (submitted while it was frozen for a moment, so a pass takes most of them);
    a second real one, waiting as a standby, takes the lease once it lapses
    (by the store's clock: after its expiry, within a lease of it) and finishes the pass: each
    job is decided once and launched once (one agent record per job, by key), and nothing is
    written in the killed holder's name after the take."""
    lease_s = 3.0
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QUARTER], lease_s=lease_s,
                    store_url=store_url)
    first = f.scheduler_process("first")
    wait(lambda: (f.store.lease_holder() or ("",))[0] == "first", f.states, alive=first)
    standby = f.scheduler_process("standby")
    try:
        assert standby.stdout.readline().startswith("scheduler standby: ")  # it stands by
        os.kill(first.pid, signal.SIGSTOP)  # for a moment: its next pass sees all 8 jobs
        jobs: list = []
        submitted = threading.Thread(target=lambda: jobs.extend(
            f.submit("quarter") for _ in range(8)))
        submitted.start()
        # frozen inside a write, it holds the store's write lock and the submits wait for it:
        # then it goes on after a while, and the 8 jobs reach it over a pass or two
        submitted.join(2.0)
        os.kill(first.pid, signal.SIGCONT)
        submitted.join(60)
        assert len(jobs) == 8
        wait(lambda: MOMENTS[moment](f), f.states, alive=first, step_s=0.002)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        _, expires = f.store.lease_holder() or ("", 0.0)
        at_kill = (f.states(), len(f.agent_jobs()))
        wait(lambda: set(f.states().values()) == {"running"}, f.states, alive=standby)
    finally:
        for proc in (first, standby):
            if proc.poll() is None:
                proc.terminate()
        _, err = standby.communicate(timeout=60)
        first.communicate(timeout=10)
    print("at the kill (%s): %s, agent records %d" % ((moment,) + at_kill))  # for the record
    assert "Traceback" not in err, err
    audit = f.store.audit_log(limit=10000)
    [took] = [e for e in audit if e.action == "lease" and e.actor == "standby"
              and e.id > max(e.id for e in audit if e.actor == "first")]
    assert expires <= took.time <= expires + lease_s, (expires, took)
    assert not [e for e in audit if e.id > took.id and e.actor == "first"]
    for job in jobs:
        actions = [e.action for e in audit if e.job == job.id]
        assert (actions.count("decide"), actions.count("launch")) == (1, 1), actions
    keys = [j["key"] for j in f.agent_jobs()]
    assert sorted(keys) == sorted(f.store.get(j.id).key(f.store.uid) for j in jobs)
    assert {f.store.get(j.id).attempt for j in jobs} == {0}
    # one usage record each, opened with the launch that was recorded, whichever holder it was
    started = {j["key"]: j["started_at"] for j in f.agent_jobs()}
    records = f.store.usage(0, 9e12)
    assert sorted(r.job for r in records) == sorted(j.id for j in jobs)
    for r in records:
        assert (r.attempt, r.ended_at) == (0, None)
        assert r.started_at == started[f.store.get(r.job).key(f.store.uid)]
