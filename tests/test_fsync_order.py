"""Durable before acknowledged, seen in the system calls: a real ``fractui`` verb on an SQLite
store, and a real agent daemon answering ``job.launch`` and ``job.stop``, each traced by
strace; the record's fdatasync of its write-ahead log comes before the answer is written.
A process killed after its commit loses nothing either way (the page cache outlives it): the
sync is what outlives a power loss or a kernel crash, which no test here can make."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Dict, List

import pytest

from fractui.store import sqlite_url
from fractui.store.sqlite import SqliteStore
from tests.cli_run import reaped
from tests.conftest import REPO
from tests.test_fleet_hostkeys import APPENDER, AT_LIMIT, CUT_SHORT, known_hosts_and_key
from tests.test_jobs import daemon_pid, script

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="the system calls are seen by strace, "
                                "which is not installed")
# A sync in one line, or begun in one and ended in another (strace -f: another task's call
# came between); each line starts with its task's id. A write: its start.
SYNC = re.compile(r"^(?P<task>\d+) +f(?:data)?sync\(\d+<(?P<path>[^>]*)>"
                  r"(?:\)\s+= 0| <unfinished \.\.\.>)")
RESUMED = re.compile(r"^(?P<task>\d+) +<\.\.\. f(?:data)?sync resumed>\)\s+= 0")
WRITE = re.compile(r"^\d+ +p?write(?:64)?\(\d+<(?P<path>[^>]*)>")


def synced_before(calls: List[str], answer: re.Pattern) -> List[str]:
    """The paths fsync'd (or fdatasync'd) in ``calls`` (strace's lines) before the first call
    that writes ``answer``, each after the last write to it before then (a sync another
    thread made before a later commit's write is none for that commit); a sync counts at
    its end (its task's next line resuming it). Failing if no call writes the answer."""
    synced: Dict[str, bool] = {}  # path -> synced since its last write
    begun: Dict[str, str] = {}  # task -> the path its sync under way syncs
    for line in calls:
        if answer.search(line):
            return sorted(path for path, done in synced.items() if done)
        sync, resumed, write = SYNC.search(line), RESUMED.search(line), WRITE.search(line)
        if sync and line.endswith("<unfinished ...>"):
            begun[sync.group("task")] = sync.group("path")
        elif sync:
            synced[sync.group("path")] = True
        elif resumed and resumed.group("task") in begun:
            synced[begun.pop(resumed.group("task"))] = True
        elif write:
            synced[write.group("path")] = False
    raise AssertionError("no call wrote the answer %r: %s" % (answer.pattern, calls[-20:]))


def traceable(said: str) -> None:
    """Skips the test where strace says the kernel lets it trace nothing here (no
    CAP_SYS_PTRACE, Yama's ptrace_scope, a container's seccomp profile): no fault of
    fractui's, and nothing to see."""
    if "ptrace" in said and "Operation not permitted" in said:
        pytest.skip("strace may not trace here: %s" % said.strip().splitlines()[0])


@pytest.mark.parametrize("verb", ["submit", "cancel"])
def test_a_verb_says_its_change_only_once_the_store_has_synced_it(tmp_path, verb):
    store = tmp_path / "store.db"
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "quarter"\ngpu = 0.25\n'
                      % sqlite_url(str(store)))
    base = [sys.executable, "-m", "fractui", "--config", str(config)]
    first = subprocess.run(base + ["submit", "--queue", "quarter", "--key", "k0", "--", "true"],
                           capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr
    words = {"submit": ["submit", "--queue", "quarter", "--key", "k1", "--", "true"],
             "cancel": ["cancel", "1"]}[verb]
    trace = tmp_path / "trace"
    # a scheduler's store beside it, which wrote last: the verb's commit only adds to the log
    # (it neither starts it afresh nor, on close, checkpoints it: both sync it whatever the
    # commit did)
    beside = SqliteStore(str(store))
    try:
        beside.submit("quarter", None, "beside", ["true"], {}, "sched")
        done = subprocess.run([STRACE, "-f", "-y", "-s", "200", "-o", str(trace), "-e",
                               "trace=fsync,fdatasync,write,pwrite64"] + base + words,
                              capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    finally:
        beside.close()
    traceable(done.stderr)
    assert done.returncode == 0 and done.stdout, done.stderr
    said = re.escape(done.stdout.splitlines()[0][:40])
    calls = trace.read_text().splitlines()
    assert str(store) + "-wal" in synced_before(calls, re.compile(
        r"write\(1<[^>]*>, \"%s" % said)), calls[-30:]


def test_the_agent_answers_a_launch_and_a_stop_once_its_job_table_has_synced_them(
        start_agent, tmp_path):
    state = tmp_path / "host"
    agent = start_agent("1xL4", str(state))
    wal = str(state / "jobs.db") + "-wal"
    trace = tmp_path / "trace"
    tracer = subprocess.Popen([STRACE, "-f", "-y", "-s", "8192", "-o", str(trace), "-e",
                               "trace=fsync,fdatasync,write,pwrite64,sendto,sendmsg", "-p",
                               str(daemon_pid(agent))], stderr=subprocess.PIPE, text=True)
    with reaped(tracer, signal.SIGTERM):
        said = tracer.stderr.readline()
        traceable(said)
        assert "attached" in said  # its threads are traced from now on
        job = agent.call("job.launch", key="k-durable", gpu=0, memory_mib=10,
                         argv=script("import time; time.sleep(600)"))
        agent.call("job.stop", job=job["id"], grace=0, reason="durable stop")
    calls = trace.read_text().splitlines()
    # an answer (not a notification) whose result is the job: the launch's, then the stop's
    answer = re.compile(r'(?:write|sendto|sendmsg)\(\d+<(?:UNIX|socket)[^>]*>, '
                        r'.*result\\":\{\\"id\\":\\"j\d+\\",\\"key\\":\\"k-durable')
    assert wal in synced_before(calls, answer), calls[-30:]
    after_launch = next(n for n, line in enumerate(calls) if answer.search(line)) + 1
    assert wal in synced_before(calls[after_launch:], answer), calls[-30:]


# A program whose sync strace sees begun and ended apart: a thread of it writes while the other
# syncs 8 MiB it wrote (on a disk, milliseconds), then it writes its answer.
SPLIT = '''\
import os, sys, threading
done = threading.Event()
def ticks():
    while not done.is_set():
        os.write(2, b".")
ticking = threading.Thread(target=ticks)
ticking.start()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"x" * (8 << 20))
os.fdatasync(fd)
done.set()
ticking.join()
os.write(1, b"answered\\n")
'''


def test_a_sync_another_thread_cut_in_on_counts_once_it_ended(tmp_path):
    """strace -f writes a call that another task's came in the middle of as two lines (begun
    "<unfinished ...>", then "<... fdatasync resumed>"), as it may the daemon's sync while its
    job's shim starts: that sync counts, at its end. Tried until strace has split it (a sync
    that quick is whole)."""
    data, trace = tmp_path / "data", tmp_path / "trace"
    for _ in range(20):
        done = subprocess.run([STRACE, "-f", "-y", "-o", str(trace), "-e",
                               "trace=fdatasync,write", sys.executable, "-c", SPLIT, str(data)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        traceable(done.stderr)
        assert done.returncode == 0, done.stderr
        calls = trace.read_text().splitlines()
        if any("fdatasync(" in line and line.endswith("<unfinished ...>") for line in calls):
            break
    else:
        pytest.fail("strace never saw the sync begun and ended apart: %s" % calls[-10:])
    answer = re.compile(r'write\(1<[^>]*>, "answered')
    assert synced_before(calls, answer) == [str(data)], calls[-10:]
    ended = next(n for n, line in enumerate(calls) if "<... fdatasync resumed>" in line)
    answered = [line for line in calls if answer.search(line)]
    assert synced_before(calls[:ended] + answered, answer) == []  # begun, not ended: none


def test_a_write_after_the_last_sync_is_not_synced(tmp_path):
    """A sync counts for what was written before it only: a program that syncs its file,
    writes it again and answers answered unsynced (a sync of another thread's commit before
    the answer's own commit, with synchronous=NORMAL on its connection, reads so)."""
    data, trace = tmp_path / "data", tmp_path / "trace"
    code = ("import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "os.pwrite(fd, b'commit', 0)\n"
            "os.fdatasync(fd)\n"
            "for _ in sys.argv[2:]:\n"
            "    os.pwrite(fd, b'commit', 6)\n"
            "os.write(1, b'answered\\n')\n")
    answer = re.compile(r'write\(1<[^>]*>, "answered')
    for again, synced in (([], [str(data)]), (["again"], [])):
        done = subprocess.run([STRACE, "-f", "-y", "-o", str(trace), "-e",
                               "trace=fdatasync,write,pwrite64", sys.executable, "-c", code,
                               str(data), *again], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        traceable(done.stderr)
        assert done.returncode == 0, done.stderr
        assert synced_before(trace.read_text().splitlines(), answer) == synced, again


def test_a_known_hosts_line_cut_short_is_synced_as_a_comment_before_trust_says_it_failed(
        tmp_path):
    """A trust's line cut short (a file size limit 10 bytes in, as a full disk) is written
    over as a comment line in place, and that is fsync'd before the append says it failed:
    else a crash could leave the part written, a line naming the host with no key it offers,
    which reads as a changed key. Before, the comment was written and the file closed
    unsynced."""
    known, key = known_hosts_and_key(tmp_path)
    trace = tmp_path / "trace"
    done = subprocess.run([STRACE, "-f", "-y", "-o", str(trace), "-e",
                           "trace=fsync,fdatasync,write,pwrite64", sys.executable, "-c",
                           APPENDER, str(known), str(key), "limited", "1", "limited"],
                          input="", capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    traceable(done.stderr)
    assert (done.returncode, done.stdout) == (0, "ready\n%s\n[]\n" % AT_LIMIT), done.stderr
    assert known.read_text() == "# fleet\n" + CUT_SHORT
    calls = trace.read_text().splitlines()
    assert str(known) in synced_before(calls, re.compile(r'write\(1<[^>]*>, "\[\]')), \
        calls[-20:]
