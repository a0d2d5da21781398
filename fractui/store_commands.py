"""The verbs that queue work and follow it through the store: submit, cancel, requeue,
preempt, place, audit, and the headless ``scheduler``. Store jobs are named by number; jobs
launched directly on a host by ``host/agent-id`` (fractui/commands.py has those verbs, and
``jobs``, which shows both)."""

from __future__ import annotations

import argparse
import getpass
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, replace
from typing import Any, Dict, List, Optional

from fractui.cli import EXIT_FAILED, UsageError, confirm, print_json
from fractui.config import Config, QueueConfig
from fractui.fleet.fleet import Fleet
from fractui.sched.fleetview import (HostView, build_hosts, facts, idle_view, model_name,
                                     request_of)
from fractui.sched.manual import Unfit, complete
from fractui.sched.place import Placer
from fractui.sched.quota import past_quota, team_usage
from fractui.store import JobNotFound, SqliteStore, open_store
from fractui.store.intents import Refused, ask_stop, place_by_hand
from fractui.store.model import ACTIVE, PENDING, STOPPING, Job, Slot


def actor() -> str:
    return "%s@%s" % (getpass.getuser(), socket.gethostname())


def _store(config: Config) -> SqliteStore:
    return open_store(config.scheduler.store)


def queued(store: SqliteStore, text: str) -> Job:
    if not text.isdigit():
        raise UsageError("a queued job is named by its number (see fractui jobs), not %r; "
                         "jobs launched directly on a host are HOST/JOB" % text)
    try:
        return store.get(int(text))
    except JobNotFound as err:
        raise UsageError(str(err)) from None


def request_record(queue: QueueConfig) -> Dict[str, Any]:
    """A queue's portion as a store job keeps it (the queue's keys, without its name)."""
    record = asdict(queue)
    del record["name"]
    return record


# -- submit: refuse what no GPU could ever hold --

def never_fits(config: Config, store: SqliteStore, request: Dict[str, Any], queue: str,
               inventory: Dict[str, Dict[str, Any]], whole: bool = True) -> Optional[str]:
    """Why no host of ``inventory`` (host -> facts) could hold the request even when idle, or
    None if one could (or if none is known, so nothing can be said). ``whole``: every host the
    queue may use is known, so the reason speaks of the fleet, not only of the hosts heard."""
    if not inventory:
        return None
    idle = [idle_view(name, f) for name, f in sorted(inventory.items())]
    probe = Job(0, queue, None, "probe", ("probe",), request, PENDING, 0.0, 0.0)
    if Placer(build_hosts(idle, [], store.uid), "first-fit").place(request_of(probe)) is not None:
        return None
    kinds: Dict[str, int] = {}
    for view in idle:
        for g in view.gpu_records():
            name = model_name(g.get("name") or "?") + (" (MIG)" if g.get("mig_mode") else "")
            kinds[name] = kinds.get(name, 0) + 1
    fleet = ", ".join("%dx %s" % (n, k) for k, n in sorted(kinds.items())) or "no GPUs"
    cpus = max(int(f.get("cpus") or 0) for f in inventory.values())
    ram = max(int(f.get("memory_mib") or 0) for f in inventory.values()) // 1024
    return ("no GPU %s could ever hold what queue %s asks for (%s, %s); %s %s; at most %d "
            "CPUs and %d GiB RAM on a host" % (
                "in the fleet" if whole else "of the hosts heard from", queue,
                config.queue(queue).describe(), _filters(config.queue(queue)),
                "the fleet has" if whole else "they have", fleet, cpus, ram))


def _filters(q: QueueConfig) -> str:
    parts = ["isolation %s" % q.isolation]
    if q.cpus:
        parts.append("%g CPUs" % q.cpus)
    if q.memory:
        parts.append("%g GiB RAM" % q.memory)
    if q.hosts:
        parts.append("hosts %s" % ",".join(q.hosts))
    if q.gpu_models:
        parts.append("models %s" % ",".join(q.gpu_models))
    return ", ".join(parts)


