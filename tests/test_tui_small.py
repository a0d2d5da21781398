"""Small things users hit: ctrl+c quits (and copies a selection), a job offers only the stops
its state allows, histories' columns line up (the job screen's, `fractui audit`'s), counts say
"1 GPU" and "2 GPUs"."""

from __future__ import annotations

import dataclasses
import re

import pytest
from textual import events
from textual.selection import Selection
from textual.errors import NoWidget
from textual.widgets import Button, Input

from fractui.config import Config, QueueConfig, StoreSettings, TuiSettings, toml_text
from fractui.store import open_store
from fractui.store_url import sqlite_url
from fractui.store.intents import stop_refusal
from fractui.store.model import (CANCELLED, DONE, FAILED, PENDING, RUNNING, STOPPING,
                                 AuditEntry, stops_offered)
from fractui.tui import fleet_screen
from fractui.tui.actions import KeyLine
from fractui.tui.app import FractuiApp
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.logview import LogView
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from fractui.words import count
from remote_agent.text import noun_for
from tests.cli_run import in_process
from tests.test_tui_jobs import text_of
from tests.tui_frozen import (LOGS, STATES, frozen_app, notices, pilot_test, said, screen_lines,
                              settled, settled_app)
from tests.tui_live import until


def app_with_job_1_as(state: str, **changes) -> FractuiApp:
    """The frozen fleet, its job 1 in ``state`` (and with ``changes``)."""
    fleet = sample_fleet(16, states=STATES)
    jobs = tuple(dataclasses.replace(j, state=state, **changes) if j.id == 1 else j
                 for j in fleet.store.jobs)
    view = dataclasses.replace(fleet.store, jobs=jobs)
    return FractuiApp(Source(fleet.statuses, view, logs=LOGS),
                      Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                      clock=lambda: NOW)


async def open_job_1(app, pilot) -> JobScreen:
    await settled(pilot)
    app.open_job(1)
    await settled(pilot)
    assert isinstance(app.screen, JobScreen) and app.screen.job is not None
    return app.screen


@pilot_test
async def test_ctrl_c_quits_from_the_fleet_the_help_and_the_job_screen():
    for where in ("fleet", "help", "job"):
        async with settled_app((120, 36)) as (app, pilot):
            if where == "help":
                await pilot.press("question_mark")
                await pilot.pause()
                assert isinstance(app.screen, HelpScreen)
            if where == "job":
                await open_job_1(app, pilot)
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert app.return_code == 0, where  # quit, as q does


