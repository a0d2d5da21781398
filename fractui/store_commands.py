"""The verbs that queue work and follow it through the store: submit, cancel, requeue,
preempt, place, move, audit, cordon, drain, uncordon, and the headless ``scheduler``. Store
jobs are named by number; jobs launched directly on a host by ``host/agent-id``
(fractui/commands.py has those verbs; fractui/job_commands.py ``jobs`` and ``logs``, which
show both)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
import uuid
from dataclasses import replace
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

from fractui.arguments import (STORE_VARIABLES, default_name, gpu_index, job_number, job_problem,
                               parse_env)
from fractui.config import Config, default_config_path
from fractui.job_commands import job_record, shown
from fractui.kept_output import final_tail
from fractui.checked_store import (heard_inventory, host_first, open_checked_store,
                                   store_of_a_host_verb)
from fractui.outcome import EXIT_FAILED, Failed, UsageError, terminated_as_interrupted
from fractui.sched.fleetview import HostView, facts, request_of
from fractui.sched.cordons import holds, host_out, made_said, state
from fractui.sched.manual import Unfit, by_hand, in_service, slot_flip
from fractui.sched.preview import Candidate, candidates
from fractui.sched.quota import HeldTo
from fractui.servable import submittable
from fractui.store_outage import Outage
from fractui.store_url import sqlite_path
from fractui.store import (Store, StoreBusy, StoreError, StoreUnavailable, intents,
                           open_store)
from fractui.store.access import (ADMIN_ACTIONS, CANCEL, CORDON as CORDON_ACTION, MOVE, PLACE,
                                  PREEMPT, REQUEUE, SCHEDULE, Denied, teams_of)
from fractui.store.base import NO_STORE, Identity, JobNotFound, KeyTaken, WaitingFull
from fractui.store.intents import Asker, Refused, host_or_gpu
from fractui.store.model import (ACTIVE, CANCELLED, CORDON, CORDON_MODES, DONE, DRAIN, ENDED,
                                 FAILED, ON_HOST, PENDING, PLACED, RUNNING, STOPPING, AuditEntry,
                                 Job, LogTail, Slot, adds_within, movable)
from fractui.terminal import (confirm, log_line, log_records_to_stderr, print_json, say, table,
                              width)
from fractui.whoami import os_user
from fractui.words import (NO_SCHEDULER, count, first_of, local_time, printable, quoted,
                           shell_line, why)

MOVE_CALL_S = 10.0  # how long ``move`` waits for the host's snapshot

if TYPE_CHECKING:
    from fractui.fleet.fleet import Fleet
    from fractui.metrics.exporter import Exporter


def submit(config: Config, args: argparse.Namespace) -> int:
    """Queues a job, reaching only the store: what it asks for is checked against the
    inventory the lease holder keeps there, never the hosts."""
    queue = config.queue(args.queue)
    team = queue.team if args.team is None else args.team
    if config.teams:
        if team is None:
            raise UsageError("submit needs --team: the config has teams (%s) and queue %s names "
                             "none; %s" % (", ".join(t.name for t in config.teams), queue.name,
                                           _teams_to_give(config)))
        config.team(team)
    elif team is not None:
        raise UsageError("--team %s: the config has no [[teams]]" % quoted(team))
    if not args.argv:  # (an example that runs as pasted: with the --team it needs)
        raise UsageError("submit needs the program to run after --, e.g. fractui submit "
                         "--queue %s%s -- python train.py" % (shlex.quote(queue.name), "" if (
                             args.team is None) else " --team %s" % shlex.quote(team)))
    env = parse_env(args.env)
    name = args.name or default_name(args.argv)
    problem = job_problem(args.argv, env, name, args.cwd, args.key, added=STORE_VARIABLES,
                          image=args.image or queue.image)
    if problem is not None:
        raise UsageError(problem)
    key = args.key or uuid.uuid4().hex  # (without --key, for the store's own retry)
    tail: Optional[LogTail] = None  # (submit --wait: a failed job's last lines)
    line: Optional[str] = None  # (and its last line, where the submitter may read it)
    store = open_checked_store(config, hear=False)
    try:
        warning = submittable(config, queue, store.inventory())
        try:
            job = intents.submit(store, queue.name, team, name, args.argv,
                                 queue.request(), Asker.here(config.teams), cwd=args.cwd,
                                 env=env, image=args.image or queue.image, key=key)
        except KeyTaken as err:
            raise UsageError("--key %s: %s; a new job takes a new key" % (key, err)) from None
        except WaitingFull as err:
            raise Failed(_past_bound(err, "nothing was queued", "submit")) from None
        except (StoreUnavailable, StoreBusy) as err:  # maybe recorded: found again by its key
            raise type(err)(err.where, "%s; %s" % (err.what, _again(key))) from err
        except KeyboardInterrupt:  # (Ctrl-C, SIGTERM: Terminated) mid-write: maybe recorded
            say("interrupted while the store recorded the submit: whether it was recorded is "
                "not known (fractui jobs --me shows it); %s" % _again(key))
            raise
        try:  # (from here the job is queued: its --json record says so, whatever stops this)
            if warning:
                say(warning)
            if not args.json:
                print("%d %s in queue %s%s%s" % (
                    job.id, job.state, job.queue, " for team %s" % team if team else "",
                    ", in image %s" % job.image if job.image else ""), flush=True)
            if not args.wait:
                _say_if_unserved(store, "job %d is queued" % job.id)
            else:
                waiting = Outage("job %d goes on meanwhile" % job.id,
                                 "waiting for job %d to end" % job.id)
                led = waiting.through(store.lease_holder) is not None
                if not led:
                    say(NO_SCHEDULER)
                for job in _until_ended(store, job, led, waiting):
                    pass  # (each read kept: a wait stopped prints the job as last read)
                ended = Outage("job %d has ended; how it ended is read once it is" % job.id,
                               "reading how job %d ended" % job.id)
                if _ran_and_failed(job):
                    tail = ended.through(lambda: final_tail(store, job))
                line = ended.through(lambda: intents.last_lines(
                    store, Asker.here(config.teams), [job])).get(job.id)
        except KeyboardInterrupt:
            if args.wait:  # (from the line saying its number on: the job is queued)
                say("stopped waiting; job %d goes on (fractui cancel %d cancels it)" % (
                    job.id, job.id))
            raise
        except StoreError as err:  # (only while waiting: the job is queued) not its failure
            raise type(err)(err.where, "%s; stopped waiting: job %d goes on (fractui jobs "
                            "--me shows it, fractui cancel %d cancels it)" % (
                                err.what, job.id, job.id)) from err
        finally:  # as jobs --json gives it, when the store last wrote it (--wait: as it ended,
            if args.json:  # or as last read where the waiting stopped)
                print_json(job_record(job, job.updated_at, line))
    finally:
        store.close()
    if args.wait:
        say("job %d ended: %s" % (job.id, why(job, line) or job.state))
        if _ran_and_failed(job):
            _say_last_lines(job, tail)
        return 0 if job.state == DONE else EXIT_FAILED
    return 0


def _say_if_unserved(store: Store, done: str) -> None:
    """Says, after what a scheduler carries out was recorded (``done``: a submit that does
    not wait, a stop asked of a running job), when no scheduler holds the store's lease: it
    would wait for one. A read of it that fails is said and is no failure of the verb: it is
    recorded, and a script that took the exit for one would do it again."""
    try:
        held = store.lease_holder()
    except StoreError as err:
        say("%s; whether a scheduler serves it could not be read: %s" % (done, err))
        return
    if held is None:
        say(NO_SCHEDULER)


def _teams_to_give(config: Config) -> str:
    """Which of the config's teams the user is in, as the --team to paste: the store's word
    (its roles) on PostgreSQL, the config's members on SQLite, as the rule of who may submit
    reads them (access.teams_of). An admin in none may charge any: told so, not to ask one."""
    roster = Asker.here(config.teams).roster
    unmade = False
    try:
        store = open_store(config.store.url, make=False, origin=config.store.origin)
        try:
            identity: Optional[Identity] = store.identity()
        finally:
            store.close()
    except StoreError as err:
        if config.store.url is not None and sqlite_path(config.store.url) is None:
            return "which of them you are in, the store did not say (%s)" % err
        identity = None  # the config's members say (an SQLite store, not made yet or unread)
        unmade = err.what == NO_STORE  # its maker will own it, so be its admin, root or not
    teams = teams_of(identity, roster) if identity else roster.teams_of(os_user())
    mine = [t.name for t in config.teams if t.name in teams]
    if mine:
        return "%s (you are in %s)" % (" or ".join("--team " + t for t in mine),
                                       ", ".join(mine))
    every = " or ".join("--team " + t.name for t in config.teams)
    if unmade:  # its maker owns the file, so is its admin (sqlite._is_admin)
        return ("you are in none of them, and no store is made yet: your submit makes it, and "
                "you its admin, who may charge any: %s" % every)
    if identity.admin if identity else os.geteuid() == 0:
        return "you are in none of them, and as an admin may charge any: %s" % every
    return "you are in none of them: an admin adds you to the one to charge"


def _again(key: str) -> str:
    """What makes a retry of a submit whose outcome is not known safe."""
    return "submitting again with --key %s makes no second job if this one was recorded" % key


LAST_LINES = 10  # of a failed job's output, said by submit --wait


def _ran_and_failed(job: Job) -> bool:
    """Whether the job ended otherwise than well after it started: what went wrong is then
    most often in its last lines (a cancel is no failure: whoever cancelled knows why)."""
    return job.state == FAILED and job.agent_job is not None


def _say_last_lines(job: Job, tail: Optional[LogTail]) -> None:
    """The last lines of a failed job's output on stderr, under a line saying so (stdout
    holds the job's number, or its record): what a researcher reads first."""
    if tail is None:
        say("its output is not kept in the store yet: fractui logs %d asks for it" % job.id)
        return
    lines = tail.text.splitlines()[-LAST_LINES:]
    if not lines:
        say("it printed nothing")
        return
    if _whole(tail) and len(tail.text.splitlines()) == len(lines):  # nothing more to show
        say("all of its output (%s):" % count(len(lines), "line"))
    else:
        say("the last %s of its output (fractui logs %d shows more):" % (
            "%d lines" % len(lines) if len(lines) > 1 else "line", job.id))
    for line in lines:
        sys.stderr.write("  %s\n" % line)
    sys.stderr.flush()


