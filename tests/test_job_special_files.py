"""A FIFO where the agent expects a regular file in a job's directory (the job's own user may
put one there where the job runs as the agent's user): the daemon refuses it as it sees it,
never waits on its open, and goes on serving and watching every other job."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, List

import pytest

from remote_agent.daemon.trust import UnsafePath
from remote_agent.jobs.output import read_from
from remote_agent.jobs.supervisor import log_bytes
from remote_agent.rpc.jsonrpc import RpcError
from tests.cli_run import reaped
from tests.conftest import REPO
from tests.test_job_supervision import kill_shim, wait_until
from tests.test_jobs import daemon_pid, script, until_file, wait_job
from tests.test_shim_full_disk import _job_dir, _shim

UP_THEN_MORE = ("import os, time\nprint('up', flush=True)\nwhile not os.path.exists(%r):\n"
                "    time.sleep(0.02)\nprint('more', flush=True)\ntime.sleep(60)")


def fifo_in_place_of(path: Path) -> None:
    """``path`` (gone, or a file its shim holds open) replaced by a FIFO of the agent's user."""
    if path.exists():
        path.unlink()
    os.mkfifo(path, 0o600)


def test_a_fifo_in_place_of_a_followed_log_ends_its_follow_and_holds_up_no_other(start_agent,
                                                                                tmp_path):
    """Two jobs followed; one's ``output.log`` becomes a FIFO. Its follow ends, saying why; the
    other's next line is pushed and the daemon answers. Before, the log pusher's open waited
    on the FIFO for a writer for good: no log or snapshot was pushed to anyone again."""
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state))
    go_on = tmp_path / "go-on"
    jobs = [agent.call("job.launch", key=key, gpu=0, memory_mib=10,
                       argv=script(UP_THEN_MORE % str(go_on))) for key in ("k-fifo", "k-other")]
    for job in jobs:
        wait_until(lambda: agent.call("job.logs", job=job["id"])["lines"] == ["up"], "output")
        agent.call("job.logs", job=job["id"], follow=True, lines=0)
    log = state / "jobs" / jobs[0]["id"] / "output.log"
    fifo_in_place_of(log)
    go_on.touch()

    def pushed(job_id: str) -> list:
        return [n["params"] for n in agent.notifications
                if n["method"] == "log" and n["params"]["job"] == job_id]

    wait_until(lambda: agent.call("job.list") and pushed(jobs[0]["id"]) and
               "more" in "".join(p.get("data", "") for p in pushed(jobs[1]["id"])),
               "the other job's line, and the end of the FIFO's follow")
    assert pushed(jobs[0]["id"]) == [{"job": jobs[0]["id"], "eof": True, "error": (
        "refusing log %s: not a regular file: a FIFO" % log)}]
    said = [line for line in (state / "daemon.log").read_text().splitlines() if "FIFO" in line]
    assert len(said) == 1 and said[0].endswith(
        "WARNING refusing log %s: not a regular file: a FIFO; it is not read until it is" % log)


