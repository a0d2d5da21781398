"""Container jobs through a real podman, on a simulated GPU: capped (the env layers are in the
container), watched (a workload growing past its share inside the container is stopped with the
reason), never taken for a foreign process, stopped (no container left), logged, its exit code
kept; a container job whose shim (and daemon) was killed is still found and stopped; an image
on a host without a runtime is a clear start failure; MIG, MPS and HAMi-core in containers;
``fractui launch --image``. Those on the ``host`` fixture run both ways a host finds a job's
processes (its session, where the container's own cgroup is recorded beside it; its cgroup v2 job
cgroup, which the container goes below)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from remote_agent.daemon.paths import AgentPaths
from remote_agent.jobs.procs import cgroup_pids
from remote_agent.jobs.runtime.base import cgroup_of
from remote_agent.jobs.store import Job
from remote_agent.rpc import jsonrpc as rpc
from tests.cli_run import in_process
from tests.conftest import REPO, AgentError, AgentProcess
from tests.localfleet import local_fleet  # noqa: F401 (the fixture)
from tests.podman import IMAGE_CODE, PYTHON, podman  # noqa: F401 (the fixture)
from tests.test_caps import mps_and_hami_host
from tests.test_job_supervision import (  # noqa: F401 (sampled_host, tracked_host)
    crash_before_start_was_recorded, fill, first_job_dir_on_a_disk_of_its_own,
    full_for_passes, gpus_on_a_disk_of_their_own, job_dir, kill_shim, log_on_a_disk_of_its_own,
    read_log, sampled_host, tracked_host, wait_until)
from tests.test_jobs import alive, daemon_pid, wait_job
from tests.test_launch_concurrency import in_process as supervisor_parts  # noqa: F401

IN_IMAGE = {"PYTHONPATH": IMAGE_CODE}  # the agent's code in the test image (tests/podman.py)


def simload(*args: str):
    return [PYTHON, "-m", "remote_agent.simload", *args]


@pytest.fixture
def host(podman, tracked_host):
    """A simulated host (1xL4) that runs container jobs of the test image; every container of
    its state dir is removed afterwards, whatever the test left."""
    yield from _with_podman(podman, *tracked_host)


@pytest.fixture
def sampling_host(podman, sampled_host):
    """``host``, its jobs' use sampled every 0.5 s rather than every 5."""
    yield from _with_podman(podman, *sampled_host)


def _with_podman(podman, agent, state: str):
    yield agent, state, podman
    prefix = "fractui-%s-" % AgentPaths(state).digest
    names = podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    for name in names:
        if name.startswith(prefix):
            podman.remove(name)


def containers(podman, job) -> list:
    """The containers podman still has of ``job`` (running or not)."""
    out = podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    return [n for n in out if n == job["container"]]


def recorded_cgroup(agent, job) -> str:
    """The cgroup of ``job``'s container, once its agent recorded it: the launch looks for it
    for a while, the watchdog at each pass after that (a slow runtime on a loaded host), so
    a job's output can come before it."""
    return wait_until(lambda: agent.call("job.get", job=job["id"])["container_cgroup"],
                      "the container's cgroup to be recorded")


def test_hello_lists_podman(host):
    agent, _state, podman = host
    hello = agent.call("hello")
    version = podman.run(["version", "--format", "{{.Client.Version}}"]).stdout.strip()
    assert hello["runtimes"]["podman"] == version
    assert set(hello["runtimes"]) == {"podman", "docker", "apptainer"}
    for kind, found in hello["runtimes"].items():  # each missing one says why
        assert (found is None) == (kind in hello["runtimes_unavailable"]), kind


def test_a_container_job_is_capped_logged_and_keeps_its_exit_code(host):
    agent, state, podman = host
    job = agent.call("job.launch", key="k-c-caps", gpu=0, memory_mib=11517, image=podman.image,
                     env=IN_IMAGE, argv=[PYTHON, "-c", (
                         "import os, sys\n"
                         "for k in ('CUDA_VISIBLE_DEVICES', 'XLA_PYTHON_CLIENT_MEM_FRACTION', "
                         "'FRACTUI_JOB_ID', 'HOME'):\n"
                         "    print(k, os.environ.get(k))\n"
                         "print('in', open('/etc/passwd').read().strip())\n"
                         "sys.exit(3)")])
    assert (job["runtime"], job["image"]) == ("podman", podman.image)
    assert job["container"] == "fractui-%s-%s" % (AgentPaths(state).digest, job["id"])
    limited = ["driver_limit"] if job["cgroup"] else []  # the container goes below its cgroup
    assert job["caps"] == ["visible_devices", *limited, "framework", "watchdog"]
    done = wait_job(agent, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 3)
    assert done["last_line"] == "in root:x:0:0:root:/root:/nonexistent"  # as a bare job's
    uuid = agent.call("hello")["gpus"][0]["uuid"]
    assert agent.call("job.logs", job=job["id"])["lines"] == [
        "CUDA_VISIBLE_DEVICES %s" % uuid, "XLA_PYTHON_CLIENT_MEM_FRACTION 0.4722",
        "FRACTUI_JOB_ID %s" % job["id"],
        "HOME /root",  # the image's, not the host user's
        "in root:x:0:0:root:/root:/nonexistent"]  # the image's own files
    assert containers(podman, job) == []


def test_a_container_job_over_its_share_is_stopped_with_the_reason(host):
    agent, state, podman = host
    job = agent.call("job.launch", key="k-c-grow", gpu=0, memory_mib=1000, image=podman.image,
                     env=IN_IMAGE, argv=simload("--mem-mib", "900", "--grow-to", "4000",
                                                "--seconds", "60"))  # over 1000 MiB 2 s in
    done = wait_job(agent, job["id"], timeout=60)
    assert done["state"] == "killed"
    assert done["reason"].startswith("exceeded its 1000 MiB cap: used "), done["reason"]
    assert "simload: using" in read_log(state, job["id"])  # it ran, in the container
    assert containers(podman, job) == []
    assert agent.call("snapshot")["gpus"][0]["processes"] == []  # its memory is free


def test_a_process_in_a_job_s_container_is_never_taken_as_foreign(sampling_host):
    agent, state, podman = sampling_host
    total = agent.call("snapshot")["gpus"][0]["memory_mib"]
    job = agent.call("job.launch", key="k-c-held", gpu=0, memory_mib=10000, image=podman.image,
                     env=IN_IMAGE, argv=simload("--mem-mib", "8000", "--seconds", "120"))
    wait_until(lambda: "using 8000 MiB" in read_log(state, job["id"]), "the job to register")
    seen = agent.call("snapshot")["gpus"][0]["processes"]
    running = agent.call("job.get", job=job["id"])
    in_container = cgroup_pids(recorded_cgroup(agent, job))
    # NVML's pid is the host's, and it is one of the container's processes
    assert len(seen) == 1 and seen[0]["pid"] in in_container and seen[0]["used_mib"] == 8000
    if running["cgroup"]:  # where the driver's limit is: the container is below it
        assert seen[0]["pid"] in cgroup_pids(running["cgroup"])
    # the watchdog samples it as the job's (the usage the admin side keeps and reports)
    wait_until(lambda: (agent.call("job.get", job=job["id"])["usage"] or {}).get(
        "memory_peak_mib") == 8000, "a usage sample of the container's memory")
    # its 8000 MiB are the job's, within its share: all the rest of the GPU is free
    other = agent.call("job.launch", key="k-c-rest", gpu=0, memory_mib=total - 10000,
                       argv=[sys.executable, "-c", "pass"])
    assert wait_job(agent, other["id"])["state"] == "exited"
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-c-over", gpu=0, memory_mib=total - 10000 + 1,
                   argv=[sys.executable, "-c", "pass"])
    assert err.value.code == rpc.NO_ROOM and "booked: %s (10000 MiB)" % job["id"] in \
        err.value.message and "outside fractui" not in err.value.message
    agent.call("job.stop", job=job["id"], grace=1)
    assert wait_job(agent, job["id"])["state"] == "killed"


