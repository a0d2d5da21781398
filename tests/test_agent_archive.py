"""``fractui agent-archive DIR``: the zipapp an image carries, written as the user runs it."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from fractui.fleet.zipapp import build_agent_archive
from remote_agent import __version__
from tests.cli_run import leaks, subprocess_run


def test_writes_the_agent_as_dir_agent_pyz_and_it_runs(tmp_path):
    out = tmp_path / "build" / "ctx"  # created, parents too
    done = subprocess_run(["agent-archive", str(out)])
    assert done.returncode == 0, done.stderr
    path = out / "agent.pyz"
    data = path.read_bytes()
    archive = build_agent_archive()
    assert data == archive.data  # the same reproducible bytes fractui uploads over SSH
    digest = hashlib.sha256(data).hexdigest()
    assert done.stdout == "%s  sha256 %s (%s)\n" % (path, digest, archive.name)
    assert [p.name for p in out.iterdir()] == ["agent.pyz"]  # no temporary file left
    ran = subprocess.run([sys.executable, str(path), "--version"], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == (0, __version__)


def test_a_dir_that_cannot_be_written_is_exit_1_with_the_reason(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess_run(["agent-archive", str(blocker)])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "fractui: cannot write the agent archive into %s: File exists\n" % (
        blocker)
    assert not leaks(done.stderr)


def test_without_dir_is_a_usage_error():
    done = subprocess_run(["agent-archive"])
    assert done.returncode == 2
    assert "DIR" in done.stderr and not leaks(done.stderr)
