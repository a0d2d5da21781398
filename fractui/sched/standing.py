"""Each queue's standing as the queue panel and ``fractui queues`` show it: its jobs waiting and
on hosts, and the longest wait. Each team's as the queue panel shows it: quota, held, borrowed,
recent usage, jobs on hosts, its place in the order a pass takes up the teams' waiting jobs,
who is starved with why, and what it holds for a job that has waited (``reserved``). The
usage records behind the recent column are read in the screen's store worker at most once
every USAGE_EVERY_S (a window of them can be thousands of rows), never on the UI thread; the
rest comes from each read of the store's active jobs and holds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from fractui.config import DEFAULT_MAX_WAITING, Config, QueueConfig, TeamConfig
from fractui.sched.queueing import team_order
from fractui.sched.quota import Recent, TeamUsage, team_usage
from fractui.sched.starved import Starved, last_starts, starved
from fractui.store.model import ACTIVE, PENDING, Hold, Job, KeptTerms, UsageRecord
from fractui.usage.fairshare import recent_gpus
from fractui.words import count, duration, printable

USAGE_EVERY_S = 60.0


@dataclass(frozen=True)
class UsageRead:
    """What one read of the usage records gave: each team's recent GPUs, and when it last
    had a job start."""

    at: float
    recent: Mapping[str, float] = field(default_factory=dict)
    last: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[UsageRecord], config: Config, now: float) -> "UsageRead":
        fair = config.fairshare
        return cls(now, recent_gpus(records, now, fair.half_life_s, fair.window_s),
                   last_starts(records, ()))


def standing(jobs: Sequence[Job], config: Config, usage: Optional[UsageRead], now: float,
             terms: KeptTerms = KeptTerms()) -> tuple[list[TeamUsage], list[Starved]]:
    """The teams' standing and the starved ones, from the active jobs and the last usage read
    (None: not read yet, so no recent usage and no start but the jobs' own): only a team the
    lease holder's passes take up (``placed`` by its ``terms``) is starved, as its jobs wait
    for room the others hold; one they do not take up waits for its team's config."""
    teams = team_usage(jobs, config.teams, usage.recent if usage else None)
    last = dict(usage.last) if usage else {}
    for team, at in last_starts((), jobs).items():
        last[team] = max(at, last.get(team, at))
    return teams, starved([u for u in teams if placed(u.name, terms)], jobs, last, now)


@dataclass(frozen=True)
class Reserved:
    """A team's hold for one of its waiting jobs (the pass's ``Hold``, as the lease holder
    kept it), with that job as read: why its quota is partly idle, or a host its later jobs
    skip."""

    team: str
    job: Job
    hold: Hold

    def waited(self, now: float) -> float:
        """How long its job has waited at ``now`` (Job.waited)."""
        return self.job.waited(now)

    def words(self, now: float, before_job: str = " ") -> str:
        """What is said of it after "reserved " (the TUI's panel, ``fractui teams``): ``nlp:
        1.00 of its quota and its room on h held for job 20 (train, waiting 6m12s): ...``,
        the job's name and the host printable only (a name from the store forges no line),
        ``before_job`` before "held for job" (a narrow panel puts what is held on a line of
        its own)."""
        h = self.hold
        return "%s: %.2f of its quota%s%sheld for job %d (%s, waiting %s): its later jobs " \
            "take only what is left beside it%s" % (
                self.team, h.charge, " and its room on %s" % printable(h.host) if h.host
                else "", before_job, self.job.id, printable(self.job.name),
                duration(self.waited(now)), ", off that host" if h.host else "")


def reserved(holds: Mapping[str, Hold], jobs: Sequence[Job], teams: Sequence[TeamUsage],
             terms: KeptTerms = KeptTerms()) -> list[Reserved]:
    """The holds of ``teams`` (in their order) whose job still waits in ``jobs`` (the active
    ones, read with the holds): one whose job has started or ended since is the last pass's,
    which the next one writes over; one of a team the holder's passes no longer take up
    (``placed``) is an old pass's too, holding nothing now."""
    waiting = {j.id: j for j in jobs if j.state == PENDING}
    out = []
    for team in teams:
        h = holds.get(team.name) if placed(team.name, terms) else None
        job = waiting.get(h.job) if h is not None else None
        if h is not None and job is not None and job.team == team.name:
            out.append(Reserved(team.name, job, h))
    return out


def as_kept(config: Config, terms: KeptTerms, led: bool
            ) -> Tuple[Config, Dict[str, str]]:
    """``config`` with each of its teams' quota, borrowing and weight as the lease holder keeps
    them (``terms``, the store's ``team_terms``: what the passes hold the teams to, where the
    reader's config may be an old copy of the admin's), and for each team whose config says
    otherwise a line naming both. A team the store does not list keeps the config's: before
    any holder kept terms, that is all there is; after, the holder has no such team, and its
    line says so (its jobs wait, their team not configured), or, where it keeps none at all
    (``terms.none()``: its config has no [[teams]]), that it holds no team to a quota. A
    team whose row the store cannot read (``terms.unread``) keeps the config's too, its line
    saying the kept quota is not known, and why: the holder has the team, so "none" would be
    false; and who writes the row again: the holder at its next pass, or, where none holds
    the lease (``led`` False), the next scheduler to take it, none meanwhile."""
    teams, said = [], {}
    for t in config.teams:
        kept = terms.get(t.name)
        if t.name in terms.unread:
            said[t.name] = ("team %s: its quota is not known: %s (%s); this config's (%s) %s "
                            "is shown" % (t.name, terms.unread[t.name], REWRITTEN[led],
                                          config.path or "in code", _quota(t.quota_gpus)))
            teams.append(t)
            continue
        if kept is None:
            if terms.none():
                said[t.name] = ("team %s: the scheduler holds no team to a quota (its config "
                                "has no [[teams]]): its jobs are placed by their queue's "
                                "priority and age, ranked by no share, where this config (%s) "
                                "says %s" % (t.name, config.path or "in code",
                                             _quota(t.quota_gpus)))
            elif terms.any():
                said[t.name] = ("team %s: the scheduler holds no team %s (its config has "
                                "none): its jobs are not placed, where this config (%s) says "
                                "%s" % (t.name, t.name, config.path or "in code",
                                        _quota(t.quota_gpus)))
            teams.append(t)
            continue
        differ = [(held, mine) for held, mine in (
            (_quota(kept.quota_gpus), _quota(t.quota_gpus)),
            ("over_quota " + _on(kept.over_quota), "over_quota " + _on(t.over_quota)),
            ("weight %g" % kept.weight, "weight %g" % t.weight)) if held != mine]
        if differ:
            said[t.name] = ("team %s: the scheduler holds it to %s, where this config (%s) "
                            "says %s: the scheduler's are shown" % (
                                t.name, ", ".join(k for k, _ in differ),
                                config.path or "in code", ", ".join(c for _, c in differ)))
        teams.append(replace(t, quota_gpus=kept.quota_gpus, over_quota=kept.over_quota,
                             weight=kept.weight))
    return replace(config, teams=tuple(teams)), said


REWRITTEN = {True: "the scheduler holds it to its own config's, and writes the row again at "
                   "its next pass",
             False: "no scheduler holds the store's lease now: none writes the row again until "
                    "one takes the lease, holding it to its own config's from its first pass"}
"""Who writes a damaged kept-quota row again (``as_kept``), by whether a scheduler holds the
lease."""


def held_beyond(config: Config, terms: KeptTerms, jobs: Sequence[Job]
                ) -> Tuple[Config, Dict[str, str]]:
    """``config`` with each team it lacks that the lease holder keeps terms of and the store
    holds active jobs of, at those terms (after its own teams), and for each a line saying
    so. The passes give such a team its quota, share and turn (this config is an old copy of
    the admin's): shown as one no config has ("?", no turn), it and the turns of the others
    were not what the scheduler does."""
    known = {t.name for t in config.teams}
    names = sorted({j.team for j in jobs if j.team is not None and j.team not in known
                    and j.team in terms})
    added = tuple(TeamConfig(n, quota_gpus=terms[n].quota_gpus,
                             over_quota=terms[n].over_quota, weight=terms[n].weight)
                  for n in names)
    said = {t.name: "team %s: not in this config (%s): the scheduler holds it to %s, "
            "over_quota %s, weight %g: the scheduler's are shown" % (
                printable(t.name), config.path or "in code", _quota(t.quota_gpus),
                _on(t.over_quota), t.weight) for t in added}
    return replace(config, teams=config.teams + added), said


def kept(config: Config, terms: KeptTerms, jobs: Sequence[Job], led: bool
         ) -> Tuple[Config, Dict[str, str]]:
    """``config``'s teams at the lease holder's ``terms`` and the teams it keeps that the
    config lacks (``as_kept``, then ``held_beyond``), with the lines of both: what every view
    of the teams (``fractui teams``, the TUI's Teams table) shows. ``led``: whether a
    scheduler holds the store's lease (the lines say who writes a damaged row again)."""
    config, said = as_kept(config, terms, led)
    config, beyond = held_beyond(config, terms, jobs)
    return config, {**said, **beyond}


def placed(team: str, terms: KeptTerms) -> bool:
    """Whether the lease holder's passes take up ``team``'s jobs: every team before any holder
    kept terms, after only those it keeps terms of (a row of them unread too: the holder has
    that team, its quota not known); none where it keeps none (``KeptTerms.none``), whose
    passes rank no team, placing each job by its queue's priority and age. One this config
    has beyond them is said not placed (``as_kept``): no turn, share, starving or hold is
    said of it, as the scheduler has none of it."""
    return not terms.any() or team in terms or team in terms.unread


def scheduled(config: Config, terms: KeptTerms) -> Config:
    """``config`` with only the teams the passes take up (``placed``), so the order of turns
    (``next_order``) is theirs."""
    return replace(config, teams=tuple(t for t in config.teams if placed(t.name, terms)))


def _quota(gpus: float) -> str:
    """A team's quota as its terms are said: "quota 1 GPU", "quota 2.5 GPUs"."""
    return "quota " + count(gpus, "GPU")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def next_order(jobs: Sequence[Job], config: Config, usage: Optional[UsageRead]) -> list[str]:
    """The teams with a job waiting, in the order a pass takes them up now (``team_order``,
    the pass's own), on the last usage read (None: not read yet, so no recent usage)."""
    return team_order(jobs, config.queues, config.teams,
                      Recent.of(config.fairshare.usage_weight, usage.recent if usage else {}))


def next_of(team: str, order: Sequence[str]) -> Optional[int]:
    """The team's place in ``order`` (1: its waiting job is taken up first), None where it
    has no job waiting."""
    return order.index(team) + 1 if team in order else None


def bounds_of(shown: Sequence[TeamUsage], held: Mapping[str, int]) -> Dict[str, int]:
    """Each team's bound on waiting jobs as the store holds it (``held``, its
    ``waiting_bounds``): a team it does not list is held to the default, as a submit is."""
    return {u.name: held.get(u.name, DEFAULT_MAX_WAITING) for u in shown}


def waiting(u: TeamUsage, bound: int) -> str:
    """PENDING as ``waiting/bound``: the team's jobs waiting (TeamUsage.waiting: those
    stopping to be requeued too, as the bound counts them), and how many may."""
    return "%d/%d" % (u.waiting, bound)


NEAR_SHARE = 0.1
NEAR_JOBS = 10
"""A team is near its bound on waiting jobs within this share of it or this many jobs of it,
whichever is more (docs/decisions.md, "How many jobs a team may have waiting")."""


def near_bound(u: TeamUsage, bound: int) -> bool:
    """Whether the team is at its bound (a member's submit is refused, WaitingFull) or near it
    with a job waiting: worth an admin's eye, where one far from it is noise."""
    if u.waiting >= bound:
        return True
    return u.waiting > 0 and bound - u.waiting <= max(bound * NEAR_SHARE, NEAR_JOBS)


@dataclass(frozen=True)
class QueueStat:
    name: str
    portion: str
    pending: int
    running: int
    """Its jobs on a host: placed, running, or stopping."""
    wait_s: Optional[float]
    """How long its oldest pending job has waited."""


def queue_stats(queues: Sequence[QueueConfig], jobs: Iterable[Job],
                now: float) -> list[QueueStat]:
    """Per configured queue (then any other queue the store names): pending, running, and
    the longest wait (Job.waited)."""
    pending: dict[str, list[float]] = {}
    running: dict[str, int] = {}
    for job in jobs:
        if job.state == PENDING:
            pending.setdefault(job.queue, []).append(job.waited(now))
        elif job.state in ACTIVE:
            running[job.queue] = running.get(job.queue, 0) + 1
    portions = {q.name: q.describe() for q in queues}
    names = [q.name for q in queues] + sorted((set(pending) | set(running)) - set(portions))
    return [QueueStat(n, portions.get(n, "?"), len(pending.get(n, ())), running.get(n, 0),
                      max(pending[n]) if pending.get(n) else None)
            for n in names]
