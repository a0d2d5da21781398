"""Which teams are starved, and why: a team with room left in its quota whose jobs have waited
a while for the fleet (not for the team's own quota) with nothing of it started meanwhile. What
the TUI's queue panel says of each team beside its quota, holding and recent usage
(docs/cli.md). Pure: teams' standing, jobs and usage records in; the starved teams out, with the
reason the scheduler wrote on the longest waiting job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Sequence

from fractui.sched.queueing import waits_at_quota
from fractui.sched.quota import EPSILON, TeamUsage
from fractui.store.model import ON_HOST, PENDING, Job, UsageRecord
from fractui.words import duration

STARVED_S = 300.0  # waits this long, with nothing of its team started meanwhile: starved


@dataclass(frozen=True)
class Starved:
    team: str
    waiting: int
    """Its pending jobs."""
    waited_s: float
    """How long the longest waiting one has waited."""
    reason: str
    """Why that one waits, as the scheduler wrote it."""
    room: float
    """GPUs of its quota it does not hold (what a job bigger than that waits for anyway)."""

    def words(self, before_reason: str = " ") -> str:
        """What is said of it after "starved " (the TUI's panel, ``fractui teams``):
        ``nlp: 3 waiting 12m00s, 0.88 of its quota free: <reason>``, ``before_reason``
        between the two (a narrow panel puts the reason on a line of its own)."""
        return "%s: %d waiting %s, %.2f of its quota free:%s%s" % (
            self.team, self.waiting, duration(self.waited_s), self.room, before_reason,
            self.reason)


def last_starts(records: Iterable[UsageRecord], jobs: Iterable[Job]) -> Dict[str, float]:
    """When each team last had a job start (or be placed): its usage records, and the jobs on
    a host now (a placed one not yet started counts from its placement)."""
    last: Dict[str, float] = {}
    starts = [(r.team, r.started_at) for r in records]
    starts += [(j.team, j.started_at if j.started_at is not None else j.updated_at)
               for j in jobs if j.state in ON_HOST]
    for team, at in starts:
        if team is not None and at > last.get(team, float("-inf")):
            last[team] = at
    return last


def starved(usage: Sequence[TeamUsage], jobs: Iterable[Job], last: Mapping[str, float],
            now: float, after_s: float = STARVED_S) -> list[Starved]:
    """The teams (in ``usage``'s order) with room in their quota, no job of theirs started in
    the last ``after_s``, and a pending job that has waited that long for the fleet — not at
    its team's quota (a job bigger than the room left waits for the quota, and is not
    starved by others): the longest waiting such job says why."""
    waiting: Dict[str, int] = {}
    oldest: Dict[str, Job] = {}
    for job in jobs:
        if job.state != PENDING or job.team is None:
            continue
        waiting[job.team] = waiting.get(job.team, 0) + 1
        if waits_at_quota(job.reason) or now - job.waiting_since < after_s:
            continue
        first: Optional[Job] = oldest.get(job.team)
        if first is None or job.waiting_since < first.waiting_since:
            oldest[job.team] = job
    out = []
    for team in usage:
        job = oldest.get(team.name)
        if job is None or team.room() <= EPSILON:
            continue
        if last.get(team.name, float("-inf")) > now - after_s:
            continue
        out.append(Starved(team.name, waiting[team.name], job.waited(now),
                           job.reason or "no reason recorded yet: no scheduler has looked",
                           team.room()))
    return out
