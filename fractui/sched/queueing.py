"""One scheduling pass: pending jobs, the live fleet and the teams in; decisions out. Pure.

Order of service (DESIGN, issue 7): jobs whose team stays within its quota come first, the team
furthest below its weighted share first (what it holds now, blended with its recent usage where
[fairshare] says: ``Recent``); then over-quota jobs of teams allowed to borrow, which
take only idle capacity and are marked preemptible. A within-quota job that finds no room may
preempt borrowed jobs — the fewest, newest first — when nothing else frees room: never while a
stop is already in flight, since that room is coming. Hosts and GPUs out of service (cordoned
or draining, fractui.sched.cordons) take nothing new, and no preemption makes room on them.

Within a team, a job that has waited past ``Reserve.after_s`` (config ``reserve_after_s``) for
its team's quota or for room holds the quota it needs (``Hold``), and where it found no room,
the host where most is free for it: the team's jobs after it in the pass's order take only the
quota left beside it, off that host, so a stream of small jobs cannot backfill every bit of
room that frees up ahead of a big one. Other teams are not held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import (AbstractSet, Callable, Deque, Dict, FrozenSet, Iterator, List, Mapping,
                    Optional, Sequence, Set, Tuple)

from fractui.config import QueueConfig, TeamConfig
from fractui.sched.cordons import fenced
from fractui.sched.fleetview import (USABLE, HostCache, HostView, build_hosts, outside_use,
                                     placement_charge, request_of, share_mib)
from fractui.sched.mig import profile_for
from fractui.sched.model import Host, Placement, Request
from fractui.sched.place import Memos, Placer, takes_idle, typical_classes
from fractui.sched.quota import (EPSILON, Recent, TeamUsage, fair_order, fair_rank,
                                 gpu_charge, past_quota_jobs, team_usage, within_quota)
from fractui.store.model import (PENDING, RUNNING, STOPPING, Cordon, Hold, Job, Slot,
                                 start_order)
from fractui.words import count, duration, first_of, gib

POLICY = "fractui"
PREEMPT_CANDIDATES = 4  # starved jobs a pass tries to make room for (each costs a few plans)


@dataclass(frozen=True)
class Decision:
    job: int
    slot: Slot
    preemptible: bool
    why: str


@dataclass(frozen=True)
class Preemption:
    victim: int
    for_job: int
    why: str


@dataclass(frozen=True)
class Reserve:
    """When a waiting job holds its team's quota (config ``reserve_after_s``): once it has
    waited ``after_s`` (0: never), read at ``now`` by the store's clock, which dated the
    wait's start (``Job.waited``, as ``fractui teams`` and the metrics read it): a lease
    holder's own clock an hour ahead held a job submitted a moment ago at once."""

    after_s: float = 0.0
    now: float = 0.0

    def due(self, jobs: Sequence[Job]) -> FrozenSet[int]:
        """The pending jobs that have waited long enough to hold room: what a pass compares
        (not ``now``, which changes every pass)."""
        if self.after_s <= 0:
            return frozenset()
        return frozenset(j.id for j in jobs if j.state == PENDING
                         and j.waited(self.now) >= self.after_s)


@dataclass
class Kept:
    """What a scheduler keeps from one pass to the next, so a pass rebuilds and rescores only
    what changed: the hosts as built, the placer's scores (valid while the mix of waiting
    requests is the same), and the last pass's inputs and result (the same inputs decide the
    same: a pass with nothing new is a comparison)."""

    hosts: HostCache = field(default_factory=HostCache)
    memos: Memos = field(default_factory=Memos)
    last: Optional[Tuple[tuple, "PassResult"]] = None


@dataclass
class PassResult:
    decisions: List[Decision] = field(default_factory=list)
    preemptions: List[Preemption] = field(default_factory=list)
    waiting: Dict[int, str] = field(default_factory=dict)  # job -> why it still waits
    held: Dict[str, Hold] = field(default_factory=dict)  # team -> what it holds for a job


