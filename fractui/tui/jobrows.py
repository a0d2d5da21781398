"""The jobs view's rows, as plain data: every store job and every job the agents report that
the store does not know, with where it runs, its memory against its cap, its GPU's
utilisation, how long it has waited or run, and why it waits.

Pure: the store's jobs and the hosts' statuses in, rows out; sorting, filtering and which
columns fit a width are functions of them, so the screen only draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

from fractui.fleet.host import HostStatus
from fractui.sched.copies import judged, unheld
from fractui.sched.fleetview import ACTIVE_AGENT_STATES, USABLE, held_why, seen_state
from fractui.store.model import ENDED, PENDING, Job
from fractui.tui.model import StoreView
from fractui.tui.typed import Clocked
from fractui.words import why


class JobRow(NamedTuple):
    """One job (a named tuple, not a frozen dataclass: a fleet has thousands, made each
    second, and a tuple is made several times faster)."""

    ref: str
    """``12`` for a store job, ``host/j3`` for one the store does not know."""
    job_id: Optional[int]
    name: str
    team: str
    queue: str
    state: str
    where: str
    used_mib: Optional[int]
    cap_mib: Optional[int]
    util: Optional[int]
    """Its GPU's utilisation: NVML reports none per process, nor any for MIG instances."""
    age_s: Optional[float]
    """Pending: how long it has waited; ended: how long since it ended; else how long since
    it started (or was submitted, where it has not started); None where not known: a job
    launched on a host that gave no creation time, or one whose start is not known
    (Job.start_unknown)."""
    reason: str
    image: str = ""
    """The container image it runs in; "" for a bare process (not a column: ``/`` finds it)."""
    user: str = ""
    """Who submitted it; "" for a job launched on a host (or a store row of before)."""

    def text(self) -> str:
        """What the filter matches against."""
        return " ".join((self.ref, self.name, self.team, self.user, self.queue, self.state,
                         self.where, self.reason, self.image))


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int
    """Its width, the reason's least: it takes what the others leave."""
    rank: int
    """Dropped in this order when the width is short: the highest first."""
    sort: Callable[[JobRow], Any]
    """The row's value to sort by; None (unknown) sorts last either way."""


def mib_text(v: Optional[int]) -> str:
    """ "512M", "9.8G", or "—" unknown."""
    return "—" if v is None else "%.1fG" % (v / 1024) if v >= 1024 else "%dM" % v


def memory(row: JobRow) -> str:
    if row.used_mib is None and row.cap_mib is None:
        return "—"
    return "%s/%s" % (mib_text(row.used_mib), mib_text(row.cap_mib))


COLUMNS = (
    Column("id", "id", 6, 0, lambda r: (r.job_id is None, r.job_id or 0, r.ref)),
    Column("name", "name", 12, 2, lambda r: r.name),
    Column("team", "team", 8, 7, lambda r: r.team),
    Column("user", "user", 8, 8, lambda r: r.user or None),
    Column("queue", "queue", 8, 6, lambda r: r.queue),
    Column("state", "state", 9, 1, lambda r: r.state),
    Column("where", "host/GPU/slice", 19, 3, lambda r: r.where),
    Column("memory", "mem used/cap", 13, 9, lambda r: r.used_mib),
    Column("util", "util", 5, 10, lambda r: r.util),
    Column("age", "age/wait", 8, 4, lambda r: r.age_s),
    Column("reason", "reason", 12, 5, lambda r: r.reason),
)


PADDING = 2  # a table cell's padding, a space each side


def fit(width: int) -> list[Column]:
    """The columns that fit ``width`` (with their padding), least useful dropped first."""
    kept = list(COLUMNS)
    while len(kept) > 1 and sum(c.width + PADDING for c in kept) > width:
        kept.remove(max(kept, key=lambda c: c.rank))
    return kept


def sort_rows(rows: Sequence[JobRow], key: str, reverse: bool) -> list[JobRow]:
    column = next(c for c in COLUMNS if c.key == key)
    known = [r for r in rows if column.sort(r) is not None]
    return sorted(known, key=column.sort, reverse=reverse) + [
        r for r in rows if column.sort(r) is None]


def filter_rows(rows: Sequence[JobRow], pattern: Clocked, inverse: bool) -> list[JobRow]:
    return [r for r in rows if pattern.search(r.text()) != inverse]


def connected(status: Optional[HostStatus]) -> bool:
    """Whether what ``status`` holds is how its host is now: what the agent of a host that is
    not connected said is its last word, and its memory and utilisation are not shown as
    live."""
    return status is not None and status.state in USABLE


def gpu_of(status: Optional[HostStatus], index: int) -> Optional[dict]:
    """GPU ``index`` of the host's last snapshot."""
    gpus = ((status.snapshot or {}).get("gpus") or ()) if status else ()
    return next((g for g in gpus if g.get("index") == index), None)


