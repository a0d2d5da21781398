"""The ``fractui`` command as a whole: one exit-code rule for every verb, ``jobs`` and ``logs``
saying why each job ended, a quiet exit on a closed pipe, and help when there is no config.
Real parts throughout: simulated hosts with real agents and jobs, a real SQLite store, the
real ``main`` (and, where the process matters, ``python -m fractui``)."""

from __future__ import annotations

import io
import json
import math
import os
import pwd
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Tuple

import pytest

from fractui import kept_output
from fractui.cli import main
from fractui.config import QueueConfig
from fractui.fleet.host import HostUnavailable
from fractui.outcome import Terminated
from fractui.store import Slot, SqliteStore, sqlite_url
from fractui.terminal import TerminalText
from fractui.whoami import os_user
from fractui.words import quoted
from tests import as_user, localfleet
from tests.cli_run import (closed_port, fractui_process, in_process, leaks, reaped,
                           subprocess_run)
from tests.localfleet import local_fleet, sleeper  # noqa: F401 - the fixture
from tests.test_jobs import alive
from tests.test_tui_demo import Terminal

PY = sys.executable


def simload(*args: str) -> list:
    return [PY, "-m", "remote_agent.simload", *args]


class Cli:
    """A local fleet (host gpu-a: an L4 and an A100 in MIG mode) and an offline host, down,
    in a config file; ``run`` is ``fractui --config FILE ARGV`` in this process."""

    def __init__(self, fleet: localfleet.LocalFleet, capfd):
        self.f = fleet
        self.capfd = capfd
        self.config = fleet.tmp / "cli.toml"
        self.config.write_text(open(fleet.write_config()).read() + (
            '[ssh]\nconnect_timeout = 2\n[[hosts]]\nname = "down"\nhost = "127.0.0.1"\n'
            'port = %d\n' % closed_port()))

    def run(self, *argv: str):
        return in_process(self.capfd, ["--config", str(self.config), *argv])


@pytest.fixture
def cli(local_fleet, capfd):  # noqa: F811
    return Cli(local_fleet({"gpu-a": "1xL4,1xA100-80GB:mig"},
                           [QueueConfig(name="quarter", gpu=0.25)]), capfd)


def test_every_verb_exits_by_the_one_rule(cli):
    """0 done; 1 the fleet, an agent or the store refused or failed; 2 the command line or the
    config is wrong — verb by verb, with what the user reads."""
    pending = [cli.f.submit("quarter") for _ in range(4)]
    a, b, c, d = (str(j.id) for j in pending)
    launched = cli.run("launch", "gpu-a", "0", "--memory-mib", "1024", "--json", "--",
                       *sleeper(600))
    assert launched[0] == 0, launched
    ref = re.search(r'"ref": "(gpu-a/j\d+)"', launched[1]).group(1)
    cases = [
        # (argv, exit code, what stderr says)
        (["status"], 1, "down             offline    cannot reach 127.0.0.1"),
        (["status", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["doctor", "gpu-a"], 0, ""),
        (["doctor", "down"], 1, "cannot reach 127.0.0.1"),
        (["doctor", "nope"], 2, "unknown host 'nope' (known: gpu-a, down)"),
        (["trust", "down", "--yes"], 1, "down: cannot reach 127.0.0.1"),
        (["trust", "gpu-a"], 2, "gpu-a is a local simulated host"),
        (["trust"], 2, "the following arguments are required: HOST"),
        (["mig", "gpu-a", "1", "1g.10gb", "--yes"], 0, ""),
        (["mig", "gpu-a", "0", "1g.10gb", "--yes"], 1, "MIG"),  # the L4: the agent refuses
        (["mig", "gpu-a", "1", "1g.10gb"], 1, "not applied"),  # no terminal to confirm on
        (["mig", "gpu-a", "1", "3g.41gb"], 2, "a MIG profile no GPU model has"),
        (["mig", "down", "1", "1g.10gb", "--yes"], 1, "down is offline"),
        (["mig", "gpu-a", "-5", "1g.10gb"], 2, "GPU index -5 is out of range"),
        (["mig", "gpu-a", " x", "1g.10gb"], 2, "a GPU is named by its index or uuid"),
        (["launch", "gpu-a", "0", "--memory-mib", "999999", "--", "true"], 1, "free"),
        (["launch", "gpu-a", "0", "--memory-mib", "0", "--", "x"], 2, "from 1 to"),
        (["launch", "gpu-a", "0", "--memory-mib", "5"], 2, "launch needs the program"),
        (["launch", "down", "0", "--memory-mib", "5", "--", "x"], 1, "down is offline"),
        (["launch", "nope", "0", "--memory-mib", "5", "--", "x"], 2, "unknown host 'nope'"),
        (["stop", "gpu-a/j999"], 1, "j999"),
        (["stop", "gpu-a"], 2, "a job is named HOST/JOB"),
        (["stop", "nope/j1"], 2, "unknown host 'nope'"),
        (["stop", ref, "--grace", "-1"], 2, "from 0 to 3600"),
        (["submit", "--queue", "quarter", "--", "x"], 0, ""),
        (["submit", "--queue", "nope", "--", "x"], 2, "unknown queue 'nope' (known: quarter)"),
        (["submit", "--queue", "quarter"], 2, "submit needs the program to run after --, "
                                               "e.g. fractui submit --queue quarter -- python "
                                               "train.py"),  # its queue, not one it has not
        (["submit", "--queue", "quarter", "--", ""], 2, "an empty word"),
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--", ""], 2, "an empty word"),
        # an empty key is no key: each retry of `--key "$K"` with K unset a new job
        (["submit", "--queue", "quarter", "--key", "", "--", "x"], 2, "--key is an empty word"),
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--key", "", "--", "x"], 2,
         "--key is an empty word: give the key, or leave --key out"),
        (["submit", "--queue", "quarter", "python3", "t.py"], 2, "unrecognized arguments: "
         "python3 t.py (the job's command goes after --: fractui submit ... -- python3 t.py)"),
        (["submit", "--queue", "quarter", "--cwd", "runs/1", "--", "x"], 2,
         "--cwd must be an absolute path (a directory on the host the job runs on), not "
         "'runs/1'"),
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--cwd", ".", "--", "x"], 2,
         "--cwd must be an absolute path"),
        (["submit", "--queue", "quarter", "--team", "t", "--", "x"], 2, "no [[teams]]"),
        # what a host's agent would refuse, refused as asked for, not failed when tried
        (["submit", "--queue", "quarter", "--name", "n" * 5000, "--", "x"], 2,
         "the name must be at most 4096 characters long, got 5000"),
        (["submit", "--queue", "quarter", "--", "/opt/" + "p" * 5000], 2,  # named after it
         "the name must be at most 4096 characters long, got 5000"),
        (["submit", "--queue", "quarter", "--", "echo"] + ["x" * 100000] * 12, 2,
         "the command and its variables are 1200062 bytes; a host takes at most 983040"),
        (["submit", "--queue", "quarter", "--", "echo"] + ["漢" * 50000] * 5, 2,
         "the command and its variables are 1500034 bytes"),  # sent as \u6f22, 6 bytes each
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--key", "k" * 300, "--", "x"], 2,
         "--key must be at most 256 characters long, got 300"),
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--env", "A=" + "v" * 200000, "--",
          "x"], 2, "--env A must be at most 131072 characters long, got 200000"),
        (["jobs", "gpu-a"], 0, ""),
        (["jobs"], 1, "down is offline"),
        (["jobs", "nope"], 2, "unknown host 'nope'"),
        (["jobs", "--all", "--limit", "0"], 2, "from 1 to"),
        (["jobs", "--limit", "5"], 2, "--limit goes with --all"),
        (["jobs", "--user", ""], 2, "argument --user: takes a user's name"),  # never everyone's
        (["mig", "gpu-a", "1", "1g.10gb"], 1, "no terminal to ask on: --yes agrees in advance"),
        (["cancel", a], 0, ""),
        (["cancel", a], 0, ""),  # asked again (a retry): answered as the first time
        (["requeue", b], 1, "job %s is pending: nothing to requeue" % b),
        (["preempt", "999"], 1, "no job 999"),
        (["cancel", "abc"], 2, "a queued job is named by its number"),
        (["cancel", "-1"], 2, "a queued job is named by its number"),
        (["cancel", "gpu-a/j1"], 2, "not 'gpu-a/j1': that names a job launched directly on a "
                                    "host, which fractui logs shows and fractui stop stops"),
        (["cancel", "99999999999999999999999"], 2, "a queued job is named by its number"),
        (["place", c, "gpu-a", "0"], 0, ""),
        (["place", c, "gpu-a", "0"], 0, ""),  # asked again (a retry): answered, not refused
        (["place", c, "gpu-a", "1"], 1, "only a pending job can be placed"),
        (["place", d, "nope", "0"], 2, "unknown host 'nope'"),
        (["place", d, "gpu-a", "x"], 2, "GPU is an index here"),
        (["place", d, "gpu-a", "1", "--profile", "9g.1gb"], 2, "a MIG profile no GPU model"),
        (["place", d, "gpu-a", "1", "--profile", "1g.10gb"], 1,  # less than its queue asks
         "job %s of queue quarter needs 2g.20gb or larger on GPU 1 of gpu-a; 1g.10gb holds "
         "less (1 of 7 compute slices, 1 of 8 memory slices): leave --profile out" % d),
        (["place", "999", "gpu-a", "0"], 1, "no job 999"),
        (["audit"], 0, ""),
        (["audit", "999"], 1, "no job 999"),
        (["audit", "-n", "0"], 2, "from 1 to"),
        (["logs", ref], 0, ""),
        (["logs", "999"], 1, "no job 999"),
        (["logs", d], 1, "job %s is pending: it has not run yet" % d),
        (["logs", "gpu-a/j999"], 1, "j999"),
        (["logs", "down/j1"], 1, "down is offline"),
        (["logs", "nope/j1"], 2, "unknown host 'nope'"),
        (["logs", "junk"], 2, "a job is named by its number, as fractui jobs shows it (12), "
                              "or HOST/JOB where it was launched directly on a host (gpu-a/j12), "
                              "not 'junk'"),  # (logs takes both: not HOST/JOB alone)
        (["logs", ref, "-n", "-3"], 2, "from 0 to"),
        (["stop", ref, "--grace", "1"], 0, ""),
        (["scheduler", "--bogus"], 2, "unrecognized arguments"),
        (["demo", "--gpus", "0"], 2, "must be a whole number from 1 to 1000"),
        (["--readonly", "status"], 2, "--readonly is for the TUI"),
        (["status", "--", "x"], 2, "only launch and submit take a program after --"),
        (["bogus"], 2, "invalid choice: 'bogus'"),
    ]
    wrong = []
    for argv, code, says in cases:
        got, out, err = cli.run(*argv)
        # status and doctor say what failed in their report, every other verb on stderr
        said = out + err if argv[0] in ("status", "doctor") else err
        if got != code or says not in said or leaks(err) or (code and not said.strip()):
            wrong.append((argv, code, says, got, err))
    assert not wrong, "\n".join("%s: wanted %d %r, got %d %r" % w for w in wrong)


def test_a_damaged_store_is_the_stores_failure_and_a_config_without_queues_a_usage_error(
        cli):
    damaged = cli.f.tmp / "damaged.db"
    damaged.write_bytes(b"this is not a SQLite database, and never was " * 100)
    config = cli.config.read_text().replace(cli.f.store.path, str(damaged))
    cli.config.write_text(config)
    for argv in (["jobs"], ["cancel", "1"], ["audit"], ["submit", "--queue", "quarter", "--",
                                                        "x"], ["scheduler"]):
        code, _out, err = cli.run(*argv)
        assert (code, leaks(err)) == (1, []) and err.strip(), (argv, err)
    cli.config.write_text(re.sub(r"\[\[queues\]\][^\[]*", "", config))
    code, _out, err = cli.run("scheduler")
    assert (code, err) == (2, "fractui: the config has no [[queues]]: there is nothing to "
                              "schedule\n")


def _end_of(cli, job_id: int, until: str) -> None:
    cli.f.until(lambda: cli.f.states()[job_id] == until, timeout_s=60)