def slot_of(p: Placement, req: Request, placer: Placer) -> Slot:
    """The store's slot for a placement of ``req``: GPUs, the MIG profile and start or the
    share in MiB, and the charge."""
    host = placer.hosts[p.host_index]
    profiles = tuple(plan.profile.name if plan else None for plan in p.plans)
    profile = next((x for x in profiles if x), None)
    start = next((plan.start for plan in p.plans if plan), None)
    memory = None
    if profile is None and p.gpus:
        memory = share_mib(req, host.gpus[p.gpus[0]].memory_mib, p.milli[0])
    return Slot(host.name, tuple(p.gpus), profile, start, memory,
                placement_charge(host, p.gpus, profile, memory))


def schedule(views: Sequence[HostView], jobs: Sequence[Job], queues: Sequence[QueueConfig],
             teams: Sequence[TeamConfig], store_uid: str,
             refused: Optional[Dict[int, Tuple[str, ...]]] = None,
             kept: Optional[Kept] = None, cordons: Sequence[Cordon] = (),
             recent: Recent = Recent(), reserve: Reserve = Reserve()) -> PassResult:
    """Decide where pending jobs go now. ``refused``: hosts that refused a job lately (its
    launch failed there), left out for it so it does not bounce off the same host. ``kept``:
    what earlier passes built and scored, kept by the caller. ``cordons``: hosts and GPUs
    that take no new work. ``recent``: the teams' recent usage, for fair share over time.
    ``reserve``: after how long a waiting job holds its team's quota for itself."""
    cordons = tuple(cordons)
    due = reserve.due(jobs)
    if kept is None:
        return _pass(views, jobs, queues, teams, store_uid, refused or {}, cordons,
                     lambda: build_hosts(views, jobs, store_uid), None, recent,
                     (reserve.after_s, due))
    changed = kept.hosts.update(views, jobs, store_uid)
    # jobs the caller read once compare by identity, one by one: thousands cost microseconds;
    # the hosts' states too, as why a job waits names those it cannot reach (_none_reachable)
    inputs = (list(jobs), tuple(queues), tuple(teams), store_uid, dict(refused or {}),
              cordons, recent, [(v.name, v.state) for v in views], reserve.after_s, due)
    if not changed and kept.last is not None and kept.last[0] == inputs:
        return kept.last[1]
    result = _pass(views, jobs, queues, teams, store_uid, refused or {}, cordons,
                   kept.hosts.copies, kept.memos, recent, (reserve.after_s, due))
    kept.last = (inputs, result)
    return result


