"""What each verb on a queued job answers in each state the job can be in (docs/cli.md, "What
each verb does to a queued job"): cancel, requeue, preempt, place and move of a job pending,
placed, running, stopping for each reason, back in its queue since its user's own requeue, and
ended; each job put there as the scheduler and the verbs put it (store calls, no SQL), each
verb run through the CLI's main on a real store, SQLite and PostgreSQL. Checked: the job as it
is left, the words said, the exit code (docs/cli.md's table), and that asking again (a retry
whose answer was lost) is answered the same and records nothing more. Then a cancel that takes
over a stop under way, carried out by the lease holder, and end to end over a real agent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import pytest

from fractui.config import QueueConfig, TeamConfig
from fractui.scheduler.execute import Executor
from fractui.store import Slot, open_store
from fractui.store.base import StateConflict, Store
from fractui.store.intents import Asker, Refused, ask_stop, move_by_hand
from fractui.store.model import Job
from fractui.store_commands import _moving
from fractui.words import shell_line
from tests.cli_run import closed_port, in_process, subprocess_run
from tests.localfleet import local_fleet  # noqa: F401 - the fixture
from tests.test_scheduler_move import SLOW_STOP

A = Slot("gpu-a", (0,), memory_mib=1024, charge=0.25)  # where the scheduler places it
B = Slot("gpu-b", (1,), memory_mib=1024, charge=0.25)  # where an admin moves it
GPU = {"index": 0, "uuid": "GPU-a0", "name": "NVIDIA L4", "memory_mib": 23034,
       "mig_mode": False}

STATES = ("pending", "placed", "running", "stopping to cancel", "stopping to requeue",
          "stopping to preempt", "stopping to move", "back in its queue", "done", "failed",
          "cancelled")
VERBS = ("cancel", "requeue", "preempt", "place", "move")

STOPS = "{n} stopping (the scheduler stops it)"
STOPS_BACK = "{n} stopping (the scheduler stops it, then puts it back in its queue)"
TO_MOVE = ("job {n} is stopping to be moved to %s (an admin's move: once stopped, it is "
           "placed there, to run again)" % B.describe())
BACK = " (once stopped, it goes back to its queue)"
AS_IT_IS = {"stopping to cancel": "job {n} is stopping to be cancelled",
            "stopping to requeue": "job {n} is stopping to be requeued" + BACK,
            "stopping to preempt": "job {n} is stopping to be preempted" + BACK,
            "stopping to move": TO_MOVE}
ENDED = ": an ended job stays ended; to run it again, submit it anew: fractui --config "
PLACED = "{n} placed on gpu-a gpu0; the scheduler launches it"
NOT_PENDING = "only a pending job can be placed: "
NOT_MOVED = ": only a placed or running job is moved"
MOVING = (0, "{moving}", "stopping", "move")
PENDING_MOVE = "job {n} is pending: it is placed, not moved (fractui place, or p)"

# (state, verb) -> (exit code, what is said: stdout's line on 0, stderr's words on 1 (a
# trailing "…": their start), the job's state after, its stop intent after)
OUTCOME: dict[Tuple[str, str], Tuple[int, str, str, Optional[str]]] = {}
for _verb in ("cancel", "requeue", "preempt"):
    _nothing = ": nothing to " + _verb
    OUTCOME.update({
        ("pending", _verb): (0, "{n} cancelled", "cancelled", None) if _verb == "cancel"
        else (1, "job {n} is pending" + _nothing, "pending", None),
        ("placed", _verb): (0, STOPS if _verb == "cancel" else STOPS_BACK, "stopping", _verb),
        ("running", _verb): (0, STOPS if _verb == "cancel" else STOPS_BACK, "stopping", _verb),
        ("back in its queue", _verb): {
            "cancel": (0, "{n} cancelled", "cancelled", None),
            "requeue": (0, "{n} pending (back in its queue)", "pending", None),
            "preempt": (1, "job {n} is pending: nothing to preempt", "pending", None)}[_verb],
        ("done", _verb): (1, "job {n} is done" + _nothing + ("" if _verb == "cancel" else
                                                              ENDED + "…"), "done", None),
        ("failed", _verb): (1, "job {n} is failed" + _nothing + ("" if _verb == "cancel" else
                                                                  ENDED + "…"), "failed", None),
        ("cancelled", _verb): (0, "{n} cancelled", "cancelled", None) if _verb == "cancel"
        else (1, "job {n} is cancelled" + _nothing + ENDED + "…", "cancelled", None)})
    for _state, _words in AS_IT_IS.items():
        _intent = _state.split()[-1]
        OUTCOME[_state, _verb] = (0, STOPS, "stopping", "cancel") if _verb == "cancel" else (
            (0, STOPS_BACK, "stopping", _intent) if _intent == _verb else
            (1, _words + (": %s it then" % _verb if _intent == "move" else _nothing),
             "stopping", _intent))
OUTCOME.update({
    ("pending", "place"): (0, PLACED, "placed", None),
    ("back in its queue", "place"): (0, PLACED, "placed", None),
    ("placed", "place"): (1, NOT_PENDING + "job {n} is placed; fractui move {n} HOST GPU "
                          "moves it", "placed", None),
    ("running", "place"): (1, NOT_PENDING + "job {n} is running; fractui move {n} HOST GPU "
                           "moves it", "running", None),
    ("pending", "move"): (1, PENDING_MOVE, "pending", None),
    ("back in its queue", "move"): (1, PENDING_MOVE, "pending", None),
    ("placed", "move"): MOVING,
    ("running", "move"): MOVING,
    ("stopping to move", "move"): MOVING})
for _state in ("done", "failed", "cancelled"):
    OUTCOME[_state, "place"] = (1, NOT_PENDING + "job {n} is %s" % _state, _state, None)
    OUTCOME[_state, "move"] = (1, "job {n} is %s" % _state + NOT_MOVED, _state, None)
for _state, _words in AS_IT_IS.items():
    OUTCOME[_state, "place"] = (1, NOT_PENDING + _words, "stopping", _state.split()[-1])
    OUTCOME.setdefault((_state, "move"), (1, _words + NOT_MOVED, "stopping",
                                          _state.split()[-1]))


def test_the_table_has_every_state_and_verb():
    assert set(OUTCOME) == {(s, v) for s in STATES for v in VERBS}


def put(store: Store, state: str) -> Job:
    """A job in ``state``, got there as the scheduler and the verbs get it there."""
    me = Asker("head")
    job = store.submit("q", None, "train", ["python", "train.py"], {"gpu": 0.25},
                       "%s@head" % store.identity().user)
    if state in ("pending", "cancelled"):
        return job if state == "pending" else ask_stop(store, job, "cancel", me)
    store.place(job.id, A, "sched", "decided on gpu-a")
    if state == "placed":
        return store.get(job.id)
    store.started(job.id, "j%d" % job.id, None, "sched", "started on gpu-a")
    if state == "stopping to move":
        return move_by_hand(store, store.get(job.id), B, me)
    if state.startswith("stopping to "):
        return ask_stop(store, store.get(job.id), state.split()[-1], me)
    if state == "back in its queue":
        ask_stop(store, store.get(job.id), "requeue", me)
        return store.requeue(job.id, ("stopping",), "sched", "requeued")
    if state in ("done", "failed"):
        code = 0 if state == "done" else 3
        return store.ended(job.id, ("running",), state, None if code == 0 else "exited 3",
                           "sched", "exited %d" % code, "end", exit_code=code)
    assert state == "running", state
    return store.get(job.id)


@pytest.fixture
def fleet(store_url, tmp_path):
    """The store (with a lease holder, so no verb says that none runs), and a config of it
    naming gpu-a and gpu-b (where nothing listens: no verb here reaches a host; each its own
    state_dir, as two hosts at the one port a closed port may be must have), gpu-a's
    GPUs kept as the lease holder keeps them, for ``place``."""
    store = open_store(store_url)
    store.acquire_lease("sched", 3600)
    store.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "gpus": [GPU]})
    config = tmp_path / "config.toml"
    config.write_text(
        '[store]\nurl = "%s"\n[ssh]\nconnect_timeout = 1\n'
        '[[queues]]\nname = "q"\ngpu = 0.25\n' % store_url + "".join(
            '[[hosts]]\nname = "%s"\nhost = "127.0.0.1"\nport = %d\nstate_dir = "~/%s"\n'
            % (name, closed_port(), name) for name in ("gpu-a", "gpu-b")))  # (one port twice)
    yield store, config
    store.close()


def ask(capfd, store: Store, config: Path, verb: str, job: Job) -> Tuple[int, str, str]:
    """``verb`` of ``job`` through the CLI's main: (exit code, stdout, stderr). A move of a
    placed or running job is asked of intents.move_by_hand, as the CLI's ``move`` asks it
    once it has chosen the slot on the live host (none here), and said as it says it."""
    if verb == "move" and job.state in ("placed", "running"):
        try:
            return 0, _moving(move_by_hand(store, job, B, Asker("head"))) + "\n", ""
        except Refused as err:
            return 1, "", "fractui: %s\n" % err
    where = {"place": ["gpu-a", "0"], "move": ["gpu-b", "1"]}.get(verb, [])
    return in_process(capfd, ["--config", str(config), verb, str(job.id)] + where)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_in_each_state(fleet, capfd, state, verb):
    store, config = fleet
    job = put(store, state)
    capfd.readouterr()
    code, words, after, intent = OUTCOME[state, verb]
    words = words.format(n=job.id, moving="")
    got = ask(capfd, store, config, verb, job)
    now = store.get(job.id)
    if words == "":  # (a move's answer names the slot the store chose)
        words = _moving(now)
    said = got[1] if code == 0 else got[2]
    assert got[0] == code, got
    if words.endswith("…"):
        assert said.startswith("fractui: " + words[:-1]) and got[1] == "", got
    else:
        assert said == ("%s\n" if code == 0 else "fractui: %s\n") % words, got
        assert got[2 if code == 0 else 1] == "", got
    assert (now.state, now.stop_intent) == (after, intent)
    entries = store.audit_log(job.id, 1000)
    assert ask(capfd, store, config, verb, now) == got  # a retry: the same, nothing recorded
    assert store.audit_log(job.id, 1000) == entries and store.get(job.id) == now


@pytest.mark.parametrize("state", ["stopping to requeue", "stopping to preempt",
                                   "stopping to move"])
def test_a_cancel_that_takes_a_stop_over_ends_the_job_cancelled(fleet, state):
    """The lease holder read the job stopping to come back (its requeue, preemption or move)
    before the cancel took the stop over; its copy has ended: what it writes as the end of
    that stop finds a cancel instead and writes nothing, and its next pass, reading the
    cancel, ends the job cancelled, never back in its queue nor placed on the move's slot."""
    store, _config = fleet
    job = put(store, state)
    ask_stop(store, store.get(job.id), "cancel", Asker("head"))
    lease = store.acquire_lease("sched", 3600)
    executor = Executor(store, None, "sched", 1.0, 3, None, time.time, 1.0)  # type: ignore
    executor.epoch = lease  # type: ignore[assignment]
    executor.finish_stop(job, {"state": "killed", "ended_at": time.time()})  # read before
    assert (store.get(job.id).state, store.get(job.id).stop_intent) == ("stopping", "cancel")
    with pytest.raises(StateConflict, match="it ends cancelled, never back in its queue"):
        store.requeue(job.id, ("stopping",), "sched", "requeued")
    executor.finish_stop(store.get(job.id), {"state": "killed", "ended_at": time.time()})
    ended = store.get(job.id)
    assert (ended.state, ended.attempt, ended.move_to) == ("cancelled", 0, None)
    assert [e.action for e in store.audit_log(job.id, 1000)][-2:] == ["cancel", "end"]


