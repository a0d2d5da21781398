"""The report screen (``R``, ``:report``) on a real SQLite store that ran a known job stream
(tests/tui_frozen.usage_store): its table holds report.build's numbers for the same records —
and the ones worked out by hand from the stream — for each range and grouping; its headline
says fractui report's sentences (what sharing saved, GPU time and how much is kept, % busy, the
jobs waiting now) in whole words at 80x24 and 200x50; the plots leave out what was not
measured; an empty store and no store are said in words."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from textual.geometry import Region
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from fractui.cells import cell_len
from fractui.store.model import CANCELLED, PENDING, GpuTime, Slot
from fractui.store.sqlite import SqliteStore
from fractui.tui.bars import owner_marks
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.help import HelpScreen
from fractui.tui.report_plots import Axis, axis_for, runs, utilisation
from fractui.tui.report_view import MEMORY, ReportScreen
from fractui.tui.sample import NOW
from fractui.usage.report import Series, build
from fractui.usage.sentences import hours, local, unsampled_memory_words
from tests.test_tui_pilot import palette
from tests.tui_frozen import H, frozen_app, notices, pilot_test, settled, usage_store


def report(app) -> ReportScreen:
    assert isinstance(app.screen, ReportScreen), app.screen
    return app.screen


async def opened(app, pilot) -> ReportScreen:
    """The report screen, opened with ``R`` once the fleet has settled, and read."""
    await settled(pilot)
    await pilot.press("R")
    await settled(pilot)
    return report(app)


def lines(screen: ReportScreen) -> list[str]:
    """The headline's lines, as the screen holds them (before they wrap to its width)."""
    return str(screen.query_one("#report-headline").render()).splitlines()


def drawn(part) -> list[str]:
    """``part``'s lines as drawn, read over the whole of its region (``outer_size``: its
    padding too): over its content's size they lose their last cell, a word that ends there
    read as cut."""
    return [strip.text.rstrip() for strip in part.render_lines(
        Region(0, 0, part.outer_size.width, part.outer_size.height))]


def held(screen: ReportScreen) -> dict[str, str]:
    """The table's held column, by group (the total included)."""
    at = screen.titles.index("held GPU-h")
    return {row[0]: row[at] for row in screen.rows}


def expected(store, since: float, by: str) -> dict[str, str]:
    """report.build on the store's records of [since, NOW), as the table shows it."""
    r = build(store.usage(since, NOW), store.gpu_time(since, NOW), since, NOW, by, NOW)
    return {g.key: hours(g.held_h) for g in r.groups + [r.total]}


