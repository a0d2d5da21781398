"""Job faults against capacity, with the real scheduler on real simulated hosts: a job that can
never start fails once with the agent's words; memory used outside fractui is not offered; a
host that refuses a job has it sent elsewhere, the host and its words named; the refusals a job
may meet are capped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Tuple

import pytest

from fractui.config import QueueConfig
from fractui.scheduler import Scheduler
from fractui.scheduler.service import REFUSED_FOR_S
from fractui.store.intents import Asker, ask_stop
from fractui.store.model import Slot
from remote_agent.jobs.supervisor import START_TIMEOUT_S
from tests import localfleet
from tests.test_caps import _running, _stopped
from tests.test_shim_not_started import FORK_REFUSED, NO_PIDS_CGROUP, daemon_pid, pids_capped

local_fleet = localfleet.local_fleet
HALF = QueueConfig(name="half", gpu=0.5)
WHOLE = QueueConfig(name="whole", gpus=1)
TWO_HOSTS = {"gpu-a": "1xL4", "gpu-b": "1xL4"}


def launches_of(f, job) -> list:
    """Every agent record of any attempt of ``job``, on every host."""
    prefix = "fractui-%s-%d." % (f.store.uid, job.id)
    return [r for r in f.agent_jobs() if r["key"].startswith(prefix)]


def _passes(f) -> None:
    """Three scheduling passes, and what they launched settled."""
    for _ in range(3):
        f.scheduler.step()
    f.scheduler.settle()


def test_a_missing_program_fails_once_with_the_agents_words(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    job = f.submit("half", argv=["/no/such/program-xyz", "--flag"])
    ok = f.submit("half", argv=localfleet.sleeper(600))  # the host is fine for others
    f.until(lambda: f.store.get(job.id).state == "failed"
            and f.store.get(ok.id).state == "running")
    failed = f.store.get(job.id)
    # said once: the agent's "the job cannot start:" is not repeated after ours
    assert failed.reason.startswith("cannot start on gpu-a: cannot run /no/such/program-xyz")
    assert (failed.attempt, failed.refusals) == (0, ())  # never retried
    _passes(f)  # later passes leave it failed, with its words
    assert f.store.get(job.id) == failed
    assert [e.action for e in f.store.audit_log(job.id)] == ["submit", "decide", "failed"]
    assert launches_of(f, job) == []  # refused before anything was recorded or run


def test_a_launch_too_large_for_one_request_line_fails_at_once_with_why(local_fleet):
    """Arguments together over the agent's 1 MiB line (each within its own bound): the agent
    refuses such a line with no id to answer to, so the launch waited for an answer that never
    came, and the job stayed placed; it now fails at once, saying why, and the host serves on."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    job = f.submit("half", argv=["echo"] + ["x" * 100000] * 12)
    ok = f.submit("half", argv=localfleet.sleeper(600))
    f.until(lambda: f.store.get(job.id).state == "failed"
            and f.store.get(ok.id).state == "running")
    assert f.store.get(job.id).reason.startswith("cannot start on gpu-a: the request is ")
    assert "the agent takes at most 1048576 in one line" in f.store.get(job.id).reason
    assert launches_of(f, job) == []


def test_a_missing_working_directory_fails_once_with_the_agents_words(local_fleet, tmp_path):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    gone = str(tmp_path / "no-such-dir")
    job = f.store.submit("half", None, "in-nowhere", localfleet.sleeper(1), {"gpu": 0.5},
                         "test", cwd=gone)
    f.until(lambda: f.store.get(job.id).state == "failed")
    _passes(f)
    failed = f.store.get(job.id)
    assert failed.reason.startswith("cannot start on gpu-a: cannot enter its cwd " + gone)
    assert (failed.state, failed.attempt, failed.refusals) == ("failed", 0, ())
    assert [e.action for e in f.store.audit_log(job.id)] == ["submit", "decide", "failed"]
    assert launches_of(f, job) == []  # refused before anything was recorded or run


def _listed(f, host: str, pid: int) -> dict:
    """``pid``'s record in the scheduler's view of ``host``'s GPU 0, once it is there with whose
    it is said."""
    def record():
        for s in f.fleet.statuses():
            if s.name == host:
                for p in (s.snapshot or {"gpus": [{}]})["gpus"][0].get("processes") or ():
                    if p["pid"] == pid and "job" in p:
                        return p
        return None
    f.until(lambda: record() is not None)
    return record()


