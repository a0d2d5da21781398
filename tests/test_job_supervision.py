"""No unmanaged job: a job whose shim was killed is still found, watched, capped and stopped, on
both ways the agent finds a job's processes (its cgroup; its session where there is no cgroup); a
launch cut short by kill -9 is resolved when the daemon comes back; a full disk drops output and
never kills a job. Every fault here is a real signal to a real process, or a real full filesystem.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from remote_agent.failing import Failures
from remote_agent.jobs.watch import OUTLIVED
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import STEP_S, AgentError, stop_host
from tests.stuck_mount import stuck_mount
from tests.test_jobs import (alive, daemon_pid, script, simload, slow_to_stop_simload, until_file,
                             wait_job)


@pytest.fixture(params=["session", "cgroup"])
def tracked_host(request, start_agent, tmp_path):
    """A simulated host whose jobs are found by their session, or by their own cgroup."""
    return start_tracked(request, start_agent, tmp_path)


def start_tracked(request, start_agent, tmp_path, *extra: str):
    if request.param == "cgroup":
        extra += ("--cgroup-parent", request.getfixturevalue("cgroup_parent"))
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state, *extra)
    assert agent.call("daemon.version")["job_tracking"] == request.param
    return agent, state


def job_dir(state: str, job_id: str) -> str:
    return os.path.join(state, "jobs", job_id)


def kill_shim(state: str, job_id: str) -> int:
    with open(os.path.join(job_dir(state, job_id), "shim.claim")) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the shim to die")
    return pid


def printing(lines: int, go, printed, release, code: int = 0, pause_at: int = 0,
             line: str = "'line', i") -> List[str]:
    """A job that prints ``lines`` lines (line ``i`` is what the Python ``line`` gives),
    waiting for ``go`` before line ``pause_at``; then it makes ``printed``, waits for
    ``release`` and exits with ``code``: the test decides when each comes."""
    return script("import os, sys, time\n"
                  "def wait(path):\n"
                  "    while not os.path.exists(path):\n"
                  "        time.sleep(0.01)\n"
                  "for i in range(%d):\n"
                  "    if i == %d:\n"
                  "        wait(%r)\n"
                  "    print(%s, flush=True)\n"
                  "open(%r, 'w').close()\n"
                  "wait(%r)\n"
                  "sys.exit(%d)\n" % (lines, pause_at, str(go), line, str(printed),
                                       str(release), code))


def wait_until(done, what: str, timeout: float = 20.0):
    deadline = time.time() + timeout
    while True:
        value = done()
        if value:
            return value
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(STEP_S)


TAKE_OVER = "[fractui: the job's shim ended; the agent keeps its output from here]"


def wait_for_take_over(state: str, job_id: str) -> None:
    """Until the daemon has seen the shim gone and watches the job itself."""
    wait_until(lambda: TAKE_OVER in read_log(state, job_id), "the daemon to take the job over")


def read_log(state: str, job_id: str) -> str:
    try:
        with open(os.path.join(job_dir(state, job_id), "output.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""  # nothing written yet


def test_the_watchdog_caps_and_stops_a_job_whose_shim_was_killed(tracked_host):
    agent, state = tracked_host
    job = agent.call("job.launch", key="k-orphan-cap", gpu=0, memory_mib=3000,
                     argv=simload("--mem-mib", "2000", "--seconds", "60"))
    wait_until(lambda: "using 2000 MiB" in read_log(state, job["id"]), "the job to start")
    kill_shim(state, job["id"])
    wait_for_take_over(state, job["id"])
    # from here only the daemon watches it (a job marked lost would never be capped below)
    agent.call("sim.set_process_memory", pid=job["pid"], used_mib=4664)
    done = wait_job(agent, job["id"])
    assert (done["state"], done["reason"]) == ("killed", "exceeded its 3000 MiB cap: used 4664 MiB")
    assert not alive(job["pid"])
    snap = agent.call("snapshot")
    assert snap["gpus"][0]["processes"] == []


@pytest.fixture(params=["session", "cgroup"])
def sampled_host(request, start_agent, tmp_path):
    """A tracked host whose jobs' use is sampled every pass."""
    return start_tracked(request, start_agent, tmp_path, "--usage-sample-s", "0.5")


def test_a_jobs_gpu_memory_is_that_of_its_own_processes_children_included(sampled_host, tmp_path):
    """The watchdog matches the processes NVML lists to jobs one by one: a child in a process
    group of its own is its job's, another job's process on the same GPU is not."""
    agent, state = sampled_host
    pid_file = tmp_path / "kid"
    code = ("import subprocess, sys, time\n"
            "kid = subprocess.Popen([sys.executable, '-m', 'remote_agent.simload', '--mem-mib',"
            " '600', '--seconds', '60'], process_group=0)\n"
            "open(%r, 'w').write(str(kid.pid))\ntime.sleep(60)\n" % str(pid_file))
    parent = agent.call("job.launch", key="k-parent", gpu=0, memory_mib=1000, argv=script(code))
    other = agent.call("job.launch", key="k-other", gpu=0, memory_mib=3000,
                       argv=simload("--mem-mib", "2500", "--seconds", "60"))
    kid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), "the child"))

    def peak(job_id: str) -> int:
        return (agent.call("job.get", job=job_id)["usage"] or {}).get("memory_peak_mib", 0)
    wait_until(lambda: peak(parent["id"]) == 600 and peak(other["id"]) == 2500,
               "both jobs sampled at their own processes' memory")
    assert agent.call("job.get", job=parent["id"])["state"] == "running"  # 600 + 2500 > 1000
    agent.call("sim.set_process_memory", pid=kid, used_mib=1500)
    done = wait_job(agent, parent["id"])
    assert (done["state"], done["reason"]) == ("killed", "exceeded its 1000 MiB cap: used 1500 MiB")
    assert not alive(kid)
    assert agent.call("job.get", job=other["id"])["state"] == "running"


