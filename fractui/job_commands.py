"""``jobs`` and ``logs``: what runs and ran, queued jobs (by number) and jobs launched directly
on hosts (``host/agent-id``) alike, each with its name and, once it ended, why."""

from __future__ import annotations

import argparse
import queue
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from fractui import kept_output
from fractui.arguments import JOBS_LIMIT, is_job_number, job_number, known_user, split_job
from fractui.checked_store import no_store_to_ask, open_checked_store
from fractui.config import Config, ConfigError
from fractui.copy_words import judged_again, stale_copies, unread
from fractui.fleet.client import AgentCallError
from fractui.fleet.fleet import open_fleet
from fractui.fleet.host import HostSession, same_agent_job
from fractui.outcome import EXIT_FAILED, Failed, UsageError, gone_words, naming
from fractui.sched.copies import Unheld, held_copies, unheld
from fractui.sched.fleetview import USABLE, held_why
from fractui.scheduler.execute import AGENT_ENDED
from fractui.store.access import READ
from fractui.store import open_store
from fractui.store.base import NO_STORE, Feed, JobNotFound, Store, StoreError, StoreForbidden
from fractui.store.intents import Asker, authorize, last_lines, output_reader
from fractui.store_outage import Outage
from fractui.store.model import (ACTIVE, ENDED, LOG_TAIL_BYTES, ON_HOST, PENDING, PLACED,
                                 RUNNING, START_NOT_KNOWN, STOPPING, Job, LogTail,
                                 StaleCopy)
from fractui.terminal import print_json, say, table, width
from fractui.words import (NO_SCHEDULER, count, duration, exited, failing_passes, local_time,
                           quoted, why)
from remote_agent.rpc.jsonrpc import JOB_KEY_MISMATCH

HEADER = ("JOB", "STATE", "QUEUE", "TEAM", "USER", "WHERE", "NAME", "WHY")
CAPS = (None, None, 16, 12, 16, 32, 24)  # the widest each column but the last (WHY) may be;
# a job's number (or an agent's ref) and its state are never cut (terminal.table)


def agent_why(record: Dict[str, Any]) -> str:
    """How a job on a host ended, in the agent's words; "" while it runs."""
    if record.get("state") == "exited":
        code = record.get("exit_code")
        return "exited, its exit code unknown" if code is None else exited(
            code, record.get("last_line"))
    if record.get("state") in AGENT_ENDED:
        return record.get("reason") or record["state"]
    return ""


PRIVATE = ("argv", "env", "last_line")  # a job record's fields its output's readers alone see


def shown(record: Dict[str, Any], readable: bool) -> Dict[str, Any]:
    """A job's record (the store's or an agent's) as shown to a reader: its command
    (``argv``), its variables (``env``) and its last line of output only where the reader may
    read the job's output (``readable``: its team and the admins, intents.readable; an
    agent's record the admins', intents.reads_host_output). A token or a password rides in
    them as often as in the output, and another team's member needs none of them to see why
    their own job waits (docs/decisions.md)."""
    return record if readable else {k: v for k, v in record.items() if k not in PRIVATE}


def host_output(records: List[Dict[str, Any]], readable: bool) -> List[Dict[str, Any]]:
    """The agents' job records as shown (``shown``)."""
    return [shown(r, readable) for r in records]


def _named(name: str, image: Optional[str]) -> str:
    """A job's name, with the container image it runs in (none: a bare process)."""
    return "%s [%s]" % (name, image) if image else name


def waited(job: Job, now: float) -> Optional[float]:
    """How long a pending job has waited at ``now`` (since its submit, or since it went
    back to its queue); None for a job not waiting."""
    return job.waited(now) if job.state == PENDING else None


def store_clock(store: Store) -> Callable[[], float]:
    """The store's clock from here on: its time now (PostgreSQL's, which dates what it keeps:
    a submit, a requeue), read once, then carried on by this machine's monotonic clock — so a
    job's wait and run are measured against the times they began, not against this machine's
    wall clock, which may be set wrong, and the hosts asked meanwhile add no read of it."""
    at, read = store.now(), time.monotonic()
    return lambda: at + time.monotonic() - read


