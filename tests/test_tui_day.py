"""An admin's day in the TUI, on the frozen fleet: what a keyboard user expects and found
missing — a confirmation that ``enter`` does not answer yes, the GPU view's keys in sight (at
80x24 too), a key with nothing to act on that says so, a cut reason that says it was cut, the
MIG profile picker's own keys and no screen's keys under another screen, a pending job placed
from its screen, who holds the lease in sight at 120 and 80 columns, the teams' RUNNING and
NEXT of ``fractui teams`` in the teams table."""

from __future__ import annotations

import dataclasses
import itertools
import re
import sqlite3

import pytest

from rich.style import Style
from textual.widgets import Button

from fractui.config import Config, TuiSettings
from fractui.fleet.client import AgentCallError
from fractui.fleet.host import HostStatus, HostUnavailable
from fractui.sched.standing import (USAGE_EVERY_S, UsageRead, next_order, queue_stats,
                                    as_kept, reserved, standing)
from fractui.scheduler.child import ChildScheduler
from fractui.store.model import PENDING, Hold, TeamTerms
from fractui.store.sqlite import SqliteStore
from fractui.team_commands import lines as team_lines
from fractui.tui.actions import KeyLine, shown_bindings
from fractui.tui.app import FractuiApp
from fractui.tui.commands import FleetCommands
from fractui.tui.filterbox import FilterBox
from fractui.tui.gpu_screen import GpuScreen, ProfileList, ProfileScreen
from fractui.tui.header import Header
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.jobs_view import JobsScreen, line
from fractui.tui.logview import LogView
from fractui.tui.placement import PreviewBar
from fractui.tui.queues import SIDE_BY_SIDE, QueuePanel
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from fractui.tui.themes import RichVariables
from fractui.words import duration
from tests.test_tui_small import open_job_1
from tests.tui_frozen import (LOGS, STARVED, STATES, H, frozen_app, pilot_test, said, screen_lines,
                              settled, settled_app, usage_store)
from tests.test_tui_pilot import palette
from tests.tui_live import until


