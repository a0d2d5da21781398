"""Team quotas, counted in GPUs (fractions count): what each team holds and borrows, and who is
served next. Pure: store jobs and team settings in, numbers and orderings out.

Charge (DESIGN): a MIG slice counts its compute share, a memory share counts its fraction of
the GPU, a whole GPU counts 1. A job is charged from the moment a decision gives it a slot.
``charge`` is that rule, the only place it is written: the scheduler's decisions, the preview,
by-hand placement and the executor all call it, and what it returns is kept in the slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from remote_agent.mig.layout import Geometry

from fractui.config import Config, TeamConfig
from fractui.sched.model import MILLI
from fractui.store.model import (ON_HOST, PENDING, QUOTA_EPSILON as EPSILON, Job, KeptTerms,
                                 Quota, Slot, start_order)

GpuOf = Tuple[int, Optional[Geometry]]  # one GPU of a slot: its memory MiB, its MIG geometry


def gpu_charge(memory_mib: int, geometry: Optional[Geometry], profile: Optional[str],
               share_mib: Optional[int]) -> float:
    """What one GPU of a slot charges, in GPUs: a MIG instance of ``profile`` its compute share
    (3g of an A100: 3/7); a memory share of ``share_mib`` its part of the GPU's memory in
    thousandths, rounded up as placement books it (10 GiB of an L4: 0.445; a quarter: 0.25);
    all of the GPU's memory, 1."""
    if profile is not None:
        p = geometry.profile(profile) if geometry is not None else None
        if p is None:
            raise ValueError("no MIG profile %s on this GPU" % profile)
        return p.compute_slices / geometry.compute_slices  # type: ignore[union-attr]
    if not memory_mib or share_mib is None:
        raise ValueError("a memory share needs its MiB and the GPU's")
    return min(MILLI, math.ceil(round(share_mib * MILLI / memory_mib, 6))) / MILLI


def charge(profile: Optional[str], share_mib: Optional[int], gpus: Sequence[GpuOf]) -> float:
    """What a slot charges its team: the sum over its GPUs (each its memory and MIG geometry)
    of ``gpu_charge``, to six places."""
    return round(sum(gpu_charge(memory, geo, profile, share_mib) for memory, geo in gpus), 6)


@dataclass(frozen=True)
class TeamUsage:
    """One team's standing: ``used`` is every GPU it holds, ``borrowed`` the part of it held by
    over-quota (preemptible) jobs, ``recent`` the GPUs it held lately, decayed with age
    (fractui.usage.fairshare), ``pending`` its jobs waiting, ``running`` its jobs on a host
    (placed, running or stopping: those ``used`` counts) and ``requeued`` those of them
    stopping to be requeued (Job.requeued), which its bound on waiting jobs counts."""

    name: str
    quota: float
    used: float
    borrowed: float
    pending: int
    weight: float = 1.0
    over_quota: bool = False
    recent: float = 0.0
    running: int = 0
    requeued: int = 0

    @property
    def waiting(self) -> int:
        """Its jobs waiting as its bound (max_waiting) counts them: pending, or stopping to be
        requeued (a member's submit or requeue is refused at the bound by this count)."""
        return self.pending + self.requeued

    @property
    def within(self) -> float:
        """GPUs held within the quota."""
        return self.used - self.borrowed

    def room(self) -> float:
        """GPUs it may still take within its quota."""
        return max(0.0, self.quota - self.within)

    def share(self, usage_weight: float) -> float:
        """Its weighted share, which ranks it: what it holds within quota now and what it
        held lately, blended by ``usage_weight`` (0: now only), over its weight."""
        return ((1 - usage_weight) * self.within + usage_weight * self.recent) / self.weight


def team_usage(jobs: Iterable[Job], teams: Sequence[TeamConfig],
               recent: Optional[Mapping[str, float]] = None) -> list[TeamUsage]:
    """Usage of every configured team (in config order), from the store's jobs and each
    team's ``recent`` GPUs (none: 0). What a team holds within its quota past the quota
    (placed within a higher one, since lowered) counts as borrowed: the team is at its quota,
    as the store's check of a placement sums it, and ``past_quota_jobs`` says which of its
    jobs are preemptible for it."""
    used = {t.name: 0.0 for t in teams}
    borrowed = dict(used)
    pending = {t.name: 0 for t in teams}
    running = dict(pending)
    requeued = dict(pending)
    recent = recent or {}
    for job in jobs:
        if job.team not in used:
            continue
        if job.state in ON_HOST and job.slot is not None:
            used[job.team] += job.held_charge
            borrowed[job.team] += job.held_charge - job.held_within
            running[job.team] += 1
        elif job.state == PENDING:
            pending[job.team] += 1
        requeued[job.team] += job.requeued
    for t in teams:  # (past it by more than EPSILON, as the store's check and past_quota_jobs)
        past = used[t.name] - borrowed[t.name] - t.quota_gpus
        borrowed[t.name] += past if past > EPSILON else 0.0
    return [TeamUsage(t.name, t.quota_gpus, used[t.name], borrowed[t.name], pending[t.name],
                      t.weight, t.over_quota, recent.get(t.name, 0.0), running[t.name],
                      requeued[t.name])
            for t in teams]