def job_row(job: Job, now: float, last_line: Optional[str] = None) -> List[str]:
    """A job's row. A pending one's WHERE says how long it has waited; a running or stopping
    one's WHY begins with how long it has run (``ran 1h02m``; ``start not known`` where its
    agent has not told its start: Job.start_unknown), beside the words of why it stops, if
    any; a failed one's says its ``last_line`` where the reader may read it."""
    where = job.slot.describe() if job.slot else (
        "waiting %s" % duration(waited(job, now)) if job.state == PENDING else "-")
    run = START_NOT_KNOWN if job.start_unknown else "ran %s" % duration(job.ran(now)) \
        if job.state in (RUNNING, STOPPING) and job.started_at is not None else ""
    said = "; ".join(w for w in (run, why(job, last_line)) if w)
    return [str(job.id), job.state + ("*" if job.preemptible else ""), job.queue,
            job.team or "-", job.user or "-", where, _named(job.name, job.image), said]


def job_record(job: Job, now: float, last_line: Optional[str] = None,
               readable: bool = True) -> Dict[str, Any]:
    """A job as ``jobs --json`` prints it: its record, its ``ref`` (its number), and how long
    it has waited (``waited_s``) and run (``ran_s``) at ``now``, in seconds (null: not
    waiting; not started, or its start not known); a failed job's ``last_line`` of output,
    only where it was kept and the reader may read the job's output (intents.last_lines):
    absent otherwise; its argv and env only where the reader may (``readable``: ``shown``)."""
    record = shown(dict(job.record(), ref=str(job.id), waited_s=waited(job, now),
                        ran_s=job.ran(now)), readable)
    if last_line is not None:
        record["last_line"] = last_line
    return record


def agent_row(record: Dict[str, Any]) -> List[str]:
    gpus = ",".join(str(g) for g in record.get("gpus") or [])
    where = "%s gpu%s" % (record["host"], gpus) if gpus else record["host"]
    name = record.get("name") or " ".join(record.get("argv") or [])
    copy = record.get("copy_of")
    return [record["ref"], record.get("state") or "?", "-", "-", "-", where,
            _named(name, record.get("image")),
            copy["why"] if copy else agent_why(record) or held_why(record)]


