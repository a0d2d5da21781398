"""A launch on a state disk with a little room left, at each amount of room a launch's writes
can run out at (a real tmpfs): whatever it answers, once there is room the same key runs the
job exactly once, and the agent never leaves it starting with nothing following it."""

from __future__ import annotations

import os
import subprocess

import pytest

from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError
from tests.test_job_supervision import (cut_the_wal, fill, gpus_on_a_disk_of_their_own,
                                        log_on_a_disk_of_its_own, wait_until)
from tests.test_jobs import until_file, wait_job

PAGE = 4096
QUICK = (0, 7, 12)  # room for nothing, for the job's record but not its start, for all of it


@pytest.mark.parametrize("pages", [p if p in QUICK else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(16)])
def test_a_launch_that_runs_out_of_room_anywhere_runs_once_when_there_is_room(
        small_fs, start_agent, tmp_path, pages):
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)
    agent.call("job.launch", key="k-warm", gpu=0, memory_mib=10, argv=until_file(
        tmp_path / "never", 0))  # the table and the jobs dir made, as on a host in use
    release, runs = tmp_path / "release", tmp_path / "runs"
    argv = until_file(release, 0)
    argv[-1] = "open(%r, 'a').write('ran\\n')\n" % str(runs) + argv[-1]
    launch = dict(key="k-full", gpu=0, memory_mib=10, argv=argv)
    filler = small_fs / "filler"
    fill(filler)
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))
    try:
        first = agent.call("job.launch", **launch)
    except AgentError as err:
        assert err.code == rpc.HOST_FAILED, err
        first = None
    if first is not None and first["state"] == "starting":
        # neither its shim's claim nor the daemon's fence fitted: said, and answered at once,
        # not after the wait for a start still under way
        said = (small_fs / "state" / "daemon.log").read_text()
        assert "its shim ended without claiming it" in said, said
        assert "still starting" not in said, said
        filler.unlink()  # room: the watchdog ends it as never started, saying why
        ended = out_of_starting(agent, first["id"], "the watchdog to end the start")
        assert ended["state"] == "exited" and ended["reason"].startswith(
            "never started: its shim could not claim the job (a full disk?), so nothing ran "
            "(see ") and ended["reason"].endswith(
                "/shim.log); launching the same key again starts it"), ended
    else:
        filler.unlink()
    job = agent.call("job.launch", **launch)
    assert first is None or job["id"] == first["id"]
    job = out_of_starting(agent, job["id"], "the job to leave starting")
    assert job["state"] == "running", job
    release.touch()
    done = wait_job(agent, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 0), done
    assert runs.read_text() == "ran\n"


def out_of_starting(agent, job_id: str, what: str) -> dict:
    """The job as the agent has it once it is no longer starting (``what``: what that waits
    for)."""
    return wait_until(lambda: (lambda j: j if j["state"] != "starting" else None)(
        agent.call("job.get", job=job_id)), what, 30)


def test_a_request_that_fails_at_each_call_on_a_full_disk_is_logged_once_and_once_mended(
        small_fs, start_agent, tmp_path):
    """A launch and a stop asked three times each while the job table takes no write (a real
    full tmpfs, its WAL cut first; the daemon's log on a disk of its own): each call answers
    HOST_FAILED, and the log says each method's failure once, without a traceback, and once
    more when it is carried out again, with how many calls failed. Before, each call logged
    its traceback: a scheduler that retries each pass wrote some 30 lines a pass."""
    state = small_fs / "state"
    with gpus_on_a_disk_of_their_own(state), log_on_a_disk_of_its_own(state, tmp_path) as log:
        agent = start_agent("1xL4", str(state))
        argv = until_file(tmp_path / "release", 0)
        job = agent.call("job.launch", key="k-up", gpu=0, memory_mib=10, argv=argv)
        cut_the_wal(state)
        fill(small_fs / "filler")
        for _ in range(3):
            for method, params in (("job.launch", dict(key="k-full", gpu=0, memory_mib=10,
                                                       argv=argv)),
                                   ("job.stop", dict(job=job["id"], grace=5))):
                with pytest.raises(AgentError) as refused:
                    agent.call(method, **params)
                assert refused.value.code == rpc.HOST_FAILED
        (small_fs / "filler").unlink()
        agent.call("job.launch", key="k-full", gpu=0, memory_mib=10, argv=argv)
        agent.call("job.stop", job=job["id"], grace=5)
        said = log.read_text().splitlines()
    table = "the job table %s: database or disk is full (its filesystem has no room left)" % (
        state / "jobs.db")
    for method in ("job.launch", "job.stop"):
        failed = [line for line in said if "method %s failed" % method in line]
        assert len(failed) == 1 and failed[0].endswith(
            "WARNING method %s failed: StoreError: %s; said once until it is carried out "
            "again" % (method, table)), failed
        mended = [line for line in said if "method %s is carried out again" % method in line]
        assert len(mended) == 1 and mended[0].endswith("after 3 failed calls"), mended
    assert not [line for line in said if "Traceback" in line]


def test_a_launch_failing_on_a_new_job_directory_at_each_call_is_logged_once(
        small_fs, start_agent, tmp_path):
    """A launch asked three times while the state disk has no inode left (a real tmpfs, its
    inodes cut to those in use): each try is a new job whose directory cannot be made, so each
    answer names another directory; the log says the launch's failure once, and once more
    when it is carried out again. Before, the words of each call differed by the directory
    they named, and each call was logged as a new failure: a line a pass of the scheduler's."""
    state = small_fs / "state"
    with gpus_on_a_disk_of_their_own(state), log_on_a_disk_of_its_own(state, tmp_path) as log:
        agent = start_agent("1xL4", str(state))
        argv = until_file(tmp_path / "release", 0)
        agent.call("job.launch", key="k-up", gpu=0, memory_mib=10, argv=argv)
        disk = os.statvfs(small_fs)
        inodes(small_fs, disk.f_files - disk.f_ffree)  # none left
        refused = []
        for _ in range(3):
            with pytest.raises(AgentError) as err:
                agent.call("job.launch", key="k-full", gpu=0, memory_mib=10, argv=argv)
            assert err.value.code == rpc.HOST_FAILED and "No space left" in err.value.message
            refused.append(err.value.message)
        inodes(small_fs, disk.f_files)
        agent.call("job.launch", key="k-full", gpu=0, memory_mib=10, argv=argv)
        said = log.read_text().splitlines()
    assert len(set(refused)) == 3, refused  # (each names its own job's directory)
    failed = [line for line in said if "method job.launch failed" in line]
    assert len(failed) == 1 and "OSError: [Errno 28] No space left on device: " in failed[0], \
        failed
    mended = [line for line in said if "method job.launch is carried out again" in line]
    assert len(mended) == 1 and mended[0].endswith("after 3 failed calls"), mended


def inodes(mount, count: int) -> None:
    """The tmpfs at ``mount`` remounted to hold at most ``count`` files and directories."""
    subprocess.run(["mount", "-o", "remount,nr_inodes=%d" % count, str(mount)], check=True)
