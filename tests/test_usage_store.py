"""Usage records in the store, on both backends: each attempt that held a slice has one record,
opened by the transition that starts it and closed by the one that ends it or sends it back to
wait — in the same transaction — with who submitted it, since when it waited, and the last of
what its agent sampled; a job that never held a slice has none. GPU time adds up per bucket,
and retention forgets what ended before it."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest

from fractui.config import UsageSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import AnswerMalformed
from fractui.sched.fleetview import HostView
from fractui.scheduler.lanes import Lanes
from fractui.scheduler.usage import FLUSH_S, UsageKeeper
from fractui.store import StateConflict, StoreDamaged, open_store
from fractui.store.model import (CANCELLED, DONE, FAILED, LATE, MOST_SPANS, PENDING, PLACED,
                                 PREEMPTED, REQUEUED, RUNNING, STOPPING, GpuTime, LateCopy,
                                 Sampled, Slot)
from fractui.store.sqlite import SqliteStore

SHARE = Slot("h1", (0,), None, None, 20480, 0.25)
MIG = Slot("h2", (1,), "3g.40gb", 4, None, 3 / 7)


def test_a_late_copy_is_charged_once_as_its_attempt_and_never_over_a_record_it_has(store_url):
    """A late copy (a launch that reached its agent after the store moved past its attempt)
    is charged when its stop is forgotten: a record of its attempt, outcome late, its team's,
    no wait; a second word of its end adds nothing, and an attempt that has a record (it held
    its slice as the store's) is not charged twice."""
    store = open_store(store_url)
    try:
        epoch = store.acquire_lease("sched", 60)
        job = store.submit("small", "vision", "train", ["sleep", "1"], {}, "alice@laptop")
        store.place(job.id, SHARE, "sched", "fits", epoch=epoch)
        store.requeue(job.id, (PLACED,), "sched", "its launch was lost", epoch=epoch)
        key = "fractui-%s-%d.0" % (store.uid, job.id)
        t0 = store.now()
        late = LateCopy(job.id, 0, "h1", (0,), "NVIDIA L4", None, 20480, 0.25, t0 - 30, t0,
                        Sampled(samples=2, memory_peak_mib=100, memory_mean_mib=90.0))
        store.stop_sent("h1", key, epoch=epoch)
        assert store.copy_ended("h1", key, "sched", epoch=epoch, late=late) is True
        [r] = store.usage(0, t0 + 1e6)
        assert (r.job, r.attempt, r.team, r.queue, r.user, r.host, r.gpus, r.model, r.charge,
                r.queued_at, r.started_at, r.ended_at, r.outcome, r.waits) == (
            job.id, 0, "vision", "small", "alice", "h1", (0,), "NVIDIA L4", 0.25, t0 - 30,
            t0 - 30, t0, LATE, False)
        assert r.sampled.memory_mean_mib == 90.0
        assert store.copy_ended("h1", key, "sched", epoch=epoch, late=late) is False
        assert store.usage(0, t0 + 1e6) == [r]
        assert [e.action for e in store.audit_log(job.id)].count("late-copy") == 1
        # an attempt that held its slice as the store's keeps its own record
        store.place(job.id, SHARE, "sched", "fits", epoch=epoch)
        store.started(job.id, "j2", None, "sched", "started", epoch=epoch)
        store.requeue(job.id, (RUNNING,), "sched", "requeued by ops", epoch=epoch)
        key = "fractui-%s-%d.1" % (store.uid, job.id)
        store.stop_sent("h1", key, epoch=epoch)
        assert store.copy_ended("h1", key, "sched", epoch=epoch, late=LateCopy(
            job.id, 1, "h1", (0,), None, None, 20480, 0.25, t0, t0 + 1)) is True
        assert [(u.attempt, u.outcome) for u in store.usage(0, t0 + 1e6)] == [
            (0, LATE), (1, REQUEUED)]
        assert [e.action for e in store.audit_log(job.id)].count("late-copy") == 1
    finally:
        store.close()


def test_each_attempt_that_held_a_slice_has_one_record_opened_and_closed_with_its_changes(
        store_url):
    store = open_store(store_url)
    try:
        t0 = store.now()
        job = store.submit("small", "vision", "train", ["sleep", "1"], {}, "alice@laptop")
        store.place(job.id, SHARE, "sched", "fits")
        assert store.usage(0, t0 + 1e6) == []  # placed is not yet held
        store.started(job.id, "j1", None, "sched", "started", model="NVIDIA L4")
        [open_] = store.usage(0, t0 + 1e6)
        assert (open_.job, open_.attempt, open_.user, open_.team, open_.queue) == (
            job.id, 0, "alice", "vision", "small")
        assert (open_.host, open_.gpus, open_.model, open_.memory_mib, open_.charge) == (
            "h1", (0,), "NVIDIA L4", 20480, 0.25)
        assert open_.queued_at == job.submitted_at <= open_.started_at <= store.now()
        assert open_.ended_at is None and open_.outcome is None
        store.keep_usage({(job.id, 0): Sampled(samples=4, since=t0 + 1, until=t0 + 16,
                                                memory_peak_mib=9000, memory_mean_mib=6000.5,
                                                util_samples=4, util_mean=37.5)})
        [kept] = store.usage(0, t0 + 1e6)
        assert (kept.sampled.memory_peak_mib, kept.sampled.util_mean) == (9000, 37.5)

        # preempted: the attempt's record closes as such, the next attempt waits from then
        store.stopping(job.id, (RUNNING,), "preempt", "sched", "for a team within quota")
        store.requeue(job.id, (STOPPING,), "sched", "preempted",
                      sampled=Sampled(samples=6, memory_peak_mib=9100, memory_mean_mib=6100.0,
                                      util_samples=6, util_mean=40.0))
        requeued_at = store.get(job.id).updated_at
        store.place(job.id, MIG, "sched", "fits")
        store.started(job.id, "j2", requeued_at + 5, "sched", "started",
                      model="NVIDIA H100 80GB HBM3")
        store.ended(job.id, (RUNNING,), DONE, None, "sched", "exited 0", "end", exit_code=0,
                    ended_at=requeued_at + 65,
                    sampled=Sampled(samples=12, memory_peak_mib=30000, memory_mean_mib=20000.0,
                                    util_note="not reported by NVML for MIG instances"))
        first, second = store.usage(0, t0 + 1e6)
        assert (first.outcome, first.ended_at, first.sampled.util_mean) == (
            PREEMPTED, requeued_at, 40.0)
        assert (second.attempt, second.profile, second.queued_at, second.started_at) == (
            1, "3g.40gb", requeued_at, requeued_at + 5)
        assert (second.outcome, second.ended_at, second.waited_s) == (DONE, requeued_at + 65,
                                                                      5.0)
        assert second.sampled.util_mean is None
        assert second.sampled.util_note == "not reported by NVML for MIG instances"
        # a record of the range only if it held its slice in it
        assert [r.attempt for r in store.usage(requeued_at + 6, requeued_at + 7)] == [1]
        assert store.usage(requeued_at + 66, requeued_at + 99) == []
    finally:
        store.close()


def test_a_wait_goes_on_through_placements_refused_before_they_started(store_url):
    """A refused or undone placement held nothing: the attempt that starts after it waited
    since the submission, or since the last attempt that held a slice let go of it."""
    store = open_store(store_url)
    try:
        job = store.submit("q", "vision", "refused", ["x"], {}, "ann@laptop")
        store.place(job.id, SHARE, "sched", "fits")
        store.requeue(job.id, (PLACED,), "sched", "refused by h1: busy")
        store.place(job.id, SHARE, "sched", "fits")
        start = store.now() + 1000
        store.started(job.id, "j1", start, "sched", "started")
        [record] = store.usage(0, 9e12)
        assert (record.queued_at, record.waited_s) == (job.submitted_at,
                                                       start - job.submitted_at)

        again = store.submit("q", "vision", "preempted", ["x"], {}, "ann@laptop")
        store.place(again.id, SHARE, "sched", "fits")
        store.started(again.id, "j2", None, "sched", "started")
        store.stopping(again.id, (RUNNING,), "preempt", "sched", "room")
        store.requeue(again.id, (STOPPING,), "sched", "preempted")
        store.place(again.id, MIG, "sched", "fits")
        store.requeue(again.id, (PLACED,), "sched", "not launched: h2 cordoned")
        store.place(again.id, MIG, "sched", "fits")
        restart = store.now() + 500
        store.started(again.id, "j3", restart, "sched", "started")
        first, second = [r for r in store.usage(0, 9e12) if r.job == again.id]
        assert first.outcome == PREEMPTED and first.ended_at is not None
        assert (second.attempt, second.queued_at) == (2, first.ended_at)
        assert second.waited_s == restart - first.ended_at
    finally:
        store.close()


def test_a_start_recorded_after_a_stop_was_asked_keeps_the_job_stopping_and_charges_it(
        store_url):
    """A stop asked while the launch was in flight: the start the agent reports afterwards is
    recorded (the attempt ran: its record opens from the agent's start) and the job stays
    stopping; a second report of the start is a conflict, not a second record."""
    store = open_store(store_url)
    try:
        job = store.submit("q", "vision", "raced", ["x"], {}, "ann@laptop")
        store.place(job.id, SHARE, "sched", "fits")
        store.stopping(job.id, (PLACED,), "cancel", "ann", "cancelled by ann")
        start = store.now() + 10
        ran = store.started(job.id, "j1", start, "sched", "started on h1")
        assert (ran.state, ran.stop_intent, ran.agent_job, ran.started_at) == (
            STOPPING, "cancel", "j1", start)
        with pytest.raises(StateConflict, match="its start recorded"):
            store.started(job.id, "j1", start, "sched", "started on h1")
        store.ended(job.id, (STOPPING,), CANCELLED, "cancelled by ann", "sched", "cancelled",
                    "end", ended_at=start + 2)
        [record] = store.usage(0, 9e12)
        assert (record.started_at, record.ended_at, record.outcome, record.charge) == (
            start, start + 2, CANCELLED, 0.25)
        assert [e.action for e in store.audit_log(job.id)] == [
            "submit", "decide", "cancel", "launch", "end"]
    finally:
        store.close()


def test_jobs_that_never_held_a_slice_have_no_record_and_each_end_is_its_outcome(store_url):
    store = open_store(store_url)
    try:
        cancelled = store.submit("q", "t", "waits", ["x"], {}, "bob")
        store.ended(cancelled.id, (PENDING,), CANCELLED, "cancelled", "bob", "no", "cancel")
        refused = store.submit("q", "t", "refused", ["x"], {}, "bob")
        store.place(refused.id, SHARE, "sched", "fits")
        store.ended(refused.id, (PLACED,), FAILED, "cannot start", "sched", "no", "failed")
        assert store.usage(0, 9e12) == []
        ends = {}
        for end in (DONE, FAILED, CANCELLED, REQUEUED):
            job = store.submit("q", "t", end, ["x"], {}, "bob")
            store.place(job.id, SHARE, "sched", "fits")
            store.started(job.id, "j", None, "sched", "started")
            if end == REQUEUED:
                store.stopping(job.id, (RUNNING,), "requeue", "bob", "again")
                store.requeue(job.id, (STOPPING,), "sched", "again")
            elif end == CANCELLED:
                store.stopping(job.id, (RUNNING,), "cancel", "bob", "enough")
                store.ended(job.id, (STOPPING,), CANCELLED, "enough", "sched", "enough", "end")
            else:
                store.ended(job.id, (RUNNING,), end, None, "sched", end, "end")
            ends[job.id] = end
        assert {r.job: r.outcome for r in store.usage(0, 9e12)} == ends
        assert all(r.ended_at is not None and r.ended_at >= r.started_at
                   for r in store.usage(0, 9e12))
    finally:
        store.close()


def test_gpu_time_adds_up_per_bucket_and_retention_forgets_what_ended_before_it(store_url):
    store = open_store(store_url)
    try:
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", online_s=30, idle_s=10, held_s=5,
                                     util_s=3, measured_s=30)])
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", online_s=20, idle_s=0, held_s=20,
                                     util_s=15, measured_s=20),
                             GpuTime("h1", 0, 900.0, "L4", online_s=5)])
        assert store.gpu_time(0, 9e12) == [
            GpuTime("h1", 0, 600.0, "L4", 50.0, 10.0, 25.0, 18.0, 50.0),
            GpuTime("h1", 0, 900.0, "L4", 5.0, 0.0, 0.0, 0.0, 0.0)]
        assert [t.bucket for t in store.gpu_time(700, 9e12)] == [900.0]
        old = store.submit("q", "t", "old", ["x"], {}, "bob")
        store.place(old.id, SHARE, "sched", "fits")
        store.started(old.id, "j", 100.0, "sched", "started")
        store.ended(old.id, (RUNNING,), DONE, None, "sched", "done", "end", ended_at=200.0)
        running = store.submit("q", "t", "runs", ["x"], {}, "bob")
        store.place(running.id, SHARE, "sched", "fits")
        store.started(running.id, "j", 150.0, "sched", "started")
        assert store.prune_usage(800.0) == 2  # the ended attempt and the bucket of 600
        assert [r.job for r in store.usage(0, 9e12)] == [running.id]  # still running: kept
        assert [t.bucket for t in store.gpu_time(0, 9e12)] == [900.0]
    finally:
        store.close()


