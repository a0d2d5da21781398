"""A connected host whose agent stops answering — the daemon stopped, an SSH link stalled
without closing — is not shown online with what it said last: after a silence the agent is
asked for something cheap, and a question left unanswered ends the connection, said."""

from __future__ import annotations

import os
import signal

from fractui.config import QueueConfig
from fractui.fleet import host
from remote_agent.daemon.paths import AgentPaths
from tests import localfleet

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