def _whole(tail: LogTail) -> bool:
    """Whether ``tail`` is the whole of its ended job's output: kept from its first byte."""
    return tail.complete and tail.whole


def _until_ended(store: Store, job: Job, led: bool, outage: Outage) -> Iterator[Job]:
    """The job as each read finds it until it has ended (a requeued one's next attempt too),
    the last read its end, so a wait stopped on the way has the job as last read; each step
    it takes on the way said on stderr, and each time a scheduler stops or starts leading
    (``led``: one did as the job was submitted); woken by the store's change feed, at least
    once a second. A store that cannot be reached (a server restarting) is waited for through
    ``outage``, said when lost and when back: the job goes on meanwhile, and so does the
    wait."""
    number = job.id
    feed = outage.through(store.feed)
    said = _step(job)

    def poll() -> Tuple[Job, Optional[Tuple[str, float]]]:
        feed.wait(1.0)  # (lost, it listens anew at its next wait)
        return store.get(number), store.lease_holder()
    try:
        while job.state not in ENDED:
            job, holder = outage.through(poll)
            yield job
            step = _step(job)
            if step != said and job.state not in ENDED:
                say("job %d %s" % (job.id, step))
            said = step
            if (holder is not None) != led and job.state not in ENDED:
                led = holder is not None
                say("a scheduler runs for this store now (%s holds its lease)" % holder[0]
                    if holder is not None else NO_SCHEDULER)
    finally:
        feed.close()


