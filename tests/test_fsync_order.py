"""Durable before acknowledged, seen in the system calls: a real ``fractui`` verb on an SQLite
store, and a real agent daemon answering ``job.launch`` and ``job.stop``, each traced by
strace; the record's fdatasync of its write-ahead log comes before the answer is written.
A process killed after its commit loses nothing either way (the page cache outlives it): the
sync is what outlives a power loss or a kernel crash, which no test here can make."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import List

import pytest

from fractui.store import sqlite_url
from fractui.store.sqlite import SqliteStore
from tests.conftest import REPO
from tests.test_jobs import daemon_pid, script

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="the system calls are seen by strace, "
                                "which is not installed")
SYNC = re.compile(r"\bf(?:data)?sync\(\d+<(?P<path>[^>]*)>\)\s+= 0")


def synced_before(calls: List[str], answer: re.Pattern) -> List[str]:
    """The paths fsync'd (or fdatasync'd) in ``calls`` (strace's lines) before the first call
    that writes ``answer``; failing if none writes it."""
    for n, line in enumerate(calls):
        if answer.search(line):
            return [m.group("path") for m in map(SYNC.search, calls[:n]) if m]
    raise AssertionError("no call wrote the answer %r: %s" % (answer.pattern, calls[-20:]))


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
                               "trace=fsync,fdatasync,write"] + base + words,
                              capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    finally:
        beside.close()
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
                               "trace=fsync,fdatasync,write,sendto,sendmsg", "-p",
                               str(daemon_pid(agent))], stderr=subprocess.PIPE, text=True)
    try:
        assert "attached" in tracer.stderr.readline()  # its threads are traced from now on
        job = agent.call("job.launch", key="k-durable", gpu=0, memory_mib=10,
                         argv=script("import time; time.sleep(600)"))
        agent.call("job.stop", job=job["id"], grace=0, reason="durable stop")
    finally:
        tracer.terminate()
        tracer.wait(30)
    calls = trace.read_text().splitlines()
    # an answer (not a notification) whose result is the job: the launch's, then the stop's
    answer = re.compile(r'(?:write|sendto|sendmsg)\(\d+<(?:UNIX|socket)[^>]*>, '
                        r'.*result\\":\{\\"id\\":\\"j\d+\\",\\"key\\":\\"k-durable')
    assert wal in synced_before(calls, answer), calls[-30:]
    after_launch = next(n for n, line in enumerate(calls) if answer.search(line)) + 1
    assert wal in synced_before(calls[after_launch:], answer), calls[-30:]
