"""A scheduler paused in the middle of a pass (after renewing its lease, before its writes)
wakes after its lease lapsed and another scheduler took it: the store refuses its writes, which
carry the old epoch, so it changes nothing, sends nothing, and stands by without a traceback;
the new holder carries on."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from fractui.config import QueueConfig
from fractui.scheduler import Scheduler
from fractui.store.intents import Asker, ask_stop
from tests import localfleet
from tests.localfleet import wait
from tests.test_scheduler_lanes import sent_and_waiting, stalled

pytestmark = pytest.mark.slow  # a fault suite: README, "the slow fault suites"

local_fleet = localfleet.local_fleet


def test_a_paused_scheduler_that_lost_its_lease_changes_nothing_when_it_wakes(local_fleet,
                                                                              store_url, caplog):
    """On both backends: on PostgreSQL the lease lapses by the server's clock."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], lease_s=3.0,
                    store_url=store_url)
    first = f.submit("q")
    assert f.scheduler.step() and f.scheduler.settle()  # epoch 1: the first job runs
    assert f.states() == {first.id: "running"}
    assert f.scheduler.epoch == 1
    second = f.submit("q")
    ask_stop(f.store, f.store.get(first.id), "cancel", Asker("test"))

    views, paused = f.scheduler._views, []

    def pause_then_views():
        """The pass stops here, its lease just renewed, for longer than the lease lasts; the
        lease lapses and another scheduler takes it. Then the pass goes on."""
        if not paused:
            paused.append(True)
            wait(lambda: f.store.lease_holder() is None, f.states)
            assert f.store.acquire_lease("other", 60.0) == 2
        return views()

    f.scheduler._views = pause_then_views
    before = (f.store.jobs(), f.store.stale(), f.store.inventory())
    agents_before = [(j["key"], j["state"]) for j in f.agent_jobs()]
    audit_before = f.store.audit_log(limit=1000)
    caplog.set_level(logging.INFO, logger="fractui.scheduler")
    f.scheduler.start()
    try:
        wait(lambda: "this scheduler stands by" in caplog.text, lambda: caplog.text)
        assert not f.scheduler.step()  # the next passes: the lease is another's
    finally:
        f.scheduler.stop(release=False)
    assert not f.scheduler.leader
    assert (f.store.jobs(), f.store.stale(), f.store.inventory()) == before
    assert [(j["key"], j["state"]) for j in f.agent_jobs()] == agents_before  # nothing sent
    took = f.store.audit_log(limit=1000)
    assert took[:-1] == audit_before and took[-1].actor == "other"  # only the take
    refused = [r for r in caplog.records if "epoch 1; the lease's is now epoch 2" in r.message]
    assert refused and all(r.levelno == logging.INFO and not r.exc_info for r in refused)
    assert not [r for r in caplog.records if r.exc_info]

    other = Scheduler(f.config, f.store, f.fleet, name="other")  # the new holder carries on
    assert other.step() and other.epoch == 2
    assert other.settle()
    wait(lambda: other.step() and other.settle() and f.states() == {
        first.id: "cancelled", second.id: "running"}, lambda: (f.states(), f.store.audit_log()))
    keys = [j["key"] for j in f.agent_jobs()]
    assert keys.count(f.store.get(second.id).key(f.store.uid)) == 1  # launched once


def freeze_between_writes(proc: subprocess.Popen, store_url: str) -> None:
    """SIGSTOP ``proc``. On SQLite, where a process frozen inside a write holds the file's
    lock until it resumes or dies (no server ends it: docs/decisions.md), at a moment it holds
    none: frozen, then continued and frozen again if a write cannot take the lock."""
    for _ in range(50):
        os.kill(proc.pid, signal.SIGSTOP)
        if not store_url.startswith("sqlite://"):
            return
        probe = sqlite3.connect(store_url[len("sqlite://"):], timeout=0.5)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # frozen inside a write: let it finish
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the scheduler was inside a write at each of 50 tries")