def _step(job: Job) -> str:
    """Where a job is, as ``submit --wait`` says it: its state, its slot once it has one, and
    why it waits."""
    where = " on %s" % job.slot.describe() if job.slot is not None else ""
    return "is %s%s%s" % (job.state, where, ": %s" % why(job) if why(job) else "")


# -- audit --

AUDIT_HEADER = ("TIME", "ACTOR", "ACTION", "JOB", "WHY")
AUDIT_CAPS = (None, 40, None, None)  # the widest each column but the last (WHY) may be:
# the actor; a time, an action or a job's number is never cut (terminal.table)
AIMED = CORDON_MODES + ("uncordon",)  # audited with the host (and GPU) named in their detail

def audit(config: Config, args: argparse.Namespace) -> int:
    """The audit log, of one job or all. The job's word is read before the store is opened,
    as every verb's is: one that names no job is a usage error (exit 2) whether a store is
    there or not; a job not in the store is exit 1."""
    job = None if args.job is None else job_number(args.job)
    store = open_checked_store(config, hear=False, make=False)
    try:
        if job is not None:
            store.get(job)  # (not in the store: JobNotFound, exit 1)
        entries = store.audit_log(job, args.limit)
        reads = intents.output_reader(store, Asker.here(config.teams))
    finally:
        store.close()
    if args.json:
        print_json({"audit": [_audit_record(e, reads) for e in entries]})
        return 0
    if entries:  # columns as wide as their widest cell, so they line up whatever the actors
        for line in table(AUDIT_HEADER, [
                (local_time(e.time), e.actor, e.action,
                 "" if e.job is None else str(e.job), audit_why(e)) for e in entries],
                AUDIT_CAPS, width()):
            print(line)
    return 0


def _audit_record(entry: AuditEntry, reads: Callable[[Optional[str]], bool]) -> Dict[str, Any]:
    """An entry as ``audit --json`` gives it: a submit's argv and env (its detail's) only to
    whoever may read its job's output (``reads`` of the team it names: job_commands.shown)."""
    detail = entry.detail
    if isinstance(detail, dict):  # (a damaged row's may be no object, its team no name)
        team = detail.get("team")
        detail = shown(detail, reads(team if isinstance(team, str) else None))
    return dict(entry.record(), detail=detail)


def audit_why(entry: AuditEntry) -> str:
    """An entry's WHY as the table says it: a cordon's, drain's or uncordon's begins with the
    host or GPU it named (``gpu-a gpu1: cordoned by ops@head``), read from its detail as
    ``--json`` gives it, each character a terminal would not show as written a "?" (a name
    from the store, as the other verbs show one); "cordoned by ops@head" alone named none.
    A detail that names no host as a string, or is no object (a damaged row), leaves the
    words as recorded."""
    detail = entry.detail if isinstance(entry.detail, dict) else {}
    host, gpu = detail.get("host"), detail.get("gpu")
    if entry.action not in AIMED or not isinstance(host, str) or not (
            gpu is None or type(gpu) is int):
        return entry.why
    return "%s: %s" % (printable(host_or_gpu(host, gpu)), entry.why)


# -- cancel, requeue, place: decisions the lease holder carries out --

def cancel(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "cancel")


def requeue(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "requeue")


def preempt(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "preempt")


def _stop_or_not(config: Config, refs: Sequence[str], intent: str) -> int:
    """Asks ``intent`` of each job named, in order, as ``scancel 12 13`` does: every word is
    checked first (one that names no job number: exit 2, nothing asked); a job refused (not
    in the store, not in a state for it, not yours) is said and the others still asked, and
    the exit is 1 if any was."""
    numbers = list(dict.fromkeys(job_number(ref) for ref in refs))  # (one named twice: once)
    failed = False
    stopping: list[int] = []  # the jobs a scheduler stops ("the scheduler stops it")
    store = open_checked_store(config, hear=False, make=False)  # (a job of none: never made)
    try:
        for number in numbers:
            try:
                job = _stop_one(store, config, number, intent)
            except (Refused, Denied, JobNotFound) as err:
                say(str(err))
                failed = True
                continue
            except WaitingFull as err:  # (a member's requeue)
                say(_past_bound(err, "job %d was not requeued: it runs on where it is" % number,
                                "requeue it"))
                failed = True
                continue
            print(stop_answer(job), flush=True)
            if job.state == STOPPING:
                stopping.append(job.id)
        if stopping:  # "the scheduler stops it": none will, until one runs
            _say_if_unserved(store, "%s asked to stop" % first_of(
                ["job %d" % n for n in stopping], 5))
    finally:
        store.close()
    return EXIT_FAILED if failed else 0


