"""The host daemon serves many clients at once (the scheduler's, each admin's TUI, the CLI's
verbs): one that stops reading — a bridge whose SSH link stalled — holds up no one else's
notifications, is sent a followed log at its own pace, and is dropped if it leaves too much
else unread; running out of descriptors under many connections ends no one's service."""

from __future__ import annotations

import json
import resource
import select
import socket
import time
from typing import Any, Dict, List

import pytest

from remote_agent.daemon.paths import AgentPaths
from remote_agent.daemon.server import MAX_UNSENT_BYTES, Connection
from tests.test_job_supervision import wait_until
from tests.test_jobs import PY, wait_job
from tests.test_launch_concurrency import Client


def _logged(state: str, words: str) -> bool:
    """Whether the daemon's log says ``words``."""
    with open(AgentPaths(state).log_file, errors="replace") as log:
        return words in log.read()


def _until_job_ends(client: Client, ident: str, patience_s: float) -> List[str]:
    """The states of ``ident`` pushed to ``client`` until one is an end, or the patience ran
    out (what came, then)."""
    states: List[str] = []
    deadline = time.time() + patience_s
    while time.time() < deadline and not (states and states[-1] in ("exited", "failed")):
        if client.pushed or select.select([client.sock], [], [], 0.5)[0]:
            msg = client.next_pushed()
            if msg.get("method") == "job" and msg["params"]["id"] == ident:
                states.append(msg["params"]["state"])
    return states