@pytest.mark.parametrize("name,what", [("exit.json", "job %s's file"), ("shim.lock", "shim lock")])
def test_a_fifo_in_place_of_a_job_file_the_watchdog_reads_holds_up_no_other_job(
        start_agent, tmp_path, name, what):
    """A job whose shim died, with a FIFO in place of the file the watchdog reads for it (how
    it ended; the shim's lock, which tells a live shim): the watchdog says once that it refuses
    it, and goes on watching every other job, whose end is recorded. Once the FIFO is gone the
    job is watched again and ends. Before, the watchdog's open waited on the FIFO for good:
    no job's end was recorded again, no stop turned into SIGKILL, no cap was kept."""
    state = tmp_path / "state"
    agent = start_agent("1xL4", str(state))
    release, other = tmp_path / "release", tmp_path / "other"
    job = agent.call("job.launch", key="k-fifo", gpu=0, memory_mib=10,
                     argv=until_file(release, 0))
    ends = agent.call("job.launch", key="k-other", gpu=0, memory_mib=10,
                      argv=until_file(other, 3))
    fifo = state / "jobs" / job["id"] / name
    fifo_in_place_of(fifo)
    kill_shim(str(state), job["id"])
    other.touch()
    done = wait_job(agent, ends["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 3)
    daemon_log = state / "daemon.log"
    refused = "refusing %s %s: not a regular file: a FIFO" % (what.replace("%s", job["id"]),
                                                               fifo)
    wait_until(lambda: refused in daemon_log.read_text(), "the watchdog to refuse the FIFO")
    fifo.unlink()
    release.touch()
    assert wait_job(agent, job["id"])["state"] == "lost"  # its shim died: how it ended is lost
    said = [line for line in daemon_log.read_text().splitlines() if "a FIFO" in line]
    assert len(said) == 1 and said[0].endswith(
        "WARNING watchdog: watching job %s failed: %s; tried again each pass" % (
            job["id"], refused)), said


def test_a_shim_whose_log_is_a_fifo_drops_the_output_and_records_the_end(tmp_path):
    """A FIFO in place of ``output.log`` before the shim starts, and a job that prints more
    than its pipe holds: the shim drops what its log refuses, as on a full disk, and the job
    runs to its end, recorded. Before, the refusal ended the shim's copier: the job's pipe
    filled and the job waited on its write for good."""
    job_dir = _job_dir(tmp_path, [sys.executable, "-c", "print('x' * (1 << 20))"])
    fifo_in_place_of(Path(job_dir) / "output.log")
    shim = _shim(job_dir, tmp_path / "shim.err")
    try:
        assert shim.wait(30) == 0
    finally:  # (a job stuck on its write, and its shim, are not left behind)
        if shim.poll() is None:
            os.kill(json.loads((Path(job_dir) / "started.json").read_text())["pid"], signal.SIGKILL)
            shim.kill()
            shim.wait()
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 0


# the shim, its output FIFO swapped for another (no reader) the moment it has opened its read end
SWAPPED_SHIM = ("import os, sys\nfrom remote_agent.jobs import shim\n"
                "def swapped(job_dir, **given):\n    fd = opened(job_dir, **given)\n"
                "    path = os.path.join(job_dir, 'output.pipe')\n    os.unlink(path)\n"
                "    os.mkfifo(path, 0o600)\n    return fd\n"
                "opened, shim.open_reader = shim.open_reader, swapped\n"
                "sys.exit(shim.run(sys.argv[1], None))")


def test_a_fifo_swapped_in_for_the_shims_output_pipe_holds_up_no_start(tmp_path):
    """A FIFO swapped in for ``output.pipe`` after the shim opened its read end: the job's
    output goes to the pipe the shim reads, and the job runs to its recorded end; the FIFO
    swapped in is left as it is. Before, the shim opened the job's write end by name, of the
    FIFO no one reads: that open waited for a reader for good, and the job never started."""
    job_dir = Path(_job_dir(tmp_path, [sys.executable, "-c", "print('hello')"]))
    with open(tmp_path / "shim.err", "w") as err:
        shim = subprocess.Popen([sys.executable, "-c", SWAPPED_SHIM, str(job_dir)], cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=REPO),
                                stdout=subprocess.DEVNULL, stderr=err)
    with reaped(shim):  # (a shim stuck on its open is not left behind)
        assert shim.wait(30) == 0
    assert json.loads((job_dir / "exit.json").read_text())["code"] == 0
    assert (job_dir / "output.log").read_text() == "hello\n"
    assert stat.S_ISFIFO(os.lstat(job_dir / "output.pipe").st_mode)


def test_a_fifo_in_place_of_a_log_is_refused_by_each_reader_said_once_and_never_waited_on(
        tmp_path, caplog):
    """A FIFO where a job's log is, read by the log pusher (``read_from``) and by ``job.logs``
    (``log_bytes``), twice each, each read in a thread of its own: each ends, refusing the FIFO
    by name; the daemon's log says so once, and once more when a log is read there again.
    Before, only the reader's client was told: the daemon's log said nothing of it."""
    log = tmp_path / "output.log"
    os.mkfifo(log, 0o600)
    reads: List[Callable[[], object]] = [lambda: read_from(str(log), 0),
                                         lambda: log_bytes([str(log)])] * 2
    refused: List[str] = []

    def read(step: Callable[[], object]) -> None:
        try:
            step()
        except UnsafePath as err:
            refused.append(str(err))
        except RpcError as err:
            refused.append(err.message)

    caplog.set_level(logging.INFO, "remote_agent.jobs")
    for step in reads:
        reader = threading.Thread(target=read, args=(step,), daemon=True)
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), "a read of the FIFO is waiting on it"
    assert refused == ["refusing log %s: not a regular file: a FIFO" % log] * 4
    log.unlink()
    log.write_text("up\n")
    assert read_from(str(log), 0) == (b"up\n", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "refusing log %s: not a regular file: a FIFO; it is not read until it is" % log,
        "%s is read again after 4 failed reads" % log]


def _running_while_down(start_agent, tmp_path, key: str):
    """A job that runs till ``go`` is made, and its daemon killed: (state dir, go, the job)."""
    state, go = str(tmp_path / "host"), tmp_path / "go"
    agent = start_agent("1xL4", state)
    job = agent.call("job.launch", key=key, gpu=0, memory_mib=10,
                     argv=script("import os, time\nwhile not os.path.exists(%r):\n"
                                 "    time.sleep(0.02)\n" % str(go)))
    os.kill(daemon_pid(agent), signal.SIGKILL)
    agent.proc.wait(timeout=10)
    return state, go, job


def _swapped_while_down(start_agent, tmp_path):
    """A job that runs till ``go`` is made, its daemon killed and its ``output.pipe`` replaced
    by another FIFO of the agent's user meanwhile, and the next daemon started: (state dir,
    go, the job, its pipe's path, that daemon)."""
    state, go, job = _running_while_down(start_agent, tmp_path, "k-swapped")
    pipe = Path(state) / "jobs" / job["id"] / "output.pipe"
    fifo_in_place_of(pipe)
    return state, go, job, pipe, start_agent(None, state)


