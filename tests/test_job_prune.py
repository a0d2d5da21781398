"""The prune of ended jobs' folders under ``jobs/``: an entry that cannot be removed (a job,
running as the agent's user, swapped a directory back in place of its symlink between the
prune's look and its unlink; made a file in its folder as it was removed) costs that entry
alone, said once with why and tried again at the next prune, and every other folder of the
batch is removed. Before, the unlink's IsADirectoryError ended the prune there, and the
rest of the batch stayed for good (their records were deleted first), as did a folder whose
removal failed silently (``rmtree``'s errors ignored). Jobs and their folders are real; the
race is made at the point between the look and the removal by a hook."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import time

import pytest

from remote_agent.jobs.watch import Watchdog
from tests import test_launch_concurrency
from tests.test_agent_security import agent_in_home, as_home_user
from tests.test_job_supervision import wait_until
from tests.test_launch_concurrency import launch_request

AGENT_LOG = "remote_agent.jobs"
in_process = test_launch_concurrency.in_process  # the daemon's parts in this process (a fixture)


def _ended_jobs(sup, count: int):
    """``count`` real jobs run to their end, watched by real watchdog passes."""
    jobs = [sup.launch(launch_request(key="k-%d" % n, gpu=0, memory_mib=10,
                                      argv=["true"])) for n in range(count)]
    watchdog = Watchdog(sup)

    def ended() -> bool:
        watchdog.tick()
        return all(sup.store.get(job.id).state == "exited" for job in jobs)

    wait_until(ended, "the jobs' ends")
    return jobs


def _swap_dir_back(path: str, real):
    """An ``os.unlink`` that, at its first call for ``path``'s name, puts a directory back
    where the symlink was: a job's own move, between the prune's look and its unlink."""
    swapped = []

    def unlink(name, *args, **kwargs):
        if os.path.basename(name) == os.path.basename(path) and not swapped \
                and os.path.islink(path):
            real(path)
            os.mkdir(path, 0o700)
            swapped.append(path)
        return real(name, *args, **kwargs)

    return unlink, swapped


def _file_made_as_removed(path: str, real):
    """An ``os.rmdir`` that, at its first call for ``path``'s name, makes a file in it first:
    a job's process writing in its folder as the prune empties it."""
    made = []

    def rmdir(name, *args, **kwargs):
        if os.path.basename(name) == os.path.basename(path) and not made:
            with open(os.path.join(path, "late"), "w") as f:
                f.write("late")
            made.append(path)
        return real(name, *args, **kwargs)

    return rmdir, made


def _said_of(caplog, path: str):
    """What the prune said of ``path`` (not of a name it begins: ``j1.moved``)."""
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("prune: %s " % path)]


@pytest.mark.parametrize("mischief,call,reason", [
    ("a directory swapped back in place of its symlink", "unlink", "Is a directory"),
    ("a file made in it as it is removed", "rmdir", "Directory not empty"),
])
def test_an_entry_that_cannot_be_pruned_costs_that_entry_alone(
        in_process, tmp_path, monkeypatch, caplog, mischief, call, reason):
    sup, _ = in_process("1xL4")
    first, *rest = _ended_jobs(sup, 3)
    running = sup.launch(launch_request(key="k-running", gpu=0, memory_mib=10,
                                        argv=["sleep", "600"]))
    jobs_dir = sup.paths.jobs_dir
    left = os.path.join(jobs_dir, "j%d" % first.id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "kept").write_text("kept")
    if call == "unlink":  # the job put a symlink in its folder's place
        os.rename(left, left + ".moved")
        os.symlink(str(elsewhere), left)
        hook, done = _swap_dir_back(left, os.unlink)
    else:
        hook, done = _file_made_as_removed(left, os.rmdir)
    monkeypatch.setattr(os, call, hook)
    caplog.set_level(logging.INFO, logger=AGENT_LOG)

    assert sup.prune(time.time() + 1) == 3
    assert done == [left]  # (the race was made)
    for job in rest:  # the rest of the batch is removed
        assert not os.path.lexists(os.path.join(jobs_dir, "j%d" % job.id)), mischief
    assert os.path.isdir(left) and os.path.isdir(os.path.join(jobs_dir, "j%d" % running.id))
    assert (elsewhere / "kept").read_text() == "kept" and os.listdir(str(elsewhere)) == ["kept"]
    said = _said_of(caplog, left)
    assert said == ["prune: %s is left, and tried again at the next prune: %s: %s"
                    % (left, left, reason)], said

    monkeypatch.undo()
    sup.prune(time.time() + 1)  # tried again, removed, and said so
    assert not os.path.lexists(left)
    assert os.path.isdir(os.path.join(jobs_dir, "j%d" % running.id))
    assert sup.store.get(running.id).state == "running"
    assert _said_of(caplog, left)[1:] == [
        "prune: %s is removed after 1 failed pass" % left]
    sup.stop(running, "the test is done", 0.0)


