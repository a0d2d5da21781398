"""The lease holder's usage bookkeeping on simulated hosts with real jobs: each attempt's
record opened and closed with its job (the GPU model as its host names it) and carrying what
its agent sampled (read while it runs, and the last of it at its end), each GPU's time written
per bucket — online, idle, held as charged — by the scheduler's own loop."""

from __future__ import annotations

import sys
import time

import pytest

from fractui.config import QueueConfig, UsageSettings
from fractui.scheduler import usage as keeper
from fractui.scheduler import Scheduler
from fractui.store.model import DONE, RUNNING, Slot
from tests import localfleet
from tests.localfleet import wait


def simload(mib: int, util: int, seconds: float) -> list:
    return [sys.executable, "-m", "remote_agent.simload", "--mem-mib", str(mib), "--util",
            str(util), "--util-swing", "0", "--seconds", str(seconds)]

local_fleet = localfleet.local_fleet


def test_the_holder_keeps_each_attempts_record_and_each_gpus_time(local_fleet, monkeypatch):
    monkeypatch.setattr(keeper, "LOOK_S", 0.2)
    monkeypatch.setattr(keeper, "FLUSH_S", 1.0)
    f = local_fleet({"gpu-a": "3xL4"}, [QueueConfig(name="whole", gpus=1),
                                        QueueConfig(name="quarter", gpu=0.25)],
                    usage=UsageSettings(bucket_s=10, refresh_s=1),
                    agent={"usage_sample_s": 0.5})
    short = f.submit("quarter", argv=simload(1000, 20, 3))
    long = f.submit("whole", argv=simload(3000, 40, 600))
    f.scheduler.start()
    try:
        wait(lambda: f.store.get(short.id).state == DONE, f.states)
        wait(lambda: sum(t.online_s for t in f.store.gpu_time(0, 9e12)) > 9, f.states)
        wait(lambda: {r.job: r.sampled.samples for r in f.store.usage(0, 9e12)}.get(
            long.id, 0) > 2, lambda: f.store.usage(0, 9e12))
    finally:
        f.scheduler.stop()
    records = {r.job: r for r in f.store.usage(0, 9e12)}
    done, runs = records[short.id], records[long.id]
    assert (done.outcome, done.charge, done.model) == (DONE, 0.25, "NVIDIA L4")
    assert done.ended_at - done.started_at == pytest.approx(3, abs=1.5)
    # what the agents sampled: the last of it with the end, and read while a job runs
    # (a sample taken as a job starts may see it before it registered its use: at most one)
    for r, mib, util in ((done, 1000, 20), (runs, 3000, 40)):
        s = r.sampled
        assert s.samples >= 2 and s.memory_peak_mib == mib and s.util_note is None
        assert mib * (s.samples - 1) / s.samples <= s.memory_mean_mib <= mib
        assert util * (s.samples - 1) / s.samples <= s.util_mean <= util
    assert (runs.outcome, runs.ended_at, runs.charge) == (None, None, 1.0)
    times = f.store.gpu_time(0, 9e12)
    assert {t.bucket % 10 for t in times} == {0.0} and {t.model for t in times} == {"NVIDIA L4"}
    per_gpu = {}
    for t in times:
        was = per_gpu.get(t.gpu, (0.0, 0.0, 0.0))
        per_gpu[t.gpu] = (was[0] + t.online_s, was[1] + t.idle_s, was[2] + t.held_s)
    online, idle, held = per_gpu[runs.gpus[0]]
    # the whole GPU: not idle from its placement, held from its start (as its record says;
    # test_usage_gputime has the seconds exactly)
    assert online > 0 and idle == 0 and 0 < held <= online
    free = [g for g in range(3) if g not in runs.gpus + done.gpus]
    assert free and all(per_gpu[g][1] == per_gpu[g][0] > 0 for g in free)  # nothing there


@pytest.mark.parametrize("answer", ["kept", "lost"])
@pytest.mark.parametrize("intent", ["cancel", "requeue"])
def test_a_stop_asked_while_the_launch_is_in_flight_charges_the_attempt_that_ran(
        local_fleet, intent, answer):
    """The scheduler sent the launch, the agent started the job, and the user's cancel (or
    requeue) landed before the store recorded it running — then the launch's answer came
    (kept), or was lost and the job is found on its host by a later pass (lost). The attempt
    ran, so it is charged for the time it held its slice, from the agent's start to its
    stop; a requeued one waits anew from its requeue, and the start is audited."""
    from fractui.fleet.host import AnswerLost
    from fractui.store.intents import Asker, ask_stop

    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    job = f.submit("quarter", argv=localfleet.POLITE)
    executor = f.scheduler.executor
    sent = executor.call

    def launch_then_stop(host, method, params):
        answer_ = sent(host, method, params)
        if method == "job.launch" and params["key"].endswith(".0"):  # started on the host;
            ask_stop(f.store, f.store.get(job.id), intent, Asker("alice"))  # store: placed
            if answer == "lost":
                raise AnswerLost(host, method, "cut")
        return answer_
    executor.call = launch_then_stop
    first = [(job.id, 0)]
    f.until(lambda: [(r.job, r.attempt) for r in f.store.usage(0, 9e12)
                     if r.ended_at is not None] == first or
            f.store.get(job.id).state == "cancelled")
    ran = [r for r in f.agent_jobs() if r["key"] == "fractui-%s-%d.0" % (f.store.uid, job.id)]
    assert len(ran) == 1 and ran[0]["started_at"] is not None, ran
    records = [r for r in f.store.usage(0, 9e12) if r.attempt == 0]
    assert [(r.job, r.outcome) for r in records] == [
        (job.id, "cancelled" if intent == "cancel" else "requeued")]
    assert records[0].started_at == pytest.approx(ran[0]["started_at"])
    assert records[0].ended_at >= ran[0]["started_at"] and records[0].charge == 0.25
    if intent == "cancel":
        assert records[0].ended_at == pytest.approx(ran[0]["ended_at"])
    else:  # it ran: its next wait starts from its requeue, not from its submit
        assert f.store.get(job.id).waiting_since == pytest.approx(records[0].ended_at)
    assert "launch" in [e.action for e in f.store.audit_log(job.id)]