def test_gpu_time_widens_when_it_was_seen_and_a_bucket_kept_without_it_stays_unknown(
        store_url):
    """Two holders' sums of one bucket: seen 610 -> 640 and 700 -> 760 read as seen 610 ->
    760 (the report counts its seconds over that); one sum of a bucket kept before migration
    0019/0035 (seen not known) leaves that bucket's not known whatever is added to it, as its
    earlier seconds may lie anywhere in it."""
    store = open_store(store_url)
    try:
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 30, seen_from=610, seen_to=640),
                             GpuTime("h1", 1, 600.0, "L4", 30)])
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 60, seen_from=700, seen_to=760),
                             GpuTime("h1", 1, 600.0, "L4", 60, seen_from=700, seen_to=760)])
        assert [(t.gpu, t.online_s, t.seen_from, t.seen_to) for t in store.gpu_time(0, 9e12)
                ] == [(0, 90.0, 610.0, 760.0), (1, 90.0, None, None)]
    finally:
        store.close()


def test_a_usage_row_held_leaves_only_its_jobs_samples_for_the_next_write(pg_server, caplog):
    """PostgreSQL, a psql session left open on one attempt's usage record: what the agents
    sampled of the other running jobs is kept at the lease holder's write, the held one's is
    left (logged once while it stays held, not at each write) and kept at a write after the
    session ends (logged once)."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    url = pg_server.url(pg_server.new_database())
    store = open_store(url)
    clock = [1000.0]
    keeper = UsageKeeper(UsageSettings(), store, lambda host, method, params: {"jobs": [
        {"key": j.key(store.uid), "usage": {"samples": 3, "memory_peak_mib": 100 * j.id}}
        for j in jobs]}, Lanes(lambda: True, lambda: None), clock=lambda: clock[0],
        ticks=lambda: clock[0])
    psql = pg_server.connect(url.rsplit("/", 1)[1])
    try:
        jobs = []
        for name in ("held", "other"):
            job = store.submit("small", None, name, ["sleep", "1"], {}, "alice")
            store.place(job.id, SHARE, "sched", "fits")
            jobs.append(store.started(job.id, "a-" + name, None, "sched", "started"))
        epoch = store.acquire_lease("sched", 60)

        def peaks() -> dict:
            return {r.job: r.sampled.memory_peak_mib for r in store.usage(0, store.now() + 1)}

        psql.execute("BEGIN")
        psql.execute("SELECT * FROM usage WHERE job = %s FOR UPDATE", (jobs[0].id,))
        keeper._read("h1", {j.key(store.uid): j for j in jobs})
        keeper.turn(lambda: [], lambda: [], epoch)
        assert peaks() == {jobs[0].id: None, jobs[1].id: 100 * jobs[1].id}
        clock[0] += FLUSH_S  # the next write: still held, said no more
        keeper.turn(lambda: [], lambda: [], epoch)
        assert peaks()[jobs[0].id] is None
        assert caplog.text.count("job %d's usage is kept by a later write: " % jobs[0].id) == 1
        psql.execute("ROLLBACK")
        clock[0] += FLUSH_S  # the write after the session ends
        keeper.turn(lambda: [], lambda: [], epoch)
        assert peaks() == {j.id: 100 * j.id for j in jobs}
        assert caplog.text.count("job %d's usage is kept again after 2 failed tries"
                                 % jobs[0].id) == 1, caplog.text
    finally:
        psql.close()
        store.close()


def test_a_usage_read_that_fails_at_every_refresh_is_said_once_and_once_when_it_mends(
        tmp_path, caplog):
    """An agent that answers every read of its running jobs' usage with an error: said once,
    not at every refresh for as long as it lasts (the admin's journal), and once when a read
    goes through again."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    store = open_store("sqlite:///%s" % (tmp_path / "store.db"))
    answers = [AgentCallError("job.list", {"code": -32000, "message": "no jobs dir"}, "h1")] * 5

    def call(host: str, method: str, params: dict) -> dict:
        if answers:
            raise answers.pop()
        return {"jobs": []}

    keeper = UsageKeeper(UsageSettings(), store, call, Lanes(lambda: True, lambda: None))
    try:
        for _ in range(7):  # five refreshes fail, two go through
            keeper._read("h1", {})
    finally:
        store.close()
    failed = "reading the running jobs' usage on h1: no jobs dir; read again every"
    assert caplog.text.count(failed) == 1, caplog.text
    assert caplog.text.count("the running jobs' usage on h1 is read again after 5 failed "
                             "tries") == 1, caplog.text


def test_a_usage_read_that_failed_is_said_mended_once_no_job_runs_on_its_host(tmp_path, caplog):
    """A host whose read of its running jobs' usage failed, and that then runs none (they
    ended, or were requeued while it was away), is read no more: said once, as a read that
    goes through would be. While one still runs there, unreachable, the failure stands.
    Before: never said mended, so the failure stood in the log for ever."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    store = open_store("sqlite:///%s" % (tmp_path / "store.db"))
    clock = [1000.0]

    def call(host: str, method: str, params: dict) -> dict:
        raise AgentCallError("job.list", {"code": -32000, "message": "no jobs dir"}, host)

    keeper = UsageKeeper(UsageSettings(), store, call, Lanes(lambda: True, lambda: None),
                         clock=lambda: clock[0], ticks=lambda: clock[0])
    try:
        job = store.submit("small", None, "train", ["sleep", "1"], {}, "alice")
        store.place(job.id, SHARE, "sched", "fits")
        job = store.started(job.id, "a-1", None, "sched", "started")
        epoch = store.acquire_lease("sched", 60)
        keeper._read("h1", {job.key(store.uid): job})
        away = HostView("h1", "offline", None, None, {})
        for jobs in ([job], [job], [], []):  # unreachable with its job, twice; then none
            keeper.turn(lambda: [away], lambda jobs=jobs: jobs, epoch)
            clock[0] += UsageSettings().refresh_s
            if jobs:
                assert "no longer read" not in caplog.text
    finally:
        store.close()
    assert caplog.text.count("reading the running jobs' usage on h1: no jobs dir") == 1
    assert caplog.text.count("the running jobs' usage on h1 is no longer read: none of the "
                             "store's runs there after 1 failed try") == 1, caplog.text


def test_a_usage_read_answered_malformed_at_every_refresh_is_said_once(tmp_path, caplog):
    """A host that answers every read of its running jobs' usage malformed, in other words
    each time, on the lane as the scheduler runs it: said once while it does so, and once
    when a read goes through. Before: left to the lane, which said a line at every refresh."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    store = open_store("sqlite:///%s" % (tmp_path / "store.db"))
    answers = [AnswerMalformed("h1", "job.list", "job.list.jobs: %d is not a list" % n)
               for n in range(5)]  # in the host's words, each time others
    clock = [1000.0]

    def call(host: str, method: str, params: dict) -> dict:
        if answers:
            raise answers.pop()
        return {"jobs": []}

    lanes = Lanes(lambda: True, lambda: None)
    keeper = UsageKeeper(UsageSettings(), store, call, lanes, clock=lambda: clock[0],
                         ticks=lambda: clock[0])
    try:
        job = store.submit("small", None, "train", ["sleep", "1"], {}, "alice")
        store.place(job.id, SHARE, "sched", "fits")
        job = store.started(job.id, "a-1", None, "sched", "started")
        epoch = store.acquire_lease("sched", 60)
        here = HostView("h1", "online", {}, {"gpus": []}, {})
        for _ in range(7):  # five refreshes fail, two go through
            keeper.turn(lambda: [here], lambda: [job], epoch)
            lanes.start()
            assert lanes.wait(30)
            clock[0] += UsageSettings().refresh_s
    finally:
        store.close()
    assert "waiting for a later pass" not in caplog.text, caplog.text
    assert caplog.text.count("reading the running jobs' usage on h1: ") == 1, caplog.text
    assert caplog.text.count("the running jobs' usage on h1 is read again after 5 failed "
                             "tries") == 1, caplog.text


def test_gpu_time_keeps_each_stretch_seen_and_joins_those_that_meet_across_writes(store_url):
    """Two writes of one bucket: seen 610 -> 640, then 640 -> 660 (the same stretch, written
    at the next flush) and 700 -> 760 (after a gap), two rows of one bucket in one write
    (the store takes any rows; the clock hands over one a bucket): kept as 610 -> 660 and
    700 -> 760. A
    bucket whose stretches were not kept (before migration 0020/0037) stays without them
    whatever is added to it, its envelope widened as before."""
    store = open_store(store_url)
    try:
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                     seen_spans=((610, 640),)),
                             GpuTime("h1", 1, 600.0, "L4", 30, seen_from=610, seen_to=640)])
        store.keep_gpu_time([GpuTime("h1", g, 600.0, "L4", seconds, seen_from=start,
                                     seen_to=end, seen_spans=((start, end),))
                             for start, end, seconds in ((640, 660, 20), (700, 760, 60))
                             for g in (0, 1)])
        assert [(t.gpu, t.online_s, t.seen_from, t.seen_to, t.seen_spans)
                for t in store.gpu_time(0, 9e12)] == [
            (0, 110.0, 610.0, 760.0, ((610.0, 660.0), (700.0, 760.0))),
            (1, 110.0, 610.0, 760.0, None)]
    finally:
        store.close()