def _pass(views: Sequence[HostView], jobs: Sequence[Job], queues: Sequence[QueueConfig],
          teams: Sequence[TeamConfig], store_uid: str, refused: Dict[int, Tuple[str, ...]],
          cordons: Tuple[Cordon, ...], hosts_now: Callable[[], List[Host]],
          memos: Optional[Memos], recent: Recent,
          reserving: Tuple[float, FrozenSet[int]] = (0.0, frozenset())) -> PassResult:
    """``schedule``'s pass itself, on the hosts ``hosts_now`` builds (only once a job waits).
    ``reserving``: the bound on a wait, and the jobs past it (``Reserve.due``)."""
    result = PassResult()
    priority = {q.name: q.priority for q in queues}
    pending = []
    for job in (j for j in jobs if j.state == PENDING):
        if job.queue in priority:
            pending.append(job)
        else:  # an admin took the queue away: its jobs start no more, and say why
            result.waiting[job.id] = "queue %s is no longer in the config: it waits for the " \
                                     "queue to come back, or to be cancelled" % job.queue
    if not pending:
        return result
    usage = {u.name: u for u in team_usage(jobs, teams, dict(recent.gpus))}
    built = hosts_now()
    hosts = fenced(built, cordons)
    requests = {j.id: request_of(j) for j in pending}  # made once: a pass may see thousands
    classes = typical_classes(list(requests.values()))
    placer = Placer(hosts, POLICY, classes, memos=memos)
    names = {h.name for h in hosts}
    containers = container_hosts(views)
    reachable = {h.name for h in built}
    # why a job waits, once per set of hosts (and size): thousands of jobs each looking
    # through the whole fleet (1,250 hosts at 10,000 GPUs) added a second to a pass
    none_reachable = cache(partial(_none_reachable, views=views, reachable=reachable))
    beyond_hosts = cache(partial(_beyond_hosts, hosts=built))

    after_s, due = reserving
    held = result.held  # team -> the quota (and room) it holds for one of its jobs

    def attempt(job: Job, req: Optional[Request] = None,
                beside_held: bool = True) -> Optional[Placement]:
        """The best placement of ``job`` (or of ``req``, a variant of its request), off the
        hosts that refused it lately, and, ``beside_held``, off a host its team holds room on
        for another of its jobs."""
        req = req or requests[job.id]
        avoid = set(refused.get(job.id, ()))
        h = held.get(job.team) if job.team is not None and beside_held else None
        if h is not None and h.host is not None and h.job != job.id:
            avoid.add(h.host)
        if avoid or job.image:
            allowed = (req.hosts or frozenset(names)) - avoid
            if job.image:  # a container job only where a runtime can run it
                allowed &= containers
            req = _with_hosts(req, allowed)
            if not allowed:
                return None
        return placer.place(req)

    borrowers: List[Job] = []
    starved: List[Job] = []
    outside: Optional[List[Tuple[str, int, int]]] = None  # read once, for the first that waits

    def hold(job: Job, team: Optional[TeamUsage], charge: Optional[float],
             no_room: bool = False) -> str:
        """Holds ``team``'s quota for ``job``, which waits, where it has waited past the bound
        and could fit the whole quota (one that never can holds nothing: it says so on its
        own), and, where it found ``no_room``, the host where most is free for it; the words
        its reason gets ("" where it holds nothing)."""
        if team is None or job.id not in due or team.name in held or charge is None or \
                charge > team.quota + EPSILON:
            return ""
        host = _roomiest(requests[job.id], placer.hosts, containers if job.image else None,
                         _drains(views, jobs, store_uid, job, cordons)) \
            if no_room else None
        held[team.name] = Hold(job.id, charge, host)
        return "; %.2f of the team's quota%s is held for it (waiting over %s), so the " \
               "team's later jobs take only what is left beside it" % (
                   charge, " and its room on %s" % host if host else "", duration(after_s))

    def not_room(job: Job) -> Optional[str]:
        """Why ``job`` waits for something that no room freeing up brings (a container runtime,
        hosts that refused it, CPUs or RAM no host has, hosts not reached), or None: such a job
        holds nothing."""
        avoided = refused.get(job.id)
        if job.image and not (requests[job.id].hosts or names) & containers:
            return "it runs in a container (image %s), and no host it may use has a container " \
                "runtime (podman, docker or apptainer: fractui doctor says why each is " \
                "missing)" % job.image
        if avoided:
            return "no room outside the hosts that refused it lately (%s)" % ", ".join(avoided)
        return beyond_hosts(*_size(requests[job.id])) or none_reachable(requests[job.id].hosts)

    for job in _fair(pending, lambda: usage, priority, recent.usage_weight):
        p = attempt(job)
        if p is None:
            team = usage.get(job.team) if job.team else None
            if usage and team is None:  # a team the config does not have: no quota at all
                result.waiting[job.id] = _at_quota(job.team, None)
            elif team is not None and team.room() <= EPSILON and requests[job.id].gpu_count:
                # (a CPU-only job charges no GPU: its team's quota is never what it waits for)
                result.waiting[job.id] = _at_quota(job.team, team) + (
                    "" if not_room(job) else hold(
                        job, team, _least_charge(requests[job.id], placer.hosts)))
            elif team is not None and team.name in held and held[team.name].host and \
                    attempt(job, beside_held=False) is not None:
                result.waiting[job.id] = _room_held_for(team, held[team.name], after_s)
            elif (other := not_room(job)) is not None:
                result.waiting[job.id] = other
            else:
                if outside is None:
                    outside = outside_use(views)
                least = _least_charge(requests[job.id], placer.hosts)
                result.waiting[job.id] = _no_room(requests[job.id], cordons,
                                                  outside) + hold(job, team, least,
                                                                  no_room=True)
                # (only a job its team's quota affords may preempt: one past it would not
                # take the room, and ranked first it would keep the jobs that can from trying;
                # a CPU-only job charges nothing, and may preempt for CPUs and RAM)
                charge = least if requests[job.id].gpu_count else 0.0
                if charge is not None and _affords(usage, held, job, charge):
                    starved.append(job)
            continue
        slot = slot_of(p, requests[job.id], placer)
        team = usage.get(job.team) if job.team else None
        affords = partial(_affords, usage, held, job)
        if team is not None and not affords(slot.charge) and \
                team.room() > EPSILON:  # what the team may still take: a cheaper slot?
            cheaper = _within_room(requests[job.id], p, placer, lambda r: attempt(job, r),
                                   affords)
            if cheaper is not None:
                p, slot = cheaper
        if not affords(slot.charge):
            if team is not None and team.over_quota:
                borrowers.append(job)
            if within_quota(usage, job.team, slot.charge):  # but for what is held
                result.waiting[job.id] = _held_for(team, held[team.name], after_s,  # type: ignore
                                                   slot.charge)
            else:
                result.waiting[job.id] = _at_quota(job.team, team, slot) + hold(
                    job, team, slot.charge)
            continue
        placer.commit(p)
        usage = _charged(usage, job.team, slot.charge, borrowed=False)
        result.decisions.append(Decision(job.id, slot, False,
                                         "within quota" if usage else "placed"))
        result.waiting.pop(job.id, None)
    for job in sorted(borrowers, key=lambda j: (-priority.get(j.queue, 0), j.submitted_at)):
        p = attempt(job)
        if p is None:
            continue
        slot = slot_of(p, requests[job.id], placer)
        placer.commit(p)
        usage = _charged(usage, job.team, slot.charge, borrowed=True)
        result.decisions.append(Decision(job.id, slot, True, "over quota: borrows idle "
                                         "capacity, preemptible"))
        result.waiting.pop(job.id, None)
    # (a preemption's stop under way makes room: none more until it has; a cancel may have
    # taken that stop over, and makes the same room. Not on a host that does not answer: its
    # room is none a job can take, and its stop waits for the host, or host_lost_s)
    usable = {v.name for v in views if v.state in USABLE}
    if starved and not any(j.state == STOPPING and j.stop_intent in ("preempt", "cancel")
                           and j.slot is not None and j.slot.host in usable for j in jobs):
        result.preemptions = _preempt(views, jobs, store_uid, starved, usage, held,
                                       cordons, containers, teams)
    return result