def test_jobs_and_logs_say_why_each_job_ended(local_fleet, capfd, monkeypatch):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="one-gib", memory_gib=1)])
    cli = Cli(f, capfd)
    cli.config.write_text(open(f.write_config()).read())  # no offline host here

    def submit(name: str, argv: list) -> int:
        return f.store.submit("one-gib", None, name, argv, f.config.queue("one-gib").request(),
                              "test").id

    over = submit("too-big", simload("--mem-mib", "1391", "--seconds", "60"))
    fails = submit("three", [PY, "-c", "print('bye', flush=True); raise SystemExit(3)"])
    fine = submit("fine", [PY, "-c", "print('fine', flush=True)"])
    stopped = submit("stopped", [PY, "-c", "import time; print('up', flush=True); "
                                           "time.sleep(600)"])
    _end_of(cli, stopped, "running")
    assert cli.run("cancel", str(stopped))[0] == 0
    for job, state in ((over, "failed"), (fails, "failed"), (fine, "done"),
                       (stopped, "cancelled")):
        _end_of(cli, job, state)
    # the store's word on who (the OS user by uid, not $USER), and where from
    who = "cancelled by %s@%s" % (pwd.getpwuid(os.geteuid()).pw_name, socket.gethostname())
    why = {over: "exceeded its 1024 MiB cap: used 1391 MiB", fails: "exited 3: bye",
           fine: "exited 0", stopped: who}  # (the admin reads every job's output: its line)
    name = {over: "too-big", fails: "three", fine: "fine", stopped: "stopped"}

    code, out, err = cli.run("jobs", "--all")  # into a pipe: nothing cut
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "QUEUE", "TEAM", "USER", "WHERE", "NAME", "WHY"]
    for job in why:
        row = next(line for line in lines if line.split()[0] == str(job))
        assert row.split()[1] == f.states()[job] and row.split()[4] == "test"  # who submitted
        assert re.search(r"%s +%s$" % (name[job], re.escape(why[job])), row), row
    # whose: the store's word on who submitted each (--me: the store's word on who asks)
    code, out, err = cli.run("jobs", "--all", "--user", "test", "--json")
    assert code == 0 and sorted(j["id"] for j in json.loads(out)["jobs"]) == sorted(why), err
    # a name no one in the store goes by: a typo, said so, not "no jobs" (test_access_cli)
    code, out, err = cli.run("jobs", "--all", "--user", "someone-else")
    assert (code, out) == (2, "") and "--user 'someone-else': no user of that name is known " \
        "in this store" in err, err

    monkeypatch.setenv("COLUMNS", "80")  # a terminal 80 wide: every line fits
    code, out, _ = cli.run("jobs", "--all")
    assert code == 0 and all(len(line) <= 80 for line in out.splitlines()), out
    assert {line.split()[0] for line in out.splitlines()[1:]} == {str(j) for j in why}
    monkeypatch.delenv("COLUMNS")
    code, out, err = cli.run("submit", "--queue", "one-gib", "--json", "--", "true")
    submitted = json.loads(out)
    mine = submitted["id"]
    code, out, err = cli.run("jobs", "--all", "--me", "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)["jobs"]] == [mine], err
    # the job as jobs --json gives it: its ref, its wait so far, no run yet
    assert sorted(submitted) == sorted(json.loads(out)["jobs"][0]), submitted
    assert (submitted["ref"], submitted["waited_s"], submitted["ran_s"]) == (str(mine), 0, None)
    assert cli.run("jobs", "--me", "--user", "test")[0] == 2  # one or the other
    _end_of(cli, mine, "done")

    # (the store's reason keeps no output, which every team reads; logs, over the host, is
    # the agent's word: its last line too, after the output it ends)
    said = {**why, fails: "exited 3: bye"}
    for job in why:
        code, out, err = cli.run("logs", str(job))  # (stopped may be cancelled before it prints)
        assert code == 0 and err == "%sfractui: job %d ended: %s\n" % (
            "" if out else "fractui: job %d printed nothing\n" % job, job, said[job]), err
    assert "simload: pid" in cli.run("logs", str(over))[1]

    # a job launched directly on the host, stopped by the watchdog as it grows
    code, out, err = cli.run("launch", "gpu-a", "0", "--memory-mib", "1024", "--name", "grower",
                             "--", *simload("--mem-mib", "900", "--grow-to", "3000",
                                            "--seconds", "30"))  # over 1024 MiB 2 s in
    assert code == 0, err
    ref = out.split()[0]
    deadline = time.time() + 30
    while True:
        row = next(line for line in cli.run("jobs", "gpu-a")[1].splitlines()
                   if line.startswith(ref + " "))
        if row.split()[1] != "running":
            break
        assert time.time() < deadline, "the watchdog never stopped the job"
        time.sleep(0.2)
    assert re.search(r"grower +exceeded its 1024 MiB cap: used \d+ MiB$", row), row
    code, out, err = cli.run("logs", ref)
    assert code == 0 and re.fullmatch(r"fractui: %s ended: exceeded its 1024 MiB cap: used "
                                      r"\d+ MiB\n" % ref, err), err


def test_a_commands_words_and_values_reach_the_job_as_given_and_show_as_text(
        local_fleet):  # noqa: F811
    """The command's words and a variable's value may hold anything (a line break, an escape
    sequence): through the real CLI they reach the job unchanged. The job's default name, its
    program's file name, is made printable (each such character a "?", as --name must be), so
    jobs shows it as the store keeps it, and no verb writes an escape of the job's own."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="one-gib", memory_gib=1)])
    program = f.tmp / "py\x1b[2Jthon"
    os.symlink(PY, program)
    word, value = "a\nb\x1b]52;c;SGk=\x07c", "x\x1b[31my\nz"
    run = f.fractui("submit", "--queue", "one-gib", "--env", "V=" + value, "--cwd", str(f.tmp),
                    "--json", "--", str(program), "-c", "import os, sys; print(ascii("
                    "[sys.argv[0], sys.argv[1], os.environ['V'], os.getcwd()]))", word)
    assert run.returncode == 0 and "\x1b" not in run.stdout + run.stderr, run
    job = json.loads(run.stdout)
    assert (job["name"], job["argv"][0], job["argv"][-1]) == ("py?[2Jthon", str(program), word)
    f.until(lambda: f.states()[job["id"]] == "done", timeout_s=60)
    logs = f.fractui("logs", str(job["id"]))
    assert logs.stdout == ascii(["-c", word, value, str(f.tmp)]) + "\n", logs
    listed = f.fractui("jobs", "--all")
    assert listed.returncode == 0 and "\x1b" not in listed.stdout, listed
    row = next(line for line in listed.stdout.splitlines() if line.split()[0] == str(job["id"]))
    assert " py?[2Jthon " in row, row


def test_jobs_of_a_host_are_its_queued_jobs_by_number_then_its_launches_by_hand(
        local_fleet, capfd):  # noqa: F811
    """Not a queued job's launch shown again as if by hand, with no queue or team."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [
        QueueConfig(name="quarter", gpu=0.25), QueueConfig(name="whole", gpus=1)])
    cli = Cli(f, capfd)
    job = f.submit("quarter")
    f.until(lambda: f.states()[job.id] == "running")
    host = f.store.get(job.id).slot.host
    other = "gpu-b" if host == "gpu-a" else "gpu-a"
    code, out, err = cli.run("launch", host, "0", "--memory-mib", "512", "--", *sleeper(600))
    assert code == 0, err
    ref = out.split()[0]
    code, out, err = cli.run("jobs", host, "--json")
    assert code == 0, err
    listed = json.loads(out)["jobs"]
    assert [j["ref"] for j in listed] == [str(job.id), ref]
    assert (listed[0]["queue"], listed[0]["state"]) == ("quarter", "running")
    assert listed[0]["waited_s"] is None and listed[0]["ran_s"] >= 0, listed[0]  # it runs
    code, out, err = cli.run("jobs", other)
    assert (code, out) == (0, "no jobs\n"), err
    # a newer job elsewhere: --limit keeps the newest of this host's, not of all then filtered
    newer = f.submit("whole")
    f.until(lambda: f.states()[newer.id] == "running")
    assert f.store.get(newer.id).slot.host == other
    code, out, err = cli.run("jobs", host, "--all", "--limit", "1", "--json")
    assert code == 0, err
    assert [j["ref"] for j in json.loads(out)["jobs"]] == [str(job.id), ref]
    # the store unreadable: the host's jobs all the same, as its agent has them, and exit 1
    damaged = f.tmp / "damaged.db"
    damaged.write_bytes(b"not a store" * 100)
    text = cli.config.read_text()
    cli.config.write_text(text.replace(json.dumps(f.config.store.url), json.dumps(
        sqlite_url(str(damaged)))))
    code, out, err = cli.run("jobs", host, "--json")
    assert code == 1 and str(damaged) in err, err
    assert err.endswith("fractui: every job on %s as its agent has it, queued ones too:\n"
                        % host), err
    assert len(json.loads(out)["jobs"]) == 2
    code, _, err = cli.run("jobs")
    assert code == 1 and str(damaged) in err and "every job on" not in err


def test_place_asked_again_of_a_job_since_asked_to_stop_is_refused_not_said_placed(cli):
    """A place asked again is answered as the first only while the job is where it put it:
    one placed by hand there and since cancelled (stopping, for the scheduler to stop) is not
    'placed; the scheduler launches it there' with exit 0, which a script reads as its job
    about to run."""
    job = str(cli.f.submit("quarter").id)
    first = cli.run("place", job, "gpu-a", "0")
    assert first[0] == 0 and first[1] == (
        "%s placed on gpu-a gpu0; the scheduler launches it\n" % job), first
    # "the scheduler launches it": none will until one runs, said as move and cancel say it
    assert cli.f.store.lease_holder() is None and first[2] == NO_SCHEDULER + "\n", first
    assert cli.run("place", job, "gpu-a", "0") == first  # a retry: answered as the first
    got, out, _err = cli.run("cancel", job)
    assert (got, out.strip()) == (0, "%s stopping (the scheduler stops it)" % job)
    got, out, err = cli.run("place", job, "gpu-a", "0")
    assert (got, out) == (1, ""), (got, out, err)
    assert "only a pending job can be placed: job %s is stopping" % job in err, err
    cli.f.store.acquire_lease("head", 60)  # one runs: placed and nothing more said
    other = str(cli.f.submit("quarter").id)
    assert cli.run("place", other, "gpu-a", "0") == (
        0, "%s placed on gpu-a gpu0; the scheduler launches it\n" % other, "")


def test_requeue_asked_again_after_the_scheduler_carried_it_out_is_answered_as_done(cli):
    """The user's own retry of a requeue whose answer was lost, come after the scheduler put
    the job back in its queue: exit 0 and the job as it is now, nothing more in the audit; a
    preempt of it (never asked) is still refused."""
    store = cli.f.store
    job = cli.f.submit("quarter")
    store.place(job.id, Slot("gpu-a", (0,), memory_mib=1024), "sched", "decided")
    store.started(job.id, "j1", None, "sched", "launched")
    assert cli.run("requeue", str(job.id))[:2] == (
        0, "%d stopping (the scheduler stops it, then puts it back in its queue)\n" % job.id)
    store.requeue(job.id, ("stopping",), "sched", "requeued")
    asked = store.audit_log(job.id)
    assert cli.run("requeue", str(job.id)) == (0, "%d pending (back in its queue)\n" % job.id,
                                               "")
    assert store.audit_log(job.id) == asked
    got, out, err = cli.run("preempt", str(job.id))
    assert (got, out) == (1, "") and "job %d is pending: nothing to preempt" % job.id in err
    store.place(job.id, Slot("gpu-a", (0,), memory_mib=1024), "sched", "decided")
    asked = store.audit_log(job.id)  # placed again, not started: still the requeue's answer
    assert cli.run("requeue", str(job.id)) == (
        0, "%d placed (its next attempt, about to start)\n" % job.id, "")
    assert store.audit_log(job.id) == asked


def test_a_stop_answered_as_done_says_what_each_state_means_never_a_bare_count(tmp_path):
    """A requeue whose first try landed (its answer lost), carried out and its next attempt
    started before it was read again, is answered as done (intents._moved_on) with the job
    as it is then: ``7 running``, a line that reads as a count of running jobs. Each state
    it can be left in now says what it means for the job, as stopping, pending and placed
    did; a cancelled job is its number and ``cancelled``."""
    from fractui.store_commands import stop_answer

    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
        said = [stop_answer(job)]
        store.place(job.id, Slot("gpu-a", (0,), memory_mib=512), "sched", "decided")
        store.started(job.id, "j1", None, "sched", "launched")
        said.append(stop_answer(store.stopping(job.id, ("running",), "requeue", "me", "asked")))
        store.requeue(job.id, ("stopping",), "sched", "requeued")
        said.append(stop_answer(store.place(job.id, Slot("gpu-a", (0,), memory_mib=512),
                                            "sched", "decided")))
        said.append(stop_answer(store.started(job.id, "j2", None, "sched", "launched")))
        said.append(stop_answer(store.ended(job.id, ("running",), "failed", "exited 3",
                                            "sched", "ended", "end", exit_code=3)))
        other = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
        said.append(stop_answer(store.ended(other.id, ("pending",), "cancelled", "by me",
                                            "me", "cancelled", "cancel")))
    finally:
        store.close()
    n, m = job.id, other.id
    assert said == ["%d pending (back in its queue)" % n,
                    "%d stopping (the scheduler stops it, then puts it back in its queue)" % n,
                    "%d placed (its next attempt, about to start)" % n,
                    "%d running (its next attempt, started since)" % n,
                    "%d failed (its next attempt, ended since)" % n, "%d cancelled" % m]


def test_stop_of_a_job_that_has_ended_says_so_never_stopping(cli):
    """``stop`` answered "stopping (SIGTERM, SIGKILL after 10 s)" whatever the job was: of one
    that exited long before too, exit 0. A job stopped already (asked again, or the watchdog
    first) is said so, exit 0; one that ended on its own had nothing to stop, exit 1."""
    refs = []
    for argv in (sleeper(600), [PY, "-c", "pass"]):
        code, out, err = cli.run("launch", "gpu-a", "0", "--memory-mib", "512", "--", *argv)
        assert code == 0, err
        refs.append(out.split()[0])
    slept, done = refs
    assert cli.run("stop", slept, "--grace", "1")[:2] == (
        0, "%s: stopping (SIGTERM, SIGKILL after 1 s)\n" % slept)

    def state(ref: str) -> str:
        return next(j["state"] for j in cli.f.agent_jobs() if j["id"] == ref.split("/")[1])
    localfleet.wait(lambda: (state(slept), state(done)) == ("killed", "exited"),
                    lambda: cli.f.agent_jobs())
    assert cli.run("stop", slept) == (0, "%s was already stopped: stopped by request\n" % slept,
                                      "")
    assert cli.run("stop", done) == (
        1, "", "fractui: %s had already ended (exited 0): nothing to stop\n" % done)


