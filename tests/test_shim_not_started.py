"""A shim that cannot start its job (its spec damaged or refused, its output pipe refused, no
process to be had) records it as not started, saying why, as the daemon started it: before, each
ended it in a traceback, which the daemon reads as a job lost, whether it ran unknown, though
nothing ran. One that cannot even claim the job says why and leaves nothing claimed, so the
daemon fences the job off as never started. Each runs a real shim."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Tuple

import pytest

from remote_agent import text
from tests.conftest import REPO
from tests.test_shim_full_disk import _job_dir

DAMAGED = "cannot read its spec: %s is damaged ("


def _run_shim(job_dir: str, **popen: object) -> Tuple[subprocess.CompletedProcess, str]:
    """The shim, as the daemon starts it (its pipe to the daemon included), run to its end:
    how it ended, and what it told the daemon."""
    read, write = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-m", "remote_agent.jobs.shim", job_dir,
                               str(write)], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                              pass_fds=(write,), capture_output=True, timeout=60, **popen)
    finally:
        os.close(write)
    with open(read, "rb") as told:
        return done, told.read().decode()


def _ended_not_started(job_dir: str, ran: Path, **popen: object) -> str:
    """The shim run (``_run_shim``) and its job's end, which must say it was not started (as
    the shim told the daemon, and in its log): its words."""
    done, told = _run_shim(job_dir, **popen)
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert "Traceback" not in said
    error = json.loads((Path(job_dir) / "exit.json").read_text())["error"]
    assert json.loads(told) == {"error": error}
    assert (Path(job_dir) / "output.log").read_bytes().decode() == text.said(error) + "\n"
    assert not ran.exists()
    return error


def _spec(job_dir: str) -> dict:
    return json.loads((Path(job_dir) / "spec.json").read_text())


def _without(key: str):
    def change(spec: dict) -> bytes:
        del spec[key]
        return json.dumps(spec).encode()
    return change


def _user_without_uid(spec: dict) -> bytes:
    spec["user"] = {"name": "root", "gid": 0}
    return json.dumps(spec).encode()


@pytest.mark.parametrize("damage, why", [
    (lambda spec: json.dumps(spec).encode()[:20], "JSONDecodeError: "),
    (lambda spec: b"\xff" + json.dumps(spec).encode(), "UnicodeDecodeError: "),
    (lambda spec: b"[]", "TypeError: not an object but list)"),
    (_without("log_max_bytes"), "KeyError: 'log_max_bytes')"),
    (_without("argv"), "KeyError: 'argv')"),
    (lambda spec: json.dumps(dict(spec, argv=[])).encode(), "ValueError: argv is [])"),
    (_user_without_uid, "KeyError: 'uid')"),
], ids=["cut-short", "no-utf8", "no-object", "no-log-cap", "no-argv", "empty-argv", "no-uid"])
def test_a_damaged_spec_ends_the_job_not_started_saying_so(tmp_path, damage, why):
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    spec = os.path.join(job_dir, "spec.json")
    Path(spec).write_bytes(damage(_spec(job_dir)))
    error = _ended_not_started(job_dir, ran)
    assert error.startswith(DAMAGED % spec + why), error


def test_a_spec_that_is_not_there_ends_the_job_not_started_saying_so(tmp_path):
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    spec = os.path.join(job_dir, "spec.json")
    os.unlink(spec)
    assert _ended_not_started(job_dir, ran) == "cannot read its spec: %s is not there" % spec


def test_a_spec_swapped_for_a_symlink_is_refused_and_the_job_not_started(tmp_path):
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    spec = os.path.join(job_dir, "spec.json")
    os.rename(spec, tmp_path / "elsewhere.json")
    os.symlink(str(tmp_path / "elsewhere.json"), spec)
    assert _ended_not_started(job_dir, ran) == \
        "cannot read its spec: refusing job spec %s: it is a symlink" % spec


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_an_output_pipe_refused_ends_the_job_not_started(tmp_path, planted):
    """What the agent refuses where the job's output FIFO goes (a symlink, a regular file put
    there by a job of the agent's user): before, the refusal ended the shim in a traceback."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    pipe = os.path.join(job_dir, "output.pipe")
    if planted == "symlink":
        os.symlink(str(tmp_path / "elsewhere"), pipe)
    else:
        Path(pipe).write_bytes(b"")
    error = _ended_not_started(job_dir, ran)
    assert error == "cannot make its output pipe: refusing output pipe %s: %s" % (
        pipe, "it is a symlink" if planted == "symlink" else "not a FIFO: a regular file"), error
    assert not (tmp_path / "elsewhere").exists()


def _pids_cgroup() -> Optional[str]:
    """A folder of cgroups whose ``pids.max`` holds: cgroup v1's pids hierarchy, or v2's root
    where it hands the pids controller down; None where there is none."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup" and "pids" in fields[3].split(","):
                return fields[1]
            if fields[2] == "cgroup2" and "pids" in Path(
                    fields[1], "cgroup.subtree_control").read_text().split():
                return fields[1]
    return None


@pytest.mark.skipif(os.geteuid() != 0 or _pids_cgroup() is None,
                    reason="a cgroup of its own caps the shim's processes: needs root and pids")
def test_a_job_whose_process_cannot_be_made_ends_not_started(tmp_path):
    """The shim alone in a cgroup that takes no second process: its fork fails (EAGAIN), and
    the job ends not started, saying so. Before, a traceback."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    capped = os.path.join(_pids_cgroup() or "", "fractui-test-%d" % os.getpid())
    os.mkdir(capped)
    try:
        Path(capped, "pids.max").write_text("1")

        def join() -> None:
            Path(capped, "cgroup.procs").write_text(str(os.getpid()))

        error = _ended_not_started(job_dir, ran, preexec_fn=join)
    finally:
        os.rmdir(capped)
    assert error == "cannot start its process: [Errno 11] Resource temporarily unavailable"


@pytest.mark.parametrize("refused", ["lock-symlink", "folder-gone", "folder-symlink"])
def test_a_job_its_shim_cannot_claim_is_left_unclaimed_and_nothing_runs(tmp_path, refused):
    """Before the claim the job is not the shim's to record (another shim may hold it): it
    says why and leaves nothing claimed, and the daemon, finding it unclaimed, fences it off
    as never started. Before, the refusal of its lock, or a folder gone, ended it in a
    traceback."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    lock = os.path.join(job_dir, "shim.lock")
    if refused == "lock-symlink":
        os.symlink(str(tmp_path / "elsewhere"), lock)
        why = "refusing shim lock %s: it is a symlink" % lock
    elif refused == "folder-gone":
        shutil.rmtree(job_dir)
        why = "[Errno 2] No such file or directory: %r" % job_dir
    else:
        os.rename(job_dir, tmp_path / "moved")
        os.symlink(str(tmp_path / "moved"), job_dir)
        why = "refusing job directory %s: it is a symlink, not a directory" % job_dir
    done, told = _run_shim(job_dir)
    said = done.stderr.decode()
    assert done.returncode == 1, said
    assert "Traceback" not in said
    assert said == "shim: cannot claim the job (%s); nothing ran\n" % why
    assert told == ""
    assert not os.path.lexists(os.path.join(job_dir, "shim.claim"))
    assert not ran.exists()
    assert not (tmp_path / "elsewhere").exists()
