"""The map's cursor, the jobs view, the GPU detail view, the pending list and the legend, by
their keys and the mouse, on the frozen sample fleet."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from rich.console import Console

from fractui.config import Config, TuiSettings
from fractui.fleet.host import HostStatus
from fractui.store.model import CORDON, DRAIN, Cordon
from fractui.tui.app import FractuiApp

from fractui.tui.cursor import places, slices_of
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.gpu_screen import GpuScreen
from fractui.tui.jobs import JobScreen
from fractui.tui.jobs_view import JobsScreen, JobTable
from fractui.tui.legend import Legend
from fractui.tui.model import GpuLine, HostLine
from fractui.tui.placement import PreviewBar
from fractui.tui.queues import QueuePanel
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.slicemap import SliceMap
from fractui.tui.source import Source
from tests.test_tui_pilot import palette
from tests.tui_frozen import STATES, pilot_test, said, settled, settled_app


def fleet(app) -> FleetScreen:
    return next(s for s in app.screen_stack if isinstance(s, FleetScreen))


async def pressed(pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def shown_words(widget) -> str:
    """The words a widget shows on screen, at the height it has (what it cuts is not there)."""
    lines = [" ".join(s.text for s in strip).strip() for strip in
             (widget.render_line(y) for y in range(widget.size.height))]
    return " ".join(" ".join(lines).split())


def plain(renderable, width: int = 200) -> str:
    """What a renderable says, as text."""
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def busiest(screen: FleetScreen) -> GpuLine:
    """The GPU holding the most store jobs."""
    gpus = [line for line in screen.map.lines if isinstance(line, GpuLine)]
    return max(gpus, key=lambda g: sum(1 for s in slices_of(g) if s.job_id is not None))


@pilot_test
async def test_keys_reach_every_slice_of_a_gpu_and_enter_opens_that_slice_s_job():
    async with settled_app((160, 48)) as (app, pilot):
        screen = fleet(app)
        smap = screen.map
        target = busiest(screen)
        jobs = [s.job_id for s in slices_of(target) if s.job_id is not None]
        assert len(jobs) >= 3
        while (smap.cursor.host, smap.cursor.gpu) != (target.host, target.index):
            await pressed(pilot, "j")
        while smap.chosen()[1] != slices_of(target)[0]:
            await pressed(pilot, "h")
        seen = []
        for _ in slices_of(target):
            seen.append(smap.chosen()[1].job_id)
            await pressed(pilot, "l")
        assert [j for j in seen if j is not None] == jobs  # every job's slice, in order
        await pressed(pilot, "h")
        last = smap.chosen()[1]
        assert last == slices_of(target)[-1]
        await pressed(pilot, "k", "j")  # up a GPU and back: on the same slice
        assert smap.chosen()[1] == last
        while smap.chosen()[1].job_id != jobs[1]:
            await pressed(pilot, "left")
        await pressed(pilot, "enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == jobs[1]
        await pressed(pilot, "escape")
        assert app.screen is screen
        await pressed(pilot, "G")
        assert smap.cursor_line == max(i for i, line in enumerate(smap.lines)
                                       if isinstance(line, GpuLine))
        await pressed(pilot, "g")
        assert smap.cursor_line == 1 and smap.scroll_offset.y == 0


@pilot_test
async def test_the_cursor_starts_on_the_first_gpu_whichever_host_comes_online_first():
    fleet_now = sample_fleet(16)
    source = Source([HostStatus(s.name) for s in fleet_now.statuses], fleet_now.store)
    app = FractuiApp(source, Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                     clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        for status in reversed(fleet_now.statuses):  # the last host answers first
            source.changed(status)
            await pressed(pilot)
        smap = fleet(app).map
        first = places(smap.lines)[0].gpu  # compact at 80x24: several GPUs a line
        assert (smap.cursor.host, smap.cursor.gpu) == (first.host, first.index)
        await pressed(pilot, "j")  # moved by hand, it stays where it was put
        moved = smap.cursor
        source.changed(dataclasses.replace(fleet_now.statuses[0], error="a new error"))
        await pressed(pilot)
        assert smap.cursor == moved and moved.host == first.host


@pilot_test
async def test_enter_on_a_free_slice_and_d_open_the_gpu_detail_with_the_host_error_in_full():
    async with settled_app((80, 24)) as (app, pilot):
        screen = fleet(app)
        smap = screen.map
        while smap.chosen()[0].host != "l4-1":
            await pressed(pilot, "j")
        await pressed(pilot, "d")
        assert isinstance(app.screen, GpuScreen) and app.screen.host == "l4-1"
        text = plain(app.screen.query_one("#gpu-head").content)
        assert STATES["l4-1"][1] in text  # the whole error, which the map cuts at 80 columns
        health = plain(app.screen.query_one("#health-lines").content)
        assert health.startswith("health   temp ") and "power" in health and "XID" in health
        labels = [plain(app.screen.query_one("#%s-label" % n).content) for n in ("first",
                                                                                "second")]
        assert labels[0].startswith("util") and labels[1].startswith("memory"), labels
        await pressed(pilot, "escape")
        while smap.chosen()[1].block is not None:
            await pressed(pilot, "l")
        gpu = smap.chosen()[0]
        await pressed(pilot, "enter")
        assert isinstance(app.screen, GpuScreen)
        assert (app.screen.host, app.screen.index) == (gpu.host, gpu.index)


@pilot_test
async def test_the_gpu_detail_says_whether_the_gpu_is_out_of_service_and_by_whose_cordon():
    async with settled_app((120, 36), cordons=[Cordon("a10-1", 1, CORDON, "ops", "", 1.0),
                                               Cordon("h100-1", None, DRAIN, "ops", "", 1.0)]
                           ) as (app, pilot):
        for host, index, service in (("a10-1", 1, "service  cordoned"),
                                  ("h100-1", 0, "service  host draining"),
                                  ("a10-1", 0, None)):
            app.open_gpu(host, index)
            await pressed(pilot)
            lines = plain(app.screen.query_one("#gpu-head").content).splitlines()
            assert [line.rstrip() for line in lines if line.startswith("service")] == (
                [service] if service else []), (host, index)
            await pressed(pilot, "escape")


@pilot_test
async def test_a_click_selects_the_slice_clicked_not_the_first_job_of_its_gpu():
    async with settled_app((160, 48)) as (app, pilot):
        screen = fleet(app)
        smap = screen.map
        target = busiest(screen)
        row = smap.lines.index(target)
        parts = [s for s in slices_of(target) if s.job_id is not None]
        for part in parts[1:]:  # not the first job: the one clicked
            x = next(x for x in range(smap.line_width)
                     if (hit := smap.gpu_at(x, row)) is not None and hit[:2] == (
                         target.host, target.index) and part.start < hit[2] <
                     part.start + part.size)
            await pilot.click(SliceMap, offset=(x, row))
            await pilot.pause()
            assert smap.chosen()[1].job_id == part.job_id
            await pressed(pilot, "enter")
            assert isinstance(app.screen, JobScreen) and app.screen.job_id == part.job_id
            await pressed(pilot, "escape")


@pilot_test
async def test_pages_move_the_cursor_and_the_host_header_stays_on_top():
    async with settled_app((160, 24), gpus=64) as (app, pilot):
        screen = fleet(app)
        smap = screen.map
        await pressed(pilot, "z")  # one GPU a line: more lines than rows
        await pressed(pilot, "pagedown")
        top, height = smap.scroll_offset.y, smap.size.height
        assert top > 0 and top < smap.cursor_line < top + height
        top = next(i for i, line in enumerate(smap.lines) if i > 3 and isinstance(line, GpuLine)
                   and line.index == 2)
        smap.scroll_to(y=top, animate=False, immediate=True)
        await pressed(pilot)
        header = smap.line_at(0)
        assert isinstance(header, HostLine) and header.name == smap.lines[top].host
        assert header.name in "".join(s.text for s in smap.render_line(0))
        before = smap.cursor_line
        await pressed(pilot, "pageup")
        assert smap.cursor_line < before


@pilot_test
async def test_jobs_view_sorts_filters_and_opens_a_job():
    async with settled_app((160, 48)) as (app, pilot):
        await pressed(pilot, "J")
        view = app.screen
        assert isinstance(view, JobsScreen)
        store = fleet(app).model.store
        assert len(view.rows) == len(store.jobs)
        assert view.sort_key == "age" and view.reverse
        ages = [r.age_s for r in view.rows]
        assert ages == sorted(ages, reverse=True)
        await pressed(pilot, "o")  # the next column
        assert view.sort_key == "reason"
        await pressed(pilot, "o")
        assert view.sort_key == "id"
        ids = [r.job_id for r in view.rows]
        assert ids == sorted(ids, reverse=True)
        await pressed(pilot, "O")
        assert [r.job_id for r in view.rows] == sorted(ids)
        pending = [r for r in view.rows if r.state == "pending"]
        assert pending and all(r.reason for r in pending)  # why each waits
        await pressed(pilot, "slash", *"pending", "enter")
        assert {r.state for r in view.rows} == {"pending"}
        assert len(view.table.rows) == len(pending)
        await pressed(pilot, "j", "j", "k", "enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == view.rows[1].job_id
        await pressed(pilot, "escape")
        assert app.screen is view
        await pressed(pilot, "escape")
        assert isinstance(app.screen, FleetScreen)
        await palette(pilot, "jobs")
        view = app.screen
        assert isinstance(view, JobsScreen)
        await pilot.click(JobTable, offset=(3, 2))  # a click moves the row cursor...
        await pressed(pilot)
        assert view.table.cursor == 2 and app.screen is view
        await pilot.click(JobTable, offset=(3, 2))  # ...a second on it opens the job
        await pressed(pilot)
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == view.rows[2].job_id


@pilot_test
async def test_p_in_the_jobs_view_places_the_row_s_pending_job_and_only_that():
    async with settled_app((160, 48)) as (app, pilot):
        await pressed(pilot, "J")
        view = app.screen
        await pressed(pilot, "p")  # the top row runs: nothing to place
        assert app.screen is view and fleet(app).placement is None
        await pressed(pilot, "slash", *"pending", "enter", "j")
        job_id = view.table.row.job_id
        await pressed(pilot, "p")
        screen = fleet(app)
        assert app.screen is screen and screen.placement.job.id == job_id
        assert screen.query_one(QueuePanel).selected == job_id
    async with settled_app((160, 48), readonly=True) as (app, pilot):
        await pressed(pilot, "J", "slash", *"pending", "enter", "p")
        assert isinstance(app.screen, JobsScreen) and fleet(app).placement is None
        assert "jobs.place" not in {b.binding.id for b in app.screen.active_bindings.values()}


@pilot_test
async def test_placement_mode_ends_when_its_job_is_placed_by_someone_else_meanwhile():
    async with settled_app((160, 48)) as (app, pilot):
        screen = fleet(app)
        panel = screen.query_one(QueuePanel)
        await pressed(pilot, "tab", "p")
        job = screen.placement.job
        assert job.id == panel.selected and screen.placement.candidates
        source = app.source
        view = source._store  # the scheduler (or another admin) placed it meanwhile
        source._store = dataclasses.replace(view, jobs=tuple(
            dataclasses.replace(j, state="placed") if j.id == job.id else j
            for j in view.jobs))
        screen.read_store()
        await pressed(pilot)
        assert screen.placement is None
        assert screen.query_one(PreviewBar).display is False
        assert said(app)[-1] == \
            "job %d is no longer pending: placement mode ended" % job.id


@pilot_test
async def test_jobs_view_keeps_the_columns_that_fit():
    async with settled_app((80, 24)) as (app, pilot):
        await pressed(pilot, "J")
        narrow = list(app.screen.table.keys)
        head = str(app.screen.query_one("#jobs-head").content)
        assert head.split()[:2] == ["id", "name"] and "reason" in head
    async with settled_app((220, 60)) as (app, pilot):
        await pressed(pilot, "J")
        wide = list(app.screen.table.keys)
    assert len(narrow) < len(wide) == 11
    assert narrow == ["id", "name", "state", "where", "age", "reason"]  # util went first


@pilot_test
async def test_pending_list_shows_four_rows_at_80x24_and_never_loses_the_selection():
    async with settled_app((80, 24), gpus=16) as (app, pilot):
        panel = fleet(app).query_one(QueuePanel)
        await pressed(pilot, "tab")
        assert len(panel._rows) >= 4
        await _walk_the_pending_list(pilot, panel)
        await pressed(pilot, "escape")  # (placing by keyboard, the panel gives the map its rows)
        assert plain(panel.render(), panel.content_size.width).lstrip().startswith("Queues")


async def _walk_the_pending_list(pilot: Any, panel: QueuePanel) -> None:
    """Down through every pending job: each selected one is drawn within the panel, with its
    reason, and ``p`` then places the last, the one on screen."""
    for _ in range(len(panel.pending) + 1):
        await pressed(pilot, "down")
        row = next(y for y, j in panel._rows.items() if j.id == panel.selected)
        assert panel.scroll_offset.y <= row < panel.scroll_offset.y + panel.content_size.height
    assert panel.selected == panel.pending[-1].id
    text = plain(panel.render(), panel.content_size.width)
    assert all(j.reason and j.reason[:20] in text for j in panel._rows.values())
    await pressed(pilot, "p")
    assert fleet(panel.app).placement.job.id == panel.pending[-1].id


@pilot_test
@pytest.mark.parametrize("size", [(60, 20), (44, 15), (100, 15)])
async def test_a_short_terminal_keeps_half_for_the_map_and_the_pending_jobs_in_sight(size):
    """Under 24 rows the panel under the map takes half of them, not 12 at least (which left
    the map a line or two); with no room for the pending jobs under the queues and teams,
    they come first, and only rows in sight are drawn: ``p`` places what is seen."""
    async with settled_app(size, gpus=16) as (app, pilot):
        panel = fleet(app).query_one(QueuePanel)
        assert fleet(app).map.size.height >= panel.size.height - 1 >= 3
        assert plain(panel.render(), panel.content_size.width).lstrip().startswith("Pending")
        await pressed(pilot, "tab")
        await _walk_the_pending_list(pilot, panel)


@pilot_test
async def test_the_legend_names_each_colour_and_follows_the_colour_mode():
    async with settled_app((160, 48)) as (app, pilot):
        legend = fleet(app).query_one(Legend)
        text = str(legend.render())
        assert text.startswith("team:") and all(t in text for t in ("vision", "nlp", "speech"))
        await pressed(pilot, "c")
        text = str(legend.render())
        assert text.startswith("queue:") and all(q in text for q in ("quarter", "mig-3g"))


@pilot_test
async def test_the_placement_plan_wraps_to_its_full_text_at_80_columns():
    async with settled_app((80, 24)) as (app, pilot):
        await pressed(pilot, "tab", "down", "p")
        screen = fleet(app)
        bar = screen.query_one(PreviewBar)
        placement = screen.placement
        placement.note = "The GPU changed since the preview; nothing was placed. The plan now:"
        bar.refresh(layout=True)
        await pressed(pilot)
        assert bar.size.height >= 3
        words = shown_words(bar)
        assert placement.current.plan in words and placement.note in words
        cursor = screen.map.cursor  # the cursor follows the ghost
        assert (cursor.host, cursor.gpu) == (placement.current.host, placement.current.gpus[0])


@pilot_test
async def test_help_lists_every_key_of_the_map_the_jobs_view_and_the_gpu_view():
    async with settled_app((120, 40)) as (app, pilot):
        await pressed(pilot, "question_mark")
        ids = {row[2] for row in app.screen.keys}
        assert {"map.left", "map.right", "map.up", "map.down", "map.page_up",
                "map.page_down", "map.top", "map.bottom", "map.open", "map.gpu",
                "fleet.jobs"} <= ids
        assert "fleet.job" not in ids
        await pressed(pilot, "escape", "J", "question_mark")
        ids = {row[2] for row in app.screen.keys}
        assert {"jobs.back", "jobs.open", "jobs.sort", "jobs.reverse", "jobs.filter",
                "jobs.place", "jobs.up", "jobs.down", "jobs.page_up", "jobs.page_down", "jobs.top",
                "jobs.bottom"} <= ids
        await pressed(pilot, "escape", "escape", "d", "question_mark")
        assert {"gpu.back", "gpu.open", "gpu.up", "gpu.down", "gpu.page_up", "gpu.page_down",
                "gpu.top", "gpu.bottom"} <= {row[2] for row in app.screen.keys}
        fixed = {row[1]: row[2] for row in app.screen.keys if "." not in row[2]}
        assert fixed == {}, fixed  # (its scroll keys are fractui's: each may be remapped)