def jobs(config: Config, args: argparse.Namespace) -> int:
    """Queued jobs from the store (by number), then jobs launched directly on the hosts (as
    host/agent-id). Naming hosts shows only theirs: the queued jobs placed there, then the
    ones launched there directly (a queued job's launch is its number's row, never a second
    row as if launched by hand), and the live copies under the store's key that no job of the
    store holds there (``copies.unheld``: a late copy, or one of a job the store does not
    have), each saying what it is. Naming jobs by number shows those, whatever their state and
    whoever submitted them. ``--user``/``--me``: only the queued jobs that user submitted (the
    store's word on who, as the audit's; a launch by hand has no submitter)."""
    if args.limit is not None and not args.all:
        raise UsageError("--limit goes with --all: it keeps the newest N of the ended jobs too "
                         "(jobs alone shows every job not ended)")
    hosts, numbers = _hosts_and_jobs(config, args.hosts)
    if numbers and (hosts or args.all or args.user or args.me):
        raise UsageError("jobs JOB... shows those jobs, whatever their state and whoever "
                         "submitted them: it takes no HOST, --all, --user or --me")
    stored: List[Job] = []
    cut_at: Optional[int] = None  # (--all: the ended jobs listed, where older were left out)
    lines: Dict[int, str] = {}  # the failed jobs' last lines the reader may read
    readers: Set[int] = set()  # the jobs whose output (argv, env too) the reader may read
    missing: List[JobNotFound] = []
    uid, failed = None, False
    clock: Callable[[], float] = time.time  # (no store read: no job of it to time)
    held: Set[Tuple[str, str]] = set()
    stale: List[StaleCopy] = []
    fleet_too = bool(config.hosts) and not (args.me or args.user or numbers)
    hosts_output = False  # whether the hosts' jobs' last lines are the reader's (READ)
    try:
        # (no store is made where only the store's jobs are shown: no hosts in the config, or
        # --me, --user, JOB...; the hosts' listing makes it, as their launches do)
        store = open_checked_store(config, hear=False, make=fleet_too)
        try:
            uid, clock = store.uid, store_clock(store)
            users = [store.identity().user] if args.me else [args.user] if args.user else None
            if numbers:
                stored, missing = _numbered(store, numbers)
            else:
                stored, cut_at = _listed(store, args, hosts or None, users)
                if args.user and not stored:  # (a typo: said so, not "no active jobs")
                    known_user(args.user, store, config.teams)
            asker = Asker.here(config.teams)
            reads = output_reader(store, asker)  # (who reads: read once, for all three)
            lines = last_lines(store, asker, stored, reads)
            readers = {j.id for j in stored if reads(j.team)}
            if fleet_too:  # (its stale copies are not held: they are shown as such)
                held, stale = held_copies(store.jobs(ON_HOST), [], uid), stale_copies(store)
                hosts_output = reads(None)  # (an agent's record: READ of no team's)
            trouble = store.trouble()
            unled = store.lease_holder() is None and any(j.state in ACTIVE for j in stored)
        finally:
            store.close()
    except StoreError as err:
        if not hosts or args.me or args.user:  # (only the store knows who submitted)
            raise
        # the hosts' jobs are still worth seeing (the store may be what is down): all of them
        # as the hosts have them, exit 1; their output only where no store is there to ask
        failed, trouble, unled = True, None, False
        hosts_output = no_store_to_ask(err)
        say(str(err))
        say("every job on %s as its agent has it, queued ones too:" % ", ".join(hosts))
    if trouble is not None:  # every pending job's why is stale meanwhile
        say(failing_passes(trouble))
    if unled:  # (a job's why is what the last scheduler said, or nothing)
        say(NO_SCHEDULER)
    if cut_at is not None:  # (a job looked for among them is not gone)
        say("the newest %s listed; older ones are left out (--limit N lists more)" % (
            "ended job is" if cut_at == 1 else "%d ended jobs are" % cut_at))
    rows: List[Dict[str, Any]] = []
    if fleet_too:
        fleet = open_fleet(config, hosts)
        try:
            answers = fleet.fan_out("job.list")
        finally:
            fleet.stop()
        mine = "fractui-%s-" % uid
        copies: List[Unheld] = []
        for host, answer in answers.items():
            if isinstance(answer, Exception):
                failed = True
                say(naming(host, answer))
                continue
            rows += [dict(j, host=host, ref="%s/%s" % (host, j["id"])) for j in answer["jobs"]
                     if not (uid and (j.get("key") or "").startswith(mine))]
            if uid:
                copies += unheld(host, answer["jobs"], held, uid)
        rows = host_output(rows + _copy_rows(config, copies, answers, stale, uid),
                           hosts_output)
    now = clock()
    if args.json:
        print_json({"jobs": [job_record(j, now, lines.get(j.id), j.id in readers)
                             for j in stored] + rows})
    elif stored or rows:
        for line in table(HEADER, [job_row(j, now, lines.get(j.id)) for j in stored] +
                          [agent_row(r) for r in rows], CAPS, width()):
            print(line)
    elif not (failed or missing):  # say so: a blank line reads as a hang
        print("no jobs" if args.all or hosts else
              "no active jobs (--all lists ended ones too)")
    for err in missing:  # after the jobs found, which a script reads first
        say(str(err))
    return EXIT_FAILED if failed or missing else 0


def _listed(store: Store, args: argparse.Namespace, hosts: Optional[List[str]],
            users: Optional[List[str]]) -> Tuple[List[Job], Optional[int]]:
    """The store's jobs ``jobs`` lists, by number: every active one, and with ``--all`` the
    newest N ended ones too; and N where older ended ones were left out (one more is read to
    know), else None. N bounds the ended only: taken from all, a job that ran for a
    day behind 200 newer ones left ``jobs --all`` while ``jobs`` still listed it. The active
    are read first, so a job that ends between the reads is in both and kept as ended:
    never in neither. The second read is of every job not active, so a state that is none
    of fractui's (written by hand) is read, and said as the store's damage, as a read of
    all was: a read of the ended states would pass over it."""
    listed = {j.id: j for j in store.jobs(ACTIVE, hosts=hosts, users=users)}
    limit = args.limit or JOBS_LIMIT
    ended = store.jobs(other_than=ACTIVE, limit=limit + 1, hosts=hosts,
                       users=users) if args.all else []
    more = len(ended) > limit  # (its oldest, the one more, is listed only as read active)
    listed.update((j.id, j) for j in ended[more:] + [
        j for j in ended[:more] if j.id in listed])
    return [listed[number] for number in sorted(listed)], limit if more else None