def test_stop_ends_every_process_of_a_job_whose_shim_was_killed(tracked_host, tmp_path):
    agent, state = tracked_host
    pids = tmp_path / "pids"
    # a leader that ignores SIGTERM, with a child in a process group of its own (same session)
    code = ("import os, signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)'],"
            " process_group=0)\n"
            "open(%r, 'w').write('%%d %%d' %% (os.getpid(), kid.pid))\n"
            "time.sleep(600)\n" % str(pids))
    job = agent.call("job.launch", key="k-orphan-stop", gpu=0, memory_mib=10, argv=script(code))
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2,
               "the job's processes")  # (the file is made before its write)
    leader, kid = map(int, pids.read_text().split())
    kill_shim(state, job["id"])
    wait_for_take_over(state, job["id"])
    agent.call("job.stop", job=job["id"], grace=1, reason="make room")
    done = wait_job(agent, job["id"])
    assert (done["state"], done["reason"]) == ("killed", "make room")
    assert not alive(leader) and not alive(kid)


def signals_seen(seen: Path) -> str:
    """A job's code that blocks SIGTERM and SIGUSR1 and writes a line for each it takes, in
    the order sent: a SIGTERM still pending when a SIGUSR1 is taken is written before it
    (standard signals pending at once are taken lowest number first: SIGUSR1 first)."""
    return ("import os, signal\n"
            "sigs = {signal.SIGTERM, signal.SIGUSR1}\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, sigs)\n"
            "out = open(%r, 'a', buffering=1)\n"
            "out.write('pid %%d\\n' %% os.getpid())\n"
            "while True:\n"
            "    got = signal.sigwaitinfo(sigs).si_signo\n"
            "    if got == signal.SIGUSR1 and signal.SIGTERM in signal.sigpending():\n"
            "        signal.sigwaitinfo({signal.SIGTERM})\n"
            "        out.write('TERM\\n')\n"
            "    out.write('TERM\\n' if got == signal.SIGTERM else 'USR1\\n')\n" % str(seen))


def signals_taken(seen: Path, pid: int, marks: int) -> list:
    """The signals the job of ``signals_seen`` took, once every one sent before now reached
    it: its ``marks``-th SIGUSR1, sent now, is taken after them (or with them)."""
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: seen.read_text().count("USR1") == marks, "the job's SIGUSR1")
    return seen.read_text().split()[2:]


def test_a_stop_asked_again_sends_no_second_sigterm(start_agent, tmp_path):
    """A caller whose stop's answer was lost (an SSH session dropped after the agent acted, a
    lease holder killed before it recorded the stop) asks again: the same record, and the job
    hears one SIGTERM, which many programs take as "checkpoint and quit" where a second is
    "quit now". A later stop with a shorter grace shortens it, and sends none either."""
    agent = start_agent("1xL4", str(tmp_path / "host"))
    seen = tmp_path / "seen"
    job = agent.call("job.launch", key="k-stop-twice", gpu=0, memory_mib=10,
                     argv=script(signals_seen(seen)))
    wait_until(lambda: seen.exists() and seen.read_text().startswith("pid "), "the job")
    pid = int(seen.read_text().split()[1])
    first = agent.call("job.stop", job=job["id"], grace=600, reason="make room")
    assert signals_taken(seen, pid, 1) == ["TERM", "USR1"]
    again = agent.call("job.stop", job=job["id"], grace=600, reason="make room")
    assert (again["state"], again["reason"]) == (first["state"], first["reason"])
    assert signals_taken(seen, pid, 2) == ["TERM", "USR1", "USR1"]
    agent.call("job.stop", job=job["id"], grace=0, reason="now")
    done = wait_job(agent, job["id"])
    assert (done["state"], done["reason"]) == ("killed", "make room")
    assert seen.read_text().split()[2:] == ["TERM", "USR1", "USR1"]


def leaves_a_child(pids, go) -> str:
    """A job's code that starts a child that would run on after it, writes the child's pid to
    ``pids``, and ends once ``go`` exists."""
    return ("import os, subprocess, sys, time\n"
            "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "open(%r, 'w').write(str(kid.pid))\n"
            "while not os.path.exists(%r):\n"
            "    time.sleep(0.02)\n" % (str(pids), str(go)))


@pytest.mark.parametrize("shim", ["alive", "killed"])
def test_what_a_job_leaves_behind_ends_with_it(tracked_host, tmp_path, shim):
    agent, state = tracked_host
    pids, go = tmp_path / "pids", tmp_path / "go"
    code = leaves_a_child(pids, go)
    job = agent.call("job.launch", key="k-leftover", gpu=0, memory_mib=10, argv=script(code))
    wait_until(lambda: pids.exists() and pids.read_text(), "the job's child")
    if shim == "killed":
        kill_shim(state, job["id"])
        wait_for_take_over(state, job["id"])
    go.touch()  # its first process ends; its child would run on
    done = wait_job(agent, job["id"])
    if shim == "alive":
        assert (done["state"], done["exit_code"]) == ("exited", 0)
    else:  # seen running after its shim died
        assert (done["state"], done["reason"]) == ("lost", (
            "its shim died before the job ended, so how it ended cannot be known; all its "
            "processes have ended"))
    wait_until(lambda: not alive(int(pids.read_text())), "the child to be killed")


def test_a_job_seen_outliving_its_shim_is_told_so_by_a_restarted_daemon(start_agent, tmp_path):
    """A daemon saw the job run on after its shim died, then died itself (-9); the job ended
    while no daemon ran. The next daemon finds it ended, and says what the first one saw: that
    the shim died before the job ended, not that the job had ended when it found the shim dead
    (the words for a job no daemon saw outlive its shim)."""
    state, pids, go = str(tmp_path / "host"), tmp_path / "pids", tmp_path / "go"
    code = leaves_a_child(pids, go)
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-outlived", gpu=0, memory_mib=10, argv=script(code))
    wait_until(lambda: pids.exists() and pids.read_text(), "the job's child")
    kill_shim(state, job["id"])
    wait_until(lambda: os.path.exists(os.path.join(job_dir(state, job["id"]), OUTLIVED)),
               "the daemon to see the job outlive its shim")
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    go.touch()  # its first process ends with no daemon to see it; its child runs on
    wait_until(lambda: not alive(job["pid"]), "the job's first process to end")
    done = wait_job(start_agent(None, state), job["id"])
    assert (done["state"], done["reason"]) == ("lost", (
        "its shim died before the job ended, so how it ended cannot be known; all its "
        "processes have ended"))
    wait_until(lambda: not alive(int(pids.read_text())), "the child to be killed")


