"""An SSH session that hangs (its sshd stopped: packets stop, nothing closes) while the scheduler
sends a launch or a MIG mode change over it: the lane's call times out, the host is reached
afresh over a new session, and the request left in the hung session's buffers reaches the
agent late, after the store moved on. A late launch (the job requeued and launched again, or
cancelled) is stopped by the lease holder, never left running beside the attempt that counts;
a late mode change meets the change made since and changes nothing. Real sshd on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, List, Optional

import pytest

from fractui.config import QueueConfig, SchedulerSettings, StoreSettings
from fractui.fleet import host as fleet_host
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import AnswerLost, HostSession
from fractui.scheduler import Scheduler
from fractui.store import SqliteStore, sqlite_url
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import Job, attempt_of
from fractui.tui.report_view import table_rows
from fractui.usage.report import build
from tests import localfleet, sshd
from tests.test_fleet import SshFleet

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

ssh_env = sshd.ssh_env
local_fleet = localfleet.local_fleet
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


def session_sshds(server: sshd.SshServer) -> List[int]:
    """The per-connection sshd processes now serving sessions (not the listener, not what
    the sessions run)."""
    assert server._proc is not None
    found = []
    for pid in sshd.descendants(server._proc.pid):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "sshd":
                    found.append(pid)
        except OSError:
            continue
    return found


@dataclass
class OneHost:
    """One host behind real sshd, a store, and a scheduler whose passes the test runs."""

    env: SshFleet
    store: SqliteStore
    session: HostSession
    sched: Scheduler
    hung: List[int] = field(default_factory=list)

    def submit(self, queue: QueueConfig, team: Optional[str] = None) -> Job:
        return self.store.submit(queue.name, team, "train", SLEEP, queue.request(), "ann@here")

    def until(self, check: Callable[[], object], step: bool = True,
              timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        while not check():
            assert time.time() < deadline, ([j.record() for j in self.store.jobs()],
                                             self.session.status.state)
            if step:
                self.sched.step()
            time.sleep(0.1)

    def records(self, key: str) -> List[dict]:
        return [r for r in self.session.call("job.list")["jobs"] if r["key"] == key]

    def launches(self, key: str) -> List[tuple]:
        """Which launches the agent has of ``key``, each as what a second launch or a stop
        would change (not what its samples change as it runs: its use, sampled meanwhile)."""
        return [(r["id"], r["pid"], r["started_at"], r["instance"], r["state"])
                for r in self.records(key)]

    def hang(self) -> None:
        """The session's sshd processes stopped: nothing goes either way, nothing closes."""
        self.hung = session_sshds(self.env.servers["gpu-a"])
        assert self.hung
        for pid in self.hung:
            os.kill(pid, signal.SIGSTOP)

    def reached_afresh(self) -> None:
        """Until the host is online over a session of another sshd than the hung one."""
        self.until(lambda: self.session.status.state == "online" and set(
            session_sshds(self.env.servers["gpu-a"])) - set(self.hung), step=False)

    def move_again(self) -> None:
        """The hung session moves again: what it held reaches the agent."""
        hung, self.hung = self.hung, []
        for pid in hung:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def one_host(ssh_env, tmp_path, monkeypatch, spec: str,
             queue: QueueConfig) -> Iterator[OneHost]:
    monkeypatch.setattr(fleet_host, "PROBE_S", 0.5)  # a silent link is found out soon
    monkeypatch.setattr(fleet_host, "PROBE_WAIT_S", 2.0)
    env = SshFleet(ssh_env, tmp_path)
    one = None
    try:
        env.add("gpu-a", spec)
        config = replace(env.config(), queues=(queue,),
                         scheduler=SchedulerSettings(lease_s=3.0, interval_s=0.2),
                         store=StoreSettings(sqlite_url(str(tmp_path / "store.db"))))
        store = SqliteStore(str(tmp_path / "store.db"))
        with Fleet(config, reconnect_max_s=0.5) as fleet:
            fleet.wait_settled(60)
            one = OneHost(env, store, fleet.session("gpu-a"),
                          Scheduler(config, store, fleet, name="test"))
            yield one
            one.sched.stop()
        store.close()
    finally:
        if one is not None:
            one.move_again()
        env.stop()


