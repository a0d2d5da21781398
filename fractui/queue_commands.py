"""``fractui queues``: each queue a researcher may submit to — the config's ``[[queues]]``,
the only place queues are defined (the store keeps jobs of them, not them) — with what a job
of it gets, where it may run, its jobs waiting and on hosts now and the longest wait, and
whether a host could serve it at all, judged as ``submit`` judges it (fractui.servable), from
the store alone. The counts are the TUI's queue panel's (``sched.standing.queue_stats``)."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

from fractui.checked_store import open_checked_store
from fractui.config import Config, QueueConfig
from fractui.sched.standing import QueueStat, queue_stats
from fractui.servable import Judged, judged
from fractui.store.model import ACTIVE
from fractui.terminal import one_line, own, print_json, say, table, width
from fractui.words import NO_SCHEDULER, duration, failing_passes

HEADER = ("QUEUE", "PORTION", "TEAM", "WAITING", "RUNNING", "LONGEST", "SERVABLE", "ISOLATION",
          "PRIORITY", "WHERE")
CAPS = (24, None, 16, None, None, None, None, None, None)  # the widest each column but the
# last (WHERE) may be: the names; a portion, count, wait or word is never cut (terminal.table)
SERVABLE = {True: "yes", False: "no", None: "unknown"}
NO_QUEUES = ("the config has no [[queues]]: nothing to submit to (an admin's config lists them; "
             "copy its [[queues]] into yours)")
KEYS = tuple(QueueConfig.__dataclass_fields__)  # a record's config keys, each queue's alike


def queues(config: Config, args: argparse.Namespace) -> int:
    """Every configured queue (then any other the store holds active jobs of), read once from
    the store's active jobs and its kept inventory, at the store's time."""
    if not config.queues:  # nothing to read the store for, as teams says of no teams
        say(NO_QUEUES)
        if args.json:
            print_json({"queues": [], "as_of": None, "scheduler": None})
        return 0
    store = open_checked_store(config, hear=False, make=False)
    try:
        now = store.now()
        jobs = store.jobs(ACTIVE)
        kept = store.inventory()
        trouble = store.trouble()
        lease = store.lease_holder()
    finally:
        store.close()
    stats = queue_stats(config.queues, jobs, now)
    said = {q.name: judged(config, q, kept) for q in config.queues}
    if trouble is not None:  # the waits grow while no pass goes through
        say(failing_passes(trouble))
    if lease is None and jobs:
        say(NO_SCHEDULER)
    if args.json:
        print_json({"queues": [_record(s, config, said) for s in stats], "as_of": now,
                    "scheduler": lease[0] if lease else None})
    else:
        for line in lines(stats, config, said):
            print(line)
    return 0


def lines(stats: Sequence[QueueStat], config: Config, said: Dict[str, Judged]) -> List[str]:
    """The table, then a line for each queue not served for sure (why, or why not known)."""
    rows = []
    for s in stats:
        q = _configured(config, s.name)
        rows.append([s.name, s.portion, (q.team or "-") if q else "?", str(s.pending),
                     str(s.running), own(duration(s.wait_s)),
                     SERVABLE[said[s.name].fits] if q else "?",
                     q.isolation if q else "?", str(q.priority) if q else "?",
                     where(q) if q else "?"])
    out = table(HEADER, rows, CAPS, width())
    out += ["%s: %s" % (one_line(s.name), words) for s in stats  # a store's name, as its cell
            for words in [servable_words(s.name, config, said)] if words]
    return out


def where(q: QueueConfig) -> str:
    """The queue's host and GPU-model filters, as the WHERE column says them."""
    parts = (["hosts " + ",".join(q.hosts)] if q.hosts else []) + (
        ["models " + ",".join(q.gpu_models)] if q.gpu_models else [])
    return "; ".join(parts) or "any host"


def servable_words(name: str, config: Config, said: Dict[str, Judged]) -> Optional[str]:
    """Why a queue is not served for sure: no host could ever hold its jobs, whether one
    could is not known yet, or one could only once a pending MIG mode change takes effect;
    None where a host could, so nothing is said."""
    if _configured(config, name) is None:
        return ("not in this config: the store holds active jobs of it, submitted under a "
                "config that had it")
    j = said[name]
    if j.fits is False:
        return "never served: %s%s" % (j.why, j.gone)
    if j.fits is None and j.why is None:
        return ("not known yet: the store keeps no inventory of %s (a scheduler records a "
                "host once it reaches it)%s" % (", ".join(j.unheard) or "any host", j.gone))
    if j.fits is None:
        return "not known: %s; the store keeps nothing of %s, any of which may hold it" % (
            j.why, ", ".join(j.unheard))
    return j.pending or None


def _configured(config: Config, name: str) -> Optional[QueueConfig]:
    return next((q for q in config.queues if q.name == name), None)


def _record(s: QueueStat, config: Config, said: Dict[str, Judged]) -> Dict[str, Any]:
    """A queue as ``queues --json`` prints it (docs/cli.md, JSON output): the config's keys
    (None each but its name for a queue the config lacks), then the store's."""
    q = _configured(config, s.name)
    record: Dict[str, Any] = {k: getattr(q, k) if q else None for k in KEYS}
    record.update(name=s.name, portion=s.portion if q else None, configured=q is not None,
                  waiting=s.pending, running=s.running, longest_wait_s=s.wait_s,
                  servable=said[s.name].fits if q else None,
                  servable_why=servable_words(s.name, config, said))
    return record