def _copy_rows(config: Config, copies: List[Unheld], answers: Dict[str, Any],
               stale: List[StaleCopy], uid: Optional[str]) -> List[Dict[str, Any]]:
    """The agent records of the copies no job of the store holds, each with ``copy_of``: its
    job's number, attempt and what it is, by the store read again (``copy_words``: a copy
    its job holds as read again is that job's own, launched or moved there after the first
    read, and left out)."""
    if not copies or uid is None:
        return []
    try:
        store = open_checked_store(config, hear=False)
        try:
            said = judged_again(store, copies, stale)
        finally:
            store.close()
    except StoreError as err:  # the copies are still shown, said as unread
        say(str(err))
        said = unread(copies, stale, uid)
    by_key = {(host, j.get("key")): j for host, answer in answers.items()
              if not isinstance(answer, Exception) for j in answer["jobs"]}
    return [dict(by_key[c.host, c.key], host=c.host, ref=c.ref, copy_of={
        "job": c.job, "attempt": c.attempt, "why": why}) for c, why in said]


def _hosts_and_jobs(config: Config, words: List[str]) -> Tuple[List[str], List[int]]:
    """The hosts and the job numbers among ``jobs``' words: a word naming a host of the
    config is that host (a host may be called 12), else a number is a queued job's."""
    names = {h.name for h in config.hosts}
    hosts: List[str] = []
    numbers: List[int] = []
    for word in words:
        if word not in names and is_job_number(word):
            numbers.append(job_number(word))
        elif "/" in word:  # HOST/JOB: no host has a "/" in its name; say what lists such a job
            raise UsageError("jobs takes hosts and queued jobs' numbers, not %s: a job launched "
                             "directly on a host is listed by fractui jobs HOST and shown by "
                             "fractui logs HOST/JOB" % quoted(word))
        else:
            try:
                config.host(word)
            except ConfigError as err:  # exit 2, naming the config's hosts
                raise ConfigError(config.path, None, "%s, and not a job's number either "
                                  "(fractui jobs 12 shows job 12)" % err.message) from None
            hosts.append(word)
    return hosts, numbers


def _numbered(store: Store, numbers: List[int]) -> Tuple[List[Job], List[JobNotFound]]:
    """The jobs of these numbers the store has, in the order named (each once), and why each
    other is not shown."""
    found: List[Job] = []
    missing: List[JobNotFound] = []
    for number in dict.fromkeys(numbers):
        try:
            found.append(store.get(number))
        except JobNotFound as err:
            missing.append(err)
    return found, missing


def _job_ref(config: Config, ref: str, wait: bool = False
             ) -> Tuple[str, str, str, Optional[Job], Optional[str]]:
    """(label, host, agent job, the queued job or None, its attempt's agent key or None) of a
    queued job's number or of a HOST/JOB. With ``wait`` (logs -f), a job that is still
    waiting or being placed is waited for until it starts, while a scheduler is there to start
    it (none for LOG_WAIT_S: Failed)."""
    if not is_job_number(ref):
        if "/" not in ref:  # (split_job's words name only HOST/JOB: logs takes both)
            raise UsageError("a job is named by its number, as fractui jobs shows it (12), or "
                             "HOST/JOB where it was launched directly on a host (gpu-a/j12), "
                             "not %s" % quoted(ref))
        host, job_id = split_job(ref)
        config.host(host)
        label, key = _read_typed_ref(config, ref, host, job_id)
        return label, host, job_id, None, key
    number = job_number(ref)  # (a word that names no job: exit 2, whether a store is there)
    store, job = _following(number).through(lambda: _readable(config, number)) if wait else \
        _readable(config, number)
    try:
        if wait and job.agent_job is None and job.state in (PENDING, PLACED):
            say("job %d is %s%s; waiting for it to start" % (  # (its why: it may be long)
                job.id, job.state, " (%s)" % job.reason if job.reason else ""))
            job = _started(store, job)
    finally:
        store.close()
    if job.slot is None or job.agent_job is None:
        raise Failed("job %d is %s: it %s%s" % (
            job.id, job.state, "never ran" if job.state in ENDED else "has not run yet",
            " (%s)" % job.reason if job.reason else ""))
    return "job %d" % job.id, job.slot.host, job.agent_job, job, job.key(store.uid)


