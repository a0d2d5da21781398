"""Hosts and GPUs out of service (the store's cordons) as placement, launches and the screens see
them. Pure: cordons and jobs in, hosts and words out.

A cordon or a drain keeps new work off: no placement there, and no launch of a decision made
before it. What already runs there runs on. A drain is said ``drained`` once no job of the
store is left on it (placed, running or stopping there), so an admin knows when to start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, List, Optional, Sequence

from fractui.sched.model import Gpu, Host
from fractui.store.model import CORDON, Cordon, Job
from fractui.words import count, first_of

CORDONED, DRAINING, DRAINED = "cordoned", "draining", "drained"
STATES = (CORDONED, DRAINING, DRAINED)


def holds(cordon: Cordon, job: Job) -> bool:
    """Whether ``job`` holds room on what ``cordon`` took out of service (on its host, or its
    GPU): where it is, or where it moves (``Job.holding``), so a drain of a move's target is
    draining while the job stops to move there. Once it has stopped, its launch finds the
    target drained and sends it back to its queue (Scheduler._unplace): it never runs there."""
    return any(h.slot.host == cordon.host and (  # type: ignore[union-attr]
        cordon.gpu is None or cordon.gpu in h.slot.gpus)  # type: ignore[union-attr]
        for h in job.holding())


def state(cordon: Cordon, jobs: Iterable[Job]) -> str:
    """cordoned; or, for a drain, draining while a job is on it and drained once none is."""
    if cordon.mode == CORDON:
        return CORDONED
    return DRAINING if any(holds(cordon, j) for j in jobs) else DRAINED


def covering(cordons: Iterable[Cordon], host: str, gpus: Sequence[int] = ()
             ) -> Optional[Cordon]:
    """The cordon that keeps new work off ``host``'s GPUs ``gpus`` (or off the host, with no
    GPU named), the host's own first; None if they are in service."""
    found = [c for c in cordons if c.host == host and (c.gpu is None or c.gpu in gpus)]
    return min(found, key=lambda c: -1 if c.gpu is None else c.gpu, default=None)


def host_out(cordons: Iterable[Cordon], jobs: Iterable[Job], host: str) -> Optional[str]:
    """How ``host`` is out of service as a whole (its ``state``: cordoned, draining, drained),
    or None: what still holds a GPU of it out once the GPU's own cordon is lifted."""
    c = covering(cordons, host)
    return None if c is None else state(c, jobs)


def made_said(made: Cordon, jobs: Iterable[Job], told_by: str) -> str:
    """A cordon or drain just recorded, in words: its ``state`` as every view shows it (an
    empty host's drain is drained at once), and the store's jobs on it; ``told_by`` says
    where a draining one is seen drained. One wording for the CLI and the TUI."""
    on_it = [j for j in jobs if holds(made, j)]
    shown = first_of(["job %d" % j.id for j in on_it], 5)
    return "%s %s: the scheduler places and launches nothing new there; %s" % (
        made.where(), state(made, on_it), "what runs there runs on (%s)%s" % (
            shown, "; %s says drained once it has ended" % told_by if made.mode != CORDON
            else "") if on_it else "nothing runs there")


def refusal(cordons: Iterable[Cordon], jobs: Iterable[Job], host: str, gpus: Sequence[int] = ()
            ) -> Optional[str]:
    """Why nothing new may go on ``host``'s GPUs ``gpus``, or None if it may: the cordon in
    its ``state`` by the store's ``jobs``, as the map says it."""
    c = covering(cordons, host, gpus)
    if c is None:
        return None
    return "%s is %s (by %s): it takes no new work until an admin uncordons it (fractui " \
           "uncordon %s%s)" % (c.where(), state(c, jobs), c.actor, c.host,
                               "" if c.gpu is None else " %d" % c.gpu)


def fenced(hosts: Sequence[Host], cordons: Sequence[Cordon]) -> List[Host]:
    """The placement core's fleet without what is out of service: a cordoned host left out,
    a cordoned GPU kept in its place (indexes stay) with nothing to give."""
    if not cordons:
        return list(hosts)
    whole = {c.host for c in cordons if c.gpu is None}
    gpus = {(c.host, c.gpu) for c in cordons if c.gpu is not None}
    out = []
    for host in hosts:
        if host.name in whole:
            continue
        if any((host.name, i) in gpus for i in range(len(host.gpus))):
            host = replace(host, gpus=[Gpu(g.model, g.memory_mib, free_milli=0)
                                       if (host.name, i) in gpus else g
                                       for i, g in enumerate(host.gpus)])
        out.append(host)
    return out


def marks(cordons: Sequence[Cordon], jobs: Sequence[Job]
          ) -> dict[tuple[str, Optional[int]], str]:
    """(host, GPU index or None for the host) -> its state, for what is out of service."""
    return {(c.host, c.gpu): state(c, jobs) for c in cordons}


def finished(before: dict[tuple[str, Optional[int]], str],
             now: dict[tuple[str, Optional[int]], str]) -> list[tuple[str, Optional[int]]]:
    """The drains ``marks`` said draining in one read and drained in the next: where the last
    job ended (or left) and maintenance may start, told once, as the reads see it happen."""
    return [k for k, s in now.items() if s == DRAINED and before.get(k) == DRAINING]


def gpu_service(cordons: Sequence[Cordon], jobs: Sequence[Job], host: str, index: int
                ) -> Optional[str]:
    """How GPU ``index`` of ``host`` is out of service, in words: "cordoned" (its own
    cordon), "host draining" (its host's), or both, "cordoned, host draining"; None in
    service. Both are said where both hold: each keeps work off, and each is lifted apart
    (the GPU's own, the host's by U on the map). One wording for every line that says it,
    short enough for a free row's cell at 80 columns."""
    marked = marks(cordons, jobs)
    own, whole = marked.get((host, index)), marked.get((host, None))
    words = ([own] if own else []) + (["host " + whole] if whole else [])
    return ", ".join(words) or None


def summary(cordons: Sequence[Cordon], jobs: Sequence[Job], apart: bool = True) -> list[str]:
    """What is out of service, for a header: a part per state there is, hosts and GPUs apart
    in it ("1 host drained", "1 host, 2 GPUs cordoned"; three parts at most, a header's line
    at 80 columns). A host's cordon counts once, as its host (its GPUs are not counted
    again); a GPU by its own cordon. Not ``apart``: the cordons in each state alone ("3
    cordoned"), for a header with no room for more."""
    counts: dict[tuple[str, str], int] = {}
    for c in cordons:
        key = (state(c, jobs), ("host" if c.gpu is None else "GPU") if apart else "")
        counts[key] = counts.get(key, 0) + 1
    parts = [(s, [count(counts[(s, what)], what) if what else str(counts[(s, what)])
                  for what in ("host", "GPU", "") if (s, what) in counts]) for s in STATES]
    return ["%s %s" % (", ".join(some), s) for s, some in parts if some]
