"""Deadlines and intervals hold when the wall clock is set (NTP stepping it, an admin's
``date -s``): a stop's grace, the lease's renewal and the usage keeper's turns are measured by
the monotonic clock, and the wall clock only dates what is kept, sent or shown. The wall clock
is the test's (time.time patched for a step of the agent's watchdog, or the scheduler's
injected ``clock``); the processes are real."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from typing import List

from fractui.config import QueueConfig, UsageSettings
from fractui.scheduler.lanes import Lanes
from fractui.scheduler.service import Scheduler
from fractui.scheduler.usage import LOOK_S, UsageKeeper
from fractui.store.sqlite import SqliteStore
from remote_agent.jobs import store as job_store
from tests.agent_table import set_back
from tests.test_job_supervision import daemon_pid_of, wait_until
from tests.test_jobs import PY, alive, wait_job
from tests.localfleet import local_fleet  # noqa: F401 (a fixture)
from tests.test_launch_concurrency import in_process, launch_request  # noqa: F401 (fixture)

DAY_S = 86400.0


def _stubborn(ready: str) -> List[str]:
    """A job that ignores SIGTERM (a clean shutdown that takes its time), ready once the file
    exists."""
    return [PY, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "open(%r, 'w').close()\ntime.sleep(600)\n" % ready]


def test_a_stops_grace_neither_ends_nor_lasts_with_a_step_of_the_wall_clock(in_process, tmp_path,
                                                                           monkeypatch):
    """Stopped with a minute's grace, the job outlives a watchdog pass after the wall clock
    jumped a day ahead; with the wall clock a day back, a pass after the minute kills it."""
    from remote_agent.jobs.watch import Watchdog

    sup, _ = in_process("1xL4")
    ready = str(tmp_path / "ready")
    job = sup.launch(launch_request(key="k-stubborn", gpu=0, memory_mib=100,
                                    argv=_stubborn(ready)))
    wait_until(lambda: os.path.exists(ready), "the job to ignore SIGTERM")
    sup.stop(job, "asked to stop", grace_s=60.0)
    dog = Watchdog(sup)
    sent: List[int] = []
    signal_job = sup.signal
    def counted(j, sig: int, say: bool = True) -> bool:
        sent.append(sig)
        return signal_job(j, sig, say)

    monkeypatch.setattr(sup, "signal", counted)
    real_time, real_ticks = time.time, time.monotonic
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real_time() + DAY_S)
        dog.tick()
    assert sent == [] and alive(job.pid) and sup.store.get(job.id).state == "running"

    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real_time() - DAY_S)
        m.setattr(time, "monotonic", lambda: real_ticks() + 61.0)
        dog.tick()
    assert sent == [signal.SIGKILL]
    wait_until(lambda: not alive(job.pid), "the job to be killed")

    def ended() -> bool:
        dog.tick()
        return sup.store.get(job.id).state == "killed"
    wait_until(ended, "the kill recorded")
    assert sup.store.get(job.id).reason == "asked to stop"


def test_a_grace_outlives_the_daemon_that_began_it(start_agent, tmp_path):
    """The deadline is kept by CLOCK_MONOTONIC, one clock for every process of the host: the
    daemon killed (kill -9) during a stop's grace, the next one kills the job when the grace
    ends, with the stop's reason."""
    state = str(tmp_path / "host")
    ready = str(tmp_path / "ready")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-stubborn", gpu=0, memory_mib=10, argv=_stubborn(ready))
    wait_until(lambda: os.path.exists(ready), "the job to ignore SIGTERM")
    agent.call("job.stop", job=job["id"], grace=2, reason="asked to stop")
    os.kill(daemon_pid_of(state), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    assert alive(job["pid"])
    later = start_agent(None, state)
    done = wait_job(later, job["id"])
    assert (done["state"], done["reason"]) == ("killed", "asked to stop")
    assert not alive(job["pid"])

def test_a_grace_running_in_an_older_table_keeps_what_was_left_of_it(tmp_path):
    """A table of version 4 kept the deadline by the wall clock: brought up to date, the same
    time is left, now by the monotonic clock."""
    path = str(tmp_path / "jobs.db")
    db = job_store.JobStore(path)
    job = db.insert(job_store.Job(0, "k", "f", "n", ["true"], {}, None, [0], ["GPU-x"], None,
                                  None, 10, time.time(), state="running"))
    db.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE jobs SET kill_at = ? WHERE id = ?", (time.time() + 100.0, job.id))
        set_back(raw, 4)
    raw.close()
    db = job_store.JobStore(path)
    try:
        left = db.get(job.id).kill_at - time.monotonic()
    finally:
        db.close()
    assert 90.0 < left <= 100.0


def test_a_wall_clock_set_back_holds_no_lease_renewal_back(local_fleet):
    """A third of the lease after its renewal, a lane's next call renews it, though the wall
    clock was set back an hour meanwhile."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)], lease_s=60.0)
    wall, ticks = [time.time()], [1000.0]
    sched = Scheduler(f.config, f.store, f.fleet, name="test", clock=lambda: wall[0],
                      ticks=lambda: ticks[0])
    try:
        assert sched.step() and sched.settle()
        taken = f.store.lease_holder()[1]
        wall[0] -= 3600.0
        ticks[0] += 21.0
        assert sched._may_act()
        assert f.store.lease_holder()[1] > taken  # renewed
    finally:
        sched.stop()


def test_a_wall_clock_set_back_holds_no_usage_look_back(tmp_path):
    """The usage keeper's looks come every LOOK_S of the monotonic clock, whatever the wall
    clock does meanwhile."""
    store = SqliteStore(str(tmp_path / "store.db"))
    epoch = store.acquire_lease("test", 60.0)
    wall, ticks = [time.time()], [1000.0]
    keeper = UsageKeeper(UsageSettings(), store, lambda *a: {}, Lanes(lambda: True, lambda: None,
                                                                      lambda: None),
                         clock=lambda: wall[0], ticks=lambda: ticks[0])
    looks: List[float] = []

    def views():
        looks.append(wall[0])
        return []
    try:
        keeper.turn(views, lambda: [], epoch)
        wall[0] -= 3600.0
        ticks[0] += LOOK_S
        keeper.turn(views, lambda: [], epoch)
    finally:
        store.close()
    assert looks == [wall[0] + 3600.0, wall[0]]
