"""A file fractui writes whole on the admin's machine, on a disk with a little room left, at
each amount of room its write can run out at (a real 2 MiB tmpfs, filled to leave so many
pages): ``fractui agent-archive DIR`` over an image's older agent.pyz. It is written whole, or
refused saying where and why with the old file left as it was, nothing half-written beside
it; with room, it is written. (``fractui trust`` on a full disk: tests/test_fleet_hostkeys.py;
the TUI's screenshot: tests/test_tui_pilot.py; the store: tests/test_store_full_sweep.py.)"""

from __future__ import annotations

import os

import pytest

from tests import test_store_damage
from tests.cli_run import leaks, subprocess_run
from tests.test_job_supervision import fill

PAGE = 4096
QUICK = (0, 96)  # no room; room for the archive (some 270 KB)
small_fs = test_store_damage.small_fs  # (2 MiB)


@pytest.mark.parametrize("pages", [p if p in QUICK else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(0, 97, 8)])
def test_an_agent_archive_with_too_little_room_leaves_the_old_one_whole(small_fs, pages):
    old = small_fs / "agent.pyz"
    old.write_bytes(b"an older agent\n" * 1000)
    filler = small_fs / "filler"
    fill(filler)
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))
    done = subprocess_run(["agent-archive", str(small_fs)])
    assert not leaks(done.stderr), done
    if done.returncode == 0:
        assert done.stdout.startswith("%s  sha256 " % old), done
        assert old.read_bytes().startswith(b"PK"), "not the zipapp"
    else:
        assert (done.returncode, done.stdout, done.stderr) == (
            1, "", "fractui: cannot write the agent archive into %s: No space left on "
            "device\n" % small_fs)
        assert old.read_bytes() == b"an older agent\n" * 1000
    assert sorted(os.listdir(small_fs)) == ["agent.pyz", "filler"]  # no part left beside it
    filler.unlink()
    again = subprocess_run(["agent-archive", str(small_fs)])
    assert again.returncode == 0 and old.read_bytes().startswith(b"PK"), again
