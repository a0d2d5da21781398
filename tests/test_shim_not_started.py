"""A shim that cannot start its job (its spec damaged or refused, its output pipe refused, no
process to be had) records it as not started, saying why, as the daemon started it: before, each
ended it in a traceback, which the daemon reads as a job lost, whether it ran unknown, though
nothing ran. One that cannot even claim the job says why and leaves nothing claimed, so the
daemon fences the job off as never started. Each runs a real shim."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple

import pytest

from remote_agent import text
from remote_agent.jobs.shim import fault_of
from remote_agent.rpc.jsonrpc import HOST, JOB
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import REPO, AgentError
from tests.test_shim_full_disk import _job_dir

DAMAGED = "cannot read its spec: %s is damaged ("
FORK_REFUSED = "cannot start its process: [Errno 11] Resource temporarily unavailable"


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


def _ended_not_started(job_dir: str, ran: Path, fault: str = HOST, **popen: object) -> str:
    """The shim run (``_run_shim``) and its job's end, which must say it was not started and
    that it was ``fault``'s fault (as the shim told the daemon, and, its words, in its log):
    its words."""
    done, told = _run_shim(job_dir, **popen)
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert "Traceback" not in said
    end = json.loads((Path(job_dir) / "exit.json").read_text())
    error = end["error"]
    assert (end["fault"], json.loads(told)) == (fault, {"error": error, "fault": fault})
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


NO_PIDS_CGROUP = pytest.mark.skipif(
    os.geteuid() != 0 or _pids_cgroup() is None,
    reason="a cgroup of its own caps the shim's processes: needs root and pids")


@contextmanager
def pids_capped(most: int, *pids: int) -> Iterator[str]:
    """A cgroup of its own (its folder) that takes ``most`` processes and threads: ``pids``
    moved into it (each with all its threads; ``most`` counts from what they hold), moved
    back to the pids root as it ends, and it removed."""
    root = _pids_cgroup() or ""
    capped = os.path.join(root, "fractui-test-%d" % os.getpid())
    os.mkdir(capped)
    try:
        for pid in pids:
            Path(capped, "cgroup.procs").write_text(str(pid))
        held = int(Path(capped, "pids.current").read_text())
        Path(capped, "pids.max").write_text(str(held + most))
        yield capped
    finally:
        # again until none is left: a process of it may fork as the others are moved out (the
        # cap lifted by then), its child in the cgroup after the list was read (seen: rmdir
        # EBUSY, and the next test's mkdir finding the folder)
        for _ in range(1000):
            left = Path(capped, "cgroup.procs").read_text().split()
            if not left:
                break
            for pid in left:
                try:
                    Path(root, "cgroup.procs").write_text(pid)
                except ProcessLookupError:
                    pass  # ended meanwhile
        os.rmdir(capped)


@NO_PIDS_CGROUP
def test_a_job_whose_process_cannot_be_made_ends_not_started(tmp_path):
    """The shim alone in a cgroup that takes no second process: its fork fails (EAGAIN), and
    the job ends not started, saying so. Before, a traceback."""
    ran = tmp_path / "ran"
    job_dir = _job_dir(tmp_path, ["touch", str(ran)])
    with pids_capped(1) as capped:
        def join() -> None:
            Path(capped, "cgroup.procs").write_text(str(os.getpid()))

        error = _ended_not_started(job_dir, ran, preexec_fn=join)
    assert error == FORK_REFUSED


def daemon_pid(state_dir: str) -> int:
    """The pid of the agent daemon of ``state_dir`` (found by it in its command line)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            words = Path("/proc", pid, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if b"daemon" in words and state_dir.encode() in words:
            return int(pid)
    raise AssertionError("no agent daemon of %s" % state_dir)


@NO_PIDS_CGROUP
def test_a_launch_whose_fork_the_host_refuses_is_answered_as_the_hosts(start_agent, tmp_path):
    """The daemon in a cgroup that takes one more process: the job's shim starts, its fork is
    refused. The launch is answered HOST_FAILED (class host: nothing ran, another host may
    start it), and so is the same key launched again (an answer lost on the way), from what
    the shim recorded. Before, START_FAILED: the admin failed the job for good."""
    state = str(tmp_path / "state")
    agent = start_agent("1xL4", state)
    assert agent.call("job.list")["jobs"] == []  # (its daemon started, found by its pid)
    with pids_capped(1, daemon_pid(state)):
        for _ in range(2):
            with pytest.raises(AgentError) as err:
                agent.call("job.launch", key="k-fork", gpu=0, memory_mib=10,
                           argv=["/usr/bin/true"])
            assert (err.value.code, err.value.data["class"], err.value.data["reason"]) == (
                rpc.HOST_FAILED, rpc.HOST, FORK_REFUSED)
            assert err.value.data["job"]["exit_code"] == 127


@pytest.mark.parametrize("argv, cwd, why", [
    (["/no/such/program-xyz"], "/", "cannot run /no/such/program-xyz: No such file or directory"),
    (["true"], "/no/such/dir", "cannot enter its cwd /no/such/dir: No such file or directory"),
], ids=["no-program", "no-cwd"])
def test_a_job_its_own_step_refuses_is_not_started_by_its_own_fault(tmp_path, argv, cwd, why):
    """Its program or cwd not there (as its shim finds them: a run_as job's are not looked at
    by the daemon): the job's fault, never the host's, so it fails rather than going to
    another host, where it would fail the same."""
    job_dir = _job_dir(tmp_path, argv, cwd=cwd)
    assert _ended_not_started(job_dir, tmp_path / "ran", JOB) == why


def test_a_program_held_open_for_writing_is_not_started_by_the_hosts_fault(tmp_path):
    """Its program is open for writing in a process of this host's as it is run (a copy or a
    build of it not yet closed): exec says ETXTBSY. A writer of this host's, of the moment,
    not the job's: another host (its own copy, or an NFS client, whose writers this kernel
    does not count) may run it, so the admin sends it there. Before, the job's fault: failed
    for good, though nothing ran and nothing it names was wrong."""
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\ntouch %s\n" % (tmp_path / "ran"))
    program.chmod(0o755)
    job_dir = _job_dir(tmp_path, [str(program)])
    with open(program, "a"):  # (the writer, held while the shim runs it)
        why = _ended_not_started(job_dir, tmp_path / "ran", HOST)
    assert why == "cannot run %s: Text file busy" % program


@contextmanager
def _dead_mount(where: Path) -> Iterator[Path]:
    """A FUSE mount at ``where`` whose server is gone (its /dev/fuse closed at once, as a dead
    sshfs or network filesystem leaves it): every look at it fails with ENOTCONN."""
    libc = ctypes.CDLL(None, use_errno=True)
    where.mkdir()
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        if libc.mount(b"dead", str(where).encode(), b"fuse", 0,
                      b"fd=%d,rootmode=40000,user_id=0,group_id=0" % fd) != 0:
            raise OSError(ctypes.get_errno(), "cannot mount a FUSE filesystem at %s" % where)
    finally:
        os.close(fd)
    try:
        yield where
    finally:
        libc.umount2(str(where).encode(), 2)  # MNT_DETACH


@pytest.mark.parametrize("in_mount", ["cwd", "program"])
def test_a_job_on_a_mount_that_is_down_is_not_started_by_the_hosts_fault(tmp_path, in_mount):
    """Its cwd or program on this host's network or FUSE mount whose server is gone (ENOTCONN;
    ESTALE, ETIMEDOUT alike): the host's trouble, not the job's, so it goes to another host
    rather than failing for good. Before, the job's fault (its cwd or program refused)."""
    with _dead_mount(tmp_path / "net") as net:
        argv, cwd = (["true"], str(net)) if in_mount == "cwd" else ([str(net / "prog")], "/")
        job_dir = _job_dir(tmp_path, argv, cwd=cwd)
        why = _ended_not_started(job_dir, tmp_path / "ran", HOST)
    assert why.endswith(": Transport endpoint is not connected"), why


@pytest.mark.parametrize("in_mount", ["cwd", "program"])
def test_a_launch_onto_a_mount_that_is_down_is_refused_as_the_hosts(start_agent, tmp_path,
                                                                    in_mount):
    """The daemon's own look at a job's cwd and program (one not run_as: before its shim)
    on a mount that is down says so, as the host's: HOST_FAILED, nothing recorded, so the
    admin starts it elsewhere. Before, START_FAILED "No such file or directory": words not
    true, and the job failed for good."""
    agent = start_agent("1xL4", str(tmp_path / "state"))
    with _dead_mount(tmp_path / "net") as net:
        argv, cwd = (["true"], str(net)) if in_mount == "cwd" else ([str(net / "prog")], "/")
        with pytest.raises(AgentError) as err:
            agent.call("job.launch", key="k-net", gpu=0, memory_mib=10, argv=argv, cwd=cwd)
    step = "enter its cwd %s" % cwd if in_mount == "cwd" else "run %s" % argv[0]
    assert (err.value.code, err.value.data["class"], err.value.data["reason"]) == (
        rpc.HOST_FAILED, rpc.HOST, "cannot %s: Transport endpoint is not connected" % step)
    assert agent.call("job.list")["jobs"] == []


def _unreachable(tmp_path: Path, case: str) -> Tuple[list, str]:
    """A job's argv and cwd where looking at its cwd or program fails otherwise than "not
    there": a symlink loop (ELOOP), a component that is a file (ENOTDIR), a name too long
    (ENAMETOOLONG), a cwd that is a file."""
    os.symlink("loop", str(tmp_path / "loop"))
    (tmp_path / "file").touch()
    return {"cwd-loop": (["true"], str(tmp_path / "loop")),
            "cwd-under-a-file": (["true"], str(tmp_path / "file" / "x")),
            "cwd-a-file": (["true"], str(tmp_path / "file")),
            "cwd-too-long": (["true"], str(tmp_path / ("x" * 300))),
            "program-loop": ([str(tmp_path / "loop")], "/"),
            "program-too-long": ([str(tmp_path / ("x" * 300))], "/")}[case]


@pytest.mark.parametrize("case, why", [
    ("cwd-loop", "Too many levels of symbolic links"), ("cwd-under-a-file", "Not a directory"),
    ("cwd-a-file", "Not a directory"), ("cwd-too-long", "File name too long"),
    ("program-loop", "Too many levels of symbolic links"),
    ("program-too-long", "File name too long")])
def test_a_launch_whose_cwd_or_program_cannot_be_looked_at_says_why_as_its_shim_would(
        start_agent, tmp_path, case, why):
    """The daemon's own look at a job's cwd and program (one not run_as) says what the OS
    said of it (its errno's words), the very words the job's shim records for the same job
    (run_as jobs are looked at by it alone). Before, every failure but a file said "No such
    file or directory" (``isdir`` and ``exists`` swallow the error)."""
    argv, cwd = _unreachable(tmp_path, case)
    step = "enter its cwd %s" % cwd if case.startswith("cwd") else "run %s" % argv[0]
    agent = start_agent("1xL4", str(tmp_path / "state"))
    with pytest.raises(AgentError) as err:
        agent.call("job.launch", key="k-look", gpu=0, memory_mib=10, argv=argv, cwd=cwd)
    assert (err.value.code, err.value.data["reason"]) == (rpc.START_FAILED,
                                                          "cannot %s: %s" % (step, why))
    assert agent.call("job.list")["jobs"] == []
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    assert _ended_not_started(_job_dir(shim_dir, argv, cwd=cwd), tmp_path / "ran",
                              JOB) == err.value.data["reason"]


@pytest.mark.parametrize("step, err, fault", [
    ("run x", FileNotFoundError(2, "No such file or directory"), JOB),
    ("run x", PermissionError(13, "Permission denied"), JOB),
    ("run x", OSError(8, "Exec format error"), JOB),
    ("become user ann", KeyError("ann"), JOB),
    ("run x", OSError(12, "Cannot allocate memory"), HOST),
    ("run x", BlockingIOError(11, "Resource temporarily unavailable"), HOST),
    ("enter its cwd /x", OSError(5, "Input/output error"), HOST),
    ("enter its cwd /x", OSError(116, "Stale file handle"), HOST),
    ("run /net/x", TimeoutError(110, "Connection timed out"), HOST),
    ("run x", OSError(7, "Argument list too long"), JOB),
    ("run x", OSError(40, "Too many levels of symbolic links"), JOB),
    ("run x", OSError(26, "Text file busy"), HOST),
    ("start its process", BlockingIOError(11, "Resource temporarily unavailable"), HOST),
    ("make its output pipe", OSError(28, "No space left on device"), HOST),
    ("read its spec", ValueError("cut short"), HOST),
    ("make the directory of its HAMi-core region /r", PermissionError(13, "denied"), HOST),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_whose_fault_a_failed_step_is(step, err, fault):
    """The job's own steps (its user, cwd, program) refused for what they name are the job's;
    the host's trouble of the moment there, and every other step, the host's."""
    assert fault_of(step, err) == fault


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