def borrowed(job: Job, usage: Dict[str, TeamUsage], past: AbstractSet[int]) -> bool:
    """Whether a running job holds capacity beyond a quota, so a team within its quota may
    preempt it: an over-quota job (the scheduler's or placed by hand past the quota), one of
    a team the config no longer has (it has no quota at all), or one of those that hold its
    team past a quota lowered since they were placed (``past``: quota.past_quota_jobs)."""
    return job.preemptible or bool(usage) and job.team not in usage or job.id in past


def _fair(pending: Sequence[Job], usage: Callable[[], Dict[str, TeamUsage]],
          priority: Dict[str, int], usage_weight: float) -> Iterator[Job]:
    """``fair_order`` served one job at a time as usage grows: each team's jobs in their own
    order, the next from the team furthest below its weighted share (a few teams, so cheap)."""
    by_team: Dict[Optional[str], Deque[Job]] = {}
    for job in sorted(pending, key=lambda j: (-priority.get(j.queue, 0), j.submitted_at, j.id)):
        by_team.setdefault(job.team, deque()).append(job)
    while by_team:
        now = usage()
        team = min(by_team, key=lambda t: fair_rank(by_team[t][0], now, priority,
                                                    usage_weight))
        job = by_team[team].popleft()
        if not by_team[team]:
            del by_team[team]
        yield job


def team_order(jobs: Sequence[Job], queues: Sequence[QueueConfig],
               teams: Sequence[TeamConfig], recent: Recent) -> List[str]:
    """The configured teams with a job waiting in a configured queue, in the order a pass
    would take up their next jobs now: ``fair_order`` of the pass's own inputs (each team's
    weighted share, then priority, then age), as ``_fair`` picks the first job of each team.
    A pass re-ranks after each placement, so it is the standing now, not a promise; a job
    of no team, or of one the config lacks, is left out, as no pass places it."""
    priority = {q.name: q.priority for q in queues}
    usage = {u.name: u for u in team_usage(jobs, teams, dict(recent.gpus))}
    waiting = [j for j in jobs if j.state == PENDING and j.queue in priority and j.team in usage]
    ranked = fair_order(waiting, usage, priority, recent.usage_weight)
    return list(dict.fromkeys(j.team for j in ranked if j.team is not None))