def _past_bound(err: WaitingFull, kept: str, again: str) -> str:
    """A member's submit or requeue refused at her team's bound on waiting jobs: what was
    ``kept`` as it was, and what she can do (``again``: the verb, done again)."""
    return ("%s: %s; %s again once some have started, cancel some of them (fractui jobs --me "
            "lists yours; fractui cancel JOB...), or ask an admin to raise team %s's "
            "max_waiting in the config the scheduler runs on" % (err, kept, again, err.team))


# What a job asked to stop (cancel, requeue, preempt) is left as, said after its state
_LEFT = {STOPPING: "the scheduler stops it", PENDING: "back in its queue",
         PLACED: "its next attempt, about to start", RUNNING: "its next attempt, started since"}
# ... and a stop that brings it back, what comes after it
_THEN = {REQUEUE: ", then puts it back in its queue", PREEMPT: ", then puts it back in its queue"}


def stop_answer(job: Job) -> str:
    """What ``cancel``, ``requeue`` and ``preempt`` print of a job once asked: its number, its
    state and what that state means for it — a job whose requeue went through and whose next
    attempt has started or ended since is said to be so, never a bare ``7 running``, which
    reads as a count; a cancelled job is ``7 cancelled``. A job stopping to come back says so
    (``7 stopping (the scheduler stops it, then puts it back in its queue)``): a requeue's
    answer is never a cancel's."""
    left = _LEFT.get(job.state)
    if job.state == STOPPING:
        left += _THEN.get(job.stop_intent or "", "")
    if left is None and job.state in ENDED and job.state != CANCELLED:
        left = "its next attempt, ended since"
    return "%d %s%s" % (job.id, job.state, " (%s)" % left if left else "")


def _stop_one(store: Store, config: Config, number: int, intent: str) -> Job:
    """One job's ``intent`` asked (intents.ask_stop); an ended job's requeue is refused with
    the submit that runs it anew. An admin's verb (preempt) says so to anyone else first,
    whatever the job."""
    asker = Asker.here(config.teams)
    if intent in ADMIN_ACTIONS:
        intents.authorize(store, asker, intent, None, "job %d" % number)
    job = store.get(number)
    try:
        return intents.ask_stop(store, job, intent, asker)
    except Refused as err:
        if intent == CANCEL or job.state not in ENDED:
            raise
        line, changed = resubmit_line(config, job)
        raise Refused("%s: an ended job stays ended; to run it again, submit it anew%s: %s"
                      % (err, " (%s)" % changed if changed else "", line)) from None


def resubmit_line(config: Config, job: Job) -> Tuple[str, str]:
    """The ``fractui submit`` that queues ``job`` anew as it was submitted — its queue, team,
    name, cwd, variables, image and command — each word quoted as a shell reads it back
    (words.shell_line: one with a line break or an escape in ``$'…'``), to be pasted; what
    the config gives by default (its queue's team and image) is left out. And what in it is
    not as the job was ("" if nothing): a job stored before submit refused a name, a cwd or a
    variable's name that is not printable (arguments.job_problem) would have its line refused,
    so its name is given printable (words.printable) and such a cwd or variable left out."""
    queue = next((q for q in config.queues if q.name == job.queue), None)
    words = ["fractui"] + (["--config", config.path] if config.path is not None and
                           config.path != default_config_path() else [])
    words += ["submit", "--queue", job.queue]
    changed = []
    if job.team is not None and (queue is None or queue.team != job.team):
        words += ["--team", job.team]
    if job.name != default_name(job.argv):
        words += ["--name", printable(job.name)]
        if not job.name.isprintable():
            changed.append("its name %s with a ? for each character submit refuses"
                           % quoted(job.name))
    if job.cwd is not None and job.cwd.isprintable():
        words += ["--cwd", job.cwd]
    elif job.cwd is not None:
        changed.append("no --cwd: its directory %s holds a character submit refuses"
                       % quoted(job.cwd))
    for name, value in job.env.items():
        if name.isprintable():
            words += ["--env", "%s=%s" % (name, value)]
        else:
            changed.append("no --env %s: a variable's name submit refuses" % quoted(name))
    if job.image is not None and (queue is None or queue.image != job.image):
        words += ["--image", job.image]
    return shell_line(words + ["--", *job.argv]), "; ".join(changed)