def test_a_client_that_stops_reading_holds_up_no_one_and_then_gets_all_of_it(start_agent,
                                                                              tmp_path):
    """A client following a job that writes 48 MiB stops reading: another client's launch is
    answered and its job's states all pushed meanwhile; what the log pusher queues for the
    stalled one is bounded, and once it reads again it gets the whole output, at its pace."""
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, "--log-max-mib", "128")  # 48 MiB in one log file
    go, written = tmp_path / "go", tmp_path / "written"
    size = 3 * MAX_UNSENT_BYTES  # more than may be queued for one client
    chatty = agent.call("job.launch", key="k-chatty", gpu=0, memory_mib=10, argv=[
        PY, "-c", "import os, sys, time\nwhile not os.path.exists(%r):\n    time.sleep(0.05)\n"
        "line = 'x' * 1023 + '\\n'\nfor _ in range(%d):\n    sys.stdout.write(line)\n"
        "sys.stdout.flush()\nopen(%r, 'w').close()\ntime.sleep(600)" % (
            str(go), size // 1024, str(written))])
    stalled = Client(state)  # follows the chatty job's output, then stops reading
    assert "result" in stalled.call("subscribe")
    assert "result" in stalled.call("job.logs", job=chatty["id"], lines=0, follow=True)
    good = Client(state)
    assert "result" in good.call("subscribe")
    go.touch()
    wait_until(written.exists, "the chatty job's output", 60)  # more than a socket holds
    quick = good.call("job.launch", key="k-quick", gpu=0, memory_mib=10, argv=["true"])
    assert "result" in quick, quick
    # every state of it pushed, the stalled client's socket full of the chatty job's output
    assert _until_job_ends(good, quick["result"]["id"], 60)[-1:] == ["exited"]
    good.close()

    stalled.sock.settimeout(60)
    got = 0
    while got < size:  # it reads again, slower than the log came (at most 32 MB/s): all of
        chunk = stalled.sock.recv(1 << 16)  # it comes at its pace, none of it lost
        assert chunk, "dropped after %d bytes" % got
        got += len(chunk)
        time.sleep(0.002)
    stalled.close()
    assert not _logged(state, "dropping a connection")


def test_a_connection_that_leaves_too_much_unread_is_dropped():
    """What else is queued for a client that never reads (snapshots, job records) is bounded
    too: past MAX_UNSENT_BYTES its connection is dropped, and its bridge connects afresh."""
    ours, theirs = socket.socketpair()
    try:
        conn = Connection(ours, None)  # type: ignore[arg-type] - no methods are served here
        big = {"data": "x" * (1 << 20)}
        while not conn.closed:
            conn.notify("snapshot", big)  # never read: the socket fills, then the queue
        with pytest.raises(BrokenPipeError):
            conn.write(b"{}\n")
    finally:
        ours.close()
        theirs.close()


def test_running_out_of_descriptors_ends_no_ones_service(start_agent, tmp_path):
    """Idle connections beyond its descriptor limit: the daemon says it cannot accept more
    and serves those it has; once they close, it accepts again — the same daemon."""
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    pid = agent.call("daemon.version")["pid"]
    held = Client(state)  # a client connected before: served throughout
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
    idle: List[socket.socket] = []
    try:
        for _ in range(100):  # more than it can take: the last wait in its listen queue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.connect(AgentPaths(state).socket)
            except OSError:
                sock.close()
                break
            idle.append(sock)
        wait_until(lambda: _logged(state, "cannot accept connections"),
                   "the daemon to run out of descriptors", 60)
    finally:
        for sock in idle:
            sock.close()
    assert "result" in held.call("inventory")
    deadline = time.time() + 60
    answer: Dict[str, Any] = {}
    while time.time() < deadline and "result" not in answer:
        try:
            answer = Client(state).call("daemon.version")
        except OSError:
            time.sleep(0.5)
    assert answer["result"]["pid"] == pid  # the same daemon, accepting again
    held.close()


def test_a_shutdown_asked_behind_an_answer_not_read_yet_is_answered_before_the_daemon_exits(
        start_agent, tmp_path):
    """A bridge handing over asks daemon.shutdown and waits for its answer. The daemon stopped
    as the method ran, and could exit before the answer was written: here, queued behind a
    megabyte its client had not read yet, it was lost for good (a handover on a loaded host
    failed with "the agent daemon closed the connection"). The daemon now stops once the
    answer is queued, and sends what is queued before it exits."""
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-megabyte", gpu=0, memory_mib=10,
                     argv=[PY, "-c", "import sys\nsys.stdout.write('x' * (1 << 20))"])
    wait_job(agent, job["id"])
    client = Client(state)
    asked = [("job.logs", {"job": job["id"], "lines": 0, "bytes": 1 << 20}),
             ("daemon.shutdown", {})]
    client.sock.sendall(b"".join(json.dumps({"jsonrpc": "2.0", "id": n, "method": method,
                                             "params": params}).encode() + b"\n"
                                 for n, (method, params) in enumerate(asked)))
    wait_until(lambda: _logged(state, "daemon stopping"), "the daemon to stop serving", 30)
    answers = [json.loads(client.reader.readline() or b"null") for _ in asked]
    assert [a and a.get("id") for a in answers] == [0, 1], answers[-1]
    assert len(answers[0]["result"]["data"]) > 1 << 20  # (its base64)
    assert answers[1]["result"]["stopping"] is True
    client.close()


def test_no_push_comes_after_the_answer_to_unsubscribe(start_agent, tmp_path):
    """A client that unsubscribed while the monitor took a snapshot is pushed nothing after
    the answer: the push was queued behind the answer, and a client reading on after it (the
    tests' own, which silence the agent's pushes so) took a snapshot from before its own as
    the last word."""
    state = str(tmp_path / "host")
    quiet = start_agent("1xL4", state)
    quiet.call("subscribe")
    heard = start_agent(None, state)  # (connected second: the monitor pushes it second)
    heard.call("subscribe")
    gate = tmp_path / "gate"  # the monitor's snapshot, held there with both subscribed
    quiet.call("sim.hold", function="nvmlDeviceGetUtilizationRates", gate=str(gate))
    wait_until((tmp_path / "gate.held").exists, "the monitor to take a snapshot")
    pid = quiet.call("sim.add_process", gpu=0, used_mib=100)["pid"]  # (read past the gate)
    quiet.call("unsubscribe")
    quiet.notifications.clear()
    gate.touch()
    while True:  # pushed to ``heard``: ``quiet``'s push went before, or went nowhere
        pushed = heard.next_notification()
        if pushed["method"] == "snapshot" and pushed["params"]["gpus"][0]["processes"]:
            assert pushed["params"]["gpus"][0]["processes"][0]["pid"] == pid
            break
    quiet.call("daemon.version")  # what was queued for it before this answer is read now
    assert [n["method"] for n in quiet.notifications] == []


def test_a_push_for_a_subscriber_that_unsubscribed_since_is_dropped():
    """The pushers (the notify thread's job records, the monitor's snapshots) take the
    subscribers, then write to each in turn: one that unsubscribed in between is not written
    the push, which would come after the answer. The flag is read where the push is queued."""
    ours, theirs = socket.socketpair()
    try:
        conn = Connection(ours, None)  # type: ignore[arg-type] - no methods are served here
        conn.subscribed = True  # (as ``subscribe`` sets it): taken by a pusher as a subscriber
        conn.unsubscribe(None)  # type: ignore[arg-type] - it reads no params
        conn.write(b'{"answer": "unsubscribe"}\n')
        conn.notify("job", {"id": "j1"}, if_subscribed=True)  # the pusher's turn comes now
        conn.write(b'{"answer": "next"}\n')
        with theirs.makefile("rb") as reader:
            lines = [json.loads(reader.readline()) for _ in range(2)]
        assert lines == [{"answer": "unsubscribe"}, {"answer": "next"}]
    finally:
        ours.close()
        theirs.close()


def _processes(snapshot: Dict[str, Any]) -> List[int]:
    return [p["pid"] for p in snapshot["gpus"][0]["processes"]]


def test_a_client_that_subscribes_while_a_snapshot_is_taken_is_pushed_it(start_agent,
                                                                          tmp_path):
    """The monitor takes a snapshot (NVML, slow on a busy host) for those subscribed before
    it began; a client that subscribes meanwhile is answered the snapshot before it, and is
    pushed the one taken, as every change after its answer ("from then on": docs/protocol.md).
    It was not pushed it, and kept the one before until the next change: a host that goes
    on unchanged, for good."""
    state = str(tmp_path / "host")
    late = start_agent("1xL4", state)
    late.call("daemon.version")  # (connected first: the monitor pushes it first)
    early = start_agent(None, state)
    early.call("subscribe")
    first = early.call("sim.add_process", gpu=0, used_mib=100)["pid"]
    while first not in _processes(early.next_notification()["params"]):
        pass  # pushed: the monitor keeps its snapshot from here on, as one is subscribed
    gate = tmp_path / "gate"  # the monitor's next snapshot, held there for ``early`` alone
    early.call("sim.hold", function="nvmlDeviceGetUtilizationRates", gate=str(gate))
    wait_until((tmp_path / "gate.held").exists, "the monitor to take a snapshot")
    pid = early.call("sim.add_process", gpu=0, used_mib=200)["pid"]  # (read past the gate)
    assert pid not in _processes(late.call("subscribe")["snapshot"])  # the one before
    gate.touch()
    while pid not in _processes(early.next_notification()["params"]):
        pass  # pushed to ``early``, so to ``late`` before it, or never
    late.call("daemon.version")  # what was queued for it before this answer is read now
    assert [pid in _processes(n["params"]) for n in late.notifications
            if n["method"] == "snapshot"] == [True]
