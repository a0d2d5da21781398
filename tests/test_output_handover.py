"""A job's output when the process copying it dies: a shim killed with the job's bytes on their
way to the log loses none of them (the daemon that takes over finds them in the pipe), the
daemon's note starts a line of its own, a rotating log keeps the end of the output whole (copied
after a tee, or by read and write where tee is refused), and output that comes once a full disk
has room again is kept after the note of what was dropped.

A real shim (``python -m remote_agent shim``) runs a real job on a real FIFO; the daemon's side
is remote_agent.jobs.output.Outputs, as the daemon uses it. The shim is caught on its way to the
log by a lease the test holds on ``output.log``: the kernel holds the shim's open of the log
until the test lets go, so the SIGKILL lands there every time.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

from remote_agent.daemon.trust import UnsafePath
from remote_agent.jobs import output
from remote_agent.jobs.output import CappedLog, Outputs, drain, make_pipe, open_reader
from tests.conftest import REPO
from tests.test_job_supervision import fill
from tests.test_jobs import alive

TAKE_OVER = "[fractui: the job's shim ended; the agent keeps its output from here]\n"


def wait_until(done, what: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not done():
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def job_dir(tmp_path: Path) -> Path:
    """Job 1's directory under ``tmp_path/jobs``, private as the agent makes it."""
    path = tmp_path / "jobs" / "j1"
    path.mkdir(parents=True, mode=0o700)
    return path