def _heard_inventory(config: Config, store: SqliteStore) -> Dict[str, Dict[str, Any]]:
    """Asks the fleet (as a scheduler would see it) for every host's facts, keeps those that
    answered in the store, and returns the inventory: fresh where heard, kept where not."""
    with Fleet(config) as fleet:
        fleet.wait_settled(config.ssh.connect_timeout * 2 + 30)
        heard = {s.name: facts(HostView.of(s)) for s in fleet.statuses() if s.hello}
    kept = store.inventory()
    store.keep_inventory(heard, kept)
    return kept


def submit(config: Config, args: argparse.Namespace) -> int:
    if not args.argv:
        raise UsageError("submit needs the program to run after --, e.g. "
                         "fractui submit --queue small -- python train.py")
    queue = config.queue(args.queue)
    team = args.team or queue.team
    if config.teams:
        if team is None:
            raise UsageError("submit needs --team: the config has teams (%s) and queue %s names "
                             "none" % (", ".join(t.name for t in config.teams), queue.name))
        config.team(team)
    elif team is not None:
        raise UsageError("--team %s: the config has no [[teams]]" % team)
    request = request_record(queue)
    store = _store(config)
    try:
        names = [h.name for h in config.hosts]
        may_use = [n for n in names if not queue.hosts or n in queue.hosts]
        known = {n: f for n, f in store.inventory().items() if n in names}
        # What the kept inventory says fits is queued at once, no host reached; a refusal is
        # made only on what the hosts say now (one that does not answer, on what it last said).
        if any(n not in known for n in may_use) or never_fits(config, store, request,
                                                              queue.name, known):
            known = {n: f for n, f in _heard_inventory(config, store).items() if n in names}
            # a host never heard from may be the one that fits: refuse only on a full hearing
            unheard = [n for n in may_use if n not in known]
            why = never_fits(config, store, request, queue.name, known, whole=not unheard)
            if why is not None and not unheard:
                raise UsageError(why)
            if why is not None:
                print("fractui: warning: %s; queued all the same: never heard from %s" % (
                    why, ", ".join(unheard)), file=sys.stderr)
        job = store.submit(queue.name, team, args.name or args.argv[0].rsplit("/", 1)[-1],
                           args.argv, request, actor(), cwd=args.cwd)
    finally:
        store.close()
    if args.json:
        print_json(job.record())
    else:
        print("%d pending in queue %s%s" % (job.id, job.queue, " for team %s" % team
                                            if team else ""))
    return 0


# -- jobs, audit --

def jobs_table(jobs: List[Job], now: float) -> List[str]:
    """Store jobs as ``fractui jobs`` prints them (a * marks a preemptible job)."""
    rows = ["%-6s %-10s %-12s %-10s %-28s %s" % ("JOB", "STATE", "QUEUE", "TEAM", "WHERE",
                                                  "NAME / WHY")]
    for j in jobs:
        where = j.slot.describe() if j.slot else "waiting %ds" % (now - j.submitted_at)
        note = j.name + (" - %s" % j.reason if j.reason else "")
        rows.append("%-6s %-10s %-12s %-10s %-28s %s" % (
            j.id, j.state + ("*" if j.preemptible else ""), j.queue, j.team or "-", where,
            note))
    return rows


def audit(config: Config, args: argparse.Namespace) -> int:
    store = _store(config)
    try:
        job = queued(store, args.job).id if args.job else None
        entries = store.audit_log(job, args.limit)
    finally:
        store.close()
    if args.json:
        print_json({"audit": [e.record() for e in entries]})
        return 0
    for e in entries:
        print("%s  %-24s %-10s %-5s %s" % (time.strftime("%Y-%m-%d %H:%M:%S",
                                                         time.localtime(e.time)),
                                           e.actor, e.action, "" if e.job is None else e.job,
                                           e.why))
    return 0


# -- cancel, requeue, place: decisions the lease holder carries out --

def cancel(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "cancel", "cancelled by %s" % actor())


def requeue(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "requeue", "requeued by %s" % actor())


def preempt(config: Config, args: argparse.Namespace) -> int:
    return _stop_or_not(config, args.job, "preempt", "preempted by %s" % actor())