def test_jobs_and_stop_say_why_an_agent_holds_a_start_it_cannot_read(cli):
    """A job whose start its daemon never recorded (killed -9 first), with a directory in its
    folder: the next daemon holds it starting, its slice booked, until its folder is mended
    (docs/decisions.md). ``jobs`` showed it starting with no word of why, and ``stop`` said
    "stopping (SIGTERM, SIGKILL after 1 s)", though nothing is signalled until it is mended;
    both now say the agent's reason, and ``stop`` that it is stopped once the job is read,
    as it is once its folder is mended."""
    code, out, err = cli.run("launch", "gpu-a", "0", "--memory-mib", "512", "--json", "--",
                             *sleeper(600))
    assert code == 0, err
    launched = json.loads(out)
    ref, agent_job = launched["ref"], launched["id"]
    state = cli.f.config.hosts[0].state_dir
    os.mkdir(os.path.join(state, "jobs", agent_job, "planted"), 0o700)
    try:
        with open(os.path.join(state, "daemon.pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        with sqlite3.connect(os.path.join(state, "jobs.db")) as db:  # as a crash leaves it
            db.execute("UPDATE jobs SET state = 'starting', pid = NULL, started_at = NULL, "
                       "start_ticks = NULL")

        def held() -> dict:
            try:
                return cli.f.fleet.session("gpu-a").call("job.get", {"job": agent_job})
            except HostUnavailable:  # (its daemon started again meanwhile)
                return {}
        localfleet.wait(lambda: held().get("reason"), held)
        reason = held()["reason"]
        assert held()["state"] == "starting" and "until that folder is mended" in reason, reason
        code, out, err = cli.run("jobs", "gpu-a")
        assert code == 0 and reason in out, (out, err)
        assert cli.run("stop", ref, "--grace", "1") == (
            0, "%s: held starting, so it is stopped once its agent can read it again: %s\n"
            % (ref, reason), "")
        assert held()["state"] == "starting"
        os.rmdir(os.path.join(state, "jobs", agent_job, "planted"))  # an admin mends it
        localfleet.wait(lambda: held().get("state") == "killed", held)
        assert not alive(launched["pid"])
    finally:
        if alive(launched["pid"]):
            os.kill(launched["pid"], signal.SIGKILL)


def test_a_create_that_needs_an_idle_instance_destroyed_names_the_option_that_allows_it(cli):
    """The agent ends such a refusal with its protocol's words, "pass destroy_idle: true to
    allow it": ``mig`` says the option an admin types instead, and the command with it."""
    assert cli.run("mig", "gpu-a", "1", "3g.40gb", "--yes")[0] == 0
    code, out, err = cli.run("mig", "gpu-a", "1", "7g.80gb", "--yes")
    assert (code, out) == (1, "") and "destroy_idle" not in err, err
    assert err.startswith("fractui: gpu-a: no free placement for 7g.80gb on this GPU; "
                          "destroying idle 3g.40gb at slot 4"), err
    assert err.endswith("would make room; --destroy-idle allows it "
                        "(fractui mig gpu-a 1 7g.80gb --destroy-idle)\n"), err
    code, out, err = cli.run("mig", "gpu-a", "1", "7g.80gb", "--destroy-idle", "--yes")
    assert code == 0 and "created 7g.80gb at slot 0 on gpu-a gpu 1" in out, err


def test_cancel_takes_several_jobs_and_asks_each_as_scancel_does(cli):
    """``cancel 12 13 99``: each job asked in turn, its line each; one refused (not in the
    store, ended) is said and the rest still cancelled, exit 1; a word that names no job is
    exit 2 before any is asked."""
    a, b, c = (cli.f.submit("quarter").id for _ in range(3))
    code, out, err = cli.run("cancel", str(a), "x")
    assert (code, out) == (2, "") and "not 'x'" in err, err
    assert cli.f.states()[a] == "pending"
    code, out, err = cli.run("cancel", str(a), "999", str(b), str(a))
    assert (code, out) == (1, "%d cancelled\n%d cancelled\n" % (a, b)), (out, err)
    assert err == "fractui: no job 999 in the store\n", err
    code, out, err = cli.run("requeue", str(a), str(c))
    assert (code, out) == (1, ""), (out, err)
    assert err.startswith("fractui: job %d is cancelled: nothing to requeue" % a), err
    assert "\nfractui: job %d is pending: nothing to requeue\n" % c in err, err
    assert cli.f.states() == {a: "cancelled", b: "cancelled", c: "pending"}


def test_submit_again_with_its_key_is_the_same_job_and_says_where_it_is(cli):
    """A researcher's script retried after a lost answer: the same --key answers the job the
    first made, as it is now; the key with another command is a usage error, exit 2."""
    argv = ["submit", "--queue", "quarter", "--key", "sweep-7", "--", "python", "t.py"]
    code, out, err = cli.run(*argv)
    assert code == 0, err
    number = out.split()[0]
    assert out == "%s pending in queue quarter\n" % number
    assert cli.run(*argv)[:2] == (0, out)
    assert [j.id for j in cli.f.store.jobs()] == [int(number)]
    code, out, err = cli.run(*argv[:-1], "other.py")
    assert (code, out) == (2, ""), err
    assert err == ("fractui: --key sweep-7: job %s was submitted with that key and another "
                   "command; a new job takes a new key\n" % number)
    assert cli.run("submit", "--queue", "quarter", "--key", "k" * 300, "--", "x")[2].endswith(
        "--key must be at most 256 characters long, got 300\n")


def test_logs_of_a_running_job_end_without_a_why(local_fleet, capfd):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    cli = Cli(f, capfd)
    job = f.submit("quarter", argv=[PY, "-c", "import time; print('up', flush=True); "
                                              "time.sleep(600)"])
    f.until(lambda: f.states()[job.id] == "running")
    deadline = time.time() + 30
    while cli.run("logs", str(job.id))[1] != "up\n":
        assert time.time() < deadline
        time.sleep(0.1)
    assert cli.run("logs", str(job.id)) == (0, "up\n", "")


@pytest.mark.parametrize("how", ["requeue", "move"])
@pytest.mark.parametrize("reach", ["ssh", "store"])
def test_logs_follow_goes_on_with_a_requeued_jobs_next_attempt(local_fleet, reach,  # noqa: F811
                                                              how):
    """A requeue (or a move by hand) ends an attempt, not the job: ``logs -f`` follows the
    next one, says which it was, and says the job ended only when it has; over SSH, and
    through the store (a config with no hosts)."""
    f = local_fleet({"gpu-a": "1xL4", "gpu-b": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    config = f.write_config()
    if reach == "store":
        config = str(f.tmp / "user.toml")
        (f.tmp / "user.toml").write_text("[store]\nurl = %s\n" % json.dumps(f.config.store.url))
    mark = f.tmp / "ran"
    job = f.submit("quarter", argv=[PY, "-c", "import os, time\n"
                                              "if os.path.exists(%r):\n"
                                              "    print('second', flush=True)\n"
                                              "else:\n"
                                              "    open(%r, 'w').close()\n"
                                              "    print('first', flush=True)\n"
                                              "    time.sleep(600)" % (str(mark), str(mark))])
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
        localfleet.wait(lambda: f.states()[job.id] == "running", f.states, alive=head)
        follow = subprocess.Popen([PY, "-m", "fractui", "--config", config, "logs",
                                   "-f", str(job.id)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=localfleet.REPO,
                                  stdin=subprocess.DEVNULL)
        assert follow.stdout.readline() == "first\n"
        there = "gpu-b" if f.store.get(job.id).slot.host == "gpu-a" else "gpu-a"
        asked = f.fractui(*(["requeue", str(job.id)] if how == "requeue" else
                            ["move", str(job.id), there, "0"]))
        assert asked.returncode == 0, asked.stderr
        out, err = follow.communicate(timeout=60)
    assert (follow.returncode, out) == (0, "second\n"), err
    assert f.states()[job.id] == "done"
    assert err.splitlines()[-1] == "fractui: job %d ended: exited 0" % job.id, err
    if how == "requeue":
        assert "went back to its queue (requeued by " in err, err
    else:
        assert "job %d was moved by hand (" % job.id in err, err
        assert f.store.get(job.id).slot.host == there


def test_logs_follow_waits_for_no_scheduler_at_a_jobs_end(local_fleet, capfd,  # noqa: F811
                                                           monkeypatch):
    """Where no scheduler holds the lease, none will record the end: ``logs -f`` says the
    agent's end at once, not after waiting for the store (made an hour here, so that a wait
    would be a hang)."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    mark = f.tmp / "go"
    job = f.submit("quarter", argv=[PY, "-c", "import os, time\nprint('up', flush=True)\n"
                                              "while not os.path.exists(%r):\n"
                                              "    time.sleep(0.05)" % str(mark)])
    f.until(lambda: f.states()[job.id] == "running")
    f.scheduler.stop()  # and the lease with it
    mark.touch()
    localfleet.wait(lambda: [j["state"] for j in f.agent_jobs()] == ["exited"], f.agent_jobs)
    monkeypatch.setattr(kept_output, "LOG_WAIT_S", 3600.0)
    config = f.write_config()
    done: list = []
    follow = threading.Thread(target=lambda: done.append(main(
        ["--config", config, "logs", "-f", str(job.id)])), daemon=True)
    follow.start()
    follow.join(60)
    assert done == [0], "logs -f still waits for a scheduler that is not there"
    out, err = capfd.readouterr()
    assert (out, err) == ("up\n", "fractui: job %d ended: exited 0\n" % job.id)
    assert f.states()[job.id] == "running"  # the store has not recorded it: no one could


@pytest.mark.parametrize("stop, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_a_submit_interrupted_while_recorded_says_its_key_makes_a_retry_safe(
        tmp_path, capfd, monkeypatch, stop, code):
    """Ctrl-C or SIGTERM while the store records the submit (here: it landed, the interrupt
    came before the answer): the job may be queued, so the user is told so and that the same
    ``--key`` (the one given, else the one drawn) makes a retry safe — which it does: the
    retry answers the job the first made. It said nothing, a user's retry made a second job."""
    from fractui import store_commands
    url = sqlite_url(str(tmp_path / "store.db"))
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "quarter"\ngpu = 0.25\n'
                      % url)
    real = store_commands.intents.submit

    def landed_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise stop()
    monkeypatch.setattr(store_commands.intents, "submit", landed_then_interrupted)
    for key in ("k1", None):
        argv = ["--config", str(config), "submit", "--queue", "quarter"] + (
            ["--key", key] if key else []) + ["--", "true"]
        got, out, err = in_process(capfd, argv)
        said = re.fullmatch(r"fractui: interrupted while the store recorded the submit: "
                            r"whether it was recorded is not known \(fractui jobs --me shows "
                            r"it\); submitting again with --key (\S+) makes no second job if "
                            r"this one was recorded\n", err)
        assert (got, out) == (code, ""), err
        assert said is not None and said.group(1) == (key or said.group(1)), err
        monkeypatch.setattr(store_commands.intents, "submit", real)
        again = argv[:-2] + ([] if key else ["--key", said.group(1)]) + ["--", "true"]
        got, out, err = in_process(capfd, again)
        assert got == 0 and not leaks(err), err
        assert re.fullmatch(r"\d+ pending in queue quarter\n", out), out
        monkeypatch.setattr(store_commands.intents, "submit", landed_then_interrupted)
    got, out, err = in_process(capfd, ["--config", str(config), "jobs", "--all", "--json"])
    assert len(json.loads(out)["jobs"]) == 2, out


def _waiting_submit(tmp_path: Path, *flags: str) -> Tuple[Path, str, subprocess.Popen]:
    """``fractui submit --wait`` (with ``flags``) of a job to queue quarter of an SQLite store
    in ``tmp_path``, where no scheduler runs: (its config, the store's path, its process)."""
    path = str(tmp_path / "store.db")
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "quarter"\ngpu = 0.25\n'
                      % sqlite_url(path))
    return config, path, fractui_process(["--config", str(config), "submit", "--wait", *flags,
                                          "--queue", "quarter", "--", "true"])


def test_a_wait_ended_by_sigterm_says_the_job_goes_on_as_ctrl_c_does(tmp_path):
    """``timeout 2h fractui submit --wait``, a batch system's time limit, a CI runner's cancel:
    SIGTERM ends the waiting as Ctrl-C does, saying the job goes on and how to cancel it (the
    default action ended it without a word), exit 143 (128 + SIGTERM, as a shell says); the
    job stays queued."""
    config, _, waiting = _waiting_submit(tmp_path)
    first = waiting.stdout.readline()  # no scheduler runs: it stays pending
    number = int(first.split()[0])
    waiting.send_signal(signal.SIGTERM)
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out) == (143, ""), err
    assert err.endswith("fractui: stopped waiting; job %d goes on (fractui cancel %d cancels "
                        "it)\n" % (number, number)), err
    assert not leaks(err), err
    done = subprocess_run(["--config", str(config), "jobs", "--json", str(number)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobs"][0]["state"] == "pending"


def test_a_wait_ended_by_ctrl_c_still_gives_the_json_record_of_the_queued_job(tmp_path):
    """``submit --wait --json`` ended by Ctrl-C while it waits: the job is queued and goes on,
    so its --json record (as last read: pending) is printed before exit 130, as a submit that
    does not wait prints it. It printed none: a script reading the record found nothing of a
    job that was queued."""
    _, path, waiting = _waiting_submit(tmp_path, "--json")
    try:
        localfleet.wait(lambda: bool(_jobs_in(path)),
                        lambda: "the submit queued nothing", alive=waiting)
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    (number,) = _jobs_in(path)
    assert waiting.returncode == 130 and not leaks(err), err
    assert err.endswith("fractui: stopped waiting; job %d goes on (fractui cancel %d cancels "
                        "it)\n" % (number, number)), err
    record = json.loads(out)
    assert (record["id"], record["state"]) == (number, "pending"), out


def test_a_wait_ended_by_ctrl_c_gives_the_record_of_the_job_as_last_read(tmp_path):
    """``submit --wait --json`` ended by Ctrl-C once the wait has read the job running: its
    --json record is the job as the wait last read it (running, on its slot), as stderr said
    it. It was the job as submitted (pending): a script read a running job as not started."""
    _, path, waiting = _waiting_submit(tmp_path, "--json")
    said: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [said.put(line) for line in waiting.stderr],
                     daemon=True).start()
    try:
        localfleet.wait(lambda: bool(_jobs_in(path)),
                        lambda: "the submit queued nothing", alive=waiting)
        (number,) = _jobs_in(path)
        store = SqliteStore(path)
        try:
            store.place(number, Slot("gpu-a", (0,), memory_mib=1024), "sched", "decided")
            store.started(number, "j1", None, "sched", "launched")
        finally:
            store.close()
        while "job %d is running" % number not in said.get(timeout=60):
            pass
        waiting.send_signal(signal.SIGINT)
        out = waiting.stdout.read()
        waiting.wait(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 130
    record = json.loads(out)
    assert (record["id"], record["state"]) == (number, "running"), out


def _jobs_in(path: str) -> list:
    """The numbers of the jobs an SQLite store holds, read beside fractui's own connection
    (none while the submit is still making the store)."""
    if not os.path.exists(path):
        return []
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [n for (n,) in db.execute("SELECT id FROM jobs")]
    except sqlite3.OperationalError:  # (its tables not made yet)
        return []
    finally:
        db.close()


def test_the_scheduler_keeps_sigterm_to_itself(tmp_path, monkeypatch):
    """The scheduler sets its own SIGTERM handler (it hands its lease over, exit 0); until it
    has, SIGTERM's default action ends it, which systemd counts as a clean stop. Raised as
    Terminated there instead (while it first hears the hosts, say), it exited 143, which
    systemd counts as the service failing on a plain systemctl stop."""
    from fractui import cli, store_commands

    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "quarter"\ngpu = 0.25\n'
                      % sqlite_url(str(tmp_path / "store.db")))
    seen = []
    monkeypatch.setattr(store_commands, "scheduler",
                        lambda config, args: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert cli.main(["--config", str(config), "scheduler"]) == 0
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen == [signal.SIG_DFL]


def test_a_follow_ended_by_sigterm_while_the_job_waits_says_it_goes_on(tmp_path):
    """logs -f of a job that has not started waits for it; SIGTERM (or Ctrl-C) then ends the
    follow as it ends one of output, saying the job goes on and how to cancel it, exit 143:
    only a follow of output through the store said it, not the wait before it, nor one over
    SSH."""
    url = sqlite_url(str(tmp_path / "store.db"))
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "quarter"\ngpu = 0.25\n'
                      % url)
    done = subprocess_run(["--config", str(config), "submit", "--queue", "quarter", "--",
                           "true"])
    number = int(done.stdout.split()[0])
    follow = subprocess.Popen([PY, "-m", "fractui", "--config", str(config), "logs", "-f",
                               str(number)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=localfleet.REPO, stdin=subprocess.DEVNULL)
    assert follow.stderr.readline() == "fractui: job %d is pending; waiting for it to start\n" \
        % number
    follow.send_signal(signal.SIGTERM)
    out, err = follow.communicate(timeout=60)
    assert (follow.returncode, out, err) == (143, "", "fractui: stopped following; job %d goes "
                                             "on (fractui cancel %d cancels it)\n" % (
                                                 number, number))


def test_the_verbs_that_only_read_never_make_a_store(tmp_path):
    """A mistyped [store] url read as a store with no jobs ("no active jobs", exit 0), made
    the file and its folders there, and made its reader its owner (an admin of it): jobs,
    report, audit, logs and status (of a config of no hosts) now say there is none, exit 1,
    and make nothing; a submit makes it as before."""
    folder = tmp_path / "typo"
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "quarter"\n'
                      'gpu = 0.25\n' % (folder / "sub" / "store.db"))
    for verb in (["jobs", "--me"], ["report"], ["audit"], ["logs", "3"], ["status"]):
        done = subprocess_run(["--config", str(config), *verb])
        assert (done.returncode, done.stdout) == (1, ""), (verb, done.stderr)
        assert done.stderr == "fractui: store %s: there is no store here yet: nothing was " \
            "ever submitted to it (a submit or the scheduler makes it; is the config's " \
            "[store] url the one your team uses?)\n" % (folder / "sub" / "store.db"), verb
        assert not folder.exists(), verb
    assert subprocess_run(["--config", str(config), "submit", "--queue", "quarter", "--",
                           "true"]).returncode == 0
    done = subprocess_run(["--config", str(config), "jobs"])
    assert done.returncode == 0 and done.stdout.startswith("JOB "), done.stderr


@pytest.fixture
def read_only_home(tmp_path):
    """An empty home on a real read-only filesystem (a tmpfs mounted ro, which root cannot
    write either), unmounted afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(home)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail("this test mounts a tmpfs, which needs root: %s" % made.stderr)
    yield home
    subprocess.run(["umount", "-l", str(home)], check=False)


def test_no_store_in_a_read_only_home_is_said_one_way_by_every_verb(tmp_path, read_only_home):
    """A home on a read-only filesystem, no store in it (the default store's place), and a
    config of one host: jobs (whose hosts' listing makes the store), report (which never
    makes one) and submit say the same, naming the store and the folder that cannot be
    written, exit 1. Before, jobs said the temporary file SQLite's store is made in could not
    be created ("[Errno 30] Read-only file system: '.store.db.<random>.new'") and report that
    nothing was ever submitted (a submit makes the store)."""
    config = tmp_path / "config.toml"
    config.write_text('[[queues]]\nname = "q"\ngpu = 0.25\n[[hosts]]\nname = "gpu-a"\n'
                      'host = "127.0.0.1"\nport = %d\n' % closed_port())
    store = read_only_home / ".local" / "state" / "fractui" / "store.db"
    said = ("fractui: store %s: there is no store here yet, and none can be made there: %s is "
            "on a read-only filesystem\n" % (store, read_only_home))
    for verb in (["jobs"], ["report"], ["submit", "--queue", "q", "--", "true"]):
        done = subprocess_run(["--config", str(config), *verb],
                              {"HOME": str(read_only_home), "XDG_STATE_HOME": ""})
        assert (done.returncode, done.stdout, done.stderr) == (1, "", said), verb


def test_the_verbs_that_name_a_job_never_make_a_store(tmp_path):
    """cancel, requeue, preempt, place and move ask of a job the store must already hold: on a
    mistyped [store] url each made the file and its folders, and its user that store's owner
    (an admin of it), to say then that it has no such job. They say there is no store, exit
    1, and make nothing, as the verbs that only read do; so does jobs of the store's jobs
    alone (--me, --user, JOB...) where the config names hosts, which it does not list."""
    folder = tmp_path / "typo"
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "quarter"\n'
                      'gpu = 0.25\n[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\n'
                      % (folder / "sub" / "store.db"))
    for verb in (["cancel", "3", "4"], ["requeue", "3"], ["preempt", "3"],
                 ["place", "3", "gpu-a", "0"], ["move", "3", "gpu-a", "0"], ["jobs", "--me"],
                 ["jobs", "--user", "bob"], ["jobs", "3"]):
        done = subprocess_run(["--config", str(config), *verb])
        assert (done.returncode, done.stdout) == (1, ""), (verb, done.stderr)
        assert done.stderr.startswith("fractui: store %s: there is no store here yet" % (
            folder / "sub" / "store.db")), (verb, done.stderr)
        assert not folder.exists(), verb


def test_a_word_that_names_no_job_is_a_usage_error_whether_a_store_is_there_or_not(
        tmp_path, capfd):
    """``audit 0``, ``logs 0``, ``place 0 …`` and ``move x …`` read their job's word only
    after opening the store: with none there they said "there is no store here yet" (exit
    1) for what is a bad argument, as cancel and jobs never did. Every verb that names a job
    now says the word is no job's number, exit 2, store or not; a good number on a missing
    store is still exit 1, the store's absence."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                      '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\n'
                      % (tmp_path / "none" / "store.db"))
    for verb in (["audit"], ["logs"], ["jobs"], ["cancel"], ["requeue"], ["preempt"],
                 ["place", "gpu-a", "0"], ["move", "gpu-a", "0"]):
        for word in ("0", "-1", "x", ""):
            argv = [verb[0], word] + verb[1:]
            code, out, err = in_process(capfd, ["--config", str(config), *argv])
            assert (code, out) == (2, ""), (argv, err)
            assert repr(word) in err and "no store" not in err, (argv, err)
        code, out, err = in_process(capfd, ["--config", str(config), verb[0], "3", *verb[1:]])
        assert (code, out) == (1, "") and "there is no store here yet" in err, (verb, err)
    assert not (tmp_path / "none").exists()


def test_a_submit_with_no_command_shows_one_that_runs_in_a_config_of_teams(tmp_path, capfd):
    """With [[teams]] and a queue that names none, ``submit`` needs ``--team``: the example
    its missing command was answered with left the team out, so pasting it failed with "submit
    needs --team". The team is asked for first, then the example keeps it; nothing is
    submitted, no store made (exit 2, as any usage error)."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[teams]]\nname = "vision"\n'
                      '[[queues]]\nname = "q"\ngpu = 0.5\n' % (tmp_path / "s" / "store.db"))
    said = {}
    for team in ([], ["--team", "vision"]):
        code, out, said[bool(team)] = in_process(capfd, ["--config", str(config), "submit",
                                                         "--queue", "q", *team])
        assert (code, out) == (2, ""), said
    assert said == {False: "fractui: submit needs --team: the config has teams (vision) and "
                           "queue q names none; %s\n" % NO_STORE_YET,
                    True: "fractui: submit needs the program to run after --, e.g. fractui "
                          "submit --queue q --team vision -- python train.py\n"}
    assert not (tmp_path / "s").exists()


NO_STORE_YET = ("you are in none of them, and no store is made yet: your submit makes it, and "
                "you its admin, who may charge any: --team vision")
"""What a submit without --team says to whoever is in no team, where no SQLite store is made
yet: root or not, its maker owns it, so is its admin."""


def test_a_plain_user_with_no_store_yet_is_told_their_submit_makes_them_its_admin(plain_user):
    """A plain OS user in none of the teams, with no SQLite store made yet, was told "an admin
    adds you to the one to charge", yet their own submit makes the store, theirs, and them its
    admin: told so, and it holds — the submit with --team is recorded, the file theirs."""
    name, home = plain_user
    config = os.path.join(home, "config.toml")
    store = os.path.join(home, "s", "store.db")
    with open(config, "w") as f:
        f.write('[store]\nurl = "sqlite://%s"\n[[teams]]\nname = "vision"\nmembers = '
                '["someone-else"]\n[[queues]]\nname = "q"\ngpu = 0.5\n' % store)
    os.chmod(config, 0o644)
    done = as_user.run(name, ["--config", config, "submit", "--queue", "q", "--", "true"])
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "fractui: submit needs --team: the config has teams (vision) and queue q names "
        "none; %s\n" % NO_STORE_YET), done
    assert not os.path.exists(os.path.dirname(store))
    done = as_user.run(name, ["--config", config, "submit", "--queue", "q", "--team", "vision",
                              "--", "true"])
    assert done.returncode == 0 and "in queue q" in done.stdout, done
    assert os.stat(store).st_uid == pwd.getpwnam(name).pw_uid


def test_a_submit_needing_team_says_the_teams_the_user_is_in_to_paste(tmp_path, capfd):
    """``submit`` to a queue of no team, in a config of teams, said the teams there are but not
    which the user may charge: it names those the config's members put them in (on SQLite;
    the store's roles on PostgreSQL, tests/test_researcher_day.py), as --team to paste."""
    config = tmp_path / "config.toml"
    me = json.dumps(os_user())
    config.write_text('[store]\nurl = "sqlite://%s"\n[[teams]]\nname = "vision"\nmembers = '
                      '[%s]\n[[teams]]\nname = "asr"\nmembers = ["nobody-else"]\n[[teams]]\n'
                      'name = "nlp"\nmembers = [%s]\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                      % (tmp_path / "s" / "store.db", me, me))
    code, out, err = in_process(capfd, ["--config", str(config), "submit", "--queue", "q", "--",
                                        "true"])
    assert (code, out, err) == (2, "", "fractui: submit needs --team: the config has teams "
                                       "(vision, asr, nlp) and queue q names none; --team "
                                       "vision or --team nlp (you are in vision, nlp)\n")
    assert not (tmp_path / "s").exists()


def test_a_host_named_in_a_config_of_no_hosts_is_said_so_not_known_none(tmp_path, capfd):
    """A researcher's config names no host (the store alone): a host word was answered
    "unknown host 'gpu-a' (known: none)", which names nothing to choose from; it says the
    config has no [[hosts]], exit 2, as any name the config lacks. (To an admin: who may is
    asked first, of the store, and a member is told the verb is an admin's: test_access_cli.)"""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n'
                      % (tmp_path / "s" / "store.db"))
    (tmp_path / "s").mkdir(mode=0o700)
    SqliteStore(str(tmp_path / "s" / "store.db")).close()  # (this user's: an admin's)
    for argv in (["place", "3", "gpu-a", "0"], ["cordon", "gpu-a"]):
        code, out, err = in_process(capfd, ["--config", str(config), *argv])
        assert (code, out, err) == (2, "", "fractui: %s: unknown host 'gpu-a': the config has "
                                          "no [[hosts]]\n" % config), argv


def test_an_admins_verb_on_a_mistyped_host_makes_no_store(tmp_path, capfd):
    """An admin's verb asks who may of the store before its host is looked up; where no store
    is made yet, that ask made one (and its directory) for ``cordon gpu-b``, a typo said as
    exit 2, a usage error that must change nothing. With no store there the host is looked up
    first (whoever makes the store is its admin): the typo makes none; a host of the config
    still makes it, as before."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[hosts]]\nname = "gpu-a"\nhost = '
                      '"127.0.0.1"\n[[queues]]\nname = "q"\ngpu = 0.5\n' % (
                          tmp_path / "s" / "store.db"))
    for argv in (["cordon", "gpu-b"], ["drain", "gpu-b", "0"], ["uncordon", "gpu-b"],
                 ["launch", "gpu-b", "0", "--memory-mib", "10", "--", "x"],
                 ["stop", "gpu-b/j1"], ["mig", "gpu-b", "0", "--mode", "on"],
                 ["mig", "gpu-b", "0", "1g.10gb"]):
        code, out, err = in_process(capfd, ["--config", str(config), *argv])
        assert (code, out) == (2, "") and err.startswith(
            "fractui: %s: unknown host 'gpu-b' (did you mean 'gpu-a'?" % config), (argv, err)
        assert not (tmp_path / "s").exists(), argv
    code, out, err = in_process(capfd, ["--config", str(config), "cordon", "gpu-a"])
    assert code == 0 and (tmp_path / "s" / "store.db").exists(), (out, err)


def test_jobs_of_a_host_job_says_which_verbs_take_it_not_unknown_host(tmp_path, capfd):
    """``jobs gpu-a/j1`` answered "unknown host 'gpu-a/j1' (did you mean 'gpu-a'?...)", as if
    the word were a mistyped host; ``audit`` and ``cancel`` said what names such a job. It
    now says that ``jobs HOST`` lists it and ``logs HOST/JOB`` shows it, exit 2."""
    config = tmp_path / "config.toml"
    config.write_text('[[queues]]\nname = "q"\ngpu = 0.5\n'
                      '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\n')
    code, out, err = in_process(capfd, ["--config", str(config), "jobs", "gpu-a/j1"])
    assert (code, out) == (2, ""), err
    assert err == ("fractui: jobs takes hosts and queued jobs' numbers, not 'gpu-a/j1': a job "
                   "launched directly on a host is listed by fractui jobs HOST and shown by "
                   "fractui logs HOST/JOB\n"), err


def test_submit_wait_says_each_step_and_exits_by_how_the_job_ended(local_fleet):  # noqa: F811
    """``submit --wait``, as a researcher scripts it: 0 only for a job that exited 0, 1 with the
    job's own words for any other end, and the last lines of a failed job's output under them
    (what went wrong is most often there); Ctrl-C stops the waiting and leaves the job
    queued."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    config = f.write_config()
    waiting = subprocess.Popen([PY, "-m", "fractui", "--config", config, "submit", "--wait",
                                "--queue", "quarter", "--", *sleeper(600)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=localfleet.REPO, stdin=subprocess.DEVNULL)
    first = waiting.stdout.readline()  # no scheduler runs yet: it stays pending
    number = int(first.split()[0])
    assert first == "%d pending in queue quarter\n" % number
    waiting.send_signal(signal.SIGINT)
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out) == (130, ""), err
    assert err.endswith("fractui: stopped waiting; job %d goes on (fractui cancel %d cancels "
                        "it)\n" % (number, number)), err
    assert f.states()[number] == "pending"
    assert f.fractui("cancel", str(number)).returncode == 0
    head = f.scheduler_process("head")
    with reaped(head, signal.SIGTERM):
        failing = f.fractui("submit", "--wait", "--queue", "quarter", "--", PY, "-c",
                            "import sys\nfor i in range(12):\n    print('out', i, flush=True)\n"
                            "sys.exit('boom')")
        fine = f.fractui("submit", "--wait", "--json", "--queue", "quarter", "--", PY, "-c", "")
    number = int(failing.stdout.split()[0])
    assert (failing.returncode, failing.stdout) == (1, "%d pending in queue quarter\n" % number)
    lines = failing.stderr.splitlines()  # how it ended, then the end of its output
    assert lines[-12:] == ["fractui: job %d ended: exited 1: boom" % number,
                           "fractui: the last 10 lines of its output (fractui logs %d shows "
                           "more):" % number] + ["  out %d" % i for i in range(3, 12)] + [
                               "  boom"], failing.stderr
    assert "fractui: job %d is running on gpu-a gpu0 " % number in failing.stderr
    ended = json.loads(fine.stdout)  # --json: one record, the job as it ended
    assert (fine.returncode, ended["state"], ended["exit_code"]) == (0, "done", 0), fine.stderr
    assert fine.stderr.splitlines()[-1] == "fractui: job %d ended: exited 0" % ended["id"]


def test_submit_wait_says_all_of_the_output_only_where_it_is(local_fleet):  # noqa: F811
    """``all of its output`` is said where the store's tail holds the job's output from its
    first byte. Its offset is where it ends in the agent's current log, which is not all of
    the output once the log rotated (past half its cap it goes on in a new file): a tail
    that began at the new file's first byte said "all of its output (2 lines)" of a job
    that printed 14 lines, when ``fractui logs`` shows them. Where all of it was read, it is said
    all."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)],
                    agent={"log_max_mib": 1})  # (a new file past 512 KiB)
    head = f.scheduler_process("head")
    # 13 lines of 40001 bytes, the 14th in the new file, then a short last one
    with reaped(head, signal.SIGTERM):
        done = f.fractui("submit", "--wait", "--queue", "quarter", "--", PY, "-c",
                         "import sys, time\nfor i in range(14):\n    print('x' * 40000, "
                         "flush=True)\n    time.sleep(0.05)\nsys.exit('boom')")
        small = f.fractui("submit", "--wait", "--queue", "quarter", "--", PY, "-c",
                          "import sys\nprint('x' * 40000, flush=True)\nsys.exit('boom')")
    number = int(done.stdout.split()[0])
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-4:-2] == ["fractui: job %d ended: exited 1: boom" % number,
                            "fractui: the last 2 lines of its output (fractui logs %d shows "
                            "more):" % number], done.stderr[-300:]
    logs = f.fractui("logs", "-n", "20", str(number))
    assert logs.stdout.splitlines().count("x" * 40000) == 14, logs.stderr
    assert small.stderr.endswith("fractui: all of its output (2 lines):\n  %s\n  boom\n" % (
        "x" * 40000)), repr(small.stderr[-300:]).replace("x" * 50, "")  # (all of it read)


def _into_closed_pipe(argv: list, config: str) -> subprocess.CompletedProcess:
    """``fractui ARGV`` writing into a pipe whose reader is already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([PY, "-m", "fractui", "--config", config, *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=localfleet.REPO,
                              timeout=120, stdin=subprocess.DEVNULL)
    finally:
        os.close(write)


# the lease the test's scheduler holds between its steps: a test that runs verbs one after
# another for longer than the default 15 s (a loaded machine) heard "no scheduler is running"
HELD_S = 3600.0


def test_every_verb_exits_quietly_into_a_closed_pipe(local_fleet):  # noqa: F811
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)], lease_s=HELD_S)
    job = f.submit("quarter", argv=[PY, "-c", "print('x' * 100, flush=True)"])
    f.until(lambda: f.states()[job.id] == "done")
    config = f.write_config()
    for argv in (["jobs"], ["jobs", "--json"], ["jobs", "--all"], ["audit"],
                 ["audit", "--json"], ["status"], ["status", "--json"], ["doctor"],
                 ["logs", str(job.id)], ["submit", "--queue", "quarter", "--json", "--", "x"]):
        done = _into_closed_pipe(argv, config)
        assert (done.returncode, done.stderr) == (141, ""), (argv, done.stderr)
    for argv in (["--help"], ["--version"], ["jobs", "--help"]):  # argparse's own: quiet, 0
        done = _into_closed_pipe(argv, config)
        assert (done.returncode, done.stderr) == (0, ""), (argv, done.stderr)


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_argparses_own_text_into_a_closed_pipe_is_dropped_quietly_buffered_or_not(
        tmp_path, unbuffered):
    """``fractui --help | true``: the text argparse writes is dropped, exit 0 (docs/cli.md).
    Only an unbuffered stdout (PYTHONUNBUFFERED, as the suite's environment may set it) met
    the closed pipe in argparse's write; a buffered one kept the text, and main's flush met
    it: 141."""
    read, write = os.pipe()
    os.close(read)
    try:
        for argv in (["--help"], ["--version"], ["jobs", "--help"]):
            done = subprocess.run([PY, "-m", "fractui", *argv], stdout=write,
                                  stderr=subprocess.PIPE, text=True, cwd=localfleet.REPO,
                                  timeout=120, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, PYTHONUNBUFFERED=unbuffered,
                                           XDG_CONFIG_HOME=str(tmp_path)))
            assert (done.returncode, done.stderr) == (0, ""), (argv, done.stderr)
    finally:
        os.close(write)