def _readable(config: Config, number: int) -> Tuple[Store, Job]:
    """The store, open, and its job ``number``, which the user may read (else StoreForbidden,
    the store closed)."""
    store = open_checked_store(config, make=False)
    try:
        job = store.get(number)
        authorize(store, Asker.here(config.teams), READ, job.team, "job %d" % job.id)
    except BaseException:
        store.close()
        raise
    return store, job


def _following(number: int) -> Outage:
    """The wait ``logs -f`` makes on its store through an outage, as it follows job
    ``number``: each of its reads goes through one (store_outage)."""
    return Outage("job %d goes on meanwhile" % number, "following job %d" % number)


def typed_ref(store: Store, ref: str, host: str, agent_job: str,
              reader: Optional[Asker] = None) -> Tuple[str, Optional[str]]:
    """(label, key) of a HOST/JOB typed by hand. While a job of the store runs or stops on
    ``host`` by that id, the id is that job's and is asked by its key: an agent whose state
    dir was wiped since refuses it (JOB_KEY_MISMATCH) rather than show or stop the job that
    holds the id now. Else it is the agent's job of that id, asked by no key: one launched
    there by hand has none the store knows, and a job the store has ended holds its id no
    more (after a wipe, the ids it ran by are the hand-launched jobs' again). The id in any
    spelling its agent takes (``j12``, ``12``, ``012``). With ``reader``, its output is read:
    the rule is asked (READ, access.Denied), of that job's team, or of none (the admin's)
    for the agent's own job, as ``logs JOB`` asks it."""
    held = next((j for j in store.jobs(states=(RUNNING, STOPPING), hosts=[host])
                 if j.agent_job is not None and same_agent_job(agent_job, j.agent_job)), None)
    label = ref if held is None else "%s (job %d)" % (ref, held.id)
    if reader is not None:
        authorize(store, reader, READ, None if held is None else held.team, label)
    return label, None if held is None else held.key(store.uid)


def _read_typed_ref(config: Config, ref: str, host: str, agent_job: str
                    ) -> Tuple[str, Optional[str]]:
    """``typed_ref`` in the config's store, whose rule is asked that this user may read it;
    with no store to ask (none made, said by nothing, or none reached, said: no_store_to_ask)
    the id alone. Any other error of the store is no yes, and raised: a role it refuses
    reads no more than one it lets in (as ``stop HOST/JOB`` is refused)."""
    try:
        store = open_store(config.store.url, make=False, origin=config.store.origin)
        try:
            return typed_ref(store, ref, host, agent_job, Asker.here(config.teams))
        finally:
            store.close()
    except StoreError as err:
        if not no_store_to_ask(err):
            raise
        if err.what != NO_STORE:
            say("%s; %s is read by its id alone" % (err, ref))
        return ref, None


def _started(store: Store, job: Job) -> Job:
    """The job once it has started, or ended waiting: read again each time the store's change
    feed wakes (at least once a second), while a lease holder is there to start it (none for
    LOG_WAIT_S, counted from the store's return where it could not be reached: Failed)."""
    number = job.id
    outage = Outage("job %d goes on meanwhile" % number, "waiting for job %d to start" % number)
    feed = outage.through(store.feed)  # before the read below: a start in between is not missed

    def poll() -> Tuple[Job, bool]:
        feed.wait(1.0)  # (lost, it listens anew at its next wait)
        return store.get(number), store.lease_holder() is not None
    try:
        job, led = outage.through(lambda: (store.get(number), store.lease_holder() is not None))
        alone_since: Optional[float] = None  # no lease holder since: none starts it
        while job.agent_job is None and job.state in (PENDING, PLACED):
            if led:
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - max(alone_since, outage.back_at) > kept_output.LOG_WAIT_S:
                raise Failed("stopped waiting for job %d to start: %s for %.0f s" % (
                    job.id, NO_SCHEDULER, kept_output.LOG_WAIT_S))
            job, led = outage.through(poll)
        return job
    finally:
        feed.close()