@pilot_test
async def test_r_opens_the_report_ranges_and_groupings_switch_and_esc_returns(tmp_path):
    store = usage_store(os.path.join(tmp_path, "store.db"))
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(app, pilot)
        # the last 24 h, by team: by hand from the stream (charge x hours held)
        # nlp: 0.5 x (5 + 7 h 50 min + 7 + 3) h; vision: 0.25 x 4 + 1 x (10 h - 2 min);
        # speech: 0.5 x (6 h - 1 min - 15 min) + 0.25 x 40 min
        assert held(screen) == {"nlp": "11.42", "vision": "10.97", "speech": "3.03",
                                "total": "25.42"} == expected(store, NOW - 24 * H, "team")
        assert [row[0] for row in screen.rows] == ["nlp", "vision", "speech", "total"]
        util = screen.titles.index("util")
        assert [row[util] for row in screen.rows] == ["—", "99%", "80%", "95%"]  # nlp: MIG
        # as fractui report says them: what nlp used is not known (MIG), memory to 0.01
        used, memory = screen.titles.index("used GPU-h"), screen.titles.index("mem GiB-h")
        assert [(row[used], row[memory]) for row in screen.rows] == [
            ("—", "514.32"), ("10.87", "700.85"), ("2.43", "52.99"), ("13.30", "1268.16")]
        # every attempt held its GPU while it was online: held while online is all held;
        # idle, each GPU's 24 h less its attempts' union: a10-1 gpu0 4 h (#1) and 5 h 59 min
        # (#5, #7), a100-1 gpu0 9 h (#2, #3), gpu1 7 h (#3, #6), h100-1 gpu1 9 h 58 min (#4)
        assert lines(screen) == [
            "without sharing, these jobs would have needed 5 GPUs at peak (1.80 on average); "
            "they used 3 (1.50): sharing saved 2 GPUs at peak, 0.30 on average",
            "GPUs online 96.00 GPU-h, held while online 25.42 (26 %), idle with nothing on "
            "them 60.05 (63 %)",
            "used 13.30 GPU-h of the 14.00 held where NVML measured it (95 % busy)",
            "no measure: GPU-hours held where NVML gives no utilisation (MIG slices, or not "
            "sampled yet): 11.42 of 25.42"]
        assert "nlp 11.42" in "\n".join(drawn(screen.query_one("#report-unmeasured")))

        # a job that started 2 h ago on a quarter, written after the screen read: r reads it
        job = store.submit("quarter", "vision", "late", ["true"], {}, "alice@ws")
        store.place(job.id, Slot("a10-1", (0,), memory_mib=5760, charge=0.25), "s", "placed")
        store.started(job.id, "j8", NOW - 2 * H, "s", "started", model="A10")
        assert held(screen)["vision"] == "10.97"
        await pilot.press("r")
        await settled(pilot)
        assert held(screen)["vision"] == "11.47"  # + 0.25 x 2 h

        await pilot.press("h")  # the last hour: #3 and #6 of nlp, #4, #5, #7 and #8
        await settled(pilot)
        assert screen.span.key == "hour"
        assert held(screen) == {"vision": "1.25", "nlp": "1.00", "speech": "0.54",
                                "total": "2.79"} == expected(store, NOW - H, "team")

        await pilot.press("g")  # by queue
        await settled(pilot)
        assert screen.by == "queue" and screen.titles[0] == "queue"
        assert held(screen) == {"whole": "1.00", "mig-3g": "1.00", "10g": "0.38",
                                "quarter": "0.42", "total": "2.79"} == expected(
            store, NOW - H, "queue")

        await pilot.press("g", "g")  # by host: the GPUs' idle time shows
        await settled(pilot)
        assert screen.by == "host" and "idle GPU-h" in screen.titles

        await pilot.press("a")  # all that is kept: from the oldest GPU time, 24 h ago
        await settled(pilot)
        assert screen.computed.report.since == NOW - 24 * H
        assert held(screen) == expected(store, NOW - 24 * H, "host")

        await pilot.press("question_mark")  # ? lists the screen's keys with their ids
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert {"report.hour", "report.group", "report.refresh", "report.back"} <= {
            binding_id for _, _, binding_id in app.screen.keys}
        await pilot.press("escape")
        await pilot.pause()

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)
        await palette(pilot, "report")  # the palette opens it too, as it was left
        await settled(pilot)
        assert report(app).by == "host" and report(app).span.key == "all"
    store.close()


@pilot_test
async def test_an_empty_store_and_no_store_say_why_there_is_nothing(tmp_path):
    store = SqliteStore(os.path.join(tmp_path, "empty.db"))
    for app, words in ((frozen_app(usage=store), "No usage in the last 24 h: no job held a "
                        "slice in this range"),
                       (frozen_app(sampled=False), "No store: usage is recorded "
                                                 "in the store, by the scheduler, as jobs run. "
                                                 "A config with [[queues]], or a [store] url, "
                                                 "gives fractui its store.")):
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await opened(app, pilot)
            assert words in str(screen.query_one("#report-note").render())
            assert not screen.query_one("#report-plots").display
            assert not screen.query_one("#report-table").display
    store.close()


async def shown(store, part: str) -> str:
    """The text of the report screen's ``part`` (its note, its headline) over ``store``, as one
    line: the store closed after."""
    app = frozen_app(usage=store)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await opened(app, pilot)
            return " ".join(str(screen.query_one(part).render()).split())
    finally:
        store.close()


def cancelled_waiting(path: str, at: float, *names: str) -> None:
    """Jobs submitted and cancelled while they waited, at ``at``, into the store at ``path``."""
    store = SqliteStore(path, clock=lambda: at)
    for name in names:
        job = store.submit("q", "vision", name, ["x"], {}, "ann@laptop")
        store.ended(job.id, (PENDING,), CANCELLED, "cancelled by ann", "ann", "no", "cancel")
    store.close()