def ended_with_a_damaged_outlived_file(start_agent, tmp_path, damage: bytes,
                                       unmovable: bool = False):
    """A job seen outliving its shim by a daemon then killed (-9), its outlived-shim.json
    then written over with ``damage`` (its job directory made immutable where ``unmovable``:
    nothing in it can be renamed), the job ended while no daemon ran, and the next daemon
    started: (that daemon, the job, the file's path), once it recorded the job ended as if no
    daemon had seen it outlive its shim."""
    state, pids, go = str(tmp_path / "host"), tmp_path / "pids", tmp_path / "go"
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-damaged", gpu=0, memory_mib=10,
                     argv=script(leaves_a_child(pids, go)))
    wait_until(lambda: pids.exists() and pids.read_text(), "the job's child")
    kill_shim(state, job["id"])
    outlived = os.path.join(job_dir(state, job["id"]), OUTLIVED)
    wait_until(lambda: os.path.exists(outlived), "the daemon to see the job outlive its shim")
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    with open(outlived, "wb") as f:
        f.write(damage)
    go.touch()
    wait_until(lambda: not alive(job["pid"]), "the job's first process to end")
    if unmovable:
        subprocess.run(["chattr", "+i", job_dir(state, job["id"])], check=True)
    try:
        later = start_agent(None, state)
        done = wait_job(later, job["id"])
    finally:
        if unmovable:
            subprocess.run(["chattr", "-i", job_dir(state, job["id"])], check=True)
    assert (done["state"], done["reason"].split(" (see ")[0]) == ("lost", (
        "its shim died before it recorded how the job ended (the job had ended when the agent "
        "found its shim dead), so its exit status cannot be known; all its processes have "
        "ended"))
    return later, job, outlived


@pytest.mark.parametrize("damage", [b'{"seen_at": 17', b"\0" * 64, b'{"seen_at": "now"}',
                                    b"[" * 100000], ids=["cut", "zeroed", "shape", "deep"])
def test_a_damaged_outlived_file_is_set_aside_once_and_the_job_ends_as_if_unseen(
        start_agent, tmp_path, damage):
    """The job's outlived-shim.json damaged while no daemon ran (cut short, zeroed by a crash,
    of another shape, nested past the parser): the next daemon says so once, with its path,
    sets it aside (0600, as it was) and tells the job's end as if no daemon had seen it
    outlive its shim, keeping the job's other files. Before, each watchdog pass failed to read
    it, and the job was never recorded ended."""
    state = str(tmp_path / "host")
    later, job, outlived = ended_with_a_damaged_outlived_file(start_agent, tmp_path, damage)
    assert not os.path.exists(outlived)
    with open(outlived + ".damaged", "rb") as f:
        assert f.read() == damage
    assert os.stat(outlived + ".damaged").st_mode & 0o777 == 0o600
    assert os.path.exists(os.path.join(job_dir(state, job["id"]), "started.json"))
    said = [line for line in (Path(state) / "daemon.log").read_text().splitlines()
            if "damaged" in line]
    assert len(said) == 1, said
    assert "ERROR %s (the job %s's file) is damaged (" % (outlived, job["id"]) in said[0]
    assert said[0].endswith("; set aside as %s.damaged, and job %s is watched on as if it were "
                            "not there" % (outlived, job["id"]))
    assert later.call("job.get", job=job["id"])["pid"] == job["pid"]


def test_a_damaged_file_that_cannot_be_set_aside_is_said_once_and_read_as_none(start_agent,
                                                                              tmp_path):
    """The damaged outlived-shim.json in a job directory nothing can be renamed in (immutable):
    the daemon says once that it cannot set it aside, and why, and reads it as none: the job
    ends as one no daemon saw outlive its shim, and the file stays as it was."""
    state = tmp_path / "host"
    later, job, outlived = ended_with_a_damaged_outlived_file(start_agent, tmp_path,
                                                              b"{", unmovable=True)
    with open(outlived, "rb") as f:
        assert f.read() == b"{"
    said = [line for line in (state / "daemon.log").read_text().splitlines()
            if "damaged" in line]
    assert len(said) == 1, said
    assert said[0].endswith(" ERROR %s (the job %s's file) is damaged (JSONDecodeError: "
                            "Expecting property name enclosed in double quotes: line 1 column 2 "
                            "(char 1)) and cannot be set aside (PermissionError: [Errno 1] "
                            "Operation not permitted: %r -> %r); job %s is watched on as if it "
                            "were not there" % (outlived, job["id"], outlived,
                                                outlived + ".damaged", job["id"])), said


def test_a_damaged_end_record_is_said_once_and_the_job_ends_saying_so(start_agent, tmp_path):
    """The job's exit.json, written by its shim while no daemon ran, then damaged: the next
    daemon says so once, sets it aside, and ends the job lost, saying that its end record is
    damaged and where it lies, its other files kept. Before, the job's words were that its
    shim died before it recorded how the job ended, which it had not."""
    state, release = str(tmp_path / "host"), tmp_path / "release"
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-damaged-end", gpu=0, memory_mib=10,
                     argv=until_file(release, 5))
    with open(os.path.join(job_dir(state, job["id"]), "shim.claim")) as f:
        shim = int(f.read())
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    release.touch()
    wait_until(lambda: not alive(shim), "the shim to record the end and exit")
    ended = os.path.join(job_dir(state, job["id"]), "exit.json")
    with open(ended, "wb") as f:
        f.write(b'{"code": 5, "ended_at": 17')
    done = wait_job(start_agent(None, state), job["id"])
    assert (done["state"], done["reason"]) == ("lost", (
        "its shim's record of how the job ended (exit.json) is damaged (set aside as "
        "%s.damaged), so its exit status cannot be known; all its processes have ended" % ended))
    with open(ended + ".damaged", "rb") as f:
        assert f.read() == b'{"code": 5, "ended_at": 17'
    assert os.path.exists(os.path.join(job_dir(state, job["id"]), "started.json"))
    said = [line for line in (Path(state) / "daemon.log").read_text().splitlines()
            if "damaged" in line]
    assert len(said) == 1 and "ERROR %s (the job %s's file) is damaged (JSONDecodeError: " % (
        ended, job["id"]) in said[0], said


