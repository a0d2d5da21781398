"""Each team's standing in the queue panel: quota, held, borrowed, recent usage, and who is
starved with why — the pure rule, and the panel on a frozen fleet, whose usage records are read
off the UI thread at most once a minute."""

from __future__ import annotations

import dataclasses
import threading

from fractui.config import Config, TeamConfig, TuiSettings
from fractui.sched.quota import TeamUsage, team_usage
from fractui.sched.standing import next_of
from fractui.sched.starved import STARVED_S, Starved, last_starts, starved
from fractui.store.model import Job, Slot, UsageRecord
from fractui.sched.standing import near_bound
from fractui.tui.queues import QueuePanel
from fractui.tui.app import FractuiApp
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from fractui.usage.fairshare import recent_gpus
from tests.test_tui_jobs import text_of
from tests.tui_frozen import LOGS, STARVED, STATES, frozen_app, pilot_test, settled

TWO = (TeamConfig("nlp", quota_gpus=2), TeamConfig("cv", quota_gpus=1))


def pending(i: int, team: str, waited_s: float, reason: str | None = "no room: no GPU fits"
            ) -> Job:
    return Job(i, "q", team, "n", ("x",), {}, "pending", NOW - waited_s, NOW, reason=reason)


def running(i: int, team: str, charge: float, started_s_ago: float) -> Job:
    return Job(i, "q", team, "n", ("x",), {}, "running", NOW - 3600, NOW,
               started_at=NOW - started_s_ago, slot=Slot("h", (0,), charge=charge))


def record(team: str, started_s_ago: float) -> UsageRecord:
    return UsageRecord(9, 0, team, "q", "u", "h", (0,), None, None, None, 1.0,
                       NOW - started_s_ago - 5, NOW - started_s_ago, NOW - 10)


def said(jobs, records=()) -> list[Starved]:
    usage = team_usage(jobs, TWO)
    return starved(usage, jobs, last_starts(records, jobs), NOW)


def test_a_team_with_room_whose_jobs_wait_with_nothing_started_is_starved_with_why():
    jobs = [pending(1, "nlp", 720), pending(2, "nlp", 60, "later"), pending(3, "nlp", 400),
            running(4, "nlp", 0.5, 3600)]
    assert said(jobs) == [Starved("nlp", 3, 720.0, "no room: no GPU fits", 1.5)]
    # no reason written yet: said so
    assert said([pending(1, "cv", 600, None)])[0].reason.startswith("no reason recorded yet")


def test_not_starved_at_its_quota_nor_waiting_briefly_nor_with_a_start_lately():
    at_quota = [pending(1, "cv", 900), running(2, "cv", 1.0, 3600)]
    brief = [pending(1, "nlp", STARVED_S - 1)]
    started = [pending(1, "nlp", 900), running(2, "nlp", 0.5, 60)]
    assert said(at_quota) == [] and said(brief) == [] and said(started) == []
    # a job bigger than the room left waits at its team's quota, not for the fleet
    at_its_quota = "team nlp has too little of its quota left (1.50 of 2.00 GPUs held)"
    assert said([pending(1, "nlp", 900, at_its_quota), running(2, "nlp", 1.5, 3600)]) == []
    assert said([pending(1, "nlp", 900, at_its_quota + "; last refused by h: busy"),
                 pending(3, "nlp", 200)]) == []
    assert said([pending(1, "nlp", 900, at_its_quota), pending(3, "nlp", 600)]) == [
        Starved("nlp", 2, 600.0, "no room: no GPU fits", 2.0)]
    # the words an older scheduler recorded for the same wait (a store shared with one) too
    before = "team nlp is at its quota (1.50 of 2.00 GPUs held); its slot, h gpu0, charges 1.00"
    assert said([pending(1, "nlp", 900, before), running(2, "nlp", 1.5, 3600)]) == []
    # a job back in its queue lately (its attempt preempted) has waited since, not since its
    # submit
    back = dataclasses.replace(pending(1, "nlp", 900), queued_at=NOW - 60)
    assert said([back]) == [] and said([dataclasses.replace(back, queued_at=NOW - 700)]) == [
        Starved("nlp", 1, 700.0, "no room: no GPU fits", 2.0)]
    # a job of the team that started lately and ended since counts too (its usage record)
    assert said([pending(1, "nlp", 900)], [record("nlp", 120)]) == []
    assert said([pending(1, "nlp", 900)], [record("nlp", 1200)]) != []


def test_a_team_is_near_its_bound_within_a_tenth_of_it_or_ten_jobs_whichever_is_more():
    """Near: within a tenth of the bound or 10 jobs of it, whichever is more, with a job
    waiting; at it (a bound of 0 too: every submit of a member refused) always."""
    def near(pending: int, bound: int) -> bool:
        return near_bound(TeamUsage("t", 1.0, 0.0, 0.0, pending), bound)

    assert [near(n, 10_000) for n in (8999, 9000, 10_000, 12_000)] == [False, True, True, True]
    assert [near(n, 50) for n in (39, 40, 49)] == [False, True, True]
    assert [near(n, 5) for n in (0, 1)] == [False, True]
    assert near(0, 0)