@pytest.mark.parametrize("width", [34, 43, 60, 80])
@pilot_test
async def test_the_help_shows_every_key_and_id_whole_on_a_narrow_terminal(width):
    """Under about 44 columns a key and its id take a line, what it does the next ones (76 rows
    hold every key of the fleet at 34 columns, the map's m and the app's e among them)."""
    async with settled_app((width, 76)) as (app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = [line[line.index("│") + 1:line.rindex("│")].strip()  # inside its border
                for line in screen_lines(app) if line.count("│") >= 2]
        for key, _, binding_id in app.screen.keys:
            assert any(row.startswith(key + " ") and row.endswith(" " + binding_id)
                       for row in rows), (key, binding_id)


@pilot_test
async def test_the_job_screen_of_a_job_on_a_host_gone_offline_says_so_not_its_last_figures():
    app = frozen_app()  # l4-1 is offline in the sample, with what its agent said last
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        app.open_job(12)
        await settled(pilot)
        screen = app.screen
        assert isinstance(screen, JobScreen) and screen.job.slot.host == "l4-1"
        assert screen.agent_record() is None
        details = text_of(screen.details(screen.agent_record()))
        assert "host     l4-1 is offline: connection lost: ssh: Connection reset by peer " \
               "(how the job is there is not known now)" in " ".join(details.split("\n"))
        assert "memory" not in details and "l4-1/j" not in details


@pilot_test
async def test_the_jobs_view_says_when_the_store_cannot_be_read(monkeypatch):
    monkeypatch.setattr(fleet_screen, "STORE_EVERY_S", 3600.0)  # (a read would clear it)
    async with settled_app((120, 36)) as (app, pilot):
        app.fleet.store_error = "store postgresql://db/fractui: could not connect"
        await pilot.press("J")
        await settled(pilot)
        title = str(app.screen.query_one("#title").render())
        assert "\nstore: store postgresql://db/fractui: could not connect (jobs shown as read " \
               "at " in title


@pilot_test
async def test_ctrl_c_with_text_selected_copies_it_and_quits_nothing():
    app = frozen_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_job_1(app, pilot)
        state = screen.query_one("#logstate")
        screen.selections = {state: Selection(None, None)}  # all of it, as a drag would
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.return_code is None and app.screen is screen
        assert app.clipboard == state.render().plain  # what was selected
        await pilot.press("y")  # the log's cursor line, by its own key
        assert app.clipboard == LOGS["a100-1/j1"][-1]
        screen.selections = {}
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.return_code == 0


@pytest.mark.parametrize("width", [80, 60, 200])
@pilot_test
async def test_the_job_screens_keys_are_each_shown_whole_at_any_width(width):
    app = frozen_app()
    async with app.run_test(size=(width, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        keys = screen.query_one("#job-keys")
        lines = keys.render().plain.split("\n")
        assert all(len(line) <= width - 2 for line in lines)
        assert "  ".join(lines).split("  ") == [
            "n next", "N previous", "f stop following", "y copy", "esc back", "/ search", "s stop",
            "r requeue", "p preempt", "m move", "J jobs", "e messages", "? help", ": command"]
        assert len(lines) == {200: 1, 80: 2, 60: 3}[width]


@pilot_test
async def test_the_job_screens_keys_are_its_key_line_at_its_bottom():
    """The job screen lists its keys as every other screen does, on the one ``KeyLine`` at
    its bottom, not on its output's state line; none while a confirmation is over it."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        keys = screen.query_one(KeyLine)
        drawn = screen_lines(app)
        assert drawn[-2:] == [" " + line for line in keys.render().plain.split("\n")], drawn
        assert drawn[-2].startswith(" n next  N previous"), drawn
        state = screen.query_one("#logstate").render().plain
        assert state == "14 lines · following", state
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and not keys.display


def test_m_on_a_running_jobs_screen_moves_it_in_placement_mode_on_the_map():
    @pilot_test
    async def drive():
        app = app_with_job_1_as(RUNNING)
        async with app.run_test(size=(120, 36)) as pilot:
            await open_job_1(app, pilot)
            await pilot.press("m")
            await pilot.pause()
            fleet = app.fleet
            assert app.screen is fleet and fleet.placement is not None
            assert (fleet.placement.job.id, fleet.placement.moving) == (1, True)

    drive()


def test_the_rule_of_what_may_be_asked_of_a_job():
    assert stops_offered(PENDING) == ("cancel",)
    assert stops_offered(RUNNING) == ("cancel", "requeue", "preempt")
    for ended in (STOPPING, DONE, FAILED, CANCELLED):
        assert stops_offered(ended) == ()
    assert stops_offered(STOPPING, "cancel") == ()
    for coming_back in ("requeue", "preempt", "move"):
        assert stops_offered(STOPPING, coming_back) == ("cancel",)
    job = sample_fleet(4).store.jobs[0]
    assert stop_refusal(dataclasses.replace(job, state=DONE), "preempt") == (
        "job %d is done: nothing to preempt" % job.id)


ACTED = ("stop", "requeue", "preempt", "move", "place")
"""What the job screen's keys do to the job, in their order."""


@pytest.mark.parametrize("state,intent,offered", [
    (DONE, None, ()), (FAILED, None, ()), (CANCELLED, None, ()), (STOPPING, "cancel", ()),
    (STOPPING, "requeue", ("stop",)), (STOPPING, "preempt", ("stop",)),
    (PENDING, None, ("stop", "place")), (RUNNING, None, ("stop", "requeue", "preempt", "move"))])
def test_the_job_screen_offers_only_the_stops_its_state_allows(state, intent, offered):
    """What the job screen offers follows the job's state: the stops it allows (a cancel of a
    job stopping to come back, which it takes over), a move while it is placed or running, a
    placement while it is pending."""
    @pilot_test
    async def drive():
        app = app_with_job_1_as(state, stop_intent=intent)
        async with app.run_test(size=(120, 36)) as pilot:
            screen = await open_job_1(app, pilot)
            hints = screen.query_one("#job-keys").render().plain
            hinted = {h.split(" ", 1)[-1] for h in "  ".join(hints.split("\n")).split("  ")}
            shown = tuple(w for w in ACTED if w in hinted)
            assert shown == offered, hints
            palette = [e.text.split(" job ")[0] for e in screen.palette_entries()]
            assert tuple(palette) == offered
            await pilot.press("question_mark")
            listed = {row[1] for row in app.screen.keys}
            assert set(offered) == listed & set(ACTED)
            await pilot.press("escape", "s", "r", "p")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen) == bool(offered)
            if not offered:  # a palette entry kept from before it ended: said, not asked
                screen.action_ask("cancel")
                await pilot.pause()
                assert "job 1 is %s: nothing to cancel" % (
                    state if intent is None else "stopping to be cancelled") in said(app)

    drive()


@pytest.mark.parametrize("ended", [DONE, FAILED, CANCELLED])
def test_a_verbs_key_on_a_job_that_has_just_ended_says_why_it_does_nothing(ended):
    """The job ends while its screen is open (its keys were listed a moment before): each
    verb's key pressed then says why it does nothing, in the verbs' words, as a palette entry
    kept from before does, rather than nothing done and nothing said."""
    @pilot_test
    async def drive():
        app = app_with_job_1_as(RUNNING)
        async with app.run_test(size=(120, 36)) as pilot:
            screen = await open_job_1(app, pilot)
            source = app.source  # it ends in the store: the screen's reload each second says so
            source._store = dataclasses.replace(source._store, jobs=tuple(
                dataclasses.replace(j, state=ended) if j.id == 1 else j
                for j in source._store.jobs))
            screen.load()
            await until(pilot, lambda: screen.job.state == ended, "the job read ended")
            assert screen.stops() == ()
            for key, why in (("s", "nothing to cancel"), ("r", "nothing to requeue"),
                             ("p", "nothing to preempt"),
                             ("m", "only a placed or running job is moved"),
                             ("P", "only a pending job is placed by hand")):
                mark = len(app.notices.kept)
                await pilot.press(key)
                await pilot.pause()
                assert app.screen is screen and screen.job.state == ended, key
                assert said(app, mark) == [
                    "job 1 is %s: %s" % (ended, why)], key
            mark = len(app.notices.kept)
            await pilot.press("slash", "r", "m")  # in the output's search, letters are typed
            await pilot.pause()
            assert screen.query_one("#search", Input).value == "rm"
            assert notices(app, mark) == []

    drive()


@pilot_test
async def test_the_history_columns_line_up():
    app = frozen_app()
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_job_1(app, pilot)
        screen.history = [
            AuditEntry(1, NOW - 3700, "ops@head", "submit", 1, "queued"),
            AuditEntry(2, NOW - 65, "scheduler-a-long-name@node-7", "decide", 1, "fits gpu0"),
            AuditEntry(3, NOW - 5, "me@laptop (tui)", "preempt", 1, "preempted by me"),
        ]
        text = text_of(screen.details(None)).splitlines()
        at = next(i for i, line in enumerate(text) if line.startswith("history"))
        lines = text[at:at + 3]  # newest first
        for column in (("me@laptop", "scheduler-a", "ops@head"), ("preempt", "decide", "submit"),
                       ("preempted by", "fits gpu0", "queued")):
            assert len({line.index(word) for line, word in zip(lines, column)}) == 1, lines
        assert len({line.index(" ago") for line in lines}) == 1, lines  # ages right-aligned


def test_counts_say_one_gpu_and_two_gpus():
    assert (count(1, "GPU"), count(2, "GPU"), count(0, "job")) == ("1 GPU", "2 GPUs", "0 jobs")
    assert count(1, "theme file") == "1 theme file" and count(3, "box", "boxes") == "3 boxes"
    assert (count(1.0, "CPU"), count(1.5, "CPU"), count(0.5, "CPU")) == (
        "1 CPU", "1.5 CPUs", "0.5 CPUs")  # (a fraction as %g gives it: a CPU quota's 1.5)
    assert (count(sum([0.1] * 10), "GPU"), count(1.0000001, "GPU")) == ("1 GPU", "1 GPU")
    assert count(1, "process", "processes") == "1 process"
    assert (noun_for(1, "param"), noun_for(2, "param")) == ("param", "params")
    assert QueueConfig(name="one", gpus=1).describe() == "1 GPU"
    assert QueueConfig(name="two", gpus=2).describe() == "2 GPUs"


@pilot_test
async def test_the_header_says_one_host():
    app = frozen_app(gpus=4)  # four GPUs: one host
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        header = app.screen.query_one("Header")
        assert "fleet: 1 host, " in text_of(header.render())


def test_fractui_audit_lines_up_its_columns(tmp_path, capfd):
    """The CLI's history too: actors of any length, the columns still start where they did."""
    path = str(tmp_path / "store.db")
    store = open_store(sqlite_url(path))
    queue = QueueConfig(name="quarter", gpu=0.25)
    for actor in ("ops@head", "a-much-longer-user-name@a-much-longer-host (tui)", "me@x"):
        store.submit("quarter", None, "train", ["python", "t.py"], queue.request(), actor)
    store.close()
    config = Config(path=None, queues=(queue,), store=StoreSettings(url=sqlite_url(path)))
    code, out, err = in_process(capfd, ["--config", _written(tmp_path, config), "audit"])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "ACTOR", "ACTION", "JOB", "WHY"]
    assert len(lines) == 4
    for word in ("ACTION", "JOB", "WHY"):
        at = lines[0].index(word)
        assert all(line[at - 2:at] == "  " and line[at] != " " for line in lines[1:]), lines


def _written(tmp_path, config: Config) -> str:
    path = tmp_path / "config.toml"
    path.write_text(toml_text(config))
    return str(path)


@pytest.mark.parametrize("keys", [("o", "o"), ("G", "O")])
@pilot_test
async def test_the_jobs_views_cursor_stays_in_sight_on_its_job_when_the_rows_move(keys):
    """Sorted again (by id, longest first; or the other way), the cursor stays on its job,
    and the table scrolls to it: ``enter`` opens a job the admin sees."""
    async with settled_app((80, 24)) as (app, pilot):
        await pilot.press("J")
        await settled(pilot)
        table = app.screen.table
        await pilot.press(keys[0])
        await pilot.pause()
        job = table.row.ref
        await pilot.press(keys[1])
        await pilot.pause()
        assert table.row.ref == job
        drawn = screen_lines(app)
        assert any(line.split()[:1] == [job] for line in drawn[2:]), (job, drawn)


@pilot_test
async def test_the_jobs_view_scrolled_away_from_its_cursor_stays_as_its_rows_age():
    """Scrolled (the wheel) away from the cursor, the view stays there as its rows are read
    again in place, each second with their ages: it was brought back to the cursor at each."""
    async with settled_app((80, 24)) as (app, pilot):
        await pilot.press("J")
        await settled(pilot)
        view, table = app.screen, app.screen.table
        assert table.cursor == 0 and len(table.rows) > table.size.height, len(table.rows)
        table.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        away, shown = table.scroll_offset.y, list(table.rows)
        assert away > 0
        view.clock = lambda: NOW + 61  # a minute on: every row's age/wait changed
        view.reload()
        await pilot.pause()
        assert table.rows != shown and table.cursor == 0
        assert table.scroll_offset.y == away


@pilot_test
async def test_the_jobs_views_keys_are_its_key_line_and_say_what_esc_does_now():
    """The jobs view's title listed sort, filter and ``a`` only: ``enter``, ``p``, ``m`` and
    ``esc`` were found only through ``?``. Its keys are its ``KeyLine``, at its bottom; while
    the filter is typed, what ``esc`` does there (it clears it), and the view's again after."""
    async with settled_app((80, 24)) as (app, pilot):
        await pilot.press("J")
        await settled(pilot)
        keys = app.screen.query_one(KeyLine)
        assert "\n".join(screen_lines(app)[-2:]) == " " + keys.render().plain.replace(
            "\n", "\n ") == (" esc back  ⏎ open  o sort  O reverse  a ended too  / filter  "
                              "p place  m move\n e messages  ? help  : command")
        assert "o/O sort" not in screen_lines(app)[0]
        await pilot.press("slash", "t", "slash")  # ("/" typed there: no "/ filter" listed)
        await pilot.pause()
        assert keys.render().plain == "esc clear filter  ^p command"  # (: types there)
        assert app.screen.filter_text == "t/"
        await pilot.press("backspace")
        await pilot.press("enter", "a")
        await pilot.pause()
        assert keys.render().plain.startswith("esc back  ⏎ open  o sort  O reverse  a active")


@pilot_test
async def test_while_a_jobs_output_is_searched_its_key_line_says_what_keys_do_there():
    """The search's box typed ``s`` into the search while the line still read ``s stop``:
    while it is open, the line lists what is bound there (``esc`` closes it), and the
    output's and the job's keys again once it is closed."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        keys = screen.query_one(KeyLine)
        whole = keys.render().plain
        await pilot.press("slash", "s", "slash")  # ("/" typed there: no "/ search" listed)
        await pilot.pause()
        # (? and : type there too; ctrl+p still opens the palette, so it is listed)
        assert keys.render().plain == "esc close search  ^p command"
        assert screen.query_one("#search").value == "s/"
        await pilot.press("escape")
        await pilot.pause()
        assert keys.render().plain == whole and whole.startswith("n next")


@pytest.mark.parametrize("typed", ["a{99999999999}", "(?a)(?u)x"])
@pilot_test
async def test_a_search_of_a_jobs_output_too_big_for_re_is_searched_as_written(typed):
    """``a{99999999999}`` is no re.error but an OverflowError as re compiles it, flags at odds
    (``(?a)(?u)``) a ValueError (the filter's sibling, ``typed.typed_pattern``): searched for, each
    ended the TUI."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        await pilot.press("slash", *typed, "enter")
        await pilot.pause()
        assert app.is_running and app.screen is screen
        assert screen.logview.pattern.regex.pattern == re.escape(typed)


@pilot_test
async def test_a_followed_output_shows_its_newest_line_once_the_details_are_in():
    """The log followed its output's end as the lines came, before the job's details and
    health above it were read; they then took its rows, and "following" showed the first
    lines, the newest below its edge."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        assert screen.logview.following
        # (on a loaded machine the log's resize may come many frames later; without the fix
        # the newest line never comes)
        await until(pilot, lambda: LOGS["a100-1/j1"][-1] in screen_lines(app),
                    "the newest line drawn")


@pilot_test
async def test_a_followed_output_that_outgrows_its_view_at_once_shows_its_newest_line():
    """Output that fit its view, then more than it holds in one chunk (a job's first words,
    or an ended job's whole output read at once): the view scrolled to its end before its
    scrollbar was laid out, which Textual ignores, and stayed at the top till more came. It
    was seen only under load, where the output came after the details' resize."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        view = (await open_job_1(app, pilot)).logview
        view.clear()
        view.write("")
        await pilot.pause()
        assert view.following and not view.show_vertical_scrollbar
        view.write("".join("line %d\n" % n for n in range(40)))
        await pilot.pause()
        assert "line 39" in screen_lines(app) and view.is_vertical_scroll_end


async def wheeled_up_from_the_end(app, pilot, screen) -> LogView:
    """The job screen's log given 60 lines, followed to the newest, then the wheel turned up
    three notches, until older lines are drawn."""
    view = screen.logview
    view.clear()
    view.write("".join("line %d\n" % n for n in range(60)))
    await until(pilot, lambda: "line 59" in screen_lines(app), "the newest line drawn")
    for _ in range(3):
        view.post_message(events.MouseScrollUp(view, 0, 0, 0, -1, 0, False, False, False))
    await until(pilot, lambda: "line 59" not in screen_lines(app), "older lines drawn")
    return view


@pilot_test
async def test_a_wheel_turned_up_over_a_followed_output_stops_following_it():
    """The wheel turned up to read older output, and the job wrote one line more: the view
    was taken back down to the end, so output that keeps coming could not be read back with
    the mouse. The wheel stops the following, as a key up does; f follows again."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        view = await wheeled_up_from_the_end(app, pilot, screen)
        top = view.scroll_offset.y
        view.write("one more\n")
        await pilot.pause()
        await pilot.pause()
        assert not view.following and view.scroll_offset.y == top
        assert "following" not in screen.query_one("#logstate").render().plain
        await pilot.press("f")
        await until(pilot, lambda: "one more" in screen_lines(app), "the newest line drawn")


@pilot_test
async def test_a_wheel_that_stops_following_leaves_the_cursor_on_a_line_in_sight():
    """The wheel turned up from the end: the cursor stayed on the newest line, out of sight,
    so y copied a line the reader could not see and j went on from the end. It is kept on a
    line in sight as the wheel turns, the nearest to where it was (the lowest going up, the
    highest coming back down)."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_job_1(app, pilot)
        view = await wheeled_up_from_the_end(app, pilot, screen)
        await pilot.pause()
        top, height = view.scroll_offset.y, view.scrollable_content_region.height
        assert view.cursor == top + height - 1, (view.cursor, top, height)
        assert "line %d" % view.cursor in screen_lines(app)
        await pilot.press("k")  # from the line in sight, not from the end
        assert view.cursor == top + height - 2
        await pilot.press("y")
        assert app.clipboard == "line %d" % (top + height - 2)
        for _ in range(2):
            view.post_message(events.MouseScrollDown(view, 0, 0, 0, 1, 0, False, False, False))
        await until(pilot, lambda: view.scroll_offset.y > top, "newer lines drawn")
        await pilot.pause()
        assert view.scroll_offset.y <= view.cursor < view.scroll_offset.y + height
        assert not view.following


@pilot_test
async def test_a_log_made_shorter_by_a_resize_keeps_its_cursor_in_sight():
    """The terminal made smaller while the log is not followed: the view kept its top, so
    its height shrank from below, and the cursor on a line near its bottom was left out of
    sight (no scroll moved, so the wheel's rule never ran): y copied a line the reader could
    not see. It is kept on a line in sight, the nearest to where it was, as the wheel keeps
    it."""
    app = frozen_app()
    async with app.run_test(size=(80, 48)) as pilot:
        screen = await open_job_1(app, pilot)
        view = screen.logview
        view.clear()
        view.write("".join("line %d\n" % n for n in range(120)))
        await until(pilot, lambda: "line 119" in screen_lines(app), "the newest line drawn")
        await pilot.press("k")  # off the following, on line 118
        assert (view.cursor, view.following) == (118, False)
        top, tall = view.scroll_offset.y, view.scrollable_content_region.height
        await pilot.resize_terminal(80, 30)
        await until(pilot, lambda: view.scrollable_content_region.height < tall, "shorter")
        await pilot.pause()
        top, height = view.scroll_offset.y, view.scrollable_content_region.height
        assert top <= view.cursor < top + height, (view.cursor, top, height)
        assert view.cursor == top + height - 1  # the nearest line in sight
        assert "line %d" % view.cursor in screen_lines(app)
        await pilot.press("y")
        assert app.clipboard == "line %d" % view.cursor
        assert not view.following


def in_sight(app, widget) -> bool:
    """Whether ``widget`` is drawn whole within the screen, as its compositor lays it out (a
    widget laid out below the screen's edge has a region there, out of the screen's)."""
    try:
        region = app.screen.find_widget(widget).region
    except NoWidget:
        return False
    return region.height > 0 and app.screen.region.contains_region(region)


LONG_QUESTION = "Asked first. " + "Turn MIG mode on on gpu-a gpu 0 (NVIDIA A100-SXM4-80GB, MIG " \
    "now off): " * 6 + "?"


async def _to(way: str, app, pilot) -> None:
    """Into what ``way`` names: a screen, its search or filter box typed into (``… /``), the
    GPU view's profile picker (``N``), a question taller than the screen."""
    await settled(pilot)
    screen = way.removesuffix(" /")
    if screen == "job":
        await open_job_1(app, pilot)
    elif screen in ("jobs", "gpu"):
        await pilot.press("J" if screen == "jobs" else "d")
    elif screen == "gpu N":
        await pilot.press("d", "N")
    elif screen == "question":
        app.push_screen(ConfirmScreen(LONG_QUESTION))
    await settled(pilot)
    if way.endswith("/"):
        await pilot.press("slash", "e", "p")
        await pilot.pause()


@pytest.mark.parametrize("way,size", [
    (way, size) for size in [(40, 10), (80, 24)] for way in [
        "fleet", "fleet /", "jobs", "jobs /", "job", "job /", "gpu", "gpu N", "question"]
] + [("job", (40, 7)), ("job /", (40, 7))])
@pilot_test
async def test_what_is_typed_into_or_has_the_focus_is_in_sight_at_small_sizes(way, size):
    """At 40x10 the job screen's head (its details, its GPU's health) filled the screen: its
    output was drawn below the edge, and the search's box, opened with ``/``, was typed into
    out of sight; a question taller than the screen put its buttons below it. Every box typed
    into, every focused widget and a question's buttons are drawn within the screen, at 40x10
    (the least size the TUI is held to, docs/decisions.md) and the job screen at 40x7, where a
    head kept at 2 rows at least still pushed its output below the edge."""
    app = frozen_app()
    async with app.run_test(size=size) as pilot:
        await _to(way, app, pilot)
        # laid out within the screen: none of it below the edge, which the screen scrolled
        # to once the focus was there, taking the job's head (or the question's start) away
        assert app.screen.max_scroll_y == 0 and app.screen.scroll_offset.y == 0
        assert in_sight(app, app.focused), (app.focused, app.screen.find_widget(
            app.focused).region)
        if way.endswith("/"):
            assert isinstance(app.focused, Input) and app.focused.value == "ep"
            assert any("ep" in line for line in screen_lines(app)), screen_lines(app)
        if way == "job":
            assert in_sight(app, app.screen.query_one("#logstate"))
        if way == "question":
            assert all(in_sight(app, b) for b in app.screen.query(Button))
            assert any("│ Asked first. " in line for line in screen_lines(app))  # (its start)
        if way.startswith("job "):
            assert screen_lines(app)[0].startswith(" job #1"), screen_lines(app)
