"""``fractui logs`` for a user who reaches only the store: a config with a store and no hosts.
A real lease holder (``fractui scheduler``, its own process) keeps a running job's output tail
when asked, and a finished job's at its end; the user reads both without any host."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fractui import kept_output
from fractui.config import QueueConfig
from fractui.store import open_store
from tests import localfleet
from tests.cli_run import in_process
from tests.conftest import REPO, stop_host
from tests.localfleet import wait

local_fleet = localfleet.local_fleet
QUARTER = QueueConfig(name="quarter", gpu=0.25)
TALK = [sys.executable, "-c", "print('hello', flush=True); print('line two', flush=True)\n"
        "import time; time.sleep(600)"]
BYE = [sys.executable, "-c", "print('all done', flush=True)"]


def _store_only(f) -> str:
    """A user's config: the store, and not one host."""
    path = f.tmp / "user.toml"
    path.write_text("[store]\nurl = %s\n" % json.dumps(f.config.store.url))
    return str(path)


def _logs(config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fractui", "--config", config, "logs", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_a_user_with_only_the_store_reads_a_running_and_a_finished_jobs_output(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    user = _store_only(f)
    head = f.scheduler_process("head")
    try:
        talking = f.submit("quarter", argv=TALK)
        done = f.submit("quarter", argv=BYE)
        wait(lambda: f.states()[talking.id] == "running" and f.states()[done.id] == "done",
             f.states, alive=head)
        agent_job = f.store.get(talking.id).agent_job
        wait(lambda: f.fleet.session("gpu-a").call("job.logs", {"job": agent_job})["lines"]
             == ["hello", "line two"], f.states)  # both lines written before it is asked
        running = _logs(user, str(talking.id))
        assert (running.returncode, running.stderr) == (0, ""), running.stderr
        assert running.stdout.splitlines()[-2:] == ["hello", "line two"]
        finished = _logs(user, str(done.id))
        assert finished.returncode == 0, finished.stderr
        assert finished.stdout == "all done\n"
        assert finished.stderr == "fractui: job %d ended: exited 0\n" % done.id
        assert f.store.log_tail(done.id).complete  # kept at its end, not only when asked
        follow = _logs(user, "-f", str(talking.id))
        assert follow.returncode == 2 and "without -f" in follow.stderr, follow.stderr
    finally:
        head.terminate()
        head.wait(30)
    # no scheduler, no host: a finished job's output is still there, from the store alone
    stop_host(f.config.hosts[0].state_dir)
    again = _logs(user, "-n", "1", str(done.id))
    assert (again.returncode, again.stdout) == (0, "all done\n"), again.stderr


def test_without_a_scheduler_a_running_jobs_output_is_refused_with_why(local_fleet, capfd,
                                                                      monkeypatch):
    # in this process, with the wait for a lease holder's answer shortened: the wait runs
    # out all the same (the product's is 10 s)
    monkeypatch.setattr(kept_output, "LOG_WAIT_S", 1.0)
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job = f.submit("quarter", argv=TALK)
    f.until(lambda: f.states()[job.id] == "running")  # the test's scheduler: no relay runs
    code, _out, err = in_process(capfd, ["--config", _store_only(f), "logs", str(job.id)])
    assert code == 1
    assert "output is not in the store: no scheduler answered within 1 s" in err and "gpu-a" \
        in err, err


def test_a_tail_keeps_the_last_whole_lines_that_fit_and_cuts_only_a_line_too_long():
    from fractui.store.model import tail_text

    assert tail_text(["a", "b"]) == "a\nb\n"
    assert tail_text(["aaa", "bb"], limit=4) == "bb\n"  # "aaa\n" would not fit beside it
    assert tail_text(["x" * 10], limit=5) == "xxxx\n"
    assert tail_text(["é" * 4], limit=6) == "éé\n"  # cut between two characters
    assert tail_text([], limit=5) == ""


def test_follow_with_no_host_in_the_config_is_refused_at_once_not_once_the_job_starts(tmp_path):
    # a pending job and no scheduler: it may never start, and -f could not follow it if it did
    url = "sqlite://%s" % (tmp_path / "store.db")
    store = open_store(url)
    try:
        job = store.submit("quarter", None, "wait", ["sleep", "1"], QUARTER.request(), "test")
    finally:
        store.close()
    user = tmp_path / "user.toml"
    user.write_text("[store]\nurl = %s\n" % json.dumps(url))
    try:
        follow = subprocess.run([sys.executable, "-m", "fractui", "--config", str(user), "logs",
                                 "-f", str(job.id)], capture_output=True, text=True, cwd=REPO,
                                timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("logs -f waited for a job it could never follow")
    assert (follow.returncode, follow.stdout) == (2, ""), follow
    assert follow.stderr == (
        "fractui: logs -f follows a job's output over SSH, and the config names no [[hosts]]: "
        "without -f, fractui logs %d shows the end of its output through the store\n" % job.id)


def test_a_role_that_may_only_read_gets_the_kept_tail_saying_why_no_fresher_one(
        local_fleet, pg_server, capfd):
    """On PostgreSQL a role with SELECT alone may not ask the lease holder for a fresher tail
    (INSERT on log_requests): it reads the one kept, warned, not refused."""
    db = pg_server.new_database()
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], store_url=pg_server.url(db))
    job = f.submit("quarter", argv=TALK)
    f.until(lambda: f.states()[job.id] == "running")
    f.store.keep_log(job.id, "hello\nline two\n", complete=False)
    reader = "reader_" + db
    pg_server.sql("CREATE ROLE %s LOGIN" % reader)
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % reader, db=db)
    config = f.tmp / "reader.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(pg_server.url(db, user=reader)))
    code, out, err = in_process(capfd, ["--config", str(config), "logs", str(job.id)])
    assert (code, out) == (0, "hello\nline two\n"), err
    assert err.startswith("fractui: warning: store postgresql://"), err
    assert ("role %s may not do this: permission denied for table log_requests, so no fresher "
            "output was asked for: this is job %d's output as kept at " % (reader, job.id)) \
        in err, err


def test_logs_of_a_job_that_ended_without_running_says_it_never_ran(tmp_path):
    """A job cancelled while it waited, or whose every launch failed, has no output: ``logs``
    says it never ran and why it ended (exit 1), not that it "has not run yet"."""
    url = "sqlite://%s" % (tmp_path / "store.db")
    store = open_store(url)
    try:
        job = store.submit("quarter", None, "wait", ["sleep", "1"], QUARTER.request(), "test")
        store.ended(job.id, ["pending"], "cancelled", "cancelled by ann@head", "ann@head",
                    "cancelled by ann@head", "cancel")
    finally:
        store.close()
    user = tmp_path / "user.toml"
    user.write_text("[store]\nurl = %s\n" % json.dumps(url))
    done = _logs(str(user), str(job.id))
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == ("fractui: job %d is cancelled: it never ran (cancelled by ann@head)\n"
                           % job.id)
