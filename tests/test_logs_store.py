"""``fractui logs`` for a user who reaches only the store: a config with a store and no hosts.
A real lease holder (``fractui scheduler``, its own process) keeps a running job's output tail
when asked, and a finished job's at its end; the user reads both without any host."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from fractui import kept_output
from fractui.config import QueueConfig
from fractui.fleet.host import HostSession
from fractui.scheduler.relay import LogRelay
from fractui.store import Job, Slot, open_store
from fractui.store.sql import SqlStore
from fractui.words import NO_SCHEDULER
from tests import localfleet
from tests.cli_run import in_process, reaped
from tests.conftest import REPO, stop_host
from tests.localfleet import wait

local_fleet = localfleet.local_fleet
QUARTER = QueueConfig(name="quarter", gpu=0.25)
TALK = [sys.executable, "-c", "print('hello', flush=True); print('line two', flush=True)\n"
        "import time; time.sleep(600)"]
BYE = [sys.executable, "-c", "print('all done', flush=True)"]


def _store_only(f, url: Optional[str] = None) -> str:
    """A user's config: the store (or the way to it at ``url``: one a test cuts), and not one
    host."""
    path = f.tmp / "user.toml"
    path.write_text("[store]\nurl = %s\n" % json.dumps(url or f.config.store.url))
    return str(path)


def _logs(config: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fractui", "--config", config, "logs", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_a_user_with_only_the_store_reads_a_running_and_a_finished_jobs_output(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    user = _store_only(f)
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
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
    # no scheduler, no host: a finished job's output is still there, from the store alone
    stop_host(f.config.hosts[0].state_dir)
    again = _logs(user, "-n", "1", str(done.id))
    assert (again.returncode, again.stdout) == (0, "all done\n"), again.stderr


def test_logs_of_a_job_that_printed_nothing_says_so_on_stderr(local_fleet):
    """``logs`` of a running job that had printed nothing answered nothing at all, exit 0: the
    user could not tell "nothing yet" from a ``logs`` that broke. It says so on stderr, stdout
    staying the job's output (none): through the store, over SSH, of a job launched directly;
    of an ended job, that it printed nothing; ``logs -f``, before it follows."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    user, admin = _store_only(f), f.write_config()
    head = f.scheduler_process("head")
    followers = []
    try:
        quiet = f.submit("quarter")  # a sleeper: it prints nothing
        ended = f.submit("quarter", argv=[sys.executable, "-c", "pass"])
        wait(lambda: f.states()[quiet.id] == "running" and f.states()[ended.id] == "done",
             f.states, alive=head)
        launched = f.fractui("launch", "gpu-a", "0", "--memory-mib", "512", "--json", "--",
                             *localfleet.sleeper(600))
        assert launched.returncode == 0, launched
        ref = json.loads(launched.stdout)["ref"]
        direct = f.fleet.session("gpu-a").call("job.get", {"job": ref.split("/")[1]})
        since = {str(quiet.id): f.store.get(quiet.id).started_at, ref: direct["started_at"]}
        yet = {word: "fractui: %s has printed nothing yet (running on gpu-a since %s)" % (
            "job " + word if "/" not in word else word,
            time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(at)))
            for word, at in since.items()}
        for config, word in ((user, str(quiet.id)), (admin, str(quiet.id)), (admin, ref)):
            got = _logs(config, word)
            assert (got.returncode, got.stdout, got.stderr) == (0, "", yet[word] + "\n"), got
        for config in (user, admin):
            got = _logs(config, str(ended.id))
            assert (got.returncode, got.stdout, got.stderr) == (
                0, "", "fractui: job %d printed nothing\nfractui: job %d ended: exited 0\n" % (
                    ended.id, ended.id)), got
        followers = [_following(config, quiet.id) for config in (user, admin)]
        assert [p.stderr.readline() for p in followers] == [  # type: ignore[union-attr]
            yet[str(quiet.id)] + "; following it\n"] * 2
        assert f.fractui("cancel", str(quiet.id)).returncode == 0
        for follower in followers:
            out, err = follower.communicate(timeout=120)
            assert (follower.returncode, out) == (0, ""), err
            assert err.startswith("fractui: job %d ended: cancelled by " % quiet.id), err
    finally:
        for follower in followers:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        head.terminate()
        head.wait(30)


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