@pytest.mark.parametrize("killed", ["shim", "shim and daemon"])
def test_a_job_keeps_its_output_and_its_life_after_its_shim_died(tracked_host, tmp_path,
                                                                 start_agent, killed):
    agent, state = tracked_host
    go_on, printed, finish = tmp_path / "go-on", tmp_path / "printed", tmp_path / "finish"
    # it pauses after 20 lines, so the kill finds no output in flight, then writes 2000 more
    # (less than a pipe holds) and waits to be let go
    job = agent.call("job.launch", key="k-orphan-out", gpu=0, memory_mib=10,
                     argv=printing(2020, go_on, printed, finish, pause_at=20))
    wait_until(lambda: "line 19\n" in read_log(state, job["id"]), "output")
    if killed == "shim and daemon":
        os.kill(daemon_pid(agent), signal.SIGKILL)
        agent.proc.wait(timeout=10)
    kill_shim(state, job["id"])
    go_on.touch()
    wait_until(printed.exists, "the job to print on")  # no write of its failed (no SIGPIPE)
    if killed == "shim and daemon":
        agent = start_agent(None, state)  # a new daemon takes the output waiting in the pipe
    wait_until(lambda: "line 2019\n" in read_log(state, job["id"]), "the output kept")
    assert agent.call("job.get", job=job["id"])["state"] == "running"
    finish.touch()
    done = wait_job(agent, job["id"])
    assert done["state"] == "lost" and "its shim died" in done["reason"]
    text = read_log(state, job["id"])
    assert TAKE_OVER in text
    lines = [line for line in text.splitlines() if line.startswith("line ")]
    assert lines == ["line %d" % i for i in range(2020)]


def test_a_launch_cut_short_before_anything_ran_is_resolved_on_restart(start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig", state)
    gate = tmp_path / "gate"
    agent.call("sim.hold", function="nvmlDeviceCreateGpuInstanceWithPlacement", gate=str(gate))
    params = dict(key="k-cut", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                  argv=simload("--mem-mib", "100", "--seconds", "60"))
    agent.send("job.launch", **params)
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the launch to reach MIG creation")
    os.kill(daemon_pid_of(state), signal.SIGKILL)  # the daemon dies mid-launch
    agent.proc.wait(timeout=10)
    later = start_agent(None, state)
    job = wait_until(lambda: next((j for j in later.call("job.list")["jobs"]
                                   if j["state"] != "starting"), None), "the launch resolved")
    assert (job["key"], job["state"], job["exit_code"], job["pid"]) == ("k-cut", "exited", None,
                                                                         None)
    assert job["reason"].startswith("never started: the agent stopped while launching it")
    assert later.call("inventory")["gpus"][0]["instances"] == []  # nothing was held or made
    # nothing ran, so the same key may start it now: one job, one process, one instance
    first = later.call("job.launch", **params)
    again = later.call("job.launch", **params)
    assert (first["id"], first["state"]) == (job["id"], "running")
    assert again["pid"] == first["pid"]
    assert len(later.call("inventory")["gpus"][0]["instances"]) == 1


def daemon_pid_of(state: str) -> int:
    with open(os.path.join(state, "daemon.pid")) as f:
        return int(f.read())


def crash_before_start_was_recorded(agent, state: str) -> None:
    """What the table holds when the daemon died after the shim started the job but before it
    recorded the start: kill -9 the daemon, and put the job back as the launch left it."""
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    with sqlite3.connect(os.path.join(state, "jobs.db")) as db:
        db.execute("UPDATE jobs SET state = 'starting', pid = NULL, started_at = NULL, "
                   "start_ticks = NULL")


def test_a_damaged_start_record_of_a_start_never_recorded_is_said_in_the_jobs_words(
        start_agent, tmp_path):
    """A start the daemon never recorded (killed -9 first), whose shim then died and whose
    started.json was damaged: the next daemon sets the record aside, saying so once, and ends
    the job lost saying that its start record is damaged and where it lies. Before, the job's
    words were that its shim ended before it recorded the start, which it had."""
    state, release = str(tmp_path / "host"), tmp_path / "release"
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-damaged-start", gpu=0, memory_mib=10,
                     argv=until_file(release, 0))
    crash_before_start_was_recorded(agent, state)
    kill_shim(state, job["id"])
    release.touch()
    wait_until(lambda: not alive(job["pid"]), "the job to end")
    started = os.path.join(job_dir(state, job["id"]), "started.json")
    with open(started, "wb") as f:
        f.write(b"\0" * 16)
    done = wait_job(start_agent(None, state), job["id"])
    assert (done["state"], done["reason"]) == ("lost", (
        "its shim ended, and its record of the job's start (started.json) is damaged (set "
        "aside as %s.damaged); whether it ran cannot be known (see %s)" % (
            started, os.path.join(job_dir(state, job["id"]), "shim.log"))))
    said = [line for line in (Path(state) / "daemon.log").read_text().splitlines()
            if "damaged" in line]
    assert len(said) == 1 and "ERROR %s (the job %s's file) is damaged (" % (
        started, job["id"]) in said[0], said


@pytest.mark.parametrize("shim", ["alive", "killed"])
def test_a_start_the_daemon_never_recorded_is_adopted_and_watched(start_agent, tmp_path, shim):
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-unrecorded", gpu=0, memory_mib=1000,
                     argv=simload("--mem-mib", "500", "--seconds", "60"))
    wait_until(lambda: "using 500 MiB" in read_log(state, job["id"]), "the job to start")
    crash_before_start_was_recorded(agent, state)
    if shim == "killed":
        kill_shim(state, job["id"])
    later = start_agent(None, state)
    adopted = wait_until(lambda: later.call("job.get", job=job["id"])["state"] == "running" and
                         later.call("job.get", job=job["id"]), "the job adopted")
    assert (adopted["pid"], adopted["started_at"]) == (job["pid"], pytest.approx(
        job["started_at"], abs=1.0))
    later.call("sim.set_process_memory", pid=job["pid"], used_mib=1500)
    done = wait_job(later, job["id"])
    assert (done["state"], done["reason"]) == ("killed", "exceeded its 1000 MiB cap: used 1500 MiB")
    assert not alive(job["pid"])