@contextlib.contextmanager
def _by_hand(config: Config, args: argparse.Namespace, action: str
             ) -> Iterator[Tuple[Store, Job, int, Asker]]:
    """``place``'s and ``move``'s start: their arguments checked, then the store open (closed
    after), ``action`` authorized (before the job is looked up, and the host in a config of
    no hosts: a member is told the verb is the admin's; checked_store.host_first) and the job
    read, before any host is asked."""
    if args.start is not None and args.profile is None:
        raise UsageError("--start goes with --profile")
    gpu, number = gpu_index(args.gpu), job_number(args.job)
    host_first(config, args.host)
    asker = Asker.here(config.teams)
    store = open_checked_store(config, hear=False, make=False)  # (a job of none: never made)
    try:  # the admin's verbs: who may is said first, before the job is looked up
        intents.authorize(store, asker, action, None, "job %d" % number)
        config.host(args.host)
        job = store.get(number)
        yield store, job, gpu, asker
    finally:
        store.close()


def _past_quota_agreed(held: HeldTo, args: argparse.Namespace, job: Job, slot: Slot,
                       adds: float, verb: str, kept: str) -> Optional[str]:
    """How ``job`` on ``slot``, adding ``adds`` GPUs to its team's use within the quota, takes
    the team past the quota it is ``held`` to (None: it does not), said and agreed to
    (``--over-quota``, ``--yes`` or the question): not agreed, Failed with ``kept``."""
    past = held.past(job.team, adds)
    if past is not None:
        say("job %d on %s %s." % (job.id, slot.describe(), past))
        if not (args.over_quota or args.yes or confirm(
                "%s it anyway, as a borrowed job that a team within its quota may preempt?"
                % verb)):
            raise Failed(kept)
    return past


def _held_to(config: Config, store: Store) -> HeldTo:
    """The quotas a placement or move by hand is held to: the scheduler's, as the store keeps
    them, else this config's (``HeldTo``), with the store's active jobs counted against them."""
    return HeldTo.of(store.jobs(ACTIVE), config, store.team_terms())


def place(config: Config, args: argparse.Namespace) -> int:
    """A manual placement, recorded as a decision; the lease holder launches it exactly there
    (what the decision leaves open, it completes from the live GPU). One that takes the job's
    team past its quota is said and asked about (``--over-quota`` agrees in advance), and is
    then recorded as borrowed: preemptible like any over-quota job."""
    if args.layout_version is not None and args.start is None:
        raise UsageError("--layout-version goes with --profile and --start (a previewed plan)")
    with _by_hand(config, args, PLACE) as (store, job, gpu, asker):
        if intents.placed_there(job, args.host, (gpu,), args.profile):
            # a retry whose first answer was lost: done, answered as the first was
            print(_placed(job, slot_flip(
                job.slot, store.inventory().get(args.host))  # type: ignore[arg-type]
                          if job.state == PLACED else None))  # (a launch made: no flip ahead)
            _unled_said(store, job)
            return 0
        if job.state != PENDING:
            raise Failed("only a pending job can be placed: %s%s" % (
                intents.as_it_is(job), "; fractui move %d HOST GPU moves it" % job.id
                if movable(job.state) else ""))
        on_hosts = store.jobs(ON_HOST)
        try:
            in_service(Slot(args.host, (gpu,)), store.cordons(), on_hosts)
        except Unfit as err:
            raise Failed(str(err)) from None
        known = store.inventory().get(args.host) or heard_inventory(config, store).get(
            args.host)
        if known is None:
            raise Failed("%s was never heard from: its GPUs are unknown, so what placing job "
                         "%d there would charge cannot be counted (fractui status says why)" % (
                             args.host, job.id))
        try:  # as its launch judges the change (a job of the store on the GPU, a GPU its
            # agent says has no MIG, a host that pins its modes), but the processes the host
            # has now
            judged = by_hand(job, Slot(args.host, (gpu,), args.profile, args.start,
                                       layout_version=args.layout_version), known, store.uid,
                             on_hosts, config.mode_fixed(args.host), store.mode_holds(),
                             store.now())  # (the holds' clock, whatever this machine's)
        except Unfit as err:
            raise Failed(str(err)) from None
        slot, flip = judged.slot, judged.flip
        refused = judged.refused(job)
        if refused is not None:  # its launch would be refused: not recorded
            raise Failed(refused)
        first = judged.first(job)
        if first is not None:  # a reset on some models: said, and agreed to, before it is asked
            say(first + ".")
            if not (args.yes or confirm("Place it, changing the GPU's MIG mode?")):
                raise Failed("not placed: job %d stays pending" % job.id)
        held = _held_to(config, store)
        past = _past_quota_agreed(held, args, job, slot, slot.charge, "Place",
                                  "not placed: job %d stays pending" % job.id)
        job = intents.place_by_hand(store, job, slot, asker, past, held.quota(job.team))
        print(_placed(job, flip))
        _unled_said(store, job)
    return 0


def _unled_said(store: Store, job: Job) -> None:
    """Says that no scheduler runs where none holds the lease: ``place`` answered "the
    scheduler launches it", and none will until one runs (``move`` says it so too); a read
    of it that fails is no failure of the placement, recorded (``_say_if_unserved``)."""
    if job.state == PLACED:
        _say_if_unserved(store, "job %d is placed" % job.id)


def _placed(job: Job, flip: Optional[str]) -> str:
    """What ``place`` answers once the job is placed by hand, the first time or asked again:
    where, what its launch will first change (``flip``), and whether it is borrowed."""
    return "%d placed on %s; the scheduler %s it%s" % (
        job.id, job.slot.describe(), "launches" if flip is None  # type: ignore[union-attr]
        else "will %s, then launch" % flip, " (borrowed: preemptible)" if job.preemptible
        else "")


