"""The agent as a pod's entry (``pod``) and its liveness probe (``hello``), as real processes.

``pod`` starts the state dir's daemon and waits; ``hello`` asks that daemon and never starts or
replaces one; a bridge (fractui's ``serve --stdio`` through ``kubectl exec``) uses the daemon the
pod started when its settings agree, and hands over without ending the pod when they do not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Iterator, List

import pytest

from tests.cli_run import reaped
from tests.conftest import REPO, AgentProcess, stop_host


def agent(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remote_agent", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL, **kwargs)


@pytest.fixture
def pod(tmp_path) -> Iterator:
    """start(*args) -> the ``pod`` process for tmp_path/state, once its daemon answers; the pod
    and everything of that state dir is stopped afterwards."""
    state = str(tmp_path / "state")
    started: List[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "remote_agent", "pod", "--state-dir",
                                 state, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stderr.readline()  # said once the daemon runs, or why it does not
        assert "waiting for kubectl exec sessions" in line, line + proc.stderr.read()
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    stop_host(state)


def hello(state: str) -> dict:
    done = agent("hello", "--state-dir", state)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def daemon_pid(state: str) -> int:
    with open(os.path.join(state, "daemon.pid")) as f:
        return int(f.read())


def test_pod_starts_the_daemon_and_hello_answers_from_it(pod, tmp_path):
    state = str(tmp_path / "state")
    proc = pod("--sim", "1xA100-80GB:mig")
    answer = hello(state)
    assert answer["backend"] == "sim"
    assert [g["name"] for g in answer["gpus"]] == ["NVIDIA A100-SXM4-80GB"]
    assert set(answer["limits"]) == {"cpus", "memory_mib"}
    assert proc.poll() is None  # the pod's process stays while the daemon serves
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_hello_without_a_daemon_fails_and_starts_none(tmp_path):
    state = tmp_path / "state"
    done = agent("hello", "--state-dir", str(state))
    assert done.returncode == 1
    assert "no agent daemon answers for %s" % state in done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.exists(state / "daemon.pid")


def test_a_bridge_with_the_same_settings_uses_the_pods_daemon(pod, tmp_path):
    state = str(tmp_path / "state")
    pod("--sim", "1xL4")
    first = daemon_pid(state)
    bridge = AgentProcess(state, "--sim", "1xL4")
    try:
        info = bridge.call("daemon.version")
    finally:
        bridge.close()
    assert info["pid"] == first


def test_other_settings_hand_over_and_the_pod_lives_on(pod, tmp_path):
    """fractui's config may give the agent other settings than the pod's: its bridge replaces
    the daemon, the pod's process stays, and the probe answers from the new daemon."""
    state = str(tmp_path / "state")
    proc = pod("--sim", "1xL4")
    first = daemon_pid(state)
    bridge = AgentProcess(state, "--sim", "1xL4", "--log-max-mib", "32")
    try:
        info = bridge.call("daemon.version")
    finally:
        bridge.close()
    assert info["pid"] != first and info["settings"]["log_max_mib"] == 32
    assert proc.poll() is None
    assert hello(state)["backend"] == "sim"
    # the probe ran with the pod's default settings and replaced nothing
    assert agent("hello", "--state-dir", state).returncode == 0
    assert daemon_pid(state) == info["pid"]


def test_pod_refuses_a_bad_sim_spec_with_a_message(tmp_path):
    done = agent("pod", "--state-dir", str(tmp_path / "state"), "--sim", "3xNoSuchGPU")
    assert done.returncode == 2
    assert "remote_agent:" in done.stderr and "Traceback" not in done.stderr


def test_hello_to_a_reader_gone_or_a_full_disk_says_so_without_a_traceback(pod, tmp_path):
    """A probe piped into ``head`` that has left ends quietly (141, as a shell's pipeline);
    one whose stdout cannot be written says so, exit 1."""
    state = str(tmp_path / "state")
    pod("--sim", "1xL4")
    proc = subprocess.Popen([sys.executable, "-m", "remote_agent", "hello", "--state-dir", state],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the answer comes
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "remote_agent", "hello", "--state-dir",
                               state], cwd=REPO, timeout=60, stdin=subprocess.DEVNULL,
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert "hello answered, but its answer could not be written" in done.stderr
    assert "Traceback" not in done.stderr


def _children(pid: int) -> List[int]:
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(word) for word in f.read().split()]


def _state(pid: int) -> str:
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_daemon_that_did_not_start_is_said_though_a_sigchld_came_during_the_launch(tmp_path):
    """The pod reaps its orphans on SIGCHLD (it is a container's pid 1); its launcher ending while
    a SIGCHLD is being handled must still be waited for by the pod itself, or its failure reads
    as exit 0 (ECHILD) and the pod waits for a daemon that never comes. The pod is stopped while
    its launcher fails, so the launcher's SIGCHLD is handled before the pod's wait resumes."""
    state = tmp_path / "state"
    state.write_text("a file where the state dir goes\n")
    proc = subprocess.Popen([sys.executable, "-m", "remote_agent", "pod", "--state-dir",
                             str(state), "--sim", "1xL4"], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        while not _children(proc.pid):  # the launcher runs
            assert proc.poll() is None, proc.stderr.read()
        launcher = _children(proc.pid)[0]
        proc.send_signal(signal.SIGSTOP)
        while _state(launcher) != "Z":  # it failed and ended, unreaped while the pod stops
            pass
        proc.send_signal(signal.SIGCONT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 2, err
    assert "refusing state dir %s: it is a file" % state in err
    assert "the agent daemon did not start (exit 2)" in err
    assert "no agent daemon answers" not in err
    assert "Traceback" not in err
