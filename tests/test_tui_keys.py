"""The app's keys on every screen (an admin's day driven with Pilot on the sample fleet): the
views of the whole app (``J`` jobs, ``R`` report, ``e`` the recent notices) open from the GPU
view as from the map, a key of the map's own says there why it does nothing; ``m`` on the map
moves the job under the cursor; ``?`` on the map says how one GPU is cordoned; and the notices
that last a few seconds can be read again."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import threading

import pytest
from textual.containers import VerticalScroll
from textual.widgets import Button, Input, Static

import fractui.tui
from fractui.tui.actions import key_named
from fractui.tui.app import FractuiApp, binding_ids
from fractui.tui.cursor import Cursor
from fractui.tui.filterbox import FilterBox
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.gpu_screen import GpuBody, GpuScreen
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.jobs_view import JobsScreen, JobTable
from fractui.tui.logview import LogView
from fractui.tui.messages import KEPT, MessagesScreen
from fractui.tui.placement import PreviewBar
from fractui.tui.queues import QueuePanel
from fractui.tui.report_view import ReportBody, ReportScreen
from fractui.tui.slicemap import SliceMap
from tests.test_tui_pilot import palette
from tests.tui_frozen import frozen_app, pilot_test, said, screen_lines, settled, settled_app


async def pressed(pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await settled(pilot)


def help_ids(app) -> set[str]:
    assert isinstance(app.screen, HelpScreen)
    return {bid for _key, _what, bid in app.screen.keys}


@pilot_test
async def test_the_apps_views_open_from_the_gpu_view_and_the_maps_own_keys_say_why_not():
    async with settled_app((120, 40)) as (app, pilot):
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        gpu = app.screen
        keys = " ".join(" ".join(screen_lines(app)[-2:]).split())
        assert keys.endswith("J jobs e messages ? help : command"), keys  # listed, as they
        # work here
        await pressed(pilot, "question_mark")
        assert {"fleet.jobs", "fleet.report", "app.messages", "gpu.cordon"} <= help_ids(app)
        assert "fleet.filter" not in help_ids(app) and "fleet.order" not in help_ids(app)
        await pressed(pilot, "escape", "J")
        assert isinstance(app.screen, JobsScreen)
        await pressed(pilot, "question_mark")  # the jobs view's J would open nothing
        assert "fleet.jobs" not in help_ids(app) and "fleet.report" in help_ids(app)
        await pressed(pilot, "escape", "escape")
        assert app.screen is gpu
        await pressed(pilot, "R")
        assert isinstance(app.screen, ReportScreen)
        await pressed(pilot, "escape")
        assert app.screen is gpu and said(app) == []
        await pressed(pilot, "slash", "o")  # the map's filter and order: said, nothing done
        assert app.screen is gpu
        assert said(app) == ["/ (filter) is the map's key: it does nothing here",
                             "o (order) is the map's key: it does nothing here"]
        mark = len(app.notices.kept)
        await pressed(pilot, "enter")  # a job opened from the GPU view, then J, then one of
        assert isinstance(app.screen, JobScreen)  # the jobs view's jobs, then J again:
        await pressed(pilot, "J", "enter")  # back to the jobs view, never pushed twice
        assert isinstance(app.screen, JobScreen)
        await pressed(pilot, "J")
        assert isinstance(app.screen, JobsScreen)
        assert [type(s) for s in app.screen_stack[-3:]] == [GpuScreen, JobScreen, JobsScreen]
        assert said(app, mark) == []


@pilot_test
async def test_the_copy_key_is_never_called_the_maps():
    """The map binds ``super+c`` to copy the text selected with the mouse, an action of any
    screen's (``screen.copy_text``), not one of the map's own: pressed on the GPU view, the
    report or the messages, it was said to be "the map's key"."""
    async with settled_app((120, 40)) as (app, pilot):
        for opener in (lambda: app.open_gpu("a100-1", 2), app.open_report, app.open_messages):
            opener()
            await settled(pilot)
            await pressed(pilot, "super+c")
            assert said(app) == [], type(app.screen).__name__
            await pressed(pilot, "escape")


@pilot_test
async def test_a_text_box_types_the_maps_keys_and_a_dialog_takes_none_of_the_apps():
    async with settled_app((120, 40)) as (app, pilot):
        await pressed(pilot, "J", "slash", "o", "J")  # the jobs view's filter box types them
        assert isinstance(app.screen, JobsScreen) and said(app) == []
        await pressed(pilot, "escape", "escape")
        app.open_gpu("a100-1", 1)
        await settled(pilot)
        await pressed(pilot, "M")  # MIG mode off on an idle GPU: asked first, in a dialog
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        await pressed(pilot, "J", "e", "o")  # neither opens a view nor says a word under it
        assert app.screen is dialog and said(app) == []


@pilot_test
async def test_m_on_the_map_moves_the_job_under_the_cursor_or_says_which_to_pick():
    async with settled_app((120, 40)) as (app, pilot):
        fleet = app.fleet
        fleet.map.move_to(Cursor("a100-1", 2, 0.6))  # on #2's instance
        await pressed(pilot, "m")
        assert fleet.placement is not None and fleet.placement.job.id == 2
        assert fleet.placement.moving
        await pressed(pilot, "escape")
        assert fleet.placement is None
        fleet.map.move_to(Cursor("a100-1", 0, 0.25))  # an idle instance; #1 the GPU's one job
        await pressed(pilot, "m")
        assert fleet.placement is not None and fleet.placement.job.id == 1
        await pressed(pilot, "escape")
        fleet.map.move_to(Cursor("a100-1", 2, 0.45))  # free slices beside #2, #3, #4
        await pressed(pilot, "m")
        assert fleet.placement is None
        assert said(app) == ["no job under the cursor to move: a100-1 gpu 2 runs #2, #3, #4: "
                             "put the cursor on one's slice (or d opens the GPU)"]
        mark = len(app.notices.kept)
        fleet.map.move_to(Cursor("a100-1", 1, 0.5))
        await pressed(pilot, "m")
        assert fleet.placement is None
        assert said(app, mark) == ["no job under the cursor to move: a100-1 gpu 1 runs no job of "
                                   "the store"]
        await pressed(pilot, "question_mark")
        assert "map.move" in help_ids(app)


@pilot_test
async def test_readonly_binds_no_move_on_the_map_and_no_service_words_in_its_help():
    async with settled_app((120, 40), readonly=True) as (app, pilot):
        fleet = app.fleet
        fleet.map.move_to(Cursor("a100-1", 2, 0.6))
        await pressed(pilot, "m")
        assert fleet.placement is None
        await pressed(pilot, "question_mark")
        assert "map.move" not in help_ids(app) and "map.cordon" not in help_ids(app)
        assert "cordon gpu" not in app.screen.words
        assert {"fleet.jobs", "app.messages"} <= help_ids(app)  # (views: not dangerous)


@pilot_test
async def test_help_on_the_map_says_how_one_gpu_is_cordoned():
    async with settled_app((120, 40)) as (app, pilot):
        await pressed(pilot, "question_mark")
        words = app.screen.words
        assert "C, D and U cordon, drain and put back the cursor's whole host. One GPU: d " \
            "opens it, then C, D or U there; or in the palette (:) cordon gpu HOST N" in words
        shown = "\n".join(screen_lines(app))
        assert "d opens it, then C, D or U there" in shown, shown


@pilot_test
async def test_help_on_the_map_names_the_gpu_views_keys_as_the_config_maps_them():
    async with settled_app((120, 40), keys=(("gpu.cordon", "K"), ("map.gpu", "v"))) as (
            app, pilot):
        await pressed(pilot, "question_mark")
        assert "One GPU: v opens it, then K, D or U there" in app.screen.words


@pilot_test
async def test_help_on_the_map_writes_the_gpu_views_remapped_keys_as_its_key_line_does():
    """A remapped key is written as Textual displays it (``^k``, ``/``), as the GPU view's own
    key line and ``?`` write it, not as the config spells it (``ctrl+k``, ``slash``)."""
    async with settled_app((120, 40), keys=(("gpu.cordon", "ctrl+k"), ("gpu.drain", "slash"),
                                            ("map.cordon", "ctrl+o"))) as (app, pilot):
        await pressed(pilot, "question_mark")
        assert "^o, D and U cordon, drain and put back the cursor's whole host. One GPU: d " \
            "opens it, then ^k, / or U there" in app.screen.words, app.screen.words
        await pressed(pilot, "escape")
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        keys = " ".join(" ".join(screen_lines(app)[-2:]).split())
        assert "^k cordon" in keys and "/ drain" in keys, keys


@pilot_test
async def test_the_sources_header_note_is_whole_among_the_notices():
    """``fractui demo``'s note (what is simulated) is the header's last line, cut at 80
    columns ("demo · simulate…"), and said whole nowhere else in the TUI (the demo prints it
    before the TUI starts). It is the first notice too: ``e`` lists it whole."""
    note = ("demo · real jobs (≤6 processes) on the first 4 hosts · the other 8 carry "
            "simulated load")
    app = frozen_app()
    app.source.note = note
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        assert note not in "\n".join(screen_lines(app))  # (the header cuts it)
        await pressed(pilot, "e")
        assert isinstance(app.screen, MessagesScreen)
        shown = " ".join(" ".join(screen_lines(app)).split())
        assert "information " + note in shown, shown
        assert [n.message for n in app.notices.newest_first()][-1:] == [note]


@pilot_test
async def test_e_lists_the_recent_notices_newest_first_and_esc_goes_back():
    async with settled_app((120, 40)) as (app, pilot):
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        gpu = app.screen
        await pressed(pilot, "X")  # no idle instance: a refusal, gone in a few seconds
        app.notify("created 3g.40gb at slot 4", severity="information", title="mig")
        app.clear_notifications()  # (as it is once they have timed out)
        await pressed(pilot, "e")
        assert isinstance(app.screen, MessagesScreen)
        lines = screen_lines(app)
        at = [n for n, ln in enumerate(lines) if "created 3g.40gb at slot 4" in ln
              or "no idle MIG instance on a100-1 gpu 2" in ln]
        assert len(at) == 2, lines
        assert "mig: created 3g.40gb at slot 4" in lines[at[0]]  # newest first
        assert "information" in lines[at[0]] and "warning" in lines[at[1]]
        assert "warning" in lines[at[1]] and ":" in lines[at[1]].split()[0]  # its time
        app.notify("said while it is open")
        await settled(pilot)
        assert any("said while it is open" in ln for ln in screen_lines(app))
        await pressed(pilot, "escape")
        assert app.screen is gpu
        for n in range(KEPT + 5):  # bounded: the oldest go
            app.notify("notice %d" % n)
        kept = app.notices.newest_first()
        assert len(kept) == KEPT and kept[0].message == "notice %d" % (KEPT + 4)
        assert kept[-1].message == "notice 5"


@pilot_test
async def test_the_palette_opens_the_messages():
    async with settled_app((120, 40)) as (app, pilot):
        entry = next(e for e in app.fleet.palette_entries() if e.text == "messages")
        entry.run()
        await settled(pilot)
        assert isinstance(app.screen, MessagesScreen)
        assert "no notice yet" in "\n".join(screen_lines(app))


@pilot_test
async def test_the_palettes_views_open_over_the_screen_it_is_on_as_their_keys_do():
    """``:`` "messages" (or "jobs", "report") from the GPU view opens the view over it, as
    ``e`` does: esc comes back to the GPU view, not to the map (the palette's jumps to a host
    close the screens over the map; a view of the whole app's is not one)."""
    async with settled_app((120, 40)) as (app, pilot):
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        gpu = app.screen
        for words, view in (("messages", MessagesScreen), ("jobs", JobsScreen),
                            ("report", ReportScreen)):
            await palette(pilot, words)
            await settled(pilot)
            assert isinstance(app.screen, view), (words, app.screen)
            await pressed(pilot, "escape")
            assert app.screen is gpu, (words, app.screen)


@pilot_test
async def test_esc_out_of_a_move_opens_again_the_report_and_messages_it_closed():
    """``J`` opens the jobs view over the report or the messages now; a move asked there
    closes every screen over the map, and its ``esc`` opened again only the jobs view: the
    report (its range and grouping) and the messages under it were gone."""
    async with settled_app((120, 40)) as (app, pilot):
        await pressed(pilot, "R", "e", "J")
        stack = [type(s) for s in app.screen_stack[-4:]]
        assert stack == [FleetScreen, ReportScreen, MessagesScreen, JobsScreen], stack
        app.move_job(2)  # (the jobs view's m on #2's row)
        await settled(pilot)
        assert app.screen is app.fleet and app.fleet.placement is not None
        await pressed(pilot, "escape")
        assert app.fleet.placement is None
        stack = [type(s) for s in app.screen_stack[-4:]]
        assert stack == [FleetScreen, ReportScreen, MessagesScreen, JobsScreen], stack


def test_the_new_keys_clash_with_no_binding_of_a_screen_or_widget():
    """A screen's or a widget's binding of ``J``, ``R`` or ``e`` would hide the app's there
    (the focused node's binding is taken first), and one of the fleet screen's of ``m`` the
    map's: none binds them."""
    def keys(cls, ids=None) -> set[str]:
        return {k for b in cls.BINDINGS if ids is None or b.id in ids for k in b.key.split(",")}

    views = keys(FractuiApp, {"fleet.jobs", "fleet.report", "app.messages"})
    assert views == {"J", "R", "e"}
    for cls in (FleetScreen, SliceMap, QueuePanel, PreviewBar, JobScreen, LogView, JobsScreen,
                JobTable, GpuScreen, GpuBody, ReportScreen, ReportBody, MessagesScreen):
        assert not keys(cls) & views, cls.__name__
    assert "m" in keys(SliceMap) and "m" not in keys(FleetScreen) | keys(FractuiApp)


@pilot_test
async def test_the_messages_screen_counts_one_notice_as_one_notice():
    """The messages screen's head counts what it lists: one notice was "the last 1 notices";
    two are two notices."""
    async with settled_app((120, 40)) as (app, pilot):
        app.notices.kept.clear()
        app.notify("the one notice")
        await pressed(pilot, "e")
        assert isinstance(app.screen, MessagesScreen)
        assert any("the last 1 notice, newest first (" in ln for ln in screen_lines(app)), \
            screen_lines(app)
        app.notify("another notice")
        await settled(pilot)
        assert any("the last 2 notices, newest first (" in ln for ln in screen_lines(app)), \
            screen_lines(app)


@pilot_test
async def test_a_notice_from_a_worker_thread_is_listed_by_the_apps_thread():
    """Textual's ``notify`` may be called from a thread (it posts a message); the messages
    screen, open, lists the notice at once, drawn where widgets are drawn: on the app's thread,
    never the caller's. Nor does a notice said once the app has ended (the screen gone with it)
    raise where Textual's would not."""
    async with settled_app((120, 40)) as (app, pilot):
        await pressed(pilot, "e")
        screen = app.screen
        assert isinstance(screen, MessagesScreen)
        listing = screen.query_one("#messages", Static)
        drawn_on: list[int] = []
        update = listing.update

        def watched(*args, **kwargs) -> None:
            drawn_on.append(threading.get_ident())
            update(*args, **kwargs)

        listing.update = watched  # (the same drawing, its thread noted)
        worker = threading.Thread(target=app.notify, args=("said by a worker",))
        worker.start()
        while worker.is_alive():
            await asyncio.sleep(0.01)
        await settled(pilot)
        assert any("said by a worker" in ln for ln in screen_lines(app))
        assert drawn_on and set(drawn_on) == {threading.get_ident()}
    app.notify("said after the end")  # (no screen to list it on: kept, nothing drawn)
    assert app.notices.newest_first()[0].message == "said after the end"


REMAPPED = (("fleet.jobs", "ctrl+b"), ("job.search", "ctrl+f"), ("map.gpu", "i"),
            ("fleet.back", "ctrl+g"), ("jobs.ended", "A"), ("app.command", "ctrl+k"))


@pilot_test
async def test_a_notice_that_names_a_key_names_it_as_remapped():
    """Notices that tell the admin which key to press named the key as shipped: with ``[tui]
    keys`` remapping them they sent the admin to a key that did nothing (``d opens the GPU``
    where ``i`` does), as ``?`` and the key lines never do."""
    async with settled_app((120, 40), keys=REMAPPED) as (app, pilot):
        fleet = app.fleet
        fleet.map.move_to(Cursor("a100-1", 2, 0.45))  # free slices beside #2, #3, #4
        await pressed(pilot, "m")
        await pressed(pilot, "slash", *"zzz", "enter", "C")
        assert said(app) == [
            "no job under the cursor to move: a100-1 gpu 2 runs #2, #3, #4: put the cursor on "
            "one's slice (or i opens the GPU)",
            "no host under the cursor to cordon: nothing matches /zzz/ (^g clears the filter); "
            "the palette (^k) names one: cordon host NAME"]
        mark = len(app.notices.kept)
        await pressed(pilot, "ctrl+g", "ctrl+b", "slash", *"zzz", "enter", "enter")
        assert isinstance(app.screen, JobsScreen)
        assert said(app, mark) == ["no job to open: the view lists none (A lists the ended too)"]
        await pressed(pilot, "escape", "escape")
        app.open_job(1)
        await settled(pilot)
        mark = len(app.notices.kept)
        await pressed(pilot, "n")
        assert said(app, mark) == ["nothing searched yet: ^f searches the output"]


EVERY_TEXT = (("fleet.back", "ctrl+g"), ("jobs.back", "ctrl+x"), ("job.back", "ctrl+g"),
              ("log.next", "f7"), ("log.previous", "f8"), ("confirm.yes", "space"),
              ("confirm.no", "x,escape"), ("help.close", "ctrl+w,escape"), ("app.help", "f1"),
              ("app.command", "ctrl+k"), ("fleet.jobs", "ctrl+b"), ("fleet.report", "ctrl+r"),
              ("app.messages", "ctrl+e"), ("fleet.order", "ctrl+o"), ("queue.place", "P"),
              ("queue.job", "space"), ("map.cordon", "x,C"), ("map.drain", "ctrl+shift+d"),
              ("map.uncordon", "u"), ("map.gpu", "i"), ("gpu.cordon", "f2"),
              ("gpu.drain", "f3"), ("gpu.uncordon", "f4"))


@pilot_test
async def test_every_text_that_names_a_key_names_it_as_remapped():
    """The placeholders, the help, the confirmation's buttons, the palette's entries and the
    pending list's title named the keys as shipped (``esc clears``, ``n/N next/previous``,
    ``in the palette (:)``, ``yes (y)``, ``(J)``, ``p place``): remapped, each sent the admin
    to a key that did nothing. Each names the first key as remapped, as the key lines write
    it (``^g``, ``f7``, ``space``, ``shift+^d``)."""
    async with settled_app((120, 40), keys=EVERY_TEXT) as (app, pilot):
        fleet = app.fleet
        assert fleet.query_one(FilterBox).placeholder == (
            "filter: regex, !regex for the rest; enter keeps, ^g clears")
        pending = next(ln for ln in screen_lines(app) if " Pending " in ln)
        assert "P place · space open" in pending, pending
        helps = {e.text.split(" ")[0]: e.help for e in fleet.palette_entries()}
        assert helps["jobs"].endswith("(^b)") and helps["report"].endswith("(^r)")
        assert helps["messages"].endswith("(^e)") and helps["order"].endswith("(^o)")
        keys = next(c for c in app.get_system_commands(app.screen) if c.title == "Keys")
        assert keys.help.endswith("remaps it (f1)"), keys.help
        await pressed(pilot, "f1")
        assert app.screen.query_one(VerticalScroll).border_subtitle == "^w to close"
        assert "x, shift+^d and u cordon, drain and put back the cursor's whole host. One " \
            "GPU: i opens it, then f2, f3 or f4 there; or in the palette (^k) cordon gpu " \
            "HOST N" in app.screen.words, app.screen.words
        await pressed(pilot, "ctrl+w", "ctrl+b")
        assert isinstance(app.screen, JobsScreen)
        assert app.screen.query_one(FilterBox).placeholder == (
            "filter: regex, !regex for the rest; enter keeps, ^x clears")
        await pressed(pilot, "ctrl+x")
        app.open_job(1)
        await settled(pilot)
        assert app.screen.query_one("#search", Input).placeholder == (
            "search: a regex; enter finds, f7/f8 next/previous, ^g closes")
        app.push_screen(ConfirmScreen("stop job #1?"))
        await settled(pilot)
        assert [str(b.label) for b in app.screen.query(Button)] == ["yes (space)", "no (x)"]


@pilot_test
async def test_a_key_named_by_an_id_no_binding_has_fails_loudly():
    """A typo in a binding id in the code named the key as shipped, or anything: it raises."""
    async with settled_app((120, 40)) as (app, pilot):
        assert key_named(app.fleet.map, "map.gpu") == "d"
        with pytest.raises(KeyError):
            key_named(app.fleet.map, "map.gpus")


def test_every_binding_id_the_code_names_a_key_by_is_a_bindings():
    """``key_named`` with an id no binding has raises where it is said: a notice no test
    reaches would raise at an admin's. Every id written in a call of it, read from the code
    (``one_gpu_words`` and the pending list's title, which name theirs from a tuple, are
    drawn by the test above)."""
    named = []
    for path in sorted(pathlib.Path(fractui.tui.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and "key_named" in (
                    getattr(node.func, "id", None), getattr(node.func, "attr", None)):
                named += [(a.value, "%s:%d" % (path.name, node.lineno)) for a in node.args
                          if isinstance(a, ast.Constant)]
    assert len(named) > 20, named
    assert [(i, where) for i, where in named if i not in binding_ids()] == []