def move(config: Config, args: argparse.Namespace) -> int:
    """A move by hand of a placed or running job, one intent: the lease holder stops it (its
    grace), then places it by hand on the slot chosen here, which it holds meanwhile. The
    slot is chosen on the host as it is now (asked of its agent: a slot held must be one the
    GPU has free), as the TUI's preview chooses it; a launch that first changes the GPU's
    MIG mode, or that goes past the team's quota, is said and asked about as ``place`` asks."""
    with _by_hand(config, args, MOVE) as (store, job, gpu, asker):
        asked = _of_set(job, Slot(args.host, (gpu,), args.profile, args.start))
        if intents.there(job, asked):  # a retry whose first ask was carried out: done
            print(_moving(job))
            return 0
        if not intents.moving_to(job, asked):
            if not movable(job.state):
                raise Failed(intents.move_refusal(job))
            unlaunched = intents.unmoved_by_store(store, job)  # before any host is asked
            if unlaunched is not None:
                raise Failed(unlaunched)
            where, view = _room_now(config, store, job, asked)
            flip = slot_flip(where.slot(), facts(view))
            say("job %d to %s: %s" % (job.id, where.host, where.plan))
            if flip is not None and not (args.yes or confirm(
                    "Move it, changing the GPU's MIG mode?")):
                raise Failed("not moved: job %d stays where it is" % job.id)
            held = _held_to(config, store)
            past = _past_quota_agreed(held, args, job, where.slot(),
                                      adds_within(job, where.charge), "Move",
                                      "not moved: job %d stays where it is" % job.id)
            job = intents.move_by_hand(store, job, where.slot(), asker, past,
                                       held.quota(job.team))
        print(_moving(job))
        if job.state == STOPPING:  # (recorded: a failed read of the lease is no failure)
            _say_if_unserved(store, "job %d is asked to move" % job.id)
    return 0


def _of_set(job: Job, asked: Slot) -> Slot:
    """``asked`` of a job of several GPUs, where the GPU named is one of the set it is moving
    to or runs on there: that set, so that a move asked again (its answer lost) finds its
    first ask carried out, not the job's own set taken, by itself."""
    if request_of(job).gpus > 1:
        for slot in (job.move_to, job.slot):
            if slot is not None and slot.host == asked.host and asked.gpus[0] in slot.gpus:
                return replace(asked, gpus=slot.gpus)
    return asked


def _moving(job: Job) -> str:
    """What ``move`` answers, the first time or asked again while the move is under way."""
    if job.state != STOPPING or job.move_to is None:
        return "%d %s on %s (moved there)" % (job.id, job.state,
                                              job.slot.describe())  # type: ignore
    return "%d moving to %s: the scheduler stops it, then launches it there; the slot is " \
        "held for it meanwhile%s" % (job.id, job.move_to.describe(),
                                     " (borrowed: preemptible)" if job.move_borrowed else "")


def _live_view(config: Config, store: Store, host: str) -> tuple[HostView, Any]:
    """``host`` as its agent says it is now (hello, jobs, a fresh snapshot), each GPU the
    lease holder holds back from mode changes offered none; and the host's state."""
    from fractui.fleet.client import AgentCallError  # here: the store-only verbs load no SSH
    from fractui.fleet.fleet import open_fleet
    from fractui.fleet.host import HostUnavailable
    fleet = open_fleet(config, [host])
    try:
        session = fleet.session(host)
        try:
            snapshot = session.call("snapshot", None, MOVE_CALL_S)
        except (HostUnavailable, AgentCallError) as err:  # nothing to judge the room by
            raise Failed("not moved: %s cannot be read now (%s)" % (host, err)) from None
        status = replace(session.status, snapshot=snapshot, jobs=dict(session.status.jobs))
    finally:
        fleet.stop()
    now = store.now()  # the holds' clock, whatever this machine's
    held = {u for u, h in store.mode_holds().items() if h.left(now)}
    return HostView.of(status, config.mode_fixed(host), held), status.state


def _room_now(config: Config, store: Store, job: Job, asked: Slot
              ) -> tuple[Candidate, HostView]:
    """The best slot for ``job`` where ``asked`` names (its GPU, and profile and start where
    given), on the host as it is now and the store's jobs (the rooms that moves hold
    included), and the host's view; Failed, saying so, where there is none."""
    try:
        in_service(asked, store.cordons(), store.jobs(ON_HOST))
    except Unfit as err:
        raise Failed("not moved: %s" % str(err).replace("not placed: ", "")) from None
    view, host_state = _live_view(config, store, asked.host)
    if asked.gpus[0] >= len(view.gpu_records()):  # (not "no room", nor a set "not with" it)
        raise Failed("not moved: %s has no GPU %d (it has %d)" % (
            asked.host, asked.gpus[0], len(view.gpu_records())))
    there = candidates([view], store.jobs(ACTIVE), store.uid, job, store.cordons())
    several = request_of(job).gpus > 1  # (the GPU named is one of those it takes)
    on_gpu = [c for c in there if c.gpus == asked.gpus or several and asked.gpus[0] in c.gpus]
    if several and not on_gpu and there:
        best = next((c for c in there if c.chosen), there[0])
        raise Failed("not moved: job %d asks for %d GPUs of one host, and on %s they would be "
                     "gpu%s, not with gpu%d (fractui move %d %s %d moves it there)" % (
                         job.id, len(best.gpus), asked.host, ",".join(map(str, best.gpus)),
                         asked.gpus[0], job.id, asked.host, best.gpus[0]))
    found = [c for c in on_gpu if asked.profile in (None, c.profile)
             and asked.start in (None, c.start)]
    taken = sorted({c.profile or "a %d MiB share" % c.memory_mib for c in on_gpu})
    if asked.profile and on_gpu and asked.profile not in taken:
        # room there, but not of that profile: the queue's rule picks what the job takes
        raise Failed("not moved: job %d of queue %s takes %s on %s gpu%d, not %s (fractui move "
                     "%d %s %d picks its slot there)" % (
                         job.id, job.queue, " or ".join(taken), asked.host, asked.gpus[0],
                         asked.profile, job.id, asked.host, asked.gpus[0]))
    if not found:
        raise Failed("not moved: no room for job %d on %s now (%s; fractui status shows what "
                     "runs there)" % (job.id, asked.describe(), host_state))
    return found[0], view


