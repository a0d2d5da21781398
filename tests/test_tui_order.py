"""The map's order (``o``): hosts as configured, then busiest first by utilisation, most memory
used, most free room, in turn; the header says which and how many GPUs have no measure (last);
the cursor stays on its GPU."""

from __future__ import annotations

from fractui.tui.model import GpuLine, HostLine
from tests.tui_frozen import pilot_test, settled, settled_app


def drawn(app) -> list[str]:
    """The map's GPUs in the order drawn, "host/index"."""
    return ["%s/%d" % (line.host, line.index) for line in app.screen.map.lines
            if isinstance(line, GpuLine)]


def hosts(app) -> list[str]:
    return [line.name for line in app.screen.map.lines if isinstance(line, HostLine)]


def view(app) -> tuple[str, ...]:
    return app.screen.query_one("Header").info.view


@pilot_test
async def test_o_cycles_the_map_s_order_says_it_and_keeps_the_cursor_on_its_gpu():
    async with settled_app((120, 50)) as (app, pilot):
        fleet = app.screen
        configured = drawn(app)
        assert hosts(app) == ["a100-1", "h100-1", "l4-1", "a10-1"]
        await pilot.press("j", "j")  # the cursor on a100-1 gpu 2
        assert fleet.map.chosen()[0].index == 2
        await pilot.press("o")
        await pilot.pause()
        # by utilisation: only a10-1's answer with one (l4-1 is offline: its last figures are
        # no measure now; MIG GPUs have none), busiest first
        assert drawn(app)[:4] == ["a10-1/3", "a10-1/2", "a10-1/1", "a10-1/0"], drawn(app)
        assert view(app)[-1] == "busiest first (util), 12 unmeasured last", view(app)
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a100-1", 2)
        top = fleet.map.scroll_offset.y
        assert top <= fleet.map.cursor_line < top + fleet.map.size.height
        await pilot.press("o")
        await pilot.pause()
        assert hosts(app) == ["a100-1", "h100-1", "a10-1", "l4-1"], hosts(app)
        assert drawn(app)[:4] == ["a100-1/2", "a100-1/0", "a100-1/1", "a100-1/3"], drawn(app)
        assert view(app)[-1] == "most memory used first, 4 unmeasured last", view(app)
        await pilot.press("o")
        await pilot.pause()
        assert drawn(app)[:2] == ["a100-1/1", "a100-1/3"], drawn(app)  # empty: most room
        assert view(app)[-1] == "most free room first, 4 unmeasured last", view(app)
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a100-1", 2)
        await pilot.press("o")
        await pilot.pause()
        assert drawn(app) == configured
        assert not any("first" in part for part in view(app)), view(app)
        await pilot.press("enter")  # the cursor's slice is still a100-1 gpu 2's
        await settled(pilot)
        assert app.screen.job_id in (2, 3, 4), app.screen


@pilot_test
async def test_a_placement_s_j_goes_to_the_gpu_drawn_below_in_the_map_s_order():
    async with settled_app((120, 50)) as (app, pilot):
        fleet = app.screen
        await pilot.press("o", "o")  # most memory used first: h100-1 gpu 3 above its 0, 1, 2
        fleet.place_job(23)
        await settled(pilot)
        gpus = drawn(app)
        p = fleet.placement
        seen = []
        for _ in range(len({(c.host, c.gpus) for c in p.candidates})):
            seen.append(gpus.index("%s/%d" % (p.current.host, p.current.gpus[0])))
            await pilot.press("j")
            await settled(pilot)
        # each GPU with a slot, top to bottom as drawn, once (from the scheduler's choice,
        # wrapping at the bottom): j took h100-1 gpu 2 to its gpu 3, drawn above it
        first = seen.index(min(seen))
        assert seen[first:] + seen[:first] == sorted(seen), (seen, gpus)
        assert "h100-1/3" in [gpus[n] for n in seen]


@pilot_test
async def test_the_cursor_stays_on_its_gpu_as_live_figures_reorder_the_map():
    async with settled_app((120, 50)) as (app, pilot):
        fleet = app.screen
        await pilot.press("o")  # busiest first: a10-1's 3, 2, 1, 0
        await pilot.press("j")  # on a10-1 gpu 2
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a10-1", 2)
        status = fleet.statuses["a10-1"]
        for gpu in status.snapshot["gpus"]:  # the agent's next word: gpu 0 busiest, 2 idle
            gpu["utilization_gpu"] = {0: 99, 2: 0}.get(gpu["index"], gpu["utilization_gpu"])
        fleet.model.update(status)
        fleet.relayout()
        await pilot.pause()
        assert drawn(app)[0] == "a10-1/0" and drawn(app)[3] == "a10-1/2", drawn(app)
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a10-1", 2)


@pilot_test
async def test_a_gpu_in_sight_that_live_figures_move_out_of_it_is_followed():
    """A short map, busiest first, the cursor on the top GPU in sight: the agent's next word
    has no utilisation for its host's GPUs, which sends it last, out of the view. The map scrolls to it
    (it stayed where it was, the cursor's GPU out of sight, the keys acting on it unseen)."""
    async with settled_app((120, 14)) as (app, pilot):
        fleet = app.screen
        fleet.compact = False  # (the admin's choice: one GPU a line, the map scrolls)
        fleet.relayout()
        await pilot.press("o", *["k"] * 20)  # busiest first; the cursor on the top GPU
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a10-1", 3)
        assert fleet.map.in_sight(fleet.map.cursor_line)
        status = fleet.statuses["a10-1"]
        for gpu in status.snapshot["gpus"]:  # its host's GPUs no measure: the host last
            gpu["utilization_gpu"] = None
        fleet.model.update(status)
        fleet.relayout()
        await pilot.pause()
        assert drawn(app)[-1] == "a10-1/3", drawn(app)
        assert (fleet.map.chosen()[0].host, fleet.map.chosen()[0].index) == ("a10-1", 3)
        assert fleet.map.in_sight(fleet.map.cursor_line), (
            fleet.map.cursor_line, fleet.map.scroll_offset.y, fleet.map.size.height)