def test_stop_ends_a_container_job_and_leaves_no_container(host):
    agent, state, podman = host
    job = agent.call("job.launch", key="k-c-stop", gpu=0, memory_mib=100, image=podman.image,
                     env=IN_IMAGE, argv=[PYTHON, "-c", (
                         "import signal, sys, time\n"
                         "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', "
                         "flush=True), sys.exit(7)))\n"
                         "print('up', flush=True)\n"
                         "time.sleep(600)")])
    wait_until(lambda: "up" in read_log(state, job["id"]), "the job to run")
    pids = cgroup_pids(recorded_cgroup(agent, job))
    assert pids
    agent.call("job.stop", job=job["id"], grace=20)
    done = wait_job(agent, job["id"], timeout=30)
    assert (done["state"], done["reason"]) == ("killed", "stopped by request")
    assert done["exit_code"] == 7  # SIGTERM reached it through the container's init
    assert "got TERM" in agent.call("job.logs", job=job["id"])["lines"]
    assert containers(podman, job) == []
    assert not any(alive(p) for p in pids)


def _cmdlines_holding(text: str) -> list:
    """Every process of the host whose command line holds ``text`` (what any user reads)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass  # ended meanwhile
    return found


def test_a_container_job_s_env_values_are_in_the_container_and_on_no_command_line(host):
    """``ps`` shows every user every process's command line: the job's values reach the
    container in a private file instead; NVIDIA_VISIBLE_DEVICES still wins over the job's."""
    agent, state, podman = host
    secret = "tok-%s" % os.urandom(8).hex()
    job = agent.call("job.launch", key="k-c-secret", gpu=0, memory_mib=100, image=podman.image,
                     env=dict(IN_IMAGE, API_TOKEN=secret, NVIDIA_VISIBLE_DEVICES="all",
                              SPACED="  a = b  "),
                     argv=[PYTHON, "-c", (
                         "import os, time\n"
                         "for k in ('API_TOKEN', 'SPACED', 'NVIDIA_VISIBLE_DEVICES'):\n"
                         "    print(k, repr(os.environ[k]), flush=True)\n"
                         "time.sleep(600)")])
    try:
        wait_until(lambda: "NVIDIA" in read_log(state, job["id"]), "the job to run")
        assert _cmdlines_holding(secret) == []  # while its runtime's client and init run
        assert agent.call("job.get", job=job["id"])["state"] == "running"
    finally:
        agent.call("job.stop", job=job["id"], grace=1)
    wait_job(agent, job["id"], timeout=30)
    assert agent.call("job.logs", job=job["id"])["lines"] == [
        "API_TOKEN %r" % secret, "SPACED '  a = b  '", "NVIDIA_VISIBLE_DEVICES 'void'"]
    env_file = os.path.join(job_dir(state, job["id"]), "container.env")
    assert os.stat(env_file).st_mode & 0o777 == 0o600


def test_a_container_job_s_env_file_swapped_for_a_link_is_not_what_its_runtime_reads(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """podman (run as the agent) read the job's ``container.env`` by its path: a job of the
    agent's user that put a link there, to a file of the agent's, as the runtime started, gave
    that file's lines to the container. The file is opened in the job's folder by the shim,
    no link followed, and given to the runtime by its descriptor: the swap changes nothing."""
    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'run) while [ -e %s ]; do sleep 0.05; done;;' % hold)
    secret = tmp_path / "agents-own"
    secret.write_text("LEAKED=the agent's own\n")
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-c-swap", gpu=0, memory_mib=100, image=podman.image,
                     env=dict(IN_IMAGE, MINE="given"), argv=[PYTHON, "-c", (
                         "import os\nprint(os.environ.get('LEAKED'), os.environ.get('MINE'))")])
    try:
        wait_until(lambda: any(line.startswith("run ") for line in podman_calls(tmp_path)),
                   "the runtime's run")
        env_file = os.path.join(job_dir(state, job["id"]), "container.env")
        os.rename(env_file, env_file + ".aside")
        os.symlink(str(secret), env_file)
        hold.unlink()
        assert wait_job(agent, job["id"])["exit_code"] == 0
    finally:
        if hold.exists():
            hold.unlink()
        podman.remove(job["container"])
    assert agent.call("job.logs", job=job["id"])["lines"] == ["None given"]


def test_a_container_job_gets_none_of_the_agent_s_proxy_variables(podman, start_agent,
                                                                   tmp_path, monkeypatch):
    """A bare job's base environment is an allow-list; podman would copy the proxy variables
    of its own environment (the agent's, a proxy's password in them) into every container."""
    for name in ("HTTP_PROXY", "https_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "http://admin:s3cret@proxy.example:3128")
    agent = start_agent("1xL4", str(tmp_path / "host"))
    job = agent.call("job.launch", key="k-c-proxy", gpu=0, memory_mib=100, image=podman.image,
                     env=dict(IN_IMAGE, no_proxy="mine"), argv=[PYTHON, "-c", (
                         "import os\n"
                         "print(sorted((k, v) for k, v in os.environ.items() "
                         "if 'proxy' in k.lower()))")])
    try:
        assert wait_job(agent, job["id"])["exit_code"] == 0
    finally:
        podman.remove(job["container"])
    # only what the job itself was given
    assert agent.call("job.logs", job=job["id"])["lines"] == ["[('no_proxy', 'mine')]"]


def test_a_container_job_env_its_runtime_cannot_take_is_a_start_failure(host):
    agent, _state, podman = host
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-c-lines", gpu=0, memory_mib=100, image=podman.image,
                   env=dict(IN_IMAGE, PEM="-----BEGIN\nxyz\n-----END"), argv=[PYTHON, "-V"])
    assert err.value.code == rpc.START_FAILED
    assert err.value.message.startswith(
        "the job cannot start: its variable PEM cannot be given to a container: its value "
        "holds a line break"), err.value.message
    assert agent.call("job.list")["jobs"] == []  # nothing recorded, nothing ran


@pytest.mark.parametrize("killed", ["shim", "shim and daemon"])
def test_a_container_job_whose_shim_was_killed_is_still_found_and_stopped(host, start_agent,
                                                                          killed):
    agent, state, podman = host
    job = agent.call("job.launch", key="k-c-orphan", gpu=0, memory_mib=100, image=podman.image,
                     env=IN_IMAGE, argv=[PYTHON, "-c", (
                         "import signal, time\n"
                         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # only KILL ends it
                         "print('up', flush=True)\n"
                         "time.sleep(600)")])
    wait_until(lambda: "up" in read_log(state, job["id"]), "the job to run")
    pids = cgroup_pids(recorded_cgroup(agent, job))
    if killed == "shim and daemon":
        os.kill(daemon_pid(agent), signal.SIGKILL)
        agent.proc.wait(timeout=10)
    kill_shim(state, job["id"])
    if killed == "shim and daemon":
        agent = start_agent(None, state)  # a new daemon, which finds it by the job table
        assert agent.call("job.get", job=job["id"])["state"] == "running"
    agent.call("job.stop", job=job["id"], grace=1)
    done = wait_job(agent, job["id"], timeout=30)
    assert (done["state"], done["reason"]) == ("killed", "stopped by request")
    assert containers(podman, job) == []
    assert not any(alive(p) for p in pids)


def test_an_image_on_a_host_without_a_runtime_is_a_start_failure(podman, start_agent, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, docker or apptainer on it
    agent = start_agent("1xL4", str(tmp_path / "host"))
    hello = agent.call("hello")
    assert hello["runtimes"] == {"podman": None, "docker": None, "apptainer": None}
    assert "podman is not installed" in hello["runtimes_unavailable"]["podman"]
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-c-none", gpu=0, memory_mib=100, image=podman.image,
                   argv=[PYTHON, "-c", "pass"])
    assert err.value.code == rpc.START_FAILED
    assert err.value.message.startswith("the job cannot start: the job names an image, but "
                                        "this host has no container runtime (podman: podman "
                                        "is not installed"), err.value.message
    assert agent.call("job.list")["jobs"] == []  # nothing recorded, nothing ran