class CountingSource(Source):
    """The frozen source, counting its reads of usage records and of the teams' bounds on
    waiting jobs, and the threads they ran on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.usage_reads: list[str] = []
        self.bounds_reads: list[str] = []

    def read_usage(self, since: float, until: float):
        self.usage_reads.append(threading.current_thread().name)
        return super().read_usage(since, until)

    def read_bounds(self) -> dict[str, int]:
        self.bounds_reads.append(threading.current_thread().name)
        return super().read_bounds()


@pilot_test
async def test_the_panel_shows_each_teams_standing_and_who_is_starved():
    fleet = sample_fleet(16, states=STATES)
    records = fleet.usage()
    store = dataclasses.replace(fleet.store, jobs=tuple(
        dataclasses.replace(j, reason=STARVED[j.id]) if j.id in STARVED else j
        for j in fleet.store.jobs))
    source = CountingSource(fleet.statuses, store, logs=LOGS, usage=records,
                            bounds={"nlp": 2, "vision": 40})
    clock = [NOW]
    config = Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings())
    app = FractuiApp(source, config, clock=lambda: clock[0], ticks=lambda: clock[0])
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        panel = app.screen.query_one(QueuePanel)
        shown = text_of(panel.render())
        recent = recent_gpus(records, NOW, config.fairshare.half_life_s,
                             config.fairshare.window_s)
        assert recent["vision"] > recent["nlp"] > 0
        for team in panel.teams:  # a starved team is marked "!"
            mark = team.name + ("!" if team.name == "nlp" else "")
            line = next(x for x in shown.splitlines() if x.split()[:1] == [mark])
            place = next_of(team.name, panel.order)  # run and next: room for them at 160
            pend = {"nlp": "2/2"}.get(team.name, str(team.pending))  # at its bound: said so
            # speech's jobs, placed within its quota, hold 0.23 past it: borrowed (team_usage)
            borrowed = {"speech": "0.23"}.get(team.name, "—")
            assert line.split()[1:] == ["%.2f/%g" % (team.used, team.quota), borrowed,
                                        "%.2f" % recent.get(team.name, 0.0), pend,
                                        str(team.running),
                                        "—" if place is None else str(place)], line
        # nlp: 2.12 of 3 held, two jobs waiting, the oldest 5 minutes for the fleet, nothing
        # started since (the panel is narrow at 160 columns: the reason on a line of its own)
        assert "starved nlp: 2 waiting 5m00s, 0.88 of its quota free:\n  no room: no GPU in " \
               "the fleet has a free slice for it\n" in shown, shown
        assert len(source.usage_reads) == 1 and "MainThread" not in source.usage_reads
        assert source.bounds_reads and "MainThread" not in source.bounds_reads
        assert len(panel._rows) == 2 * len(panel.pending)  # all five, two lines each
        for _ in range(3):  # more store reads within the minute: no more usage reads
            app.screen.read_store()
            await app.workers.wait_for_complete()
        assert len(source.usage_reads) == 1
        clock[0] += 61
        app.screen.read_store()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(source.usage_reads) == 2 and "MainThread" not in source.usage_reads



@pilot_test
async def test_a_wall_clock_set_back_holds_no_usage_read_back():
    """The usage records are read again a minute later by the monotonic clock, though the
    wall clock was set back an hour meanwhile (NTP, date -s)."""
    fleet = sample_fleet(16, states=STATES)
    source = CountingSource(fleet.statuses, fleet.store, logs=LOGS, usage=fleet.usage())
    wall, ticks = [NOW], [1000.0]
    config = Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings())
    app = FractuiApp(source, config, clock=lambda: wall[0], ticks=lambda: ticks[0])
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        assert len(source.usage_reads) == 1
        wall[0] -= 3600
        ticks[0] += 61
        app.screen.read_store()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(source.usage_reads) == 2

@pilot_test
async def test_at_80x24_a_starved_team_is_marked_and_four_pending_rows_stay():
    app = frozen_app(reasons=STARVED)
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        panel = app.screen.query_one(QueuePanel)
        assert [s.team for s in panel.starved] == ["nlp"]
        shown = text_of(panel.render())
        assert "nlp!" in shown and "starved" not in shown  # no room for its line here
        assert len(panel._rows) == 4


def test_a_job_dated_ahead_of_now_has_waited_0_in_every_view_of_its_wait():
    """A job submitted from a machine whose clock runs 90 s ahead waits from after ``now``:
    ``fractui jobs``, the reserved hold of ``teams``, the queue panel's and the metrics'
    oldest wait, and the report's longest wait all say 0, by the one rule (Job.waited)."""
    from fractui.job_commands import waited
    from fractui.metrics.families import _queues
    from fractui.metrics.state import MetricsState
    from fractui.sched.standing import Reserved, queue_stats
    from fractui.store.model import Hold
    from fractui.usage.sentences import Waiting

    ahead = pending(1, "nlp", -90.0)
    assert ahead.waited(NOW) == 0.0 and waited(ahead, NOW) == 0.0
    assert Reserved("nlp", ahead, Hold(1, 1.0)).waited(NOW) == 0.0
    assert [s.wait_s for s in queue_stats([], [ahead], NOW)] == [0.0]
    assert Waiting.of([ahead], "team", NOW).longest_s == 0.0
    state = MetricsState(NOW, "me", [], [ahead], [], ["q"], True, True)
    oldest = _queues(state)[1]
    assert [s.value for s in oldest.samples] == [0.0]