def test_requeue_then_cancel_of_a_running_job_ends_it_cancelled(local_fleet):  # noqa: F811
    """``fractui requeue 4; fractui cancel 4`` said ``job 4 is stopping: nothing to cancel``,
    exit 1, and the job came back to its queue and ran again. Over a real agent and job
    process, the scheduler's stop sent (the job's SIGTERM handler takes a while): the cancel
    takes the requeue's stop over, and the job ends cancelled as attempt 0, never launched
    again."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    job = f.submit("whole", argv=SLOW_STOP)
    f.until(lambda: f.store.get(job.id).state == "running")
    for verb, stops in (("requeue", STOPS_BACK), ("cancel", STOPS)):
        done = f.fractui(verb, str(job.id))
        assert (done.returncode, done.stdout) == (0, stops.format(n=job.id) + "\n"), \
            done.stderr
        f.scheduler.step()  # (the requeue's stop is sent before the cancel lands)
    f.until(lambda: f.store.get(job.id).state == "cancelled")
    ended = f.store.get(job.id)
    assert (ended.attempt, ended.reason) == (0, "cancelled by %s@%s" % (
        f.store.identity().user, socket.gethostname()))
    f.scheduler.step()
    assert [e.action for e in f.store.audit_log(job.id)] == [
        "submit", "decide", "launch", "requeue", "cancel", "end"]
    (record,) = f.agent_jobs()
    assert record["state"] == "killed", record


def test_a_cancel_that_takes_a_preemption_over_preempts_no_second_job(local_fleet):  # noqa: F811
    """The scheduler preempts one borrower for a starved team and waits while it stops; its
    user cancels it meanwhile (the cancel takes the preemption's stop over). The room it
    frees is the same: the scheduler still waits for it, and preempts no second borrower."""
    f = local_fleet({"gpu-a": "3xL4"}, [QueueConfig(name="whole", gpus=1)],
                    [TeamConfig("vision", quota_gpus=1),
                     TeamConfig("nlp", quota_gpus=1, over_quota=True)])
    f.submit("whole", "nlp")
    borrowers = [f.submit("whole", "nlp", SLOW_STOP).id for _ in range(2)]
    f.until(lambda: set(f.states().values()) == {"running"})
    needy = f.submit("whole", "vision")
    f.until(lambda: any(f.store.get(b).state == "stopping" for b in borrowers))
    victim = next(b for b in borrowers if f.store.get(b).stop_intent == "preempt")
    assert f.fractui("cancel", str(victim)).returncode == 0
    f.until(lambda: f.states()[needy.id] == "running")
    assert f.store.get(victim).state == "cancelled"
    (other,) = set(borrowers) - {victim}
    assert f.store.get(other).state == "running"
    assert "preempt" not in [e.action for e in f.store.audit_log(other)]


def test_a_cancel_that_lands_while_a_pass_ends_the_job_fails_no_pass(local_fleet,  # noqa: F811
                                                                     tmp_path):
    """The job's copy exited; a pass reads the job running, and its user's cancel lands before
    the pass writes the end it found: the pass's write finds the job stopping to be cancelled
    and leaves it to the next pass, which reads it as it is and ends it cancelled. Before, the
    StateConflict failed the whole pass: a bug's stack in the log, and the passes said failing
    in the store (the TUI's header) until the next. The cancel lands as the pass writes the
    end (the pass may use the jobs it read before, while the store's jobs counter has not
    moved, so a cancel made at its read of them never came); the job exits when told, so that
    it is seen running first."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    told = tmp_path / "exit now"
    job = f.submit("whole", argv=[sys.executable, "-c", "import os, sys, time\n"
                                  "while not os.path.exists(sys.argv[1]): time.sleep(0.05)",
                                  str(told)])
    f.until(lambda: f.store.get(job.id).state == "running")
    told.touch()
    session = f.fleet.session("gpu-a")
    deadline = time.time() + 30
    while not any(r.get("state") == "exited" for r in session.status.jobs.values()):
        assert time.time() < deadline, session.status.jobs
        time.sleep(0.05)
    store = f.scheduler.store
    ended = store.ended
    cancelled = []

    def cancel_then_end(*args, **kwargs):  # the user's cancel, then the pass's write
        if not cancelled:
            cancelled.append(ask_stop(f.store, f.store.get(job.id), "cancel", Asker("head")))
        return ended(*args, **kwargs)

    store.ended = cancel_then_end  # type: ignore[method-assign]
    try:
        assert f.scheduler.step() is True
    finally:
        del store.ended
    assert cancelled and f.store.get(job.id).state == "stopping"
    f.until(lambda: f.store.get(job.id).state == "cancelled")


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_a_pasted_line_reads_back_to_its_words_for_every_character(locale):
    """Every character a terminal would not show as written (C0 and C1 controls, the
    no-break space, bidi overrides, tags), a stray byte, quotes and backslashes: bash reads
    the line back to the very bytes the words are, in a UTF-8 locale and in C. U+0085 as
    ``\\x85`` read back as the byte 0x85, not the character."""
    odd = [chr(n) for n in range(1, 0x3000) if not chr(n).isprintable()] + [
        "\u202e", "\u2066", "\ufeff", "\U000e0041", "\udc80", "\udcff"]
    words = ["it's \\ \"x\"", "é\x1bF", "\x1b1b", "a\x85b"] + odd
    line = shell_line(["printf", "%s\\0", *words])
    back = subprocess.run(["bash", "-c", line], capture_output=True, check=True,
                          env={"LC_ALL": locale, "PATH": os.environ["PATH"]}).stdout
    assert back.split(b"\0")[:-1] == [w.encode("utf-8", "surrogateescape") for w in words]


def test_the_submit_that_runs_an_ended_job_anew_reads_back_to_its_words(tmp_path):
    """A requeue of an ended job says the submit that runs it anew. Its command's words and
    its variables' values may hold a line break or an escape sequence: shell-quoted as they
    were, the line held them raw — said on a terminal with the sequence taken out, another
    command; into a pipe, a sequence of someone else's. Words like these are in ``$'…'`` now:
    one line, no control character, and bash reads it back to the job's words exactly."""
    url = "sqlite://%s" % (tmp_path / "store.db")
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % url)
    store = open_store(url)
    argv = ["python", "-c", "print(1)\nprint(2)", "a\x1b]52;c;SGk=\x07b", "it's \\ \u202eb"]
    env = {"V": "x\x1b[31my", "W": "plain value"}
    try:
        job = store.submit("q", None, "train", argv, {"gpu": 0.25},
                           "%s@head" % store.identity().user, env=env)
        ask_stop(store, job, "cancel", Asker("head"))
    finally:
        store.close()
    run = subprocess_run(["--config", str(config), "requeue", str(job.id)])
    assert run.returncode == 1 and run.stdout == "", run
    said = run.stderr.rstrip("\n")
    assert "\n" not in said and not any(c in said for c in "\x1b\x07\x9b\u202e"), said
    line = said.split("submit it anew: ", 1)[1]
    assert "$'print(1)\\x0aprint(2)'" in line, line
    back = subprocess.run(["bash", "-c", "printf '%s\\0' " + line], capture_output=True,
                          check=True).stdout.decode().split("\0")[:-1]
    assert back == ["fractui", "--config", str(config), "submit", "--queue", "q", "--name",
                    "train", "--env", "V=" + env["V"], "--env", "W=plain value", "--",
                    *argv]


def test_the_submit_that_runs_anew_a_job_of_unprintable_words_is_one_submit_takes(tmp_path):
    """A job stored before submit refused a name, a cwd or a variable's name that is not
    printable: the submit its requeue advised gave them as they were, and submit refused the
    line pasted. The name is given printable, the cwd and that variable left out, each said
    before the line; the line, pasted, queues the job (exit 0)."""
    url = "sqlite://%s" % (tmp_path / "store.db")
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[queues]]\nname = "q"\ngpu = 0.25\n' % url)
    store = open_store(url)
    try:
        job = store.submit("q", None, "run\x1b[2J1", ["sleep", "1"], {"gpu": 0.25},
                           "%s@head" % store.identity().user, cwd="/tmp/a\nb",
                           env={"A\x01": "1", "B": "x\ny"})
        ask_stop(store, job, "cancel", Asker("head"))
    finally:
        store.close()
    run = subprocess_run(["--config", str(config), "requeue", str(job.id)])
    assert (run.returncode, run.stdout) == (1, ""), run
    said, line = run.stderr.rstrip("\n").split(": ", 1)[1].split(" submit it anew", 1)[1].split(
        ": fractui ", 1)
    assert said == (" (its name 'run\\x1b[2J1' with a ? for each character submit refuses; "
                    "no --cwd: its directory '/tmp/a\\nb' holds a character submit refuses; "
                    "no --env 'A\\x01': a variable's name submit refuses)"), run.stderr
    words = subprocess.run(["bash", "-c", "printf '%s\\0' " + line], capture_output=True,
                           check=True).stdout.decode().split("\0")[:-1]
    assert words == ["--config", str(config), "submit", "--queue", "q", "--name", "run?[2J1",
                     "--env", "B=x\ny", "--", "sleep", "1"], line
    again = subprocess_run(words)
    assert (again.returncode, again.stdout) == (0, "%d pending in queue q\n" % (job.id + 1)), \
        again