def teams_gone(jobs: Iterable[Job], teams: Sequence[TeamConfig]) -> List[TeamConfig]:
    """The teams ``teams`` lacks that ``jobs`` name (one removed from the config while its jobs
    hold GPUs or wait), in name order, with no quota: ``team_usage`` counts what they hold, all
    of it borrowed, as the scheduler holds them (no quota, share or turn)."""
    known = {t.name for t in teams}
    return [TeamConfig(n) for n in sorted({j.team for j in jobs
                                           if j.team is not None and j.team not in known})]


def past_quota_jobs(jobs: Iterable[Job], teams: Sequence[TeamConfig]) -> FrozenSet[int]:
    """The jobs, held within their team's quota as they were placed, that hold it past its
    quota now (lowered since they were placed): each team's most recently started first (one
    placed and not started yet is the newest), as many as bring what it holds within back to
    the quota. They count as borrowed, preemptible by a team within its quota as an
    over-quota job is: else a team whose quota was cut kept its old share, and the others
    waited for its jobs to end."""
    quota = {t.name: t.quota_gpus for t in teams}
    mine: Dict[str, list[Job]] = {}
    for job in jobs:
        if job.team in quota and job.state in ON_HOST and job.slot is not None \
                and job.held_within > 0:
            mine.setdefault(job.team, []).append(job)
    past: set[int] = set()
    for team, held in mine.items():
        within = sum(j.held_within for j in held)
        for job in sorted(held, key=start_order, reverse=True):
            if within <= quota[team] + EPSILON:
                break
            past.add(job.id)
            within -= job.held_within
    return frozenset(past)


@dataclass(frozen=True)
class Recent:
    """What fair share over time adds to a pass: each team's recent GPUs and how much they
    count (config [fairshare]). Rounded to a thousandth of a GPU, and left out where they
    count for nothing, so a pass with nothing new stays a comparison while usage decays."""

    usage_weight: float = 0.0
    gpus: Tuple[Tuple[str, float], ...] = ()

    @classmethod
    def of(cls, usage_weight: float, gpus: Mapping[str, float]) -> "Recent":
        if usage_weight <= 0:
            return cls()
        return cls(usage_weight, tuple(sorted((t, round(g, 3)) for t, g in gpus.items())))


def charged_by_gpu(slots: Iterable[Optional[Slot]]) -> Dict[Tuple[str, int], float]:
    """GPUs charged on each (host, GPU) by ``slots`` (a k-GPU slot's charge split evenly over
    its GPUs; none, or one of no GPUs, charges nothing)."""
    held: Dict[Tuple[str, int], float] = {}
    for slot in slots:
        if slot is not None and slot.gpus:
            part = slot.charge / len(slot.gpus)
            for gpu in slot.gpus:
                held[slot.host, gpu] = held.get((slot.host, gpu), 0.0) + part
    return held


def within_quota(usage: Mapping[str, TeamUsage], team: Optional[str], charge: float) -> bool:
    """Whether a job of ``team`` taking ``charge`` GPUs stays within the team's quota. A store
    with no teams has no quotas: everything is within."""
    if not usage:
        return True
    if team is None or team not in usage:
        return False
    return charge <= usage[team].room() + EPSILON


def quota_of(teams: Sequence[TeamConfig], team: Optional[str]) -> Optional[float]:
    """The quota a placement of ``team`` is held to as it is written (Store.place): the one
    source for the scheduler's decisions (its config's teams) and placements by hand (the
    CLI's, the TUI's: ``HeldTo``'s, the scheduler's as it keeps them). None where nothing
    holds it: no teams (no quotas), a job of no team, or a team not among ``teams`` (such a
    placement by hand is asked about first, and borrowed)."""
    return next((t.quota_gpus for t in teams if team is not None and t.name == team), None)