def test_a_daemon_started_where_a_jobs_pipe_was_swapped_serves_and_says_so(start_agent,
                                                                              tmp_path):
    """A running job's ``output.pipe`` replaced by another FIFO of the agent's user while no
    daemon ran: the next daemon starts, serves, says once that the job's output pipe is not
    held and why, and the job runs to its recorded end. The pipe is refused (not the FIFO
    the shim recorded), never held in its place, and one job's refusal stops no daemon."""
    state, go, job, pipe, later = _swapped_while_down(start_agent, tmp_path)
    assert later.call("hello")["problems"] == []
    go.touch()
    done = wait_job(later, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 0)
    said = [line for line in (Path(state) / "daemon.log").read_text().splitlines()
            if "output pipe" in line]
    assert len(said) == 1 and said[0].endswith(
        " ERROR job %s: its output pipe is not held: refusing output pipe %s: it is not the "
        "FIFO the job's shim made (its device and inode %r), another was put in its place" % (
            job["id"], pipe, json.loads((pipe.parent / "started.json").read_text())["pipe"])
    ), said


def test_a_job_whose_swapped_pipe_was_refused_ends_when_its_shim_died(start_agent, tmp_path):
    """A running job's ``output.pipe`` replaced by another FIFO while no daemon ran, then its
    shim killed: the watchdog, taking over from the dead shim, refuses the pipe (said once)
    and goes on watching the job, which ends (lost: its end was not recorded). Before, the
    refusal failed the watchdog's whole look at the job each pass: the job read as running
    for good after it ended."""
    state, go, job, pipe, later = _swapped_while_down(start_agent, tmp_path)
    kill_shim(state, job["id"])
    go.touch()
    done = wait_job(later, job["id"])
    assert done["state"] == "lost", done
    said = [line for line in (Path(state) / "daemon.log").read_text().splitlines()
            if "its output pipe is not" in line]
    assert len(said) == 2 and "its shim died and its output pipe is not taken over: " \
        "refusing output pipe %s" % pipe in said[1], said


def test_a_started_record_whose_pipe_names_no_fifo_is_damage_not_a_swapped_pipe(start_agent,
                                                                                 tmp_path):
    """A running job's ``started.json`` whose ``pipe`` is no device and inode (damaged while
    no daemon ran): the next daemon says the file is damaged and sets it aside, and holds the
    job's pipe; the job runs to its recorded end. Before, the pipe was refused as "another
    put in its place", which it was not, and the job's output went unheld."""
    state, go, job = _running_while_down(start_agent, tmp_path, "k-bad-pipe")
    started = Path(state) / "jobs" / job["id"] / "started.json"
    damaged = dict(json.loads(started.read_text()), pipe=["a", "b"])
    started.with_name("damaged.tmp").write_text(json.dumps(damaged))
    os.rename(started.with_name("damaged.tmp"), started)
    later = start_agent(None, state)
    assert later.call("hello")["problems"] == []
    go.touch()
    done = wait_job(later, job["id"])
    assert (done["state"], done["exit_code"]) == ("exited", 0)
    log = (Path(state) / "daemon.log").read_text()
    assert "output pipe" not in log, log
    assert "%s (the job %s's file) is damaged (TypeError: pipe is ['a', 'b']); set aside as " \
        "%s.damaged" % (started, job["id"], started) in log, log


# a job that prints past its pipe while a FIFO is in place of its log (so the shim dropped some
# of it), then takes the FIFO away and prints a line: the log says what was dropped, and why
DROPPED_THEN_MORE = ("import os, sys\nsys.stdout.write('x' * (1 << 20) + '\\n')\n"
                     "sys.stdout.flush()\nos.unlink(os.path.join(sys.argv[1], 'output.log'))\n"
                     "print('more')")


def test_the_note_of_output_dropped_names_the_log_by_its_own_path(tmp_path):
    """The shim writes into its job's folder through a descriptor of it, but its words name
    the folder's files by their paths: a note in the job's own log naming
    /proc/self/fd/N/output.log names nothing a reader can find."""
    job_dir = _job_dir(tmp_path, [])
    spec = json.loads((Path(job_dir) / "spec.json").read_text())
    spec["argv"] = [sys.executable, "-c", DROPPED_THEN_MORE, job_dir]
    (Path(job_dir) / "spec.json").write_text(json.dumps(spec))
    log = Path(job_dir) / "output.log"
    fifo_in_place_of(log)
    shim = _shim(job_dir, tmp_path / "shim.err")
    assert shim.wait(30) == 0
    assert json.loads((Path(job_dir) / "exit.json").read_text())["code"] == 0
    lines = log.read_text().splitlines()
    notes = [line for line in lines if line.startswith("[fractui: ")]
    assert lines[-1] == "more" and len(notes) == 1, lines[-1]
    assert notes[0].endswith("its log could not be written (refusing log %s: not a regular "
                             "file: a FIFO)]" % log), notes