def _owner_sql(store_url: str, request: pytest.FixtureRequest, statement: str) -> None:
    """``statement`` on the store's database as its owner, past fractui (a hand's write, a
    damaged row)."""
    if store_url.startswith("sqlite://"):
        db = sqlite3.connect(store_url[len("sqlite://"):])
        db.execute(statement)
        db.commit()
        db.close()
        return
    psql = request.getfixturevalue("pg_server").connect(store_url.rsplit("/", 1)[1])
    try:
        psql.execute(statement)
    finally:
        psql.close()


def test_a_damaged_bucket_row_stops_no_other_gpus_time_being_kept(store_url, request):
    """One GPU's bucket row whose stretches are damaged: the other GPUs' time of that bucket
    is kept (a write read and parsed every row of its buckets, so one damaged row stopped
    every GPU's GPU time being kept); a write to the damaged row itself is refused as the
    store's damage, naming it."""
    store = open_store(store_url)
    try:
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                     seen_spans=((610, 640),))])
        _owner_sql(store_url, request, "UPDATE gpu_time SET seen_spans = '[[610, 640'")
        store.keep_gpu_time([GpuTime(h, g, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                     seen_spans=((610, 640),)) for h, g in (("h1", 1),
                                                                            ("h2", 0))])
        with pytest.raises(StoreDamaged, match="the GPU time of h1 gpu 0 at 600"):
            store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 30, seen_from=640,
                                         seen_to=670, seen_spans=((640, 670),))])
        _owner_sql(store_url, request, "UPDATE gpu_time SET seen_spans = NULL WHERE gpu = 0 "
                   "AND host = 'h1'")
        assert [(t.host, t.gpu, t.online_s, t.seen_spans) for t in store.gpu_time(0, 9e12)
                ] == [("h1", 0, 30.0, None), ("h1", 1, 30.0, ((610.0, 640.0),)),
                      ("h2", 0, 30.0, ((610.0, 640.0),))]
    finally:
        store.close()