def test_a_container_job_gains_no_privileges_and_one_run_as_a_user_has_no_capabilities(host):
    """A setuid binary in a user's image must not make its job root: no_new_privs always, and
    no capabilities at all for a job run as a user (the runtime's default set otherwise)."""
    agent, _state, podman = host
    fields = ("Uid:", "CapPrm:", "CapEff:", "NoNewPrivs:")
    status = [PYTHON, "-c", "print(*[l.split()[1] for l in open('/proc/self/status') if "
              "l.split()[0] in %r])" % (fields,)]  # the real uid, in the file's order
    none = "0" * 16
    for key, run_as, uid in (("k-c-priv", None, 0),
                             ("k-c-priv-as", "nobody", pwd.getpwnam("nobody").pw_uid)):
        extra = {"run_as": run_as} if run_as else {}
        job = agent.call("job.launch", key=key, gpu=0, memory_mib=100, image=podman.image,
                         env=IN_IMAGE, argv=status, **extra)
        assert wait_job(agent, job["id"])["exit_code"] == 0
        (line,) = agent.call("job.logs", job=job["id"])["lines"]
        seen_uid, prm, eff, no_new_privs = line.split()
        assert (int(seen_uid), no_new_privs) == (uid, "1"), line
        if run_as:  # the agent's own user (root here) keeps the runtime's default set
            assert (prm, eff) == (none, none), line


def test_a_runtime_cli_that_hangs_does_not_keep_the_daemon_from_answering(start_agent, tmp_path,
                                                                           monkeypatch):
    """Every runtime is probed at once, each for a short while, before the daemon answers: a
    CLI that never answers (all three here) costs that while once, within the bridge's wait."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("podman", "docker", "apptainer"):
        script = tools / tool
        script.write_text("#!/bin/sh\nexec sleep 600\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tools, os.environ["PATH"]))
    agent = start_agent("1xL4", str(tmp_path / "host"))
    hello = agent.call("hello")
    assert hello["runtimes"] == {"podman": None, "docker": None, "apptainer": None}
    assert hello["runtimes_unavailable"]["podman"] == \
        "podman version --format {{.Client.Version}} did not answer in 5 s"


def podman_calls(tmp_path) -> List[str]:
    """The commands ``podman_refusing``'s podman was given, in order, each its words."""
    calls = tmp_path / "podman-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def podman_refusing(tmp_path, monkeypatch, verb: str, while_: str) -> str:
    """A ``podman`` first on the PATH (the agent's too) that refuses ``verb`` (a shell pattern:
    ``kill|inspect``; exit 125, as podman does) while the shell test ``while_`` holds, and else
    runs the real one, whose path it returns. Each call is recorded first (``podman_calls``):
    ``while_`` may count them, in the file ``$CALLS``."""
    return podman_wrapped(tmp_path, monkeypatch, '%s) if [ %s ]; then\n  %s\nfi;;' % (
        verb, while_, REFUSE))


REFUSE = 'echo "Error: $1 refused (the test\'s)" >&2; exit 125'  # as podman fails


def podman_wrapped(tmp_path, monkeypatch, cases: str) -> str:
    """A ``podman`` first on the PATH (the agent's too) that records each call (``$CALLS``,
    read by ``podman_calls``), runs the shell ``case "$1"`` arms ``cases`` (``$REAL`` is the
    real podman), and then the real podman, whose path it returns."""
    tools = tmp_path / "bin"
    tools.mkdir()
    real = shutil.which("podman")
    assert real is not None
    (tools / "podman").write_text(
        '#!/bin/sh\nCALLS=%s\nREAL=%s\necho "$*" >> "$CALLS"\ncase "$1" in\n%s\nesac\n'
        'exec "$REAL" "$@"\n' % (tmp_path / "podman-calls", real, cases))
    (tools / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tools, os.environ["PATH"]))
    return real


def test_a_container_left_by_a_failed_rm_has_its_processes_killed(  # noqa: F811
        podman, start_agent, tmp_path, monkeypatch):
    """When the runtime cannot remove an ended job's container (here its ``rm`` fails), the
    failure is in the agent's log and the processes left in the container's cgroup are killed:
    nothing of the job goes on running."""
    refuse = tmp_path / "refuse-rm"
    podman_refusing(tmp_path, monkeypatch, "rm", "-e %s" % refuse)
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    refuse.touch()
    name = "fractui-%s-j1" % AgentPaths(state).digest
    try:
        job = agent.call("job.launch", key="k-c-rm", gpu=0, memory_mib=100, image=podman.image,
                         env=IN_IMAGE, argv=[PYTHON, "-c", "import time\nprint('up', "
                                             "flush=True)\ntime.sleep(600)"])
        wait_until(lambda: "up" in read_log(state, job["id"]), "the job to run")
        pids = cgroup_pids(recorded_cgroup(agent, job))
        assert pids
        running = agent.call("job.get", job=job["id"])
        os.kill(running["pid"], signal.SIGKILL)  # the runtime's client: the container goes on
        done = wait_job(agent, job["id"], timeout=30)
        assert done["state"] == "killed"
        wait_until(lambda: not any(alive(p) for p in pids), "the container's processes to end")
        with open(AgentPaths(state).log_file, encoding="utf-8") as f:
            logged = f.read()
        assert "podman rm -f -t 0 %s failed (exit 125): Error: rm refused" % job["container"] \
            in logged, logged[-2000:]
        assert "could not be removed; SIGKILL to the" in logged
        assert job["container"] == name
    finally:
        refuse.unlink()
        podman.remove(name)


def test_a_container_whose_cgroup_holds_the_agent_seen_on_a_full_state_disk_is_said_once(
        podman, start_agent, small_fs, tmp_path, monkeypatch):  # noqa: F811
    """A container whose cgroup holds the agent (the daemon moved into a cgroup below it: the
    container's cgroup is not its own), first seen by the watchdog while the state disk is full
    (a real tmpfs to the last byte, the job table's WAL cut): that no cgroup is recorded for it
    is said once, as it is recorded once there is room, and the table's failure once meanwhile.
    Before, it was said before it was recorded: at every pass, twice a second, while the disk
    was full. (Until the test says so the runtime's ``inspect`` fails: the launch records
    nothing, and the watchdog looks again at each pass.)"""
    see = tmp_path / "see"
    real = podman_refusing(tmp_path, monkeypatch, "inspect", "! -e %s" % see)
    state = small_fs / "state"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    below = None  # the cgroup the daemon is moved into, below the container's
    passes = 3  # counted by the GPU reads that fail, one a pass: the test sets no clock
    try:
        with gpus_on_a_disk_of_their_own(state), \
                log_on_a_disk_of_its_own(state, tmp_path) as log:
            # its usage sampled at the first pass only: no sample fails on the full disk
            agent = start_agent("1xL4", str(state), "--usage-sample-s", "3600")
            job = agent.call("job.launch", **asleep(podman, "k-c-no-cgroup"))
            assert job["container"] == name and job["container_cgroup"] is None
            wait_until(lambda: running(real, name), "the container to run")
            pid = subprocess.run([real, "inspect", "--format", "{{.State.Pid}}", name],
                                 capture_output=True, text=True, check=True).stdout.strip()
            below = os.path.join(cgroup_of(int(pid)), "agent")
            os.mkdir(below)
            with open(os.path.join(below, "cgroup.procs"), "w") as f:
                f.write(str(daemon_pid(agent)))
            full_for_passes(agent, state, small_fs, log, passes, see,
                            "the watchdog to fail to record that the container has no cgroup")
            mended = "finding job %s's container works again" % job["id"]
            wait_until(lambda: mended in log.read_text(), "the refusal recorded")
            said = log.read_text().splitlines()
    finally:  # the daemon is stopped by now: its cgroup is empty
        if below is not None:
            os.rmdir(below)
        podman.remove(name)
    refused = [line for line in said if "the container has no cgroup of its own" in line]
    assert len(refused) == 1 and "job %s: " % job["id"] in refused[0], refused
    failed = [line for line in said if "database or disk is full" in line]
    assert len(failed) == 1 and "finding job %s's container failed" % job["id"] in failed[0], \
        failed


def test_an_image_reference_is_checked(start_agent, tmp_path):
    agent = start_agent("1xL4", str(tmp_path / "host"))
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-c-bad", gpu=0, memory_mib=100, image="--privileged",
                   argv=["true"])
    assert err.value.code == rpc.INVALID_PARAMS and "'image'" in err.value.message


def test_an_image_is_in_a_key_s_fingerprint_only_when_set():
    from remote_agent.jobs.supervisor import LaunchRequest

    bare = LaunchRequest(key="k", argv=["a"], env={}, cwd=None, name="a", gpus=[0],
                         instance=None, mig=None, memory_mib=1, torch_fraction=False)
    before = [["a"], {}, None, [0], None, None, 1, False]  # as keys were before images
    assert bare.fingerprint() == hashlib.sha1(json.dumps(before, sort_keys=True).encode()
                                              ).hexdigest()
    as_image = dataclasses.replace(bare, image="x")
    as_user = dataclasses.replace(bare, run_as="x")
    assert len({bare.fingerprint(), as_image.fingerprint(), as_user.fingerprint()}) == 3