@pilot_test
async def test_enter_on_a_confirmation_answers_no_and_y_answers_yes():
    """The stop's question opens with ``no`` focused: ``enter`` (pressed by habit, or twice
    to open a job) asks nothing of the store; ``y`` does (here the frozen fleet has no store,
    which is what its answer says). The job screen has the focus back either way."""
    app = frozen_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_job_1(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert isinstance(app.focused, Button) and app.focused.id == "no"
        await pilot.press("enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is screen and isinstance(app.focused, LogView)
        assert said(app) == []  # nothing asked of the store
        await pilot.press("s", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.screen is screen and isinstance(app.focused, LogView)
        assert said(app) == ["no store here: nothing can be recorded"]


GPU_KEYS = ("esc back", "⏎ open job", "C cordon", "D drain", "U uncordon", "M MIG mode",
            "X destroy instance", "N new instance")
APP_KEYS = ("J jobs", "e messages", "? help", ": command")  # (every key line's last)


@pilot_test
async def test_the_gpu_view_shows_its_keys_at_80x24_and_only_back_when_readonly():
    for readonly in (False, True):
        async with settled_app((80, 24), readonly=readonly) as (app, pilot):
            app.open_gpu("h100-1", 0)
            await pilot.pause()
            assert isinstance(app.screen, GpuScreen)
            shown = "\n".join(screen_lines(app)[-3:])
            expected = GPU_KEYS[:1] if readonly else GPU_KEYS
            assert all(k in shown for k in expected), shown
            assert not readonly or "cordon" not in shown, shown


@pilot_test
async def test_the_key_lines_wrap_again_as_the_terminal_is_resized():
    """The GPU view's and the MIG picker's key lines (``actions.KeyLine``) wrap to the width
    the terminal has now, every key whole: on one line at 160 columns, on more at 26."""
    async with settled_app((160, 30)) as (app, pilot):
        app.open_gpu("h100-1", 0)
        await pilot.pause()
        for keys in (GPU_KEYS + APP_KEYS, ("⏎ choose", "esc cancel", "? help")):
            assert "  ".join(keys) in screen_lines(app)[-1], screen_lines(app)[-2:]
            await pilot.resize_terminal(26, 30)
            await pilot.pause()
            line = app.screen.query_one(KeyLine).region
            shown = screen_lines(app)[line.y:line.bottom]
            assert [k for row in shown for k in row.strip().split("  ")] == list(keys), shown
            assert len(shown) > 1, shown
            await pilot.resize_terminal(160, 30)
            await pilot.pause()
            if keys[0] == GPU_KEYS[0]:
                await pilot.press("N")
                await pilot.pause()
                assert isinstance(app.screen, ProfileScreen)


@pytest.mark.parametrize("where", ["fleet", "jobs"])
@pilot_test
async def test_the_filter_box_keeps_on_enter_reopens_on_its_text_and_clears_on_esc(where):
    """The map's and the jobs view's filter are one box (``filterbox.FilterBox``): ``enter``
    keeps the filter and hides the box, ``/`` opens it on the filter as it is, ``esc`` there
    empties it, hides it and clears the filter."""
    async with settled_app((120, 36)) as (app, pilot):
        if where == "jobs":
            await pilot.press("J")
            await pilot.pause()
        screen = app.screen
        box = screen.query_one(FilterBox)
        assert not box.display
        await pilot.press("slash", *"a100", "enter")
        await pilot.pause()
        assert (screen.filter_text, box.display, box.has_focus) == ("a100", False, False)
        await pilot.press("slash")
        await pilot.pause()
        assert (box.value, box.display, box.has_focus) == ("a100", True, True)
        await pilot.press("escape")
        await pilot.pause()
        assert (screen.filter_text, box.value, box.display) == ("", "", False)
        assert app.screen is screen


@pytest.mark.parametrize("typed", ["a{99999999999}", "(?a)(?u)x"])
@pytest.mark.parametrize("where", ["fleet", "jobs"])
@pilot_test
async def test_a_filter_too_big_for_re_to_compile_is_matched_as_written(where, typed):
    """``a{99999999999}`` is no re.error but an OverflowError as re compiles it, and flags
    that contradict each other (``(?a)(?u)``) a ValueError: typed in the filter box, each
    ended the TUI."""
    async with settled_app((120, 36)) as (app, pilot):
        if where == "jobs":
            await pilot.press("J")
            await pilot.pause()
        screen = app.screen
        await pilot.press("slash", *typed, "enter")
        await pilot.pause()
        assert app.is_running and app.screen is screen
        assert screen.filter_text == typed


@pilot_test
async def test_the_palettes_keys_is_the_help_not_textuals_key_panel():
    """``:`` "keys" opened Textual's key panel beside the map (two thirds of the map gone at
    120 columns, each key's words wrapped over lines, no ids): it opens ``?`` instead."""
    from tests.test_tui_pilot import palette

    async with settled_app((120, 40)) as (app, pilot):
        await palette(pilot, "keys")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help opened")
        assert not app.fleet.query("HelpPanel")
        assert any(bid == "map.open" for _, _, bid in app.screen.keys)


@pilot_test
async def test_copy_in_a_job_with_no_output_says_so():
    """``y`` on a pending job's screen (no output yet) did nothing and said nothing."""
    async with settled_app((80, 24)) as (app, pilot):
        app.open_job(27)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, JobScreen) and isinstance(app.focused, LogView)
        mark = len(app.notices.kept)
        await pilot.press("y")
        await pilot.pause()
        assert said(app, mark) == ["no line to copy: the output is empty"], said(app, mark)


def no_pending_app() -> FractuiApp:
    """The sample fleet with no job waiting."""
    fleet = sample_fleet(16, states=STATES)
    view = dataclasses.replace(fleet.store, jobs=tuple(
        j for j in fleet.store.jobs if j.state != PENDING))
    return FractuiApp(Source(fleet.statuses, view, logs=LOGS),
                      Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                      clock=lambda: NOW)


@pilot_test
async def test_a_key_with_nothing_to_act_on_says_so():
    app = no_pending_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        await pilot.press("tab")
        assert isinstance(app.focused, QueuePanel)
        await pilot.press("p", "enter")
        await pilot.pause()
        assert said(app) == [
            "no pending job to place: the queues hold none now (J lists every job)",
            "no pending job to open: the queues hold none now (J lists every job)"]
        mark = len(app.notices.kept)
        await pilot.press("J")
        await settled(pilot)
        assert isinstance(app.screen, JobsScreen)
        await pilot.press("slash", *"nothing-is-called-this", "enter", "enter")
        await pilot.pause()
        assert app.screen.rows == []
        assert said(app, mark) == ["no job to open: the view lists none (a lists the ended too)"]
        assert not isinstance(app.screen, JobScreen)


@pilot_test
async def test_the_maps_keys_with_no_gpu_under_the_cursor_say_why():
    """Hosts none of which has reported a GPU (one unreachable, one still connecting), then a
    filter that matches nothing: the key line offers enter and d, and C cordons "the cursor's
    host"; with no GPU drawn there is no cursor, and each key did nothing, saying nothing."""
    statuses = [HostStatus("gpu-a", "unreachable", error="ssh: No route to host"),
                HostStatus("gpu-b", "connecting")]
    app = FractuiApp(Source(statuses), Config(path=None, queues=QUEUES, teams=TEAMS,
                                              tui=TuiSettings()), clock=lambda: NOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await settled(pilot)
        await pilot.press("enter", "d", "m", "C")
        await pilot.pause()
        none = "no host has reported a GPU yet"
        assert said(app) == [
            "no GPU under the cursor to open: %s" % none,
            "no GPU under the cursor to show: %s" % none,
            "no job under the cursor to move: %s" % none,
            "no host under the cursor to cordon: %s; the palette (:) names one: cordon host "
            "NAME" % none]
    async with settled_app((100, 30)) as (app, pilot):
        await pilot.press("slash", *"zzz", "enter", "U")
        await pilot.pause()
        assert said(app) == ["no host under the cursor to uncordon: nothing matches /zzz/ "
                             "(esc clears the filter); the palette (:) names one: uncordon "
                             "host NAME"]


@pilot_test
async def test_the_maps_keys_under_a_filter_that_shows_only_hosts_without_a_gpu_say_so():
    """A filter matching a host that has reported no GPU (unreachable) by its name draws its
    line and no GPU: the map's keys said "no host has reported a GPU yet" while a100-1 and
    h100-1 had drawn theirs before the filter hid them."""
    fleet = sample_fleet(8)
    statuses = fleet.statuses + [HostStatus("gpu-x", "unreachable",
                                            error="ssh: No route to host")]
    app = FractuiApp(Source(statuses, fleet.store), Config(
        path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()), clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        await pilot.press("slash", *"gpu-x", "enter", "enter", "C")
        await settled(pilot)
        assert [line.name for line in app.fleet.map.lines] == ["gpu-x"]
        hidden = "the filter /gpu-x/ shows no GPU (esc clears the filter)"
        assert said(app) == [
            "no GPU under the cursor to open: %s" % hidden,
            "no host under the cursor to cordon: %s; the palette (:) names one: cordon host "
            "NAME" % hidden]


def test_a_cell_cut_to_its_column_ends_in_an_ellipsis_but_a_title_does_not():
    assert line(["no room: no GPU has a free slice", "x"], [12, 3]) == (
        " no room: no… " + " x   ")
    assert line(["age/wait ↓"], [8], marked=False) == " age/wait "


@pilot_test
async def test_placing_by_keyboard_at_80x24_gives_the_map_the_panels_rows():
    """At 80 columns the queue panel sits under the map; with the plan's bar under both, the
    map kept a line or two and the ghost's GPU went out of sight. While a placement by
    keyboard lasts the panel gives its rows to the map; it is back, with the focus, after."""
    async with settled_app((80, 24)) as (app, pilot):
        screen = app.fleet
        panel = screen.query_one(QueuePanel)
        before = screen.map.size.height
        await pilot.press("tab", "p")
        await settled(pilot)
        assert screen.placement is not None and screen.placement.candidates
        await pilot.pause()
        assert not panel.display or panel.size.height == 0
        assert screen.map.size.height >= before + 5, (before, screen.map.size.height)
        assert any("░" in ln for ln in screen_lines(app)), screen_lines(app)  # the ghost
        await pilot.press("escape")
        await pilot.pause()
        assert screen.placement is None and panel.size.height > 0
        assert isinstance(app.focused, QueuePanel)
        assert screen.map.size.height == before


async def key_on_the_first_listed(pilot, words: str, key: str) -> None:
    """The jobs view opened, filtered by ``words``, and ``key`` pressed on its first row."""
    await settled(pilot)
    await pilot.press("J")
    await settled(pilot)
    await pilot.press("slash", *words, "enter", key)
    await pilot.pause()


@pilot_test
async def test_a_refusal_says_which_job_and_how_it_is():
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await key_on_the_first_listed(pilot, "running", "p")
        row = app.screen.table.row
        assert row.state == "running"
        assert said(app) == ["job %s is running: only a pending job is placed by hand" % row.ref]
        mark = len(app.notices.kept)
        await pilot.press("escape")
        await pilot.pause()
        job = next(j for j in app.fleet.model.store.jobs if j.id == 1)
        app.fleet.place_job(1)  # the jobs view's p, on a job placed meanwhile
        await pilot.pause()
        assert said(app, mark) == ["job 1 is no longer pending: running, %s" % job.slot.describe()]
        assert app.fleet.placement is None


@pilot_test
async def test_a_refusal_of_a_job_stopping_to_come_back_says_where_it_leads():
    """A job stopping to be requeued is said as the verbs and the job screen say it: where the
    stop leads, not a bare "stopping" that reads as the job ending."""
    app = frozen_app()
    source = app.source
    job = next(j for j in source._store.jobs if j.state == "running")
    source._store = dataclasses.replace(source._store, jobs=tuple(
        dataclasses.replace(j, state="stopping", stop_intent="requeue") if j is job else j
        for j in source._store.jobs))
    async with app.run_test(size=(160, 48)) as pilot:
        await key_on_the_first_listed(pilot, "stopping", "m")
        assert app.screen.table.row.ref == str(job.id)
        assert said(app) == ["job %d is stopping to be requeued (once stopped, it goes back to "
                             "its queue): only a placed or running job of the store is moved"
                             % job.id]


@pilot_test
async def test_n_in_the_output_says_what_it_looked_for():
    app = frozen_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_job_1(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        assert said(app) == ["nothing searched yet: / searches the output"]
        await pilot.press("slash", *"nowhere-said", "enter", "n")
        await pilot.pause()
        assert said(app)[1:] == ["no line matches /nowhere-said/"] * 2  # the search's, n's


@pilot_test
async def test_the_palette_reaches_the_fleet_from_the_jobs_view_the_job_and_the_gpu():
    """``:`` works from every screen, as k9s's does: there, its own entries (a job's stops on
    its screen) and the fleet's, which go back to the map first."""
    from tests.test_tui_pilot import palette

    async with settled_app((160, 48)) as (app, pilot):
        screen = app.fleet
        for where in ("jobs view", "job screen", "gpu view"):
            if where == "jobs view":
                await pilot.press("J")
            elif where == "job screen":
                app.open_job(1)
            else:
                app.open_gpu("a100-1", 0)
            await settled(pilot)
            assert app.screen is not screen, where
            await palette(pilot, "host a10-1")
            await pilot.pause()
            assert app.screen is screen, where
            assert screen.map.cursor.host == "a10-1" and screen.map.has_focus, where
        app.open_job(1)
        await settled(pilot)
        entries = [e.text for e in app.screen.palette_entries()]
        await palette(pilot, "stop job")
        assert isinstance(app.screen, ConfirmScreen), entries  # its own stop, still first


@pilot_test
async def test_a_pending_jobs_name_cut_in_the_queue_panel_says_it_was_cut():
    from tests.test_tui_cells import named_app

    app = named_app({27: "a-very-long-job-name-indeed"})
    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        row = next(ln for ln in screen_lines(app) if "#27 " in ln)
        assert re.search(r"#27 +a-very-lo[a-z-]*… ", row), row


def hints(app: FractuiApp) -> dict[str, str]:
    """The header's key hints as drawn now: what each key does."""
    return dict(app.fleet.query_one(Header).info.hints)


@pilot_test
async def test_the_header_says_what_each_key_does_in_each_mode_of_the_fleet_screen():
    """A key the header offers does what it says in the mode the screen is in: placing or
    moving a job, a check under way, no slot to go to, a filter to clear; a key that would
    do nothing is not offered (``esc`` with nothing to clear, ``tab`` that took the focus
    off the plan's keys)."""
    async with settled_app((160, 48)) as (app, pilot):
        screen = app.fleet
        assert "esc" not in hints(app)  # nothing to clear or leave
        await pilot.press("slash", *"a100", "enter")
        assert hints(app)["esc"] == "clear filter"
        await pilot.press("escape", "tab", "p")
        await settled(pilot)
        shown = hints(app)
        assert screen.placement is not None and len(screen.placement.candidates) > 1
        assert (shown["⏎"], shown["esc"], shown["→"]) == ("place here", "don't place",
                                                          "next slot"), shown
        assert "tab" not in shown
        view = screen.query_one(Header).info.view
        assert "placing #%d" % screen.placement.job.id in view, view
        screen.placement.busy = "checking…"  # as while enter's check runs: no key but esc
        screen.query_one(PreviewBar).changed()
        await pilot.pause()
        assert {k for k in hints(app) if k in "⏎→←↑↓a"} == set(), hints(app)
        await pilot.press("escape")
        screen.move_job(1)
        await settled(pilot)
        assert screen.placement is not None and screen.placement.candidates == []
        shown = hints(app)
        assert shown["esc"] == "don't move" and "⏎" not in shown, shown
        assert "moving #1" in screen.query_one(Header).info.view
        await pilot.press("escape")  # a move left: the focus where it began, the panel
        assert screen.placement is None and isinstance(app.focused, QueuePanel)


@pilot_test
async def test_a_filter_while_placing_gives_the_focus_back_to_the_plan():
    """``/`` while placing narrows the map; ``enter`` (keep it) and ``esc`` (clear it) give
    the focus back to the plan's bar, whose keys move the ghost, and ``esc`` there closes the
    filter, not the placement. The map had the focus, so ``enter`` opened the job under its
    cursor with the plan still drawn, and ``esc`` in the filter ended the placement."""
    async with settled_app((160, 48)) as (app, pilot):
        screen = app.fleet
        await pilot.press("tab", "p")
        await settled(pilot)
        job = screen.placement.job
        await pilot.press("slash", *"a100", "enter")
        assert screen.filter_text == "a100" and isinstance(app.focused, PreviewBar)
        await pilot.press("slash", "escape")
        await pilot.pause()
        assert screen.filter_text == "" and isinstance(app.focused, PreviewBar)
        assert screen.placement is not None and screen.placement.job == job
        await pilot.press("escape")
        assert screen.placement is None and isinstance(app.focused, QueuePanel)


@pilot_test
async def test_f_in_a_jobs_output_says_whether_it_follows_or_stops_following():
    app = frozen_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_job_1(app, pilot)
        state = screen.query_one("#job-keys")
        assert screen.logview.following and "f stop following" in state.render().plain
        await pilot.press("f")
        await pilot.pause()
        shown = state.render().plain
        assert not screen.logview.following and "f follow " in shown, shown


@pilot_test
async def test_t_says_which_theme_it_switched_to():
    """Nothing on the screen names the theme; the config keeps one by its name."""
    async with settled_app((120, 36)) as (app, pilot):
        await pilot.press("t")
        assert said(app) == ['theme %s ([tui] theme = "%s" keeps it)' % (app.theme, app.theme)]
        assert app.theme != "dark"


@pilot_test
async def test_a_in_the_jobs_view_is_listed_as_what_it_does_now():
    """``?`` in the jobs view says ``a`` lists the ended jobs too, and once they are listed,
    that it lists the active only (the title said so; ``?`` said "ended too" still)."""
    app = frozen_app()

    async def listed() -> list[str]:
        await pilot.press("question_mark")
        said_there = [what for _, what, bid in app.screen.keys if bid == "jobs.ended"]
        await pilot.press("escape")
        return said_there

    async with app.run_test(size=(160, 48)) as pilot:
        await settled(pilot)
        await pilot.press("J")
        await settled(pilot)
        assert await listed() == ["ended too"]
        await pilot.press("a")
        await settled(pilot)
        assert await listed() == ["active only"]


@pilot_test
async def test_the_mig_profile_picker_lists_its_own_keys_under_it_and_in_help():
    """``N`` in the GPU view: under the picker its own keys (choose, cancel, help), where the
    view's line still read "esc back … N new instance", and ``?`` there lists them with
    their ids (it did nothing: the picker is a modal screen). ``j`` and ``enter`` pick the
    next profile, as in every list; once the picker is gone, the view's keys are back."""
    app = frozen_app()
    asked = []

    def no_agent(host, method, params, timeout_s=30.0):  # the frozen fleet's, which it records
        asked.append((host, method, dict(params)))
        raise HostUnavailable("%s: a frozen fleet has no agent to ask" % host)

    app.source.call = no_agent
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        app.open_gpu("h100-1", 0)
        await pilot.pause()
        await pilot.press("N")
        await pilot.pause()
        assert isinstance(app.screen, ProfileScreen)
        shown = "\n".join(screen_lines(app)[-3:])
        assert all(k in shown for k in ("⏎ choose", "esc cancel", "? help")), shown
        assert not any(k in shown for k in GPU_KEYS), shown
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        listed = {bid: what for _, what, bid in app.screen.keys}
        assert (listed["profile.choose"], listed["profile.cancel"], listed["profile.down"]) == (
            "choose", "cancel", "next profile"), listed
        assert not any(bid.startswith("gpu.") for bid in listed), listed
        await pilot.press("escape")
        await pilot.pause()
        menu = app.screen.query_one(ProfileList)
        profiles = [menu.get_option_at_index(i).id for i in range(menu.option_count)]
        await pilot.press("j", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, GpuScreen)
        assert asked == [("h100-1", "mig.plan", {"gpu": 0, "profile": profiles[1],
                                                 "destroy_idle": False})], asked
        shown = "\n".join(screen_lines(app)[-3:])
        assert all(k in shown for k in GPU_KEYS), shown


@pilot_test
async def test_no_screen_lists_its_keys_while_another_is_over_it():
    """Under the stop's y/n the job screen's line no longer reads "s stop …" (its keys do
    nothing there), nor the fleet header its hints under ``?``; each is back once the screen
    over it is gone."""
    async with settled_app((120, 36)) as (app, pilot):
        assert hints(app)["?"] == "help"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and hints(app) == {}, hints(app)
        await pilot.press("escape")
        await pilot.pause()
        assert hints(app)["?"] == "help", hints(app)
        screen = await open_job_1(app, pilot)

        def state() -> str:
            return str(screen.query_one("#job-keys").content)

        assert "s stop" in state(), state()
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "stop" not in state() and "esc back" not in state(), state()
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen and "s stop" in state(), state()


@pilot_test
async def test_the_teams_help_says_recent_may_lag_fractui_teams_by_the_usage_reads_gap():
    """``?`` said the teams table's numbers are "as `fractui teams` says them", yet the screen
    reads the usage records at most once every USAGE_EVERY_S: recent, and next and ! that
    weigh it, can differ from ``fractui teams`` for up to that long. The help says so."""
    async with settled_app((120, 40)) as (app, pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help opened")
        words = " ".join(app.screen.words.split())
        assert ("recent, and next and ! that weigh it, come from usage records read here at "
                "most once every %s: they can differ from `fractui teams`' for up to that "
                "long" % duration(USAGE_EVERY_S)) in words, words


@pytest.mark.parametrize("width", [120, 140, 169, 180])
@pilot_test
async def test_the_teams_table_says_run_and_next_as_fractui_teams_does_where_wide_enough(width):
    """In the panel beside the map each team's row ends in its jobs on hosts and its place in
    the order the scheduler takes up waiting jobs: the numbers of ``fractui teams``' RUNNING
    and NEXT, from the same reads; from 120 to 169 columns, where the panel is 46 wide, with
    two heads shortened (``?`` says them) and each name whole. At 80x24 the table has no room
    for them beside the queues and keeps the teams' names whole instead."""
    async with settled_app((width, 48)) as (app, pilot):
        fleet = app.fleet
        jobs = fleet.model.store.jobs
        shown, starved = standing(jobs, fleet.config, fleet._usage, fleet.clock())
        order = next_order(jobs, fleet.config, fleet._usage)
        bounds = {t.name: t.max_waiting for t in fleet.config.teams}  # as the scheduler keeps
        cli = {row.split()[0]: row.split() for row in
               team_lines(shown, starved, order, fleet.config.fairshare.usage_weight, bounds)}
        assert len(order) > 1 and any(u.running for u in shown), (order, shown)
        drawn = screen_lines(app)
        head = next(ln for ln in drawn if "Teams" in ln)
        assert head.split()[-3:] == ["pend", "run", "next"], head
        assert head.split("▏")[-1].split()[1:3] == (["used/quota", "borrow"] if width >= 170
                                                    else ["used/q", "borr"]), head
        assert re.search(r"▏ Teams {4,}\S", head), head  # a name keeps 8 cells at least
        for u in shown:
            row = next(ln for ln in drawn if re.search(r"▏ %s " % u.name, ln)).split()
            assert row[-2:] == [cli[u.name][4], cli[u.name][-1]], (row, cli[u.name])
    async with frozen_app().run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        head = next(ln for ln in screen_lines(pilot.app) if "Teams" in ln)
        assert head.split()[-1] == "pend", head


def team_rows(app: FractuiApp) -> dict[str, tuple[list[str], dict[str, Style]]]:
    """The teams table's rows as drawn (beside the queues or not): each team's words from its
    name on (a name, then its used/quota; a starved one's marked !) and its cells' styles."""
    panel = app.screen.query_one(QueuePanel)
    rows = {}
    for y in range(panel.size.height):
        strip = panel.render_line(y)
        words = strip.text.split()
        for i, word in enumerate(words[:-1]):
            name = word.rstrip("!")
            if name in ("vision", "nlp", "speech") and re.match(r"\d+\.\d\d/", words[i + 1]):
                rows[name] = (words[i:], {seg.text.strip(): seg.style for seg in strip})
    return rows


@pilot_test
async def test_the_teams_table_says_the_stores_bound_and_a_team_at_it_in_the_warning_colour(
        tmp_path):
    """A team at or near its bound on waiting jobs has ``pend`` as ``waiting/bound`` as
    ``fractui teams`` says it, in the theme's warning colour, the bound the store's (what the
    scheduler wrote and a member's submit is held to), not the admin's config's (each team
    there at the default): nlp at it (its members' submits refused), vision near it."""
    store = usage_store(str(tmp_path / "store.db"))
    store.keep_waiting_bounds({"nlp": 2, "vision": 12})  # the sample's nlp and vision have 2
    async with settled_app((180, 48), usage=store) as (app, pilot):
        warning = Style.parse(RichVariables(app)["warning"]).color
        rows = team_rows(app)
        assert sorted(rows) == ["nlp", "speech", "vision"], rows
        # name, used/quota, borrow, recent, pend, run, next
        assert rows["nlp"][0][4] == "2/2" and rows["vision"][0][4] == "2/12", rows
        assert rows["nlp"][1]["2/2"].color == warning, rows["nlp"]
        assert rows["vision"][1]["2/12"].color == warning, rows["vision"]
    store.close()


@pytest.mark.parametrize("width", [80, 180])
@pilot_test
async def test_the_teams_table_shows_the_quotas_the_scheduler_holds_and_says_where_they_differ(
        tmp_path, width):
    """The lease holder holds nlp to a quota of 1 GPU where the TUI's config says 3 (an old
    copy, or an edit not yet loaded): the Teams table shows 1, as ``fractui teams`` does, and
    says so in its words (``standing.as_kept``); vision and speech, alike in both, say
    nothing."""
    store = usage_store(str(tmp_path / "store.db"))
    terms = {t.name: TeamTerms(t.quota_gpus, t.over_quota, t.weight) for t in TEAMS}
    store.keep_team_terms(dict(terms, nlp=TeamTerms(1.0, False, 1.0)))
    async with settled_app((width, 48), usage=store) as (app, pilot):
        rows = team_rows(app)
        assert rows["nlp"][0][1].endswith("/1") and rows["vision"][0][1].endswith("/4"), rows
        panel = app.screen.query_one(QueuePanel)
        drawn = " ".join(panel.render_line(y).text.strip() for y in range(panel.size.height))
        words = as_kept(app.config, store.team_terms(), store.lease_holder() is not None)[1]
        assert list(words) == ["nlp"], words
        assert words["nlp"].startswith("team nlp: the scheduler holds it to quota 1 GPU, where "
                                       "this config (in code) says quota 3 GPUs")
        assert words["nlp"][:40] in drawn, drawn
    store.close()


@pilot_test
async def test_the_teams_table_says_a_quota_whose_kept_row_is_damaged_is_not_known(tmp_path):
    """nlp's row of the quotas the lease holder keeps holds what fractui never writes (text
    for a quota): the Teams table said the scheduler holds no team nlp and does not place its
    jobs (false: the holder has it); it says nlp's quota is not known, naming the store and the
    row, as ``fractui teams`` does."""
    path = str(tmp_path / "store.db")
    store = usage_store(path)
    store.keep_team_terms({t.name: TeamTerms(t.quota_gpus, t.over_quota, t.weight)
                           for t in TEAMS})
    db = sqlite3.connect(path)
    db.execute("UPDATE team_terms SET quota_gpus = 'lots' WHERE team = 'nlp'")
    db.commit()
    db.close()
    async with settled_app((180, 48), usage=store) as (app, pilot):
        panel = app.screen.query_one(QueuePanel)
        drawn = " ".join(panel.render_line(y).text.strip() for y in range(panel.size.height))
        words = as_kept(app.config, store.team_terms(), store.lease_holder() is not None)[1]
        assert list(words) == ["nlp"], words
        assert words["nlp"].startswith("team nlp: its quota is not known: store %s, its row "
                                       "of team_terms: team nlp's quota's quota_gpus is "
                                       "'lots'" % path), words
        assert words["nlp"][:40] in drawn, drawn
        assert "holds no team" not in drawn, drawn
    store.close()


@pilot_test
async def test_the_teams_recent_usage_is_counted_to_the_stores_now(tmp_path):
    """The store's clock is 3 days ahead of the TUI's (NOW): the Teams table's recent GPUs are
    the store's usage up to the store's now, as fractui teams counts them, not up to NOW."""
    path = str(tmp_path / "store.db")
    usage_store(path).close()
    store = SqliteStore(path, clock=lambda: NOW + 72 * H)
    try:
        async with settled_app((180, 48), usage=store) as (app, pilot):
            fair = app.config.fairshare

            def recent(now: float) -> dict[str, str]:
                read = UsageRead.of(store.usage(now - fair.window_s, now), app.config, now)
                return {t: "%.2f" % read.recent.get(t, 0.0) for t in ("nlp", "vision")}
            rows = team_rows(app)
            shown = {t: rows[t][0][3] for t in ("nlp", "vision")}  # name, used/quota, borrow
            assert shown == recent(NOW + 72 * H) != recent(NOW), (shown, recent(NOW))
    finally:
        store.close()


@pytest.mark.parametrize("width", [80, 120, 180])
@pilot_test
async def test_a_team_far_from_its_bound_shows_its_count_alone(tmp_path, width):
    """A bound far off is noise on every row: vision (2 of 50) and speech (1, the store lists
    no bound: the default) show the count alone, not in the warning colour, and the table's
    heads are those it has with no bound near (run and next from 120 columns)."""
    store = usage_store(str(tmp_path / "store.db"))
    store.keep_waiting_bounds({"vision": 50})
    async with settled_app((width, 48), usage=store) as (app, pilot):
        warning = Style.parse(RichVariables(app)["warning"]).color
        rows = team_rows(app)
        assert rows["vision"][0][4] == "2" and rows["speech"][0][4] == "1", rows
        assert rows["vision"][1]["2"].color != warning, rows["vision"]
        assert len(rows["vision"][0]) == (5 if width < 120 else 7), rows
    store.close()


@pytest.mark.parametrize("width", [80, 120, 180])
@pilot_test
async def test_a_bound_with_no_room_beside_a_name_leaves_the_count_in_the_warning_colour(width):
    """Near a bound of 100,000, ``99995/100000`` is wider than the table can give ``pend``
    with each name keeping 8 cells: the count alone, in the warning colour still, the names
    whole; nlp's ``2/2`` fits beside it. The count is the one the bound counts, 5 of them
    stopping to be requeued: not the pending ones alone (99990), a number of no bound."""
    async with settled_app((width, 48)) as (app, pilot):
        panel = app.screen.query_one(QueuePanel)
        teams = [dataclasses.replace(t, pending=99990, requeued=5) if t.name == "vision" else t
                 for t in panel.teams]
        panel.show(panel.queues, teams, panel.store_note, panel.pending, panel.now,
                   panel.starved, panel.order, {"vision": 100_000, "nlp": 2})
        await pilot.pause()
        warning = Style.parse(RichVariables(app)["warning"]).color
        rows = team_rows(app)
        assert rows["vision"][0][4] == "99995" and rows["nlp"][0][4] == "2/2", rows
        assert rows["vision"][1]["99995"].color == warning, rows["vision"]
        assert re.search(r"\bTeams {3,}\S", " ".join(screen_lines(app))), screen_lines(app)


@pilot_test
async def test_a_pending_jobs_screen_places_it_with_shift_p_and_p_stays_preempt():
    """An admin who opened a waiting job to see why it waits places it from there: ``P``
    starts the queue panel's placement mode for it, on the map, and ``esc`` there comes back to
    the job's screen (it ended on the map, the queue panel focused, before the jobs view's
    placements went back where they began); it is offered only while the job is pending (not
    ``--readonly``), and ``p`` is still preempt, on a running job."""
    async with settled_app((160, 48)) as (app, pilot):
        fleet = app.fleet
        job = next(j for j in fleet.model.store.jobs if j.state == PENDING)
        app.open_job(job.id)
        await settled(pilot)
        screen = app.screen
        assert isinstance(screen, JobScreen) and screen.job.state == PENDING
        offered = {bid: what for _, what, bid, _ in shown_bindings(screen)}
        assert offered.get("job.place") == "place", offered
        assert "job.preempt" not in offered and "job.move" not in offered, offered
        assert "P place" in screen.query_one("#job-keys").render().plain
        await pilot.press("p")  # no preemption of a pending job: nothing happens
        await pilot.pause()
        assert app.screen is screen and fleet.placement is None
        await pilot.press("P")
        await settled(pilot)
        assert app.screen is fleet and fleet.placement is not None
        assert fleet.placement.job.id == job.id and not fleet.placement.moving
        assert fleet.query_one(QueuePanel).selected == job.id
        assert isinstance(app.focused, PreviewBar)
        await pilot.press("escape")  # back on the job's screen (made anew), not on the map
        await settled(pilot)
        assert fleet.placement is None and isinstance(app.screen, JobScreen)
        assert app.screen is not screen and app.screen.job_id == job.id
        assert app.screen_stack[1:] == [fleet, app.screen]
        running = await open_job_1(app, pilot)
        offered = {bid: what for _, what, bid, _ in shown_bindings(running)}
        assert offered.get("job.preempt") == "preempt" and "job.place" not in offered, offered
        await pilot.press("P")
        await pilot.pause()
        assert app.screen is running and fleet.placement is None
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.startswith("Preempt job #1 ")
    async with settled_app((160, 48), readonly=True) as (app, pilot):
        app.open_job(job.id)
        await settled(pilot)
        offered = {bid for _, _, bid, _ in shown_bindings(app.screen)}
        assert "job.place" not in offered, offered
        await pilot.press("P")
        await pilot.pause()
        assert isinstance(app.screen, JobScreen) and app.fleet.placement is None


@pilot_test
async def test_the_header_says_who_holds_the_lease_whole_at_120_and_80_columns():
    """The scheduler's words shared the view's line and were cut there: at 120 columns in
    compact mode (as a fleet with more GPUs than rows is), at 80x24 ("none (decisions…"). On
    a line of their own, who holds the lease, that none does, and that its passes fail are in
    sight at both."""
    cases = ((None, None, "scheduler: none (decisions wait)"),
             ("alice@gpu-head-01:12345 (tui)", None, "scheduler: alice@gpu-head-01:12345 (tui)"),
             ("ops@head:1234", "the store is slow",
              "scheduler: ops@head:1234 · its passes fail: the store is slow;"))
    for size, keys in (((120, 36), ("z",)), ((80, 24), ())):
        for holder, trouble, expected in cases:
            async with settled_app(size, holder=holder, trouble=trouble) as (app, pilot):
                await pilot.press(*keys)
                await pilot.pause()
                assert app.fleet.compact_now()
                header = screen_lines(app)[:4]
                assert any(expected in ln for ln in header), (size, header)


@pilot_test
async def test_a_child_scheduler_that_ended_does_not_hide_who_holds_the_lease(tmp_path):
    """The TUI's child scheduler ended (here on a config it cannot read) while another holds
    the lease: the header said only that the child ended; it says who leads first."""
    app = frozen_app(holder="ops@head:1234")
    log = str(tmp_path / "scheduler-tui.log")
    child = ChildScheduler(str(tmp_path / "no-such-config.toml"), "alice@ws:99 (tui)", log)
    app.source.scheduler = child.start()
    assert child.proc is not None and child.proc.wait(60) == 2
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        header = screen_lines(app)[:4]
        assert any("scheduler: ops@head:1234 leads; child process ended (exit 2; see " in ln
                   for ln in header), header
    child.stop()


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
@pilot_test
async def test_the_pending_list_says_when_no_job_waits(size):
    """With no job pending the panel's pending list drew nothing at all under the queues and
    teams: an admin could not tell an empty list from one not drawn."""
    app = no_pending_app()
    async with app.run_test(size=size) as pilot:
        await settled(pilot)
        drawn = [line for line in screen_lines(app) if "Pending" in line]
        assert len(drawn) == 1 and drawn[0].rstrip().endswith("Pending 0  no job waits"), drawn


@pilot_test
async def test_a_mig_plan_refused_names_the_host_once():
    """``N`` on a GPU whose host cannot be asked said ``a100-1: a100-1 is offline…``: the
    host's refusal names it already. The agent's own refusal (no room) is said after the
    host's name, as before."""
    app = frozen_app()
    refusals = [HostUnavailable("a100-1 is offline: connection lost"),
                AgentCallError("mig.plan", {"code": -32000, "message": "no room for it"})]

    def refused(host, method, params, timeout_s=30.0):
        raise refusals.pop(0)

    app.source.call = refused
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        app.open_gpu("a100-1", 1)
        await pilot.pause()
        for _ in range(2):
            await pilot.press("N", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert isinstance(app.screen, GpuScreen)
        assert said(app) == ["a100-1 is offline: connection lost", "a100-1: no room for it"]


@pilot_test
async def test_the_jobs_views_cursor_stays_in_sight_as_its_filter_is_cleared():
    """``/wait`` lists the five waiting jobs, ``G`` goes to the last; ``esc`` in the box clears
    the filter and the cursor stays on that job, 27 rows down: the table did not scroll to it
    (rows that had just begun to overflow it were not scrolled to), and it was out of sight."""
    async with settled_app((80, 24)) as (app, pilot):
        await pilot.press("J")
        await settled(pilot)
        table = app.screen.table
        await pilot.press("slash", *"wait", "enter", "G")
        await pilot.pause()
        ref = table.row.ref
        assert len(table.rows) == 5 and table.cursor == 4
        await pilot.press("slash", "escape")
        await pilot.pause()
        top = table.scroll_offset.y
        assert len(table.rows) == 27 and table.row.ref == ref
        assert top <= table.cursor < top + table.size.height, (top, table.cursor)


@pilot_test
async def test_a_starved_team_s_wait_is_counted_to_the_stores_now(tmp_path):
    """The store's clock is an hour ahead of the TUI's (NOW): nlp's starved line said its job
    had waited by the TUI's clock (5 minutes), where fractui teams says the store's (1h05m):
    the usage was read to the store's now, the waits were not."""
    path = str(tmp_path / "store.db")
    usage_store(path).close()
    store = SqliteStore(path, clock=lambda: NOW + H)
    try:
        async with settled_app((180, 48), usage=store, reasons=STARVED) as (app, pilot):
            fleet = app.fleet
            jobs = fleet.model.store.jobs
            panel = app.screen.query_one(QueuePanel)
            assert list(panel.starved) == standing(jobs, fleet.config, fleet._usage,
                                                   NOW + H)[1] != standing(
                jobs, fleet.config, fleet._usage, NOW)[1], panel.starved
    finally:
        store.close()


@pilot_test
async def test_the_teams_table_takes_up_the_teams_the_scheduler_holds_terms_of(tmp_path):
    """The lease holder keeps terms of vision and speech (a team this config lacks, its jobs
    waiting), none of nlp: nlp (its job waiting an hour for the fleet) was said starved and
    given a turn, and speech was not shown, so the others' turns were not the passes'. As
    ``fractui teams`` shows it: speech at the holder's terms with its turn, nlp with neither a
    turn nor a starved line (vision and speech, waiting as long for the fleet, starved)."""
    path = str(tmp_path / "store.db")
    usage_store(path).close()
    store = SqliteStore(path, clock=lambda: NOW + H)
    try:
        store.keep_team_terms({"vision": TeamTerms(4.0, False, 1.0),
                               "speech": TeamTerms(2.0, False, 1.0)})
        async with settled_app((180, 48), usage=store, reasons=STARVED,
                               fewer_teams=["speech"]) as (app, pilot):
            panel = app.screen.query_one(QueuePanel)
            assert [s.team for s in panel.starved] == ["vision", "speech"], panel.starved
            assert "nlp" not in panel.order and "speech" in panel.order, panel.order
            rows = team_rows(app)
            assert rows["speech"][0][1].endswith("/2") and rows["nlp"][0][6] == "—", rows
    finally:
        store.close()


@pilot_test
async def test_every_wait_and_age_the_tui_shows_counts_to_the_stores_now(tmp_path):
    """The store's clock is an hour ahead of the TUI's (NOW), as an admin's laptop set wrong
    is: the queue panel's waits, the jobs view's ages and a job screen's "submitted ... ago"
    counted to the TUI's clock (wait-0 waiting 1m00s) where fractui jobs counts to the
    store's (1h01m)."""
    path = str(tmp_path / "store.db")
    usage_store(path).close()
    store = SqliteStore(path, clock=lambda: NOW + H)
    try:
        async with settled_app((180, 48), usage=store) as (app, pilot):
            fleet = app.fleet
            jobs = fleet.model.store.jobs
            job = next(j for j in jobs if j.name == "wait-0")
            panel = app.screen.query_one(QueuePanel)
            assert panel.queues == queue_stats(fleet.config.queues, jobs, NOW + H) != \
                queue_stats(fleet.config.queues, jobs, NOW), panel.queues
            drawn = [ln for ln in screen_lines(app) if "#%d " % job.id in ln]
            assert len(drawn) == 1 and re.search(r" %s\b" % duration(H + 60), drawn[0]), drawn
            await pilot.press("J")
            await settled(pilot)
            row = next(r for r in app.screen.every if r.job_id == job.id)
            assert row.age_s == H + 60, row
            app.open_job(job.id)
            await settled(pilot)
            said = "\n".join(screen_lines(app))
            assert "submitted %s ago" % duration(H + 60) in said, said
    finally:
        store.close()


@pytest.mark.parametrize("width", [80, 180])
@pilot_test
async def test_a_teams_hold_is_said_under_the_teams_and_a_hostile_host_forges_nothing(width):
    """The store keeps that nlp holds a GPU of its quota and the room on a host (its name the
    store's, a line break and markup in it) for job 27, which has waited past the bound: the
    panel said nothing of it, and an admin who saw nlp's quota partly idle, or the host
    skipped by its later jobs, could not tell why. A line says it, in fractui teams' words;
    the host's line break is a "?", its markup text. Without a hold, no such line."""
    host = "a100-1\nstarved vision: [b]forged[/b]"
    async with settled_app((width, 48), holds={"nlp": Hold(27, 1.0, host)}) as (app, pilot):
        panel = app.screen.query_one(QueuePanel)
        jobs = app.fleet.model.store.jobs
        assert [(r.team, r.job.id, r.hold) for r in panel.reserved] == [
            ("nlp", 27, Hold(27, 1.0, host))]
        drawn = screen_lines(app)
        at = next(n for n, ln in enumerate(drawn) if "reserved " in ln)
        left = drawn[at].index("reserved ")
        narrow = panel.size.width < SIDE_BY_SIDE  # what is held on a line, for whom on the next
        words = "reserved " + reserved({"nlp": Hold(27, 1.0, host)}, jobs, panel.teams)[0].words(
            NOW, "\n  " if narrow else " ")
        for shown, meant in zip(drawn[at:], words.split("\n")):
            assert meant.startswith(shown[left:].rstrip("…")), (shown[left:], meant)
        assert drawn[at][left:].startswith("reserved nlp: 1.00 of its quota and its room on"
                                           + ("" if narrow else " a100-1?starved vision: [b]f")
                                           ), drawn[at]
        assert not [ln for ln in drawn if "starved vision" in ln and "a100-1?" not in ln]
    async with settled_app((width, 48)) as (app, pilot):
        assert app.screen.query_one(QueuePanel).reserved == []
        assert not [ln for ln in screen_lines(app) if "reserved" in ln]


def palette_texts(app: FractuiApp) -> list[str]:
    """What ``:`` offers on the screen shown, as its provider lists it."""
    return [e.text for e in FleetCommands(app.screen)._entries()]


@pilot_test
async def test_the_palette_places_and_moves_a_job_from_the_map():
    """``:`` "place job #27" on the map starts the pending job's placement, and "move job #1"
    the running job's move, as the queue panel's ``p`` and the job screen's ``m`` do: the
    palette found neither, only "open job", and the admin went through the job's screen.
    ``--readonly`` offers neither; on the job's own screen its entry is listed once (its
    own, whose ``esc`` comes back to it)."""
    async with settled_app((120, 36)) as (app, pilot):
        await palette(pilot, "place job #27")
        await until(pilot, lambda: app.fleet.placement is not None, "placement mode")
        assert app.fleet.placement.job.id == 27 and not app.fleet.placement.moving
        await pilot.press("escape")
        await pilot.pause()
        assert app.fleet.placement is None
        await palette(pilot, "move job #1 ")
        await until(pilot, lambda: app.fleet.placement is not None, "placement mode")
        assert app.fleet.placement.job.id == 1 and app.fleet.placement.moving
        await pilot.press("escape")
        await pilot.pause()
        app.open_job(27)
        await settled(pilot)
        assert palette_texts(app).count("place job #27 %s" % app.screen.job.name) == 1
    async with settled_app((120, 36), readonly=True) as (app, pilot):
        assert not [t for t in palette_texts(app) if t.startswith(("place ", "move "))]


def with_argv(argv: tuple[str, ...]) -> FractuiApp:
    """The frozen fleet, job 1 (running on a100-1, its output in LOGS) run as ``argv``."""
    fleet = sample_fleet(16, states=STATES)
    jobs = tuple(dataclasses.replace(j, argv=argv) if j.id == 1 else j for j in fleet.store.jobs)
    source = Source(fleet.statuses, dataclasses.replace(fleet.store, jobs=jobs), logs=LOGS,
                    usage=fleet.usage())
    return FractuiApp(source, Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                      clock=lambda: NOW)


@pytest.mark.parametrize("long", [100, 1000])
@pilot_test
async def test_a_jobs_argv_is_read_whole_at_80x24_on_three_lines_at_most(long):
    """At 80 columns a job's argv was cut on its one row (``--me…``), and nothing in the TUI
    showed the rest: it goes on, on the lines below (``--lr 3e-4``, its last words, in sight),
    three at most, the last ending in ``…`` where more was cut, so the output stays in sight."""
    app = with_argv(("python", "train.py", "--data", "/d/" + "x" * long, "--lr", "3e-4"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        app.open_job(1)
        await settled(pilot)
        lines = screen_lines(app)
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("argv"))
        rows = [lines[at]] + list(itertools.takewhile(
            lambda line: line.startswith(" " * 9) and line.strip(), lines[at + 1:]))
        assert len(rows) <= 3, rows
        if long == 100:
            assert rows[-1].endswith("--lr 3e-4"), rows
        else:
            assert len(rows) == 3 and rows[-1].endswith("x…"), rows
        assert " 14 lines · following" in lines, lines