def _stop_or_not(config: Config, ref: str, intent: str, why: str) -> int:
    store = _store(config)
    try:
        job = ask_stop(store, queued(store, ref), intent, actor(), why)
    except Refused as err:
        raise UsageError(str(err)) from None
    finally:
        store.close()
    print("%d %s%s" % (job.id, job.state, " (the scheduler stops it)"
                       if job.state == STOPPING else ""))
    return 0


def place(config: Config, args: argparse.Namespace) -> int:
    """A manual placement, recorded as a decision; the lease holder launches it exactly there
    (what the decision leaves open, it completes from the live GPU). One that takes the job's
    team past its quota is said and asked about (``--over-quota`` agrees in advance), and is
    then recorded as borrowed: preemptible like any over-quota job."""
    if args.start is not None and args.profile is None:
        raise UsageError("--start goes with --profile")
    if args.layout_version is not None and args.start is None:
        raise UsageError("--layout-version goes with --profile and --start (a previewed plan)")
    config.host(args.host)
    if not args.gpu.isdigit():
        raise UsageError("GPU is an index here, not %r" % args.gpu)
    store = _store(config)
    try:
        job = queued(store, args.job)
        if job.state != PENDING:
            raise UsageError("only a pending job can be placed: job %d is %s" % (job.id,
                                                                                 job.state))
        known = store.inventory().get(args.host) or _heard_inventory(config, store).get(
            args.host)
        if known is None:
            print("fractui: %s was never heard from: its GPUs are unknown, so what placing job "
                  "%d there would charge cannot be counted (fractui status says why)" % (
                      args.host, job.id), file=sys.stderr)
            return EXIT_FAILED
        slot = hand_slot(job, Slot(args.host, (int(args.gpu),), args.profile, args.start,
                                   layout_version=args.layout_version), known, store.uid)
        usage = {u.name: u for u in team_usage(store.jobs(ACTIVE), config.teams)}
        past = past_quota(usage, job.team, slot.charge)
        if past is not None:
            print("fractui: job %d on %s %s." % (job.id, slot.describe(), past),
                  file=sys.stderr, flush=True)
            if not (args.over_quota or confirm("Place it anyway, as a borrowed job that a "
                                               "team within its quota may preempt?")):
                print("fractui: not placed: job %d stays pending" % job.id, file=sys.stderr)
                return EXIT_FAILED
        job = place_by_hand(store, job, slot, actor(), past)
    except Refused as err:
        raise UsageError(str(err)) from None
    finally:
        store.close()
    print("%d placed on %s; the scheduler launches it%s" % (
        job.id, slot.describe(), " (borrowed: preemptible)" if job.preemptible else ""))
    return 0


def hand_slot(job: Job, slot: Slot, host_facts: Dict[str, Any], store_uid: str) -> Slot:
    """The slot a placement by hand asks for, checked against what the host could hold (its
    facts, fractui.sched.fleetview.facts) and charged as its launch will charge it; what it
    leaves open stays open, for the launch to complete from the live GPU."""
    try:
        done = complete(replace(job, slot=slot), idle_view(slot.host, host_facts), store_uid,
                        [])
    except Unfit as err:
        raise UsageError(str(err)) from None
    return replace(slot, charge=done.charge)


# -- the headless scheduler --

def scheduler(config: Config, args: argparse.Namespace) -> int:
    from fractui.scheduler import Scheduler

    if not config.queues:
        raise UsageError("the config has no [[queues]]: there is nothing to schedule")
    store = _store(config)
    done = threading.Event()
    box: List[Scheduler] = []
    fleet = Fleet(config, on_change=lambda _status: box and box[0].wake())
    sched = Scheduler(config, store, fleet, name=args.name, on_fatal=done.set)
    box.append(sched)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    fleet.start()
    sched.start()
    print("scheduler %s: store %s, %d hosts, %d queues" % (
        sched.holder, store.path, len(config.hosts), len(config.queues)), flush=True)
    try:
        done.wait()
    finally:
        sched.stop(release=sched.fatal is None)
        fleet.stop()
        store.close()
    if sched.fatal is not None:
        raise sched.fatal  # said by the command's caller, with the store's path: exit 1
    return 0