@pilot_test
async def test_jobs_that_ended_waiting_are_said_on_the_screen_as_by_fractui_report(tmp_path):
    """The screen counts them as the CLI's report does: in the note where no job held a slice,
    and beside the totals where one did."""
    path = os.path.join(tmp_path, "store.db")
    cancelled_waiting(path, NOW - 3600, "a", "b")
    note = await shown(SqliteStore(path, clock=lambda: NOW), "#report-note")
    assert "2 jobs (2 cancelled) ended in this range while waiting to start: waits and " \
        "outcomes count only attempts that started." in note, note
    used = usage_store(os.path.join(tmp_path, "used.db"))
    cancelled_waiting(os.path.join(tmp_path, "used.db"), NOW - 1800, "late")
    headline = await shown(used, "#report-headline")
    assert "1 job (1 cancelled) ended in this range while waiting to start: waits and " \
        "outcomes count only attempts that started" in headline, headline


@pilot_test
async def test_gpu_time_with_no_job_says_how_much_of_it_was_idle_not_all_of_it(tmp_path):
    """No job held a slice, but a process outside fractui ran on one of two GPUs for the
    bucket: online 600 s, idle 300 s — never "all of it idle"."""
    store = SqliteStore(os.path.join(tmp_path, "store.db"), clock=lambda: NOW)
    store.keep_gpu_time([GpuTime("h", 0, NOW - 3600, "L4", online_s=300, idle_s=300),
                         GpuTime("h", 1, NOW - 3600, "L4", online_s=300, idle_s=0)])
    note = await shown(store, "#report-note")
    assert "online 0.17 GPU-h, 0.08 of it idle" in note, note
    assert "all of it idle" not in note


@pilot_test
async def test_a_store_that_fails_is_said_and_the_report_of_the_range_shown_stays(tmp_path):
    path = os.path.join(tmp_path, "store.db")
    store = usage_store(path)
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(app, pilot)
        db = sqlite3.connect(path)  # the store damaged under the screen
        db.execute("DROP TABLE usage")
        db.commit()
        db.close()
        await pilot.press("r")  # the same range: its report stays, the failure is said
        await settled(pilot)
        assert held(screen)["nlp"] == "11.42" and screen.query_one("#report-table").display
        assert any("no such table: usage" in n.message for n in notices(app))
        await pilot.press("w")  # another range: nothing of it to show but why
        await settled(pilot)
        note = str(screen.query_one("#report-note").render())
        assert "the store could not be read" in note and "no such table: usage" in note
        assert not screen.query_one("#report-table").display
    store.close()


def waiting(path: str, at: float, team: str, queue: str, *names: str) -> None:
    """Jobs submitted at ``at`` into the store at ``path``, still waiting to start."""
    store = SqliteStore(path, clock=lambda: at)
    for name in names:
        store.submit(queue, team, name, ["x"], {}, "ann@laptop")
    store.close()


WAITING_BY_TEAM = ("3 jobs waiting to start now (nlp 2, vision 1), the longest for 10m00s "
                   "(job 8): WAIT counts a wait once it ends in a start")


@pilot_test
async def test_the_jobs_waiting_now_are_said_by_group_with_the_longest_wait(tmp_path):
    """Beside the usage of the known stream, three jobs wait: vision's #8 for 10 minutes,
    nlp's #9 and #10 for 2; fractui report's line says them, by the table's grouping."""
    path = os.path.join(tmp_path, "store.db")
    store = usage_store(path)
    waiting(path, NOW - 600, "vision", "quarter", "wait-a")
    waiting(path, NOW - 120, "nlp", "mig-3g", "wait-b", "wait-c")
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(app, pilot)
        assert lines(screen)[-1] == WAITING_BY_TEAM
        await pilot.press("g")  # by queue
        await settled(pilot)
        assert lines(screen)[-1] == (
            "3 jobs waiting to start now (mig-3g 2, quarter 1), the longest for 10m00s (job 8): "
            "WAIT counts a wait once it ends in a start")
        await pilot.press("g", "g")  # by host: a waiting job has none
        await settled(pilot)
        assert lines(screen)[-1] == ("3 jobs waiting to start now, the longest for 10m00s "
                                     "(job 8): WAIT counts a wait once it ends in a start")
    store.close()