def logs(config: Config, args: argparse.Namespace) -> int:
    """The job's output; once it has ended, a last line on stderr says why. A queued job whose
    host this config does not name is read through the store (``_stored_logs``). Ctrl-C or
    SIGTERM (Terminated) stops following, not the job, and says so, wherever it comes: while
    the job waits to start, over SSH or through the store."""
    try:
        return _logs(config, args)
    except KeyboardInterrupt:
        if args.follow:
            say("stopped following; %s" % (
                "job %d goes on (fractui cancel %d cancels it)" % ((int(args.job),) * 2)
                if is_job_number(args.job) else
                "%s goes on (fractui stop %s stops it)" % (args.job, args.job)))
        raise


def _logs(config: Config, args: argparse.Namespace) -> int:
    label, host, job_id, job, key = _job_ref(config, args.job, wait=args.follow)
    while True:
        stored = job is not None and host not in {h.name for h in config.hosts}
        if stored and not args.follow:
            return _stored_logs(config, job, args)  # type: ignore[arg-type]
        ended = _stored_follow(config, job, args) if stored else \
            _output(config, args, label, host, job_id, job, key)  # type: ignore[arg-type]
        if not (args.follow and ended and job is not None):
            break
        now, moved = _following(job.id).through(lambda: _recorded(config, job))
        if now.attempt == job.attempt:  # the attempt's end is the job's
            break
        if now.state in ENDED and now.agent_job is None:  # it ended waiting to run again
            ended = why(now) or now.state
            break
        say("%s %s (%s); following its next attempt" % (
            label, "was moved by hand" if moved else "went back to its queue", ended))
        label, host, job_id, job, key = _job_ref(config, args.job, wait=True)
    if ended:
        say("%s ended: %s" % (label, ended))
    return 0


def _output(config: Config, args: argparse.Namespace, label: str, host: str, job_id: str,
            job: Optional[Job], key: Optional[str]) -> str:
    """Prints the agent job's last lines (with -f, then its output until it ends); why it
    ended, or "" while it runs. Asked by its ``key`` where it is known: an agent that lost
    the job (its state dir wiped) refuses, rather than show another job of that id."""
    fleet = open_fleet(config, [host])
    session = fleet.session(host)
    try:
        chunks: "queue.Queue[Optional[str]]" = queue.Queue()

        def on_log(method: str, params: Dict[str, Any]) -> None:
            # on the session's reader thread: only hand over; stdout is written by this one
            if method == "log" and params.get("job") == job_id:
                chunks.put(None if params.get("eof") else params.get("data", ""))

        session.listeners.append(on_log)
        try:
            first = session.call("job.logs", {"job": job_id, "key": key, "lines": args.lines,
                                              "follow": args.follow})
        except AgentCallError as err:
            if err.code == JOB_KEY_MISMATCH:
                raise Failed(gone_words(label, host, job_id)) from None
            raise
        for line in first["lines"]:
            print(line)
        sys.stdout.flush()
        if _printed_nothing(first, args.lines):
            since = job.started_at if job is not None else session.call(
                "job.get", {"job": job_id, "key": key}).get("started_at")
            say(_nothing(label, host, bool(_ended(session, job_id, key, job)), since,
                         args.follow))
        while args.follow:
            try:
                chunk = chunks.get(timeout=0.5)
            except queue.Empty:
                if session.status.state not in USABLE:
                    raise Failed("%s went %s while following %s" % (
                        host, session.status.state, label)) from None
                continue
            if chunk is None:
                break
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return _ended(session, job_id, key, job)
    finally:
        fleet.stop()


def _recorded(config: Config, job: Job) -> tuple[Job, bool]:
    """The queued job once the store has recorded the end of its attempt that ``logs -f``
    followed: ended, or sent back to its queue (requeued, preempted) or moved by hand as a new
    attempt; and whether it was moved. The lease holder records it after the agent's end, so
    the store is asked until it has, at most LOG_WAIT_S, and only while a lease holder is
    there to record it (else the job as it is)."""
    store = open_checked_store(config)
    feed = store.feed()

    def recorded() -> bool:
        now = store.get(job.id)
        return now.attempt != job.attempt or now.state in ENDED or store.lease_holder() is None

    try:
        kept_output.waited(feed, recorded)
        now = store.get(job.id)
        return now, _left_by(store, job.id)[0] == "moved"
    finally:
        feed.close()
        store.close()