NONE_KEPT = "no scheduler having kept the teams' quotas in the store"
"""Why a placement by hand is held to its placer's config's quotas (``HeldTo``)."""


@dataclass(frozen=True)
class HeldTo:
    """What a placement by hand is held to: the teams' quotas as the lease holder keeps them
    in the store (``team_terms``: what its passes hold the teams to, whatever the placer's
    config says, so that two admins with different configs get the scheduler's one answer),
    none where it keeps none (its config has no [[teams]]: its passes hold no team to a
    quota), or, where no lease holder has kept any (no scheduler has run on it), the placer's
    config's; and each team's use counted against them (``team_usage``). ``config``: where
    the quotas are the placer's config's, that config as said ("in code"); None where they
    are the scheduler's."""

    teams: Tuple[TeamConfig, ...] = ()
    usage: Mapping[str, TeamUsage] = field(default_factory=dict)
    config: Optional[str] = None
    unread: Mapping[str, str] = field(default_factory=dict)
    """Each team whose kept quota the store cannot read (``KeptTerms.unread``), with why."""

    @classmethod
    def of(cls, jobs: Iterable[Job], config: Config, terms: KeptTerms) -> "HeldTo":
        """The quotas ``terms`` (the store's ``team_terms``) give, or where there are none
        ``config``'s, with the use of the store's active ``jobs``. A team of ``config`` the
        terms do not list has no quota here: the scheduler gives it none (its running jobs
        count as borrowed), so a placement of it is asked about and borrowed. One whose row
        is unread has a quota not known: held as past it, so asked about and borrowed too,
        never let through as within a quota that may be smaller than it takes."""
        kept = terms.any()
        teams = tuple(TeamConfig(n, quota_gpus=t.quota_gpus, over_quota=t.over_quota,
                                 weight=t.weight) for n, t in terms.items()) \
            if kept else config.teams
        return cls(teams, {u.name: u for u in team_usage(jobs, teams)},
                   None if kept else config.path or "in code", dict(terms.unread))

    def whose(self) -> str:
        """Whose quota it is, in words: said beside a placement past it or refused by it."""
        if self.config is None:
            return "the quota the scheduler holds it to"
        return "the quota this config (%s) gives it, %s" % (self.config, NONE_KEPT)

    def quota(self, team: Optional[str]) -> Optional[Quota]:
        """The quota a placement of ``team`` is held to as it is written (``quota_of``), with
        whose it is."""
        gpus = quota_of(self.teams, team)
        return None if gpus is None else Quota(gpus, self.whose())

    def past(self, team: Optional[str], charge: float) -> Optional[str]:
        """Why a job of ``team`` taking ``charge`` GPUs would take its team past its quota,
        whose quota it is said (what a placement by hand warns of and asks about), or None
        if it stays within."""
        if team in self.unread:  # (before the usage: with no other team kept, there is none)
            return "is of team %s, whose quota (the scheduler's) is not known: %s" % (
                team, self.unread[team])
        if within_quota(self.usage, team, charge):
            return None
        u = self.usage.get(team) if team is not None else None
        if u is None:
            return "is of team %s, which %s" % (
                team or "(none)", "the scheduler holds to no quota" if self.config is None
                else "this config (%s) gives no quota, %s" % (self.config, NONE_KEPT))
        return "takes team %s past its quota: %.2f of %.2f GPUs held within it, and this " \
               "adds %.2f (%s)" % (u.name, u.within, u.quota, charge, self.whose())


def fair_rank(job: Job, usage: Mapping[str, TeamUsage], priority: Mapping[str, int],
              usage_weight: float = 0.0) -> tuple:
    """Where a pending job stands: the team with the least weighted share (``TeamUsage.share``:
    within quota now, blended with recent usage by ``usage_weight``) first, then queue
    priority (higher first), then age."""
    team = usage.get(job.team) if job.team is not None else None
    share = team.share(usage_weight) if team is not None else 0.0
    return (share, -priority.get(job.queue, 0), job.submitted_at, job.id)


def fair_order(jobs: Sequence[Job], usage: Mapping[str, TeamUsage],
               priority: Mapping[str, int], usage_weight: float = 0.0) -> list[Job]:
    """Pending jobs in the order they would be served now (the scheduler re-ranks after each
    placement, as usage grows, so one team's burst does not starve another)."""
    return sorted(jobs, key=lambda j: fair_rank(j, usage, priority, usage_weight))
