"""A connected host whose agent stops answering — the daemon stopped, an SSH link stalled
without closing — is not shown online with what it said last: after a silence the agent is
asked for something cheap, and a question left unanswered ends the connection, said."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, List

from fractui.config import Config, HostConfig, QueueConfig
from fractui.fleet import host
from fractui.fleet.client import ConnectionLost
from fractui.fleet.fleet import Fleet
from remote_agent.daemon.paths import AgentPaths
from tests import localfleet
from tests.conftest import stop_host

local_fleet = localfleet.local_fleet


def test_an_agent_that_stops_answering_is_offline_until_it_answers_again(local_fleet,
                                                                        monkeypatch):
    monkeypatch.setattr(host, "PROBE_S", 0.5)
    monkeypatch.setattr(host, "PROBE_WAIT_S", 2.0)
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="half", gpu=0.5)])
    stopped, other = f.fleet.session("gpu-a"), f.fleet.session("gpu-b")
    with open(AgentPaths(f.config.host("gpu-a").state_dir).pid_file) as pid_file:
        daemon = int(pid_file.read())
    os.kill(daemon, signal.SIGSTOP)
    try:
        localfleet.wait(lambda: stopped.status.state not in ("online", "degraded"),
                        lambda: stopped.status)
        assert "the agent did not answer for" in (stopped.status.error or "")
        assert other.status.state == "online"  # asked and answering all along
    finally:
        os.kill(daemon, signal.SIGCONT)
    localfleet.wait(lambda: stopped.status.state == "online", lambda: stopped.status, 90)
    assert stopped.call("daemon.version")["pid"] == daemon  # the same daemon, reached afresh


def test_a_long_call_is_not_taken_for_silence(local_fleet, monkeypatch, tmp_path):
    """A call that runs longer than the probe's silence and wait (a MIG change held inside
    NVML here, as a GPU reset holds it for minutes) does not take its host offline, and its
    answer comes. (The daemon answers daemon.version beside it; the session also sends no
    probe while a call is in flight, for an agent asked hello instead, which waits for
    NVML.)"""
    monkeypatch.setattr(host, "PROBE_S", 0.5)
    monkeypatch.setattr(host, "PROBE_WAIT_S", 1.0)
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="half", gpu=0.5)])
    session = f.fleet.session("gpu-a")
    session.call("unsubscribe")  # nothing pushed: only the call's answer breaks the silence
    made = session.call("mig.apply", {"gpu": 0, "profile": "1g.10gb"})["instance"]["uuid"]
    gate = tmp_path / "gate"
    session.call("sim.hold", {"function": "nvmlGpuInstanceDestroy", "gate": str(gate)})
    answer: list = []
    call = threading.Thread(target=lambda: answer.append(session.call(
        "mig.destroy", {"gpu": 0, "instance": made}, 60)))
    call.start()
    localfleet.wait(lambda: os.path.exists(str(gate) + ".held"), lambda: "the destroy held")
    states = set()
    deadline = time.monotonic() + 4 * (host.PROBE_S + host.PROBE_WAIT_S)
    while time.monotonic() < deadline:  # several probes' silence and wait, the call in flight
        states.add(session.status.state)
        time.sleep(0.05)
    gate.touch()
    call.join(60)
    assert states == {"online"} and answer[0]["destroyed"]["uuid"] == made


def test_a_fleet_stopped_while_a_host_connects_leaves_no_connection_behind(tmp_path):
    """stop() while a host's worker is still connecting (its connect hooks run, the connection
    not yet the session's): the stop finds nothing to close, so the worker closes the
    connection it then has and ends, rather than keeping it, waiting for the agent to fall
    silent (it had stop wait out its 10 s for the worker, and the host stayed connected)."""
    state = str(tmp_path / "gpu-a")
    config = Config(path=None, hosts=(HostConfig(name="gpu-a", transport="local", sim="1xL4",
                                                 state_dir=state),))
    fleet = Fleet(config, reconnect_max_s=0.5)
    session = fleet.session("gpu-a")
    hooked = threading.Event()

    def hook(_name, _call, _jobs) -> None:
        hooked.set()
        localfleet.wait(lambda: session._transport is None,  # stop() has dropped what it had
                        lambda: "the fleet stopping")
    session.connect_hooks.append(hook)
    try:
        fleet.start()
        assert hooked.wait(60)
        fleet.stop()
        assert [t for t in threading.enumerate() if t.name == "host-gpu-a"] == []
        assert session._conn is None
    finally:
        stop_host(state)


def test_a_fleet_stop_cut_short_by_a_second_ctrl_c_leaves_no_worker_for_exit_to_wait_on(
        tmp_path, monkeypatch):
    """``logs -f``'s first Ctrl-C stops the fleet; a second one (or ``timeout -s INT``, which
    signals the process and its group) can land as stop() starts its fan-out worker, before
    the pool knows the worker: the interpreter's exit then waited on it for good."""
    config = Config(path=None, hosts=(HostConfig(name="gpu-a", transport="local", sim="1xL4",
                                                 state_dir=str(tmp_path / "gpu-a")),))
    fleet = Fleet(config)  # never started: stop() has nothing to close
    start = threading.Thread.start

    def interrupted(thread: threading.Thread) -> None:
        start(thread)
        if thread.name.startswith("fan-out"):
            raise KeyboardInterrupt  # as the Ctrl-C lands in start's wait for the thread
    monkeypatch.setattr(threading.Thread, "start", interrupted)
    try:
        fleet.stop()
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    localfleet.wait(lambda: not [t for t in threading.enumerate()
                                 if t.name.startswith("fan-out")],
                    lambda: "a fan-out worker still waits for work", timeout_s=5)