def container_hosts(views: Sequence[HostView]) -> Set[str]:
    """The hosts whose agent found a container runtime (hello's ``runtimes``; an agent older
    than container jobs reports none)."""
    return {v.name for v in views if any(((v.hello or {}).get("runtimes") or {}).values())}


def _within_room(req: Request, p: Placement, placer: Placer,
                 attempt: Callable[[Request], Optional[Placement]],
                 affords: Callable[[float], bool]) -> Optional[Tuple[Placement, Slot]]:
    """A slot the team's quota can still pay for, where the best one, ``p``, charges more: a
    share is charged its part of its GPU's memory (10 GiB: 0.45 of an L4, 0.13 of an
    A100-80GB) and a slice its profile, so the best on other GPU models, and for a request
    that takes either, as a share, may fit. Whole GPUs charge the same everywhere. Each try
    leaves out a model: at most twice as many tries as models."""
    if req.gpus or not req.gpu_count:
        return None
    models = req.models or frozenset(g.model for h in placer.hosts for g in h.gpus)
    ways = [req] + ([replace(req, isolation="share")] if req.isolation == "any" and not req.mig
                    else [])
    for way in ways:
        tried: Set[str] = set()
        found: Optional[Placement] = p if way is req else attempt(way)
        while found is not None:
            slot = slot_of(found, way, placer)
            if affords(slot.charge):
                return found, slot
            tried |= {placer.hosts[found.host_index].gpus[g].model for g in found.gpus}
            found = attempt(replace(way, models=models - tried)) if models - tried else None
    return None


def _affords(usage: Mapping[str, TeamUsage], held: Mapping[str, Hold], job: Job,
             charge: float) -> bool:
    """Whether ``job`` taking ``charge`` stays within its team's quota beside what the team
    holds for another of its jobs."""
    h = held.get(job.team) if job.team is not None else None
    # (a job that charges nothing, CPU-only, takes nothing of the quota held: never held back)
    beside = h.charge if h is not None and h.job != job.id and charge > EPSILON else 0.0
    return within_quota(usage, job.team, charge + beside)


def _least_charge(req: Request, hosts: Sequence[Host]) -> Optional[float]:
    """The least a slot of ``req`` could charge on a GPU of ``hosts`` it may use (None: it
    takes no GPU there): what a job that found no room at all holds of its team's quota."""
    if req.gpus:
        return float(req.gpus)  # whole GPUs charge the same everywhere
    charges = set()
    for gpu in (g for h in hosts if not req.hosts or h.name in req.hosts for g in h.gpus):
        if req.models and gpu.model not in req.models:
            continue
        geo = gpu.layout.geometry if gpu.layout is not None else gpu.mig_geometry
        profile = profile_for(req, geo) if geo is not None else None
        if profile is not None:
            charges.add(gpu_charge(gpu.memory_mib, geo, profile.name, None))
        milli = req.share_milli(gpu.model, gpu.memory_mib) if gpu.layout is None else 0
        if milli:
            charges.add(gpu_charge(gpu.memory_mib, None, None,
                                   share_mib(req, gpu.memory_mib, milli)))
    return min(charges, default=None)


def _with_hosts(req: Request, allowed: AbstractSet[str]) -> Request:
    return replace(req, hosts=frozenset(allowed))


# The words of a job that waits for its team's quota: the team holds all of it (AT_QUOTA), or
# holds part and the job's slot charges more than the rest (SHORT); and of one that waits
# beside what its team holds for another (HELD). Written into reasons and matched in them by
# these constants alone, so what is said and what waits_at_quota finds cannot drift apart.
AT_QUOTA = " is at its quota ("
SHORT = " has too little of its quota left ("
HELD = " is held for job "
FOR_QUOTA = (AT_QUOTA, SHORT, HELD)


def waits_at_quota(reason: Optional[str]) -> bool:
    """Whether a pending job's recorded reason is this pass's "at its quota", "too little of
    its quota left" or "held for": it waits for its own team's quota (its charge is more than
    the room left, or than what is left beside what the team holds for an older job), not
    for the fleet."""
    return reason is not None and reason.startswith("team ") and any(
        words in reason for words in FOR_QUOTA)