def start_shim(path: Path, code: str, log_max_bytes: int = 1 << 20) -> subprocess.Popen:
    """The shim of a job that runs ``code``, started as the daemon starts it."""
    spec = {"argv": [sys.executable, "-c", code], "env": {"PATH": os.environ["PATH"]},
            "cwd": str(path), "cgroup": None, "log_max_bytes": log_max_bytes, "user": None}
    fd = os.open(str(path / "spec.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, json.dumps(spec).encode())
    os.close(fd)
    return subprocess.Popen([sys.executable, "-m", "remote_agent", "shim", str(path)],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                            start_new_session=True)


def job_pid(path: Path) -> int:
    wait_until((path / "started.json").exists, "the job to start")
    return json.loads((path / "started.json").read_text())["pid"]


@pytest.fixture
def jobs() -> List[int]:
    """Pids of jobs (each leads a session of its own) killed after the test, whatever it did."""
    pids: List[int] = []
    yield pids
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_shim(shim: subprocess.Popen) -> None:
    shim.send_signal(signal.SIGKILL)
    shim.wait(timeout=10)


def waits_for(path: Path) -> str:
    return "while not os.path.exists(%r):\n    time.sleep(0.01)\n" % str(path)


def test_a_shim_killed_on_its_way_to_the_log_loses_no_output(tmp_path, jobs):
    path = job_dir(tmp_path)
    printed, finish = tmp_path / "printed", tmp_path / "finish"
    code = ("import os, time\n"
            "print('precious', flush=True)\n"
            "open(%r, 'w').close()\n" % str(printed) + waits_for(finish) +
            "print('after', flush=True)\n")
    log = path / "output.log"
    log.touch(mode=0o600)
    held = os.open(str(log), os.O_RDONLY)
    breaking = threading.Event()
    before = signal.signal(signal.SIGIO, lambda *_: breaking.set())  # the shim opens the log
    try:
        fcntl.fcntl(held, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        shim = start_shim(path, code)
        jobs.append(job_pid(path))
        wait_until(printed.exists, "the job's line to be in its pipe")
        wait_until(breaking.is_set, "the shim to open its log")
        kill_shim(shim)
    finally:
        fcntl.fcntl(held, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(held)
        signal.signal(signal.SIGIO, before)
    outputs = Outputs(str(tmp_path / "jobs"), 1 << 20)
    assert outputs.take_over(1)
    finish.touch()
    wait_until(lambda: not alive(jobs[0]), "the job to end")
    outputs.release(1)
    assert log.read_text() == TAKE_OVER + "precious\nafter\n"


def test_the_take_over_note_starts_a_line_of_its_own(tmp_path, jobs):
    path = job_dir(tmp_path)
    finish = tmp_path / "finish"
    code = ("import os, sys, time\n"
            "sys.stdout.write('half a line'); sys.stdout.flush()\n" + waits_for(finish) +
            "print(' and its end', flush=True)\n")
    shim = start_shim(path, code)
    jobs.append(job_pid(path))
    log = path / "output.log"
    wait_until(lambda: log.exists() and log.read_text() == "half a line", "the output")
    kill_shim(shim)
    outputs = Outputs(str(tmp_path / "jobs"), 1 << 20)
    assert outputs.take_over(1)
    finish.touch()
    wait_until(lambda: not alive(jobs[0]), "the job to end")
    outputs.release(1)
    assert log.read_text() == "half a line\n" + TAKE_OVER + " and its end\n"


def test_a_rotating_log_keeps_the_end_of_the_output_whole(tmp_path, jobs):
    path = job_dir(tmp_path)
    count = 120000  # 1.44 MB of lines under a 1 MiB cap (the least an agent is given)
    code = "for i in range(%d):\n    print('line %%06d' %% i)\n" % count
    shim = start_shim(path, code, log_max_bytes=1 << 20)
    jobs.append(job_pid(path))
    assert shim.wait(timeout=20) == 0
    old, new = (path / "output.log.1").read_bytes(), (path / "output.log").read_bytes()
    assert len(old) <= 1 << 19 and len(new) <= 1 << 19 and len(old + new) > 1 << 19
    lines = (old + new).decode().splitlines()
    tail = ["line %06d" % i for i in range(count)][-len(lines) + 1:]
    assert lines[1:] == tail  # (the first line may be the end of one cut by the rotation)


def test_where_tee_is_refused_the_output_is_copied_all_the_same(tmp_path):
    """A host whose Python has no ctypes, or whose C library no tee: the copier reads and
    writes instead (forced here)."""
    pipe, path = str(tmp_path / "output.pipe"), str(tmp_path / "output.log")
    make_pipe(pipe)
    reader = open_reader(os.path.dirname(pipe))
    writer = os.open(pipe, os.O_WRONLY)
    log = CappedLog(path, 16384)
    log.peeks = False
    data = b"".join(b"line %05d\n" % i for i in range(2000))
    try:
        for start in range(0, len(data), 4096):
            os.write(writer, data[start:start + 4096])
            assert not drain(reader, log)
        os.close(writer)
        assert drain(reader, log)
        log.close()
    finally:
        os.close(reader)
    assert not log.peeks and data.endswith(open(path + ".1", "rb").read() +
                                             open(path, "rb").read())


def test_output_that_comes_once_a_full_disk_has_room_is_kept(small_fs):
    """The shim's copier on a real full filesystem: what the job writes while there is no room
    is dropped, and what it writes once there is room again follows one note saying how much
    was dropped, whole (the copier waits for output before it decides to drop any)."""
    pipe, path = str(small_fs / "output.pipe"), str(small_fs / "output.log")
    make_pipe(pipe)
    reader = open_reader(os.path.dirname(pipe))
    os.set_blocking(reader, True)  # as the shim reads it
    writer = os.open(pipe, os.O_WRONLY)
    log = CappedLog(path, 1 << 30)
    taken: List[int] = []
    copier = threading.Thread(target=lambda: taken.extend(iter(lambda: log.take(reader), 0)))
    copier.start()
    before = b"".join(b"A%07d\n" % i for i in range(40000))
    after = b"".join(b"B%07d\n" % i for i in range(1000))
    try:
        fill(small_fs / "filler")
        view = memoryview(before)
        while view:
            view = view[os.write(writer, view):]
        wait_until(lambda: sum(taken) == len(before), "the copier to take the output")
        os.unlink(small_fs / "filler")  # room again, the copier waiting for more
        os.write(writer, after)
    finally:
        os.close(writer)
        copier.join(timeout=10)
        log.close()
        os.close(reader)
    text = open(path, "rb").read()
    note = b"[fractui: %d bytes of the job's output were dropped: its log could not be written " \
        b"(No space left on device)]\n" % (len(before) - len(text.split(b"[fractui")[0]))
    assert text.endswith(note + after)
    assert before.startswith(text[:len(text) - len(note + after)])


def pipe_pair(tmp_path: Path):
    """A job's output FIFO as the agent makes it: the copier's read end (non-blocking, as the
    daemon's), the job's write end, and a log with a 1 MiB cap."""
    pipe = str(tmp_path / "output.pipe")
    make_pipe(pipe)
    return open_reader(str(tmp_path)), os.open(pipe, os.O_WRONLY), \
        CappedLog(str(tmp_path / "output.log"), 1 << 20)


@pytest.mark.parametrize("blocking", [True, False], ids=["shim", "daemon"])
def test_a_job_that_writes_packets_has_its_output_whole_and_in_order(tmp_path, blocking):
    """A job may put its stdout in packet mode (O_DIRECT on a pipe, no privilege needed): a
    read then takes one packet, and a packet read in part loses its rest."""
    reader, writer, log = pipe_pair(tmp_path)
    os.set_blocking(reader, blocking)
    fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) | os.O_DIRECT)
    lines = [b"line %04d\n" % i for i in range(500)]
    copier = threading.Thread(target=lambda: [None for _ in iter(lambda: log.take(reader), 0)])
    if blocking:  # as the shim copies it, while the job writes
        copier.start()
    try:
        for burst in range(0, len(lines), 10):
            for line in lines[burst:burst + 10]:
                os.write(writer, line)
            if not blocking:  # as the daemon copies it, a pass at a time
                assert not drain(reader, log)
        os.close(writer)
        if blocking:
            copier.join(timeout=20)
        else:
            assert drain(reader, log)
        log.close()
    finally:
        os.close(reader)
    assert (tmp_path / "output.log").read_bytes() == b"".join(lines)


def test_a_tee_that_fails_is_left_and_the_output_read_as_it_comes(tmp_path, monkeypatch):
    """tee refused for a reason other than the file system's (a seccomp filter's EPERM, no
    descriptor left for its pipe): the copier reads and writes instead, and the job's output,
    which tee left in its pipe, is all copied."""
    def refused(*_args):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    monkeypatch.setattr(output, "_tee", refused)
    reader, writer, log = pipe_pair(tmp_path)
    try:
        os.write(writer, b"first\n")
        assert not drain(reader, log)
        os.write(writer, b"second\n")
        os.close(writer)
        assert drain(reader, log)
        log.close()
    finally:
        os.close(reader)
    assert not log.peeks and (tmp_path / "output.log").read_bytes() == b"first\nsecond\n"


def test_one_drain_copies_a_bounded_amount(tmp_path, monkeypatch):
    """A job that enlarged its pipe and keeps it full: one drain copies at most DRAIN_CHUNKS
    chunks and returns, so the watchdog's pass goes on (the bound made small here, and the
    pipe filled beyond it); the next drain copies the next ones."""
    monkeypatch.setattr(output, "DRAIN_CHUNKS", 4)
    reader, writer, _ = pipe_pair(tmp_path)
    log = CappedLog(str(tmp_path / "output.log"), 1 << 40)  # no rotation: its size is the copy
    fcntl.fcntl(writer, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB, as any process may
    data = os.urandom(1 << 20)
    try:
        assert os.write(writer, data) == len(data)
        assert not drain(reader, log) and log.size == 4 * output.CHUNK
        assert not drain(reader, log) and log.size == 8 * output.CHUNK
        log.close()
    finally:
        os.close(writer)
        os.close(reader)
    assert (tmp_path / "output.log").read_bytes() == data[:8 * output.CHUNK]


@pytest.mark.parametrize("swapped", ["the pipe", "the job dir"])
def test_a_pipe_name_swapped_after_the_shim_made_it_is_not_followed(tmp_path, jobs, swapped):
    """A running job's ``output.pipe`` replaced by another FIFO of the agent's user, or its
    job directory by a symlink to one holding such a FIFO, after its shim made the pipe: the
    daemon opening the job's output refuses it, naming it, rather than holding a pipe no job
    writes (and, the shim gone, copying into another directory's log). Before, it opened the
    name: a FIFO of its user was taken whichever it was, and the directory's symlink was
    followed."""
    path = job_dir(tmp_path)
    finish = tmp_path / "finish"
    shim = start_shim(path, "import os, time\n" + waits_for(finish))
    jobs.append(job_pid(path))
    made = json.loads((path / "started.json").read_text())["pipe"]
    pipe = os.stat(path / "output.pipe")
    assert made == [pipe.st_dev, pipe.st_ino]  # what the shim recorded
    if swapped == "the pipe":
        os.mkfifo(tmp_path / "other.pipe", 0o600)
        os.rename(tmp_path / "other.pipe", path / "output.pipe")
        said = "refusing output pipe %s: it is not the FIFO the job's shim made" % (
            path / "output.pipe")
    else:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.mkfifo(other / "output.pipe", 0o600)
        os.rename(path, tmp_path / "jobs" / "moved")
        path.symlink_to(other)
        said = "refusing job directory %s: it is a symlink, not a directory" % path
    outputs = Outputs(str(tmp_path / "jobs"), 1 << 20)
    try:
        with pytest.raises(UnsafePath) as refused:
            outputs.hold(1, made)
        assert str(refused.value).startswith(said)
        with pytest.raises(UnsafePath):  # (the shim gone: refused again, nothing copied)
            outputs.take_over(1, made)
    finally:
        finish.touch()
        assert shim.wait(timeout=20) == 0
    assert not (tmp_path / "other" / "output.log").exists()
