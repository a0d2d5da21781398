"""``fractui teams``: each configured team's standing as the scheduler sees it — its quota, the
GPUs it holds and borrows, its jobs on hosts and waiting, its recent usage, its weighted share,
the order the scheduler takes up the teams' waiting jobs now, and the quota (and host) it holds
for a job that has waited past reserve_after_s, as the last pass kept it — from the store
alone. The numbers are the TUI's Teams table's (fractui.sched.standing, on
fractui.sched.quota's ``team_usage``), the order the pass's own (``queueing.team_order``) and
the holds the pass's own (``PassResult.held``, kept by the lease holder): none is computed
again here."""

from __future__ import annotations

import argparse
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence

from fractui.checked_store import open_checked_store
from fractui.config import Config
from fractui.sched.quota import TeamUsage, team_usage, teams_gone
from fractui.sched.starved import Starved
from fractui.store.model import ACTIVE, Job
from fractui.terminal import one_line, print_json, say, table, width
from fractui.sched.standing import (Reserved, UsageRead, bounds_of, kept, next_of, next_order,
                                   placed, reserved, scheduled, standing, waiting)
from fractui.words import NO_SCHEDULER, failing_passes

HEADER = ("TEAM", "QUOTA", "HELD", "BORROWED", "RUNNING", "PENDING", "RECENT", "SHARE", "NEXT")
CAPS = (32,) + (None,) * 7  # the widest each column but the last (NEXT) may be: the
# team's name; a number is never cut (terminal.table)
NO_TEAMS = ("the config has no [[teams]]: no team's standing to show (an admin's config lists "
            "them; copy its [[teams]] into yours; fractui jobs shows what runs and waits)")


def teams(config: Config, args: argparse.Namespace) -> int:
    """Every configured team's standing (``--team``: that one's), read once from the store's
    active jobs and the usage records of the fair-share window, at the store's time."""
    if args.team is not None:
        config.team(args.team)  # a typo: exit 2 with the close name, before any store is read
    if not config.teams:  # nothing to read the store for: said, as doctor says no hosts
        say(NO_TEAMS)
        if args.json:
            print_json({"teams": [], "as_of": None, "scheduler": None,
                        "usage_weight": config.fairshare.usage_weight})
        return 0
    fair, mine = config.fairshare, {t.name for t in config.teams}
    store = open_checked_store(config, hear=False, make=False)
    try:
        now = store.now()
        terms = store.team_terms()
        jobs = store.jobs(ACTIVE)
        lease = store.lease_holder()
        # (an old copy's quotas: the holder's; who writes a damaged row again: by the lease)
        config, unlike = kept(config, terms, jobs, lease is not None)
        usage = UsageRead.of(store.usage(now - fair.window_s, now), config, now)
        trouble = store.trouble()
        held = store.waiting_bounds()
        holds = store.team_holds()
    finally:
        store.close()
    shown, starved = standing(jobs, config, usage, now, terms)
    bounds = bounds_of(shown, held)
    order = next_order(jobs, scheduled(config, terms), usage)  # (the passes' turns)
    if args.team is not None:
        shown = [u for u in shown if u.name == args.team]
        starved = [s for s in starved if s.team == args.team]
    holding = reserved(holds, jobs, shown, terms)
    unplaced = {u.name for u in shown if not placed(u.name, terms)}
    for u in shown:  # an old copy of the admin's config: its quotas are not the ones held
        if u.name in unlike:
            say(unlike[u.name])
    gone = [] if args.team is not None else unconfigured(jobs, config, usage)
    if trouble is not None:  # every waiting job's why, and this order, wait for a pass
        say(failing_passes(trouble))
    if lease is None and jobs:  # nothing placed or launched: the order is only a standing
        say(NO_SCHEDULER)
    if args.json:
        print_json({"teams": [_record(u, starved, holding, order, fair.usage_weight,
                                      bounds[u.name], now, u.name in mine,
                                      u.name not in unplaced, terms.unread.get(u.name))
                              for u in shown] + [
                                          _gone_record(u) for u in gone],
                    "as_of": now, "scheduler": lease[0] if lease else None,
                    "usage_weight": fair.usage_weight})
    else:
        for line in lines(shown, starved, order, fair.usage_weight, bounds, holding, now,
                          gone, unplaced):
            print(line)
    return 0


def unconfigured(jobs: Sequence[Job], config: Config, usage: UsageRead) -> List[TeamUsage]:
    """The teams the config lacks that the store holds active jobs of (one removed while its
    jobs still hold GPUs or wait), in name order, counted as ``team_usage`` counts a
    configured team's. The scheduler gives them no quota, share or turn: shown here only, so
    the GPUs they hold are not missing from the listing (as ``queues`` lists a queue gone)."""
    return team_usage(jobs, teams_gone(jobs, config.teams), usage.recent)