def _held_for(team: TeamUsage, h: Hold, after_s: float, charge: float) -> str:
    """Why a job that the team's quota could take waits: the team holds it for an older job."""
    return "team %s's free quota%s%d, waiting over %s for %.2f GPUs of it (%.2f of %.2f " \
           "free); this job's slot charges %.2f: it takes only what is left beside that" % (
               team.name, HELD, h.job, duration(after_s), h.charge, team.room(), team.quota,
               charge)


def _room_held_for(team: TeamUsage, h: Hold, after_s: float) -> str:
    """Why a job that would fit on the host its team holds room on waits: for an older job."""
    return "team %s's room on %s%s%d, waiting over %s for room there; this job finds none " \
           "elsewhere" % (team.name, h.host, HELD, h.job, duration(after_s))


def _drains(views: Sequence[HostView], jobs: Sequence[Job], store_uid: str, job: Job,
            cordons: Sequence[Cordon]) -> Callable[[str], bool]:
    """Whether ``job`` fits a host once its own team's jobs there end: room that a hold of
    the host drains to it, whatever the other teams there do. The fleet without the team's
    jobs is built once, at the first host asked of that has one."""
    mine = [j for j in jobs if j.team == job.team and j.id != job.id and j.slot is not None]
    on = {j.slot.host for j in mine}  # type: ignore[union-attr]
    placer: List[Placer] = []

    def drains(host: str) -> bool:
        if host not in on:
            return False
        if not placer:
            placer.append(Placer(fenced(build_hosts(
                views, jobs, store_uid, leave_out={j.key(store_uid) for j in mine}), cordons),
                POLICY))
        return placer[0].place(_with_hosts(request_of(job), {host})) is not None
    return drains


def _roomiest(req: Request, hosts: Sequence[Host], containers: Optional[AbstractSet[str]],
              drains: Callable[[str], bool]) -> Optional[str]:
    """The host where ``req``, which found no room, has the most free of the GPUs it may use
    (the most free of as many as it spans, of one model): where its room comes soonest if the
    team's later jobs keep off. Only a host it fits once idle (GPUs it fits, CPUs and RAM
    enough): one it never fits would keep them off for nothing. A host it ``drains`` on (fits
    once its team's jobs there end) first: one where only other teams' jobs ending frees its
    room may never free, and its team's jobs kept off it would refill every bit of room that
    frees up on the others. ``containers``: the hosts it may use for its image (None: any)."""
    free_on: List[Tuple[int, str]] = []
    for h in hosts:
        if req.hosts and h.name not in req.hosts or containers is not None and \
                h.name not in containers or h.cpu_milli < req.cpu_milli or \
                h.memory_mib < req.memory_mib:
            continue
        alike: Dict[Tuple[str, int], List[int]] = {}  # (a job's GPUs are of one model)
        for n, g in enumerate(h.gpus):
            if takes_idle(h, n, req):
                alike.setdefault((g.model, g.memory_mib), []).append(g.free_milli)
        free = [sum(sorted(f, reverse=True)[:req.gpu_count]) for f in alike.values()
                if len(f) >= req.gpu_count]
        if req.gpu_count and free:
            free_on.append((-max(free), h.name))
    free_on.sort(key=lambda f: f[0])  # the most free first; of as much, the first host
    return next((name for _, name in free_on if drains(name)),
                free_on[0][1] if free_on else None)


def _at_quota(team_name: Optional[str], team: Optional[TeamUsage],
              slot: Optional[Slot] = None) -> str:
    """Why a job waits for its team's quota: the team is at it, or has too little of it left
    (said so: "at its quota (2.00 of 2.50 GPUs held)" is false of a team with 0.50 left);
    where the slot found for it charges more than the whole quota, or than what is left of
    it, that too, else "0.00 of 0.40 GPUs held" or "0.25 of 1.00" reads as a wait for
    nothing; and where that slot is free now but the team may not borrow, that too, else a
    researcher who sees the GPU idle in ``fractui status`` reads the wait as a fault."""
    if team is None:
        return "its team %r is not configured: it has no quota" % team_name
    bigger = slot is not None and slot.charge > team.quota + EPSILON
    short = slot is not None and not bigger and team.room() > EPSILON
    idle = slot is not None and not bigger and not team.over_quota
    return "team %s%s%.2f of %.2f GPUs held)%s%s%s" % (
        team.name, SHORT if team.room() > EPSILON else AT_QUOTA, team.within, team.quota,
        "; its slot, %s, charges %.2f: more than the %s" % (
            slot.describe(), slot.charge,  # type: ignore[union-attr]
            "whole quota" if bigger else "%.2f left" % team.room()) if bigger or short else "",
        "; waits for idle capacity to borrow" if team.over_quota else "",
        "; %s is free, but the team does not borrow past its quota (its over_quota is "
        "off)" % ("the slot" if short else slot.describe())  # type: ignore[union-attr]
        if idle else "")


