"""What a host's connection asks of its agent as it connects (the calls of its connect hooks:
the scheduler's fence of a host that comes back) waits the configured connect timeout for an
answer, not a fixed half minute; hello, sent as the agent starts, that past the time its bridge
may take to start the daemon, which then says why it could not (subscribe as long as hello). An agent that
never answers is a host given up on in the time the admin set. Real sshd on loopback; the
agent's NVML call is held (the fake pynvml's ``sim.hold``) so that it never answers."""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any, Callable, List, Tuple

import pytest

from fractui.config import AGENT_START_S
from fractui.fleet.client import AgentClient, ConnectionLost
from fractui.fleet.fleet import Fleet
from fractui.fleet.transport.local import process_stream
from remote_agent.daemon.paths import AgentPaths
from tests import test_fleet
from tests.test_fleet import wait_state

ssh_env = test_fleet.ssh_env
fleet_env = test_fleet.fleet_env

TIMEOUT_S = 2.0  # the configured connect timeout
NO_ANSWER = "no reply to %%s within %.0f s" % TIMEOUT_S
WAIT_S = 20.0  # far below the half minute the waits had: a wait of 30 s more fails the test


def _held(fleet_env, function: str) -> str:
    """``function`` of the agent's NVML made to wait, from now on, until the returned gate
    file exists: set over a connection of its own, which then ends (the daemon goes on)."""
    gate = str(fleet_env.tmp / "gate")
    with Fleet(fleet_env.config(), reconnect_max_s=0.5) as fleet:
        session = fleet.session("gpu-a")
        wait_state(session, "online", 60)
        session.call("sim.hold", {"function": function, "gate": gate})
    return gate


def _offline_said() -> Tuple[List[str], threading.Event, Callable[[Any], None]]:
    """The errors a host is said offline with, the event set at the first, and the fleet's
    ``on_change`` that fills them."""
    seen: List[str] = []
    offline = threading.Event()

    def changed(status: Any) -> None:
        if status.state == "offline":
            seen.append(status.error or "")
            offline.set()

    return seen, offline, changed


def test_a_connect_hook_the_agent_never_answers_waits_the_connect_timeout(fleet_env):
    fleet_env.connect_timeout = TIMEOUT_S
    fleet_env.add("gpu-a", "1xA100-80GB:mig")
    gate = _held(fleet_env, "nvmlDeviceCreateGpuInstanceWithPlacement")
    lost: List[BaseException] = []
    said = threading.Event()

    def hook(host: str, call: Any, jobs: Any) -> None:
        try:
            call("mig.apply", {"gpu": 0, "profile": "1g.10gb"})
        except ConnectionLost as err:
            lost.append(err)
            said.set()
            raise

    fleet = Fleet(fleet_env.config(), reconnect_max_s=0.5)
    fleet.session("gpu-a").connect_hooks.append(hook)
    try:
        fleet.start()
        assert said.wait(WAIT_S), "the hook's call still waits after %g s" % WAIT_S
        assert str(lost[0]) == NO_ANSWER % "mig.apply", str(lost[0])
    finally:
        open(gate, "w").close()
        fleet.stop()


def test_a_hello_the_agent_never_answers_waits_the_connect_timeout_past_its_start(fleet_env):
    """hello is sent as the agent starts: its wait is the connect timeout past the time the
    bridge may take to start the daemon (``AGENT_START_S``), and no more."""
    fleet_env.connect_timeout = TIMEOUT_S
    fleet_env.add("gpu-a", "1xL4")
    gate = _held(fleet_env, "nvmlSystemGetDriverVersion")
    seen, offline, changed = _offline_said()
    fleet = Fleet(fleet_env.config(), reconnect_max_s=0.5, on_change=changed)
    try:
        fleet.start()
        waited = AGENT_START_S + TIMEOUT_S
        assert offline.wait(waited + WAIT_S), "hello still waits after %g s" % (waited + WAIT_S)
        assert "no reply to hello within %.0f s" % waited in seen[0], seen
    finally:
        open(gate, "w").close()
        fleet.stop()


def test_a_daemon_that_does_not_come_up_is_said_in_the_bridges_words(fleet_env):
    """hello's wait holds the agent's start: the bridge starts the daemon (and hands over from
    an old one) and gives up on it with its own words, after its own deadline. A hello that
    gave up first (at a connect timeout shorter than that deadline, as the default 10 s is)
    said only that nothing answered. Here the state dir's daemon lock is held by a process that
    serves nothing (a daemon wedged on its way down): no daemon can start."""
    fleet_env.connect_timeout = TIMEOUT_S
    host = fleet_env.add("gpu-a", "1xL4")
    os.makedirs(host.state_dir, 0o700)
    lock = os.open(AgentPaths(host.state_dir).lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    seen, offline, changed = _offline_said()
    fleet = Fleet(fleet_env.config(), reconnect_max_s=60, on_change=changed)
    try:
        fleet.start()
        assert offline.wait(AGENT_START_S + 2 * TIMEOUT_S + WAIT_S), "still connecting"
        assert "no agent daemon answers on" in seen[0], seen
    finally:
        fleet.stop()
        os.close(lock)


@pytest.mark.parametrize("timeout_s, said", [(0.5, "0.5 s"), (10 / 3, "3.3 s"), (2.0, "2 s")])
def test_a_wait_is_said_as_long_as_it_was(timeout_s, said):
    """``[ssh] connect_timeout`` may be 0.5, and a connect hook's calls wait it: "%.0f" said
    a wait of 0.5 s as "within 0 s". A program that reads and never answers
    stands for the agent."""
    stream = process_stream(["sh", "-c", "cat > /dev/null"])  # its stdout held open
    client = AgentClient(stream.reader, stream.write, name="gpu-x")
    try:
        with pytest.raises(ConnectionLost) as lost:
            client.call("hello", None, timeout_s)
        assert str(lost.value) == "no reply to hello within %s" % said
    finally:
        stream.close()