def test_fractui_launch_image_runs_it_in_a_container(podman, local_fleet, capfd):  # noqa: F811
    fleet = local_fleet({"gpu-a": "1xL4"}, [])
    config = fleet.write_config()
    code, out, err = in_process(capfd, [
        "--config", config, "launch", "gpu-a", "0", "--memory-mib", "512", "--image",
        podman.image, "--env", "PYTHONPATH=" + IMAGE_CODE, "--", PYTHON, "-c",
        "print(open('/etc/passwd').read().split(':')[0])"])
    assert code == 0, err
    assert re.fullmatch(r"gpu-a/j1 running \(pid \d+\) on gpu 0 in podman image %s\n" % (
        re.escape(podman.image)), out), out
    wait_until(lambda: fleet.agent_jobs()[0]["state"] == "exited", "the job to end")
    code, out, err = in_process(capfd, ["--config", config, "logs", "gpu-a/j1"])
    assert (code, out) == (0, "root\n"), err
    code, out, err = in_process(capfd, ["--config", config, "jobs", "gpu-a"])
    assert code == 0 and "python3 [localhost/frac" in out, out  # (the column is cut)
    code, out, err = in_process(capfd, ["--config", config, "doctor", "gpu-a"])
    version = podman.run(["version", "--format", "{{.Client.Version}}"]).stdout.strip()
    assert code == 0 and "[ ok ] runtimes     podman %s; not here: " % version in out, out


def test_a_container_job_on_a_mig_instance_is_seen_on_it(podman, start_agent, tmp_path):
    state = str(tmp_path / "mig-host")
    agent = start_agent("1xA100-80GB:mig", state)
    job = agent.call("job.launch", key="k-c-mig", gpu=0, image=podman.image, env=IN_IMAGE,
                     mig={"profile": "3g.40gb", "start": 0},
                     argv=simload("--mem-mib", "3000", "--seconds", "120"))
    try:
        assert job["caps"] == ["mig"] and job["instance"].startswith("MIG-")
        wait_until(lambda: "using 3000 MiB" in read_log(state, job["id"]), "it to register")
        (inst,) = agent.call("snapshot")["gpus"][0]["instances"]
        pids = cgroup_pids(recorded_cgroup(agent, job))
        # its instance is busy with the container's process, by its host pid
        assert inst["uuid"] == job["instance"] and inst["busy"]
        assert len(inst["pids"]) == 1 and inst["pids"][0] in pids
        agent.call("job.stop", job=job["id"], grace=5)
        assert wait_job(agent, job["id"], timeout=30)["state"] == "killed"
        assert containers(podman, job) == []
    finally:
        podman.remove(job["container"])


def test_a_container_job_on_an_mps_and_hami_host_gets_their_limits_and_their_files(
        podman, start_agent, tmp_path, monkeypatch):
    agent, lib, pipes = mps_and_hami_host(start_agent, tmp_path, monkeypatch)
    job = agent.call("job.launch", key="k-c-mps", gpu=0, memory_mib=11517, image=podman.image,
                     env=IN_IMAGE, argv=[PYTHON, "-c", (
                         "import os\n"
                         "for k in ('CUDA_MPS_PINNED_DEVICE_MEM_LIMIT', 'CUDA_DEVICE_MEMORY_LIMIT',"
                         " 'CUDA_MPS_PIPE_DIRECTORY', 'LD_PRELOAD'):\n"
                         "    print(k, os.environ[k])\n"
                         "d = os.environ['CUDA_MPS_PIPE_DIRECTORY']\n"
                         "open(os.path.join(d, 'reached'), 'w').close()\n"
                         "lib = os.environ['LD_PRELOAD']\n"
                         "print('lib', os.path.isfile(lib), os.access(lib, os.W_OK))")])
    assert job["caps"] == ["visible_devices", "mps", "hami", "framework", "watchdog"]
    try:
        assert wait_job(agent, job["id"])["exit_code"] == 0
    finally:
        podman.remove(job["container"])
    lines = agent.call("job.logs", job=job["id"])["lines"]
    # (the stand-in library is empty, so ld.so warns that it cannot preload it: not our line)
    assert [line for line in lines if not line.startswith("ERROR: ld.so")] == [
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT 0=11517M", "CUDA_DEVICE_MEMORY_LIMIT 11517m",
        "CUDA_MPS_PIPE_DIRECTORY %s" % pipes, "LD_PRELOAD %s" % lib,
        "lib True False"]  # the library is there, read-only
    assert (pipes / "reached").exists()  # the MPS daemon's pipes are the host's


def asleep(podman, key: str) -> Dict[str, Any]:
    """A container job's launch, ``key``: ten minutes asleep in the test's image, with 100 MiB
    of GPU 0."""
    return dict(key=key, gpu=0, memory_mib=100, image=podman.image, env=IN_IMAGE,
                argv=[PYTHON, "-c", "import time\ntime.sleep(600)"])


@contextlib.contextmanager
def stopped_with_its_end_unwritten(podman, start_agent, tmp_path,
                                   real_podman: Optional[str] = None, held: bool = False
                                   ) -> Iterator[Tuple[AgentProcess, dict, str, pathlib.Path,
                                                       pathlib.Path]]:
    """A container job stopped (grace 0) whose end then waits: its shim cannot write
    ``exit.json`` (its job dir on a real tmpfs full to the last byte), so the watchdog is past
    the job's grace at each pass until the test takes away ``filler``. (The agent, the job,
    its container's name, the daemon's log, the filler.) With ``real_podman``, where the
    test's podman refuses ``inspect`` (the agent finds no cgroup of the container's, and only
    its runtime reaches the container's processes), the job is stopped once the real one says
    its container runs; ``held``, where the test's podman holds ``run`` before it makes the
    container, it is stopped at once."""
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    try:
        with first_job_dir_on_a_disk_of_its_own(state) as folder:
            agent = start_agent("1xL4", str(state), "--usage-sample-s", "3600")
            job = agent.call("job.launch", **asleep(podman, "k-c-kill"))
            if real_podman is None:
                recorded_cgroup(agent, job)
            elif not held:
                wait_until(lambda: running(real_podman, name), "the container to run")
                assert agent.call("job.get", job=job["id"])["container_cgroup"] is None
            fill(folder / "filler")
            agent.call("job.stop", job=job["id"], grace=0)
            yield agent, job, name, state / "daemon.log", folder / "filler"
    finally:
        podman.remove(name)


def running(real_podman: str, name: str) -> bool:
    """Whether the real podman says the container ``name`` runs."""
    return subprocess.run([real_podman, "inspect", "--format", "{{.State.Running}}", name],
                          capture_output=True, text=True).stdout.strip() == "true"


def more_passes(agent: AgentProcess, log: pathlib.Path, passes: int) -> None:
    """Wait for ``passes`` more watchdog passes (counted by the GPU reads that fail, one a
    pass while a share job runs: the test sets no clock)."""
    agent.call("sim.fault", function="nvmlDeviceGetComputeRunningProcesses",
               error="NVML_ERROR_UNKNOWN", count=passes)
    wait_until(lambda: "GPU 0: its processes can be read again" in log.read_text(),
               "%d more passes past the grace" % passes)