def test_a_start_stopped_before_a_restart_gets_sigterm_when_adopted(start_agent, tmp_path):
    """A job stopped while it was starting (the stop recorded, its reason and its SIGKILL's
    deadline, and no signal: nothing ran yet), whose daemon died before it recorded the start:
    the next daemon adopts it and sends it SIGTERM at once, as any stopped job, not only the
    SIGKILL at the end of its grace (ten minutes here, past the wait below)."""
    state = str(tmp_path / "host")
    ready, termed = tmp_path / "ready", tmp_path / "termed"
    code = ("import signal, sys, time\n"
            "def term(*_):\n"
            "    open(%r, 'w').write('SIGTERM')\n"
            "    sys.exit(3)\n"
            "signal.signal(signal.SIGTERM, term)\n"
            "open(%r, 'w').write('ready')\n"
            "time.sleep(600)\n" % (str(termed), str(ready)))
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-stopped-starting", gpu=0, memory_mib=10,
                     argv=script(code))
    wait_until(ready.exists, "the job to trap SIGTERM")
    crash_before_start_was_recorded(agent, state)
    with sqlite3.connect(os.path.join(state, "jobs.db")) as db:  # as job.stop records it
        db.execute("UPDATE jobs SET stop_reason = 'make room', kill_at = ?",
                   (time.monotonic() + 600,))
    later = start_agent(None, state)
    done = wait_job(later, job["id"])
    assert termed.exists() and termed.read_text() == "SIGTERM"
    assert (done["state"], done["reason"], done["exit_code"]) == ("killed", "make room", 3)


def test_a_start_whose_process_is_gone_without_a_record_ends_with_why(start_agent, tmp_path):
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-gone", gpu=0, memory_mib=10,
                     argv=script("import time; time.sleep(600)"))
    crash_before_start_was_recorded(agent, state)
    kill_shim(state, job["id"])
    os.kill(job["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(job["pid"]), "the job to die")
    later = start_agent(None, state)
    done = wait_job(later, job["id"])
    # the new daemon found it ended: whether before its shim died, it cannot know
    assert done["state"] == "lost" and done["reason"].startswith(
        "its shim died before it recorded how the job ended (the job had ended when the agent "
        "found its shim dead)"), done["reason"]


LOST_ENDED = ("its shim died before it recorded how the job ended (the job had ended when the "
              "agent found its shim dead), so its exit status cannot be known; all its processes "
              "have ended (see %s)")


def test_a_job_whose_shim_died_after_it_ended_is_lost_saying_it_had_ended(start_agent,
                                                                          tmp_path):
    """A shim killed after its job ended but before it recorded how (``exit.json`` held up by
    a full disk: the job's directory on a real tmpfs, full to the last byte): the job is lost,
    and the reason says that the job had ended when the agent found its shim dead. Before, it
    said the shim died before the job ended, which is untrue here (those words are kept for a
    job seen running after its shim died: ``test_what_a_job_leaves_behind_ends_with_it``)."""
    state, go = tmp_path / "host", tmp_path / "go"
    with first_job_dir_on_a_disk_of_its_own(state) as folder:
        agent = start_agent("1xL4", str(state))
        job = agent.call("job.launch", key="k-ended-unrecorded", gpu=0, memory_mib=10,
                         argv=until_file(go, 0))
        fill(folder / "filler")
        go.touch()
        wait_until(lambda: not alive(job["pid"]), "the job to end")
        kill_shim(str(state), job["id"])
        (folder / "filler").unlink()
        done = wait_job(agent, job["id"])
        assert not (folder / "exit.json").exists()  # the shim never recorded the end
    assert (done["state"], done["exit_code"]) == ("lost", None)
    assert done["reason"] == LOST_ENDED % (folder / "shim.log")


@contextmanager
def first_job_dir_on_a_disk_of_its_own(state: Path,
                                       inodes: Optional[int] = None) -> Iterator[Path]:
    """The directory of the host's first job (j1) on a real 1 MiB tmpfs of its own, made before
    the host's agent starts: filled, it holds up the shim's record of the job's end. With
    ``inodes``, the tmpfs holds that many (itself one): a file made past them is refused
    (ENOSPC) however much room is left. The host's agent and jobs are stopped before it is
    unmounted."""
    folder = state / "jobs" / "j1"
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o700)
    os.chmod(state / "jobs", 0o700)
    options = "size=1m,mode=0700" + (",nr_inodes=%d" % inodes if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        stop_host(str(state))
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(path) -> int:
    """Write ``path`` until the filesystem has not one byte left; returns the bytes it took."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    written += f.write(b"\0" * size)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    break
    return written


def test_a_full_disk_drops_output_never_the_job_and_the_log_says_so(small_fs, start_agent,
                                                                   tmp_path):
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)  # a log cap above the disk: no rotation frees room
    progress, stop = tmp_path / "progress", tmp_path / "stop"
    code = ("import os, time\n"
            "i = 0\n"
            "while not os.path.exists(%r):\n"
            "    print('line %%06d' %% i, 'x' * 60, flush=True)\n"
            "    i += 1\n"
            "    if i %% 50 == 0:\n"
            "        open(%r + '.tmp', 'w').write(str(i))\n"
            "        os.replace(%r + '.tmp', %r)\n"
            "    time.sleep(0.001)\n" % (str(stop), str(progress), str(progress), str(progress)))
    job = agent.call("job.launch", key="k-full", gpu=0, memory_mib=10, argv=script(code))

    def beyond(count: int):
        return lambda: progress.exists() and int(progress.read_text()) >= count

    wait_until(beyond(200), "output")
    filler = small_fs / "filler"
    fill(filler)
    full_at = int(progress.read_text())
    wait_until(beyond(full_at + 1000), "the job to go on printing on a full disk")
    assert agent.call("job.get", job=job["id"])["state"] == "running"
    filler.unlink()  # room again
    room_at = int(progress.read_text())
    wait_until(beyond(room_at + 300), "more output")
    stop.touch()
    done = wait_job(agent, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 0)
    logs = [os.path.join(state, "jobs", job["id"], n) for n in ("output.log.1", "output.log")]
    text = "".join(open(p).read() for p in logs if os.path.exists(p))
    notes = [line for line in text.splitlines() if line.startswith("[fractui:")]
    assert len(notes) == 1, notes
    assert notes[0].startswith("[fractui: ") and notes[0].endswith(
        "bytes of the job's output were dropped: its log could not be written (No space left "
        "on device)]")
    whole = [re.fullmatch(r"line (\d{6}) x{60}", line) for line in text.splitlines()]
    numbers = [int(m[1]) for m in whole if m]  # (a line cut by the full disk is not counted)
    assert numbers == sorted(numbers) and numbers[-1] > room_at  # what came after is kept
    assert any(b - a > 1 for a, b in zip(numbers, numbers[1:]))  # and a stretch was dropped


def test_a_gpu_whose_processes_cannot_be_read_holds_up_no_stop(start_agent, tmp_path):
    agent = start_agent("1xL4", str(tmp_path / "host"))
    ready = tmp_path / "ready"
    code = ("import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "open(%r, 'w').close()\n"
            "time.sleep(600)\n" % str(ready))
    job = agent.call("job.launch", key="k-unread", gpu=0, memory_mib=100, argv=script(code))
    wait_until(ready.exists, "the job to ignore SIGTERM")
    # from now on the watchdog cannot read the GPU's processes, so it cannot judge the cap
    agent.call("sim.fault", function="nvmlDeviceGetComputeRunningProcesses",
               error="NVML_ERROR_GPU_IS_LOST", count=1 << 30)
    agent.call("job.stop", job=job["id"], grace=1, reason="make room")
    done = wait_job(agent, job["id"])  # SIGKILL after the grace all the same
    assert (done["state"], done["reason"]) == ("killed", "make room")
    assert not alive(job["pid"])


def test_a_full_state_disk_is_the_hosts_failure_said_with_its_class(small_fs, start_agent,
                                                                    tmp_path):
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)
    release = tmp_path / "release"
    running = agent.call("job.launch", key="k-before", gpu=0, memory_mib=10,
                         argv=until_file(release, 0))
    filler = small_fs / "filler"
    fill(filler)
    launch = dict(key="k-on-full", gpu=0, memory_mib=10, argv=until_file(release, 3))
    for method, params in (("job.launch", launch), ("job.stop", {"job": running["id"]})):
        with pytest.raises(AgentError) as err:
            agent.call(method, **params)
        assert (err.value.code, err.value.data["class"]) == (rpc.HOST_FAILED, rpc.HOST)
        assert err.value.message.startswith("%s could not be carried out on this host: the job "
                                            "table %s" % (method, os.path.join(state, "jobs.db")))
        assert "full" in err.value.message
    filler.unlink()  # room again: the same requests go through
    assert [(j["key"], j["state"]) for j in agent.call("job.list")["jobs"]] == [
        ("k-before", "running")]
    assert agent.call("job.launch", **launch)["state"] == "running"
    agent.call("job.stop", job=running["id"], reason="room again")
    assert wait_job(agent, running["id"])["reason"] == "room again"
    release.touch()


@contextmanager
def gpus_on_a_disk_of_their_own(state: Path) -> Iterator[None]:
    """The simulated GPUs' state (``sim/`` in the state dir) on a real tmpfs of its own, so
    that filling the state disk leaves the GPUs as they are: a real GPU keeps its state in no
    file. The host's agent and jobs are stopped before it is unmounted."""
    sim = state / "sim"
    sim.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(sim)],
                   check=True)
    try:
        yield
    finally:
        stop_host(str(state))
        subprocess.run(["umount", "-l", str(sim)], check=False)


