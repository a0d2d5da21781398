"""The agent on a state disk with a little room left, at each amount of room a write can run
out at (a real 8 MiB tmpfs, filled to leave so many pages). Its daemon's start: it serves, or
it ends before it detaches, its words on the bridge's stderr naming the file and why — never
a traceback — and once there is room the next bridge starts it, by itself. A daemon started
again on a full disk while its job ends there keeps that job's exit: not lost, said once
there is room. Its socket where no inode is left (a full /tmp or /run): said likewise, and
served once there is one. A job whose output was dropped and that ends while the disk is
full: its log says so once there is room, before its end is recorded, so its last line is
that, not a line the disk cut."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import ExitStack
from typing import Optional

import pytest

from remote_agent.daemon.bridge import connect
from remote_agent.daemon.paths import AgentPaths
from remote_agent.jobs.store import JobStore, StoreError, _no_room
from tests.conftest import REPO, AgentProcess, stop_host
from tests.test_job_supervision import (daemon_pid_of, fill, gpus_on_a_disk_of_their_own,
                                        printing, wait_until)
from tests.test_jobs import until_file, wait_job

PAGE = 4096
QUICK = (0, 22, 40)  # no room; room for the job table but not the GPUs' state or the pid
# file (the GPUs' on a disk of their own); room for all of it
NO_ROOM = "(its filesystem has no room left)"  # (SQLite said so: the fact)
NO_ROOM_READ = "(its filesystem, read just after, has no room left: the likely cause)"
FULL_WORDS = ("No space left on device", NO_ROOM, NO_ROOM_READ)  # (SQLite's own "database or
# disk is full" is not one: the job table says it with the second)


def tries_its_end(folder) -> None:
    """Until the shim of the job in ``folder``, its job ended, has tried to write its end at
    least twice: each try makes and removes a temporary file there, and the job's log is closed
    before the first (its shim.log is on the full disk: it cannot say so). Counted by the
    folder's changes, as tests/test_shim_full_disk.py does, not by what the shim waits in
    (``time.sleep`` is a clock_nanosleep from Python 3.11 only, a pselect6 before)."""
    with open(folder / "started.json") as f:
        pid = json.load(f)["pid"]
    wait_until(lambda: not os.path.exists("/proc/%d" % pid), "the job to end (reaped)")
    seen = {os.stat(folder).st_mtime_ns}
    wait_until(lambda: seen.add(os.stat(folder).st_mtime_ns) or len(seen) > 3,
               "the shim to wait for room for the job's end")


def leave(filler, pages: int) -> None:
    """The filesystem of ``filler`` full but for ``pages`` pages."""
    fill(filler)
    os.truncate(filler, max(0, os.path.getsize(filler) - pages * PAGE))


def said_in_full(state: str) -> str:
    """The daemon's log, where one was written."""
    try:
        with open(os.path.join(state, "daemon.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("pages", [p if p in QUICK else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(0, 41, 2)])
@pytest.mark.parametrize("gpus", ["on-the-state-disk", "on-a-disk-of-their-own"])
def test_a_first_start_on_a_disk_with_little_room_serves_or_says_why_and_starts_with_room(
        small_fs, start_agent, tmp_path, pages, gpus):
    """Before, with room for the job table but not for the simulated GPUs' first state, the
    daemon ended on an OSError's traceback (``fractui demo``'s hosts and every test's); with
    the GPUs keeping nothing on that disk (as real ones), on its pid file's, written once it
    had detached: its traceback went to its log on the full disk, nowhere, and the bridge said
    no more than "see daemon.log"."""
    state = str(small_fs / "state")
    stack = ExitStack()
    if gpus == "on-a-disk-of-their-own":
        stack.enter_context(gpus_on_a_disk_of_their_own(small_fs / "state"))
    with stack:
        starts_with_room(small_fs, start_agent, tmp_path, state, pages)


@pytest.mark.parametrize("pages", range(24))  # (each a second's open: the whole sweep)
def test_the_job_table_says_a_full_disk_in_its_own_words_whatever_sqlite_says(small_fs, pages):
    """The job table opened on a disk with so many pages left: where it is refused, it says
    the filesystem has no room left, however SQLite said it: as the fact where SQLite said
    "database or disk is full" (with a page left it came alone: statvfs counted that page as
    room), else as the filesystem read just after, the likely cause."""
    leave(small_fs / "filler", pages)
    try:
        JobStore(str(small_fs / "jobs.db")).close()
    except StoreError as err:
        said = str(err)
        assert (NO_ROOM in said) == ("disk is full" in said) and (
            NO_ROOM in said or NO_ROOM_READ in said), said


def test_the_job_tables_words_of_room_are_a_fact_only_where_sqlite_said_it(small_fs):
    """Where SQLite gives no cause ("disk I/O error"), free space is read after the failure,
    and may have changed since: it is said as that reading, the likely cause, never as the
    failure's; an error that is none of room (a table locked) says nothing of room, though the
    disk is full as it is worded. Before, both said "(its filesystem has no room left)", read
    as the fact, and the same I/O error said nothing once room came back."""
    path = str(small_fs / "jobs.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(path, timeout=0).execute("SELECT * FROM t")
    assert str(locked.value) == "database is locked"
    unsaid = sqlite3.OperationalError("disk I/O error")
    fill(small_fs / "filler")
    assert _no_room(path, locked.value) == ""
    assert _no_room(path, unsaid) == " " + NO_ROOM_READ
    (small_fs / "filler").unlink()
    assert _no_room(path, unsaid) == ""
    holder.close()


def starts_with_room(small_fs, start_agent, tmp_path, state: str, pages: int) -> None:
    """The test above, once the GPUs' state is where it is tried."""
    filler = small_fs / "filler"
    leave(filler, pages)
    agent = AgentProcess(state, "--sim", "1xL4")
    try:
        reply = agent.request("hello")
        assert "result" in reply, reply
    except EOFError as ended:
        words = str(ended)
        assert "Traceback" not in words, words
        lines = words.split("stderr: ", 1)[1].splitlines()
        assert lines[-1] == "remote_agent: the agent daemon did not start (exit 2)", words
        assert lines[-2].startswith("remote_agent: ") and state in lines[-2], words
        assert any(w in lines[-2] for w in FULL_WORDS), words
    finally:
        agent.proc.stdin.close()
        agent.proc.wait(timeout=10)
    assert "Traceback" not in said_in_full(state)
    filler.unlink()
    again = start_agent("1xL4", state)
    assert again.call("daemon.version")["pid"] == daemon_pid_of(state)
    job = again.call("job.launch", key="k-room", gpu=0, memory_mib=10,
                     argv=until_file(tmp_path / "release", 0))
    (tmp_path / "release").touch()
    assert wait_job(again, job["id"])["exit_code"] == 0


def serves_or_ends(paths: AgentPaths) -> Optional[bool]:
    """Once its launcher detached, whether the daemon serves (its socket listens) or ended
    (its lock free): True once it serves, False once it ended, None meanwhile."""
    try:
        connect(paths).close()
        return True
    except OSError:
        pass
    with open(paths.lock_file) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
    return False


def test_a_first_start_on_a_disk_with_few_inodes_left_says_why_or_serves(tmp_path):
    """A first start on a state disk (a tmpfs) with room but 3 to 14 inodes in all, each in
    turn until the daemon serves: the job table, the GPUs' state, the pid file, the daemon's
    log each run out in turn. Its launcher says why (exit 2), or the daemon, once detached, in
    its log, its socket removed; never a traceback. Before, with the pid file made but no
    inode for the log (8), the launcher ended on an OSError's traceback (exit 1); and with
    one more (9), the simulated GPUs' state written again as NVML starts, the daemon ended
    on a traceback in its log, its socket left bound (a bridge waited 15 s on "Connection
    refused"); and the job table's was SQLite's "unable to open database file" alone. Its
    launcher, refused after it bound the socket (the pid file, the log), left the socket
    bound, and the pid file it had written, for the next start to find."""
    disk = tmp_path / "disk"
    disk.mkdir()
    paths = AgentPaths(str(disk / "state"))
    said, served = [], False
    for inodes in range(3, 15):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700,nr_inodes=%d"
                        % inodes, "tmpfs", str(disk)], check=True)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "remote_agent", "daemon", "--state-dir",
                 paths.state_dir, "--sim", "1xL4", "--detach"], cwd=REPO, capture_output=True,
                text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
            if done.returncode == 0:
                wait_until(lambda: serves_or_ends(paths) is not None, "the daemon to serve "
                           "or end")
                served = serves_or_ends(paths)
                if served:
                    break
                log = said_in_full(paths.state_dir)
                assert "Traceback" not in log and not os.path.exists(paths.socket), log
                said.append(log.splitlines()[-1])
                continue
            assert "Traceback" not in done.stderr and done.returncode == 2, done
            assert not os.path.exists(paths.socket) and not os.path.exists(paths.pid_file), \
                done.stderr
            line, = done.stderr.splitlines()
            assert line.startswith("remote_agent: ") and paths.state_dir in line, done.stderr
            said.append(line)
        finally:
            stop_host(paths.state_dir)
            subprocess.run(["umount", "-l", str(disk)], check=True)
    assert served, said
    for file in ("daemon.log", "sim/gpus.json.tmp."):
        assert any("%s/%s" % (paths.state_dir, file) in line and "No space left on device"
                   in line for line in said), said
    # SQLite says only "unable to open database file" (the table, its WAL, its shared memory):
    # the reason is the filesystem's
    table = [line for line in said if "the job table %s " % paths.jobs_db in line]
    assert table and all("cannot be opened now: unable to open database file (its filesystem, "
                         "read just after, has no inode left" in line for line in table), said