def _crowd(f, host: str) -> int:
    """20000 MiB of ``host``'s L4 used by a process outside fractui, once the scheduler's view
    of the host shows it; its pid."""
    pid = f.fleet.session(host).call("sim.add_process", {"gpu": 0, "used_mib": 20000})["pid"]
    assert _listed(f, host, pid)["job"] is None
    return pid


def _still_waiting(f, job):
    """``job`` after three scheduling passes: pending, never refused, nothing launched."""
    _passes(f)
    waiting = f.store.get(job.id)
    assert (waiting.state, waiting.refusals) == ("pending", ())
    assert launches_of(f, job) == []
    return waiting


def _place_by_hand(f, job, host: str) -> None:
    """A share on ``host``'s GPU 0 recorded by hand: the agent, not the scheduler, judges it."""
    f.store.place(job.id, Slot(host, (0,), memory_mib=11517), "test", "by hand", manual=True)


def test_memory_used_outside_fractui_is_not_offered(local_fleet):
    """The scheduler counts what processes outside fractui use, as the agent does: it sends the
    job where it fits, and where it fits nowhere the job waits, never refused, until it does."""
    f = local_fleet(TWO_HOSTS, [HALF])
    _crowd(f, "gpu-a")
    jobs = [f.submit("half", argv=localfleet.sleeper(600)) for _ in range(2)]
    f.until(lambda: all(f.store.get(j.id).state == "running" for j in jobs))
    for job in jobs:  # both halves of gpu-b; gpu-a has 3034 MiB left of its 23034
        ran = f.store.get(job.id)
        assert (ran.slot.host, ran.attempt, ran.refusals) == ("gpu-b", 0, ())
    waiting = _still_waiting(f, f.submit("half"))
    assert waiting.reason == ("no room: no GPU in the fleet has a free slice for it; processes "
                              "outside fractui use GPU memory on gpu-a gpu0 (20000 MiB)")