def test_a_runtime_kill_that_fails_past_the_grace_is_said_once_and_once_when_the_job_ends(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A container job stopped while its runtime refuses ``kill``, whose end then waits. The
    watchdog, past the grace at each pass, asks the runtime again and SIGKILLs the container's
    processes itself; the runtime's failure is said once, and once more when the job's end is
    recorded, with how many passes failed. Before, it was said at every pass."""
    podman_refusing(tmp_path, monkeypatch, "kill", "true")
    passes = 3
    with stopped_with_its_end_unwritten(podman, start_agent, tmp_path) as (
            agent, job, name, log, filler):
        wait_until(lambda: "kill --signal 9 %s failed" % name in log.read_text(),
                   "the runtime's SIGKILL to fail")
        more_passes(agent, log, passes)
        assert agent.call("job.get", job=job["id"])["state"] == "running"  # its end unwritten
        filler.unlink()
        assert wait_job(agent, job["id"], timeout=30)["state"] == "killed"
        failed = [line for line in log.read_text().splitlines() if "kill --signal 9" in line]
        assert len(failed) == 1 and failed[0].endswith(
            "job %s: podman kill --signal 9 %s failed (exit 125): Error: kill refused (the "
            "test's); tried again each pass" % (job["id"], name)), failed
        wait_until(lambda: "ended while its runtime's SIGKILL failed" in log.read_text(),
                   "the episode's end to be said")
        said = log.read_text().splitlines()
    ended = [line for line in said if "ended while its runtime's SIGKILL failed" in line]
    assert len(ended) == 1, ended
    assert int(re.search(r"after (\d+) failed passes$", ended[0])[1]) > passes
    assert podman_calls(tmp_path).count("kill --signal 9 %s" % name) > passes


@pytest.mark.parametrize("cgroup_found", [True, False], ids=["cgroup", "no-cgroup"])
def test_a_runtime_kill_that_works_again_is_said_so_and_not_sent_again(
        podman, start_agent, tmp_path, monkeypatch, cgroup_found):  # noqa: F811
    """As above, with a runtime that refuses the first two SIGKILLs and passes on the third.
    Where the container's cgroup is known, the agent's own SIGKILL to it ended the container
    (and ``--rm`` removed it): the third finds it gone, which counts as done. Where it is not
    (``inspect`` refused), the third is what kills it. Either way that it works again is said
    once, with the passes that failed, and the runtime is asked no more, pass after pass, until
    the job's end is recorded. Before, a container found gone was a new failure, asked again
    at each pass."""
    refused = "kill --signal 9 "
    real = podman_refusing(tmp_path, monkeypatch, "kill" if cgroup_found else "kill|inspect",
                           '"$1" = inspect -o "$(grep -c \'^%s\' "$CALLS")" -le 2' % refused)
    with stopped_with_its_end_unwritten(podman, start_agent, tmp_path,
                                        None if cgroup_found else real) as (
            agent, job, name, log, filler):
        mended = "job %s: its runtime's SIGKILL works again (or its container is gone) after 2 " \
            "failed passes" % job["id"]
        wait_until(lambda: mended in log.read_text(), "the runtime's SIGKILL to work")
        more_passes(agent, log, 3)
        assert agent.call("job.get", job=job["id"])["state"] == "running"  # its end unwritten
        filler.unlink()
        assert wait_job(agent, job["id"], timeout=30)["state"] == "killed"
        said = log.read_text().splitlines()
        gone = subprocess.run([real, "container", "exists", name]).returncode
    assert gone == 1  # killed, and removed
    assert podman_calls(tmp_path).count(refused + name) == 3
    failed = [line for line in said if refused in line]
    assert len(failed) == 1 and failed[0].endswith("tried again each pass"), failed
    assert len([line for line in said if mended in line]) == 1
    assert not [line for line in said if "ended while its runtime's SIGKILL failed" in line]


def test_a_container_made_just_after_its_runtime_said_none_is_killed_through_it(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A container job stopped while its runtime's client has not made the container yet (the
    test's podman holds ``run`` before it does, and refuses ``inspect``: the agent finds no
    cgroup of the container's, only its runtime reaches it). The first SIGKILL past the grace
    finds "no such container", and the test's podman then lets ``run`` make the container and
    answers once it runs: a container made a moment after the runtime said there was none.
    That answer is not taken as gone while the client runs, so the next pass asks again and
    the runtime kills it; it is said once, and asked no more. Before, the first answer counted
    as done: the container ran on, reached by nothing, until the job's end was written."""
    hold = tmp_path / "hold"
    hold.touch()
    real = podman_wrapped(tmp_path, monkeypatch, (
        'inspect) %s;;\n'
        'run) while [ -e %s ]; do sleep 0.05; done;;\n'
        'kill) if [ -e %s ] && [ "$3" = 9 ]; then\n'
        '  "$REAL" "$@"; code=$?\n'
        '  rm %s\n'
        '  until [ "$("$REAL" inspect --format "{{.State.Running}}" "$4" 2>/dev/null)" = true ]\n'
        '  do sleep 0.05; done\n'
        '  exit $code\n'
        'fi;;') % (REFUSE, hold, hold, hold))
    with stopped_with_its_end_unwritten(podman, start_agent, tmp_path, real, held=True) as (
            agent, job, name, log, filler):
        wait_until(lambda: not hold.exists(), "the first SIGKILL past the grace")
        wait_until(lambda: subprocess.run([real, "container", "exists", name]).returncode == 1,
                   "the runtime to kill the container (and --rm to remove it)")
        more_passes(agent, log, 3)
        assert agent.call("job.get", job=job["id"])["state"] == "running"  # its end unwritten
        filler.unlink()
        assert wait_job(agent, job["id"], timeout=30)["state"] == "killed"
        said = log.read_text().splitlines()
    assert podman_calls(tmp_path).count("kill --signal 9 %s" % name) == 2
    failed = [line for line in said if "kill --signal 9" in line]
    assert len(failed) == 1 and failed[0].endswith(
        "Error: no container with name or ID \"%s\" found: no such container; its runtime's "
        "client runs on, so the container may yet be made; tried again each pass" % name), failed
    assert len([line for line in said if line.endswith(
        "job %s: its runtime's SIGKILL works again (or its container is gone) after 1 failed "
        "pass" % job["id"])]) == 1


def launching_ending_7_on_sigterm(start_agent, podman, state: pathlib.Path,
                                  key: str) -> Tuple[AgentProcess, str]:
    """A container job that runs ten minutes unless a SIGTERM reaches it (exit 7 then), its
    launch sent on a new host's first connection and its start recorded. The launch's answer
    waits for the container (up to the launch's 15 s), which the test's podman does not make
    yet: the test goes on without it, on a second connection to the same daemon. (That
    connection, the job's id.)"""
    agent = start_agent("1xL4", str(state))
    agent.call("daemon.version")  # its daemon up, the host's spec its own: the second joins it
    other = start_agent(None, str(state))
    agent.send("job.launch", key=key, gpu=0, memory_mib=100, image=podman.image, env=IN_IMAGE,
               argv=[PYTHON, "-c", (
                   "import signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                   "time.sleep(600)")])
    return other, wait_until(lambda: next((j["id"] for j in other.call("job.list")["jobs"]
                                           if (j["key"], j["state"]) == (key, "running")), None),
                             "the job's start to be recorded")


def test_a_stop_asked_again_sends_the_sigterm_its_runtime_refused_before(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A running container job's stop whose SIGTERM the runtime refused (``kill`` failing,
    not "no such container"): the SIGTERM reached nothing, so the stop asked again (its answer
    lost) sends it, and the job ends by it, not by the SIGKILL at the end of its grace. Before,
    the first stop counted as sent: the second sent none, and the job had no clean end."""
    refuse = tmp_path / "refuse-kill"
    podman_refusing(tmp_path, monkeypatch, "kill", "-e %s" % refuse)
    state = str(tmp_path / "host")
    agent = start_agent("1xL4", state)
    name = "fractui-%s-j1" % AgentPaths(state).digest
    try:
        job = agent.call("job.launch", key="k-c-term-again", gpu=0, memory_mib=100,
                         image=podman.image, env=IN_IMAGE, argv=[PYTHON, "-c", (
                             "import signal, sys, time\n"
                             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                             "print('up', flush=True)\n"
                             "time.sleep(600)")])
        wait_until(lambda: "up" in read_log(state, job["id"]), "the job to run")
        refuse.touch()
        agent.call("job.stop", job=job["id"], grace=600, reason="make room")
        assert podman_calls(tmp_path).count("kill --signal 15 %s" % name) == 1
        refuse.unlink()
        agent.call("job.stop", job=job["id"], grace=600, reason="make room")
        done = wait_job(agent, job["id"], timeout=60)
    finally:
        podman.remove(name)
    assert (done["state"], done["reason"], done["exit_code"]) == ("killed", "make room", 7)
    assert podman_calls(tmp_path).count("kill --signal 15 %s" % name) == 2
    assert "kill --signal 9 %s" % name not in podman_calls(tmp_path)


def test_a_container_job_stopped_while_starting_and_adopted_gets_sigterm_once_made(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A container job stopped while it was starting (the stop recorded, its SIGKILL ten
    minutes away), whose daemon died before it recorded the start, while the runtime's client
    had not made the container yet (the test's podman holds ``run`` before it does). The next
    daemon adopts the job and its SIGTERM finds no container; once the container is made, the
    SIGTERM reaches it, and the job ends by it, not by the SIGKILL at the end of its grace.
    Before, the SIGTERM was said once and lost."""
    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'run) while [ -e %s ]; do sleep 0.05; done;;' % hold)
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    try:
        other, job_id = launching_ending_7_on_sigterm(start_agent, podman, state, "k-c-adopted")
        crash_before_start_was_recorded(other, str(state))  # (its launch never answers)
        with sqlite3.connect(str(state / "jobs.db")) as db:  # as job.stop records it
            db.execute("UPDATE jobs SET stop_reason = 'make room', kill_at = ?",
                       (time.monotonic() + 600,))
        db.close()
        later = start_agent(None, str(state))
        log = state / "daemon.log"
        wait_until(lambda: "so the container may yet be made" in log.read_text(),
                   "the adopted job's SIGTERM to find no container")
        hold.unlink()  # the runtime's client makes the container now
        done = wait_job(later, job_id, timeout=60)
        said = log.read_text()
    finally:
        podman.remove(name)
    # by the SIGTERM: its handler's exit, or (sent before Python set the handler) SIGTERM's own
    assert (done["state"], done["reason"], done["exit_code"] in (7, 128 + 15)) == (
        "killed", "make room", True), done
    assert "kill --signal 9 %s" % name not in podman_calls(tmp_path)
    assert said.count("job %s: SIGTERM to container %s, made after its stop, after " % (
        job_id, name)) == 1
    assert said.count("so the container may yet be made: sent again once it is") == 1


def test_a_running_container_job_whose_sigterm_is_unsent_gets_it_from_a_restarted_daemon(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A running container job stopped while its runtime's client had not made the container
    yet (the test's podman holds ``run``, as a long image pull does), its daemon then killed
    (-9) while the SIGTERM waited for the container. The next daemon sends it once the
    container is made, and the job ends by it, not by the SIGKILL at the end of its grace.
    Before, the SIGTERM waited in the first daemon's memory only, and was lost with it."""
    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'run) while [ -e %s ]; do sleep 0.05; done;;' % hold)
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    log = state / "daemon.log"
    try:
        other, job_id = launching_ending_7_on_sigterm(start_agent, podman, state, "k-c-unsent")
        assert other.call("job.get", job=job_id)["state"] == "running"
        other.call("job.stop", job=job_id, grace=600, reason="make room")
        wait_until(lambda: "so the container may yet be made" in log.read_text(),
                   "the stop's SIGTERM to find no container")
        os.kill(daemon_pid(other), signal.SIGKILL)
        other.proc.wait(timeout=10)
        later = start_agent(None, str(state))
        hold.unlink()  # the runtime's client makes the container now
        done = wait_job(later, job_id, timeout=60)
    finally:
        podman.remove(name)
    # by the SIGTERM: its handler's exit, or (sent before Python set the handler) SIGTERM's own
    assert (done["state"], done["reason"], done["exit_code"] in (7, 128 + 15)) == (
        "killed", "make room", True), done
    assert "kill --signal 9 %s" % name not in podman_calls(tmp_path)
    assert log.read_text().count("job %s: stopped before its container %s was found; its "
                                 "stop's SIGTERM is sent to it (again) once it is there" % (
                                     job_id, name)) == 1


# Loaded by every Python process of an agent started from ``agent_whose_shim_dies``'s code (its
# PYTHONPATH): a shim SIGKILLs those of ``KILLED`` (itself, its daemon) just before it would
# tell its daemon the pid of the job it started.
SHIM_DIES = '''\
import os
import signal

import remote_agent.jobs.shim as shim

report = shim._report


def dies(report_fd, data):
    if "pid" in data:
        for pid in KILLED:
            os.kill(pid, signal.SIGKILL)
    report(report_fd, data)


shim._report = dies
'''


def agent_whose_shim_dies(root: pathlib.Path, daemon_too: bool) -> str:
    """The agent's code (its package, linked) with SHIM_DIES as its ``sitecustomize``: a code
    root for ``start_agent`` whose shims die (and their daemon, where ``daemon_too``) at the
    one moment where no record has the job's pid, once its runtime's client runs."""
    root.mkdir()
    (root / "remote_agent").symlink_to(os.path.join(REPO, "remote_agent"))
    killed = "(os.getppid(), os.getpid())" if daemon_too else "(os.getpid(),)"
    (root / "sitecustomize.py").write_text(SHIM_DIES.replace("KILLED", killed))
    return str(root)


# The inodes of a tmpfs, as a container job's directory, on which the job's own record of its
# start (started.json) is refused and nothing before it: the directory itself, container.env,
# spec.json, shim.log, shim.lock, shim.claim and output.pipe.
INODES_BEFORE_STARTED = 7


@pytest.mark.parametrize("killed", ["shim", "shim and daemon"])
def test_a_container_job_whose_shim_died_before_its_start_was_recorded_leaves_nothing(
        podman, start_agent, tmp_path, monkeypatch, killed):  # noqa: F811
    """A container job's shim dies after its runtime's client runs but before anything
    recorded the client's pid: the job's own ``started.json`` is refused (its directory on a
    real tmpfs with no inode left for it) and the shim is killed just before it reports to its
    daemon (and the daemon too, restarted then). The client is still making the container
    (the test's podman holds ``run`` as a pull would). The agent finds the client by the
    container's name on its command line, kills it, and removes the container by name; the
    job is lost, saying so. Before, only ``rm`` was run, finding no container yet: the client
    ran on, and made a container that nothing would end."""
    hold, client = tmp_path / "hold", tmp_path / "client"
    hold.touch()
    real = podman_wrapped(tmp_path, monkeypatch, 'run) echo $$ > %s\n'
                          '  while [ -e %s ]; do sleep 0.05; done;;' % (client, hold))
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    code = agent_whose_shim_dies(tmp_path / "code", killed == "shim and daemon")
    try:
        with first_job_dir_on_a_disk_of_its_own(state, INODES_BEFORE_STARTED) as folder:
            agent = start_agent("1xL4", str(state), code_root=code)
            with pytest.raises((AgentError, EOFError)) as err:
                agent.call("job.launch", **asleep(podman, "k-c-unrecorded"))
            assert not (folder / "started.json").exists()
            # the shim may die before the client's shell has written its pid: waited for
            wait_until(lambda: client.exists() and client.read_text().endswith("\n"),
                       "the runtime's client to say its pid")
            pid = int(client.read_text())
            if killed == "shim and daemon":
                agent.proc.wait(timeout=10)
                agent = start_agent(None, str(state))
            else:
                assert err.value.code == rpc.HOST_FAILED, err.value.message
            done = wait_job(agent, "j1")
            wait_until(lambda: not alive(pid), "the runtime's client to be killed")
            hold.unlink()  # what it would have made next, had it run on
            assert subprocess.run([real, "container", "exists", name]).returncode == 1
    finally:
        if client.exists() and alive(int(client.read_text())):  # (a failure: it is held)
            os.kill(int(client.read_text()), signal.SIGKILL)
        podman.remove(name)
    assert done["state"] == "lost" and done["pid"] is None
    said = re.fullmatch(
        r"its shim ended before it recorded starting the job; whether it ran cannot be known "
        r"\(see %s\); its runtime's client, found by the container's name \(pid ([\d, ]+)\), "
        r"was killed and the container %s removed" % (re.escape(str(folder / "shim.log")), name),
        done["reason"])
    assert said and str(pid) in said[1].split(", "), done["reason"]  # (with a child it forked)


@pytest.mark.parametrize("removed_by", ["a later pass", "the next agent"])
def test_a_container_its_runtime_could_not_remove_is_removed_later_by_its_name(
        podman, start_agent, tmp_path, monkeypatch, removed_by):  # noqa: F811
    """A container job's runtime client is killed (its container runs on), and at the job's
    end the runtime refuses ``rm`` while the agent knows no cgroup of the container's (the
    runtime refuses ``inspect`` too): only the runtime reaches it. That is said once, and the
    agent asks again at each pass; once the runtime removes it, it is said removed. A daemon
    stopped meanwhile leaves it to the next, which finds it by its name. Before, the failure
    was said, and the container left running for good."""
    refuse = tmp_path / "refuse-rm"
    refuse.touch()
    real = podman_refusing(tmp_path, monkeypatch, "rm|inspect",
                           '"$1" = inspect -o -e %s' % refuse)
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    log = state / "daemon.log"
    try:
        agent = start_agent("1xL4", str(state), "--usage-sample-s", "3600")
        job = agent.call("job.launch", **asleep(podman, "k-c-left"))
        wait_until(lambda: running(real, name), "the container to run")
        assert agent.call("job.get", job=job["id"])["container_cgroup"] is None
        os.kill(job["pid"], signal.SIGKILL)  # its runtime's client: the container runs on
        assert wait_job(agent, job["id"])["state"] == "killed"
        wait_until(lambda: "could not be removed" in log.read_text(), "the rm to fail")
        # a running share job's GPU is read at each pass: its failing reads count the passes
        agent.call("job.launch", key="k-c-counter", gpu=0, memory_mib=10,
                   argv=[sys.executable, "-c", "import time\ntime.sleep(600)"])
        more_passes(agent, log, 3)
        assert running(real, name)
        if removed_by == "the next agent":
            os.kill(daemon_pid(agent), signal.SIGKILL)
            agent.proc.wait(timeout=10)
        refuse.unlink()
        if removed_by == "the next agent":
            agent = start_agent(None, str(state))
        wait_until(lambda: subprocess.run([real, "container", "exists", name]).returncode == 1,
                   "the container to be removed")
        # (said once its rm has answered: a moment after the runtime no longer has it)
        wait_until(lambda: re.search(r"container %s (is )?removed" % name, log.read_text()),
                   "the removal to be said")
        said = log.read_text().splitlines()
    finally:
        refuse.unlink(missing_ok=True)  # (the test's podman below is the refusing one)
        podman.remove(name)
    failed = [line for line in said if "could not be removed" in line]
    assert len(failed) == 1 and failed[0].endswith(
        "job j1: its container %s could not be removed; its cgroup is not known, so only its "
        "runtime reaches it (podman rm -f -t 0 %s failed (exit 125): Error: rm refused (the "
        "test's)); tried again each pass" % (name, name)), failed
    if removed_by == "a later pass":
        (removed,) = [line for line in said if "is removed after" in line]
        found = re.search(r" job j1: its container %s is removed after (\d+) failed passes$" % (
            name), removed)
        assert found and int(found[1]) > 3, removed
    else:
        assert [line.split(" INFO ")[-1].split(" WARNING ")[-1] for line in said
                if "ended job j1: " in line] == [
            "ended job j1: its container %s was left running or made; removing it" % name,
            "ended job j1: the container %s removed" % name], said[-5:]


def test_a_container_whose_agent_was_killed_while_removing_it_is_removed_by_the_next(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A container job whose runtime client was killed (its container runs on) ends, and its
    daemon is killed while it asks the runtime to remove the container (the test's podman
    kills the daemon that runs its ``rm``): the job's end is recorded, the container is not
    removed. The next daemon finds it by its name and removes it. Before, nothing would: the
    table said the job had ended, and no daemon looked at an ended job's container again."""
    die = tmp_path / "die-in-rm"
    real = podman_wrapped(tmp_path, monkeypatch,
                          'rm) if [ -e %s ]; then kill -KILL "$PPID"; exit 137; fi;;' % die)
    state = tmp_path / "host"
    name = "fractui-%s-j1" % AgentPaths(str(state)).digest
    try:
        agent = start_agent("1xL4", str(state))
        job = agent.call("job.launch", **asleep(podman, "k-c-mid-rm"))
        pids = cgroup_pids(recorded_cgroup(agent, job))
        die.touch()
        os.kill(job["pid"], signal.SIGKILL)  # its runtime's client: the container runs on
        agent.proc.wait(timeout=20)  # its daemon, killed in the rm at the job's end
        die.unlink()
        assert running(real, name)
        agent = start_agent(None, str(state))
        assert agent.call("job.get", job=job["id"])["state"] == "killed"  # recorded before
        wait_until(lambda: subprocess.run([real, "container", "exists", name]).returncode == 1,
                   "the next daemon to remove the container")
        assert not any(alive(p) for p in pids)
    finally:
        die.unlink(missing_ok=True)  # (the test's podman below is the one that kills)
        podman.remove(name)


def test_a_container_name_its_job_takes_again_is_no_longer_removed_as_left(
        podman, supervisor_parts, tmp_path, monkeypatch):  # noqa: F811
    """A start cut short (its daemon stopped mid-launch) is ended as never started, and its
    runtime refuses ``rm`` then: its container's name is kept, to be removed at each pass. The
    same key launched again starts that job again, under the same name; the next pass must
    leave its runtime's client (and the container it makes) alone: the job is active again.
    Before, the pass killed the new client by the name, and so the job it had just started.
    The daemon's parts run here, so the pass follows the launch exactly so."""
    from tests.test_launch_concurrency import launch_request

    hold, clients = tmp_path / "hold", tmp_path / "clients"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'rm|inspect) %s;;\nrun) echo $$ >> %s\n'
                   '  while [ -e %s ]; do sleep 0.05; done; exit 0;;' % (REFUSE, clients, hold))
    sup, _ = supervisor_parts("1xL4")
    try:
        req = launch_request(**asleep(podman, "k-c-again"))
        cut = sup.store.insert(Job(  # as a daemon killed mid-launch left it
            id=0, key=req.key, fingerprint=req.fingerprint(), name=req.name, argv=req.argv,
            env=req.env, cwd=None, gpus=[0], gpu_uuids=["GPU-x"], instance=None, mig=None,
            memory_mib=100, created_at=0.0, runtime="podman", image=req.image))
        name = "fractui-%s-j%d" % (sup.paths.digest, cut.id)
        sup.store.update(cut, container=name)
        assert sup.never_started(cut)
        assert sup.store.get(cut.id).reason.startswith(
            "never started: the agent stopped while launching it")
        assert ("container", name) in sup.failures.failing("container")  # (rm refused)
        job = sup.launch(req)
        assert (job.id, job.state, job.container) == (cut.id, "running", name)
        (client,) = map(int, clients.read_text().split())
        sup.remove_left_containers()  # the watchdog's pass
        assert alive(client), "the relaunched job's runtime client was killed"
        assert sup.store.get(job.id).state == "running"
    finally:
        hold.unlink()


def launched_in_process(sup, podman, key: str) -> Job:
    """A container job of ``sup`` (the daemon's parts in the test's process, no watchdog
    running) that sleeps ten minutes, launched: the launch's answer."""
    from tests.test_launch_concurrency import launch_request

    return sup.launch(launch_request(**asleep(podman, key)))


def test_a_launch_waits_for_its_container_while_its_runtime_has_none_of_its_name(
        podman, supervisor_parts, tmp_path, monkeypatch):  # noqa: F811
    """A container job's launch waits for the runtime to make its container, so that its
    cgroup is recorded with the job: the runtime's ``inspect`` saying it has nothing of that
    name (the real podman's answer while the test's holds ``run``) is asked again, until the
    runtime's client ends (here at the second ``inspect``, as a failed pull does)."""
    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, (
        'inspect) if [ "$(grep -c \'^inspect \' "$CALLS")" -ge 2 ]; then rm -f %s; fi;;\n'
        'run) while [ -e %s ]; do sleep 0.05; done; exit 1;;') % (hold, hold))
    sup, _ = supervisor_parts("1xL4")
    try:
        job = launched_in_process(sup, podman, "k-c-made-late")
        assert job.container_cgroup is None
        asked = [c for c in podman_calls(tmp_path) if c.startswith("inspect ")]
        # (a third, where the launch asked again before it saw the client end)
        assert len(asked) >= 2 and set(asked) == {
            "inspect --format {{.State.Pid}} %s" % job.container}, asked
    finally:
        hold.unlink(missing_ok=True)


def test_a_launch_whose_runtime_cannot_say_where_its_container_is_answers_at_once(
        podman, supervisor_parts, tmp_path, monkeypatch, caplog):  # noqa: F811
    """Where the runtime's ``inspect`` fails (not for want of the container), the launch
    answers after asking once, saying so, while the runtime's client runs on (held by the
    test's podman, as a pull holds it): the watchdog asks again at each pass. Before, the
    launch asked again and again until its 15 s were up, at every launch on such a runtime,
    and said nothing of it."""
    caplog.set_level(logging.WARNING, logger="remote_agent.jobs")
    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'inspect) %s;;\nrun) while [ -e %s ]; do sleep 0.05; '
                   'done; exit 1;;' % (REFUSE, hold))
    sup, _ = supervisor_parts("1xL4")
    try:
        job = launched_in_process(sup, podman, "k-c-uninspected")
        assert (job.state, job.container_cgroup) == ("running", None)
        assert job.procs().leader_alive()  # its client, still making the container
        inspect = "inspect --format {{.State.Pid}} %s" % job.container
        assert [c for c in podman_calls(tmp_path) if c.startswith("inspect ")] == [inspect]
    finally:
        hold.unlink()
    assert [r.getMessage() for r in caplog.records] == [
        "job j1: podman %s failed (exit 125): Error: inspect refused (the test's); its "
        "container is looked for at each pass" % inspect]


def test_a_runtime_that_cannot_say_where_a_container_is_is_said_once_and_once_mended(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """The runtime's ``inspect`` fails for the launch's look and the watchdog's next passes,
    then answers: that it fails is said once (not at each pass, nor never, as the watchdog's
    looks were), that it answers again once with the passes it failed, and the container's
    cgroup is recorded then."""
    refused = "inspect --format {{.State.Pid}} "
    podman_refusing(tmp_path, monkeypatch, "inspect",
                    '"$(grep -c \'^%s\' "$CALLS")" -le 4' % refused)
    state = tmp_path / "host"
    agent = start_agent("1xL4", str(state))
    try:
        job = agent.call("job.launch", **asleep(podman, "k-c-unfound"))
        log = state / "daemon.log"
        mended = "job %s: its runtime answers where its container is again after " % job["id"]
        wait_until(lambda: mended in log.read_text(), "the runtime's inspect to answer")
        found = recorded_cgroup(agent, job)
        said = log.read_text()
    finally:
        podman.remove(job["container"])
    assert found.startswith("/sys/fs/cgroup")
    failed = [line for line in said.splitlines() if refused in line]
    assert len(failed) == 1 and failed[0].endswith(
        "failed (exit 125): Error: inspect refused (the test's); its container is looked for "
        "at each pass"), failed
    assert said.count(mended) == 1 and podman_calls(tmp_path).count(
        refused + job["container"]) >= 5
    assert re.search(re.escape(mended) + r"(\d+) failed passes$", said, re.M)


def test_a_look_for_a_container_that_fails_as_its_job_ends_is_not_kept_failing(
        supervisor_parts, tmp_path, monkeypatch):  # noqa: F811
    """A look for a job's container (a snapshot's, a launch's booking) takes the job from the
    table and then asks its runtime, whose ``inspect`` fails; the job ends in between (the
    watchdog saw it end), and that end says it mended. That the runtime cannot say where its
    container is must not stay said failing after that end: before, it did for as long as the
    daemon ran, as no later look asks and no other end comes to say it mended."""
    from remote_agent.jobs.supervisor import UNFOUND

    podman_refusing(tmp_path, monkeypatch, "inspect", "1")
    sup, _ = supervisor_parts("1xL4")
    job = sup.store.insert(Job(
        id=0, key="k-c-ends", fingerprint="f", name="ends", argv=["true"], env={}, cwd=None,
        gpus=[0], gpu_uuids=["GPU-x"], instance=None, mig=None, memory_mib=100,
        created_at=0.0, runtime="podman", image="image"))
    sup.store.update(job, state="running", container="fractui-%s-j%d" % (
        sup.paths.digest, job.id))
    looked = sup.store.get(job.id)  # as the look took it, before the job ended
    sup.finish(sup.store.get(job.id), state="exited", exit_code=0, reason="ended")
    sup.find_container(looked)
    assert sup.store.get(job.id).state == "exited"
    assert sup.failures.failing(UNFOUND) == []


def test_the_containers_left_by_ended_jobs_are_listed_once_a_daemon(
        podman, start_agent, tmp_path, monkeypatch):  # noqa: F811
    """A daemon asks its runtime for the containers ended jobs left once it has listed them
    (at its first pass, where the runtime answers), not again at each pass: each ``ps`` is a
    runtime's command (seconds where it is busy) and a look at every process. Before, the
    pass's step gave no answer back, so it was taken for a failed listing at every pass."""
    podman_wrapped(tmp_path, monkeypatch, "")
    state = tmp_path / "host"
    agent = start_agent("1xL4", str(state))
    # a running share job's GPU is read at each pass: its failing reads count the passes
    agent.call("job.launch", key="k-c-counter", gpu=0, memory_mib=10,
               argv=[sys.executable, "-c", "import time\ntime.sleep(600)"])
    more_passes(agent, state / "daemon.log", 3)
    assert [c for c in podman_calls(tmp_path) if c.startswith("ps ")] == [
        "ps -a --filter name=fractui-%s-j --format {{.Names}}" % AgentPaths(str(state)).digest]


def test_a_client_killed_by_its_container_name_whose_container_is_not_removed_is_said_so(
        podman, supervisor_parts, tmp_path, monkeypatch, caplog):  # noqa: F811
    """An ended job's container whose runtime client still runs (found by the container's
    name) while the runtime refuses ``rm``: the client is killed and that is said, and the
    container is said not removed, in the log and in the words for the job's reason. Before,
    the log said the client "was killed and the container ... removed" before the ``rm`` was
    run, and its failure followed: two lines that contradict each other."""
    from remote_agent.jobs.supervisor import LeftContainer

    hold = tmp_path / "hold"
    hold.touch()
    podman_wrapped(tmp_path, monkeypatch, 'rm) %s;;\nrun) while [ -e %s ]; do sleep 0.05; '
                   'done; exit 0;;' % (REFUSE, hold))
    sup, _ = supervisor_parts("1xL4")
    name = "fractui-%s-j7" % sup.paths.digest
    client = subprocess.Popen(["podman", "run", "--rm", "--name", name, podman.image, "true"])
    try:
        wait_until(lambda: name in sup.runtimes.get("podman").clients(name).values(),
                   "the client to run")
        caplog.set_level(logging.INFO, logger="remote_agent.jobs")
        done = sup.end_container(LeftContainer(name, "podman", None, "job j7"))
        assert client.wait(10) == -signal.SIGKILL
    finally:
        hold.unlink()
        if client.poll() is None:
            client.kill()
            client.wait()
    # (its pids: the wrapper's shell, and a fork of it about to run its sleep, if one is then)
    found = re.match(r"(its runtime's client, found by the container's name \(pid ([\d, ]+)\), "
                     r"was killed); its container %s could not be removed yet \(podman rm "
                     % re.escape(name), done)
    assert found and str(client.pid) in found.group(2).split(", "), done
    killed = found.group(1)
    said = [r.getMessage() for r in caplog.records]
    assert "job j7: " + killed in said and not any("removed" in line and "not be" not in line
                                                   for line in said), said


def test_a_pass_asks_a_failing_runtime_to_remove_one_left_container_at_most(
        podman, supervisor_parts, tmp_path, monkeypatch):  # noqa: F811
    """Three ended jobs' containers the runtime would not remove: a watchdog pass asks again
    for one, and stops at its failure (a runtime that hangs costs each of its commands the
    whole timeout, and the pass also kills and caps the running jobs); the next pass asks for
    the next one. Once the runtime works, a pass removes every one. Before, each pass asked
    for every one, so a hung runtime held a pass back ten seconds a container."""
    from remote_agent.jobs.supervisor import LeftContainer

    refuse = tmp_path / "refuse-rm"
    refuse.touch()
    podman_refusing(tmp_path, monkeypatch, "rm", "-e %s" % refuse)
    sup, _ = supervisor_parts("1xL4")
    names = ["fractui-%s-j%d" % (sup.paths.digest, n) for n in (1, 2, 3)]
    for name in names:
        sup.end_container(LeftContainer(name, "podman", None, "job %s" % name[-2:]))

    def removals() -> List[str]:
        return [c.split()[-1] for c in podman_calls(tmp_path) if c.startswith("rm ")]

    assert removals() == names
    for n in range(4):
        sup.remove_left_containers()  # a pass
        assert removals()[3:] == (names + names[:1])[:n + 1]
    refuse.unlink()
    sup.remove_left_containers()
    assert removals()[7:] == names[1:] + names[:1]
    sup.remove_left_containers()
    assert len(removals()) == 10  # none left