@pytest.mark.parametrize("unbuffered", ["", "1"])  # (fails in the verb's write, or at main's flush)
def test_an_output_with_no_room_is_said_to_be_stdouts(tmp_path, unbuffered):
    """``fractui jobs > /dev/full`` said "fractui: [Errno 28] No space left on device", exit
    1, naming nothing (the store's disk? a host's?); ``--help`` and ``--version`` there said
    nothing, exit 0. Every verb, and argparse's own, says it was its output."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n\n[[queues]]\nname = "q"\ngpu = 0.25\n'
                      % sqlite_url(str(tmp_path / "store.db")))
    assert subprocess_run(["--config", str(config), "submit", "--queue", "q", "--", "x"]
                          ).returncode == 0
    for argv in (["jobs"], ["jobs", "--json"], ["status"], ["audit"], ["queues"], ["report"],
                 ["--help"], ["--version"], ["jobs", "--help"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([PY, "-m", "fractui", "--config", str(config), *argv],
                                  stdout=full, stderr=subprocess.PIPE, text=True,
                                  cwd=localfleet.REPO, timeout=120, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, PYTHONUNBUFFERED=unbuffered))
        said = done.stderr.splitlines()
        assert done.returncode == 1 and not leaks(done.stderr), (argv, done.stderr)
        assert said[-1] == "fractui: cannot write the output (stdout): No space left on " \
            "device" and said.count(said[-1]) == 1, (argv, done.stderr)


def test_a_reader_that_leaves_early_ends_fractui_quietly(local_fleet):  # noqa: F811
    """``fractui jobs --all --json | head -1`` and ``fractui logs -f N | head -1``: more output
    than a pipe holds, so fractui is still writing when head has gone."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)], lease_s=HELD_S)
    chatty = f.submit("quarter", argv=[PY, "-c", "import time\nwhile True:\n"
                                                 "    print('line ' * 10, flush=True)\n"
                                                 "    time.sleep(0.01)"])
    f.until(lambda: f.states()[chatty.id] == "running")
    for _ in range(3000):  # pending: no pass runs after this
        f.store.submit("quarter", None, "n", ["x"] * 20, f.config.queue("quarter").request(),
                       "test")
    config = f.write_config()
    for argv in (["jobs", "--all", "--limit", "5000", "--json"], ["logs", "-f", str(chatty.id)]):
        fractui = subprocess.Popen([PY, "-m", "fractui", "--config", config, *argv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=localfleet.REPO, stdin=subprocess.DEVNULL)
        head = subprocess.Popen(["head", "-1"], stdin=fractui.stdout, stdout=subprocess.PIPE)
        fractui.stdout.close()  # head holds the only read end now
        first, _ = head.communicate(timeout=60)
        _, err = fractui.communicate(timeout=60)
        assert first and (fractui.returncode, err) == (141, b""), (argv, err)


def test_every_time_of_day_printed_is_local_time_with_its_offset(local_fleet, capfd,  # noqa: F811
                                                                  berlin):
    """audit and status printed local time bare (``2026-12-07 10:01:02``) where report added
    its offset (``+0100``): pasted to someone in another zone, the first two read as another
    time. Every time of day said in text is now said one way (words.local_time): local time
    with its offset from UTC; --json keeps seconds since the epoch."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="q", gpu=0.25)])
    job = f.submit("q")
    f.until(lambda: f.states()[job.id] == "running" and f.store.inventory())
    f.store.cordon("gpu-a", None, "cordon", "ops@head", "fan")
    user = f.tmp / "user.toml"
    user.write_text("[store]\nurl = %s\n" % json.dumps(f.config.store.url))
    at = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0100"  # (Berlin in December)
    code, out, err = in_process(capfd, ["--config", str(user), "audit"])
    assert code == 0 and re.match(r"TIME +ACTOR", out) and re.search(
        r"\n%s +ops@head +cordon " % at, out), out
    code, out, err = in_process(capfd, ["--config", str(user), "status"])
    assert code == 0 and re.search(r"the store keeps them at %s, " % at, err), err
    assert re.fullmatch(r"gpu-a +reachable +facts of %s, \[cordoned\]" % at,
                        out.splitlines()[0]), out
    code, out, err = in_process(capfd, ["--config", f.write_config(), "logs", str(job.id)])
    assert code == 0 and re.fullmatch(
        r"fractui: job %d has printed nothing yet \(running on gpu-a since %s\)\n" % (
            job.id, at), err), err
    code, out, err = in_process(capfd, ["--config", str(user), "report", "--since", "1h"])
    # (the report's range drops the seconds of a time on a whole minute: 1 run in 60 here)
    to_minute = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? \+0100"
    assert code == 0 and re.match(r"usage from %s to %s, by team" % (to_minute, to_minute),
                                  out), out


def test_a_time_no_date_can_say_is_said_as_its_seconds_never_an_internal_error(tmp_path,
                                                                               capfd):
    """An audit entry's time beyond what this machine's time_t holds (a store written by hand
    or by another program: 1e300, -inf, 1e18; fractui writes none) made ``audit`` an internal
    error, "a bug in fractui" (exit 70), or, at 1e18, "fractui: [Errno 75] Value too large
    for defined data type" (exit 1), which names nothing of the store. words.local_time, by
    which every time of day in text is said, says such a time as its seconds since 1970."""
    path = tmp_path / "store.db"
    store = SqliteStore(str(path))
    for name in ("far", "before", "huge", "now"):
        store.submit("q", None, name, ["true"], QueueConfig(name="q", gpu=0.25).request(),
                     "ops@head")
    store.close()
    with sqlite3.connect(str(path)) as db:
        for job, at in ((1, 1e300), (2, -math.inf), (3, 1e18)):
            db.execute("UPDATE audit SET time = ? WHERE job = ?", (at, job))
    db.close()
    config = tmp_path / "config.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(sqlite_url(str(path))))
    code, out, err = in_process(capfd, ["--config", str(config), "audit"])
    assert (code, err) == (0, ""), (code, err)
    times = {int(line.split("  ops@head  submit  ")[1].split()[0]): line.split("  ")[0]
             for line in out.splitlines()[1:]}
    assert times == {1: "1e+300 s since 1970-01-01", 2: "-inf s since 1970-01-01",
                     3: "1e+18 s since 1970-01-01", 4: times[4]}, out
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", times[4]), out


def test_status_of_a_config_of_no_hosts_is_the_stores_word(local_fleet, capfd):  # noqa: F811
    """A researcher whose config names only the store: ``status`` printed "nothing to show"
    (exit 0); it now shows the hosts as the store keeps them — the lease holder's inventory,
    the hosts it finds unreachable, what is out of service, the store's jobs on each GPU —
    saying it is the store's word and as of when, with no host asked."""
    f = local_fleet({"gpu-a": "2xL4"}, [QueueConfig(name="q", gpu=0.25)])
    job = f.submit("q")
    f.until(lambda: f.states()[job.id] == "running" and f.store.inventory())
    gpu = f.store.get(job.id).slot.gpus[0]
    f.store.cordon("gpu-a", 1 - gpu, "cordon", "ops@head", "fan")
    config = f.tmp / "user.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(f.config.store.url))

    f.store.keep_trouble("the store is slow")  # its passes fail: said as jobs says it
    code, out, err = in_process(capfd, ["--config", str(config), "status"])
    assert code == 0, err
    assert err.startswith("fractui: the config lists no hosts ([[hosts]]): the hosts as the "
                          "store keeps them at "), err
    assert "fractui: the scheduler's passes fail: the store is slow" in err, err
    assert "scheduler's word (no host is asked)" in err and "no scheduler" not in err, err
    lines = out.splitlines()
    assert re.fullmatch(r"gpu-a +reachable +facts of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}",
                        lines[0]), out
    booked = f.store.get(job.id).slot.memory_mib  # what a member may still be given there
    assert lines[1 + gpu].split() == ["gpu%d" % gpu, "NVIDIA", "L4", "%d/23034" % booked, "MiB",
                                      "booked:", "jobs", str(job.id)], out
    assert lines[2 - gpu].split()[-4:] == ["0/23034", "MiB", "booked", "[cordoned]"], out
    assert len(lines) == 3, out

    # the lease holder finds it unreachable; then no scheduler holds the lease
    f.store.keep_lost_clocks({"gpu-a": f.store.now() - 30}, {})
    f.store.release_lease("test")
    code, out, err = in_process(capfd, ["--config", str(config), "status", "--json"])
    assert code == 0, err
    assert "no scheduler is running for this store" in err and "may be old" in err, err
    said = json.loads(out)
    assert (said["source"], said["scheduler"]) == ("store", None) and said["as_of"] > 0
    (host,) = said["hosts"]
    assert (host["name"], host["state"], host["out_of_service"]) == ("gpu-a", "unreachable",
                                                                     None)
    assert host["away_since"] < said["as_of"] and host["facts_since"] <= said["as_of"]
    assert [(g["index"], g["jobs"], g["booked_mib"], g["out_of_service"])
            for g in host["gpus"]] == sorted([(gpu, [job.id], booked, None),
                                              (1 - gpu, [], 0, "cordoned")])


def test_jobs_all_bounds_the_ended_jobs_only_never_an_active_one(tmp_path, capfd):
    """``jobs --all`` took the newest N jobs of every state: a job that had run for a day
    behind N newer ones that ended left ``jobs --all`` (``--me`` too) while ``jobs`` listed
    it. N bounds the ended jobs; every active one is listed, in number order."""
    me = os_user()  # (the store's word on who submitted: --me lists them)
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        running = store.submit("q", None, "long", ["x"], {"gpu": 0.5}, me)
        store.place(running.id, Slot("gpu-a", (0,), memory_mib=512), "sched", "decided")
        store.started(running.id, "j1", None, "sched", "launched")
        waiting = store.submit("q", None, "waits", ["x"], {"gpu": 0.5}, me)
        ended = [store.ended(store.submit("q", None, "short", ["x"], {"gpu": 0.5}, me).id,
                             ("pending",), "cancelled", "by me", "me", "cancelled", "cancel")
                 for _ in range(3)]
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    for whose in ([], ["--me"]):
        code, out, err = in_process(capfd, ["--config", str(config), "jobs", "--all",
                                            "--limit", "2", "--json", *whose])
        assert code == 0, err
        assert [j["id"] for j in json.loads(out)["jobs"]] == [
            running.id, waiting.id, ended[1].id, ended[2].id], out
        # an older one left out is said, not passed over: one looked for is not gone
        assert err == NO_SCHEDULER + "\nfractui: the newest 2 ended jobs are listed; older " \
                                     "ones are left out (--limit N lists more)\n", err
    code, out, err = in_process(capfd, ["--config", str(config), "jobs", "--all", "--limit", "1"])
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [
        str(j.id) for j in (running, waiting, ended[2])], out
    assert err.splitlines()[-1] == "fractui: the newest ended job is listed; older ones are " \
                                   "left out (--limit N lists more)", err  # (one: no "1 ... are")
    for limit in (["--limit", "3"], []):  # none left out: nothing said
        code, out, err = in_process(capfd, ["--config", str(config), "jobs", "--all", *limit])
        assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [
            str(j.id) for j in (running, waiting, *ended)], out
        assert err == NO_SCHEDULER + "\n", err  # (no scheduler in this test)


def test_status_and_jobs_say_a_number_or_name_not_known_in_words_never_none(tmp_path, capfd):
    """A GPU the store keeps without its memory, model or index (as an older or a foreign
    agent reported it) printed "None MiB", "None", "gpuNone"; the live hosts' lines crashed on
    a GPU without its memory, and a job by hand that exited with no code was "exited None".
    Each now says what is not known; ``--json`` keeps its null."""
    from fractui.commands import _gpu_summary
    from fractui.job_commands import agent_why
    from fractui.store import SqliteStore

    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        store.record_inventory("gpu-a", {"cpus": 8, "memory_mib": None, "gpus": [
            {"index": 0, "uuid": "GPU-0", "name": "NVIDIA L4", "memory_mib": None,
             "mig_mode": False},
            {"index": 1, "uuid": "GPU-1", "memory_mib": 23034, "mig_mode": False},
            {"uuid": "GPU-2", "mig_mode": False}]})
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    code, out, err = in_process(capfd, ["--config", str(config), "status"])
    assert code == 0 and "None" not in out, (out, err)
    assert [line.split(None, 1)[1] if line.startswith("    ") else line
            for line in out.splitlines()[1:]] == [
        "NVIDIA L4                    memory unknown",
        "model unknown                0/23034 MiB booked",
        "model unknown                memory unknown"], out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["gpu0", "gpu1", "gpu?"]
    code, out, err = in_process(capfd, ["--config", str(config), "status", "--json"])
    (host,) = json.loads(out)["hosts"]
    assert [g["memory_mib"] for g in host["gpus"]] == [None, 23034, None], out
    assert [_gpu_summary({"memory_used_mib": u}) for u in (None, 512)] == [
        "memory unknown", "512 MiB used, its total unknown"]
    assert _gpu_summary({"memory_used_mib": None, "memory_mib": 23034}) == "?/23034 MiB"
    assert agent_why({"state": "exited"}) == "exited, its exit code unknown"
    assert agent_why({"state": "exited", "exit_code": 3}) == "exited 3"  # an older agent's
    assert agent_why({"state": "exited", "exit_code": 3, "last_line": None}) == "exited 3"
    # its last line, as an agent's words are shown: plain, and short
    assert agent_why({"state": "exited", "exit_code": 3, "last_line": "\x1b[31mno\x1b[0m\tGPU"
                      }) == "exited 3: no GPU"
    assert agent_why({"state": "exited", "exit_code": 3, "last_line": "x" * 10 ** 5}) == \
        "exited 3: " + "x" * 159 + "\u2026"
    assert agent_why({"state": "exited", "exit_code": 0, "last_line": "done"}) == "exited 0"


def test_status_cuts_its_lines_to_columns_as_jobs_does(tmp_path, capfd, monkeypatch):
    """``jobs``, ``teams``, ``report``, ``audit`` and ``queues`` cut their lines to $COLUMNS;
    ``status`` printed its whole, a host's error too. It cuts them as they do (terminal.width),
    the hosts it asks and the hosts the store keeps alike; without $COLUMNS, into a pipe,
    nothing is cut."""
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        store.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "gpus": [
            {"index": 0, "uuid": "GPU-0", "name": "NVIDIA L4", "memory_mib": 23034,
             "mig_mode": False}]})
    finally:
        store.close()
    kept = tmp_path / "config.toml"
    kept.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    asked = tmp_path / "asked.toml"
    asked.write_text(kept.read_text() + '[ssh]\nconnect_timeout = 2\n[[hosts]]\nname = "down"\n'
                     'host = "127.0.0.1"\nport = %d\n' % closed_port())
    for config, code in ((kept, 0), (asked, 1)):
        monkeypatch.delenv("COLUMNS", raising=False)
        done, whole, err = in_process(capfd, ["--config", str(config), "status"])
        assert done == code and max(map(len, whole.splitlines())) > 30, (whole, err)
        monkeypatch.setenv("COLUMNS", "30")
        done, out, err = in_process(capfd, ["--config", str(config), "status"])
        assert done == code and out.splitlines() == [
            line if len(line) <= 30 else line[:29] + "\u2026" for line in whole.splitlines()
        ], (out, whole)