def _size(req: Request) -> Tuple[FrozenSet[str], int, int]:
    """What ``_beyond_hosts`` reads of a request: the hosts it may use, its CPUs and RAM."""
    return req.hosts, req.cpu_milli, req.memory_mib


def _beyond_hosts(allowed: FrozenSet[str], cpu_milli: int, memory_mib: int,
                  hosts: Sequence[Host]) -> Optional[str]:
    """Why a job that may use the hosts ``allowed`` (empty: any) fits none of them even idle,
    by the CPUs and RAM its queue books (above every such host's own), or None. Said apart
    from "no room", which would send the admin looking for busy GPUs while the fix is the
    queue's numbers or a bigger host; not a starved job either: preempting frees no CPUs a
    host does not have."""
    mine = [h for h in hosts if not allowed or h.name in allowed]
    if not mine or any(h.cpu_milli >= cpu_milli and h.memory_mib >= memory_mib
                       for h in mine):
        return None
    most = max(mine, key=lambda h: (h.cpu_milli, h.memory_mib))
    return ("no host it may use has the CPUs and RAM its queue books (%s, %g GiB RAM); "
            "the largest, %s, has %s and %g GiB RAM: lower the queue's cpus or memory in "
            "the config, or add a larger host" % (
                count(cpu_milli / 1000, "CPU"), gib(memory_mib), most.name,
                count(most.cpu_milli / 1000, "CPU"), gib(most.memory_mib)))


def _none_reachable(allowed: FrozenSet[str], views: Sequence[HostView],
                    reachable: AbstractSet[str]) -> Optional[str]:
    """Why a job that may use the hosts ``allowed`` (empty: any) waits when none of them is
    reachable now (connecting, offline, untrusted; ``reachable``: those built), naming them,
    or None. "no room" would say GPUs are full that no one has heard from (a scheduler's
    first pass, before its hosts answer, said it to everyone waiting); not a starved job
    either: preempting frees nothing on a host not reached."""
    if not reachable.isdisjoint(allowed) if allowed else reachable:
        return None
    away = ["%s %s" % (v.name, "not heard from yet" if v.state in USABLE else v.state)
            for v in views if not allowed or v.name in allowed]
    if not away:
        return None
    return "no host it may use is reachable now (%s): it waits for one" % first_of(away, 3)


def _no_room(req: Request, cordons: Sequence[Cordon],
             outside: Sequence[Tuple[str, int, int]]) -> str:
    """Why a job of ``req`` finds no room, naming what takes no new work when some does, and
    the GPUs where processes outside fractui use memory (``fleetview.outside_use``). A job of
    several GPUs is said to want them free on one host: "no GPU has a free slice" is false of
    the idle GPUs, one a host, that its researcher sees in ``fractui status``; a job of no GPU
    is said to want its CPUs and RAM free, as GPUs are not what it waits for."""
    gpu_count = req.gpu_count
    if not gpu_count:
        asks = [count(req.cpu_milli / 1000, "CPU")] * bool(req.cpu_milli) + \
            ["%g GiB RAM" % gib(req.memory_mib)] * bool(req.memory_mib)
        said = "no room: no host %s has %s free for it" % (
            "in service" if cordons else "in the fleet", " and ".join(asks) or "room")
        outside = ()  # (GPU memory used outside fractui keeps no CPUs or RAM from it)
    elif gpu_count > 1:
        said = "no room: a job's GPUs are all on one host and of one model, and no host has " \
            "%d such GPUs %sfree for it at once" % (gpu_count, "in service " if cordons else "")
    else:
        said = "no room: no GPU %s has a free slice for it" % (
            "in service" if cordons else "in the fleet")
    if cordons:
        said += " (out of service: %s)" % first_of([c.where() for c in cordons], 3)
    if outside:
        said += "; processes outside fractui use GPU memory on %s" % first_of(
            ["%s gpu%d (%d MiB)" % o for o in outside], 3)
    return said