def full_for_passes(agent, state: Path, small_fs: Path, log: Path, passes: int, start: Path,
                    what: str) -> None:
    """The state disk full to its last byte (the job table's WAL cut first), then ``start``
    made (what the test lets happen on the full disk), until the log says the table is full
    (``what`` is waited for), and ``passes`` more watchdog passes, counted by the GPU reads
    that fail (one a pass: the test sets no clock); then room again."""
    cut_the_wal(state)
    fill(small_fs / "filler")
    start.touch()
    wait_until(lambda: "database or disk is full" in log.read_text(), what)
    agent.call("sim.fault", function="nvmlDeviceGetComputeRunningProcesses",
               error="NVML_ERROR_UNKNOWN", count=passes)
    wait_until(lambda: "GPU 0: its processes can be read again" in log.read_text(),
               "%d more passes on the full disk" % passes)
    (small_fs / "filler").unlink()  # room again


def cut_the_wal(state: Path) -> None:
    """The job table's WAL checkpointed and cut to nothing: SQLite reuses a WAL's room, so only
    then must the table's next write grow a file (and fail on a full disk)."""
    db = sqlite3.connect(str(state / "jobs.db"))
    try:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        db.close()


def test_a_job_over_its_cap_is_stopped_while_the_state_disk_is_full(small_fs, start_agent):
    """The watchdog stops a job over its share on a real full state disk, its WAL cut first so
    that the table takes no write: SIGTERM, and (the job ignoring it) SIGKILL after the grace,
    kept by the daemon; once there is room the job is recorded killed with the cap's reason.
    Before, each pass failed to record the stop and sent nothing: the job ran on over its
    share, on a GPU others share, for as long as the disk was full."""
    state = small_fs / "state"
    with gpus_on_a_disk_of_their_own(state):
        agent = start_agent("1xL4", str(state), "--watchdog-grace-s", "0.5")
        job = agent.call("job.launch", key="k-over-full", gpu=0, memory_mib=1000,
                         argv=slow_to_stop_simload(500))
        wait_until(lambda: "using 500 MiB" in read_log(str(state), job["id"]), "the job to start")
        cut_the_wal(state)
        filler = small_fs / "filler"
        fill(filler)
        agent.call("sim.set_process_memory", pid=job["pid"], used_mib=1500)
        wait_until(lambda: not alive(job["pid"]), "the watchdog to kill the job on a full disk")
        filler.unlink()  # room again
        done = wait_job(agent, job["id"])
        assert (done["state"], done["reason"]) == ("killed", "exceeded its 1000 MiB cap: used "
                                                   "1500 MiB")


