"""Calls to hosts in parallel, each host on its own lane: a host whose agent is stalled for real
(its daemon stopped with SIGSTOP) delays no other host's launches, in that pass or the next; a
launch that timed out on it is launched once when it wakes; no call starts under a lease that
was lost. Order and events are asserted, never how long anything took."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List

import pytest

from fractui.config import ConfigError, QueueConfig, load_config
from fractui.fleet.host import AnswerMalformed
from fractui.scheduler import Scheduler
from fractui.scheduler.lanes import Lanes
from fractui.store.base import RowsLocked, StoreError
from tests import localfleet

local_fleet = localfleet.local_fleet
HOSTS = {"gpu-a": "1xL4", "gpu-b": "1xL4"}
PINNED = [QueueConfig(name="on-" + h, gpu=0.25, hosts=(h,)) for h in HOSTS]


@contextmanager
def stalled(f, host: str) -> Iterator[None]:
    """The host's agent daemon stopped (SIGSTOP): connected, but answering nothing."""
    state_dir = next(h.state_dir for h in f.config.hosts if h.name == host)
    with open(os.path.join(state_dir, "daemon.pid")) as fh:
        pid = int(fh.read().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait(check, what, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, what()
        time.sleep(0.02)


def sent_and_waiting(f, host: str) -> bool:
    """Whether a call to ``host`` was sent and waits for its answer (the agent client's own
    table of requests in flight)."""
    conn = f.fleet.session(host)._conn
    return conn is not None and bool(conn.client._pending)


def records(f, job) -> list:
    return [r for r in f.agent_jobs() if r["key"] == f.store.get(job.id).key(f.store.uid)]


def test_a_stalled_host_delays_no_other_host(local_fleet):
    # a lease of 60 s gives calls 20 s: gpu-a's launch is still waiting when gpu-b's are done
    f = local_fleet(HOSTS, PINNED, lease_s=60.0)
    with stalled(f, "gpu-a"):
        on_a, first_b = f.submit("on-gpu-a"), f.submit("on-gpu-b")
        assert f.scheduler.step()  # decides both, starts both launches, returns
        wait(lambda: f.store.get(first_b.id).state == "running", f.states)
        assert f.store.get(on_a.id).state == "placed"
        assert on_a.id in f.scheduler.lanes.in_flight()  # its launch is still waiting
        second_b = f.submit("on-gpu-b")
        assert f.scheduler.step()  # a later pass: gpu-a's lane is busy, gpu-b's is free
        wait(lambda: f.store.get(second_b.id).state == "running", f.states)
        assert f.store.get(on_a.id).state == "placed" and f.scheduler.lanes.busy("gpu-a")
    f.scheduler.settle()  # gpu-a wakes, answers the launch it was sent
    f.until(lambda: f.store.get(on_a.id).state == "running")
    launches = [(e.job, e.actor) for e in f.store.audit_log() if e.action == "launch"]
    assert launches == [(first_b.id, "test"), (second_b.id, "test"), (on_a.id, "test")]
    assert len(records(f, on_a)) == 1


def test_a_launch_that_timed_out_on_a_stalled_host_runs_once_when_it_wakes(local_fleet):
    f = local_fleet(HOSTS, PINNED, lease_s=3.0)  # calls may take 1 s
    with stalled(f, "gpu-a"):
        job = f.submit("on-gpu-a")
        for _ in range(3):  # each pass sends the launch again once the last one timed out
            f.scheduler.step()
            assert f.scheduler.settle()  # the call gave up within its timeout
            assert f.store.get(job.id).state == "placed"  # it may have reached the agent
    f.until(lambda: f.store.get(job.id).state == "running")
    assert len(records(f, job)) == 1  # the same key each time: one job on the host


def test_no_call_starts_once_the_lease_is_lost(local_fleet):
    f = local_fleet(HOSTS, PINNED, lease_s=60.0)
    with stalled(f, "gpu-a"):
        jobs = [f.submit("on-gpu-a") for _ in range(3)]
        assert f.scheduler.step()  # three launches queued on gpu-a's lane, the first sent
        wait(lambda: sent_and_waiting(f, "gpu-a"), f.states)
        f.store.release_lease("test")  # handed over meanwhile: another scheduler holds it
        assert f.store.acquire_lease("other", 60.0)
    assert f.scheduler.settle()
    assert not f.scheduler.leader
    sent = [j for j in jobs if records(f, j)]
    assert sent == jobs[:1]  # the call in flight ended; the two after it were never made
    assert [f.store.get(j.id).state for j in jobs[1:]] == ["placed", "placed"]
    other = Scheduler(f.config, f.store, f.fleet, name="other")
    deadline = time.time() + 60
    while not all(f.store.get(j.id).state == "running" for j in jobs):
        assert time.time() < deadline, f.states()
        other.step()
        time.sleep(0.1)
    other.settle()
    assert [len(records(f, j)) for j in jobs] == [1, 1, 1]


def test_a_call_timeout_that_could_outlive_the_lease_is_refused_with_its_line(tmp_path):
    path = tmp_path / "config.toml"
    for text, said in (
            ("[scheduler]\nlease_s = 9\ncall_timeout_s = 4\n",
             ":3: scheduler.call_timeout_s (4 s) must be at most a third of scheduler.lease_s "
             "(9 s), so no call outlives the lease it was made under"),
            ("[scheduler]\nmax_attempts = 0\n", ":2: scheduler.max_attempts must be from 1 to "
                                                "100 attempts, got 0"),
            ("[scheduler]\nmax_attempts = 2.5\n", ":2: scheduler.max_attempts must be an "
                                                  "integer")):
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(str(path))
        assert str(err.value).startswith(str(path) + said), str(err.value)
    path.write_text("[scheduler]\nlease_s = 9\n")  # unset: a third of the lease
    assert load_config(str(path)).scheduler.call_timeout() == 3.0


def test_a_lane_whose_lease_check_fails_says_it_once_and_leaves_its_calls(monkeypatch,
                                                                          caplog):
    """Whether a call may start cannot be known (a bug in the check, at every pass): the lane
    says so in the log (its stack once while it fails so, not at every pass), makes no call,
    ends as a lane ends (its host free for the next pass's calls, a pass due), and never
    reaches threading's hook, which logs nothing where the admin looks; once the check
    answers again, the calls are made, and that is said once."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    hooked: List[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(str(args)))
    broken, ended, made = [True], [], []

    def may_act() -> bool:
        if broken[0]:
            raise KeyError("a bug in the lease check")
        return True

    lanes = Lanes(may_act, lambda: None, lambda: ended.append(1))
    for n in range(4):
        if n == 3:
            broken[0] = False
        assert lanes.add("gpu-a", lambda n=n: made.append(n))
        lanes.start()
        assert lanes.wait(30)
        assert not lanes.busy("gpu-a") and len(ended) == n + 1
    assert made == [3] and hooked == []
    said = [r for r in caplog.records if "may start is not known" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None, caplog.text
    assert said[0].getMessage() == ("whether a call to a host may start is not known "
                                    "(KeyError: 'a bug in the lease check'); calls wait for a "
                                    "later pass")
    assert caplog.text.count("whether a call to a host may start is known again after 3 "
                             "failed tries") == 1, caplog.text


def test_a_lanes_call_that_the_store_fails_at_every_pass_is_said_once(caplog):
    """A host's call whose write the store refuses pass after pass (full, or a row another
    session holds that is no job's): said once while it fails so, not at every pass, and
    once when the host's calls go through again."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    lanes = Lanes(lambda: True, lambda: None)
    answers: List[Exception] = [StoreError("/srv/store.db", "database or disk is full")] * 3 + [
        RowsLocked("/srv/store.db", "held by a session (pid %d, for %d s)" % (n, n))
        for n in range(3)]

    def call() -> None:
        if answers:
            raise answers.pop(0)

    for _ in range(7):
        assert lanes.add("gpu-a", call)
        lanes.start()
        assert lanes.wait(30)
    assert caplog.text.count("database or disk is full; the calls to gpu-a wait") == 1
    assert caplog.text.count("a call to gpu-a waits for a later pass: ") == 1, caplog.text
    assert caplog.text.count("the calls to gpu-a go through again after 6 failed tries") == 1


def test_a_call_that_fails_at_every_pass_beside_calls_that_work_is_said_once(caplog):
    """One call of a host's lane fails at every pass (a bug in launching one job), the host's
    other calls of each pass (its usage read, another job's) going through before and after
    it: the failure is said once while it lasts, with its stack, never said mended while it
    is not, and said mended once when a pass's calls all go through."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    lanes = Lanes(lambda: True, lambda: None)
    made: List[int] = []

    def bad() -> None:
        raise KeyError("a bug in one job's launch")

    for n in range(5):
        calls = [lambda n=n: made.append(n)] + ([bad] if n < 4 else []) + [
            lambda n=n: made.append(n)]
        for call in calls:
            assert lanes.add("gpu-a", call)
        lanes.start()
        assert lanes.wait(30)
    assert made == [n for n in range(5) for _ in range(2)]
    failed = [r for r in caplog.records if "a call to gpu-a failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, caplog.text
    assert caplog.text.count("the calls to gpu-a go through again") == 1, caplog.text
    assert "the calls to gpu-a go through again after 4 failed tries" in caplog.text


def test_a_call_answered_malformed_at_every_pass_is_said_once(caplog):
    """A host that answers a call malformed at every pass, in other words each time (a launch
    the pass makes again, by its key): said once while it does so, and once when the host's
    calls go through again. Before: a line at every pass."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    lanes = Lanes(lambda: True, lambda: None)
    answers = [AnswerMalformed("gpu-a", "job.launch", "job.launch.state: %d is not text" % n)
               for n in range(4)]

    def call() -> None:
        if answers:
            raise answers.pop(0)

    for _ in range(5):
        assert lanes.add("gpu-a", call)
        lanes.start()
        assert lanes.wait(30)
    assert caplog.text.count("the agent's answer to job.launch was malformed") == 1, caplog.text
    assert "gpu-a: the agent's answer to job.launch was malformed: job.launch.state: 0 is not " \
        "text; 0 calls waiting for a later pass" in caplog.text
    assert caplog.text.count("the calls to gpu-a go through again after 4 failed tries") == 1
