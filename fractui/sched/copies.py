"""Copies of the store's jobs on the hosts, as their agents list them beside the store: which
the store holds, which it does not (a late copy: a launch that reached its agent after the
store moved past its attempt; a stale copy of a lost host's job; or a copy of a job the store
does not have), what each is in words (``judged``), and what a late copy held, to charge it.
Pure: the scheduler's pass, ``jobs``, ``status`` and the TUI read the same rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from fractui.sched.fleetview import ACTIVE_AGENT_STATES, HostView, record_charge
from fractui.store.model import (ENDED, ON_HOST, Job, LateCopy, Sampled, StaleCopy,
                                 attempt_of)


LATE, STALE, LEFT = "late", "stale", "left"
COPY_KINDS = (LATE, STALE, LEFT)
"""What a live copy the store does not hold is, as the lease holder's pass finds it (and the
metrics count it): of an attempt the store moved past (killed), a stale copy (stopped), or
one the store has no later word of (left running for an admin)."""


@dataclass(frozen=True)
class Unheld:
    """A live agent job under this store's key that no job of the store holds on its host:
    the copy of ``job``'s ``attempt`` that its agent calls ``agent_job``."""

    host: str
    agent_job: str
    key: str
    job: int
    attempt: int

    @property
    def ref(self) -> str:
        """How ``jobs`` and ``stop`` name it: ``host/j3``."""
        return "%s/%s" % (self.host, self.agent_job)

    def describe(self, job: Optional[Job], read: bool = True,
                 stale: Optional[StaleCopy] = None, after: bool = True) -> str:
        """What it is and what becomes of it, by the store's ``job`` of its number (None: the
        store has none; with ``read`` False, the reader did not read it) and its ``stale``
        copy record, if any; ``after``: whether that read was made after the hosts answered
        (``judged``)."""
        if stale is not None:
            return "a stale copy of job %d's attempt %d: %s was lost while it ran and the " \
                   "job went on without it; the lease holder stops it once it reaches %s " \
                   "again" % (self.job, self.attempt, self.host, self.host)
        past = moved_past(job, self.attempt) if job is not None else None
        if past is not None:
            return "a late copy of job %d's attempt %d (%s): the lease holder kills it" % (
                self.job, self.attempt, past)
        if job is None and not read:
            return "a copy of job %d's attempt %d that no active job of the store holds: " \
                   "a late one is killed by the lease holder, any other left running " \
                   "(fractui jobs %d says which)" % (self.job, self.attempt, self.job)
        if job is not None and job.attempt < self.attempt and not after:
            return "a copy of job %d's attempt %d, an attempt the store had not reached " \
                   "when last read here: launched since, it is the job's own once the " \
                   "store is read again (fractui jobs %d says)" % (
                       self.job, self.attempt, self.job)
        if job is None:
            what = "a job this store does not have (a store restored from an older " \
                   "backup, or another fractui store of the same id)"
        else:
            what = "which the store has %s" % ("on %s" % job.slot.host if job.slot else
                                              "nowhere (%s)" % job.state)
        return "a copy of job %d's attempt %d, %s: left running, its GPU charged to no " \
               "team; fractui stop %s stops it" % (self.job, self.attempt, what, self.ref)


def unheld(host: str, records: Iterable[Mapping[str, Any]], held: Set[Tuple[str, str]],
           uid: str) -> List[Unheld]:
    """The live agent jobs of ``host`` under this store's key (``uid``) that are not among
    ``held`` (``held_copies``), by agent job id."""
    found = []
    for rec in records:
        key = rec.get("key")
        named = attempt_of(key, uid) if isinstance(key, str) else None
        if named is None or (host, key) in held or rec.get("state") not in ACTIVE_AGENT_STATES:
            continue
        found.append(Unheld(host, str(rec.get("id")), str(key), named[0], named[1]))
    return sorted(found, key=lambda u: (u.host, u.job, u.attempt, u.agent_job))


def moved_past(job: Job, attempt: int) -> Optional[str]:
    """How the store has moved past ``job``'s ``attempt`` (in words), or None where it has
    not: the attempt is the job's current one and the job has not ended."""
    if job.attempt > attempt:
        return "the job runs as attempt %d" % job.attempt if job.state in ON_HOST else \
            "the job is at attempt %d (%s)" % (job.attempt, job.state)
    if job.state in ENDED:
        return "the job is %s" % job.state
    return None


def held_copies(jobs: List[Job], stale: List[StaleCopy], uid: str) -> Set[Tuple[str, str]]:
    """The copies (host, key) the store holds: each placed, running or stopping job's current
    attempt on its host, and each stale copy (stopped as such)."""
    return {(j.slot.host, j.key(uid)) for j in jobs if j.state in ON_HOST and j.slot} | {
        (c.host, c.key) for c in stale}


def judged(copies: Iterable[Unheld], jobs: Mapping[int, Optional[Job]],
           stale: Iterable[StaleCopy], uid: str, after: bool) -> List[Tuple[Unheld, str]]:
    """The one rule by which ``jobs``, ``status`` and the TUI say what a copy is. ``copies``
    were found unheld (``unheld``) by a read of the store made before the hosts answered;
    ``jobs`` (their jobs by number, None where the store has none; a number absent: not
    read) and ``stale`` are the store's word to judge them by, read ``after`` the hosts
    answered or not. A copy that word holds is its job's own (launched, or moved there,
    since the first read) and is left out; each other comes with what it is. A copy the
    first read held is never here: what became of it since (it stopped with its grace, its
    job moved on) is told by a later look, never guessed from a host's older word."""
    held = held_copies([j for j in jobs.values() if j is not None], [], uid)
    by_key = {(c.host, c.key): c for c in stale}
    return [(c, c.describe(jobs.get(c.job), c.job in jobs, by_key.get((c.host, c.key)),
                           after))
            for c in copies if (c.host, c.key) not in held]


def late_copy(view: HostView, job: int, attempt: int, rec: Dict[str, Any]) -> Optional[LateCopy]:
    """What a late copy of ``job``'s ``attempt`` held on ``view``'s host, as its ended agent
    record says: None where it never started (it held nothing) or the record is not whole."""
    started, ended = rec.get("started_at"), rec.get("ended_at")
    gpus = rec.get("gpus")
    if not (_number(started) and _number(ended) and isinstance(gpus, list) and gpus and
            all(isinstance(g, int) and not isinstance(g, bool) for g in gpus)):
        return None
    records = view.gpu_records()
    if any(not 0 <= g < len(records) for g in gpus):
        return None
    mig = rec.get("mig")
    profile = mig.get("profile") if isinstance(mig, dict) else None
    profile = profile if isinstance(profile, str) else None
    mib = rec.get("memory_mib") if _number(rec.get("memory_mib")) else None
    share = None if profile or mib is None else int(mib)
    return LateCopy(job, attempt, view.name, tuple(gpus), view.model(gpus), profile, share,
                    record_charge(records, gpus, profile, share), float(started),
                    max(float(started), float(ended)), Sampled.of(rec.get("usage")) or Sampled())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
