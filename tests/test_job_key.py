"""A host's agent state dir wiped by hand (or lost): the next daemon numbers its jobs from j1
again, so an id the admin side kept for a job (its store's agent_job) names a new, unrelated
job. Every call that names a job by id also names the key it expects (features
``job.<method>.key``), and the agent refuses a job of that id with another key: the old job's
reader never reads the new job's output, and a stop for the old job never stops the new one."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from fractui.config import QueueConfig, StoreSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import checked_by_key
from fractui.store import sqlite_url
from fractui.store.model import Job
from fractui.tui.jobs import JobScreen
from fractui.tui.source import LiveSource
from remote_agent import JOB_KEYS
from remote_agent.rpc import jsonrpc as rpc
from tests.cli_run import closed_port
from tests.conftest import AgentError
from tests.localfleet import LocalFleet
from tests.test_job_supervision import read_log, wait_until
from tests.test_job_wiped_state import _says_then_waits
from tests.test_jobs import alive, daemon_pid, script, wait_job
from tests.tui_frozen import pilot_test
from tests.tui_live import live_app, until

SECRET = "the new job's own words"


def _wipe(state: str, daemon: int) -> None:
    """The daemon killed and its state dir wiped by hand; the jobs it ran go on."""
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), "the daemon to end")
    shutil.rmtree(state)


def test_the_agent_refuses_a_call_whose_key_is_not_its_jobs(start_agent, tmp_path):
    state = str(tmp_path / "host")
    release_old, release_new = tmp_path / "release-old", tmp_path / "release-new"
    agent = start_agent("1xL4", state)
    assert set(JOB_KEYS) <= set(agent.call("hello")["features"])
    old = agent.call("job.launch", key="k-old", gpu=0, memory_mib=10,
                     argv=_says_then_waits("the old job runs", release_old, 0))
    wait_until(lambda: "the old job runs" in read_log(state, old["id"]), "the old job")
    _wipe(state, daemon_pid(agent))
    agent.proc.wait(timeout=10)

    agent = start_agent("1xL4", state)
    new = agent.call("job.launch", key="k-new", gpu=0, memory_mib=10,
                     argv=_says_then_waits(SECRET, release_new, 0))
    assert new["id"] == old["id"]
    wait_until(lambda: SECRET in read_log(state, new["id"]), "the new job")
    for method, params in (("job.logs", {"lines": 10}), ("job.logs", {"follow": True}),
                           ("job.get", {}), ("job.stop", {"grace": 0})):
        with pytest.raises(AgentError) as err:
            agent.call(method, job=new["id"], key="k-old", **params)
        assert err.value.code == rpc.JOB_KEY_MISMATCH, (method, err.value.message)
        assert err.value.data == {"job": new["id"], "key": "k-new", "class": rpc.REQUEST}
        assert "the job of key 'k-old' is gone from this host's agent" in err.value.message
        assert SECRET not in err.value.message
    # its own key, or none (an older client), is served as before
    assert SECRET in agent.call("job.logs", job=new["id"], key="k-new")["lines"]
    assert agent.call("job.get", job=new["id"])["key"] == "k-new"
    release_new.touch()
    done = wait_job(agent, new["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 0)  # never stopped
    release_old.touch()


@contextlib.contextmanager
def _kept_id_now_another(tmp_path, chatty: bool = False
                         ) -> Iterator[Tuple[LocalFleet, Job, dict, Path]]:
    """A queued job runs as j1 on gpu-a; the host's state dir is wiped and a new job (its
    output SECRET, once, or ``chatty``, over and over, running until the file yielded last
    exists) gets j1: (the fleet, the queued job as the store keeps it, the new job's record,
    that file)."""
    release_old, release_new = tmp_path / "release-old", tmp_path / "release-new"
    f = LocalFleet(tmp_path, {"gpu-a": "1xL4"}, [QueueConfig(name="q", memory_gib=1)])
    state = f.config.hosts[0].state_dir
    session = f.fleet.session("gpu-a")
    try:
        job = f.submit("q", argv=_says_then_waits("the old job runs", release_old, 0))
        f.until(lambda: f.store.get(job.id).agent_job is not None and
                "the old job runs" in f.said(job))
        job = f.store.get(job.id)
        _wipe(state, session.call("daemon.version")["pid"])
        wait_until(lambda: session.status.state == "online" and
                   session.status.hello is not None and session.status.jobs == {},
                   "gpu-a back with a new daemon")
        new = session.call("job.launch", {"key": "k-new", "gpu": 0, "memory_mib": 10,
                                          "argv": script(
                                              "import os, time\nwhile not os.path.exists(%r):"
                                              "\n    print(%r, flush=True)\n    time.sleep("
                                              "0.005)" % (str(release_new), SECRET))
                                          if chatty else
                                          _says_then_waits(SECRET, release_new, 0)})
        assert new["id"] == job.agent_job  # the id the store kept names the new job now
        wait_until(lambda: SECRET in read_log(state, new["id"]), "the new job")
        yield f, job, new, release_new
    finally:
        release_old.touch()  # the old job, its daemon's state gone, ends by itself
        f.close()


def test_the_admin_neither_reads_nor_stops_the_new_job_of_a_kept_id(tmp_path):
    """`fractui logs`, the scheduler's log relay and its stop, each by the queued job's kept
    id, are refused with plain words; the new job's output stays unread, and it runs on until
    it ends."""
    with _kept_id_now_another(tmp_path) as (f, job, new, release_new):
        said = f.fractui("logs", str(job.id))
        assert said.returncode == 1, said
        assert SECRET not in said.stdout + said.stderr
        assert ("job %d is gone from gpu-a's agent (its state dir was likely wiped or lost): "
                "gpu-a/%s is another job now, neither shown nor touched" % (job.id, new["id"])
                ) in said.stderr, said.stderr

        f.store.ask_log(job.id, "test")  # the relay, for a reader of the store
        f.scheduler.relay.serve(lambda: {v.name: v for v in f.scheduler._views()})
        f.scheduler.executor.stop("gpu-a", job.agent_job, job.key(f.store.uid), "test",
                                  grace_s=0)
        f.scheduler.lanes.start()
        assert f.scheduler.lanes.wait(30)
        kept = f.store.log_tail(job.id)
        assert kept is not None and SECRET not in kept.text
        assert "the job of key %r is gone from gpu-a's agent" % job.key(f.store.uid) in \
            kept.text, kept.text

        _never_stopped(f, new, release_new)


def _never_stopped(f, new: dict, release_new: Path) -> None:
    """The new job of the kept id still runs, and once released ends exited 0: never
    stopped by what was asked of the old one."""
    session = f.fleet.session("gpu-a")
    assert session.call("job.get", {"job": new["id"]})["state"] == "running"
    release_new.touch()
    wait_until(lambda: session.call("job.get", {"job": new["id"]})["state"] != "running",
               "the new job to end")
    rec = session.call("job.get", {"job": new["id"]})
    assert (rec["state"], rec["exit_code"]) == ("exited", 0), rec


def test_a_kept_id_typed_by_hand_neither_reads_nor_stops_the_new_job(tmp_path):
    """`fractui logs gpu-a/j1` and `fractui stop gpu-a/j1`, typed by hand while the store holds
    its queued job there by that id, in any spelling its agent takes (j1, 1, j01): asked by
    that job's key, so refused with plain words, the new job's output unread and the new job
    left running."""
    with _kept_id_now_another(tmp_path) as (f, job, new, release_new):
        number = job.agent_job[1:]
        for ref in ("gpu-a/%s" % job.agent_job, "gpu-a/%s" % number, "gpu-a/j0%s" % number):
            for verb in (("logs", ref), ("logs", "-f", ref), ("stop", ref, "--grace", "0")):
                said = f.fractui(*verb)
                assert said.returncode == 1, (verb, said)
                assert SECRET not in said.stdout + said.stderr, verb
                assert ("%s (job %d) is gone from gpu-a's agent (its state dir was likely "
                        "wiped or lost): %s is another job now, neither shown nor touched" % (
                            ref, job.id, ref)) in said.stderr, (verb, said.stderr)
        _never_stopped(f, new, release_new)


def test_an_id_typed_by_hand_that_no_live_job_of_the_store_holds_names_the_agents_job(
        tmp_path):
    """Once the store has ended its job of that id, the id is the agent's again: a job
    launched there by hand since the wipe (which the store never saw) is read and stopped by
    it, as the id the user gave."""
    with _kept_id_now_another(tmp_path) as (f, job, new, _):
        f.store.ended(job.id, ("running",), "failed", "lost with its host's state", "test",
                      "test", "lost")
        ref = "gpu-a/%s" % new["id"]
        said = f.fractui("logs", ref)
        assert (said.returncode, said.stdout) == (0, SECRET + "\n"), said
        said = f.fractui("stop", ref, "--grace", "0")
        assert said.returncode == 0, said
        assert "%s: stopping" % ref in said.stdout
        session = f.fleet.session("gpu-a")
        wait_until(lambda: session.call("job.get", {"job": new["id"]})["state"] != "running",
                   "the new job to end")
        assert session.call("job.get", {"job": new["id"]})["state"] == "killed"


def test_a_store_that_cannot_be_reached_leaves_a_typed_id_the_agents_and_says_so(tmp_path):
    """`fractui logs HOST/JOB` where the config's store cannot be reached (its server is not
    there): said on stderr, and the job read by its id alone — no store is there to ask, and
    the host's login is the boundary. A store that is there and answers with anything but a
    yes (here another program's file) is no outage: it was read by the id alone as well, as
    a role the store refuses was (test_access_cli); now it is refused, nothing read."""
    f = LocalFleet(tmp_path, {"gpu-a": "1xL4"}, [QueueConfig(name="q", memory_gib=1)])
    try:
        job = f.fleet.session("gpu-a").call("job.launch", {
            "key": "k-hand", "gpu": 0, "memory_mib": 10, "argv": script("print('by hand')")})
        session = f.fleet.session("gpu-a")
        wait_until(lambda: session.call("job.get", {"job": job["id"]})["state"] == "exited",
                   "the job's end")  # (its line printed is not yet its end recorded)
        away = "postgresql://fractui@127.0.0.1:%d/fractui" % closed_port()
        f.config = dataclasses.replace(f.config, store=StoreSettings(away))
        ref = "gpu-a/%s" % job["id"]
        said = f.fractui("logs", ref)
        assert (said.returncode, said.stdout) == (0, "by hand\n"), said
        first, ended = said.stderr.splitlines()
        assert first.startswith("fractui: store postgresql://127.0.0.1:"), first
        assert "cannot reach the PostgreSQL server" in first, first
        assert first.endswith("; %s is read by its id alone" % ref), first
        assert ended == "fractui: %s ended: exited 0" % ref
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not a store\n" * 100)
        f.config = dataclasses.replace(f.config, store=StoreSettings(sqlite_url(str(junk))))
        said = f.fractui("logs", ref)
        assert (said.returncode, said.stdout) == (1, ""), said
        assert said.stderr.startswith("fractui: store %s: is not an SQLite database" % junk)
        assert "read by its id alone" not in said.stderr, said
    finally:
        f.close()


def test_the_job_screen_shows_no_output_of_the_new_job_of_a_kept_id(tmp_path):
    """The TUI's job screen of the queued job, opened once its id names another job: it says
    the job is gone from its host's agent, and follows none of the other job's output."""
    with _kept_id_now_another(tmp_path) as (f, job, new, _):
        @pilot_test
        async def drive():
            async with live_app(f) as (app, pilot):
                app.open_job(job.id)
                await until(pilot, lambda: isinstance(app.screen, JobScreen)
                            and app.screen.job is not None, "the job read")
                screen = app.screen
                await until(pilot, lambda: screen.log_error is not None or
                            screen.logview.count, "the job's output asked for")
                assert screen.logview.count == 0
                assert screen.log_error == (
                    "job %d is gone from gpu-a's agent (its state dir was likely wiped or "
                    "lost): gpu-a/%s is another job now, neither shown nor touched" % (
                        job.id, new["id"]))

        drive()


def test_a_refused_follow_shows_no_push_of_the_job_that_holds_its_id_now(tmp_path):
    """The TUI's session follows the new job of the kept id (a screen of it just closed, its
    unfollow not yet through), so the agent pushes that id's output on it: a follow of the
    queued job by its kept id and key, refused, hands none of those pushes to its screen —
    however many arrive while it is asked."""
    with _kept_id_now_another(tmp_path, chatty=True) as (f, job, new, _):
        source = LiveSource(f.config, f.store)
        source.start()
        try:
            session = source.fleet.session("gpu-a")
            wait_until(lambda: session.status.state == "online", "gpu-a online")
            session.call("job.logs", {"job": new["id"], "key": "k-new", "lines": 0,
                                      "follow": True})
            asking, seen, shown = [False], [0], []

            def pushed(method: str, params: dict) -> None:
                if method == "log" and params.get("job") == new["id"] and asking[0]:
                    seen[0] += 1
            session.listeners.append(pushed)
            give_up = time.monotonic() + 300  # (a bound for a machine that is stuck, only)
            while time.monotonic() < give_up:  # until pushes of that id came during the asking
                asking[0] = True
                with pytest.raises(AgentCallError) as err:
                    source.follow_logs("gpu-a", job.agent_job, job.key(f.store.uid),
                                       lambda data, ended: shown.append(data))
                asking[0] = False
                assert err.value.code == rpc.JOB_KEY_MISMATCH
                assert shown == [], "another job's output shown: %r" % shown[:3]
                if seen[0] >= 5:
                    break
            assert seen[0] >= 5, "too few pushes came while it was asked to tell"
        finally:
            source.stop()


def test_an_agent_that_lists_no_key_feature_is_asked_without_the_key():
    """An older agent (one baked into an image) takes no ``key``: it is asked as before."""
    params = {"job": "j1", "key": "k", "lines": 5}
    assert checked_by_key({"features": list(JOB_KEYS)}, "job.logs", params) == params
    assert checked_by_key({"features": []}, "job.logs", params) == {"job": "j1", "lines": 5}
    assert checked_by_key({}, "job.stop", {"job": "j1", "key": "k"}) == {"job": "j1"}
    assert checked_by_key({"features": list(JOB_KEYS)}, "job.get",
                          {"job": "j1", "key": None}) == {"job": "j1"}
    launch = {"key": "k", "argv": ["true"]}  # a launch's key is its own param, always sent
    assert checked_by_key({}, "job.launch", launch) == launch