# -- cordon, drain, uncordon: hosts and GPUs out of service --

def cordon(config: Config, args: argparse.Namespace) -> int:
    return _out_of_service(config, args, CORDON)


def drain(config: Config, args: argparse.Namespace) -> int:
    return _out_of_service(config, args, DRAIN)


def _out_of_service(config: Config, args: argparse.Namespace, mode: str) -> int:
    """Records the cordon (or drain); the scheduler places and launches nothing new there from
    its next pass, and what runs there runs on."""
    gpu = None if args.gpu is None else gpu_index(args.gpu)
    store = _store_of(config, args.host)
    try:
        _admin_first(store, config, args.host, gpu)
        config.host(args.host)
        _check_gpu(store, args.host, gpu)
        made = intents.cordon(store, args.host, gpu, mode, Asker.here(config.teams))
        on_it: Optional[List[Job]] = None  # (once read; recorded without them, as submit's
        try:  # job is queued: its --json record is printed whatever stops this read)
            on_it = [j for j in store.jobs(ON_HOST) if holds(made, j)]
        except StoreError as err:  # recorded all the same: not its failure
            say("%s: the %s is recorded; which of the store's jobs are there could not be "
                "read: %s" % (made.where(), mode, err))
        finally:
            if args.json:  # (state and jobs null where they could not be read)
                print_json(dict(made.record(), state=None if on_it is None else state(
                    made, on_it), jobs=None if on_it is None else [j.id for j in on_it]))
    finally:
        store.close()
    if on_it is not None and not args.json:
        print(made_said(made, on_it, "fractui status"))
    return 0


def uncordon(config: Config, args: argparse.Namespace) -> int:
    gpu = None if args.gpu is None else gpu_index(args.gpu)
    asker = Asker.here(config.teams)
    store = _store_of(config, args.host, known_first=False)
    try:
        _admin_first(store, config, args.host, gpu)
        if not any(c.host == args.host for c in store.cordons()):
            config.host(args.host)  # a host left out of the config may still be uncordoned
        _check_gpu(store, args.host, gpu)
        lifted = intents.uncordon(store, args.host, gpu, asker)
        where = args.host if gpu is None else "%s gpu%d" % (args.host, gpu)
        still: Optional[str] = None
        try:  # (recorded: a read after that fails is said, no failure, as cordon's is)
            still = host_out(store.cordons(), store.jobs(ON_HOST), args.host)
        except StoreError as err:
            say("%s: %s; whether it is still out of service as a whole could not be read: "
                "%s" % (where, "the uncordon is recorded" if lifted else "nothing was "
                        "uncordoned", err))
    finally:
        store.close()
    if not lifted:
        print("%s was in service: nothing to uncordon" % where)
    else:
        print("back in service: %s" % ", ".join(c.where() for c in lifted))
    if still:  # one GPU uncordoned on a host cordoned as a whole
        say("%s is still %s as a whole: fractui uncordon %s puts it back" % (
            args.host, still, args.host))
    return 0


def _store_of(config: Config, host: str, known_first: bool = True) -> Store:
    """The store as cordon, drain and uncordon open it (checked_store.store_of_a_host_verb:
    a typo is said first, and makes none)."""
    return store_of_a_host_verb(config, host, lambda make: open_checked_store(
        config, hear=False, make=make), known_first)


def _admin_first(store: Store, config: Config, host: str, gpu: Optional[int]) -> None:
    """access.Denied for a user who may not cordon, drain or uncordon: said before the host
    is looked up, so a member is told the verb is the admin's, not that her config (of no
    [[hosts]], a researcher's) lacks the host."""
    intents.authorize(store, Asker.here(config.teams), CORDON_ACTION, None,
                      intents.host_or_gpu(host, gpu))


def _check_gpu(store: Store, host: str, gpu: Optional[int]) -> None:
    """Failed for a GPU the host is known not to have (its kept facts): what a host has is the
    fleet's fact, not the command line's, so it is exit 1 as in every verb that names a GPU."""
    known = store.inventory().get(host)
    if gpu is None or known is None:
        return
    count = len(known.get("gpus") or [])
    if gpu >= count:
        raise Failed("%s has no GPU %d: it has %s" % (
            host, gpu, "GPUs 0 to %d" % (count - 1) if count > 1 else
            "GPU 0 only" if count else "no GPU"))