def test_a_folder_set_aside_is_removed_once_as_old_as_an_ended_jobs(
        in_process, caplog):
    """A name in ``jobs/`` that is no job's folder (``j1.away``: a job renamed its folder
    aside; ``j01``) is never read, so nothing of the agent's is lost with it, and only the
    agent's user put it there: kept, nothing ever removed it. It goes at a prune once it has
    not changed for as long as an ended job's folder is kept (the prune's cutoff), never
    followed where it is a symlink."""
    sup, _ = in_process("1xL4")
    (job,) = _ended_jobs(sup, 1)
    jobs_dir = sup.paths.jobs_dir
    aside = os.path.join(jobs_dir, "j%d.away" % job.id)
    os.rename(os.path.join(jobs_dir, "j%d" % job.id), aside)
    os.mkdir(os.path.join(aside, "deeper"))
    odd_link = os.path.join(jobs_dir, "j01")
    os.symlink(jobs_dir, odd_link)  # followed, it would take jobs/ whole
    caplog.set_level(logging.INFO, logger=AGENT_LOG)

    sup.prune(time.time() - 3600)  # changed since the cutoff: kept
    assert os.path.isdir(aside) and os.path.islink(odd_link)
    sup.prune(time.time() + 1)
    assert not os.path.lexists(aside) and not os.path.lexists(odd_link)
    assert os.path.isdir(jobs_dir)
    assert sup.store.get(job.id) is None
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prune: ")]
    assert said == ["prune: %s, named as no job's folder (a job set it aside), is removed, "
                    "unchanged for as long as an ended job's folder is kept" % path
                    for path in (odd_link, aside)], said


def test_a_folder_nested_deeper_than_the_stack_goes_in_one_prune(in_process, caplog):
    """A job nests folders in its own 3,000 deep (a file at the bottom): the prune removes them
    all, never more than a few open at once. Before, the removal recursed a level a frame
    (``rmtree``), and its RecursionError ended the prune at every try, that folder and the
    rest of the batch left for good."""
    sup, _ = in_process("1xL4")
    deep, _ = _ended_jobs(sup, 2)
    jobs_dir = sup.paths.jobs_dir
    fd = os.open(os.path.join(jobs_dir, "j%d" % deep.id), os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("d", 0o700, dir_fd=fd)
        fd, above = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(above)
    os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    os.close(fd)
    caplog.set_level(logging.INFO, logger=AGENT_LOG)
    try:
        assert sup.prune(time.time() + 1) == 2
        assert os.listdir(jobs_dir) == []
        assert [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("prune: ")] == []
    finally:  # (left, it would end pytest's own removal of its temporary folders so)
        subprocess.run(["rm", "-rf", jobs_dir], check=True)


PRUNE_AS_USER = """import json, sys
sys.path.insert(0, sys.argv[1])
from remote_agent.jobs import pruning
print(json.dumps(pruning.remove_entry(sys.argv[2], "j1")))
"""


def test_a_folder_a_job_made_unreadable_is_pruned_by_an_agent_not_run_as_root(
        plain_user, tmp_path):
    """An agent run as a plain user (as in many fleets) prunes a job's folder in which its job
    (that user) took every bit away from folders of its own (``chmod 000``, and one it may
    read but not write nor enter): its owner's bits are given back, through a descriptor of
    each, and all of it goes. A link there to a folder of the user's own elsewhere, also
    made 000, is removed, never followed (that folder keeps its mode), and a folder of another
    user's (root's) in it is left as it is, its mode untouched, said. Before, each 000 folder
    was refused (EACCES) at every prune, said and left for good."""
    name, home = plain_user
    info = os.stat(home)
    archive = agent_in_home(home)
    jobs = os.path.join(home, "jobs")
    folder = os.path.join(jobs, "j1")
    elsewhere = os.path.join(home, "elsewhere")
    for path in (jobs, folder, os.path.join(folder, "locked"),
                 os.path.join(folder, "locked", "deeper"), os.path.join(folder, "no-write"),
                 elsewhere):
        os.mkdir(path, 0o700)
    for path in (os.path.join(folder, "locked", "deeper", "out"),
                 os.path.join(folder, "no-write", "out"), os.path.join(elsewhere, "kept")):
        with open(path, "w") as f:
            f.write("x")
    os.symlink(elsewhere, os.path.join(folder, "link"))
    subprocess.run(["chown", "-R", "--no-dereference", "%d:%d" % (info.st_uid, info.st_gid),
                    jobs, elsewhere], check=True)
    theirs = os.path.join(folder, "roots")
    os.mkdir(theirs, 0o555)  # root's: the user may not remove what is in it
    with open(os.path.join(theirs, "file"), "w") as f:
        f.write("root's")
    os.chmod(os.path.join(folder, "locked", "deeper"), 0)
    os.chmod(os.path.join(folder, "locked"), 0)
    os.chmod(os.path.join(folder, "no-write"), 0o500)
    os.chmod(elsewhere, 0)

    def prune() -> str:
        done = subprocess.run(["/usr/bin/python3", "-c", PRUNE_AS_USER, archive, jobs],
                              capture_output=True, text=True, timeout=60, **as_home_user(home))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    why = prune()
    assert sorted(os.listdir(folder)) == ["roots"], why
    assert why == "%s: Permission denied; %s: Directory not empty; %s: Directory not empty" % (
        os.path.join(theirs, "file"), theirs, folder), why
    assert stat.S_IMODE(os.stat(theirs).st_mode) == 0o555 and os.stat(theirs).st_uid == 0
    assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0  # never followed
    os.chmod(elsewhere, 0o700)
    assert os.listdir(elsewhere) == ["kept"]
    shutil.rmtree(theirs)
    assert prune() is None and not os.path.lexists(folder)