def test_without_a_config_fractui_says_where_it_looked_and_what_to_try(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "conf")}
    expected = str(tmp_path / "conf" / "fractui" / "config.toml")
    example = os.path.join(localfleet.REPO, "config.example.toml")
    for argv in ([], ["jobs"], ["--config", str(tmp_path / "missing.toml"), "status"]):
        done = subprocess_run(argv, env_extra=env)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        path = argv[1] if argv[:1] == ["--config"] else expected
        assert done.stderr.startswith("fractui: %s: no such file\n" % path), done.stderr
        for hint in (expected, "fractui demo", example):
            assert hint in done.stderr, (hint, done.stderr)
        assert not leaks(done.stderr)
    done = subprocess_run(["--config", str(tmp_path), "jobs"])
    assert (done.returncode, done.stderr) == (2, "fractui: %s: is a directory\n" % tmp_path)
    # a config of no hosts: said, not an empty screen (status shows what the store keeps of
    # them: test_status_of_a_config_of_no_hosts_is_the_stores_word)
    done = subprocess_run(["--config", os.devnull, "doctor"])
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "", "fractui: the config lists no hosts ([[hosts]]): nothing to show\n")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # no writer: reading it would wait for good
    done = subprocess_run(["--config", str(fifo), "jobs"])
    assert (done.returncode, done.stderr) == (2, "fractui: %s: not a regular file: a FIFO\n"
                                              % fifo)