@pytest.mark.parametrize("then", ["requeue", "cancel"])
def test_a_launch_delivered_late_by_a_hung_ssh_session_is_stopped_not_left_running(
        ssh_env, tmp_path, monkeypatch, then):
    queue = QueueConfig(name="q", gpu=0.25)
    with one_host(ssh_env, tmp_path, monkeypatch, "1xL4", queue) as one:
        job = one.submit(queue, "vision")
        one.hang()
        assert one.sched.step()  # decides the job and sends its launch into the hung link
        assert one.sched.settle()  # the call gave up within its timeout
        placed = one.store.get(job.id)
        assert placed.state == "placed"  # it may have reached the agent
        old_key = placed.key(one.store.uid)
        one.reached_afresh()
        assert one.records(old_key) == []  # the launch is still in the hung session
        ask_stop(one.store, one.store.get(job.id), then, Asker("here"))
        if then == "requeue":  # launched again as its next attempt, over the new link
            one.until(lambda: one.store.get(job.id).attempt == 1 and
                      one.store.get(job.id).state == "running")
        else:  # nothing ran as far as anyone knows: cancelled
            one.until(lambda: one.store.get(job.id).state == "cancelled")
        one.move_again()
        one.until(lambda: one.records(old_key) != [], step=False)
        # the late copy is the store's no more: the lease holder stops it
        one.until(lambda: one.records(old_key)[0]["state"] not in ("starting", "running",
                                                                   "stopping"))
        late = one.records(old_key)[0]
        assert late["state"] == "killed"
        assert late["reason"] == "a late copy of job %d's attempt 0 on gpu-a: %s" % (
            job.id, "the job runs as attempt 1" if then == "requeue" else
            "the job is cancelled")
        running = [r for r in one.session.call("job.list")["jobs"]
                   if r["state"] in ("starting", "running")]
        if then == "requeue":  # the one copy that counts runs on
            assert [r["key"] for r in running] == [one.store.get(job.id).key(one.store.uid)]
            assert one.store.get(job.id).state == "running"
        else:
            assert running == []
            assert one.store.get(job.id).state == "cancelled"
        assert [e.action for e in one.store.audit_log(job.id)].count("launch") == (
            1 if then == "requeue" else 0)
        # the copy is seen ended: its stop is forgotten, in the store and the holder alike
        one.until(lambda: not one.sched.executor.stops_sent(), timeout_s=10)
        assert one.store.holder_memory().stops_sent == frozenset()
        # and its time is charged to the job's team, as a late attempt: it held its slice
        late = one.records(old_key)[0]
        records = one.store.usage(0, time.time() + 60)
        mine = [r for r in records if (r.job, r.attempt) == (job.id, 0)]
        assert [(r.team, r.queue, r.user, r.host, r.gpus, r.profile, r.memory_mib, r.charge,
                 r.queued_at, r.started_at, r.ended_at, r.outcome) for r in mine] == [
            ("vision", "q", "ann", "gpu-a", (0,), None, placed.slot.memory_mib, 0.25,
             late["started_at"], late["started_at"], late["ended_at"], "late")]
        assert late["ended_at"] > late["started_at"]
        said = [e.why for e in one.store.audit_log(job.id) if e.action == "late-copy"]
        assert said == ["a late copy of attempt 0 ran on gpu-a gpu0 %d MiB for %.0f s until "
                        "the lease holder killed it: its 0.25 GPUs charged to its team" % (
                            placed.slot.memory_mib, late["ended_at"] - late["started_at"])]
        vision = build(records, [], 0, time.time() + 60, "team", time.time())
        assert vision.total.outcomes.get("late") == 1
        assert len(vision.total.waits_s) == (1 if then == "requeue" else 0)  # not the copy's
        assert vision.total.held_h >= 0.25 * (late["ended_at"] - late["started_at"]) / 3600
        titles, rows = table_rows(vision, 400)  # the report screen's table says it too
        assert rows[-1][titles.index("ended")] == "1 late", rows
        # said once: another pass adds nothing
        one.sched.step()
        assert one.sched.settle()
        assert len([r for r in one.store.usage(0, time.time() + 60) if r.job == job.id]) == \
            len([r for r in records if r.job == job.id])