def test_a_stop_asked_while_the_watchdogs_stop_is_held_is_refused_until_it_is_recorded(
        small_fs, start_agent, tmp_path):
    """A request's stop of a job whose stop the watchdog holds (the full table could not take
    it) is refused until that stop is recorded, as any stop the table cannot take. Before,
    one that changed nothing of its own (the watchdog's reason and sooner deadline stood) was
    answered while nothing of the stop was in the table: a daemon that died then forgot it."""
    state = small_fs / "state"
    termed = tmp_path / "termed"
    code = ("import signal\n"
            "signal.signal(signal.SIGTERM, lambda *_: open(%r, 'w').close())\n"
            "from remote_agent import simload\n"
            "simload.main(['--mem-mib', '500', '--seconds', '600'])\n" % str(termed))
    with gpus_on_a_disk_of_their_own(state):
        agent = start_agent("1xL4", str(state), "--watchdog-grace-s", "600")
        job = agent.call("job.launch", key="k-held-stop", gpu=0, memory_mib=1000,
                         argv=script(code))
        wait_until(lambda: "using 500 MiB" in read_log(str(state), job["id"]), "the job to start")
        cut_the_wal(state)
        filler = small_fs / "filler"
        fill(filler)
        agent.call("sim.set_process_memory", pid=job["pid"], used_mib=1500)
        wait_until(termed.exists, "the watchdog's SIGTERM on a full disk")
        with pytest.raises(AgentError) as err:
            agent.call("job.stop", job=job["id"], grace=600, reason="by hand")
        assert (err.value.code, err.value.data["class"]) == (rpc.HOST_FAILED, rpc.HOST)
        filler.unlink()  # room again: the stop is recorded, and a sooner one goes through
        agent.call("job.stop", job=job["id"], grace=0)
        done = wait_job(agent, job["id"])
        assert (done["state"], done["reason"]) == ("killed", "exceeded its 1000 MiB cap: used "
                                                   "1500 MiB")


def test_a_daemon_killed_on_a_full_state_disk_starts_again_and_watches_its_jobs(small_fs,
                                                                                start_agent,
                                                                                tmp_path):
    """kill -9 of the daemon with the state disk full (a real tmpfs to the last byte, the
    table's WAL cut first): the next daemon starts on it and adopts both jobs; one goes over
    its cap and is stopped, the other exits, both while the disk is still full; once there is
    room each is recorded as it ended."""
    state = small_fs / "state"
    with gpus_on_a_disk_of_their_own(state):
        agent = start_agent("1xL4", str(state), "--watchdog-grace-s", "0.5")
        release = tmp_path / "release"
        held = agent.call("job.launch", key="k-held", gpu=0, memory_mib=100,
                          argv=until_file(release, 5))
        over = agent.call("job.launch", key="k-over", gpu=0, memory_mib=1000,
                          argv=slow_to_stop_simload(500))
        wait_until(lambda: "using 500 MiB" in read_log(str(state), over["id"]), "the job to start")
        old_pid = daemon_pid(agent)
        cut_the_wal(state)
        filler = small_fs / "filler"
        fill(filler)
        os.kill(old_pid, signal.SIGKILL)
        agent.proc.wait(timeout=10)
        later = start_agent(None, str(state))
        assert daemon_pid(later) != old_pid
        assert [(j["key"], j["state"]) for j in later.call("job.list")["jobs"]] == [
            ("k-held", "running"), ("k-over", "running")]
        later.call("sim.set_process_memory", pid=over["pid"], used_mib=1500)
        release.touch()
        wait_until(lambda: not alive(over["pid"]) and not alive(held["pid"]),
                   "both jobs to end on the full disk")
        filler.unlink()  # room again
        ended = [wait_job(later, j["id"]) for j in (held, over)]
        assert [(j["state"], j["exit_code"], j["reason"]) for j in ended] == [
            ("exited", 5, None), ("killed", None, "exceeded its 1000 MiB cap: used 1500 MiB")]


@contextmanager
def log_on_a_disk_of_its_own(state: Path, elsewhere: Path) -> Iterator[Path]:
    """The daemon's log (``daemon.log`` in the state dir) on another disk, as a host's journal
    often is: bind-mounted from ``elsewhere``, so that it takes every line while the state disk
    is full. Yields the log; the host's agent is stopped before it is unmounted."""
    log = elsewhere / "daemon.log"
    log.touch(mode=0o600)
    state.mkdir(parents=True, exist_ok=True)
    (state / "daemon.log").touch(mode=0o600)
    subprocess.run(["mount", "--bind", str(log), str(state / "daemon.log")], check=True)
    try:
        yield log
    finally:
        stop_host(str(state))
        subprocess.run(["umount", "-l", str(state / "daemon.log")], check=False)