def gone_words(u: TeamUsage) -> str:
    """What a team the config lacks is said to be (its line after the table, its JSON's)."""
    return ("not in this config: the store holds active jobs of it (%.2f GPUs held), "
            "submitted under a config that had it" % u.used)


def lines(shown: Sequence[TeamUsage], starved: Sequence[Starved], order: Sequence[str],
          usage_weight: float, bounds: Mapping[str, int], holding: Sequence[Reserved] = (),
          now: float = 0.0, gone: Sequence[TeamUsage] = (),
          unplaced: Collection[str] = ()) -> List[str]:
    """The table (the teams the config lacks, ``gone``, last: "?" for what the config would
    say; SHARE "-" for a team the scheduler does not take up, ``unplaced``: it ranks none), a
    line for each starved team, each team's hold (the TUI's words; its job's wait as of
    ``now``) and each team gone, and what SHARE, NEXT and PENDING's bound are: the ranking's
    numbers read as a promise would mislead."""
    rows = []
    for u in shown:
        place = next_of(u.name, order)
        rows.append([u.name, "%g" % u.quota, "%.2f" % u.used, "%.2f" % u.borrowed,
                     str(u.running), waiting(u, bounds[u.name]), "%.2f" % u.recent,
                     "-" if u.name in unplaced else "%.2f" % u.share(usage_weight),
                     "-" if place is None else str(place)])
    rows += [[u.name, "?", "%.2f" % u.used, "%.2f" % u.borrowed, str(u.running),
              str(u.waiting), "%.2f" % u.recent, "?", "-"] for u in gone]
    out = table(HEADER, rows, CAPS, width())
    out += ["starved " + s.words() for s in starved]
    out += ["reserved " + r.words(now) for r in holding]
    out += ["%s: %s" % (one_line(u.name), gone_words(u)) for u in gone]  # a store's name,
    #                                                                      as its cell
    blend = ("blended with RECENT by [fairshare] usage_weight %g" % usage_weight
             if usage_weight > 0 else "(RECENT does not count: [fairshare] usage_weight 0)")
    out.append("SHARE: GPUs held within quota %s, over the team's weight; NEXT: the order the "
               "scheduler takes up the teams' waiting jobs now, lowest SHARE first (it ranks "
               "again after each placement); PENDING: the team's jobs waiting / how many may "
               "(its max_waiting, as the scheduler last wrote it to the store)" % blend)
    return out


def _record(u: TeamUsage, starved: Sequence[Starved], holding: Sequence[Reserved],
            order: Sequence[str], usage_weight: float, max_waiting: int,
            now: float, configured: bool = True, placed: bool = True,
            not_known: Optional[str] = None) -> Dict[str, Any]:
    """A team as ``teams --json`` prints it (docs/cli.md, JSON output); ``configured``:
    whether this config has it (not: one the scheduler holds, standing.held_beyond);
    ``placed``: whether the scheduler takes it up (not: no share, standing.placed);
    ``not_known``: why the quota the scheduler holds it to is not known (its kept row
    unread: this config's is shown, as the table's line on stderr says), else None."""
    s = next((s for s in starved if s.team == u.name), None)
    r = next((r for r in holding if r.team == u.name), None)
    return {"name": u.name, "configured": configured, "quota": u.quota,
            "quota_not_known": not_known, "held": u.used,
            "borrowed": u.borrowed,
            "within": u.within, "running": u.running, "pending": u.pending,
            "waiting": u.waiting, "max_waiting": max_waiting,
            "recent": u.recent, "weight": u.weight, "over_quota": u.over_quota,
            "share": u.share(usage_weight) if placed else None, "next": next_of(u.name, order),
            "starved": None if s is None else {"waiting": s.waiting, "waited_s": s.waited_s,
                                               "room": s.room, "reason": s.reason},
            "reserved": None if r is None else {
                "job": r.job.id, "name": r.job.name, "charge": r.hold.charge,
                "host": r.hold.host, "waited_s": r.waited(now)}}


def _gone_record(u: TeamUsage) -> Dict[str, Any]:
    """A team the config lacks as ``teams --json`` prints it: ``_record``'s keys, the store's
    numbers, None for what only the config (or the scheduler's ranking of it) would say."""
    record = dict.fromkeys(_record(u, (), (), (), 0.0, 0, 0.0))
    record.update(name=u.name, configured=False, held=u.used, borrowed=u.borrowed,
                  running=u.running, pending=u.pending, waiting=u.waiting, recent=u.recent)
    return record