@pytest.mark.skipif(shutil.which("strace") is None, reason="the launcher is held by strace")
def test_a_pid_file_the_detached_daemon_cannot_write_ends_it_with_a_log_line(tmp_path):
    """The daemon, once detached, writes its own pid over its launcher's: within the block the
    file has, which a copy-on-write filesystem (btrfs, ZFS) still writes anew, so a full one
    refuses it (ENOSPC). Here a tmpfs: the launcher's pid written and its block given back
    (the file emptied) while the launcher's child is held before it forks the daemon (strace),
    then the disk filled. The daemon ends with a line in its log (its page of an earlier start
    has room), its socket and pid file removed; it was a traceback, its socket left bound."""
    disk = tmp_path / "disk"
    disk.mkdir()
    paths = AgentPaths(str(disk / "state"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(disk)],
                   check=True)
    tracer = None
    try:
        os.mkdir(paths.state_dir, 0o700)
        with open(os.open(paths.log_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as log:
            log.write("an earlier start's line\n")
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-I1", "-o", "/dev/null", "-e", "trace=setsid", "-e",
             "inject=setsid:delay_exit=600s", sys.executable, "-m", "remote_agent", "daemon",
             "--state-dir", paths.state_dir, "--sim", "1xL4", "--detach"], cwd=REPO,
            stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))

        def launcher_ended() -> bool:
            with open(paths.pid_file) as f:
                pid = f.read().strip()
            return bool(pid) and not os.path.exists("/proc/%s" % pid)

        wait_until(lambda: os.path.exists(paths.pid_file) and launcher_ended(),
                   "the launcher to write its pid and end")
        os.truncate(paths.pid_file, 0)
        fill(disk / "filler")
        tracer.terminate()  # the child goes on: it forks the daemon
        tracer.wait(timeout=10)
        wait_until(lambda: serves_or_ends(paths) is False, "the daemon to end")
        said = said_in_full(paths.state_dir)
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        stop_host(paths.state_dir)
        subprocess.run(["umount", "-l", str(disk)], check=True)
    assert "Traceback" not in said, said
    assert said.splitlines()[-1].endswith(
        "ERROR cannot write the pid file %s: No space left on device" % paths.pid_file), said
    assert not os.path.exists(paths.socket)
    assert not os.path.exists(paths.pid_file)