def test_a_terminal_is_written_text_only():
    """Lines and tabs kept; every escape sequence taken out whole (a colour, a link, the
    clipboard, a cursor move, a bare ESC pair, one made by taking another out, C1 forms), any
    other control character alone, and a mark that turns the text's direction; a progress
    bar's steps each on a line."""
    into = io.StringIO()
    TerminalText(into).write("a\tb\n\x1b[1;31mred\x1b[0m \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ "
                             "\x1b]52;c;SGk=\x07\x1b[2J\x1bM\u202eend\x07\x08\x9b\x7f\r\n"
                             "10%\r20%\r\x1b\x1b[0m[201~\x1b(B\x9d0;t\x9cok\n")
    assert into.getvalue() == "a\tb\nred link end\n10%\n20%\nok\n"


def _on_a_terminal(code: int, *args: str) -> bytes:
    """What ``fractui ARGS`` writes to a real terminal (a pty), stdout and stderr alike."""
    term = Terminal([sys.executable, "-m", "fractui", *args])
    shown = term.to_the_end()
    assert term.proc.returncode == code, shown
    return shown


def test_a_word_of_the_command_line_reaches_a_terminal_as_text(tmp_path):
    """A control sequence typed into the command line is never written back raw: not in
    argparse's own errors (an unknown option); a path that holds one (a config file, the
    agent archive's folder) is named with it escaped, not shown as another path (the sequence
    taken out, a newline splitting it); a scheduler's name, which others' screens show, is
    refused."""
    shown = _on_a_terminal(2, "jobs", "--x\x1b]52;c;SGk=\x07")  # named as typed, escaped
    assert b"\x1b" not in shown and b"unrecognized arguments: '--x\\x1b]52;c;SGk=\\x07'" in shown
    for odd in ("x\x1b[2Jy.toml", "x\ny.toml"):
        shown = _on_a_terminal(2, "--config", str(tmp_path / odd), "status")
        assert b"\x1b" not in shown, shown
        assert repr(str(tmp_path / odd)).encode() + b": no such file" in shown, shown
    (tmp_path / "file").write_text("")
    into = str(tmp_path / "file" / "d\x1b[2J")  # under a file: not written
    shown = _on_a_terminal(1, "agent-archive", into)
    assert b"\x1b" not in shown and repr(into).encode() in shown, shown
    shown = _on_a_terminal(2, "scheduler", "--name", "a\nfractui: b")
    assert b"--name: " in shown and b"'a\\nfractui: b'" in shown, shown


def test_text_the_output_encoding_cannot_hold_is_escaped_not_an_error(local_fleet):  # noqa: F811
    """A researcher's job named and printing in Unicode, read by an admin whose stdout is
    ASCII (PYTHONIOENCODING, or a C locale on an older Python): each verb writes what its
    encoding cannot hold as an escape, on stdout and in the line saying why on stderr. Their
    "…", "—" and "·" too: the stand-ins of fractui's own marks (``~``, ``-``, ``.``) wrote a
    name "a…b" as a name "a~b" would be, and the submit line a requeue gives to be pasted
    as another job's."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)])
    job = f.store.submit("quarter", None, "h\xe9llo-\u2713\u2026\u2014", [
        PY, "-c", "print('h\\xe9llo \\u2713 \\u2026\\u2014\\xb7', flush=True)"],
        f.config.queue("quarter").request(), "test")
    f.until(lambda: f.states()[job.id] == "done")
    config = f.write_config()
    ascii_out = {"PYTHONIOENCODING": "ascii"}
    for argv, code, out, err in (
            (["jobs", "--all"], 0, "h\\xe9llo-\\u2713\\u2026\\u2014", ""),
            (["logs", str(job.id)], 0, "h\\xe9llo \\u2713 \\u2026\\u2014\\xb7\n", ""),
            (["audit", str(job.id)], 0, "", ""),
            (["status"], 0, "gpu-a", ""),
            (["requeue", str(job.id)], 1, "", "--name 'h\\xe9llo-\\u2713\\u2026\\u2014'"),
            (["logs", "j\u00e9"], 2, "", "'j\\xe9'"),
            (["logs", "j\u2026"], 2, "", "'j\\u2026'")):
        done = subprocess_run(["--config", config, *argv], env_extra=ascii_out)
        assert done.returncode == code and out in done.stdout and err in done.stderr, (
            argv, done.returncode, done.stdout[-300:], done.stderr)
        assert not leaks(done.stderr), (argv, done.stderr)


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_the_tables_own_marks_keep_their_width_in_an_encoding_without_them(tmp_path,
                                                                             encoding):
    """An admin whose stdout is ASCII or Latin-1 (PYTHONIOENCODING, a Latin-1 locale): a
    table's own marks, "…" where a cell is cut and "—" for no value, which neither holds, were
    written as their escapes (``\\u2026``: six cells drawn for the one the table counted), so
    each line with one ran past the terminal's width and the columns no longer lined up. Each
    is now a mark of one cell that the encoding holds."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[queues]]\nname = "%s"\ngpu = 0.25\n'
                      % (tmp_path / "store.db", "q" * 40))
    done = subprocess_run(["--config", str(config), "submit", "--queue", "q" * 40, "--",
                           "/bin/true"])
    assert done.returncode == 0, done.stderr
    narrow = {"PYTHONIOENCODING": encoding, "COLUMNS": "60"}
    jobs = subprocess_run(["--config", str(config), "jobs"], narrow)
    assert subprocess_run(["--config", str(config), "cancel", "1"]).returncode == 0
    queues = subprocess_run(["--config", str(config), "queues"], dict(narrow, COLUMNS="200"))
    for done in (jobs, queues):
        assert done.returncode == 0 and not leaks(done.stderr), done.stderr
        assert "\\u" not in done.stdout, done.stdout
    header, row = jobs.stdout.splitlines()
    assert len(header) == 60 and header.endswith("~") and len(row) <= 60, jobs.stdout
    assert "q" * 15 + "~  " in row, jobs.stdout  # its queue's name, cut
    header, row = queues.stdout.splitlines()[:2]
    longest = header.index("LONGEST")
    assert row[longest:longest + 2] == "- ", queues.stdout  # no job waits: no value


