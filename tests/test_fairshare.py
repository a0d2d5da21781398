"""Fair share over time, pure: each team's recent GPUs (usage decayed with a half-life over a
window, integrated exactly), how it ranks teams, and the [fairshare] config."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fractui.config import (ConfigError, FairShareSettings, QueueConfig, TeamConfig,
                            load_config)
from fractui.sched.fleetview import HostView
from fractui.sched.queueing import Kept, schedule
from fractui.sched.quota import Recent, fair_order, team_usage
from fractui.store.model import Job, Slot, UsageRecord
from fractui.usage.fairshare import decayed_s, recent_gpus

HOUR = 3600.0
NOW = 1_000_000.0


def held(team: str | None, charge: float, start: float, end: float | None) -> UsageRecord:
    return UsageRecord(1, 0, team, "q", "u", "h", (0,), "L4", None, None, charge, start - 5,
                       start, end)


def by_sampling(start: float, end: float, half_life: float, n: int = 4000) -> float:
    """The same integral by Simpson's rule, an independent check of the closed form: over the
    last 40 half-lives of the interval (what lies before weighs under 2^-40 of it)."""
    start = max(start, end - 40 * half_life)
    step = (end - start) / n
    w = [2 ** (-(NOW - (start + i * step)) / half_life) for i in range(n + 1)]
    return step / 3 * (w[0] + w[-1] + 4 * sum(w[1:-1:2]) + 2 * sum(w[2:-1:2]))


times = st.floats(0, 200 * HOUR)
half_lives = st.floats(0.05 * HOUR, 1000 * HOUR)


@settings(max_examples=50, deadline=None)
@given(times, times, half_lives)
def test_the_closed_form_is_the_integral_of_the_weight(a, b, half_life):
    start, end = NOW - max(a, b), NOW - min(a, b)
    exact = decayed_s(start, end, NOW, half_life)
    assert exact == pytest.approx(by_sampling(start, end, half_life), rel=1e-4, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.001, 64), half_lives, st.floats(1, 20))
def test_c_gpus_held_over_the_whole_window_read_as_c(c, half_life, windows):
    window = half_life * windows
    recent = recent_gpus([held("a", c, NOW - window - 100, None)], NOW, half_life, window)
    assert recent["a"] == pytest.approx(c, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.1, 8), half_lives, st.floats(60, 10 * HOUR), st.floats(1, 10 * HOUR))
def test_the_same_usage_counts_less_the_older_it_is(c, half_life, length, older_by):
    window = 2 * half_life + 30 * HOUR  # every attempt whole within it
    late = held("late", c, NOW - length - 60, NOW - 60)
    early = held("early", c, late.started_at - older_by, late.ended_at - older_by)
    recent = recent_gpus([late, early], NOW, half_life, window)
    assert recent["early"] < recent["late"]
    # exactly: older by one half-life, half as much
    aged = held("aged", c, late.started_at - half_life, late.ended_at - half_life)
    both = recent_gpus([late, aged], NOW, half_life, window)
    assert both["aged"] == pytest.approx(both["late"] / 2, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 4), times, times), min_size=1, max_size=8))
def test_an_endless_half_life_is_the_plain_mean_over_the_window(attempts):
    window = 100 * HOUR
    records = [held("a", c, NOW - max(x, y), NOW - min(x, y)) for c, x, y in attempts]
    mean = sum(c * max(0.0, min(r.ended_at, NOW) - max(r.started_at, NOW - window))
               for (c, _, _), r in zip(attempts, records)) / window
    assert recent_gpus(records, NOW, math.inf, window).get("a", 0.0) == pytest.approx(
        mean, rel=1e-9, abs=1e-12)
    # and a half-life long against the window tends to it
    assert recent_gpus(records, NOW, 1e6 * window, window).get("a", 0.0) == pytest.approx(
        mean, rel=1e-5, abs=1e-9)


def test_usage_outside_the_window_or_of_no_team_counts_for_nothing():
    window = 10 * HOUR
    recent = recent_gpus([held("old", 2, NOW - 20 * HOUR, NOW - 11 * HOUR),
                          held(None, 5, NOW - HOUR, None),
                          held("edge", 1, NOW - 11 * HOUR, NOW - 9 * HOUR)], NOW, HOUR, window)
    assert "old" not in recent or recent["old"] == 0.0
    assert None not in recent
    # only the hour inside the window counts, as weighted there
    assert recent["edge"] == pytest.approx(
        decayed_s(NOW - 10 * HOUR, NOW - 9 * HOUR, NOW, HOUR) /
        decayed_s(NOW - 10 * HOUR, NOW, NOW, HOUR), rel=1e-9)


def test_a_running_attempt_counts_up_to_now():
    running = recent_gpus([held("a", 1, NOW - HOUR, None)], NOW, HOUR, 4 * HOUR)
    ended = recent_gpus([held("a", 1, NOW - HOUR, NOW)], NOW, HOUR, 4 * HOUR)
    assert running == ended and running["a"] > 0


TEAMS = (TeamConfig("a", quota_gpus=4), TeamConfig("b", quota_gpus=4),
         TeamConfig("c", quota_gpus=4, weight=2))


def job(i: int, team: str, state: str = "pending", charge: float = 0.0) -> Job:
    slot = Slot("h", (0,), charge=charge) if state != "pending" else None
    return Job(i, "q", team, "n", ("x",), {}, state, float(i), 0.0, slot=slot)


def test_with_equal_holdings_the_team_with_less_recent_usage_goes_first():
    jobs = [job(1, "a", "running", 1.0), job(2, "b", "running", 1.0)]
    pending = [job(10, "a"), job(11, "b")]
    recent = {"a": 2.0, "b": 0.5}
    usage = {u.name: u for u in team_usage(jobs, TEAMS, recent)}
    assert [j.id for j in fair_order(pending, usage, {}, 0.5)] == [11, 10]
    assert [j.id for j in fair_order(pending, usage, {}, 1.0)] == [11, 10]
    # usage_weight 0: today's order — equal holdings, then age
    assert [j.id for j in fair_order(pending, usage, {}, 0.0)] == [10, 11]
    plain = {u.name: u for u in team_usage(jobs, TEAMS)}
    assert fair_order(pending, plain, {}) == fair_order(pending, usage, {}, 0.0)


def test_the_share_blends_holding_and_recent_usage_over_the_weight():
    usage = {u.name: u for u in team_usage([job(1, "c", "running", 3.0)], TEAMS, {"c": 1.0})}
    assert usage["c"].recent == 1.0
    assert usage["c"].share(0.0) == 1.5
    assert usage["c"].share(0.25) == pytest.approx((0.75 * 3 + 0.25 * 1) / 2)
    assert usage["c"].share(1.0) == 0.5


def test_recent_is_rounded_and_counts_for_nothing_at_weight_zero():
    assert Recent.of(0.0, {"a": 1.23456}) == Recent()
    assert Recent.of(0.5, {"b": 0.0004, "a": 1.23456}) == Recent(0.5, (("a", 1.235),
                                                                      ("b", 0.0)))
    assert Recent.of(0.5, {"a": 1.2341}) == Recent.of(0.5, {"a": 1.2339})


# -- the config --

def load_text(text: str, tmp_path) -> object:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return load_config(str(path))


def test_fair_share_is_off_by_default_and_its_keys_load(tmp_path):
    assert load_text("", tmp_path).fairshare == FairShareSettings(24.0, 168.0, 0.0)
    got = load_text("[fairshare]\nhalf_life_h = 12\nwindow_h = 48\nusage_weight = 0.5\n",
                    tmp_path)
    assert got.fairshare == FairShareSettings(12.0, 48.0, 0.5)
    assert got.fairshare.half_life_s == 12 * HOUR and got.fairshare.window_s == 48 * HOUR
    # the default window stays within what usage keeps
    assert load_text("[usage]\nkeep_days = 2\n", tmp_path).fairshare.window_h == 48.0


@pytest.mark.parametrize("text, line, said", [
    ("[fairshare]\nusage_weight = 1.5\n", 2, "fairshare.usage_weight must be from 0 to 1, got 1.5"),
    ("[fairshare]\nhalf_life_h = 10\nwindow_h = 5\n", 3,
     "fairshare.window_h (5 h) must be at least fairshare.half_life_h (10 h)"),
    ("[fairshare]\nhalf_life_h = 200\n", 2,
     "fairshare.window_h (168 h) must be at least fairshare.half_life_h (200 h)"),
    ("[usage]\nkeep_days = 1\n[fairshare]\nwindow_h = 30\n", 4,
     "fairshare.window_h (30 h) is longer than usage is kept (usage.keep_days = 1: 24 h)"),
    ("[fairshare]\nhalf_life = 3\n", 2, "unknown key 'half_life' in [fairshare]"),
    ("[fairshare]\nusage_weight = \"half\"\n", 2, "fairshare.usage_weight must be a number"),
])
def test_bad_fair_share_settings_are_named_with_their_line(text, line, said, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(text, tmp_path)
    assert err.value.line == line, str(err.value)
    assert said in str(err.value)


# -- the pass: recent usage is among what it compares --

def test_a_pass_with_the_same_recent_usage_is_a_comparison_and_new_usage_ranks_anew():
    gpus = [{"index": 0, "uuid": "GPU-0", "name": "L4", "memory_mib": 23034,
             "mig_mode": False, "instances": [], "layout_version": "v0", "processes": []}]
    hello = {"cpus": 64, "memory_mib": 512 * 1024, "privileges": {"mig_changes": True},
             "gpus": gpus}
    views = [HostView("h", "online", hello, {"gpus": gpus}, {})]
    whole = QueueConfig("whole", gpus=1)
    teams = (TeamConfig("a", quota_gpus=1), TeamConfig("b", quota_gpus=1))
    jobs = [Job(1, "whole", "a", "n", ("x",), whole.request(), "pending", 1.0, 0.0),
            Job(2, "whole", "b", "n", ("x",), whole.request(), "pending", 2.0, 0.0)]
    kept = Kept()
    a_lately = Recent.of(1.0, {"a": 2.0, "b": 0.5})
    first = schedule(views, jobs, (whole,), teams, "u", kept=kept, recent=a_lately)
    assert [d.job for d in first.decisions] == [2]  # b used less lately: its job goes
    again = schedule(views, jobs, (whole,), teams, "u", kept=kept,
                     recent=Recent.of(1.0, {"a": 2.0001, "b": 0.5}))
    assert again is first  # the same to a thousandth: nothing new, the last result
    b_lately = schedule(views, jobs, (whole,), teams, "u", kept=kept,
                        recent=Recent.of(1.0, {"a": 0.5, "b": 2.0}))
    assert [d.job for d in b_lately.decisions] == [1]
    # weight 0: today's order (by age), whatever the usage
    plain = schedule(views, jobs, (whole,), teams, "u", recent=Recent.of(0.0, {"a": 2.0}))
    assert [d.job for d in plain.decisions] == [1]