def _charged(usage: Dict[str, TeamUsage], team: Optional[str], amount: float,
             borrowed: bool) -> Dict[str, TeamUsage]:
    if team is None or team not in usage:
        return usage
    u = usage[team]
    return dict(usage, **{team: replace(u, used=u.used + amount,
                                        borrowed=u.borrowed + (amount if borrowed else 0.0))})


def _preempt(views: Sequence[HostView], jobs: Sequence[Job], store_uid: str,
             starved: Sequence[Job], usage: Dict[str, TeamUsage],
             held: Mapping[str, Hold], cordons: Sequence[Cordon],
             containers: AbstractSet[str], teams: Sequence[TeamConfig]) -> List[Preemption]:
    """For the first starved job that borrowed jobs (``borrowed``, by ``teams``' quotas) can
    make room for: the fewest of them (newest first, on one host in service) whose end lets
    it be placed within its team's quota, beside what the team holds for another of its jobs
    (``held``: not on a host held for that one either), on a host with a container runtime
    (``containers``) for a job of an image. A job asking what one tried already asked (its
    team, its request, the host kept off, whether it runs in a container) is not tried again,
    nor counted among the PREEMPT_CANDIDATES: no end would make room for it, and many alike
    ahead would keep a later job from being tried."""
    past = past_quota_jobs(jobs, teams)
    victims_all = sorted((j for j in jobs if j.state == RUNNING and j.slot is not None
                          and borrowed(j, usage, past)),
                         key=start_order, reverse=True)
    tried: Set[Tuple[Optional[str], Request, Optional[str], bool]] = set()
    for job in starved:
        h = held.get(job.team) if job.team is not None else None
        kept_off = h.host if h is not None and h.job != job.id else None
        asked = (job.team, replace(request_of(job), name=""), kept_off, bool(job.image))
        if asked in tried:
            continue
        if len(tried) == PREEMPT_CANDIDATES:
            break
        tried.add(asked)
        hosts = {v.slot.host for v in victims_all} - {kept_off}  # type: ignore[union-attr]
        for host in sorted(hosts & containers if job.image else hosts):
            chosen: List[Job] = []
            for victim in (v for v in victims_all if v.slot.host == host  # type: ignore
                           and v.team != job.team):
                chosen.append(victim)
                slot = _fits_without(views, jobs, store_uid, job, chosen, host, cordons)
                if slot is None:
                    continue
                if not _affords(usage, held, job, slot.charge):
                    break
                chosen = _fewest(views, jobs, store_uid, job, chosen, host, cordons)
                why = "preempted: team %s (within quota) needs room for job %d" % (
                    job.team, job.id) if job.team else "preempted for job %d" % job.id
                return [Preemption(v.id, job.id, why) for v in chosen]
    return []


def _fits_without(views: Sequence[HostView], jobs: Sequence[Job], store_uid: str, job: Job,
                  gone: Sequence[Job], host: str, cordons: Sequence[Cordon]) -> Optional[Slot]:
    hosts = fenced(build_hosts([v for v in views if v.name == host], jobs, store_uid,
                               leave_out={g.key(store_uid) for g in gone}), cordons)
    placer = Placer(hosts, POLICY)
    req = request_of(job)
    if req.hosts and host not in req.hosts:
        return None
    p = placer.place(_with_hosts(req, {host}))
    return slot_of(p, req, placer) if p is not None else None


def _fewest(views: Sequence[HostView], jobs: Sequence[Job], store_uid: str, job: Job,
            chosen: List[Job], host: str, cordons: Sequence[Cordon]) -> List[Job]:
    """Drop every victim the job does not need (oldest kept last)."""
    kept = list(chosen)
    for victim in list(chosen):
        trial = [v for v in kept if v is not victim]
        if trial and _fits_without(views, jobs, store_uid, job, trial, host,
                                   cordons) is not None:
            kept = trial
    return kept