def _stored_logs(config: Config, job: Job, args: argparse.Namespace) -> int:
    """For a user who reaches only the store: the end of the job's output as the lease holder
    keeps it (docs/cli.md). A running job's tail, or an ended one's not yet kept, is asked
    for, and the change feed says when the lease holder answered (at most LOG_WAIT_S)."""
    host = job.slot.host  # type: ignore[union-attr]
    store = open_checked_store(config)
    feed = store.feed()
    try:
        tail, unasked = _latest_tail(store, feed, job)
        job = store.get(job.id)
    finally:
        feed.close()
        store.close()
    lines = tail.text.splitlines()
    for line in lines[len(lines) - args.lines:] if args.lines else []:
        print(line)
    sys.stdout.flush()
    if not tail.text:
        say(_nothing("job %d" % job.id, host, job.state in ENDED, job.started_at))
    if unasked:
        say("warning: %s: this is job %d's output as kept at %s" % (
            unasked, job.id, local_time(tail.kept_at)))
    if job.state in ENDED:
        say("job %d ended: %s" % (job.id, why(job) or job.state))
    return 0


def _latest_tail(store: Store, feed: Feed, job: Job) -> Tuple[LogTail, str]:
    """The job's tail as kept, a fresh one asked for where it is not complete; and why it is
    not fresh ("" where it is). Failed where none is kept at all."""
    unasked = ""
    tail = store.log_tail(job.id)
    fresh = tail is not None and tail.complete
    if not fresh:
        try:
            fresh = _ask_tail(store, feed, job)
        except StoreForbidden as err:  # a role that may only read (or the guard refusing
            # it): what is kept, said so; a role refused at a reconnect is no reader's to pass
            unasked = "%s, so no fresher output was asked for" % err
        unasked = unasked or ("" if fresh else _unanswered(store, job))
        tail = store.log_tail(job.id)
    if tail is None:
        raise Failed("job %d's output is not in the store: %s" % (job.id, unasked))
    return tail, "" if fresh else unasked


def _printed_nothing(answer: Dict[str, Any], lines: int) -> bool:
    """Whether an agent's job.logs answer is of a log still empty: its offset (the log's size)
    says; an older agent's answer, with no offset, by its lines where some were asked for."""
    offset = answer.get("offset")
    return offset == 0 if offset is not None else lines > 0 and not answer["lines"]


def _nothing(label: str, host: str, ended: bool, since: Optional[float],
             follow: bool = False) -> str:
    """What ``logs`` says on stderr of a job that has printed nothing: stdout stays exactly its
    output (a script pipes it), and an empty one reads apart from a ``logs`` that broke."""
    if ended:
        return "%s printed nothing" % label
    return "%s has printed nothing yet (running on %s%s)%s" % (
        label, host, " since %s" % local_time(since) if since is not None else "",
        "; following it" if follow else "")


def _unanswered(store: Store, job: Job) -> str:
    """Why no fresh tail of the job came within LOG_WAIT_S: no lease holder, where the store
    says so (as ``jobs`` and ``logs -f`` of a pending job say it), else one that did not
    answer, with what it may lack."""
    if store.lease_holder() is None:
        return "%s for %.0f s" % (NO_SCHEDULER, kept_output.LOG_WAIT_S)
    return "no scheduler answered within %.0f s (is one running, holding the lease, able to " \
        "reach %s?)" % (kept_output.LOG_WAIT_S, job.slot.host)  # type: ignore[union-attr]


