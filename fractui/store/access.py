"""Who may do what: the one rule, pure (no I/O), for every verb and the TUI to share.

An admin may do everything. Anyone else may submit to a team they are in, cancel or requeue
that team's jobs, and read their output; everything that steers the fleet — preempting,
placing or moving by hand, launching or stopping a job on a host, MIG changes, cordoning or
draining a host or a GPU, quota and config changes, running the scheduler (which does all of
these) — is the admin's. A job of no team is the admin's alone. Reading what the store keeps
of the fleet — every job, the audit, the usage records and each team's standing from them
(``jobs``, ``audit``, ``report``, ``teams``, ``queues``, the TUI's views) — is everyone's who may
open the store, so no action here stands for it: only a job's output (READ) is its team's to
read.

Who you are and whether you are an admin is the store's word (``Store.identity``); which teams
you are in is the store's too where it keeps them (PostgreSQL's roles), else the config's
``members`` of each ``[[teams]]`` (``Roster``). With no team listing members, no one but the
admin is in any team: only the admin acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Protocol

from fractui.store.base import Identity
from remote_agent.text import noun_for

SUBMIT, CANCEL, REQUEUE, READ = "submit", "cancel", "requeue", "read"
PREEMPT, PLACE, MOVE, LAUNCH, STOP, MIG, CORDON, CONFIGURE, SCHEDULE = (
    "preempt", "place", "move", "launch", "stop", "mig", "cordon", "configure", "schedule")
TEAM_ACTIONS = (SUBMIT, CANCEL, REQUEUE, READ)
"""Yours to do to your own teams' jobs; an admin's to do to any."""
ADMIN_ACTIONS = (PREEMPT, PLACE, MOVE, LAUNCH, STOP, MIG, CORDON, CONFIGURE, SCHEDULE)
"""The admin's alone."""
ACTIONS = TEAM_ACTIONS + ADMIN_ACTIONS

_VERBS = {SUBMIT: "submit", CANCEL: "cancel", REQUEUE: "requeue", READ: "read the output of",
          PREEMPT: "preempt", PLACE: "place", MOVE: "move", LAUNCH: "launch", STOP: "stop",
          MIG: "change MIG on", CORDON: "cordon, drain or uncordon", CONFIGURE: "change",
          SCHEDULE: "run the scheduler"}


class Denied(Exception):
    """The caller's role does not allow the action; the message says who they are and what
    role it needs. A refusal by the store's rule, not a fault of the store (exit 1)."""


class Team(Protocol):
    """What the roster reads of a team (config.TeamConfig)."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Roster:
    """Team -> its members' user names, from the config, for a store that keeps none."""

    members: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, teams: Iterable[Team]) -> "Roster":
        return cls({t.name: frozenset(t.members) for t in teams if t.members})

    def teams_of(self, user: str) -> frozenset[str]:
        return frozenset(t for t, users in self.members.items() if user in users)


def teams_of(identity: Identity, roster: Roster) -> frozenset[str]:
    """The teams ``identity`` is in: the store's word where it keeps membership, else the
    config's."""
    return identity.teams if identity.teams is not None else roster.teams_of(identity.user)


def refusal(identity: Identity, roster: Roster, action: str, team: Optional[str] = None,
            what: str = "") -> Optional[str]:
    """Why ``identity`` may not do ``action`` to ``what`` (a job, a queue, a host) of ``team``,
    or None if it may. The words name who the caller is and the role the action needs."""
    if action not in ACTIONS:
        raise ValueError("unknown action %r" % action)
    if identity.admin:
        return None
    teams = teams_of(identity, roster)
    if action in TEAM_ACTIONS and team is not None and team in teams:
        return None
    if action in TEAM_ACTIONS and team is not None:
        needs = "you must be in team %s, or an admin" % team
    else:
        needs = "you must be an admin"
    about = " ".join(w for w in (_VERBS[action], what) if w)
    if action in TEAM_ACTIONS:
        about += " of team %s" % team if team is not None else " of no team"
    who = "%s (in %s, not an admin%s)" % (
        identity.user, "%s %s" % (noun_for(len(teams), "team"), ", ".join(sorted(teams)))
        if teams else "no team",
        "" if identity.teams is not None or roster.members else
        "; no [[teams]] of the config lists members, so only an admin acts")
    return "refused: you are %s; to %s %s" % (who, about, needs)


def check(identity: Identity, roster: Roster, action: str, team: Optional[str] = None,
          what: str = "") -> None:
    """Denied, with ``refusal``'s words, unless ``identity`` may do ``action``."""
    why = refusal(identity, roster, action, team, what)
    if why is not None:
        raise Denied(why)