# -- the headless scheduler --

# How often the main thread looks for a SIGTERM or SIGINT while it waits: the kernel may hand
# the signal to any of the scheduler's threads, and then only sets a flag that the main thread
# reads when it next runs Python code, which an untimed wait never does.
SIGNAL_POLL_S = 0.5


def _scheduler_store(config: Config, child: bool) -> Store:
    """The scheduler's store, checked, and the rule asked that it may schedule (before any
    host). A service started while its PostgreSQL server is away (restarting, in crash
    recovery, up after the head node at boot) waits for it, saying so once, as a running
    scheduler rides an outage out: exit 1 had systemd's restarts give up within
    StartLimitBurst; a server lost between the open and the rule's read is waited for the
    same. An SQLite file that cannot be opened does not come back by itself, and a TUI's
    ``child`` (``--until-stdin-closes``) ends for its parent to say it: both exit 1 at once,
    as before."""
    def allowed() -> Store:
        return open_checked_store(config, first=SCHEDULE)

    if child or config.store.url is None or sqlite_path(config.store.url) is not None:
        return allowed()
    return Outage("the scheduler starts once it answers", "the scheduler starts").through(
        allowed)


def scheduler(config: Config, args: argparse.Namespace) -> int:
    from fractui.fleet.fleet import Fleet  # here: the store's verbs load no SSH (paramiko)
    from fractui.scheduler import Scheduler

    if not config.queues:
        raise UsageError("the config has no [[queues]]: there is nothing to schedule")
    for i, queue in enumerate(config.queues if not config.hosts else ()):
        if queue.hosts:  # (a member's config of no hosts takes them: config.py)
            raise config.fail(f"queues[{i}].hosts names '{queue.hosts[0]}', but the config "
                              "lists no hosts ([[hosts]]): a scheduler places jobs on the "
                              "hosts its own config lists", "queues", i, "hosts")
    try:
        with terminated_as_interrupted():
            store = _scheduler_store(config, child=args.until_stdin_closes)
    except KeyboardInterrupt:  # SIGINT or SIGTERM as it waited for the store: no lease to hand
        return 0  # over; exit 0, as at either once it runs (systemctl stop ends it so)
    log_records_to_stderr()
    done = threading.Event()
    fleet = Fleet(config)
    exporter = _exporter(config, fleet, args.until_stdin_closes)
    sched = Scheduler(config, store, fleet, name=args.name, on_fatal=done.set,
                      on_turn=exporter.report if exporter is not None else None)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.until_stdin_closes:  # a child of a TUI or the demo: it ends with its parent
        threading.Thread(target=_until_closed, args=(done,), name="parent", daemon=True).start()
    try:
        fleet.start()
        sched.start()
        log_line("scheduler %s: store %s, %s, %s" % (
            sched.holder, store.where, count(len(config.hosts), "host"),
            count(len(config.queues), "queue")))
        warning = None if args.until_stdin_closes else local_hosts_in_service(config, os.environ)
        if warning:
            say(warning)
        while not done.wait(SIGNAL_POLL_S):
            pass
    finally:
        sched.stop(release=sched.fatal is None)
        if exporter is not None:
            exporter.close()
        fleet.stop()
        store.close()
    if sched.fatal is not None:
        raise sched.fatal  # said by the command's caller, with the store's path: exit 1
    return 0


def local_hosts_in_service(config: Config, env: Mapping[str, str]) -> Optional[str]:
    """Why a scheduler run as a systemd service should not have local hosts, or None. A local
    host's agent daemon, its jobs' shims and its jobs are this process's descendants: in a
    service's control group, which ``systemctl stop`` or ``restart`` ends whole, so every job
    there fails (its shim died) — unlike a host over SSH or exec, whose agent outlives the
    scheduler. systemd names each run of a service in ``INVOCATION_ID``."""
    local = [h.name for h in config.hosts if h.transport == "local"]
    if not local or not env.get("INVOCATION_ID"):
        return None
    return ("%s %s local (transport = \"local\"): under this systemd service its agent daemon "
            "and jobs are the service's own processes, so stopping or restarting the service "
            "ends them and their jobs fail; reach a host over SSH (a simulated one too: "
            "transport = \"ssh\" with sim) for jobs that outlive the scheduler "
            "(docs/scheduler.md, \"Running it as a service\")" % (
                ", ".join(local), "is" if len(local) == 1 else "are"))


def _exporter(config: Config, fleet: Fleet, tuis: bool) -> Optional["Exporter"]:
    """The metrics endpoint this scheduler serves while it holds the lease: none without
    [metrics] listen, and none for a TUI's own scheduler (``tuis``) unless [metrics] tui."""
    address = config.metrics.address
    if address is None or (tuis and not config.metrics.tui):
        return None
    from fractui.metrics.exporter import Exporter  # prometheus_client: only where it serves

    return Exporter(address, config, lambda: [HostView.of(s) for s in fleet.statuses()])


def _until_closed(done: threading.Event) -> None:
    """Reads stdin to its end: the parent closed it, or died (the kernel closed it)."""
    while sys.stdin.buffer.read(4096):
        pass
    done.set()