def test_a_gpu_an_outside_process_leaves_takes_work_again(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    pid = _crowd(f, "gpu-a")
    job = f.submit("half", argv=localfleet.sleeper(600))
    _passes(f)
    assert f.store.get(job.id).state == "pending"
    f.fleet.session("gpu-a").call("sim.remove_process", {"pid": pid})
    f.until(lambda: f.store.get(job.id).state == "running")
    assert f.store.get(job.id).refusals == ()


def test_a_whole_gpu_is_given_beside_the_jobs_mps_server_not_beside_others(local_fleet):
    """The MPS server stays after its clients, holding a little of each GPU they used: a
    whole-GPU job still goes there, never refused; beside anyone else's process it waits."""
    f = local_fleet(TWO_HOSTS, [WHOLE])
    server, other = _running("nvidia-cuda-mps-server"), _running("cat")
    try:
        for host, proc in (("gpu-a", server), ("gpu-b", other)):
            f.fleet.session(host).call("sim.add_process",
                                       {"gpu": 0, "used_mib": 66, "pid": proc.pid})
        assert _listed(f, "gpu-a", server.pid).get("service") == "mps"
        assert _listed(f, "gpu-b", other.pid).get("service") is None
        job = f.submit("whole", argv=localfleet.sleeper(600))
        f.until(lambda: f.store.get(job.id).state == "running")
        ran = f.store.get(job.id)
        assert (ran.slot.host, ran.attempt, ran.refusals) == ("gpu-a", 0, ())
        waiting = _still_waiting(f, f.submit("whole"))
        assert waiting.reason.endswith("processes outside fractui use GPU memory on gpu-b gpu0 "
                                       "(66 MiB)")
    finally:
        _stopped(server, other)


def test_a_capacity_refusal_names_the_host_and_is_retried_elsewhere(local_fleet):
    f = local_fleet(TWO_HOSTS, [HALF])
    _crowd(f, "gpu-a")
    job = f.submit("half")
    _place_by_hand(f, job, "gpu-a")  # where the agent refuses it
    f.until(lambda: f.store.get(job.id).state == "running")
    ran = f.store.get(job.id)
    assert ran.slot.host == "gpu-b" and ran.attempt == 1
    [refusal] = ran.refusals
    assert (refusal.host, refusal.kind) == ("gpu-a", "capacity")
    assert refusal.words.startswith("GPU 0 (NVIDIA L4) has ") and "MiB free for shares and " \
        "the job asks 11517 MiB" in refusal.words and "used by processes outside fractui" in (
            refusal.words)
    requeued = [e for e in f.store.audit_log(job.id) if e.action == "requeued"]
    assert [e.why for e in requeued] == ["refused by gpu-a: %s" % refusal.words]
    assert [r["host"] for r in launches_of(f, job)] == ["gpu-b"]  # nothing ran where refused


def _ran_on_gpu_b(f, job) -> Tuple[str, dict]:
    """The job, whose fork gpu-a refused, runs on gpu-b as its next attempt, gpu-a's refusal
    kept as the host's, its words (returned) ending in the shim's; gpu-a's record of it
    (returned) ended never started."""
    assert f.store.get(job.id).state != "failed", f.store.get(job.id).reason
    f.until(lambda: f.store.get(job.id).state == "running")
    ran = f.store.get(job.id)
    assert (ran.slot.host, ran.attempt) == ("gpu-b", 1)
    [refusal] = ran.refusals
    assert (refusal.host, refusal.kind) == ("gpu-a", "host")
    assert refusal.words.endswith(FORK_REFUSED), refusal.words
    [not_started] = [r for r in launches_of(f, job) if r["host"] == "gpu-a"]
    assert (not_started["state"], not_started["exit_code"], not_started["started_at"],
            not_started["reason"]) == ("exited", 127, None, FORK_REFUSED)
    return refusal.words, not_started


@NO_PIDS_CGROUP
def test_a_job_a_host_cannot_fork_goes_back_to_its_queue_and_runs_elsewhere(local_fleet):
    """gpu-a's agent in a cgroup that takes one more process: its shim starts, and the job's
    fork is refused (EAGAIN: the host's pids limit). Nothing ran, and it is no fault of the
    job's: the launch is refused as the host's, the job requeued, and it runs on gpu-b. Before,
    it failed for good with "cannot start its process"."""
    f = local_fleet(TWO_HOSTS, [HALF])
    job = f.submit("half", argv=localfleet.sleeper(600))
    with pids_capped(1, daemon_pid(os.path.join(str(f.tmp), "state", "gpu-a"))):
        _place_by_hand(f, job, "gpu-a")
        f.until(lambda: f.store.get(job.id).refusals or f.store.get(job.id).state == "failed")
    _ran_on_gpu_b(f, job)


@NO_PIDS_CGROUP
@pytest.mark.skipif(shutil.which("strace") is None, reason="the shim is held by strace")
def test_a_start_the_launch_answered_as_under_way_that_the_host_refuses_runs_elsewhere(
        local_fleet):
    """As above, but the shim slower than the launch waits (strace holds it at its fork): the
    launch answers "starting", and the fork the host then refuses is seen by the watchdog.
    The agent's record carries the fault (``fault``: "host"), and the job is requeued as a
    host refusal and runs on gpu-b. Before, the record had no fault, and the job, which never
    ran, failed for good with "cannot start its process". The lease long enough for a call
    to outwait the launch's own waits (twice supervisor.START_TIMEOUT_S)."""
    f = local_fleet(TWO_HOSTS, [HALF], lease_s=6 * START_TIMEOUT_S)
    daemon = daemon_pid(os.path.join(str(f.tmp), "state", "gpu-a"))
    with pids_capped(1, daemon), _forks_held(daemon) as let_go:
        job = f.submit("half", argv=localfleet.sleeper(600))
        _place_by_hand(f, job, "gpu-a")
        # answered "starting"
        f.until(lambda: f.store.get(job.id).state == "running", 4 * START_TIMEOUT_S)
        [starting] = launches_of(f, job)
        assert (starting["host"], starting["state"]) == ("gpu-a", "starting")
        let_go()
        f.until(lambda: f.store.get(job.id).refusals or f.store.get(job.id).state == "failed")
    words, not_started = _ran_on_gpu_b(f, job)
    assert (words, not_started["fault"]) == (FORK_REFUSED, "host")  # (read from the record)


@contextmanager
def _forks_held(pid: int) -> Iterator[Callable[[], None]]:
    """Each fork of a process the process ``pid`` starts (its shims: the daemon starts them by
    vfork, its threads by clone3) held as it is asked for (strace -f) until the function given
    is called, or this ends: strace then detaches, and the forks go on."""
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=clone",
                               "-e", "inject=clone:delay_enter=600s", "-p", str(pid)])

    def let_go() -> None:
        if tracer.poll() is None:
            tracer.terminate()
            tracer.wait(10)

    try:
        localfleet.wait(lambda: all(_traced(pid, task) for task in os.listdir(
            "/proc/%d/task" % pid)), lambda: "strace attached to %d" % pid)
        yield let_go
    finally:
        let_go()


