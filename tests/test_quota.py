"""Team quotas in GPUs (fractions count) and the order pending jobs are served in. Pure."""

from __future__ import annotations

from dataclasses import replace

from fractui.config import Config, TeamConfig
from fractui.sched.quota import HeldTo, fair_order, quota_of, team_usage, within_quota
from fractui.store.model import Job, KeptTerms, Slot

TEAMS = (TeamConfig("a", quota_gpus=1.5, weight=2), TeamConfig("b", quota_gpus=1,
                                                                 over_quota=True))


def job(i: int, team: str, state: str = "pending", charge: float = 0.0, borrowed: bool = False,
        queue: str = "q", at: float = 0.0) -> Job:
    slot = Slot("h", (0,), charge=charge) if state != "pending" else None
    return Job(i, queue, team, "n", ("x",), {}, state, at or float(i), 0.0, slot=slot,
               preemptible=borrowed)


def test_usage_counts_fractions_held_and_borrowed_and_pending_jobs():
    usage = {u.name: u for u in team_usage([
        job(1, "a", "running", 0.25), job(2, "a", "placed", 3 / 7), job(3, "a"),
        job(4, "b", "running", 1.0), job(5, "b", "running", 0.5, borrowed=True),
        job(6, "b", "done", 1.0), job(7, "ghost", "running", 1.0)], TEAMS)}
    assert round(usage["a"].used, 6) == round(0.25 + 3 / 7, 6) and usage["a"].pending == 1
    assert (usage["b"].used, usage["b"].borrowed, usage["b"].within) == (1.5, 0.5, 1.0)
    assert round(usage["a"].room(), 6) == round(1.5 - 0.25 - 3 / 7, 6)
    assert within_quota(usage, "a", 0.8) and not within_quota(usage, "a", 0.9)
    assert not within_quota(usage, "b", 0.01) and not within_quota(usage, "ghost", 0.0)
    assert within_quota({}, None, 5.0)  # no teams configured: no quotas


def test_a_moving_job_holds_within_the_quota_each_of_its_slots_where_it_is_not_borrowed():
    """While it stops to move, a job holds the larger of its two slots; within its team's
    quota, each counts only where it is not borrowed (preemptible there)."""
    out = replace(job(1, "b", "stopping", 0.25), move_to=Slot("h", (1,), charge=1.0),
                  move_borrowed=True)  # within the quota now, moving to a borrowed slot
    (u,) = [u for u in team_usage([out], TEAMS) if u.name == "b"]
    assert (u.used, u.borrowed, u.within) == (1.0, 0.75, 0.25)
    back = replace(out, preemptible=True, move_borrowed=False)  # borrowed now, moving within
    (u,) = [u for u in team_usage([back], TEAMS) if u.name == "b"]
    assert (u.used, u.borrowed, u.within) == (1.0, 0.0, 1.0)


def test_the_team_furthest_below_its_weighted_share_goes_first_then_priority_then_age():
    usage = {u.name: u for u in team_usage([job(1, "a", "running", 1.0),
                                            job(2, "b", "running", 0.6)], TEAMS)}
    # a: 1.0 / weight 2 = 0.5 ; b: 0.6 / 1 = 0.6
    pending = [job(10, "b", queue="hi"), job(11, "a", at=50), job(12, "a", queue="hi", at=60)]
    order = fair_order(pending, usage, {"hi": 5})
    assert [j.id for j in order] == [12, 11, 10]


def test_the_quota_a_placement_is_held_to_is_its_configured_teams_or_none():
    """One source for the scheduler's decisions and placements by hand: the team's configured
    quota (over_quota or not: a borrowed placement is not held to it at all); none without
    teams, for a job of no team, or of a team the config does not have."""
    assert [quota_of(TEAMS, t) for t in ("a", "b", "ghost", None)] == [1.5, 1, None, None]
    assert quota_of((), "a") is None and quota_of((TeamConfig("z"),), "z") == 0.0


def test_a_team_whose_kept_quota_is_unread_is_held_as_past_it_never_within():
    """A team whose row of the kept quotas the store cannot read, the only row kept: no quota
    is known of any team, so no use counted; a placement of it was let through as within
    (nothing to be past) or held to the placer's config as if no scheduler had kept any. It
    is past a quota not known, whatever it takes, and nothing is held to at the write."""
    config = Config(path=None, teams=(TeamConfig("a", quota_gpus=4),))
    held = HeldTo.of([], config, KeptTerms({}, {"a": "store s, its row of team_terms: …"}))
    assert held.past("a", 0.25) == ("is of team a, whose quota (the scheduler's) is not known: "
                                    "store s, its row of team_terms: …")
    assert held.quota("a") is None and held.config is None