@pytest.mark.parametrize("pages", [p if p in QUICK[:1] else pytest.param(
    p, marks=pytest.mark.slow) for p in range(0, 5)])
def test_a_job_that_ends_while_its_daemon_starts_again_on_a_full_disk_keeps_its_exit(
        small_fs, start_agent, tmp_path, pages):
    """The daemon stopped, the disk filled, the job ends (its shim cannot write its exit yet)
    and a daemon starts again: it serves, the job is never said ended with another code, and
    once there is room its exit is recorded, exactly as the job gave it."""
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key="k-ends", gpu=0, memory_mib=10,
                     argv=until_file(tmp_path / "release", 3))
    wait_until(lambda: agent.call("job.get", job=job["id"])["state"] == "running",
               "the job to run")
    pid = daemon_pid_of(state)
    os.kill(pid, signal.SIGTERM)
    agent.close()
    wait_until(lambda: not os.path.exists("/proc/%d" % pid), "the daemon to end")
    filler = small_fs / "filler"
    leave(filler, pages)
    (tmp_path / "release").touch()
    later = start_agent(None, state)
    seen = later.call("job.get", job=job["id"])
    assert seen["state"] == "running" or (seen["state"], seen["exit_code"]) == ("exited", 3), \
        seen
    filler.unlink()
    done = wait_job(later, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 3), done
    assert "Traceback" not in said_in_full(state)