def test_a_scheduler_process_stopped_past_its_lease_changes_nothing_when_continued(
        local_fleet, store_url):
    """A real ``fractui scheduler`` frozen (SIGSTOP) past its lease: a standby takes over and
    runs what is submitted meanwhile; continued (SIGCONT), the first finds the lease another's
    and writes nothing more. On both backends."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], lease_s=3.0,
                    store_url=store_url)
    run = f.scheduler_process("first")
    standby = Scheduler(f.config, f.store, f.fleet, name="standby")
    try:
        wait(lambda: (f.store.lease_holder() or ("",))[0] == "first", f.states, alive=run)
        early = f.submit("q")
        wait(lambda: f.states() == {early.id: "running"}, f.states, alive=run)
        freeze_between_writes(run, store_url)
        wait(lambda: f.store.lease_holder() is None, f.states)
        standby.start()
        wait(lambda: standby.leader, f.states)
        late = f.submit("q")
        wait(lambda: f.states()[late.id] == "running", f.states)
        taken = max(e.id for e in f.store.audit_log(limit=1000) if e.action == "lease")
        os.kill(run.pid, signal.SIGCONT)
        ask_stop(f.store, f.store.get(early.id), "cancel", Asker("test"))
        wait(lambda: f.states() == {early.id: "cancelled", late.id: "running"}, f.states)
        assert (f.store.lease_holder() or ("",))[0] == "standby"
        assert run.poll() is None  # the first runs on, as a standby
    finally:
        standby.stop()
        run.terminate()
        _, err = run.communicate(timeout=60)
    after = [e for e in f.store.audit_log(limit=1000) if e.id > taken]
    assert after and not [e for e in after if e.actor == "first"], after
    assert "Traceback" not in err, err
    keys = [j["key"] for j in f.agent_jobs()]
    assert keys.count(f.store.get(late.id).key(f.store.uid)) == 1  # launched once


def test_a_launch_answered_while_postgresql_is_down_is_recorded_once_it_is_back(
        local_fleet, pg_server, caplog):
    """The server killed (``pg_ctl stop -m immediate``) while a launch is on its way to a
    stalled agent, which then starts the job and answers: the answer cannot be recorded
    (said with the server's address, no traceback), and the job stays placed while it runs
    on the host. Once the server is back a pass launches it again by its key and the agent
    answers with the same job: one copy, recorded running with the agent's start, attempt 0,
    one launch in the audit."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)], lease_s=60.0,
                    store_url=pg_server.url(pg_server.new_database()))
    job = f.submit("q")
    key = job.key(f.store.uid)
    try:
        with stalled(f, "gpu-a"):
            assert f.scheduler.step()  # decided, and its launch sent
            wait(lambda: sent_and_waiting(f, "gpu-a"), f.states)
            pg_server.pg_ctl("stop", "-m", "immediate")
        assert f.scheduler.settle()  # the agent wakes and answers; no server takes it
        on_host = [r for r in f.agent_jobs() if r["key"] == key]
        assert [r["state"] for r in on_host] == ["running"]
    finally:
        pg_server.start()
    assert "127.0.0.1:%d" % pg_server.port in caplog.text
    assert f.store.get(job.id).state == "placed"
    f.until(lambda: f.store.get(job.id).state == "running")
    again = [r for r in f.agent_jobs() if r["key"] == key]
    assert [(r["id"], r["state"]) for r in again] == [(on_host[0]["id"], "running")]
    ran = f.store.get(job.id)
    assert (ran.agent_job, ran.started_at, ran.attempt) == (
        on_host[0]["id"], pytest.approx(on_host[0]["started_at"]), 0)
    assert [e.action for e in f.store.audit_log(job.id)].count("launch") == 1
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_scheduler_on_postgresql_goes_on_after_the_server_restarts(local_fleet, pg_server,
                                                                     caplog):
    """The server restarted (and down a while) under a running scheduler: its passes say the
    store's words, no traceback, and once the server is back it places what is submitted."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)],
                    store_url=pg_server.url(pg_server.new_database()))
    first = f.submit("q")
    f.scheduler.start()
    try:
        wait(lambda: f.states() == {first.id: "running"}, f.states)
        pg_server.stop()
        wait(lambda: "cannot reach the PostgreSQL server" in caplog.text, lambda: caplog.text)
        pg_server.start()
        second = f.submit("q")
        wait(lambda: f.states() == {first.id: "running", second.id: "running"}, f.states)
    finally:
        f.scheduler.stop()
    assert "127.0.0.1:%d" % pg_server.port in caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