def test_a_job_queued_with_a_name_no_agent_takes_still_runs(local_fleet):  # noqa: F811
    """A job queued before submit refused a name that is not printable (a tab, a line break,
    a default name from a program's odd file name) runs: its name is sent with each such
    character a "?", as a default name is made now. Sent as it was, every agent refused the
    launch, and a job that could run failed for its name alone."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    job = f.store.submit("whole", None, "train\tv2\n\x1b[31m", ["sleep", "600"],
                         f.config.queue("whole").request(), "test")
    f.until(lambda: f.store.get(job.id).state in ("running", "failed"))
    assert f.store.get(job.id).state == "running", f.store.get(job.id).reason
    record = next(r for r in f.agent_jobs() if r["key"] == job.key(f.store.uid))
    assert record["name"] == "train?v2??[31m", record


def test_a_stop_whose_reason_holds_lines_is_taken_by_the_agent(local_fleet):  # noqa: F811
    """A job's reason may hold an agent's words of several lines (a runtime's error), and an
    agent takes no unprintable character in a stop's reason: the stop is sent with each one a
    "?". Sent as it was, the agent refused it at every try, and the job ran on."""
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="whole", gpus=1)])
    job = f.submit("whole", argv=["sleep", "600"])
    f.until(lambda: f.store.get(job.id).state == "running")
    running = f.store.get(job.id)
    f.scheduler.executor.stop("gpu-a", running.agent_job, running.key(f.store.uid),
                              "podman: error\n\x1b[31mno such image", grace_s=0)
    f.until(lambda: any(r["key"] == running.key(f.store.uid) and r["state"] == "killed"
                        for r in f.agent_jobs()))
    record = next(r for r in f.agent_jobs() if r["key"] == running.key(f.store.uid))
    assert record["reason"].startswith("podman: error??[31mno such image"), record