def _counting(go: Path, burst: int = 0) -> list[str]:
    """A job that prints numbered lines, waits for ``go`` to exist (the test makes it once
    the follower printed the first three), then ``burst`` lines of 100 bytes in one write,
    then more numbered lines over a second or so, and a line written in two parts."""
    return [sys.executable, "-c", textwrap.dedent("""
        import os, sys, time
        for i in range(1, 4):
            print("line %%d" %% i, flush=True)
        while not os.path.exists(%r):
            time.sleep(0.05)
        sys.stdout.write("".join("%%06d %%s\\n" %% (i, "x" * 92) for i in range(%d)))
        for i in range(4, 31):
            print("line %%d" %% i, flush=True)
            time.sleep(0.05)
        print("a line written in two", end="", flush=True)  # a read may fall in between
        time.sleep(1.5)
        print(" parts", flush=True)
        """ % (str(go), burst))]


# ``python -m fractui`` with its wait for a lease holder's answer (LOG_WAIT_S) set to argv[1]
SHORT_WAIT = ("import sys\nfrom fractui import kept_output\nfrom fractui.cli import main\n"
              "kept_output.LOG_WAIT_S = float(sys.argv.pop(1))\nsys.exit(main())")


def _following(config: str, job: int, wait_s: Optional[float] = None) -> subprocess.Popen:
    """``fractui logs -f JOB`` with ``config``, in its own process, its output piped; its
    wait for a lease holder's answer ``wait_s`` where given, else the product's."""
    program = ["-m", "fractui"] if wait_s is None else ["-c", SHORT_WAIT, str(wait_s)]
    return subprocess.Popen([sys.executable, *program, "--config", config, "logs", "-f",
                             str(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, stdin=subprocess.DEVNULL)


def _follow_after_three(user: str, job: int, go: Path) -> Tuple[int, str, str]:
    """``logs -f`` of the job, in its own process: once it printed the job's first three
    lines, ``go`` is made; (exit code, stdout, stderr) once it returns."""
    with reaped(_following(user, job)) as follower:
        first = [follower.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        go.touch()
        out, err = follower.communicate(timeout=120)
    return follower.returncode, "".join(first) + out, err


def test_a_user_with_only_the_store_follows_a_job_line_by_line_to_its_end(local_fleet):
    """logs -f through the store: each line once, in order, as the job writes them (the
    first three come before the job writes the rest), and it returns as the job ends."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    head = f.scheduler_process("head")
    go = f.tmp / "go"
    with reaped(head, signal.SIGTERM):
        job = f.submit("quarter", argv=_counting(go))
        code, out, err = _follow_after_three(_store_only(f), job.id, go)
    assert code == 0, err
    assert out == "".join("line %d\n" % i for i in range(1, 31)) + \
        "a line written in two parts\n"
    assert err.endswith("fractui: job %d ended: exited 0\n" % job.id), err
    assert "not shown" not in err, err


def test_a_follower_outrun_by_the_job_says_how_many_bytes_the_store_did_not_keep(local_fleet):
    """A burst of 1,000,000 bytes between two reads: the store keeps 64 KiB of it, and the
    follower says how many bytes it never saw; what it prints is whole lines of the output,
    each once and in order, and with the bytes not shown it is all of it."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    head = f.scheduler_process("head")
    go = f.tmp / "go"
    with reaped(head, signal.SIGTERM):
        job = f.submit("quarter", argv=_counting(go, burst=10000))
        code, out, err = _follow_after_three(_store_only(f), job.id, go)
    assert code == 0, err
    written = "".join("line %d\n" % i for i in range(1, 4)) + "".join(
        "%06d %s\n" % (i, "x" * 92) for i in range(10000)) + "".join(
        "line %d\n" % i for i in range(4, 31)) + "a line written in two parts\n"
    missed = [int(n) for n in re.findall(r"job %d wrote (\d+) bytes more than the store keeps "
                                         r"\(64 KiB\) since the last output printed: they "
                                         r"are not shown" % job.id, err)]
    assert missed and len(out.encode()) + sum(missed) == len(written.encode()), err
    lines = written.splitlines()
    places = [lines.index(line) for line in out.splitlines()]  # each a line written
    assert places == sorted(set(places)) and places[:3] == [0, 1, 2], places[:10]
    assert out.endswith("line 30\na line written in two parts\n")


def test_a_follower_stops_when_no_scheduler_answers_and_says_so(local_fleet):
    """The lease holder goes away while a job is followed: the follower stops after its wait,
    saying no scheduler runs, and does not block for ever. Its wait is 3 s here (the
    product's is 10 s): long enough for the lease holder's answers while it is there."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
        job = f.submit("quarter", argv=TALK)
        follower = _following(_store_only(f), job.id, wait_s=3.0)
        with reaped(head, signal.SIGTERM):
            first = [follower.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        try:
            out, err = follower.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
            pytest.fail("logs -f kept waiting for a scheduler that had gone")
    assert (follower.returncode, "".join(first) + out) == (1, "hello\nline two\n"), err
    # (its lease handed over as it ended: the store says none holds it, and so does logs)
    assert err.endswith("fractui: stopped following job %d: %s for 3 s\n" % (
        job.id, NO_SCHEDULER)), err


def test_follow_with_no_scheduler_at_all_says_so_after_its_wait(local_fleet, capfd,
                                                                monkeypatch):
    # in this process, the wait shortened as above: a running job, and no lease holder
    monkeypatch.setattr(kept_output, "LOG_WAIT_S", 1.0)
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job = f.submit("quarter", argv=TALK)
    f.until(lambda: f.states()[job.id] == "running")  # the test's scheduler: no relay runs
    code, out, err = in_process(capfd, ["--config", _store_only(f), "logs", "-f",
                                        str(job.id)])
    assert (code, out) == (1, ""), err
    assert err == ("fractui: job %d's output is not in the store: no scheduler answered "
                   "within 1 s (is one running, holding the lease, able to reach gpu-a?)\n"
                   % job.id)


@pytest.mark.parametrize("follow", [[], ["-f"]])
def test_a_running_jobs_output_with_no_lease_holder_says_none_runs(tmp_path, capfd,
                                                                   monkeypatch, follow):
    """A running job's output asked for while no scheduler holds the lease: the researcher was
    asked "is one running, holding the lease, able to reach gpu-a?", which the store could
    answer and she cannot. Said as jobs and logs -f of a pending job say it: none runs."""
    monkeypatch.setattr(kept_output, "LOG_WAIT_S", 1.0)
    url = "sqlite://%s" % (tmp_path / "store.db")
    store = open_store(url)
    try:
        job = store.submit("quarter", None, "talk", TALK, QUARTER.request(), "test")
        store.place(job.id, Slot("gpu-a", (0,), memory_mib=5758), "sched", "decided")
        store.started(job.id, "j1", None, "sched", "launched")
    finally:
        store.close()
    user = tmp_path / "user.toml"
    user.write_text("[store]\nurl = %s\n" % json.dumps(url))
    code, out, err = in_process(capfd, ["--config", str(user), "logs", *follow, str(job.id)])
    assert (code, out) == (1, ""), err
    assert err == "fractui: job %d's output is not in the store: %s for 1 s\n" % (
        job.id, NO_SCHEDULER), err


@pytest.mark.parametrize("why", [None, "team vision is at its quota (1.00 of 1.00 GPUs held)"])
def test_follow_of_a_pending_job_with_no_scheduler_says_why_and_stops_after_its_wait(
        tmp_path, capfd, monkeypatch, why):
    """A pending job and no scheduler: it never starts, so logs -f says so after its wait
    (shortened here) instead of waiting for ever; as it starts waiting it says why the job
    waits, where the store says (its team's quota, say: a wait that may last hours reads
    otherwise as a hang)."""
    monkeypatch.setattr(kept_output, "LOG_WAIT_S", 1.0)
    url = "sqlite://%s" % (tmp_path / "store.db")
    store = open_store(url)
    try:
        job = store.submit("quarter", None, "wait", ["sleep", "1"], QUARTER.request(), "test")
        if why is not None:
            store.waiting(job.id, why)
    finally:
        store.close()
    user = tmp_path / "user.toml"
    user.write_text("[store]\nurl = %s\n" % json.dumps(url))
    code, out, err = in_process(capfd, ["--config", str(user), "logs", "-f", str(job.id)])
    assert (code, out) == (1, ""), err
    assert err == ("fractui: job %d is pending%s; waiting for it to start\n"
                   "fractui: stopped waiting for job %d to start: %s for 1 s\n"
                   % (job.id, "" if why is None else " (%s)" % why, job.id, NO_SCHEDULER))


def test_a_kept_tail_is_the_logs_bytes_one_for_one_and_a_follower_prints_what_is_new():
    from fractui.kept_output import after
    from fractui.store.model import LogTail, tail_bytes

    assert tail_bytes(b"a\nb\nc", True, False, limit=4) == ("b\nc", 0)  # a partial line kept
    assert tail_bytes(b"xx\nbb\n", False, True) == ("bb\n", 0)  # not the log's start: cut
    assert tail_bytes(b"ab\xc3", True, False) == ("ab", 1)  # a character half written: later
    assert tail_bytes(b"ab\xc3", True, True) == ("ab?", 0)  # ... never, once the job ended
    assert tail_bytes(b"a\xff\n", True, False) == ("a?\n", 0)  # no UTF-8: one byte each
    assert tail_bytes("é".encode() * 3, False, False, limit=4) == ("éé", 0)  # one long line
    tail = LogTail(1, "b\nc\nd", False, 0.0, offset=105)
    assert after(tail, 103).text == "\nd"  # exactly the bytes past the last printed
    assert (after(tail, 105).text, after(tail, 105).missed) == ("", 0)
    assert (after(tail, 99).text, after(tail, 99).missed) == ("b\nc\nd", 1)  # 6 new, 5 kept
    rotated = after(tail, 2000)  # a smaller offset: the log rotated
    assert (rotated.rotated, rotated.text, rotated.missed) == (True, "b\nc\nd", 100)


def _reader_of_a_running_job(local_fleet, pg_server) -> Tuple[int, str, Path]:
    """A running job whose tail is kept, incomplete, and a role of its team with SELECT
    alone (a job's output is its team's and the admins' to read): the job, the role, and a
    config naming the store as that role."""
    db = pg_server.new_database()
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER], store_url=pg_server.url(db))
    team = "t" + db
    job = f.submit("quarter", team, argv=TALK)
    f.until(lambda: f.states()[job.id] == "running")
    f.store.keep_log(job.id, "hello\nline two\n", complete=False)
    reader = "reader_" + db
    pg_server.sql("CREATE ROLE fractui_team_%s" % team)
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (reader, team))
    pg_server.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % reader, db=db)
    config = f.tmp / "reader.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(pg_server.url(db, user=reader)))
    return job.id, reader, config


def test_a_role_that_may_only_read_gets_the_kept_tail_saying_why_no_fresher_one(
        local_fleet, pg_server, capfd):
    """On PostgreSQL a role with SELECT alone may not ask the lease holder for a fresher tail
    (INSERT on log_requests): it reads the one kept, warned, not refused."""
    job, reader, config = _reader_of_a_running_job(local_fleet, pg_server)
    code, out, err = in_process(capfd, ["--config", str(config), "logs", str(job)])
    assert (code, out) == (0, "hello\nline two\n"), err
    assert err.startswith("fractui: warning: store postgresql://"), err
    assert ("role %s may not do this: permission denied for table log_requests, so no fresher "
            "output was asked for: this is job %d's output as kept at " % (reader, job)) \
        in err, err


def test_a_role_refused_at_a_reconnect_is_not_read_as_one_that_may_only_read(
        local_fleet, pg_server, capfd, monkeypatch):
    """The ask for a fresher tail was let off for any StoreDenied, as the reader's: a role the
    server refused at a reconnect (its session ended, its LOGIN taken away meanwhile) was
    shown the kept tail, exit 0, as though it were one not granted the ask. It is the store's
    error now, as at any other call (let in again just after: only the ask met it)."""
    job, reader, config = _reader_of_a_running_job(local_fleet, pg_server)
    asked = SqlStore.ask_log

    def refused_meanwhile(store: SqlStore, job_id: int, actor: str) -> None:
        pg_server.refuse_at_reconnect(reader)
        try:
            asked(store, job_id, actor)
        finally:
            pg_server.sql("ALTER ROLE %s LOGIN" % reader)
    monkeypatch.setattr(SqlStore, "ask_log", refused_meanwhile)
    code, out, err = in_process(capfd, ["--config", str(config), "logs", str(job)])
    assert (code, out) == (1, ""), err
    assert re.search("refuses role %s: .*not permitted to log in" % reader, err), err
    assert "fresher" not in err, err


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


def test_ctrl_c_stops_following_through_the_store_not_the_job(local_fleet):
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
        job = f.submit("quarter", argv=TALK)
        with reaped(_following(_store_only(f), job.id)) as follower:
            first = [follower.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
            follower.send_signal(signal.SIGINT)
            out, err = follower.communicate(timeout=60)
        assert (follower.returncode, "".join(first) + out) == (130, "hello\nline two\n"), err
        assert err.endswith("fractui: stopped following; job %d goes on (fractui cancel %d "
                            "cancels it)\n" % (job.id, job.id)), err
        assert f.states()[job.id] == "running"


def _relayed(f, argv: List[str], lines: List[str]) -> Tuple[Job, HostSession, LogRelay]:
    """A quarter job of ``argv`` on gpu-a, once its agent gives ``lines`` of its output: (the
    job as the store has it, the test's session to gpu-a, a relay of output through that
    session, writing as the test scheduler, which holds the lease)."""
    job = f.submit("quarter", argv=argv)
    f.until(lambda: f.states()[job.id] == "running")
    job = f.store.get(job.id)
    session = f.fleet.session("gpu-a")
    wait(lambda: session.call("job.logs", {"job": job.agent_job})["lines"] == lines, f.states)
    relay = LogRelay(f.store, lambda host, method, params: session.call(method, params), None)
    relay.epoch = f.scheduler.epoch  # the test scheduler holds the lease: its writes
    return job, session, relay


def test_the_relay_keeps_an_exact_tail_only_of_an_agent_that_gives_its_bytes(local_fleet):
    """An agent that lists job.logs.bytes: its log's end as it is and where it ends; an
    agent without it (older): its lines, with no offset, as before (logs -f then says it
    cannot follow)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job, _, relay = _relayed(f, [sys.executable, "-c", "import sys, time\n"
                                 "sys.stdout.write('one\\r\\ntwo, not ended'); "
                                 "sys.stdout.flush(); time.sleep(600)"], ["one", "two, not ended"])
    relay._keep(job, True)
    tail = f.store.log_tail(job.id)
    assert (tail.text, tail.offset, tail.complete) == ("one\r\ntwo, not ended", 19, False)
    relay._keep(job, False)
    tail = f.store.log_tail(job.id)
    assert (tail.text, tail.offset) == ("one\ntwo, not ended\n", None)


def test_a_tail_kept_as_lines_is_shown_by_logs_and_not_followed(local_fleet, capfd):
    """A lease holder that keeps a tail with no offset (an agent older than job.logs.bytes:
    its lines, as before): logs -f says it cannot follow it, and why, rather than guess."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job = f.submit("quarter", argv=TALK)
    f.until(lambda: f.states()[job.id] == "running")

    def answer() -> None:  # as the lease holder's relay of before answers a request
        wait(lambda: job.id in f.store.log_requests(), f.states)
        f.store.keep_log(job.id, "hello\nline two\n", complete=False, epoch=f.scheduler.epoch)

    answering = threading.Thread(target=answer, daemon=True)
    answering.start()
    code, out, err = in_process(capfd, ["--config", _store_only(f), "logs", "-f",
                                        str(job.id)])
    answering.join(30)
    assert (code, out) == (1, ""), err
    assert err == ("fractui: job %d's output cannot be followed through the store: its output "
                   "is kept with no offset (the agent on gpu-a gave lines, being older than "
                   "job.logs.bytes, or did not give it); fractui logs %d shows what is kept\n"
                   % (job.id, job.id))


def test_an_output_answered_malformed_or_refused_answers_the_request_keeping_the_last_tail(
        local_fleet, monkeypatch):
    """An agent whose answer to job.logs cannot be read, or that refuses it: the request is
    answered with the tail kept last (what ``logs`` and ``submit --wait`` show after a failure)
    and a line saying why it is no fresher, one line however many reads fail; a read that
    goes through keeps the fresh tail again. Before: a malformed answer left the request
    standing, asked again at every pass; then it was answered with the line alone, and the
    job's last good output was lost."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job, session, relay = _relayed(f, TALK, ["hello", "line two"])
    relay._keep(job, True)
    good = f.store.log_tail(job.id)
    assert (good.text, good.offset) == ("hello\nline two\n", 15)
    malformed = ("hello\nline two\n[fractui: the agent on gpu-a did not give job %d's output: "
                 "gpu-a: the agent's answer to job.logs was malformed: job.logs.lines: 5 is not "
                 "a list; the lines above are its output as last read]\n" % job.id)
    with monkeypatch.context() as broken:
        broken.setattr(session._conn.client, "call",  # a broken agent's answer
                       lambda method, params, timeout_s: {"lines": 5, "offset": 0})
        for _ in range(2):
            f.store.ask_log(job.id, "alice")
            relay._keep(job, True)
            assert f.store.log_requests() == []
            tail = f.store.log_tail(job.id)
            assert (tail.text, tail.offset, tail.complete) == (malformed, None, False)
    relay._keep(dataclasses.replace(job, agent_job="gone"), True)  # one it does not keep
    tail = f.store.log_tail(job.id)
    assert tail.text.startswith("hello\nline two\n[fractui: the agent on gpu-a did not give "
                                "job %d's output: " % job.id), tail.text
    assert tail.text.endswith("; the lines above are its output as last read]\n"), tail.text
    assert tail.text.count("\n") == 3 and "malformed" not in tail.text, tail.text
    relay._keep(job, True)
    assert f.store.log_tail(job.id).text == good.text


def test_a_jobs_last_line_like_the_relays_own_is_kept_as_its_output(local_fleet, monkeypatch):
    """A tail kept as lines (an agent older than job.logs.bytes) ends in the job's own last
    line, which a job may print as the line a failed read leaves: read with \\d, one naming
    job 5000 nines ended the relay in int()'s limit at the next failed read, not the line
    saying why the tail is no fresher."""
    mimic = "[fractui: the agent on gpu-a did not give job %s's output: no]" % ("9" * 5000)
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job, session, relay = _relayed(f, [sys.executable, "-c", "import time\n"
                                       "print(%r, flush=True); time.sleep(600)" % mimic], [mimic])
    relay._keep(job, False)  # its lines, no offset
    assert f.store.log_tail(job.id).text == mimic + "\n"
    monkeypatch.setattr(session._conn.client, "call",  # a broken agent's answer
                        lambda method, params, timeout_s: {"lines": 5})
    relay._keep(job, False)
    said = f.store.log_tail(job.id).text.split("\n")
    assert said[0] == mimic and said[1].startswith(
        "[fractui: the agent on gpu-a did not give job %d's output: " % job.id), said


def test_an_earlier_attempts_output_read_after_the_next_began_is_not_kept_as_its(local_fleet):
    """A read of attempt 0's output that lands once attempt 1 runs (queued on the host's lane
    before the requeue) is not kept as the job's output: its request stands, and the next read,
    of attempt 1, answers it. Before: attempt 0's output was kept, and shown, as the job's."""
    f = local_fleet({"gpu-a": "1xL4"}, [QUARTER])
    job = f.submit("quarter", argv=[sys.executable, "-c", "import os, time\n"
                                    "print('attempt of pid', os.getpid(), flush=True)\n"
                                    "time.sleep(600)"])
    f.until(lambda: f.states()[job.id] == "running")
    first = f.store.get(job.id)
    session = f.fleet.session("gpu-a")
    wait(lambda: session.call("job.logs", {"job": first.agent_job})["lines"], f.states)
    f.store.stopping(job.id, ("running",), "requeue", "alice", "again")
    f.until(lambda: f.store.get(job.id).attempt == 1 and f.states()[job.id] == "running")
    now = f.store.get(job.id)
    wait(lambda: session.call("job.logs", {"job": now.agent_job})["lines"], f.states)
    f.store.ask_log(job.id, "alice")
    relay = LogRelay(f.store, lambda host, method, params: session.call(method, params), None)
    relay.epoch = f.scheduler.epoch  # the test scheduler holds the lease: its writes
    relay._keep(first, True)  # the read queued for attempt 0
    assert f.store.log_tail(job.id) is None and job.id in f.store.log_requests()
    relay._keep(now, True)
    [line] = session.call("job.logs", {"job": now.agent_job})["lines"]
    assert f.store.log_tail(job.id).text == line + "\n" and f.store.log_requests() == []
