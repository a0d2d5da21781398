"""A state dir wiped by hand (or lost) while a job runs: the next daemon numbers its jobs from
j1 again, so a new job gets the folder name of the old one. The old job's shim, still running,
must never write into the new job's folder: not its end, not its output."""

from __future__ import annotations

import json
import os
import shutil
import signal

from tests.test_job_supervision import job_dir, read_log, wait_until
from tests.test_jobs import alive, daemon_pid, script, wait_job


def _says_then_waits(line: str, release, code: int, at_end: bool = False) -> list:
    """A job that prints ``line`` (at its start, or ``at_end``), runs until ``release``
    exists, then exits with ``code``."""
    say = "print(%r, flush=True)\n" % line
    return script("import os, sys, time\n%swhile not os.path.exists(%r):\n    time.sleep(0.05)"
                  "\n%ssys.exit(%d)" % ("" if at_end else say, str(release),
                                        say if at_end else "", code))


def test_a_shim_of_a_wiped_state_dir_never_writes_into_a_new_job_of_its_id(start_agent,
                                                                             tmp_path):
    state = str(tmp_path / "host")
    release_old, release_new = tmp_path / "release-old", tmp_path / "release-new"
    agent = start_agent("1xL4", state)
    old = agent.call("job.launch", key="k-old", gpu=0, memory_mib=10,
                     argv=_says_then_waits("the old job ends", release_old, 3, at_end=True))
    folder = job_dir(state, old["id"])
    wait_until(lambda: os.path.exists(os.path.join(folder, "started.json")), "the old job")
    with open(os.path.join(folder, "shim.claim")) as f:
        old_shim = int(f.read())
    said = open(os.path.join(folder, "shim.log"))  # kept open: its folder is about to go
    try:
        os.kill(daemon_pid(agent), signal.SIGKILL)
        agent.proc.wait(timeout=10)
        shutil.rmtree(state)  # wiped by hand: its job table, every job's folder

        agent = start_agent("1xL4", state)
        new = agent.call("job.launch", key="k-new", gpu=0, memory_mib=10,
                         argv=_says_then_waits("the new job runs", release_new, 0))
        assert new["id"] == old["id"]  # the same folder name, a new job
        wait_until(lambda: "the new job runs" in read_log(state, new["id"]), "the new job")
        release_old.touch()
        wait_until(lambda: not alive(old_shim), "the old job's shim to end")

        assert not os.path.exists(os.path.join(folder, "exit.json"))
        assert read_log(state, new["id"]) == "the new job runs\n"
        assert agent.call("job.get", job=new["id"])["state"] == "running"
        release_new.touch()
        done = wait_job(agent, new["id"])
        assert (done["state"], done["exit_code"]) == ("exited", 0)
        words = said.read()
    finally:
        said.close()
    assert ("cannot write %s: its folder is gone (removed since this shim started the job; a "
            "folder of that name now is another job's), so nothing is written" %
            os.path.join(folder, "exit.json")) in words, words
    assert not [name for name in os.listdir(folder) if ".tmp." in name]
    assert json.loads(open(os.path.join(folder, "started.json")).read())["pid"] == new["pid"]
