"""A job of the store's queue whose start its agent holds (its folder left unread, none of its
processes found: docs/decisions.md, "A job left unread whose processes cannot be found holds
its slice"), as the real scheduler reflects it from a real agent: the store says why, as the
agent does, charges it from when its slice was booked, and lets the words go once the folder
is mended."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from typing import Tuple

import pytest

from fractui.config import QueueConfig
from fractui.scheduler.execute import AGENT_ENDED, launch_params
from fractui.store.model import ENDED, PLACED, RUNNING, STOPPING, Job, Slot
from tests import localfleet
from tests.localfleet import LocalFleet
from tests.test_job_folder_entries import _planting
from tests.test_job_supervision import wait_until
from tests.test_jobs import alive

HALF = QueueConfig(name="half", gpu=0.5)
local_fleet = localfleet.local_fleet


def test_a_start_its_agent_holds_is_in_the_store_with_the_agents_reason_charged_as_booked(
        local_fleet, store_url):
    """A holder placed the job and launched it, then died before recording the start; the
    agent's daemon died too, after the shim started the job and before it recorded it (no
    pid), and the job put a directory in its folder. The next daemon holds the start; the
    scheduler finds it: the store has it running, its reason the agent's words (``fractui
    jobs`` says them), no start time, its usage charged from when the agent booked its slice
    (its record's creation). Before, it read as running with no word of why, charged from when
    the scheduler found it. Once an admin mends the folder the job is adopted, the words go,
    and its start, known now, is the store's."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], store_url=store_url)
    job, launched, planted = _launched_planting(f)  # the holder's call; it died then
    assert launched["id"] == "j1"
    pid = launched["pid"]
    try:
        _held_after_a_crash(f, planted)
        f.until(lambda: f.store.get(job.id).reason)
        held = f.store.get(job.id)
        [record] = f.agent_jobs()
        assert record["state"] == "starting" and "until that folder is mended" in \
            record["reason"], record
        assert (held.state, held.reason, held.started_at) == (RUNNING, record["reason"], None)
        [charged] = [u for u in f.store.usage(0, time.time() + 60) if u.job == job.id]
        assert (charged.started_at, charged.ended_at) == (record["created_at"], None)
        listed = f.fractui("jobs")
        assert listed.returncode == 0 and "running  half   -     test  gpu-a gpu0 11517 MiB  " \
            "half  start not known; i" in listed.stdout, listed  # (cut to the width)
        listed = f.fractui("jobs", "--json")
        assert [(j["reason"], j["ran_s"]) for j in json.loads(listed.stdout)["jobs"]] == [
            (record["reason"], None)]
        assert alive(pid)
        os.rmdir(planted)  # an admin mends it
        f.until(lambda: f.store.get(job.id).reason is None)
        [record] = f.agent_jobs()
        assert (record["state"], record["pid"]) == ("running", pid)
        adopted = f.store.get(job.id)  # its start known now, as the agent read it
        assert (adopted.state, adopted.started_at) == (RUNNING, record["started_at"])
        listed = f.fractui("jobs")
        assert listed.returncode == 0 and "  half  ran " in listed.stdout, listed
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_start_its_agent_holds_stopped_as_it_was_launched_is_charged_as_booked(
        local_fleet, store_url):
    """As above, but the job was cancelled while its launch was being sent (stopping, its
    start not recorded): the store records the held start as found, still stopping, charged
    from when the agent booked its slice, as any held start is; once adopted, its start is
    the agent's (it kept none: ``fractui jobs`` and ``show`` gave no run time). Before, a
    stopping job's
    start with no start time was left unrecorded, and once the folder was mended and the job
    adopted it was charged from the adopted start: the time it held its slice while held went
    uncharged."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], store_url=store_url)
    job, launched, planted = _launched_planting(f)
    pid = launched["pid"]
    f.store.stopping(job.id, (PLACED,), "cancel", "test", "cancelled as it was launched")
    try:
        _held_after_a_crash(f, planted)
        f.until(lambda: f.store.get(job.id).agent_job is not None)
        [record] = f.agent_jobs()
        assert record["state"] == "starting" and record["reason"], record
        held = f.store.get(job.id)
        assert (held.state, held.started_at) == (STOPPING, None), held
        [found] = [e.why for e in f.store.audit_log(job.id) if e.action == "launch"]
        assert found.startswith("found held starting on "), found  # (never "started")
        [charged] = [u for u in f.store.usage(0, time.time() + 60) if u.job == job.id]
        assert (charged.started_at, charged.ended_at) == (record["created_at"], None)
        os.rmdir(planted)  # an admin mends it: adopted, then stopped as asked
        f.until(lambda: f.store.get(job.id).state not in (STOPPING,))
        [charged] = [u for u in f.store.usage(0, time.time() + 60) if u.job == job.id]
        assert charged.started_at == record["created_at"] and charged.ended_at is not None
        assert not alive(pid)
        [record] = f.agent_jobs()  # its start, as the agent read it once adopted, is kept
        ended = f.store.get(job.id)
        assert record["started_at"] is not None and ended.started_at == record["started_at"], \
            (ended, record)
        assert (ended.state, ended.reason) == ("cancelled", "cancelled as it was launched"), \
            ended  # (its start given alone: its reason the stop's, not the agent's none)
        listed = f.fractui("jobs", "--all", "--json")
        assert [j["ran_s"] is not None for j in json.loads(listed.stdout)["jobs"]] == [True], \
            listed.stdout
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def _placed(f: LocalFleet) -> Job:
    """A job of half, placed by hand on gpu-a's GPU 0."""
    job = f.submit("half")
    return f.store.place(job.id, Slot("gpu-a", (0,), memory_mib=11517), "test", "by hand",
                         manual=True)


def _launched_planting(f: LocalFleet) -> Tuple[Job, dict, str]:
    """A job placed (``_placed``) and launched on gpu-a as its holder launches it, that puts a
    directory in its folder: the job, the launch's answer, and that directory's path."""
    job = _placed(f)
    planted = os.path.join(_state(f), "jobs", "j1", "planted")
    params = dict(launch_params(job, f.store.uid),
                  argv=_planting(planted, "directory", str(f.tmp / "elsewhere")))
    return job, f.fleet.session("gpu-a").call("job.launch", params), planted


def _held_after_a_crash(f: LocalFleet, planted: str) -> None:
    """Once the job made ``planted``, gpu-a's daemon killed, its record of the start left as a
    crash leaves it after the shim started the job (no pid): the next daemon holds the start,
    and the fleet has seen it so (no scheduler pass yet: one on its view from before the
    crash records the start the agent had then)."""
    state = _state(f)
    wait_until(lambda: os.path.isdir(planted), "the job's directory")
    with open(os.path.join(state, "daemon.pid")) as pid_file:
        os.kill(int(pid_file.read()), signal.SIGKILL)
    with sqlite3.connect(os.path.join(state, "jobs.db")) as db:  # as a crash leaves it
        db.execute("UPDATE jobs SET state = 'starting', pid = NULL, started_at = NULL, "
                   "start_ticks = NULL")
    wait_until(lambda: _seen_held(f), "the fleet's view of the held start")


def _state(f: LocalFleet) -> str:
    """gpu-a's state folder."""
    return os.path.join(str(f.tmp), "state", "gpu-a")


def _seen_held(f) -> bool:
    [status] = f.fleet.statuses()
    record = (status.jobs or {}).get("j1") or {}
    return record.get("state") == "starting" and bool(record.get("reason"))


def test_a_start_its_launch_answered_under_way_takes_its_agents_start_time(
        local_fleet, store_url):
    """A launch answered while its start was still under way (``starting``: a container's
    image pulled for longer than the agent's 15 s) is recorded running with no start time, as
    the holder's launch does; the agent records the start once the job runs. Its start is
    the store's from the next pass, as a held start's is once adopted. Before, the store's
    job ran on with none for good (nothing but a change of the agent's reason wrote it), so
    ``fractui jobs`` gave it no run time."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], store_url=store_url)
    job = _placed(f)
    launched = f.fleet.session("gpu-a").call("job.launch", launch_params(job, f.store.uid))
    try:
        # as the holder records a launch its agent answered under way
        f.store.started(job.id, launched["id"], None, "test", "started on gpu-a gpu0")
        f.until(lambda: f.store.get(job.id).started_at is not None)
        [record] = f.agent_jobs()
        ran = f.store.get(job.id)
        assert (ran.state, ran.reason, ran.started_at) == (
            RUNNING, None, record["started_at"]), ran
        listed = f.fractui("jobs")
        assert listed.returncode == 0 and "  half  ran " in listed.stdout, listed
    finally:
        if alive(launched["pid"]):
            os.kill(launched["pid"], signal.SIGKILL)


@pytest.mark.parametrize("stopped", [False, True], ids=["ended", "stopped"])
def test_a_start_under_way_that_ended_before_a_pass_saw_it_run_keeps_its_agents_start(
        local_fleet, store_url, stopped):
    """A launch answered under way (above), whose job ran and ended before any pass saw it
    run (the scheduler away): its end, or its stop's completion where a user had stopped it
    meanwhile, gives it the agent's start, as ``held`` would have. Before, it ended with no
    start: ``fractui jobs --all --json`` gave no ``ran_s``."""
    f = local_fleet({"gpu-a": "1xL4"}, [HALF], store_url=store_url)
    job = _placed(f)
    launched = f.fleet.session("gpu-a").call("job.launch", launch_params(job, f.store.uid))
    f.store.started(job.id, launched["id"], None, "test", "started on gpu-a gpu0")
    if stopped:
        f.store.stopping(job.id, (RUNNING,), "cancel", "test", "cancelled as it started")
    wait_until(lambda: f.agent_jobs()[0]["started_at"] is not None, "the agent's start")
    os.kill(launched["pid"], signal.SIGKILL)  # it ends while no pass runs
    wait_until(lambda: ((f.fleet.statuses()[0].jobs or {}).get(launched["id"]) or {}).get(
        "state") in AGENT_ENDED, "the fleet's view of its end")
    f.until(lambda: f.store.get(job.id).state in ENDED)
    [record] = f.agent_jobs()
    ended = f.store.get(job.id)
    assert (ended.state, ended.started_at) == (
        "cancelled" if stopped else "failed", record["started_at"]), (ended, record)
    listed = f.fractui("jobs", "--all", "--json")
    assert [j["ran_s"] is not None for j in json.loads(listed.stdout)["jobs"]] == [True], \
        listed.stdout