def _stored_follow(config: Config, job: Job, args: argparse.Namespace) -> str:
    """``logs -f`` for a user who reaches only the store: the tail's last lines as ``logs``
    prints them, then, about once a second (FOLLOW_EVERY_S), a fresh tail asked of the lease
    holder, of which exactly the bytes after those printed are printed (its offset says
    where it ends in the log), until the kept tail is complete. Why the attempt followed ended,
    as ``_output`` says it ("" where it goes on)."""
    host = job.slot.host  # type: ignore[union-attr]
    outage = _following(job.id)
    store, feed = _opened(config, outage)
    try:
        tail, unasked = outage.through(lambda: _latest_tail(store, feed, job))
        if not tail.complete and (unasked or tail.offset is None):
            raise Failed("job %d's output cannot be followed through the store: %s" % (
                job.id, unasked or _no_offset(host, job.id)))
        lines = tail.text.splitlines(keepends=True)
        ends_line = _write("".join(lines[len(lines) - args.lines:] if args.lines else []))
        if not tail.text:
            say(_nothing("job %d" % job.id, host, tail.complete, job.started_at, follow=True))
        printed = tail.offset
        asked = time.monotonic()

        def ask() -> Tuple[bool, Job, Optional[LogTail]]:
            """Whether the lease holder answered, the job as it is, and its tail kept."""
            return _ask_tail(store, feed, job), store.get(job.id), store.log_tail(job.id)
        while not tail.complete and printed is not None:
            time.sleep(max(0.0, asked + kept_output.FOLLOW_EVERY_S - time.monotonic()))
            asked = time.monotonic()
            answered, now, kept = outage.through(ask)
            if not answered:
                raise Failed("stopped following job %d: %s" % (
                    job.id, outage.through(lambda: _unanswered(store, job))))
            if now.attempt != job.attempt:  # sent back to its queue: its next attempt
                return outage.through(lambda: _sent_back(store, job.id))
            tail = kept or tail  # (kept: a tail is replaced, never removed)
            if tail.offset is None:  # the agent's lines, or its error, kept instead
                raise Failed("stopped following job %d: %s" % (job.id,
                                                               _no_offset(host, job.id)))
            later = kept_output.after(tail, printed)
            if later.rotated:
                say("job %d's log rotated (its agent starts a new one past half its cap): "
                    "what it wrote before that, past what was printed, is not shown" % job.id)
            if later.missed:
                say("job %d wrote %s more than the store keeps (%d KiB) since the last "
                    "output printed: they are not shown" % (
                        job.id, count(later.missed, "byte"), LOG_TAIL_BYTES // 1024))
            ends_line = _write(later.text) if later.text else ends_line
            printed = tail.offset
        if not ends_line:
            _write("\n")
        now = outage.through(lambda: store.get(job.id))
        return why(now) or now.state
    finally:
        feed.close()
        store.close()


def _opened(config: Config, outage: Outage) -> Tuple[Store, Feed]:
    """The store and its change feed, each opened through ``outage``."""
    store = outage.through(lambda: open_checked_store(config))
    try:
        return store, outage.through(store.feed)
    except BaseException:
        store.close()
        raise


def _sent_back(store: Store, number: int) -> str:
    """Why the job's attempt last left its slot for another, as the audit says (the job's own
    reason may be its next attempt's by now)."""
    return _left_by(store, number)[1] or "sent back"


def _left_by(store: Store, number: int) -> tuple[str, str]:
    """The audit's last entry that began a new attempt of the job after one on a host: its
    action (``requeued``: sent back to its queue; ``moved``: placed by hand where an admin
    moved it) and why; ("", "") if none."""
    last = [e for e in store.audit_log(number) if e.action in ("requeued", "moved")]
    return (last[-1].action, last[-1].why) if last else ("", "")


def _no_offset(host: str, number: int) -> str:
    return "its output is kept with no offset (the agent on %s gave lines, being older than " \
        "job.logs.bytes, or did not give it); fractui logs %d shows what is kept" % (host, number)


def _write(text: str) -> bool:
    """Writes ``text`` to stdout as it is, at once; whether what was written ends a line."""
    sys.stdout.write(text)
    sys.stdout.flush()
    return text.endswith("\n") or not text


def _ask_tail(store: Store, feed: Feed, job: Job) -> bool:
    """Asks the lease holder for the job's tail; whether it kept one within LOG_WAIT_S. The
    feed was opened before: the answer is never missed."""
    store.ask_log(job.id, store.identity().user)
    return kept_output.waited(feed, lambda: job.id not in store.log_requests())


def _ended(session: HostSession, job_id: str, key: Optional[str], job: Optional[Job]) -> str:
    """Why the job ended, or "" if it runs: the agent's record says, or, where the agent no
    longer keeps it, the store."""
    try:
        return agent_why(session.call("job.get", {"job": job_id, "key": key}))
    except AgentCallError:
        if job is not None and job.state in ENDED:
            return why(job)
        raise
