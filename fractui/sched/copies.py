"""Copies of the store's jobs on the hosts, as their agents list them beside the store: which
the store holds, and what a late copy (a launch that reached its agent after the store moved
past its attempt) held, to charge it. Pure: the scheduler's pass, ``jobs``, ``status`` and the
TUI read the same rules."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from fractui.sched.fleetview import HostView, record_charge
from fractui.store.model import ON_HOST, Job, LateCopy, Sampled, StaleCopy


def held_copies(jobs: List[Job], stale: List[StaleCopy], uid: str) -> Set[Tuple[str, str]]:
    """The copies (host, key) the store holds: each placed, running or stopping job's current
    attempt on its host, and each stale copy (stopped as such)."""
    return {(j.slot.host, j.key(uid)) for j in jobs if j.state in ON_HOST and j.slot} | {
        (c.host, c.key) for c in stale}


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