def test_a_failure_each_pass_on_a_full_state_disk_is_logged_once_and_once_mended(
        small_fs, start_agent, tmp_path):
    """A job that ends (its shim killed before) while the job table takes no write: each
    watchdog pass fails to record its end. The daemon's log says so once, with why, and no
    traceback (a full disk is the host's failure, not a bug), however many passes fail, then
    once more when its end is recorded, with how many passes failed. Before, each pass logged
    a traceback: on a full disk, a line or more each half second, to the disk's last byte."""
    state = small_fs / "state"
    passes = 4  # counted by the GPU reads that fail, one a pass: the test sets no clock
    with gpus_on_a_disk_of_their_own(state), log_on_a_disk_of_its_own(state, tmp_path) as log:
        # its usage sampled at the first pass only: no sample fails on the full disk
        agent = start_agent("1xL4", str(state), "--usage-sample-s", "3600")
        release = tmp_path / "release"
        job = agent.call("job.launch", key="k-ends-full", gpu=0, memory_mib=100,
                         argv=until_file(release, 0))
        kill_shim(str(state), job["id"])
        wait_for_take_over(str(state), job["id"])
        full_for_passes(agent, state, small_fs, log, passes, release,
                        "the watchdog to fail to record the job's end")
        done = wait_job(agent, job["id"])
        assert done["state"] == "lost"
        said = log.read_text().splitlines()
    failed = [line for line in said if "database or disk is full" in line]
    assert len(failed) == 1, failed
    assert failed[0].endswith("WARNING watchdog: watching job %s failed: the job table %s: "
                              "database or disk is full (its filesystem has no room left); "
                              "tried again each pass" % (
                                  job["id"], state / "jobs.db"))
    mended = [line for line in said if "watching job %s works again" % job["id"] in line]
    assert len(mended) == 1, mended
    failures = int(re.search(r"after (\d+) failed passes$", mended[0])[1])
    assert failures > passes  # the pass that first failed, and those the GPU reads counted
    assert any(line.endswith("GPU 0: its processes can be read again after %d failed passes"
                             % passes) for line in said)
    assert not [line for line in said if "Traceback" in line]


def test_a_process_sigkill_cannot_end_yet_is_sent_it_each_pass_and_said_once(tracked_host,
                                                                             tmp_path):
    """A job past its grace whose process SIGKILL cannot end yet (stuck in the kernel: here in
    a FUSE filesystem that never answers, as in a driver's call) is sent SIGKILL at each pass
    and the log says so once (before: once a pass, twice a second for as long as it was
    stuck); once it can end, it ends killed."""
    agent, state = tracked_host
    log = Path(state) / "daemon.log"
    mount = str(tmp_path / "stuck")
    passes = 3  # counted by the GPU reads that fail, one a pass: the test sets no clock
    with stuck_mount(mount) as server:
        job = agent.call("job.launch", key="k-stuck", gpu=0, memory_mib=100,
                         argv=script("import os\nos.stat(%r)" % os.path.join(mount, "x")))
        assert server.stdout.readline() == "held\n"  # the job waits in the kernel
        agent.call("job.stop", job=job["id"], grace=0)
        wait_until(lambda: "SIGKILL to" in log.read_text(), "the SIGKILL past its grace")
        agent.call("sim.fault", function="nvmlDeviceGetComputeRunningProcesses",
                   error="NVML_ERROR_UNKNOWN", count=passes)
        wait_until(lambda: "GPU 0: its processes can be read again" in log.read_text(),
                   "%d more passes with the job stuck" % passes)
        assert agent.call("job.get", job=job["id"])["state"] == "running"
    assert wait_job(agent, job["id"])["state"] == "killed"
    said = [line for line in log.read_text().splitlines() if "SIGKILL to" in line]
    assert len(said) == 1 and said[0].endswith("job %s: SIGKILL to 1 process" % job["id"]), \
        said


def test_an_unknown_error_each_pass_is_logged_once_with_its_traceback(caplog):
    """A step that fails each pass with an error of no known kind (a bug): its traceback once,
    a new reason once more, and a line when it works again, with how many passes failed."""
    caplog.set_level(logging.INFO, logger="remote_agent.jobs")
    failures = Failures(logging.getLogger("remote_agent.jobs"))
    reasons = iter(["no such key"] * 3 + ["another key"] * 2)

    def step() -> int:
        reason = next(reasons, None)
        if reason is not None:
            raise KeyError(reason)
        return 7

    got = [failures.step("pruning", step) for _ in range(6)]
    assert got == [None] * 5 + [7]
    said = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [
        ("ERROR", "pruning failed (KeyError: 'no such key'); tried again each pass", True),
        ("ERROR", "pruning failed (KeyError: 'another key'); tried again each pass", True),
        ("INFO", "pruning works again after 5 failed passes", False)]
    assert failures.step("pruning", step) == 7 and len(caplog.records) == 3


def test_the_failures_failing_now_are_found_by_their_kind(caplog):
    """A failure that no pass of its own mends (a copy that is gone, a job that ended) is
    found among those failing now by the first item of its name, and is no longer found
    once it is said mended; a name of another kind, or a plain step's, is not found."""
    caplog.set_level(logging.INFO, logger="remote_agent.jobs")
    failures = Failures(logging.getLogger("remote_agent.jobs"))
    for _ in range(3):
        failures.failed(("copy", "gpu-a", "k1"), "k1 runs")
        failures.failed(("copy", "gpu-b", "k2"), "k2 runs")
        failures.failed(("other", 1), "other")
        failures.failed("copy", "a plain step")
    assert sorted(failures.failing("copy")) == [("copy", "gpu-a", "k1"), ("copy", "gpu-b", "k2")]
    for name in failures.failing("copy"):
        if name[1] == "gpu-a":
            failures.worked(name, "k1 runs no more")
    assert failures.failing("copy") == [("copy", "gpu-b", "k2")]
    assert [r.getMessage() for r in caplog.records] == [
        "k1 runs", "k2 runs", "other", "a plain step", "k1 runs no more after 3 failed passes"]


class _Looked(tuple):
    """A failure's name that counts how often its parts are read (sliced)."""

    reads = 0

    def __getitem__(self, index):  # type: ignore[override]
        _Looked.reads += 1
        return tuple.__getitem__(self, index)


def test_mending_one_of_many_failures_reads_none_of_the_others(caplog):
    """A failure mended among thousands failing at once, of a kind never capped (the rows a
    scheduler's lanes find held, each mended as it is freed): the others are not walked, so
    mending them all is not quadratic, under the lock every lane waits on. A capped kind's
    are walked only while it has things past its cap."""
    caplog.set_level(logging.INFO, logger="remote_agent.jobs")
    failures = Failures(logging.getLogger("remote_agent.jobs"))
    for n in range(1000):
        failures.failed(_Looked(("held", n)), "row %d held" % n)
    failures.failed(("held", "mine"), "row mine held")
    _Looked.reads = 0
    failures.worked(("held", "mine"), "row mine freed")
    assert _Looked.reads == 0
    assert caplog.records[-1].getMessage() == "row mine freed after 1 failed pass"
