"""A job's HAMi-core region removed by two at once: after a daemon's restart the daemon (it
knows no shim of its own for the job) and the job's shim, which still lives, both remove it
as the job ends. Only the one whose removal took it says it removed it; a failure is still
said, and what a failed or cut removal left is found by the next removal (the daemon's, once
the shim has ended) under the region's own name."""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

from remote_agent.jobs.region import new_region, remove_region
from tests.conftest import REPO
from tests.test_job_supervision import wait_until

REMOVE = "import sys\nfrom remote_agent.jobs.region import remove_region\n" \
    "print(remove_region(sys.argv[1], 0))"


@pytest.fixture
def region() -> Iterator[str]:
    """A region made as a job's child makes it, of this process's user, with HAMi-core's
    file in it; whatever is left of it removed after."""
    made = new_region()
    os.mkdir(made, 0o700)
    open(os.path.join(made, "cudevshr.cache"), "w").close()
    yield made
    for path in glob.glob(made + "*"):
        shutil.rmtree(path, ignore_errors=True)


def held_rm(tmp_path: Path) -> Path:
    """A folder for PATH with an ``rm`` that says it started (its pid, in ``started``) and
    then waits (as one held up by a user's FUSE mount or a large tree), running the real rm
    once ``release`` is made."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "rm").write_text(
        "#!/bin/sh\necho $$ > %s\nwhile [ ! -e %s ]; do sleep 0.05; done\nexec %s \"$@\"\n" % (
            tmp_path / "started", tmp_path / "release", shutil.which("rm")))
    (folder / "rm").chmod(0o755)
    return folder


def removal(region: str, path: str) -> subprocess.Popen:
    """``remove_region`` of ``region`` in a process of its own (as a shim's), with ``path``
    for PATH: it prints its answer."""
    return subprocess.Popen([sys.executable, "-c", REMOVE, region], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO, PATH=path))


def test_a_region_whose_removal_failed_is_removed_by_the_next(region, monkeypatch):
    """The shim's removal fails (here: rm not on its PATH; likewise a timeout, or what its
    user put there that it cannot remove): what is left keeps the region's name, and the
    daemon's removal, once the shim has ended, removes it and says so. Before, the shim's
    removal had renamed it to a name of its own first: the daemon's found nothing at the
    region's name and said nothing, and the rest stayed in /tmp for good."""
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OSError, match="rm is not installed, or not on the agent's PATH "
                       r"\(/nonexistent\); it is left$"):
        remove_region(region, os.geteuid())
    assert glob.glob(region + "*") == [region]
    monkeypatch.setenv("PATH", path)
    assert remove_region(region, os.geteuid()) is True  # the daemon's
    assert glob.glob(region + "*") == []


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_region_whose_remover_was_killed_in_its_removal_is_removed_by_the_next(
        region, tmp_path, how):
    """The shim is killed (the OOM killer, an admin) while its removal's rm runs: its lock
    goes with it, what is left keeps the region's name, and the daemon's removal, once the
    shim has ended, removes it and says so (before: it found nothing at the name the shim
    had renamed, said nothing, and the rest stayed)."""
    shim = removal(region, "%s:%s" % (held_rm(tmp_path), os.environ["PATH"]))
    rm = int(wait_until(lambda: (tmp_path / "started").exists() and
                        (tmp_path / "started").read_text().strip(), "the shim's rm to run"))
    try:
        shim.send_signal(how)
        assert shim.wait() == -how
        assert remove_region(region, os.geteuid()) is True  # the daemon's
        assert glob.glob(region + "*") == []
    finally:
        os.kill(rm, signal.SIGKILL)  # (the shim's rm, which outlived it)
        shim.stdout.close()


def test_a_removal_waits_for_anothers_and_only_the_one_that_removed_it_says_so(
        region, tmp_path, monkeypatch):
    """A removal (the shim's, which still lives after a daemon's restart) holds the region
    while its rm runs; the daemon's, meanwhile, waits for it to end and finds it gone: it
    says nothing. Where the two ran at once, each rm -rf exited 0 and both said they had
    removed it."""
    shim = removal(region, "%s:%s" % (held_rm(tmp_path), os.environ["PATH"]))
    wait_until(lambda: (tmp_path / "started").exists(), "the shim's rm to run")
    flock, refused = fcntl.flock, []

    def counted(fd, how):
        try:
            flock(fd, how)
        except BlockingIOError:
            refused.append(fd)
            raise

    monkeypatch.setattr(fcntl, "flock", counted)
    answers: List[bool] = []
    daemon = threading.Thread(target=lambda: answers.append(remove_region(region, 0)))
    daemon.start()
    wait_until(lambda: refused, "the daemon's removal to find the shim's lock held")
    (tmp_path / "release").touch()
    daemon.join()
    assert shim.communicate()[0] == "True\n" and answers == [False]
    assert glob.glob(region + "*") == []


def test_a_region_on_a_filesystem_with_no_locks_is_removed(region, monkeypatch):
    """Where flock is refused (ENOLCK: /tmp on NFS with no lock manager) the region is still
    removed, unlocked."""
    def refused(fd, how):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refused)
    assert remove_region(region, os.geteuid()) is True
    assert glob.glob(region + "*") == []


def test_a_region_the_other_removed_once_this_removal_found_it_is_no_removal_of_this_ones(
        monkeypatch):
    """The second removal (another process, as a shim that still lives) removes the region
    whole just after the first found it there (its lstat): the first answers False, as one
    that found it gone. Before, its ``rm -rf`` of the gone path exited 0 and it answered True
    too: the daemon logged that it removed a region the shim had removed."""
    region = new_region()
    os.mkdir(region, 0o700)
    open(os.path.join(region, "cudevshr.cache"), "w").close()
    lstat = os.lstat
    other: List[str] = []

    def found_then_removed_by_another(path, *args, **kwargs):
        st = lstat(path, *args, **kwargs)
        if path == region and not other:
            other.append(subprocess.run([sys.executable, "-c", REMOVE, region], cwd=REPO,
                                        capture_output=True, text=True, check=True,
                                        env=dict(os.environ, PYTHONPATH=REPO)).stdout)
        return st

    monkeypatch.setattr(os, "lstat", found_then_removed_by_another)
    try:
        assert remove_region(region, 0) is False
    finally:
        shutil.rmtree(region, ignore_errors=True)
    assert other == ["True\n"] and not os.path.lexists(region)


def test_a_region_not_all_removed_is_still_said(plain_user):
    """A removal that fails with the region still there (its user cannot remove what root
    put in it) is said, as it was."""
    name, home = plain_user
    uid = os.stat(home).st_uid
    region = new_region()
    os.mkdir(region, 0o700)
    os.chown(region, uid, uid)
    os.mkdir(os.path.join(region, "roots"), 0o755)
    open(os.path.join(region, "roots", "kept"), "w").close()
    try:
        with pytest.raises(OSError, match="%s was not all removed, as uid %d: rm: cannot remove"
                           ".*; it is left$" % (region, uid)):
            remove_region(region, uid)
        assert glob.glob(region + "*") == [region]
        assert os.path.exists(os.path.join(region, "roots", "kept"))
    finally:
        for path in glob.glob(region + "*"):
            shutil.rmtree(path, ignore_errors=True)