@pilot_test
async def test_the_screen_counts_to_the_stores_now_as_fractui_report_does(tmp_path):
    """The store's clock is two hours ahead of this machine's (the TUI's clock, NOW): the
    screen's range ends at the store's now, as fractui report's does (docs/decisions.md, "The
    report's now is the store's"), so #8 has waited 2h10m, not the 10m00s of the local
    clock, and the held hours are build's at the store's now."""
    path = os.path.join(tmp_path, "store.db")
    usage_store(path).close()
    waiting(path, NOW - 600, "vision", "quarter", "wait-a")
    store = SqliteStore(path, clock=lambda: NOW + 2 * H)
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(app, pilot)
        assert lines(screen)[-1] == ("1 job waiting to start now (vision 1), the longest for "
                                     "2h10m (job 8): WAIT counts a wait once it ends in a start")
        now = NOW + 2 * H
        r = build(store.usage(now - 24 * H, now), store.gpu_time(now - 25 * H, now),
                  now - 24 * H, now, "team", now, bucket_s=H)
        assert held(screen) == {g.key: hours(g.held_h) for g in r.groups + [r.total]}
    store.close()


@pilot_test
async def test_an_attempt_never_sampled_and_ended_by_its_hosts_clock_after_now_is_said(tmp_path):
    """A job ran 10 min and ended, its host's clock a minute ahead of the store's (its end
    dated after the screen's now), before its agent sampled it: the screen, whose ranges end
    now, counts it done and not running, as fractui report does, and its headline says, in
    fractui report's words, that the memory column leaves it out."""
    path = os.path.join(tmp_path, "store.db")
    usage_store(path).close()
    store = SqliteStore(path, clock=lambda: NOW)
    job = store.submit("quarter", "speech", "short", ["x"], {}, "dan@ws")
    store.place(job.id, Slot("a10-1", (0,), memory_mib=5760, charge=0.25), "sched", "placed")
    store.started(job.id, "j%d" % job.id, NOW - 600, "sched", "started", model="A10")
    store.ended(job.id, ("running",), "done", None, "sched", "done", "end", exit_code=0,
                ended_at=NOW + 60)
    r = build(store.usage(NOW - 24 * H, NOW), [], NOW - 24 * H, NOW, "team", NOW)
    (said,) = unsampled_memory_words(r.total, MEMORY)
    assert r.total.outcomes["done"] == 3 and r.total.running == 4  # #1, #5, it; #3, #4, #6, #7
    app = frozen_app(usage=store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await opened(app, pilot)
        assert said in lines(screen), lines(screen)
        assert said.startswith("mem GiB-h counts memory as sampled: 1 attempt holding 0.04 "
                               "GPU-h had no sample of it"), said
        (total,) = [row for row in screen.rows if row[0] == "total"]
        at = screen.titles.index
        assert (total[at("running")], total[at("ended")]) == (
            "4", "3 done 1 failed 1 requeued"), total
    store.close()


@pilot_test
async def test_a_store_whose_jobs_all_wait_says_them_in_its_note(tmp_path):
    """No job held a slice: the note says so, and who waits (never "nothing was asked for")."""
    path = os.path.join(tmp_path, "store.db")
    waiting(path, NOW - 90, "speech", "10g", "asr")
    note = await shown(SqliteStore(path, clock=lambda: NOW), "#report-note")
    assert note.endswith(" 1 job waiting to start now (speech 1), the longest for 1m30s "
                         "(job 1): WAIT counts a wait once it ends in a start."), note


@pilot_test
async def test_gpu_time_kept_for_part_of_the_range_is_said(tmp_path):
    """The known stream's GPU time kept for its last two hours only (no scheduler looked at
    the GPUs before). The store then keeps nothing before the first job's start, 19.5 h ago:
    of the hour buckets from there, 19 are written by now (the last, begun an hour ago, is
    written a minute after it ends), and of these one holds any; as fractui report says.
    Held while online in those 2 h: 0.5 x 1 h 45 min (#5) + 0.25 x 40 min (#7) on a10-1,
    2 x 0.5 x 2 h (#3, #6) on a100-1 gpu1, 2 h (#4) on h100-1; idle: a100-1 gpu0's 2 h."""
    path = os.path.join(tmp_path, "store.db")
    usage_store(path).close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM gpu_time WHERE bucket < ?", (NOW - 2 * H,))
    db.commit()
    db.close()
    headline = await shown(SqliteStore(path, clock=lambda: NOW), "#report-headline")
    assert "GPUs online 8.00 GPU-h, held while online 5.04 (63 %), idle with nothing on them " \
        "2.00 (25 %) GPU time is kept for 1 of the 19 buckets of 3600 s that began in this " \
        "range and are written: in the rest no scheduler looked at a reachable GPU (none " \
        "held the lease, or every host was away), and the GPUs' online, held and idle hours " \
        "leave them out used 13.30 GPU-h" in headline, headline


@pilot_test
async def test_the_headline_wraps_whole_words_at_75x24_80x24_and_200x50(tmp_path):
    """Every word of every line is drawn whole, within the screen's width, at each size (read
    as ``drawn``: at 75 columns a line's last word read as cut over its content's size)."""
    path = os.path.join(tmp_path, "store.db")
    store = usage_store(path)
    waiting(path, NOW - 600, "vision", "quarter", "wait-a")
    for size in ((75, 24), (80, 24), (200, 50)):
        app = frozen_app(usage=store)
        async with app.run_test(size=size) as pilot:
            headline = drawn((await opened(app, pilot)).query_one("#report-headline"))
            assert all(cell_len(line) <= size[0] for line in headline), headline
            words = " ".join(lines(report(app))).split()
            assert " ".join(headline).split() == words, (size, headline)
            assert "1 job waiting to start now (vision 1)" in " ".join(words)
    store.close()


def test_a_gap_breaks_a_line_and_is_never_drawn_as_zero():
    assert runs([1, 2, 3, 4, 5], [None, 0.5, 0.0, None, 2.0]) == [([2, 3], [0.5, 0.0]),
                                                                 ([5], [2.0])]
    assert runs([1, 2], [None, None]) == []


def test_the_time_axis_fits_the_range():
    assert axis_for(3600) == Axis("m", 60.0)
    assert axis_for(86400) == Axis("h", 3600.0)
    assert axis_for(7 * 86400) == Axis("d", 86400.0)
    assert axis_for(86400).ticks(86400) == ([-24.0, -18.0, -12.0, -6.0, 0.0],
                                            ["-24h", "-18h", "-12h", "-6h", "now"])
    assert axis_for(7 * 86400).ticks(7 * 86400)[1] == ["-7d", "-5.25d", "-3.5d", "-1.75d",
                                                       "now"]


def test_the_utilisation_plot_draws_only_what_was_measured():
    """Team a measured in the first minute only, team b never (MIG): one point, a's; b has
    no line at all, rather than one along 0 %."""
    s = Series([0.0, 60.0], 60.0, held={"a": [1.0, 1.0], "b": [0.5, 0.5]},
               used={"a": [0.5, 0.0], "b": [0.0, 0.0]}, demand=[2.0, 2.0],
               gpus_used=[1.0, 1.0], wait_median_s=[None, 30.0],
               measured={"a": [1.0, 0.0], "b": [0.0, 0.0]})
    plt = Plot()
    utilisation(plt, s, 120.0, {"a": (1, 2, 3), "b": (4, 5, 6)}, {})
    assert (plt.monitor.label, plt.monitor.x, plt.monitor.y) == (["a"], [[-1.5]], [[50.0]])


@pilot_test
async def test_the_shells_report_is_of_the_range_and_grouping_shown(tmp_path):
    """``fractui demo``'s report screen said "from a shell: fractui report --config … --since
    1h" under its last 24 h by team, and under the last 7 days by queue: another report than
    the one above it. The command given is of the range and the grouping shown: all that is
    kept from its first record's minute, in local time as ``--since`` reads it."""
    store = usage_store(os.path.join(tmp_path, "store.db"))
    app = frozen_app(usage=store)
    app.source.report_command = "fractui report --config /tmp/fractui-demo-x/config.toml"
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await opened(app, pilot)

        def shell() -> str:
            return next(line for line in lines(screen) if line.startswith("from a shell: "))

        base = "from a shell: fractui report --config /tmp/fractui-demo-x/config.toml"
        assert shell() == base + " --since 24h", lines(screen)
        for keys, words in ((["h"], " --since 1h"), (["w", "g"], " --since 7d --by queue"),
                            (["g"], " --since 7d --by user"),
                            (["g", "g", "g", "g", "d"], " --since 24h")):  # (by team again)
            await pilot.press(*keys)
            await settled(pilot)
            assert shell() == base + words, (keys, lines(screen))
        await pilot.press("a")
        await settled(pilot)
        first = time.strftime("%Y-%m-%dT%H:%M", time.localtime(screen.computed.report.start))
        assert shell() == base + " --since " + first, lines(screen)


@pilot_test
async def test_where_the_stores_usage_begins_is_said_as_fractui_report_says_it(tmp_path):
    """The known stream's store keeps GPU time from 24 h ago: the last 7 days' report says
    that it keeps nothing before then, where its means over time start. Once the retention
    forgot what ended 13 h ago (a [usage] keep_days under the range), the store keeps #3's
    first attempt, from 16 h ago, and not the others of that time: the last 24 h are counted
    from 13 h ago and say so, in fractui report's words (sentences.kept_words), and all kept
    says nothing of it."""
    path = os.path.join(tmp_path, "store.db")
    store = usage_store(path)
    app = frozen_app(usage=store)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(app, pilot)
        assert not any("keeps nothing" in line for line in lines(screen)), lines(screen)
        await pilot.press("w")
        await settled(pilot)
        assert lines(screen)[1] == ("the store keeps nothing of it before %s: means over "
                                    "time start there" % local(NOW - 24 * H)), lines(screen)
        assert store.prune_usage(NOW - 13 * H) > 0
        for key in "dw":
            await pilot.press(key)
            await settled(pilot)
            assert lines(screen)[1] == (
                "the store keeps all of its usage only from %s: the retention ([usage] "
                "keep_days) forgot what ended before; every number here is of the time from "
                "there" % local(NOW - 13 * H)), (key, lines(screen))
            r = screen.computed.report
            assert r.forgotten and r.start == NOW - 13 * H
        await pilot.press("a")
        await settled(pilot)
        assert not any("keeps nothing" in line for line in lines(screen)), lines(screen)
    store.close()


MORE_TEAMS = ("robotics", "genomics", "climate", "recsys", "platform", "interns")


@pytest.mark.parametrize("more,no_color", [(5, False), (6, False), (0, True)])
def test_past_the_themes_colours_and_under_no_color_each_teams_line_has_its_mark(
        tmp_path, monkeypatch, more, no_color):
    """The map marks each team where colour does not tell them apart (past the theme's eight
    colours, under NO_COLOR), and the report's plots drew each team's line alike, in its
    colour alone: a ninth team's line took the first's colour (interns' vision's), and under
    NO_COLOR every line was a grey. There each team's lines are drawn with its mark, the
    map's (``v`` vision), the plot's legend beside its name; eight teams in colour keep
    their lines."""
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    store = usage_store(os.path.join(tmp_path, "store.db"))

    @pilot_test
    async def drive():
        app = frozen_app(usage=store, more_teams=MORE_TEAMS[:more])
        async with app.run_test(size=(200, 50)) as pilot:
            screen = await opened(app, pilot)
            marks = owner_marks(tuple(t.name for t in app.config.teams))
            for plot in ("held", "util"):
                monitor = screen.query_one("#plot-" + plot, PlotextPlot).plt.monitor
                drawn = {label: marker[0] for label, marker in zip(monitor.label,
                                                                   monitor.marker) if label}
                assert set(drawn) >= {"vision", "speech"}, drawn
                assert drawn == ({t: "hd" for t in drawn} if more == 5 else
                                 {t: marks[t] for t in drawn}), (plot, drawn)

    drive()
    store.close()
