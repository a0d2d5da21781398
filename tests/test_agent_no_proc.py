"""A host without /proc (a container or a chroot not given it): the agent finds its jobs'
processes, and a shim its job's output pipe, through /proc, so there it runs no job, and says
why, where before the daemon served on (every job it adopted would read as ended) and a
launch's shim ended in a traceback. Each runs in a mount namespace of its own whose /proc is
an empty tmpfs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_shim_full_disk import _job_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="an empty /proc is mounted in a namespace: needs root")

MISSING = "/proc is not mounted here (no /proc/self/fd)"


def _without_proc(argv: list, **run: object) -> subprocess.CompletedProcess:
    """``argv`` run where /proc is an empty folder (no user string goes through the shell:
    the command follows as its arguments)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount -t tmpfs none /proc && exec "$@"', "sh", *argv],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, timeout=60, **run)


def test_a_daemon_without_proc_does_not_start_and_says_why(tmp_path):
    state = str(tmp_path / "state")
    done = _without_proc([sys.executable, "-m", "remote_agent", "serve", "--stdio",
                          "--state-dir", state, "--sim", "1xL4"],
                         input=b'{"jsonrpc": "2.0", "id": 1, "method": "hello"}\n')
    said = done.stderr.decode()
    assert done.returncode == 2, said
    assert "remote_agent: %s" % MISSING in said
    assert "mount -t proc proc /proc" in said
    assert "Traceback" not in said
    assert done.stdout == b""


def test_a_shim_without_proc_records_why_its_job_did_not_start(tmp_path):
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    done = _without_proc([sys.executable, "-m", "remote_agent.jobs.shim", job_dir])
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert "Traceback" not in said
    end = json.loads(open(os.path.join(job_dir, "exit.json")).read())
    assert end["error"].startswith("cannot open its output pipe: %s" % MISSING), end
    assert end["fault"] == "host"  # nothing ran: another host may start it
    assert not ran.exists()