def _traced(pid: int, task: str) -> bool:
    with open("/proc/%d/task/%s/status" % (pid, task)) as f:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)


def test_a_job_waiting_after_refusals_keeps_the_agents_words(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    other = _crowd(f, "gpu-a")
    job = f.submit("half")
    _place_by_hand(f, job, "gpu-a")
    f.until(lambda: f.store.get(job.id).refusals)
    f.scheduler.settle()
    # the other process ends: gpu-a has room again, but refused the job lately
    f.fleet.session("gpu-a").call("sim.remove_process", {"pid": other})
    f.until(lambda: not [p for s in f.fleet.statuses() for g in (s.snapshot or {}).get(
        "gpus") or () for p in g.get("processes") or ()])
    _passes(f)  # passes that find no room where it was not refused
    waiting = f.store.get(job.id)
    assert waiting.state == "pending" and len(waiting.refusals) == 1
    assert waiting.reason == ("no room outside the hosts that refused it lately (gpu-a); "
                              "last refused by gpu-a: %s" % waiting.refusals[0].words)


def test_a_refusals_while_is_the_stores_time_for_a_holder_on_another_machine(local_fleet):
    """A refusal keeps its job off the host for REFUSED_FOR_S by the store's clock: dated by
    a holder an hour ahead of the store and counted by the next, an hour behind, to its own
    clock, it kept the job off the host for two hours more (the other way, not at all)."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF])
    store_ahead = [0.0]
    f.on_clocks(lambda: time.time() + store_ahead[0], lambda: time.time() + 3600.0)
    other = _crowd(f, "gpu-a")
    job = f.submit("half")
    _place_by_hand(f, job, "gpu-a")
    f.until(lambda: f.store.get(job.id).refusals)
    f.scheduler.settle()
    assert abs(f.store.get(job.id).refusals[0].at - f.store.now()) < 30
    f.scheduler.stop()  # the lease handed over, to a holder an hour behind the store
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="next",
                            clock=lambda: time.time() - 3600.0)
    f.fleet.session("gpu-a").call("sim.remove_process", {"pid": other})
    f.until(lambda: not [p for s in f.fleet.statuses() for g in (s.snapshot or {}).get(
        "gpus") or () for p in g.get("processes") or ()])
    _passes(f)
    assert f.store.get(job.id).reason.startswith("no room outside the hosts that refused it "
                                                 "lately (gpu-a)")
    store_ahead[0] = REFUSED_FOR_S + 1  # the while has passed
    f.submit("half")  # (news: the jobs are read again)
    f.until(lambda: f.store.get(job.id).state == "running")


def test_the_refusals_a_job_meets_are_capped_and_it_fails_with_their_words(local_fleet):
    f = local_fleet(TWO_HOSTS, [HALF], max_attempts=2)
    for host in TWO_HOSTS:
        _crowd(f, host)
    job = f.submit("half")
    for n, host in enumerate(TWO_HOSTS, 1):
        _place_by_hand(f, job, host)
        f.until(lambda: len(f.store.get(job.id).refusals) == n)
    f.until(lambda: f.store.get(job.id).state == "failed")
    failed = f.store.get(job.id)
    assert sorted(r.host for r in failed.refusals) == ["gpu-a", "gpu-b"]
    assert failed.reason == "refused 2 times ([scheduler] max_attempts = 2): %s" % "; ".join(
        "%s: %s" % (r.host, r.words) for r in failed.refusals)
    assert launches_of(f, job) == []
    assert [e.action for e in f.store.audit_log(job.id)] == [
        "submit", "place", "requeued", "place", "failed"]


@pytest.mark.parametrize("ahead", [3600.0, -3600.0], ids=["ahead", "behind"])
def test_a_job_failed_by_its_refusals_ends_by_the_stores_clock(local_fleet, ahead):
    """The end of a job its refusals failed is the store's time, as every end the store
    dates, not the lease holder's: a holder an hour ahead dated it an hour on, so ``fractui
    report`` of the last hour, counted to the store's clock, left that failure out (and one
    behind, an hour back)."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], max_attempts=1)
    f.scheduler = Scheduler(f.config, f.store, f.fleet, name="test",
                            clock=lambda: time.time() + ahead)
    _crowd(f, "gpu-a")
    job = f.submit("half")
    _place_by_hand(f, job, "gpu-a")
    f.until(lambda: f.store.get(job.id).state == "failed")
    report = f.fractui("report", "--since", "10m", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["ended_unstarted"] == {"cancelled": 0, "failed": 1}


def test_a_refusal_met_again_in_the_same_words_is_said_once_with_how_often(local_fleet):
    """One host refusing a job for the same reason at each attempt: its failure says those
    words once, with how many times, not once for each attempt."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], max_attempts=3)
    _crowd(f, "gpu-a")
    job = f.submit("half")
    for n in (1, 2, 3):
        _place_by_hand(f, job, "gpu-a")
        f.until(lambda: len(f.store.get(job.id).refusals) == n or
                f.store.get(job.id).state == "failed")
    f.until(lambda: f.store.get(job.id).state == "failed")
    failed = f.store.get(job.id)
    assert len({r.words for r in failed.refusals}) == 1, failed.refusals
    assert failed.reason == "refused 3 times ([scheduler] max_attempts = 3): gpu-a: %s (3 " \
                            "times)" % failed.refusals[0].words


def test_a_job_preempted_or_requeued_is_not_counted_as_refused(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], max_attempts=1)
    job = f.submit("half", argv=[sys.executable, "-c", "import time; time.sleep(600)"])
    f.until(lambda: f.store.get(job.id).state == "running")
    for n in (1, 2):
        assert f.fractui("requeue", str(job.id)).returncode == 0
        f.until(lambda: f.store.get(job.id).attempt == n
                and f.store.get(job.id).state == "running")
    assert f.store.get(job.id).refusals == ()


def test_a_failed_pass_is_not_tried_again_at_once(local_fleet, monkeypatch):
    """A bug of ours in a pass (or a store value it cannot read) is logged and the pass tried
    again after the pass interval, leading or standing by: a standby once tried again at
    once, writing thousands of tracebacks a second."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    service = f.scheduler
    waits = []

    def failing_turn() -> None:
        raise RuntimeError("a bug")

    def wait(timeout: float) -> bool:  # the loop's wait before its next turn: the test ends
        waits.append(timeout)
        service._stop.set()
        return False

    monkeypatch.setattr(service, "_turn", failing_turn)
    monkeypatch.setattr(service._wake, "wait", wait)
    for leading in (False, True):
        service.leader = leading
        service._stop.clear()
        service.run()
    assert waits == [service.settings.interval_s] * 2


@pytest.mark.parametrize("function", ["nvmlDeviceCreateGpuInstanceWithPlacement",
                                      "nvmlGpuInstanceCreateComputeInstance"])
def test_a_launch_cut_short_by_the_agents_death_is_launched_again_not_failed(local_fleet,
                                                                            tmp_path, function):
    """The host's daemon killed (kill -9) while the scheduler's launch of a MIG job is inside
    NVML making its instance (before its GPU instance, or between it and its compute
    instance, which the next daemon rolls back): the next daemon ends that start "never
    started ... launching the same key again starts it". The scheduler launches it again by
    the same key, and it runs on one instance: one agent job, attempt 0, no refusal (before:
    the job was ended failed with those words, and never run)."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="slice", mig="3g.40gb")])
    gate = tmp_path / "gate"
    f.fleet.session("gpu-a").call("sim.hold", {"function": function, "gate": str(gate)})
    job = f.submit("slice")
    f.until(lambda: os.path.exists(str(gate) + ".held"))
    with open(os.path.join(f.config.hosts[0].state_dir, "daemon.pid")) as pid:
        os.kill(int(pid.read()), signal.SIGKILL)
    f.until(lambda: f.store.get(job.id).state != "placed")
    ran = f.store.get(job.id)
    assert (ran.state, ran.attempt, ran.refusals, ran.reason) == ("running", 0, (), None)
    assert [e.action for e in f.store.audit_log(job.id)] == ["submit", "decide", "launch"]
    records = launches_of(f, job)
    assert [(r["key"], r["state"]) for r in records] == [(job.key(f.store.uid), "running")]
    assert records[0]["id"] == ran.agent_job
    instances = f.fleet.session("gpu-a").call("inventory", {})["gpus"][0]["instances"]
    assert [(i["profile"], i["uuid"]) for i in instances] == [("3g.40gb", records[0]["instance"])]


def test_a_stop_the_agent_did_not_take_is_sent_again_by_a_later_pass(local_fleet, caplog):
    """A late copy's stop that the agent answered with an error (its job table locked by
    another process, so it could not record the stop) is not recorded as sent: the loop sends
    it again on its own, once ``interval_s`` has passed by the holder's clock, and never
    before — a host that keeps failing is asked once a pass interval, not in a loop. Before:
    the stop was recorded as sent and never sent again, and the copy ran for ever. The
    interval is the monotonic clock's: a wall clock set back an hour meanwhile delays nothing
    (before, the resend waited for the wall clock to catch up)."""
    caplog.set_level(logging.INFO, "fractui.scheduler")
    wall, ticks = [time.time()], [1000.0]
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], lease_s=30.0)  # calls wait 10 s for an answer
    f.scheduler.executor.clock = lambda: wall[0]  # the holder's clocks for its stops: by hand
    f.scheduler.executor.ticks = lambda: ticks[0]
    job = f.submit("half")
    ask_stop(f.store, job, "cancel", Asker("here"))  # cancelled before it was ever placed
    key = f.store.get(job.id).key(f.store.uid)
    session = f.fleet.session("gpu-a")
    copy = session.call("job.launch", {"key": key, "argv": localfleet.sleeper(600),
                                       "gpus": [0], "memory_mib": 1024})

    def copy_state() -> str:
        return session.call("job.get", {"job": copy["id"]})["state"]

    table = sqlite3.connect(os.path.join(f.config.hosts[0].state_dir, "jobs.db"),
                            isolation_level=None)
    table.execute("BEGIN EXCLUSIVE")  # the agent cannot write its job table meanwhile
    f.scheduler.step()
    assert f.scheduler.settle()
    table.execute("ROLLBACK")
    table.close()
    assert copy_state() == "running"
    said = [r.getMessage() for r in caplog.records if "did not take" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "the agent on gpu-a did not take the stop of %s: job.stop could not be carried out "
        "on gpu-a" % key) and said[0].endswith("; it is sent again every 0.2 s until it "
                                                "does"), said
    assert f.store.holder_memory().stops_sent == frozenset()
    turns = []
    f.scheduler.on_turn = turns.append
    f.scheduler.start()
    try:  # the loop's passes meanwhile, at the same moment of the holder's clock: not sent
        localfleet.wait(lambda: len(turns) >= 5, lambda: turns)
        assert f.scheduler.settle()
        assert copy_state() == "running"
        wall[0] -= 3600.0  # the wall clock set back (NTP, date -s): no resend waits for it
        ticks[0] += f.config.scheduler.interval_s  # nothing else wakes the loop: its clock does
        localfleet.wait(lambda: copy_state() == "killed", copy_state)
    finally:
        f.scheduler.stop()
    killed = session.call("job.get", {"job": copy["id"]})
    assert killed["reason"] == "a late copy of job %d's attempt 0 on gpu-a: the job is " \
        "cancelled" % job.id
    assert [r.getMessage() for r in caplog.records if key in r.getMessage()].count(
        "the agent on gpu-a took the stop of %s" % key) == 1