def test_an_attempt_that_ran_and_ended_before_its_start_was_recorded_is_charged(local_fleet):
    """The launch's answer was lost (the holder died, or the connection did) and the job ran
    to its end before a pass found it: its record is opened from the agent's start and closed
    with its end, not left out."""
    from fractui.fleet.host import AnswerLost

    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    job = f.submit("quarter", argv=localfleet.sleeper(0.5))
    executor = f.scheduler.executor
    sent = executor.call

    def launch_lost(host, method, params):
        answer = sent(host, method, params)
        if method == "job.launch":
            wait(lambda: [r["state"] for r in f.agent_jobs()] == ["exited"], f.agent_jobs)
            raise AnswerLost(host, method, "cut")
        return answer
    executor.call = launch_lost
    f.until(lambda: f.states()[job.id] == DONE)
    ran = f.agent_jobs()[0]
    records = f.store.usage(0, 9e12)
    assert [(r.job, r.attempt, r.outcome) for r in records] == [(job.id, 0, DONE)]
    assert (records[0].started_at, records[0].ended_at) == pytest.approx(
        (ran["started_at"], ran["ended_at"]))


@pytest.mark.parametrize("ahead", [2 * 86400.0, -2 * 86400.0], ids=["ahead", "behind"])
def test_the_retention_forgets_usage_by_the_stores_clock(local_fleet, monkeypatch, ahead):
    """The usage records' ends are the store's times, so the lease holder's prune cuts them
    by the store's clock (``Store.now`` read at the prune): by its own, a holder two days
    ahead with [usage] keep_days = 1 forgot an attempt that ended 12 h ago, and one two days
    behind kept one that ended 36 h ago. The GPU time's buckets are dated by the store's
    clock too (as the holder knows it), so its next prune keeps those it just wrote: dated
    by its own, a holder two days behind forgot every bucket at each prune."""
    monkeypatch.setattr(keeper, "LOOK_S", 0.2)
    monkeypatch.setattr(keeper, "FLUSH_S", 1.0)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    usage=UsageSettings(keep_days=1, bucket_s=10))
    now = f.store.now()
    ended = {}
    for hours in (12, 36):
        job = f.submit("whole")
        f.store.place(job.id, Slot("gpu-a", (0,), None, None, None, 1.0), "test", "fits")
        f.store.started(job.id, "a%d" % job.id, now - hours * 3600 - 60, "test", "started")
        f.store.ended(job.id, (RUNNING,), DONE, 0, "test", "done", "end",
                      ended_at=now - hours * 3600)
        ended[hours] = job.id
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="test",
                            clock=lambda: time.time() + ahead)
    prunes = []
    prune = f.store.prune_usage
    monkeypatch.setattr(f.store, "prune_usage", lambda *a, **k: prunes.append(prune(*a, **k)))
    f.scheduler.start()
    try:
        wait(lambda: f.store.usage_forgotten_before() is not None, f.states)
        wait(lambda: sum(t.online_s for t in f.store.gpu_time(0, 9e12)) > 2, f.states)
        f.scheduler.usage._pruned = float("-inf")  # the next hour's prune, due now
        wait(lambda: len(prunes) == 2, f.states)
    finally:
        f.scheduler.stop()
    assert [r.job for r in f.store.usage(0, 9e12)] == [ended[12]]
    assert f.store.usage_forgotten_before() == pytest.approx(now - 86400, abs=60)
    assert prunes[1] == 0 and f.store.gpu_time(0, 9e12)  # (none forgotten at the second)
    assert {t.bucket for t in f.store.gpu_time(0, 9e12)} <= {
        b - b % 10 for b in range(int(now) - 20, int(f.store.now()) + 10)}


@pytest.mark.parametrize("ahead", [2 * 86400.0, -2 * 86400.0], ids=["ahead", "behind"])
def test_gpu_time_is_dated_by_the_stores_clock_whatever_the_holders(local_fleet, monkeypatch,
                                                                    ahead):
    """Each GPU's time is read by `report` and forgotten by the retention at the store's
    clock: a lease holder two days ahead dated its buckets two days on (no report of the last
    day had them), one two days behind wrote them past the retention of a day (forgotten at
    the next prune). They are dated by the store's clock, as the holder reads it."""
    monkeypatch.setattr(keeper, "LOOK_S", 0.2)
    monkeypatch.setattr(keeper, "FLUSH_S", 1.0)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)],
                    usage=UsageSettings(bucket_s=10, keep_days=1))
    begun = f.store.now()
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="test",
                            clock=lambda: time.time() + ahead)
    f.scheduler.start()
    try:
        wait(lambda: sum(t.online_s for t in f.store.gpu_time(0, 9e12)) > 2, f.states)
    finally:
        f.scheduler.stop()
    times = f.store.gpu_time(0, 9e12)
    assert times and all(begun - 10 <= t.bucket <= f.store.now() for t in times), [
        t.bucket - begun for t in times]
