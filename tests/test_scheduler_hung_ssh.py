"""An SSH session that hangs (its sshd stopped: packets stop, nothing closes) while the scheduler
launches over it: the lane's call times out, the host is reached afresh over a new session, and
the launch left in the hung session's buffers reaches the agent late, after the store moved on
(the job requeued and launched again, or cancelled). That late copy is stopped by the lease
holder, never left running beside the attempt that counts. Real sshd on loopback."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from typing import Callable, List

import pytest

from fractui.config import QueueConfig, SchedulerSettings, StoreSettings
from fractui.fleet import host as fleet_host
from fractui.fleet.fleet import Fleet
from fractui.scheduler import Scheduler
from fractui.store import SqliteStore, sqlite_url
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import attempt_of
from tests import sshd
from tests.test_fleet import SshFleet

ssh_env = sshd.ssh_env


def session_sshds(server: sshd.SshServer) -> List[int]:
    """The per-connection sshd processes now serving sessions (not the listener, not what
    the sessions run)."""
    assert server._proc is not None
    found = []
    for pid in sshd._descendants(server._proc.pid):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "sshd":
                    found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.parametrize("then", ["requeue", "cancel"])
def test_a_launch_delivered_late_by_a_hung_ssh_session_is_stopped_not_left_running(
        ssh_env, tmp_path, monkeypatch, then):
    monkeypatch.setattr(fleet_host, "PROBE_S", 0.5)  # a silent link is found out soon
    monkeypatch.setattr(fleet_host, "PROBE_WAIT_S", 2.0)
    env = SshFleet(ssh_env, tmp_path)
    stopped: List[int] = []
    try:
        env.add("gpu-a", "1xL4")
        queue = QueueConfig(name="q", gpu=0.25)
        config = replace(env.config(), queues=(queue,),
                         scheduler=SchedulerSettings(lease_s=3.0, interval_s=0.2),
                         store=StoreSettings(sqlite_url(str(tmp_path / "store.db"))))
        store = SqliteStore(str(tmp_path / "store.db"))
        with Fleet(config, reconnect_max_s=0.5) as fleet:
            fleet.wait_settled(60)
            session = fleet.session("gpu-a")
            sched = Scheduler(config, store, fleet, name="test")
            job = store.submit("q", None, "train", [sys.executable, "-c",
                                                    "import time; time.sleep(600)"],
                               queue.request(), "test")

            def records(key: str) -> List[dict]:
                return [r for r in session.call("job.list")["jobs"] if r["key"] == key]

            def until(check: Callable[[], bool], step: bool = True,
                      timeout_s: float = 60.0) -> None:
                deadline = time.time() + timeout_s
                while not check():
                    assert time.time() < deadline, (store.get(job.id), fleet.statuses())
                    if step:
                        sched.step()
                    time.sleep(0.1)

            first_link = session_sshds(env.servers["gpu-a"])
            assert first_link
            for pid in first_link:  # the session hangs: nothing goes either way
                os.kill(pid, signal.SIGSTOP)
            stopped.extend(first_link)
            assert sched.step()  # decides the job and sends its launch into the hung link
            assert sched.settle()  # the call gave up within its timeout
            placed = store.get(job.id)
            assert placed.state == "placed"  # it may have reached the agent
            old_key = placed.key(store.uid)
            # the link is found silent and the host reached afresh, over a new session
            until(lambda: session.status.state == "online" and
                  set(session_sshds(env.servers["gpu-a"])) - set(first_link), step=False)
            assert records(old_key) == []  # the launch is still in the hung session
            ask_stop(store, store.get(job.id), then, Asker("here"))
            if then == "requeue":  # launched again as its next attempt, over the new link
                until(lambda: store.get(job.id).attempt == 1 and
                      store.get(job.id).state == "running")
            else:  # nothing ran as far as anyone knows: cancelled
                until(lambda: store.get(job.id).state == "cancelled")
            for pid in first_link:  # the link moves again: the launch reaches the agent
                os.kill(pid, signal.SIGCONT)
            stopped.clear()
            until(lambda: records(old_key) != [], step=False)
            # the late copy is the store's no more: the lease holder stops it
            until(lambda: records(old_key)[0]["state"] not in ("starting", "running",
                                                               "stopping"))
            late = records(old_key)[0]
            assert late["state"] == "killed"
            assert late["reason"] == ("a copy of job %d's attempt 0, which the store does "
                                      "not hold on gpu-a (a launch that arrived late)" % job.id)
            running = [r for r in session.call("job.list")["jobs"]
                       if r["state"] in ("starting", "running")]
            if then == "requeue":  # the one copy that counts runs on
                assert [r["key"] for r in running] == [store.get(job.id).key(store.uid)]
                assert store.get(job.id).state == "running"
            else:
                assert running == []
                assert store.get(job.id).state == "cancelled"
            assert [e.action for e in store.audit_log(job.id)].count("launch") == (
                1 if then == "requeue" else 0)
            sched.stop()
        store.close()
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        env.stop()


def test_only_this_stores_keys_name_an_attempt():
    """What the lease holder may stop as not held: its own store's keys only, never another
    store's or a key an admin chose for a launch by hand."""
    assert attempt_of("fractui-u1-7.2", "u1") == (7, 2)
    for key in ("fractui-u2-7.2", "fractui-u1-7", "fractui-u1-7.2.1", "fractui-u1-x.2",
                "fractui-u1-\u0667.2", "train-7.2", "fractui-u1-.2", ""):
        assert attempt_of(key, "u1") is None, key