def usage(gpus: Mapping[int, dict], record: Mapping[str, Any]
          ) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """(memory used, memory cap, its GPU's utilisation) of an agent's job record, from its
    host's last snapshot (``gpus`` by index): a MIG job's instance, a share's process and its
    share, a whole GPU's processes and its memory."""
    on = record.get("gpus") or ()
    gpu = gpus.get(on[0]) if on else None
    if gpu is None:
        return None, record.get("memory_mib"), None
    util = gpu.get("utilization_gpu")
    if record.get("instance"):
        inst = next((i for i in gpu.get("instances") or ()
                     if i.get("uuid") == record.get("instance")), None)
        return (None, None, None) if inst is None else (
            inst.get("memory_used_mib"), inst.get("memory_mib"), None)
    procs = [p for p in gpu.get("processes") or () if p.get("pid") == record.get("pid")]
    used = sum(p.get("used_mib") or 0 for p in procs) if procs else None
    return used, record.get("memory_mib") or gpu.get("memory_mib"), util


def _where(job: Job) -> str:
    slot = job.slot
    if slot is None:
        return "queue " + job.queue
    part = ("%s@%s" % (slot.profile, slot.start) if slot.profile and slot.start is not None
            else slot.profile or ("%s share" % mib_text(slot.memory_mib) if slot.memory_mib
                                  else "whole"))
    return "%s/%s/%s" % (slot.host, ",".join(map(str, slot.gpus)), part)


def _reason(job: Job, store: Optional[StoreView]) -> str:
    """The job's reason, a failed one's with its last line where the reader may read it."""
    line = store.last_lines.get(job.id) if store is not None else None
    return why(job, line) if line else job.reason or ""


def job_rows(store: Optional[StoreView], statuses: Mapping[str, HostStatus],
             now: float, ended: bool = False) -> list[JobRow]:
    """Every active store job (``ended``: and the newest ended ones), then every live job an
    agent reports that no store job is."""
    rows = []
    records: dict[tuple[str, str], dict] = {}
    gpus = {host: {g.get("index"): g for g in (status.snapshot or {}).get("gpus") or ()}
            for host, status in statuses.items() if connected(status)}
    for host, status in statuses.items():
        for record in status.jobs.values():
            if record.get("state") in ACTIVE_AGENT_STATES:
                records[(host, record.get("key") or "")] = record
    known = set()
    where = {key: (host, key) for host, key in records}  # a store job's key: on which host
    for job in (store.jobs + ((store.ended or ()) if ended else ())) if store else ():
        record = None
        if store is not None:
            key = job.key(store.uid)
            # a job the store still shows pending (its last read before it was placed and
            # launched, while the store cannot be read) is the agent's job of its key, not
            # another one launched by hand
            found = (job.slot.host, key) if job.slot is not None else where.get(key)
            if found is not None:
                record = records.get(found)
                known.add(found)
        used, cap, util = usage(gpus.get(job.slot.host, {}), record) \
            if record and job.slot else (None, None, None)
        if cap is None and job.slot is not None:
            cap = job.slot.memory_mib
        since = job.waiting_since if job.state == PENDING or job.started_at is None \
            else job.started_at
        if job.state in ENDED:
            since = job.ended_at or job.updated_at
        age = None if job.start_unknown else now - since  # (no run counted from its submit)
        rows.append(JobRow(str(job.id), job.id, job.name, job.team or "—", job.queue,
                           seen_state(job, record), _where(job), used, cap, util, age,
                           "; ".join(w for w in dict.fromkeys(  # (the store's copy of it)
                               (_reason(job, store), held_why(record or {}))) if w),
                           job.image or "", job.user))
    foreign = [(k, r) for k, r in records.items() if k not in known]
    shown = {j.id: j for j in (store.jobs + (store.ended or ()))} if store else {}
    for (host, key), record in sorted(foreign, key=lambda kv: (kv[0][0], str(kv[1].get("id")))):
        used, cap, util = usage(gpus.get(host, {}), record)
        on = ",".join(map(str, record.get("gpus") or ()))
        created = record.get("created_at")
        status = statuses[host]
        # a copy under the store's key, judged by the store's last read here (which may be
        # older than what the host says: copies.judged); else a job launched by hand
        copy = judged(unheld(host, (record,), set(), store.uid), shown, store.stale,
                      store.uid, after=False) if store else []
        what = "; ".join(w for w in (copy[0][1] if copy else "launched on the host, not "
                                     "through the store", held_why(record)) if w)
        rows.append(JobRow("%s/%s" % (host, record.get("id")), None, record.get("name") or "",
                           "—", "—", record.get("state") or "?", "%s/%s" % (host, on),
                           used, cap, util, None if created is None else now - created,
                           "%s%s" % (what, "" if connected(status) else "; its host is %s, "
                                     "so this is what its agent said last" % status.state)))
    return rows