def test_a_damaged_bucket_row_leaves_out_its_host_and_the_others_are_kept(tmp_path, caplog):
    """The lease holder's writes, one GPU's row of the bucket damaged: the other hosts' GPU
    time is kept at each write, the damaged row's host left out and said once, not put back
    for ever (every write failed, and every GPU's time was held in memory, growing, while
    the damaged bucket stayed among those written)."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    path = tmp_path / "store.db"
    clock = [1200.0]
    store = SqliteStore(str(path), clock=lambda: clock[0])  # (the keeper dates its buckets
    # by the store's clock, the scheduler's _store_now: here one and the same)
    keeper = UsageKeeper(UsageSettings(bucket_s=300), store, lambda *a: {},
                         Lanes(lambda: True, lambda: None), clock=lambda: clock[0],
                         ticks=lambda: clock[0])
    views = [HostView(h, "online", {"gpus": [{"index": 0, "name": "L4"}]}, {})
             for h in ("h1", "h2")]
    try:
        epoch = store.acquire_lease("sched", 600)
        store.keep_gpu_time([GpuTime("h1", 0, 1200.0, "L4", 1, seen_from=1200,
                                     seen_to=1201, seen_spans=((1200, 1201),))])
        db = sqlite3.connect(str(path))
        db.execute("UPDATE gpu_time SET seen_spans = 'oops'")
        db.commit()
        db.close()
        while clock[0] <= 1560:  # six writes within the damaged bucket, one past it
            keeper.turn(lambda: views, lambda: [], epoch)
            clock[0] += 5
        db = sqlite3.connect(str(path))
        kept = db.execute("SELECT host, bucket, online_s FROM gpu_time ORDER BY host, bucket"
                          ).fetchall()
        db.close()
        assert kept == [("h1", 1200.0, 1.0), ("h1", 1500.0, 60.0),
                        ("h2", 1200.0, 300.0), ("h2", 1500.0, 60.0)], kept
        assert caplog.text.count("the GPU time of h1 gpu 0 at 1200.0") == 1, caplog.text
        assert keeper.gpus.pending == {}
    finally:
        store.close()


def test_a_bucket_keeps_at_most_most_spans_stretches_joined_across_writes(store_url):
    """Two writes of one GPU's bucket, 20 stretches each between the other's: the row keeps
    MOST_SPANS, the nearest made one, its first look and its last as they were."""
    store = open_store(store_url)
    try:
        for parity in (0, 1):
            spans = tuple((600.0 + 10 * i + 5 * parity, 601.0 + 10 * i + 5 * parity)
                          for i in range(0, 40, 2))
            store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 20, seen_from=spans[0][0],
                                         seen_to=spans[-1][1], seen_spans=spans)])
        [t] = store.gpu_time(0, 9e12)
        assert len(t.seen_spans) == MOST_SPANS
        assert (t.seen_spans[0][0], t.seen_spans[-1][1]) == (600.0, 986.0)
    finally:
        store.close()


def test_a_bucket_row_deleted_by_hand_as_it_is_written_is_written_afresh(pg_server):
    """PostgreSQL, an admin's psql session deleting a GPU's bucket row (outside fractui, no
    write lock) while the lease holder writes that bucket: the write waits for the delete and
    writes the row afresh, its stretches its own. It joined the stretches it read before the
    delete was committed into the new row, outside its first and last look: a row every
    report then called damaged."""
    name = pg_server.new_database()
    store = open_store(pg_server.url(name))
    psql = pg_server.connect(name)
    failed: list = []

    def write() -> None:
        try:
            store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 60, seen_from=700, seen_to=760,
                                         seen_spans=((700, 760),))])
        except Exception as err:  # (said by the assertion below)
            failed.append(err)
    try:
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                     seen_spans=((610, 640),))])
        psql.execute("BEGIN")
        psql.execute("DELETE FROM gpu_time")
        writer = threading.Thread(target=write)
        writer.start()
        for _ in range(2000):  # until the write waits for the delete's row lock
            if psql.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND datname = %s", (name,)).fetchone()[0]:
                break
            writer.join(0.001)
        psql.execute("COMMIT")
        writer.join()
        assert failed == []
        assert [(t.online_s, t.seen_from, t.seen_to, t.seen_spans)
                for t in store.gpu_time(0, 9e12)] == [(60.0, 700.0, 760.0, ((700.0, 760.0),))]
    finally:
        psql.close()
        store.close()


def test_a_write_of_one_hosts_gpu_time_waits_for_no_other_hosts_row(pg_server):
    """PostgreSQL, a psql session holding one host's bucket row: a write of another host's
    GPU time of that bucket (the lease holder's, host by host where the store refuses one
    host's value) is kept, not held up by it: the rows a write reads and holds are its own
    hosts' (it read, and held, every host's row of its buckets)."""
    name = pg_server.new_database()
    store = open_store(pg_server.url(name))
    psql = pg_server.connect(name)
    try:
        store.keep_gpu_time([GpuTime(h, 0, 600.0, "L4", 30, seen_from=610, seen_to=640,
                                     seen_spans=((610, 640),)) for h in ("h1", "h2")])
        psql.execute("BEGIN")
        psql.execute("SELECT * FROM gpu_time WHERE host = 'h2' FOR UPDATE")
        store.keep_gpu_time([GpuTime("h1", 0, 600.0, "L4", 20, seen_from=640, seen_to=660,
                                     seen_spans=((640, 660),))])
        psql.execute("ROLLBACK")
        assert [(t.host, t.online_s, t.seen_spans) for t in store.gpu_time(0, 9e12)] == [
            ("h1", 50.0, ((610.0, 660.0),)), ("h2", 30.0, ((610.0, 640.0),))]
    finally:
        psql.close()
        store.close()