def connected_five_times(tmp_path, caplog, hook: Callable[..., None],
                         runs: List[bool]) -> List[str]:
    """A local host whose connection ``hook`` runs on (appending to ``runs`` each time), hung
    up on and connected again four times: what was said of what runs on connect."""
    caplog.set_level(logging.INFO, "fractui.fleet")
    state = str(tmp_path / "gpu-a")
    config = Config(path=None, hosts=(HostConfig(name="gpu-a", transport="local", sim="1xL4",
                                                 state_dir=state),))
    fleet = Fleet(config, reconnect_max_s=0.5)
    session = fleet.session("gpu-a")
    session.connect_hooks.append(hook)
    try:
        fleet.start()
        for n in range(1, 6):
            localfleet.wait(lambda: len(runs) >= n and session.status.state == "online",
                            lambda: (runs, session.status))
            session._drop()  # as a host that hangs up: connected again at once
    finally:
        fleet.stop()
        stop_host(state)
    return [r.getMessage() for r in caplog.records if "on connect" in r.getMessage()]


def test_a_host_that_fails_what_runs_on_connect_at_each_connect_is_said_once(tmp_path,
                                                                              caplog):
    """A host whose agent refuses what runs on connect (the scheduler's fencing), in other
    words each time, and drops each connection made: said once while it does so, and once
    when it goes through, not at every connect (within a second of the last). Before: a
    warning a connect."""
    runs: List[bool] = []

    def hook(_name: str, call: Callable[..., Any], _jobs: Any) -> None:
        runs.append(True)
        if len(runs) <= 4:  # the agent's answer names a job it has not: other words each time
            call("job.stop", {"job": "no-such-job-%d" % len(runs)})
    warned = connected_five_times(tmp_path, caplog, hook, runs)
    assert len(warned) == 2 and warned[0].startswith("gpu-a: on connect: ") and \
        "no-such-job-1" in warned[0], warned
    assert warned[1] == "gpu-a: what runs on connect goes through again after 4 failed " \
        "tries", warned


def test_another_failure_on_connect_of_the_same_class_is_said_again(tmp_path, caplog):
    """What runs on connect failing in another way of ours (another call refused, lost or
    malformed) is said again, though of the class said before; the agent's words alone
    changing are not. Before: compared by the class alone, so a stop refused for a week and
    then a read refused was said once, as the first."""
    runs: List[bool] = []

    def hook(_name: str, call: Callable[..., Any], _jobs: Any) -> None:
        runs.append(True)
        if len(runs) <= 4:  # a stop refused twice, then a read, each naming another job
            call("job.stop" if len(runs) <= 2 else "job.get", {"job": "no-such-%d" % len(runs)})
    warned = connected_five_times(tmp_path, caplog, hook, runs)
    assert len(warned) == 3, warned
    assert "job.stop" in warned[0] and "no-such-1" in warned[0], warned
    assert "job.get" in warned[1] and "no-such-3" in warned[1], warned
    assert warned[2] == "gpu-a: what runs on connect goes through again after 4 failed " \
        "tries", warned


def test_a_host_that_hangs_up_on_connect_at_whichever_call_is_said_once(tmp_path, caplog):
    """A host that hangs up while what runs on connect waits on one call or another (where
    the connection ends is the host's timing, not a call of ours failing): said once while it
    does so, and once when it goes through. Before: compared by the call it was waiting on,
    so a host hanging up on a stop, then on a read, was said again at each reconnect."""
    runs: List[bool] = []

    def hook(_name: str, _call: Callable[..., Any], _jobs: Any) -> None:
        runs.append(True)
        if len(runs) <= 4:  # the connection ends while a stop, then a read, waits, in turn
            raise ConnectionLost("the agent hung up", ("job.stop", "job.get")[len(runs) % 2])
    warned = connected_five_times(tmp_path, caplog, hook, runs)
    assert warned == ["gpu-a: on connect: job.get: the agent hung up",
                      "gpu-a: what runs on connect goes through again after 4 failed tries"], \
        warned
