"""A job's HAMi-core region removed by two at once: after a daemon's restart the daemon (it
knows no shim of its own for the job) and the job's shim, which still lives, both remove it
as the job ends. Only the one whose removal took it says it removed it; a failure is still
said, with where what is left is."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from typing import List

import pytest

from remote_agent.jobs.region import new_region, remove_region
from tests.conftest import REPO

REMOVE = "import sys\nfrom remote_agent.jobs.region import remove_region\n" \
    "print(remove_region(sys.argv[1], 0))"


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
                           % (region, uid)) as said:
            remove_region(region, uid)
        left = str(said.value).rsplit("; what is left is ", 1)[1]
        assert left.startswith(region + ".") and not os.path.lexists(region)
        assert os.path.exists(os.path.join(left, "roots", "kept"))
    finally:
        for path in glob.glob(region + "*"):
            shutil.rmtree(path, ignore_errors=True)
