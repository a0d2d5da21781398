"""A job's HAMi-core region removed by two at once: after a daemon's restart the daemon (it
knows no shim of its own for the job) and the job's shim, which still lives, both remove it
as the job ends. The one whose removal fails once the other's took it says nothing; any other
failure is still said."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from remote_agent.jobs.region import new_region, remove_region
from tests.conftest import REPO
from tests.test_job_supervision import wait_until

REMOVE = "import sys\nfrom remote_agent.jobs.region import remove_region\n" \
    "print(remove_region(sys.argv[1], 0))"


@pytest.mark.skipif(shutil.which("strace") is None, reason="the first removal is held by strace")
def test_a_region_the_other_removed_as_this_removal_failed_is_no_error(tmp_path):
    """The first removal's rm is held (strace) at its open of the region, the second removes
    the region whole, then the held rm is killed and let go (its removal fails, rm exit -9):
    the first
    answers False, the region gone, as one that found it gone; it said "was not all removed,
    as uid 0: rm exit status -9" (the daemon's log: "its HAMi-core region is left")."""
    region = new_region()
    os.mkdir(region, 0o700)
    open(os.path.join(region, "cudevshr.cache"), "w").close()
    trace = tmp_path / "trace"
    first = subprocess.Popen(
        ["strace", "-f", "-qq", "-I1", "-e", "signal=none", "-e", "trace=openat", "-o", str(trace),
         "-P", region, "-e", "inject=openat:delay_enter=600s:when=1",
         sys.executable, "-c", REMOVE, region], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        held = 'openat(AT_FDCWD, "%s"' % region
        line = wait_until(lambda: trace.exists() and next((
            line for line in trace.read_text().splitlines() if held in line), None),
                          "the first rm to be held")
        assert remove_region(region, 0) is True and not os.path.lexists(region)
        os.kill(int(line.split()[0]), signal.SIGKILL)  # (pending until strace lets it go)
        first.terminate()  # strace leaves: the rm is killed, the removal goes on
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        shutil.rmtree(region, ignore_errors=True)
    assert (out, err) == ("False\n", ""), (out, err)


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
                           % (region, uid)):
            remove_region(region, uid)
        assert os.path.exists(os.path.join(region, "roots", "kept"))
    finally:
        shutil.rmtree(region, ignore_errors=True)