def test_a_verb_loads_its_own_module_and_not_the_tuis(tmp_path, local_fleet):  # noqa: F811
    """Each verb imports the module that carries it out, not every verb's: ``fractui jobs``
    and the store's verbs do not load Textual (the themes verb's and the TUI's), which cost
    every run of them a third of a second before it did anything; SSH (paramiko, a fifth of a
    second) is loaded only where a host is reached over SSH, not by a verb on local hosts."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    local = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="quarter", gpu=0.25)]).write_config()
    with_ssh = tmp_path / "ssh.toml"
    with_ssh.write_text(open(local).read() + (
        '[ssh]\nconnect_timeout = 2\n[[hosts]]\nname = "down"\nhost = "127.0.0.1"\n'
        'port = %d\n' % closed_port()))
    for path, argv, code, ssh in (
            (config, ["jobs", "--json"], 0, False), (config, ["audit", "--json"], 0, False),
            (config, ["report", "--json"], 0, False),
            (local, ["jobs", "--json"], 0, False), (local, ["status", "--json"], 0, False),
            (with_ssh, ["status", "--json"], 1, True)):
        done = subprocess.run([PY, "-c", (
            "import sys\nfrom fractui.cli import main\ncode = main(sys.argv[1:])\n"
            "sys.stdout.flush()\nprint(code, 'textual' in sys.modules, 'paramiko' in "
            "sys.modules, file=sys.stderr)"),
            "--config", str(path), *argv], capture_output=True, text=True,
            cwd=localfleet.REPO, timeout=120, stdin=subprocess.DEVNULL)
        assert done.stderr == "%d False %s\n" % (code, ssh), (argv, done.stderr)
    done = subprocess.run([PY, "-c", (
        "import sys\nfrom fractui.cli import main\nmain(['themes'])\nsys.stdout.flush()\n"
        "print('textual' in sys.modules, file=sys.stderr)")], capture_output=True, text=True,
        cwd=localfleet.REPO, timeout=120, stdin=subprocess.DEVNULL)
    assert done.stderr == "True\n", done.stderr  # the themes verb does load it


def test_every_verbs_help_says_what_it_does_each_option_and_where_the_command_goes(capfd):
    """A newcomer reads ``fractui VERB --help``: it opens with what the verb does, every
    option and argument says what it is, launch and submit show the job's command after ``--``
    in their usage, and --readonly names everything it leaves unbound (cordons and MIG changes
    too)."""
    verbs = ["status", "doctor", "trust", "mig", "launch", "submit", "jobs", "cancel",
             "requeue", "preempt", "place", "cordon", "drain", "uncordon", "audit", "report",
             "teams", "scheduler", "logs", "demo", "themes", "agent-archive", "stop"]
    code, top, _ = in_process(capfd, ["--help"])
    assert code == 0 and all(re.search(r"^    %s\b" % v, top, re.M) for v in verbs), top
    for verb in verbs:
        code, out, err = in_process(capfd, [verb, "--help"])
        assert code == 0 and not err, (verb, err)
        usage, said = out.split("\n\n")[:2]
        assert said and not said.startswith(("options:", "positional")), (verb, out)
        start = out.find("positional arguments:")
        options = out[start if start >= 0 else out.index("options:"):].splitlines() + [""]
        bare = [line for line, after in zip(options, options[1:]) if re.match(r"  \S", line)
                and not re.search(r"\S  +\S", line.strip()) and not after.startswith(" " * 8)]
        assert not bare, (verb, bare)  # an option or argument with no words saying what it is
        assert usage.rstrip().endswith("-- ARGV...") == (verb in ("launch", "submit")), usage
    code, out, _ = in_process(capfd, ["--help"])
    assert "cordons, drains or uncordons, or changes MIG" in " ".join(out.split())


def test_help_keeps_a_path_with_a_hyphen_in_one_piece(capfd, monkeypatch):
    """--help names the default config by its path, which a newcomer copies: wrapped at its
    hyphens (a home as /home/jean-luc), it was cut into two lines, neither of them a path."""
    path = "/home/jean-luc/.config/fractui/config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/jean-luc/.config")
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = in_process(capfd, ["--help"])
    assert code == 0 and path + ")" in out.split(), out


def test_a_mistyped_option_is_answered_with_its_verbs_usage_and_the_close_one(capsys):
    """``fractui jobs --mine``: the verb's usage (fractui's own lists only the verbs) and the
    option meant, where one is close; exit 2, before any config is read."""
    for argv, said in (
            (["jobs", "--mine"], "jobs: error: unrecognized arguments: --mine (did you mean "
                                 "--me?)"),
            (["submit", "--queue", "q", "--wiat", "--", "x"], "submit: error: unrecognized "
                                                              "arguments: --wiat (did you "
                                                              "mean --wait?)"),
            (["report", "--snce=2h"], "report: error: unrecognized arguments: --snce=2h (did "
                                      "you mean --since?)"),
            (["jobs", "--bogus"], "jobs: error: unrecognized arguments: --bogus")):
        assert main(["--config", "/nonexistent/config.toml", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("usage: fractui %s [-h]" % argv[0]), err
        assert err.splitlines()[-1] == "fractui %s" % said, err


def test_an_unknown_option_is_said_before_a_missing_required_one(capsys):
    """``fractui submit -q vq``: argparse said "the following arguments are required: --queue"
    and never the ``-q`` typed for it; the unknown option is said first, and a letter that
    begins only one long option names it, but not after a program's name, where it is the
    program's (``nvidia-smi -q``). A required option left out, with nothing unknown,
    is still said so (and the exclusive group of launch's slice too)."""
    for argv, said in (
            (["submit", "-q", "vq"], "submit: error: unrecognized arguments: -q vq (did you "
                                     "mean --queue?)"),
            (["submit", "-q", "vq", "--", "x"], "submit: error: unrecognized arguments: -q vq "
                                                "(did you mean --queue?)"),
            (["launch", "gpu-a", "0", "--memry-mib", "5", "--", "x"],
             "launch: error: unrecognized arguments: --memry-mib 5 (did you mean "
             "--memory-mib?)"),
            (["submit", "-c", "/x", "--", "x"], "submit: error: unrecognized arguments: -c /x"),
            # after a program's name a letter is the program's (nvidia-smi -q), not ours: the
            # command is said to go after --, and no option of ours named for it
            (["submit", "--queue", "quarter", "nvidia-smi", "-q"], "submit: error: "
             "unrecognized arguments: nvidia-smi -q (the job's command goes after --: fractui "
             "submit ... -- nvidia-smi -q)"),
            (["submit", "--queue", "quarter", "python", "t.py", "--wiat"], "submit: error: "
             "unrecognized arguments: python t.py --wiat (did you mean --wait?) (the job's "
             "command goes after --: fractui submit ... -- python t.py --wiat)"),
            (["submit", "--", "x"], "submit: error: the following arguments are required: "
                                    "--queue"),
            (["launch", "gpu-a", "0", "--", "x"], "launch: error: one of the arguments "
                                                  "--instance --profile --memory-mib is "
                                                  "required")):
        assert main(["--config", "/nonexistent/config.toml", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("usage: fractui %s [-h]" % argv[0]), err
        assert err.splitlines()[-1] == "fractui %s" % said, err


def test_a_letter_other_verbs_take_is_read_as_they_read_it(capsys):
    """``-n`` is fractui's count (audit's --limit, logs' --lines): ``submit -n 4`` said "did you
    mean --name?", which names the job "4", and ``jobs -n 5`` named nothing, where its --limit
    is audit's. A letter another verb takes names this verb's option of the same meaning, or
    none; a letter no verb takes still names the one long option it begins."""
    for argv, said in (
            (["jobs", "-n", "5"], "jobs: error: unrecognized arguments: -n (did you mean "
                                  "--limit?)"),
            (["submit", "-n", "4", "--queue", "q", "--", "x"],
             "submit: error: unrecognized arguments: -n 4"),
            (["report", "-n", "5"], "report: error: unrecognized arguments: -n 5"),
            (["audit", "-l", "5"], "audit: error: unrecognized arguments: -l (did you mean "
                                   "--limit?)"),
            (["submit", "-t", "nlp", "--queue", "q", "--", "x"],
             "submit: error: unrecognized arguments: -t nlp (did you mean --team?)")):
        assert main(["--config", "/nonexistent/config.toml", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("usage: fractui %s [-h]" % argv[0]), err
        assert err.splitlines()[-1] == "fractui %s" % said, err


NO_SCHEDULER = ("fractui: no scheduler is running for this store (none holds its lease): nothing "
                "is placed, launched or stopped until one runs (fractui scheduler, an admin's)")


def test_a_job_waiting_for_want_of_a_scheduler_says_so(tmp_path):
    """A pending job has no why while no scheduler holds the lease (none runs): ``submit``
    and ``jobs`` say that is why, and ``submit --wait`` says each time one starts or stops
    leading, rather than waiting in silence."""
    from fractui.store import SqliteStore

    path = tmp_path / "store.db"
    config = tmp_path / "config.toml"
    config.write_text('[scheduler]\nstore = "%s"\n[[queues]]\nname = "q"\ngpu = 0.5\n' % path)
    fractui = [PY, "-m", "fractui", "--config", str(config)]
    waiting = subprocess.Popen(fractui + ["submit", "--wait", "--queue", "q", "--", "true"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=localfleet.REPO, stdin=subprocess.DEVNULL)
    said: "queue.Queue[str]" = queue.Queue()  # its stderr, read aside (never a hang)
    reader = threading.Thread(target=lambda: [said.put(line) for line in waiting.stderr],
                              daemon=True)
    reader.start()
    try:
        number = int(waiting.stdout.readline().split()[0])
        lines = iter(lambda: said.get(timeout=60), "")
        assert next(line for line in lines if "lease" in line) == NO_SCHEDULER + "\n"
        listed = subprocess.run(fractui + ["jobs"], capture_output=True, text=True,
                                cwd=localfleet.REPO, timeout=60)
        assert (listed.returncode, listed.stderr) == (0, NO_SCHEDULER + "\n"), listed
        store = SqliteStore(str(path))
        try:
            store.acquire_lease("head", 60)
            assert next(lines) == ("fractui: a scheduler runs for this store now (head holds "
                                   "its lease)\n")
            listed = subprocess.run(fractui + ["jobs", str(number)], capture_output=True,
                                    text=True, cwd=localfleet.REPO, timeout=60)
            assert (listed.returncode, listed.stderr) == (0, ""), listed
            store.release_lease("head")
            assert next(lines) == NO_SCHEDULER + "\n"
        finally:
            store.close()
    finally:
        waiting.send_signal(signal.SIGINT)
        waiting.wait(timeout=60)
        reader.join(timeout=60)  # (its stderr read to the end by the reader, not here too)
        waiting.stdout.close()
        waiting.stderr.close()


def test_jobs_says_a_long_wait_in_hours_and_minutes(tmp_path):
    """WHERE of a pending job: "waiting 2h03m", as the TUI says it, not "waiting 7384s"."""
    from fractui.job_commands import job_row
    from fractui.store import SqliteStore

    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
    finally:
        store.close()
    assert [job_row(job, job.waiting_since + s)[5] for s in (-1, 42, 185, 7384)] == [
        "waiting 0s", "waiting 42s", "waiting 3m05s", "waiting 2h03m"]


def test_jobs_says_how_long_a_running_job_has_run_and_a_pending_one_waited(tmp_path):
    """A researcher reads both: a pending job's wait (WHERE), a running or stopping job's run
    (WHY, before why it stops), and ``--json`` both in seconds (``waited_s``, ``ran_s``)."""
    from fractui import job_commands
    from fractui.store import SqliteStore, Slot

    job_row = job_commands.job_row

    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        job = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
        pending = store.submit("q", None, "next", ["x"], {"gpu": 0.5}, "test")
        store.place(job.id, Slot("gpu-a", (0,), memory_mib=512, charge=0.5), "sched", "decided")
        job = store.started(job.id, "j1", 1000.0, "sched", "launched")
        assert job_row(job, 1000.0 + 3720)[5:] == ["gpu-a gpu0 512 MiB", "train", "ran 1h02m"]
        stopping = store.stopping(job.id, ("running",), "cancel", "me@head", "asked")
        row = job_row(stopping, 1000.0 + 185)
        assert row[7] == "ran 3m05s; %s" % stopping.reason and stopping.reason, row
        record = job_commands.job_record(stopping, 1042.0)
        assert (record["ran_s"], record["waited_s"]) == (42.0, None)
        record = job_commands.job_record(pending, pending.waiting_since + 185)
        assert (record["waited_s"], record["ran_s"]) == (185.0, None)
    finally:
        store.close()


def test_jobs_times_a_wait_and_a_run_by_the_stores_clock_not_a_skewed_machines(
        pg_server, tmp_path, capfd, monkeypatch):
    """On PostgreSQL a submit's, a requeue's time is the server's; ``jobs`` measured a job's
    wait and run against this machine's wall clock, so an admin machine two hours fast showed
    every job waiting and running two hours more. They are measured by the store's clock."""
    from fractui.store import open_store

    url = pg_server.url(pg_server.new_database())
    store = open_store(url)
    try:
        pending = store.submit("q", None, "next", ["x"], {"gpu": 0.5}, "test")
        job = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
        store.place(job.id, Slot("gpu-a", (0,), memory_mib=512, charge=0.5), "sched", "decided")
        store.started(job.id, "j1", store.now() - 185, "sched", "launched")
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text("[store]\nurl = %s\n" % json.dumps(url))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)  # this machine's clock set wrong
    code, out, err = in_process(capfd, ["--config", str(config), "jobs", "--json"])
    assert code == 0, err
    said = {j["id"]: j for j in json.loads(out)["jobs"]}
    assert 185 <= said[job.id]["ran_s"] < 3600 and 0 <= said[pending.id]["waited_s"] < 3600
    code, out, err = in_process(capfd, ["--config", str(config), "jobs"])
    assert code == 0 and re.search(r"\bran 3m\d\ds\b", out), out



def test_jobs_says_a_running_job_whose_start_is_not_known_so(tmp_path, capfd):
    """A job the store has running with no start time (a start its agent holds unread, a
    launch answered ``starting``; docs/decisions.md, "held starting"): ``jobs`` and ``jobs
    N`` gave it no word of its run, as if it had none; WHY says its start is not known, and
    ``--json`` no ``ran_s`` (null), never a run counted from its submit."""
    path = str(tmp_path / "store.db")
    store = SqliteStore(path)
    try:
        job = store.submit("q", None, "train", ["x"], {"gpu": 0.5}, "test")
        store.place(job.id, Slot("gpu-a", (0,), memory_mib=512, charge=0.5), "sched", "decided")
        store.started(job.id, "j1", None, "sched", "launched")
        assert store.get(job.id).started_at is None
    finally:
        store.close()
    config = _store_config(tmp_path, path)
    for argv in (["jobs"], ["jobs", str(job.id)]):
        code, out, err = in_process(capfd, ["--config", config] + argv)
        row = out.splitlines()[1]
        assert code == 0 and row.split()[:2] == [str(job.id), "running"], (out, err)
        assert row.endswith("train  start not known") and " ran " not in row, out
    code, out, err = in_process(capfd, ["--config", config, "jobs", "--json"])
    (said,) = json.loads(out)["jobs"]
    assert code == 0 and (said["state"], said["ran_s"], said["waited_s"]) == (
        "running", None, None), said


def _store_config(tmp_path, store: str, hosts: str = "") -> str:
    """A config of one queue whose store is ``store``, and ``hosts`` (TOML) if given."""
    config = tmp_path / "config.toml"
    config.write_text('[ssh]\nconnect_timeout = 1\n[store]\nurl = "sqlite://%s"\n[[queues]]\n'
                      'name = "q"\ngpu = 0.5\n%s' % (store, hosts))
    return str(config)


def test_dashes_are_a_usage_error_but_for_launch_and_submit(tmp_path, capfd):
    """``fractui --`` started the TUI, and ``jobs --`` listed jobs: a "--" with nothing after
    it was let by where a program after it is refused. Only launch and submit take "--" (the
    job's command follows it); anywhere else it is exit 2, said as one with a program after
    it is. (A damaged store here: what the TUI or jobs would have done ends in exit 1.) A verb
    whose words the dashes cut off is told that rule, not that a word it was given is missing
    (``cancel -- 1`` said "the following arguments are required: JOB")."""
    damaged = tmp_path / "store.db"
    damaged.write_bytes(b"not a store " * 100)
    config = _store_config(tmp_path, str(damaged))
    for argv in (["--"], ["--readonly", "--"], ["jobs", "--"], ["audit", "--"],
                 ["cancel", "--", "1"], ["agent-archive", "--", "-x"], ["trust", "--", "h"]):
        code, out, err = in_process(capfd, ["--config", config, *argv])
        assert (code, out) == (2, ""), (argv, err)
        assert err.endswith("error: only launch and submit take a program after --\n"), err


def test_a_layout_version_is_the_agents_form_or_a_usage_error(tmp_path, capfd):
    """``place --layout-version`` took any word; the host's agent then refused the launch as a
    layout changed since (STALE_LAYOUT) and the job went back to its queue. A word that is no
    layout version, as the agent derives one (status --json's layout_version), is exit 2
    naming the argument, before the store is opened; one of its form goes on (here to the
    store, which is not there: exit 1)."""
    from remote_agent.gpu import models
    from remote_agent.mig.layout import Layout

    config = _store_config(tmp_path, str(tmp_path / "none" / "store.db"),
                           '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\n')
    place = ["--config", config, "place", "3", "gpu-a", "0", "--profile", "1g.10gb",
             "--start", "0", "--layout-version"]
    for word in ("v1", "", "0123456789AB", "0123456789abc", "0123456789a\n", "x" * 100000):
        code, out, err = in_process(capfd, place + [word])
        assert (code, out) == (2, ""), (word[:20], err)
        assert ("error: argument --layout-version: a layout version is 12 lowercase hex "
                "digits, as fractui status --json shows a MIG GPU's layout_version, not ") in err
        assert len(err) < 1000, err[:200]
    version = Layout(models.model("A100-80GB").geometry()).version
    code, out, err = in_process(capfd, place + [version])
    assert (code, out) == (1, "") and "there is no store here yet" in err, err


@pytest.mark.parametrize("kind", ["directory", "fifo", "link"])
def test_a_store_path_where_no_file_is_is_the_stores_failure_not_the_configs(
        tmp_path, capfd, kind):
    """A [store] url naming a directory was refused as the config's mistake (exit 2, at load,
    for every verb, doctor and themes too), while a FIFO there, a damaged file or one that
    cannot be read were the store's (exit 1); a link to where nothing is was said as Python's
    bare error, naming no store. What is at the path is the store's to judge as it opens it,
    by the rule of docs/cli.md: exit 1, naming the store and what is there; a verb that opens
    no store runs."""
    store = tmp_path / "store.db"
    {"directory": os.mkdir, "fifo": os.mkfifo,
     "link": lambda path: os.symlink(tmp_path / "gone" / "s.db", path)}[kind](store)
    says = {"directory": "is not a file but a directory", "fifo": "is not a file but a FIFO",
            "link": "is a link to %s, where no file can be opened: No such file or directory"
                    % (tmp_path / "gone" / "s.db")}[kind]
    config = _store_config(tmp_path, str(store))
    for argv in (["jobs"], ["submit", "--queue", "q", "--", "true"], ["audit"], ["cancel", "1"],
                 ["scheduler"]):
        code, out, err = in_process(capfd, ["--config", config, *argv])
        assert (code, out, err) == (1, "", "fractui: store %s: %s\n" % (store, says)), argv
    code, out, err = in_process(capfd, ["--config", config, "doctor"])
    assert (code, err) == (0, "fractui: the config lists no hosts ([[hosts]]): nothing to "
                              "show\n"), err


def test_a_utf8_word_in_a_locale_python_reads_as_ascii_is_said_as_the_locales(tmp_path):
    """Under LC_ALL=C with PYTHONUTF8=0, Python reads the command line as ASCII: a config path
    in UTF-8 was refused as "not UTF-8 text", which it is. The locale is named now, with what
    to change; bytes that are no UTF-8 are still said to be so."""
    ascii_locale = {"LC_ALL": "C", "PYTHONUTF8": "0"}
    path = str(tmp_path / "café" / "config.toml")
    done = subprocess_run(["--config", path, "jobs"], ascii_locale)
    read = path.encode("utf-8").decode("ascii", "surrogateescape")  # as that Python reads it
    said = ("fractui: argument 2 is UTF-8 text that this locale's encoding, ascii, cannot read: "
            "%s (run fractui in a UTF-8 locale, e.g. LC_ALL=C.UTF-8, or without PYTHONUTF8=0)\n"
            % quoted(read))
    assert (done.returncode, done.stderr) == (2, said.encode("ascii", "backslashreplace").decode())
    done = subprocess_run(["--config", os.fsdecode(b"/tmp/\xfe\xff"), "jobs"], ascii_locale)
    assert (done.returncode, done.stderr) == (
        2, "fractui: argument 2 is not UTF-8 text: '/tmp/\\xfe\\xff'\n")


@pytest.mark.parametrize("closed", [">&-", "2>&-", "<&-", ">&- 2>&-"])
def test_a_stream_closed_as_fractui_starts_is_dev_null_never_an_internal_error(tmp_path,
                                                                               closed):
    """``fractui jobs >&-`` (a cron line, a script's ``exec >&-``) was exit 70, "internal
    error: AttributeError: 'NoneType' object has no attribute 'isatty'", and with stderr
    closed that line went to stdout: Python leaves a stream closed at start None. Each now
    writes to /dev/null: the verb runs, its code is its own, and what is said on the stream
    left open is said there."""
    SqliteStore(str(tmp_path / "store.db")).close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n' % (tmp_path / "store.db"))
    for argv, code, said in ((["--config", str(config), "jobs", "--me"], 0,
                              "no active jobs (--all lists ended ones too)\n"),
                             (["--config", str(tmp_path / "none.toml"), "jobs"], 2,
                              "fractui: %s: no such file\n" % (tmp_path / "none.toml"))):
        run = subprocess.run(["/bin/sh", "-c", 'exec "$@" %s' % closed, "sh", PY, "-m",
                              "fractui", *argv], capture_output=True, text=True,
                             cwd=localfleet.REPO, timeout=120)
        out, err = run.stdout, run.stderr
        assert run.returncode == code and not leaks(out + err), (run, closed)
        if closed in ("2>&-", "<&-"):  # stdout open: the jobs listed there, and only they
            assert out == (said if code == 0 else ""), (out, closed)
        if closed in (">&-", "<&-"):  # stderr open: the error said there
            assert err.startswith(said) if code else err == "", (err, closed)


def test_a_stream_closed_as_fractui_starts_is_dev_null_for_its_children_too():
    """The /dev/null that stands in for a closed stream is one as a shell's redirect gives:
    a child that inherits the stream finds it there. os.open's descriptor is close-on-exec
    (PEP 446), so a child found fd 0, 1 and 2 closed again, and its own first file there."""
    child = ('for fd in 0 1 2; do [ "$(readlink /proc/$$/fd/$fd)" = /dev/null ] || '
             'exit 1; done')
    probe = ("import subprocess, sys\n"
             "from fractui.terminal import closed_streams_to_devnull\n"
             "closed_streams_to_devnull()\n"
             "sys.exit(subprocess.run(['/bin/sh', '-c', %r]).returncode)" % child)
    run = subprocess.run(["/bin/sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", PY, "-c", probe],
                         cwd=localfleet.REPO, timeout=120)
    assert run.returncode == 0, run


def test_the_tui_started_with_its_stderr_closed_ends_on_q(tmp_path, monkeypatch):
    """Textual draws the TUI on ``sys.__stderr__``, which Python leaves None for a stderr
    closed at start, as it left ``sys.stderr``: ``fractui 2>&-`` at a terminal drew nothing
    and no key ended it (killed, a demo's hosts were left running), where ``2>/dev/null``
    ends on q. Both are /dev/null now. q is typed until it ends: a screen drawn into
    /dev/null cannot say when the app is ready for it."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    config = tmp_path / "config.toml"
    config.write_text('[tui]\ntheme = "light"\n')
    term = Terminal(["/bin/sh", "-c", 'exec "$@" 2>&-', "sh", PY, "-m", "fractui", "--config",
                     str(config)])
    deadline = time.monotonic() + 60
    while term.proc.poll() is None and time.monotonic() < deadline:
        os.write(term.master, b"q")
        term.drain(0.5)
    shown = term.to_the_end(5)
    assert term.proc.returncode == 0, shown


def test_a_mistyped_verb_or_choice_is_said_with_the_one_meant(capfd):
    """An unknown option was said with the one meant (``--mine``: did you mean --me?), but a
    mistyped verb or choice only with the whole list: ``fractui job``, ``fractui log 12``,
    ``report --by users``. Each now names the close one first, as a queue's name is; a word
    close to none is said with the list alone."""
    for argv, said in (
            (["job"], "argument VERB: invalid choice: 'job' (did you mean 'jobs'? choose from "
                      "'status', "),
            (["log", "12"], "invalid choice: 'log' (did you mean 'logs'? choose from "),
            (["report", "--by", "users"], "argument --by: invalid choice: 'users' (did you "
                                          "mean 'user'? choose from 'team', "),
            (["report", "--by", "zzz"], "invalid choice: 'zzz' (choose from 'team', ")):
        code, out, err = in_process(capfd, argv)
        assert (code, out) == (2, "") and said in err and not leaks(err), err


def test_a_name_mistyped_only_in_its_case_is_said_with_the_one_meant(tmp_path, capfd):
    """``--queue V`` beside a queue ``v`` got no "did you mean": difflib finds a letter and its
    other case nothing alike. Every did-you-mean (a queue, team or host of the config, a verb,
    a choice, an option) offers the name that differs only in case, and one a letter off
    besides; none of it makes a store."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[hosts]]\nname = "gpu-a"\nhost = '
                      '"127.0.0.1"\n[[queues]]\nname = "v"\ngpu = 0.5\n[[queues]]\nname = '
                      '"nlp"\ngpu = 0.5\n[[teams]]\nname = "vision"\nquota_gpus = 1\n' % (
                          tmp_path / "s" / "store.db"))
    for argv, said in (
            (["submit", "--queue", "V", "--", "x"], "unknown queue 'V' (did you mean 'v'?"),
            (["submit", "--queue", "Nlpp", "--", "x"], "unknown queue 'Nlpp' (did you mean "
                                                      "'nlp'?"),
            (["teams", "--team", "VISION"], "unknown team 'VISION' (did you mean 'vision'?"),
            (["cordon", "GPU-A"], "unknown host 'GPU-A' (did you mean 'gpu-a'?"),
            (["JOBS"], "invalid choice: 'JOBS' (did you mean 'jobs'?"),
            (["report", "--by", "TEAM"], "invalid choice: 'TEAM' (did you mean 'team'?"),
            (["jobs", "--JSON"], "unrecognized arguments: --JSON (did you mean --json?)")):
        code, out, err = in_process(capfd, ["--config", str(config), *argv])
        assert (code, out) == (2, "") and said in err and not leaks(err), (argv, err)
    assert not (tmp_path / "s").exists()


def test_of_two_names_that_differ_only_in_case_the_one_typed_so_is_meant(tmp_path, capfd):
    """Queues ``q`` and ``Q``: ``--queue Q2`` named ``q``, the first of the two in the config,
    as case counted for nothing in the search; the one whose case was typed is meant (plain
    difflib, before, named ``Q``). ``GPU-A`` and ``Gpu-A`` likewise, in either order."""
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "sqlite://%s"\n[[hosts]]\nname = "Gpu-A"\nhost = '
                      '"127.0.0.1"\n[[hosts]]\nname = "GPU-A"\nhost = "127.0.0.2"\n'
                      '[[queues]]\nname = "q"\ngpu = 0.5\n[[queues]]\nname = "Q"\ngpu = 0.5\n'
                      % (tmp_path / "s" / "store.db"))
    for argv, said in (
            (["submit", "--queue", "Q2", "--", "x"], "unknown queue 'Q2' (did you mean 'Q'?"),
            (["submit", "--queue", "q2", "--", "x"], "unknown queue 'q2' (did you mean 'q'?"),
            (["cordon", "GPU-AA"], "unknown host 'GPU-AA' (did you mean 'GPU-A'?"),
            (["cordon", "Gpu-AA"], "unknown host 'Gpu-AA' (did you mean 'Gpu-A'?")):
        code, out, err = in_process(capfd, ["--config", str(config), *argv])
        assert (code, out) == (2, "") and said in err and not leaks(err), (argv, err)
    assert not (tmp_path / "s").exists()


def test_every_word_given_is_named_back_as_the_user_would_know_it(tmp_path, capfd,
                                                                    monkeypatch):
    """A word not UTF-8 was said back as Python's surrogate, '\\udcff', which names no byte the
    user typed; a 100,000-character word was said back whole; a word with an escape sequence
    in it was said bare, which a terminal shows with the sequence taken out (another word:
    ``--team ab``). Each is quoted by one function (words.quoted): bytes as \\xff, escapes
    as escapes, a long word cut, saying its length."""
    monkeypatch.chdir(tmp_path)
    config = _store_config(tmp_path, str(tmp_path / "none" / "store.db"),
                           '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\nport = %d\n'
                           % closed_port())
    long_ = "x" * 100000
    cut = "'%s…' (100000 characters)" % ("x" * 40)
    cases = [
        (["cancel", os.fsdecode(b"j\xffk")], "argument 4 is not UTF-8 text: 'j\\xffk'"),
        (["--config", os.fsdecode(b"/tmp/\xfe\xff")],
         "argument 2 is not UTF-8 text: '/tmp/\\xfe\\xff'"),
        (["cancel", long_], "not %s;" % cut),
        (["stop", long_], "a job is named HOST/JOB, e.g. gpu-a/j12, not %s" % cut),
        (["jobs", "gpu-a/" + "\x1b[2J"], "not 'gpu-a/\\x1b[2J': a job launched"),
        ([long_], "argument VERB: invalid choice: %s (choose from 'status'" % cut),
        (["report", "--by", long_], "argument --by: invalid choice: %s" % cut),
        (["jobs", "--a\x1b[2Jb"], "unrecognized arguments: '--a\\x1b[2Jb'"),
        (["status", long_], "unrecognized arguments: %s" % cut),
        (["submit", "--queue", "q", "--team", "a\x1b[2Jb", "--", "x"],
         "--team 'a\\x1b[2Jb': the config has no [[teams]]"),
        (["submit", "--queue", long_, "--", "x"], "unknown queue %s (known: q)" % cut),
        (["doctor", long_], "unknown host %s (known: gpu-a)" % cut),
        (["logs", "1", "-n", long_], "must be a whole number from 0 to 1000000, got %s" % cut),
        (["demo", "--gpus", long_], "must be a whole number from 1 to 1000, got %s" % cut),
        (["report", "--user", "u" * 300], "argument --user: takes a user's name, as jobs shows "
                                          "it under USER, not '%s…' (300 characters)"
         % ("u" * 40)),
        # a key is said back to be typed again (a retry): a terminal would show another one
        (["submit", "--queue", "q", "--key", "k\x1b[2J", "--", "x"],
         "--key 'k\\x1b[2J' holds a character that is not printable"),
        # so are a name, a working directory and a variable's name, shown with the job and
        # in its host's errors (a line break, an escape, a bidi override: never as written)
        (["submit", "--queue", "q", "--cwd", "/runs/a\nb", "--", "x"],
         "--cwd '/runs/a\\nb' holds a character that is not printable (a control or invisible "
         "character): the directory is shown with the job and in its host's errors as written"),
        (["submit", "--queue", "q", "--cwd", "/runs/\x1b[2J", "--", "x"],
         "--cwd '/runs/\\x1b[2J' holds a character that is not printable"),
        (["submit", "--queue", "q", "--cwd", "/runs/\u202eb", "--", "x"],
         "--cwd '/runs/\\u202eb' holds a character that is not printable"),
        (["launch", "gpu-a", "0", "--memory-mib", "5", "--cwd", "/a\tb", "--", "x"],
         "--cwd '/a\\tb' holds a character that is not printable"),
        (["submit", "--queue", "q", "--name", "n\x1b]52;c;SGk=\x07", "--", "x"],
         "--name 'n\\x1b]52;c;SGk=\\x07' holds a character that is not printable (a control or "
         "invisible character): a job's name is shown in jobs, the TUI and messages as written"),
        (["submit", "--queue", "q", "--env", "A\x1bB=1", "--", "x"],
         "--env 'A\\x1bB' holds a character that is not printable (a control or invisible "
         "character): a variable's name is shown with the job as written (its value may hold "
         "anything)"),
        (["agent-archive", ""], "agent-archive DIR is an empty word: name the folder to "
                                "write agent.pyz in"),
        # a number of more digits than any index was taken for a GPU's uuid, and its host asked
        (["mig", "gpu-a", "9" * 40, "1g.10gb", "--yes"],
         "GPU index %s is out of range (0 to 65535)" % ("9" * 40)),
        (["place", "3", "gpu-a", "9" * 40], "GPU index %s is out of range" % ("9" * 40)),
    ]
    wrong = []
    for argv, says in cases:
        words = argv if argv[0] == "--config" else ["--config", config, *argv]
        code, out, err = in_process(capfd, words)
        if (code, out) != (2, "") or says not in err or len(err) > 1500 or "\x1b" in err \
                or "\\udc" in err or leaks(err):
            wrong.append((argv[0][:20], says[:60], code, err[:300]))
    assert not wrong, "\n".join(map(repr, wrong))
    assert not (tmp_path / "agent.pyz").exists()  # (DIR "" was the working directory)


def test_a_path_said_back_is_quoted_where_a_terminal_would_not_show_it(tmp_path, capfd):
    """agent-archive printed the path it wrote bare: a folder named with a line break or an
    escape sequence read as another path on a terminal. It is quoted as messages quote it."""
    folder = tmp_path / "a\nb"
    code, out, err = in_process(capfd, ["agent-archive", str(folder)])
    assert code == 0, err
    assert out.startswith("%r  sha256 " % str(folder / "agent.pyz")), out
    assert (folder / "agent.pyz").is_file()


@pytest.mark.parametrize("text, shown", [
    ("plain", "'plain'"), ("it's", "\"it's\""), ("a\x1b[2J\n", "'a\\x1b[2J\\n'"),
    (os.fsdecode(b"\xffa\xc3\xa9"), "'\\xffaé'"),  # a stray byte, then UTF-8's é
    ("a\\udcff", "'a\\\\udcff'"),  # a backslash typed before "udcff" is no byte
    ("\\" + os.fsdecode(b"\xfe"), "'\\\\\\xfe'"),
    ("y" * 41, "'%s…' (41 characters)" % ("y" * 40)),
])
def test_a_word_is_quoted_with_its_escapes_its_stray_bytes_and_its_length(text, shown):
    from fractui.words import quoted

    assert quoted(text) == shown
