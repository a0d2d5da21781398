"""An entry a job of the agent's own user put in its own folder (a symlink, a directory, a FIFO,
a file another user owns): the next daemon (after a kill -9, a handover, a reboot: the state dir
outlives them all) starts and serves every other job, and leaves that job's folder unread, the
job ended as lost with why. Before, it refused the whole state dir ("refusing job file ..."),
exit 2, until someone removed the entry by hand: one job took its host out of service."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from remote_agent.rpc import jsonrpc as rpc

from tests.cli_run import reaped
from tests.test_job_supervision import (crash_before_start_was_recorded, daemon_pid_of,
                                        wait_until)
from tests.test_jobs import alive, wait_job

NOBODY = 65534
# what the job puts at a name in its folder (sys.argv[1]; in place of its shim's file there,
# once written), then it sleeps on
PLANT = {
    "symlink": "os.symlink(sys.argv[2], sys.argv[1])",
    "directory": "os.mkdir(sys.argv[1], 0o700)",
    "FIFO": "os.mkfifo(sys.argv[1], 0o600)",
    "another user's file": "open(sys.argv[1], 'w').close(); os.chown(sys.argv[1], %d, %d)"
                           % (NOBODY, NOBODY),
}


def _kind(mode: int) -> str:
    for kind, test in (("symlink", stat.S_ISLNK), ("directory", stat.S_ISDIR),
                       ("FIFO", stat.S_ISFIFO)):
        if test(mode):
            return kind
    return "another user's file"


def _planting(planted: str, kind: str, elsewhere: str) -> list:
    return [sys.executable, "-c", "import os, sys, time\nwhile not os.path.exists(sys.argv[1]) "
            "and not sys.argv[1].endswith('planted'):\n    time.sleep(0.05)\n"
            "if os.path.lexists(sys.argv[1]):\n    os.unlink(sys.argv[1])\n%s\n"
            "time.sleep(600)" % PLANT[kind], planted, elsewhere]


@pytest.mark.parametrize("name", ["started.json", "planted"])
@pytest.mark.parametrize("kind", sorted(PLANT))
def test_an_entry_a_job_put_in_its_folder_keeps_no_daemon_from_starting(start_agent, tmp_path,
                                                                        kind, name):
    state = str(tmp_path / "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("kept")
    agent = start_agent("1xL4", state)
    other = agent.call("job.launch", key="k-other", gpu=0, memory_mib=10,
                       argv=["sleep", "600"])
    job_dir = os.path.join(state, "jobs", "j2")
    planted = os.path.join(job_dir, name)
    planter = agent.call("job.launch", key="k-plant", gpu=0, memory_mib=10,
                         argv=_planting(planted, kind, str(elsewhere)))
    wait_until(lambda: os.path.lexists(planted) and _kind(os.lstat(planted).st_mode) == kind,
               "the job's %s at %s" % (kind, planted))
    pid = agent.call("job.get", job=planter["id"])["pid"]
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)

    again = start_agent("1xL4", state)
    assert again.call("job.get", job=other["id"])["state"] == "running"
    ended = wait_job(again, planter["id"])
    assert ended["state"] == "lost"
    assert ended["reason"].startswith(
        "its directory %s holds what the agent did not make, so the agent leaves it unread: "
        "refusing job file %s: " % (job_dir, planted)), ended["reason"]
    wait_until(lambda: not alive(pid), "the end of the job's process")
    assert os.path.lexists(planted) and elsewhere.read_text() == "kept"
    # its folder is left unread: its output is not read through it either
    reply = again.request("job.logs", job=planter["id"])
    assert "error" in reply and "leaves it unread" in reply["error"]["message"], reply
    again.call("job.stop", job=other["id"])
    assert wait_job(again, other["id"])["state"] == "killed"


def test_a_folder_named_as_no_job_is_named_leaves_every_job_read(start_agent, tmp_path):
    """``jobs/j01`` is no job's folder (j1's is ``jobs/j1``): what it holds costs j1 nothing
    (before: read as j1's, j1 was killed and ended lost for a folder not its own)."""
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-1", gpu=0, memory_mib=10, argv=["sleep", "600"])
    assert job["id"] == "j1"
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    stray = os.path.join(state, "jobs", "j01")
    os.mkdir(stray, 0o700)
    os.symlink("/etc/passwd", os.path.join(stray, "started.json"))

    again = start_agent("1xL4", state)
    assert again.call("job.get", job="j1")["state"] == "running"
    assert "error" not in again.request("job.logs", job="j1")
    again.call("job.stop", job="j1")
    assert wait_job(again, "j1")["state"] == "killed"


def test_a_launch_cut_short_whose_folder_is_left_unread_is_not_started_again(start_agent,
                                                                             tmp_path):
    """A launch cut short before anything ran (its key may start it again), its folder then
    holding what the agent did not make: launching the key again is refused, saying why, and
    the job keeps its record, holding nothing (before: the refusal left it starting for good,
    its slice held, every launch of the key refused again and every watchdog pass failing)."""
    state = str(tmp_path / "host")
    agent = start_agent("1xA100-80GB:mig", state)
    gate = tmp_path / "gate"
    agent.call("sim.hold", function="nvmlDeviceCreateGpuInstanceWithPlacement", gate=str(gate))
    params = dict(key="k-cut", gpu=0, mig={"profile": "3g.40gb", "start": 4},
                  argv=["sleep", "600"])
    agent.send("job.launch", **params)
    wait_until(lambda: os.path.exists(str(gate) + ".held"), "the launch to reach MIG creation")
    os.kill(daemon_pid_of(state), signal.SIGKILL)  # the daemon dies mid-launch
    agent.proc.wait(timeout=10)
    later = start_agent(None, state)
    job = wait_job(later, "j1")
    assert (job["state"], job["exit_code"], job["started_at"]) == ("exited", None, None)
    os.kill(daemon_pid_of(state), signal.SIGKILL)
    later.proc.wait(timeout=10)
    planted = os.path.join(state, "jobs", "j1", "planted")
    os.mkdir(planted, 0o700)

    again = start_agent(None, state)
    for _ in range(2):
        reply = again.request("job.launch", **params)
        assert "leaves it unread: refusing job file %s" % planted in \
            reply["error"]["message"], reply
        assert again.call("job.get", job="j1") == job
    # nothing of it is held: the same slice is another key's to take
    other = again.call("job.launch", **dict(params, key="k-other"))
    assert other["state"] == "running"
    again.call("job.stop", job=other["id"])
    assert wait_job(again, other["id"])["state"] == "killed"


def test_a_job_left_unread_whose_start_was_never_recorded_holds_its_slice_till_mended(
        start_agent, tmp_path):
    """The daemon died after the shim started the job and before it recorded the start (no
    pid, no cgroup in its record: the pid is in its folder alone), and the job put a
    directory in its folder: the next daemon leaves the folder unread and, finding none of
    its processes, keeps it starting with its GPU slice booked, its reason saying why; once
    the folder is mended, the job is read again and adopted, and a stop ends it. Before, it
    was ended lost and gave its slice back while it ran on (its words said so)."""
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    planted = os.path.join(state, "jobs", "j1", "planted")
    params = dict(key="k-plant", gpu=0, memory_mib=20000,
                  argv=_planting(planted, "directory", str(tmp_path / "elsewhere")))
    job = agent.call("job.launch", **params)
    wait_until(lambda: os.path.isdir(planted), "the job's directory at %s" % planted)
    crash_before_start_was_recorded(agent, state)
    try:
        again = start_agent(None, state)
        held = wait_until(lambda: _with_reason(again.call("job.get", job=job["id"])),
                          "the job's reason")
        assert held["state"] == "starting" and held["reason"] == (
            "its directory %s holds what the agent did not make, so the agent leaves it "
            "unread: refusing job file %s: not a regular file: a directory; its start was "
            "never recorded, so no process of it can be found (its pid is in that folder "
            "alone, and it has no cgroup): one may still run, so it holds its GPU slice until "
            "that folder is mended (what is named above; then the job is read again, and "
            "adopted or ended)" % (os.path.dirname(planted), planted)), held["reason"]
        assert alive(job["pid"])
        refused = again.request("job.launch", key="k-other", gpu=0, memory_mib=10000,
                                argv=["sleep", "600"])
        assert refused["error"]["code"] == rpc.NO_ROOM, refused
        again_by_key = again.request("job.launch", **params)  # refused, its record kept
        assert "leaves it unread" in again_by_key["error"]["message"], again_by_key
        assert again.call("job.get", job=job["id"]) == held
        os.rmdir(planted)  # the admin mends its folder
        adopted = wait_job(again, job["id"], states=("running",))
        assert (adopted["pid"], adopted["reason"]) == (job["pid"], None)
        again.call("job.stop", job=job["id"])
        assert wait_job(again, job["id"])["state"] == "killed"
        assert not alive(job["pid"])
    finally:
        if alive(job["pid"]):
            os.kill(job["pid"], signal.SIGKILL)


@pytest.mark.parametrize("when", ["its daemon runs", "no daemon runs"])
def test_a_held_job_whose_folder_is_removed_is_ended_lost_saying_one_may_still_run(
        start_agent, tmp_path, when):
    """A job held for its folder (its start never recorded, a directory planted in it) whose
    whole folder is then removed: nothing can mend it, nothing finds its process, so it is
    ended lost, its words saying that one may still run on the slice it gives back. Before,
    it was ended "never started: ... nothing ran" while its process ran on; by the next
    daemon, where none ran as it was removed, too."""
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    planted = os.path.join(state, "jobs", "j1", "planted")
    job = agent.call("job.launch", key="k-gone", gpu=0, memory_mib=20000,
                     argv=_planting(planted, "directory", str(tmp_path / "elsewhere")))
    wait_until(lambda: os.path.isdir(planted), "the job's directory at %s" % planted)
    crash_before_start_was_recorded(agent, state)
    try:
        again = start_agent(None, state)
        wait_until(lambda: _with_reason(again.call("job.get", job=job["id"])), "the hold")
        if when == "no daemon runs":
            os.kill(daemon_pid_of(state), signal.SIGKILL)
            again.proc.wait(timeout=10)
        shutil.rmtree(os.path.dirname(planted))  # an admin (or the job) removes it all
        if when == "no daemon runs":
            again = start_agent(None, state)
        ended = wait_job(again, job["id"])
        assert (ended["state"], ended["reason"]) == ("lost", (
            "its directory %s was removed while the agent held it unread, and its start was "
            "never recorded, so no process of it can be found: one may still run, unwatched "
            "and not signalled, on the GPU slice it gives back" % os.path.dirname(planted))), \
            ended
        assert alive(job["pid"])  # (as its words say)
    finally:
        if alive(job["pid"]):
            os.kill(job["pid"], signal.SIGKILL)


def _with_reason(job: dict):
    return job if job["reason"] else None


# what a job does to its own folder (sys.argv[1]; sys.argv[2]: a directory elsewhere, of the
# agent's user), once sys.argv[3] is there, then it sleeps on
DAMAGE = {
    "writable by all": ("os.chmod(d, 0o777)",
                        "it is writable by its group and all users (mode 0777)"),
    "given to another user": ("os.chown(d, %d, %d)" % (NOBODY, NOBODY),
                              "it is owned by uid %d, not by uid 0" % NOBODY),
    "a symlink in its place": ("os.rename(d, d + '.away'); os.symlink(sys.argv[2], d)",
                               "it is a symlink, not a directory"),
    "a file in its place": ("os.rename(d, d + '.away'); open(d, 'w').close()",
                            "it is a regular file, not a directory"),
}


@pytest.mark.parametrize("when", ["its daemon runs", "no daemon runs"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_job_that_changes_its_own_folder_costs_that_job_alone(start_agent, tmp_path, damage,
                                                                when):
    """A job (of the agent's own user) makes its own folder writable by all, gives it to
    another user, or puts a symlink or a file in its place: the daemon running then, or the
    next one, ends that job lost, saying which folder and what is wrong, kills it, follows no
    link, and serves every other job; a daemon starts on the state dir after it. Before,
    the running daemon read on through the link, and the next start refused the whole state
    dir (exit 2) until someone mended the folder by hand."""
    state = str(tmp_path / "state")
    elsewhere, go = tmp_path / "elsewhere", tmp_path / "go"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "exit.json").write_text('{"code": 0, "ended_at": 1}')  # read if followed
    agent = start_agent("1xL4", state)
    other = agent.call("job.launch", key="k-other", gpu=0, memory_mib=10,
                       argv=["sleep", "600"])
    job_dir = os.path.join(state, "jobs", "j2")
    harm, said = DAMAGE[damage]
    job = agent.call("job.launch", key="k-damage", gpu=0, memory_mib=10, argv=[
        sys.executable, "-c", "import os, sys, time\nd = sys.argv[1]\nwhile not "
        "os.path.exists(sys.argv[3]):\n    time.sleep(0.05)\n%s\ntime.sleep(600)" % harm,
        job_dir, str(elsewhere), str(go)])
    if when == "no daemon runs":
        os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
        agent.proc.wait(timeout=10)
    go.touch()
    wait_until(lambda: os.path.exists(job_dir + ".away") or stat.S_IMODE(
        os.lstat(job_dir).st_mode) == 0o777 or os.lstat(job_dir).st_uid == NOBODY,
        "the job's change to its folder")
    if when == "no daemon runs":
        agent = start_agent("1xL4", state)
    ended = wait_job(agent, job["id"])
    assert ended["state"] == "lost", ended
    assert ended["reason"].startswith(
        "its directory %s is not the agent's own as it made it, so the agent leaves it "
        "unread: refusing job directory %s: %s" % (job_dir, job_dir, said)), ended["reason"]
    assert ended["reason"].endswith("; so it cannot be watched, and its processes were "
                                    "killed"), ended["reason"]
    wait_until(lambda: not alive(job["pid"]), "the end of the job's process")
    assert os.listdir(str(elsewhere)) == ["exit.json"]  # nothing read or written through it
    # it had no HAMi-core region, so none is said to be left
    with open(os.path.join(state, "daemon.log")) as f:
        assert "HAMi-core region" not in f.read()
    reply = agent.request("job.logs", job=job["id"])
    assert "error" in reply and "leaves it unread" in reply["error"]["message"], reply
    # a daemon starts on the state dir after it, and serves the other job
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    again = start_agent("1xL4", state)
    assert again.call("job.get", job=job["id"]) == ended
    assert again.call("job.get", job=other["id"])["state"] == "running"
    again.call("job.stop", job=other["id"])
    assert wait_job(again, other["id"])["state"] == "killed"


def test_a_symlink_a_job_put_in_its_folders_place_goes_at_its_prune_and_nothing_it_names(
        start_agent, tmp_path):
    """The job is pruned: the symlink at its folder's name is removed, never followed (what
    it names is kept whole). Before, the prune's rmtree refused a symlink, silently, and the
    name stayed for good."""
    state = str(tmp_path / "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "kept").write_text("kept")
    agent = start_agent("1xL4", state, "--retention-hours", "0.0005")
    job_dir = os.path.join(state, "jobs", "j1")
    job = agent.call("job.launch", key="k-link", gpu=0, memory_mib=10, argv=[
        sys.executable, "-c", "import os, sys, time\nd = sys.argv[1]\n%s\ntime.sleep(600)"
        % DAMAGE["a symlink in its place"][0], job_dir, str(elsewhere)])
    assert wait_job(agent, job["id"])["state"] == "lost"
    wait_until(lambda: not os.path.lexists(job_dir), "the prune of %s" % job_dir)
    assert (elsewhere / "kept").read_text() == "kept" and os.listdir(str(elsewhere)) == ["kept"]


def test_an_entry_gone_as_it_is_judged_is_no_error(tmp_path):
    """A job makes a file others may write in its folder and removes it, over and over (a
    shim's temporary file goes so too): an entry that was there as the folder was listed and
    seen, gone as its ACL was read, raised FileNotFoundError out of the judging (the ACL read
    by its name), which ended the daemon's start. Each look now judges the entry through one
    descriptor of it, so it is either seen and judged or not there, never an error."""
    from remote_agent.daemon.paths import AgentPaths

    state = tmp_path / "state"
    (state / "jobs" / "j1").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    paths = AgentPaths(str(state))
    entry = str(state / "jobs" / "j1" / "shared")
    churn = subprocess.Popen([sys.executable, "-c", "import os, sys\nwhile True:\n    fd = "
                              "os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o664)\n    "
                              "os.fchmod(fd, 0o664)\n    os.close(fd)\n    os.unlink(sys.argv[1])",
                              entry])
    with reaped(churn):
        wait_until(lambda: os.path.lexists(entry), "the job's file")
        said = {paths.unread_job_dir("j1") for _ in range(30000)}
    assert said <= {None, "its directory %s holds what the agent did not make, so the agent "
                    "leaves it unread: refusing job file %s: it is writable by its group (mode "
                    "0664), who could have changed it; check it, then: chmod go-w %s" % (
                        os.path.dirname(entry), entry, entry)}, said


@pytest.mark.parametrize("shim", ["alive", "killed"])
def test_a_hami_core_region_of_a_job_whose_folder_is_left_unread_is_removed(
        start_agent, tmp_path, shim):
    """On a host with HAMi-core, a job with a region of its own makes its folder writable by
    all: it is ended lost and killed, and its region goes, whether its shim lives (it removes
    its own as the job ends, and the daemon says nothing of it) or was killed (the daemon
    removes it, by the name its table keeps, never reading the shim's record in that folder).
    Before, the daemon said the region was left in either case (it read the record there,
    refused), and where the shim had died it was left in /tmp for good."""
    lib = tmp_path / "libvgpu.so"
    lib.write_bytes(b"")
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state), "--hami-core-lib", str(lib))
    go = tmp_path / "go"
    job_dir = os.path.join(str(state), "jobs", "j1")
    program = ("import os, time\nprint(os.path.dirname(os.environ["
               "'CUDA_DEVICE_MEMORY_SHARED_CACHE']), flush=True)\nwhile not os.path.exists(%r):"
               "\n    time.sleep(0.05)\nos.chmod(%r, 0o777)\ntime.sleep(600)" % (str(go), job_dir))
    job = agent.call("job.launch", key="k-region", gpu=0, memory_mib=1000,
                     argv=["/usr/bin/python3", "-c", program])
    assert "hami" in job["caps"], job["caps"]
    region = wait_until(lambda: next((line for line in agent.call(
        "job.logs", job=job["id"])["lines"] if line.startswith("/tmp/")), None),
                        "the job to say its region")
    assert os.path.isdir(region)
    with open(os.path.join(job_dir, "shim.claim")) as f:
        shim_pid = int(f.read())
    try:
        if shim == "killed":
            os.kill(shim_pid, signal.SIGKILL)
            wait_until(lambda: not alive(shim_pid), "the shim to die")
        go.touch()
        ended = wait_job(agent, job["id"])
        assert ended["state"] == "lost" and "leaves it unread" in ended["reason"], ended
        wait_until(lambda: not os.path.lexists(region), "the removal of %s" % region)
        wait_until(lambda: not alive(shim_pid), "the shim's end")
        removed = "job j1: removed its HAMi-core region %s, which its shim had not (its " \
            "folder is left unread, where its shim's lock is)" % region
        if shim == "killed":  # (said once its rm has ended, which may be after the check above)
            wait_until(lambda: removed in (state / "daemon.log").read_text(), removed)
        with open(os.path.join(str(state), "daemon.log")) as f:
            said = f.read()
        assert "HAMi-core region is left" not in said, said
        assert (removed in said) == (shim == "killed"), said
    finally:
        subprocess.run(["rm", "-rf", region], check=False)
