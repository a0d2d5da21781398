"""The fleet header's lines are whole at 80 to 160 columns in every mode: fractui's own words
(the totals, the view) never cut, and each key hint listed whole or not at all."""

from __future__ import annotations

import re

import pytest

from fractui.store.model import CORDON, Cordon
from fractui.tui.header import Header
from tests.test_tui_snapshots import OUT_OF_SERVICE
from tests.tui_frozen import frozen_app, pilot_test, screen_lines, settled

FLEET = "fleet: 4 hosts, 1 degraded · 1 offline · 2 online"
TOTALS = "GPUs 16 · allocated 36.6 % · jobs 22 running · 5 pending"
VIEWS = {"normal": "view fleet · colour by team",
         "readonly": "view fleet · colour by team",
         "filtering": "view fleet · filter /a100/ · colour by team",
         "placing": "view fleet · placing #26 · colour by team",
         "moving": "view fleet · moving #1 · colour by team"}


async def _into(mode: str, app, pilot) -> None:
    await settled(pilot)
    if mode == "filtering":
        await pilot.press("slash", *"a100", "enter")
    elif mode == "placing":
        app.place_job(26)
    elif mode == "moving":
        app.move_job(1)
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def header_lines(app) -> list[str]:
    return screen_lines(app)[:app.screen.query_one(Header).size.height]


def joined(lines: list[str]) -> str:
    """The header's words as one line: a line's parts that went on below it ("  " first)
    joined back to it, the hints taken off."""
    left = [re.split(r" +<(?=\S+> )", line, maxsplit=1)[0].strip() for line in lines]
    out = ""
    for line, raw in zip(left, lines):
        out += (" · " if raw.startswith("   ") and out else "\n") + line
    return out


def assert_hints_whole(app, lines: list[str], first: frozenset[str] = frozenset("q?:")) -> None:
    """Every hint drawn is its key and its whole words, and those of ``first`` are (quit,
    help and the palette's unless a mode's own keys come first)."""
    hints = dict(app.screen.query_one(Header).info.hints)
    drawn = [hint for line in lines
             for hint in re.findall(r"<(\S+?)> +(.*?) *(?=<\S+?> |$)", line)]
    assert drawn, lines
    for key, what in drawn:
        assert hints.get(key) == what, (key, what, lines)
    assert first <= {k for k, _ in drawn}, lines


def drawn_first(mode: str, width: int) -> frozenset[str]:
    """The keys the header's first column holds in ``mode`` at ``width``: where one column
    fits (80 and 100 columns) a placement's own keys take the places of quit and the palette
    (help stays)."""
    if width < 120 and mode == "placing":
        return frozenset({"?", "⏎", "esc", "a"})
    if width < 120 and mode == "moving":  # (#1 has no slot to go to: only esc is bound)
        return frozenset({"?", "esc"})
    if mode == "filtering":
        return frozenset({"q", "?", ":", "esc"})
    return frozenset("q?:")


@pytest.mark.parametrize("width", [80, 100, 120, 140, 160])
@pytest.mark.parametrize("mode", sorted(VIEWS))
@pilot_test
async def test_every_header_line_is_whole(mode, width):
    app = frozen_app(readonly=mode == "readonly")
    async with app.run_test(size=(width, 40)) as pilot:
        await _into(mode, app, pilot)
        lines = header_lines(app)
        assert "…" not in "\n".join(lines), lines
        words = joined(lines)
        for whole in (FLEET, TOTALS, VIEWS[mode], "scheduler: none (decisions wait)"):
            assert whole in words, (whole, lines)
        assert_hints_whole(app, lines, drawn_first(mode, width))
        assert all(len(line) <= width for line in lines)


@pilot_test
async def test_placements_keys_come_before_the_maps():
    """At 120 columns a placement's own keys are listed, the map's give way to them."""
    app = frozen_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await _into("placing", app, pilot)
        text = "\n".join(header_lines(app))
        for hint in ("<⏎>   place here", "<esc> don't place", "<a>   scheduler's choice"):
            assert hint in text, text


@pytest.mark.parametrize("mode, leave", [("placing", "<esc> don't place"),
                                         ("moving", "<esc> don't move"),
                                         ("filtering", "<esc> clear filter")])
@pilot_test
async def test_at_80x24_the_header_says_how_to_leave_each_mode(mode, leave):
    """An admin at 80x24 sees how to leave a placement, a move or a filter, and a
    placement's keys, without ``?``; the header keeps its height."""
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await _into(mode, app, pilot)
        lines = header_lines(app)
        text = "\n".join(lines)
        assert leave in text, text
        if mode == "placing":
            for hint in ("<⏎>   place here", "<a>   scheduler's choice", "<?>   help"):
                assert hint in text, text
        assert len(lines) <= 6, lines


@pytest.mark.parametrize("width", [80, 120])
@pilot_test
async def test_hosts_and_gpus_out_of_service_go_on_a_line_of_their_own(width):
    """With a host draining, a GPU cordoned and one drained, the totals' line is too long
    for 80 columns beside the hints: its last parts go on below it, whole."""
    app = frozen_app(cordons=OUT_OF_SERVICE)
    async with app.run_test(size=(width, 40)) as pilot:
        await _into("normal", app, pilot)
        lines = header_lines(app)
        assert "…" not in "\n".join(lines), lines
        assert TOTALS + " · 1 GPU cordoned · 1 host draining · 1 GPU drained" in joined(
            lines), lines
        assert_hints_whole(app, lines)


# a host cordoned and one draining, two GPUs cordoned, one drained: four kinds at once
FOUR_KINDS = OUT_OF_SERVICE + (
    Cordon("l4-1", None, CORDON, "ops@head", "cordoned by ops@head", 0.0),
    Cordon("a10-1", 1, CORDON, "ops@head", "cordoned by ops@head", 0.0))


@pytest.mark.parametrize("mode", ["normal", "readonly", "filtering", "moving"])
@pilot_test
async def test_four_kinds_out_of_service_keep_the_header_whole_at_80_columns(mode):
    """Hosts and GPUs counted apart, a part each, four kinds out of service made the totals
    three lines at 80 columns beside the hints: with the fleet's states on two (a filter's
    hint is wider), the header passed its most rows and was cut instead, the counts out of
    service first. Said a part per state ("1 host, 2 GPUs cordoned"), they keep two."""
    app = frozen_app(readonly=mode == "readonly", cordons=FOUR_KINDS)
    async with app.run_test(size=(80, 40)) as pilot:
        await _into(mode, app, pilot)
        lines = header_lines(app)
        assert "…" not in "\n".join(lines), lines
        assert TOTALS + " · 1 host, 2 GPUs cordoned · 1 host draining · 1 GPU drained" in \
            joined(lines), lines


@pytest.mark.parametrize("cordons, said", [
    (OUT_OF_SERVICE, "5 pending · 1 cordoned · 1 draining · 1 drained"),
    (FOUR_KINDS, "5 pending · 3 cordoned · 1 draining · 1 drained")])
@pilot_test
async def test_a_placement_at_80_columns_says_what_is_out_of_service_briefly_not_cut(
        cordons, said):
    """A placement's hints are wide: at 80 columns, hosts and GPUs said apart in each state
    passed the header's most rows, and every line was cut (the counts out of service were not
    seen at all). Where the words in full do not fit, the cordons in each state are said
    alone."""
    app = frozen_app(cordons=cordons)
    async with app.run_test(size=(80, 40)) as pilot:
        await _into("placing", app, pilot)
        lines = header_lines(app)
        assert "…" not in "\n".join(lines), lines
        assert said in joined(lines), lines
        assert len(lines) <= 6, lines