@pytest.mark.parametrize("pages", [p if p in (0, 6) else pytest.param(p, marks=pytest.mark.slow)
                                   for p in range(0, 17, 2)])
def test_output_dropped_by_a_job_that_ends_on_a_full_disk_is_said_before_its_end(
        small_fs, start_agent, tmp_path, pages):
    """Before, the shim said what was dropped only if the log took a write after it: a job
    that ended while the disk was full left a log ending in a line the disk cut, nothing
    saying some 300 KB were lost, and its end read as that cut line ("exited 5: line 596
    xxx")."""
    state = str(small_fs / "state")
    agent = start_agent("1xL4", state)
    go, printed, release = tmp_path / "go", tmp_path / "printed", tmp_path / "release"
    job = agent.call("job.launch", key="k-cut", gpu=0, memory_mib=10, argv=printing(
        3000, go, printed, release, code=5, line="'line %04d' % i, 'x' * 100"))
    wait_until(lambda: agent.call("job.get", job=job["id"])["state"] == "running",
               "the job to run")
    filler = small_fs / "filler"
    leave(filler, pages)
    go.touch()
    wait_until(printed.exists, "the job's output")
    release.touch()
    tries_its_end(small_fs / "state" / "jobs" / job["id"])
    filler.unlink()
    done = wait_job(agent, job["id"])
    note = ("bytes of the job's output were dropped: its log could not be written (No space "
            "left on device)]")
    assert (done["state"], done["exit_code"]) == ("exited", 5), done
    assert done["last_line"].startswith("[fractui: ") and done["last_line"].endswith(note), \
        done
    folder = small_fs / "state" / "jobs" / job["id"]
    text = "".join((folder / n).read_text() for n in ("output.log.1", "output.log")
                   if (folder / n).exists())
    assert text.endswith(note + "\n") and text.count("[fractui: ") == 1, text[-300:]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a tmpfs is mounted on /run/fractui in a namespace: needs root")
def test_a_daemon_with_no_inode_for_its_socket_says_so_and_serves_once_there_is_one(tmp_path):
    """Root's sockets' folder (/run/fractui) a tmpfs of its own with no inode left, in a mount
    namespace of its own: the bridge says the socket cannot be made, where and why; the same
    bridge asked again once there is an inode is served. Before, the daemon bound its socket
    once it had detached: its traceback went to its log and the bridge said "no socket ...
    (see daemon.log)"."""
    state = tmp_path / "state"
    hello = tmp_path / "hello"
    hello.write_text('{"jsonrpc": "2.0", "id": 1, "method": "hello"}\n')
    script = ('mkdir -p -m 0700 /run/fractui && '
              'mount -t tmpfs -o nr_inodes=1,mode=0700 none /run/fractui && '
              '{ "$@" < "$HELLO"; echo "bridge exit $?" >&2; } && '
              'mount -o remount,nr_inodes=16 /run/fractui && "$@" < "$HELLO"')
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             sys.executable, "-m", "remote_agent", "serve", "--stdio", "--state-dir",
             str(state), "--sim", "1xL4"], cwd=REPO, capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=REPO, HELLO=str(hello)), timeout=60)
    finally:
        stop_host(str(state))
    assert "Traceback" not in done.stderr + said_in_full(str(state)), done.stderr
    first = done.stderr.splitlines()
    assert first[0].startswith("remote_agent: cannot listen on /run/fractui/") and \
        first[0].endswith(".sock: No space left on device"), done.stderr
    assert first[1:3] == ["remote_agent: the agent daemon did not start (exit 2)",
                          "bridge exit 2"], done.stderr
    assert done.returncode == 0 and '"result"' in done.stdout, done