def test_a_mode_change_delivered_late_by_a_hung_ssh_session_changes_nothing(
        ssh_env, tmp_path, monkeypatch):
    queue = QueueConfig(name="slice", mig="3g.40gb", isolation="mig")
    with one_host(ssh_env, tmp_path, monkeypatch, "1xA100-80GB", queue) as one:
        job = one.submit(queue)
        one.hang()
        assert one.sched.step()  # decides the job: its GPU's MIG mode is asked on, and hangs
        conn = one.session._conn
        one.until(lambda: conn is not None and conn.client._pending, step=False)
        # behind it in the hung session, a request whose arrival the test can see
        lost: List[AnswerLost] = []

        def mark() -> None:
            try:
                one.session.call("sim.ecc", {"gpu": 0, "corrected": 1}, 1.0)
            except AnswerLost as err:
                lost.append(err)

        marker = threading.Thread(target=mark)
        marker.start()
        assert one.sched.settle()
        marker.join()
        assert len(lost) == 1  # sent, and its answer never came
        assert one.store.get(job.id).state == "placed"
        one.reached_afresh()
        assert one.session.call("snapshot")["gpus"][0]["mig_mode"] is False  # not arrived
        assert corrected(one) == 0
        one.until(lambda: one.store.get(job.id).state == "running")  # asked again, made
        key = one.store.get(job.id).key(one.store.uid)
        before = one.session.call("snapshot")["gpus"][0]
        assert before["mig_mode"] is True
        ran = one.launches(key)
        one.move_again()  # the mode change asked first reaches the agent now, then the marker
        one.until(lambda: corrected(one) == 1, step=False)
        for _ in range(3):
            one.sched.step()
            assert one.sched.settle()
        after = one.session.call("snapshot")["gpus"][0]
        assert (after["mig_mode"], after.get("degraded")) == (True, before.get("degraded"))
        assert after["instances"] == before["instances"]  # the job's instance stands
        assert one.launches(key) == ran and [r[-1] for r in ran] == ["running"]
        assert one.store.get(job.id).state == "running"
        mig = [e.why for e in one.store.audit_log(job.id) if e.action == "mig"]
        assert len(mig) == 2 and "the answer was lost" in mig[0], mig
        assert mig[1] == "MIG mode is now on on gpu-a gpu 0"
        assert all(attempt_of(r["key"], one.store.uid) == (job.id, 0)
                   for r in one.session.call("job.list")["jobs"])


def test_a_copy_of_a_job_the_store_does_not_have_is_said_and_left_running(local_fleet, caplog):
    """A live copy under this store's key of a job the store has no word of (a store restored
    from a backup older than the job): the lease holder says it once and kills nothing on a
    guess; the store's own jobs are placed beside it."""
    queue = QueueConfig(name="q", gpu=0.25)
    f = local_fleet({"gpu-a": "1xL4"}, [queue])
    session = f.fleet.session("gpu-a")
    key = "fractui-%s-99.0" % f.store.uid
    session.call("job.launch", {"key": key, "argv": SLEEP, "gpus": [0], "memory_mib": 1024})
    job = f.submit("q")
    f.until(lambda: f.store.get(job.id).state == "running")
    for _ in range(3):
        f.scheduler.step()
        assert f.scheduler.settle()
    copy = [r for r in session.call("job.list")["jobs"] if r["key"] == key]
    assert [r["state"] for r in copy] == ["running"]
    said = [r.getMessage() for r in caplog.records if key in r.getMessage()]
    assert said == ["gpu-a runs %s, which the store does not hold and has no later word of: "
                    "left running" % key]


def corrected(one: OneHost) -> int:
    """GPU 0's corrected ECC errors, as its agent reports them."""
    return one.session.call("snapshot")["gpus"][0]["health"]["ecc_volatile"]["corrected"]


def test_only_this_stores_keys_name_an_attempt():
    """What the lease holder may stop as not held: its own store's keys only, never another
    store's or a key an admin chose for a launch by hand."""
    assert attempt_of("fractui-u1-7.2", "u1") == (7, 2)
    for key in ("fractui-u2-7.2", "fractui-u1-7", "fractui-u1-7.2.1", "fractui-u1-x.2",
                "fractui-u1-\u0667.2", "train-7.2", "fractui-u1-.2", ""):
        assert attempt_of(key, "u1") is None, key
